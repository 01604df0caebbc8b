//! Tags and segments: tag groups, tags, manual tagging (one profile or a whole segment), tag
//! history; segment definitions, preview, members, export, sizes and entered/exited history.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use siyu_engine::segments::ops::{ExportFormat, TagAction};
use siyu_model::ProfileId;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::views::{
    self, MembershipChangeView, ProfileTags, SegmentMembers, SegmentPreview, SegmentView, SizePoint, TagGroupView,
    TagView,
};
use crate::auth::Manager;
use crate::error::{ApiError, Code, ErrorBody};
use crate::json::JsonBody;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tag_groups, create_tag_group))
        .routes(routes!(delete_tag_group))
        .routes(routes!(list_tags, create_tag))
        .routes(routes!(delete_tag, update_tag))
        .routes(routes!(get_profile_tags, change_profile_tags))
        .routes(routes!(get_profile_segments))
        .routes(routes!(list_segments, create_segment))
        .routes(routes!(preview_segment))
        .routes(routes!(get_segment, update_segment, delete_segment))
        .routes(routes!(segment_members))
        .routes(routes!(export_segment))
        .routes(routes!(segment_sizes))
        .routes(routes!(segment_changes))
        .routes(routes!(tag_segment))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NameRequest {
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TagRequest {
    pub name: String,
    /// The tag group, if any.
    pub group_id: Option<i64>,
    /// Makes a rule tag: applied and removed automatically by this condition (docs/conditions.md).
    pub condition: Option<String>,
}

/// A rule tag's new condition.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConditionRequest {
    pub condition: String,
}

