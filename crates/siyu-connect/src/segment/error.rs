//! The one error type of the Segment adapter, shaped like `siyu_model::EventError` so the server
//! can report both the same way.

use siyu_model::EventError;

/// Why a Segment body or message was refused.
///
/// `code` is stable (clients and dashboards match on it), `field` names the JSON path at fault
/// (`userId`, `properties.total`, `batch[3].timestamp`, `body`), `message` is for humans
/// (lowercase, no trailing period).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SegmentError {
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

impl SegmentError {
    pub fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        SegmentError { code, field: field.into(), message: message.into() }
    }

    /// Does this error mean the request was too big, so the server should answer 413 rather
    /// than 400? Only whole-body errors can be; an oversized message inside a batch is reported
    /// per message.
    pub fn is_too_large(&self) -> bool {
        matches!(self.code, codes::BATCH_TOO_LARGE | codes::MESSAGE_TOO_LARGE)
    }

    /// The HTTP status a server should answer with when this error refuses the whole request.
    pub fn http_status(&self) -> u16 {
        if self.is_too_large() {
            413
        } else {
            400
        }
    }

    /// Re-roots the field under `prefix` (`timestamp` → `batch[3].timestamp`); an error about
    /// the message as a whole (field `body`) becomes just `prefix`.
    pub(crate) fn under(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() || self.field == "body" {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }

    /// Renames a field that siyu-model named after its own wire form (`timestamp`) to the
    /// Segment field it actually came from (`originalTimestamp`).
    pub(crate) fn renamed(mut self, from: &str, to: &str) -> Self {
        if self.field == from {
            self.field = to.to_string();
        }
        self
    }
}

impl From<EventError> for SegmentError {
    fn from(e: EventError) -> Self {
        SegmentError { code: e.code, field: e.field, message: e.message }
    }
}

impl From<SegmentError> for EventError {
    fn from(e: SegmentError) -> Self {
        EventError::new(e.code, e.field, e.message)
    }
}

/// The stable error codes. Codes shared with siyu-model (`invalid_timestamp`, `timestamp_in_future`,
/// `timestamp_too_old`, `missing_field`, `invalid_field`, `missing_identity`, `invalid_identity`,
/// `invalid_amount`) keep siyu-model's spelling so one dashboard counts both ingestion paths.
pub mod codes {
    /// The body (or a batch item) is not a JSON object.
    pub const INVALID_JSON: &str = "invalid_json";
    /// One message is over `SegmentLimits::max_message_bytes`.
    pub const MESSAGE_TOO_LARGE: &str = "message_too_large";
    /// The batch body is over `max_batch_bytes` or holds more than `max_batch_messages`.
    pub const BATCH_TOO_LARGE: &str = "batch_too_large";
    /// A batch item has no `type`, or one that is not a Segment call.
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    /// A track event name cannot become a siyu type name (or the tenant's mapping names an invalid one).
    pub const INVALID_EVENT_NAME: &str = "invalid_event_name";
    pub const MISSING_FIELD: &str = "missing_field";
    pub const INVALID_FIELD: &str = "invalid_field";
    pub const MISSING_IDENTITY: &str = "missing_identity";
    pub const INVALID_IDENTITY: &str = "invalid_identity";
    pub const INVALID_TIMESTAMP: &str = "invalid_timestamp";
    pub const MISSING_AMOUNT: &str = "missing_amount";
    pub const INVALID_AMOUNT: &str = "invalid_amount";
    pub const UNKNOWN_CHANNEL: &str = "unknown_channel";
}
