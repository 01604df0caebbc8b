//! Tags and segments (issue 3) over the in-memory state: the tenant's tag and segment definitions,
//! the tags each profile carries, segment memberships kept current as events arrive and as time
//! passes, and the fast condition evaluator they share.
//!
//! Invariant: everything here is a function of (the log, the tenant's tag and segment records: tag
//! groups, tags, manual tag operations, segments) — [`crate::replay`] loads the records, applies
//! each tag operation right after the event it followed (`after_seq`), and evaluates every
//! segment at the end, so a rebuild reproduces tags and memberships exactly.

pub(crate) mod eval;
pub mod ops;

use std::collections::{BTreeSet, VecDeque};

use rustc_hash::{FxHashMap, FxHashSet};
use siyu_model::condition::{Condition, Dependencies, ProfileField};
use siyu_model::event::EventKind;
use siyu_model::event_type::FIRST_CUSTOM_CODE;
use siyu_model::score::RfmMeans;
use siyu_model::{EventType, Millis, ProfileId, Seq};
use siyu_store::{MembershipChange, SegmentRecord, TagGroupRecord, TagOp, TagRecord};

use crate::members::Members;
use crate::profiles::{Change, Profiles};
use crate::state::TenantState;
use crate::subscriber::Subscriber;
pub(crate) use eval::{cheapest_first, Evaluator};

/// How often time-dependent segments are re-evaluated over every profile.
pub const SEGMENT_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads the properties of events of `types` from the log into a state being loaded, and
/// re-evaluates its segments.
pub(crate) async fn load_properties_into(
    store: &std::sync::Arc<dyn siyu_store::Store>,
    state: &mut TenantState,
    types: &[String],
) -> crate::Result<()> {
    let mut after = 0;
    loop {
        let page = store.scan(state.tenant, after, 10_000, siyu_store::ScanDetail::Full).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for stored in &page {
            let name = stored.event.kind.as_str();
            if let (true, Some(code), Some(props)) =
                (types.iter().any(|t| t == name), state.type_code_of(name), &stored.event.properties)
            {
                state.segments.keep_properties(stored.seq, code, props.get());
            }
        }
    }
    let now = Millis::now();
    for index in 0..state.segments.entries.len() {
        state.evaluate_entry(index, now, None);
    }
    Ok(())
}

/// A tenant's tags, segments and memberships.
#[derive(Default)]
pub struct Segments {
    pub groups: Vec<TagGroupRecord>,
    /// Live tags in id order.
    pub tags: Vec<TagRecord>,
    tag_ids: FxHashMap<String, u32>,
    /// Every manual tag operation applied so far, in order: the tag history of profiles.
    pub tag_ops: Vec<TagOp>,
    /// Operations loaded for a replay, waiting for the event they followed.
    pending_ops: VecDeque<TagOp>,
    pub entries: Vec<Segment>,
    /// Off while replaying: memberships are evaluated once at the end instead.
    tracking: bool,
    /// Profiles touched since the last refresh, and how.
    dirty: Vec<(ProfileId, Touch)>,
    /// Event properties kept for conditions that filter on them (`where properties.x = …`),
    /// by log position, for the event types in `property_types` only.
    properties: FxHashMap<Seq, serde_json::Value>,
    property_types: FxHashSet<u16>,
    /// The buyers' RFM means of the last full evaluation; incremental refreshes grade against
    /// them (the sweep recomputes them).
    means: Option<RfmMeans>,
    /// Rule-tag operations (actor `rule:<tag id>`) recorded in `tag_ops` but not stored yet.
    unsaved_rule_ops: Vec<TagOp>,
}

impl Subscriber for Segments {
    /// Keeps the event's properties if a condition filters on them, and notes the profiles whose
    /// memberships the next refresh decides again (merged-away ones leave every segment).
    fn on_change(&mut self, _profiles: &Profiles, change: &Change<'_>) {
        if let Some(properties) = change.properties {
            self.keep_properties(change.seq, change.code, properties);
        }
        let touch = match change.created {
            true => Touch::Created,
            false => Touch::Event { code: change.code, traits: change.traits },
        };
        self.touched(change.profile, touch);
        for merged in &change.absorbed {
            self.touched(*merged, Touch::MergedAway);
            self.touched(change.profile, Touch::Absorbed);
        }
    }
}

/// An entry: a segment or a rule tag (their ids are separate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Segment(i64),
    RuleTag(u32),
}

/// See [`TenantState::version`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateVersion {
    applied_seq: Seq,
    tag_ops: usize,
}

/// What happened to a profile that may change its memberships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Touch {
    /// An event of this type (carrying traits or not) was applied to it.
    Event { code: u16, traits: bool },
    /// It was created (by an event): every condition meets it for the first time.
    Created,
    /// It absorbed another profile: anything about it may have changed.
    Absorbed,
    /// It was merged into another: it leaves every segment.
    MergedAway,
}

