//! The generic signed webhook out: every message of a channel configured as "webhook" is POSTed
//! as JSON to the tenant's URL, so any system (a CRM, an SMS gateway, a bot) can deliver it. The
//! contract receivers implement:
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! Idempotency-Key: <key>
//! X-Siyu-Timestamp: <unix seconds>
//! X-Siyu-Signature: v1=<hex hmac-sha256(secret, "<timestamp>.<raw body>")>
//!
//! {"key": "...", "channel": "wecom", "account": "...", "recipient": {"kind": "phone", "value": "+86..."},
//!  "content": {"text": "...", "attachments": [...]}, "sent_at": "2026-11-03T08:00:00.000Z"}
//! ```
//!
//! - **Verify** with [`verify`]: the signature over the raw bytes, and a timestamp inside the replay
//!   window (default [`DEFAULT_REPLAY_WINDOW`], 300 s). The header may list several `v1=`
//!   signatures separated by commas (a secret being rotated); one match is enough.
//! - **Deduplicate by `Idempotency-Key`**: a message is sent again after a timeout, a 5xx or a
//!   restart, always with the same key (its body, `sent_at` and signature may differ). Receivers
//!   must apply a key once and answer 2xx to its repeats; that is why
//!   [`WebhookConnector::deduplicates`] is true.
//! - **Answers**: any 2xx is accepted (the body is ignored); 408, 429 and 5xx are retried later,
//!   honouring `Retry-After` in seconds; any other status is a permanent failure. Redirects are not
//!   followed.
//!
//! A batch is sent concurrently, at most [`WebhookConfig::max_concurrency`] requests at a time.
//! `StandInReceiver` (feature `stand-in`) is a receiver that follows this contract, for the tests
//! and the demo.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use siyu_model::reach::MessageContent;
use siyu_model::{Channel, Millis};

use crate::outbound::{Accepted, Connector, Outbound, SendError};

pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
pub const TIMESTAMP_HEADER: &str = "X-Siyu-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Siyu-Signature";
/// How far a timestamp may be from the receiver's clock, either way.
pub const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(300);

const CONNECTOR: &str = "webhook";

/// Where and how to POST.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: String,
    /// The whole-request timeout.
    pub timeout: Duration,
    /// Requests of one batch in flight at once.
    pub max_concurrency: usize,
}

impl WebhookConfig {
    /// A 10 s timeout and 8 requests at a time.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> WebhookConfig {
        WebhookConfig { url: url.into(), secret: secret.into(), timeout: Duration::from_secs(10), max_concurrency: 8 }
    }
}

// Secrets never reach a log line.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("max_concurrency", &self.max_concurrency)
            .finish()
    }
}

/// Why a webhook connector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("webhook url {0:?} is not an http(s) URL")]
    BadUrl(String),
    #[error("the webhook secret is empty")]
    EmptySecret,
    #[error("failed to build the HTTP client: {0}")]
    Http(String),
}

/// Why a receiver refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookVerifyError {
    #[error("the request has no X-Siyu-Timestamp header")]
    MissingTimestamp,
    #[error("X-Siyu-Timestamp {0:?} is not a number of seconds")]
    BadTimestamp(String),
    #[error("the request is {age_secs} s away from the receiver's clock, outside the replay window")]
    Stale { age_secs: i64 },
    #[error("the request has no X-Siyu-Signature header")]
    MissingSignature,
    #[error("X-Siyu-Signature does not match the body")]
    BadSignature,
}

impl WebhookVerifyError {
    pub fn code(&self) -> &'static str {
        match self {
            WebhookVerifyError::MissingTimestamp => "missing_timestamp",
            WebhookVerifyError::BadTimestamp(_) => "bad_timestamp",
            WebhookVerifyError::Stale { .. } => "stale_timestamp",
            WebhookVerifyError::MissingSignature => "missing_signature",
            WebhookVerifyError::BadSignature => "bad_signature",
        }
    }
}

