//! The fast condition evaluator over the in-memory state, for one profile ([`Evaluator::matches`],
//! what keeping memberships current needs) or for every profile at once ([`Evaluator::select`],
//! what saving, previewing and the time sweep need).
//!
//! Profile fields are read from the dense [`ProfileSummary`] rows (72 bytes a profile, scanned
//! in id order) rather than from the profiles themselves; event aggregates from the profile's
//! facts, which are sorted by time, so a window is a binary search and a suffix scan. A full
//! evaluation works clause by clause on sets of ids: an `and` evaluates each clause only over
//! the profiles the clauses before it kept, an `or` only over those not yet in, and clauses are
//! put cheapest first ([`cheapest_first`]), so the fact scans run over few profiles. Comparisons
//! are `condition::naive`'s own, so the evaluators cannot disagree on meaning (the property
//! tests in tests/segments.rs hold both paths to the reference).
//!
//! Facts keep no properties: `where properties.…` filters read the values the audience keeps for
//! the event types such filters name (see [`super::Audience::properties`]). A fact keeps no
//! "no amount" either: an amount of 0 counts as missing inside a `where` filter.

use std::cell::OnceCell;

use siyu_model::condition::ast::{CmpOp, Duration};
use siyu_model::condition::naive::{compare, contains, holds, lookup, Val};
use siyu_model::condition::{Condition, EventSelector, Operand, ProfileField, Scalar, TimeOperand, TimeTest};
use siyu_model::score::RfmMeans;
use siyu_model::{Fact, FanTier, Fen, Millis, ProfileFacts, ProfileId, ProfileSummary, ScoringRules};

use crate::members::Members;
use crate::state::{Profile, TenantState};

/// Evaluates conditions against the profiles of one state at one time.
pub struct Evaluator<'s> {
    state: &'s TenantState,
    t: Millis,
    means: &'s RfmMeans,
}

/// One profile at the evaluation time.
struct Cx<'c, 's> {
    ev: &'c Evaluator<'s>,
    id: ProfileId,
    /// The fold of the facts at or before `t`.
    summary: &'c ProfileSummary,
    /// The facts at or before `t`, read when an atom needs them.
    facts: OnceCell<&'s [Fact]>,
}

impl<'s> Evaluator<'s> {
    pub fn new(state: &'s TenantState, t: Millis, means: &'s RfmMeans) -> Evaluator<'s> {
        Evaluator { state, t, means }
    }

    /// Does the live profile `id` satisfy `condition`? Merged-away and unknown ids never do.
    pub fn matches(&self, condition: &Condition, id: ProfileId) -> bool {
        self.state.live().contains(id) && self.decide(id, &|cx| cx.holds(condition))
    }

    /// Every live profile that satisfies `condition`.
    ///
    /// One pass over the summary rows decides what they can (for an `and`, its clauses that
    /// read nothing else; they come first, cheapest first); a second pass takes the profiles
    /// still undecided to their facts, tags or traits, 64 at a time, their memory fetched
    /// together ([`Members::filter_warmed`]) rather than one cache miss after another.
    pub fn select(&self, condition: &Condition) -> Members {
        self.select_in(condition, self.state.live())
    }

    /// The live profiles of `candidates` that satisfy `condition` (a chunk of a full
    /// evaluation done in parts).
    pub fn select_in(&self, condition: &Condition, candidates: &Members) -> Members {
        let live = candidates;
        let (cheap, dear): (&[Condition], &[Condition]) = match condition {
            Condition::And(items) => {
                let split = items.iter().position(|c| cost(c) >= PROFILE_COST).unwrap_or(items.len());
                items.split_at(split)
            }
            other if cost(other) < PROFILE_COST => (std::slice::from_ref(other), &[]),
            other => (&[], std::slice::from_ref(other)),
        };
        let all = |items: &[Condition], id: ProfileId| self.decide(id, &|cx| items.iter().all(|c| cx.holds(c)));
        let (state, t) = (self.state, self.t);
        let on_row = |id: ProfileId| match state.profile_summary(id) {
            Some(s) if s.last_ts <= t => cheap.iter().all(|c| on_summary(c, s, t, &state.rules) != Some(false)),
            _ => all(cheap, id), // facts after `t`: an evaluation in the past
        };
        let kept = if cheap.is_empty() { live.and(self.state.live()) } else { live.filter(on_row) };
        if kept.is_empty() {
            return kept;
        }
        if dear.is_empty() || kept.is_empty() {
            return kept;
        }
        kept.filter_warmed(|id| self.warm(id), |id| all(dear, id))
    }

    /// Reads the profile's most recent facts (where windows start looking), to bring them into
    /// cache ahead of its evaluation.
    fn warm(&self, id: ProfileId) -> u64 {
        let facts = self.state.profile(id).map_or(&[][..], |p| &p.facts[..]);
        facts.iter().rev().step_by(2).take(3).map(|f| f.ts.0 as u64).fold(0, u64::wrapping_add)
    }

    /// Decides something about the (live) profile `id` at `t`.
    fn decide(&self, id: ProfileId, f: &dyn Fn(&Cx<'_, 's>) -> bool) -> bool {
        let state = self.state;
        let Some(summary) = state.profile_summary(id) else { return false };
        if summary.last_ts <= self.t {
            return f(&Cx { ev: self, id, summary, facts: OnceCell::new() });
        }
        // Facts later than `t` exist: fold the prefix (an "as of" evaluation in the past).
        let Some(profile) = state.profile(id) else { return false };
        let past = &profile.facts[..profile.facts.partition_point(|f| f.ts <= self.t)];
        let summary = ProfileFacts::fold(past, self.t, &state.rules).summary(&state.rules);
        f(&Cx { ev: self, id, summary: &summary, facts: OnceCell::from(past) })
    }
}

