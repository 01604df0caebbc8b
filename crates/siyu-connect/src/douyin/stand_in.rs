//! A local stand-in for the Douyin open platform, so the client, the dispatcher and the demo run
//! end to end without Douyin: the client-token endpoint and the proactive-message endpoint, with
//! the JSON shapes documented in [`super::client`], faults on demand, and a record of what it was
//! sent. In-process ([`spawn`]) or in a separate process ([`serve`] on any listener).
//!
//! Debug routes (not Douyin's):
//! - `GET /__stand_in/received` — [`Received`] as JSON;
//! - `POST /__stand_in/faults` — `{"endpoint": "send" | "token", "fault": <Fault>}` queues a fault
//!   for the next call of that endpoint, e.g. `{"endpoint":"send","fault":{"kind":"status","status":503}}`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::client::{CLIENT_TOKEN_PATH, SEND_PATH};

/// What the stand-in accepts and how long its tokens live.
#[derive(Debug, Clone)]
pub struct StandInConfig {
    pub client_key: String,
    pub client_secret: String,
    /// `expires_in` of the tokens it issues, in seconds (Douyin: 7200).
    pub token_expires_in: u64,
}

impl Default for StandInConfig {
    fn default() -> Self {
        StandInConfig {
            client_key: "stand-in-key".into(),
            client_secret: "stand-in-secret".into(),
            token_expires_in: 7200,
        }
    }
}

/// Which endpoint a fault is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Token,
    Send,
}

/// A misbehaviour for one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this HTTP status (and `Retry-After` seconds when given).
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Answer 200 with this Douyin error.
    ErrNo { err_no: i64, err_msg: String },
    /// End every token issued so far, then handle the call normally.
    ExpireTokens,
}

/// One accepted message, as the stand-in received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedSend {
    pub msg_id: String,
    /// The `open_id` query: the account it goes out from.
    pub operator_open_id: String,
    pub to_user_id: String,
    pub content: Value,
}

/// Everything the stand-in saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Received {
    /// Token requests answered with a token.
    pub token_requests: u64,
    pub sends: Vec<ReceivedSend>,
    /// Send calls refused for their token or parameters.
    pub rejected: u64,
}

/// The stand-in's shared state; clones share it.
#[derive(Clone)]
pub struct StandInState {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    config: StandInConfig,
    tokens: Vec<IssuedToken>,
    token_faults: VecDeque<Fault>,
    send_faults: VecDeque<Fault>,
    received: Received,
}

struct IssuedToken {
    value: String,
    expires_at: Instant,
    revoked: bool,
}

impl StandInState {
    pub fn new(config: StandInConfig) -> StandInState {
        let inner = Inner {
            config,
            tokens: Vec::new(),
            token_faults: VecDeque::new(),
            send_faults: VecDeque::new(),
            received: Received { token_requests: 0, sends: Vec::new(), rejected: 0 },
        };
        StandInState { inner: Arc::new(Mutex::new(inner)) }
    }

    pub fn config(&self) -> StandInConfig {
        self.lock().config.clone()
    }

    /// Queues a fault for the next call of `endpoint`.
    pub fn push_fault(&self, endpoint: Endpoint, fault: Fault) {
        let mut inner = self.lock();
        match endpoint {
            Endpoint::Token => inner.token_faults.push_back(fault),
            Endpoint::Send => inner.send_faults.push_back(fault),
        }
    }

    pub fn received(&self) -> Received {
        self.lock().received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking test thread must not hide the record from the next assertion.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The routes: Douyin's two endpoints and the debug ones.
pub fn router(state: StandInState) -> Router {
    Router::new()
        .route(CLIENT_TOKEN_PATH, post(client_token))
        .route(SEND_PATH, post(send_msg))
        .route("/__stand_in/received", get(received))
        .route("/__stand_in/faults", post(add_fault))
        .with_state(state)
}

/// Serves the stand-in on `listener` until the task is dropped or the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, state: StandInState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// Binds 127.0.0.1 on a free port and serves there in a background task.
pub async fn spawn(state: StandInState) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve(listener, state).await {
            tracing::warn!(error = %e, "the Douyin stand-in stopped");
        }
    });
    Ok(addr)
}

#[derive(Deserialize)]
struct TokenRequest {
    #[serde(default)]
    client_key: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    grant_type: String,
}

async fn client_token(State(state): State<StandInState>, body: axum::body::Bytes) -> Response {
    let mut inner = state.lock();
    if let Some(fault) = inner.token_faults.pop_front() {
        if let Some(response) = fault_response(&fault, &mut inner) {
            return response;
        }
    }
    let Ok(request) = serde_json::from_slice::<TokenRequest>(&body) else {
        return douyin_token_error(10002, "参数错误");
    };
    if request.grant_type != "client_credential" {
        return douyin_token_error(10002, "参数错误");
    }
    if request.client_key != inner.config.client_key || request.client_secret != inner.config.client_secret {
        return douyin_token_error(10013, "client_key 或者 client_secret 报错");
    }
    inner.received.token_requests += 1;
    let value = format!("clt.stand-in-{}", inner.received.token_requests);
    let expires_in = inner.config.token_expires_in;
    inner.tokens.push(IssuedToken {
        value: value.clone(),
        expires_at: Instant::now() + Duration::from_secs(expires_in),
        revoked: false,
    });
    Json(json!({
        "data": { "access_token": value, "description": "", "error_code": 0, "expires_in": expires_in },
        "message": "success"
    }))
    .into_response()
}