/// A segment: its record, its checked condition and its members. A rule tag is kept as a
/// segment too (`rule_tag` set, `record.id` = the tag id) whose members carry the tag; rule tags
/// come first in `Segments::entries`, in dependency order, so a rule tag is evaluated before
/// anything that reads it.
pub struct Segment {
    pub record: SegmentRecord,
    /// The tag this entry applies, for a rule tag.
    pub rule_tag: Option<u32>,
    /// `None` when the stored condition no longer checks (it then matches nobody). Its clauses
    /// are ordered cheapest first ([`cheapest_first`]).
    pub condition: Option<Condition>,
    pub error: Option<String>,
    pub deps: Dependencies,
    /// The event types that can change whether a profile matches.
    triggers: Triggers,
    pub members: Members,
}

/// A set of event type codes, kept inline (it is read for every segment on every event): the
/// canonical codes one by one, custom codes as one (all or none), or every code. Custom types
/// registered after it was made (codes from `first_unknown` on) are in it: what they weigh was
/// not known then.
#[derive(Debug, Clone, Copy, Default)]
struct Triggers {
    every: bool,
    canonical: u128,
    custom: bool,
    first_unknown: u16,
}

impl Triggers {
    fn add(&mut self, code: u16) {
        match code.checked_sub(FIRST_CUSTOM_CODE) {
            None => self.canonical |= 1 << code,
            Some(_) => self.custom = true,
        }
    }

    fn contains(&self, code: u16) -> bool {
        match code.checked_sub(FIRST_CUSTOM_CODE) {
            None => self.every || self.canonical & (1 << code) != 0,
            Some(_) => self.every || self.custom || code >= self.first_unknown,
        }
    }
}

/// The events that change whether a profile is reachable.
const RELATIONSHIP_TYPES: [EventType; 10] = [
    EventType::Follow,
    EventType::Unfollow,
    EventType::Subscribe,
    EventType::Unsubscribe,
    EventType::WecomAdd,
    EventType::WecomDelete,
    EventType::GroupJoin,
    EventType::GroupLeave,
    EventType::ConsentGranted,
    EventType::ConsentRevoked,
];

const ORDER_TYPES: [EventType; 2] = [EventType::OrderPaid, EventType::OrderRefunded];

impl Segment {
    /// An entry of `state`'s segments (the state tells which event types can change it).
    pub fn new(state: &TenantState, record: SegmentRecord, condition: Result<Condition, String>) -> Segment {
        let (condition, error) = match condition {
            Ok(c) => (Some(cheapest_first(&c)), None),
            Err(e) => (None, Some(e)),
        };
        let deps = condition.as_ref().map(Condition::dependencies).unwrap_or_default();
        let triggers = state.triggers(&deps);
        Segment { record, rule_tag: None, condition, error, deps, triggers, members: Members::default() }
    }

    /// The entry of a rule tag.
    pub fn rule(state: &TenantState, tag: &TagRecord, condition: Result<Condition, String>) -> Segment {
        let record = SegmentRecord {
            id: tag.id,
            name: tag.name.clone(),
            condition: tag.condition.clone().unwrap_or_default(),
            created_at: tag.created_at,
            updated_at: tag.created_at,
        };
        Segment { rule_tag: Some(tag.id as u32), ..Segment::new(state, record, condition) }
    }

    /// A stored segment before its condition is checked (which needs the replayed state).
    fn unloaded(record: SegmentRecord) -> Segment {
        Segment {
            record,
            rule_tag: None,
            condition: None,
            error: Some("not loaded".into()),
            deps: Dependencies::default(),
            triggers: Triggers::default(),
            members: Members::default(),
        }
    }

    /// Can this touch change whether the profile matches? (Tag changes are handled apart.)
    fn touched_by(&self, touch: Touch) -> bool {
        match touch {
            Touch::Event { code, traits } => self.triggers.contains(code) || (traits && !self.deps.traits.is_empty()),
            Touch::Created | Touch::Absorbed | Touch::MergedAway => true,
        }
    }
}

impl Segments {
    /// Loads the records of a tenant before a replay.
    pub fn load(
        groups: Vec<TagGroupRecord>,
        tags: Vec<TagRecord>,
        ops: Vec<TagOp>,
        segments: Vec<SegmentRecord>,
    ) -> Segments {
        let mut loaded = Segments { groups, pending_ops: ops.into(), ..Segments::default() };
        loaded.set_tags(tags);
        // Conditions are checked after the replay, when custom event types are known.
        loaded.entries = segments.into_iter().map(Segment::unloaded).collect();
        loaded
    }

    pub fn set_tags(&mut self, tags: Vec<TagRecord>) {
        self.tag_ids = tags.iter().map(|t| (t.name.clone(), t.id as u32)).collect();
        self.tags = tags;
    }

    pub fn tag_id(&self, name: &str) -> Option<u32> {
        self.tag_ids.get(name).copied()
    }

    pub fn tag_name(&self, id: u32) -> Option<&str> {
        self.tags.iter().find(|t| t.id == i64::from(id)).map(|t| t.name.as_str())
    }

    pub fn properties(&self, seq: Seq) -> Option<&serde_json::Value> {
        self.properties.get(&seq)
    }