/// The JSON body of one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookPayload {
    /// The idempotency key, equal to the `Idempotency-Key` header.
    pub key: String,
    pub channel: Channel,
    pub account: String,
    pub recipient: Recipient,
    pub content: MessageContent,
    /// When this attempt was made (RFC 3339).
    pub sent_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub kind: String,
    pub value: String,
}

impl WebhookPayload {
    pub fn new(message: &Outbound, sent_at: Millis) -> WebhookPayload {
        WebhookPayload {
            key: message.key.clone(),
            channel: message.channel,
            account: message.account.clone(),
            recipient: Recipient { kind: message.recipient.kind.to_string(), value: message.recipient.value.clone() },
            content: message.content.clone(),
            sent_at: sent_at.to_rfc3339(),
        }
    }
}

/// The `X-Siyu-Signature` value for `body` sent at `timestamp` (Unix seconds): `v1=<hex>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// Checks a delivery: the timestamp within `window` of `now` (Unix seconds) and one of the `v1=`
/// signatures matching, compared in constant time.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    window: Duration,
) -> Result<(), WebhookVerifyError> {
    let raw = timestamp.map(str::trim).filter(|t| !t.is_empty()).ok_or(WebhookVerifyError::MissingTimestamp)?;
    let ts: i64 = raw.parse().map_err(|_| WebhookVerifyError::BadTimestamp(raw.to_string()))?;
    let age = now.saturating_sub(ts);
    if age.unsigned_abs() > window.as_secs() {
        return Err(WebhookVerifyError::Stale { age_secs: age });
    }
    let header = signature.map(str::trim).filter(|s| !s.is_empty()).ok_or(WebhookVerifyError::MissingSignature)?;
    let matches = header
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h).ok())
        .any(|given| mac(secret, ts, body).verify_slice(&given).is_ok());
    if matches {
        Ok(())
    } else {
        Err(WebhookVerifyError::BadSignature)
    }
}

/// `Retry-After` in seconds, where the answer gives one.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// POSTs each message to one URL, signed.
pub struct WebhookConnector {
    config: WebhookConfig,
    http: reqwest::Client,
}

impl WebhookConnector {
    pub fn new(config: WebhookConfig) -> Result<WebhookConnector, WebhookConfigError> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(WebhookConfigError::BadUrl(config.url));
        }
        if config.secret.is_empty() {
            return Err(WebhookConfigError::EmptySecret);
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| WebhookConfigError::Http(e.to_string()))?;
        Ok(WebhookConnector { config, http })
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    async fn send_one(&self, message: &Outbound) -> Result<Accepted, SendError> {
        let payload = WebhookPayload::new(message, Millis::now());
        let body = serde_json::to_vec(&payload).map_err(|e| permanent("encode", e.to_string()))?;
        let timestamp = unix_now();
        let response = self
            .http
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY_HEADER, &message.key)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature(&self.config.secret, timestamp, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Accepted::Sent { remote_id: None });
        }
        let code = format!("http_{}", status.as_u16());
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Err(SendError {
                connector: CONNECTOR,
                code,
                message: format!("the receiver answered {status}"),
                retryable: true,
                retry_after: retry_after(response.headers()),
            });
        }
        Err(permanent(code, format!("the receiver refused the message with {status}")))
    }
}

#[async_trait]
impl Connector for WebhookConnector {
    fn name(&self) -> &'static str {
        CONNECTOR
    }

    async fn send(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        let limit = self.config.max_concurrency.max(1);
        // Futures are lazy: building them all first only fixes their order, `buffered` bounds how
        // many run at once.
        let attempts: Vec<_> = batch.iter().map(|m| self.send_one(m)).collect();
        let results: Vec<_> = stream::iter(attempts).buffered(limit).collect().await;
        for (message, result) in batch.iter().zip(&results) {
            if let Err(e) = result {
                tracing::warn!(key = %message.key, code = %e.code, retryable = e.retryable, "webhook send failed");
            }
        }
        results
    }

    /// Receivers deduplicate by `Idempotency-Key` (the contract above).
    fn deduplicates(&self) -> bool {
        true
    }
}

