//! The read side: profile views, filtered lists with cursors, tenant summaries and timelines,
//! served from the in-memory state.

use siyu_model::score::{FanTier, Ownership, PoolStage, RfmGroup, RfmMeans, Touch};
use siyu_model::{Channel, Identity, Millis, ProfileId, ProfileScores, TenantId};
use siyu_store::StoredEvent;

use crate::state::{AsOf, Profile, ProfileAt, TenantState};
use crate::{Engine, EngineError, Result};

/// How a caller names a profile.
#[derive(Debug, Clone)]
pub enum ProfileRef {
    Id(ProfileId),
    Identity(Identity),
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdentityView {
    pub kind: String,
    pub value: String,
    /// The event whose evidence linked this identity, and when.
    pub evidence_seq: i64,
    pub linked_at: String,
    pub channel: String,
    pub account: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TouchView {
    pub channel: String,
    pub account: String,
    pub source: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountView {
    pub channel: String,
    pub account: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relationships {
    pub following: Vec<AccountView>,
    pub subscribed: Vec<AccountView>,
    pub wecom_contact: Vec<AccountView>,
    pub groups: Vec<String>,
    pub consent_revoked: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScoresView {
    /// 好感度, displayed: max(0, score) rounded to two decimals.
    pub affinity: f64,
    /// true_fan | warm_fan | passerby | none
    pub tier: String,
    pub reachable: bool,
    /// main_base | reservoir | incentive | public
    pub pool_stage: String,
    /// L0..L3
    pub ownership: String,
    /// One of the eight RFM groups (重要价值 ...), or null for non-buyers.
    pub rfm: Option<String>,
    pub net_paid_orders: u32,
    pub paid_orders: u32,
    pub refunded_orders: u32,
    pub orders_365d: u32,
    /// Paid minus refunded, in yuan.
    pub net_revenue: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileView {
    pub id: ProfileId,
    /// Ids of profiles merged into this one; lookups by them find this profile.
    pub merged_ids: Vec<ProfileId>,
    pub identities: Vec<IdentityView>,
    pub scores: ScoresView,
    pub relationships: Relationships,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub event_count: u32,
    pub first_touch: Option<TouchView>,
    pub last_touch: Option<TouchView>,
    pub channels: Vec<String>,
    pub traits: serde_json::Value,
    /// The time the scores were evaluated at.
    pub as_of: String,
}

/// One row of a profile list.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    pub id: ProfileId,
    pub name: Option<String>,
    pub identities: Vec<String>,
    pub affinity: f64,
    pub tier: String,
    pub pool_stage: String,
    pub ownership: String,
    pub rfm: Option<String>,
    pub net_revenue: f64,
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfilePage {
    pub items: Vec<ProfileRow>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of a profile list; all given filters must hold.
#[derive(Debug, Clone, Default)]
pub struct ProfileFilter {
    pub tier: Option<FanTier>,
    pub pool_stage: Option<PoolStage>,
    pub ownership: Option<Ownership>,
    pub rfm: Option<RfmGroup>,
    pub channel: Option<Channel>,
    /// A tag the profile carries (tags API), or a `tags` trait (array of strings) holding it.
    pub tag: Option<String>,
    /// Case-insensitive substring of the name trait or of any identity value.
    pub text: Option<String>,
    pub reachable: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Count {
    pub key: String,
    pub label: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantSummary {
    pub tenant_id: i64,
    pub as_of: String,
    pub profiles: u64,
    pub events: u64,
    pub reachable: u64,
    pub buyers: u64,
    pub orders: u64,
    pub refunds: u64,
    /// Net revenue (paid − refunded), yuan.
    pub net_revenue: f64,
    /// Buyers with ≥ 2 paid orders / buyers.
    pub repurchase_rate: f64,
    pub merges: u64,
    pub refused_merges: u64,
    pub tiers: Vec<Count>,
    pub pool_stages: Vec<Count>,
    pub ownership: Vec<Count>,
    pub rfm: Vec<Count>,
    pub channels: Vec<Count>,
}

/// One channel account (矩阵号) of the tenant, with its audience (now, or as of a time).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSummary {
    pub channel: String,
    pub account: String,
    pub events: u64,
    /// People with at least one event on this account.
    pub people: u64,
    pub followers: u64,
    pub subscribers: u64,
    pub wecom_contacts: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MergeView {
    pub survivor: ProfileId,
    pub merged: ProfileId,
    pub evidence_seq: i64,
    pub at: String,
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RefusalView {
    pub seq: i64,
    pub at: String,
    pub kept: ProfileId,
    pub other: Option<ProfileId>,
    pub identity: String,
    pub reason: String,
}

pub(crate) fn yuan(fen: i64) -> f64 {
    fen as f64 / 100.0
}

fn touch_view(state: &TenantState, touch: &Touch) -> Option<TouchView> {
    let channel = touch.channel?;
    Some(TouchView {
        channel: channel.to_string(),
        account: state.accounts.name(touch.account).to_string(),
        source: state.sources.name(touch.source).to_string(),
        at: touch.at.to_rfc3339(),
    })
}

pub(crate) fn channels_of(mask: u16) -> Vec<String> {
    Channel::ALL.iter().filter(|c| mask & (1 << c.code()) != 0).map(|c| c.to_string()).collect()
}

fn scores_view(scores: &ProfileScores, means: &RfmMeans) -> ScoresView {
    ScoresView {
        affinity: scores.affinity,
        tier: scores.tier.to_string(),
        reachable: scores.reachable,
        pool_stage: scores.pool_stage.to_string(),
        ownership: scores.ownership.to_string(),
        rfm: scores.rfm.map(|input| means.group(&input).to_string()),
        net_paid_orders: scores.net_paid_orders,
        paid_orders: scores.paid_orders,
        refunded_orders: scores.refunded_orders,
        orders_365d: scores.orders_365d,
        net_revenue: yuan(scores.net_revenue.0),
    }
}

pub(crate) fn name_of(profile: &Profile) -> Option<String> {
    let traits = profile.traits.as_ref()?;
    ["name", "nickname", "username"].iter().find_map(|k| traits.get(*k)?.as_str().map(str::to_string))
}

/// A profile's traits as a JSON object (empty without any).
fn traits_of(profile: &Profile) -> serde_json::Value {
    serde_json::Value::Object(profile.traits.as_deref().cloned().unwrap_or_default())
}

impl TenantState {
    /// The live profile a reference names (by id, merged-away ones included, or by identity).
    pub fn find(&self, reference: &ProfileRef) -> Option<ProfileId> {
        match reference {
            ProfileRef::Id(id) => self.resolve(*id),
            ProfileRef::Identity(identity) => self.lookup(identity),
        }
    }

    /// The full view of a live profile at `t`, RFM graded against `means` (the buyers at `t`);
    /// `None` if it has no event at or before `t`. Identities, merged ids and traits are what
    /// is known now; every score, count, date and relationship is of the events up to `t`.
    pub fn view(&self, id: ProfileId, when: AsOf, means: &RfmMeans) -> Option<ProfileView> {
        let t = when.t;
        let at = self.at_when(id, when)?;
        let profile = at.profile;
        let scores = at.scores(&self.rules);
        let state = &*at.fold;
        let account = |(channel, account): (Channel, u32)| AccountView {
            channel: channel.to_string(),
            account: self.accounts.name(account).to_string(),
        };
        Some(ProfileView {
            id,
            merged_ids: profile.absorbed.clone(),
            identities: profile
                .identities
                .iter()
                .map(|link| IdentityView {
                    kind: link.identity.kind.to_string(),
                    value: link.identity.value.clone(),
                    evidence_seq: link.seq,
                    linked_at: link.at.to_rfc3339(),
                    channel: link.channel.to_string(),
                    account: self.accounts.name(link.account).to_string(),
                    source: self.sources.name(link.source).to_string(),
                })
                .collect(),
            scores: scores_view(&scores, means),
            relationships: Relationships {
                following: state.followed_accounts().map(account).collect(),
                subscribed: state.subscribed_accounts().map(account).collect(),
                wecom_contact: state.wecom_accounts().map(account).collect(),
                groups: state.joined_groups().map(|g| self.groups.name(g).to_string()).collect(),
                consent_revoked: state.consent_revoked,
            },
            first_seen: at.facts.first().map(|f| f.ts.to_rfc3339()),
            last_seen: at.facts.last().map(|f| f.ts.to_rfc3339()),
            event_count: at.facts.len() as u32,
            first_touch: touch_view(self, &state.first_touch),
            last_touch: touch_view(self, &state.last_touch),
            channels: channels_of(state.channels),
            traits: traits_of(profile),
            as_of: t.to_rfc3339(),
        })
    }

    /// One list row of a profile as of `at.t`.
    pub(crate) fn row(&self, at: &ProfileAt<'_>, scores: &ProfileScores, means: &RfmMeans) -> ProfileRow {
        ProfileRow {
            id: at.id,
            name: name_of(at.profile),
            identities: at.profile.identities.iter().take(4).map(|l| l.identity.to_string()).collect(),
            affinity: scores.affinity,
            tier: scores.tier.to_string(),
            pool_stage: scores.pool_stage.to_string(),
            ownership: scores.ownership.to_string(),
            rfm: scores.rfm.map(|input| means.group(&input).to_string()),
            net_revenue: yuan(scores.net_revenue.0),
            last_seen: at.facts.last().map(|f| f.ts.to_rfc3339()),
        }
    }

    /// The list row of a live profile at `t` (`None` if it has no event by then).
    pub(crate) fn row_at(&self, id: ProfileId, when: AsOf, means: &RfmMeans) -> Option<ProfileRow> {
        let at = self.at_when(id, when)?;
        Some(self.row(&at, &at.scores(&self.rules), means))
    }

    fn matches(&self, at: &ProfileAt<'_>, scores: &ProfileScores, filter: &ProfileFilter, means: &RfmMeans) -> bool {
        let profile = at.profile;
        filter.tier.is_none_or(|t| scores.tier == t)
            && filter.pool_stage.is_none_or(|p| scores.pool_stage == p)
            && filter.ownership.is_none_or(|o| scores.ownership == o)
            && filter.reachable.is_none_or(|r| scores.reachable == r)
            && filter.rfm.is_none_or(|g| scores.rfm.is_some_and(|input| means.group(&input) == g))
            && filter.channel.is_none_or(|c| at.fold.channels & (1 << c.code()) != 0)
            && filter.tag.as_ref().is_none_or(|tag| {
                let real = self.segments.tag_id(tag).is_some_and(|id| profile.tags.binary_search(&id).is_ok());
                real || profile
                    .traits
                    .as_ref()
                    .and_then(|t| t.get("tags")?.as_array().cloned())
                    .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(tag)))
            })
            && filter.text.as_ref().is_none_or(|text| {
                let needle = text.to_lowercase();
                name_of(profile).is_some_and(|n| n.to_lowercase().contains(&needle))
                    || profile.identities.iter().any(|l| l.identity.value.to_lowercase().contains(&needle))
            })
    }

    /// A page of the profiles that exist at `t`, in id order after `cursor`.
    pub fn list(&self, filter: &ProfileFilter, when: AsOf, cursor: Option<ProfileId>, limit: usize) -> ProfilePage {
        let means = self.rfm_means(when.t);
        let mut items = Vec::with_capacity(limit);
        let mut last = None;
        for id in self.profile_ids().filter(|id| cursor.is_none_or(|c| *id > c)) {
            let Some(at) = self.at_when(id, when) else { continue };
            let scores = at.scores(&self.rules);
            if !self.matches(&at, &scores, filter, &means) {
                continue;
            }
            if items.len() == limit {
                return ProfilePage { items, next_cursor: last.map(|l: ProfileId| l.to_string()) };
            }
            items.push(self.row(&at, &scores, &means));
            last = Some(id);
        }
        ProfilePage { items, next_cursor: None }
    }

    /// The tenant at `t`: only profiles and events that exist by then count.
    pub fn summary(&self, when: AsOf) -> TenantSummary {
        let t = when.t;
        let means = self.rfm_means(t);
        let mut tiers = [0u64; 4];
        let mut pools = [0u64; 4];
        let mut owners = [0u64; 4];
        let mut rfm = vec![0u64; RfmGroup::ALL.len()];
        let mut channels = vec![0u64; Channel::ALL.len()];
        let mut s = TenantSummary { tenant_id: self.tenant.0, as_of: t.to_rfc3339(), ..TenantSummary::default() };
        let mut net = 0i64;
        let mut repeat_buyers = 0u64;
        for id in self.profile_ids() {
            let Some(at) = self.at_when(id, when) else { continue };
            let scores = at.scores(&self.rules);
            s.profiles += 1;
            s.events += at.facts.len() as u64;
            tiers[scores.tier as usize] += 1;
            pools[scores.pool_stage as usize] += 1;
            owners[scores.ownership as usize] += 1;
            if let Some(input) = scores.rfm {
                rfm[means.group(&input) as usize] += 1;
            }
            for c in Channel::ALL {
                if at.fold.channels & (1 << c.code()) != 0 {
                    channels[c as usize] += 1;
                }
            }
            s.reachable += u64::from(scores.reachable);
            if scores.paid_orders > 0 {
                s.buyers += 1;
                repeat_buyers += u64::from(scores.paid_orders >= 2);
            }
            s.orders += u64::from(scores.paid_orders);
            s.refunds += u64::from(scores.refunded_orders);
            net += scores.net_revenue.0;
        }
        s.net_revenue = yuan(net);
        s.repurchase_rate = if s.buyers == 0 { 0.0 } else { repeat_buyers as f64 / s.buyers as f64 };
        s.merges = self.merges.iter().filter(|m| m.at <= t).count() as u64;
        // Refusals past the kept ones are counted whatever their time (see REFUSALS_KEPT).
        let unkept = self.refusal_count - self.refusals.len() as u64;
        s.refused_merges = self.refusals.iter().filter(|r| r.at <= t).count() as u64 + unkept;
        s.tiers = FanTier::ALL
            .iter()
            .map(|t| Count { key: t.to_string(), label: t.label_zh().into(), count: tiers[*t as usize] })
            .collect();
        s.pool_stages = PoolStage::ALL
            .iter()
            .map(|p| Count { key: p.to_string(), label: p.label_zh().into(), count: pools[*p as usize] })
            .collect();
        s.ownership = Ownership::ALL
            .iter()
            .map(|o| Count { key: o.to_string(), label: o.label_zh().into(), count: owners[*o as usize] })
            .collect();
        s.rfm = RfmGroup::ALL
            .iter()
            .map(|g| Count { key: g.to_string(), label: g.label_zh().into(), count: rfm[*g as usize] })
            .collect();
        s.channels = Channel::ALL
            .iter()
            .filter(|c| channels[**c as usize] > 0)
            .map(|c| Count { key: c.to_string(), label: c.to_string(), count: channels[*c as usize] })
            .collect();
        s
    }

    /// Every (channel, account) the tenant's events up to `t` name, with its audience at `t`.
    pub fn accounts(&self, when: AsOf) -> Vec<AccountSummary> {
        let mut rows: std::collections::BTreeMap<(Channel, u32), AccountSummary> = Default::default();
        let mut seen: Vec<(Channel, u32)> = Vec::new();
        for id in self.profile_ids() {
            let Some(at) = self.at_when(id, when) else { continue };
            seen.clear();
            for fact in at.facts {
                let key = (fact.channel, fact.account);
                let entry = rows.entry(key).or_insert_with(|| AccountSummary {
                    channel: fact.channel.to_string(),
                    account: self.accounts.name(fact.account).to_string(),
                    events: 0,
                    people: 0,
                    followers: 0,
                    subscribers: 0,
                    wecom_contacts: 0,
                });
                entry.events += 1;
                if !seen.contains(&key) {
                    seen.push(key);
                    entry.people += 1;
                }
            }
            let state = &*at.fold;
            for key in state.followed_accounts() {
                if let Some(entry) = rows.get_mut(&key) {
                    entry.followers += 1;
                }
            }
            for key in state.subscribed_accounts() {
                if let Some(entry) = rows.get_mut(&key) {
                    entry.subscribers += 1;
                }
            }
            for key in state.wecom_accounts() {
                if let Some(entry) = rows.get_mut(&key) {
                    entry.wecom_contacts += 1;
                }
            }
        }
        rows.into_values().collect()
    }

    pub fn merge_history(&self, id: ProfileId) -> Vec<MergeView> {
        self.merges
            .iter()
            .filter(|m| self.resolve(m.survivor) == Some(id))
            .map(|m| MergeView {
                survivor: m.survivor,
                merged: m.merged,
                evidence_seq: m.seq,
                at: m.at.to_rfc3339(),
                evidence: m.evidence.iter().map(|i| i.to_string()).collect(),
            })
            .collect()
    }

    pub fn refusal_views(&self, limit: usize) -> Vec<RefusalView> {
        self.refusals
            .iter()
            .rev()
            .take(limit)
            .map(|r| RefusalView {
                seq: r.seq,
                at: r.at.to_rfc3339(),
                kept: r.kept,
                other: r.other,
                identity: r.identity.to_string(),
                reason: r.reason.as_str().into(),
            })
            .collect()
    }
}

impl Engine {
    pub fn profile_view(
        &self,
        tenant: TenantId,
        reference: &ProfileRef,
        as_of: Option<Millis>,
    ) -> Result<Option<ProfileView>> {
        let runtime = self.tenant(tenant)?;
        let state = runtime.state.read();
        let when = AsOf::of(as_of);
        let Some(id) = state.find(reference) else { return Ok(None) };
        let means = state.rfm_means(when.t);
        Ok(state.view(id, when, &means))
    }

    pub fn list_profiles(
        &self,
        tenant: TenantId,
        filter: &ProfileFilter,
        as_of: Option<Millis>,
        cursor: Option<ProfileId>,
        limit: usize,
    ) -> Result<ProfilePage> {
        let runtime = self.tenant(tenant)?;
        Ok(siyu_store::blocking_in_place(|| runtime.state.read().list(filter, AsOf::of(as_of), cursor, limit)))
    }

    pub fn summary(&self, tenant: TenantId, as_of: Option<Millis>) -> Result<TenantSummary> {
        let runtime = self.tenant(tenant)?;
        Ok(siyu_store::blocking_in_place(|| runtime.state.read().summary(AsOf::of(as_of))))
    }

    /// The merges that built a profile (found by any of its ids), with the evidence of each.
    pub fn merge_history(&self, tenant: TenantId, id: ProfileId) -> Result<Vec<MergeView>> {
        let runtime = self.tenant(tenant)?;
        let state = runtime.state.read();
        let live = state.resolve(id).ok_or(EngineError::NoSuchProfile(id))?;
        Ok(state.merge_history(live))
    }

    /// The latest refused merges and links, newest first.
    pub fn refusals(&self, tenant: TenantId, limit: usize) -> Result<Vec<RefusalView>> {
        Ok(self.tenant(tenant)?.state.read().refusal_views(limit))
    }

    /// The live profile holding an identity now.
    pub fn holder_of(&self, tenant: TenantId, identity: &Identity) -> Result<Option<ProfileId>> {
        Ok(self.tenant(tenant)?.state.read().lookup(identity))
    }

    /// The tenant's channel accounts with their audience, now or as of a past time.
    pub fn accounts(&self, tenant: TenantId, as_of: Option<Millis>) -> Result<Vec<AccountSummary>> {
        let runtime = self.tenant(tenant)?;
        Ok(siyu_store::blocking_in_place(|| runtime.state.read().accounts(AsOf::of(as_of))))
    }

    /// A profile's events, newest first, before log position `before` (exclusive).
    pub async fn timeline(
        &self,
        tenant: TenantId,
        id: ProfileId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let seqs: Vec<i64> = {
            let runtime = self.tenant(tenant)?;
            let state = runtime.state.read();
            let live = state.resolve(id).ok_or(EngineError::NoSuchProfile(id))?;
            let profile = state.profile(live).ok_or(EngineError::NoSuchProfile(id))?;
            let mut facts: Vec<_> = profile.facts.iter().filter(|f| before.is_none_or(|b| f.seq < b)).collect();
            facts.sort_by_key(|f| std::cmp::Reverse(f.seq));
            facts.into_iter().take(limit).map(|f| f.seq).collect()
        };
        let mut events = self.store().events_by_seq(tenant, &seqs).await?;
        events.sort_by_key(|e| std::cmp::Reverse(e.seq));
        Ok(events)
    }
}
