//! Property tests: for random event streams — with merges, refunds, unfollows, consent changes,
//! out-of-order timestamps and duplicates — the incremental state equals a replay of the log, and
//! every profile's scores equal the reference evaluator (SPEC §4 written out directly) over that
//! profile's events; profiles are exactly the connected components of co-occurring identities.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use siyu_engine::internals::TenantState;
use siyu_engine::query::ProfileRef;
use siyu_engine::{Engine, EngineConfig};
use siyu_model::event::{EventKind, TimeLimits};
use siyu_model::naive::{self, PlainEvent};
use siyu_model::time::DAY;
use siyu_model::{Channel, Event, EventType, Fen, Identity, Millis, TenantId, TenantSettings};

const T0: i64 = 1_767_225_600_000; // 2026-01-01
const TYPES: [EventType; 18] = [
    EventType::View,
    EventType::Like,
    EventType::Comment,
    EventType::Follow,
    EventType::Unfollow,
    EventType::Subscribe,
    EventType::Unsubscribe,
    EventType::MessageIn,
    EventType::GroupJoin,
    EventType::GroupLeave,
    EventType::WecomAdd,
    EventType::WecomDelete,
    EventType::LiveGift,
    EventType::OrderPaid,
    EventType::OrderRefunded,
    EventType::ConsentRevoked,
    EventType::ConsentGranted,
    EventType::Referral,
];

/// One generated event: who (person), which of their identities, what, when.
#[derive(Debug, Clone)]
struct Spec {
    person: usize,
    /// Bit 0 user_id, bit 1 phone, bit 2 anonymous_id (at least one set).
    identity_mask: u8,
    phone_format: u8,
    kind: usize,
    account: u8,
    group: u8,
    day: i64,
    minute: i64,
    amount_fen: i64,
    /// Re-send an earlier event instead (a retry with the same message_id).
    duplicate_of: Option<usize>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..6usize,
        1..8u8,
        0..3u8,
        0..TYPES.len(),
        0..2u8,
        0..2u8,
        0..400i64,
        0..1440i64,
        1..100_000i64,
        prop::option::weighted(0.05, 0..1000usize),
    )
        .prop_map(
            |(person, identity_mask, phone_format, kind, account, group, day, minute, amount_fen, duplicate_of)| Spec {
                person,
                identity_mask,
                phone_format,
                kind,
                account,
                group,
                day,
                minute,
                amount_fen,
                duplicate_of,
            },
        )
}

fn identities_of(s: &Spec) -> Vec<Identity> {
    let mut out = Vec::new();
    if s.identity_mask & 1 != 0 {
        out.push(Identity::parse("user_id", &format!("u{}", s.person)).unwrap());
    }
    if s.identity_mask & 2 != 0 {
        let digits = format!("1380013{:04}", s.person);
        let raw = match s.phone_format {
            0 => digits,
            1 => format!("+86 {digits}"),
            _ => format!("{}-{}-{}", &digits[..3], &digits[3..7], &digits[7..]),
        };
        out.push(Identity::parse("phone", &raw).unwrap());
    }
    if s.identity_mask & 4 != 0 {
        out.push(Identity::parse("anonymous_id", &format!("anon-{}", s.person)).unwrap());
    }
    out
}

fn build(specs: &[Spec]) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        if let Some(of) = s.duplicate_of.filter(|of| *of < events.len()) {
            events.push(events[of].clone());
            continue;
        }
        let kind = TYPES[s.kind];
        let group = matches!(kind, EventType::GroupJoin | EventType::GroupLeave).then(|| format!("g{}", s.group));
        let ts = Millis(T0 + s.day * DAY + s.minute * 60_000);
        events.push(Event {
            message_id: format!("m-{i}"),
            kind: EventKind::Known(kind),
            channel: if s.account == 0 { Channel::Douyin } else { Channel::Wecom },
            account: format!("acct-{}", s.account),
            identities: identities_of(s),
            timestamp: ts,
            received_at: ts,
            amount: (kind.carries_amount() || kind == EventType::LiveGift).then_some(Fen(s.amount_fen)),
            currency: None,
            source: None,
            group_id: group,
            properties: None,
            traits: None,
            context: None,
        });
    }
    events
}