/// The same condition with the operands of every `and` and `or` ordered cheapest first, for
/// [`Evaluator`]: the order of clauses changes no result, only how much work deciding takes.
pub fn cheapest_first(condition: &Condition) -> Condition {
    match condition {
        Condition::And(items) => Condition::And(by_cost(items)),
        Condition::Or(items) => Condition::Or(by_cost(items)),
        Condition::Not(inner) => Condition::Not(Box::new(cheapest_first(inner))),
        atom => atom.clone(),
    }
}

fn by_cost(items: &[Condition]) -> Vec<Condition> {
    let mut ordered: Vec<Condition> = items.iter().map(cheapest_first).collect();
    ordered.sort_by_key(cost); // stable: equal costs keep the written order
    ordered
}

/// The [`cost`] from which a condition reads more than the summary row.
const PROFILE_COST: u32 = 8;

/// A rough relative price of deciding a condition for one profile: reading the summary row is
/// 1, following the profile to its facts, tags, identities or traits costs a cache miss and a
/// scan.
fn cost(condition: &Condition) -> u32 {
    let selector = |s: &EventSelector| 20 + s.filter.as_deref().map_or(0, |f| 5 + cost(f));
    match condition {
        Condition::And(items) | Condition::Or(items) => items.iter().map(cost).sum(),
        Condition::Not(inner) => cost(inner),
        Condition::Compare { operand, .. } | Condition::In { operand, .. } | Condition::Contains { operand, .. } => {
            match operand {
                Operand::Field(ProfileField::Rfm | ProfileField::Orders365d | ProfileField::Account) => 30,
                Operand::Field(ProfileField::Tier | ProfileField::Affinity | ProfileField::PoolStage) => 2,
                Operand::Field(_) => 1,
                Operand::Trait(_) => 12,
                Operand::Count(agg) | Operand::Sum(agg) => selector(&agg.events),
                Operand::Property(_) => 10,
                Operand::EventChannel | Operand::EventAccount | Operand::EventAmount => 1,
            }
        }
        Condition::Time { operand: TimeOperand::FirstSeen | TimeOperand::LastSeen, .. } => 1,
        Condition::Time { operand: TimeOperand::First(s) | TimeOperand::Last(s), .. } => selector(s),
        Condition::Tagged(_) => 8,
        Condition::Has(_) => 10,
    }
}

impl<'e, 's> Cx<'e, 's> {
    fn holds(&self, condition: &Condition) -> bool {
        holds(condition, &|atom| self.atom(atom))
    }

