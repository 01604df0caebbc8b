//! The condition language of segments and rule tags (docs/conditions.md): text → tokens → syntax
//! tree → checked [`Condition`] → evaluation.
//!
//! The pipeline has two trees on purpose. The syntax tree ([`ast::Expr`]) keeps what the operator
//! wrote, with line/column spans, and prints back to a canonical text that parses to the same tree;
//! the checker turns it into a [`Condition`] in which every name is resolved (`真爱粉` is
//! [`FanTier::TrueFan`](crate::FanTier), `30d` is a duration, `order_paid` an event kind), so that
//! evaluators never meet an unknown name or a type error: those are caught at save time, with a
//! position, never at evaluation time.
//!
//! ```
//! use siyu_model::condition::{compile, Schema};
//! let schema = Schema { tags: ["已流失".to_string()].into(), ..Schema::default() };
//! let condition = compile(
//!     "tier = true_fan and rfm in (重要价值, 重要保持) and count(order_paid, 365d) >= 2 \
//!      and not tagged(\"已流失\") and last(message_out) before 30d ago",
//!     &schema,
//! )
//! .unwrap();
//! assert!(condition.is_time_dependent());
//! ```

pub mod ast;
mod check;
mod lexer;
pub mod naive;
mod parser;
mod typed;

#[cfg(test)]
mod tests;

pub use check::{check, Schema};
pub use naive::{evaluate, PlainEventWithProps, ProfileSnapshot};
pub use parser::parse;
pub use typed::{
    Aggregate, Condition, Dependencies, EventSelector, Operand, ProfileField, Scalar, TimeOperand, TimeRef, TimeTest,
};

/// The longest window (and `ago` offset) a condition may use: ten years.
pub const MAX_WINDOW_DAYS: i64 = 3650;

/// Parses and checks `text` against a tenant's `schema`: the one call a save or a preview needs.
/// Syntax errors stop at the first; check errors are all reported.
pub fn compile(text: &str, schema: &Schema) -> Result<Condition, Vec<ConditionError>> {
    let expr = parse(text).map_err(|e| vec![e])?;
    check(&expr, schema)
}

/// A position in the condition text. Lines and columns are 1-based and count characters (not
/// bytes), so that a column is right under Chinese text too; `offset` is the byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub offset: usize,
    pub line: u32,
    pub column: u32,
}

/// The text a syntax node came from. Generated trees use `Span::default()` (line 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

impl Span {
    /// The span covering both `self` and `other`.
    pub fn to(self, other: Span) -> Span {
        Span { start: self.start, end: other.end }
    }
}

/// What kind of mistake a [`ConditionError`] reports; `as_str` is the stable code an API returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The text does not follow the grammar (including unbalanced parentheses).
    Syntax,
    /// A profile field (or event field inside `where`) that does not exist.
    UnknownField,
    /// A trait key the tenant's schema does not list.
    UnknownTrait,
    UnknownEventType,
    UnknownTag,
    UnknownIdentityKind,
    /// A literal that is not a value of the field's type (`tier = gold`).
    UnknownValue,
    /// An operator or a literal of the wrong type (`tier = 3`, `paid_orders before 30d ago`).
    TypeMismatch,
    /// A window or `ago` offset that is empty or longer than ten years.
    BadWindow,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Syntax => "syntax",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::UnknownTrait => "unknown_trait",
            ErrorCode::UnknownEventType => "unknown_event_type",
            ErrorCode::UnknownTag => "unknown_tag",
            ErrorCode::UnknownIdentityKind => "unknown_identity_kind",
            ErrorCode::UnknownValue => "unknown_value",
            ErrorCode::TypeMismatch => "type_mismatch",
            ErrorCode::BadWindow => "bad_window",
        }
    }
}

/// A mistake in a condition, at a place in its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {}, column {}: {message}", span.start.line, span.start.column)]
pub struct ConditionError {
    pub code: ErrorCode,
    pub span: Span,
    pub message: String,
}

impl ConditionError {
    pub(crate) fn new(code: ErrorCode, span: Span, message: impl Into<String>) -> ConditionError {
        ConditionError { code, span, message: message.into() }
    }
}

/// The closest of `candidates` to `name` by edit distance (transpositions count once), if it is
/// close enough to be a likely typo.
pub(crate) fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let len = name.chars().count();
    let limit = (len / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// Optimal string alignment distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// `" (did you mean "x"?)"`, or nothing.
pub(crate) fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default()
}
