//! One error type for every HTTP response that is not a success, with a stable registry of codes
//! ([`Code`]): each code has one status, and the JSON body always carries `code` and `message`
//! (plus the offending `field`, and per-item `errors` for batches). 5xx causes are logged, never
//! returned. docs/errors.md documents every code; a test below keeps the two equal.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The error body of every failed request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_json`, `missing_identity`, `batch_too_large`.
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `invalid_condition`: where (1-based, in characters) the first mistake is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// For batches: the items that were refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ItemError>,
}

/// One refused item of a batch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ItemError {
    /// Position of the item in the batch (0-based).
    pub index: usize,
    pub code: String,
    pub field: String,
    pub message: String,
}

/// Defines [`Code`] from one table, so `ALL`, `as_str` and `status` cannot disagree.
macro_rules! codes {
    ($($variant:ident => $code:literal, $status:ident;)*) => {
        /// The registry of error codes: each has one string, the body's `code` that clients and
        /// dashboards match on (stable), and one HTTP status. docs/errors.md says when each
        /// happens; a test keeps it equal to [`Code::ALL`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, in the order of docs/errors.md.
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(Code::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

codes! {
    MissingKey           => "missing_key",            UNAUTHORIZED;
    InvalidKey           => "invalid_key",            UNAUTHORIZED;
    Forbidden            => "forbidden",              FORBIDDEN;
    NoSuchRoute          => "no_such_route",          NOT_FOUND;
    NotFound             => "not_found",              NOT_FOUND;
    MethodNotAllowed     => "method_not_allowed",     METHOD_NOT_ALLOWED;
    UnsupportedMediaType => "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE;
    PayloadTooLarge      => "payload_too_large",      PAYLOAD_TOO_LARGE;
    InvalidBody          => "invalid_body",           BAD_REQUEST;
    InvalidJson          => "invalid_json",           BAD_REQUEST;
    InvalidEncoding      => "invalid_encoding",       BAD_REQUEST;
    EmptyBatch           => "empty_batch",            BAD_REQUEST;
    BatchTooLarge        => "batch_too_large",        PAYLOAD_TOO_LARGE;
    MessageTooLarge      => "message_too_large",      PAYLOAD_TOO_LARGE;
    UnknownType          => "unknown_type",           BAD_REQUEST;
    UnknownField         => "unknown_field",          BAD_REQUEST;
    MissingField         => "missing_field",          BAD_REQUEST;
    InvalidField         => "invalid_field",          BAD_REQUEST;
    UnknownEventType     => "unknown_event_type",     BAD_REQUEST;
    InvalidEventName     => "invalid_event_name",     BAD_REQUEST;
    UnknownChannel       => "unknown_channel",        BAD_REQUEST;
    MissingIdentity      => "missing_identity",       BAD_REQUEST;
    InvalidIdentity      => "invalid_identity",       BAD_REQUEST;
    InvalidTimestamp     => "invalid_timestamp",      BAD_REQUEST;
    TimestampInFuture    => "timestamp_in_future",    BAD_REQUEST;
    TimestampTooOld      => "timestamp_too_old",      BAD_REQUEST;
    MissingAmount        => "missing_amount",         BAD_REQUEST;
    InvalidAmount        => "invalid_amount",         BAD_REQUEST;
    InvalidRequest       => "invalid_request",        BAD_REQUEST;
    InvalidQuery         => "invalid_query",          BAD_REQUEST;
    InvalidSettings      => "invalid_settings",       BAD_REQUEST;
    NotMerged            => "not_merged",             BAD_REQUEST;
    NoSuchProfile        => "no_such_profile",        NOT_FOUND;
    InvalidCondition     => "invalid_condition",      BAD_REQUEST;
    Cycle                => "cycle",                  BAD_REQUEST;
    RuleTag              => "rule_tag",               BAD_REQUEST;
    NoSuchTag            => "no_such_tag",            NOT_FOUND;
    NoSuchTagGroup       => "no_such_tag_group",      NOT_FOUND;
    NoSuchSegment        => "no_such_segment",        NOT_FOUND;
    InvalidTemplate      => "invalid_template",       BAD_REQUEST;
    InvalidCampaign      => "invalid_campaign",       BAD_REQUEST;
    NoSuchTemplate       => "no_such_template",       NOT_FOUND;
    NoSuchCampaign       => "no_such_campaign",       NOT_FOUND;
    NoSendAccount        => "no_send_account",        NOT_FOUND;
    WrongState           => "wrong_state",            CONFLICT;
    NameTaken            => "name_taken",             CONFLICT;
    InUse                => "in_use",                 CONFLICT;
    NoSuchHook           => "no_such_hook",           NOT_FOUND;
    HookNotConfigured    => "hook_not_configured",    NOT_FOUND;
    MissingSignature     => "missing_signature",      UNAUTHORIZED;
    BadSignature         => "bad_signature",          UNAUTHORIZED;
    StaleTimestamp       => "stale_timestamp",        UNAUTHORIZED;
    ReceiveIdMismatch    => "receive_id_mismatch",    UNAUTHORIZED;
    MalformedXml         => "malformed_xml",          BAD_REQUEST;
    TruncatedCiphertext  => "truncated_ciphertext",   BAD_REQUEST;
    BadPadding           => "bad_padding",            BAD_REQUEST;
    InvalidCiphertext    => "invalid_ciphertext",     BAD_REQUEST;
    InvalidCallback      => "invalid_callback",       BAD_REQUEST;
    WecomError           => "wecom_error",            BAD_GATEWAY;
    Internal             => "internal",               INTERNAL_SERVER_ERROR;
    Unavailable          => "unavailable",            SERVICE_UNAVAILABLE;
}

impl Code {
    /// The code of a refusal that another crate reports by its string (`siyu_model::EventError`,
    /// `siyu_connect::SegmentError`); a test checks that every code they can return is registered.
    /// Should one slip through anyway, it is logged and answered as `invalid_request` (400).
    pub fn of_refusal(code: &str) -> Code {
        code.parse().unwrap_or_else(|_| {
            tracing::error!(code, "error code missing from the registry (error.rs)");
            Code::InvalidRequest
        })
    }
}

/// A string that is not a registered [`Code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownCode(pub String);

impl std::str::FromStr for Code {
    type Err = UnknownCode;

    fn from_str(s: &str) -> Result<Code, UnknownCode> {
        Code::ALL.iter().copied().find(|c| c.as_str() == s).ok_or_else(|| UnknownCode(s.to_string()))
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
pub struct ApiError {
    /// `code.status()`, except where `json_errors` keeps the status of a framework rejection.
    pub status: StatusCode,
    code: Code,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            status: code.status(),
            code,
            body: ErrorBody {
                code: code.as_str().to_string(),
                message: message.into(),
                field: None,
                line: None,
                column: None,
                errors: Vec::new(),
            },
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        let field = field.into();
        if !field.is_empty() {
            self.body.field = Some(field);
        }
        self
    }

    pub fn with_errors(mut self, errors: Vec<ItemError>) -> ApiError {
        self.body.errors = errors;
        self
    }

    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(Code::Internal, "internal error, see the server log")
    }

    pub fn code(&self) -> Code {
        self.code
    }
}

impl From<siyu_engine::EngineError> for ApiError {
    fn from(e: siyu_engine::EngineError) -> ApiError {
        use siyu_engine::EngineError as E;
        match e {
            E::NoSuchTenant(_) => ApiError::new(Code::InvalidKey, "the key's tenant does not exist"),
            E::NoSuchProfile(id) => ApiError::new(Code::NoSuchProfile, format!("profile {id} not found")),
            E::InvalidSettings(c) => ApiError::new(Code::InvalidSettings, c.message).with_field(c.field),
            E::NotMerged { .. } => ApiError::new(Code::NotMerged, e.to_string()),
            E::ShuttingDown => ApiError::new(Code::Unavailable, "the server is shutting down"),
            E::Store(s) => ApiError::internal(s),
            E::Segments(a) => segments_error(a),
            E::Reach(r) => reach_error(r),
        }
    }
}

fn segments_error(e: siyu_engine::segments::ops::SegmentsError) -> ApiError {
    use siyu_engine::segments::ops::RecordKind;
    use siyu_engine::segments::ops::SegmentsError as A;
    match e {
        A::InvalidCondition(errors) => {
            let first = errors.first();
            let message = first.map(ToString::to_string).unwrap_or_else(|| "invalid condition".into());
            let mut error = ApiError::new(Code::InvalidCondition, message).with_field("condition");
            error.body.line = first.map(|e| e.span.start.line);
            error.body.column = first.map(|e| e.span.start.column);
            error.with_errors(
                errors
                    .iter()
                    .enumerate()
                    .map(|(index, e)| ItemError {
                        index,
                        code: e.code.as_str().to_string(),
                        field: "condition".into(),
                        message: e.to_string(),
                    })
                    .collect(),
            )
        }
        A::NameTaken { .. } => ApiError::new(Code::NameTaken, e.to_string()).with_field("name"),
        A::NotFound { kind, .. } => {
            let code = match kind {
                RecordKind::Tag => Code::NoSuchTag,
                RecordKind::TagGroup => Code::NoSuchTagGroup,
                RecordKind::Segment => Code::NoSuchSegment,
                RecordKind::Template => Code::NoSuchTemplate,
                RecordKind::Campaign => Code::NoSuchCampaign,
            };
            ApiError::new(code, e.to_string())
        }
        A::InUse(_) => ApiError::new(Code::InUse, e.to_string()),
        A::Invalid { field, .. } => ApiError::new(Code::InvalidRequest, e.to_string()).with_field(field),
        A::RuleTag(_) => ApiError::new(Code::RuleTag, e.to_string()),
        A::Cycle(_) => ApiError::new(Code::Cycle, e.to_string()).with_field("condition"),
    }
}

fn reach_error(e: siyu_engine::reach::ReachError) -> ApiError {
    use siyu_engine::reach::ReachError as R;
    match e {
        R::InvalidTemplate(errors) => {
            let first = errors.first();
            let message = first.map(|e| e.message.clone()).unwrap_or_else(|| "invalid template".into());
            let mut error = ApiError::new(Code::InvalidTemplate, message)
                .with_field(first.map(|e| e.field.clone()).unwrap_or_else(|| "definition".into()));
            error.body.line = first.map(|e| e.line);
            error.body.column = first.map(|e| e.column);
            error.with_errors(
                errors
                    .iter()
                    .enumerate()
                    .map(|(index, e)| ItemError {
                        index,
                        code: e.code.to_string(),
                        field: e.field.clone(),
                        message: format!("line {}, column {}: {}", e.line, e.column, e.message),
                    })
                    .collect(),
            )
        }
        R::Invalid { field, .. } => ApiError::new(Code::InvalidCampaign, e.to_string()).with_field(field),
        R::NotFound { kind, .. } => {
            let code = match kind {
                "template" => Code::NoSuchTemplate,
                "campaign" => Code::NoSuchCampaign,
                "segment" => Code::NoSuchSegment,
                "profile" => Code::NoSuchProfile,
                _ => Code::NotFound,
            };
            ApiError::new(code, e.to_string())
        }
        R::NameTaken { .. } => ApiError::new(Code::NameTaken, e.to_string()).with_field("name"),
        R::WrongState { .. } => ApiError::new(Code::WrongState, e.to_string()),
    }
}

impl From<siyu_outbox::wecom_ops::WeComOpsError> for ApiError {
    fn from(e: siyu_outbox::wecom_ops::WeComOpsError) -> ApiError {
        use siyu_connect::wecom::WeComError;
        use siyu_outbox::wecom_ops::WeComOpsError as W;
        match e {
            W::NoSendAccount(_) => ApiError::new(Code::NoSendAccount, e.to_string()).with_field("account"),
            W::NotWeCom(_) | W::Config { .. } => {
                ApiError::new(Code::InvalidRequest, e.to_string()).with_field("account")
            }
            W::Invalid { field, .. } => ApiError::new(Code::InvalidRequest, e.to_string()).with_field(field),
            W::StateTaken(_) => ApiError::new(Code::NameTaken, e.to_string()).with_field("state"),
            W::WeCom { error: WeComError::Invalid(_), .. } => ApiError::new(Code::InvalidRequest, e.to_string()),
            // WeCom's answer (its errcode and errmsg) is what the operator needs to fix it, and holds
            // nothing of ours: said in the body, unlike the causes of our own 5xx.
            W::WeCom { .. } => {
                tracing::warn!(error = %e, "wecom call failed");
                ApiError::new(Code::WecomError, e.to_string())
            }
            W::Engine(e) => e.into(),
        }
    }
}

impl From<siyu_model::EventError> for ApiError {
    fn from(e: siyu_model::EventError) -> ApiError {
        ApiError::new(Code::of_refusal(e.code), e.message).with_field(e.field)
    }
}

/// A body that could not be read: over the size limit (413), or broken (e.g. bad gzip).
pub fn body_rejection(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(Code::PayloadTooLarge, "the request body is over the size limit (8 MiB after decompression)")
    } else {
        ApiError::new(Code::InvalidBody, e.body_text())
    }
}

/// Makes every error response JSON, including the plain-text rejections of axum's extractors
/// (a malformed query or path, a wrong content type) and method-not-allowed.
pub async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
        StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidBody,
        s if s.is_server_error() => Code::Internal,
        _ => Code::InvalidRequest,
    };
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_lowercase() } else { text };
    let mut error = ApiError::new(code, message);
    error.status = status;
    error.into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// The codes siyu-model's `EventError` can carry (native events, imports, settings JSON).
    const MODEL_CODES: &[&str] = &[
        "missing_field",
        "unknown_event_type",
        "unknown_channel",
        "invalid_identity",
        "missing_identity",
        "invalid_timestamp",
        "timestamp_in_future",
        "timestamp_too_old",
        "invalid_amount",
        "invalid_field",
        "unknown_field",
        "invalid_json",
    ];

    #[test]
    fn codes_are_unique_snake_case_and_parse_back() {
        let mut seen = HashSet::new();
        for &code in Code::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} is registered twice");
            let snake = !text.is_empty()
                && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                && !text.starts_with('_')
                && !text.ends_with('_')
                && !text.contains("__");
            assert!(snake, "{text:?} is not snake_case");
            assert_eq!(text.parse::<Code>(), Ok(code));
            assert_eq!(code.to_string(), text);
        }
        assert_eq!("no_such_code".parse::<Code>(), Err(UnknownCode("no_such_code".into())));
        assert_eq!(Code::of_refusal("no_such_code"), Code::InvalidRequest);
    }

    /// docs/errors.md's table lists exactly the registry, in its order, with the same statuses.
    #[test]
    fn docs_list_every_code_with_its_status() {
        let doc = include_str!("../../../docs/errors.md");
        let documented: Vec<(String, u16)> = doc
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.trim().strip_prefix('|')?.split('|').map(str::trim).collect();
                let code = cells.first()?.strip_prefix('`')?.strip_suffix('`')?;
                let status = cells.get(1)?.parse().ok()?;
                Some((code.to_string(), status))
            })
            .collect();
        let registered: Vec<(String, u16)> =
            Code::ALL.iter().map(|c| (c.as_str().to_string(), c.status().as_u16())).collect();
        assert_eq!(documented, registered, "docs/errors.md and Code::ALL differ");
    }

    /// Codes other crates report as strings become registered codes, never the fallback.
    #[test]
    fn every_code_of_model_and_connect_is_registered() {
        let connect = [
            siyu_connect::segment::codes::INVALID_JSON,
            siyu_connect::segment::codes::MESSAGE_TOO_LARGE,
            siyu_connect::segment::codes::BATCH_TOO_LARGE,
            siyu_connect::segment::codes::UNKNOWN_TYPE,
            siyu_connect::segment::codes::INVALID_EVENT_NAME,
            siyu_connect::segment::codes::MISSING_FIELD,
            siyu_connect::segment::codes::INVALID_FIELD,
            siyu_connect::segment::codes::MISSING_IDENTITY,
            siyu_connect::segment::codes::INVALID_IDENTITY,
            siyu_connect::segment::codes::INVALID_TIMESTAMP,
            siyu_connect::segment::codes::MISSING_AMOUNT,
            siyu_connect::segment::codes::INVALID_AMOUNT,
            siyu_connect::segment::codes::UNKNOWN_CHANNEL,
        ];
        for code in MODEL_CODES.iter().chain(&connect) {
            assert!(code.parse::<Code>().is_ok(), "{code} is not in the registry");
        }
        // The lists above must be complete: every literal code in the sources that make them.
        // siyu-connect's `check_time` errors come from siyu-model and are in MODEL_CODES.
        let model = literals_after(include_str!("../../siyu-model/src/event.rs"), &["EventError::new(", "=> "]);
        let connect_source = include_str!("../../siyu-connect/src/segment/error.rs");
        let consts = literals_after(connect_source, &[": &str = "]);
        assert!(model.len() >= 10 && consts.len() >= 10, "the source scan found too little: {model:?} {consts:?}");
        for code in model {
            assert!(MODEL_CODES.contains(&code.as_str()), "siyu-model's {code} is missing from MODEL_CODES");
        }
        for code in consts {
            assert!(connect.contains(&code.as_str()), "siyu-connect's {code} is missing from the list above");
        }
    }

    /// Every string literal that directly follows one of `markers` (after whitespace).
    fn literals_after(source: &str, markers: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        for marker in markers {
            for (at, _) in source.match_indices(marker) {
                let rest = source[at + marker.len()..].trim_start();
                if let Some(literal) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                    found.push(literal.to_string());
                }
            }
        }
        found
    }
}