    fn profile(&self) -> &'s Profile {
        self.ev.state.profile(self.id).expect("a live profile")
    }

    fn facts(&self) -> &'s [Fact] {
        // Set up front for an evaluation in the past; otherwise every fact is at or before `t`.
        self.facts.get_or_init(|| &self.profile().facts)
    }

    fn atom(&self, atom: &Condition) -> bool {
        let (rules, t) = (&self.ev.state.rules, self.ev.t);
        if let Some(decided) = on_summary(atom, self.summary, t, rules) {
            return decided;
        }
        match atom {
            Condition::Compare { operand: Operand::Field(ProfileField::Account), op, value } => {
                let member = self.has_account(value);
                if *op == CmpOp::Ne {
                    !member
                } else {
                    member
                }
            }
            Condition::In { operand: Operand::Field(ProfileField::Account), values } => {
                values.iter().any(|v| self.has_account(v))
            }
            Condition::Compare { operand, op, value } => self.with_value(operand, &|v| compare(&v, *op, value)),
            Condition::In { operand, values } => {
                self.with_value(operand, &|v| values.iter().any(|value| compare(&v, CmpOp::Eq, value)))
            }
            Condition::Contains { operand, needle } => self.with_value(operand, &|v| contains(&v, needle)),
            Condition::Time { operand, test } => {
                let at = match operand {
                    TimeOperand::First(selector) => self.matching(selector, 0).map(|f| f.ts).next(),
                    TimeOperand::Last(selector) => self.matching_rev(selector).map(|f| f.ts),
                    // Decided on the summary above.
                    TimeOperand::FirstSeen | TimeOperand::LastSeen => None,
                };
                at.is_some_and(|at| time_test(at, test, t))
            }
            Condition::Tagged(name) => {
                self.ev.state.audience.tag_id(name).is_some_and(|tag| self.profile().tags.binary_search(&tag).is_ok())
            }
            Condition::Has(kind) => self.profile().identities.iter().any(|l| l.identity.kind == *kind),
            Condition::And(_) | Condition::Or(_) | Condition::Not(_) => holds(atom, &|a| self.atom(a)),
        }
    }

    fn has_account(&self, value: &Scalar) -> bool {
        let Scalar::Account { channel, name } = value else { return false };
        let Some(account) = self.ev.state.accounts.get(name) else { return false };
        self.facts().iter().any(|f| f.channel == *channel && f.account == account)
    }

    /// The value of an operand that needs more than the summary row.
    fn with_value(&self, operand: &Operand, f: &dyn Fn(Val<'_>) -> bool) -> bool {
        let (rules, t, s) = (&self.ev.state.rules, self.ev.t, self.summary);
        let value = match operand {
            Operand::Field(ProfileField::Rfm) => {
                s.rfm_input(self.facts(), t, rules).map_or(Val::Missing, |input| Val::Rfm(self.ev.means.group(&input)))
            }
            Operand::Field(ProfileField::Orders365d) => {
                Val::Number(f64::from(s.rfm_input(self.facts(), t, rules).map_or(0, |r| r.frequency)))
            }
            Operand::Trait(path) => lookup(self.profile().traits.as_ref().and_then(|t| t.get(&path[0])), &path[1..]),
            Operand::Count(agg) => {
                let start = self.window_start(agg.window);
                Val::Number(self.matching(&agg.events, start).count() as f64)
            }
            Operand::Sum(agg) => {
                let start = self.window_start(agg.window);
                Val::Money(Fen(self.matching(&agg.events, start).map(|f| f.amount.0).sum()))
            }
            // Summary fields were decided by `on_summary`; event operands only occur in filters.
            Operand::Field(_)
            | Operand::EventChannel
            | Operand::EventAccount
            | Operand::EventAmount
            | Operand::Property(_) => Val::Missing,
        };
        f(value)
    }

    /// The index of the first fact inside the window.
    fn window_start(&self, window: Option<Duration>) -> usize {
        match window {
            None => 0,
            Some(d) => suffix_start(self.facts(), Millis(self.ev.t.0 - d.millis())),
        }
    }

    fn matching<'a>(
        &'a self,
        selector: &'a EventSelector,
        start: usize,
    ) -> impl Iterator<Item = &'s Fact> + use<'a, 'e, 's> {
        let code = self.ev.state.type_code_of_kind(&selector.event_type);
        self.facts()[start..].iter().filter(move |f| Some(f.code) == code && self.passes(selector, f))
    }

    fn matching_rev(&self, selector: &EventSelector) -> Option<&Fact> {
        let code = self.ev.state.type_code_of_kind(&selector.event_type)?;
        self.facts().iter().rev().find(|f| f.code == code && self.passes(selector, f))
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

/// Decides a condition from the profile's summary row alone (`s`, the fold at `t`), or `None`
/// when it reads more (facts, tags, identities, traits). What every scan runs first, so it is
/// plain matching: no closures, no allocation.
fn on_summary(condition: &Condition, s: &ProfileSummary, t: Millis, rules: &ScoringRules) -> Option<bool> {
    let decided = match condition {
        Condition::And(items) => {
            for item in items {
                if !on_summary(item, s, t, rules)? {
                    return Some(false);
                }
            }
            true
        }
        Condition::Or(items) => {
            for item in items {
                if on_summary(item, s, t, rules)? {
                    return Some(true);
                }
            }
            false
        }
        Condition::Not(inner) => !on_summary(inner, s, t, rules)?,
        Condition::Compare { operand: Operand::Field(ProfileField::Channel), op, value } => {
            let member = matches!(value, Scalar::Channel(c) if s.has_channel(*c));
            member != (*op == CmpOp::Ne)
        }
        Condition::In { operand: Operand::Field(ProfileField::Channel), values } => {
            values.iter().any(|v| matches!(v, Scalar::Channel(c) if s.has_channel(*c)))
        }
        Condition::Compare { operand: Operand::Field(ProfileField::Tier), op, value: Scalar::Tier(tier) }
            if !matches!(op, CmpOp::Eq | CmpOp::Ne) =>
        {
            tier_order(s, *op, *tier, t, rules)
        }
        Condition::Compare { operand: Operand::Field(field), op, value } => {
            compare(&summary_value(*field, s, t, rules)?, *op, value)
        }
        Condition::In { operand: Operand::Field(field), values } => {
            let v = summary_value(*field, s, t, rules)?;
            values.iter().any(|value| compare(&v, CmpOp::Eq, value))
        }
        Condition::Time { operand: operand @ (TimeOperand::FirstSeen | TimeOperand::LastSeen), test } => {
            let at = if *operand == TimeOperand::FirstSeen { s.first_ts } else { s.last_ts };
            s.event_count > 0 && time_test(at, test, t)
        }
        _ => return None,
    };
    Some(decided)
}

/// A profile field's value from the summary row, or `None` for the fields that need the facts
/// (RFM reads the orders in its window; `account` the events) or are not values (times).
fn summary_value(field: ProfileField, s: &ProfileSummary, t: Millis, rules: &ScoringRules) -> Option<Val<'static>> {
    Some(match field {
        ProfileField::Tier => Val::Tier(s.tier_at(t, rules)),
        ProfileField::PoolStage => Val::PoolStage(s.pool_stage_at(t, rules)),
        ProfileField::Ownership => Val::Ownership(s.ownership_at(t, rules)),
        ProfileField::Reachable => Val::Bool(s.reachable),
        ProfileField::Affinity => Val::Number(s.affinity_at(t, rules)),
        ProfileField::NetRevenue => Val::Money(s.net_revenue),
        ProfileField::PaidOrders => Val::Number(f64::from(s.paid_orders)),
        ProfileField::RefundedOrders => Val::Number(f64::from(s.refunded_orders)),
        ProfileField::NetPaidOrders => Val::Number(f64::from(s.net_paid_orders())),
        ProfileField::EventCount => Val::Number(f64::from(s.event_count)),
        ProfileField::Rfm
        | ProfileField::Orders365d
        | ProfileField::Account
        | ProfileField::Channel
        | ProfileField::FirstSeen
        | ProfileField::LastSeen => return None,
    })
}