/// Feeds events to a state as the pipeline would: duplicates (by message_id) skipped, seqs dense.
fn fold_state(events: &[Event]) -> TenantState {
    let mut state = TenantState::new(TenantId(1), TenantSettings::default());
    let mut seen = BTreeSet::new();
    let mut seq = 0;
    for event in events {
        if seen.insert(event.message_id.clone()) {
            seq += 1;
            state.apply(seq, event);
        }
    }
    state
}

/// Union-find over identities that co-occur in an event: the expected partition into people.
fn expected_people(events: &[Event]) -> Vec<BTreeSet<Identity>> {
    let mut parent: HashMap<Identity, Identity> = HashMap::new();
    fn find(parent: &mut HashMap<Identity, Identity>, x: &Identity) -> Identity {
        let p = parent.entry(x.clone()).or_insert_with(|| x.clone()).clone();
        if &p == x {
            return p;
        }
        let root = find(parent, &p);
        parent.insert(x.clone(), root.clone());
        root
    }
    for e in events {
        let first = find(&mut parent, &e.identities[0]);
        for other in &e.identities[1..] {
            let root = find(&mut parent, other);
            if root != first {
                parent.insert(root, first.clone());
            }
        }
    }
    let all: Vec<Identity> = parent.keys().cloned().collect();
    let mut groups: BTreeMap<Identity, BTreeSet<Identity>> = BTreeMap::new();
    for id in all {
        let root = find(&mut parent, &id);
        groups.entry(root).or_default().insert(id);
    }
    groups.into_values().collect()
}

/// Every per-profile score equals the reference evaluator's.
fn same_scores(scores: &siyu_model::ProfileScores, reference: &naive::NaiveScores) -> Result<(), TestCaseError> {
    prop_assert_eq!(scores.affinity, reference.affinity);
    prop_assert!((scores.affinity_raw - reference.affinity_raw).abs() < 1e-9);
    prop_assert_eq!(scores.tier, reference.tier);
    prop_assert_eq!(scores.reachable, reference.reachable);
    prop_assert_eq!(scores.pool_stage, reference.pool_stage);
    prop_assert_eq!(scores.ownership, reference.ownership);
    prop_assert_eq!(scores.net_paid_orders, reference.net_paid_orders);
    prop_assert_eq!(scores.net_revenue, reference.net_revenue);
    prop_assert_eq!(scores.orders_365d, reference.orders_365d);
    Ok(())
}

fn check_state(state: &TenantState, events: &[Event], t: Millis) -> Result<(), TestCaseError> {
    // Profiles are exactly the identity components.
    let mut actual: Vec<BTreeSet<Identity>> = state
        .profile_ids()
        .map(|id| state.profile(id).unwrap().identities.iter().map(|l| l.identity.clone()).collect())
        .collect();
    let mut expected = expected_people(events);
    actual.sort();
    expected.sort();
    prop_assert_eq!(&actual, &expected);

    // Every profile's scores equal the reference evaluator over the events attributed to it.
    let mut population = Vec::new();
    let mut folded = Vec::new();
    for (id, mine) in events_by_profile(state, events) {
        let profile = state.profile(id).unwrap();
        prop_assert_eq!(mine.len(), profile.facts.len(), "events attributed to profile {}", id);
        let reference = naive::evaluate(&mine, t, &state.settings.scores);
        let scores = state.scores_at(id, t).unwrap();
        same_scores(&scores, &reference)?;
        population.push(reference);
        folded.push(scores.rfm);
    }
    // RFM groups: the fold's inputs graded by the tenant means equal the reference grading.
    let means = state.rfm_means(t);
    let reference_groups = naive::rfm_groups(&population);
    for (input, expected) in folded.iter().zip(reference_groups) {
        prop_assert_eq!(input.map(|i| means.group(&i)), expected);
    }
    Ok(())
}

