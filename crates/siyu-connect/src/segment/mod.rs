//! The Segment tracking API (<https://segment.com/docs/connections/spec/>, which RudderStack's
//! SDKs also speak), so that sites and apps already instrumented with an analytics SDK can point
//! it at siyu unchanged.
//!
//! A Segment message becomes one [`siyu_model::Event`]:
//!
//! | Segment call | siyu type | notes |
//! |---|---|---|
//! | `identify` | `identify` | `traits` kept in `Event.traits` |
//! | `track` | per [`Mapping`] | money from `properties.total`/`revenue`/`value` |
//! | `page`, `screen` | `view` | `name`/`category` folded into properties |
//! | `group` | custom `group` | an account/company association, *not* `group_join` (a fan group) |
//! | `alias` | `alias` | `user_id = userId`, `anonymous_id = previousId` |
//!
//! The server authenticates with the write key (basic-auth user, or [`write_key_from_body`]),
//! picks the tenant's [`Mapping`], then calls [`parse_single`] or [`parse_batch`].

mod error;
mod mapping;
mod message;

#[cfg(test)]
mod tests;

use serde::Deserialize;
use serde_json::value::RawValue;
use siyu_model::event::TimeLimits;
use siyu_model::{Event, Millis};

pub use error::{codes, SegmentError};
pub use mapping::{snake_case, Mapping, DEFAULT_EVENT_NAMES};

use message::{object, parse_time, BatchDefaults, RawMessage};

/// Segment's own documented limits: 32 KB per call, 500 KB per batch request. The message cap
/// is ours (Segment has none besides bytes); it bounds the per-request work and the size of the
/// rejection list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentLimits {
    pub max_message_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch_messages: usize,
}

impl Default for SegmentLimits {
    fn default() -> Self {
        SegmentLimits { max_message_bytes: 32 * 1024, max_batch_bytes: 500 * 1024, max_batch_messages: 2500 }
    }
}

/// The six Segment calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl CallKind {
    pub const ALL: [CallKind; 6] =
        [CallKind::Identify, CallKind::Track, CallKind::Page, CallKind::Screen, CallKind::Group, CallKind::Alias];

    /// The name used in a message's `type` field and in the long URL path.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Identify => "identify",
            CallKind::Track => "track",
            CallKind::Page => "page",
            CallKind::Screen => "screen",
            CallKind::Group => "group",
            CallKind::Alias => "alias",
        }
    }

    /// The one-letter path analytics.js uses (`/v1/t`) to dodge ad blockers.
    pub fn short(self) -> &'static str {
        &self.as_str()[..1]
    }

    /// A batch item's `type`. Case-insensitive because hand-rolled senders write `Track`.
    pub fn parse(text: &str) -> Option<CallKind> {
        let text = text.trim();
        CallKind::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(text))
    }
}

impl std::fmt::Display for CallKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a tracking-API URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Call(CallKind),
    Batch,
}

impl Endpoint {
    /// `/v1/track`, `/v1/t`, `track`, `/v1/batch`, `/v1/b` and `/v1/import` (Segment's legacy name
    /// for batch). The query string, if any, is ignored; the path is matched case-insensitively.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let path = path.trim_matches('/');
        let last = match path.split_once('/') {
            Some((version, rest)) if version.eq_ignore_ascii_case("v1") => rest,
            Some(_) => return None,
            None => path,
        };
        if ["batch", "b", "import"].iter().any(|b| b.eq_ignore_ascii_case(last)) {
            return Some(Endpoint::Batch);
        }
        CallKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(last) || k.short().eq_ignore_ascii_case(last))
            .map(Endpoint::Call)
    }
}

/// The outcome of a batch whose body as a whole was acceptable: the good messages, and the bad
/// ones with their reason, both by position in `batch`. Segment answers 200 for such a batch, so
/// one malformed message never costs the sender its neighbours.
#[derive(Debug, Default)]
pub struct BatchParse {
    pub events: Vec<(usize, Event)>,
    pub rejected: Vec<(usize, SegmentError)>,
    /// The body's `writeKey` (or its first message's), for senders that do not use basic auth.
    pub write_key: Option<String>,
}

/// The write key some SDKs put in the body instead of the basic-auth header: the top-level
/// `writeKey` (single calls from analytics.js, and batches), else the first batch item's.
///
/// Cheap enough to call before authentication: it only skims the JSON.
pub fn write_key_from_body(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Skim<'a> {
        #[serde(rename = "writeKey", default, borrow)]
        write_key: Option<&'a RawValue>,
        #[serde(default, borrow)]
        batch: Option<Vec<&'a RawValue>>,
    }
    let skim: Skim = serde_json::from_slice(body).ok()?;
    write_key_of(skim.write_key, skim.batch.as_deref().unwrap_or_default())
}

/// Parses the body of a single call (`/v1/track`, ...). The URL decides the call kind; a `type`
/// in the body is ignored, as Segment does.
///
/// Error fields are relative to the message (`userId`, `properties.total`); `body` names the
/// request as a whole.
pub fn parse_single(
    kind: CallKind,
    body: &[u8],
    received_at: Millis,
    mapping: &Mapping,
    limits: &SegmentLimits,
    time_limits: TimeLimits,
) -> Result<Event, SegmentError> {
    if body.len() > limits.max_message_bytes {
        return Err(SegmentError::new(
            codes::MESSAGE_TOO_LARGE,
            "body",
            format!("the message is {} bytes, over the limit of {}", body.len(), limits.max_message_bytes),
        ));
    }
    let text = utf8(body)?;
    let msg = RawMessage::parse(text)?;
    let defaults = BatchDefaults::default();
    message::convert(kind, text, msg, &message::Ctx { mapping, received_at, time_limits, defaults: &defaults })
}

