//! A local stand-in for WeCom's server API (feature `stand-in`), so the client, the connector and
//! later the server's end-to-end tests run against WeCom's documented JSON without WeCom.
//!
//! It answers `gettoken` (tokens expire after [`StandInConfig::token_ttl`]: 42001 for an expired
//! token, 40014 for an unknown one, 41001 for none) and, with `errcode`/`errmsg` like WeCom,
//! `externalcontact/list`, `get`, `batch/get_by_user`, `add_msg_template`,
//! `get_groupmsg_send_result`, `get_groupmsg_list_v2`, `remind_groupmsg_send`,
//! `cancel_groupmsg_send` (a stopped task can no longer be confirmed), `send_welcome_msg`,
//! `mark_tag` and `add_contact_way`. Customers are the `(staff, external_userid)` pairs it is given (with the
//! `state` of the contact way they added through, [`StandInState::add_contact_through`]); a mass task
//! puts recipients who are not the sender's customers in `fail_list`. Staff confirmation is
//! simulated by [`StandInState::confirm`] (send results go from 0 to 1).
//!
//! It can also misbehave: an optional frequency limit (45009 past `max_calls` per window), and
//! [`Fault`]s injected for the next N calls (HTTP 503, a garbage body, a delay, or an answer lost
//! after the request took effect).
//!
//! Everything it accepted is recorded and readable in-process ([`StandInState::received`]) or, when
//! it runs as a separate process, at `GET /__stand_in/received` (JSON: `gettoken_calls`, `calls`
//! per path, `templates` with their `external_userids` and statuses, `welcomes`, `tags`,
//! `contact_ways`), so a test can count exactly what each customer received. Errcodes the
//! documentation does not fix for a case (an unknown msgid, a used welcome code) are 40058
//! ("invalid parameter") here.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

/// How the stand-in behaves.
#[derive(Debug, Clone)]
pub struct StandInConfig {
    pub corp_id: String,
    pub corp_secret: String,
    /// `expires_in` of the tokens it hands out (WeCom: 7200 s).
    pub token_ttl: Duration,
    /// Answer 45009 past this many API calls (gettoken excluded) per window.
    pub rate_limit: Option<RateLimit>,
    /// `(staff userid, external userid)`: who is whose customer.
    pub contacts: Vec<(String, String)>,
}

impl Default for StandInConfig {
    fn default() -> Self {
        StandInConfig {
            corp_id: "ww-stand-in".into(),
            corp_secret: "stand-in-secret".into(),
            token_ttl: Duration::from_secs(7200),
            rate_limit: None,
            contacts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max_calls: u32,
    pub window: Duration,
}

/// A misbehaviour for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 503 before anything is done.
    Unavailable,
    /// HTTP 200 with a body that is not JSON, before anything is done.
    Garbage,
    /// Answers after this delay (longer than the client's timeout: a timeout).
    Delay(Duration),
    /// Carries the request out, then answers HTTP 503: the outcome is lost.
    AnswerLost,
}

/// What the stand-in accepted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Received {
    pub gettoken_calls: u64,
    /// Calls answered per path (gettoken included, faults excluded).
    pub calls: BTreeMap<String, u64>,
    pub templates: Vec<TemplateRecord>,
    pub welcomes: Vec<WelcomeRecord>,
    pub tags: Vec<TagRecord>,
    pub contact_ways: Vec<ContactWayRecord>,
}

impl Received {
    /// How many accepted messages (mass tasks and welcome messages) address this customer; a
    /// cancelled task only for those it reached before it was stopped.
    pub fn messages_to(&self, external_userid: &str) -> usize {
        let tasks = self
            .templates
            .iter()
            .filter(|t| t.external_userids.iter().any(|id| id == external_userid))
            .filter(|t| !t.cancelled || t.statuses.get(external_userid) == Some(&1))
            .count();
        let welcomes = self.welcomes.iter().filter(|w| w.external_userid.as_deref() == Some(external_userid)).count();
        tasks + welcomes
    }

    pub fn calls_to(&self, path: &str) -> u64 {
        self.calls.get(path).copied().unwrap_or_default()
    }
}

