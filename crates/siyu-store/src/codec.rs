//! The compact text form of an event's identities in the log: `kind␟value␞kind␟value`.
//! Identity values are validated to hold no control characters, so the separators are safe, and
//! decoding is a split rather than a JSON parse — replay speed depends on it.

use siyu_model::Identity;

const UNIT: char = '\u{1f}';
const RECORD: char = '\u{1e}';

pub fn encode_identities(identities: &[Identity]) -> String {
    let mut out = String::with_capacity(identities.len() * 24);
    for (i, identity) in identities.iter().enumerate() {
        if i > 0 {
            out.push(RECORD);
        }
        out.push_str(identity.kind.as_str());
        out.push(UNIT);
        out.push_str(&identity.value);
    }
    out
}

/// The `(kind, value)` pairs of the compact form, borrowed; `None` if malformed.
pub fn split_identities(text: &str) -> impl Iterator<Item = Option<(&str, &str)>> {
    text.split(RECORD).map(|pair| pair.split_once(UNIT))
}

/// Decodes without re-normalising: values in the log are normalised already.
pub fn decode_identities(text: &str) -> Option<Vec<Identity>> {
    text.split(RECORD)
        .map(|pair| {
            let (kind, value) = pair.split_once(UNIT)?;
            Some(Identity { kind: siyu_model::IdentityKind::parse(kind).ok()?, value: value.to_string() })
        })
        .collect()
}

/// An event row as both back-ends read it, before it becomes a domain [`Event`].
pub(crate) struct EventRow {
    pub seq: i64,
    pub message_id: String,
    pub event_type: String,
    pub channel: String,
    pub account: String,
    pub ts: i64,
    pub received_at: i64,
    pub amount_fen: Option<i64>,
    pub currency: Option<String>,
    pub identities: String,
    pub source_kind: Option<String>,
    pub source_id: Option<String>,
    pub group_id: Option<String>,
    pub properties: Option<String>,
    pub traits: Option<String>,
    pub context: Option<String>,
}

impl EventRow {
    pub(crate) fn into_stored(self) -> crate::Result<crate::StoredEvent> {
        use siyu_model::event::EventKind;
        let corrupt = |what: &str| crate::StoreError::Corrupt(format!("event {}: bad {what}", self.seq));
        let kind = EventKind::parse(&self.event_type).ok_or_else(|| corrupt("type"))?;
        let channel = siyu_model::Channel::parse(&self.channel).ok_or_else(|| corrupt("channel"))?;
        let identities = decode_identities(&self.identities).ok_or_else(|| corrupt("identities"))?;
        let raw = |text: Option<String>| -> crate::Result<_> {
            text.map(|t| serde_json::value::RawValue::from_string(t).map_err(|_| corrupt("json"))).transpose()
        };
        let event = siyu_model::Event {
            message_id: self.message_id,
            kind,
            channel,
            account: self.account,
            identities,
            timestamp: siyu_model::Millis(self.ts),
            received_at: siyu_model::Millis(self.received_at),
            amount: self.amount_fen.map(siyu_model::Fen),
            currency: self.currency,
            source: self.source_kind.map(|kind| siyu_model::Source { kind, id: self.source_id.unwrap_or_default() }),
            group_id: self.group_id,
            properties: raw(self.properties)?,
            traits: raw(self.traits)?,
            context: raw(self.context)?,
        };
        Ok(crate::StoredEvent { seq: self.seq, event })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ids = vec![Identity::parse("user_id", "u-1").unwrap(), Identity::parse("phone", "13800138000").unwrap()];
        let text = encode_identities(&ids);
        assert_eq!(decode_identities(&text), Some(ids));
        assert_eq!(decode_identities("garbage"), None);
    }
}
