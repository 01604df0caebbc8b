//! One Segment message → one siyu event. Error fields here are relative to the message; the
//! batch parser re-roots them under `batch[i]`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use siyu_model::event::{check_time, derived_message_id, EventKind, TimeLimits};
use siyu_model::{Channel, Event, EventType, Fen, Identity, IdentityKind, Millis, Source};

use super::error::{codes, SegmentError};
use super::mapping::Mapping;
use super::CallKind;

/// A JSON object whose values stay raw: money keeps its digits, nothing is re-encoded unless we
/// add keys.
pub(super) type Obj<'a> = BTreeMap<String, &'a RawValue>;

/// What a batch body sets for all its messages.
#[derive(Default)]
pub(super) struct BatchDefaults<'a> {
    pub sent_at: Option<Millis>,
    /// The parsed batch-level context and its original text.
    pub context: Option<(Obj<'a>, &'a RawValue)>,
}

pub(super) struct Ctx<'c> {
    pub mapping: &'c Mapping,
    pub received_at: Millis,
    pub time_limits: TimeLimits,
    pub defaults: &'c BatchDefaults<'c>,
}

/// The fields of a Segment message we read, all raw so that each is validated under its own
/// name (serde's "invalid type" would not say which field). Unknown fields (`integrations`,
/// `_metadata`, `version`, `receivedAt`, RudderStack's `rudderId`, ...) are ignored. The
/// snake_case aliases tolerate hand-written senders.
#[derive(Deserialize)]
#[serde(expecting = "a segment message object")]
pub(super) struct RawMessage<'a> {
    #[serde(rename = "type", default, borrow)]
    pub call_type: Option<&'a RawValue>,
    #[serde(rename = "userId", alias = "user_id", default, borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(rename = "anonymousId", alias = "anonymous_id", default, borrow)]
    anonymous_id: Option<&'a RawValue>,
    #[serde(rename = "previousId", alias = "previous_id", default, borrow)]
    previous_id: Option<&'a RawValue>,
    #[serde(rename = "groupId", alias = "group_id", default, borrow)]
    group_id: Option<&'a RawValue>,
    #[serde(rename = "messageId", alias = "message_id", default, borrow)]
    message_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
    #[serde(default, borrow)]
    name: Option<&'a RawValue>,
    #[serde(default, borrow)]
    category: Option<&'a RawValue>,
    #[serde(default, borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(rename = "originalTimestamp", alias = "original_timestamp", default, borrow)]
    original_timestamp: Option<&'a RawValue>,
    #[serde(rename = "sentAt", alias = "sent_at", default, borrow)]
    sent_at: Option<&'a RawValue>,
    #[serde(default, borrow)]
    properties: Option<&'a RawValue>,
    #[serde(default, borrow)]
    traits: Option<&'a RawValue>,
    #[serde(default, borrow)]
    context: Option<&'a RawValue>,
    /// Segment's own `browser`/`server`/`mobile`, RudderStack's `web`/`mobile`/`server`.
    #[serde(default, borrow)]
    channel: Option<&'a RawValue>,
}

impl<'a> RawMessage<'a> {
    pub fn parse(text: &'a str) -> Result<RawMessage<'a>, SegmentError> {
        serde_json::from_str(text).map_err(|e| {
            SegmentError::new(codes::INVALID_JSON, "body", format!("the message is not a segment message object: {e}"))
        })
    }
}

/// Reads an optional object field; `null` counts as absent.
pub(super) fn object<'a>(raw: Option<&'a RawValue>, field: &str) -> Result<Option<Obj<'a>>, SegmentError> {
    match present(raw) {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<Obj<'a>>(raw.get())
            .map(Some)
            .map_err(|_| SegmentError::new(codes::INVALID_FIELD, field, format!("{field} must be an object"))),
    }
}

/// Parses a Segment timestamp field (an ISO 8601 string with an offset).
pub(super) fn parse_time(raw: &RawValue, field: &str) -> Result<Millis, SegmentError> {
    let bad = || {
        SegmentError::new(
            codes::INVALID_TIMESTAMP,
            field,
            format!("{} is not an iso 8601 timestamp with a utc offset", raw.get()),
        )
    };
    let text: String = serde_json::from_str(raw.get()).map_err(|_| bad())?;
    Millis::parse_rfc3339(&text).ok_or_else(bad)
}

