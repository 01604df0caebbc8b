//! The reference evaluator of conditions: the language's meaning written out as plainly as
//! possible over plain data, rescanning the events for every atom. Slow on purpose; the engine's
//! incremental and indexed evaluators are tested against it.
//!
//! Profile fields come from a [`ProfileSnapshot`] (the scores at `t`, themselves held against
//! `crate::naive`); event aggregates come from the events, ignoring any after `t`.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde_json::{Map, Value as Json};

use super::ast::{CmpOp, Duration};
use super::typed::{Condition, EventSelector, Operand, ProfileField, Scalar, TimeOperand, TimeTest};
use crate::channel::Channel;
use crate::money::Fen;
use crate::score::{FanTier, Ownership, PoolStage, RfmGroup};
use crate::time::Millis;

/// A profile at the evaluation time, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSnapshot {
    pub tier: FanTier,
    pub pool_stage: PoolStage,
    pub ownership: Ownership,
    /// `None` for non-buyers.
    pub rfm: Option<RfmGroup>,
    pub reachable: bool,
    /// The displayed affinity (rounded, never negative).
    pub affinity: f64,
    pub net_revenue: Fen,
    pub paid_orders: u32,
    pub refunded_orders: u32,
    pub net_paid_orders: u32,
    pub orders_365d: u32,
    pub event_count: u32,
    pub first_seen: Option<Millis>,
    pub last_seen: Option<Millis>,
    pub channels: BTreeSet<Channel>,
    /// `(channel, account)` pairs the profile has events on.
    pub accounts: BTreeSet<(Channel, String)>,
    pub tags: BTreeSet<String>,
    /// Kinds of the identities the profile holds (`phone`, `wechat_unionid`, custom kinds).
    pub identity_kinds: BTreeSet<String>,
    pub traits: Map<String, Json>,
}

/// One event of the profile, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct PlainEventWithProps {
    pub event_type: String,
    pub ts: Millis,
    pub amount: Option<Fen>,
    pub channel: Channel,
    /// The account name within the channel (empty when none).
    pub account: String,
    pub properties: Json,
}

/// Does the profile satisfy `condition` at time `t`? Events may come in any order.
pub fn evaluate(condition: &Condition, profile: &ProfileSnapshot, events: &[PlainEventWithProps], t: Millis) -> bool {
    let past: Vec<&PlainEventWithProps> = events.iter().filter(|e| e.ts <= t).collect();
    let context = Context { profile, events: &past, t };
    holds(condition, &|atom| context.atom(atom))
}

impl Default for ProfileSnapshot {
    /// A profile with nothing: no events, no scores, no tags.
    fn default() -> Self {
        ProfileSnapshot {
            tier: FanTier::None,
            pool_stage: PoolStage::Public,
            ownership: Ownership::L0,
            rfm: None,
            reachable: false,
            affinity: 0.0,
            net_revenue: Fen(0),
            paid_orders: 0,
            refunded_orders: 0,
            net_paid_orders: 0,
            orders_365d: 0,
            event_count: 0,
            first_seen: None,
            last_seen: None,
            channels: BTreeSet::new(),
            accounts: BTreeSet::new(),
            tags: BTreeSet::new(),
            identity_kinds: BTreeSet::new(),
            traits: Map::new(),
        }
    }
}

/// The boolean structure, shared by profile conditions and event filters.
pub fn holds(condition: &Condition, atom: &dyn Fn(&Condition) -> bool) -> bool {
    match condition {
        Condition::And(items) => items.iter().all(|c| holds(c, atom)),
        Condition::Or(items) => items.iter().any(|c| holds(c, atom)),
        Condition::Not(inner) => !holds(inner, atom),
        other => atom(other),
    }
}

struct Context<'a> {
    profile: &'a ProfileSnapshot,
    /// Events at or before `t`.
    events: &'a [&'a PlainEventWithProps],
    t: Millis,
}