fn transport_error(e: &reqwest::Error) -> SendError {
    let (code, message) = if e.is_timeout() {
        ("timeout", "the receiver did not answer in time".to_string())
    } else {
        ("http_error", format!("failed to reach the receiver: {e}"))
    };
    SendError { connector: CONNECTOR, code: code.into(), message, retryable: true, retry_after: None }
}

fn permanent(code: impl Into<String>, message: impl Into<String>) -> SendError {
    SendError { connector: CONNECTOR, code: code.into(), message: message.into(), retryable: false, retry_after: None }
}

#[cfg(feature = "stand-in")]
pub use stand_in::{serve_receiver, Delivery, ReceiverFault, ReceiverState, ReceiverStats, StandInReceiver};

/// A receiver of signed webhooks that follows the contract: verifies, deduplicates by
/// `Idempotency-Key`, records, and fails on demand. `GET /__stand_in/received` shows
/// [`ReceiverStats`] and the deliveries as JSON.
#[cfg(feature = "stand-in")]
mod stand_in {
    use std::collections::{HashSet, VecDeque};
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use axum::extract::State;
    use axum::http::{HeaderMap, HeaderValue, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde::{Deserialize, Serialize};
    use serde_json::{json, Value};

    use super::{unix_now, verify, DEFAULT_REPLAY_WINDOW, IDEMPOTENCY_KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

    /// One message applied by the receiver.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Delivery {
        pub key: String,
        pub payload: Value,
    }

    /// A misbehaviour for one request.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    pub enum ReceiverFault {
        /// Answer with this status before looking at the request (nothing recorded).
        Status {
            status: u16,
            #[serde(default)]
            retry_after: Option<u64>,
        },
        /// Apply the request, then answer 200 with a body that is not JSON.
        GarbageOk,
    }

    /// Counters of what the receiver saw.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
    pub struct ReceiverStats {
        pub attempts: u64,
        pub delivered: u64,
        /// Valid requests whose key was already applied.
        pub duplicates: u64,
        /// Requests refused for their signature, timestamp or key.
        pub rejected: u64,
        /// Requests answered by an injected fault status.
        pub faulted: u64,
    }

    /// The receiver's shared state; clones share it.
    #[derive(Clone)]
    pub struct ReceiverState {
        inner: Arc<Mutex<Inner>>,
    }

    struct Inner {
        secret: String,
        window: Duration,
        keys: HashSet<String>,
        deliveries: Vec<Delivery>,
        faults: VecDeque<ReceiverFault>,
        stats: ReceiverStats,
    }

    impl ReceiverState {
        pub fn new(secret: impl Into<String>) -> ReceiverState {
            let inner = Inner {
                secret: secret.into(),
                window: DEFAULT_REPLAY_WINDOW,
                keys: HashSet::new(),
                deliveries: Vec::new(),
                faults: VecDeque::new(),
                stats: ReceiverStats::default(),
            };
            ReceiverState { inner: Arc::new(Mutex::new(inner)) }
        }

        /// Queues a fault for the next request.
        pub fn push_fault(&self, fault: ReceiverFault) {
            self.lock().faults.push_back(fault);
        }

        /// The next `n` requests are answered 503 (with `Retry-After` when given).
        pub fn fail_next(&self, n: usize, retry_after: Option<u64>) {
            for _ in 0..n {
                self.push_fault(ReceiverFault::Status { status: 503, retry_after });
            }
        }

        pub fn deliveries(&self) -> Vec<Delivery> {
            self.lock().deliveries.clone()
        }

        pub fn stats(&self) -> ReceiverStats {
            self.lock().stats
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
            self.inner.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    /// A receiver serving on 127.0.0.1 in a background task.
    pub struct StandInReceiver {
        addr: SocketAddr,
        state: ReceiverState,
    }

    impl StandInReceiver {
        /// Binds a free port on 127.0.0.1 and serves there.
        pub async fn start(secret: impl Into<String>) -> std::io::Result<StandInReceiver> {
            let state = ReceiverState::new(secret);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let serving = state.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_receiver(listener, serving).await {
                    tracing::warn!(error = %e, "the webhook stand-in receiver stopped");
                }
            });
            Ok(StandInReceiver { addr, state })
        }

