//! The WeCom server API (`qyapi.weixin.qq.com`, customer contact 客户联系), over reqwest, so the
//! connector and the operators' tools speak one client: one cached access token per corp secret,
//! one rate limit, one error mapping.
//!
//! Request and answer JSON follow WeCom's documentation (developer.work.weixin.qq.com): gettoken
//! (/document/path/91039), externalcontact/list (/92113), get (/92114), batch/get_by_user
//! (/92994), add_msg_template (/92135), get_groupmsg_list_v2 and get_groupmsg_send_result
//! (/93338), send_welcome_msg (/92137), mark_tag (/92118), add_contact_way (/92228). Every answer
//! carries `errcode`/`errmsg`; `errcode != 0` is an [`WeComError::Api`].
//!
//! The access token is fetched once and shared (a single flight: concurrent callers wait for the
//! one fetch), refreshed `token_refresh_margin` before WeCom's `expires_in`, and dropped and
//! fetched again when WeCom answers 40014 (invalid) or 42001 (expired); the failed call is then
//! retried once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use siyu_model::reach::{Attachment, MessageContent};
use tokio::time::Instant;

/// WeCom's API host.
pub const DEFAULT_BASE_URL: &str = "https://qyapi.weixin.qq.com";
/// `add_msg_template` takes at most this many `external_userid`s.
pub const MAX_RECIPIENTS_PER_TASK: usize = 10_000;
/// Customer messages carry at most nine attachments.
pub const MAX_ATTACHMENTS: usize = 9;
/// A contact way's `state` is at most 30 characters.
pub const MAX_STATE_CHARS: usize = 30;

/// errcodes after which WeCom expects a new access token.
const TOKEN_ERRCODES: [i64; 2] = [40014, 42001];
/// errcodes that mean "not now": system busy and the frequency limits.
const RETRYABLE_ERRCODES: [i64; 3] = [-1, 45009, 45033];
const RATE_LIMIT_ERRCODES: [i64; 2] = [45009, 45033];

/// A secret (corp secret, callback token, EncodingAESKey): never printed.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// How the client reaches WeCom.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://qyapi.weixin.qq.com`, or a stand-in's address.
    pub base_url: String,
    pub corp_id: String,
    /// The secret of the app (or of 客户联系) whose token is used.
    pub corp_secret: Secret,
    /// Per request, connect to last byte.
    pub timeout: Duration,
    /// Refresh the token this long before WeCom says it expires (at most half its lifetime).
    pub token_refresh_margin: Duration,
    /// Requests per second (all endpoints together); `None` for no limit.
    pub requests_per_second: Option<f64>,
    /// How many requests may go at once before the rate applies.
    pub burst: u32,
    /// After WeCom's frequency limit (45009, 45033), how long every call is refused locally.
    pub rate_limit_backoff: Duration,
}

impl ClientConfig {
    pub fn new(corp_id: impl Into<String>, corp_secret: Secret) -> ClientConfig {
        ClientConfig {
            base_url: DEFAULT_BASE_URL.to_string(),
            corp_id: corp_id.into(),
            corp_secret,
            timeout: Duration::from_secs(10),
            token_refresh_margin: Duration::from_secs(300),
            requests_per_second: Some(20.0),
            burst: 5,
            rate_limit_backoff: Duration::from_secs(60),
        }
    }
}

