//! siyu's HTTP face: the native API under `/api/v1`, the Segment-compatible tracking API under
//! `/v1`, the channels' callbacks under `/hooks`, and `/healthz`, `/metrics`, `/openapi.json`.
//! The only crate that knows HTTP.

pub mod api;
pub mod auth;
pub mod error;
pub mod hooks;
pub mod json;
pub mod metrics;
pub mod ops;
pub mod segment;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use siyu_engine::metrics::PathLabel;
use siyu_engine::Engine;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// What every handler can reach. Make one per engine ([`AppState::new`] registers the HTTP
/// and hook metrics with it).
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub limits: Limits,
    pub http: Arc<metrics::HttpMetrics>,
    pub hooks: Arc<hooks::HookMetrics>,
}

impl AppState {
    pub fn new(engine: Arc<Engine>, limits: Limits) -> AppState {
        let http = Arc::new(metrics::HttpMetrics::register(&engine.metrics));
        let hooks = Arc::new(hooks::HookMetrics::register(&engine.metrics));
        AppState { engine, limits, http, hooks }
    }
}

/// Request size limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest native `/api/v1/events` body, after decompression.
    pub max_native_body: usize,
    pub segment: siyu_connect::SegmentLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_native_body: 8 * 1024 * 1024, segment: siyu_connect::SegmentLimits::default() }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "siyu",
        description = "私域 — the private-domain operations platform: native and Segment-compatible API"
    ),
    components(schemas(error::ErrorBody, error::ItemError))
)]
struct ApiDoc;

/// The whole application router.
pub fn app(state: AppState) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api::routes())
        .merge(segment::routes())
        .merge(ops::routes())
        .split_for_parts();
    let openapi = Arc::new(openapi);
    router
        .route("/openapi.json", axum::routing::get(move || ops::openapi_json(openapi.clone())))
        // Outside the OpenAPI document: signed by the platforms, not keyed (see hooks/mod.rs).
        .merge(hooks::routes())
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), record_metrics))
        // The limit applies to the body as handlers read it, i.e. after gzip decompression, so a
        // compressed bomb stops at the limit too.
        .layer(axum::extract::DefaultBodyLimit::max(state.limits.max_native_body))
        // Segment SDKs and others may gzip request bodies.
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .with_state(state)
}

/// Serves the app on `listener` until `shutdown` completes. Every connection gets TCP_NODELAY: a
/// response is one small write, and Nagle's algorithm would hold it back waiting for an ACK.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "failed to set TCP_NODELAY");
        }
    });
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await
}

/// Counts requests and their latency per route, and every 4xx by error code.
async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let http = &state.http;
    http.seconds.get_or_create(&PathLabel { path: route.clone() }).observe(started.elapsed().as_secs_f64());
    http.requests.get_or_create(&metrics::RouteLabel { route, status: response.status().as_u16() }).inc();
    response
}