        /// The URL to configure the connector with.
        pub fn url(&self) -> String {
            format!("http://{}/", self.addr)
        }

        pub fn state(&self) -> &ReceiverState {
            &self.state
        }
    }

    /// Serves the receiver on `listener` (for a separate process as well).
    pub async fn serve_receiver(listener: tokio::net::TcpListener, state: ReceiverState) -> std::io::Result<()> {
        let app =
            Router::new().route("/", post(receive)).route("/__stand_in/received", get(received)).with_state(state);
        axum::serve(listener, app).await
    }

    async fn received(State(state): State<ReceiverState>) -> Json<Value> {
        let inner = state.lock();
        Json(json!({ "stats": inner.stats, "deliveries": inner.deliveries }))
    }

    async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
        let mut inner = state.lock();
        inner.stats.attempts += 1;
        let fault = inner.faults.pop_front();
        if let Some(ReceiverFault::Status { status, retry_after }) = &fault {
            inner.stats.faulted += 1;
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut response = (status, "stand-in fault").into_response();
            if let Some(secs) = retry_after {
                response.headers_mut().insert("retry-after", HeaderValue::from(*secs));
            }
            return response;
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Err(e) =
            verify(&inner.secret, header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER), &body, unix_now(), inner.window)
        {
            inner.stats.rejected += 1;
            return (StatusCode::UNAUTHORIZED, e.code()).into_response();
        }
        let payload: Option<Value> = serde_json::from_slice(&body).ok();
        let key = header(IDEMPOTENCY_KEY_HEADER).unwrap_or("").to_string();
        let body_key = payload.as_ref().and_then(|p| p.get("key")).and_then(Value::as_str);
        let (Some(payload), false, Some(true)) = (payload.clone(), key.is_empty(), body_key.map(|k| k == key)) else {
            inner.stats.rejected += 1;
            return (StatusCode::BAD_REQUEST, "the Idempotency-Key header must equal the body's key").into_response();
        };
        if !inner.keys.insert(key.clone()) {
            inner.stats.duplicates += 1;
            return (StatusCode::OK, Json(json!({ "ok": true, "duplicate": true }))).into_response();
        }
        inner.stats.delivered += 1;
        inner.deliveries.push(Delivery { key, payload });
        if fault == Some(ReceiverFault::GarbageOk) {
            return (StatusCode::OK, "<<not json>>").into_response();
        }
        (StatusCode::OK, Json(json!({ "ok": true }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use siyu_model::{Identity, IdentityKind};

    use super::*;
    use crate::outbound::SendKind;

    const SECRET: &str = "whsec-test";

    fn message(key: &str) -> Outbound {
        Outbound {
            key: key.into(),
            channel: Channel::Wecom,
            account: "brand-main".into(),
            sender: None,
            recipient: Identity::new(IdentityKind::Phone, "13800138000").unwrap(),
            content: MessageContent { text: Some("双十一快乐".into()), attachments: vec![] },
            kind: SendKind::Direct,
        }
    }

    #[test]
    fn verify_accepts_a_good_signature() {
        let body = br#"{"key":"k"}"#;
        let sig = signature(SECRET, 1_700_000_000, body);
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        let ok = verify(SECRET, Some("1700000000"), Some(&sig), body, 1_700_000_100, DEFAULT_REPLAY_WINDOW);
        assert_eq!(ok, Ok(()));
        // One of several signatures (a rotation) is enough.
        let rotated = format!("v1={}, {sig}", "00".repeat(32));
        assert_eq!(
            verify(SECRET, Some("1700000000"), Some(&rotated), body, 1_700_000_000, DEFAULT_REPLAY_WINDOW),
            Ok(())
        );
    }

    #[test]
    fn verify_matches_an_independent_hmac() {
        // HMAC-SHA256(key = "key", "1.{}"), computed once with Python's hmac module.
        let expected = "v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224";
        assert_eq!(signature("key", 1, b"{}"), expected);
        assert_eq!(verify("key", Some("1"), Some(expected), b"{}", 1, DEFAULT_REPLAY_WINDOW), Ok(()));
    }

    #[test]
    fn verify_rejections() {
        let body = br#"{"key":"k"}"#;
        let ts = 1_700_000_000;
        let sig = signature(SECRET, ts, body);
        let window = DEFAULT_REPLAY_WINDOW;
        let stale = verify(SECRET, Some("1700000000"), Some(&sig), body, ts + 301, window);
        assert_eq!(stale, Err(WebhookVerifyError::Stale { age_secs: 301 }));
        let future = verify(SECRET, Some("1700000000"), Some(&sig), body, ts - 400, window);
        assert_eq!(future.unwrap_err().code(), "stale_timestamp");
        assert_eq!(
            verify("other", Some("1700000000"), Some(&sig), body, ts, window),
            Err(WebhookVerifyError::BadSignature)
        );
        assert_eq!(
            verify(SECRET, Some("1700000000"), Some(&sig), br#"{"key":"x"}"#, ts, window),
            Err(WebhookVerifyError::BadSignature)
        );
        // The timestamp is signed: moving it breaks the signature.
        assert_eq!(
            verify(SECRET, Some("1700000001"), Some(&sig), body, ts, window),
            Err(WebhookVerifyError::BadSignature)
        );
        assert_eq!(verify(SECRET, None, Some(&sig), body, ts, window), Err(WebhookVerifyError::MissingTimestamp));
        assert_eq!(verify(SECRET, Some("soon"), Some(&sig), body, ts, window).unwrap_err().code(), "bad_timestamp");
        assert_eq!(
            verify(SECRET, Some("1700000000"), None, body, ts, window),
            Err(WebhookVerifyError::MissingSignature)
        );
        let unversioned = sig.trim_start_matches("v1=");
        assert_eq!(
            verify(SECRET, Some("1700000000"), Some(unversioned), body, ts, window),
            Err(WebhookVerifyError::BadSignature)
        );
    }

    #[test]
    fn payload_shape() {
        let payload = WebhookPayload::new(&message("k-1"), Millis(1_700_000_000_000));
        let json = serde_json::to_value(&payload).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "key": "k-1", "channel": "wecom", "account": "brand-main",
                "recipient": {"kind": "phone", "value": "+8613800138000"},
                "content": {"text": "双十一快乐"}, "sent_at": "2023-11-14T22:13:20.000Z"
            })
        );
    }

    #[test]
    fn config_is_checked_and_secret_hidden() {
        assert!(matches!(
            WebhookConnector::new(WebhookConfig::new("ftp://x", "s")),
            Err(WebhookConfigError::BadUrl(_))
        ));
        assert!(matches!(
            WebhookConnector::new(WebhookConfig::new("http://x", "")),
            Err(WebhookConfigError::EmptySecret)
        ));
        assert!(!format!("{:?}", WebhookConfig::new("http://x", "hush")).contains("hush"));
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_is_a_retryable_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accept and hold connections without answering.
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let config = WebhookConfig {
            timeout: Duration::from_millis(200),
            ..WebhookConfig::new(format!("http://{addr}/"), SECRET)
        };
        let connector = WebhookConnector::new(config).unwrap();
        let err = connector.send(&[message("k")]).await.remove(0).unwrap_err();
        assert_eq!((err.code.as_str(), err.retryable), ("timeout", true));
        holder.abort();
    }

    #[tokio::test]
    async fn an_unreachable_receiver_is_retryable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let connector = WebhookConnector::new(WebhookConfig::new(format!("http://{addr}/"), SECRET)).unwrap();
        let err = connector.send(&[message("k")]).await.remove(0).unwrap_err();
        assert_eq!((err.code.as_str(), err.retryable), ("http_error", true));
    }

