//! Splits condition text into tokens, each with the line and column where it starts, so that
//! every later error can point into the text.
//!
//! Operators type conditions on Chinese keyboards, so full-width parentheses, commas and curly
//! quotes are read as their ASCII counterparts, and `30天` is `30d`.

use chrono::{FixedOffset, NaiveDate, NaiveTime};

use super::ast::{CmpOp, Duration, Unit};
use super::{ConditionError, ErrorCode, Pos, Span};
use crate::time::Millis;

/// Dates written without an offset are China Standard Time, the merchants' clock.
pub(crate) const CHINA_OFFSET_SECONDS: i32 = 8 * 3600;

/// Reserved words; matched case-insensitively so `AND` works too.
pub(crate) const KEYWORDS: &[&str] =
    &["and", "or", "not", "in", "contains", "where", "before", "after", "within", "ago", "true", "false", "all"];

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Duration(Duration),
    Date(Millis),
    LParen,
    RParen,
    Comma,
    Dot,
    Cmp(CmpOp),
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
}

pub(crate) fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

pub(crate) fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

pub(crate) fn is_ident_continue(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Is `s` one identifier token (keywords included)?
pub(crate) fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_ident_start) && chars.all(is_ident_continue)
}

/// Is `s` an identifier that is not a keyword, i.e. usable as a bare word anywhere?
pub(crate) fn is_plain_word(s: &str) -> bool {
    is_ident(s) && !is_keyword(s)
}

/// How a token is named in "found …" messages.
pub(crate) fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(name) => format!("\"{name}\""),
        Tok::Str(text) => format!("text {}", super::ast::Quoted(text)),
        Tok::Num(n) => format!("the number {n}"),
        Tok::Duration(d) => format!("the duration {d}"),
        Tok::Date(t) => format!("the date {}", super::ast::DateText(*t)),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::Comma => "\",\"".into(),
        Tok::Dot => "\".\"".into(),
        Tok::Cmp(op) => format!("\"{}\"", op.as_str()),
        Tok::Eof => "end of input".into(),
    }
}

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, ConditionError> {
    let mut lexer = Lexer { src, pos: Pos { offset: 0, line: 1, column: 1 } };
    let mut tokens = Vec::new();
    loop {
        lexer.skip_blank();
        let start = lexer.pos;
        let Some(c) = lexer.peek() else {
            tokens.push(Token { tok: Tok::Eof, span: Span { start, end: start } });
            return Ok(tokens);
        };
        let tok = lexer.token(c)?;
        tokens.push(Token { tok, span: Span { start, end: lexer.pos } });
    }
}