    pub(crate) fn keep_properties(&mut self, seq: Seq, code: u16, raw: &str) {
        if self.property_types.contains(&code) {
            if let Ok(value) = serde_json::from_str(raw) {
                self.properties.insert(seq, value);
            }
        }
    }

    fn touched(&mut self, profile: ProfileId, touch: Touch) {
        if self.tracking && !self.entries.is_empty() {
            self.dirty.push((profile, touch));
        }
    }

    /// A segment (not a rule tag) by id.
    pub fn segment(&self, id: i64) -> Option<&Segment> {
        self.entries.iter().find(|s| s.rule_tag.is_none() && s.record.id == id)
    }

    fn segment_index(&self, id: i64) -> Option<usize> {
        self.entries.iter().position(|s| s.rule_tag.is_none() && s.record.id == id)
    }

    fn entry_index(&self, entry: Entry) -> Option<usize> {
        match entry {
            Entry::Segment(id) => self.segment_index(id),
            Entry::RuleTag(tag) => self.entries.iter().position(|s| s.rule_tag == Some(tag)),
        }
    }

    /// Every segment's id and size.
    pub fn segment_sizes(&self) -> Vec<(i64, u64)> {
        self.entries.iter().filter(|s| s.rule_tag.is_none()).map(|s| (s.record.id, s.members.size())).collect()
    }

    /// The entries time (or other profiles, through the RFM means) can change, in evaluation
    /// order: what the periodic sweep re-evaluates.
    pub fn swept_entries(&self) -> Vec<Entry> {
        self.entries
            .iter()
            .filter(|s| s.deps.time_dependent || s.deps.tenant_wide)
            .map(|s| match s.rule_tag {
                Some(tag) => Entry::RuleTag(tag),
                None => Entry::Segment(s.record.id),
            })
            .collect()
    }

    /// The entry of a rule tag.
    pub fn rule(&self, tag: u32) -> Option<&Segment> {
        self.entries.iter().find(|s| s.rule_tag == Some(tag))
    }

    /// Is this tag a rule tag?
    pub fn is_rule_tag(&self, tag: i64) -> bool {
        self.tags.iter().any(|t| t.id == tag && t.condition.is_some())
    }

    /// Rule-tag operations recorded since the last call, to be stored.
    pub fn take_rule_ops(&mut self) -> Vec<TagOp> {
        std::mem::take(&mut self.unsaved_rule_ops)
    }

    /// Puts rule tags first, in dependency order (a rule tag before those that read it), then
    /// segments, each group otherwise in id order. Cycles are refused at save time; should one be
    /// stored anyway, its members keep id order.
    pub(crate) fn order(&mut self) {
        let rules: Vec<(String, BTreeSet<String>)> = self
            .entries
            .iter()
            .filter(|s| s.rule_tag.is_some())
            .map(|s| (s.record.name.clone(), s.deps.tags.clone()))
            .collect();
        let order = dependency_order(&rules).unwrap_or_else(|_| (0..rules.len()).collect());
        let (mut rule_entries, segments): (Vec<Segment>, Vec<Segment>) =
            std::mem::take(&mut self.entries).into_iter().partition(|s| s.rule_tag.is_some());
        let mut slots: Vec<Option<Segment>> = rule_entries.drain(..).map(Some).collect();
        self.entries = order.into_iter().filter_map(|i| slots[i].take()).collect();
        self.entries.extend(slots.into_iter().flatten());
        self.entries.extend(segments);
    }
}

