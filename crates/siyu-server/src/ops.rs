//! Operations endpoints: health, Prometheus metrics, the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, Code};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(metrics))
}

/// Liveness and readiness: the store answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "healthy", body = Object)))]
async fn healthz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let health = state.engine.health().await.map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({"status": "ok", "tenants": health.tenants, "store": health.backend})))
}

/// Prometheus text exposition of every counter and histogram.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.engine.metrics.encode())
}

pub async fn openapi_json(doc: Arc<utoipa::openapi::OpenApi>) -> impl IntoResponse {
    Json((*doc).clone())
}

pub async fn not_found(State(state): State<AppState>, uri: axum::http::Uri) -> ApiError {
    state.engine.metrics.reject(Code::NoSuchRoute.as_str());
    ApiError::new(Code::NoSuchRoute, format!("no route {}; see /openapi.json", uri.path()))
}

pub async fn method_not_allowed(
    State(state): State<AppState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    state.engine.metrics.reject(Code::MethodNotAllowed.as_str());
    ApiError::new(Code::MethodNotAllowed, format!("{method} is not allowed on {}; see /openapi.json", uri.path()))
}
