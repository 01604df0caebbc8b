//! `POST /api/v1/events`: one native event, or `{"batch": [...]}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use siyu_model::event::parse_native;
use siyu_model::{Event, Millis};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Writer;
use crate::error::{ApiError, Code, ErrorBody, ItemError};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ingest_events))
}

/// The result of an ingestion: good events are kept even when others in the batch are refused.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IngestResponse {
    /// Events durably appended by this request.
    pub accepted: usize,
    /// Events skipped because their `message_id` was already in the log (a retry).
    pub duplicates: usize,
    /// Items refused, by position; empty when everything was accepted.
    pub errors: Vec<ItemErrorDto>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ItemErrorDto {
    pub index: usize,
    pub code: String,
    pub field: String,
    pub message: String,
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
}

/// Sends native events (SPEC §3). Acknowledged only once durable.
#[utoipa::path(post, path = "/api/v1/events", tag = "ingest",
    request_body(content = Object, description = "one event, or {\"batch\": [event, ...]}"),
    responses(
        (status = 200, description = "appended (see errors for refused items)", body = IngestResponse),
        (status = 400, description = "nothing acceptable in the request", body = ErrorBody),
        (status = 401, description = "missing or unknown key", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody)),
    security(("bearer" = [])))]
async fn ingest_events(
    State(state): State<AppState>,
    Writer(tenant): Writer,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestResponse>, ApiError> {
    let metrics = &state.engine.metrics;
    let body = body.map_err(|e| {
        let error = crate::error::body_rejection(e);
        metrics.reject(error.code().as_str());
        error
    })?;
    if body.len() > state.limits.max_native_body {
        metrics.reject(Code::PayloadTooLarge.as_str());
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!("body is {} bytes; the limit is {} (split the batch)", body.len(), state.limits.max_native_body),
        ));
    }
    let text = std::str::from_utf8(&body).map_err(|e| {
        metrics.reject(Code::InvalidEncoding.as_str());
        ApiError::new(Code::InvalidEncoding, format!("body is not UTF-8: {e}"))
    })?;
    let (events, errors) = parse_body(text, Millis::now(), state.engine.config().time_limits);
    for e in &errors {
        metrics.reject(&e.code);
    }
    if events.is_empty() && errors.is_empty() {
        metrics.reject(Code::EmptyBatch.as_str());
    }
    if events.is_empty() {
        let first = errors.first().map(|e| (Code::of_refusal(&e.code), e.message.clone(), e.field.clone()));
        let (code, message, field) =
            first.unwrap_or((Code::EmptyBatch, "the batch holds no events".into(), "batch".into()));
        let items = errors
            .into_iter()
            .map(|e| ItemError { index: e.index, code: e.code, field: e.field, message: e.message })
            .collect();
        return Err(ApiError::new(code, message).with_field(field).with_errors(items));
    }
    let outcomes = state.engine.ingest(tenant, "api", events).await?;
    let duplicates = outcomes.iter().filter(|o| **o == siyu_engine::Ingested::Duplicate).count();
    Ok(Json(IngestResponse { accepted: outcomes.len() - duplicates, duplicates, errors }))
}

/// Splits a body into valid events and per-item errors.
fn parse_body(text: &str, now: Millis, limits: siyu_model::event::TimeLimits) -> (Vec<Event>, Vec<ItemErrorDto>) {
    let item_error = |index: usize, e: siyu_model::EventError| ItemErrorDto {
        index,
        code: e.code.to_string(),
        field: e.field,
        message: e.message,
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') && trimmed.contains("\"batch\"") {
        if let Ok(batch) = serde_json::from_str::<BatchBody>(text) {
            let mut events = Vec::with_capacity(batch.batch.len());
            let mut errors = Vec::new();
            for (index, raw) in batch.batch.iter().enumerate() {
                match parse_native(raw.get(), now, limits) {
                    Ok(event) => events.push(event),
                    Err(e) => errors.push(item_error(index, e)),
                }
            }
            return (events, errors);
        }
    }
    match parse_native(text, now, limits) {
        Ok(event) => (vec![event], Vec::new()),
        Err(e) => (Vec::new(), vec![item_error(0, e)]),
    }
}
