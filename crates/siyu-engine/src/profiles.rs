//! The core of a tenant's derived state: its profiles, the facts and folded scores of each, the
//! dense summary rows segment scans read, and a profile "as of" a time ([`ProfileAt`]). Identity resolution (which profile an event
//! belongs to, merges) is `identity.rs`, on the same struct.
//!
//! Invariant: `Profiles` is a pure function of (the tenant's settings, the log prefix up to
//! `applied_seq`). `Profiles::apply_ref` is the only way events enter it, in seq order, and it
//! returns the [`Change`] it made, which the state hands to its subscribers (`subscriber.rs`).
//! Nothing here knows of segments, tags or any other subscriber.

use std::borrow::Cow;

use rustc_hash::FxHashMap;
use siyu_model::event_type::FIRST_CUSTOM_CODE;
use siyu_model::score::ProfileFacts;
use siyu_model::{
    Channel, Event, Fact, Millis, ProfileId, ProfileScores, ProfileSummary, ScanRow, ScoringRules, Seq, TenantId,
    TenantSettings,
};

use crate::identity::{IdentityLink, MergeRecord, RefusedMerge};
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
    pub properties: Option<&'a str>,
    /// A consent event's purpose as its fact keeps it (`Purpose::consent_code`).
    pub consent_purpose: u8,
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
            properties: event.properties.as_deref().map(|p| p.get()),
            consent_purpose: consent_purpose_of(event),
        }
    }
}

/// `properties.purpose` of a consent event, coded; parsed only for consent events.
fn consent_purpose_of(event: &Event) -> u8 {
    use siyu_model::reach::template::Purpose;
    if !matches!(event.kind.as_str(), "consent_granted" | "consent_revoked") {
        return Purpose::ANY;
    }
    // Consent events are rare: a full parse of their properties costs nothing that matters.
    let properties = event.properties.as_deref().and_then(|p| serde_json::from_str::<serde_json::Value>(p.get()).ok());
    // As the replay reads it back (the JSON value as text): a number is a purpose siyu does not know.
    match properties.as_ref().and_then(|p| p.get("purpose")) {
        None | Some(serde_json::Value::Null) => Purpose::ANY,
        Some(serde_json::Value::String(text)) => Purpose::consent_code(Some(text)),
        Some(_) => Purpose::OTHER,
    }
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

impl Profile {
    /// The facts at or before `when`; `None` when there are none at a time the caller named (the
    /// profile did not exist yet, see [`AsOf`]).
    pub fn facts_at(&self, when: AsOf) -> Option<&[Fact]> {
        let facts = &self.facts[..self.facts.partition_point(|f| f.ts <= when.t)];
        (!facts.is_empty() || !when.explicit).then_some(facts)
    }
}

/// What applying one event changed, as the subscribers see it (`subscriber.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<'e> {
    pub seq: Seq,
    /// The live profile the event now belongs to.
    pub profile: ProfileId,
    /// The event created `profile`.
    pub created: bool,
    /// Profiles the event merged into `profile` (merged-away now), in merge order.
    pub absorbed: Vec<ProfileId>,
    /// Merges and links the identity rules refused.
    pub refusals: u32,
    /// The event type's code (see [`Profiles::type_code`]).
    pub code: u16,
    /// The event carried traits.
    pub traits: bool,
    /// The event's properties, raw JSON (absent in a replay from the log's rows).
    pub properties: Option<&'e str>,
}

/// The time a read is evaluated at, and whether the caller named it.
///
/// "As of" a time the caller gives, only events up to it count, and a profile without one did
/// not exist yet. Now, a profile whose only events carry (slightly) future timestamps — clock
/// skew up to `TimeLimits::max_future_ms` is accepted — still exists, with the scores of no events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsOf {
    pub t: Millis,
    /// Named by the caller: profiles without an event at or before `t` do not exist.
    pub explicit: bool,
}

impl AsOf {
    /// The caller's `as_of`, or now.
    pub fn of(as_of: Option<Millis>) -> AsOf {
        match as_of {
            Some(t) => AsOf::past(t),
            None => AsOf::current(Millis::now()),
        }
    }

    /// As of a time the caller named.
    pub fn past(t: Millis) -> AsOf {
        AsOf { t, explicit: true }
    }

    /// Now, taken as `t`.
    pub fn current(t: Millis) -> AsOf {
        AsOf { t, explicit: false }
    }
}

/// A live profile as of a time `t`: the facts up to `t` and their fold. Everything a view
/// shows of a profile "as of" `t` is read from here, so that nothing later leaks in.
pub struct ProfileAt<'s> {
    pub id: ProfileId,
    pub profile: &'s Profile,
    /// The profile's facts with `ts <= t`, sorted.
    pub facts: &'s [Fact],
    /// The fold of `facts`.
    pub fold: Cow<'s, ProfileFacts>,
    pub t: Millis,
}

impl ProfileAt<'_> {
    pub fn scores(&self, rules: &ScoringRules) -> ProfileScores {
        self.fold.scores_at(self.facts, self.t, rules)
    }
}

