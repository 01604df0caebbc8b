//! Douyin open-platform webhooks in: the signature check, the typed events, and their mapping onto
//! siyu's native events. Pure functions from a request's headers and bytes, so the server's handler
//! stays a few lines and every rule here is tested without HTTP.
//!
//! What Douyin documents, and what this module follows:
//!
//! - **Signature** (<https://developer.open-douyin.com/docs/resource/zh-CN/dop/develop/webhooks/summarize>):
//!   header `X-Douyin-Signature` = lowercase hex of `sha1(client_secret ‖ raw body)`. Mini-apps sign
//!   with the separate webhook secret the console hands out instead of the client secret, so
//!   [`verify_signature`] takes "the secret" either way. Compared in constant time.
//! - **URL check** (same page): `{"event":"verify_webhook","content":{"challenge":12345}}` must be
//!   answered with the JSON `{"challenge":12345}` (the value echoed as sent).
//! - **Retries** (same page): Douyin retries three times when the answer takes over 5 s, with the
//!   same `Msg-Id` header; every event here gets a `message_id` derived from it (or, without it,
//!   from the body's `msg_id`, the message's `server_message_id`, `log_id`, then a hash of the body),
//!   so a retry is a duplicate the event log refuses.
//!
//! The events mapped (event list:
//! <https://developer.open-douyin.com/docs/resource/zh-CN/dop/develop/webhooks/event-list>):
//!
//! | Douyin event | siyu event | person | notes |
//! |---|---|---|---|
//! | `im_receive_msg` (private message received) | `message_in` | `from_user_id` | `properties.text`; `properties.unsubscribe = true` for 退订 / TD |
//! | `im_send_msg` (private message sent) | `message_out` | `to_user_id` | ignored when `content.source` is our own client key: those are our sends, already in the outbox |
//! | `im_enter_direct_msg` (user opened the conversation) | custom `douyin_im_enter` | `from_user_id` | not consent: it only opens a short reply window |
//! | `im_authorize` (user authorised proactive messages, mini-app) | `consent_granted` / `consent_revoked` | `from_user_id` | `properties.purpose = "douyin_im"`; `auth_status` 1 = granted, 2 = not |
//! | `new_follow_action` (user followed the account) | `follow` | `from_user_id` | only `action_type` 1 (the one value documented) |
//! | `group_fans_event` (user joined a fan group) | `group_join` | `from_user_id` | `properties.group_id = im_group_id`; only `group_type` 1 |
//!
//! Pages of the events: `im_receive_msg`/`im_send_msg`
//! <https://developer.open-douyin.com/docs/resource/zh-CN/dop/develop/openapi/search-management/private-message/private-msg-webhook>,
//! `im_enter_direct_msg`
//! <https://developer.open-douyin.com/docs/resource/zh-CN/mini-app/develop/server/instant-message/private-message/enter-direct-msg-webhook>,
//! `im_authorize`
//! <https://developer.open-douyin.com/docs/resource/zh-CN/mini-app/develop/server/reach-marketing/instant-message/private-message/im-authorize-wenhook>,
//! `new_follow_action`
//! <https://developer.open-douyin.com/docs/resource/zh-CN/dop/develop/openapi/interaction-management/intention-user/user-follow>,
//! `group_fans_event`
//! <https://developer.open-douyin.com/docs/resource/zh-CN/dop/develop/openapi/interaction-management/group-chat/join-group/group-fans-webhook/group-fans-join>.
//!
//! Besides what the table names, the events keep what a reply or an audit needs in `properties`:
//! `conversation_id` and `server_message_id` (a reply to a message is allowed within 24 h of it),
//! `operator_open_id` (the account's own open id), and `context.douyin` holds the event name,
//! client key and `log_id`; nickname and avatar become `traits` when Douyin sends them.
//!
//! Douyin documents **no unfollow and no group-leave webhook**, so siyu gets neither from Douyin.
//! Every other event (`authorize`, `contract_authorize`, `create_video`, `im_recall_msg`, …) is
//! not an error: [`parse`] returns `None` and the handler answers 200 so Douyin stops retrying.
//! `content` is an object in some events and a JSON *string* in others (both documented); both
//! are read.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha1::{Digest, Sha1};
use siyu_model::event::{parse_native, TimeLimits};
use siyu_model::{Event, Millis};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Douyin-Signature";
/// The header Douyin keeps equal across the retries of one push.
pub const MSG_ID_HEADER: &str = "Msg-Id";
/// `properties.purpose` of the consent events this module produces.
pub const CONSENT_PURPOSE: &str = "douyin_im";
/// The custom event type of `im_enter_direct_msg`.
pub const IM_ENTER_EVENT_TYPE: &str = "douyin_im_enter";

