//! WeCom operations' side of the engine: the record of contact ways (渠道活码) with their
//! attribution (来源识别) computed from the profiles, and the WeCom addresses of a segment's
//! members for tagging them in WeCom. The WeCom calls themselves are siyu-outbox's (wecom_ops.rs).
//!
//! Attribution reads only the log's facts: a customer added through a contact way arrives — by the
//! add-contact callback or a sync — as a `wecom_add` whose source is `contact_way:<state>`, so
//! every count below is rebuilt by a replay like any score.

use rustc_hash::FxHashMap;
use siyu_model::{EventType, IdentityKind, Millis, ProfileId, TenantId};

pub use siyu_store::ContactWayRecord;

use crate::query::yuan;
use crate::reach::ReachError;
use crate::state::TenantState;
use crate::{Engine, Result};

/// The source kind the WeCom callback gives customers added through a contact way.
pub const SOURCE_KIND: &str = "contact_way";

/// A contact way with what it brought.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactWayView {
    pub record: ContactWayRecord,
    pub attribution: Attribution,
}

/// What a contact way brought, from the profiles of the people added through it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attribution {
    /// People with at least one `wecom_add` from this contact way.
    pub adds: u64,
    /// Those `wecom_add` events (a callback and a sync of the same add are two).
    pub add_events: u64,
    /// Of those people, the ones whose latest WeCom add is later than their latest WeCom delete.
    pub still_contacts: u64,
    /// People who paid at least one order at or after their first add through this way.
    pub buyers: u64,
    /// People whose first paid order ever came at or after their first add through this way.
    pub first_orders: u64,
    /// Paid orders at or after the add.
    pub orders: u64,
    /// Paid minus refunded at or after the add, in yuan.
    pub net_revenue: f64,
}

/// A segment member's WeCom addresses (`wecom_external_userid`s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeComAddresses {
    pub profile_id: ProfileId,
    pub external_userids: Vec<String>,
}

impl Engine {
    /// Records a contact way; false when the tenant has one with its state already.
    pub async fn record_contact_way(&self, tenant: TenantId, way: &ContactWayRecord) -> Result<bool> {
        self.tenant(tenant)?;
        Ok(self.store().create_contact_way(tenant, way).await?)
    }

    pub async fn contact_way(&self, tenant: TenantId, state: &str) -> Result<Option<ContactWayRecord>> {
        self.tenant(tenant)?;
        Ok(self.store().contact_way(tenant, state).await?)
    }

    /// The tenant's contact ways, oldest first, each with its attribution now.
    pub async fn contact_ways(&self, tenant: TenantId) -> Result<Vec<ContactWayView>> {
        let runtime = self.tenant(tenant)?;
        let records = self.store().contact_ways(tenant).await?;
        let states: Vec<&str> = records.iter().map(|r| r.state.as_str()).collect();
        let attributions = siyu_store::blocking_in_place(|| attribute(&runtime.state.read(), &states));
        Ok(records
            .into_iter()
            .zip(attributions)
            .map(|(record, attribution)| ContactWayView { record, attribution })
            .collect())
    }

    /// The members of a segment now who have a WeCom address, in id order.
    pub fn segment_wecom_addresses(&self, tenant: TenantId, segment_id: i64) -> Result<Vec<WeComAddresses>> {
        let runtime = self.tenant(tenant)?;
        let state = runtime.state.read();
        let segment = state
            .segments
            .segment(segment_id)
            .ok_or_else(|| ReachError::NotFound { kind: "segment", what: segment_id.to_string() })?;
        Ok(segment
            .members
            .iter()
            .filter_map(|id| {
                let profile = state.profile(id)?;
                let external_userids: Vec<String> = profile
                    .identities
                    .iter()
                    .filter(|l| l.identity.kind == IdentityKind::WecomExternalUserid)
                    .map(|l| l.identity.value.clone())
                    .collect();
                (!external_userids.is_empty()).then_some(WeComAddresses { profile_id: id, external_userids })
            })
            .collect())
    }
}

/// One walk over the live profiles for every contact way at once: `states[i]`'s attribution at `i`.
fn attribute(state: &TenantState, states: &[&str]) -> Vec<Attribution> {
    let mut out = vec![Attribution::default(); states.len()];
    // Ways nobody was added through have no interned source: they keep zeros.
    let by_source: FxHashMap<u32, usize> = states
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((state.sources.get(&format!("{SOURCE_KIND}:{s}"))?, i)))
        .filter(|(source, _)| *source != 0)
        .collect();
    if by_source.is_empty() {
        return out;
    }
    let (add, delete) = (EventType::WecomAdd.code(), EventType::WecomDelete.code());
    let (paid, refunded) = (EventType::OrderPaid.code(), EventType::OrderRefunded.code());
    // (way, first add through it, add events) of the profile at hand.
    let mut added: Vec<(usize, Millis, u64)> = Vec::new();
    let mut fen = vec![0i64; states.len()];
    for id in state.profile_ids() {
        let Some(profile) = state.profile(id) else { continue };
        added.clear();
        let (mut last_add, mut last_delete, mut first_paid) = (None, None, None);
        for fact in &profile.facts {
            if fact.code == add {
                last_add = Some(fact.ts);
                if let Some(&way) = by_source.get(&fact.source) {
                    match added.iter_mut().find(|(w, _, _)| *w == way) {
                        Some(entry) => entry.2 += 1,
                        // Facts are in time order: the first one seen is the earliest.
                        None => added.push((way, fact.ts, 1)),
                    }
                }
            } else if fact.code == delete {
                last_delete = Some(fact.ts);
            } else if fact.code == paid && first_paid.is_none() {
                first_paid = Some(fact.ts);
            }
        }
        if added.is_empty() {
            continue;
        }
        let still_contact = last_add > last_delete;
        for &(way, at, events) in &added {
            let a = &mut out[way];
            a.adds += 1;
            a.add_events += events;
            a.still_contacts += u64::from(still_contact);
            let mut orders = 0;
            for fact in profile.facts.iter().filter(|f| f.ts >= at) {
                if fact.code == paid {
                    orders += 1;
                    fen[way] += fact.amount.0;
                } else if fact.code == refunded {
                    fen[way] -= fact.amount.0;
                }
            }
            a.orders += orders;
            a.buyers += u64::from(orders > 0);
            a.first_orders += u64::from(first_paid.is_some_and(|t| t >= at));
        }
    }
    for (a, fen) in out.iter_mut().zip(fen) {
        a.net_revenue = yuan(fen);
    }
    out
}
