//! The fast condition evaluator over the in-memory state, for one profile ([`Evaluator::matches`],
//! what keeping memberships current needs) or for every profile at once ([`Evaluator::select`],
//! what saving, previewing and the time sweep need).
//!
//! Profile fields are read from the dense [`ScanRow`] and [`ProfileSummary`] rows (40 and 112
//! bytes a profile, scanned in id order) rather than from the profiles themselves; event
//! aggregates from the profile's facts, which are sorted by time, so a window is a binary search
//! and a suffix scan. A full
//! evaluation works clause by clause on sets of ids: an `and` evaluates each clause only over
//! the profiles the clauses before it kept, an `or` only over those not yet in, and clauses are
//! put cheapest first ([`cheapest_first`]), so the fact scans run over few profiles. Comparisons
//! are `condition::naive`'s own, so the evaluators cannot disagree on meaning (the property
//! tests in tests/segments.rs hold both paths to the reference).
//!
//! Facts keep no properties: `where properties.…` filters read the values the segments keep for
//! the event types such filters name (see [`super::Segments::properties`]). A fact keeps no
//! "no amount" either: an amount of 0 counts as missing inside a `where` filter.

use std::cell::OnceCell;

use siyu_model::condition::ast::{CmpOp, Duration};
use siyu_model::condition::naive::{compare, contains, holds, lookup, Val};
use siyu_model::condition::{
    Aggregate, Condition, EventSelector, Operand, ProfileField, Scalar, TimeOperand, TimeTest,
};
use siyu_model::event::EventKind;
use siyu_model::score::RfmMeans;
use siyu_model::{
    EventType, Fact, FanTier, Fen, Millis, ProfileFacts, ProfileId, ProfileSummary, ScanRow, ScoringRules,
};

use crate::members::Members;
use crate::state::{AsOf, Profile, TenantState};