/// The events of each live profile (deduplicated by message_id), as the reference reads them.
fn events_by_profile(state: &TenantState, events: &[Event]) -> Vec<(u32, Vec<PlainEvent>)> {
    let mut seen = BTreeSet::new();
    let unique: Vec<&Event> = events.iter().filter(|e| seen.insert(e.message_id.clone())).collect();
    state
        .profile_ids()
        .map(|id| {
            let identities: BTreeSet<&Identity> =
                state.profile(id).unwrap().identities.iter().map(|l| &l.identity).collect();
            let mine = unique
                .iter()
                .filter(|e| e.identities.iter().any(|i| identities.contains(i)))
                .map(|e| PlainEvent {
                    event_type: e.kind.as_str().to_string(),
                    channel: e.channel,
                    account: e.account.clone(),
                    group_id: e.group_id.clone(),
                    ts: e.timestamp,
                    amount: e.amount.unwrap_or_default(),
                })
                .collect();
            (id, mine)
        })
        .collect()
}

/// Everything a profile, the summary and the accounts view say as of `t` depends only on the
/// events up to `t`: each profile equals the reference over its events up to `t` (and does not
/// exist without one), RFM groups are graded against the buyers at `t`, and the tenant summary
/// counts what existed then.
fn check_as_of(state: &TenantState, events: &[Event], t: Millis) -> Result<(), TestCaseError> {
    let mut population = Vec::new();
    let mut graded = Vec::new();
    let (mut people, mut known_events) = (0u64, 0u64);
    let means = state.rfm_means(t);
    for (id, mine) in events_by_profile(state, events) {
        let past: Vec<&PlainEvent> = mine.iter().filter(|e| e.ts <= t).collect();
        let view = state.view(id, siyu_engine::internals::AsOf::past(t), &means);
        if past.is_empty() {
            prop_assert!(state.scores_at(id, t).is_none(), "profile {} has no event by {:?} yet has scores", id, t);
            prop_assert!(view.is_none(), "profile {} has no event by {:?} yet has a view", id, t);
            continue;
        }
        people += 1;
        known_events += past.len() as u64;
        let reference = naive::evaluate(&mine, t, &state.settings.scores);
        same_scores(&state.scores_at(id, t).unwrap(), &reference)?;
        let view = view.unwrap();
        let first = past.iter().map(|e| e.ts).min().unwrap();
        let last = past.iter().map(|e| e.ts).max().unwrap();
        prop_assert_eq!(view.first_seen, Some(first.to_rfc3339()));
        prop_assert_eq!(view.last_seen, Some(last.to_rfc3339()));
        prop_assert_eq!(view.event_count as usize, past.len());
        let mut channels: Vec<String> = past.iter().map(|e| e.channel.to_string()).collect();
        channels.sort();
        channels.dedup();
        let mut shown = view.channels.clone();
        shown.sort();
        prop_assert_eq!(shown, channels);
        graded.push(view.scores.rfm.clone());
        population.push(reference);
    }
    let expected: Vec<Option<String>> =
        naive::rfm_groups(&population).into_iter().map(|g| g.map(|g| g.to_string())).collect();
    prop_assert_eq!(&graded, &expected, "RFM groups as of {:?}", t);
    // The index's means are those of the buyers' inputs at t, the long way round.
    let long_way = siyu_model::score::RfmMeans::from_inputs(&state.rfm_inputs_in(state.live(), t));
    prop_assert_eq!(means.buyers, long_way.buyers);
    prop_assert!((means.recency_days - long_way.recency_days).abs() < 1e-9);
    prop_assert!((means.monetary_fen - long_way.monetary_fen).abs() < 1e-6);
    let summary = state.summary(siyu_engine::internals::AsOf::past(t));
    prop_assert_eq!(summary.profiles, people);
    prop_assert_eq!(summary.events, known_events);
    let rfm_counted: u64 = summary.rfm.iter().map(|c| c.count).sum();
    prop_assert_eq!(rfm_counted, expected.iter().filter(|g| g.is_some()).count() as u64);
    let account_events: u64 = state.accounts(siyu_engine::internals::AsOf::past(t)).iter().map(|a| a.events).sum();
    prop_assert_eq!(account_events, known_events);
    Ok(())
}

