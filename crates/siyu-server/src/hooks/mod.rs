//! `/hooks`: the channels' own callbacks in — WeCom's encrypted customer-contact callbacks and
//! Douyin's open-platform webhooks — so what happens on a channel lands in the tenant's event log
//! like any other fact. The protocols (signatures, AES, XML, the mappings) are siyu-connect's;
//! here is only: which tenant and send account a URL names, one call, one answer, one count.
//!
//! These routes are deliberately **not in `/openapi.json`**: they are not siyu's API but the
//! platforms' formats (XML, Douyin's JSON), called by WeCom and Douyin rather than by clients
//! generated from the document, and they are authenticated by the signature of the send account's
//! callback credentials, never by a tenant key. The API suite's per-route isolation test is about
//! keys (every documented route, tenant B's key, tenant A's data); the hooks' isolation — tenant
//! A's callback credentials never ingest into tenant B — is tested in `tests/hooks.rs`.
//! docs/hooks.md is their documentation.

mod douyin;
mod wecom;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use siyu_engine::metrics::Metrics;
use siyu_engine::{EngineError, Ingested};
use siyu_model::reach::{ConnectorKind, SendAccount};
use siyu_model::{Event, TenantId};

use crate::error::{ApiError, Code};
use crate::AppState;

/// The largest hook body. Callbacks are a few KB; anything near this is not WeCom or Douyin.
pub const MAX_HOOK_BODY: usize = 256 * 1024;

/// The hook routes (merged into [`crate::app`] beside, not inside, the OpenAPI router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/hooks/wecom/{tenant_id}/{account}", get(wecom::verify_url).post(wecom::callback))
        .route("/hooks/douyin/{tenant_id}/{account}", post(douyin::webhook))
        .layer(DefaultBodyLimit::max(MAX_HOOK_BODY))
}

/// `siyu_hook_requests_total{hook, code}`: every hook request by its outcome (`verified`,
/// `ingested`, `duplicate`, `ignored`) or by the error code it was refused with.
pub struct HookMetrics {
    pub requests: Family<HookLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabel {
    pub hook: &'static str,
    pub code: &'static str,
}

impl HookMetrics {
    /// Creates the hook metrics and registers them with the engine's (once per engine).
    pub fn register(metrics: &Metrics) -> HookMetrics {
        let requests = Family::<HookLabel, Counter>::default();
        metrics.register(
            "hook_requests",
            "Channel callback requests by hook and outcome or error code",
            requests.clone(),
        );
        HookMetrics { requests }
    }
}

/// Which channel's callback a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Wecom,
    Douyin,
}

impl Hook {
    fn as_str(self) -> &'static str {
        match self {
            Hook::Wecom => "wecom",
            Hook::Douyin => "douyin",
        }
    }

    /// The connector a send account must have to receive this hook.
    fn connector(self) -> ConnectorKind {
        match self {
            Hook::Wecom => ConnectorKind::Wecom,
            Hook::Douyin => ConnectorKind::Douyin,
        }
    }

    /// The `path` label of `siyu_events_ingested_total`.
    fn ingest_path(self) -> &'static str {
        match self {
            Hook::Wecom => "hooks/wecom",
            Hook::Douyin => "hooks/douyin",
        }
    }
}

/// What a request that was not refused came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A URL check (WeCom's echostr, Douyin's challenge) answered.
    Verified,
    /// At least one event appended.
    Ingested,
    /// Every event was in the log already: a platform retry.
    Duplicate,
    /// Verified, but nothing siyu records (a tag change, an unmapped Douyin event).
    Ignored,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::Ingested => "ingested",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
        }
    }
}

/// The answer to a request that was not refused, with its outcome for the metrics.
struct Answer {
    outcome: Outcome,
    response: Response,
}

impl Answer {
    fn text(outcome: Outcome, body: String) -> Answer {
        let response = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
        Answer { outcome, response }
    }

    fn json(outcome: Outcome, body: String) -> Answer {
        let response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        Answer { outcome, response }
    }
}

/// Events appended and skipped as retries by one request.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    accepted: usize,
    duplicates: usize,
}

