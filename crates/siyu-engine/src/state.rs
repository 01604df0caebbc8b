//! A tenant's derived state, held in memory: the profiles (`profiles.rs`, with identity
//! resolution in `identity.rs`) and the subscribers that follow them — segments and tags
//! (`segments.rs`) and the RFM index (`rfm_index.rs`).
//!
//! Invariant: a `TenantState` is a pure function of (the tenant's settings, tags and segments,
//! the log prefix up to `applied_seq`). [`TenantState::apply_ref`] (and `apply`, for an owned event)
//! is the only way events enter it,
//! in seq order: the profiles apply the event and report the [`Change`], which every subscriber
//! then sees, in the same order on a replay (`subscriber.rs`). So incremental ingestion and
//! `siyu rebuild` produce identical states.

use std::ops::{Deref, DerefMut};

use parking_lot::Mutex;
use siyu_model::score::RfmMeans;
use siyu_model::{Event, Millis, Seq, TenantId, TenantSettings};

use crate::members::Members;
pub use crate::profiles::Profile;
use crate::profiles::{identity_refs, Change, EventRef, Profiles};
pub use crate::profiles::{AsOf, ProfileAt};

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

    /// The buyers' RFM means at `t`, over every live profile: only orders at or before `t` count.
    pub fn rfm_means(&self, t: Millis) -> RfmMeans {
        let mut rfm = self.rfm.lock();
        if rfm.has_pending() {
            rfm.flush(|id| self.core.live_facts(id));
        }
        rfm.means_at(t)
    }

    /// After a replay, each subscriber catches up on what it deferred while the log was folded:
    /// from here on everything is kept current event by event.
    pub fn finish_replay(&mut self, now: Millis) {
        self.flush_rfm();
        self.finish_segments_replay(now);
    }

    /// Brings the RFM index up to date now (after a replay), rather than on the first read.
    fn flush_rfm(&mut self) {
        let rfm = self.rfm.get_mut();
        if rfm.has_pending() {
            let core = &self.core;
            rfm.flush(|id| core.live_facts(id));
        }
    }

    /// The RFM inputs at `t` of the buyers among `profiles` (live ones), each from its facts up
    /// to `t`: the long way to [`Self::rfm_means`], for checking it.
    pub fn rfm_inputs_in(&self, profiles: &Members, t: Millis) -> Vec<siyu_model::RfmInput> {
        profiles.iter().filter_map(|id| self.scores_at(id, t)?.rfm).collect()
    }
}
