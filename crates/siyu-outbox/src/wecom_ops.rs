//! WeCom operations an operator asks for, through a tenant's `wecom` send account: contact ways
//! (渠道活码) created in WeCom and recorded for attribution, external contacts synced into the log,
//! and a segment's members tagged in WeCom (`mark_tag`). Here because each one calls WeCom and then
//! records or ingests what it answered, and this crate already speaks to both sides; the server
//! and the CLI call these functions and stay thin.
//!
//! WeCom is called first and siyu records after: a contact way WeCom refused is never recorded, and
//! one recorded exists in WeCom. A sync is idempotent (each contact's event has a message id derived
//! from corp, staff and customer), so it can be repeated at will.

use std::collections::HashSet;

use rand::Rng;
use siyu_connect::wecom::client::{
    ContactWay, ContactWayScene, ContactWayType, ContactWithFollowInfo, MAX_STATE_CHARS,
};
use siyu_connect::wecom::{WeComClient, WeComError};
use siyu_engine::contact_ways::{ContactWayRecord, SOURCE_KIND};
use siyu_engine::{Engine, EngineError, Ingested};
use siyu_model::event::NativeEvent;
use siyu_model::reach::{ConnectorKind, SendAccount};
use siyu_model::{Event, Millis, ProfileId, TenantId};

pub use crate::connectors::wecom_config;

/// `batch/get_by_user` takes at most this many staff members per call, and pages of this size.
const STAFF_PER_CALL: usize = 100;
const PAGE_LIMIT: u32 = 100;
/// WeCom's limit on a contact way's remark, and on the users of a multi-person way.
const MAX_REMARK_CHARS: usize = 30;
const MAX_STAFF: usize = 100;
/// WeCom's errcode for "not an external contact" (a staff member with no customers, too).
const NOT_EXTERNAL_CONTACT: i64 = 84061;
/// Mark-tag failures listed one by one in the report (all are counted).
const MAX_LISTED_FAILURES: usize = 100;
/// The ingestion path sync events are counted under.
const SYNC_PATH: &str = "wecom_sync";

/// Why a WeCom operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WeComOpsError {
    #[error("no send account {0:?}")]
    NoSendAccount(String),
    #[error("send account {0:?} does not use the wecom connector")]
    NotWeCom(String),
    /// The account's settings cannot make a client (a credential is missing).
    #[error("send account {account:?}: {message}")]
    Config { account: String, message: String },
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("a contact way with state {0:?} exists already")]
    StateTaken(String),
    /// WeCom refused or could not be reached; `error.code()` is its errcode (or `timeout`, ...).
    #[error("wecom {call} failed: {error}")]
    WeCom { call: &'static str, error: WeComError },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub type Result<T, E = WeComOpsError> = std::result::Result<T, E>;

fn invalid(field: &'static str, message: impl Into<String>) -> WeComOpsError {
    WeComOpsError::Invalid { field, message: message.into() }
}

fn wecom(call: &'static str) -> impl FnOnce(WeComError) -> WeComOpsError {
    move |error| WeComOpsError::WeCom { call, error }
}

/// `POST /api/v1/contact-ways`: a QR-code contact way for some staff members.
#[derive(Debug, Clone, Default)]
pub struct ContactWayRequest {
    pub account: String,
    pub staff: Vec<String>,
    /// The attribution key (at most 30 characters, unique in the tenant); generated when absent.
    pub state: Option<String>,
    pub remark: Option<String>,
    pub campaign_id: Option<i64>,
    pub kind: WayKind,
}

/// A single-person way (单人, exactly one staff member) or a multi-person one (多人, WeCom picks
/// one of the staff for each customer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WayKind {
    Single,
    #[default]
    Multi,
}

/// `POST /api/v1/wecom/sync`.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub account: String,
    /// Whose customers to sync; empty: the account's `staff`.
    pub staff: Vec<String>,
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub staff: u64,
    /// (staff, customer) pairs WeCom listed.
    pub contacts: u64,
    /// Events appended: relations the log did not hold yet.
    pub new_events: u64,
    /// Relations synced before (their message id is in the log already).
    pub duplicates: u64,
}