/// Who is who and every score, at `t`, in a comparable form (profiles without events by `t`
/// are absent; RFM groups graded against the buyers at `t`).
fn snapshot(state: &TenantState, t: Millis) -> Vec<(Vec<String>, String)> {
    let means = state.rfm_means(t);
    let mut out: Vec<_> = state
        .profile_ids()
        .filter_map(|id| {
            let mut ids: Vec<String> =
                state.profile(id).unwrap().identities.iter().map(|l| l.identity.to_string()).collect();
            ids.sort();
            let scores = state.scores_at(id, t)?;
            let group = scores.rfm.map(|input| means.group(&input));
            Some((ids, format!("{scores:?} {group:?}")))
        })
        .collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// In-memory: incremental fold == naive evaluation == union-find, at the end of the history
    /// and "as of" a random time inside it (where later events must not count).
    #[test]
    fn incremental_equals_reference(specs in prop::collection::vec(spec(), 1..120), t_day in 0..450i64, t_minute in 0..1440i64) {
        let events = build(&specs);
        let state = fold_state(&events);
        check_state(&state, &events, Millis(T0 + 500 * DAY))?;
        check_as_of(&state, &events, Millis(T0 + t_day * DAY + t_minute * 60_000))?;
    }

    /// Arrival order does not change who is who nor any score (merges are order-independent).
    #[test]
    fn arrival_order_does_not_matter(specs in prop::collection::vec(spec(), 1..80), seed in any::<u64>()) {
        let events = build(&specs);
        let mut shuffled = events.clone();
        // A deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let t = Millis(T0 + 500 * DAY);
        prop_assert_eq!(snapshot(&fold_state(&events), t), snapshot(&fold_state(&shuffled), t));
    }
}

async fn engine_with(dir: &tempfile::TempDir) -> Arc<Engine> {
    let store = siyu_store::open(dir.path().join("siyu.db").to_str().unwrap()).await.unwrap();
    Engine::start(
        store,
        EngineConfig {
            time_limits: TimeLimits { max_future_ms: 3650 * DAY, ..TimeLimits::default() },
            ..EngineConfig::default()
        },
    )
    .await
    .unwrap()
}

/// Through the real pipeline and SQLite: random batches in, then a replay from the log and a
/// restart; all three states agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_replay_and_restart_agree() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 12, ..ProptestConfig::default() });
    let strategy = (prop::collection::vec(spec(), 1..150), prop::collection::vec(1..20usize, 1..40));
    for _ in 0..12 {
        let (specs, batch_sizes) = strategy.new_tree(&mut runner).unwrap().current();
        let events = build(&specs);
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_with(&dir).await;
        let tenant = engine.create_tenant("p", siyu_model::Industry::LocalLife).await.unwrap().record.id;
        let mut rest = events.as_slice();
        let mut sizes = batch_sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            engine.ingest(tenant, "test", rest[..n].to_vec()).await.unwrap();
            rest = &rest[n..];
        }
        let t = Millis(T0 + 500 * DAY);
        let inside = Millis(T0 + (batch_sizes[0] as i64 * 20) * DAY + 7);
        let incremental = snapshot(&engine.runtime(tenant).unwrap().state.read(), t);
        let incremental_inside = snapshot(&engine.runtime(tenant).unwrap().state.read(), inside);
        assert_eq!(incremental, snapshot(&fold_state(&events), t), "pipeline vs in-memory fold");
        assert_eq!(incremental_inside, snapshot(&fold_state(&events), inside), "pipeline vs fold, as of {inside:?}");
        let replayed = engine.replay_tenant(tenant).await.unwrap();
        assert_eq!(incremental, snapshot(&replayed, t), "incremental vs replay");
        assert_eq!(incremental_inside, snapshot(&replayed, inside), "incremental vs replay, as of {inside:?}");
        engine.shutdown();
        drop(engine);
        let restarted = engine_with(&dir).await;
        assert_eq!(incremental, snapshot(&restarted.runtime(tenant).unwrap().state.read(), t), "after restart");
        // Lookups by any identity find the same profile.
        for e in &events {
            let ids: BTreeSet<_> = e
                .identities
                .iter()
                .map(|i| restarted.profile_view(tenant, &ProfileRef::Identity(i.clone()), Some(t)).unwrap().unwrap().id)
                .collect();
            assert_eq!(ids.len(), 1, "identities of one event resolve to one profile");
        }
        restarted.shutdown();
    }
}