    #[cfg(feature = "stand-in")]
    mod against_the_receiver {
        use super::*;

        async fn setup() -> (StandInReceiver, WebhookConnector) {
            let receiver = StandInReceiver::start(SECRET).await.unwrap();
            let connector = WebhookConnector::new(WebhookConfig::new(receiver.url(), SECRET)).unwrap();
            (receiver, connector)
        }

        #[tokio::test]
        async fn the_same_key_twice_is_delivered_once() {
            let (receiver, connector) = setup().await;
            let first = connector.send(&[message("k-1")]).await;
            let again = connector.send(&[message("k-1"), message("k-2")]).await;
            assert_eq!(first[0], Ok(Accepted::Sent { remote_id: None }));
            assert!(again.iter().all(Result::is_ok));
            let deliveries = receiver.state().deliveries();
            let keys: Vec<_> = deliveries.iter().map(|d| d.key.as_str()).collect();
            assert_eq!(keys, ["k-1", "k-2"]);
            assert_eq!(deliveries[0].payload["recipient"]["value"], "+8613800138000");
            let stats = receiver.state().stats();
            assert_eq!((stats.attempts, stats.delivered, stats.duplicates, stats.rejected), (3, 2, 1, 0));
            assert!(connector.deduplicates());
        }

        #[tokio::test]
        async fn faults_map_to_outcomes() {
            let (receiver, connector) = setup().await;
            receiver.state().fail_next(1, Some(30));
            receiver.state().push_fault(ReceiverFault::Status { status: 400, retry_after: None });
            receiver.state().push_fault(ReceiverFault::Status { status: 429, retry_after: None });
            receiver.state().push_fault(ReceiverFault::GarbageOk);
            let mut results = Vec::new();
            for key in ["a", "b", "c", "d"] {
                results.push(connector.send(&[message(key)]).await.remove(0));
            }
            let unavailable = results[0].as_ref().unwrap_err();
            assert_eq!(
                (unavailable.code.as_str(), unavailable.retryable, unavailable.retry_after),
                ("http_503", true, Some(Duration::from_secs(30)))
            );
            let refused = results[1].as_ref().unwrap_err();
            assert_eq!((refused.code.as_str(), refused.retryable), ("http_400", false));
            let limited = results[2].as_ref().unwrap_err();
            assert_eq!((limited.code.as_str(), limited.retryable), ("http_429", true));
            assert_eq!(results[3], Ok(Accepted::Sent { remote_id: None }));
            // The retry of the 503 goes through with the same key.
            assert!(connector.send(&[message("a")]).await[0].is_ok());
            let keys: Vec<_> = receiver.state().deliveries().into_iter().map(|d| d.key).collect();
            assert_eq!(keys, ["d", "a"]);
        }

