//! `/hooks/wecom/{tenant_id}/{account}`: WeCom's callback URL. `GET` is the URL check the admin
//! console runs when the URL is saved (answer the decrypted `echostr`); `POST` an encrypted
//! customer-contact callback (answer `success` once its events are durable). The send account's
//! `callback_token`, `encoding_aes_key` and `corp_id` verify and decrypt both.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use siyu_connect::wecom::{parse_callback, to_events, CallbackError, CryptoError, MsgCrypt};
use siyu_model::{Millis, TenantId};

use super::{Answer, Hook, Outcome};
use crate::error::{ApiError, Code};
use crate::AppState;

/// The query WeCom signs a callback with.
#[derive(Debug, Deserialize)]
pub(super) struct CallbackQuery {
    msg_signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    /// The URL check's encrypted challenge (`GET` only).
    echostr: Option<String>,
}

/// The URL check: verify the signature and the timestamp, answer the decrypted echostr as is.
pub(super) async fn verify_url(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
) -> Response {
    super::finish(&state, Hook::Wecom, check_url(&state, path, query))
}

fn check_url(
    state: &AppState,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
) -> Result<Answer, ApiError> {
    let (_, _, crypt) = callback_crypt(state, path)?;
    let query = query.map_err(super::query_rejection)?.0;
    let (signature, timestamp, nonce) = signed(&query)?;
    let echostr = query.echostr.as_deref().ok_or_else(|| missing("echostr"))?;
    // Base64 has no spaces: a `+` that arrived unencoded was decoded as one.
    let echostr = echostr.replace(' ', "+");
    let echo = crypt
        .verify_url(signature, timestamp, nonce, &echostr, unix_seconds(Millis::now()))
        .map_err(|e| crypto_error(e, "echostr"))?;
    Ok(Answer::text(Outcome::Verified, echo))
}

/// A callback: verify, decrypt, parse, map, append; `success` is what WeCom waits for (it retries
/// a callback not answered within 5 s, and the events' message ids make the retries duplicates).
pub(super) async fn callback(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    super::finish(&state, Hook::Wecom, receive(&state, path, query, body).await)
}

async fn receive(
    state: &AppState,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Answer, ApiError> {
    let (tenant, account, crypt) = callback_crypt(state, path)?;
    let query = query.map_err(super::query_rejection)?.0;
    let (signature, timestamp, nonce) = signed(&query)?;
    let body = super::body(body)?;
    let xml = std::str::from_utf8(&body).map_err(|_| ApiError::new(Code::MalformedXml, "the body is not UTF-8"))?;
    let now = Millis::now();
    let decrypted = crypt
        .decrypt_message(signature, timestamp, nonce, xml, unix_seconds(now))
        .map_err(|e| crypto_error(e, "Encrypt"))?;
    let callback = parse_callback(&decrypted.plaintext).map_err(callback_error)?;
    let events = to_events(&callback, &account, now)?;
    let counts = super::ingest(state, Hook::Wecom, tenant, events).await?;
    Ok(Answer::text(counts.outcome(), "success".into()))
}

/// The tenant, account name and callback crypto of a WeCom hook URL.
fn callback_crypt(
    state: &AppState,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(TenantId, String, MsgCrypt), ApiError> {
    let (tenant, name, account) = super::account(state, Hook::Wecom, path)?;
    let token = super::credential(&account, &name, &["callback_token"])?;
    let key = super::credential(&account, &name, &["encoding_aes_key"])?;
    let corp_id = super::credential(&account, &name, &["corp_id"])?;
    let crypt = MsgCrypt::new(token, key, corp_id).map_err(|_| {
        tracing::warn!(account = %name, "a WeCom send account's encoding_aes_key is not an EncodingAESKey");
        ApiError::new(
            Code::HookNotConfigured,
            format!("send account {name:?}: credentials.encoding_aes_key is not a 43-character EncodingAESKey"),
        )
        .with_field(format!("send_accounts.{name}.credentials.encoding_aes_key"))
    })?;
    Ok((tenant, name, crypt))
}

/// `msg_signature`, `timestamp` and `nonce`: no signature is a 401, a signature without what it
/// covers a 400.
fn signed(query: &CallbackQuery) -> Result<(&str, &str, &str), ApiError> {
    let signature = query.msg_signature.as_deref().filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        ApiError::new(Code::MissingSignature, "the callback has no msg_signature query parameter")
            .with_field("msg_signature")
    })?;
    let timestamp = query.timestamp.as_deref().ok_or_else(|| missing("timestamp"))?;
    let nonce = query.nonce.as_deref().ok_or_else(|| missing("nonce"))?;
    Ok((signature, timestamp, nonce))
}

fn missing(parameter: &str) -> ApiError {
    ApiError::new(Code::InvalidQuery, format!("the callback has no {parameter} query parameter")).with_field(parameter)
}

fn unix_seconds(now: Millis) -> i64 {
    now.0.div_euclid(1000)
}

/// A refusal of the crypto layer, each with its own code; `ciphertext` names where the
/// ciphertext was (`Encrypt` of a callback, `echostr` of a URL check).
fn crypto_error(e: CryptoError, ciphertext: &str) -> ApiError {
    let (code, field) = match &e {
        CryptoError::BadSignature => (Code::BadSignature, "msg_signature"),
        CryptoError::StaleTimestamp { .. } => (Code::StaleTimestamp, "timestamp"),
        CryptoError::BadTimestamp(_) => (Code::InvalidQuery, "timestamp"),
        CryptoError::TruncatedBlock(_) => (Code::TruncatedCiphertext, ciphertext),
        CryptoError::BadPadding => (Code::BadPadding, ciphertext),
        CryptoError::BadBase64 | CryptoError::BadLength { .. } | CryptoError::NotUtf8 => {
            (Code::InvalidCiphertext, ciphertext)
        }
        CryptoError::MalformedXml(_) => (Code::MalformedXml, ""),
        CryptoError::ReceiveIdMismatch { found, .. } => {
            // The signature held: the token is ours, but the corp is not this account's.
            tracing::warn!(found = %found, "a WeCom callback decrypted to another corp");
            let message = "the callback is encrypted for another corp than this account's corp_id";
            return ApiError::new(Code::ReceiveIdMismatch, message).with_field(ciphertext);
        }
        // The key was checked when the crypto was made from the account.
        CryptoError::BadAesKey => (Code::HookNotConfigured, ""),
    };
    ApiError::new(code, e.to_string()).with_field(field)
}

/// A decrypted callback that is not one: not XML, or a known event without what it needs.
fn callback_error(e: CallbackError) -> ApiError {
    match &e {
        CallbackError::MalformedXml(_) => ApiError::new(Code::MalformedXml, e.to_string()),
        CallbackError::MissingField(field) => ApiError::new(Code::InvalidCallback, e.to_string()).with_field(*field),
        CallbackError::BadNumber { field, .. } => {
            ApiError::new(Code::InvalidCallback, e.to_string()).with_field(*field)
        }
    }
}
