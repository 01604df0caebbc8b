//! A tenant's derived state, held in memory: identities, profiles and their folded scores.
//!
//! Invariant: a `TenantState` is a pure function of (the tenant's settings, the log prefix up to
//! `applied_seq`). [`TenantState::apply`] is the only way events enter it, in seq order, so
//! incremental ingestion and `siyu rebuild` produce identical states.

use rustc_hash::FxHashMap;
use siyu_model::event_type::FIRST_CUSTOM_CODE;
use siyu_model::score::{ProfileFacts, RfmMeans};
use siyu_model::{
    Channel, Event, Fact, Identity, IdentityKind, Millis, ProfileId, ProfileScores, ProfileSummary, ScanRow,
    ScoringRules, Seq, TenantId, TenantSettings,
};

use crate::audience::Touch;
use crate::intern::Interner;
use crate::members::Members;
use crate::slab::Slab;

/// One identity of an event, borrowed: as decoded from a log row or taken from an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityRef<'a> {
    pub kind: &'a str,
    pub value: &'a str,
}

/// What applying an event needs, borrowed, so that a replay never builds owned events.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    pub type_name: &'a str,
    pub channel: Channel,
    pub account: &'a str,
    pub identities: &'a [IdentityRef<'a>],
    pub timestamp: Millis,
    pub amount: Option<siyu_model::Fen>,
    pub source_kind: Option<&'a str>,
    pub source_id: &'a str,
    pub group_id: Option<&'a str>,
    pub traits: Option<&'a str>,
}

/// The identities of an event as refs (reused buffer, no allocation once warm).
pub fn identity_refs<'a>(event: &'a Event, out: &mut Vec<IdentityRef<'a>>) {
    out.clear();
    out.extend(event.identities.iter().map(|i| IdentityRef { kind: i.kind.as_str(), value: &i.value }));
}

impl<'a> EventRef<'a> {
    pub fn of(event: &'a Event, identities: &'a [IdentityRef<'a>]) -> EventRef<'a> {
        EventRef {
            type_name: event.kind.as_str(),
            channel: event.channel,
            account: &event.account,
            identities,
            timestamp: event.timestamp,
            amount: event.amount,
            source_kind: event.source.as_ref().map(|s| s.kind.as_str()),
            source_id: event.source.as_ref().map(|s| s.id.as_str()).unwrap_or(""),
            group_id: event.group_id.as_deref(),
            traits: event.traits.as_deref().map(|t| t.get()),
        }
    }
}

/// How one identity came to belong to a profile: the evidence an unmerge works from.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityLink {
    pub identity: Identity,
    pub seq: Seq,
    pub at: Millis,
    pub channel: Channel,
    pub account: u32,
    pub source: u32,
}

/// One person as far as the log proves.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Set once this profile was merged into an older one.
    pub merged_into: Option<ProfileId>,
    pub created_seq: Seq,
    pub identities: Vec<IdentityLink>,
    /// Every fact of the person, sorted by `(ts, seq)`.
    pub facts: Vec<Fact>,
    /// The fold of `facts`.
    pub state: ProfileFacts,
    /// Traits from `identify` calls and imports, latest value per key wins.
    pub traits: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    /// Profiles merged into this one (directly).
    pub absorbed: Vec<ProfileId>,
    /// The tags the person carries (manual and imported), as sorted tag ids.
    pub tags: Vec<u32>,
}

/// A merge that happened: `merged` joined `survivor` because event `seq` carried identities of both.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeRecord {
    pub survivor: ProfileId,
    pub merged: ProfileId,
    pub seq: Seq,
    pub at: Millis,
    /// The identities of the event that proved the link.
    pub evidence: Vec<Identity>,
    /// The top-ranked identity each side held when merged; an unmerge forbids these two together.
    pub survivor_anchor: Identity,
    pub merged_anchor: Identity,
}

