//! The Douyin open-platform client (app token, proactive private messages) and
//! [`DouyinConnector`], the [`Connector`] the outbox dispatcher sends Douyin messages through.
//!
//! What Douyin documents, and the assumptions where it does not:
//!
//! - **Token**: `POST /oauth/client_token/` with JSON `{client_key, client_secret,
//!   grant_type: "client_credential"}` answers `{"data": {"access_token": "clt.…", "expires_in":
//!   7200, "error_code": 0, "description": ""}, "message": "success"}`
//!   (<https://developer.open-douyin.com/docs/resource/zh-CN/mini-app/develop/server/interface-request-credential/non-user-authorization/get-client_token>).
//!   A new token ends the previous one after 5 minutes, so it is fetched once, cached, shared by
//!   all tasks and refreshed [`DouyinConfig::refresh_margin`] before it expires; a send answered
//!   "token expired/invalid" drops the cache and is tried once more with a fresh token.
//! - **Send**: the mini-app "发送主动私信" API, `POST /im/authorize/send/msg/?open_id=<operator>`
//!   with header `access-token: <client token>` and body `{"to_user_id": "<user open id>",
//!   "content": {"msg_type": 1, "text": {"text": "…"}}}` (`msg_type` 2 with `image.media_id` for an
//!   image), answering `{"err_no": 0, "err_msg": "", "log_id": "…", "data": {"msg_id": "…"}}`
//!   (page: <https://developer.open-douyin.com/docs/resource/zh-CN/mini-app/develop/server/instant-message/private-message/authorize_send_msg>).
//!   *Assumption*: that page could not be read in full here; the path, the `open_id` query and the
//!   body and answer shapes are taken from the public SDKs that cite it and agree with the message
//!   `content` of `/im/send/msg/`. The operator is the Douyin account (品牌号 / 员工号) the
//!   message goes out from: [`Outbound::sender`] when set, else [`DouyinConfig::operators`] by
//!   [`Outbound::account`].
//! - **Errors** (<https://developer.open-douyin.com/docs/resource/zh-cn/dop/develop/openapi/status-code>):
//!   the code is read from `err_no`, `error_code`, `data.error_code` or `extra.error_code`,
//!   whichever is non-zero. Retryable: HTTP 429 and 5xx, timeouts and connection errors, -1 (系统
//!   错误), 2100004 / 28001005 (系统繁忙), 28001006 (网络调用错误), 28001052 (风险,稍后再试) and
//!   28003018 (请求频率过高); an expired token is retried once at once and is retryable after.
//!   Everything else is permanent (quota exhausted, no permission, bad parameters, …): siyu's
//!   guardrails, not this client, keep within the authorisation and the daily quota.
//! - **Duplicates**: the send API takes no idempotency key and Douyin documents no way to list
//!   the messages an app sent, so [`Connector::deduplicates`] is false and
//!   [`Connector::find_accepted`] keeps the trait's `cannot_reconcile` answer: the dispatcher
//!   treats an unknown outcome conservatively. A 2xx answer that is not JSON is reported as the
//!   permanent error `bad_response` for the same reason: the message may have gone out.
//!
//! Only [`SendKind::Direct`] messages of one text or one uploaded image are sent; mass sends,
//! welcome messages and other attachments are refused as permanent `unsupported` errors.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use siyu_model::reach::{Attachment, MessageContent};
use siyu_model::{Channel, IdentityKind};

use crate::outbound::{Accepted, Connector, Outbound, SendError, SendKind};
use crate::webhook::retry_after;

/// The production API host.
pub const DEFAULT_BASE_URL: &str = "https://open.douyin.com";
/// The token endpoint, relative to the base URL.
pub const CLIENT_TOKEN_PATH: &str = "/oauth/client_token/";
/// The proactive private-message endpoint, relative to the base URL.
pub const SEND_PATH: &str = "/im/authorize/send/msg/";

