//! The event (事件): an immutable, timestamped fact about a person, and its native wire form.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::Channel;
use crate::event_type::{is_valid_custom_name, EventType};
use crate::identity::{parse_identity_map, Identity};
use crate::money::Fen;
use crate::time::{Millis, DAY};

/// What a validated event's type is: canonical, or a tenant's custom type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    Known(EventType),
    Custom(String),
}

impl EventKind {
    pub fn parse(name: &str) -> Option<EventKind> {
        match EventType::parse(name) {
            Some(known) => Some(EventKind::Known(known)),
            None if is_valid_custom_name(name) => Some(EventKind::Custom(name.to_string())),
            None => None,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Known(t) => t.as_str(),
            EventKind::Custom(name) => name,
        }
    }

    pub fn known(&self) -> Option<EventType> {
        match self {
            EventKind::Known(t) => Some(*t),
            EventKind::Custom(_) => None,
        }
    }
}

/// A touchpoint source (触点来源): campaign, QR code `state`, video, live session, staff, referrer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub kind: String,
    #[serde(default)]
    pub id: String,
}

impl Source {
    /// `kind:id`, the interned form.
    pub fn key(&self) -> String {
        if self.id.is_empty() {
            self.kind.clone()
        } else {
            format!("{}:{}", self.kind, self.id)
        }
    }
}

/// A validated event, ready to append to the log.
#[derive(Debug, Clone)]
pub struct Event {
    pub message_id: String,
    pub kind: EventKind,
    pub channel: Channel,
    /// The channel account (矩阵号) the event happened on; empty when the source has none.
    pub account: String,
    pub identities: Vec<Identity>,
    pub timestamp: Millis,
    pub received_at: Millis,
    pub amount: Option<Fen>,
    pub currency: Option<String>,
    pub source: Option<Source>,
    /// `properties.group_id` of group events, lifted out so the hot path never parses properties.
    pub group_id: Option<String>,
    pub properties: Option<Box<RawValue>>,
    pub traits: Option<Box<RawValue>>,
    pub context: Option<Box<RawValue>>,
}

/// Why an event was refused. Each names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct EventError {
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

impl EventError {
    pub fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> EventError {
        EventError { code, field: field.into(), message: message.into() }
    }
}

/// How far ahead of the receiving clock an event's timestamp may be (clock skew), and the oldest
/// timestamp accepted.
#[derive(Debug, Clone, Copy)]
pub struct TimeLimits {
    pub max_future_ms: i64,
    pub oldest: Millis,
}

impl Default for TimeLimits {
    fn default() -> Self {
        TimeLimits { max_future_ms: DAY, oldest: Millis(946_684_800_000) } // 2000-01-01
    }
}

/// The native wire form of an event (SPEC §3), as the API and the import take it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeEvent {
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(rename = "type", default)]
    pub event_type: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub identities: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub amount: Option<Box<RawValue>>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub source: Option<Source>,
    #[serde(default)]
    pub properties: Option<Box<RawValue>>,
    #[serde(default)]
    pub traits: Option<Box<RawValue>>,
    #[serde(default)]
    pub context: Option<Box<RawValue>>,
}

