//! WeCom's customer-contact callbacks (客户联系 变更回调), typed, and mapped to siyu events, so a
//! customer adding a staff member or joining a customer group lands in the event log like any
//! other fact.
//!
//! The input is the *decrypted* XML ([`super::crypto::MsgCrypt::decrypt_message`]). The formats are
//! WeCom's "事件格式" (developer.work.weixin.qq.com/document/path/92130 for self-built apps,
//! /96361 for 代开发, /92277 for third-party suites, whose `InfoType`/`TimeStamp`/`AuthCorpId` are
//! read as `Event`/`CreateTime`/`ToUserName`).
//!
//! | callback | siyu event |
//! |---|---|
//! | `change_external_contact` / `add_external_contact`, `add_half_external_contact` | `wecom_add` |
//! | `change_external_contact` / `del_external_contact`, `del_follow_user` | `wecom_delete` |
//! | `change_external_chat` / `update` + `add_member` | one `group_join` per listed member |
//! | `change_external_chat` / `update` + `del_member` | one `group_leave` per listed member |
//! | everything else (edit, transfer_fail, chat create/dismiss, tags, app messages) | none |
//!
//! Every event's `message_id` is derived from the callback's own content (corp, `CreateTime`, the
//! change and the ids), so WeCom's retries of one callback (it retries up to three times when not
//! answered within 5 s) append once.

use serde::Deserialize;
use serde_json::value::{to_raw_value, RawValue};
use siyu_model::event::{derived_message_id, NativeEvent, TimeLimits};
use siyu_model::{Event, EventError, Millis, Source};

/// Why a decrypted callback could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("malformed callback XML: {0}")]
    MalformedXml(String),
    #[error("the callback has no <{0}>")]
    MissingField(&'static str),
    #[error("<{field}> is not a number: {value:?}")]
    BadNumber { field: &'static str, value: String },
}

/// One decrypted callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackEvent {
    /// `Event=change_external_contact`: a customer relation changed.
    Contact(ContactChange),
    /// `Event=change_external_chat`: a customer group changed.
    Chat(ChatChange),
    /// `Event=change_external_tag`: a corp tag (or tag group) was created, changed or removed.
    Tag(TagChange),
    /// Anything else (application messages, other events): acknowledge it and move on.
    Other { msg_type: String, event: String },
}

/// A `change_external_contact` callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactChange {
    /// `ToUserName`: the corp id.
    pub corp_id: String,
    /// `CreateTime`, Unix seconds.
    pub create_time: i64,
    pub change: ContactChangeType,
    /// `UserID`: the staff member (企业服务人员).
    pub staff_userid: String,
    /// `ExternalUserID`: the customer.
    pub external_userid: String,
    /// `State`: the contact way's `state` (or the acquisition link's `customer_channel`).
    pub state: Option<String>,
    /// `WelcomeCode`: valid 20 s, for `send_welcome_msg`.
    pub welcome_code: Option<String>,
    /// `Source` of a deletion (`DELETE_BY_TRANSFER` when a transfer removed the relation).
    pub source: Option<String>,
    /// `FailReason` of `transfer_fail` (`customer_refused`, `customer_limit_exceed`).
    pub fail_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactChangeType {
    /// `add_external_contact`: the staff member added the customer (or accepted them).
    Add,
    /// `add_half_external_contact`: the customer added the staff member without verification.
    AddHalf,
    /// `edit_external_contact`: remarks or tags edited.
    Edit,
    /// `del_external_contact`: the staff member deleted the customer.
    Delete,
    /// `del_follow_user`: the customer deleted the staff member.
    DeleteFollowUser,
    /// `transfer_fail`: a customer transfer failed.
    TransferFail,
    Other(String),
}

impl ContactChangeType {
    fn parse(text: &str) -> ContactChangeType {
        match text {
            "add_external_contact" => ContactChangeType::Add,
            "add_half_external_contact" => ContactChangeType::AddHalf,
            "edit_external_contact" => ContactChangeType::Edit,
            "del_external_contact" => ContactChangeType::Delete,
            "del_follow_user" => ContactChangeType::DeleteFollowUser,
            "transfer_fail" => ContactChangeType::TransferFail,
            other => ContactChangeType::Other(other.to_string()),
        }
    }