/// A term's value; `Missing` compares false with everything. Public so that faster evaluators
/// share these exact comparison semantics ([`compare`], [`contains`], [`lookup`]).
#[derive(Debug, Clone, Copy)]
pub enum Val<'a> {
    Missing,
    Number(f64),
    Money(Fen),
    Bool(bool),
    Tier(FanTier),
    PoolStage(PoolStage),
    Ownership(Ownership),
    Rfm(RfmGroup),
    Channels(&'a BTreeSet<Channel>),
    Accounts(&'a BTreeSet<(Channel, String)>),
    Channel(Channel),
    Account(Channel, &'a str),
    Json(&'a Json),
}

impl Context<'_> {
    fn atom(&self, atom: &Condition) -> bool {
        match atom {
            Condition::Compare { operand, op, value } => compare(&self.value(operand), *op, value),
            Condition::In { operand, values } => {
                let v = self.value(operand);
                values.iter().any(|value| compare(&v, CmpOp::Eq, value))
            }
            Condition::Contains { operand, needle } => contains(&self.value(operand), needle),
            Condition::Time { operand, test } => {
                let at = match operand {
                    TimeOperand::FirstSeen => self.profile.first_seen,
                    TimeOperand::LastSeen => self.profile.last_seen,
                    TimeOperand::First(events) => self.matching(events, None).map(|e| e.ts).min(),
                    TimeOperand::Last(events) => self.matching(events, None).map(|e| e.ts).max(),
                };
                at.is_some_and(|at| match *test {
                    TimeTest::Before(point) => at < point.resolve(self.t),
                    TimeTest::After(point) => at > point.resolve(self.t),
                    TimeTest::Within(d) => Millis(self.t.0 - d.millis()) <= at && at <= self.t,
                })
            }
            Condition::Tagged(tag) => self.profile.tags.contains(tag),
            Condition::Has(kind) => self.profile.identity_kinds.contains(kind.as_str()),
            Condition::And(_) | Condition::Or(_) | Condition::Not(_) => holds(atom, &|a| self.atom(a)),
        }
    }

    fn value(&self, operand: &Operand) -> Val<'_> {
        let p = self.profile;
        match operand {
            Operand::Field(field) => match field {
                ProfileField::Tier => Val::Tier(p.tier),
                ProfileField::PoolStage => Val::PoolStage(p.pool_stage),
                ProfileField::Ownership => Val::Ownership(p.ownership),
                ProfileField::Rfm => p.rfm.map_or(Val::Missing, Val::Rfm),
                ProfileField::Reachable => Val::Bool(p.reachable),
                ProfileField::Affinity => Val::Number(p.affinity),
                ProfileField::NetRevenue => Val::Money(p.net_revenue),
                ProfileField::PaidOrders => Val::Number(f64::from(p.paid_orders)),
                ProfileField::RefundedOrders => Val::Number(f64::from(p.refunded_orders)),
                ProfileField::NetPaidOrders => Val::Number(f64::from(p.net_paid_orders)),
                ProfileField::Orders365d => Val::Number(f64::from(p.orders_365d)),
                ProfileField::EventCount => Val::Number(f64::from(p.event_count)),
                ProfileField::Channel => Val::Channels(&p.channels),
                ProfileField::Account => Val::Accounts(&p.accounts),
                // The checker types these as times; they never reach a value comparison.
                ProfileField::FirstSeen | ProfileField::LastSeen => Val::Missing,
            },
            Operand::Trait(path) => lookup(p.traits.get(&path[0]), &path[1..]),
            Operand::Count(agg) => Val::Number(self.matching(&agg.events, agg.window).count() as f64),
            Operand::Sum(agg) => {
                Val::Money(Fen(self.matching(&agg.events, agg.window).filter_map(|e| e.amount).map(|a| a.0).sum()))
            }
            // Event operands only occur inside filters, which `event_value` evaluates.
            Operand::EventChannel | Operand::EventAccount | Operand::EventAmount | Operand::Property(_) => Val::Missing,
        }
    }

    /// The events of the selector's type, in the window, passing its filter.
    fn matching<'s>(
        &'s self,
        selector: &'s EventSelector,
        window: Option<Duration>,
    ) -> impl Iterator<Item = &'s PlainEventWithProps> + 's {
        let start = window.map(|d| Millis(self.t.0 - d.millis()));
        self.events.iter().copied().filter(move |e| {
            e.event_type == selector.event_type.as_str()
                && start.is_none_or(|start| e.ts >= start)
                && selector.filter.as_deref().is_none_or(|filter| holds(filter, &|atom| event_atom(atom, e)))
        })
    }
}