/// Why a webhook request was refused. The handler answers 401 for the signature errors and 400
/// for the others; unknown events are not errors (see [`parse`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DouyinWebhookError {
    #[error("the request has no X-Douyin-Signature header")]
    MissingSignature,
    #[error("X-Douyin-Signature does not match the body")]
    BadSignature,
    #[error("the body is not a Douyin webhook: {0}")]
    MalformedJson(String),
    /// A known event whose fields are missing or do not make a valid siyu event.
    #[error("{event}: {message}")]
    InvalidEvent { event: String, message: String },
}

impl DouyinWebhookError {
    /// A stable code for logs, metrics and the server's error registry.
    pub fn code(&self) -> &'static str {
        match self {
            DouyinWebhookError::MissingSignature => "missing_signature",
            DouyinWebhookError::BadSignature => "bad_signature",
            DouyinWebhookError::MalformedJson(_) => "malformed_json",
            DouyinWebhookError::InvalidEvent { .. } => "invalid_event",
        }
    }

    /// The HTTP status a receiving handler should answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            DouyinWebhookError::MissingSignature | DouyinWebhookError::BadSignature => 401,
            _ => 400,
        }
    }
}

/// The request headers this module reads, already looked up by the handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookHeaders<'a> {
    /// `X-Douyin-Signature`.
    pub signature: Option<&'a str>,
    /// `Msg-Id`.
    pub msg_id: Option<&'a str>,
}

/// What to do with one verified request.
#[derive(Debug, Clone)]
pub enum WebhookOutcome {
    /// The URL check: answer 200 with this body (`application/json`).
    Challenge { response_body: String },
    /// Append this event to the log, then answer 200.
    Event(Box<Event>),
    /// Verified but nothing for siyu (an event not mapped, or a case of one documented above as
    /// ignored): answer 200 so Douyin stops retrying.
    Ignored { event: String },
}

/// The whole inbound path: verify, parse, map. `account` is the siyu channel account (矩阵号) the
/// events are recorded under; `received_at` the server clock.
pub fn handle(
    secret: &str,
    headers: WebhookHeaders<'_>,
    body: &[u8],
    account: &str,
    received_at: Millis,
) -> Result<WebhookOutcome, DouyinWebhookError> {
    verify_signature(secret, headers.signature, body)?;
    let Some(notification) = parse(body, headers.msg_id)? else {
        return Ok(WebhookOutcome::Ignored { event: event_name(body) });
    };
    if let DouyinEvent::VerifyWebhook { challenge } = &notification.event {
        return Ok(WebhookOutcome::Challenge { response_body: challenge_response(challenge) });
    }
    match notification.to_event(account, received_at)? {
        Some(event) => Ok(WebhookOutcome::Event(Box::new(event))),
        None => Ok(WebhookOutcome::Ignored { event: notification.envelope.event }),
    }
}

/// Checks `X-Douyin-Signature` against `sha1(secret ‖ body)` in constant time.
pub fn verify_signature(secret: &str, signature: Option<&str>, body: &[u8]) -> Result<(), DouyinWebhookError> {
    let header = signature.map(str::trim).filter(|s| !s.is_empty()).ok_or(DouyinWebhookError::MissingSignature)?;
    let given = hex::decode(header).map_err(|_| DouyinWebhookError::BadSignature)?;
    let expected = signature_bytes(secret, body);
    if constant_time_eq(&given, &expected) {
        Ok(())
    } else {
        Err(DouyinWebhookError::BadSignature)
    }
}

/// The value Douyin puts in `X-Douyin-Signature` for `body` (used by the stand-ins and the tests).
pub fn sign(secret: &str, body: &[u8]) -> String {
    hex::encode(signature_bytes(secret, body))
}

/// The answer to a `verify_webhook` request: the challenge echoed with its JSON type.
pub fn challenge_response(challenge: &Value) -> String {
    json!({ "challenge": challenge }).to_string()
}

/// The fields every Douyin webhook shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub event: String,
    /// The actor's open id (for most events the user, for `im_send_msg` the account).
    pub from_user_id: String,
    pub to_user_id: String,
    /// The app (client key / mini-app id) the push is for.
    pub client_key: String,
    pub log_id: Option<String>,
    /// The body's `msg_id`, where the event has one.
    pub msg_id: Option<String>,
    /// The `Msg-Id` header.
    pub header_msg_id: Option<String>,
}

/// One verified, parsed webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub envelope: Envelope,
    pub event: DouyinEvent,
    /// Hex SHA-1 of the raw body: the id of last resort.
    pub body_hash: String,
}

/// The events this module understands, with the content fields siyu uses.
#[derive(Debug, Clone, PartialEq)]
pub enum DouyinEvent {
    VerifyWebhook {
        challenge: Value,
    },
    /// The authorised account received a private message.
    ImReceiveMsg(ImMessage),
    /// The authorised account sent a private message.
    ImSendMsg(ImMessage),
    ImEnterDirectMsg(ImEnter),
    ImAuthorize(ImAuthorize),
    NewFollowAction(FollowAction),
    GroupFansEvent(GroupFans),
}

