//! The syntax tree of a condition: what the operator wrote, names unresolved, with spans; and its
//! canonical printer (`Display`), which `parse` reads back to the same tree (spans aside).
//!
//! The printer is the canonical text form: lowercase keywords, single spaces, the fewest
//! parentheses that keep the tree, strings in ASCII double quotes, dates in China Standard Time.

use std::fmt::{self, Display, Formatter, Write as _};

use chrono::{FixedOffset, TimeZone, Timelike};

use super::lexer::{is_ident, is_plain_word, CHINA_OFFSET_SECONDS};
use super::Span;
use crate::time::{Millis, DAY};

/// A condition as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// Two or more alternatives; a nested `Or` is one the operator parenthesised.
    Or(Vec<Expr>),
    /// Two or more conjuncts; a nested `And` is one the operator parenthesised.
    And(Vec<Expr>),
    Not(Box<Expr>),
    /// A term and what is asserted of it; `None` for a bare boolean term (`reachable`).
    Predicate(Term, Option<Test>),
    /// `tagged("高意向")`
    Tagged(Name),
    /// `has(phone)`: the profile holds an identity of this kind.
    Has(Name),
}

/// A name as written (a tag, an event type, an identity kind), with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Name {
    pub text: String,
    pub span: Span,
}

/// What a predicate talks about: a field, a trait or property path, or an event aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub kind: TermKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TermKind {
    /// A bare name: a profile field (`tier`), or inside `where` an event field (`amount`).
    Field(String),
    /// `traits.city`, `properties.sku`, `traits.address.city`.
    Path(PathRoot, Vec<String>),
    Aggregate(Aggregate),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathRoot {
    Traits,
    Properties,
}

impl PathRoot {
    pub fn as_str(self) -> &'static str {
        match self {
            PathRoot::Traits => "traits",
            PathRoot::Properties => "properties",
        }
    }
}

/// `count(order_paid where properties.sku = "A1", 90d)`
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub func: AggFunc,
    pub event: Name,
    pub filter: Option<Box<Expr>>,
    pub window: Option<WindowLit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggFunc {
    Count,
    Sum,
    First,
    Last,
}

impl AggFunc {
    pub const ALL: [AggFunc; 4] = [AggFunc::Count, AggFunc::Sum, AggFunc::First, AggFunc::Last];

    pub fn as_str(self) -> &'static str {
        match self {
            AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::First => "first",
            AggFunc::Last => "last",
        }
    }

    pub fn parse(text: &str) -> Option<AggFunc> {
        AggFunc::ALL.into_iter().find(|f| f.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowLit {
    pub window: Window,
    pub span: Span,
}

/// How far back an aggregate looks from the evaluation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// `all`: the whole history.
    All,
    /// `30d`: events at or after `t − 30 days` (and never after `t`).
    Last(Duration),
}

/// A length of time as written: `30d`, `12h`, `1y`. Kept as written so it prints back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duration {
    pub amount: u32,
    pub unit: Unit,
}

impl Duration {
    pub fn millis(self) -> i64 {
        i64::from(self.amount) * self.unit.millis()
    }
}

/// Units of time. A month is 30 days and a year 365 days: windows are rolling lengths, not
/// calendar periods. Minutes are left out on purpose, so `m` can never be misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    pub const ALL: [Unit; 5] = [Unit::Hour, Unit::Day, Unit::Week, Unit::Month, Unit::Year];

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Hour => "h",
            Unit::Day => "d",
            Unit::Week => "w",
            Unit::Month => "mo",
            Unit::Year => "y",
        }
    }

    /// The unit's Chinese spelling, accepted as an alternative (`30天`).
    pub fn label_zh(self) -> &'static str {
        match self {
            Unit::Hour => "小时",
            Unit::Day => "天",
            Unit::Week => "周",
            Unit::Month => "月",
            Unit::Year => "年",
        }
    }

    pub fn millis(self) -> i64 {
        match self {
            Unit::Hour => DAY / 24,
            Unit::Day => DAY,
            Unit::Week => 7 * DAY,
            Unit::Month => 30 * DAY,
            Unit::Year => 365 * DAY,
        }
    }

    pub fn parse(text: &str) -> Option<Unit> {
        Unit::ALL.into_iter().find(|u| u.as_str() == text || u.label_zh() == text)
    }
}

