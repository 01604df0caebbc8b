//! The subscriber contract: how derived state beyond the profiles follows the log.
//!
//! [`TenantState::apply`](crate::TenantState::apply) applies each event to the profiles first,
//! which report a [`Change`] (the profile the event landed on, whether it was created, the
//! profiles it merged away, the event type, whether it carried traits, its properties). Every
//! subscriber then gets `on_change` with the profiles as they are after the event:
//!
//! - **Order.** Changes arrive strictly in log (seq) order, one event at a time, on incremental
//!   ingestion, on a catch-up with another process's appends, and on a replay alike.
//! - **Reads.** A subscriber may read the profiles (`&Profiles`): identities, facts, folds and
//!   summary rows. It may not read another subscriber, nor change the profiles in `on_change`;
//!   what it decides later (a segment refresh writing rule tags) happens outside the call.
//! - **Cost.** `on_change` runs for every event under the tenant's write lock: note what needs
//!   doing (a dirty profile, a counter) and do heavy work when asked for results, or in a
//!   refresh/sweep, never a scan of the tenant here (the RFM index brings a bounded batch of
//!   marked profiles up to date at most).
//! - **Derived.** Its state is a function of the log (and of the tenant's records it loads):
//!   nothing it holds is a source of truth, and a replay rebuilds it by sending the same changes
//!   in the same order (`crate::replay`). A subscriber that defers work during a replay
//!   (segments evaluate once at the end) catches up in `TenantState::finish_replay`, which calls
//!   each subscriber's catch-up in turn.
//!
//! Today's subscribers: segments and tags ([`crate::segments::Segments`]) and the RFM index
//! ([`crate::rfm_index::RfmIndex`]). Journey triggers, guardrail counters and metric aggregates
//! are added the same way: a type implementing [`Subscriber`], a field of the state, and an
//! entry in the list `TenantState::apply_ref` walks.

use crate::profiles::{Change, Profiles};

pub(crate) trait Subscriber {
    /// Follows one applied event; see the module documentation for what it may do.
    fn on_change(&mut self, profiles: &Profiles, change: &Change<'_>);
}