/// A merge or link that was refused, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedMerge {
    pub seq: Seq,
    pub at: Millis,
    pub kept: ProfileId,
    pub other: Option<ProfileId>,
    pub identity: Identity,
    pub reason: RefusalReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The merged profile would hold more identities of a kind than the tenant allows.
    IdentityLimit,
    /// An operator declared the two to be different people (unmerge).
    CannotLink,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::IdentityLimit => "identity_limit",
            RefusalReason::CannotLink => "cannot_link",
        }
    }
}

/// What applying one event did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub profile: ProfileId,
    pub created: bool,
    pub merges: u32,
    pub refusals: u32,
}

/// Refusals are kept for inspection up to this many per tenant; the counter goes on.
const REFUSALS_KEPT: usize = 10_000;

pub struct TenantState {
    pub tenant: TenantId,
    pub settings: TenantSettings,
    pub rules: ScoringRules,
    pub applied_seq: Seq,
    pub accounts: Interner,
    pub groups: Interner,
    pub sources: Interner,
    pub custom_types: Interner,
    /// `kind␟value` → the live profile holding it.
    identity_index: FxHashMap<Box<str>, ProfileId>,
    /// Index 0 is unused so that a `ProfileId` indexes directly.
    profiles: Slab<Profile>,
    /// `profiles[id].state.summary(rules)` for every id, dense: what segment scans read instead of
    /// the (much larger, pointer-rich) profiles. Kept current wherever a profile's facts change.
    summaries: Vec<ProfileSummary>,
    /// `summaries[id].scan_row()` for every id: the columns the cheapest clauses read.
    scan_rows: Vec<ScanRow>,
    /// The live (not merged-away) profiles.
    live: Members,
    pub merges: Vec<MergeRecord>,
    pub refusals: Vec<RefusedMerge>,
    pub refusal_count: u64,
    pub live_profiles: u64,
    pub event_count: u64,
    /// Scratch space for building index keys without allocating.
    key_buf: String,
    /// Tags, segments and their memberships (audience.rs).
    pub audience: crate::audience::Audience,
}

fn write_key(buf: &mut String, kind: &str, value: &str) {
    buf.clear();
    buf.push_str(kind);
    buf.push('\u{1f}');
    buf.push_str(value);
}

fn identity_key(identity: &Identity) -> Box<str> {
    let mut key = String::new();
    write_key(&mut key, identity.kind.as_str(), &identity.value);
    key.into_boxed_str()
}

impl TenantState {
    pub fn new(tenant: TenantId, settings: TenantSettings) -> TenantState {
        let rules = ScoringRules::compile(&settings.scores, |_| None);
        TenantState {
            tenant,
            settings,
            rules,
            applied_seq: 0,
            accounts: Interner::new(),
            groups: Interner::new(),
            sources: Interner::new(),
            custom_types: Interner::new(),
            identity_index: FxHashMap::default(),
            profiles: std::iter::once(Profile::default()).collect(),
            summaries: vec![ProfileSummary::default()],
            scan_rows: vec![ProfileSummary::default().scan_row()],
            live: Members::default(),
            merges: Vec::new(),
            refusals: Vec::new(),
            refusal_count: 0,
            live_profiles: 0,
            event_count: 0,
            key_buf: String::new(),
            audience: crate::audience::Audience::default(),
        }
    }

    pub(crate) fn profile_mut(&mut self, id: ProfileId) -> Option<&mut Profile> {
        self.profiles.get_mut(id as usize).filter(|_| id != 0)
    }