struct Lexer<'a> {
    src: &'a str,
    pos: Pos,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos.offset..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.src[self.pos.offset..].chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos.offset += c.len_utf8();
        if c == '\n' {
            self.pos.line += 1;
            self.pos.column = 1;
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn error(&self, start: Pos, message: impl Into<String>) -> ConditionError {
        ConditionError::new(ErrorCode::Syntax, Span { start, end: self.pos }, message)
    }

    /// Whitespace (full-width space included) and `#` comments to the end of the line.
    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.bump();
            } else if c == '#' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.bump();
                }
            } else {
                break;
            }
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &str {
        let from = self.pos.offset;
        while self.peek().is_some_and(&keep) {
            self.bump();
        }
        &self.src[from..self.pos.offset]
    }

    fn token(&mut self, c: char) -> Result<Tok, ConditionError> {
        let start = self.pos;
        if is_ident_start(c) {
            return Ok(Tok::Ident(self.take_while(is_ident_continue).to_string()));
        }
        if c.is_ascii_digit() || (c == '-' && self.peek2().is_some_and(|d| d.is_ascii_digit())) {
            return self.number(start);
        }
        if c == '"' || c == '“' {
            return self.string(start);
        }
        self.bump();
        let two = |lexer: &mut Self, next: char| {
            let matched = lexer.peek() == Some(next);
            if matched {
                lexer.bump();
            }
            matched
        };
        Ok(match c {
            '(' | '（' => Tok::LParen,
            ')' | '）' => Tok::RParen,
            ',' | '，' => Tok::Comma,
            '.' => Tok::Dot,
            '=' => {
                two(self, '=');
                Tok::Cmp(CmpOp::Eq)
            }
            '!' if two(self, '=') => Tok::Cmp(CmpOp::Ne),
            '<' if two(self, '>') => Tok::Cmp(CmpOp::Ne),
            '<' if two(self, '=') => Tok::Cmp(CmpOp::Le),
            '<' => Tok::Cmp(CmpOp::Lt),
            '>' if two(self, '=') => Tok::Cmp(CmpOp::Ge),
            '>' => Tok::Cmp(CmpOp::Gt),
            '!' => return Err(self.error(start, "unexpected \"!\"; write \"!=\" for not equal or \"not\" to negate")),
            '\'' => return Err(self.error(start, "unexpected \"'\"; strings use double quotes: \"高意向\"")),
            other => return Err(self.error(start, format!("unexpected character \"{other}\""))),
        })
    }

    /// A number (`3`, `-1.5`), a duration (`30d`, `12h`, `30天`) or a date (`2026-11-01`,
    /// `2026-11-01T10:15:00Z`).
    fn number(&mut self, start: Pos) -> Result<Tok, ConditionError> {
        let negative = self.peek() == Some('-');
        if negative {
            self.bump();
        }
        let whole = self.take_while(|c| c.is_ascii_digit()).to_string();
        if !negative && whole.len() == 4 && self.peek() == Some('-') && self.peek2().is_some_and(|c| c.is_ascii_digit())
        {
            return self.date(start, &whole);
        }
        let mut fraction = None;
        if self.peek() == Some('.') && self.peek2().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            fraction = Some(self.take_while(|c| c.is_ascii_digit()).to_string());
        }
        if self.peek().is_some_and(is_ident_start) {
            let unit_start = self.pos;
            let unit_text = self.take_while(is_ident_continue).to_string();
            let Some(unit) = Unit::parse(&unit_text) else {
                let hint = if unit_text == "m" {
                    "; \"m\" could mean minutes or months, write \"mo\" for months (30 days)"
                } else {
                    ""
                };
                return Err(ConditionError::new(
                    ErrorCode::Syntax,
                    Span { start: unit_start, end: self.pos },
                    format!("unknown unit \"{unit_text}\" after {whole}: use h, d, w, mo or y{hint}"),
                ));
            };
            if negative || fraction.is_some() {
                return Err(self.error(start, "a duration is a whole, positive number of units, e.g. 30d or 12h"));
            }
            let amount = whole.parse::<u32>().map_err(|_| self.error(start, "duration is too large"))?;
            return Ok(Tok::Duration(Duration { amount, unit }));
        }
        let text = &self.src[start.offset..self.pos.offset];
        text.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(Tok::Num)
            .ok_or_else(|| self.error(start, format!("number {text} is out of range")))
    }

    fn date(&mut self, start: Pos, year: &str) -> Result<Tok, ConditionError> {
        let bad = |lexer: &Self| {
            lexer.error(start, "invalid date: write YYYY-MM-DD, optionally with THH:MM[:SS] and Z or +08:00")
        };
        let two_digits = |lexer: &mut Self, sep: char| -> Option<u32> {
            if lexer.peek() != Some(sep) {
                return None;
            }
            lexer.bump();
            let digits = lexer.take_while(|c| c.is_ascii_digit());
            (digits.len() == 2).then(|| digits.parse().ok()).flatten()
        };
        let (Some(month), Some(day)) = (two_digits(self, '-'), two_digits(self, '-')) else {
            return Err(bad(self));
        };
        let year: i32 = year.parse().map_err(|_| bad(self))?;
        let date = NaiveDate::from_ymd_opt(year, month, day).filter(|_| (1970..=9998).contains(&year));
        let Some(date) = date else {
            return Err(self.error(start, format!("{year:04}-{month:02}-{day:02} is not a date")));
        };
        let mut time = NaiveTime::MIN;
        let mut offset = CHINA_OFFSET_SECONDS;
        if matches!(self.peek(), Some('T' | 't')) && self.peek2().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            let hour = {
                let digits = self.take_while(|c| c.is_ascii_digit());
                (digits.len() == 2).then(|| digits.parse::<u32>().ok()).flatten()
            };
            let minute = two_digits(self, ':');
            let (Some(hour), Some(minute)) = (hour, minute) else { return Err(bad(self)) };
            let second = if self.peek() == Some(':') { two_digits(self, ':').ok_or_else(|| bad(self))? } else { 0 };
            let mut millis = 0;
            if self.peek() == Some('.') && self.peek2().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
                let digits = self.take_while(|c| c.is_ascii_digit());
                if digits.len() > 3 {
                    return Err(self.error(start, "times are precise to the millisecond at most"));
                }
                millis = format!("{digits:0<3}").parse::<u32>().map_err(|_| bad(self))?;
            }
            time = NaiveTime::from_hms_milli_opt(hour, minute, second, millis).ok_or_else(|| bad(self))?;
            match self.peek() {
                Some('Z' | 'z') => {
                    self.bump();
                    offset = 0;
                }
                Some(sign @ ('+' | '-')) => {
                    self.bump();
                    let hours = self.take_while(|c| c.is_ascii_digit());
                    let hours = (hours.len() == 2).then(|| hours.parse::<i32>().ok()).flatten();
                    let minutes = two_digits(self, ':');
                    let (Some(hours), Some(minutes)) = (hours, minutes) else { return Err(bad(self)) };
                    let seconds = hours * 3600 + minutes as i32 * 60;
                    offset = if sign == '-' { -seconds } else { seconds };
                }
                _ => {}
            }
        }
        let offset = FixedOffset::east_opt(offset).ok_or_else(|| bad(self))?;
        let local = date.and_time(time).and_local_timezone(offset).single().ok_or_else(|| bad(self))?;
        Ok(Tok::Date(Millis(local.timestamp_millis())))
    }

    fn string(&mut self, start: Pos) -> Result<Tok, ConditionError> {
        let close = if self.bump() == Some('“') { '”' } else { '"' };
        let mut text = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error(start, format!("unterminated string: no closing {close}")));
            };
            if c == '\n' {
                return Err(self.error(start, format!("unterminated string: no closing {close} on this line")));
            }
            self.bump();
            if c == close {
                return Ok(Tok::Str(text));
            }
            if c != '\\' {
                text.push(c);
                continue;
            }
            let escape_start = self.pos;
            match self.bump() {
                Some('n') => text.push('\n'),
                Some('r') => text.push('\r'),
                Some('t') => text.push('\t'),
                Some('u') if self.peek() == Some('{') => {
                    self.bump();
                    let hex = self.take_while(|c| c.is_ascii_hexdigit()).to_string();
                    let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                    match (c, self.bump()) {
                        (Some(c), Some('}')) => text.push(c),
                        _ => return Err(self.error(escape_start, "invalid \\u{...} escape")),
                    }
                }
                Some(c @ ('"' | '\\' | '”')) => text.push(c),
                _ => {
                    return Err(self.error(escape_start, "unknown escape: use \\\", \\\\, \\n, \\t, \\r or \\u{...}"));
                }
            }
        }
    }
}