const CONNECTOR: &str = "douyin";
/// Codes after which the same request can succeed later.
const RETRYABLE_CODES: [i64; 7] = [-1, 2_100_004, 28_001_005, 28_001_006, 28_001_052, 28_003_018, 10_020];
/// Codes meaning the token is no longer good.
const TOKEN_CODES: [i64; 5] = [28_001_003, 28_001_008, 2_190_002, 2_190_008, 40_004];

/// How to reach Douyin as one app.
#[derive(Clone)]
pub struct DouyinConfig {
    pub base_url: String,
    pub client_key: String,
    pub client_secret: String,
    /// siyu channel account (矩阵号) → open id of the Douyin account it sends as.
    pub operators: HashMap<String, String>,
    /// The whole-request timeout of each API call.
    pub timeout: Duration,
    /// How long before its expiry a token is replaced.
    pub refresh_margin: Duration,
}

impl DouyinConfig {
    /// The production host, a 10 s timeout and a 5 minute refresh margin.
    pub fn new(client_key: impl Into<String>, client_secret: impl Into<String>) -> DouyinConfig {
        DouyinConfig {
            base_url: DEFAULT_BASE_URL.to_string(),
            client_key: client_key.into(),
            client_secret: client_secret.into(),
            operators: HashMap::new(),
            timeout: Duration::from_secs(10),
            refresh_margin: Duration::from_secs(300),
        }
    }

    pub fn with_base_url(mut self, base_url: impl Into<String>) -> DouyinConfig {
        self.base_url = base_url.into();
        self
    }

    pub fn with_operator(mut self, account: impl Into<String>, open_id: impl Into<String>) -> DouyinConfig {
        self.operators.insert(account.into(), open_id.into());
        self
    }
}

// Secrets never reach a log line.
impl std::fmt::Debug for DouyinConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DouyinConfig")
            .field("base_url", &self.base_url)
            .field("client_key", &self.client_key)
            .field("client_secret", &"<redacted>")
            .field("operators", &self.operators)
            .field("timeout", &self.timeout)
            .field("refresh_margin", &self.refresh_margin)
            .finish()
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DouyinClientError {
    #[error("failed to build the HTTP client: {0}")]
    Http(String),
}

/// One message's payload in Douyin's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DouyinContent {
    Text(String),
    /// An image uploaded to Douyin beforehand (its `media_id` / image id).
    Image {
        media_id: String,
    },
}

impl DouyinContent {
    /// The one text, or the one uploaded image, of a rendered message.
    pub fn from_message(content: &MessageContent) -> Result<DouyinContent, SendError> {
        let text = content.text.as_deref().filter(|t| !t.trim().is_empty());
        match (text, content.attachments.as_slice()) {
            (Some(text), []) => Ok(DouyinContent::Text(text.to_string())),
            (None, [Attachment::Image { media_id: Some(id), .. }]) if !id.is_empty() => {
                Ok(DouyinContent::Image { media_id: id.clone() })
            }
            (None, []) => Err(permanent("empty_content", "the message has neither text nor an attachment")),
            (None, [Attachment::Image { .. }]) => {
                Err(permanent("unsupported", "Douyin sends only images uploaded beforehand (media_id), not image URLs"))
            }
            (None, [other]) => Err(permanent(
                "unsupported",
                format!("Douyin private messages cannot carry a {} attachment", other.kind()),
            )),
            _ => Err(permanent("unsupported", "a Douyin private message is one text or one image; split the content")),
        }
    }

    /// The `content` object of the send API.
    pub fn to_json(&self) -> Value {
        match self {
            DouyinContent::Text(text) => json!({ "msg_type": 1, "text": { "text": text } }),
            DouyinContent::Image { media_id } => json!({ "msg_type": 2, "image": { "media_id": media_id } }),
        }
    }
}