/// An accepted `add_msg_template`.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateRecord {
    pub msgid: String,
    pub sender: String,
    /// The recipients accepted (not in `fail_list`).
    pub external_userids: Vec<String>,
    pub fail_list: Vec<String>,
    pub text: Option<String>,
    pub attachments: Vec<Value>,
    pub create_time: i64,
    /// external userid → 0 unsent, 1 sent, 2 not a contact, 3 quota reached.
    pub statuses: BTreeMap<String, u32>,
    /// `remind_groupmsg_send` calls for this task (the staff member was reminded).
    pub reminders: u32,
    /// `cancel_groupmsg_send` stopped it: the staff member can no longer confirm it.
    pub cancelled: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct WelcomeRecord {
    pub welcome_code: String,
    /// Known when the code came from [`StandInState::issue_welcome_code`].
    pub external_userid: Option<String>,
    pub text: Option<String>,
    pub attachments: Vec<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TagRecord {
    pub userid: String,
    pub external_userid: String,
    pub add_tag: Vec<String>,
    pub remove_tag: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContactWayRecord {
    pub config_id: String,
    pub request: Value,
}

/// The stand-in's state, shared by its handlers and the test that drives it.
#[derive(Clone)]
pub struct StandInState {
    inner: Arc<Mutex<Inner>>,
}

impl StandInState {
    pub fn new(config: StandInConfig) -> StandInState {
        StandInState {
            inner: Arc::new(Mutex::new(Inner {
                config,
                tokens: HashMap::new(),
                next_id: 1,
                faults: VecDeque::new(),
                window: None,
                welcome_codes: HashMap::new(),
                follow_states: HashMap::new(),
                received: Received::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A snapshot of everything accepted so far.
    pub fn received(&self) -> Received {
        self.lock().received.clone()
    }

    /// The next `times` calls suffer `fault` (after any faults already queued).
    pub fn inject(&self, fault: Fault, times: usize) {
        self.lock().faults.extend(std::iter::repeat_n(fault, times));
    }

    /// Every token handed out so far is expired from now on (the next call gets 42001).
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for expiry in self.lock().tokens.values_mut() {
            *expiry = now;
        }
    }

    /// Every token handed out so far is forgotten (the next call gets 40014).
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    pub fn add_contact(&self, staff_userid: &str, external_userid: &str) {
        self.lock().config.contacts.push((staff_userid.to_string(), external_userid.to_string()));
    }

    /// A customer added through a contact way: `follow_info.state` / `follow_user.state` carry
    /// its `state` from now on, as WeCom's do.
    pub fn add_contact_through(&self, staff_userid: &str, external_userid: &str, state: &str) {
        let mut inner = self.lock();
        let pair = (staff_userid.to_string(), external_userid.to_string());
        if !inner.config.contacts.contains(&pair) {
            inner.config.contacts.push(pair.clone());
        }
        inner.follow_states.insert(pair, state.to_string());
    }

    /// A welcome code as an add-contact callback would carry it.
    pub fn issue_welcome_code(&self, staff_userid: &str, external_userid: &str) -> String {
        let mut inner = self.lock();
        let code = format!("WELCOME{}", inner.next_id);
        inner.next_id += 1;
        inner.welcome_codes.insert(code.clone(), Some((staff_userid.to_string(), external_userid.to_string())));
        code
    }

    /// The staff member confirmed the task: every unsent recipient becomes sent. False for an
    /// unknown msgid.
    pub fn confirm(&self, msgid: &str) -> bool {
        let mut inner = self.lock();
        let Some(template) = inner.received.templates.iter_mut().find(|t| t.msgid == msgid && !t.cancelled) else {
            return false;
        };
        for status in template.statuses.values_mut() {
            if *status == 0 {
                *status = 1;
            }
        }
        true
    }

    /// Sets one recipient's status (2 not a contact, 3 quota reached, ...).
    pub fn set_status(&self, msgid: &str, external_userid: &str, status: u32) {
        let mut inner = self.lock();
        if let Some(template) = inner.received.templates.iter_mut().find(|t| t.msgid == msgid) {
            template.statuses.insert(external_userid.to_string(), status);
        }
    }
}

/// Starts a stand-in on 127.0.0.1 (a free port); answers its base URL and the handle that keeps
/// it running (dropping the handle stops it).
pub struct WeComStandIn;

impl WeComStandIn {
    pub async fn start(config: StandInConfig) -> std::io::Result<(String, StandInHandle)> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let address = listener.local_addr()?;
        let state = StandInState::new(config);
        let task = tokio::spawn(serve(listener, state.clone()));
        Ok((format!("http://{address}"), StandInHandle { state, task }))
    }
}

/// A running stand-in.
pub struct StandInHandle {
    pub state: StandInState,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for StandInHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the stand-in on `listener` until the task is dropped (for a stand-in in its own process).
pub async fn serve(listener: tokio::net::TcpListener, state: StandInState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// The stand-in's routes: WeCom's `/cgi-bin/...` and the debug `GET /__stand_in/received`.
pub fn router(state: StandInState) -> Router {
    let api = Router::new()
        .route("/cgi-bin/{*path}", any(api))
        .layer(axum::middleware::from_fn_with_state(state.clone(), faults));
    Router::new().route("/__stand_in/received", get(received)).merge(api).with_state(state)
}

async fn received(State(state): State<StandInState>) -> Json<Received> {
    Json(state.received())
}

async fn faults(State(state): State<StandInState>, request: Request, next: Next) -> Response {
    let fault = state.lock().faults.pop_front();
    match fault {
        None => next.run(request).await,
        Some(Fault::Unavailable) => (StatusCode::SERVICE_UNAVAILABLE, "stand-in: unavailable").into_response(),
        Some(Fault::Garbage) => (StatusCode::OK, "<html><body>502 Bad Gateway</body></html>").into_response(),
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Some(Fault::AnswerLost) => {
            let _ = next.run(request).await;
            (StatusCode::SERVICE_UNAVAILABLE, "stand-in: answer lost").into_response()
        }
    }
}

async fn api(
    State(state): State<StandInState>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Json<Value> {
    let mut inner = state.lock();
    let path = format!("/cgi-bin/{path}");
    *inner.received.calls.entry(path.clone()).or_default() += 1;
    if path == "/cgi-bin/gettoken" {
        return Json(inner.gettoken(&query));
    }
    if let Err(answer) = inner.check_token(&query).and_then(|()| inner.check_rate()) {
        return Json(answer);
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(_) => return Json(error(47001, "data format error")),
        }
    };
    let answer = match path.as_str() {
        "/cgi-bin/externalcontact/list" => inner.list(&query),
        "/cgi-bin/externalcontact/get" => inner.get(&query),
        "/cgi-bin/externalcontact/batch/get_by_user" => inner.batch_get_by_user(&body),
        "/cgi-bin/externalcontact/add_msg_template" => inner.add_msg_template(&body),
        "/cgi-bin/externalcontact/get_groupmsg_send_result" => inner.send_result(&body),
        "/cgi-bin/externalcontact/remind_groupmsg_send" => inner.remind_or_cancel(&body, false),
        "/cgi-bin/externalcontact/cancel_groupmsg_send" => inner.remind_or_cancel(&body, true),
        "/cgi-bin/externalcontact/get_groupmsg_list_v2" => inner.group_msg_list(&body),
        "/cgi-bin/externalcontact/send_welcome_msg" => inner.send_welcome(&body),
        "/cgi-bin/externalcontact/mark_tag" => inner.mark_tag(&body),
        "/cgi-bin/externalcontact/add_contact_way" => inner.add_contact_way(&body),
        _ => error(40058, "unknown api (stand-in)"),
    };
    Json(answer)
}

struct Inner {
    config: StandInConfig,
    tokens: HashMap<String, Instant>,
    next_id: u64,
    faults: VecDeque<Fault>,
    window: Option<(Instant, u32)>,
    /// Welcome code → (staff, customer); `None` once used.
    welcome_codes: HashMap<String, Option<(String, String)>>,
    /// (staff, customer) → the state of the contact way the customer added through.
    follow_states: HashMap<(String, String), String>,
    received: Received,
}

fn ok(mut fields: Value) -> Value {
    fields["errcode"] = 0.into();
    fields["errmsg"] = "ok".into();
    fields
}

fn error(errcode: i64, errmsg: &str) -> Value {
    json!({ "errcode": errcode, "errmsg": errmsg })
}

fn text_of(body: &Value, key: &str) -> String {
    body[key].as_str().unwrap_or_default().to_string()
}

fn strings(body: &Value, key: &str) -> Vec<String> {
    body[key].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

/// `cursor` is an offset in the stand-in; answers the page and the next cursor.
fn page<T: Clone>(items: &[T], cursor: &str, limit: usize) -> (Vec<T>, String) {
    let start = cursor.parse::<usize>().unwrap_or(0).min(items.len());
    let end = (start + limit.max(1)).min(items.len());
    let next = if end < items.len() { end.to_string() } else { String::new() };
    (items[start..end].to_vec(), next)
}

impl Inner {
    fn new_id(&mut self, prefix: &str) -> String {
        let id = format!("{prefix}{:06}", self.next_id);
        self.next_id += 1;
        id
    }

    /// Adds `state` to a follow-user object when the customer came through a contact way.
    fn with_state(&self, follow: &mut Value, staff: &str, external: &str) {
        if let Some(state) = self.follow_states.get(&(staff.to_string(), external.to_string())) {
            follow["state"] = state.as_str().into();
        }
    }

    fn is_contact(&self, staff: &str, external: &str) -> bool {
        self.config.contacts.iter().any(|(s, e)| s == staff && e == external)
    }

    fn gettoken(&mut self, query: &HashMap<String, String>) -> Value {
        self.received.gettoken_calls += 1;
        if query.get("corpid") != Some(&self.config.corp_id) {
            return error(40013, "invalid corpid");
        }
        if query.get("corpsecret") != Some(&self.config.corp_secret) {
            return error(40001, "invalid credential");
        }
        let token = self.new_id("stand-in-token-");
        self.tokens.insert(token.clone(), Instant::now() + self.config.token_ttl);
        ok(json!({ "access_token": token, "expires_in": self.config.token_ttl.as_secs().max(1) }))
    }

    fn check_token(&self, query: &HashMap<String, String>) -> Result<(), Value> {
        let Some(token) = query.get("access_token").filter(|t| !t.is_empty()) else {
            return Err(error(41001, "access_token missing"));
        };
        match self.tokens.get(token) {
            None => Err(error(40014, "invalid access_token")),
            Some(expiry) if Instant::now() >= *expiry => Err(error(42001, "access_token expired")),
            Some(_) => Ok(()),
        }
    }

    fn check_rate(&mut self) -> Result<(), Value> {
        let Some(limit) = self.config.rate_limit else { return Ok(()) };
        let now = Instant::now();
        let (start, calls) = match self.window {
            Some((start, calls)) if now.duration_since(start) < limit.window => (start, calls),
            _ => (now, 0),
        };
        if calls >= limit.max_calls {
            self.window = Some((start, calls));
            return Err(error(45009, "api freq out of limit"));
        }
        self.window = Some((start, calls + 1));
        Ok(())
    }

    fn list(&self, query: &HashMap<String, String>) -> Value {
        let staff = query.get("userid").cloned().unwrap_or_default();
        let ids: Vec<&str> =
            self.config.contacts.iter().filter(|(s, _)| *s == staff).map(|(_, e)| e.as_str()).collect();
        if ids.is_empty() {
            return error(84061, "not external contact");
        }
        ok(json!({ "external_userid": ids }))
    }

    fn customer(external: &str) -> Value {
        json!({ "external_userid": external, "name": format!("customer {external}"), "type": 1, "gender": 0,
                "avatar": "" })
    }

    fn get(&self, query: &HashMap<String, String>) -> Value {
        let external = query.get("external_userid").cloned().unwrap_or_default();
        let follow: Vec<Value> = self
            .config
            .contacts
            .iter()
            .filter(|(_, e)| *e == external)
            .map(|(s, e)| {
                let mut follow = json!({ "userid": s, "remark": "", "description": "", "createtime": 1_700_000_000,
                                         "tags": [], "remark_mobiles": [], "add_way": 1 });
                self.with_state(&mut follow, s, e);
                follow
            })
            .collect();
        if follow.is_empty() {
            return error(40096, "invalid external userid");
        }
        ok(json!({ "external_contact": Inner::customer(&external), "follow_user": follow, "next_cursor": "" }))
    }

    fn batch_get_by_user(&self, body: &Value) -> Value {
        let staff = strings(body, "userid_list");
        if staff.is_empty() || staff.len() > 100 {
            return error(40058, "userid_list must hold 1 to 100 userids");
        }
        let pairs: Vec<&(String, String)> = self.config.contacts.iter().filter(|(s, _)| staff.contains(s)).collect();
        let limit = body["limit"].as_u64().unwrap_or(50).min(100) as usize;
        let (items, next) = page(&pairs, body["cursor"].as_str().unwrap_or(""), limit);
        let list: Vec<Value> = items
            .iter()
            .map(|(s, e)| {
                let mut follow = json!({ "userid": s, "remark": "", "description": "", "createtime": 1_700_000_000,
                                         "tag_id": [], "remark_mobiles": [], "add_way": 1 });
                self.with_state(&mut follow, s, e);
                json!({ "external_contact": Inner::customer(e), "follow_info": follow })
            })
            .collect();
        ok(json!({ "external_contact_list": list, "next_cursor": next }))
    }

    fn add_msg_template(&mut self, body: &Value) -> Value {
        let chat_type = body["chat_type"].as_str().unwrap_or("single");
        if chat_type != "single" {
            return error(40058, "the stand-in takes chat_type single only");
        }
        let sender = text_of(body, "sender");
        if sender.is_empty() {
            return error(40058, "sender required");
        }
        let recipients = strings(body, "external_userid");
        if recipients.is_empty() || recipients.len() > 10_000 {
            return error(40058, "external_userid must hold 1 to 10000 ids");
        }
        let text = body["text"]["content"].as_str().map(str::to_string).filter(|t| !t.is_empty());
        let attachments = body["attachments"].as_array().cloned().unwrap_or_default();
        if text.is_none() && attachments.is_empty() {
            return error(41048, "text and attachments are both empty");
        }
        if attachments.len() > 9 {
            return error(40058, "at most 9 attachments");
        }
        let mut seen = HashSet::new();
        let (accepted, fail_list): (Vec<String>, Vec<String>) =
            recipients.into_iter().filter(|r| seen.insert(r.clone())).partition(|r| self.is_contact(&sender, r));
        let msgid = self.new_id("msgSTANDIN");
        let statuses = accepted.iter().map(|id| (id.clone(), 0)).collect();
        self.received.templates.push(TemplateRecord {
            msgid: msgid.clone(),
            sender,
            external_userids: accepted,
            fail_list: fail_list.clone(),
            text,
            attachments,
            create_time: unix_now(),
            statuses,
            reminders: 0,
            cancelled: false,
        });
        ok(json!({ "fail_list": fail_list, "msgid": msgid }))
    }

    fn send_result(&self, body: &Value) -> Value {
        let msgid = text_of(body, "msgid");
        let staff = text_of(body, "userid");
        let Some(template) = self.received.templates.iter().find(|t| t.msgid == msgid) else {
            return error(40058, "invalid msgid");
        };
        let rows: Vec<Value> = if template.sender == staff {
            template
                .statuses
                .iter()
                .map(|(id, status)| {
                    let mut row = json!({ "external_userid": id, "userid": staff, "status": status });
                    if *status == 1 {
                        row["send_time"] = template.create_time.into();
                    }
                    row
                })
                .collect()
        } else {
            Vec::new()
        };
        let limit = body["limit"].as_u64().unwrap_or(500).clamp(1, 1000) as usize;
        let (items, next) = page(&rows, body["cursor"].as_str().unwrap_or(""), limit);
        ok(json!({ "send_list": items, "next_cursor": next }))
    }

    fn group_msg_list(&self, body: &Value) -> Value {
        let (Some(start), Some(end)) = (body["start_time"].as_i64(), body["end_time"].as_i64()) else {
            return error(40058, "start_time and end_time required");
        };
        if end < start || end - start > 31 * 86_400 {
            return error(40058, "the time range must be at most one month");
        }
        if body["chat_type"].as_str().unwrap_or("single") != "single" {
            return ok(json!({ "group_msg_list": [], "next_cursor": "" }));
        }
        // Everything recorded here was created through the API: create_type 0 (企业发表).
        let filter = body["filter_type"].as_u64().unwrap_or(2);
        let creator = body["creator"].as_str();
        let rows: Vec<Value> = if filter == 1 {
            Vec::new()
        } else {
            self.received
                .templates
                .iter()
                .filter(|t| t.create_time >= start && t.create_time <= end)
                .filter(|t| creator.is_none_or(|c| c == t.sender))
                .map(|t| {
                    let mut row = json!({ "msgid": t.msgid, "creator": t.sender, "create_time": t.create_time,
                                          "create_type": 0, "attachments": t.attachments });
                    if let Some(text) = &t.text {
                        row["text"] = json!({ "content": text });
                    }
                    row
                })
                .collect()
        };
        let limit = body["limit"].as_u64().unwrap_or(50).clamp(1, 100) as usize;
        let (items, next) = page(&rows, body["cursor"].as_str().unwrap_or(""), limit);
        ok(json!({ "group_msg_list": items, "next_cursor": next }))
    }

    fn send_welcome(&mut self, body: &Value) -> Value {
        let code = text_of(body, "welcome_code");
        let Some(Some((_, external))) = self.welcome_codes.get(&code).cloned() else {
            return error(40058, "invalid or used welcome_code");
        };
        let text = body["text"]["content"].as_str().map(str::to_string).filter(|t| !t.is_empty());
        let attachments = body["attachments"].as_array().cloned().unwrap_or_default();
        if text.is_none() && attachments.is_empty() {
            return error(41048, "text and attachments are both empty");
        }
        self.welcome_codes.insert(code.clone(), None);
        self.received.welcomes.push(WelcomeRecord {
            welcome_code: code,
            external_userid: Some(external),
            text,
            attachments,
        });
        ok(json!({}))
    }

    /// `remind_groupmsg_send` / `cancel_groupmsg_send` (`{"msgid"}`): the sender is reminded,
    /// or the task stopped; an unknown msgid is refused.
    fn remind_or_cancel(&mut self, body: &Value, cancel: bool) -> Value {
        let msgid = text_of(body, "msgid");
        let Some(template) = self.received.templates.iter_mut().find(|t| t.msgid == msgid) else {
            return error(41063, "invalid msgid");
        };
        if cancel {
            template.cancelled = true;
        } else {
            template.reminders += 1;
        }
        ok(json!({}))
    }

    fn mark_tag(&mut self, body: &Value) -> Value {
        let userid = text_of(body, "userid");
        let external_userid = text_of(body, "external_userid");
        let (add_tag, remove_tag) = (strings(body, "add_tag"), strings(body, "remove_tag"));
        if add_tag.is_empty() && remove_tag.is_empty() {
            return error(40058, "add_tag and remove_tag are both empty");
        }
        if !self.is_contact(&userid, &external_userid) {
            return error(84061, "not external contact");
        }
        self.received.tags.push(TagRecord { userid, external_userid, add_tag, remove_tag });
        ok(json!({}))
    }

    fn add_contact_way(&mut self, body: &Value) -> Value {
        let kind = body["type"].as_u64().unwrap_or(0);
        let scene = body["scene"].as_u64().unwrap_or(0);
        let users = strings(body, "user");
        if !matches!(kind, 1 | 2) || !matches!(scene, 1 | 2) {
            return error(40058, "type and scene must be 1 or 2");
        }
        if kind == 1 && users.len() != 1 {
            return error(40058, "a single contact way takes exactly one user");
        }
        if body["state"].as_str().is_some_and(|s| s.chars().count() > 30) {
            return error(40058, "state is longer than 30 characters");
        }
        let config_id = self.new_id("cw");
        let mut answer = json!({ "config_id": config_id });
        if scene == 2 {
            answer["qr_code"] = format!("https://stand-in.invalid/qr/{config_id}").into();
        }
        self.received.contact_ways.push(ContactWayRecord { config_id, request: body.clone() });
        ok(answer)
    }
}