pub(super) fn convert(kind: CallKind, raw: &str, msg: RawMessage, ctx: &Ctx) -> Result<Event, SegmentError> {
    let (context, stored_context) = merged_context(msg.context, ctx.defaults)?;
    let siyu = object(get(&context, "siyu"), "context.siyu")?.unwrap_or_default();
    // `traits` of identify describe the person; of group, the company. For every other call
    // the person's traits ride in `context.traits` (analytics.js and the mobile SDKs put them
    // there). Group traits must never yield identities: a company email would merge all its
    // employees into one profile.
    let (traits_raw, traits_field) = match kind {
        CallKind::Identify if present(msg.traits).is_some() => (msg.traits, "traits"),
        _ => (get(&context, "traits"), "context.traits"),
    };
    let person_traits = object(traits_raw, traits_field)?.unwrap_or_default();
    let properties = object(msg.properties, "properties")?;

    let identities = identities(kind, &msg, &context, &person_traits)?;

    let (event_kind, stored_properties, group_id) = match kind {
        CallKind::Track => {
            let name = text(msg.event, "event", codes::INVALID_FIELD)?
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| SegmentError::new(codes::MISSING_FIELD, "event", "a track call needs an event name"))?;
            let event_kind = ctx.mapping.resolve(&name)?;
            let group_id = match event_kind.known() {
                Some(EventType::GroupJoin | EventType::GroupLeave) => Some(fan_group_id(properties.as_ref())?),
                _ => None,
            };
            (event_kind, present(msg.properties).map(RawValue::to_owned), group_id)
        }
        CallKind::Page | CallKind::Screen => {
            let mut props = properties.clone().unwrap_or_default();
            let mut added = false;
            for (key, value) in [("name", msg.name), ("category", msg.category)] {
                if let Some(value) = present(value) {
                    if !props.contains_key(key) {
                        props.insert(key.to_string(), value);
                        added = true;
                    }
                }
            }
            let stored = if added { Some(to_raw(&props)?) } else { present(msg.properties).map(RawValue::to_owned) };
            (EventKind::Known(EventType::View), stored, None)
        }
        CallKind::Identify => {
            (EventKind::Known(EventType::Identify), present(msg.properties).map(RawValue::to_owned), None)
        }
        CallKind::Group => {
            let group_id = text(msg.group_id, "groupId", codes::INVALID_FIELD)?
                .filter(|g| !g.trim().is_empty())
                .ok_or_else(|| SegmentError::new(codes::MISSING_FIELD, "groupId", "a group call needs a groupId"))?;
            let mut props: BTreeMap<String, Box<RawValue>> =
                object(msg.traits, "traits")?.unwrap_or_default().into_iter().map(|(k, v)| (k, v.to_owned())).collect();
            props.insert("group_id".to_string(), to_raw(&group_id)?);
            // Not `Event.group_id`: that field means a fan group (group_join/group_leave) to the
            // engine, and a Segment group is a company or account.
            (EventKind::Custom("group".to_string()), Some(to_raw(&props)?), None)
        }
        CallKind::Alias => {
            let previous = text(msg.previous_id, "previousId", codes::INVALID_IDENTITY)?;
            let mut props = BTreeMap::new();
            props.insert("previous_id", previous);
            (EventKind::Known(EventType::Alias), Some(to_raw(&props)?), None)
        }
    };

    let (amount, currency) = match (kind, &properties) {
        (CallKind::Track, Some(props)) => money(&event_kind, props)?,
        _ => (None, None),
    };
    if event_kind.known().is_some_and(EventType::carries_amount) && amount.is_none() {
        return Err(SegmentError::new(
            codes::MISSING_AMOUNT,
            "properties.total",
            format!("{} needs properties.total (or revenue or value)", event_kind.as_str()),
        ));
    }

    let channel = channel(kind, &msg, &context, &siyu, properties.as_ref())?;
    let account = account(&siyu, properties.as_ref())?;
    let source = source(&context, &siyu)?;
    let timestamp = timestamp(&msg, ctx)?;
    let message_id = message_id(kind, raw, msg.message_id)?;

    Ok(Event {
        message_id,
        kind: event_kind,
        channel,
        account,
        identities,
        timestamp,
        received_at: ctx.received_at,
        amount,
        currency,
        source,
        group_id,
        properties: stored_properties,
        traits: present(traits_raw).map(RawValue::to_owned),
        context: stored_context,
    })
}

