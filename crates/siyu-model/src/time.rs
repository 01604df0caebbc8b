//! Timestamps as integer milliseconds since the Unix epoch: cheap to copy, compare and store.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

pub const SECOND: i64 = 1_000;
pub const DAY: i64 = 86_400 * SECOND;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Millis(pub i64);

impl Millis {
    pub fn now() -> Millis {
        Millis(Utc::now().timestamp_millis())
    }

    /// Parses RFC 3339 (`2026-11-02T10:15:00Z`, with or without fraction and offset).
    pub fn parse_rfc3339(text: &str) -> Option<Millis> {
        DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| Millis(t.timestamp_millis()))
    }

    pub fn to_rfc3339(self) -> String {
        match Utc.timestamp_millis_opt(self.0) {
            chrono::LocalResult::Single(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
            _ => self.0.to_string(),
        }
    }

    pub fn days_before(self, days: f64) -> Millis {
        Millis(self.0 - (days * DAY as f64) as i64)
    }
}

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_utc() {
        let t = Millis::parse_rfc3339("2026-11-02T10:15:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-02T10:15:00.000Z");
        let offset = Millis::parse_rfc3339("2026-11-02T18:15:00+08:00").unwrap();
        assert_eq!(t, offset);
        assert!(Millis::parse_rfc3339("yesterday").is_none());
    }
}
