//! Who is calling: a tenant's key from `Authorization: Bearer KEY` or HTTP basic auth with the key
//! as user name (what Segment's SDKs send). Write keys may only ingest; secret keys may do all.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use siyu_engine::KeyRole;
use siyu_model::TenantId;

use crate::error::{ApiError, Code};
use crate::AppState;

/// A caller allowed to ingest (write or secret key).
#[derive(Debug, Clone, Copy)]
pub struct Writer(pub TenantId);

/// A caller allowed to read and manage (secret key).
#[derive(Debug, Clone, Copy)]
pub struct Manager(pub TenantId);

/// The key in the request headers, if any.
pub fn key_from_headers(parts: &axum::http::HeaderMap) -> Option<String> {
    let value = parts.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) {
        return Some(token.trim().to_string()).filter(|t| !t.is_empty());
    }
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map(|(u, _)| u).unwrap_or(&text);
    Some(user.to_string()).filter(|u| !u.is_empty())
}

/// Resolves a key to its tenant, or says precisely what is wrong.
/// Every refusal is counted in `/metrics` by its code.
pub async fn authenticate(state: &AppState, key: Option<String>) -> Result<(TenantId, KeyRole), ApiError> {
    let refuse = |error: ApiError| {
        state.engine.metrics.reject(error.code().as_str());
        error
    };
    let key = key.ok_or_else(|| {
        refuse(ApiError::new(
            Code::MissingKey,
            "send your key as `Authorization: Bearer KEY` or as the basic-auth user",
        ))
    })?;
    state.engine.authenticate(&key).await?.ok_or_else(|| {
        refuse(ApiError::new(Code::InvalidKey, "this key is not known (was it revoked, or typed wrong?)"))
    })
}

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (tenant, _) = authenticate(state, key_from_headers(&parts.headers)).await?;
        Ok(Writer(tenant))
    }
}

impl FromRequestParts<AppState> for Manager {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match authenticate(state, key_from_headers(&parts.headers)).await? {
            (tenant, KeyRole::Secret) => Ok(Manager(tenant)),
            (_, KeyRole::Write) => {
                state.engine.metrics.reject(Code::Forbidden.as_str());
                Err(ApiError::new(
                    Code::Forbidden,
                    "a write key may only send events; use the secret key to read or manage",
                ))
            }
        }
    }
}
