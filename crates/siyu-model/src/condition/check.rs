//! The checker: resolves every name of a syntax tree against the tenant's [`Schema`] and types
//! every comparison, producing a [`Condition`] — or every mistake it finds, each with its
//! position, so an operator fixes them in one round.

use std::collections::BTreeSet;

use super::ast::{
    AggFunc, CmpOp, Duration, Expr, ExprKind, Name, PathRoot, Term, TermKind, Test, TestKind, TimePoint, TimePointKind,
    Value, ValueKind, Window,
};
use super::typed::{
    Aggregate, Condition, EventSelector, Operand, ProfileField, Scalar, TimeOperand, TimeRef, TimeTest,
};
use super::{did_you_mean, suggest, ConditionError, ErrorCode, Span, MAX_WINDOW_DAYS};
use crate::channel::Channel;
use crate::event::EventKind;
use crate::event_type::EventType;
use crate::identity::IdentityKind;
use crate::money::{Fen, MoneyError};
use crate::score::{FanTier, Ownership, PoolStage, RfmGroup};
use crate::time::DAY;

/// What a tenant has defined, against which names are checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    /// The tenant's custom event types (canonical ones are always known).
    pub custom_event_types: BTreeSet<String>,
    /// Every tag that exists (manual, imported or rule): naming another one is an error.
    pub tags: BTreeSet<String>,
    /// Known top-level trait keys; `None` accepts any key (traits are free-form by default).
    pub trait_keys: Option<BTreeSet<String>>,
    /// The tenant's custom identity kinds (the built-in ones are always known).
    pub identity_kinds: BTreeSet<String>,
}

/// Checks a parsed condition; on failure returns every error found, in text order.
pub fn check(expr: &Expr, schema: &Schema) -> Result<Condition, Vec<ConditionError>> {
    let mut checker = Checker { schema, errors: Vec::new() };
    let condition = checker.expr(expr, Scope::Profile);
    match condition {
        Some(condition) if checker.errors.is_empty() => Ok(condition),
        _ => {
            // Every path that gives up records why; an empty list would be a silent refusal.
            debug_assert!(!checker.errors.is_empty(), "the checker refused {expr} without an error");
            checker.errors.sort_by_key(|e| e.span.start);
            Err(checker.errors)
        }
    }
}

/// The built-in identity kinds, for suggestions (`identity.rs` keeps its table private).
const IDENTITY_KINDS: [&str; 9] = [
    "user_id",
    "phone",
    "email",
    "wechat_unionid",
    "wechat_openid",
    "wecom_external_userid",
    "douyin_open_id",
    "kuaishou_open_id",
    "anonymous_id",
];

/// Chinese names of the channels, accepted as literals (`channel = 抖音`).
const CHANNEL_LABELS: [(Channel, &str); 12] = [
    (Channel::Douyin, "抖音"),
    (Channel::Kuaishou, "快手"),
    (Channel::Wecom, "企业微信"),
    (Channel::WechatMp, "公众号"),
    (Channel::MiniProgram, "小程序"),
    (Channel::Taobao, "淘宝"),
    (Channel::Jd, "京东"),
    (Channel::Youzan, "有赞"),
    (Channel::Offline, "线下"),
    (Channel::Web, "网站"),
    (Channel::App, "应用"),
    (Channel::Other, "其他"),
];

/// The fields of an event inside a `where` filter.
const EVENT_FIELDS: [&str; 3] = ["channel", "account", "amount"];

/// Inside a `where` filter names refer to the event, outside to the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Profile,
    Event,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnumTy {
    Tier,
    PoolStage,
    Ownership,
    Rfm,
}

