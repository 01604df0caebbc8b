//! Profiles: by id or any identity, filtered lists, timelines (events alone, or events with tag
//! and segment changes), merge history and unmerge.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use siyu_engine::activity::ActivityCursor;
use siyu_engine::query::{ProfileFilter, ProfileRef};
use siyu_model::score::{FanTier, Ownership, PoolStage, RfmGroup};
use siyu_model::{Channel, Identity, ProfileId};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::parse_as_of;
use super::views::{self, ActivityPage, MergeView, ProfilePage, ProfileView};
use crate::auth::Manager;
use crate::error::{ApiError, Code, ErrorBody};
use crate::json::JsonBody;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_profiles))
        .routes(routes!(lookup_profile))
        .routes(routes!(get_profile))
        .routes(routes!(profile_events))
        .routes(routes!(profile_activity))
        .routes(routes!(profile_merges))
        .routes(routes!(unmerge_profile))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// true_fan | warm_fan | passerby | none (or 真爱粉 ...)
    tier: Option<String>,
    /// main_base | reservoir | incentive | public
    pool_stage: Option<String>,
    /// L0 | L1 | L2 | L3
    ownership: Option<String>,
    /// an RFM group, e.g. 重要价值
    rfm: Option<String>,
    /// profiles with events on this channel
    channel: Option<String>,
    /// profiles carrying this tag (or whose `tags` trait holds it)
    tag: Option<String>,
    /// text search in name and identity values
    q: Option<String>,
    reachable: Option<bool>,
    /// evaluate scores as of this RFC 3339 time (default: now)
    as_of: Option<String>,
    /// `next_cursor` of the previous page
    cursor: Option<String>,
    /// page size, 1–1000 (default 50)
    limit: Option<usize>,
}

fn parse_enum<T>(field: &str, value: Option<&str>, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            parse(v).ok_or_else(|| {
                ApiError::new(Code::InvalidQuery, format!("{field} {v:?} is not valid")).with_field(field)
            })
        })
        .transpose()
}

