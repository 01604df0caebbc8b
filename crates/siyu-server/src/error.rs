//! One error type for every HTTP response that is not a success, with a stable registry of codes:
//! each code has one status, and the JSON body always carries `code` and `message` (plus the
//! offending `field`, and per-item `errors` for batches). 5xx causes are logged, never returned.

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

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

/// The registry: code → status. Codes not listed are 400.
pub fn status_of(code: &str) -> StatusCode {
    match code {
        "missing_key" | "invalid_key" => StatusCode::UNAUTHORIZED,
        "forbidden" => StatusCode::FORBIDDEN,
        "not_found" | "no_such_profile" | "no_such_route" | "no_such_tag" | "no_such_tag_group" | "no_such_segment" => {
            StatusCode::NOT_FOUND
        }
        "payload_too_large" | "batch_too_large" | "message_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
        "conflict" | "tenant_exists" | "name_taken" | "in_use" => StatusCode::CONFLICT,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "internal" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: status_of(code),
            body: ErrorBody {
                code: code.to_string(),
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
        ApiError::new("internal", "internal error, see the server log")
    }

    pub fn code(&self) -> &str {
        &self.body.code
    }
}

impl From<siyu_engine::EngineError> for ApiError {
    fn from(e: siyu_engine::EngineError) -> ApiError {
        use siyu_engine::EngineError as E;
        match e {
            E::NoSuchTenant(_) => ApiError::new("invalid_key", "the key's tenant does not exist"),
            E::NoSuchProfile(id) => ApiError::new("no_such_profile", format!("profile {id} not found")),
            E::InvalidSettings(c) => ApiError::new("invalid_settings", c.message).with_field(c.field),
            E::NotMerged { .. } => ApiError::new("not_merged", e.to_string()),
            E::ShuttingDown => ApiError::new("unavailable", "the server is shutting down"),
            E::Store(s) => ApiError::internal(s),
            E::Audience(a) => audience_error(a),
        }
    }
}

fn audience_error(e: siyu_engine::audience::ops::AudienceError) -> ApiError {
    use siyu_engine::audience::ops::AudienceError as A;
    use siyu_store::AudienceKind;
    match e {
        A::InvalidCondition(errors) => {
            let first = errors.first();
            let message = first.map(ToString::to_string).unwrap_or_else(|| "invalid condition".into());
            let mut error = ApiError::new("invalid_condition", message).with_field("condition");
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
        A::NameTaken { .. } => ApiError::new("name_taken", e.to_string()).with_field("name"),
        A::NotFound { kind, .. } => {
            let code = match kind {
                AudienceKind::Tag => "no_such_tag",
                AudienceKind::TagGroup => "no_such_tag_group",
                AudienceKind::Segment => "no_such_segment",
            };
            ApiError::new(code, e.to_string())
        }
        A::InUse(_) => ApiError::new("in_use", e.to_string()),
        A::Invalid { field, .. } => ApiError::new("invalid_request", e.to_string()).with_field(field),
        A::RuleTag(_) => ApiError::new("rule_tag", e.to_string()),
        A::Cycle(_) => ApiError::new("cycle", e.to_string()).with_field("condition"),
    }
}

impl From<siyu_model::EventError> for ApiError {
    fn from(e: siyu_model::EventError) -> ApiError {
        ApiError::new(e.code, e.message).with_field(e.field)
    }
}

/// A body that could not be read: over the size limit (413), or broken (e.g. bad gzip).
pub fn body_rejection(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new("payload_too_large", "the request body is over the size limit (8 MiB after decompression)")
    } else {
        ApiError::new("invalid_body", e.body_text())
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
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
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
