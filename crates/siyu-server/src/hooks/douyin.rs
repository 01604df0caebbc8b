//! `/hooks/douyin/{tenant_id}/{account}`: the Douyin open platform's webhook URL. Verified with
//! the send account's `webhook_secret` (mini-apps) or else its `client_secret`; the URL check is
//! answered with its challenge, an event is appended, and a private message that says 退订 / TD
//! also becomes an `unsubscribe` on the channel, so the guardrails stop marketing to the person.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::value::to_raw_value;
use serde_json::{json, Value};
use siyu_connect::douyin::webhook::{MSG_ID_HEADER, SIGNATURE_HEADER};
use siyu_connect::douyin::{handle, is_unsubscribe, DouyinWebhookError, WebhookHeaders, WebhookOutcome};
use siyu_model::event::{derived_message_id, EventKind};
use siyu_model::{Channel, Event, EventType, Millis};

use super::{Answer, Counts, Hook, Outcome};
use crate::error::{ApiError, Code};
use crate::AppState;

pub(super) async fn webhook(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    super::finish(&state, Hook::Douyin, receive(&state, path, &headers, body).await)
}

async fn receive(
    state: &AppState,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Answer, ApiError> {
    let (tenant, name, account) = super::account(state, Hook::Douyin, path)?;
    let secret = super::credential(&account, &name, &["webhook_secret", "client_secret"])?;
    let body = super::body(body)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = WebhookHeaders { signature: header(SIGNATURE_HEADER), msg_id: header(MSG_ID_HEADER) };
    let events = match handle(secret, signed, &body, &name, Millis::now()).map_err(webhook_error)? {
        WebhookOutcome::Challenge { response_body } => return Ok(Answer::json(Outcome::Verified, response_body)),
        WebhookOutcome::Ignored { .. } => Vec::new(),
        WebhookOutcome::Event(event) => with_unsubscribe(*event),
    };
    let counts = super::ingest(state, Hook::Douyin, tenant, events).await?;
    Ok(Answer::json(counts.outcome(), ack(counts)))
}

/// What Douyin gets back (it only looks at the status; people debugging look at the rest).
fn ack(counts: Counts) -> String {
    json!({ "accepted": counts.accepted, "duplicates": counts.duplicates }).to_string()
}

fn webhook_error(e: DouyinWebhookError) -> ApiError {
    let (code, field) = match &e {
        DouyinWebhookError::MissingSignature => (Code::MissingSignature, SIGNATURE_HEADER),
        DouyinWebhookError::BadSignature => (Code::BadSignature, SIGNATURE_HEADER),
        DouyinWebhookError::MalformedJson(_) => (Code::InvalidJson, ""),
        DouyinWebhookError::InvalidEvent { .. } => (Code::InvalidCallback, ""),
    };
    ApiError::new(code, e.to_string()).with_field(field)
}

/// The event, followed by the `unsubscribe` it implies when it is a private message saying
/// 退订 / TD. Both go into one append, so the opt-out is durable exactly when the message is.
fn with_unsubscribe(event: Event) -> Vec<Event> {
    let unsubscribe = unsubscribe_of(&event);
    std::iter::once(event).chain(unsubscribe).collect()
}

/// The `unsubscribe` a received Douyin message asks for: same person, account and time; its
/// `message_id` derived from the message's, so a retried webhook adds neither twice.
fn unsubscribe_of(message: &Event) -> Option<Event> {
    if message.kind != EventKind::Known(EventType::MessageIn) || message.channel != Channel::Douyin {
        return None;
    }
    let properties: Value = serde_json::from_str(message.properties.as_ref()?.get()).ok()?;
    let text = properties.get("text")?.as_str()?;
    if !is_unsubscribe(text) {
        return None;
    }
    let id = format!("{}:unsubscribe", message.message_id);
    let message_id = if id.len() <= 200 { id } else { derived_message_id(id.as_bytes()) };
    let properties = json!({ "reason": "keyword", "text": text, "message_id": message.message_id });
    Some(Event {
        message_id,
        kind: EventKind::Known(EventType::Unsubscribe),
        properties: Some(to_raw_value(&properties).expect("a JSON value always serialises")),
        traits: None,
        amount: None,
        currency: None,
        source: None,
        group_id: None,
        ..message.clone()
    })
}

#[cfg(test)]
mod tests {
    use siyu_model::event::{parse_native, TimeLimits};

    use super::*;

    fn message(text: &str, message_id: &str) -> Event {
        let native = json!({
            "message_id": message_id,
            "type": "message_in",
            "channel": "douyin",
            "account": "brand-main",
            "identities": {"douyin_open_id": "open-1"},
            "timestamp": "2026-11-03T00:00:00Z",
            "properties": {"text": text, "conversation_id": "c-1"},
            "traits": {"nickname": "小王"},
        });
        parse_native(&native.to_string(), Millis::now(), TimeLimits::default()).unwrap()
    }

    #[test]
    fn td_adds_an_unsubscribe_for_the_same_person() {
        let events = with_unsubscribe(message(" TD ", "douyin:im_receive_msg:m-1"));
        assert_eq!(events.len(), 2);
        let (sent, unsubscribe) = (&events[0], &events[1]);
        assert_eq!(unsubscribe.kind, EventKind::Known(EventType::Unsubscribe));
        assert_eq!(unsubscribe.message_id, "douyin:im_receive_msg:m-1:unsubscribe");
        assert_eq!((&unsubscribe.identities, &unsubscribe.account), (&sent.identities, &sent.account));
        assert_eq!((unsubscribe.channel, unsubscribe.timestamp), (Channel::Douyin, sent.timestamp));
        assert!(unsubscribe.traits.is_none());
        let properties: Value = serde_json::from_str(unsubscribe.properties.as_ref().unwrap().get()).unwrap();
        assert_eq!(properties["message_id"], "douyin:im_receive_msg:m-1");
        // The same message gives the same id (retries), a long one a hash within the limit.
        assert_eq!(
            with_unsubscribe(message("退订", "douyin:im_receive_msg:m-1"))[1].message_id,
            unsubscribe.message_id
        );
        let long = format!("douyin:im_receive_msg:{}", "x".repeat(178));
        let hashed = &with_unsubscribe(message("退订", &long))[1].message_id;
        assert!(hashed.len() <= 200 && hashed.starts_with("h-"), "{hashed}");
    }

    #[test]
    fn other_texts_and_events_add_nothing() {
        assert_eq!(with_unsubscribe(message("不要退订", "m-2")).len(), 1);
        let mut wecom = message("TD", "m-3");
        wecom.channel = Channel::Wecom;
        assert_eq!(with_unsubscribe(wecom).len(), 1);
        let mut sent = message("TD", "m-4");
        sent.kind = EventKind::Known(EventType::MessageOut);
        assert_eq!(with_unsubscribe(sent).len(), 1);
    }
}