/// `POST /api/v1/wecom/mark-tag`.
#[derive(Debug, Clone, Default)]
pub struct MarkTagRequest {
    pub account: String,
    /// The staff member whose view of the customer is tagged (WeCom tags per relation).
    pub staff: String,
    pub segment_id: i64,
    /// WeCom corp tag ids.
    pub add_tag: Vec<String>,
    pub remove_tag: Vec<String>,
}

/// What a mark-tag run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkTagReport {
    /// Members of the segment now.
    pub members: u64,
    /// Of them, with a `wecom_external_userid`.
    pub addressed: u64,
    /// Addressed members who are not the staff member's customers (skipped).
    pub not_contacts: u64,
    /// Successful `mark_tag` calls.
    pub tagged: u64,
    pub failed: u64,
    /// The first failures, each with WeCom's errcode.
    pub failures: Vec<TagFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFailure {
    pub profile_id: ProfileId,
    pub external_userid: String,
    /// WeCom's errcode, or `timeout`, `http_503`, ... ([`WeComError::code`]).
    pub code: String,
    pub message: String,
}

/// Creates the contact way in WeCom (type 1 or 2, scene 2: a QR code), then records it.
pub async fn create_contact_way(
    engine: &Engine,
    tenant: TenantId,
    request: &ContactWayRequest,
) -> Result<ContactWayRecord> {
    let client = client(engine, tenant, &request.account)?;
    let staff = check_staff(&request.staff, request.kind)?;
    let remark = request.remark.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if remark.is_some_and(|r| r.chars().count() > MAX_REMARK_CHARS) {
        return Err(invalid("remark", format!("a remark has at most {MAX_REMARK_CHARS} characters")));
    }
    if let Some(id) = request.campaign_id {
        engine.campaign(tenant, id).await?;
    }
    let state = match request.state.as_deref().map(str::trim) {
        Some(state) => {
            check_state(state)?;
            if engine.contact_way(tenant, state).await?.is_some() {
                return Err(WeComOpsError::StateTaken(state.to_string()));
            }
            state.to_string()
        }
        None => new_state(engine, tenant).await?,
    };
    let way = ContactWay {
        kind: match request.kind {
            WayKind::Single => ContactWayType::Single,
            WayKind::Multi => ContactWayType::Multi,
        },
        scene: ContactWayScene::QrCode,
        style: None,
        remark: remark.map(str::to_string),
        skip_verify: true,
        state: Some(state.clone()),
        users: staff.clone(),
        parties: Vec::new(),
    };
    let created = client.add_contact_way(&way).await.map_err(wecom("add_contact_way"))?;
    let record = ContactWayRecord {
        state,
        config_id: created.config_id,
        qr_code: created.qr_code,
        account: request.account.clone(),
        staff,
        campaign_id: request.campaign_id,
        remark: way.remark,
        created_at: Millis::now(),
    };
    tracing::info!(%tenant, state = %record.state, config_id = %record.config_id, "contact way created");
    if !engine.record_contact_way(tenant, &record).await? {
        // Another request took the state between the check and now; WeCom holds both ways.
        return Err(WeComOpsError::StateTaken(record.state));
    }
    Ok(record)
}

/// Pages `batch/get_by_user` for each staff member and ingests one `wecom_add` per relation.
pub async fn sync_contacts(engine: &Engine, tenant: TenantId, request: &SyncRequest) -> Result<SyncReport> {
    let account = send_account(engine, tenant, &request.account)?;
    let client = client_of(&request.account, &account)?;
    let mut staff: Vec<String> = if request.staff.is_empty() { account.staff.clone() } else { request.staff.clone() };
    staff.retain(|s| !s.trim().is_empty());
    staff.sort();
    staff.dedup();
    if staff.is_empty() {
        return Err(invalid(
            "staff",
            format!("name the staff to sync, or list them in send_accounts.{}.staff", request.account),
        ));
    }
    let corp = client.config().corp_id.clone();
    let mut report = SyncReport { staff: staff.len() as u64, ..SyncReport::default() };
    for chunk in staff.chunks(STAFF_PER_CALL) {
        let mut cursor = String::new();
        loop {
            let page =
                client.batch_get_by_user(chunk, Some(&cursor), PAGE_LIMIT).await.map_err(wecom("batch/get_by_user"))?;
            report.contacts += page.external_contact_list.len() as u64;
            let received_at = Millis::now();
            let events = page
                .external_contact_list
                .iter()
                .map(|contact| sync_event(engine, &corp, &request.account, contact, received_at))
                .collect::<Result<Vec<Event>>>()?;
            for outcome in engine.ingest(tenant, SYNC_PATH, events).await? {
                match outcome {
                    Ingested::Appended(_) => report.new_events += 1,
                    Ingested::Duplicate => report.duplicates += 1,
                }
            }
            if page.next_cursor.is_empty() || page.next_cursor == cursor {
                break;
            }
            cursor = page.next_cursor;
        }
    }
    tracing::info!(%tenant, account = %request.account, contacts = report.contacts, new = report.new_events,
        "wecom contacts synced");
    Ok(report)
}