/// Parses a `/v1/batch` body: `{"batch": [...], "sentAt": ..., "context": ..., "writeKey": ...}`.
///
/// `Err` only when the body as a whole is unacceptable: not JSON (`invalid_json`), too big
/// (`batch_too_large`, answer 413; see [`SegmentError::is_too_large`]), no `batch` array, or a
/// malformed batch-level `sentAt`/`context`. Otherwise each message succeeds or fails alone, and
/// its errors are named `batch[i].field`.
///
/// The batch-level `sentAt` corrects every message that has none of its own; the batch-level
/// `context` is merged under each message's (the message's keys win).
pub fn parse_batch(
    body: &[u8],
    received_at: Millis,
    mapping: &Mapping,
    limits: &SegmentLimits,
    time_limits: TimeLimits,
) -> Result<BatchParse, SegmentError> {
    #[derive(Deserialize)]
    struct BatchBody<'a> {
        #[serde(default, borrow)]
        batch: Option<Vec<&'a RawValue>>,
        #[serde(rename = "sentAt", default, borrow)]
        sent_at: Option<&'a RawValue>,
        #[serde(default, borrow)]
        context: Option<&'a RawValue>,
        #[serde(rename = "writeKey", default, borrow)]
        write_key: Option<&'a RawValue>,
    }
    if body.len() > limits.max_batch_bytes {
        return Err(SegmentError::new(
            codes::BATCH_TOO_LARGE,
            "body",
            format!("the batch is {} bytes, over the limit of {}", body.len(), limits.max_batch_bytes),
        ));
    }
    let text = utf8(body)?;
    let parsed: BatchBody = serde_json::from_str(text).map_err(|e| {
        SegmentError::new(codes::INVALID_JSON, "body", format!("the body is not a segment batch object: {e}"))
    })?;
    let items = parsed
        .batch
        .ok_or_else(|| SegmentError::new(codes::MISSING_FIELD, "batch", "a batch body needs a batch array"))?;
    if items.len() > limits.max_batch_messages {
        return Err(SegmentError::new(
            codes::BATCH_TOO_LARGE,
            "batch",
            format!("the batch holds {} messages, over the limit of {}", items.len(), limits.max_batch_messages),
        ));
    }
    let defaults = BatchDefaults {
        sent_at: parsed.sent_at.map(|raw| parse_time(raw, "sentAt")).transpose()?,
        context: match parsed.context {
            Some(raw) => object(Some(raw), "context")?.map(|map| (map, raw)),
            None => None,
        },
    };
    let ctx = message::Ctx { mapping, received_at, time_limits, defaults: &defaults };
    let mut out = BatchParse {
        events: Vec::with_capacity(items.len()),
        rejected: Vec::new(),
        write_key: write_key_of(parsed.write_key, &items),
    };
    for (index, raw) in items.into_iter().enumerate() {
        match parse_item(raw, limits, &ctx) {
            Ok(event) => out.events.push((index, event)),
            Err(e) => out.rejected.push((index, e.under(&format!("batch[{index}]")))),
        }
    }
    Ok(out)
}

fn parse_item(raw: &RawValue, limits: &SegmentLimits, ctx: &message::Ctx) -> Result<Event, SegmentError> {
    let text = raw.get();
    if text.len() > limits.max_message_bytes {
        return Err(SegmentError::new(
            codes::MESSAGE_TOO_LARGE,
            "body",
            format!("the message is {} bytes, over the limit of {}", text.len(), limits.max_message_bytes),
        ));
    }
    let msg = RawMessage::parse(text)?;
    let kind = match msg.call_type.map(|raw| serde_json::from_str::<String>(raw.get())) {
        Some(Ok(name)) => CallKind::parse(&name).ok_or_else(|| {
            SegmentError::new(
                codes::UNKNOWN_TYPE,
                "type",
                format!("{name:?} is not a segment call (identify, track, page, screen, group, alias)"),
            )
        })?,
        Some(Err(_)) | None => {
            return Err(SegmentError::new(
                codes::UNKNOWN_TYPE,
                "type",
                "a batch message needs a type (identify, track, page, screen, group, alias)",
            ))
        }
    };
    message::convert(kind, text, msg, ctx)
}

/// The top-level key, else the first message's (analytics.js puts one in every message).
fn write_key_of(top: Option<&RawValue>, items: &[&RawValue]) -> Option<String> {
    #[derive(Deserialize)]
    struct Item<'a> {
        #[serde(rename = "writeKey", default, borrow)]
        write_key: Option<&'a RawValue>,
    }
    let key_of = |raw: Option<&RawValue>| -> Option<String> {
        let key: String = serde_json::from_str(raw?.get()).ok()?;
        let key = key.trim();
        (!key.is_empty()).then(|| key.to_string())
    };
    key_of(top).or_else(|| {
        let item: Item = serde_json::from_str(items.first()?.get()).ok()?;
        key_of(item.write_key)
    })
}

fn utf8(body: &[u8]) -> Result<&str, SegmentError> {
    std::str::from_utf8(body)
        .map_err(|e| SegmentError::new(codes::INVALID_JSON, "body", format!("the body is not utf-8: {e}")))
}