/// Why a WeCom call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeComError {
    #[error("{path}: errcode {errcode}: {errmsg}")]
    Api { path: &'static str, errcode: i64, errmsg: String, retry_after: Option<Duration> },
    #[error("{path}: http status {status}")]
    Status { path: &'static str, status: u16 },
    #[error("{path}: timed out")]
    Timeout { path: &'static str },
    #[error("{path}: {message}")]
    Transport { path: &'static str, message: String, before_sending: bool },
    #[error("{path}: unreadable answer: {message}")]
    Decode { path: &'static str, message: String },
    #[error("refused locally after WeCom's frequency limit, for {retry_after:?} more")]
    RateLimited { retry_after: Duration },
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl WeComError {
    /// Trying again later can succeed: system busy, frequency limits, 5xx and 429, timeouts,
    /// transport failures, garbled answers and expired tokens. Everything else is permanent.
    pub fn retryable(&self) -> bool {
        match self {
            WeComError::Api { errcode, .. } => RETRYABLE_ERRCODES.contains(errcode) || TOKEN_ERRCODES.contains(errcode),
            WeComError::Status { status, .. } => *status >= 500 || *status == 429,
            WeComError::Timeout { .. }
            | WeComError::Transport { .. }
            | WeComError::Decode { .. }
            | WeComError::RateLimited { .. } => true,
            WeComError::Invalid(_) => false,
        }
    }

    /// WeCom may have carried the request out although we saw a failure (a timeout, a 5xx, an
    /// answer we could not read): a write must be looked up before it is repeated.
    pub fn may_have_taken_effect(&self) -> bool {
        match self {
            WeComError::Status { status, .. } => *status >= 500,
            WeComError::Timeout { .. } | WeComError::Decode { .. } => true,
            WeComError::Transport { before_sending, .. } => !before_sending,
            WeComError::Api { .. } | WeComError::RateLimited { .. } | WeComError::Invalid(_) => false,
        }
    }

    pub fn is_rate_limit(&self) -> bool {
        matches!(self, WeComError::RateLimited { .. })
            || matches!(self, WeComError::Api { errcode, .. } if RATE_LIMIT_ERRCODES.contains(errcode))
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            WeComError::Api { retry_after, .. } => *retry_after,
            WeComError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// A short code: the errcode, or `http_503`, `timeout`, `transport`, `bad_answer`,
    /// `rate_limited`, `invalid_request`.
    pub fn code(&self) -> String {
        match self {
            WeComError::Api { errcode, .. } => errcode.to_string(),
            WeComError::Status { status, .. } => format!("http_{status}"),
            WeComError::Timeout { .. } => "timeout".into(),
            WeComError::Transport { .. } => "transport".into(),
            WeComError::Decode { .. } => "bad_answer".into(),
            WeComError::RateLimited { .. } => "rate_limited".into(),
            WeComError::Invalid(_) => "invalid_request".into(),
        }
    }
}

/// A WeCom API client for one corp secret. Cheap to share (`Arc`), safe across tasks.
pub struct WeComClient {
    http: reqwest::Client,
    config: ClientConfig,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    token_fetches: AtomicU64,
    limiter: RateLimiter,
}

impl std::fmt::Debug for WeComClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeComClient").field("config", &self.config).finish_non_exhaustive()
    }
}

impl WeComClient {
    pub fn new(config: ClientConfig) -> Result<WeComClient, WeComError> {
        let http = reqwest::Client::builder().timeout(config.timeout).build().map_err(|e| WeComError::Transport {
            path: "client",
            message: e.without_url().to_string(),
            before_sending: true,
        })?;
        let limiter = match config.requests_per_second {
            Some(rate) if rate > 0.0 && rate.is_finite() => RateLimiter::new(rate, config.burst),
            _ => RateLimiter::unlimited(),
        };
        Ok(WeComClient {
            http,
            config,
            token: tokio::sync::Mutex::new(None),
            token_fetches: AtomicU64::new(0),
            limiter,
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// How many times a token was fetched from `gettoken` (tests and metrics).
    pub fn token_fetches(&self) -> u64 {
        self.token_fetches.load(Ordering::Relaxed)
    }

    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// The current access token, fetched when there is none or it is about to expire.
    pub async fn access_token(&self) -> Result<String, WeComError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            if Instant::now() < token.refresh_at {
                return Ok(token.value.clone());
            }
        }
        // Fetched with the lock held, so concurrent callers share this one fetch.
        let fetched = self.fetch_token().await?;
        let lifetime = Duration::from_secs(fetched.expires_in.max(0) as u64);
        let early = self.config.token_refresh_margin.min(lifetime / 2);
        let value = fetched.access_token;
        *cached = Some(CachedToken { value: value.clone(), refresh_at: Instant::now() + (lifetime - early) });
        Ok(value)
    }

    /// `externalcontact/list`: the external userids of one staff member's customers.
    pub async fn list_external_contacts(&self, staff_userid: &str) -> Result<Vec<String>, WeComError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            external_userid: Vec<String>,
        }
        let answer: Answer = self.get("/cgi-bin/externalcontact/list", &[("userid", staff_userid)]).await?;
        Ok(answer.external_userid)
    }

    /// `externalcontact/get`: one customer and the staff members following them (paged past 500
    /// followers by `cursor`).
    pub async fn get_external_contact(
        &self,
        external_userid: &str,
        cursor: Option<&str>,
    ) -> Result<ExternalContactDetail, WeComError> {
        let mut query = vec![("external_userid", external_userid)];
        if let Some(cursor) = cursor.filter(|c| !c.is_empty()) {
            query.push(("cursor", cursor));
        }
        self.get("/cgi-bin/externalcontact/get", &query).await
    }

    /// `externalcontact/batch/get_by_user`: the customers of up to 100 staff members, one page
    /// (`limit` ≤ 100) at a time; pass the answer's `next_cursor` until it is empty.
    pub async fn batch_get_by_user(
        &self,
        staff_userids: &[String],
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ContactPage, WeComError> {
        if staff_userids.is_empty() || staff_userids.len() > 100 {
            return Err(WeComError::Invalid(format!(
                "userid_list takes 1 to 100 userids, not {}",
                staff_userids.len()
            )));
        }
        let body = serde_json::json!({
            "userid_list": staff_userids,
            "cursor": cursor.unwrap_or(""),
            "limit": limit.clamp(1, 100),
        });
        self.post("/cgi-bin/externalcontact/batch/get_by_user", body).await
    }

    /// `add_msg_template` with `chat_type=single`: a mass task for `sender` to confirm. Answers
    /// the task's `msgid` and the recipients WeCom refused (`fail_list`: not a customer of the
    /// sender, or unknown).
    pub async fn add_msg_template(
        &self,
        sender: &str,
        external_userids: &[String],
        content: &MessageContent,
    ) -> Result<MsgTemplateCreated, WeComError> {
        if external_userids.is_empty() || external_userids.len() > MAX_RECIPIENTS_PER_TASK {
            return Err(WeComError::Invalid(format!(
                "a mass task takes 1 to {MAX_RECIPIENTS_PER_TASK} external_userids, not {}",
                external_userids.len()
            )));
        }
        if sender.is_empty() {
            return Err(WeComError::Invalid("a mass task needs a sender".into()));
        }
        let mut body = content_json(content)?;
        body.insert("chat_type".into(), "single".into());
        body.insert("external_userid".into(), serde_json::json!(external_userids));
        body.insert("sender".into(), sender.into());
        self.post("/cgi-bin/externalcontact/add_msg_template", serde_json::Value::Object(body)).await
    }

    /// `get_groupmsg_send_result`: one page (`limit` ≤ 1000) of a task's recipients and their
    /// status (0 unsent, 1 sent, 2 not a contact, 3 already received a mass message).
    pub async fn get_groupmsg_send_result(
        &self,
        msgid: &str,
        staff_userid: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<SendResultPage, WeComError> {
        let mut body = serde_json::json!({ "msgid": msgid, "userid": staff_userid, "limit": limit.clamp(1, 1000) });
        if let Some(cursor) = cursor.filter(|c| !c.is_empty()) {
            body["cursor"] = cursor.into();
        }
        self.post("/cgi-bin/externalcontact/get_groupmsg_send_result", body).await
    }

    /// `remind_groupmsg_send`: reminds the sender of a task they have not confirmed (at most
    /// three times a day per task, WeCom's rule).
    pub async fn remind_groupmsg_send(&self, msgid: &str) -> Result<(), WeComError> {
        let _: serde_json::Value =
            self.post("/cgi-bin/externalcontact/remind_groupmsg_send", serde_json::json!({ "msgid": msgid })).await?;
        Ok(())
    }

    /// `cancel_groupmsg_send`: stops a task, so its sender can no longer confirm it.
    pub async fn cancel_groupmsg_send(&self, msgid: &str) -> Result<(), WeComError> {
        let _: serde_json::Value =
            self.post("/cgi-bin/externalcontact/cancel_groupmsg_send", serde_json::json!({ "msgid": msgid })).await?;
        Ok(())
    }

    /// `get_groupmsg_list_v2`: one page of mass messages created in a time range (at most one
    /// month wide).
    pub async fn get_groupmsg_list_v2(&self, query: &GroupMsgQuery) -> Result<GroupMsgPage, WeComError> {
        let mut body = serde_json::json!({
            "chat_type": query.chat_type.as_str(),
            "start_time": query.start_time,
            "end_time": query.end_time,
            "filter_type": query.filter.code(),
            "limit": query.limit.clamp(1, 100),
        });
        if let Some(creator) = query.creator.as_deref() {
            body["creator"] = creator.into();
        }
        if let Some(cursor) = query.cursor.as_deref().filter(|c| !c.is_empty()) {
            body["cursor"] = cursor.into();
        }
        self.post("/cgi-bin/externalcontact/get_groupmsg_list_v2", body).await
    }

    /// `send_welcome_msg`: the welcome message for the add-contact callback that carried the code.
    pub async fn send_welcome_msg(&self, welcome_code: &str, content: &MessageContent) -> Result<(), WeComError> {
        if welcome_code.is_empty() {
            return Err(WeComError::Invalid("a welcome message needs its welcome_code".into()));
        }
        let mut body = content_json(content)?;
        body.insert("welcome_code".into(), welcome_code.into());
        let _: serde_json::Value = self.post("/cgi-bin/externalcontact/send_welcome_msg", body.into()).await?;
        Ok(())
    }

    /// `mark_tag`: adds and removes corp tags on one customer of one staff member.
    pub async fn mark_tag(
        &self,
        staff_userid: &str,
        external_userid: &str,
        add_tag: &[String],
        remove_tag: &[String],
    ) -> Result<(), WeComError> {
        if add_tag.is_empty() && remove_tag.is_empty() {
            return Err(WeComError::Invalid("mark_tag needs a tag to add or to remove".into()));
        }
        let body = serde_json::json!({
            "userid": staff_userid,
            "external_userid": external_userid,
            "add_tag": add_tag,
            "remove_tag": remove_tag,
        });
        let _: serde_json::Value = self.post("/cgi-bin/externalcontact/mark_tag", body).await?;
        Ok(())
    }

    /// `add_contact_way`: a 联系我 configuration; with [`ContactWayScene::QrCode`] WeCom answers
    /// the QR code's URL. Customers who add through it arrive with its `state` in the callback.
    pub async fn add_contact_way(&self, way: &ContactWay) -> Result<ContactWayCreated, WeComError> {
        if let Some(state) = &way.state {
            if state.chars().count() > MAX_STATE_CHARS {
                return Err(WeComError::Invalid(format!("state is limited to {MAX_STATE_CHARS} characters")));
            }
        }
        if way.kind == ContactWayType::Single && (way.users.len() != 1 || !way.parties.is_empty()) {
            return Err(WeComError::Invalid("a single contact way names exactly one user and no party".into()));
        }
        if way.users.is_empty() && way.parties.is_empty() {
            return Err(WeComError::Invalid("a contact way needs a user or a party".into()));
        }
        let mut body = serde_json::json!({
            "type": way.kind as u8,
            "scene": way.scene as u8,
            "skip_verify": way.skip_verify,
            "user": way.users,
        });
        if !way.parties.is_empty() {
            body["party"] = serde_json::json!(way.parties);
        }
        for (key, value) in [("state", &way.state), ("remark", &way.remark)] {
            if let Some(value) = value {
                body[key] = value.as_str().into();
            }
        }
        if let Some(style) = way.style {
            body["style"] = style.into();
        }
        self.post("/cgi-bin/externalcontact/add_contact_way", body).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &'static str, query: &[(&str, &str)]) -> Result<T, WeComError> {
        let query: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.call(path, Method::Get(query)).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &'static str, body: serde_json::Value) -> Result<T, WeComError> {
        self.call(path, Method::Post(body)).await
    }

    /// One call with the shared token; after a token errcode, once more with a new token.
    async fn call<T: DeserializeOwned>(&self, path: &'static str, method: Method) -> Result<T, WeComError> {
        let token = self.access_token().await?;
        match self.send_once(path, &method, Some(&token)).await {
            Err(WeComError::Api { errcode, .. }) if TOKEN_ERRCODES.contains(&errcode) => {
                self.invalidate(&token).await;
                let token = self.access_token().await?;
                self.send_once(path, &method, Some(&token)).await
            }
            other => other,
        }
    }

    /// Forgets `stale` unless another caller has already replaced it.
    async fn invalidate(&self, stale: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == stale) {
            *cached = None;
        }
    }

    async fn fetch_token(&self) -> Result<TokenAnswer, WeComError> {
        self.token_fetches.fetch_add(1, Ordering::Relaxed);
        let query = vec![
            ("corpid".to_string(), self.config.corp_id.clone()),
            ("corpsecret".to_string(), self.config.corp_secret.expose().to_string()),
        ];
        let answer: TokenAnswer = self.send_once("/cgi-bin/gettoken", &Method::Get(query), None).await?;
        if answer.access_token.is_empty() {
            return Err(WeComError::Decode { path: "/cgi-bin/gettoken", message: "no access_token".into() });
        }
        Ok(answer)
    }

    async fn send_once<T: DeserializeOwned>(
        &self,
        path: &'static str,
        method: &Method,
        token: Option<&str>,
    ) -> Result<T, WeComError> {
        self.limiter.acquire().await.map_err(|retry_after| WeComError::RateLimited { retry_after })?;
        let url = format!("{}{path}", self.config.base_url.trim_end_matches('/'));
        let mut request = match method {
            Method::Get(query) => self.http.get(&url).query(query),
            Method::Post(body) => self.http.post(&url).json(body),
        };
        if let Some(token) = token {
            request = request.query(&[("access_token", token)]);
        }
        // `without_url`: the URL carries the access token or the corp secret.
        let response = request.send().await.map_err(|e| transport_error(path, e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(WeComError::Status { path, status: status.as_u16() });
        }
        let bytes = response.bytes().await.map_err(|e| transport_error(path, e))?;
        let result = read_answer(path, &bytes, self.config.rate_limit_backoff);
        if let Err(e) = &result {
            if e.is_rate_limit() {
                self.limiter.pause(self.config.rate_limit_backoff);
            }
        }
        result
    }
}

/// `externalcontact/get`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExternalContactDetail {
    pub external_contact: ExternalContact,
    #[serde(default)]
    pub follow_user: Vec<FollowUser>,
    #[serde(default)]
    pub next_cursor: String,
}

/// A customer as WeCom describes them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExternalContact {
    pub external_userid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub avatar: String,
    /// 1 a WeChat user, 2 a WeCom user.
    #[serde(rename = "type", default)]
    pub kind: u32,
    /// 0 unknown, 1 male, 2 female.
    #[serde(default)]
    pub gender: u32,
    /// Only when the corp has a linked WeChat official account or mini program.
    #[serde(default)]
    pub unionid: Option<String>,
    #[serde(default)]
    pub corp_name: Option<String>,
    #[serde(default)]
    pub position: Option<String>,
}

/// A staff member following a customer (`follow_user` of `externalcontact/get`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FollowUser {
    pub userid: String,
    #[serde(default)]
    pub remark: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub createtime: i64,
    #[serde(default)]
    pub tags: Vec<FollowTag>,
    #[serde(default)]
    pub remark_mobiles: Vec<String>,
    #[serde(default)]
    pub add_way: i64,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub oper_userid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FollowTag {
    #[serde(default)]
    pub group_name: String,
    #[serde(default)]
    pub tag_name: String,
    #[serde(default)]
    pub tag_id: Option<String>,
    /// 1 a corp tag, 2 a staff member's own tag, 3 a rule-group tag.
    #[serde(rename = "type", default)]
    pub kind: u32,
}

/// A page of `batch/get_by_user`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContactPage {
    #[serde(default)]
    pub external_contact_list: Vec<ContactWithFollowInfo>,
    #[serde(default)]
    pub next_cursor: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContactWithFollowInfo {
    pub external_contact: ExternalContact,
    pub follow_info: FollowInfo,
}

/// The asking staff member's relation to the customer (`follow_info` of `batch/get_by_user`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FollowInfo {
    pub userid: String,
    #[serde(default)]
    pub remark: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub createtime: i64,
    #[serde(default)]
    pub tag_id: Vec<String>,
    #[serde(default)]
    pub remark_mobiles: Vec<String>,
    #[serde(default)]
    pub add_way: i64,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub oper_userid: Option<String>,
}

/// `add_msg_template`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MsgTemplateCreated {
    pub msgid: String,
    #[serde(default)]
    pub fail_list: Vec<String>,
}

/// A page of `get_groupmsg_send_result`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SendResultPage {
    #[serde(default)]
    pub send_list: Vec<SendResult>,
    #[serde(default)]
    pub next_cursor: String,
}