/// Tags to add and to remove, by name.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TagChanges {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl TagChanges {
    fn actions(self) -> Result<Vec<(String, TagAction)>, ApiError> {
        if self.add.is_empty() && self.remove.is_empty() {
            return Err(ApiError::new(Code::InvalidRequest, "name tags to add or remove").with_field("add"));
        }
        let add = self.add.into_iter().map(|t| (t, TagAction::Add));
        Ok(add.chain(self.remove.into_iter().map(|t| (t, TagAction::Remove))).collect())
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaggedResponse {
    /// Tag operations recorded (profiles × tags).
    pub operations: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SegmentRequest {
    pub name: String,
    /// A condition (docs/conditions.md), e.g. `tier = true_fan and count(order_paid, 365d) >= 2`.
    pub condition: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SegmentUpdate {
    pub name: Option<String>,
    pub condition: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PreviewRequest {
    pub condition: String,
    /// How many members to show (0–100, default 10).
    pub sample: Option<usize>,
    /// Evaluate as of this RFC 3339 time instead of now: only events up to it count.
    pub as_of: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileSegments {
    /// The segments the profile is in now.
    pub segments: Vec<SegmentView>,
    /// Entered/exited records, newest first.
    pub history: Vec<MembershipChangeView>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// `next_cursor` of the previous page
    cursor: Option<String>,
    /// 1–1000 (default 50)
    limit: Option<usize>,
    /// RFC 3339: who met the condition at that time (evaluated afresh; default: the members now)
    as_of: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ExportQuery {
    /// csv (default) | ndjson
    format: Option<String>,
    /// comma-separated: id, name, tier, pool_stage, ownership, rfm, affinity, reachable,
    /// net_revenue, paid_orders, first_seen, last_seen, tags, channels, an identity kind
    /// (phone, user_id, …) or traits.KEY (default: id)
    fields: Option<String>,
    /// RFC 3339: who met the condition at that time, with their values then (default: now)
    as_of: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ChangesQuery {
    /// only changes with an id below this (the `id` of the last change of the previous page)
    before: Option<i64>,
    /// 1–500 (default 100)
    limit: Option<usize>,
}

fn limit(value: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = value.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::new(Code::InvalidQuery, format!("limit must be between 1 and {max}")).with_field("limit"));
    }
    Ok(limit)
}

/// The tenant's tag groups.
#[utoipa::path(get, path = "/api/v1/tag-groups", tag = "tags",
    responses((status = 200, body = [TagGroupView])), security(("bearer" = [])))]
async fn list_tag_groups(
    State(state): State<AppState>,
    Manager(tenant): Manager,
) -> Result<Json<Vec<TagGroupView>>, ApiError> {
    Ok(Json(views::list(state.engine.tag_groups(tenant)?)))
}

/// Creates a tag group (names are unique per tenant).
#[utoipa::path(post, path = "/api/v1/tag-groups", tag = "tags", request_body = NameRequest,
    responses((status = 200, body = TagGroupView), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn create_tag_group(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    JsonBody(request): JsonBody<NameRequest>,
) -> Result<Json<TagGroupView>, ApiError> {
    Ok(Json(state.engine.create_tag_group(tenant, &request.name).await?.into()))
}

/// Deletes a tag group; its tags stay, without a group.
#[utoipa::path(delete, path = "/api/v1/tag-groups/{id}", tag = "tags", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn delete_tag_group(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
) -> Result<axum::http::StatusCode, ApiError> {
    state.engine.delete_tag_group(tenant, id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The tenant's tags with how many profiles carry each.
#[utoipa::path(get, path = "/api/v1/tags", tag = "tags",
    responses((status = 200, body = [TagView])), security(("bearer" = [])))]
async fn list_tags(State(state): State<AppState>, Manager(tenant): Manager) -> Result<Json<Vec<TagView>>, ApiError> {
    Ok(Json(views::list(state.engine.tags(tenant)?)))
}

/// Creates a tag: a manual one, or with `condition` a rule tag (400 `invalid_condition`, 400
/// `cycle` when it would read itself through rule tags).
#[utoipa::path(post, path = "/api/v1/tags", tag = "tags", request_body = TagRequest,
    responses((status = 200, body = TagView), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn create_tag(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    JsonBody(request): JsonBody<TagRequest>,
) -> Result<Json<TagView>, ApiError> {
    let tag = state.engine.create_tag(tenant, &request.name, request.group_id, request.condition.as_deref()).await?;
    Ok(Json(tag.into()))
}

/// Redefines a rule tag (`{"condition": …}`), checked as at creation; a manual tag has no
/// condition (400 `invalid_request`).
#[utoipa::path(put, path = "/api/v1/tags/{id}", tag = "tags", params(("id" = i64, Path)), request_body = ConditionRequest,
    responses((status = 200, body = TagView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_tag(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
    JsonBody(request): JsonBody<ConditionRequest>,
) -> Result<Json<TagView>, ApiError> {
    Ok(Json(state.engine.update_rule_tag(tenant, id, &request.condition).await?.into()))
}

/// Deletes a tag and takes it off every profile; refused (409 `in_use`) while a segment reads it.
#[utoipa::path(delete, path = "/api/v1/tags/{id}", tag = "tags", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn delete_tag(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
) -> Result<axum::http::StatusCode, ApiError> {
    state.engine.delete_tag(tenant, id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// A profile's tags and their history (who set or removed each, when).
#[utoipa::path(get, path = "/api/v1/profiles/{id}/tags", tag = "tags", params(("id" = u32, Path)),
    responses((status = 200, body = ProfileTags), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_profile_tags(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<ProfileId>,
) -> Result<Json<ProfileTags>, ApiError> {
    Ok(Json(state.engine.profile_tags(tenant, &siyu_engine::query::ProfileRef::Id(id))?.into()))
}

/// Adds and removes tags on a profile; the operations are recorded for its tag history.
#[utoipa::path(post, path = "/api/v1/profiles/{id}/tags", tag = "tags", params(("id" = u32, Path)),
    request_body = TagChanges,
    responses((status = 200, body = ProfileTags), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn change_profile_tags(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<ProfileId>,
    JsonBody(request): JsonBody<TagChanges>,
) -> Result<Json<ProfileTags>, ApiError> {
    state.engine.tag_profiles(tenant, &[id], &request.actions()?, "api").await?;
    Ok(Json(state.engine.profile_tags(tenant, &siyu_engine::query::ProfileRef::Id(id))?.into()))
}

/// The segments a profile is in, and when it entered or left segments.
#[utoipa::path(get, path = "/api/v1/profiles/{id}/segments", tag = "segments", params(("id" = u32, Path)),
    responses((status = 200, body = ProfileSegments), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_profile_segments(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<ProfileId>,
) -> Result<Json<ProfileSegments>, ApiError> {
    let segments = state.engine.profile_segments(tenant, id)?;
    let history = state.engine.membership_changes(tenant, Some(id), None, None, 200).await?;
    Ok(Json(ProfileSegments { segments: views::list(segments), history: views::list(history) }))
}

/// The tenant's segments with their sizes now.
#[utoipa::path(get, path = "/api/v1/segments", tag = "segments",
    responses((status = 200, body = [SegmentView])), security(("bearer" = [])))]
async fn list_segments(
    State(state): State<AppState>,
    Manager(tenant): Manager,
) -> Result<Json<Vec<SegmentView>>, ApiError> {
    Ok(Json(views::list(state.engine.segments(tenant)?)))
}

/// Creates a segment; the condition is checked first (400 `invalid_condition` with line and column).
#[utoipa::path(post, path = "/api/v1/segments", tag = "segments", request_body = SegmentRequest,
    responses((status = 200, body = SegmentView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_segment(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    JsonBody(request): JsonBody<SegmentRequest>,
) -> Result<Json<SegmentView>, ApiError> {
    Ok(Json(state.engine.create_segment(tenant, &request.name, &request.condition).await?.into()))
}

/// Size and a sample of members of a condition, without saving it.
#[utoipa::path(post, path = "/api/v1/segments/preview", tag = "segments", request_body = PreviewRequest,
    responses((status = 200, body = SegmentPreview), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn preview_segment(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    JsonBody(request): JsonBody<PreviewRequest>,
) -> Result<Json<SegmentPreview>, ApiError> {
    let sample = request.sample.unwrap_or(10).min(100);
    let as_of = super::parse_as_of(request.as_of.as_deref())?;
    Ok(Json(state.engine.preview_segment(tenant, &request.condition, sample, as_of)?.into()))
}

#[utoipa::path(get, path = "/api/v1/segments/{id}", tag = "segments", params(("id" = i64, Path)),
    responses((status = 200, body = SegmentView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_segment(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
) -> Result<Json<SegmentView>, ApiError> {
    Ok(Json(state.engine.segment(tenant, id)?.into()))
}

/// Renames and/or redefines a segment; who enters or leaves because of it is recorded.
#[utoipa::path(put, path = "/api/v1/segments/{id}", tag = "segments", params(("id" = i64, Path)),
    request_body = SegmentUpdate,
    responses((status = 200, body = SegmentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_segment(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
    JsonBody(request): JsonBody<SegmentUpdate>,
) -> Result<Json<SegmentView>, ApiError> {
    let updated =
        state.engine.update_segment(tenant, id, request.name.as_deref(), request.condition.as_deref()).await?;
    Ok(Json(updated.into()))
}

#[utoipa::path(delete, path = "/api/v1/segments/{id}", tag = "segments", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn delete_segment(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
) -> Result<axum::http::StatusCode, ApiError> {
    state.engine.delete_segment(tenant, id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The members now (or as of a past time), in profile id order, with cursor pagination.
#[utoipa::path(get, path = "/api/v1/segments/{id}/members", tag = "segments", params(("id" = i64, Path), PageQuery),
    responses((status = 200, body = SegmentMembers), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn segment_members(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
    Query(query): Query<PageQuery>,
) -> Result<Json<SegmentMembers>, ApiError> {
    let cursor = query
        .cursor
        .map(|c| {
            c.parse::<ProfileId>().map_err(|_| ApiError::new(Code::InvalidQuery, "bad cursor").with_field("cursor"))
        })
        .transpose()?;
    let as_of = super::parse_as_of(query.as_of.as_deref())?;
    Ok(Json(state.engine.segment_members(tenant, id, cursor, limit(query.limit, 50, 1000)?, as_of)?.into()))
}

/// The members with chosen fields, as CSV (header row first) or NDJSON.
#[utoipa::path(get, path = "/api/v1/segments/{id}/export", tag = "segments", params(("id" = i64, Path), ExportQuery),
    responses((status = 200, body = String, content_type = "text/csv"), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
async fn export_segment(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
    Query(query): Query<ExportQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let (format, content_type) = match query.format.as_deref().unwrap_or("csv") {
        "csv" => (ExportFormat::Csv, "text/csv; charset=utf-8"),
        "ndjson" => (ExportFormat::Ndjson, "application/x-ndjson"),
        other => {
            return Err(ApiError::new(Code::InvalidQuery, format!("format {other:?} is not csv or ndjson"))
                .with_field("format"))
        }
    };
    let fields: Vec<String> = query
        .fields
        .as_deref()
        .unwrap_or("id")
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    let as_of = super::parse_as_of(query.as_of.as_deref())?;
    let body = state.engine.export_segment(tenant, id, format, &fields, as_of)?;
    Ok(([(header::CONTENT_TYPE, content_type)], body))
}

/// The segment's size per day (China Standard Time), as the periodic sweep measured it.
#[utoipa::path(get, path = "/api/v1/segments/{id}/sizes", tag = "segments", params(("id" = i64, Path)),
    responses((status = 200, body = [SizePoint]), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn segment_sizes(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
) -> Result<Json<Vec<SizePoint>>, ApiError> {
    Ok(Json(views::list(state.engine.segment_sizes(tenant, id).await?)))
}

/// Who entered and left the segment, newest first.
#[utoipa::path(get, path = "/api/v1/segments/{id}/changes", tag = "segments", params(("id" = i64, Path), ChangesQuery),
    responses((status = 200, body = [MembershipChangeView]), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn segment_changes(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
    Query(query): Query<ChangesQuery>,
) -> Result<Json<Vec<MembershipChangeView>>, ApiError> {
    state.engine.segment(tenant, id)?;
    let limit = limit(query.limit, 100, 500)?;
    Ok(Json(views::list(state.engine.membership_changes(tenant, None, Some(id), query.before, limit).await?)))
}

/// Adds and removes tags on every current member of the segment (actor `segment:<id>`).
#[utoipa::path(post, path = "/api/v1/segments/{id}/tags", tag = "segments", params(("id" = i64, Path)),
    request_body = TagChanges,
    responses((status = 200, body = TaggedResponse), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn tag_segment(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
    JsonBody(request): JsonBody<TagChanges>,
) -> Result<Json<TaggedResponse>, ApiError> {
    let actions = request.actions()?;
    let members = state.engine.segment_member_ids(tenant, id)?;
    let operations = state.engine.tag_profiles(tenant, &members, &actions, &format!("segment:{id}")).await?;
    Ok(Json(TaggedResponse { operations }))
}