impl EnumTy {
    fn name(self) -> &'static str {
        match self {
            EnumTy::Tier => "a fan tier",
            EnumTy::PoolStage => "a pool stage",
            EnumTy::Ownership => "an ownership level",
            EnumTy::Rfm => "an RFM group",
        }
    }

    /// (code, Chinese label) of every value.
    fn values(self) -> Vec<(&'static str, &'static str)> {
        match self {
            EnumTy::Tier => FanTier::ALL.iter().map(|v| (v.as_str(), v.label_zh())).collect(),
            EnumTy::PoolStage => PoolStage::ALL.iter().map(|v| (v.as_str(), v.label_zh())).collect(),
            EnumTy::Ownership => Ownership::ALL.iter().map(|v| (v.as_str(), v.label_zh())).collect(),
            EnumTy::Rfm => RfmGroup::ALL.iter().map(|v| (v.as_str(), v.label_zh())).collect(),
        }
    }

    fn parse(self, text: &str) -> Option<Scalar> {
        match self {
            EnumTy::Tier => FanTier::parse(text).map(Scalar::Tier),
            EnumTy::PoolStage => PoolStage::parse(text).map(Scalar::PoolStage),
            EnumTy::Ownership => Ownership::parse(text).map(Scalar::Ownership),
            EnumTy::Rfm => RfmGroup::parse(text).map(Scalar::Rfm),
        }
    }

    /// "none, passerby, warm_fan, true_fan (or 未分层, 路人粉, 好感粉, 真爱粉)"
    fn listing(self) -> String {
        let values = self.values();
        let codes: Vec<&str> = values.iter().map(|(code, _)| *code).collect();
        let labels: Vec<&str> = values.iter().map(|(_, zh)| *zh).filter(|zh| !codes.contains(zh)).collect();
        if labels.is_empty() {
            codes.join(", ")
        } else {
            format!("{} (or {})", codes.join(", "), labels.join(", "))
        }
    }
}

/// The type of a term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Enum(EnumTy),
    Bool,
    Number,
    Money,
    Channel,
    Account,
    /// A trait or property: JSON of any type, compared with whatever literal is given.
    Dynamic,
}

impl Ty {
    fn describe(self) -> String {
        match self {
            Ty::Enum(e) => e.name().into(),
            Ty::Bool => "true or false".into(),
            Ty::Number => "a number".into(),
            Ty::Money => "an amount in yuan".into(),
            Ty::Channel => "a channel".into(),
            Ty::Account => "a channel account (\"channel/name\")".into(),
            Ty::Dynamic => "a trait or property".into(),
        }
    }

    /// Do `<`, `<=`, `>`, `>=` make sense? Tiers, pool stages and ownership levels are ranked.
    fn is_ordered(self) -> bool {
        match self {
            Ty::Enum(e) => e != EnumTy::Rfm,
            Ty::Number | Ty::Money | Ty::Dynamic => true,
            Ty::Bool | Ty::Channel | Ty::Account => false,
        }
    }
}

enum Resolved {
    Value(Operand, Ty),
    Time(TimeOperand),
}

struct Checker<'a> {
    schema: &'a Schema,
    errors: Vec<ConditionError>,
}

fn describe_value(value: &Value) -> String {
    match &value.kind {
        ValueKind::Number(n) => format!("the number {n}"),
        ValueKind::Text(text) => format!("text {}", super::ast::Quoted(text)),
        ValueKind::Bool(b) => b.to_string(),
        ValueKind::Word(word) => format!("the word {word}"),
    }
}