/// `content` of `im_receive_msg` / `im_send_msg`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImMessage {
    pub conversation_short_id: Option<String>,
    pub server_message_id: Option<String>,
    /// `text`, `image`, `emoji`, `video`, `user_local_image`, `retain_consult_card`, `other`, …
    pub message_type: String,
    pub text: Option<String>,
    /// The client key of the app that sent it through the API; empty when sent in the app.
    pub source: Option<String>,
    /// Milliseconds (`create_time`, documented as a 13-digit timestamp).
    pub create_time: Option<i64>,
    pub users: Vec<UserInfo>,
}

/// `content.user_infos[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub open_id: String,
    pub nick_name: Option<String>,
    pub avatar: Option<String>,
}

/// `content` of `im_enter_direct_msg`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImEnter {
    pub conversation_short_id: Option<String>,
    pub server_message_id: Option<String>,
    pub scene_type: Option<i64>,
    /// The video the user came from (`objectId`).
    pub object_id: Option<String>,
    pub create_time: Option<i64>,
    pub users: Vec<UserInfo>,
}

/// `content` of `im_authorize`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImAuthorize {
    /// 1 = authorised (授权中), 2 = not authorised (未授权).
    pub auth_status: i64,
    /// 1 = new, 2 = update.
    pub operation_type: Option<i64>,
    /// The scene to send with (`im.direct_message.bind`).
    pub source: Option<String>,
    /// Seconds.
    pub create_time: Option<i64>,
    pub update_time: Option<i64>,
    pub expire_time: Option<i64>,
}

/// `content` of `new_follow_action`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FollowAction {
    /// 1 = follow, the only value documented.
    pub action_type: i64,
    /// Seconds.
    pub action_time: Option<i64>,
}

/// `content` of `group_fans_event`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupFans {
    pub im_group_id: String,
    /// 1 = joined, the only value documented.
    pub group_type: i64,
    /// 2 = anchor fan group, 5 = 万粉群 (sent as a number or a string).
    pub create_group_type: Option<String>,
    /// Milliseconds.
    pub create_time: Option<i64>,
}

/// Parses a (verified) body. `Ok(None)` for an event this module does not map.
pub fn parse(body: &[u8], header_msg_id: Option<&str>) -> Result<Option<Notification>, DouyinWebhookError> {
    let raw: RawEnvelope =
        serde_json::from_slice(body).map_err(|e| DouyinWebhookError::MalformedJson(e.to_string()))?;
    let content = content_object(&raw.event, raw.content)?;
    let envelope = Envelope {
        event: raw.event,
        from_user_id: raw.from_user_id.unwrap_or_default(),
        to_user_id: raw.to_user_id.unwrap_or_default(),
        client_key: raw.client_key.unwrap_or_default(),
        log_id: raw.log_id.and_then(|v| scalar_string(&v)),
        msg_id: raw.msg_id.and_then(|v| scalar_string(&v)),
        header_msg_id: header_msg_id.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string),
    };
    let event = match envelope.event.as_str() {
        "verify_webhook" => {
            DouyinEvent::VerifyWebhook { challenge: content.get("challenge").cloned().unwrap_or(Value::Null) }
        }
        "im_receive_msg" => DouyinEvent::ImReceiveMsg(im_message(&content)),
        "im_send_msg" => DouyinEvent::ImSendMsg(im_message(&content)),
        "im_enter_direct_msg" => DouyinEvent::ImEnterDirectMsg(ImEnter {
            conversation_short_id: str_field(&content, "conversation_short_id"),
            server_message_id: str_field(&content, "server_message_id"),
            scene_type: int_field(&content, "scene_type"),
            object_id: str_field(&content, "objectId").or_else(|| str_field(&content, "object_id")),
            create_time: int_field(&content, "create_time"),
            users: users(&content),
        }),
        "im_authorize" => DouyinEvent::ImAuthorize(ImAuthorize {
            auth_status: int_field(&content, "auth_status").unwrap_or(0),
            operation_type: int_field(&content, "operation_type"),
            source: str_field(&content, "source"),
            create_time: int_field(&content, "create_time"),
            update_time: int_field(&content, "update_time"),
            expire_time: int_field(&content, "expire_time"),
        }),
        "new_follow_action" => DouyinEvent::NewFollowAction(FollowAction {
            action_type: int_field(&content, "action_type").unwrap_or(0),
            action_time: int_field(&content, "action_time"),
        }),
        "group_fans_event" => DouyinEvent::GroupFansEvent(GroupFans {
            im_group_id: str_field(&content, "im_group_id").unwrap_or_default(),
            group_type: int_field(&content, "group_type").unwrap_or(0),
            create_group_type: str_field(&content, "create_group_type"),
            create_time: int_field(&content, "create_time"),
        }),
        _ => return Ok(None),
    };
    let body_hash = hex::encode(&Sha1::digest(body)[..]);
    Ok(Some(Notification { envelope, event, body_hash }))
}

