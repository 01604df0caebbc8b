//! Tags and segments (issue 3) over the in-memory state: the tenant's tag and segment definitions,
//! the tags each profile carries, segment memberships kept current as events arrive and as time
//! passes, and the fast condition evaluator they share.
//!
//! Invariant: everything here is a function of (the log, the tenant's audience records: tag
//! groups, tags, manual tag operations, segments) — [`crate::replay`] loads the records, applies
//! each tag operation right after the event it followed (`after_seq`), and evaluates every
//! segment at the end, so a rebuild reproduces tags and memberships exactly.

pub mod bench;
pub mod eval;
pub mod ops;

use std::collections::VecDeque;

use rustc_hash::{FxHashMap, FxHashSet};
use siyu_model::condition::{Condition, Dependencies};
use siyu_model::score::RfmMeans;
use siyu_model::{Millis, ProfileId, Seq};
use siyu_store::{MembershipChange, SegmentRecord, TagGroupRecord, TagOp, TagRecord};

use crate::state::TenantState;
pub use eval::Evaluator;

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
                state.audience.keep_properties(stored.seq, code, props.get());
            }
        }
    }
    let now = Millis::now();
    let ids: Vec<i64> = state.audience.segments.iter().map(|s| s.record.id).collect();
    for id in ids {
        state.evaluate_segment(id, now, None);
    }
    Ok(())
}

/// A tenant's tags, segments and memberships.
#[derive(Default)]
pub struct Audience {
    pub groups: Vec<TagGroupRecord>,
    /// Live tags in id order.
    pub tags: Vec<TagRecord>,
    tag_ids: FxHashMap<String, u32>,
    /// Every manual tag operation applied so far, in order: the tag history of profiles.
    pub tag_ops: Vec<TagOp>,
    /// Operations loaded for a replay, waiting for the event they followed.
    pending_ops: VecDeque<TagOp>,
    pub segments: Vec<Segment>,
    /// Off while replaying: memberships are evaluated once at the end instead.
    tracking: bool,
    /// Profiles touched since the last refresh: (profile, event type code, carried traits).
    dirty: Vec<(ProfileId, u16, bool)>,
    /// How many merge records the last refresh saw (merged-away profiles leave their segments).
    merges_seen: usize,
    /// Event properties kept for conditions that filter on them (`where properties.x = …`),
    /// by log position, for the event types in `property_types` only.
    properties: FxHashMap<Seq, serde_json::Value>,
    property_types: FxHashSet<u16>,
    /// The buyers' RFM means of the last full evaluation; incremental refreshes grade against
    /// them (the sweep recomputes them).
    means: Option<RfmMeans>,
}

/// A segment: its record, its checked condition and its members.
pub struct Segment {
    pub record: SegmentRecord,
    /// `None` when the stored condition no longer checks (it then matches nobody).
    pub condition: Option<Condition>,
    pub error: Option<String>,
    pub deps: Dependencies,
    pub members: Members,
}

/// A set of profile ids as a bitmap over the dense ids, with its size.
#[derive(Debug, Clone, Default)]
pub struct Members {
    bits: Vec<u64>,
    size: u64,
}

impl Members {
    pub fn contains(&self, id: ProfileId) -> bool {
        let (word, bit) = (id as usize / 64, id % 64);
        self.bits.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Sets membership; returns true when it changed.
    pub fn set(&mut self, id: ProfileId, member: bool) -> bool {
        let (word, bit) = (id as usize / 64, id % 64);
        if word >= self.bits.len() {
            if !member {
                return false;
            }
            self.bits.resize(word + 1, 0);
        }
        let was = self.bits[word] & (1 << bit) != 0;
        if was == member {
            return false;
        }
        self.bits[word] ^= 1 << bit;
        if member {
            self.size += 1;
        } else {
            self.size -= 1;
        }
        true
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Member ids in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = ProfileId> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, word)| {
            let mut w = *word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros();
                w &= w - 1;
                Some(i as ProfileId * 64 + bit as ProfileId)
            })
        })
    }
}

impl Segment {
    pub fn new(record: SegmentRecord, condition: Result<Condition, String>) -> Segment {
        let (condition, error) = match condition {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e)),
        };
        let deps = condition.as_ref().map(Condition::dependencies).unwrap_or_default();
        Segment { record, condition, error, deps, members: Members::default() }
    }

    /// Can an event of this type (with or without traits) change whether its profile matches?
    fn affected_by(&self, type_name: &str, traits: bool) -> bool {
        let d = &self.deps;
        // Profile fields and identities may change with any event; the rest only with their own.
        !d.fields.is_empty()
            || !d.identity_kinds.is_empty()
            || (traits && !d.traits.is_empty())
            || d.event_types.contains(type_name)
    }
}