    /// The live profiles' ids, in creation order.
    pub fn profile_ids(&self) -> impl Iterator<Item = ProfileId> + '_ {
        self.live.iter()
    }

    /// The live profiles.
    pub fn live(&self) -> &Members {
        &self.live
    }

    /// The summary of a profile's fold (of a merged-away one: as it was when merged).
    pub fn profile_summary(&self, id: ProfileId) -> Option<&ProfileSummary> {
        self.summaries.get(id as usize).filter(|_| id != 0)
    }

    /// The scan columns of a profile's summary ([`Self::profile_summary`]).
    pub fn scan_row(&self, id: ProfileId) -> Option<&ScanRow> {
        self.scan_rows.get(id as usize).filter(|_| id != 0)
    }

    /// Every id's scan columns ([`Self::scan_row`]), indexed by id (index 0 unused).
    pub fn scan_rows(&self) -> &[ScanRow] {
        &self.scan_rows
    }

    fn set_summary(&mut self, id: ProfileId, summary: ProfileSummary) {
        self.scan_rows[id as usize] = summary.scan_row();
        self.summaries[id as usize] = summary;
    }

    pub fn profile_count_including_merged(&self) -> usize {
        self.profiles.len() - 1
    }

    pub fn profile(&self, id: ProfileId) -> Option<&Profile> {
        self.profiles.get(id as usize).filter(|_| id != 0)
    }

    /// Follows merges: the live profile an id (current or merged-away) now belongs to.
    pub fn resolve(&self, mut id: ProfileId) -> Option<ProfileId> {
        loop {
            let profile = self.profile(id)?;
            match profile.merged_into {
                Some(next) => id = next,
                None => return Some(id),
            }
        }
    }

    pub fn lookup(&self, identity: &Identity) -> Option<ProfileId> {
        self.identity_index.get(&identity_key(identity)).copied()
    }

    /// The compact code of an event type; custom types are registered on first sight.
    pub fn type_code(&mut self, name: &str) -> u16 {
        if let Some(known) = siyu_model::EventType::parse(name) {
            return known.code();
        }
        let known = self.custom_types.get(name).is_some();
        let code = FIRST_CUSTOM_CODE + self.custom_types.intern(name) as u16;
        if !known && self.settings.scores.weights.contains_key(name) {
            self.recompile_rules();
        }
        code
    }

    pub fn type_name(&self, code: u16) -> &str {
        match siyu_model::EventType::from_code(code) {
            Some(t) => t.as_str(),
            None => self.custom_types.name(u32::from(code.saturating_sub(FIRST_CUSTOM_CODE))),
        }
    }

    fn recompile_rules(&mut self) {
        let custom = &self.custom_types;
        self.rules =
            ScoringRules::compile(&self.settings.scores, |name| custom.get(name).map(|i| FIRST_CUSTOM_CODE + i as u16));
    }

    /// Applies an owned event; see [`TenantState::apply_ref`].
    pub fn apply(&mut self, seq: Seq, event: &Event) -> ApplyOutcome {
        let mut identities = Vec::with_capacity(event.identities.len());
        identity_refs(event, &mut identities);
        let outcome = self.apply_ref(seq, &EventRef::of(event, &identities));
        if let Some(properties) = &event.properties {
            let code = self.type_code(event.kind.as_str());
            self.audience.keep_properties(seq, code, properties.get());
        }
        outcome
    }

    /// Applies the event at `seq` (which must follow `applied_seq`): resolves its identities to
    /// one profile (merging where the evidence says so), then folds it into that profile.
    pub fn apply_ref(&mut self, seq: Seq, event: &EventRef<'_>) -> ApplyOutcome {
        debug_assert!(seq > self.applied_seq, "events must be applied in log order");
        self.applied_seq = seq;
        self.event_count += 1;
        let outcome = self.resolve_identities(seq, event);
        let code = self.type_code(event.type_name);
        let source = match event.source_kind {
            Some(kind) => {
                if event.source_id.is_empty() {
                    self.sources.intern(kind)
                } else {
                    // Sources are keyed `kind:id`, as `Source::key` prints them.
                    self.key_buf.clear();
                    self.key_buf.push_str(kind);
                    self.key_buf.push(':');
                    self.key_buf.push_str(event.source_id);
                    self.sources.intern(&self.key_buf)
                }
            }
            None => 0,
        };
        let fact = Fact {
            ts: event.timestamp,
            seq,
            amount: event.amount.unwrap_or_default(),
            code,
            channel: event.channel,
            account: self.accounts.intern(event.account),
            group: event.group_id.map(|g| self.groups.intern(g)).unwrap_or(0),
            source,
        };
        let rules = &self.rules;
        let profile = &mut self.profiles[outcome.profile as usize];
        insert_fact(profile, fact, rules);
        let summary = profile.state.summary(rules);
        if let Some(traits) = event.traits {
            merge_traits(profile, traits);
        }
        self.set_summary(outcome.profile, summary);
        let touch = match outcome.created {
            true => Touch::Created,
            false => Touch::Event { code, traits: event.traits.is_some() },
        };
        self.audience.touched(outcome.profile, touch);
        outcome
    }

    fn lookup_ref(&mut self, identity: &IdentityRef<'_>) -> Option<ProfileId> {
        write_key(&mut self.key_buf, identity.kind, identity.value);
        self.identity_index.get(self.key_buf.as_str()).copied()
    }

    fn resolve_identities(&mut self, seq: Seq, event: &EventRef<'_>) -> ApplyOutcome {
        let mut identities: Vec<&IdentityRef<'_>> = event.identities.iter().collect();
        identities.sort_by_key(|i| siyu_model::identity::rank_of(i.kind));
        let mut outcome = ApplyOutcome::default();
        let mut target: Option<ProfileId> = None;
        let mut unknown: Vec<&IdentityRef<'_>> = Vec::new();
        for identity in &identities {
            match self.lookup_ref(identity) {
                None => unknown.push(identity),
                Some(found) => match target {
                    None => target = Some(found),
                    Some(current) if current == found => {}
                    Some(current) => match self.try_merge(current, found, seq, event) {
                        Ok(survivor) => {
                            target = Some(survivor);
                            outcome.merges += 1;
                        }
                        Err(reason) => {
                            self.refuse(seq, event.timestamp, current, Some(found), owned(identity), reason);
                            outcome.refusals += 1;
                        }
                    },
                },
            }
        }
        let top_is_unknown = identities.first().is_some_and(|top| unknown.first() == Some(top));
        let target = match target {
            Some(existing) if top_is_unknown && !self.can_link(existing, &owned(unknown[0])) => {
                // The event's strongest identity is new and the profile found through a weaker
                // one cannot take it (e.g. a shared anonymous_id): this is a different person.
                outcome.created = true;
                self.create_profile(seq)
            }
            Some(existing) => existing,
            None => {
                outcome.created = true;
                self.create_profile(seq)
            }
        };
        for identity in unknown {
            if self.lookup_ref(identity).is_some() {
                continue; // linked a moment ago (same identity twice in one event)
            }
            let identity = owned(identity);
            if self.can_link(target, &identity) {
                self.link(target, identity, seq, event);
            } else {
                self.refuse(seq, event.timestamp, target, None, identity, RefusalReason::IdentityLimit);
                outcome.refusals += 1;
            }
        }
        outcome.profile = target;
        outcome
    }

    fn create_profile(&mut self, seq: Seq) -> ProfileId {
        let id = self.profiles.len() as ProfileId;
        self.profiles.push(Profile { created_seq: seq, ..Profile::default() });
        self.summaries.push(ProfileSummary::default());
        self.scan_rows.push(ProfileSummary::default().scan_row());
        self.live.set(id, true);
        self.live_profiles += 1;
        id
    }

    fn count_kind(&self, profile: ProfileId, kind: &IdentityKind) -> u32 {
        self.profiles[profile as usize].identities.iter().filter(|l| &l.identity.kind == kind).count() as u32
    }

    fn can_link(&self, profile: ProfileId, identity: &Identity) -> bool {
        if self.count_kind(profile, &identity.kind) >= self.settings.identity_limit(&identity.kind) {
            return false;
        }
        // A new identity may not join a profile holding the other side of a cannot-link pair.
        self.settings.cannot_link.iter().all(|rule| {
            let pair = |x: &Identity, y: &Identity| x == identity && self.lookup(y) == Some(profile);
            !(pair(&rule.a, &rule.b) || pair(&rule.b, &rule.a))
        })
    }

    fn link(&mut self, profile: ProfileId, identity: Identity, seq: Seq, event: &EventRef<'_>) {
        self.identity_index.insert(identity_key(&identity), profile);
        let account = self.accounts.intern(event.account);
        let source = match event.source_kind {
            Some(kind) if event.source_id.is_empty() => self.sources.intern(kind),
            Some(kind) => self.sources.intern(&format!("{kind}:{}", event.source_id)),
            None => 0,
        };
        self.profiles[profile as usize].identities.push(IdentityLink {
            identity,
            seq,
            at: event.timestamp,
            channel: event.channel,
            account,
            source,
        });
    }

    fn refuse(
        &mut self,
        seq: Seq,
        at: Millis,
        kept: ProfileId,
        other: Option<ProfileId>,
        identity: Identity,
        reason: RefusalReason,
    ) {
        self.refusal_count += 1;
        if self.refusals.len() < REFUSALS_KEPT {
            self.refusals.push(RefusedMerge { seq, at, kept, other, identity, reason });
        }
        tracing::debug!(tenant = %self.tenant, seq, kept, ?other, reason = reason.as_str(), "identity link refused");
    }

    fn anchor(&self, profile: ProfileId) -> Option<Identity> {
        self.profiles[profile as usize]
            .identities
            .iter()
            .min_by_key(|l| (l.identity.kind.rank(), l.seq))
            .map(|l| l.identity.clone())
    }

    fn merge_refusal(&self, a: ProfileId, b: ProfileId) -> Option<RefusalReason> {
        // Kinds only `b` holds cannot exceed the limit: `b` alone already respects it.
        let mut kinds: Vec<&IdentityKind> =
            self.profiles[a as usize].identities.iter().map(|l| &l.identity.kind).collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            if self.count_kind(a, kind) + self.count_kind(b, kind) > self.settings.identity_limit(kind) {
                return Some(RefusalReason::IdentityLimit);
            }
        }
        let holds = |p: ProfileId, id: &Identity| self.lookup(id) == Some(p);
        let forbidden = self
            .settings
            .cannot_link
            .iter()
            .any(|rule| (holds(a, &rule.a) && holds(b, &rule.b)) || (holds(a, &rule.b) && holds(b, &rule.a)));
        forbidden.then_some(RefusalReason::CannotLink)
    }

    /// Merges the younger of `a`, `b` into the older; returns the survivor.
    fn try_merge(
        &mut self,
        a: ProfileId,
        b: ProfileId,
        seq: Seq,
        event: &EventRef<'_>,
    ) -> Result<ProfileId, RefusalReason> {
        if let Some(reason) = self.merge_refusal(a, b) {
            return Err(reason);
        }
        let (survivor, merged) = if a < b { (a, b) } else { (b, a) };
        let survivor_anchor = self.anchor(survivor).expect("a live profile holds an identity");
        let merged_anchor = self.anchor(merged).expect("a live profile holds an identity");
        let taken = std::mem::take(&mut self.profiles[merged as usize]);
        for link in &taken.identities {
            self.identity_index.insert(identity_key(&link.identity), survivor);
        }
        let rules = &self.rules;
        let target = &mut self.profiles[survivor as usize];
        target.identities.extend(taken.identities);
        target.facts = merge_sorted(std::mem::take(&mut target.facts), taken.facts);
        target.state = refold(&target.facts, rules);
        let summary = target.state.summary(rules);
        for tag in taken.tags {
            if let Err(at) = target.tags.binary_search(&tag) {
                target.tags.insert(at, tag);
            }
        }
        if let Some(traits) = taken.traits {
            let mine = target.traits.get_or_insert_with(Default::default);
            for (k, v) in *traits {
                mine.entry(k).or_insert(v);
            }
        }
        target.absorbed.push(merged);
        target.absorbed.extend(taken.absorbed);
        self.set_summary(survivor, summary);
        let placeholder = &mut self.profiles[merged as usize];
        placeholder.merged_into = Some(survivor);
        placeholder.created_seq = taken.created_seq;
        self.live.set(merged, false);
        self.live_profiles -= 1;
        self.merges.push(MergeRecord {
            survivor,
            merged,
            seq,
            at: event.timestamp,
            evidence: event.identities.iter().map(owned).collect(),
            survivor_anchor,
            merged_anchor,
        });
        Ok(survivor)
    }

    /// The scores of a live profile at `t`.
    pub fn scores_at(&self, id: ProfileId, t: Millis) -> Option<ProfileScores> {
        let profile = self.profile(id)?;
        if profile.state.last_ts <= t {
            return Some(profile.state.scores_at(&profile.facts, t, &self.rules));
        }
        // Facts later than `t` exist: fold the prefix (an "as of" query into the past).
        let prefix = ProfileFacts::fold(&profile.facts, t, &self.rules);
        Some(prefix.scores_at(&profile.facts, t, &self.rules))
    }

    /// The buyers' RFM means at `t`, over every live profile.
    pub fn rfm_means(&self, t: Millis) -> RfmMeans {
        RfmMeans::from_inputs(&self.rfm_inputs_in(&self.live, t))
    }

    /// The RFM inputs at `t` of the buyers among `profiles` (live ones).
    pub fn rfm_inputs_in(&self, profiles: &Members, t: Millis) -> Vec<siyu_model::RfmInput> {
        let facts = |id: ProfileId| &self.profiles[id as usize].facts[..];
        profiles.iter().filter_map(|id| self.summaries[id as usize].rfm_input(|| facts(id), t, &self.rules)).collect()
    }

    /// Replaces the settings; the caller re-materialises the state from the log afterwards.
    pub fn set_settings(&mut self, settings: TenantSettings) {
        self.settings = settings;
        self.recompile_rules();
    }
}

