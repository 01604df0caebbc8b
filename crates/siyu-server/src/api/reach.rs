//! Reach: message templates (内容库), campaigns (群发) with their dry run and results, suppression
//! lists and staff-confirmed tasks. Everything a send obeys is explained in docs/reach.md.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use siyu_engine::query::ProfileRef;
use siyu_model::reach::template::TemplateDef;
use siyu_model::reach::CampaignSpec;
use siyu_model::{Channel, Identity, ProfileId};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::views::{self, CampaignReport, CampaignView, DryRunView, StaffTaskView, SuppressionView, TemplateView};
use crate::auth::Manager;
use crate::error::{ApiError, Code, ErrorBody};
use crate::json::JsonBody;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_templates, create_template))
        .routes(routes!(get_template, update_template, delete_template))
        .routes(routes!(preview_template))
        .routes(routes!(list_campaigns, create_campaign))
        .routes(routes!(dry_run))
        .routes(routes!(campaign_report))
        .routes(routes!(send_campaign))
        .routes(routes!(cancel_campaign))
        .routes(routes!(list_suppressions, add_suppressions))
        .routes(routes!(remove_suppression))
        .routes(routes!(list_staff_tasks))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TemplateRequest {
    pub name: String,
    /// `{"purpose": "marketing", "variants": {"default": {"text": "..."}, "wecom": {...}}}` (docs/templates.md)
    #[schema(value_type = Object)]
    pub definition: serde_json::Value,
}

