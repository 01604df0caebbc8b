//! Money as integer fen (分): amounts arrive in yuan with at most two decimals and are kept exactly.

/// An amount of money in fen (1 yuan = 100 fen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Fen(pub i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount {0:?} is not a decimal number")]
    NotANumber(String),
    #[error("amount {0:?} has more than two decimals")]
    TooPrecise(String),
    #[error("amount {0:?} is out of range")]
    OutOfRange(String),
}

impl Fen {
    /// Parses a decimal yuan amount from its text (a JSON number's own digits, or a CSV cell)
    /// without passing through binary floating point: `"199.9"` is exactly 19990 fen.
    pub fn parse_yuan(text: &str) -> Result<Fen, MoneyError> {
        let raw = text.trim().trim_matches('"');
        let (negative, digits) = match raw.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let not_a_number = || MoneyError::NotANumber(text.to_string());
        // JSON allows exponents (1e2); accept them only when they still denote whole fen.
        if digits.contains(['e', 'E']) {
            let value: f64 = raw.parse().map_err(|_| not_a_number())?;
            let fen = (value * 100.0).round();
            if (value * 100.0 - fen).abs() > 1e-6 {
                return Err(MoneyError::TooPrecise(text.to_string()));
            }
            if fen.abs() > 9e15 {
                return Err(MoneyError::OutOfRange(text.to_string()));
            }
            return Ok(Fen(fen as i64));
        }
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_a_number());
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || (digits.contains('.') && frac.is_empty()) {
            return Err(not_a_number());
        }
        let frac_trimmed = frac.trim_end_matches('0');
        if frac_trimmed.len() > 2 {
            return Err(MoneyError::TooPrecise(text.to_string()));
        }
        if whole.len() > 15 {
            return Err(MoneyError::OutOfRange(text.to_string()));
        }
        let whole: i64 = whole.parse().map_err(|_| not_a_number())?;
        let mut cents = 0i64;
        for (i, b) in frac_trimmed.bytes().enumerate() {
            cents += i64::from(b - b'0') * if i == 0 { 10 } else { 1 };
        }
        let fen = whole * 100 + cents;
        Ok(Fen(if negative { -fen } else { fen }))
    }

    /// The amount in yuan, for display and JSON output.
    pub fn yuan(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

impl std::fmt::Display for Fen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        write!(f, "{sign}{}.{:02}", self.0.abs() / 100, self.0.abs() % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_yuan() {
        assert_eq!(Fen::parse_yuan("199.0"), Ok(Fen(19900)));
        assert_eq!(Fen::parse_yuan("367.54"), Ok(Fen(36754)));
        assert_eq!(Fen::parse_yuan("0.1"), Ok(Fen(10)));
        assert_eq!(Fen::parse_yuan("-10.29"), Ok(Fen(-1029)));
        assert_eq!(Fen::parse_yuan("12"), Ok(Fen(1200)));
        assert_eq!(Fen::parse_yuan("1.50e2"), Ok(Fen(15000)));
        assert_eq!(Fen::parse_yuan("\"8.80\""), Ok(Fen(880)));
    }

    #[test]
    fn rejects_what_is_not_money() {
        assert!(matches!(Fen::parse_yuan("1.999"), Err(MoneyError::TooPrecise(_))));
        assert!(matches!(Fen::parse_yuan("abc"), Err(MoneyError::NotANumber(_))));
        assert!(matches!(Fen::parse_yuan("1."), Err(MoneyError::NotANumber(_))));
        assert!(matches!(Fen::parse_yuan(""), Err(MoneyError::NotANumber(_))));
        assert!(matches!(Fen::parse_yuan("99999999999999999"), Err(MoneyError::OutOfRange(_))));
    }

    #[test]
    fn displays_two_decimals() {
        assert_eq!(Fen(-1029).to_string(), "-10.29");
        assert_eq!(Fen(5).to_string(), "0.05");
    }
}