/// An owned identity from a ref; kinds in events and in the log were validated on the way in.
fn owned(identity: &IdentityRef<'_>) -> Identity {
    Identity {
        kind: IdentityKind::parse(identity.kind).unwrap_or_else(|_| IdentityKind::Custom(identity.kind.to_string())),
        value: identity.value.to_string(),
    }
}

fn refold(facts: &[Fact], rules: &ScoringRules) -> ProfileFacts {
    let mut state = ProfileFacts::default();
    for fact in facts {
        state.apply(fact, rules);
    }
    state
}

fn insert_fact(profile: &mut Profile, fact: Fact, rules: &ScoringRules) {
    let in_order = profile.facts.last().is_none_or(|last| last.order_key() <= fact.order_key());
    if in_order {
        profile.facts.push(fact);
        profile.state.apply(&fact, rules);
        return;
    }
    // A late event: put it in its place and fold again. Rare in practice (clock skew, backfills).
    let at = profile.facts.partition_point(|f| f.order_key() <= fact.order_key());
    profile.facts.insert(at, fact);
    profile.state = refold(&profile.facts, rules);
}

fn merge_sorted(a: Vec<Fact>, b: Vec<Fact>) -> Vec<Fact> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].order_key() <= b[j].order_key() {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

fn merge_traits(profile: &mut Profile, raw: &str) {
    let Ok(serde_json::Value::Object(incoming)) = serde_json::from_str::<serde_json::Value>(raw) else {
        return;
    };
    let traits = profile.traits.get_or_insert_with(Default::default);
    for (k, v) in incoming {
        traits.insert(k, v);
    }
}