impl Notification {
    /// The siyu event this notification records, or `None` for the cases documented as ignored
    /// (and for `verify_webhook`).
    pub fn to_event(&self, account: &str, received_at: Millis) -> Result<Option<Event>, DouyinWebhookError> {
        let env = &self.envelope;
        let draft = match &self.event {
            DouyinEvent::VerifyWebhook { .. } => return Ok(None),
            DouyinEvent::ImReceiveMsg(m) => {
                let mut props = im_properties(m, &env.to_user_id);
                if let Some(text) = &m.text {
                    props.insert("text".into(), json!(text));
                    if is_unsubscribe(text) {
                        props.insert("unsubscribe".into(), json!(true));
                    }
                }
                Draft::new("message_in", &env.from_user_id, platform_time(m.create_time), props)
                    .traits(user_traits(&m.users, &env.from_user_id))
            }
            DouyinEvent::ImSendMsg(m) => {
                if m.source.as_deref().is_some_and(|s| !s.is_empty() && s == env.client_key) {
                    return Ok(None);
                }
                let mut props = im_properties(m, &env.from_user_id);
                if let Some(text) = &m.text {
                    props.insert("text".into(), json!(text));
                }
                Draft::new("message_out", &env.to_user_id, platform_time(m.create_time), props)
            }
            DouyinEvent::ImEnterDirectMsg(e) => {
                let mut props = Map::new();
                insert_opt(&mut props, "conversation_id", &e.conversation_short_id);
                insert_opt(&mut props, "server_message_id", &e.server_message_id);
                if let Some(scene) = e.scene_type {
                    props.insert("scene_type".into(), json!(scene));
                }
                props.insert("operator_open_id".into(), json!(env.to_user_id));
                let mut draft = Draft::new(IM_ENTER_EVENT_TYPE, &env.from_user_id, platform_time(e.create_time), props)
                    .traits(user_traits(&e.users, &env.from_user_id));
                if let Some(video) = e.object_id.as_deref().filter(|v| !v.is_empty()) {
                    draft.source = Some(json!({ "kind": "video", "id": video }));
                }
                draft
            }
            DouyinEvent::ImAuthorize(a) => {
                let kind = match a.auth_status {
                    1 => "consent_granted",
                    2 => "consent_revoked",
                    _ => return Ok(None),
                };
                let mut props = Map::new();
                props.insert("purpose".into(), json!(CONSENT_PURPOSE));
                insert_opt(&mut props, "scene", &a.source);
                if let Some(expire) = platform_time(a.expire_time) {
                    props.insert("expires_at".into(), json!(expire.to_rfc3339()));
                }
                if let Some(op) = a.operation_type {
                    props.insert("operation_type".into(), json!(op));
                }
                props.insert("operator_open_id".into(), json!(env.to_user_id));
                Draft::new(kind, &env.from_user_id, platform_time(a.update_time.or(a.create_time)), props)
            }
            DouyinEvent::NewFollowAction(f) => {
                if f.action_type != 1 {
                    return Ok(None);
                }
                let mut props = Map::new();
                props.insert("operator_open_id".into(), json!(env.to_user_id));
                Draft::new("follow", &env.from_user_id, platform_time(f.action_time), props)
            }
            DouyinEvent::GroupFansEvent(g) => {
                if g.group_type != 1 {
                    return Ok(None);
                }
                let mut props = Map::new();
                props.insert("group_id".into(), json!(g.im_group_id));
                if let Some(t) = &g.create_group_type {
                    props.insert("create_group_type".into(), json!(t));
                }
                props.insert("owner_open_id".into(), json!(env.to_user_id));
                Draft::new("group_join", &env.from_user_id, platform_time(g.create_time), props)
            }
        };
        draft.into_event(self, account, received_at).map(Some)
    }

    /// The stable `message_id` of this notification's event (see the module docs).
    pub fn message_id(&self) -> String {
        let env = &self.envelope;
        let server_message_id = match &self.event {
            DouyinEvent::ImReceiveMsg(m) | DouyinEvent::ImSendMsg(m) => m.server_message_id.clone(),
            DouyinEvent::ImEnterDirectMsg(e) => e.server_message_id.clone(),
            _ => None,
        };
        let id = env
            .header_msg_id
            .clone()
            .or_else(|| env.msg_id.clone())
            .or(server_message_id)
            .or_else(|| env.log_id.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.body_hash.clone());
        let full = format!("douyin:{}:{id}", env.event);
        if full.len() <= 200 && !full.chars().any(char::is_control) {
            return full;
        }
        // Event log ids are at most 200 bytes without control characters; a longer platform id
        // is hashed, which keeps it stable across retries all the same.
        format!("douyin:{}:{}", env.event, hex::encode(&Sha1::digest(id.as_bytes())[..]))
    }
}

/// Is this inbound text an unsubscribe request (退订, TD)? Whitespace and trailing punctuation
/// are ignored, letters compared case-insensitively. What it means is the engine's decision.
pub fn is_unsubscribe(text: &str) -> bool {
    let core: String = text
        .trim()
        .trim_matches(|c: char| c.is_whitespace() || c.is_ascii_punctuation() || "。！，、？～".contains(c))
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_uppercase();
    matches!(core.as_str(), "退订" | "TD" | "ＴＤ" | "取消订阅")
}