fn event_atom(atom: &Condition, event: &PlainEventWithProps) -> bool {
    match atom {
        Condition::Compare { operand, op, value } => compare(&event_value(operand, event), *op, value),
        Condition::In { operand, values } => {
            let v = event_value(operand, event);
            values.iter().any(|value| compare(&v, CmpOp::Eq, value))
        }
        Condition::Contains { operand, needle } => contains(&event_value(operand, event), needle),
        // The checker allows nothing else inside a filter.
        _ => false,
    }
}

fn event_value<'e>(operand: &Operand, event: &'e PlainEventWithProps) -> Val<'e> {
    match operand {
        Operand::EventChannel => Val::Channel(event.channel),
        Operand::EventAccount => Val::Account(event.channel, &event.account),
        Operand::EventAmount => event.amount.map_or(Val::Missing, Val::Money),
        Operand::Property(path) => lookup(Some(&event.properties), path),
        _ => Val::Missing,
    }
}

/// Follows `path` through nested JSON objects; `null` counts as missing.
pub fn lookup<'a>(root: Option<&'a Json>, path: &[String]) -> Val<'a> {
    let mut at = root;
    for key in path {
        at = at.and_then(|v| v.get(key));
    }
    match at {
        None | Some(Json::Null) => Val::Missing,
        Some(json) => Val::Json(json),
    }
}

/// `!=` is exactly `not =`; ordering operators need comparable values of one type.
pub fn compare(v: &Val<'_>, op: CmpOp, value: &Scalar) -> bool {
    match op {
        CmpOp::Eq => equals(v, value),
        CmpOp::Ne => !equals(v, value),
        _ => order(v, value).is_some_and(|ordering| op.holds(ordering)),
    }
}

fn equals(v: &Val<'_>, value: &Scalar) -> bool {
    match (v, value) {
        (Val::Channels(set), Scalar::Channel(c)) => set.contains(c),
        (Val::Accounts(set), Scalar::Account { channel, name }) => set.contains(&(*channel, name.clone())),
        (Val::Channel(a), Scalar::Channel(b)) => a == b,
        (Val::Account(channel, name), Scalar::Account { channel: c, name: n }) => channel == c && name == n,
        (Val::Bool(a), Scalar::Bool(b)) => a == b,
        (Val::Json(Json::Bool(a)), Scalar::Bool(b)) => a == b,
        _ => order(v, value) == Some(Ordering::Equal),
    }
}

fn order(v: &Val<'_>, value: &Scalar) -> Option<Ordering> {
    match (v, value) {
        (Val::Number(a), Scalar::Number(b)) => a.partial_cmp(b),
        (Val::Money(a), Scalar::Money(b)) => Some(a.cmp(b)),
        (Val::Tier(a), Scalar::Tier(b)) => Some(a.cmp(b)),
        (Val::PoolStage(a), Scalar::PoolStage(b)) => Some(a.cmp(b)),
        (Val::Ownership(a), Scalar::Ownership(b)) => Some(a.cmp(b)),
        (Val::Rfm(a), Scalar::Rfm(b)) => Some(a.cmp(b)),
        (Val::Json(Json::Number(a)), Scalar::Number(b)) => a.as_f64()?.partial_cmp(b),
        (Val::Json(Json::String(a)), Scalar::Text(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    }
}

/// Text containing the needle, or an array with an element equal to it.
pub fn contains(v: &Val<'_>, needle: &str) -> bool {
    match v {
        Val::Json(Json::String(text)) => text.contains(needle),
        Val::Json(Json::Array(items)) => items.iter().any(|item| item.as_str() == Some(needle)),
        _ => false,
    }
}