    /// WeCom's `ChangeType` name.
    pub fn as_str(&self) -> &str {
        match self {
            ContactChangeType::Add => "add_external_contact",
            ContactChangeType::AddHalf => "add_half_external_contact",
            ContactChangeType::Edit => "edit_external_contact",
            ContactChangeType::Delete => "del_external_contact",
            ContactChangeType::DeleteFollowUser => "del_follow_user",
            ContactChangeType::TransferFail => "transfer_fail",
            ContactChangeType::Other(name) => name,
        }
    }
}

/// A `change_external_chat` callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatChange {
    pub corp_id: String,
    pub create_time: i64,
    /// `ChatId`: the customer group.
    pub chat_id: String,
    pub change: ChatChangeType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatChangeType {
    Create,
    Update(ChatUpdate),
    Dismiss,
    Other(String),
}

/// The details of a `ChangeType=update` chat callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUpdate {
    pub detail: ChatUpdateDetail,
    /// `JoinScene` (add_member): 0 invited directly, 1 invited by link, 3 scanned the group QR code.
    pub join_scene: Option<u32>,
    /// `QuitScene` (del_member): 0 left, 1 removed by the owner or an admin.
    pub quit_scene: Option<u32>,
    /// `MemChangeCnt`: how many members changed.
    pub member_change_count: Option<u32>,
    /// `MemChangeList`: the changed members' ids, where WeCom sends them (newer versions only).
    /// Staff members of the group appear here too, by their staff userid.
    pub members: Vec<String>,
    pub last_member_version: Option<String>,
    pub current_member_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatUpdateDetail {
    AddMember,
    DelMember,
    ChangeOwner,
    ChangeName,
    ChangeNotice,
    Other(String),
}

impl ChatUpdateDetail {
    fn parse(text: &str) -> ChatUpdateDetail {
        match text {
            "add_member" => ChatUpdateDetail::AddMember,
            "del_member" => ChatUpdateDetail::DelMember,
            "change_owner" => ChatUpdateDetail::ChangeOwner,
            "change_name" => ChatUpdateDetail::ChangeName,
            "change_notice" => ChatUpdateDetail::ChangeNotice,
            other => ChatUpdateDetail::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ChatUpdateDetail::AddMember => "add_member",
            ChatUpdateDetail::DelMember => "del_member",
            ChatUpdateDetail::ChangeOwner => "change_owner",
            ChatUpdateDetail::ChangeName => "change_name",
            ChatUpdateDetail::ChangeNotice => "change_notice",
            ChatUpdateDetail::Other(name) => name,
        }
    }
}

/// A `change_external_tag` callback: about the corp's tag catalogue, not about a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagChange {
    pub corp_id: String,
    pub create_time: i64,
    /// `create`, `update`, `delete` or `shuffle`.
    pub change_type: String,
    /// `Id`: the tag or tag group id (empty for `shuffle` of the whole catalogue).
    pub id: String,
    /// `TagType`: `tag` or `tag_group`.
    pub tag_type: String,
    pub strategy_id: Option<String>,
}

