//! Property tests of segments and rule tags: for random event histories (with merges, amounts,
//! properties, two channels and accounts, events after the evaluation time) and random
//! conditions, the fast evaluator — one profile at a time and over every profile at once — and
//! the memberships kept incrementally, event by event, all equal the reference evaluator
//! `condition::naive`, fed the same profile's scores and its events as plain data.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::value::RawValue;
use siyu_engine::internals::TenantState;
use siyu_engine::internals::{Entry, Evaluator, Members, Segment};
use siyu_model::condition::{compile, evaluate, PlainEventWithProps, ProfileSnapshot, Schema};
use siyu_model::event::EventKind;
use siyu_model::score::RfmMeans;
use siyu_model::time::DAY;
use siyu_model::{Channel, Event, EventType, Fen, Identity, Millis, TenantId, TenantSettings};
use siyu_store::{SegmentRecord, TagOp, TagRecord};

const T0: i64 = 1_767_225_600_000; // 2026-01-01
const TYPES: [EventType; 8] = [
    EventType::View,
    EventType::Like,
    EventType::Follow,
    EventType::MessageIn,
    EventType::MessageOut,
    EventType::LiveWatch,
    EventType::OrderPaid,
    EventType::OrderRefunded,
];

#[derive(Debug, Clone)]
struct Spec {
    person: usize,
    /// 0: the user id, 1: the user id and the phone, 2: the phone alone (so that two profiles
    /// of one person exist until an event names both, and merge).
    identities: u8,
    kind: usize,
    account: u8,
    day: i64,
    amount_fen: i64,
    sku: u8,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0..5usize, 0..3u8, 0..TYPES.len(), 0..2u8, 0..120i64, 1..50_000i64, 0..3u8).prop_map(
        |(person, identities, kind, account, day, amount_fen, sku)| Spec {
            person,
            identities,
            kind,
            account,
            day,
            amount_fen,
            sku,
        },
    )
}

/// Default settings but for a 60-day RFM window: the histories span 120 days, so some buyers'
/// orders all fall inside the window (summed up in the profile summary) and others' do not (read
/// from the facts).
fn settings() -> TenantSettings {
    let mut settings = TenantSettings::default();
    settings.scores.rfm_window_days = 60.0;
    settings
}

/// Atoms over every kind of term the evaluator handles.
const ATOMS: [&str; 40] = [
    "count(live_watch, 7d) >= 2",
    "count(order_paid, 90d) >= 2",
    "count(order_refunded, all) = 1",
    "sum(order_refunded, 60d) >= 100",
    "sum(order_paid, all) > 300 and sum(order_paid, 45d) < 500",
    "count(order_paid, all) >= 1",
    "count(order_paid, 30d) = 0",
    "sum(order_paid, 90d) > 200",
    "sum(order_paid where channel = wecom, all) >= 100",
    "count(view where properties.sku = \"A1\", 90d) >= 1",
    "count(order_paid where properties.sku in (\"A1\", \"B2\") and amount > 100, all) >= 1",
    "count(like where account = \"douyin/acct-0\", 60d) >= 1",
    "last(message_out) before 30d ago",
    "last(message_in) within 14d",
    "first(order_paid) after 2026-02-15",
    "first_seen before 60d ago",
    "last_seen within 10d",
    "tier >= warm_fan",
    "tier = passerby",
    "tier < true_fan",
    "tier > passerby",
    "tier <= warm_fan",
    "tier in (none, true_fan)",
    "tier != warm_fan",
    "tier >= none",
    "reachable = false and channel != web",
    "affinity >= 12.5",
    "pool_stage = main_base",
    "pool_stage in (reservoir, incentive)",
    "ownership = L1",
    "orders_365d >= 2",
    "net_paid_orders = 1 or paid_orders >= 3",
    "channel in (douyin, wecom) and channel != douyin",
    "ownership in (L2, L3)",
    "reachable",
    "rfm in (重要价值, 一般发展)",
    "channel = wecom",
    "account = \"wecom/acct-1\"",
    "tagged(\"vip\") or has(phone)",
    "net_revenue >= 300 and event_count > 3 and refunded_orders = 0",
];

