//! A tenant's derived state, held in memory: the profiles (`profiles.rs`, with identity
//! resolution in `identity.rs`) and the subscribers that follow them — segments and tags
//! (`segments.rs`) and the RFM index (`rfm_index.rs`) — plus the "as of" reads of a profile.
//!
//! Invariant: a `TenantState` is a pure function of (the tenant's settings, tags and segments,
//! the log prefix up to `applied_seq`). [`TenantState::apply`] is the only way events enter it,
//! in seq order: the profiles apply the event and report the [`Change`], which every subscriber
//! then sees, in the same order on a replay (`subscriber.rs`). So incremental ingestion and
//! `siyu rebuild` produce identical states.

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};

use parking_lot::Mutex;
use siyu_model::score::{ProfileFacts, RfmMeans};
use siyu_model::{Event, Fact, Millis, ProfileId, ProfileScores, ScoringRules, Seq, TenantId, TenantSettings};

use crate::members::Members;
pub use crate::profiles::Profile;
use crate::profiles::{identity_refs, Change, EventRef, Profiles};

use crate::rfm_index::RfmIndex;
use crate::subscriber::Subscriber;

pub struct TenantState {
    /// Profiles, identities and scores; the state reads through to them (`Deref`).
    core: Profiles,
    /// Tags, segments and their memberships (segments.rs): a subscriber.
    pub segments: crate::segments::Segments,
    /// The buyers' RFM means at any time: a subscriber. Behind a lock because readers bring it
    /// up to date (see [`RfmIndex`]).
    rfm: Mutex<RfmIndex>,
}

impl Deref for TenantState {
    type Target = Profiles;

    fn deref(&self) -> &Profiles {
        &self.core
    }
}

impl DerefMut for TenantState {
    fn deref_mut(&mut self) -> &mut Profiles {
        &mut self.core
    }
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

impl TenantState {
    pub fn new(tenant: TenantId, settings: TenantSettings) -> TenantState {
        let core = Profiles::new(tenant, settings);
        let rfm = Mutex::new(RfmIndex::new(core.rules.config.rfm_window_days));
        TenantState { core, segments: crate::segments::Segments::default(), rfm }
    }

    /// Applies an owned event; see [`TenantState::apply_ref`]. The change is returned without
    /// the event's properties (which stay with the event).
    pub fn apply(&mut self, seq: Seq, event: &Event) -> Change<'static> {
        let mut identities = Vec::with_capacity(event.identities.len());
        identity_refs(event, &mut identities);
        let change = self.apply_ref(seq, &EventRef::of(event, &identities));
        let Change { seq, profile, created, absorbed, refusals, code, traits, properties: _ } = change;
        Change { seq, profile, created, absorbed, refusals, code, traits, properties: None }
    }

    /// Applies the event at `seq` (which must follow `applied_seq`) to the profiles, then hands
    /// what changed to every subscriber, in order.
    pub fn apply_ref<'e>(&mut self, seq: Seq, event: &EventRef<'e>) -> Change<'e> {
        let change = self.core.apply_ref(seq, event);
        let subscribers: [&mut dyn Subscriber; 2] = [&mut self.segments, self.rfm.get_mut()];
        for subscriber in subscribers {
            subscriber.on_change(&self.core, &change);
        }
        change
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
        let facts = &profile.facts[..profile.facts.partition_point(|f| f.ts <= t)];
        if facts.is_empty() && when.explicit {
            return None;
        }
        let fold = Cow::Owned(ProfileFacts::fold(facts, t, &self.rules));
        Some(ProfileAt { id, profile, facts, fold, t })
    }

    /// The scores of a live profile at `t` (`None` if it has no event by then).
    pub fn scores_at(&self, id: ProfileId, t: Millis) -> Option<ProfileScores> {
        self.at(id, t).map(|at| at.scores(&self.rules))
    }

    /// The buyers' RFM means at `t`, over every live profile: only orders at or before `t` count.
    pub fn rfm_means(&self, t: Millis) -> RfmMeans {
        let mut rfm = self.rfm.lock();
        if rfm.has_pending() {
            rfm.flush(|id| live_facts(&self.core, id));
        }
        rfm.means_at(t)
    }

    /// Brings the RFM index up to date now (after a replay), rather than on the first read.
    pub(crate) fn flush_rfm(&mut self) {
        let rfm = self.rfm.get_mut();
        if rfm.has_pending() {
            let core = &self.core;
            rfm.flush(|id| live_facts(core, id));
        }
    }

    /// The RFM inputs at `t` of the buyers among `profiles` (live ones), each from its facts up
    /// to `t`: the long way to [`Self::rfm_means`], for checking it.
    pub fn rfm_inputs_in(&self, profiles: &Members, t: Millis) -> Vec<siyu_model::RfmInput> {
        profiles.iter().filter_map(|id| self.scores_at(id, t)?.rfm).collect()
    }

    /// Replaces the settings; the caller re-materialises the state from the log afterwards.
    pub fn set_settings(&mut self, settings: TenantSettings) {
        self.core.set_settings(settings);
        *self.rfm.get_mut() = RfmIndex::new(self.core.rules.config.rfm_window_days);
    }
}

/// A live profile's facts (`None` for a merged-away or unknown id).
fn live_facts(profiles: &Profiles, id: ProfileId) -> Option<&[Fact]> {
    profiles.profile(id).filter(|p| p.merged_into.is_none()).map(|p| &p.facts[..])
}