impl Counts {
    fn outcome(self) -> Outcome {
        match self {
            Counts { accepted: 0, duplicates: 0 } => Outcome::Ignored,
            Counts { accepted: 0, .. } => Outcome::Duplicate,
            _ => Outcome::Ingested,
        }
    }
}

/// Counts a request by its outcome or refusal (refusals in `siyu_events_rejected_total` too, as
/// on every ingestion path) and makes it the response.
fn finish(state: &AppState, hook: Hook, result: Result<Answer, ApiError>) -> Response {
    let (code, response) = match result {
        Ok(answer) => (answer.outcome.as_str(), answer.response),
        Err(error) => {
            let code = error.code().as_str();
            state.engine.metrics.reject(code);
            (code, error.into_response())
        }
    };
    state.hooks.requests.get_or_create(&HookLabel { hook: hook.as_str(), code }).inc();
    response
}

/// The tenant and send account a hook URL names: the account must exist and send through this
/// hook's connector. Anything else is `no_such_hook` (the reason is logged and in the message,
/// never a credential).
fn account(
    state: &AppState,
    hook: Hook,
    path: Result<axum::extract::Path<(String, String)>, PathRejection>,
) -> Result<(TenantId, String, SendAccount), ApiError> {
    let axum::extract::Path((tenant_text, name)) =
        path.map_err(|e| ApiError::new(Code::NoSuchHook, format!("not a hook URL: {}", e.body_text())))?;
    let not_found = |why: String| {
        tracing::info!(hook = hook.as_str(), tenant = %tenant_text, account = %name, why, "hook for nothing configured");
        ApiError::new(Code::NoSuchHook, format!("no {} callback is configured at this URL: {why}", hook.as_str()))
    };
    let tenant = tenant_text
        .parse::<i64>()
        .map(TenantId)
        .map_err(|_| not_found(format!("{tenant_text:?} is not a tenant id")))?;
    let account = match state.engine.send_account(tenant, &name) {
        Ok(Some(account)) => account,
        Ok(None) => return Err(not_found(format!("tenant {tenant} has no send account {name:?}"))),
        Err(EngineError::NoSuchTenant(_)) => return Err(not_found(format!("there is no tenant {tenant}"))),
        Err(e) => return Err(e.into()),
    };
    if account.connector != hook.connector() {
        return Err(not_found(format!("send account {name:?} does not use the {} connector", hook.as_str())));
    }
    Ok((tenant, name, account))
}

/// The first of `keys` the account's credentials hold (non-empty), or `hook_not_configured`.
fn credential<'a>(account: &'a SendAccount, name: &str, keys: &[&str]) -> Result<&'a str, ApiError> {
    keys.iter().find_map(|key| account.credentials.get(*key).map(|v| v.trim()).filter(|v| !v.is_empty())).ok_or_else(
        || {
            let wanted = keys.iter().map(|k| format!("credentials.{k}")).collect::<Vec<_>>().join(" or ");
            tracing::warn!(account = %name, wanted, "a hook's send account lacks its callback credentials");
            ApiError::new(Code::HookNotConfigured, format!("send account {name:?} has no {wanted}"))
                .with_field(format!("send_accounts.{name}.credentials"))
        },
    )
}

/// The request body, or why it could not be read.
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(Code::PayloadTooLarge, format!("a hook body is at most {MAX_HOOK_BODY} bytes"))
        } else {
            ApiError::new(Code::InvalidBody, e.body_text())
        }
    })
}

fn query_rejection(e: QueryRejection) -> ApiError {
    ApiError::new(Code::InvalidQuery, e.body_text())
}

/// Appends the events (acknowledged once durable, like every ingestion path).
async fn ingest(state: &AppState, hook: Hook, tenant: TenantId, events: Vec<Event>) -> Result<Counts, ApiError> {
    if events.is_empty() {
        return Ok(Counts::default());
    }
    let outcomes = state.engine.ingest(tenant, hook.ingest_path(), events).await.map_err(|e| match e {
        // Deleted between the account lookup and the append.
        EngineError::NoSuchTenant(_) => ApiError::new(Code::NoSuchHook, format!("there is no tenant {tenant}")),
        e => e.into(),
    })?;
    let duplicates = outcomes.iter().filter(|o| **o == Ingested::Duplicate).count();
    Ok(Counts { accepted: outcomes.len() - duplicates, duplicates })
}