impl NativeEvent {
    /// Validates and normalises. `raw_for_id` is the event's original bytes, used to derive a
    /// stable `message_id` when the sender gave none (so a re-run import stays idempotent).
    pub fn into_event(self, received_at: Millis, limits: TimeLimits, raw_for_id: &[u8]) -> Result<Event, EventError> {
        let type_name =
            self.event_type.ok_or_else(|| EventError::new("missing_field", "type", "an event needs a type"))?;
        let kind = EventKind::parse(&type_name).ok_or_else(|| {
            EventError::new(
                "unknown_event_type",
                "type",
                format!("{type_name:?} is neither a canonical type nor a valid custom name (lowercase snake_case)"),
            )
        })?;
        let channel = match self.channel.as_deref() {
            None | Some("") => Channel::Other,
            Some(name) => Channel::parse(name)
                .ok_or_else(|| EventError::new("unknown_channel", "channel", format!("unknown channel {name:?}")))?,
        };
        let identities = match &self.identities {
            Some(map) => parse_identity_map(map).map_err(|(kind, e)| {
                EventError::new("invalid_identity", format!("identities.{kind}"), e.to_string())
            })?,
            None => Vec::new(),
        };
        if identities.is_empty() {
            return Err(EventError::new(
                "missing_identity",
                "identities",
                "an event needs at least one identity (user_id, phone, anonymous_id, ...)",
            ));
        }
        let timestamp = match self.timestamp.as_deref() {
            None => received_at,
            Some(text) => Millis::parse_rfc3339(text).ok_or_else(|| {
                EventError::new("invalid_timestamp", "timestamp", format!("{text:?} is not an RFC 3339 timestamp"))
            })?,
        };
        check_time(timestamp, received_at, limits)?;
        let amount = match &self.amount {
            None => None,
            Some(raw) if raw.get() == "null" => None,
            Some(raw) => Some(
                Fen::parse_yuan(raw.get()).map_err(|e| EventError::new("invalid_amount", "amount", e.to_string()))?,
            ),
        };
        if kind.known().is_some_and(EventType::carries_amount) && amount.is_none() {
            return Err(EventError::new("missing_field", "amount", format!("{type_name} needs an amount")));
        }
        if amount.is_some_and(|a| a.0 < 0) {
            return Err(EventError::new("invalid_amount", "amount", "amount must not be negative"));
        }
        let group_id = match kind.known() {
            Some(EventType::GroupJoin | EventType::GroupLeave) => Some(group_id_of(self.properties.as_deref())?),
            _ => None,
        };
        let message_id = match self.message_id {
            Some(id) if !id.trim().is_empty() => {
                if id.len() > 200 {
                    return Err(EventError::new("invalid_field", "message_id", "message_id is longer than 200 bytes"));
                }
                id
            }
            _ => derived_message_id(raw_for_id),
        };
        let account = self.account.unwrap_or_default();
        if account.len() > 128 {
            return Err(EventError::new("invalid_field", "account", "account is longer than 128 bytes"));
        }
        // Control characters (NUL above all) are refused at the edge: PostgreSQL cannot store
        // them, and one such event must not fail the batch it travels in.
        check_text("message_id", &message_id)?;
        check_text("account", &account)?;
        if let Some(source) = &self.source {
            check_text("source.kind", &source.kind)?;
            check_text("source.id", &source.id)?;
        }
        for (field, raw) in [("properties", &self.properties), ("traits", &self.traits), ("context", &self.context)] {
            if raw.as_ref().is_some_and(|r| r.get().contains("\\u0000")) {
                return Err(EventError::new("invalid_field", field, "JSON strings may not contain NUL (\\u0000)"));
            }
        }
        let currency = self.currency.filter(|c| !c.is_empty());
        if let Some(c) = &currency {
            if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(EventError::new(
                    "invalid_field",
                    "currency",
                    format!("{c:?} is not an ISO 4217 code like CNY"),
                ));
            }
        }
        Ok(Event {
            message_id,
            kind,
            channel,
            account,
            identities,
            timestamp,
            received_at,
            amount,
            currency,
            source: self.source,
            group_id,
            properties: self.properties,
            traits: self.traits,
            context: self.context,
        })
    }
}

fn check_text(field: &str, value: &str) -> Result<(), EventError> {
    if value.chars().any(char::is_control) {
        return Err(EventError::new("invalid_field", field, format!("{field} contains control characters")));
    }
    Ok(())
}

/// Refuses timestamps too far in the future or before 2000.
pub fn check_time(timestamp: Millis, received_at: Millis, limits: TimeLimits) -> Result<(), EventError> {
    if timestamp.0 > received_at.0 + limits.max_future_ms {
        return Err(EventError::new(
            "timestamp_in_future",
            "timestamp",
            format!("{timestamp} is more than {} hours ahead of the server clock", limits.max_future_ms / 3_600_000),
        ));
    }
    if timestamp < limits.oldest {
        return Err(EventError::new(
            "timestamp_too_old",
            "timestamp",
            format!("{timestamp} is before {}", limits.oldest),
        ));
    }
    Ok(())
}