/// `userId`, `anonymousId` (and `previousId` for alias) must be valid if given: they are the
/// sender's deliberate keys. Phones and emails found in traits or `context.externalIds` are
/// opportunistic, so a malformed one is dropped rather than costing the event.
fn identities(kind: CallKind, msg: &RawMessage, context: &Obj, traits: &Obj) -> Result<Vec<Identity>, SegmentError> {
    let mut out: Vec<Identity> = Vec::new();
    let mut push = |identity: Identity| {
        if !out.contains(&identity) {
            out.push(identity);
        }
    };
    let strict = |raw: Option<&RawValue>, kind: IdentityKind, field: &str| -> Result<Option<Identity>, SegmentError> {
        match text(raw, field, codes::INVALID_IDENTITY)? {
            Some(value) if !value.trim().is_empty() => Identity::new(kind, &value)
                .map(Some)
                .map_err(|e| SegmentError::new(codes::INVALID_IDENTITY, field, e.to_string())),
            // analytics.js sends `"userId": null` or `""` for anonymous visitors.
            _ => Ok(None),
        }
    };
    let user = strict(msg.user_id, IdentityKind::UserId, "userId")?;
    let previous = if kind == CallKind::Alias {
        // Segment's alias merges previousId (usually the anonymousId, sometimes an old userId)
        // into userId. previousId is taken as an anonymous id: a profile holds one user_id, so
        // reading it as a user_id would make every alias of a known user a conflict.
        let previous = strict(msg.previous_id, IdentityKind::AnonymousId, "previousId")?
            .ok_or_else(|| SegmentError::new(codes::MISSING_FIELD, "previousId", "an alias call needs a previousId"))?;
        if user.is_none() {
            return Err(SegmentError::new(
                codes::MISSING_IDENTITY,
                "userId",
                "an alias call needs the userId to merge into",
            ));
        }
        Some(previous)
    } else {
        None
    };
    let anonymous = strict(msg.anonymous_id, IdentityKind::AnonymousId, "anonymousId")?;
    for identity in [user, previous, anonymous].into_iter().flatten() {
        push(identity);
    }
    for kind in [IdentityKind::Phone, IdentityKind::Email] {
        if let Some(Ok(Some(value))) = get(traits, kind.as_str()).map(|raw| text(Some(raw), "", "")) {
            if let Ok(identity) = Identity::new(kind, &value) {
                push(identity);
            }
        }
    }
    for identity in external_ids(context) {
        push(identity);
    }
    if out.is_empty() {
        return Err(SegmentError::new(
            codes::MISSING_IDENTITY,
            "userId",
            "a segment message needs a userId or an anonymousId",
        ));
    }
    Ok(out)
}

/// `context.externalIds: [{"id": "o-9f2", "type": "douyin_open_id", "collection": "users",
/// "encoding": "none"}]`. Types that are not siyu identity kinds (RudderStack's camelCase
/// `brazeExternalId`, ...) are destination ids, not the person's, and are skipped.
fn external_ids(context: &Obj) -> Vec<Identity> {
    #[derive(Deserialize)]
    struct ExternalId<'a> {
        #[serde(default, borrow)]
        id: Option<&'a RawValue>,
        #[serde(rename = "type", default, borrow)]
        kind: Option<&'a RawValue>,
    }
    let Some(raw) = get(context, "externalIds") else {
        return Vec::new();
    };
    let Ok(items) = serde_json::from_str::<Vec<ExternalId>>(raw.get()) else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let kind = text(item.kind, "", "").ok()??;
            let value = text(item.id, "", "").ok()??;
            Identity::parse(kind.trim(), &value).ok()
        })
        .collect()
}

/// Segment's e-commerce money: `total` is what the customer paid (revenue + shipping + tax −
/// discount), so it wins over `revenue`, then `value`. Read from the JSON number's own digits.
///
/// Only types that carry money (order_paid, order_refunded, live_gift) are refused for a bad
/// amount; on other events (`Product Viewed` has a `value`) a bad one is just left in properties.
fn money(kind: &EventKind, props: &Obj) -> Result<(Option<Fen>, Option<String>), SegmentError> {
    let money_type =
        matches!(kind.known(), Some(EventType::OrderPaid | EventType::OrderRefunded | EventType::LiveGift));
    let Some((key, raw)) =
        ["total", "revenue", "value"].into_iter().find_map(|key| get(props, key).map(|raw| (key, raw)))
    else {
        return Ok((None, None));
    };
    let field = format!("properties.{key}");
    let amount = match Fen::parse_yuan(raw.get()) {
        Ok(fen) if fen.0 >= 0 => fen,
        Ok(_) if money_type => {
            return Err(SegmentError::new(codes::INVALID_AMOUNT, field, "amount must not be negative"))
        }
        Err(e) if money_type => return Err(SegmentError::new(codes::INVALID_AMOUNT, field, e.to_string())),
        _ => return Ok((None, None)),
    };
    let currency = match get(props, "currency").map(|raw| text(Some(raw), "", "")) {
        None => None,
        Some(Ok(Some(code))) if valid_currency(&code) => Some(normal_currency(&code)),
        Some(_) if money_type => {
            return Err(SegmentError::new(
                codes::INVALID_FIELD,
                "properties.currency",
                format!("{} is not an iso 4217 code like CNY", get(props, "currency").map_or("", |r| r.get())),
            ))
        }
        Some(_) => None,
    };
    Ok((Some(amount), currency))
}