/// What a predicate asserts; `span` is the operator's.
#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    pub kind: TestKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TestKind {
    Compare(CmpOp, Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Contains(Value),
    Before(TimePoint),
    After(TimePoint),
    Within(DurationLit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    pub fn is_ordering(self) -> bool {
        !matches!(self, CmpOp::Eq | CmpOp::Ne)
    }

    /// Does `ordering` (of left against right) satisfy this operator?
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ordering == Equal,
            CmpOp::Ne => ordering != Equal,
            CmpOp::Lt => ordering == Less,
            CmpOp::Le => ordering != Greater,
            CmpOp::Gt => ordering == Greater,
            CmpOp::Ge => ordering != Less,
        }
    }
}

/// A literal on the right of an operator.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValueKind {
    /// Always finite.
    Number(f64),
    Text(String),
    Bool(bool),
    /// A bare word (`true_fan`, `真爱粉`, `douyin`): an enum value or channel, resolved by the
    /// checker. Always an identifier that is not a keyword.
    Word(String),
}

/// `30d ago` or `2026-11-01`.
#[derive(Debug, Clone, PartialEq)]
pub struct TimePoint {
    pub kind: TimePointKind,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimePointKind {
    Ago(Duration),
    At(Millis),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DurationLit {
    pub duration: Duration,
    pub span: Span,
}

impl Expr {
    /// The same tree with every span reset to `Span::default()`: what "the same condition" means
    /// when comparing a parse with a generated or differently formatted one.
    pub fn without_spans(&self) -> Expr {
        let mut copy = self.clone();
        copy.clear_spans();
        copy
    }

    fn clear_spans(&mut self) {
        self.span = Span::default();
        match &mut self.kind {
            ExprKind::Or(items) | ExprKind::And(items) => items.iter_mut().for_each(Expr::clear_spans),
            ExprKind::Not(inner) => inner.clear_spans(),
            ExprKind::Predicate(term, test) => {
                term.clear_spans();
                if let Some(test) = test {
                    test.clear_spans();
                }
            }
            ExprKind::Tagged(name) | ExprKind::Has(name) => name.span = Span::default(),
        }
    }
}

impl Term {
    fn clear_spans(&mut self) {
        self.span = Span::default();
        if let TermKind::Aggregate(agg) = &mut self.kind {
            agg.event.span = Span::default();
            if let Some(filter) = &mut agg.filter {
                filter.clear_spans();
            }
            if let Some(window) = &mut agg.window {
                window.span = Span::default();
            }
        }
    }
}

impl Test {
    fn clear_spans(&mut self) {
        self.span = Span::default();
        match &mut self.kind {
            TestKind::Compare(_, value) | TestKind::Contains(value) => value.span = Span::default(),
            TestKind::In(values) | TestKind::NotIn(values) => values.iter_mut().for_each(|v| v.span = Span::default()),
            TestKind::Before(point) | TestKind::After(point) => point.span = Span::default(),
            TestKind::Within(duration) => duration.span = Span::default(),
        }
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Or(items) => join(f, items, " or ", |e| matches!(e.kind, ExprKind::Or(_))),
            ExprKind::And(items) => join(f, items, " and ", |e| matches!(e.kind, ExprKind::Or(_) | ExprKind::And(_))),
            ExprKind::Not(inner) => {
                f.write_str("not ")?;
                write_grouped(f, inner, matches!(inner.kind, ExprKind::Or(_) | ExprKind::And(_)))
            }
            ExprKind::Predicate(term, None) => write!(f, "{term}"),
            ExprKind::Predicate(term, Some(test)) => write!(f, "{term} {test}"),
            ExprKind::Tagged(name) => write!(f, "tagged({})", Quoted(&name.text)),
            ExprKind::Has(name) => write!(f, "has({})", NameText(&name.text)),
        }
    }
}

fn join(f: &mut Formatter<'_>, items: &[Expr], sep: &str, needs_parens: impl Fn(&Expr) -> bool) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write_grouped(f, item, needs_parens(item))?;
    }
    Ok(())
}