/// Lists profiles matching every given filter, in id order, with cursor pagination.
#[utoipa::path(get, path = "/api/v1/profiles", tag = "profiles", params(ListQuery),
    responses((status = 200, body = ProfilePage), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn list_profiles(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Query(query): Query<ListQuery>,
) -> Result<Json<ProfilePage>, ApiError> {
    let filter = ProfileFilter {
        tier: parse_enum("tier", query.tier.as_deref(), FanTier::parse)?,
        pool_stage: parse_enum("pool_stage", query.pool_stage.as_deref(), PoolStage::parse)?,
        ownership: parse_enum("ownership", query.ownership.as_deref(), Ownership::parse)?,
        rfm: parse_enum("rfm", query.rfm.as_deref(), RfmGroup::parse)?,
        channel: parse_enum("channel", query.channel.as_deref(), Channel::parse)?,
        tag: query.tag,
        text: query.q.filter(|q| !q.trim().is_empty()),
        reachable: query.reachable,
    };
    let cursor = parse_enum("cursor", query.cursor.as_deref(), |c| c.parse::<ProfileId>().ok())?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(Code::InvalidQuery, "limit must be between 1 and 1000").with_field("limit"));
    }
    let as_of = parse_as_of(query.as_of.as_deref())?;
    Ok(Json(state.engine.list_profiles(tenant, &filter, as_of, cursor, limit)?.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AsOfQuery {
    /// evaluate scores as of this RFC 3339 time (default: now)
    pub as_of: Option<String>,
}

/// A profile by id; an id merged away finds the surviving profile.
#[utoipa::path(get, path = "/api/v1/profiles/{id}", tag = "profiles", params(("id" = u32, Path), AsOfQuery),
    responses((status = 200, body = ProfileView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_profile(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<ProfileId>,
    Query(query): Query<AsOfQuery>,
) -> Result<Json<ProfileView>, ApiError> {
    let as_of = parse_as_of(query.as_of.as_deref())?;
    state
        .engine
        .profile_view(tenant, &ProfileRef::Id(id), as_of)?
        .map(|view| Json(view.into()))
        .ok_or_else(|| ApiError::new(Code::NoSuchProfile, format!("profile {id} not found")))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct LookupQuery {
    /// identity kind: user_id, phone, email, anonymous_id, wechat_unionid, ...
    kind: String,
    /// identity value (phones in any format)
    value: String,
    as_of: Option<String>,
}

/// A profile by any of its identities.
#[utoipa::path(get, path = "/api/v1/profiles/lookup", tag = "profiles", params(LookupQuery),
    responses((status = 200, body = ProfileView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn lookup_profile(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Query(query): Query<LookupQuery>,
) -> Result<Json<ProfileView>, ApiError> {
    let identity = Identity::parse(&query.kind, &query.value)
        .map_err(|e| ApiError::new(Code::InvalidIdentity, e.to_string()).with_field("value"))?;
    let as_of = parse_as_of(query.as_of.as_deref())?;
    state
        .engine
        .profile_view(tenant, &ProfileRef::Identity(identity.clone()), as_of)?
        .map(|view| Json(view.into()))
        .ok_or_else(|| ApiError::new(Code::NoSuchProfile, format!("no profile holds {identity}")))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TimelineQuery {
    /// only events before this log position (the `seq` of the last event of the previous page)
    before: Option<i64>,
    /// 1–500 (default 100)
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ActivityQuery {
    /// `next_cursor` of the previous page
    before: Option<String>,
    /// 1–500 (default 100)
    limit: Option<usize>,
}

/// A profile's activity, newest first: its events, the tags put on it or taken off (who, which
/// rule, after which event) and the segments it entered or left.
#[utoipa::path(get, path = "/api/v1/profiles/{id}/activity", tag = "profiles", params(("id" = u32, Path), ActivityQuery),
    responses((status = 200, body = ActivityPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn profile_activity(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<ProfileId>,
    Query(query): Query<ActivityQuery>,
) -> Result<Json<ActivityPage>, ApiError> {
    let before = query
        .before
        .map(|c| {
            c.parse::<ActivityCursor>()
                .map_err(|_| ApiError::new(Code::InvalidQuery, "bad cursor").with_field("before"))
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(100).clamp(1, 500);
    Ok(Json(state.engine.profile_activity(tenant, id, before, limit).await?.into()))
}

/// One event of a timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEvent {
    pub seq: i64,
    pub message_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub channel: String,
    pub account: String,
    pub timestamp: String,
    pub received_at: String,
    pub amount: Option<f64>,
    pub currency: Option<String>,
    pub identities: Vec<String>,
    pub source: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
}

/// A profile's events, newest first.
#[utoipa::path(get, path = "/api/v1/profiles/{id}/events", tag = "profiles", params(("id" = u32, Path), TimelineQuery),
    responses((status = 200, body = [TimelineEvent]), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn profile_events(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<ProfileId>,
    Query(query): Query<TimelineQuery>,
) -> Result<Json<Vec<TimelineEvent>>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 500);
    let events = state.engine.timeline(tenant, id, query.before, limit).await?;
    Ok(Json(
        events
            .into_iter()
            .map(|stored| {
                let e = stored.event;
                TimelineEvent {
                    seq: stored.seq,
                    message_id: e.message_id,
                    event_type: e.kind.as_str().to_string(),
                    channel: e.channel.to_string(),
                    account: e.account,
                    timestamp: e.timestamp.to_rfc3339(),
                    received_at: e.received_at.to_rfc3339(),
                    amount: e.amount.map(|a| a.yuan()),
                    currency: e.currency,
                    identities: e.identities.iter().map(|i| i.to_string()).collect(),
                    source: e.source.map(|s| s.key()),
                    properties: e.properties.and_then(|p| serde_json::from_str(p.get()).ok()),
                }
            })
            .collect(),
    ))
}

/// The merges that built this profile, with the evidence of each.
#[utoipa::path(get, path = "/api/v1/profiles/{id}/merges", tag = "profiles", params(("id" = u32, Path)),
    responses((status = 200, body = [MergeView]), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn profile_merges(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<ProfileId>,
) -> Result<Json<Vec<MergeView>>, ApiError> {
    Ok(Json(views::list(state.engine.merge_history(tenant, id)?)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UnmergeRequest {
    /// The profile id that was merged into this one.
    pub merged_id: ProfileId,
    /// Why (kept with the rule, for the audit trail).
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnmergeResponse {
    /// The two identities now declared to be different people.
    pub cannot_link: [String; 2],
    pub survivor: Option<ProfileId>,
    /// Where the split-off identity lives now.
    pub separated: Option<ProfileId>,
}

/// Undoes a wrong merge from its evidence: the two anchors become a cannot-link pair and the
/// tenant's profiles are re-derived from the log.
#[utoipa::path(post, path = "/api/v1/profiles/{id}/unmerge", tag = "profiles", params(("id" = u32, Path)),
    request_body = UnmergeRequest,
    responses((status = 200, body = UnmergeResponse), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn unmerge_profile(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<ProfileId>,
    JsonBody(request): JsonBody<UnmergeRequest>,
) -> Result<Json<UnmergeResponse>, ApiError> {
    let rule = state.engine.unmerge(tenant, id, request.merged_id, &request.reason).await?;
    Ok(Json(UnmergeResponse {
        cannot_link: [rule.a.to_string(), rule.b.to_string()],
        survivor: state.engine.holder_of(tenant, &rule.a)?,
        separated: state.engine.holder_of(tenant, &rule.b)?,
    }))
}