/// `tier < | <= | > | >= tier`, through [`ProfileSummary::tier_at_least`] (two integer
/// comparisons for most profiles).
fn tier_order(s: &ProfileSummary, op: CmpOp, tier: FanTier, t: Millis, rules: &ScoringRules) -> bool {
    let at_least = |tier: FanTier| s.tier_at_least(tier, t, rules);
    let above = FanTier::ALL.iter().copied().find(|higher| *higher > tier);
    match op {
        CmpOp::Ge => at_least(tier),
        CmpOp::Lt => !at_least(tier),
        CmpOp::Gt => above.is_some_and(at_least),
        CmpOp::Le => above.is_none_or(|higher| !at_least(higher)),
        CmpOp::Eq | CmpOp::Ne => compare(&Val::Tier(s.tier_at(t, rules)), op, &Scalar::Tier(tier)),
    }
}

fn time_test(at: Millis, test: &TimeTest, t: Millis) -> bool {
    match *test {
        TimeTest::Before(point) => at < point.resolve(t),
        TimeTest::After(point) => at > point.resolve(t),
        TimeTest::Within(d) => Millis(t.0 - d.millis()) <= at && at <= t,
    }
}

/// The index of the first of the sorted `facts` at or after `from`. Windows are recent, so the
/// answer is usually near the end, and the list is rarely in cache: stepping back from the end
/// reads consecutive cache lines (which the prefetcher streams in), where a binary search would
/// miss on every probe. Past `LINEAR` facts, a binary search finishes the job.
fn suffix_start(facts: &[Fact], from: Millis) -> usize {
    const LINEAR: usize = 32;
    let stop = facts.len().saturating_sub(LINEAR);
    for i in (stop..facts.len()).rev() {
        if facts[i].ts < from {
            return i + 1;
        }
    }
    facts[..stop].partition_point(|f| f.ts < from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_start_equals_a_binary_search() {
        let fact = |ts: i64| Fact {
            ts: Millis(ts),
            seq: ts,
            amount: Fen(0),
            code: 0,
            channel: siyu_model::Channel::Web,
            account: 0,
            group: 0,
            source: 0,
        };
        for len in 0..80 {
            // Times 0, 2, 4, … with a run of equal times in the middle.
            let facts: Vec<Fact> = (0..len).map(|i| fact(if (10..15).contains(&i) { 20 } else { 2 * i })).collect();
            for from in -1..(2 * len + 2) {
                let expected = facts.partition_point(|f| f.ts < Millis(from));
                assert_eq!(suffix_start(&facts, Millis(from)), expected, "len {len}, from {from}");
            }
        }
    }
}