/// Reads a decrypted callback.
pub fn parse(xml: &str) -> Result<CallbackEvent, CallbackError> {
    let raw: RawCallback = quick_xml::de::from_str(xml).map_err(|e| CallbackError::MalformedXml(e.to_string()))?;
    let event = present(raw.event.clone()).or_else(|| present(raw.info_type.clone())).unwrap_or_default();
    let corp_id = present(raw.to_user_name.clone()).or_else(|| present(raw.auth_corp_id.clone())).unwrap_or_default();
    let create_time = || -> Result<i64, CallbackError> {
        let text = present(raw.create_time.clone())
            .or_else(|| present(raw.time_stamp.clone()))
            .ok_or(CallbackError::MissingField("CreateTime"))?;
        number("CreateTime", &text)
    };
    let required =
        |value: &Option<String>, field: &'static str| present(value.clone()).ok_or(CallbackError::MissingField(field));
    match event.as_str() {
        "change_external_contact" => Ok(CallbackEvent::Contact(ContactChange {
            corp_id,
            create_time: create_time()?,
            change: ContactChangeType::parse(&required(&raw.change_type, "ChangeType")?),
            staff_userid: required(&raw.user_id, "UserID")?,
            external_userid: required(&raw.external_user_id, "ExternalUserID")?,
            state: present(raw.state),
            welcome_code: present(raw.welcome_code),
            source: present(raw.source),
            fail_reason: present(raw.fail_reason),
        })),
        "change_external_chat" => {
            let change = match required(&raw.change_type, "ChangeType")?.as_str() {
                "create" => ChatChangeType::Create,
                "dismiss" => ChatChangeType::Dismiss,
                "update" => ChatChangeType::Update(ChatUpdate {
                    detail: ChatUpdateDetail::parse(&required(&raw.update_detail, "UpdateDetail")?),
                    join_scene: optional_number("JoinScene", &raw.join_scene)?,
                    quit_scene: optional_number("QuitScene", &raw.quit_scene)?,
                    member_change_count: optional_number("MemChangeCnt", &raw.mem_change_cnt)?,
                    members: raw.mem_change_list.map(MemberList::ids).unwrap_or_default(),
                    last_member_version: present(raw.last_mem_ver),
                    current_member_version: present(raw.cur_mem_ver),
                }),
                other => ChatChangeType::Other(other.to_string()),
            };
            Ok(CallbackEvent::Chat(ChatChange {
                corp_id,
                create_time: create_time()?,
                chat_id: required(&raw.chat_id, "ChatId")?,
                change,
            }))
        }
        "change_external_tag" => Ok(CallbackEvent::Tag(TagChange {
            corp_id,
            create_time: create_time()?,
            change_type: required(&raw.change_type, "ChangeType")?,
            id: present(raw.id).unwrap_or_default(),
            tag_type: present(raw.tag_type).unwrap_or_default(),
            strategy_id: present(raw.strategy_id),
        })),
        _ => Ok(CallbackEvent::Other { msg_type: present(raw.msg_type).unwrap_or_default(), event }),
    }
}

/// The siyu events a callback means, in native wire form (channel `wecom`, `account` as given:
/// the corp or app account name the tenant configured for this callback URL).
///
/// A chat update lists the members who joined or left only in newer WeCom versions
/// (`MemChangeList`); when a callback carries none, no per-person event is produced (a group
/// event without a person has nowhere to go) and the caller learns membership from
/// `groupchat/get` instead. Staff members listed there are mapped like customers; the receiver
/// tells them apart by its staff list.
pub fn to_native_events(event: &CallbackEvent, account: &str) -> Vec<NativeEvent> {
    match event {
        CallbackEvent::Contact(contact) => contact_events(contact, account),
        CallbackEvent::Chat(chat) => chat_events(chat, account),
        CallbackEvent::Tag(_) | CallbackEvent::Other { .. } => Vec::new(),
    }
}

/// [`to_native_events`], validated into events ready to append.
pub fn to_events(event: &CallbackEvent, account: &str, received_at: Millis) -> Result<Vec<Event>, EventError> {
    to_native_events(event, account)
        .into_iter()
        .map(|native| {
            let id = native.message_id.clone().unwrap_or_default();
            native.into_event(received_at, TimeLimits::default(), id.as_bytes())
        })
        .collect()
}

fn contact_events(contact: &ContactChange, account: &str) -> Vec<NativeEvent> {
    let event_type = match contact.change {
        ContactChangeType::Add | ContactChangeType::AddHalf => "wecom_add",
        ContactChangeType::Delete | ContactChangeType::DeleteFollowUser => "wecom_delete",
        _ => return Vec::new(),
    };
    let mut properties = serde_json::Map::new();
    properties.insert("corp_id".into(), contact.corp_id.clone().into());
    properties.insert("staff_userid".into(), contact.staff_userid.clone().into());
    properties.insert("change_type".into(), contact.change.as_str().into());
    let deleted_by = match contact.change {
        ContactChangeType::Delete => Some("staff"),
        ContactChangeType::DeleteFollowUser => Some("customer"),
        _ => None,
    };
    for (key, value) in [
        ("state", contact.state.as_deref()),
        ("welcome_code", contact.welcome_code.as_deref()),
        ("deleted_by", deleted_by),
        ("delete_source", contact.source.as_deref()),
    ] {
        if let Some(value) = value {
            properties.insert(key.into(), value.into());
        }
    }
    let source = match (&contact.change, &contact.state) {
        (ContactChangeType::Add | ContactChangeType::AddHalf, Some(state)) => {
            Some(Source { kind: "contact_way".into(), id: state.clone() })
        }
        _ => None,
    };
    let message_id = message_id(&[
        &contact.corp_id,
        contact.change.as_str(),
        &contact.create_time.to_string(),
        &contact.staff_userid,
        &contact.external_userid,
    ]);
    vec![native(message_id, event_type, account, &contact.external_userid, contact.create_time, source, properties)]
}