/// The Douyin API client. Cheap to share: one HTTP pool, one cached token.
pub struct DouyinClient {
    http: reqwest::Client,
    config: DouyinConfig,
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

struct CachedToken {
    value: String,
    refresh_at: Instant,
}

impl DouyinClient {
    pub fn new(config: DouyinConfig) -> Result<DouyinClient, DouyinClientError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| DouyinClientError::Http(e.to_string()))?;
        Ok(DouyinClient { http, config, token: tokio::sync::Mutex::new(None) })
    }

    pub fn config(&self) -> &DouyinConfig {
        &self.config
    }

    /// The app's client token, from the cache while it is fresh. Concurrent callers wait for one
    /// fetch rather than each ending the others' token.
    pub async fn access_token(&self) -> Result<String, SendError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(token.value.clone());
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    /// Forgets the cached token (Douyin said it is no longer valid).
    pub async fn invalidate_token(&self) {
        *self.token.lock().await = None;
    }

    /// Sends one proactive private message from `operator_open_id` to `to_open_id`; returns
    /// Douyin's `msg_id` when it gives one.
    pub async fn send_message(
        &self,
        operator_open_id: &str,
        to_open_id: &str,
        content: &DouyinContent,
    ) -> Result<Option<String>, SendError> {
        match self.send_once(operator_open_id, to_open_id, content).await {
            Err(Failure::TokenRejected(_)) => {
                self.invalidate_token().await;
                self.send_once(operator_open_id, to_open_id, content).await.map_err(Failure::into_send_error)
            }
            other => other.map_err(Failure::into_send_error),
        }
    }

    async fn send_once(
        &self,
        operator_open_id: &str,
        to_open_id: &str,
        content: &DouyinContent,
    ) -> Result<Option<String>, Failure> {
        let token = self.access_token().await.map_err(Failure::Other)?;
        let url = format!("{}{SEND_PATH}", self.config.base_url.trim_end_matches('/'));
        let body = json!({ "to_user_id": to_open_id, "content": content.to_json() });
        let response = self
            .http
            .post(url)
            .query(&[("open_id", operator_open_id)])
            .header("access-token", token)
            .json(&body)
            .send()
            .await
            .map_err(|e| Failure::Other(transport_error(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| Failure::Other(transport_error(&e)))?;
        let answer = read_answer(status, &headers, &bytes, Ambiguity::MayHaveTakenEffect)?;
        Ok(answer.pointer("/data/msg_id").or_else(|| answer.get("msg_id")).and_then(scalar).filter(|id| !id.is_empty()))
    }

    async fn fetch_token(&self) -> Result<CachedToken, SendError> {
        let url = format!("{}{CLIENT_TOKEN_PATH}", self.config.base_url.trim_end_matches('/'));
        let body = json!({
            "client_key": self.config.client_key,
            "client_secret": self.config.client_secret,
            "grant_type": "client_credential",
        });
        let started = Instant::now();
        let response = self.http.post(url).json(&body).send().await.map_err(|e| token_error(transport_error(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| token_error(transport_error(&e)))?;
        let answer = read_answer(status, &headers, &bytes, Ambiguity::NothingHappened)
            .map_err(|f| token_error(f.into_send_error()))?;
        let value = answer.pointer("/data/access_token").and_then(scalar).filter(|t| !t.is_empty());
        let Some(value) = value else {
            return Err(token_error(retryable("bad_response", "the token answer has no data.access_token", None)));
        };
        let expires_in = answer.pointer("/data/expires_in").and_then(Value::as_u64).unwrap_or(7200);
        let lifetime = Duration::from_secs(expires_in).saturating_sub(self.config.refresh_margin);
        tracing::debug!(expires_in, "fetched a Douyin client token");
        Ok(CachedToken { value, refresh_at: started + lifetime })
    }
}

/// The Douyin [`Connector`]: direct messages, one API call each.
pub struct DouyinConnector {
    client: DouyinClient,
}

impl DouyinConnector {
    pub fn new(config: DouyinConfig) -> Result<DouyinConnector, DouyinClientError> {
        Ok(DouyinConnector { client: DouyinClient::new(config)? })
    }

    pub fn client(&self) -> &DouyinClient {
        &self.client
    }

    async fn send_one(&self, message: &Outbound) -> Result<Accepted, SendError> {
        if message.channel != Channel::Douyin {
            return Err(permanent(
                "wrong_channel",
                format!("a {} message was handed to the Douyin connector", message.channel.as_str()),
            ));
        }
        if message.kind != SendKind::Direct {
            return Err(permanent("unsupported", "Douyin has no mass or welcome send; only direct messages go out"));
        }
        if message.recipient.kind != IdentityKind::DouyinOpenId {
            return Err(permanent(
                "unsupported_recipient",
                format!("Douyin addresses people by douyin_open_id, not {}", message.recipient.kind),
            ));
        }
        let operator = message
            .sender
            .as_deref()
            .filter(|s| !s.is_empty())
            .or_else(|| self.client.config.operators.get(&message.account).map(String::as_str))
            .ok_or_else(|| {
                permanent(
                    "unknown_account",
                    format!("no Douyin operator open id is configured for account {:?}", message.account),
                )
            })?;
        let content = DouyinContent::from_message(&message.content)?;
        let remote_id = self.client.send_message(operator, &message.recipient.value, &content).await?;
        Ok(Accepted::Sent { remote_id })
    }
}

#[async_trait]
impl Connector for DouyinConnector {
    fn name(&self) -> &'static str {
        CONNECTOR
    }

    async fn send(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        let mut results = Vec::with_capacity(batch.len());
        for message in batch {
            let result = self.send_one(message).await;
            if let Err(e) = &result {
                tracing::warn!(key = %message.key, code = %e.code, retryable = e.retryable, "douyin send failed");
            }
            results.push(result);
        }
        results
    }

    fn deduplicates(&self) -> bool {
        false
    }
}

/// What a failed call means for the caller.
enum Failure {
    /// Douyin refused the token: drop it and try again once.
    TokenRejected(SendError),
    Other(SendError),
}

impl Failure {
    fn into_send_error(self) -> SendError {
        match self {
            Failure::TokenRejected(e) | Failure::Other(e) => e,
        }
    }
}

/// Whether an unreadable success answer may hide a message that went out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ambiguity {
    MayHaveTakenEffect,
    NothingHappened,
}

/// The JSON answer of a successful call, or what the failure means.
fn read_answer(status: StatusCode, headers: &HeaderMap, bytes: &[u8], ambiguity: Ambiguity) -> Result<Value, Failure> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Failure::Other(retryable("http_429", "rate limited by Douyin", retry_after(headers))));
    }
    if status.is_server_error() {
        return Err(Failure::Other(retryable(
            format!("http_{}", status.as_u16()),
            "Douyin answered with a server error",
            retry_after(headers),
        )));
    }
    let parsed = serde_json::from_slice::<Value>(bytes).ok().filter(Value::is_object);
    if !status.is_success() {
        let detail = parsed.as_ref().map(error_message).unwrap_or_default();
        return Err(Failure::Other(permanent(
            format!("http_{}", status.as_u16()),
            format!("Douyin refused the request {detail}").trim().to_string(),
        )));
    }
    let Some(answer) = parsed else {
        let message = "Douyin's answer is not JSON";
        return Err(Failure::Other(match ambiguity {
            Ambiguity::MayHaveTakenEffect => {
                permanent("bad_response", format!("{message}; the message may have been sent"))
            }
            Ambiguity::NothingHappened => retryable("bad_response", message, None),
        }));
    };
    let Some(code) = error_code(&answer) else {
        return Ok(answer);
    };
    let message = error_message(&answer);
    if TOKEN_CODES.contains(&code) {
        return Err(Failure::TokenRejected(retryable(code.to_string(), message, None)));
    }
    if RETRYABLE_CODES.contains(&code) {
        return Err(Failure::Other(retryable(code.to_string(), message, retry_after(headers))));
    }
    Err(Failure::Other(permanent(code.to_string(), message)))
}