/// One recipient of a mass task.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SendResult {
    #[serde(default)]
    pub external_userid: Option<String>,
    /// For group-chat tasks, instead of `external_userid`.
    #[serde(default)]
    pub chat_id: Option<String>,
    #[serde(default)]
    pub userid: String,
    /// 0 unsent, 1 sent, 2 not a contact (any more), 3 already received a mass message.
    #[serde(default)]
    pub status: u32,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub send_time: Option<i64>,
}

/// `get_groupmsg_list_v2`'s request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMsgQuery {
    pub chat_type: ChatType,
    pub start_time: i64,
    pub end_time: i64,
    pub creator: Option<String>,
    pub filter: CreatorFilter,
    pub limit: u32,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatType {
    /// To customers.
    Single,
    /// To customer groups.
    Group,
}

impl ChatType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatType::Single => "single",
            ChatType::Group => "group",
        }
    }
}

/// `filter_type`: who created the mass messages listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreatorFilter {
    /// 企业发表: created through the API or the admin console (what `add_msg_template` creates).
    Corp,
    /// 个人发表: created by the staff member in the app.
    Personal,
    All,
}

impl CreatorFilter {
    pub fn code(self) -> u8 {
        match self {
            CreatorFilter::Corp => 0,
            CreatorFilter::Personal => 1,
            CreatorFilter::All => 2,
        }
    }
}

