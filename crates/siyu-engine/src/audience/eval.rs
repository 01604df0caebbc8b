//! The fast evaluator of conditions over the in-memory state. Profile fields come from the score
//! fold (computed once per profile, only if the condition reads one); event aggregates from the
//! profile's facts, which are sorted by time, so a window is a binary search and a suffix scan;
//! comparisons are `condition::naive`'s own, so the two evaluators cannot disagree on meaning
//! (the property test in tests/segments.rs holds them together).
//!
//! Facts keep no properties: `where properties.…` filters read the values the audience keeps for
//! the event types such filters name (see [`super::Audience::properties`]). A fact keeps no
//! "no amount" either: an amount of 0 counts as missing inside a `where` filter.

use std::cell::OnceCell;

use siyu_model::condition::ast::CmpOp;
use siyu_model::condition::naive::{compare, contains, holds, lookup, Val};
use siyu_model::condition::{Condition, EventSelector, Operand, ProfileField, Scalar, TimeOperand, TimeTest};
use siyu_model::score::RfmMeans;
use siyu_model::{Fact, Fen, Millis, ProfileId, ProfileScores};

use crate::state::{Profile, TenantState};

/// Evaluates conditions against the profiles of one state at one time.
pub struct Evaluator<'s> {
    state: &'s TenantState,
    t: Millis,
    means: &'s RfmMeans,
}

struct Cx<'e, 's> {
    ev: &'e Evaluator<'s>,
    id: ProfileId,
    profile: &'s Profile,
    /// Facts at or before `t`.
    facts: &'s [Fact],
    scores: OnceCell<ProfileScores>,
}

impl<'s> Evaluator<'s> {
    pub fn new(state: &'s TenantState, t: Millis, means: &'s RfmMeans) -> Evaluator<'s> {
        Evaluator { state, t, means }
    }

    /// Does the live profile `id` satisfy `condition`? Merged-away and unknown ids never do.
    pub fn matches(&self, condition: &Condition, id: ProfileId) -> bool {
        let Some(profile) = self.state.profile(id) else { return false };
        if profile.merged_into.is_some() {
            return false;
        }
        let end = profile.facts.partition_point(|f| f.ts <= self.t);
        let cx = Cx { ev: self, id, profile, facts: &profile.facts[..end], scores: OnceCell::new() };
        holds(condition, &|atom| cx.atom(atom))
    }
}

