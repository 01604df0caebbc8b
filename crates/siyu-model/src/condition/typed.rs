//! The checked condition: every name resolved and every comparison well-typed, so evaluators (the
//! naive one here, the engine's fast ones) never fail; and what a condition depends on, so the
//! engine knows which segments an event, a tag change or the passing of time may affect.

use std::collections::BTreeSet;

use super::ast::{CmpOp, Duration};
use crate::channel::Channel;
use crate::event::EventKind;
use crate::identity::IdentityKind;
use crate::money::Fen;
use crate::score::{FanTier, Ownership, PoolStage, RfmGroup};
use crate::time::Millis;

/// A condition the checker accepted. `not in` is `Not(In)`; `!=` is kept as an operator but
/// always means exactly `not =`. Every atom is true or false (a missing value makes a comparison
/// false), so the usual boolean algebra holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
    Compare {
        operand: Operand,
        op: CmpOp,
        value: Scalar,
    },
    /// True when the operand equals any of the values.
    In {
        operand: Operand,
        values: Vec<Scalar>,
    },
    /// A text trait or property containing `needle`, or an array of which one element is `needle`.
    Contains {
        operand: Operand,
        needle: String,
    },
    Time {
        operand: TimeOperand,
        test: TimeTest,
    },
    Tagged(String),
    Has(IdentityKind),
}

/// A value-producing term. `Event*` and `Property` only occur inside an [`EventSelector`] filter;
/// `Field`, `Trait` and the aggregates only outside one.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Field(ProfileField),
    /// A path into the profile's traits (`traits.address.city` → `["address", "city"]`).
    Trait(Vec<String>),
    /// Number of matching events in the window.
    Count(Aggregate),
    /// Sum of the matching events' amounts in the window (events without an amount add 0).
    Sum(Aggregate),
    EventChannel,
    /// The event's account, compared as `channel/name`.
    EventAccount,
    EventAmount,
    Property(Vec<String>),
}

/// The profile's own fields, as the score fold computes them at the evaluation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProfileField {
    Tier,
    PoolStage,
    Ownership,
    Rfm,
    Reachable,
    Affinity,
    NetRevenue,
    PaidOrders,
    RefundedOrders,
    NetPaidOrders,
    Orders365d,
    EventCount,
    FirstSeen,
    LastSeen,
    /// The set of channels the profile has events on.
    Channel,
    /// The set of `channel/account` pairs the profile has events on.
    Account,
}

impl ProfileField {
    pub const ALL: [ProfileField; 16] = [
        ProfileField::Tier,
        ProfileField::PoolStage,
        ProfileField::Ownership,
        ProfileField::Rfm,
        ProfileField::Reachable,
        ProfileField::Affinity,
        ProfileField::NetRevenue,
        ProfileField::PaidOrders,
        ProfileField::RefundedOrders,
        ProfileField::NetPaidOrders,
        ProfileField::Orders365d,
        ProfileField::EventCount,
        ProfileField::FirstSeen,
        ProfileField::LastSeen,
        ProfileField::Channel,
        ProfileField::Account,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProfileField::Tier => "tier",
            ProfileField::PoolStage => "pool_stage",
            ProfileField::Ownership => "ownership",
            ProfileField::Rfm => "rfm",
            ProfileField::Reachable => "reachable",
            ProfileField::Affinity => "affinity",
            ProfileField::NetRevenue => "net_revenue",
            ProfileField::PaidOrders => "paid_orders",
            ProfileField::RefundedOrders => "refunded_orders",
            ProfileField::NetPaidOrders => "net_paid_orders",
            ProfileField::Orders365d => "orders_365d",
            ProfileField::EventCount => "event_count",
            ProfileField::FirstSeen => "first_seen",
            ProfileField::LastSeen => "last_seen",
            ProfileField::Channel => "channel",
            ProfileField::Account => "account",
        }
    }

    pub fn parse(name: &str) -> Option<ProfileField> {
        ProfileField::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// Does the field change as the clock moves, with no new event? (Affinity decays, and the
    /// tier, pool stage, ownership level and RFM figures look at windows.)
    pub fn is_time_varying(self) -> bool {
        matches!(
            self,
            ProfileField::Tier
                | ProfileField::PoolStage
                | ProfileField::Ownership
                | ProfileField::Rfm
                | ProfileField::Affinity
                | ProfileField::Orders365d
        )
    }

    /// Can the field change because of *other* profiles' events? Only the RFM group can: it is
    /// graded against the mean of all buyers.
    pub fn is_tenant_wide(self) -> bool {
        self == ProfileField::Rfm
    }
}

impl std::fmt::Display for ProfileField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which events an aggregate or `first`/`last` looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSelector {
    pub event_type: EventKind,
    /// A condition over the event's channel, account, amount and properties.
    pub filter: Option<Box<Condition>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub events: EventSelector,
    /// `None` is `all`: the whole history up to the evaluation time.
    pub window: Option<Duration>,
}