#[derive(Deserialize)]
struct SendQuery {
    #[serde(default)]
    open_id: String,
}

async fn send_msg(
    State(state): State<StandInState>,
    Query(query): Query<SendQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut inner = state.lock();
    if let Some(fault) = inner.send_faults.pop_front() {
        if let Some(response) = fault_response(&fault, &mut inner) {
            return response;
        }
    }
    let token = headers.get("access-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    let now = Instant::now();
    let valid = inner.tokens.iter().any(|t| t.value == token && !t.revoked && now < t.expires_at);
    if !valid {
        inner.received.rejected += 1;
        return douyin_error(28_001_008, "access_token过期,请刷新或重新授权");
    }
    let request = serde_json::from_slice::<Value>(&body).ok();
    let to_user_id = request.as_ref().and_then(|r| r.get("to_user_id")).and_then(Value::as_str).unwrap_or("");
    let content = request.as_ref().and_then(|r| r.get("content")).cloned().unwrap_or(Value::Null);
    if query.open_id.is_empty() || to_user_id.is_empty() || !valid_content(&content) {
        inner.received.rejected += 1;
        return douyin_error(28_001_007, "参数不合法");
    }
    let msg_id = format!("stand-in-msg-{}", inner.received.sends.len() + 1);
    inner.received.sends.push(ReceivedSend {
        msg_id: msg_id.clone(),
        operator_open_id: query.open_id,
        to_user_id: to_user_id.to_string(),
        content,
    });
    Json(json!({ "err_no": 0, "err_msg": "", "log_id": format!("log-{msg_id}"), "data": { "msg_id": msg_id } }))
        .into_response()
}

async fn received(State(state): State<StandInState>) -> Json<Received> {
    Json(state.received())
}

#[derive(Deserialize)]
struct FaultRequest {
    endpoint: Endpoint,
    fault: Fault,
}

async fn add_fault(State(state): State<StandInState>, Json(request): Json<FaultRequest>) -> StatusCode {
    state.push_fault(request.endpoint, request.fault);
    StatusCode::NO_CONTENT
}

/// The answer a fault calls for, or `None` when the call goes on normally after it.
fn fault_response(fault: &Fault, inner: &mut Inner) -> Option<Response> {
    match fault {
        Fault::Status { status, retry_after } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut response = (status, "stand-in fault").into_response();
            if let Some(secs) = retry_after {
                response.headers_mut().insert("retry-after", HeaderValue::from(*secs));
            }
            Some(response)
        }
        Fault::Garbage => Some((StatusCode::OK, "<html>gateway says hello</html>").into_response()),
        Fault::ErrNo { err_no, err_msg } => Some(douyin_error(*err_no, err_msg)),
        Fault::ExpireTokens => {
            inner.tokens.iter_mut().for_each(|t| t.revoked = true);
            None
        }
    }
}

fn valid_content(content: &Value) -> bool {
    match content.get("msg_type").and_then(Value::as_i64) {
        Some(1) => content.pointer("/text/text").and_then(Value::as_str).is_some_and(|t| !t.is_empty()),
        Some(2) => content.pointer("/image/media_id").and_then(Value::as_str).is_some_and(|t| !t.is_empty()),
        _ => false,
    }
}

fn douyin_error(err_no: i64, err_msg: &str) -> Response {
    Json(json!({ "err_no": err_no, "err_msg": err_msg, "log_id": "stand-in-log", "data": {} })).into_response()
}

fn douyin_token_error(error_code: i64, description: &str) -> Response {
    Json(json!({
        "data": { "captcha": "", "desc_url": "", "description": description, "error_code": error_code },
        "message": "error"
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn debug_routes_work_over_http() {
        let state = StandInState::new(StandInConfig::default());
        let addr = spawn(state.clone()).await.unwrap();
        let http = reqwest::Client::new();
        let status = http
            .post(format!("http://{addr}/__stand_in/faults"))
            .json(&json!({"endpoint": "send", "fault": {"kind": "status", "status": 503}}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204);
        let token: Value = http
            .post(format!("http://{addr}{CLIENT_TOKEN_PATH}"))
            .json(&json!({"client_key": "stand-in-key", "client_secret": "stand-in-secret", "grant_type": "client_credential"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(token["data"]["expires_in"], 7200);
        let fault = http.post(format!("http://{addr}{SEND_PATH}?open_id=op")).send().await.unwrap();
        assert_eq!(fault.status(), 503);
        let received: Received =
            http.get(format!("http://{addr}/__stand_in/received")).send().await.unwrap().json().await.unwrap();
        assert_eq!(received, Received { token_requests: 1, sends: vec![], rejected: 0 });
    }
}
