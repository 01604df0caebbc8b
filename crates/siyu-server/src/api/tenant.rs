//! The tenant's own view: summary counts, settings, identity-resolution refusals.

use axum::extract::{Query, State};
use axum::Json;
use siyu_model::TenantSettings;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::parse_as_of;
use super::profiles::AsOfQuery;
use super::views::{self, AccountSummary, RefusalView, TenantSummary};
use crate::auth::Manager;
use crate::error::{ApiError, Code, ErrorBody};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(summary))
        .routes(routes!(accounts))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(refusals))
}

/// Counts per tier, pool stage, ownership level, RFM group and channel; orders and revenue.
#[utoipa::path(get, path = "/api/v1/summary", tag = "tenant", params(AsOfQuery),
    responses((status = 200, body = TenantSummary)), security(("bearer" = [])))]
async fn summary(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Query(query): Query<AsOfQuery>,
) -> Result<Json<TenantSummary>, ApiError> {
    let as_of = parse_as_of(query.as_of.as_deref())?;
    Ok(Json(state.engine.summary(tenant, as_of)?.into()))
}

/// The tenant's channel accounts (矩阵号) with events, people, followers, subscribers and WeCom
/// contacts per account, now or as of a past time.
#[utoipa::path(get, path = "/api/v1/accounts", tag = "tenant", params(AsOfQuery),
    responses((status = 200, body = [AccountSummary])), security(("bearer" = [])))]
async fn accounts(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    Query(query): Query<AsOfQuery>,
) -> Result<Json<Vec<AccountSummary>>, ApiError> {
    let as_of = parse_as_of(query.as_of.as_deref())?;
    Ok(Json(views::list(state.engine.accounts(tenant, as_of)?)))
}

/// The tenant's settings: score weights, half-life, thresholds, windows, event mapping, identity limits.
#[utoipa::path(get, path = "/api/v1/settings", tag = "tenant",
    responses((status = 200, body = Object)), security(("bearer" = [])))]
async fn get_settings(
    State(state): State<AppState>,
    Manager(tenant): Manager,
) -> Result<Json<TenantSettings>, ApiError> {
    Ok(Json(masked(state.engine.settings(tenant)?)))
}

/// Settings as answers show them: send-account credentials masked.
fn masked(mut settings: TenantSettings) -> TenantSettings {
    for account in settings.send_accounts.values_mut() {
        *account = account.masked();
    }
    settings
}

/// Replaces the settings; every profile is re-derived from the log under the new ones.
#[utoipa::path(put, path = "/api/v1/settings", tag = "tenant", request_body = Object,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn put_settings(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    body: axum::body::Bytes,
) -> Result<Json<TenantSettings>, ApiError> {
    let mut settings: TenantSettings = serde_json::from_slice(&body).map_err(|e| {
        let e = siyu_model::event::json_error(&e);
        ApiError::new(Code::InvalidSettings, e.message).with_field(e.field)
    })?;
    siyu_connect::Mapping::with_overrides(settings.event_mapping.clone())
        .validate()
        .map_err(|e| ApiError::new(Code::InvalidSettings, e.message).with_field(e.field))?;
    // A credential sent back masked (as GET shows it) keeps its stored value.
    let stored = state.engine.settings(tenant)?;
    for (name, account) in settings.send_accounts.iter_mut() {
        if let Some(old) = stored.send_accounts.get(name) {
            account.unmask_from(old);
        }
    }
    state.engine.update_settings(tenant, settings.clone()).await?;
    Ok(Json(masked(settings)))
}

/// Recent merges and identity links refused by identity limits or unmerge rules.
#[utoipa::path(get, path = "/api/v1/identity/refusals", tag = "tenant",
    responses((status = 200, body = [RefusalView])), security(("bearer" = [])))]
async fn refusals(State(state): State<AppState>, Manager(tenant): Manager) -> Result<Json<Vec<RefusalView>>, ApiError> {
    Ok(Json(views::list(state.engine.refusals(tenant, 500)?)))
}