fn valid_currency(code: &str) -> bool {
    let code = code.trim();
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Uppercase ISO 4217; `RMB`, the everyday name in Chinese shops, is `CNY`.
fn normal_currency(code: &str) -> String {
    let upper = code.trim().to_ascii_uppercase();
    if upper == "RMB" {
        "CNY".to_string()
    } else {
        upper
    }
}

/// A canonical fan-group event sent through `track` needs its group, as natively.
fn fan_group_id(props: Option<&Obj>) -> Result<String, SegmentError> {
    props
        .and_then(|p| get(p, "group_id"))
        .and_then(|raw| text(Some(raw), "", "").ok().flatten())
        .filter(|g| !g.trim().is_empty())
        .ok_or_else(|| {
            SegmentError::new(
                codes::MISSING_FIELD,
                "properties.group_id",
                "group_join and group_leave need properties.group_id",
            )
        })
}

/// Explicit siyu hints first (`context.siyu.channel` is ours, so a bad one is an error), then
/// generic hints that are used only when they name a siyu channel, then what the SDK reveals:
/// mobile SDKs send `context.app`/`context.device` (Android also sends a userAgent, so those
/// win), browsers send `context.page`/`context.userAgent`.
fn channel(
    kind: CallKind,
    msg: &RawMessage,
    context: &Obj,
    siyu: &Obj,
    props: Option<&Obj>,
) -> Result<Channel, SegmentError> {
    if let Some(raw) = get(siyu, "channel") {
        let name = text(Some(raw), "context.siyu.channel", codes::UNKNOWN_CHANNEL)?.unwrap_or_default();
        return Channel::parse(name.trim()).ok_or_else(|| {
            SegmentError::new(codes::UNKNOWN_CHANNEL, "context.siyu.channel", format!("unknown channel {name:?}"))
        });
    }
    let named = |raw: Option<&RawValue>| text(raw, "", "").ok().flatten().and_then(|name| Channel::parse(name.trim()));
    if let Some(channel) = named(get(context, "channel")).or_else(|| named(props.and_then(|p| get(p, "channel")))) {
        return Ok(channel);
    }
    match text(msg.channel, "", "").ok().flatten().as_deref().map(str::trim) {
        Some("browser") => return Ok(Channel::Web),
        Some("mobile") => return Ok(Channel::App),
        Some(name) => {
            if let Some(channel) = Channel::parse(name) {
                return Ok(channel);
            }
        }
        None => {}
    }
    Ok(match kind {
        CallKind::Page => Channel::Web,
        CallKind::Screen => Channel::App,
        _ if get(context, "app").is_some() || get(context, "device").is_some() => Channel::App,
        _ if get(context, "page").is_some() || get(context, "userAgent").is_some() => Channel::Web,
        _ => Channel::Other,
    })
}

fn account(siyu: &Obj, props: Option<&Obj>) -> Result<String, SegmentError> {
    let (raw, field) = match get(siyu, "account") {
        Some(raw) => (Some(raw), "context.siyu.account"),
        None => (props.and_then(|p| get(p, "account")), "properties.account"),
    };
    let account = text(raw, field, codes::INVALID_FIELD)?.unwrap_or_default();
    if account.len() > 128 {
        return Err(SegmentError::new(codes::INVALID_FIELD, field, "account is longer than 128 bytes"));
    }
    Ok(account)
}

/// `context.siyu.source` when the sender names the touchpoint, else the UTM campaign analytics.js
/// collects into `context.campaign`, which is the same idea.
fn source(context: &Obj, siyu: &Obj) -> Result<Option<Source>, SegmentError> {
    if let Some(raw) = get(siyu, "source") {
        return serde_json::from_str::<Source>(raw.get()).map(Some).map_err(|_| {
            SegmentError::new(
                codes::INVALID_FIELD,
                "context.siyu.source",
                "context.siyu.source must be {\"kind\": ..., \"id\": ...}",
            )
        });
    }
    let campaign = object(get(context, "campaign"), "context.campaign").ok().flatten();
    Ok(campaign
        .and_then(|c| get(&c, "name").and_then(|raw| text(Some(raw), "", "").ok().flatten()))
        .filter(|name| !name.trim().is_empty())
        .map(|name| Source { kind: "campaign".to_string(), id: name }))
}

/// Segment's clock-skew correction: the device clock may be wrong, but the gap between the
/// event and its sending is not, so `timestamp + (received_at − sentAt)`.
fn timestamp(msg: &RawMessage, ctx: &Ctx) -> Result<Millis, SegmentError> {
    let (raw, field) = match present(msg.timestamp) {
        Some(raw) => (Some(raw), "timestamp"),
        None => (present(msg.original_timestamp), "originalTimestamp"),
    };
    let Some(raw) = raw else {
        return Ok(ctx.received_at);
    };
    let client = parse_time(raw, field)?;
    let sent_at = match present(msg.sent_at) {
        Some(raw) => Some(parse_time(raw, "sentAt")?),
        None => ctx.defaults.sent_at,
    };
    let corrected = match sent_at {
        Some(sent) => Millis(client.0.saturating_add(ctx.received_at.0.saturating_sub(sent.0))),
        None => client,
    };
    check_time(corrected, ctx.received_at, ctx.time_limits)
        .map_err(|e| SegmentError::from(e).renamed("timestamp", field))?;
    Ok(corrected)
}

/// A sender's messageId, or one derived from the message so a retry stays idempotent. The
/// derivation hashes the message without the fields a retry changes (`sentAt`, `writeKey`,
/// `_metadata`, `receivedAt`), with the call kind, since a single call's body may lack `type`.
fn message_id(kind: CallKind, raw: &str, given: Option<&RawValue>) -> Result<String, SegmentError> {
    if let Some(id) = text(given, "messageId", codes::INVALID_FIELD)? {
        let id = id.trim();
        if !id.is_empty() {
            if id.len() > 200 {
                return Err(SegmentError::new(codes::INVALID_FIELD, "messageId", "messageId is longer than 200 bytes"));
            }
            return Ok(id.to_string());
        }
    }
    let Ok(mut fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(raw) else {
        return Ok(derived_message_id(raw.as_bytes()));
    };
    for volatile in ["sentAt", "sent_at", "writeKey", "_metadata", "receivedAt", "type"] {
        fields.remove(volatile);
    }
    let mut canonical = format!("segment:{kind}:");
    canonical.push_str(&serde_json::to_string(&fields).unwrap_or_default());
    Ok(derived_message_id(canonical.as_bytes()))
}

/// The batch context under the message's own (message keys win), re-encoded only when both exist.
fn merged_context<'a>(
    own: Option<&'a RawValue>,
    defaults: &BatchDefaults<'a>,
) -> Result<(Obj<'a>, Option<Box<RawValue>>), SegmentError> {
    let own_map = object(own, "context")?;
    Ok(match (&defaults.context, own_map) {
        (None, None) => (Obj::new(), None),
        (None, Some(map)) => (map, own.map(RawValue::to_owned)),
        (Some((batch, raw)), None) => (batch.clone(), Some((*raw).to_owned())),
        (Some((batch, _)), Some(map)) => {
            let mut merged = batch.clone();
            merged.extend(map);
            let stored = to_raw(&merged)?;
            (merged, Some(stored))
        }
    })
}

/// `None` for an absent field and for JSON `null` alike: SDKs send both for "not set".
fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get().trim() != "null")
}

fn get<'a>(obj: &Obj<'a>, key: &str) -> Option<&'a RawValue> {
    present(obj.get(key).copied())
}

/// A string, or a number's own text (ids such as `"userId": 12345`). Anything else is an error
/// with `code` on `field`.
fn text(raw: Option<&RawValue>, field: &str, code: &'static str) -> Result<Option<String>, SegmentError> {
    let Some(raw) = present(raw) else {
        return Ok(None);
    };
    let body = raw.get().trim();
    if body.starts_with('"') {
        if let Ok(s) = serde_json::from_str::<String>(body) {
            return Ok(Some(s));
        }
    } else if body.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Ok(Some(body.to_string()));
    }
    Err(SegmentError::new(code, field, format!("{field} must be a string or a number")))
}

fn to_raw<T: serde::Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>, SegmentError> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| SegmentError::new(codes::INVALID_JSON, "body", format!("cannot re-encode the message: {e}")))
}