fn chat_events(chat: &ChatChange, account: &str) -> Vec<NativeEvent> {
    let ChatChangeType::Update(update) = &chat.change else {
        return Vec::new();
    };
    let event_type = match update.detail {
        ChatUpdateDetail::AddMember => "group_join",
        ChatUpdateDetail::DelMember => "group_leave",
        _ => return Vec::new(),
    };
    update
        .members
        .iter()
        .map(|member| {
            let mut properties = serde_json::Map::new();
            properties.insert("group_id".into(), chat.chat_id.clone().into());
            properties.insert("corp_id".into(), chat.corp_id.clone().into());
            for (key, value) in [
                ("join_scene", update.join_scene),
                ("quit_scene", update.quit_scene),
                ("member_change_count", update.member_change_count),
            ] {
                if let Some(value) = value {
                    properties.insert(key.into(), value.into());
                }
            }
            let message_id = message_id(&[
                &chat.corp_id,
                update.detail.as_str(),
                &chat.create_time.to_string(),
                &chat.chat_id,
                update.current_member_version.as_deref().unwrap_or(""),
                member,
            ]);
            native(message_id, event_type, account, member, chat.create_time, None, properties)
        })
        .collect()
}

fn native(
    message_id: String,
    event_type: &str,
    account: &str,
    external_userid: &str,
    create_time: i64,
    source: Option<Source>,
    properties: serde_json::Map<String, serde_json::Value>,
) -> NativeEvent {
    let mut identities = serde_json::Map::new();
    identities.insert("wecom_external_userid".into(), external_userid.into());
    NativeEvent {
        message_id: Some(message_id),
        event_type: Some(event_type.to_string()),
        channel: Some("wecom".into()),
        account: Some(account.to_string()),
        identities: Some(identities),
        timestamp: Some(Millis(create_time.saturating_mul(1000)).to_rfc3339()),
        amount: None,
        currency: None,
        source,
        properties: Some(raw_json(&serde_json::Value::Object(properties))),
        traits: None,
        context: None,
    }
}

fn raw_json(value: &serde_json::Value) -> Box<RawValue> {
    to_raw_value(value).expect("a JSON value always serialises")
}

/// `wecom:` and the parts; a hash of that when it would exceed the 200-byte `message_id` limit.
fn message_id(parts: &[&str]) -> String {
    let id = format!("wecom:{}", parts.join(":"));
    if id.len() > 200 {
        return derived_message_id(id.as_bytes());
    }
    id
}

fn present(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

fn number<T: std::str::FromStr>(field: &'static str, text: &str) -> Result<T, CallbackError> {
    text.trim().parse().map_err(|_| CallbackError::BadNumber { field, value: text.to_string() })
}

fn optional_number(field: &'static str, value: &Option<String>) -> Result<Option<u32>, CallbackError> {
    present(value.clone()).map(|text| number(field, &text)).transpose()
}

/// Every field of the callbacks read here, as text (WeCom wraps some numbers in CDATA).
#[derive(Debug, Default, Deserialize)]
struct RawCallback {
    #[serde(rename = "ToUserName")]
    to_user_name: Option<String>,
    #[serde(rename = "AuthCorpId")]
    auth_corp_id: Option<String>,
    #[serde(rename = "CreateTime")]
    create_time: Option<String>,
    #[serde(rename = "TimeStamp")]
    time_stamp: Option<String>,
    #[serde(rename = "MsgType")]
    msg_type: Option<String>,
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "InfoType")]
    info_type: Option<String>,
    #[serde(rename = "ChangeType")]
    change_type: Option<String>,
    #[serde(rename = "UserID")]
    user_id: Option<String>,
    #[serde(rename = "ExternalUserID")]
    external_user_id: Option<String>,
    #[serde(rename = "State")]
    state: Option<String>,
    #[serde(rename = "WelcomeCode")]
    welcome_code: Option<String>,
    #[serde(rename = "Source")]
    source: Option<String>,
    #[serde(rename = "FailReason")]
    fail_reason: Option<String>,
    #[serde(rename = "ChatId")]
    chat_id: Option<String>,
    #[serde(rename = "UpdateDetail")]
    update_detail: Option<String>,
    #[serde(rename = "JoinScene")]
    join_scene: Option<String>,
    #[serde(rename = "QuitScene")]
    quit_scene: Option<String>,
    #[serde(rename = "MemChangeCnt")]
    mem_change_cnt: Option<String>,
    #[serde(rename = "MemChangeList")]
    mem_change_list: Option<MemberList>,
    #[serde(rename = "LastMemVer")]
    last_mem_ver: Option<String>,
    #[serde(rename = "CurMemVer")]
    cur_mem_ver: Option<String>,
    #[serde(rename = "Id")]
    id: Option<String>,
    #[serde(rename = "TagType")]
    tag_type: Option<String>,
    #[serde(rename = "StrategyId")]
    strategy_id: Option<String>,
}