/// The first non-zero error code of the shapes Douyin's APIs answer with.
fn error_code(answer: &Value) -> Option<i64> {
    ["/err_no", "/error_code", "/data/error_code", "/extra/error_code", "/extra/sub_error_code"]
        .iter()
        .filter_map(|p| answer.pointer(p))
        .filter_map(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
        .find(|code| *code != 0)
}

fn error_message(answer: &Value) -> String {
    ["/err_msg", "/err_tips", "/description", "/data/description", "/extra/description", "/message"]
        .iter()
        .filter_map(|p| answer.pointer(p).and_then(Value::as_str))
        .find(|m| !m.is_empty() && *m != "success")
        .unwrap_or("")
        .to_string()
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn transport_error(e: &reqwest::Error) -> SendError {
    if e.is_timeout() {
        return retryable("timeout", "the Douyin API did not answer in time", None);
    }
    // No answer was read: a connection or protocol failure, worth another attempt.
    retryable("http_error", format!("failed to call the Douyin API: {e}"), None)
}

fn token_error(e: SendError) -> SendError {
    SendError {
        code: format!("token_{}", e.code),
        message: format!("failed to get a client token: {}", e.message),
        ..e
    }
}

fn retryable(code: impl Into<String>, message: impl Into<String>, retry_after: Option<Duration>) -> SendError {
    SendError { connector: CONNECTOR, code: code.into(), message: message.into(), retryable: true, retry_after }
}

fn permanent(code: impl Into<String>, message: impl Into<String>) -> SendError {
    SendError { connector: CONNECTOR, code: code.into(), message: message.into(), retryable: false, retry_after: None }
}

#[cfg(test)]
mod tests {
    use siyu_model::Identity;

    use super::*;

    fn outbound(content: MessageContent, kind: SendKind) -> Outbound {
        Outbound {
            key: "k-1".into(),
            channel: Channel::Douyin,
            account: "brand-main".into(),
            sender: None,
            recipient: Identity::new(IdentityKind::DouyinOpenId, "user-open-id").unwrap(),
            content,
            kind,
        }
    }

    fn text(t: &str) -> MessageContent {
        MessageContent { text: Some(t.into()), attachments: vec![] }
    }

    #[test]
    fn content_mapping() {
        assert_eq!(
            DouyinContent::from_message(&text("hi")).unwrap().to_json(),
            json!({"msg_type": 1, "text": {"text": "hi"}})
        );
        let image = MessageContent {
            text: None,
            attachments: vec![Attachment::Image { pic_url: None, media_id: Some("img-1".into()) }],
        };
        assert_eq!(
            DouyinContent::from_message(&image).unwrap().to_json(),
            json!({"msg_type": 2, "image": {"media_id": "img-1"}})
        );
        let url_image = MessageContent {
            text: None,
            attachments: vec![Attachment::Image { pic_url: Some("https://x/y.png".into()), media_id: None }],
        };
        assert_eq!(DouyinContent::from_message(&url_image).unwrap_err().code, "unsupported");
        let both = MessageContent { text: Some("hi".into()), attachments: image.attachments.clone() };
        let err = DouyinContent::from_message(&both).unwrap_err();
        assert_eq!((err.code.as_str(), err.retryable), ("unsupported", false));
        assert_eq!(DouyinContent::from_message(&MessageContent::default()).unwrap_err().code, "empty_content");
    }

    #[test]
    fn error_codes_are_found_in_every_shape() {
        assert_eq!(error_code(&json!({"err_no": 0, "data": {"msg_id": "1"}})), None);
        assert_eq!(error_code(&json!({"err_no": 28003018, "err_msg": "请求频率过高"})), Some(28_003_018));
        assert_eq!(
            error_code(&json!({"data": {"error_code": 10013, "description": "bad"}, "message": "error"})),
            Some(10_013)
        );
        assert_eq!(error_code(&json!({"extra": {"error_code": "2100004"}})), Some(2_100_004));
        assert_eq!(error_message(&json!({"data": {"description": "配置无效"}, "message": "error"})), "配置无效");
    }

    #[test]
    fn answers_are_classified() {
        let h = HeaderMap::new();
        let ok =
            read_answer(StatusCode::OK, &h, br#"{"err_no":0,"data":{"msg_id":"m"}}"#, Ambiguity::MayHaveTakenEffect);
        assert!(ok.is_ok());
        let busy = read_answer(
            StatusCode::OK,
            &h,
            r#"{"err_no":-1,"err_msg":"系统错误"}"#.as_bytes(),
            Ambiguity::MayHaveTakenEffect,
        );
        let Err(Failure::Other(e)) = busy else { panic!() };
        assert!(e.retryable);
        let expired = read_answer(StatusCode::OK, &h, br#"{"err_no":28001008}"#, Ambiguity::MayHaveTakenEffect);
        assert!(matches!(expired, Err(Failure::TokenRejected(_))));
        let Err(Failure::Other(quota)) = read_answer(
            StatusCode::OK,
            &h,
            r#"{"err_no":28003017,"err_msg":"quota 已用完"}"#.as_bytes(),
            Ambiguity::MayHaveTakenEffect,
        ) else {
            panic!()
        };
        assert_eq!((quota.code.as_str(), quota.retryable, quota.message.as_str()), ("28003017", false, "quota 已用完"));
        let Err(Failure::Other(bad)) = read_answer(StatusCode::BAD_REQUEST, &h, b"", Ambiguity::MayHaveTakenEffect)
        else {
            panic!()
        };
        assert_eq!((bad.code.as_str(), bad.retryable), ("http_400", false));
        let mut retry = HeaderMap::new();
        retry.insert("retry-after", "7".parse().unwrap());
        let Err(Failure::Other(limited)) =
            read_answer(StatusCode::TOO_MANY_REQUESTS, &retry, b"", Ambiguity::MayHaveTakenEffect)
        else {
            panic!()
        };
        assert_eq!((limited.retryable, limited.retry_after), (true, Some(Duration::from_secs(7))));
    }

    #[tokio::test]
    async fn refuses_what_douyin_cannot_send() {
        let connector = DouyinConnector::new(DouyinConfig::new("k", "s").with_base_url("http://127.0.0.1:9")).unwrap();
        let mass = outbound(text("hi"), SendKind::Mass);
        let welcome = outbound(text("hi"), SendKind::Welcome { welcome_code: "w".into() });
        let mut phone = outbound(text("hi"), SendKind::Direct);
        phone.recipient = Identity::new(IdentityKind::Phone, "13800138000").unwrap();
        let no_operator = outbound(text("hi"), SendKind::Direct);
        let results = connector.send(&[mass, welcome, phone, no_operator]).await;
        let codes: Vec<_> = results.iter().map(|r| r.as_ref().unwrap_err().code.as_str()).collect();
        assert_eq!(codes, ["unsupported", "unsupported", "unsupported_recipient", "unknown_account"]);
        assert!(results.iter().all(|r| !r.as_ref().unwrap_err().retryable));
        assert!(!connector.deduplicates());
        let err = connector.find_accepted(&[outbound(text("hi"), SendKind::Direct)], 0).await.unwrap_err();
        assert_eq!(err.code, "cannot_reconcile");
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", DouyinConfig::new("key", "very-secret"));
        assert!(text.contains("key") && !text.contains("very-secret"));
    }

    #[cfg(feature = "stand-in")]
    mod against_the_stand_in {
        use super::*;
        use crate::douyin::stand_in::{self, Endpoint, Fault, StandInConfig, StandInState};

        async fn setup(expires_in: u64) -> (StandInState, DouyinConnector) {
            let state = StandInState::new(StandInConfig { token_expires_in: expires_in, ..StandInConfig::default() });
            let addr = stand_in::spawn(state.clone()).await.unwrap();
            let cfg = state.config();
            let config = DouyinConfig::new(cfg.client_key, cfg.client_secret)
                .with_base_url(format!("http://{addr}"))
                .with_operator("brand-main", "operator-open-id");
            (state, DouyinConnector::new(config).unwrap())
        }

        fn direct(key: &str, t: &str) -> Outbound {
            Outbound { key: key.into(), ..outbound(text(t), SendKind::Direct) }
        }

        #[tokio::test]
        async fn sends_with_one_cached_token() {
            let (state, connector) = setup(7200).await;
            let results = connector.send(&[direct("a", "one"), direct("b", "two"), direct("c", "three")]).await;
            let ids: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
            assert_eq!(ids[0], Accepted::Sent { remote_id: Some("stand-in-msg-1".into()) });
            let received = state.received();
            assert_eq!(received.token_requests, 1);
            assert_eq!(received.sends.len(), 3);
            assert_eq!(received.sends[1].operator_open_id, "operator-open-id");
            assert_eq!(received.sends[1].to_user_id, "user-open-id");
            assert_eq!(received.sends[1].content, json!({"msg_type": 1, "text": {"text": "two"}}));
        }

        #[tokio::test]
        async fn refreshes_a_token_about_to_expire() {
            // A lifetime shorter than the refresh margin: every send needs a new token.
            let (state, connector) = setup(60).await;
            for r in connector.send(&[direct("a", "1"), direct("b", "2"), direct("c", "3")]).await {
                r.unwrap();
            }
            assert_eq!(state.received().token_requests, 3);
        }

        #[tokio::test]
        async fn an_expired_token_is_replaced_and_the_send_retried() {
            let (state, connector) = setup(7200).await;
            connector.send(&[direct("a", "1")]).await.remove(0).unwrap();
            state.push_fault(Endpoint::Send, Fault::ExpireTokens);
            connector.send(&[direct("b", "2")]).await.remove(0).unwrap();
            let received = state.received();
            assert_eq!(received.token_requests, 2);
            assert_eq!(received.sends.len(), 2);
            assert_eq!(received.rejected, 1);
        }

        #[tokio::test]
        async fn faults_map_to_the_right_errors() {
            let (state, connector) = setup(7200).await;
            state.push_fault(Endpoint::Send, Fault::Status { status: 503, retry_after: Some(3) });
            state.push_fault(Endpoint::Send, Fault::Garbage);
            state.push_fault(Endpoint::Send, Fault::ErrNo { err_no: 28003018, err_msg: "请求频率过高".into() });
            state.push_fault(Endpoint::Send, Fault::ErrNo { err_no: 28001007, err_msg: "参数不合法".into() });
            let batch: Vec<_> = (0..5).map(|i| direct(&format!("k{i}"), "hi")).collect();
            let results = connector.send(&batch).await;
            let e503 = results[0].as_ref().unwrap_err();
            assert_eq!(
                (e503.code.as_str(), e503.retryable, e503.retry_after),
                ("http_503", true, Some(Duration::from_secs(3)))
            );
            let garbage = results[1].as_ref().unwrap_err();
            assert_eq!((garbage.code.as_str(), garbage.retryable), ("bad_response", false));
            let limited = results[2].as_ref().unwrap_err();
            assert_eq!((limited.code.as_str(), limited.retryable), ("28003018", true));
            let invalid = results[3].as_ref().unwrap_err();
            assert_eq!((invalid.code.as_str(), invalid.retryable), ("28001007", false));
            assert!(results[4].is_ok());
            assert_eq!(state.received().sends.len(), 1);
        }

        #[tokio::test]
        async fn token_failures_are_retryable_and_bad_credentials_are_not() {
            let (state, connector) = setup(7200).await;
            state.push_fault(Endpoint::Token, Fault::Status { status: 503, retry_after: None });
            state.push_fault(Endpoint::Token, Fault::Garbage);
            let results = connector.send(&[direct("a", "1"), direct("b", "2"), direct("c", "3")]).await;
            let first = results[0].as_ref().unwrap_err();
            assert_eq!((first.code.as_str(), first.retryable), ("token_http_503", true));
            let second = results[1].as_ref().unwrap_err();
            assert_eq!((second.code.as_str(), second.retryable), ("token_bad_response", true));
            assert!(results[2].is_ok());

            let wrong = DouyinConnector::new(
                DouyinConfig::new("stand-in-key", "wrong-secret")
                    .with_base_url(connector.client().config().base_url.clone())
                    .with_operator("brand-main", "op"),
            )
            .unwrap();
            let err = wrong.send(&[direct("d", "4")]).await.remove(0).unwrap_err();
            assert_eq!((err.code.as_str(), err.retryable), ("token_10013", false));
        }
    }
}