pub struct Profiles {
    pub tenant: TenantId,
    pub settings: TenantSettings,
    pub rules: ScoringRules,
    pub applied_seq: Seq,
    pub accounts: Interner,
    pub groups: Interner,
    pub sources: Interner,
    pub custom_types: Interner,
    /// `kind␟value` → the live profile holding it.
    pub(crate) identity_index: FxHashMap<Box<str>, ProfileId>,
    /// Index 0 is unused so that a `ProfileId` indexes directly.
    pub(crate) profiles: Slab<Profile>,
    /// `profiles[id].state.summary(rules)` for every id, dense: what segment scans read instead of
    /// the (much larger, pointer-rich) profiles. Kept current wherever a profile's facts change.
    pub(crate) summaries: Vec<ProfileSummary>,
    /// `summaries[id].scan_row()` for every id: the columns the cheapest clauses read.
    scan_rows: Vec<ScanRow>,
    /// The live (not merged-away) profiles.
    pub(crate) live: Members,
    pub merges: Vec<MergeRecord>,
    pub refusals: Vec<RefusedMerge>,
    pub refusal_count: u64,
    pub live_profiles: u64,
    pub event_count: u64,
    /// Scratch space for building index keys without allocating.
    pub(crate) key_buf: String,
}

impl Profiles {
    pub fn new(tenant: TenantId, settings: TenantSettings) -> Profiles {
        let rules = ScoringRules::compile(&settings.scores, |_| None);
        Profiles {
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

    pub(crate) fn set_summary(&mut self, id: ProfileId, summary: ProfileSummary) {
        self.scan_rows[id as usize] = summary.scan_row();
        self.summaries[id as usize] = summary;
    }

    pub fn profile(&self, id: ProfileId) -> Option<&Profile> {
        self.profiles.get(id as usize).filter(|_| id != 0)
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

    pub(crate) fn recompile_rules(&mut self) {
        let custom = &self.custom_types;
        self.rules =
            ScoringRules::compile(&self.settings.scores, |name| custom.get(name).map(|i| FIRST_CUSTOM_CODE + i as u16));
    }

    /// Applies the event at `seq` (which must follow `applied_seq`): resolves its identities to
    /// one profile (merging where the evidence says so), then folds it into that profile.
    pub(crate) fn apply_ref<'e>(&mut self, seq: Seq, event: &EventRef<'e>) -> Change<'e> {
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
            purpose: event.consent_purpose,
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
        Change {
            seq,
            profile: outcome.profile,
            created: outcome.created,
            absorbed: outcome.absorbed,
            refusals: outcome.refusals,
            code,
            traits: event.traits.is_some(),
            properties: event.properties,
        }
    }

    /// A live profile as of `t` (named by the caller); `None` when it has no event at or before
    /// `t` (it did not exist yet) or is not a live profile.
    pub fn at(&self, id: ProfileId, t: Millis) -> Option<ProfileAt<'_>> {
        self.at_when(id, AsOf::past(t))
    }

    /// A live profile at `when` (see [`AsOf`] for who exists then).
    pub fn at_when(&self, id: ProfileId, when: AsOf) -> Option<ProfileAt<'_>> {
        let t = when.t;
        let profile = self.profile(id).filter(|p| p.merged_into.is_none())?;
        if profile.state.last_ts <= t {
            let facts = &profile.facts[..];
            return Some(ProfileAt { id, profile, facts, fold: Cow::Borrowed(&profile.state), t });
        }
        // Facts later than `t` exist: fold the prefix (an "as of" query into the past).
        let facts = profile.facts_at(when)?;
        let fold = Cow::Owned(ProfileFacts::fold(facts, t, &self.rules));
        Some(ProfileAt { id, profile, facts, fold, t })
    }

    /// The scores of a live profile at `t` (`None` if it has no event by then).
    pub fn scores_at(&self, id: ProfileId, t: Millis) -> Option<ProfileScores> {
        self.at(id, t).map(|at| at.scores(&self.rules))
    }

    /// A live profile's facts (`None` for a merged-away or unknown id).
    pub(crate) fn live_facts(&self, id: ProfileId) -> Option<&[Fact]> {
        self.profile(id).filter(|p| p.merged_into.is_none()).map(|p| &p.facts[..])
    }

    pub(crate) fn create_profile(&mut self, seq: Seq) -> ProfileId {
        let id = self.profiles.len() as ProfileId;
        self.profiles.push(Profile { created_seq: seq, ..Profile::default() });
        self.summaries.push(ProfileSummary::default());
        self.scan_rows.push(ProfileSummary::default().scan_row());
        self.live.set(id, true);
        self.live_profiles += 1;
        id
    }
}

pub(crate) fn refold(facts: &[Fact], rules: &ScoringRules) -> ProfileFacts {
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

pub(crate) fn merge_sorted(a: Vec<Fact>, b: Vec<Fact>) -> Vec<Fact> {
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