/// Evaluates conditions against the profiles of one state at one time.
pub struct Evaluator<'s> {
    state: &'s TenantState,
    t: Millis,
    means: &'s RfmMeans,
    /// As of a time the caller named: profiles without an event by then match nothing.
    explicit: bool,
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
    /// Evaluates at `t` as "now" (memberships kept current, sweeps).
    pub fn new(state: &'s TenantState, t: Millis, means: &'s RfmMeans) -> Evaluator<'s> {
        Evaluator { state, t, means, explicit: false }
    }

    /// Evaluates at `when` (see [`AsOf`] for who exists then).
    pub fn as_of(state: &'s TenantState, when: AsOf, means: &'s RfmMeans) -> Evaluator<'s> {
        Evaluator { state, t: when.t, means, explicit: when.explicit }
    }

    /// Does the live profile `id` satisfy `condition`? Merged-away and unknown ids never do.
    pub fn matches(&self, condition: &Condition, id: ProfileId) -> bool {
        self.state.live().contains(id) && self.decide(id, &|cx| cx.holds(condition))
    }

    /// Every live profile that satisfies `condition`.
    ///
    /// One pass over the rows decides what they can: for an `and`, its clauses on the tier,
    /// reachability and channels from the 40-byte scan rows ([`ScanRow`]), the others from the
    /// summary rows, read only for the profiles the scan row did not reject (clauses are
    /// cheapest first). A second pass takes the profiles still undecided to their facts, tags
    /// or traits, 64 at a time, their memory fetched together ([`Members::filter_warmed`])
    /// rather than one cache miss after another.
    pub fn select(&self, condition: &Condition) -> Members {
        self.select_in(condition, self.state.live())
    }

    /// The live profiles of `candidates` that satisfy `condition` (a chunk of a full
    /// evaluation done in parts).
    pub fn select_in(&self, condition: &Condition, candidates: &Members) -> Members {
        let items = match condition {
            Condition::And(items) => &items[..],
            other => std::slice::from_ref(other),
        };
        let (state, t, rules) = (self.state, self.t, &self.state.rules);
        let mut scan_tests = Vec::new();
        let mut row_tests: Vec<RowTest<'_>> = Vec::new();
        for item in items {
            match ScanTest::of(item) {
                Some(test) => scan_tests.push(test),
                None => row_tests.push(Box::new(move |s| self.on_summary(item, s))),
            }
        }
        // The summary rows' answer for a profile the scan row kept: None when it must be read.
        let on_summary = |id: ProfileId| -> Option<bool> {
            let summary = state.profile_summary(id)?;
            let mut decided = true;
            for test in &row_tests {
                match test(summary) {
                    Some(false) => return Some(false),
                    Some(true) => {}
                    None => decided = false,
                }
            }
            decided.then_some(true)
        };
        let rows = state.scan_rows();
        let mut undecided = Members::default();
        let mut kept = candidates.and(state.live()).filter_words(|w, word| {
            let base = w * 64;
            let chunk = &rows[base.min(rows.len())..(base + 64).min(rows.len())];
            // Facts after `t`: an evaluation in the past, decided on the profile.
            let mut late = word & mask(chunk, |row| row.last_ts > t);
            let mut pass = word & !late;
            for test in &scan_tests {
                if pass == 0 {
                    break;
                }
                pass &= test.mask(chunk, t, rules);
            }
            if !row_tests.is_empty() {
                let mut bits = pass;
                while bits != 0 {
                    let bit = bits.trailing_zeros();
                    bits &= bits - 1;
                    match on_summary((base + bit as usize) as ProfileId) {
                        Some(true) => {}
                        Some(false) => pass &= !(1 << bit),
                        None => {
                            pass &= !(1 << bit);
                            late |= 1 << bit;
                        }
                    }
                }
            }
            while late != 0 {
                undecided.set((base + late.trailing_zeros() as usize) as ProfileId, true);
                late &= late - 1;
            }
            pass
        });
        if !undecided.is_empty() {
            let all = |id: ProfileId| self.decide(id, &|cx| items.iter().all(|c| cx.holds(c)));
            kept.union_with(&undecided.filter_warmed(|id| self.warm(id), all));
        }
        kept
    }

    /// Reads the profile's most recent facts (where windows start looking), to bring them into
    /// cache ahead of its evaluation.
    fn warm(&self, id: ProfileId) -> u64 {
        let facts = self.state.profile(id).map_or(&[][..], |p| &p.facts[..]);
        facts.iter().rev().step_by(2).take(3).map(|f| f.ts.0 as u64).fold(0, u64::wrapping_add)
    }

    /// Does the live profile `id` satisfy each of `conditions`? One answer per condition, in
    /// order, with the profile read once: what keeping many segments current needs.
    pub fn matches_each<'c>(
        &self,
        id: ProfileId,
        conditions: impl Iterator<Item = &'c Condition>,
        mut answer: impl FnMut(bool),
    ) {
        let live = self.state.live().contains(id);
        let mut conditions = conditions.peekable();
        if live && conditions.peek().is_some() {
            let mut each = |cx: &Cx<'_, 's>| conditions.by_ref().for_each(|c| answer(cx.holds(c)));
            if self.decide_with(id, &mut each) {
                return;
            }
        }
        conditions.for_each(|_| answer(false));
    }

    /// Decides something about the (live) profile `id` at `t`.
    fn decide(&self, id: ProfileId, f: &dyn Fn(&Cx<'_, 's>) -> bool) -> bool {
        let mut answer = false;
        self.decide_with(id, &mut |cx| answer = f(cx));
        answer
    }

    /// Calls `f` with the profile `id` at `t`; false (and `f` not called) for an unknown id or
    /// one with no event at or before `t`.
    fn decide_with(&self, id: ProfileId, f: &mut dyn FnMut(&Cx<'_, 's>)) -> bool {
        let state = self.state;
        let Some(summary) = state.profile_summary(id) else { return false };
        if summary.last_ts <= self.t {
            f(&Cx { ev: self, id, summary, facts: OnceCell::new() });
            return true;
        }
        // Facts later than `t` exist: fold the prefix (an "as of" evaluation in the past).
        let Some(profile) = state.profile(id) else { return false };
        let Some(past) = profile.facts_at(AsOf { t: self.t, explicit: self.explicit }) else {
            return false; // no event by then: the profile did not exist yet
        };
        let summary = ProfileFacts::fold(past, self.t, &state.rules).summary(&state.rules);
        f(&Cx { ev: self, id, summary: &summary, facts: OnceCell::from(past) });
        true
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

/// A clause decided on a summary row, or `None` when it needs more.
type RowTest<'a> = Box<dyn Fn(&ProfileSummary) -> Option<bool> + 'a>;

/// A clause decided on a [`ScanRow`] alone: the commonest ones, compiled once per scan so that
/// matching the condition is not repeated for every profile.
#[derive(Debug, Clone, Copy)]
enum ScanTest {
    Reachable(bool),
    /// The tier is at least `lo` and (with `hi`) below `hi`, or (`negate`) not.
    Tier {
        lo: FanTier,
        hi: Option<FanTier>,
        negate: bool,
    },
    /// The profile has events on one of these channels, or (`negate`) on none.
    Channels {
        mask: u16,
        negate: bool,
    },
    Constant(bool),
}

impl ScanTest {
    fn of(condition: &Condition) -> Option<ScanTest> {
        Some(match condition {
            Condition::Not(inner) => ScanTest::of(inner)?.negated(),
            Condition::Compare { operand: Operand::Field(ProfileField::Reachable), op, value: Scalar::Bool(b) }
                if matches!(op, CmpOp::Eq | CmpOp::Ne) =>
            {
                ScanTest::Reachable(*b != (*op == CmpOp::Ne))
            }
            Condition::Compare { operand: Operand::Field(ProfileField::Tier), op, value: Scalar::Tier(tier) } => {
                let above = FanTier::ALL.iter().copied().find(|higher| higher > tier);
                let at_least = |lo: FanTier, negate: bool| ScanTest::Tier { lo, hi: None, negate };
                match (op, above) {
                    (CmpOp::Ge, _) => at_least(*tier, false),
                    (CmpOp::Lt, _) => at_least(*tier, true),
                    (CmpOp::Gt, Some(higher)) => at_least(higher, false),
                    (CmpOp::Gt, None) => ScanTest::Constant(false),
                    (CmpOp::Le, Some(higher)) => at_least(higher, true),
                    (CmpOp::Le, None) => ScanTest::Constant(true),
                    (CmpOp::Eq, hi) => ScanTest::Tier { lo: *tier, hi, negate: false },
                    (CmpOp::Ne, hi) => ScanTest::Tier { lo: *tier, hi, negate: true },
                }
            }
            Condition::Compare { operand: Operand::Field(ProfileField::Channel), op, value: Scalar::Channel(c) }
                if matches!(op, CmpOp::Eq | CmpOp::Ne) =>
            {
                ScanTest::Channels { mask: 1 << c.code(), negate: *op == CmpOp::Ne }
            }
            Condition::In { operand: Operand::Field(ProfileField::Channel), values } => {
                let mask = values.iter().fold(0, |mask, v| match v {
                    Scalar::Channel(c) => mask | 1 << c.code(),
                    _ => mask,
                });
                ScanTest::Channels { mask, negate: false }
            }
            _ => return None,
        })
    }

    fn negated(self) -> ScanTest {
        match self {
            ScanTest::Reachable(b) => ScanTest::Reachable(!b),
            ScanTest::Tier { lo, hi, negate } => ScanTest::Tier { lo, hi, negate: !negate },
            ScanTest::Channels { mask, negate } => ScanTest::Channels { mask, negate: !negate },
            ScanTest::Constant(b) => ScanTest::Constant(!b),
        }
    }

    fn holds(&self, row: &ScanRow, t: Millis, rules: &ScoringRules) -> bool {
        match *self {
            ScanTest::Reachable(b) => row.reachable == b,
            ScanTest::Tier { lo, hi, negate } => {
                let within = row.tier_at_least(lo, t, rules) & !hi.is_some_and(|hi| row.tier_at_least(hi, t, rules));
                within != negate
            }
            ScanTest::Channels { mask, negate } => (row.channels & mask != 0) != negate,
            ScanTest::Constant(b) => b,
        }
    }

    /// [`Self::holds`] for up to 64 rows, as bits: the test is matched once, then a tight loop.
    fn mask(&self, rows: &[ScanRow], t: Millis, rules: &ScoringRules) -> u64 {
        match *self {
            ScanTest::Reachable(b) => mask(rows, |row| row.reachable == b),
            ScanTest::Tier { lo, hi: None, negate } => mask(rows, |row| row.tier_at_least(lo, t, rules) != negate),
            ScanTest::Channels { mask: channels, negate } => mask(rows, |row| (row.channels & channels != 0) != negate),
            ScanTest::Constant(b) => mask(rows, |_| b),
            ScanTest::Tier { .. } => mask(rows, |row| self.holds(row, t, rules)),
        }
    }
}

/// Bit `i` set when `test(rows[i])` (for up to 64 rows).
#[inline(always)]
fn mask(rows: &[ScanRow], test: impl Fn(&ScanRow) -> bool) -> u64 {
    debug_assert!(rows.len() <= 64);
    rows.iter().enumerate().fold(0, |bits, (i, row)| bits | u64::from(test(row)) << i)
}

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
        let t = self.ev.t;
        if let Some(decided) = self.ev.on_summary(atom, self.summary) {
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
            Condition::Compare {
                operand: Operand::Count(agg),
                op: op @ (CmpOp::Ge | CmpOp::Gt),
                value: Scalar::Number(n),
            } if n.is_finite() => {
                // "At least k": stop counting at the k-th matching event.
                let k = if *op == CmpOp::Ge { n.ceil() } else { n.floor() + 1.0 };
                if k <= 0.0 {
                    return true;
                }
                let start = self.window_start(agg.window);
                self.matching(&agg.events, start).nth(k as usize - 1).is_some()
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
                self.ev.state.segments.tag_id(name).is_some_and(|tag| self.profile().tags.binary_search(&tag).is_ok())
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
            Operand::Field(ProfileField::Rfm) => s
                .rfm_input(|| self.facts(), t, rules)
                .map_or(Val::Missing, |input| Val::Rfm(self.ev.means.group(&input))),
            Operand::Field(ProfileField::Orders365d) => {
                Val::Number(f64::from(s.rfm_input(|| self.facts(), t, rules).map_or(0, |r| r.frequency)))
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
        let properties = state.segments.properties(fact.seq);
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

impl Evaluator<'_> {
    /// Decides a condition from the profile's summary row alone (`s`, the fold at `t`), or
    /// `None` when it needs more (facts, tags, identities, traits). What every scan runs
    /// first, so it is plain matching: no closures, no allocation.
    fn on_summary(&self, condition: &Condition, s: &ProfileSummary) -> Option<bool> {
        let (t, rules) = (self.t, &self.state.rules);
        if let Some(test) = ScanTest::of(condition) {
            return Some(test.holds(&s.scan_row(), t, rules));
        }
        let decided = match condition {
            Condition::And(items) => return self.junction_on_summary(items, s, false),
            Condition::Or(items) => return self.junction_on_summary(items, s, true),
            Condition::Not(inner) => !self.on_summary(inner, s)?,
            Condition::Compare { operand: Operand::Field(ProfileField::Rfm | ProfileField::Orders365d), .. }
            | Condition::In { operand: Operand::Field(ProfileField::Rfm | ProfileField::Orders365d), .. } => {
                return self.rfm_on_summary(condition, s);
            }
            Condition::Compare { operand: Operand::Field(field), op, value } => {
                compare(&summary_value(*field, s, t, rules)?, *op, value)
            }
            Condition::In { operand: Operand::Field(field), values } => {
                let v = summary_value(*field, s, t, rules)?;
                values.iter().any(|value| compare(&v, CmpOp::Eq, value))
            }
            Condition::Compare { operand: operand @ (Operand::Count(agg) | Operand::Sum(agg)), op, value } => {
                compare(&self.aggregate_on_summary(operand, agg, s)?, *op, value)
            }
            Condition::In { operand: operand @ (Operand::Count(agg) | Operand::Sum(agg)), values } => {
                let v = self.aggregate_on_summary(operand, agg, s)?;
                values.iter().any(|value| compare(&v, CmpOp::Eq, value))
            }
            Condition::Time { operand: operand @ (TimeOperand::FirstSeen | TimeOperand::LastSeen), test } => {
                let at = if *operand == TimeOperand::FirstSeen { s.first_ts } else { s.last_ts };
                s.event_count > 0 && time_test(at, test, t)
            }
            // No event of the type: no first or last one.
            Condition::Time { operand: TimeOperand::First(selector) | TimeOperand::Last(selector), .. }
                if !self.may_have(s, selector) =>
            {
                false
            }
            _ => return None,
        };
        Some(decided)
    }

    /// `and` (`stop` false) or `or` (`stop` true) of `items` on the row: `stop` as soon as one
    /// item is `stop`, the other value when all are decided and none is, else undecided.
    fn junction_on_summary(&self, items: &[Condition], s: &ProfileSummary, stop: bool) -> Option<bool> {
        let mut undecided = false;
        for item in items {
            match self.on_summary(item, s) {
                Some(value) if value == stop => return Some(stop),
                Some(_) => {}
                None => undecided = true,
            }
        }
        (!undecided).then_some(!stop)
    }

    /// Could the profile have an event of the selector's type?
    fn may_have(&self, s: &ProfileSummary, selector: &EventSelector) -> bool {
        self.state.type_code_of_kind(&selector.event_type).is_some_and(|code| s.may_have_type(code))
    }

    /// A count or sum the summary knows: 0 without an event of the type; the order totals for
    /// orders without a filter when the window holds every order.
    fn aggregate_on_summary(&self, operand: &Operand, agg: &Aggregate, s: &ProfileSummary) -> Option<Val<'static>> {
        let count = matches!(operand, Operand::Count(_));
        if !self.may_have(s, &agg.events) {
            return Some(if count { Val::Number(0.0) } else { Val::Money(Fen(0)) });
        }
        let covered = agg.window.is_none_or(|d| s.orders_since(Millis(self.t.0 - d.millis())));
        if agg.events.filter.is_some() || !covered {
            return None;
        }
        match (&agg.events.event_type, count) {
            (EventKind::Known(EventType::OrderPaid), true) => Some(Val::Number(f64::from(s.paid_orders))),
            (EventKind::Known(EventType::OrderPaid), false) => Some(Val::Money(s.paid)),
            (EventKind::Known(EventType::OrderRefunded), true) => Some(Val::Number(f64::from(s.refunded_orders))),
            (EventKind::Known(EventType::OrderRefunded), false) => Some(Val::Money(Fen(s.paid.0 - s.net_revenue.0))),
            _ => None,
        }
    }

    /// RFM fields when the summary holds them: for non-buyers, and for buyers whose orders all
    /// fall in the RFM window (see [`ProfileSummary::rfm_input`]).
    fn rfm_on_summary(&self, condition: &Condition, s: &ProfileSummary) -> Option<bool> {
        let (t, rules) = (self.t, &self.state.rules);
        if s.rfm_needs_facts(t, rules) {
            return None;
        }
        let input = s.rfm_input(|| &[], t, rules);
        let value = |field: &ProfileField| match field {
            ProfileField::Rfm => input.map_or(Val::Missing, |input| Val::Rfm(self.means.group(&input))),
            _ => Val::Number(f64::from(input.map_or(0, |r| r.frequency))),
        };
        Some(match condition {
            Condition::Compare { operand: Operand::Field(field), op, value: scalar } => {
                compare(&value(field), *op, scalar)
            }
            Condition::In { operand: Operand::Field(field), values } => {
                let v = value(field);
                values.iter().any(|scalar| compare(&v, CmpOp::Eq, scalar))
            }
            _ => return None,
        })
    }
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
            purpose: 0,
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