impl Checker<'_> {
    fn error<T>(&mut self, code: ErrorCode, span: Span, message: impl Into<String>) -> Option<T> {
        self.errors.push(ConditionError::new(code, span, message));
        None
    }

    fn expr(&mut self, expr: &Expr, scope: Scope) -> Option<Condition> {
        match &expr.kind {
            ExprKind::Or(items) => self.all(items, scope).map(Condition::Or),
            ExprKind::And(items) => self.all(items, scope).map(Condition::And),
            ExprKind::Not(inner) => self.expr(inner, scope).map(|c| Condition::Not(Box::new(c))),
            ExprKind::Tagged(name) => {
                if scope == Scope::Event {
                    return self.outside_where(expr.span, "tagged(…)");
                }
                if self.schema.tags.contains(&name.text) {
                    return Some(Condition::Tagged(name.text.clone()));
                }
                let hint = did_you_mean(suggest(&name.text, self.schema.tags.iter().map(String::as_str)));
                self.error(ErrorCode::UnknownTag, name.span, format!("unknown tag \"{}\"{hint}", name.text))
            }
            ExprKind::Has(name) => {
                if scope == Scope::Event {
                    return self.outside_where(expr.span, "has(…)");
                }
                self.identity_kind(name).map(Condition::Has)
            }
            ExprKind::Predicate(term, test) => self.predicate(term, test.as_ref(), scope),
        }
    }

    /// Checks every item (to report every error), then combines them.
    fn all(&mut self, items: &[Expr], scope: Scope) -> Option<Vec<Condition>> {
        let checked: Vec<Option<Condition>> = items.iter().map(|item| self.expr(item, scope)).collect();
        checked.into_iter().collect()
    }

    fn outside_where<T>(&mut self, span: Span, what: &str) -> Option<T> {
        self.error(
            ErrorCode::TypeMismatch,
            span,
            format!("{what} is about the profile and cannot be used inside a where filter"),
        )
    }

    fn identity_kind(&mut self, name: &Name) -> Option<IdentityKind> {
        match IdentityKind::parse(&name.text) {
            Ok(IdentityKind::Custom(custom)) if !self.schema.identity_kinds.contains(&custom) => {}
            Ok(kind) => return Some(kind),
            Err(_) => {}
        }
        let known = IDENTITY_KINDS.into_iter().chain(self.schema.identity_kinds.iter().map(String::as_str));
        let hint = did_you_mean(suggest(&name.text, known));
        self.error(ErrorCode::UnknownIdentityKind, name.span, format!("unknown identity kind \"{}\"{hint}", name.text))
    }

    fn predicate(&mut self, term: &Term, test: Option<&Test>, scope: Scope) -> Option<Condition> {
        let resolved = self.term(term, scope)?;
        let (operand, ty) = match resolved {
            Resolved::Time(operand) => return self.time_predicate(term, operand, test),
            Resolved::Value(operand, ty) => (operand, ty),
        };
        let Some(test) = test else {
            if matches!(ty, Ty::Bool | Ty::Dynamic) {
                return Some(Condition::Compare { operand, op: CmpOp::Eq, value: Scalar::Bool(true) });
            }
            return self.error(
                ErrorCode::TypeMismatch,
                term.span,
                format!("{term} is {}, not a condition; compare it with a value", ty.describe()),
            );
        };
        match &test.kind {
            TestKind::Compare(op, value) => {
                if op.is_ordering() && !ty.is_ordered() {
                    return self.error(
                        ErrorCode::TypeMismatch,
                        test.span,
                        format!("{term} is {}, which has no order; use =, != or in", ty.describe()),
                    );
                }
                let scalar = self.scalar(term, ty, value)?;
                if op.is_ordering() && matches!(scalar, Scalar::Bool(_)) {
                    return self.error(
                        ErrorCode::TypeMismatch,
                        value.span,
                        format!("true and false have no order; use = or != with {term}"),
                    );
                }
                Some(Condition::Compare { operand, op: *op, value: scalar })
            }
            TestKind::In(values) | TestKind::NotIn(values) => {
                let scalars: Vec<Option<Scalar>> = values.iter().map(|v| self.scalar(term, ty, v)).collect();
                let condition = Condition::In { operand, values: scalars.into_iter().collect::<Option<_>>()? };
                Some(match test.kind {
                    TestKind::NotIn(_) => Condition::Not(Box::new(condition)),
                    _ => condition,
                })
            }
            TestKind::Contains(value) => {
                if ty != Ty::Dynamic {
                    return self.error(
                        ErrorCode::TypeMismatch,
                        test.span,
                        format!("\"contains\" works on traits and properties, but {term} is {}", ty.describe()),
                    );
                }
                match &value.kind {
                    ValueKind::Text(needle) => Some(Condition::Contains { operand, needle: needle.clone() }),
                    _ => self.error(
                        ErrorCode::TypeMismatch,
                        value.span,
                        format!("\"contains\" looks for text, found {}", describe_value(value)),
                    ),
                }
            }
            TestKind::Before(_) | TestKind::After(_) | TestKind::Within(_) => {
                let keyword = match test.kind {
                    TestKind::Before(_) => "before",
                    TestKind::After(_) => "after",
                    _ => "within",
                };
                self.error(
                    ErrorCode::TypeMismatch,
                    test.span,
                    format!("\"{keyword}\" compares times, but {term} is {}", ty.describe()),
                )
            }
        }
    }

    fn time_predicate(&mut self, term: &Term, operand: TimeOperand, test: Option<&Test>) -> Option<Condition> {
        let hint = "compare it with before, after or within, e.g. last(order_paid) within 30d";
        let Some(test) = test else {
            return self.error(
                ErrorCode::TypeMismatch,
                term.span,
                format!("{term} is a time, not a condition; {hint}"),
            );
        };
        let test = match &test.kind {
            TestKind::Before(point) => TimeTest::Before(self.time_ref(point)?),
            TestKind::After(point) => TimeTest::After(self.time_ref(point)?),
            TestKind::Within(d) => TimeTest::Within(self.duration(d.duration, d.span)?),
            _ => return self.error(ErrorCode::TypeMismatch, test.span, format!("{term} is a time; {hint}")),
        };
        Some(Condition::Time { operand, test })
    }

    fn time_ref(&mut self, point: &TimePoint) -> Option<TimeRef> {
        match point.kind {
            TimePointKind::Ago(d) => self.duration(d, point.span).map(TimeRef::Ago),
            TimePointKind::At(t) => Some(TimeRef::At(t)),
        }
    }

    /// Windows and offsets run from one hour to ten years: anything else is a mistake.
    fn duration(&mut self, d: Duration, span: Span) -> Option<Duration> {
        if d.amount == 0 {
            return self.error(ErrorCode::BadWindow, span, format!("{d} is an empty window; use at least 1h"));
        }
        if d.millis() > MAX_WINDOW_DAYS * DAY {
            return self.error(
                ErrorCode::BadWindow,
                span,
                format!("{d} is longer than the longest window, 10 years ({MAX_WINDOW_DAYS}d)"),
            );
        }
        Some(d)
    }

    fn term(&mut self, term: &Term, scope: Scope) -> Option<Resolved> {
        match (&term.kind, scope) {
            (TermKind::Field(name), Scope::Profile) => self.profile_field(name, term.span),
            (TermKind::Field(name), Scope::Event) => match name.as_str() {
                "channel" => Some(Resolved::Value(Operand::EventChannel, Ty::Channel)),
                "account" => Some(Resolved::Value(Operand::EventAccount, Ty::Account)),
                "amount" => Some(Resolved::Value(Operand::EventAmount, Ty::Money)),
                other if ProfileField::parse(other).is_some() => self.error(
                    ErrorCode::UnknownField,
                    term.span,
                    format!(
                        "{other} is a profile field; inside a where filter use the event's channel, account, \
                         amount or properties.…"
                    ),
                ),
                other => {
                    let hint = did_you_mean(suggest(other, EVENT_FIELDS));
                    self.error(
                        ErrorCode::UnknownField,
                        term.span,
                        format!("unknown event field \"{other}\"{hint}; events have channel, account, amount and properties.…"),
                    )
                }
            },
            (TermKind::Path(PathRoot::Traits, keys), Scope::Profile) => {
                if let Some(known) = &self.schema.trait_keys {
                    if !known.contains(&keys[0]) {
                        let hint = did_you_mean(suggest(&keys[0], known.iter().map(String::as_str)));
                        return self.error(
                            ErrorCode::UnknownTrait,
                            term.span,
                            format!("unknown trait \"{}\"{hint}", keys[0]),
                        );
                    }
                }
                Some(Resolved::Value(Operand::Trait(keys.clone()), Ty::Dynamic))
            }
            (TermKind::Path(PathRoot::Traits, _), Scope::Event) => self.error(
                ErrorCode::UnknownField,
                term.span,
                "traits belong to the profile; inside a where filter use the event's properties.…",
            ),
            (TermKind::Path(PathRoot::Properties, keys), Scope::Event) => {
                Some(Resolved::Value(Operand::Property(keys.clone()), Ty::Dynamic))
            }
            (TermKind::Path(PathRoot::Properties, _), Scope::Profile) => self.error(
                ErrorCode::UnknownField,
                term.span,
                "properties belong to events; filter events with where, e.g. \
                 count(order_paid where properties.sku = \"A1\", 90d)",
            ),
            (TermKind::Aggregate(agg), Scope::Event) => self.error(
                ErrorCode::TypeMismatch,
                term.span,
                format!("{}(…) cannot be used inside a where filter", agg.func.as_str()),
            ),
            (TermKind::Aggregate(agg), Scope::Profile) => {
                let event_type = self.event_kind(&agg.event);
                let filter = agg.filter.as_ref().map(|filter| self.expr(filter, Scope::Event).map(Box::new));
                let window = match (agg.func, &agg.window) {
                    (AggFunc::Count | AggFunc::Sum, None) => {
                        let f = agg.func.as_str();
                        self.error(
                            ErrorCode::BadWindow,
                            term.span,
                            format!(
                                "{f}(…) needs a window: {f}({}, 30d), or {f}({}, all) for the whole history",
                                agg.event.text, agg.event.text
                            ),
                        )
                    }
                    (AggFunc::Count | AggFunc::Sum, Some(w)) => match w.window {
                        Window::All => Some(None),
                        Window::Last(d) => self.duration(d, w.span).map(Some),
                    },
                    (AggFunc::First | AggFunc::Last, Some(w)) => self.error(
                        ErrorCode::BadWindow,
                        w.span,
                        format!(
                            "{}(…) takes no window; compare its time instead, e.g. last(order_paid) within 30d",
                            agg.func.as_str()
                        ),
                    ),
                    (AggFunc::First | AggFunc::Last, None) => Some(None),
                };
                let filter = match filter {
                    Some(checked) => Some(checked?),
                    None => None,
                };
                let events = EventSelector { event_type: event_type?, filter };
                let window = window?;
                Some(match agg.func {
                    AggFunc::Count => Resolved::Value(Operand::Count(Aggregate { events, window }), Ty::Number),
                    AggFunc::Sum => Resolved::Value(Operand::Sum(Aggregate { events, window }), Ty::Money),
                    AggFunc::First => Resolved::Time(TimeOperand::First(events)),
                    AggFunc::Last => Resolved::Time(TimeOperand::Last(events)),
                })
            }
        }
    }

    fn profile_field(&mut self, name: &str, span: Span) -> Option<Resolved> {
        let Some(field) = ProfileField::parse(name) else {
            let is_trait = self.schema.trait_keys.as_ref().is_some_and(|keys| keys.contains(name));
            let hint = if is_trait {
                format!(" (did you mean \"traits.{name}\"?)")
            } else if name == "amount" {
                "; amount belongs to events: use sum(order_paid, 30d), or amount inside a where filter".into()
            } else if let Some(s) = suggest(name, ProfileField::ALL.iter().map(|f| f.as_str())) {
                did_you_mean(Some(s))
            } else {
                "; profile attributes are written traits.<key>, e.g. traits.city".into()
            };
            return self.error(ErrorCode::UnknownField, span, format!("unknown field \"{name}\"{hint}"));
        };
        let ty = match field {
            ProfileField::FirstSeen => return Some(Resolved::Time(TimeOperand::FirstSeen)),
            ProfileField::LastSeen => return Some(Resolved::Time(TimeOperand::LastSeen)),
            ProfileField::Tier => Ty::Enum(EnumTy::Tier),
            ProfileField::PoolStage => Ty::Enum(EnumTy::PoolStage),
            ProfileField::Ownership => Ty::Enum(EnumTy::Ownership),
            ProfileField::Rfm => Ty::Enum(EnumTy::Rfm),
            ProfileField::Reachable => Ty::Bool,
            ProfileField::NetRevenue => Ty::Money,
            ProfileField::Affinity
            | ProfileField::PaidOrders
            | ProfileField::RefundedOrders
            | ProfileField::NetPaidOrders
            | ProfileField::Orders365d
            | ProfileField::EventCount => Ty::Number,
            ProfileField::Channel => Ty::Channel,
            ProfileField::Account => Ty::Account,
        };
        Some(Resolved::Value(Operand::Field(field), ty))
    }

    fn event_kind(&mut self, name: &Name) -> Option<EventKind> {
        if let Some(known) = EventType::parse(&name.text) {
            return Some(EventKind::Known(known));
        }
        if self.schema.custom_event_types.contains(&name.text) {
            return Some(EventKind::Custom(name.text.clone()));
        }
        let candidates =
            EventType::ALL.iter().map(|t| t.as_str()).chain(self.schema.custom_event_types.iter().map(String::as_str));
        let hint = did_you_mean(suggest(&name.text, candidates));
        self.error(ErrorCode::UnknownEventType, name.span, format!("unknown event type \"{}\"{hint}", name.text))
    }

    /// Resolves a literal against the type of the term it is compared with.
    fn scalar(&mut self, term: &Term, ty: Ty, value: &Value) -> Option<Scalar> {
        let mismatch = |checker: &mut Self| {
            let expected = match ty {
                Ty::Enum(e) => format!("; expected one of {}", e.listing()),
                _ => String::new(),
            };
            checker.error(
                ErrorCode::TypeMismatch,
                value.span,
                format!("{term} is {}, found {}{expected}", ty.describe(), describe_value(value)),
            )
        };
        match (ty, &value.kind) {
            (Ty::Enum(e), ValueKind::Word(text) | ValueKind::Text(text)) => e.parse(text).or_else(|| {
                let values = e.values();
                let hint = did_you_mean(suggest(text, values.iter().flat_map(|(code, zh)| [*code, *zh])));
                self.error(
                    ErrorCode::UnknownValue,
                    value.span,
                    format!("\"{text}\" is not {}{hint}; expected one of {}", e.name(), e.listing()),
                )
            }),
            (Ty::Bool, ValueKind::Bool(b)) => Some(Scalar::Bool(*b)),
            (Ty::Number, ValueKind::Number(n)) => Some(Scalar::Number(*n)),
            (Ty::Money, ValueKind::Number(n)) => match Fen::parse_yuan(&n.to_string()) {
                Ok(fen) => Some(Scalar::Money(fen)),
                Err(MoneyError::TooPrecise(_)) => self.error(
                    ErrorCode::TypeMismatch,
                    value.span,
                    format!("{n} has more than two decimals; amounts are in yuan, to the fen"),
                ),
                Err(_) => self.error(ErrorCode::TypeMismatch, value.span, format!("amount {n} is out of range")),
            },
            (Ty::Channel, ValueKind::Word(text) | ValueKind::Text(text)) => {
                channel(text).map(Scalar::Channel).or_else(|| {
                    let names = Channel::ALL.iter().map(|c| c.as_str()).chain(CHANNEL_LABELS.iter().map(|(_, zh)| *zh));
                    let hint = did_you_mean(suggest(text, names));
                    let all: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
                    self.error(
                        ErrorCode::UnknownValue,
                        value.span,
                        format!("\"{text}\" is not a channel{hint}; expected one of {}", all.join(", ")),
                    )
                })
            }
            (Ty::Account, ValueKind::Text(text)) => {
                let parsed = text.split_once('/').and_then(|(c, name)| Some((channel(c)?, name)));
                match parsed {
                    Some((channel, name)) if !name.is_empty() => {
                        Some(Scalar::Account { channel, name: name.to_string() })
                    }
                    _ => self.error(
                        ErrorCode::UnknownValue,
                        value.span,
                        format!(
                            "{} is not an account: write \"channel/name\", e.g. \"douyin/brand-main\"",
                            super::ast::Quoted(text)
                        ),
                    ),
                }
            }
            (Ty::Account, ValueKind::Word(word)) => self.error(
                ErrorCode::TypeMismatch,
                value.span,
                format!("write the account in double quotes as \"channel/name\", not the word {word}"),
            ),
            (Ty::Dynamic, ValueKind::Number(n)) => Some(Scalar::Number(*n)),
            (Ty::Dynamic, ValueKind::Text(text)) => Some(Scalar::Text(text.clone())),
            (Ty::Dynamic, ValueKind::Bool(b)) => Some(Scalar::Bool(*b)),
            (Ty::Dynamic, ValueKind::Word(word)) => self.error(
                ErrorCode::TypeMismatch,
                value.span,
                format!(
                    "write text in double quotes: \"{word}\" (bare words are only for tiers, channels and the like)"
                ),
            ),
            _ => mismatch(self),
        }
    }
}

fn channel(text: &str) -> Option<Channel> {
    Channel::parse(text).or_else(|| CHANNEL_LABELS.iter().find(|(_, zh)| *zh == text).map(|(c, _)| *c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_kind_table_matches_identity_rs() {
        for name in IDENTITY_KINDS {
            let kind = IdentityKind::parse(name).unwrap();
            assert!(!matches!(kind, IdentityKind::Custom(_)), "{name}");
            assert_eq!(kind.as_str(), name);
        }
    }

    #[test]
    fn channel_labels_cover_every_channel() {
        for c in Channel::ALL {
            assert!(CHANNEL_LABELS.iter().any(|(labelled, _)| *labelled == c), "{c}");
            assert_eq!(channel(c.as_str()), Some(c));
        }
    }
}