/// A random condition: atoms joined by and/or, some negated, some grouped.
fn condition() -> impl Strategy<Value = String> {
    prop::collection::vec((0..ATOMS.len(), any::<bool>(), any::<bool>()), 1..5).prop_map(|parts| {
        let mut text = String::new();
        for (i, (atom, negate, and)) in parts.iter().enumerate() {
            if i > 0 {
                text.push_str(if *and { " and " } else { " or " });
            }
            if *negate {
                text.push_str("not ");
            }
            text.push('(');
            text.push_str(ATOMS[*atom]);
            text.push(')');
        }
        text
    })
}

fn build(specs: &[Spec]) -> Vec<Event> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let kind = TYPES[s.kind];
            let user = Identity::parse("user_id", &format!("u{}", s.person)).unwrap();
            let phone = Identity::parse("phone", &format!("1380013{:04}", s.person)).unwrap();
            let identities = match s.identities {
                0 => vec![user],
                1 => vec![user, phone],
                _ => vec![phone],
            };
            let ts = Millis(T0 + s.day * DAY + i as i64 * 1000);
            let sku = ["A1", "B2", "C3"][s.sku as usize];
            Event {
                message_id: format!("m-{i}"),
                kind: EventKind::Known(kind),
                channel: if s.account == 0 { Channel::Douyin } else { Channel::Wecom },
                account: format!("acct-{}", s.account),
                identities,
                timestamp: ts,
                received_at: ts,
                amount: kind.carries_amount().then_some(Fen(s.amount_fen)),
                currency: None,
                source: None,
                group_id: None,
                properties: Some(RawValue::from_string(format!("{{\"sku\":\"{sku}\"}}")).unwrap()),
                traits: None,
                context: None,
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn fast_evaluator_equals_the_reference(specs in prop::collection::vec(spec(), 1..40), conditions in prop::collection::vec(condition(), 1..6), vip in 0..5usize, at_day in 60..150i64) {
        let events = build(&specs);
        let mut state = TenantState::new(TenantId(1), settings());
        state.watch_properties(&["view", "order_paid"]);
        state.segments.set_tags(vec![TagRecord { id: 1, name: "vip".into(), group_id: None, condition: None, created_at: Millis(0) }]);
        for (i, event) in events.iter().enumerate() {
            state.apply(i as i64 + 1, event);
        }
        state.apply_tag_op(TagOp {
            op_id: 1, tag_id: 1, profile_id: 0, identity_kind: "user_id".into(), identity_value: format!("u{vip}"),
            add: true, actor: "test".into(), after_seq: events.len() as i64, at: Millis(0),
        });
        let t = Millis(T0 + at_day * DAY);
        let means = state.rfm_means(t);
        // Each live profile's events, as plain data.
        let by_profile = plain_events_by_profile(&state, &events);
        let schema = Schema { tags: ["vip".to_string()].into(), ..Schema::default() };
        let evaluator = Evaluator::new(&state, t, &means);
        for text in &conditions {
            let condition = compile(text, &schema).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            let reordered = siyu_engine::internals::cheapest_first(&condition);
            let expected = reference_members(&state, &by_profile, &condition, t, &means);
            let mut one_by_one = Members::default();
            for id in by_profile.keys() {
                let member = evaluator.matches(&condition, *id);
                prop_assert_eq!(member, evaluator.matches(&reordered, *id), "{} reordered, profile {}", text, id);
                one_by_one.set(*id, member);
            }
            prop_assert_eq!(&one_by_one, &expected, "{}: one profile at a time", text);
            prop_assert_eq!(&evaluator.select(&condition), &expected, "{}: every profile at once", text);
            prop_assert_eq!(&evaluator.select(&reordered), &expected, "{}: reordered, at once", text);
        }
    }

    /// Segments installed before the events, kept current event by event (and after a manual
    /// tag), equal a full evaluation and the reference at the end; so do those the RFM means
    /// make tenant-wide, once the sweep regraded them; and so does a full evaluation made part
    /// way (as the sweep makes one, outside the write lock) merged in at the end.
    #[test]
    fn incremental_memberships_equal_full_evaluation(specs in prop::collection::vec(spec(), 1..40), conditions in prop::collection::vec(condition(), 1..6), vip in 0..5usize, at_day in 60..150i64, tag_at in 0..40usize, stale_at in 0..40usize) {
        let events = build(&specs);
        let t = Millis(T0 + at_day * DAY);
        let mut state = TenantState::new(TenantId(1), settings());
        state.segments.set_tags(vec![TagRecord { id: 1, name: "vip".into(), group_id: None, condition: None, created_at: Millis(0) }]);
        state.finish_replay(t);
        state.watch_properties(&["view", "order_paid"]);
        let schema = Schema { tags: ["vip".to_string()].into(), ..Schema::default() };
        for (i, text) in conditions.iter().enumerate() {
            let record = SegmentRecord { id: i as i64 + 1, name: format!("s{i}"), condition: text.clone(), created_at: Millis(0), updated_at: Millis(0) };
            let segment = Segment::new(&state, record, compile(text, &schema).map_err(|e| format!("{e:?}")));
            state.segments.entries.push(segment);
            state.evaluate_segment(i as i64 + 1, t, None);
        }
        let mut stale = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if i == stale_at.min(events.len() - 1) {
                let means = state.rfm_means(t);
                for (j, text) in conditions.iter().enumerate() {
                    let condition = compile(text, &schema).unwrap();
                    stale.push((j as i64 + 1, Evaluator::new(&state, t, &means).select(&condition), state.version()));
                }
            }
            state.apply(i as i64 + 1, event);
            state.refresh_memberships(t);
            if i == tag_at.min(events.len() - 1) {
                if let Some(profile) = state.apply_tag_op(vip_op(vip, i as i64 + 1)) {
                    state.refresh_tags_for_test(&[profile], t);
                }
            }
        }
        let by_profile = plain_events_by_profile(&state, &events);
        let check = |state: &TenantState, tenant_wide: bool| -> Result<(), TestCaseError> {
            let means = state.rfm_means(t);
            for (i, text) in conditions.iter().enumerate() {
                let segment = state.segments.segment(i as i64 + 1).unwrap();
                if segment.deps.tenant_wide != tenant_wide {
                    continue;
                }
                let condition = compile(text, &schema).unwrap();
                let expected = reference_members(state, &by_profile, &condition, t, &means);
                prop_assert_eq!(&segment.members, &expected, "{}: kept incrementally", text);
                prop_assert_eq!(&Evaluator::new(state, t, &means).select(&condition), &expected, "{}: in full", text);
            }
            Ok(())
        };
        check(&state, false)?;
        for (id, selected, version) in &stale {
            state.merge_evaluation(Entry::Segment(*id), selected, *version, t);
        }
        check(&state, false)?;
        state.sweep_entries(t);
        check(&state, true)?;
        check(&state, false)?;
    }
}