fn parse_definition(value: serde_json::Value) -> Result<TemplateDef, ApiError> {
    serde_json::from_value(value)
        .map_err(|e| ApiError::new(Code::InvalidTemplate, format!("definition: {e}")).with_field("definition"))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PreviewRequest {
    /// The profile to render for, by id ...
    pub profile_id: Option<ProfileId>,
    /// ... or by identity, `{"kind": "phone", "value": "13800138000"}`.
    pub identity: Option<IdentityRef>,
    /// The channel whose variant to render (default: `other`, i.e. the default variant).
    pub channel: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct IdentityRef {
    pub kind: String,
    pub value: String,
}

fn identity(r: &IdentityRef, field: &'static str) -> Result<Identity, ApiError> {
    Identity::parse(&r.kind, &r.value)
        .map_err(|e| ApiError::new(Code::InvalidIdentity, e.to_string()).with_field(field))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CampaignRequest {
    pub name: String,
    /// template_id, audience (`{"segment_id": 3}` or `{"profile_ids": [..]}`), channel, account,
    /// sender, scope, vars, send_at, holdout_percent, attribution_days, confirm_hours (docs/reach.md)
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
}

fn parse_spec(value: serde_json::Value, field: &str) -> Result<CampaignSpec, ApiError> {
    serde_json::from_value(value)
        .map_err(|e| ApiError::new(Code::InvalidCampaign, format!("{field}: {e}")).with_field(field.to_string()))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SuppressionRequest {
    /// The list's name (`complaints`, `legal_hold`, `do_not_contact`, ...).
    pub list: String,
    pub identities: Vec<IdentityRef>,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Added {
    pub added: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SendResult {
    pub queued: u64,
    pub held: u64,
    pub holdout: u64,
    /// Already queued by an earlier, interrupted run.
    pub resumed: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    /// Queued messages that will not go out.
    pub cancelled: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct RemoveQuery {
    list: String,
    kind: String,
    value: String,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TaskQuery {
    /// Only the tasks of this campaign.
    campaign_id: Option<i64>,
}

/// The tenant's message templates.
#[utoipa::path(get, path = "/api/v1/templates", tag = "reach",
    responses((status = 200, body = [TemplateView])), security(("bearer" = [])))]
async fn list_templates(
    State(state): State<AppState>,
    Manager(tenant): Manager,
) -> Result<Json<Vec<TemplateView>>, ApiError> {
    Ok(Json(views::list(state.engine.templates(tenant).await?)))
}

/// Saves a template; unknown variables, syntax errors and content a channel cannot carry are
/// refused with their field, line and column.
#[utoipa::path(post, path = "/api/v1/templates", tag = "reach", request_body = TemplateRequest,
    responses((status = 200, body = TemplateView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_template(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    JsonBody(request): JsonBody<TemplateRequest>,
) -> Result<Json<TemplateView>, ApiError> {
    let def = parse_definition(request.definition)?;
    Ok(Json(state.engine.create_template(tenant, &request.name, &def).await?.into()))
}

#[utoipa::path(get, path = "/api/v1/templates/{id}", tag = "reach",
    responses((status = 200, body = TemplateView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_template(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
) -> Result<Json<TemplateView>, ApiError> {
    Ok(Json(state.engine.template(tenant, id).await?.into()))
}

/// Replaces a template's definition (checked like a new one).
#[utoipa::path(put, path = "/api/v1/templates/{id}", tag = "reach", request_body = Object,
    responses((status = 200, body = TemplateView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_template(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
    JsonBody(definition): JsonBody<serde_json::Value>,
) -> Result<Json<TemplateView>, ApiError> {
    let def = parse_definition(definition)?;
    Ok(Json(state.engine.update_template(tenant, id, &def).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/templates/{id}", tag = "reach",
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn delete_template(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
) -> Result<axum::http::StatusCode, ApiError> {
    state.engine.delete_template(tenant, id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Renders a template for a real profile, as a campaign would send it.
#[utoipa::path(post, path = "/api/v1/templates/{id}/preview", tag = "reach", request_body = PreviewRequest,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn preview_template(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
    JsonBody(request): JsonBody<PreviewRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let reference = match (&request.profile_id, &request.identity) {
        (Some(id), _) => ProfileRef::Id(*id),
        (None, Some(r)) => ProfileRef::Identity(identity(r, "identity")?),
        (None, None) => {
            return Err(ApiError::new(Code::InvalidRequest, "name a profile_id or an identity").with_field("profile_id"))
        }
    };
    let channel = channel(request.channel.as_deref())?;
    let content = state.engine.preview_template(tenant, id, &reference, channel, &request.vars).await?;
    Ok(Json(serde_json::to_value(content).map_err(ApiError::internal)?))
}

fn channel(text: Option<&str>) -> Result<Channel, ApiError> {
    match text {
        None => Ok(Channel::Other),
        Some(name) => Channel::parse(name).ok_or_else(|| {
            ApiError::new(Code::UnknownChannel, format!("unknown channel {name:?}")).with_field("channel")
        }),
    }
}

#[utoipa::path(get, path = "/api/v1/campaigns", tag = "reach",
    responses((status = 200, body = [CampaignView])), security(("bearer" = [])))]
async fn list_campaigns(
    State(state): State<AppState>,
    Manager(tenant): Manager,
) -> Result<Json<Vec<CampaignView>>, ApiError> {
    Ok(Json(views::list(state.engine.campaigns(tenant).await?)))
}

/// Creates a campaign: sent at `send_at` (tenant time), or at once when absent.
#[utoipa::path(post, path = "/api/v1/campaigns", tag = "reach", request_body = CampaignRequest,
    responses((status = 200, body = CampaignView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_campaign(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    JsonBody(request): JsonBody<CampaignRequest>,
) -> Result<Json<CampaignView>, ApiError> {
    let spec = parse_spec(request.spec, "spec")?;
    Ok(Json(state.engine.create_campaign(tenant, &request.name, &spec).await?.into()))
}

/// What a campaign would do now: recipients, holdout, and who each guardrail rule holds back.
#[utoipa::path(post, path = "/api/v1/campaigns/dry-run", tag = "reach", request_body = Object,
    responses((status = 200, body = DryRunView), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn dry_run(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    JsonBody(spec): JsonBody<serde_json::Value>,
) -> Result<Json<DryRunView>, ApiError> {
    let spec = parse_spec(spec, "spec")?;
    Ok(Json(state.engine.dry_run(tenant, &spec).await?.into()))
}

/// Progress and results: planned, sent, delivered, failed by error, held back by rule, staff
/// tasks, and conversions against the holdout.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "reach",
    responses((status = 200, body = CampaignReport), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn campaign_report(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
) -> Result<Json<CampaignReport>, ApiError> {
    Ok(Json(state.engine.campaign_report(tenant, id).await?.into()))
}

/// Plans a scheduled campaign now (without waiting for its time); the dispatcher sends.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/send", tag = "reach",
    responses((status = 200, body = SendResult), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn send_campaign(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
) -> Result<Json<SendResult>, ApiError> {
    let plan = state.engine.plan_campaign(tenant, id).await?;
    Ok(Json(SendResult { queued: plan.queued, held: plan.held, holdout: plan.holdout, resumed: plan.resumed }))
}

/// Cancels a campaign; messages already attempted keep their outcome.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/cancel", tag = "reach",
    responses((status = 200, body = Cancelled), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn cancel_campaign(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Path(id): Path<i64>,
) -> Result<Json<Cancelled>, ApiError> {
    Ok(Json(Cancelled { cancelled: state.engine.cancel_campaign(tenant, id).await? }))
}

#[utoipa::path(get, path = "/api/v1/suppressions", tag = "reach",
    responses((status = 200, body = [SuppressionView])), security(("bearer" = [])))]
async fn list_suppressions(
    State(state): State<AppState>,
    Manager(tenant): Manager,
) -> Result<Json<Vec<SuppressionView>>, ApiError> {
    Ok(Json(views::list(state.engine.suppressions(tenant).await?)))
}

/// Adds identities to a suppression list: nothing is sent to them while they are on it.
#[utoipa::path(post, path = "/api/v1/suppressions", tag = "reach", request_body = SuppressionRequest,
    responses((status = 200, body = Added), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn add_suppressions(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    JsonBody(request): JsonBody<SuppressionRequest>,
) -> Result<Json<Added>, ApiError> {
    let identities = request.identities.iter().map(|r| identity(r, "identities")).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(Added { added: state.engine.add_suppressions(tenant, &request.list, &identities, &request.reason).await? }))
}

#[utoipa::path(delete, path = "/api/v1/suppressions", tag = "reach", params(RemoveQuery),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn remove_suppression(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Query(query): Query<RemoveQuery>,
) -> Result<axum::http::StatusCode, ApiError> {
    let identity = identity(&IdentityRef { kind: query.kind, value: query.value }, "kind")?;
    if !state.engine.remove_suppression(tenant, &query.list, &identity).await? {
        return Err(ApiError::new(Code::NotFound, "no such entry on that list"));
    }
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Sends staff members must confirm in WeCom, with their state and completion.
#[utoipa::path(get, path = "/api/v1/staff-tasks", tag = "reach", params(TaskQuery),
    responses((status = 200, body = [StaffTaskView])), security(("bearer" = [])))]
async fn list_staff_tasks(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Query(query): Query<TaskQuery>,
) -> Result<Json<Vec<StaffTaskView>>, ApiError> {
    Ok(Json(views::list(state.engine.staff_tasks(tenant, query.campaign_id).await?)))
}