fn write_grouped(f: &mut Formatter<'_>, expr: &Expr, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({expr})")
    } else {
        write!(f, "{expr}")
    }
}

impl Display for Term {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TermKind::Field(name) => f.write_str(name),
            TermKind::Path(root, keys) => {
                f.write_str(root.as_str())?;
                for key in keys {
                    // After a dot any identifier is a key, keywords included.
                    if is_ident(key) {
                        write!(f, ".{key}")?;
                    } else {
                        write!(f, ".{}", Quoted(key))?;
                    }
                }
                Ok(())
            }
            TermKind::Aggregate(agg) => {
                write!(f, "{}({}", agg.func.as_str(), EventName(&agg.event.text))?;
                if let Some(filter) = &agg.filter {
                    write!(f, " where {filter}")?;
                }
                if let Some(window) = &agg.window {
                    write!(f, ", {}", window.window)?;
                }
                f.write_str(")")
            }
        }
    }
}

impl Display for Window {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Window::All => f.write_str("all"),
            Window::Last(d) => write!(f, "{d}"),
        }
    }
}

impl Display for Duration {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.unit.as_str())
    }
}

impl Display for Test {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TestKind::Compare(op, value) => write!(f, "{} {value}", op.as_str()),
            TestKind::In(values) => write!(f, "in ({})", List(values)),
            TestKind::NotIn(values) => write!(f, "not in ({})", List(values)),
            TestKind::Contains(value) => write!(f, "contains {value}"),
            TestKind::Before(point) => write!(f, "before {point}"),
            TestKind::After(point) => write!(f, "after {point}"),
            TestKind::Within(d) => write!(f, "within {}", d.duration),
        }
    }
}

struct List<'a>(&'a [Value]);

impl Display for List<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, value) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{value}")?;
        }
        Ok(())
    }
}

impl Display for Value {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            // `{}` on f64 is the shortest text that parses back to the same number, never in
            // exponent form, which is what the lexer reads.
            ValueKind::Number(n) => write!(f, "{n}"),
            ValueKind::Text(text) => write!(f, "{}", Quoted(text)),
            ValueKind::Bool(b) => write!(f, "{b}"),
            ValueKind::Word(word) => f.write_str(word),
        }
    }
}

impl Display for TimePoint {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.kind {
            TimePointKind::Ago(d) => write!(f, "{d} ago"),
            TimePointKind::At(t) => write!(f, "{}", DateText(t)),
        }
    }
}

/// A timestamp as a date literal in China Standard Time: `2026-11-01` at midnight, otherwise
/// `2026-11-01T10:15:00+08:00` (with milliseconds when there are any).
pub struct DateText(pub Millis);

impl Display for DateText {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let offset = FixedOffset::east_opt(CHINA_OFFSET_SECONDS).expect("valid offset");
        let Some(t) = offset.timestamp_millis_opt(self.0 .0).single() else {
            return write!(f, "{}", self.0 .0);
        };
        let millis = t.timestamp_subsec_millis();
        if t.hour() == 0 && t.minute() == 0 && t.second() == 0 && millis == 0 {
            write!(f, "{}", t.format("%Y-%m-%d"))
        } else if millis == 0 {
            write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S+08:00"))
        } else {
            write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3f+08:00"))
        }
    }
}

/// A string literal in ASCII double quotes, escaped so the lexer reads back the same text.
pub struct Quoted<'a>(pub &'a str);

impl Display for Quoted<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// An identity kind: bare when it is a plain word, quoted otherwise.
struct NameText<'a>(&'a str);

impl Display for NameText<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if is_plain_word(self.0) {
            f.write_str(self.0)
        } else {
            write!(f, "{}", Quoted(self.0))
        }
    }
}

/// An event type: bare when it is plain words joined by dots (`shop.visit`), quoted otherwise.
struct EventName<'a>(&'a str);

impl Display for EventName<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.0.split('.').all(is_plain_word) {
            f.write_str(self.0)
        } else {
            write!(f, "{}", Quoted(self.0))
        }
    }
}