/// A page of `get_groupmsg_list_v2`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupMsgPage {
    #[serde(default)]
    pub group_msg_list: Vec<GroupMsg>,
    #[serde(default)]
    pub next_cursor: String,
}

/// One mass message in `get_groupmsg_list_v2`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupMsg {
    pub msgid: String,
    #[serde(default)]
    pub creator: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub create_time: i64,
    /// 0 created by the corp, 1 by the staff member.
    #[serde(default)]
    pub create_type: u32,
    #[serde(default)]
    text: Option<WireText>,
    #[serde(default)]
    attachments: Vec<WireAttachment>,
}

impl GroupMsg {
    /// The message's content in siyu's terms (attachments of kinds siyu does not know are left out).
    pub fn content(&self) -> MessageContent {
        MessageContent {
            text: self.text.as_ref().map(|t| t.content.clone()).filter(|t| !t.is_empty()),
            attachments: self.attachments.iter().filter_map(WireAttachment::to_attachment).collect(),
        }
    }
}

/// `add_contact_way`'s request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactWay {
    pub kind: ContactWayType,
    pub scene: ContactWayScene,
    /// The mini-program button style (scene 1 only).
    pub style: Option<u32>,
    /// At most 30 characters.
    pub remark: Option<String>,
    /// Customers are added without the staff member's confirmation.
    pub skip_verify: bool,
    /// At most 30 characters; comes back in the add-contact callback.
    pub state: Option<String>,
    pub users: Vec<String>,
    /// Department ids (multi-person ways only).
    pub parties: Vec<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ContactWayType {
    Single = 1,
    Multi = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ContactWayScene {
    MiniProgram = 1,
    QrCode = 2,
}

/// `add_contact_way`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContactWayCreated {
    pub config_id: String,
    #[serde(default)]
    pub qr_code: Option<String>,
}