/// `<MemChangeList>`: `<Item>` elements in the documented format; a comma-separated text in
/// early versions of the field.
#[derive(Debug, Default, Deserialize)]
struct MemberList {
    #[serde(rename = "Item", default)]
    items: Vec<String>,
    #[serde(rename = "$text", default)]
    text: Option<String>,
}

impl MemberList {
    fn ids(self) -> Vec<String> {
        let from_text = self.text.into_iter().flat_map(|t| t.split(',').map(str::to_string).collect::<Vec<_>>());
        self.items.into_iter().chain(from_text).map(|id| id.trim().to_string()).filter(|id| !id.is_empty()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siyu_model::event::EventKind;
    use siyu_model::{Channel, EventType, IdentityKind};

    // The samples are WeCom's documented ones (developer.work.weixin.qq.com/document/path/92130,
    // "事件格式"), ids as printed there.
    const ADD: &str = "<xml>
	<ToUserName><![CDATA[toUser]]></ToUserName>
	<FromUserName><![CDATA[sys]]></FromUserName>
	<CreateTime>1403610513</CreateTime>
	<MsgType><![CDATA[event]]></MsgType>
	<Event><![CDATA[change_external_contact]]></Event>
	<ChangeType><![CDATA[add_external_contact]]></ChangeType>
	<UserID><![CDATA[zhangsan]]></UserID>
	<ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mAAAA]]></ExternalUserID>
	<State><![CDATA[teststate]]></State>
	<WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>
</xml>";

    const DEL_FOLLOW_USER: &str = "<xml>
	<ToUserName><![CDATA[toUser]]></ToUserName>
	<FromUserName><![CDATA[sys]]></FromUserName>
	<CreateTime>1403610513</CreateTime>
	<MsgType><![CDATA[event]]></MsgType>
	<Event><![CDATA[change_external_contact]]></Event>
	<ChangeType><![CDATA[del_follow_user]]></ChangeType>
	<UserID><![CDATA[zhangsan]]></UserID>
	<ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA]]></ExternalUserID>
</xml>";

    const DEL_EXTERNAL: &str = "<xml>
	<ToUserName><![CDATA[toUser]]></ToUserName>
	<FromUserName><![CDATA[sys]]></FromUserName>
	<CreateTime>1403610513</CreateTime>
	<MsgType><![CDATA[event]]></MsgType>
	<Event><![CDATA[change_external_contact]]></Event>
	<ChangeType><![CDATA[del_external_contact]]></ChangeType>
	<UserID><![CDATA[zhangsan]]></UserID>
	<ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA]]></ExternalUserID>
	<Source><![CDATA[DELETE_BY_TRANSFER]]></Source>
</xml>";

    const CHAT_ADD_MEMBER: &str = "<xml>
	<ToUserName><![CDATA[toUser]]></ToUserName>
	<FromUserName><![CDATA[sys]]></FromUserName>
	<CreateTime>1403610513</CreateTime>
	<MsgType><![CDATA[event]]></MsgType>
	<Event><![CDATA[change_external_chat]]></Event>
	<ChatId><![CDATA[CHAT_ID]]></ChatId>
	<ChangeType><![CDATA[update]]></ChangeType>
	<UpdateDetail><![CDATA[add_member]]></UpdateDetail>
	<JoinScene>1</JoinScene>
	<QuitScene>0</QuitScene>
	<MemChangeCnt>10</MemChangeCnt>
	<MemChangeList>
		<Item>Jack</Item>
		<Item>Rose</Item>
	</MemChangeList>
	<LastMemVer>9c3f97c2ada667dfb5f6d03308d963e1</LastMemVer>
	<CurMemVer>71217227bbd112ecfe3a49c482195cb4</CurMemVer>