fn vip_op(vip: usize, after: i64) -> TagOp {
    TagOp {
        op_id: 1,
        tag_id: 1,
        profile_id: 0,
        identity_kind: "user_id".into(),
        identity_value: format!("u{vip}"),
        add: true,
        actor: "test".into(),
        after_seq: after,
        at: Millis(0),
    }
}

/// The live profiles the reference evaluator puts in `condition` at `t`.
fn reference_members(
    state: &TenantState,
    by_profile: &BTreeMap<u32, Vec<PlainEventWithProps>>,
    condition: &siyu_model::condition::Condition,
    t: Millis,
    means: &RfmMeans,
) -> Members {
    let mut members = Members::default();
    for (id, plain) in by_profile {
        let profile = state.profile(*id).unwrap();
        let tags = profile.tags.iter().map(|_| "vip".to_string()).collect();
        let snapshot = snapshot_at(state, *id, t, means, tags);
        members.set(*id, evaluate(condition, &snapshot, plain, t));
    }
    members
}

/// Rule tags read by a condition in the property test below, in dependency order.
const RULES: [(&str, &str); 3] = [
    ("r-active", "count(view, 30d) >= 1 or last(order_paid) within 20d"),
    ("r-buyer", "tagged(\"r-active\") and sum(order_paid, all) > 200"),
    ("r-mixed", "not tagged(\"r-buyer\") and (tagged(\"vip\") or channel = wecom)"),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// Rule tags kept incrementally, event by event (and after a manual tag and merges), equal
    /// the reference evaluator run over the final histories in dependency order.
    #[test]
    fn rule_tags_equal_the_reference(specs in prop::collection::vec(spec(), 1..40), vip in 0..5usize, at_day in 60..150i64, tag_at in 0..40usize) {
        let events = build(&specs);
        let t = Millis(T0 + at_day * DAY);
        let mut state = TenantState::new(TenantId(1), settings());
        let mut tags = vec![TagRecord { id: 1, name: "vip".into(), group_id: None, condition: None, created_at: Millis(0) }];
        // Stored in reverse order: the state must order them itself.
        for (i, (name, condition)) in RULES.iter().enumerate().rev() {
            tags.push(TagRecord { id: i as i64 + 2, name: (*name).into(), group_id: None, condition: Some((*condition).into()), created_at: Millis(0) });
        }
        state.segments.set_tags(tags);
        state.finish_replay(t);
        for (i, event) in events.iter().enumerate() {
            state.apply(i as i64 + 1, event);
            state.refresh_memberships(t);
            if i == tag_at.min(events.len() - 1) {
                if let Some(profile) = state.apply_tag_op(vip_op(vip, i as i64 + 1)) {
                    state.refresh_tags_for_test(&[profile], t);
                }
            }
        }
        let means = state.rfm_means(t);
        let by_profile = plain_events_by_profile(&state, &events);
        let schema = Schema { tags: ["vip".to_string()].into_iter().chain(RULES.iter().map(|r| r.0.to_string())).collect(), ..Schema::default() };
        for (id, plain) in &by_profile {
            let profile = state.profile(*id).unwrap();
            let mut expected_tags: BTreeSet<String> = BTreeSet::new();
            if profile.tags.contains(&1) {
                expected_tags.insert("vip".into());
            }
            for (i, (name, text)) in RULES.iter().enumerate() {
                let snapshot = snapshot_at(&state, *id, t, &means, expected_tags.clone());
                let condition = compile(text, &schema).unwrap();
                let expected = evaluate(&condition, &snapshot, plain, t);
                let actual = profile.tags.contains(&(i as u32 + 2));
                prop_assert_eq!(actual, expected, "{} on profile {}", name, id);
                if expected {
                    expected_tags.insert((*name).to_string());
                }
            }
        }
    }
}

/// Each live profile's events, as the reference evaluator reads them.
fn plain_events_by_profile(state: &TenantState, events: &[Event]) -> BTreeMap<u32, Vec<PlainEventWithProps>> {
    let mut by_profile: BTreeMap<u32, Vec<PlainEventWithProps>> = BTreeMap::new();
    for event in events {
        let id = state.lookup(&event.identities[0]).expect("linked");
        let id = state.resolve(id).expect("live");
        by_profile.entry(id).or_default().push(PlainEventWithProps {
            event_type: event.kind.as_str().to_string(),
            ts: event.timestamp,
            amount: event.amount,
            channel: event.channel,
            account: event.account.clone(),
            properties: serde_json::from_str(event.properties.as_ref().unwrap().get()).unwrap(),
        });
    }
    by_profile
}

/// What the reference evaluator knows of a profile at `t`: the engine's own view for it (the
/// folded scores, tested against SPEC §4 elsewhere), with the given tags.
fn snapshot_at(state: &TenantState, id: u32, t: Millis, means: &RfmMeans, tags: BTreeSet<String>) -> ProfileSnapshot {
    let (snapshot, _) = state.reference_view(id, t, means).expect("a live profile");
    ProfileSnapshot { tags, ..snapshot }
}
