//! The Segment-compatible tracking API (`/v1/identify|track|page|screen|group|alias|batch` and the
//! one-letter forms analytics.js uses), so existing Segment and RudderStack SDKs send to siyu
//! unchanged. The protocol mapping itself lives in `siyu-connect`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use siyu_connect::{Endpoint, Mapping, SegmentError};
use siyu_model::{Millis, TenantId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{authenticate, key_from_headers};
use crate::error::{ApiError, Code, ErrorBody, ItemError};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(segment_call))
}

/// Segment's answer shape (`success`), with siyu's counts and per-message errors.
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentResponse {
    pub success: bool,
    pub accepted: usize,
    pub duplicates: usize,
    pub errors: Vec<ItemError>,
}

/// A whole-request refusal; a too-large one (batch_too_large, message_too_large) is a 413 by its code.
fn api_error(e: SegmentError) -> ApiError {
    ApiError::new(Code::of_refusal(e.code), e.message).with_field(e.field)
}

/// One Segment call. `call` is identify, track, page, screen, group, alias, batch (or i, t, p,
/// s, g, a, b, import). The write key is the basic-auth user, or `writeKey` in the body.
#[utoipa::path(post, path = "/v1/{call}", tag = "segment",
    params(("call" = String, Path, description = "identify|track|page|screen|group|alias|batch or i|t|p|s|g|a|b")),
    request_body(content = Object, description = "a Segment spec message, or {\"batch\": [...]}; gzip accepted"),
    responses(
        (status = 200, body = SegmentResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, description = "message over 32 KB, batch over 500 KB or 2,500 messages", body = ErrorBody)))]
async fn segment_call(
    State(state): State<AppState>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SegmentResponse>, ApiError> {
    let metrics = state.engine.metrics.clone();
    let result = handle(&state, &call, &headers, body).await;
    // Refused batch items were counted one by one, and key refusals by `authenticate`.
    if let Err(e) = &result {
        let counted = !e.body.errors.is_empty() || matches!(e.code(), Code::MissingKey | Code::InvalidKey);
        if !counted {
            metrics.reject(e.code().as_str());
        }
    }
    result
}

async fn handle(
    state: &AppState,
    call: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SegmentResponse>, ApiError> {
    let endpoint = Endpoint::from_path(call)
        .ok_or_else(|| ApiError::new(Code::NoSuchRoute, format!("/v1/{call} is not a Segment call")))?;
    let body = body.map_err(crate::error::body_rejection)?;
    let limits = &state.limits.segment;
    if body.len() > limits.max_batch_bytes {
        let code = if matches!(endpoint, Endpoint::Batch) { Code::BatchTooLarge } else { Code::MessageTooLarge };
        return Err(ApiError::new(
            code,
            format!("the body is {} bytes, over the limit of {}", body.len(), limits.max_batch_bytes),
        ));
    }
    let key = key_from_headers(headers).or_else(|| siyu_connect::write_key_from_body(&body));
    let (tenant, _) = authenticate(state, key).await?;
    let mapping = tenant_mapping(state, tenant)?;
    let now = Millis::now();
    let time_limits = state.engine.config().time_limits;
    let (events, errors) = match endpoint {
        Endpoint::Call(kind) => {
            let event =
                siyu_connect::parse_single(kind, &body, now, &mapping, limits, time_limits).map_err(api_error)?;
            (vec![event], Vec::new())
        }
        Endpoint::Batch => {
            let parsed = siyu_connect::parse_batch(&body, now, &mapping, limits, time_limits).map_err(api_error)?;
            let errors: Vec<ItemError> = parsed
                .rejected
                .into_iter()
                .map(|(index, e)| ItemError { index, code: e.code.to_string(), field: e.field, message: e.message })
                .collect();
            for e in &errors {
                state.engine.metrics.reject(&e.code);
            }
            (parsed.events.into_iter().map(|(_, e)| e).collect(), errors)
        }
    };
    if events.is_empty() && !errors.is_empty() {
        let first = &errors[0];
        return Err(ApiError::new(Code::of_refusal(&first.code), first.message.clone())
            .with_field(first.field.clone())
            .with_errors(errors));
    }
    let outcomes = state.engine.ingest(tenant, "segment", events).await?;
    let duplicates = outcomes.iter().filter(|o| **o == siyu_engine::Ingested::Duplicate).count();
    Ok(Json(SegmentResponse { success: true, accepted: outcomes.len() - duplicates, duplicates, errors }))
}

/// The built-in mapping, built once: most tenants use it unchanged.
static DEFAULT_MAPPING: std::sync::LazyLock<Arc<Mapping>> = std::sync::LazyLock::new(|| Arc::new(Mapping::default()));

fn tenant_mapping(state: &AppState, tenant: TenantId) -> Result<Arc<Mapping>, ApiError> {
    let overrides = state.engine.event_mapping(tenant)?;
    Ok(if overrides.is_empty() { DEFAULT_MAPPING.clone() } else { Arc::new(Mapping::with_overrides(overrides)) })
}