/// A token bucket over all of one client's requests, plus a pause after WeCom's own frequency
/// limit: while paused, requests are refused at once (so a dispatcher is told when to come back
/// instead of being held).
pub struct RateLimiter {
    state: Mutex<Bucket>,
    per_second: f64,
    burst: f64,
    waits: AtomicU64,
}

struct Bucket {
    /// Negative while callers wait: each waiter has reserved its token.
    tokens: f64,
    updated: Instant,
    paused_until: Option<Instant>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            state: Mutex::new(Bucket { tokens: burst, updated: Instant::now(), paused_until: None }),
            per_second,
            burst,
            waits: AtomicU64::new(0),
        }
    }

    pub fn unlimited() -> RateLimiter {
        RateLimiter::new(f64::INFINITY, 1)
    }

    /// Waits for a token; `Err(remaining)` while paused.
    pub async fn acquire(&self) -> Result<(), Duration> {
        let wait = {
            let mut bucket = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            if let Some(until) = bucket.paused_until {
                if now < until {
                    return Err(until - now);
                }
                bucket.paused_until = None;
            }
            if self.per_second.is_infinite() {
                return Ok(());
            }
            let refill = now.saturating_duration_since(bucket.updated).as_secs_f64() * self.per_second;
            bucket.tokens = (bucket.tokens + refill).min(self.burst) - 1.0;
            bucket.updated = now;
            (bucket.tokens < 0.0).then(|| Duration::from_secs_f64(-bucket.tokens / self.per_second))
        };
        if let Some(wait) = wait {
            self.waits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Refuses every request for `duration` (WeCom said "too often").
    pub fn pause(&self, duration: Duration) {
        let mut bucket = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let until = Instant::now() + duration;
        bucket.paused_until = Some(bucket.paused_until.map_or(until, |current| current.max(until)));
    }

    /// How many acquisitions had to wait for a token.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

struct CachedToken {
    value: String,
    refresh_at: Instant,
}

enum Method {
    Get(Vec<(String, String)>),
    Post(serde_json::Value),
}

fn transport_error(path: &'static str, e: reqwest::Error) -> WeComError {
    if e.is_timeout() {
        return WeComError::Timeout { path };
    }
    let before_sending = e.is_connect();
    WeComError::Transport { path, message: e.without_url().to_string(), before_sending }
}

/// Reads `errcode`/`errmsg` first, then the typed answer.
fn read_answer<T: DeserializeOwned>(path: &'static str, bytes: &[u8], backoff: Duration) -> Result<T, WeComError> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        errcode: i64,
        #[serde(default)]
        errmsg: String,
    }
    let decode = |e: serde_json::Error| {
        let excerpt: String = String::from_utf8_lossy(bytes).chars().take(120).collect();
        WeComError::Decode { path, message: format!("{e} in {excerpt:?}") }
    };
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(decode)?;
    if envelope.errcode != 0 {
        let retry_after = RATE_LIMIT_ERRCODES.contains(&envelope.errcode).then_some(backoff);
        return Err(WeComError::Api { path, errcode: envelope.errcode, errmsg: envelope.errmsg, retry_after });
    }
    serde_json::from_slice(bytes).map_err(decode)
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: i64,
}

/// `text` and `attachments` of a customer message, as WeCom takes them.
fn content_json(content: &MessageContent) -> Result<serde_json::Map<String, serde_json::Value>, WeComError> {
    let text = content.text.as_deref().filter(|t| !t.is_empty());
    if text.is_none() && content.attachments.is_empty() {
        return Err(WeComError::Invalid("a message needs text or an attachment".into()));
    }
    if content.attachments.len() > MAX_ATTACHMENTS {
        return Err(WeComError::Invalid(format!("a message carries at most {MAX_ATTACHMENTS} attachments")));
    }
    let mut body = serde_json::Map::new();
    if let Some(text) = text {
        body.insert("text".into(), serde_json::json!({ "content": text }));
    }
    if !content.attachments.is_empty() {
        let attachments: Vec<WireAttachment> = content.attachments.iter().map(WireAttachment::from).collect();
        body.insert("attachments".into(), serde_json::to_value(attachments).expect("attachments serialise"));
    }
    Ok(body)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct WireText {
    #[serde(default)]
    content: String,
}

/// One attachment in WeCom's JSON: `{"msgtype": "image", "image": {...}}` and so on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msgtype", rename_all = "lowercase")]
enum WireAttachment {
    Image {
        image: WireImage,
    },
    Link {
        link: WireLink,
    },
    Miniprogram {
        miniprogram: WireMiniProgram,
    },
    Video {
        video: WireMedia,
    },
    File {
        file: WireMedia,
    },
    /// A kind siyu does not send (WeCom may add more).
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pic_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireLink {
    #[serde(default)]
    title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    picurl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    desc: Option<String>,
    #[serde(default)]
    url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireMiniProgram {
    #[serde(default)]
    title: String,
    #[serde(default)]
    pic_media_id: String,
    #[serde(default)]
    appid: String,
    #[serde(default)]
    page: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireMedia {
    #[serde(default)]
    media_id: String,
}

impl From<&Attachment> for WireAttachment {
    fn from(attachment: &Attachment) -> WireAttachment {
        match attachment.clone() {
            Attachment::Image { pic_url, media_id } => WireAttachment::Image { image: WireImage { media_id, pic_url } },
            Attachment::Link { title, url, pic_url, desc } => {
                WireAttachment::Link { link: WireLink { title, picurl: pic_url, desc, url } }
            }
            Attachment::MiniProgram { title, appid, page, pic_media_id } => {
                WireAttachment::Miniprogram { miniprogram: WireMiniProgram { title, pic_media_id, appid, page } }
            }
            Attachment::Video { media_id } => WireAttachment::Video { video: WireMedia { media_id } },
            Attachment::File { media_id } => WireAttachment::File { file: WireMedia { media_id } },
        }
    }
}

impl WireAttachment {
    fn to_attachment(&self) -> Option<Attachment> {
        Some(match self.clone() {
            WireAttachment::Image { image } => Attachment::Image { pic_url: image.pic_url, media_id: image.media_id },
            WireAttachment::Link { link } => {
                Attachment::Link { title: link.title, url: link.url, pic_url: link.picurl, desc: link.desc }
            }
            WireAttachment::Miniprogram { miniprogram: m } => {
                Attachment::MiniProgram { title: m.title, appid: m.appid, page: m.page, pic_media_id: m.pic_media_id }
            }
            WireAttachment::Video { video } => Attachment::Video { media_id: video.media_id },
            WireAttachment::File { file } => Attachment::File { media_id: file.media_id },
            WireAttachment::Unknown => return None,
        })
    }
}

/// WeCom's examples print some timestamps as strings and the answers send numbers: take both.
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(lenient_opt_i64(d)?.unwrap_or_default())
}

fn lenient_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(i64),
        Text(String),
    }
    match Option::<NumberOrText>::deserialize(d)? {
        None => Ok(None),
        Some(NumberOrText::Number(n)) => Ok(Some(n)),
        Some(NumberOrText::Text(t)) if t.trim().is_empty() => Ok(None),
        Some(NumberOrText::Text(t)) => t.trim().parse().map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_written_in_wecom_json() {
        let content = MessageContent {
            text: Some("双十一".into()),
            attachments: vec![
                Attachment::Image { pic_url: Some("https://p/1.png".into()), media_id: None },
                Attachment::Link {
                    title: "t".into(),
                    url: "https://u".into(),
                    pic_url: Some("https://p".into()),
                    desc: None,
                },
                Attachment::MiniProgram {
                    title: "m".into(),
                    appid: "wx1".into(),
                    page: "/p".into(),
                    pic_media_id: "M".into(),
                },
                Attachment::Video { media_id: "V".into() },
                Attachment::File { media_id: "F".into() },
            ],
        };
        let json = serde_json::Value::Object(content_json(&content).unwrap());
        assert_eq!(
            json,
            serde_json::json!({
                "text": {"content": "双十一"},
                "attachments": [
                    {"msgtype": "image", "image": {"pic_url": "https://p/1.png"}},
                    {"msgtype": "link", "link": {"title": "t", "picurl": "https://p", "url": "https://u"}},
                    {"msgtype": "miniprogram", "miniprogram": {"title": "m", "pic_media_id": "M", "appid": "wx1", "page": "/p"}},
                    {"msgtype": "video", "video": {"media_id": "V"}},
                    {"msgtype": "file", "file": {"media_id": "F"}},
                ]
            })
        );
        let listed: GroupMsg = serde_json::from_value(serde_json::json!({
            "msgid": "msgGCAAAXtWyujaWJHDDGi0mAAAA", "creator": "xxxx", "create_time": "1609679760", "create_type": 1,
            "text": json["text"], "attachments": json["attachments"],
        }))
        .unwrap();
        assert_eq!(listed.create_time, 1_609_679_760);
        assert_eq!(listed.content(), content);
    }

    #[test]
    fn empty_or_overfull_content_is_refused() {
        assert!(matches!(content_json(&MessageContent::default()), Err(WeComError::Invalid(_))));
        let many = MessageContent { text: None, attachments: vec![Attachment::File { media_id: "F".into() }; 10] };
        assert!(matches!(content_json(&many), Err(WeComError::Invalid(_))));
    }

    #[test]
    fn answers_are_read_errcode_first() {
        let backoff = Duration::from_secs(60);
        let ok: MsgTemplateCreated = read_answer(
            "p",
            br#"{"errcode":0,"errmsg":"ok","fail_list":["wm1"],"msgid":"msgGCAAAXtWyujaWJHDDGi0mAAAA"}"#,
            backoff,
        )
        .unwrap();
        assert_eq!(ok.fail_list, ["wm1"]);
        let busy =
            read_answer::<MsgTemplateCreated>("p", br#"{"errcode":-1,"errmsg":"system busy"}"#, backoff).unwrap_err();
        assert!(busy.retryable() && !busy.is_rate_limit() && busy.code() == "-1");
        let limited =
            read_answer::<MsgTemplateCreated>("p", br#"{"errcode":45009,"errmsg":"freq"}"#, backoff).unwrap_err();
        assert!(limited.retryable() && limited.is_rate_limit());
        assert_eq!(limited.retry_after(), Some(backoff));
        let refused =
            read_answer::<MsgTemplateCreated>("p", br#"{"errcode":40003,"errmsg":"invalid userid"}"#, backoff)
                .unwrap_err();
        assert!(!refused.retryable());
        let garbage = read_answer::<MsgTemplateCreated>("p", b"<html>502 bad gateway</html>", backoff).unwrap_err();
        assert!(matches!(garbage, WeComError::Decode { .. }) && garbage.retryable() && garbage.may_have_taken_effect());
    }

    #[test]
    fn secrets_are_not_printed() {
        let config = ClientConfig::new("ww1", Secret::new("s3cr3t"));
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_makes_callers_past_the_burst_wait_in_turn() {
        let limiter = std::sync::Arc::new(RateLimiter::new(10.0, 2));
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..6 {
            let limiter = limiter.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                limiter.acquire().await.unwrap();
                order.lock().unwrap().push(i);
            }));
            // Spawned in order, each reserves its token before the next one starts.
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(limiter.waits(), 4);
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4, 5]);
        limiter.pause(Duration::from_secs(5));
        assert!(limiter.acquire().await.is_err());
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(limiter.acquire().await.is_ok());
    }
}