</xml>";

    const TAG: &str = "<xml>
	<ToUserName><![CDATA[toUser]]></ToUserName>
	<FromUserName><![CDATA[sys]]></FromUserName>
	<CreateTime>1403610513</CreateTime>
	<MsgType><![CDATA[event]]></MsgType>
	<Event><![CDATA[change_external_tag]]></Event>
	<Id><![CDATA[TAG_ID]]></Id>
	<TagType><![CDATA[tag]]></TagType>
	<ChangeType><![CDATA[create]]></ChangeType>
	<StrategyId>1</StrategyId>
</xml>";

    fn events(xml: &str) -> Vec<Event> {
        let received_at = Millis::parse_rfc3339("2026-11-03T00:00:00Z").unwrap();
        to_events(&parse(xml).unwrap(), "wecom-main", received_at).unwrap()
    }

    fn property(event: &Event, key: &str) -> serde_json::Value {
        let props: serde_json::Value = serde_json::from_str(event.properties.as_ref().unwrap().get()).unwrap();
        props[key].clone()
    }

    #[test]
    fn add_external_contact_parses() {
        let CallbackEvent::Contact(contact) = parse(ADD).unwrap() else { panic!("not a contact change") };
        assert_eq!(contact.change, ContactChangeType::Add);
        assert_eq!(contact.corp_id, "toUser");
        assert_eq!(contact.create_time, 1_403_610_513);
        assert_eq!(contact.staff_userid, "zhangsan");
        assert_eq!(contact.external_userid, "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA");
        assert_eq!(contact.state.as_deref(), Some("teststate"));
        assert_eq!(contact.welcome_code.as_deref(), Some("WELCOMECODE"));
    }

    #[test]
    fn add_becomes_wecom_add_with_its_contact_way() {
        let events = events(ADD);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.kind, EventKind::Known(EventType::WecomAdd));
        assert_eq!(e.channel, Channel::Wecom);
        assert_eq!(e.account, "wecom-main");
        assert_eq!(e.identities.len(), 1);
        assert_eq!(e.identities[0].kind, IdentityKind::WecomExternalUserid);
        assert_eq!(e.identities[0].value, "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA");
        assert_eq!(e.timestamp, Millis(1_403_610_513_000));
        assert_eq!(e.source.as_ref().unwrap().key(), "contact_way:teststate");
        assert_eq!(property(e, "staff_userid"), "zhangsan");
        assert_eq!(property(e, "state"), "teststate");
        assert_eq!(property(e, "welcome_code"), "WELCOMECODE");
        assert_eq!(
            e.message_id,
            "wecom:toUser:add_external_contact:1403610513:zhangsan:woAJ2GCAAAXtWyujaWJHDDGi0mAAAA"
        );
    }

    #[test]
    fn a_retried_callback_gives_the_same_message_id() {
        assert_eq!(events(ADD)[0].message_id, events(ADD)[0].message_id);
        assert_ne!(events(DEL_FOLLOW_USER)[0].message_id, events(DEL_EXTERNAL)[0].message_id);
    }

    #[test]
    fn an_add_without_state_has_no_source() {
        let xml = ADD.replace("<State><![CDATA[teststate]]></State>", "");
        let e = &events(&xml)[0];
        assert!(e.source.is_none());
        assert!(property(e, "state").is_null());
    }

    #[test]
    fn both_deletions_become_wecom_delete() {
        let by_customer = &events(DEL_FOLLOW_USER)[0];
        assert_eq!(by_customer.kind, EventKind::Known(EventType::WecomDelete));
        assert_eq!(property(by_customer, "deleted_by"), "customer");
        assert!(by_customer.source.is_none());
        let by_staff = &events(DEL_EXTERNAL)[0];
        assert_eq!(by_staff.kind, EventKind::Known(EventType::WecomDelete));
        assert_eq!(property(by_staff, "deleted_by"), "staff");
        assert_eq!(property(by_staff, "delete_source"), "DELETE_BY_TRANSFER");
    }

    #[test]
    fn chat_members_join_one_event_each() {
        let CallbackEvent::Chat(chat) = parse(CHAT_ADD_MEMBER).unwrap() else { panic!("not a chat change") };
        let ChatChangeType::Update(update) = &chat.change else { panic!("not an update") };
        assert_eq!(update.members, ["Jack", "Rose"]);
        assert_eq!(update.join_scene, Some(1));
        assert_eq!(update.member_change_count, Some(10));
        let joined = events(CHAT_ADD_MEMBER);
        assert_eq!(joined.len(), 2);
        for (e, member) in joined.iter().zip(["Jack", "Rose"]) {
            assert_eq!(e.kind, EventKind::Known(EventType::GroupJoin));
            assert_eq!(e.group_id.as_deref(), Some("CHAT_ID"));
            assert_eq!(e.identities[0].value, member);
            assert_eq!(property(e, "join_scene"), 1);
        }
        assert_ne!(joined[0].message_id, joined[1].message_id);
        let leave = CHAT_ADD_MEMBER.replace("add_member", "del_member");
        let left = events(&leave);
        assert_eq!(left.len(), 2);
        assert!(left.iter().all(|e| e.kind == EventKind::Known(EventType::GroupLeave)));
    }

    #[test]
    fn the_early_comma_separated_member_list_is_read_too() {
        let xml = CHAT_ADD_MEMBER.replace(
            "<MemChangeList>\n\t\t<Item>Jack</Item>\n\t\t<Item>Rose</Item>\n\t</MemChangeList>",
            "<MemChangeList><![CDATA[wmA,wmB]]></MemChangeList>",
        );
        let CallbackEvent::Chat(chat) = parse(&xml).unwrap() else { panic!("not a chat change") };
        let ChatChangeType::Update(update) = chat.change else { panic!("not an update") };
        assert_eq!(update.members, ["wmA", "wmB"]);
    }

    #[test]
    fn a_chat_update_without_members_produces_no_event() {
        let xml = CHAT_ADD_MEMBER
            .replace("<MemChangeList>\n\t\t<Item>Jack</Item>\n\t\t<Item>Rose</Item>\n\t</MemChangeList>", "");
        assert!(events(&xml).is_empty());
        let create = "<xml><ToUserName>c</ToUserName><CreateTime>1403610513</CreateTime><MsgType>event</MsgType>\
                      <Event>change_external_chat</Event><ChatId>CHAT_ID</ChatId><ChangeType>create</ChangeType></xml>";
        assert!(matches!(
            parse(create).unwrap(),
            CallbackEvent::Chat(ChatChange { change: ChatChangeType::Create, .. })
        ));
        assert!(events(create).is_empty());
    }

    #[test]
    fn tags_edits_and_messages_produce_no_event() {
        let CallbackEvent::Tag(tag) = parse(TAG).unwrap() else { panic!("not a tag change") };
        assert_eq!((tag.id.as_str(), tag.tag_type.as_str(), tag.change_type.as_str()), ("TAG_ID", "tag", "create"));
        assert!(events(TAG).is_empty());
        let edit = ADD.replace("add_external_contact", "edit_external_contact");
        assert!(events(&edit).is_empty());
        let text = "<xml><ToUserName>c</ToUserName><CreateTime>1</CreateTime><MsgType>text</MsgType>\
                    <Content>hello</Content></xml>";
        assert_eq!(parse(text).unwrap(), CallbackEvent::Other { msg_type: "text".into(), event: String::new() });
    }

    #[test]
    fn third_party_suite_callbacks_are_read_too() {
        let xml = "<xml><SuiteId><![CDATA[ww4asffe99e54c0f4c]]></SuiteId>\
                   <AuthCorpId><![CDATA[wxf8b4f85f3a794e77]]></AuthCorpId>\
                   <InfoType><![CDATA[change_external_contact]]></InfoType><TimeStamp>1403610513</TimeStamp>\
                   <ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID>\
                   <ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACH71w]]></ExternalUserID></xml>";
        let CallbackEvent::Contact(contact) = parse(xml).unwrap() else { panic!("not a contact change") };
        assert_eq!(contact.corp_id, "wxf8b4f85f3a794e77");
        assert_eq!(contact.create_time, 1_403_610_513);
    }

    #[test]
    fn broken_callbacks_name_what_is_wrong() {
        assert!(matches!(parse("<xml><Event>"), Err(CallbackError::MalformedXml(_))));
        let no_user = ADD.replace("<UserID><![CDATA[zhangsan]]></UserID>", "");
        assert_eq!(parse(&no_user), Err(CallbackError::MissingField("UserID")));
        let bad_time = ADD.replace("1403610513", "yesterday");
        assert_eq!(parse(&bad_time), Err(CallbackError::BadNumber { field: "CreateTime", value: "yesterday".into() }));
    }
}