        #[tokio::test]
        async fn a_wrong_secret_is_refused_permanently() {
            let (receiver, _) = setup().await;
            let wrong = WebhookConnector::new(WebhookConfig::new(receiver.url(), "not-the-secret")).unwrap();
            let err = wrong.send(&[message("k")]).await.remove(0).unwrap_err();
            assert_eq!((err.code.as_str(), err.retryable), ("http_401", false));
            assert_eq!(receiver.state().stats().rejected, 1);
            assert!(receiver.state().deliveries().is_empty());
        }

        #[tokio::test]
        async fn a_batch_goes_out_concurrently_and_in_order() {
            let receiver = StandInReceiver::start(SECRET).await.unwrap();
            let config = WebhookConfig { max_concurrency: 3, ..WebhookConfig::new(receiver.url(), SECRET) };
            let connector = WebhookConnector::new(config).unwrap();
            receiver.state().fail_next(1, None);
            let batch: Vec<_> = (0..12).map(|i| message(&format!("k-{i:02}"))).collect();
            let results = connector.send(&batch).await;
            assert_eq!(results.len(), 12);
            assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
            let mut delivered: Vec<_> = receiver.state().deliveries().into_iter().map(|d| d.key).collect();
            delivered.sort();
            let expected: Vec<_> =
                batch.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(m, _)| m.key.clone()).collect();
            assert_eq!(delivered, expected);
        }
    }
}
