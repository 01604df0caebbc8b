//! Identities `(kind, value)` and their normalisation, so that `138-0013-8000` and
//! `+86 13800138000` are recognised as the same phone.

use serde::{Deserialize, Serialize};

/// The kind of an identity. Tenant-defined kinds are allowed (`Custom`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityKind {
    UserId,
    Phone,
    Email,
    WechatUnionid,
    WechatOpenid,
    WecomExternalUserid,
    DouyinOpenId,
    KuaishouOpenId,
    AnonymousId,
    Custom(String),
}

const KNOWN: [(&str, IdentityKind); 9] = [
    ("user_id", IdentityKind::UserId),
    ("phone", IdentityKind::Phone),
    ("email", IdentityKind::Email),
    ("wechat_unionid", IdentityKind::WechatUnionid),
    ("wechat_openid", IdentityKind::WechatOpenid),
    ("wecom_external_userid", IdentityKind::WecomExternalUserid),
    ("douyin_open_id", IdentityKind::DouyinOpenId),
    ("kuaishou_open_id", IdentityKind::KuaishouOpenId),
    ("anonymous_id", IdentityKind::AnonymousId),
];

impl IdentityKind {
    pub fn parse(text: &str) -> Result<IdentityKind, IdentityError> {
        if let Some((_, kind)) = KNOWN.iter().find(|(name, _)| *name == text) {
            return Ok(kind.clone());
        }
        let valid = !text.is_empty()
            && text.len() <= 64
            && text.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(IdentityKind::Custom(text.to_string()))
        } else {
            Err(IdentityError::BadKind(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            IdentityKind::Custom(name) => name,
            known => KNOWN.iter().find(|(_, kind)| kind == known).map(|(name, _)| *name).unwrap_or("custom"),
        }
    }

    /// When an event's identities point at two profiles that may not merge, the event is
    /// attached to the profile of its highest-ranked identity (lowest number here).
    pub fn rank(&self) -> u8 {
        rank_of(self.as_str())
    }

    /// The default cap on identities of this kind one profile may hold (identity-explosion guard).
    pub fn default_limit(&self) -> u32 {
        match self {
            IdentityKind::UserId => 1,
            IdentityKind::WechatUnionid => 1,
            IdentityKind::Phone | IdentityKind::Email => 5,
            IdentityKind::AnonymousId => 100,
            _ => 20,
        }
    }
}

/// [`IdentityKind::rank`] by the kind's name, without building the kind.
pub fn rank_of(kind: &str) -> u8 {
    match kind {
        "user_id" => 0,
        "phone" => 1,
        "email" => 2,
        "wechat_unionid" => 3,
        "wecom_external_userid" => 4,
        "wechat_openid" => 5,
        "douyin_open_id" => 6,
        "kuaishou_open_id" => 7,
        "anonymous_id" => 9,
        _ => 8,
    }
}

impl Serialize for IdentityKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for IdentityKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        IdentityKind::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity kind {0:?} is not valid (lowercase letters, digits and _ only)")]
    BadKind(String),
    #[error("{kind} identity is empty")]
    Empty { kind: String },
    #[error("{kind} identity is longer than 256 bytes")]
    TooLong { kind: String },
    #[error("{kind} identity {value:?} contains control characters")]
    ControlCharacters { kind: String, value: String },
    #[error("phone {0:?} is not a valid phone number")]
    BadPhone(String),
    #[error("email {0:?} is not a valid email address")]
    BadEmail(String),
}

/// One normalised identity of a person.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    pub kind: IdentityKind,
    pub value: String,
}

impl Identity {
    /// Validates and normalises a raw `(kind, value)` pair.
    pub fn new(kind: IdentityKind, raw: &str) -> Result<Identity, IdentityError> {
        let value = raw.trim();
        if value.is_empty() {
            return Err(IdentityError::Empty { kind: kind.to_string() });
        }
        if value.len() > 256 {
            return Err(IdentityError::TooLong { kind: kind.to_string() });
        }
        if value.chars().any(char::is_control) {
            return Err(IdentityError::ControlCharacters { kind: kind.to_string(), value: value.to_string() });
        }
        let value = match kind {
            IdentityKind::Phone => normalise_phone(value)?,
            IdentityKind::Email => normalise_email(value)?,
            _ => value.to_string(),
        };
        Ok(Identity { kind, value })
    }

