//! The JSON the native API answers with: one DTO per engine view, built `From` it, named as the
//! view is (so `/openapi.json` names its schemas after them). The engine's views are plain Rust;
//! what goes on the wire — field names, renames, nullability, the descriptions in the document —
//! is decided here. Each `From` destructures the whole view, so a field added to the engine does
//! not compile until it is given (or refused) a place on the wire.

use serde::Serialize;
use siyu_engine::activity as activity_view;
use siyu_engine::query as query_view;
use siyu_engine::reach as reach_view;
use siyu_engine::segments::ops as segment_view;
use siyu_model::ProfileId;
use utoipa::ToSchema;

/// Converts a list of views into their DTOs.
pub(crate) fn list<V, D: From<V>>(views: Vec<V>) -> Vec<D> {
    views.into_iter().map(D::from).collect()
}

// ---- Profiles (siyu_engine::query) ----

#[derive(Debug, Clone, Serialize, ToSchema)]
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

impl From<query_view::IdentityView> for IdentityView {
    fn from(view: query_view::IdentityView) -> Self {
        let query_view::IdentityView { kind, value, evidence_seq, linked_at, channel, account, source } = view;
        IdentityView { kind, value, evidence_seq, linked_at, channel, account, source }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TouchView {
    pub channel: String,
    pub account: String,
    pub source: String,
    pub at: String,
}

impl From<query_view::TouchView> for TouchView {
    fn from(view: query_view::TouchView) -> Self {
        let query_view::TouchView { channel, account, source, at } = view;
        TouchView { channel, account, source, at }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountView {
    pub channel: String,
    pub account: String,
}

impl From<query_view::AccountView> for AccountView {
    fn from(view: query_view::AccountView) -> Self {
        let query_view::AccountView { channel, account } = view;
        AccountView { channel, account }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Relationships {
    pub following: Vec<AccountView>,
    pub subscribed: Vec<AccountView>,
    pub wecom_contact: Vec<AccountView>,
    pub groups: Vec<String>,
    pub consent_revoked: bool,
}

impl From<query_view::Relationships> for Relationships {
    fn from(view: query_view::Relationships) -> Self {
        let query_view::Relationships { following, subscribed, wecom_contact, groups, consent_revoked } = view;
        Relationships {
            following: list(following),
            subscribed: list(subscribed),
            wecom_contact: list(wecom_contact),
            groups,
            consent_revoked,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
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

impl From<query_view::ScoresView> for ScoresView {
    fn from(view: query_view::ScoresView) -> Self {
        let query_view::ScoresView {
            affinity,
            tier,
            reachable,
            pool_stage,
            ownership,
            rfm,
            net_paid_orders,
            paid_orders,
            refunded_orders,
            orders_365d,
            net_revenue,
        } = view;
        ScoresView {
            affinity,
            tier,
            reachable,
            pool_stage,
            ownership,
            rfm,
            net_paid_orders,
            paid_orders,
            refunded_orders,
            orders_365d,
            net_revenue,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
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
    #[schema(value_type = Object)]
    pub traits: serde_json::Value,
    /// The time the scores were evaluated at.
    pub as_of: String,
}

impl From<query_view::ProfileView> for ProfileView {
    fn from(view: query_view::ProfileView) -> Self {
        let query_view::ProfileView {
            id,
            merged_ids,
            identities,
            scores,
            relationships,
            first_seen,
            last_seen,
            event_count,
            first_touch,
            last_touch,
            channels,
            traits,
            as_of,
        } = view;
        ProfileView {
            id,
            merged_ids,
            identities: list(identities),
            scores: scores.into(),
            relationships: relationships.into(),
            first_seen,
            last_seen,
            event_count,
            first_touch: first_touch.map(Into::into),
            last_touch: last_touch.map(Into::into),
            channels,
            traits,
            as_of,
        }
    }
}

/// One row of a profile list.
#[derive(Debug, Clone, Serialize, ToSchema)]
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

impl From<query_view::ProfileRow> for ProfileRow {
    fn from(view: query_view::ProfileRow) -> Self {
        let query_view::ProfileRow {
            id,
            name,
            identities,
            affinity,
            tier,
            pool_stage,
            ownership,
            rfm,
            net_revenue,
            last_seen,
        } = view;
        ProfileRow { id, name, identities, affinity, tier, pool_stage, ownership, rfm, net_revenue, last_seen }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProfilePage {
    pub items: Vec<ProfileRow>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl From<query_view::ProfilePage> for ProfilePage {
    fn from(view: query_view::ProfilePage) -> Self {
        let query_view::ProfilePage { items, next_cursor } = view;
        ProfilePage { items: list(items), next_cursor }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MergeView {
    pub survivor: ProfileId,
    pub merged: ProfileId,
    pub evidence_seq: i64,
    pub at: String,
    pub evidence: Vec<String>,
}

impl From<query_view::MergeView> for MergeView {
    fn from(view: query_view::MergeView) -> Self {
        let query_view::MergeView { survivor, merged, evidence_seq, at, evidence } = view;
        MergeView { survivor, merged, evidence_seq, at, evidence }
    }
}

// ---- The tenant (siyu_engine::query) ----

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Count {
    pub key: String,
    pub label: String,
    pub count: u64,
}

impl From<query_view::Count> for Count {
    fn from(view: query_view::Count) -> Self {
        let query_view::Count { key, label, count } = view;
        Count { key, label, count }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
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

impl From<query_view::TenantSummary> for TenantSummary {
    fn from(view: query_view::TenantSummary) -> Self {
        let query_view::TenantSummary {
            tenant_id,
            as_of,
            profiles,
            events,
            reachable,
            buyers,
            orders,
            refunds,
            net_revenue,
            repurchase_rate,
            merges,
            refused_merges,
            tiers,
            pool_stages,
            ownership,
            rfm,
            channels,
        } = view;
        TenantSummary {
            tenant_id,
            as_of,
            profiles,
            events,
            reachable,
            buyers,
            orders,
            refunds,
            net_revenue,
            repurchase_rate,
            merges,
            refused_merges,
            tiers: list(tiers),
            pool_stages: list(pool_stages),
            ownership: list(ownership),
            rfm: list(rfm),
            channels: list(channels),
        }
    }
}

/// One channel account (矩阵号) of the tenant, with its audience (now, or as of a time).
#[derive(Debug, Clone, Serialize, ToSchema)]
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

impl From<query_view::AccountSummary> for AccountSummary {
    fn from(view: query_view::AccountSummary) -> Self {
        let query_view::AccountSummary { channel, account, events, people, followers, subscribers, wecom_contacts } =
            view;
        AccountSummary { channel, account, events, people, followers, subscribers, wecom_contacts }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefusalView {
    pub seq: i64,
    pub at: String,
    pub kept: ProfileId,
    pub other: Option<ProfileId>,
    pub identity: String,
    pub reason: String,
}

impl From<query_view::RefusalView> for RefusalView {
    fn from(view: query_view::RefusalView) -> Self {
        let query_view::RefusalView { seq, at, kept, other, identity, reason } = view;
        RefusalView { seq, at, kept, other, identity, reason }
    }
}

// ---- Tags and segments (siyu_engine::segments::ops) ----

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TagGroupView {
    pub id: i64,
    pub name: String,
    pub created_at: String,
}

impl From<segment_view::TagGroupView> for TagGroupView {
    fn from(view: segment_view::TagGroupView) -> Self {
        let segment_view::TagGroupView { id, name, created_at } = view;
        TagGroupView { id, name, created_at }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TagView {
    pub id: i64,
    pub name: String,
    pub group_id: Option<i64>,
    /// `manual` (set by operators, imports and bulk actions) or `rule` (set by its condition).
    pub kind: String,
    /// A rule tag's condition, in canonical form.
    pub condition: Option<String>,
    /// Profiles carrying the tag now.
    pub profiles: u64,
    pub created_at: String,
}

impl From<segment_view::TagView> for TagView {
    fn from(view: segment_view::TagView) -> Self {
        let segment_view::TagView { id, name, group_id, kind, condition, profiles, created_at } = view;
        TagView { id, name, group_id, kind, condition, profiles, created_at }
    }
}

/// One manual tag operation on a profile: who, when, after which log position.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TagHistoryEntry {
    pub tag: String,
    /// `added` | `removed`
    pub action: String,
    /// Who: `api`, `cli`, `segment:<id>` (bulk by segment), `rule:<tag id>` (a rule tag), …
    pub actor: String,
    pub at: String,
    /// The last event in the log when it happened (for a rule tag: the event that caused it).
    pub after_seq: i64,
}

impl From<segment_view::TagHistoryEntry> for TagHistoryEntry {
    fn from(view: segment_view::TagHistoryEntry) -> Self {
        let segment_view::TagHistoryEntry { tag, action, actor, at, after_seq } = view;
        TagHistoryEntry { tag, action, actor, at, after_seq }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProfileTags {
    pub profile_id: ProfileId,
    pub tags: Vec<String>,
    /// Newest first.
    pub history: Vec<TagHistoryEntry>,
}

impl From<segment_view::ProfileTags> for ProfileTags {
    fn from(view: segment_view::ProfileTags) -> Self {
        let segment_view::ProfileTags { profile_id, tags, history } = view;
        ProfileTags { profile_id, tags, history: list(history) }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SegmentView {
    pub id: i64,
    pub name: String,
    /// The condition in canonical form.
    pub condition: String,
    pub size: u64,
    /// Whether time alone can change membership (windows, `ago`, decaying scores): such segments
    /// are re-evaluated by the periodic sweep.
    pub time_dependent: bool,
    /// Set when the stored condition no longer checks (it then matches nobody).
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<segment_view::SegmentView> for SegmentView {
    fn from(view: segment_view::SegmentView) -> Self {
        let segment_view::SegmentView { id, name, condition, size, time_dependent, error, created_at, updated_at } =
            view;
        SegmentView { id, name, condition, size, time_dependent, error, created_at, updated_at }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SegmentPreview {
    /// The condition in canonical form.
    pub condition: String,
    pub size: u64,
    /// Up to `sample` members, in id order.
    pub sample: Vec<ProfileRow>,
    pub time_dependent: bool,
}

impl From<segment_view::SegmentPreview> for SegmentPreview {
    fn from(view: segment_view::SegmentPreview) -> Self {
        let segment_view::SegmentPreview { condition, size, sample, time_dependent } = view;
        SegmentPreview { condition, size, sample: list(sample), time_dependent }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MembershipChangeView {
    pub id: i64,
    pub segment_id: i64,
    pub profile_id: i64,
    /// `entered` | `exited`
    pub change: String,
    pub at: String,
    /// The event that caused it (null when time passing or a definition change did).
    pub seq: Option<i64>,
}

impl From<segment_view::MembershipChangeView> for MembershipChangeView {
    fn from(view: segment_view::MembershipChangeView) -> Self {
        let segment_view::MembershipChangeView { id, segment_id, profile_id, change, at, seq } = view;
        MembershipChangeView { id, segment_id, profile_id, change, at, seq }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SegmentMembers {
    pub items: Vec<ProfileRow>,
    pub next_cursor: Option<String>,
}

impl From<segment_view::SegmentMembers> for SegmentMembers {
    fn from(view: segment_view::SegmentMembers) -> Self {
        let segment_view::SegmentMembers { items, next_cursor } = view;
        SegmentMembers { items: list(items), next_cursor }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SizePoint {
    /// China Standard Time day.
    pub day: String,
    pub size: u64,
}

impl From<segment_view::SizePoint> for SizePoint {
    fn from(view: segment_view::SizePoint) -> Self {
        let segment_view::SizePoint { day, size } = view;
        SizePoint { day, size }
    }
}

// ---- A profile's activity (siyu_engine::activity) ----

/// One entry of a profile's activity; `kind` says which of `event`, `tag`, `segment` is set.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActivityItem {
    /// `event` | `tag` | `segment`
    pub kind: String,
    pub at: String,
    /// The event's log position; for a tag operation the event it followed; for a membership
    /// change the event that caused it (null when time passing or a definition change did).
    pub seq: Option<i64>,
    pub event: Option<ActivityEvent>,
    pub tag: Option<ActivityTag>,
    pub segment: Option<ActivitySegment>,
}

impl From<activity_view::ActivityItem> for ActivityItem {
    fn from(view: activity_view::ActivityItem) -> Self {
        let activity_view::ActivityItem { kind, at, seq, event, tag, segment } = view;
        ActivityItem {
            kind,
            at,
            seq,
            event: event.map(Into::into),
            tag: tag.map(Into::into),
            segment: segment.map(Into::into),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActivityEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub channel: String,
    pub account: String,
    pub amount: Option<f64>,
    pub source: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
}

impl From<activity_view::ActivityEvent> for ActivityEvent {
    fn from(view: activity_view::ActivityEvent) -> Self {
        let activity_view::ActivityEvent { event_type, channel, account, amount, source, properties } = view;
        ActivityEvent { event_type, channel, account, amount, source, properties }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActivityTag {
    pub tag: String,
    /// `added` | `removed`
    pub action: String,
    /// `api`, `cli`, `segment:<id>`, `rule:<tag id>`, …
    pub actor: String,
}

impl From<activity_view::ActivityTag> for ActivityTag {
    fn from(view: activity_view::ActivityTag) -> Self {
        let activity_view::ActivityTag { tag, action, actor } = view;
        ActivityTag { tag, action, actor }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActivitySegment {
    pub segment_id: i64,
    /// Null once the segment is deleted.
    pub name: Option<String>,
    /// `entered` | `exited`
    pub change: String,
}

impl From<activity_view::ActivitySegment> for ActivitySegment {
    fn from(view: activity_view::ActivitySegment) -> Self {
        let activity_view::ActivitySegment { segment_id, name, change } = view;
        ActivitySegment { segment_id, name, change }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActivityPage {
    pub items: Vec<ActivityItem>,
    /// Pass as `before` for the next (older) page.
    pub next_cursor: Option<String>,
}

impl From<activity_view::ActivityPage> for ActivityPage {
    fn from(view: activity_view::ActivityPage) -> Self {
        let activity_view::ActivityPage { items, next_cursor } = view;
        ActivityPage { items: list(items), next_cursor }
    }
}

// ---- Reach (siyu_engine::reach) ----

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateView {
    pub id: i64,
    pub name: String,
    /// The definition as saved (docs/templates.md).
    #[schema(value_type = Object)]
    pub definition: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
}

impl From<reach_view::TemplateView> for TemplateView {
    fn from(view: reach_view::TemplateView) -> Self {
        let reach_view::TemplateView { id, name, definition, created_at, updated_at } = view;
        TemplateView {
            id,
            name,
            definition: serde_json::to_value(definition).unwrap_or_default(),
            created_at: created_at.to_rfc3339(),
            updated_at: updated_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignView {
    pub id: i64,
    pub name: String,
    /// The campaign as asked for.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// scheduled | planning | sending | done | cancelled
    pub state: String,
    pub send_at: String,
    pub planned_at: Option<String>,
    /// Messages queued by the plan.
    pub planned: u64,
    pub created_at: String,
}

impl From<reach_view::CampaignView> for CampaignView {
    fn from(view: reach_view::CampaignView) -> Self {
        let reach_view::CampaignView { id, name, spec, state, send_at, planned_at, planned, created_at } = view;
        CampaignView {
            id,
            name,
            spec: serde_json::to_value(spec).unwrap_or_default(),
            state: state.as_str().to_string(),
            send_at: send_at.to_rfc3339(),
            planned_at: planned_at.map(|t| t.to_rfc3339()),
            planned,
            created_at: created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleCount {
    /// The rule's name (`frequency:marketing_daily`, `wecom_customer_monthly`, `unsubscribed`, `holdout`, ...).
    pub rule: String,
    pub count: u64,
}

fn rule_counts(counts: Vec<(String, u64)>) -> Vec<RuleCount> {
    counts.into_iter().map(|(rule, count)| RuleCount { rule, count }).collect()
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DryRunView {
    pub audience: u64,
    pub holdout: u64,
    pub would_send: u64,
    /// Held back per rule, largest first.
    pub held: Vec<RuleCount>,
    /// The channel makes a staff member confirm these sends (WeCom mass messages).
    pub staff_confirms: bool,
    pub first_send_at: Option<String>,
}

impl From<reach_view::DryRun> for DryRunView {
    fn from(view: reach_view::DryRun) -> Self {
        let reach_view::DryRun { audience, holdout, would_send, held, staff_confirms, first_send_at } = view;
        DryRunView {
            audience,
            holdout,
            would_send,
            held: rule_counts(held),
            staff_confirms,
            first_send_at: first_send_at.map(|t| t.to_rfc3339()),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StaffTaskView {
    pub task_id: String,
    pub campaign_id: i64,
    pub account: String,
    pub sender: String,
    /// created | assigned | confirmed | delivered | expired
    pub state: String,
    pub recipients: u64,
    pub delivered: u64,
    pub created_at: String,
    pub deadline: String,
    pub chased_at: Option<String>,
    pub reassigned_to: Option<String>,
}

impl From<reach_view::StaffTask> for StaffTaskView {
    fn from(task: reach_view::StaffTask) -> Self {
        let reach_view::StaffTask {
            task_id,
            campaign_id,
            account,
            sender,
            state,
            recipients,
            delivered,
            created_at,
            deadline,
            chased_at,
            reassigned_to,
            updated_at: _,
        } = task;
        StaffTaskView {
            task_id,
            campaign_id,
            account,
            sender,
            state: state.as_str().to_string(),
            recipients,
            delivered,
            created_at: created_at.to_rfc3339(),
            deadline: deadline.to_rfc3339(),
            chased_at: chased_at.map(|t| t.to_rfc3339()),
            reassigned_to,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SuppressionView {
    pub list: String,
    pub kind: String,
    pub value: String,
    pub reason: String,
    pub created_at: String,
}

impl From<reach_view::Suppression> for SuppressionView {
    fn from(s: reach_view::Suppression) -> Self {
        let reach_view::Suppression { list, identity_kind, identity_value, reason, created_at } = s;
        SuppressionView {
            list,
            kind: identity_kind,
            value: identity_value,
            reason,
            created_at: created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversionsView {
    pub attribution_days: u32,
    pub receivers: u64,
    pub receivers_converted: u64,
    /// Yuan paid by converted receivers within the window.
    pub receivers_revenue: f64,
    pub holdout: u64,
    pub holdout_converted: u64,
    /// Receivers' conversion rate minus the holdout's, in percentage points.
    pub lift_points: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignReport {
    pub campaign: CampaignView,
    /// Messages per outbox state (queued, attempting, sent, task, delivered, failed, cancelled).
    pub outbox: Vec<RuleCount>,
    pub planned: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Failures per connector error code.
    pub failures: Vec<RuleCount>,
    /// Held back per rule (the holdout as `holdout`).
    pub held: Vec<RuleCount>,
    pub tasks: Vec<StaffTaskView>,
    pub conversions: ConversionsView,
}

impl From<reach_view::CampaignReport> for CampaignReport {
    fn from(view: reach_view::CampaignReport) -> Self {
        let reach_view::CampaignReport {
            campaign,
            outbox,
            planned,
            sent,
            delivered,
            failed,
            failures,
            held,
            tasks,
            conversions,
        } = view;
        let reach_view::Conversions {
            attribution_days,
            receivers,
            receivers_converted,
            receivers_revenue,
            holdout,
            holdout_converted,
            lift_points,
        } = conversions;
        CampaignReport {
            campaign: campaign.into(),
            outbox: outbox.into_iter().map(|(s, count)| RuleCount { rule: s.as_str().to_string(), count }).collect(),
            planned,
            sent,
            delivered,
            failed,
            failures: rule_counts(failures),
            held: rule_counts(held),
            tasks: list(tasks),
            conversions: ConversionsView {
                attribution_days,
                receivers,
                receivers_converted,
                receivers_revenue,
                holdout,
                holdout_converted,
                lift_points,
            },
        }
    }
}