/// An event being built: its wire form is siyu's native event, validated by the one entry point
/// every other path uses.
struct Draft {
    kind: &'static str,
    open_id: String,
    timestamp: Option<Millis>,
    properties: Map<String, Value>,
    traits: Option<Map<String, Value>>,
    source: Option<Value>,
}

impl Draft {
    fn new(kind: &'static str, open_id: &str, timestamp: Option<Millis>, properties: Map<String, Value>) -> Draft {
        Draft { kind, open_id: open_id.to_string(), timestamp, properties, traits: None, source: None }
    }

    fn traits(mut self, traits: Option<Map<String, Value>>) -> Draft {
        self.traits = traits;
        self
    }

    fn into_event(self, n: &Notification, account: &str, received_at: Millis) -> Result<Event, DouyinWebhookError> {
        let invalid = |message: String| DouyinWebhookError::InvalidEvent { event: n.envelope.event.clone(), message };
        if self.open_id.trim().is_empty() {
            return Err(invalid("the user's open id (from_user_id / to_user_id) is missing".into()));
        }
        let mut native = Map::new();
        native.insert("message_id".into(), json!(n.message_id()));
        native.insert("type".into(), json!(self.kind));
        native.insert("channel".into(), json!("douyin"));
        native.insert("account".into(), json!(account));
        native.insert("identities".into(), json!({ "douyin_open_id": self.open_id }));
        // A platform clock before 2000 or too far ahead is not worth refusing the fact for: the
        // arrival time stands in for it.
        let limits = TimeLimits::default();
        let timestamp = self
            .timestamp
            .filter(|t| *t >= limits.oldest && t.0 <= received_at.0 + limits.max_future_ms)
            .unwrap_or(received_at);
        native.insert("timestamp".into(), json!(timestamp.to_rfc3339()));
        native.insert("properties".into(), Value::Object(self.properties));
        if let Some(traits) = self.traits {
            native.insert("traits".into(), Value::Object(traits));
        }
        if let Some(source) = self.source {
            native.insert("source".into(), source);
        }
        native.insert("context".into(), json!({ "douyin": { "event": n.envelope.event, "client_key": n.envelope.client_key, "log_id": n.envelope.log_id } }));
        let text = Value::Object(native).to_string();
        parse_native(&text, received_at, limits).map_err(|e| invalid(e.to_string()))
    }
}

#[derive(Deserialize)]
struct RawEnvelope {
    event: String,
    #[serde(default)]
    from_user_id: Option<String>,
    #[serde(default)]
    to_user_id: Option<String>,
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    log_id: Option<Value>,
    #[serde(default)]
    msg_id: Option<Value>,
}

fn signature_bytes(secret: &str, body: &[u8]) -> [u8; 20] {
    let mut hasher = Sha1::new();
    hasher.update(secret.as_bytes());
    hasher.update(body);
    hasher.finalize().into()
}

/// Equality whose time does not depend on where the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn event_name(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("event").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

/// `content` as an object, whether sent as one or as a JSON string holding one.
fn content_object(event: &str, content: Value) -> Result<Map<String, Value>, DouyinWebhookError> {
    match content {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        Value::String(text) if text.trim().is_empty() => Ok(Map::new()),
        Value::String(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(DouyinWebhookError::MalformedJson(format!("{event}: content is not a JSON object"))),
        },
        _ => Err(DouyinWebhookError::MalformedJson(format!("{event}: content is not a JSON object"))),
    }
}

fn im_message(content: &Map<String, Value>) -> ImMessage {
    ImMessage {
        conversation_short_id: str_field(content, "conversation_short_id"),
        server_message_id: str_field(content, "server_message_id"),
        message_type: str_field(content, "message_type").unwrap_or_default(),
        text: str_field(content, "text"),
        source: str_field(content, "source"),
        create_time: int_field(content, "create_time"),
        users: users(content),
    }
}

fn users(content: &Map<String, Value>) -> Vec<UserInfo> {
    let Some(Value::Array(list)) = content.get("user_infos") else {
        return Vec::new();
    };
    list.iter()
        .filter_map(Value::as_object)
        .map(|u| UserInfo {
            open_id: str_field(u, "open_id").unwrap_or_default(),
            nick_name: str_field(u, "nick_name"),
            avatar: str_field(u, "avatar"),
        })
        .collect()
}

fn im_properties(m: &ImMessage, operator_open_id: &str) -> Map<String, Value> {
    let mut props = Map::new();
    props.insert("message_type".into(), json!(m.message_type));
    insert_opt(&mut props, "conversation_id", &m.conversation_short_id);
    insert_opt(&mut props, "server_message_id", &m.server_message_id);
    props.insert("operator_open_id".into(), json!(operator_open_id));
    props
}