fn group_id_of(properties: Option<&RawValue>) -> Result<String, EventError> {
    #[derive(Deserialize)]
    struct GroupProps {
        group_id: Option<serde_json::Value>,
    }
    let missing = || EventError::new("missing_field", "properties.group_id", "group events need properties.group_id");
    let raw = properties.ok_or_else(missing)?;
    let props: GroupProps =
        serde_json::from_str(raw.get()).map_err(|e| EventError::new("invalid_field", "properties", e.to_string()))?;
    match props.group_id {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        _ => Err(missing()),
    }
}

/// A stable id for an event sent without one: a hash of its bytes.
pub fn derived_message_id(raw: &[u8]) -> String {
    let hash = xxhash_rust::xxh3::xxh3_128(raw);
    format!("h-{hash:032x}")
}

/// Parses one native event from its JSON text: the single entry point of the API and the import.
pub fn parse_native(raw: &str, received_at: Millis, limits: TimeLimits) -> Result<Event, EventError> {
    let native: NativeEvent = serde_json::from_str(raw).map_err(|e| json_error(&e))?;
    native.into_event(received_at, limits, raw.as_bytes())
}

/// A serde error as an [`EventError`], naming the field where serde names one.
pub fn json_error(e: &serde_json::Error) -> EventError {
    let text = e.to_string();
    let field = text
        .split('`')
        .nth(1)
        .filter(|_| text.starts_with("unknown field") || text.starts_with("missing field"))
        .unwrap_or("")
        .to_string();
    let code = match e.classify() {
        serde_json::error::Category::Data if text.starts_with("unknown field") => "unknown_field",
        serde_json::error::Category::Data => "invalid_field",
        _ => "invalid_json",
    };
    EventError::new(code, field, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Event, EventError> {
        parse_native(json, Millis::parse_rfc3339("2026-11-03T00:00:00Z").unwrap(), TimeLimits::default())
    }

    #[test]
    fn parses_the_spec_example() {
        let e = parse(
            r#"{"message_id": "m-001", "type": "order_paid", "channel": "douyin", "account": "brand-main",
 "identities": {"douyin_open_id": "o-9f2", "phone": "13800138000"},
 "timestamp": "2026-11-02T10:15:00Z", "amount": 199.0, "currency": "CNY",
 "source": {"kind": "live", "id": "live-20261102"}, "properties": {"order_id": "A1001"}}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::Known(EventType::OrderPaid));
        assert_eq!(e.amount, Some(Fen(19900)));
        assert_eq!(e.identities.len(), 2);
        assert!(e.identities.iter().any(|i| i.value == "+8613800138000"));
        assert_eq!(e.source.unwrap().key(), "live:live-20261102");
    }

    #[test]
    fn each_error_names_its_field() {
        let cases = [
            (r#"{"type":"like"}"#, "identities"),
            (r#"{"identities":{"user_id":"u"}}"#, "type"),
            (r#"{"type":"Like!","identities":{"user_id":"u"}}"#, "type"),
            (r#"{"type":"like","channel":"myspace","identities":{"user_id":"u"}}"#, "channel"),
            (r#"{"type":"like","identities":{"phone":"12"}}"#, "identities.phone"),
            (r#"{"type":"like","identities":{"user_id":"u"},"timestamp":"2099-01-01T00:00:00Z"}"#, "timestamp"),
            (r#"{"type":"like","identities":{"user_id":"u"},"timestamp":"soon"}"#, "timestamp"),
            (r#"{"type":"order_paid","identities":{"user_id":"u"}}"#, "amount"),
            (r#"{"type":"order_paid","identities":{"user_id":"u"},"amount":1.234}"#, "amount"),
            (r#"{"type":"group_join","identities":{"user_id":"u"}}"#, "properties.group_id"),
            (r#"{"type":"like","identities":{"user_id":"u"},"colour":"red"}"#, "colour"),
            (r#"{"type":"like","identities":{"user_id":"u"},"account":"a\u0000b"}"#, "account"),
            (r#"{"type":"like","identities":{"user_id":"u"},"properties":{"x":"a\u0000"}}"#, "properties"),
        ];
        for (json, field) in cases {
            assert_eq!(parse(json).unwrap_err().field, field, "{json}");
        }
    }

    #[test]
    fn derived_ids_are_stable() {
        let json = r#"{"type":"like","identities":{"user_id":"u"},"timestamp":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(parse(json).unwrap().message_id, parse(json).unwrap().message_id);
        assert!(parse(json).unwrap().message_id.starts_with("h-"));
    }
}