/// Orders named rules so that every rule comes after the rules it reads (`reads` names other
/// rules or anything else, which is ignored). On a cycle, returns its path, e.g. `[A, B, A]`.
pub fn dependency_order(rules: &[(String, BTreeSet<String>)]) -> Result<Vec<usize>, Vec<String>> {
    let index: FxHashMap<&str, usize> = rules.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();
    // 0 = unvisited, 1 = on the path, 2 = done.
    let mut state = vec![0u8; rules.len()];
    let mut order = Vec::with_capacity(rules.len());
    fn visit(
        i: usize,
        rules: &[(String, BTreeSet<String>)],
        index: &FxHashMap<&str, usize>,
        state: &mut [u8],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), Vec<String>> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                let from = path.iter().position(|&p| p == i).expect("on the path");
                let mut cycle: Vec<String> = path[from..].iter().map(|&p| rules[p].0.clone()).collect();
                cycle.push(rules[i].0.clone());
                return Err(cycle);
            }
            _ => {}
        }
        state[i] = 1;
        path.push(i);
        for name in &rules[i].1 {
            if let Some(&j) = index.get(name.as_str()) {
                visit(j, rules, index, state, path, order)?;
            }
        }
        path.pop();
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..rules.len() {
        visit(i, rules, &index, &mut state, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// Event type names whose properties the conditions filter on.
pub fn property_types(condition: &Condition, out: &mut Vec<String>) {
    use siyu_model::condition::{Operand, TimeOperand};
    fn filter_uses_properties(c: &Condition) -> bool {
        match c {
            Condition::And(items) | Condition::Or(items) => items.iter().any(filter_uses_properties),
            Condition::Not(inner) => filter_uses_properties(inner),
            Condition::Compare { operand, .. }
            | Condition::In { operand, .. }
            | Condition::Contains { operand, .. } => {
                matches!(operand, Operand::Property(_))
            }
            _ => false,
        }
    }
    let mut selector = |s: &siyu_model::condition::EventSelector| {
        if s.filter.as_deref().is_some_and(filter_uses_properties) {
            out.push(s.event_type.as_str().to_string());
        }
    };
    fn walk(c: &Condition, f: &mut dyn FnMut(&siyu_model::condition::EventSelector)) {
        match c {
            Condition::And(items) | Condition::Or(items) => items.iter().for_each(|i| walk(i, f)),
            Condition::Not(inner) => walk(inner, f),
            Condition::Compare { operand, .. }
            | Condition::In { operand, .. }
            | Condition::Contains { operand, .. } => {
                if let Operand::Count(agg) | Operand::Sum(agg) = operand {
                    f(&agg.events);
                }
            }
            Condition::Time { operand: TimeOperand::First(s) | TimeOperand::Last(s), .. } => f(s),
            _ => {}
        }
    }
    walk(condition, &mut selector);
}

impl TenantState {
    /// The schema conditions are checked against: the tenant's tags and custom event types.
    pub fn schema(&self) -> siyu_model::condition::Schema {
        let mut schema = siyu_model::condition::Schema {
            tags: self.segments.tags.iter().map(|t| t.name.clone()).collect(),
            ..Default::default()
        };
        schema.custom_event_types.extend(self.custom_types.iter().map(|(_, name)| name.to_string()));
        schema
            .custom_event_types
            .extend(self.settings.scores.weights.keys().filter(|k| siyu_model::EventType::parse(k).is_none()).cloned());
        schema
    }

    /// A live profile at `t` as the reference evaluator (`condition::naive`) reads it: its
    /// scores as plain fields (RFM graded against `means`) and its events, rebuilt from its
    /// facts (with the properties the segments keep, null otherwise). What benchmarks hold the
    /// fast evaluator against.
    pub fn reference_view(
        &self,
        id: ProfileId,
        t: Millis,
        means: &RfmMeans,
    ) -> Option<(siyu_model::condition::ProfileSnapshot, Vec<siyu_model::condition::PlainEventWithProps>)> {
        let profile = self.profile(id).filter(|p| p.merged_into.is_none())?;
        let scores = self.at_when(id, crate::state::AsOf::current(t))?.scores(&self.rules);
        let events: Vec<siyu_model::condition::PlainEventWithProps> = profile
            .facts
            .iter()
            .map(|f| siyu_model::condition::PlainEventWithProps {
                event_type: self.type_name(f.code).to_string(),
                ts: f.ts,
                amount: (f.amount.0 != 0).then_some(f.amount),
                channel: f.channel,
                account: self.accounts.name(f.account).to_string(),
                properties: self.segments.properties(f.seq).cloned().unwrap_or_default(),
            })
            .collect();
        let past: Vec<&siyu_model::condition::PlainEventWithProps> = events.iter().filter(|e| e.ts <= t).collect();
        let snapshot = siyu_model::condition::ProfileSnapshot {
            tier: scores.tier,
            pool_stage: scores.pool_stage,
            ownership: scores.ownership,
            rfm: scores.rfm.map(|input| means.group(&input)),
            reachable: scores.reachable,
            affinity: scores.affinity,
            net_revenue: scores.net_revenue,
            paid_orders: scores.paid_orders,
            refunded_orders: scores.refunded_orders,
            net_paid_orders: scores.net_paid_orders,
            orders_365d: scores.orders_365d,
            event_count: past.len() as u32,
            first_seen: past.iter().map(|e| e.ts).min(),
            last_seen: past.iter().map(|e| e.ts).max(),
            channels: past.iter().map(|e| e.channel).collect(),
            accounts: past.iter().map(|e| (e.channel, e.account.clone())).collect(),
            tags: profile.tags.iter().filter_map(|t| self.segments.tag_name(*t)).map(str::to_string).collect(),
            identity_kinds: profile.identities.iter().map(|l| l.identity.kind.as_str().to_string()).collect(),
            traits: profile.traits.as_deref().cloned().unwrap_or_default(),
        };
        Some((snapshot, events))
    }

    /// Applies the loaded tag operations that followed events before `seq` (during a replay).
    pub(crate) fn apply_due_tag_ops(&mut self, seq: Seq) {
        while self.segments.pending_ops.front().is_some_and(|op| op.after_seq < seq) {
            let op = self.segments.pending_ops.pop_front().expect("checked");
            self.apply_tag_op(op);
        }
    }

    /// Is this tag operation about the live profile `live`: made on it, on a profile merged into
    /// it, or on an identity it now holds? (What its tag history and activity list.)
    pub(crate) fn tag_op_concerns(&self, op: &TagOp, live: ProfileId) -> bool {
        op.profile_id == i64::from(live)
            || self.resolve(op.profile_id as ProfileId) == Some(live)
            || self.profile(live).is_some_and(|profile| {
                profile
                    .identities
                    .iter()
                    .any(|l| l.identity.kind.as_str() == op.identity_kind && l.identity.value == op.identity_value)
            })
    }

    /// Applies one manual tag operation to the profile holding its identity; returns that profile
    /// when its tags changed.
    pub fn apply_tag_op(&mut self, op: TagOp) -> Option<ProfileId> {
        let identity = siyu_model::Identity {
            kind: siyu_model::IdentityKind::parse(&op.identity_kind)
                .unwrap_or_else(|_| siyu_model::IdentityKind::Custom(op.identity_kind.clone())),
            value: op.identity_value.clone(),
        };
        // A rule tag's operations are history only: its members are derived.
        let known_tag = self.segments.tags.iter().any(|t| t.id == op.tag_id && t.condition.is_none());
        let profile = self.lookup(&identity);
        let tag = op.tag_id as u32;
        let add = op.add;
        self.segments.tag_ops.push(op);
        let id = profile.filter(|_| known_tag)?;
        let tags = &mut self.profile_mut(id)?.tags;
        let changed = match (tags.binary_search(&tag), add) {
            (Err(at), true) => {
                tags.insert(at, tag);
                true
            }
            (Ok(at), false) => {
                tags.remove(at);
                true
            }
            _ => false,
        };
        changed.then_some(id)
    }

    /// After a replay: the remaining tag operations, the segments' conditions and memberships at
    /// `now`; from here on memberships are kept current incrementally.
    pub(crate) fn finish_segments_replay(&mut self, now: Millis) {
        self.apply_due_tag_ops(Seq::MAX);
        let schema = self.schema();
        let tenant = self.tenant;
        let check = |text: &str, what: &str, id: i64| {
            let checked = siyu_model::condition::compile(text, &schema)
                .map_err(|errors| errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "));
            if let Err(e) = &checked {
                tracing::warn!(tenant = %tenant, what, id, error = %e, "stored condition no longer checks");
            }
            checked
        };
        let mut entries: Vec<Segment> = self
            .segments
            .tags
            .iter()
            .filter_map(|tag| Some(Segment::rule(self, tag, check(tag.condition.as_deref()?, "rule tag", tag.id))))
            .collect();
        for segment in self.segments.entries.iter().filter(|s| s.rule_tag.is_none()) {
            entries.push(Segment::new(
                self,
                segment.record.clone(),
                check(&segment.record.condition, "segment", segment.record.id),
            ));
        }
        self.segments.entries = entries;
        self.segments.order();
        self.recount_property_types();
        for index in 0..self.segments.entries.len() {
            self.evaluate_entry(index, now, None);
        }
        self.segments.tracking = true;
    }

    /// Keeps the properties of events of these types from now on (tests and benchmarks; segments
    /// register theirs themselves).
    pub fn watch_properties(&mut self, names: &[&str]) {
        for name in names {
            let code = self.type_code(name);
            self.segments.property_types.insert(code);
        }
    }

    /// Keeps the properties of the event types some condition filters on (and no others);
    /// returns the types newly watched, whose properties in the log are not read yet.
    pub(crate) fn recount_property_types(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        for segment in &self.segments.entries {
            if let Some(c) = &segment.condition {
                property_types(c, &mut names);
            }
        }
        names.sort();
        names.dedup();
        let coded: Vec<(String, u16)> = names.into_iter().map(|n| (n.clone(), self.type_code(&n))).collect();
        let new = coded.iter().filter(|(_, code)| !self.segments.property_types.contains(code)).map(|(n, _)| n.clone());
        let new = new.collect();
        self.segments.property_types = coded.into_iter().map(|(_, code)| code).collect();
        new
    }

    pub(crate) fn type_code_of(&self, name: &str) -> Option<u16> {
        if let Some(known) = siyu_model::EventType::parse(name) {
            return Some(known.code());
        }
        self.custom_types.get(name).map(|i| FIRST_CUSTOM_CODE + i as u16)
    }

    /// The code of an event kind, if any event of it was seen (custom types get theirs then).
    pub(crate) fn type_code_of_kind(&self, kind: &EventKind) -> Option<u16> {
        match kind {
            EventKind::Known(known) => Some(known.code()),
            EventKind::Custom(name) => self.custom_types.get(name).map(|i| FIRST_CUSTOM_CODE + i as u16),
        }
    }

    /// The event types whose arrival can change a condition with these dependencies, under the
    /// tenant's scoring rules: a profile field through the events its score reads (weights for
    /// the tier, relationship events for reachability, orders for RFM …), an aggregate through
    /// its own type. Time passing and other profiles (RFM means) are the sweep's business.
    fn triggers(&self, deps: &Dependencies) -> Triggers {
        let first_unknown = FIRST_CUSTOM_CODE + self.custom_types.len() as u16;
        let mut triggers = Triggers { first_unknown, ..Triggers::default() };
        let rules = &self.rules;
        let codes = (0..FIRST_CUSTOM_CODE).chain((0..self.custom_types.len()).map(|i| FIRST_CUSTOM_CODE + i as u16));
        let codes: Vec<u16> = codes.collect();
        let add_where = |triggers: &mut Triggers, test: &dyn Fn(u16) -> bool| {
            for &code in codes.iter().filter(|c| test(**c)) {
                triggers.add(code);
            }
        };
        let relationship = |code: u16| RELATIONSHIP_TYPES.iter().any(|t| t.code() == code);
        let order = |code: u16| ORDER_TYPES.iter().any(|t| t.code() == code);
        let weighted = |code: u16| rules.weight(code) != 0.0;
        for field in &deps.fields {
            match field {
                ProfileField::Tier | ProfileField::Affinity => add_where(&mut triggers, &weighted),
                ProfileField::Reachable => add_where(&mut triggers, &relationship),
                ProfileField::PoolStage => {
                    add_where(&mut triggers, &|c| weighted(c) || relationship(c) || order(c) || rules.is_engagement(c))
                }
                ProfileField::Ownership => {
                    add_where(&mut triggers, &|c| relationship(c) || order(c) || rules.is_two_way(c))
                }
                ProfileField::Rfm
                | ProfileField::Orders365d
                | ProfileField::NetRevenue
                | ProfileField::PaidOrders
                | ProfileField::RefundedOrders
                | ProfileField::NetPaidOrders => add_where(&mut triggers, &order),
                ProfileField::EventCount
                | ProfileField::FirstSeen
                | ProfileField::LastSeen
                | ProfileField::Channel
                | ProfileField::Account => triggers.every = true,
            }
        }
        // Any event may bring a new identity.
        triggers.every |= !deps.identity_kinds.is_empty();
        for name in &deps.event_types {
            match self.type_code_of(name) {
                Some(code) => triggers.add(code),
                // A custom type not seen yet gets its code with its first event: watch them all.
                None => triggers.every = true,
            }
        }
        triggers
    }

    fn means_at(&mut self, t: Millis, refresh: bool) -> RfmMeans {
        if refresh || self.segments.means.is_none() {
            self.segments.means = Some(self.rfm_means(t));
        }
        self.segments.means.expect("set above")
    }

    /// Re-evaluates one segment over every live profile at `t` and returns the changes (attributed
    /// to `seq` when an event caused them). The RFM means are recomputed.
    pub fn evaluate_segment(&mut self, id: i64, t: Millis, seq: Option<Seq>) -> Vec<MembershipChange> {
        let Some(index) = self.segments.segment_index(id) else { return Vec::new() };
        self.evaluate_entry(index, t, seq)
    }

    fn evaluate_entry(&mut self, index: usize, t: Millis, seq: Option<Seq>) -> Vec<MembershipChange> {
        let needs_means = self.segments.entries[index].deps.tenant_wide;
        let means = self.means_at(t, needs_means);
        let selected = match &self.segments.entries[index].condition {
            Some(condition) => Evaluator::new(self, t, &means).select(condition),
            None => Members::default(),
        };
        let version = self.version();
        self.merge_selection(index, &selected, version, t, seq)
    }

    /// What a full evaluation read: events applied and tag operations made so far. A full
    /// evaluation done in chunks, outside the write lock, compares it with the state it merges
    /// into.
    pub fn version(&self) -> StateVersion {
        StateVersion { applied_seq: self.applied_seq, tag_ops: self.segments.tag_ops.len() }
    }

    /// An entry's condition and whether it reads the RFM means, for an evaluation outside the
    /// write lock.
    pub fn entry_condition(&self, entry: Entry) -> Option<(Condition, bool)> {
        let segment = &self.segments.entries[self.segments.entry_index(entry)?];
        Some((segment.condition.clone()?, segment.deps.tenant_wide))
    }

    /// Takes the buyers' means at `t` as those incremental refreshes grade against until the next
    /// sweep, and returns them.
    pub fn refresh_means(&mut self, t: Millis) -> RfmMeans {
        let means = self.rfm_means(t);
        self.segments.means = Some(means);
        means
    }

    /// Makes `selected` — a full evaluation of `entry` at `t` that read the state at `version` —
    /// its members; returns the segments' changes. See [`Self::merge_selection`].
    pub fn merge_evaluation(
        &mut self,
        entry: Entry,
        selected: &Members,
        version: StateVersion,
        t: Millis,
    ) -> Vec<MembershipChange> {
        match self.segments.entry_index(entry) {
            Some(index) => self.merge_selection(index, selected, version, t, None),
            None => Vec::new(), // deleted meanwhile
        }
    }

    /// Makes `selected` the members of entry `index`. When the state changed since the
    /// evaluation read it, each profile the evaluation would move in or out is decided again
    /// now: the events (and tag changes) that arrived meanwhile were applied to the members
    /// incrementally, so a stale answer for them must not win. A rule tag's changes are then
    /// carried to the entries after it that read tags.
    fn merge_selection(
        &mut self,
        index: usize,
        selected: &Members,
        version: StateVersion,
        t: Millis,
        seq: Option<Seq>,
    ) -> Vec<MembershipChange> {
        let stale = version != self.version();
        let means = self.means_at(t, false);
        // Taken out while the state is read (and its tags written), put back below.
        let mut segments = std::mem::take(&mut self.segments.entries);
        let segment = &mut segments[index];
        let mut moved: Vec<(ProfileId, bool)> = segment.members.and_not(selected).iter().map(|p| (p, false)).collect();
        moved.extend(selected.and_not(&segment.members).iter().map(|p| (p, true)));
        moved.sort_unstable();
        let mut flips = Vec::with_capacity(moved.len());
        if stale {
            let evaluator = Evaluator::new(self, t, &means);
            for (profile, _) in moved {
                let member = segment.condition.as_ref().is_some_and(|c| evaluator.matches(c, profile));
                if segment.members.set(profile, member) {
                    flips.push((profile, member));
                }
            }
        } else {
            segment.members = selected.clone();
            flips = moved;
        }
        let mut changes = Vec::new();
        match segment.rule_tag {
            Some(tag) => {
                let mut changed = FxHashSet::default();
                for &(profile, member) in &flips {
                    if self.set_rule_tag(tag, profile, member, t, seq) {
                        changed.insert(profile);
                    }
                }
                self.segments.entries = segments;
                if !changed.is_empty() {
                    changes = self.refresh_entries(index + 1, &[], &mut changed, t, seq);
                }
            }
            None => {
                changes = flips.iter().map(|&(profile, member)| change(segment, profile, member, t, seq)).collect();
                self.segments.entries = segments;
            }
        }
        changes
    }

    /// Puts a rule tag on a live profile or takes it off; records the operation in the tag
    /// history (actor `rule:<tag id>`, after the event that caused it) while tracking. True when
    /// the profile's tags changed.
    fn set_rule_tag(&mut self, tag: u32, profile: ProfileId, member: bool, t: Millis, seq: Option<Seq>) -> bool {
        let after_seq = seq.unwrap_or(self.applied_seq);
        let tracking = self.segments.tracking;
        let Some(p) = self.profile_mut(profile) else { return false };
        if p.merged_into.is_some() {
            return false;
        }
        let changed = match (p.tags.binary_search(&tag), member) {
            (Err(at), true) => {
                p.tags.insert(at, tag);
                true
            }
            (Ok(at), false) => {
                p.tags.remove(at);
                true
            }
            _ => false,
        };
        if changed && tracking {
            let anchor =
                p.identities.iter().min_by_key(|l| (l.identity.kind.rank(), l.seq)).map(|l| l.identity.clone());
            if let Some(anchor) = anchor {
                let op = TagOp {
                    op_id: 0,
                    tag_id: i64::from(tag),
                    profile_id: i64::from(profile),
                    identity_kind: anchor.kind.as_str().to_string(),
                    identity_value: anchor.value,
                    add: member,
                    actor: format!("rule:{tag}"),
                    after_seq,
                    at: t,
                };
                self.segments.tag_ops.push(op.clone());
                self.segments.unsaved_rule_ops.push(op);
            }
        }
        changed
    }

    /// Re-evaluates, for the entries from `from` on (in order), the touched profiles their
    /// conditions can depend on and the profiles whose tags changed (for entries reading tags).
    /// Rule tags that change a profile's tags add it to `tag_changed`, so later entries see the
    /// change.
    fn refresh_entries(
        &mut self,
        from: usize,
        dirty: &[(ProfileId, Touch)],
        tag_changed: &mut FxHashSet<ProfileId>,
        t: Millis,
        seq: Option<Seq>,
    ) -> Vec<MembershipChange> {
        let means = self.means_at(t, false);
        let mut segments = std::mem::take(&mut self.segments.entries);
        let mut due: Vec<ProfileId> = Vec::new();
        // Plain segments are evaluated after the loop (their answers affect no other entry),
        // profile by profile: (profile, entry index) pairs.
        let mut pending: Vec<(ProfileId, usize)> = Vec::new();
        for (index, segment) in segments.iter_mut().enumerate().skip(from) {
            let Some(condition) = &segment.condition else { continue };
            due.clear();
            due.extend(dirty.iter().filter(|(_, touch)| segment.touched_by(*touch)).map(|(profile, _)| *profile));
            if !segment.deps.tags.is_empty() {
                due.extend(tag_changed.iter().copied());
            }
            if due.is_empty() {
                continue;
            }
            due.sort_unstable();
            due.dedup();
            let Some(tag) = segment.rule_tag else {
                pending.extend(due.iter().map(|&profile| (profile, index)));
                continue;
            };
            let evaluator = Evaluator::new(self, t, &means);
            // A rule tag is applied at once: the entries after it may read the tag.
            let mut flips = Vec::new();
            for &profile in &due {
                let member = evaluator.matches(condition, profile);
                let changed = segment.members.set(profile, member);
                // A merge may have brought the tag over from the merged-away profile.
                let carries = self.profile(profile).is_some_and(|p| p.tags.binary_search(&tag).is_ok());
                if changed || carries != member {
                    flips.push((profile, member));
                }
            }
            for (profile, member) in flips {
                if self.set_rule_tag(tag, profile, member, t, seq) {
                    tag_changed.insert(profile);
                }
            }
        }
        // Each profile is read once for all the segments it is due in.
        pending.sort_unstable();
        let mut decided: Vec<(usize, ProfileId, bool)> = Vec::with_capacity(pending.len());
        let evaluator = Evaluator::new(self, t, &means);
        for group in pending.chunk_by(|a, b| a.0 == b.0) {
            let profile = group[0].0;
            let conditions =
                group.iter().map(|&(_, index)| segments[index].condition.as_ref().expect("due entries have one"));
            let mut indexes = group.iter().map(|&(_, index)| index);
            evaluator.matches_each(profile, conditions, |member| {
                decided.push((indexes.next().expect("one answer per condition"), profile, member))
            });
        }
        // Memberships are read and written in one tight pass, in segment order: the bitmap words
        // of fifty segments are fifty cache misses, which overlap here.
        decided.sort_unstable();
        let mut changes = Vec::new();
        for (index, profile, member) in decided {
            if segments[index].members.set(profile, member) {
                changes.push(change(&segments[index], profile, member, t, seq));
            }
        }
        self.segments.entries = segments;
        changes
    }

    /// Keeps memberships current after events were applied: re-evaluates the touched profiles
    /// for the segments (and rule tags) their events can affect, and removes merged-away profiles.
    pub fn refresh_memberships(&mut self, t: Millis) -> Vec<MembershipChange> {
        let mut dirty = std::mem::take(&mut self.segments.dirty);
        let changes = if dirty.is_empty() || self.segments.entries.is_empty() {
            Vec::new()
        } else {
            let seq = Some(self.applied_seq);
            self.refresh_entries(0, &dirty, &mut FxHashSet::default(), t, seq)
        };
        // Handed back empty, so its allocation is reused.
        dirty.clear();
        self.segments.dirty = dirty;
        changes
    }

    /// [`Self::refresh_for_tags`] for tests outside the crate.
    #[doc(hidden)]
    pub fn refresh_tags_for_test(&mut self, profiles: &[ProfileId], t: Millis) -> Vec<MembershipChange> {
        self.refresh_for_tags(profiles, t)
    }

    /// Re-evaluates profiles whose tags changed for the segments and rule tags reading tags.
    pub(crate) fn refresh_for_tags(&mut self, profiles: &[ProfileId], t: Millis) -> Vec<MembershipChange> {
        let mut changed: FxHashSet<ProfileId> = profiles.iter().copied().collect();
        self.refresh_entries(0, &[], &mut changed, t, None)
    }

    /// The periodic sweep: segments and rule tags that time (or other profiles, for RFM) can
    /// change are re-evaluated over every profile, in order. Returns the segments' changes and
    /// every segment's size.
    pub fn sweep_entries(&mut self, t: Millis) -> (Vec<MembershipChange>, Vec<(i64, u64)>) {
        let mut changes = self.refresh_memberships(t);
        self.segments.means = None;
        for entry in self.segments.swept_entries() {
            if let Some(index) = self.segments.entry_index(entry) {
                changes.extend(self.evaluate_entry(index, t, None));
            }
        }
        (changes, self.segments.segment_sizes())
    }
}

fn change(segment: &Segment, profile: ProfileId, entered: bool, at: Millis, seq: Option<Seq>) -> MembershipChange {
    MembershipChange { change_id: 0, segment_id: segment.record.id, profile_id: i64::from(profile), entered, at, seq }
}

/// `YYYY-MM-DD` of a time in China Standard Time (the day sizes are recorded under).
pub fn cst_day(t: Millis) -> String {
    use chrono::TimeZone;
    let offset = chrono::FixedOffset::east_opt(8 * 3600).expect("valid offset");
    match offset.timestamp_millis_opt(t.0) {
        chrono::LocalResult::Single(at) => at.format("%Y-%m-%d").to_string(),
        _ => "1970-01-01".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_ordered_and_cycles_named() {
        let rule = |name: &str, reads: &[&str]| (name.to_string(), reads.iter().map(|r| r.to_string()).collect());
        let rules = vec![rule("C", &["B", "manual"]), rule("B", &["A"]), rule("A", &[])];
        assert_eq!(dependency_order(&rules), Ok(vec![2, 1, 0]));
        let cycle = vec![rule("A", &["B"]), rule("B", &["A"]), rule("D", &[])];
        assert_eq!(dependency_order(&cycle), Err(vec!["A".to_string(), "B".into(), "A".into()]));
        assert_eq!(dependency_order(&[rule("A", &["A"])]), Err(vec!["A".to_string(), "A".into()]));
    }

    #[test]
    fn days_are_china_standard_time() {
        // 2026-11-01T16:30Z is 2026-11-02 00:30 in Beijing.
        assert_eq!(cst_day(Millis::parse_rfc3339("2026-11-01T16:30:00Z").unwrap()), "2026-11-02");
    }
}