fn user_traits(users: &[UserInfo], open_id: &str) -> Option<Map<String, Value>> {
    let user = users.iter().find(|u| u.open_id == open_id)?;
    let mut traits = Map::new();
    insert_opt(&mut traits, "nickname", &user.nick_name);
    insert_opt(&mut traits, "avatar", &user.avatar);
    (!traits.is_empty()).then_some(traits)
}

fn insert_opt(map: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
        map.insert(key.into(), json!(v));
    }
}

fn str_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(scalar_string)
}

fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int_field(map: &Map<String, Value>, key: &str) -> Option<i64> {
    match map.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A platform timestamp: the pages document milliseconds for some events and seconds for
/// others, so a 10-digit value is read as seconds and a 13-digit one as milliseconds.
fn platform_time(value: Option<i64>) -> Option<Millis> {
    value.filter(|v| *v > 0).map(|v| if v < 100_000_000_000 { Millis(v * 1000) } else { Millis(v) })
}

#[cfg(test)]
mod tests {
    use siyu_model::event::EventKind;
    use siyu_model::{Channel, EventType, IdentityKind};

    use super::*;

    const SECRET: &str = "test-client-secret";

    fn now() -> Millis {
        Millis::parse_rfc3339("2026-11-03T00:00:00Z").unwrap()
    }

    fn signed(body: &str) -> (String, String) {
        (body.to_string(), sign(SECRET, body.as_bytes()))
    }

    fn run(body: &str) -> Result<WebhookOutcome, DouyinWebhookError> {
        let (body, sig) = signed(body);
        handle(SECRET, WebhookHeaders { signature: Some(&sig), msg_id: None }, body.as_bytes(), "brand-main", now())
    }

    fn event_of(body: &str) -> Event {
        match run(body).unwrap() {
            WebhookOutcome::Event(e) => *e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn props(e: &Event) -> Value {
        serde_json::from_str(e.properties.as_ref().unwrap().get()).unwrap()
    }

    // The documented sample of the signature page, signed the way its Go example does.
    const VERIFY_BODY: &str = r#"{"event":"verify_webhook","client_key":"abc","content":{"challenge":12345}}"#;

    #[test]
    fn signature_matches_the_documented_scheme() {
        // sha1("test-client-secret" + body), computed once with Python's hashlib.
        let by_hand = "e50f89a2e06e2708ca5dafea2eec97a3bef11951";
        assert_eq!(sign(SECRET, VERIFY_BODY.as_bytes()), by_hand);
        assert_eq!(verify_signature(SECRET, Some(by_hand), VERIFY_BODY.as_bytes()), Ok(()));
        assert_eq!(verify_signature(SECRET, Some(&by_hand.to_uppercase()), VERIFY_BODY.as_bytes()), Ok(()));
    }

    #[test]
    fn signature_rejections() {
        let sig = sign(SECRET, VERIFY_BODY.as_bytes());
        assert_eq!(
            verify_signature("another-secret", Some(&sig), VERIFY_BODY.as_bytes()),
            Err(DouyinWebhookError::BadSignature)
        );
        let tampered = VERIFY_BODY.replace("12345", "12346");
        assert_eq!(verify_signature(SECRET, Some(&sig), tampered.as_bytes()), Err(DouyinWebhookError::BadSignature));
        assert_eq!(verify_signature(SECRET, None, VERIFY_BODY.as_bytes()), Err(DouyinWebhookError::MissingSignature));
        assert_eq!(
            verify_signature(SECRET, Some("  "), VERIFY_BODY.as_bytes()),
            Err(DouyinWebhookError::MissingSignature)
        );
        assert_eq!(
            verify_signature(SECRET, Some("not-hex"), VERIFY_BODY.as_bytes()),
            Err(DouyinWebhookError::BadSignature)
        );
        let err = handle(SECRET, WebhookHeaders::default(), VERIFY_BODY.as_bytes(), "a", now()).unwrap_err();
        assert_eq!((err.code(), err.http_status()), ("missing_signature", 401));
    }

    #[test]
    fn challenge_is_echoed_with_its_type() {
        match run(VERIFY_BODY).unwrap() {
            WebhookOutcome::Challenge { response_body } => assert_eq!(response_body, r#"{"challenge":12345}"#),
            other => panic!("{other:?}"),
        }
        match run(r#"{"event":"verify_webhook","client_key":"","content":"{\"challenge\":\"abc\"}"}"#).unwrap() {
            WebhookOutcome::Challenge { response_body } => assert_eq!(response_body, r#"{"challenge":"abc"}"#),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_bodies_are_specific_errors() {
        assert_eq!(run("not json").unwrap_err().code(), "malformed_json");
        assert_eq!(run(r#"{"client_key":"x"}"#).unwrap_err().code(), "malformed_json");
        assert_eq!(run(r#"{"event":"im_receive_msg","content":"[1,2]"}"#).unwrap_err().code(), "malformed_json");
        let err = run(r#"{"event":"new_follow_action","content":{"action_type":1}}"#).unwrap_err();
        assert_eq!(err.code(), "invalid_event");
    }

    #[test]
    fn unknown_events_are_ignored() {
        let body = r#"{"event":"create_video","from_user_id":"u","client_key":"k","content":{"item_id":"1"}}"#;
        match run(body).unwrap() {
            WebhookOutcome::Ignored { event } => assert_eq!(event, "create_video"),
            other => panic!("{other:?}"),
        }
        assert!(parse(body.as_bytes(), None).unwrap().is_none());
    }

    // The text-message sample of the private-message webhook page (ids shortened).
    const RECEIVE_TEXT: &str = r#"{
        "event": "im_receive_msg",
        "client_key": "asdfavetgbvasf",
        "from_user_id": "ac6479a5-d7a6-4018-84be-c29bfc00000",
        "to_user_id": "aaa-7ae0-4399-914a-5eb1df5861ba",
        "log_id": "2023429834752345783",
        "content": {
            "conversation_short_id": "@c29bfc000+MNggFhRkwGuX1ntuc0QfA0Vnm==",
            "server_message_id": "@c29bfc000+MNggFhRkwGuX1ntuc0RPc0VH==",
            "conversation_type": 1,
            "message_type": "text",
            "text": "你好，想问下价格",
            "source": "",
            "create_time": 1698136352000,
            "user_infos": [{"open_id": "ac6479a5-d7a6-4018-84be-c29bfc00000", "nick_name": "小王", "avatar": "https://p3.douyinpic.com/a.jpeg"}]
        }
    }"#;

    #[test]
    fn received_text_becomes_message_in() {
        let e = event_of(RECEIVE_TEXT);
        assert_eq!(e.kind, EventKind::Known(EventType::MessageIn));
        assert_eq!(e.channel, Channel::Douyin);
        assert_eq!(e.account, "brand-main");
        assert_eq!(e.identities.len(), 1);
        assert_eq!(e.identities[0].kind, IdentityKind::DouyinOpenId);
        assert_eq!(e.identities[0].value, "ac6479a5-d7a6-4018-84be-c29bfc00000");
        assert_eq!(e.timestamp, Millis(1_698_136_352_000));
        assert_eq!(e.message_id, "douyin:im_receive_msg:@c29bfc000+MNggFhRkwGuX1ntuc0RPc0VH==");
        let p = props(&e);
        assert_eq!(p["text"], "你好，想问下价格");
        assert_eq!(p["conversation_id"], "@c29bfc000+MNggFhRkwGuX1ntuc0QfA0Vnm==");
        assert_eq!(p["operator_open_id"], "aaa-7ae0-4399-914a-5eb1df5861ba");
        assert!(p.get("unsubscribe").is_none());
        let traits: Value = serde_json::from_str(e.traits.as_ref().unwrap().get()).unwrap();
        assert_eq!(traits["nickname"], "小王");
    }

    #[test]
    fn unsubscribe_texts_are_flagged() {
        for text in ["退订", " TD ", "td", "退订。", "ＴＤ"] {
            let body = RECEIVE_TEXT.replace("你好，想问下价格", text);
            assert_eq!(props(&event_of(&body))["unsubscribe"], true, "{text:?}");
        }
        for text in ["TDD", "不要退订", "退订了吗 我想买"] {
            assert!(!is_unsubscribe(text), "{text:?}");
        }
    }

    #[test]
    fn retries_get_the_same_message_id() {
        let (body, sig) = signed(RECEIVE_TEXT);
        let headers = WebhookHeaders { signature: Some(&sig), msg_id: Some("msg-7788") };
        let first = handle(SECRET, headers, body.as_bytes(), "a", now()).unwrap();
        let again = handle(SECRET, headers, body.as_bytes(), "a", Millis(now().0 + 5_000)).unwrap();
        let (WebhookOutcome::Event(a), WebhookOutcome::Event(b)) = (first, again) else { panic!() };
        assert_eq!(a.message_id, "douyin:im_receive_msg:msg-7788");
        assert_eq!(a.message_id, b.message_id);
        // Without any id the body decides, so the same body is still the same id.
        let bare =
            r#"{"event":"new_follow_action","from_user_id":"u1","to_user_id":"b1","content":"{\"action_type\":1}"}"#;
        assert_eq!(event_of(bare).message_id, event_of(bare).message_id);
    }

    #[test]
    fn own_api_sends_are_not_recorded_twice() {
        let sent = RECEIVE_TEXT
            .replace("im_receive_msg", "im_send_msg")
            .replace(r#""source": """#, r#""source": "asdfavetgbvasf""#);
        assert!(matches!(run(&sent).unwrap(), WebhookOutcome::Ignored { .. }));
        let by_hand = RECEIVE_TEXT.replace("im_receive_msg", "im_send_msg");
        let e = event_of(&by_hand);
        assert_eq!(e.kind, EventKind::Known(EventType::MessageOut));
        assert_eq!(e.identities[0].value, "aaa-7ae0-4399-914a-5eb1df5861ba");
    }

    // The sample of the new_follow_action page.
    #[test]
    fn follow_action_becomes_follow() {
        let body = r#"{ "event": "new_follow_action", "client_key": "awr8bfr64vxgk036", "from_user_id": "5bfa0218-477c-4d51-865c-64f0588794a6", "to_user_id": "e3af6e1d-d83a-4116-8f9f-5cb8ac2413c7", "content": "{\"action_type\":1,\"action_time\":1686811643}", "log_id": "202306151447300000000000005369C6D" }"#;
        let e = event_of(body);
        assert_eq!(e.kind, EventKind::Known(EventType::Follow));
        assert_eq!(e.identities[0].value, "5bfa0218-477c-4d51-865c-64f0588794a6");
        assert_eq!(e.timestamp, Millis(1_686_811_643_000));
        assert_eq!(e.message_id, "douyin:new_follow_action:202306151447300000000000005369C6D");
        let other = body.replace(r#"\"action_type\":1"#, r#"\"action_type\":2"#);
        assert!(matches!(run(&other).unwrap(), WebhookOutcome::Ignored { .. }));
    }

    // The sample of the group_fans_event page.
    #[test]
    fn group_fans_event_becomes_group_join() {
        let body = r#"{ "event": "group_fans_event", "client_key": "gjegd89bebgd9uehd", "from_user_id": "500a9e2f-ca96-4225-865d-a341914502ae", "to_user_id": "a70c3dde-d0f3-45b3-828e-0f1a81cd5245", "content": "{\"open_id\":\"500a9e2f-ca96-4225-865d-a341914502ae\",\"im_group_id\":\"@9VxQh6rGTNAjPS/4do48Es7912frNf2APZB0rQqgKFMUafD160zdRmYqig357zEBN69eGVtkZMdXc4EKtu****==\",\"group_type\":1,\"create_time\":1681720393151,\"create_group_type\":\"5\"}", "log_id": "02168172039281400000000000000000000ffff0ac64157ea0731" }"#;
        let e = event_of(body);
        assert_eq!(e.kind, EventKind::Known(EventType::GroupJoin));
        assert_eq!(
            e.group_id.as_deref(),
            Some("@9VxQh6rGTNAjPS/4do48Es7912frNf2APZB0rQqgKFMUafD160zdRmYqig357zEBN69eGVtkZMdXc4EKtu****==")
        );
        assert_eq!(e.timestamp, Millis(1_681_720_393_151));
        assert_eq!(props(&e)["create_group_type"], "5");
    }

    // The sample of the im_authorize page.
    #[test]
    fn im_authorize_becomes_consent() {
        let body = r#"{ "event": "im_authorize", "from_user_id": "c-user-1", "to_user_id": "b-user-1", "client_key": "tt123", "content": "{\"create_time\":1670229453,\"expire_time\":1672821453,\"update_time\":1670229453,\"operation_type\":1,\"auth_status\":1,\"source\":\"im.direct_message.bind\",\"extra\":\"{}\"}", "log_id": "2022120516373301015903714833078B1B" }"#;
        let e = event_of(body);
        assert_eq!(e.kind, EventKind::Known(EventType::ConsentGranted));
        assert_eq!(e.identities[0].value, "c-user-1");
        assert_eq!(e.timestamp, Millis(1_670_229_453_000));
        let p = props(&e);
        assert_eq!(p["purpose"], "douyin_im");
        assert_eq!(p["scene"], "im.direct_message.bind");
        assert_eq!(p["expires_at"], "2023-01-04T08:37:33.000Z");
        let revoked = body.replace(r#"\"auth_status\":1"#, r#"\"auth_status\":2"#);
        assert_eq!(event_of(&revoked).kind, EventKind::Known(EventType::ConsentRevoked));
    }

    #[test]
    fn entering_the_conversation_is_a_custom_event() {
        let body = r#"{ "event": "im_enter_direct_msg", "client_key": "aaaoqobz68a71u1", "from_user_id": "aaa-8a0b-4c0f-b04f-feba0e909113", "to_user_id": "aaa-81ec-424c-b738-8693eeaf53ea", "content": "{\"conversation_short_id\":\"@9Vxc1/yDU8sqaS\",\"server_message_id\":\"@9Vxc1/sm\",\"conversation_type\":1,\"objectId\":\"7234\",\"scene_type\":1,\"create_time\":1683603015000}" }"#;
        let e = event_of(body);
        assert_eq!(e.kind, EventKind::Custom(IM_ENTER_EVENT_TYPE.into()));
        assert_eq!(e.source.as_ref().unwrap().key(), "video:7234");
        assert_eq!(props(&e)["conversation_id"], "@9Vxc1/yDU8sqaS");
    }

    #[test]
    fn implausible_platform_times_fall_back_to_arrival() {
        let body = RECEIVE_TEXT.replace("1698136352000", "0");
        assert_eq!(event_of(&body).timestamp, now());
        let future = RECEIVE_TEXT.replace("1698136352000", "4102444800000");
        assert_eq!(event_of(&future).timestamp, now());
    }
}