    pub fn parse(kind: &str, raw: &str) -> Result<Identity, IdentityError> {
        Identity::new(IdentityKind::parse(kind)?, raw)
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// Normalises a phone number to E.164. Numbers without a country code are taken as China
/// mainland (+86): `138-0013-8000`, `+86 138 0013 8000`, `008613800138000` and `8613800138000`
/// all become `+8613800138000`.
pub fn normalise_phone(raw: &str) -> Result<String, IdentityError> {
    let bad = || IdentityError::BadPhone(raw.to_string());
    let trimmed = raw.trim();
    let explicit_plus = trimmed.starts_with('+');
    let mut digits = String::with_capacity(trimmed.len());
    for c in trimmed.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '(' | ')' | '.' | '+' if c != '+' || digits.is_empty() => {}
            _ => return Err(bad()),
        }
    }
    let international = if explicit_plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if digits.len() == 13 && digits.starts_with("861") {
        digits
    } else if digits.len() == 11 && digits.starts_with('1') {
        format!("86{digits}")
    } else if digits.len() >= 9 && digits.starts_with('0') {
        // A mainland landline with its trunk prefix (010-12345678).
        format!("86{}", &digits[1..])
    } else {
        return Err(bad());
    };
    if !(8..=15).contains(&international.len()) {
        return Err(bad());
    }
    if let Some(national) = international.strip_prefix("86") {
        let mobile_ok = national.len() == 11 && national.starts_with('1');
        // Landlines: area code (10, 21, 571, ...) plus 7–8 digits; 11 digits starting with 1 is mobile.
        let landline_ok =
            (9..=11).contains(&national.len()) && !mobile_ok && !(national.len() == 11 && national.starts_with('1'));
        if !(mobile_ok || landline_ok) {
            return Err(bad());
        }
    }
    Ok(format!("+{international}"))
}

fn normalise_email(raw: &str) -> Result<String, IdentityError> {
    let lower = raw.trim().to_lowercase();
    match lower.split_once('@') {
        Some((local, domain)) if !local.is_empty() && domain.contains('.') && !domain.contains('@') => Ok(lower),
        _ => Err(IdentityError::BadEmail(raw.to_string())),
    }
}

/// Reads the `identities` object of an event: `{"user_id": "u1", "phone": "138..."}`.
/// A value may also be an array of strings for several identities of one kind.
pub fn parse_identity_map(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<Identity>, (String, IdentityError)> {
    let mut out = Vec::with_capacity(map.len());
    for (kind, value) in map {
        let mut push = |raw: &str| -> Result<(), (String, IdentityError)> {
            let identity = Identity::parse(kind, raw).map_err(|e| (kind.clone(), e))?;
            if !out.contains(&identity) {
                out.push(identity);
            }
            Ok(())
        };
        match value {
            serde_json::Value::String(s) => push(s)?,
            serde_json::Value::Number(n) => push(&n.to_string())?,
            serde_json::Value::Array(items) => {
                for item in items {
                    match item {
                        serde_json::Value::String(s) => push(s)?,
                        serde_json::Value::Number(n) => push(&n.to_string())?,
                        _ => return Err((kind.clone(), IdentityError::Empty { kind: kind.clone() })),
                    }
                }
            }
            serde_json::Value::Null => {}
            _ => return Err((kind.clone(), IdentityError::Empty { kind: kind.clone() })),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_in_varied_formats_agree() {
        let expected = "+8613800138000";
        for raw in [
            "13800138000",
            "138-0013-8000",
            "+86 138 0013 8000",
            "+8613800138000",
            "8613800138000",
            "008613800138000",
            "(+86) 138 0013 8000",
        ] {
            assert_eq!(normalise_phone(raw).as_deref(), Ok(expected), "{raw}");
        }
        assert_eq!(normalise_phone("+1 415 555 0100").as_deref(), Ok("+14155550100"));
        assert_eq!(normalise_phone("010-12345678").as_deref(), Ok("+861012345678"));
    }

    #[test]
    fn rejects_non_phones() {
        for raw in ["12345", "phone", "+86 238 0013 8000 99", "138001380001", "23800138000"] {
            assert!(normalise_phone(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn kinds_parse_and_print() {
        assert_eq!(IdentityKind::parse("phone"), Ok(IdentityKind::Phone));
        assert_eq!(IdentityKind::parse("member_no").unwrap().as_str(), "member_no");
        assert!(IdentityKind::parse("Member No").is_err());
        assert_eq!(IdentityKind::WecomExternalUserid.as_str(), "wecom_external_userid");
    }

    #[test]
    fn emails_are_lowercased() {
        let id = Identity::parse("email", " Ann@Example.COM ").unwrap();
        assert_eq!(id.value, "ann@example.com");
        assert!(Identity::parse("email", "nobody").is_err());
        assert!(Identity::parse("user_id", "a\u{1}b").is_err());
    }
}