/// Tags the segment's members who are the staff member's customers (WeCom's own list says who).
pub async fn mark_tag(engine: &Engine, tenant: TenantId, request: &MarkTagRequest) -> Result<MarkTagReport> {
    let client = client(engine, tenant, &request.account)?;
    let staff = request.staff.trim();
    if staff.is_empty() {
        return Err(invalid("staff", "name the staff member whose customers to tag"));
    }
    let clean = |tags: &[String]| -> Vec<String> {
        tags.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect()
    };
    let (add_tag, remove_tag) = (clean(&request.add_tag), clean(&request.remove_tag));
    if add_tag.is_empty() && remove_tag.is_empty() {
        return Err(invalid("add_tag", "name a WeCom tag id to add or to remove"));
    }
    let members = engine.segment(tenant, request.segment_id)?.size;
    let addresses = engine.segment_wecom_addresses(tenant, request.segment_id)?;
    let contacts: HashSet<String> = match client.list_external_contacts(staff).await {
        Ok(ids) => ids.into_iter().collect(),
        Err(WeComError::Api { errcode: NOT_EXTERNAL_CONTACT, .. }) => HashSet::new(),
        Err(e) => return Err(wecom("externalcontact/list")(e)),
    };
    let mut report = MarkTagReport { members, addressed: addresses.len() as u64, ..MarkTagReport::default() };
    for member in &addresses {
        let mine: Vec<&String> = member.external_userids.iter().filter(|id| contacts.contains(*id)).collect();
        if mine.is_empty() {
            report.not_contacts += 1;
            continue;
        }
        for external_userid in mine {
            match client.mark_tag(staff, external_userid, &add_tag, &remove_tag).await {
                Ok(()) => report.tagged += 1,
                Err(e) => {
                    report.failed += 1;
                    if report.failures.len() < MAX_LISTED_FAILURES {
                        report.failures.push(TagFailure {
                            profile_id: member.profile_id,
                            external_userid: external_userid.clone(),
                            code: e.code(),
                            message: e.to_string(),
                        });
                    }
                }
            }
        }
    }
    tracing::info!(%tenant, segment = request.segment_id, tagged = report.tagged, failed = report.failed,
        "wecom tags marked");
    Ok(report)
}

fn send_account(engine: &Engine, tenant: TenantId, name: &str) -> Result<SendAccount> {
    let account = engine.send_account(tenant, name)?.ok_or_else(|| WeComOpsError::NoSendAccount(name.to_string()))?;
    if account.connector != ConnectorKind::Wecom {
        return Err(WeComOpsError::NotWeCom(name.to_string()));
    }
    Ok(account)
}

fn client(engine: &Engine, tenant: TenantId, name: &str) -> Result<WeComClient> {
    client_of(name, &send_account(engine, tenant, name)?)
}

fn client_of(name: &str, account: &SendAccount) -> Result<WeComClient> {
    let config_error = |message: String| WeComOpsError::Config { account: name.to_string(), message };
    let config = wecom_config(name, account).map_err(|e| config_error(format!("{e:#}")))?;
    WeComClient::new(config.client_config()).map_err(|e| config_error(e.to_string()))
}

