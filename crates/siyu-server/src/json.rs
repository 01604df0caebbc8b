//! A JSON request body that does not insist on `Content-Type: application/json`: `curl -d`, SDKs
//! and shell scripts often send another type, and the ingestion routes already accept any. A body
//! that is not the expected JSON is a 400 with a JSON error naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::{body_rejection, ApiError, Code};

/// Like `axum::Json` as an extractor, minus the content-type check.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(body_rejection)?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            let e = siyu_model::event::json_error(&e);
            let code = if e.code == Code::InvalidJson.as_str() { Code::InvalidJson } else { Code::InvalidBody };
            ApiError::new(code, e.message).with_field(e.field)
        })
    }
}