/// A term whose value is a time (absent when there is no such event).
#[derive(Debug, Clone, PartialEq)]
pub enum TimeOperand {
    FirstSeen,
    LastSeen,
    First(EventSelector),
    Last(EventSelector),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeTest {
    /// Strictly earlier than the point.
    Before(TimeRef),
    /// Strictly later than the point.
    After(TimeRef),
    /// At or after `t − duration`, and not after `t`.
    Within(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeRef {
    /// `t − duration`, where `t` is the evaluation time.
    Ago(Duration),
    At(Millis),
}

impl TimeRef {
    pub fn resolve(self, t: Millis) -> Millis {
        match self {
            TimeRef::Ago(d) => Millis(t.0 - d.millis()),
            TimeRef::At(at) => at,
        }
    }
}

/// A resolved literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Number(f64),
    /// An amount: literals are yuan with at most two decimals, kept as exact fen.
    Money(Fen),
    Text(String),
    Bool(bool),
    Tier(FanTier),
    PoolStage(PoolStage),
    Ownership(Ownership),
    Rfm(RfmGroup),
    Channel(Channel),
    Account {
        channel: Channel,
        name: String,
    },
}

/// Everything a condition reads. The engine maps it to the events that may change a segment:
/// `event_types` directly; `fields` through the scoring rules (a profile field may change with any
/// event whose type the scores look at, and `event_count`, `first_seen`, `last_seen`, `channel`
/// and `account` with every event); `traits` through identify events; `tags` through tag changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dependencies {
    pub fields: BTreeSet<ProfileField>,
    /// Top-level trait keys.
    pub traits: BTreeSet<String>,
    /// Event types counted, summed or looked up by `first`/`last`.
    pub event_types: BTreeSet<String>,
    pub tags: BTreeSet<String>,
    pub identity_kinds: BTreeSet<String>,
    /// The value can change with no event, as time passes: a window, an `ago`, a `within`, or a
    /// field that decays ([`ProfileField::is_time_varying`]).
    pub time_dependent: bool,
    /// The value can change when another profile's events arrive ([`ProfileField::is_tenant_wide`]).
    pub tenant_wide: bool,
}

impl Condition {
    pub fn dependencies(&self) -> Dependencies {
        let mut deps = Dependencies::default();
        self.collect(&mut deps);
        deps
    }

    /// Tags the condition reads: a segment or rule tag that reads a tag produced by a rule that
    /// (transitively) reads it back is a cycle, refused at save time.
    pub fn references_tags(&self) -> BTreeSet<String> {
        self.dependencies().tags
    }

    /// Can the value change as time passes, without any new event?
    pub fn is_time_dependent(&self) -> bool {
        self.dependencies().time_dependent
    }

    fn collect(&self, deps: &mut Dependencies) {
        match self {
            Condition::And(items) | Condition::Or(items) => items.iter().for_each(|c| c.collect(deps)),
            Condition::Not(inner) => inner.collect(deps),
            Condition::Compare { operand, .. }
            | Condition::In { operand, .. }
            | Condition::Contains { operand, .. } => operand.collect(deps),
            Condition::Time { operand, test } => {
                match operand {
                    TimeOperand::FirstSeen => {
                        deps.fields.insert(ProfileField::FirstSeen);
                    }
                    TimeOperand::LastSeen => {
                        deps.fields.insert(ProfileField::LastSeen);
                    }
                    TimeOperand::First(events) | TimeOperand::Last(events) => events.collect(deps),
                }
                if matches!(
                    test,
                    TimeTest::Within(_) | TimeTest::Before(TimeRef::Ago(_)) | TimeTest::After(TimeRef::Ago(_))
                ) {
                    deps.time_dependent = true;
                }
            }
            Condition::Tagged(tag) => {
                deps.tags.insert(tag.clone());
            }
            Condition::Has(kind) => {
                deps.identity_kinds.insert(kind.as_str().to_string());
            }
        }
    }
}

impl Operand {
    fn collect(&self, deps: &mut Dependencies) {
        match self {
            Operand::Field(field) => {
                deps.fields.insert(*field);
                deps.time_dependent |= field.is_time_varying();
                deps.tenant_wide |= field.is_tenant_wide();
            }
            Operand::Trait(path) => {
                deps.traits.extend(path.first().cloned());
            }
            Operand::Count(agg) | Operand::Sum(agg) => {
                agg.events.collect(deps);
                deps.time_dependent |= agg.window.is_some();
            }
            Operand::EventChannel | Operand::EventAccount | Operand::EventAmount | Operand::Property(_) => {}
        }
    }
}

impl EventSelector {
    fn collect(&self, deps: &mut Dependencies) {
        deps.event_types.insert(self.event_type.as_str().to_string());
        if let Some(filter) = &self.filter {
            filter.collect(deps);
        }
    }
}