impl<'s> Cx<'_, 's> {
    fn scores(&self) -> &ProfileScores {
        self.scores.get_or_init(|| self.ev.state.scores_at(self.id, self.ev.t).expect("a live profile"))
    }

    fn atom(&self, atom: &Condition) -> bool {
        match atom {
            Condition::Compare {
                operand: Operand::Field(f @ (ProfileField::Channel | ProfileField::Account)),
                op,
                value,
            } => {
                let member = self.set_contains(*f, value);
                if *op == CmpOp::Ne {
                    !member
                } else {
                    member
                }
            }
            Condition::In { operand: Operand::Field(f @ (ProfileField::Channel | ProfileField::Account)), values } => {
                values.iter().any(|v| self.set_contains(*f, v))
            }
            Condition::Compare { operand, op, value } => self.with_value(operand, &|v| compare(&v, *op, value)),
            Condition::In { operand, values } => {
                self.with_value(operand, &|v| values.iter().any(|value| compare(&v, CmpOp::Eq, value)))
            }
            Condition::Contains { operand, needle } => self.with_value(operand, &|v| contains(&v, needle)),
            Condition::Time { operand, test } => {
                let at = match operand {
                    TimeOperand::FirstSeen => self.facts.first().map(|f| f.ts),
                    TimeOperand::LastSeen => self.facts.last().map(|f| f.ts),
                    TimeOperand::First(selector) => self.matching(selector, 0).map(|f| f.ts).next(),
                    TimeOperand::Last(selector) => self.matching_rev(selector).map(|f| f.ts),
                };
                let t = self.ev.t;
                at.is_some_and(|at| match *test {
                    TimeTest::Before(point) => at < point.resolve(t),
                    TimeTest::After(point) => at > point.resolve(t),
                    TimeTest::Within(d) => Millis(t.0 - d.millis()) <= at && at <= t,
                })
            }
            Condition::Tagged(name) => {
                self.ev.state.audience.tag_id(name).is_some_and(|tag| self.profile.tags.binary_search(&tag).is_ok())
            }
            Condition::Has(kind) => self.profile.identities.iter().any(|l| l.identity.kind == *kind),
            Condition::And(_) | Condition::Or(_) | Condition::Not(_) => holds(atom, &|a| self.atom(a)),
        }
    }

    fn set_contains(&self, field: ProfileField, value: &Scalar) -> bool {
        match (field, value) {
            (ProfileField::Channel, Scalar::Channel(c)) => {
                if self.facts.len() == self.profile.facts.len() {
                    self.profile.channels & (1 << c.code()) != 0
                } else {
                    self.facts.iter().any(|f| f.channel == *c)
                }
            }
            (ProfileField::Account, Scalar::Account { channel, name }) => {
                let Some(account) = self.ev.state.accounts.get(name) else { return false };
                self.facts.iter().any(|f| f.channel == *channel && f.account == account)
            }
            _ => false,
        }
    }

    fn with_value(&self, operand: &Operand, f: &dyn Fn(Val<'_>) -> bool) -> bool {
        let means = self.ev.means;
        let value = match operand {
            Operand::Field(field) => {
                let s = self.scores();
                match field {
                    ProfileField::Tier => Val::Tier(s.tier),
                    ProfileField::PoolStage => Val::PoolStage(s.pool_stage),
                    ProfileField::Ownership => Val::Ownership(s.ownership),
                    ProfileField::Rfm => s.rfm.map_or(Val::Missing, |input| Val::Rfm(means.group(&input))),
                    ProfileField::Reachable => Val::Bool(s.reachable),
                    ProfileField::Affinity => Val::Number(s.affinity),
                    ProfileField::NetRevenue => Val::Money(s.net_revenue),
                    ProfileField::PaidOrders => Val::Number(f64::from(s.paid_orders)),
                    ProfileField::RefundedOrders => Val::Number(f64::from(s.refunded_orders)),
                    ProfileField::NetPaidOrders => Val::Number(f64::from(s.net_paid_orders)),
                    ProfileField::Orders365d => Val::Number(f64::from(s.orders_365d)),
                    ProfileField::EventCount => Val::Number(self.facts.len() as f64),
                    ProfileField::FirstSeen
                    | ProfileField::LastSeen
                    | ProfileField::Channel
                    | ProfileField::Account => Val::Missing,
                }
            }
            Operand::Trait(path) => lookup(self.profile.traits.as_ref().and_then(|t| t.get(&path[0])), &path[1..]),
            Operand::Count(agg) => {
                let start = self.window_start(agg.window);
                Val::Number(self.matching(&agg.events, start).count() as f64)
            }
            Operand::Sum(agg) => {
                let start = self.window_start(agg.window);
                Val::Money(Fen(self.matching(&agg.events, start).map(|f| f.amount.0).sum()))
            }
            Operand::EventChannel | Operand::EventAccount | Operand::EventAmount | Operand::Property(_) => Val::Missing,
        };
        f(value)
    }

    /// The index of the first fact inside the window.
    fn window_start(&self, window: Option<siyu_model::condition::ast::Duration>) -> usize {
        match window {
            None => 0,
            Some(d) => {
                let from = Millis(self.ev.t.0 - d.millis());
                self.facts.partition_point(|f| f.ts < from)
            }
        }
    }

    fn code(&self, selector: &EventSelector) -> Option<u16> {
        self.ev.state.type_code_of(selector.event_type.as_str())
    }

    fn matching<'a>(&'a self, selector: &'a EventSelector, start: usize) -> impl Iterator<Item = &'a Fact> + 'a {
        let code = self.code(selector);
        self.facts[start..].iter().filter(move |f| Some(f.code) == code && self.passes(selector, f))
    }

    fn matching_rev(&self, selector: &EventSelector) -> Option<&Fact> {
        let code = self.code(selector)?;
        self.facts.iter().rev().find(|f| f.code == code && self.passes(selector, f))
    }

    fn passes(&self, selector: &EventSelector, fact: &Fact) -> bool {
        selector.filter.as_deref().is_none_or(|filter| holds(filter, &|atom| self.fact_atom(atom, fact)))
    }

    fn fact_atom(&self, atom: &Condition, fact: &Fact) -> bool {
        let state = self.ev.state;
        let properties = state.audience.properties(fact.seq);
        let value = |operand: &Operand| -> Val<'_> {
            match operand {
                Operand::EventChannel => Val::Channel(fact.channel),
                Operand::EventAccount => Val::Account(fact.channel, state.accounts.name(fact.account)),
                Operand::EventAmount if fact.amount.0 != 0 => Val::Money(fact.amount),
                Operand::Property(path) => lookup(properties, path),
                _ => Val::Missing,
            }
        };
        match atom {
            Condition::Compare { operand, op, value: scalar } => compare(&value(operand), *op, scalar),
            Condition::In { operand, values } => {
                let v = value(operand);
                values.iter().any(|scalar| compare(&v, CmpOp::Eq, scalar))
            }
            Condition::Contains { operand, needle } => contains(&value(operand), needle),
            Condition::And(_) | Condition::Or(_) | Condition::Not(_) => holds(atom, &|a| self.fact_atom(a, fact)),
            _ => false,
        }
    }
}