fn check_staff(staff: &[String], kind: WayKind) -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    let staff: Vec<String> =
        staff.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty() && seen.insert(s.clone())).collect();
    match (kind, staff.len()) {
        (_, 0) => Err(invalid("staff", "a contact way needs a staff member")),
        (WayKind::Single, n) if n > 1 => Err(invalid("staff", "a single contact way names exactly one staff member")),
        (WayKind::Multi, n) if n > MAX_STAFF => {
            Err(invalid("staff", format!("a contact way names at most {MAX_STAFF} staff members")))
        }
        _ => Ok(staff),
    }
}

fn check_state(state: &str) -> Result<()> {
    if state.is_empty() || state.chars().count() > MAX_STATE_CHARS {
        return Err(invalid("state", format!("a state has 1 to {MAX_STATE_CHARS} characters")));
    }
    if state.chars().any(char::is_control) {
        return Err(invalid("state", "a state has no control characters"));
    }
    Ok(())
}

/// `cw` and 8 random base-36 characters, not yet used in the tenant.
async fn new_state(engine: &Engine, tenant: TenantId) -> Result<String> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    for _ in 0..8 {
        let state: String = {
            let mut rng = rand::thread_rng();
            let tail: String = (0..8).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
            format!("cw{tail}")
        };
        if engine.contact_way(tenant, &state).await?.is_none() {
            return Ok(state);
        }
    }
    Err(WeComOpsError::Invalid { field: "state", message: "could not find an unused state; name one".into() })
}

/// One relation as a `wecom_add`, idempotent by (corp, staff, customer), at the follow time.
fn sync_event(
    engine: &Engine,
    corp: &str,
    account: &str,
    contact: &ContactWithFollowInfo,
    received_at: Millis,
) -> Result<Event> {
    let customer = &contact.external_contact;
    let follow = &contact.follow_info;
    let message_id = format!("wecom-sync:{corp}:{}:{}", follow.userid, customer.external_userid);
    let mut identities = serde_json::Map::new();
    identities.insert("wecom_external_userid".into(), customer.external_userid.clone().into());
    if let Some(unionid) = customer.unionid.as_deref().filter(|u| !u.is_empty()) {
        identities.insert("wechat_unionid".into(), unionid.into());
    }
    let state = follow.state.as_deref().filter(|s| !s.is_empty());
    let mut properties = serde_json::json!({
        "corp_id": corp,
        "staff_userid": follow.userid,
        "add_way": follow.add_way,
        "synced": true,
    });
    if let Some(state) = state {
        properties["state"] = state.into();
    }
    let timestamp = if follow.createtime > 0 { Millis(follow.createtime * 1000) } else { received_at };
    let mut native = serde_json::json!({
        "message_id": message_id,
        "type": "wecom_add",
        "channel": "wecom",
        "account": account,
        "identities": identities,
        "timestamp": timestamp.to_rfc3339(),
        "properties": properties,
    });
    if !customer.name.is_empty() {
        native["traits"] = serde_json::json!({ "name": customer.name });
    }
    if let Some(state) = state {
        native["source"] = serde_json::json!({ "kind": SOURCE_KIND, "id": state });
    }
    let native: NativeEvent = serde_json::from_value(native).map_err(|e| invalid("contacts", e.to_string()))?;
    let event = native.into_event(received_at, engine.config().time_limits, message_id.as_bytes());
    event.map_err(|e| invalid("contacts", format!("customer {}: {e}", customer.external_userid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staff_and_states_are_checked_as_wecom_requires() {
        let staff = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(check_staff(&staff(&[" zhangsan ", "zhangsan", ""]), WayKind::Single).unwrap(), ["zhangsan"]);
        assert!(check_staff(&staff(&["a", "b"]), WayKind::Single).is_err());
        assert!(check_staff(&staff(&[]), WayKind::Multi).is_err());
        assert_eq!(check_staff(&staff(&["a", "b"]), WayKind::Multi).unwrap(), ["a", "b"]);
        assert!(check_state(&"直".repeat(30)).is_ok());
        assert!(check_state(&"直".repeat(31)).is_err());
        assert!(check_state("").is_err());
        assert!(check_state("a\nb").is_err());
    }
}