impl Audience {
    /// Loads the records of a tenant before a replay.
    pub fn load(
        groups: Vec<TagGroupRecord>,
        tags: Vec<TagRecord>,
        ops: Vec<TagOp>,
        segments: Vec<SegmentRecord>,
    ) -> Audience {
        let mut audience = Audience { groups, pending_ops: ops.into(), ..Audience::default() };
        audience.set_tags(tags);
        // Conditions are checked after the replay, when custom event types are known.
        audience.segments = segments.into_iter().map(|r| Segment::new(r, Err("not loaded".into()))).collect();
        audience
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

    pub(crate) fn touched(&mut self, profile: ProfileId, code: u16, traits: bool) {
        if self.tracking && !self.segments.is_empty() {
            self.dirty.push((profile, code, traits));
        }
    }

    pub fn segment(&self, id: i64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.record.id == id)
    }
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
            tags: self.audience.tags.iter().map(|t| t.name.clone()).collect(),
            ..Default::default()
        };
        schema.custom_event_types.extend(self.custom_types.iter().map(|(_, name)| name.to_string()));
        schema
            .custom_event_types
            .extend(self.settings.scores.weights.keys().filter(|k| siyu_model::EventType::parse(k).is_none()).cloned());
        schema
    }

    /// Applies the loaded tag operations that followed events before `seq` (during a replay).
    pub(crate) fn apply_due_tag_ops(&mut self, seq: Seq) {
        while self.audience.pending_ops.front().is_some_and(|op| op.after_seq < seq) {
            let op = self.audience.pending_ops.pop_front().expect("checked");
            self.apply_tag_op(op);
        }
    }

    /// Applies one manual tag operation to the profile holding its identity; returns that profile
    /// when its tags changed.
    pub fn apply_tag_op(&mut self, op: TagOp) -> Option<ProfileId> {
        let identity = siyu_model::Identity {
            kind: siyu_model::IdentityKind::parse(&op.identity_kind)
                .unwrap_or_else(|_| siyu_model::IdentityKind::Custom(op.identity_kind.clone())),
            value: op.identity_value.clone(),
        };
        let known_tag = self.audience.tags.iter().any(|t| t.id == op.tag_id);
        let profile = self.lookup(&identity);
        let tag = op.tag_id as u32;
        let add = op.add;
        self.audience.tag_ops.push(op);
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
    pub(crate) fn finish_replay(&mut self, now: Millis) {
        self.apply_due_tag_ops(Seq::MAX);
        let schema = self.schema();
        for segment in &mut self.audience.segments {
            let checked = siyu_model::condition::compile(&segment.record.condition, &schema)
                .map_err(|errors| errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "));
            if let Err(e) = &checked {
                tracing::warn!(tenant = %self.tenant, segment = segment.record.id, error = %e, "stored segment no longer checks");
            }
            *segment = Segment::new(segment.record.clone(), checked);
        }
        self.recount_property_types();
        let ids: Vec<i64> = self.audience.segments.iter().map(|s| s.record.id).collect();
        for id in ids {
            self.evaluate_segment(id, now, None);
        }
        self.audience.merges_seen = self.merges.len();
        self.audience.tracking = true;
    }

    /// Keeps the properties of events of these types from now on (tests and benchmarks; segments
    /// register theirs themselves).
    pub fn watch_properties(&mut self, names: &[&str]) {
        for name in names {
            let code = self.type_code(name);
            self.audience.property_types.insert(code);
        }
    }

    /// The event type codes whose properties some segment filters on.
    pub(crate) fn recount_property_types(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        for segment in &self.audience.segments {
            if let Some(c) = &segment.condition {
                property_types(c, &mut names);
            }
        }
        names.sort();
        names.dedup();
        let codes: FxHashSet<u16> = names.iter().map(|n| self.type_code(n)).collect();
        self.audience.property_types = codes;
        names
    }

    pub(crate) fn type_code_of(&self, name: &str) -> Option<u16> {
        if let Some(known) = siyu_model::EventType::parse(name) {
            return Some(known.code());
        }
        self.custom_types.get(name).map(|i| siyu_model::event_type::FIRST_CUSTOM_CODE + i as u16)
    }

    fn means_at(&mut self, t: Millis, refresh: bool) -> RfmMeans {
        if refresh || self.audience.means.is_none() {
            self.audience.means = Some(self.rfm_means(t));
        }
        self.audience.means.expect("set above")
    }

    /// Re-evaluates one segment over every live profile at `t` and returns the changes (attributed
    /// to `seq` when an event caused them). The RFM means are recomputed.
    pub(crate) fn evaluate_segment(&mut self, id: i64, t: Millis, seq: Option<Seq>) -> Vec<MembershipChange> {
        let Some(index) = self.audience.segments.iter().position(|s| s.record.id == id) else { return Vec::new() };
        let needs_means = self.audience.segments[index].deps.tenant_wide;
        let means = self.means_at(t, needs_means);
        let placeholder = Segment::new(self.audience.segments[index].record.clone(), Err(String::new()));
        let mut segment = std::mem::replace(&mut self.audience.segments[index], placeholder);
        let mut changes = Vec::new();
        {
            let evaluator = Evaluator::new(self, t, &means);
            for profile in 1..=self.profile_count_including_merged() as ProfileId {
                let member = segment.condition.as_ref().is_some_and(|c| evaluator.matches(c, profile));
                if segment.members.set(profile, member) {
                    changes.push(change(&segment, profile, member, t, seq));
                }
            }
        }
        self.audience.segments[index] = segment;
        changes
    }

    /// Keeps memberships current after events were applied: re-evaluates the touched profiles
    /// for the segments their events can affect, and removes merged-away profiles.
    pub fn refresh_audience(&mut self, t: Millis) -> Vec<MembershipChange> {
        if self.audience.segments.is_empty() {
            self.audience.dirty.clear();
            self.audience.merges_seen = self.merges.len();
            return Vec::new();
        }
        let mut dirty = std::mem::take(&mut self.audience.dirty);
        for merge in &self.merges[self.audience.merges_seen.min(self.merges.len())..] {
            dirty.push((merge.merged, u16::MAX, true));
        }
        self.audience.merges_seen = self.merges.len();
        if dirty.is_empty() {
            return Vec::new();
        }
        let seq = Some(self.applied_seq);
        let means = self.means_at(t, false);
        let mut segments = std::mem::take(&mut self.audience.segments);
        let mut changes = Vec::new();
        {
            let evaluator = Evaluator::new(self, t, &means);
            for segment in &mut segments {
                let Some(condition) = &segment.condition else { continue };
                for &(profile, code, traits) in &dirty {
                    let merged = code == u16::MAX;
                    if !merged && !segment.affected_by(self.type_name(code), traits) {
                        continue;
                    }
                    let member = !merged && evaluator.matches(condition, profile);
                    if segment.members.set(profile, member) {
                        changes.push(change(segment, profile, member, t, seq));
                    }
                }
            }
        }
        self.audience.segments = segments;
        self.audience.dirty = dirty;
        self.audience.dirty.clear();
        changes
    }

    /// Re-evaluates one profile for the segments reading one of `tags` (after a tag change).
    pub(crate) fn refresh_for_tags(&mut self, profiles: &[ProfileId], t: Millis) -> Vec<MembershipChange> {
        let means = self.means_at(t, false);
        let mut segments = std::mem::take(&mut self.audience.segments);
        let mut changes = Vec::new();
        {
            let evaluator = Evaluator::new(self, t, &means);
            for segment in segments.iter_mut().filter(|s| !s.deps.tags.is_empty()) {
                let Some(condition) = &segment.condition else { continue };
                for &profile in profiles {
                    let member = evaluator.matches(condition, profile);
                    if segment.members.set(profile, member) {
                        changes.push(change(segment, profile, member, t, None));
                    }
                }
            }
        }
        self.audience.segments = segments;
        changes
    }

    /// The periodic sweep: segments that time (or other profiles, for RFM) can change are
    /// re-evaluated over every profile. Returns the changes and every segment's size.
    pub fn sweep_audience(&mut self, t: Millis) -> (Vec<MembershipChange>, Vec<(i64, u64)>) {
        let mut changes = self.refresh_audience(t);
        self.audience.means = None;
        let ids: Vec<i64> = self
            .audience
            .segments
            .iter()
            .filter(|s| s.deps.time_dependent || s.deps.tenant_wide)
            .map(|s| s.record.id)
            .collect();
        for id in ids {
            changes.extend(self.evaluate_segment(id, t, None));
        }
        let sizes = self.audience.segments.iter().map(|s| (s.record.id, s.members.size())).collect();
        (changes, sizes)
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
    fn members_set_iterate_and_count() {
        let mut m = Members::default();
        assert!(m.set(3, true));
        assert!(!m.set(3, true));
        assert!(m.set(130, true));
        assert!(!m.set(999, false));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![3, 130]);
        assert_eq!(m.size(), 2);
        assert!(m.set(3, false));
        assert!(!m.contains(3) && m.contains(130));
        assert_eq!(m.size(), 1);
    }

    #[test]
    fn days_are_china_standard_time() {
        // 2026-11-01T16:30Z is 2026-11-02 00:30 in Beijing.
        assert_eq!(cst_day(Millis::parse_rfc3339("2026-11-01T16:30:00Z").unwrap()), "2026-11-02");
    }
}
