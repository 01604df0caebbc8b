//! The buyers' RFM means at any time `t`, without a scan of every profile.
//!
//! RFM grades each buyer against the means over all buyers at `t` (SPEC §4): how many profiles
//! paid inside the window `[t − W, t]`, their mean days since the last such order, their mean
//! number of such orders and their mean money (paid minus refunded inside the window). Each of
//! those sums is, as a function of `t`, a sum over profiles of step functions whose steps sit at
//! order times and order times + W. So every profile contributes a few *deltas* (a time and what
//! each sum gains from then on), all profiles' deltas are kept bucketed by day, and a sum at `t`
//! is the deltas up to `t`: the day totals before `t`'s day plus the entries of that day up to
//! `t`. Exact for any `t`, past or present, and the same integers the per-profile inputs give
//! (`score::rfm_input`), which the tests hold it against.
//!
//! The index is derived state: it follows the profiles' order facts. Applying an event only
//! notes which profile's orders changed ([`RfmIndex::mark`]); the deltas are brought up to date
//! when means are asked for ([`RfmIndex::flush`]), so a replay or an import pays about once per
//! buyer; marks past `PENDING_MAX` are flushed on the spot, so they never pile up unread.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use siyu_model::score::RfmMeans;
use siyu_model::time::DAY;
use siyu_model::{EventType, Fact, Millis, ProfileId};

use crate::profiles::{Change, Profiles};
use crate::subscriber::Subscriber;

/// One order of a profile, as its contribution was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Order {
    ts: i64,
    amount: i64,
    paid: bool,
}

/// What the four sums gain from a time on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Delta {
    buyers: i64,
    /// Sum of each buyer's last paid time in the window, in ms.
    last_paid: i128,
    orders: i64,
    /// Fen.
    money: i64,
}

impl Delta {
    fn add(&mut self, other: &Delta, sign: i64) {
        self.buyers += sign * other.buyers;
        self.last_paid += i128::from(sign) * other.last_paid;
        self.orders += sign * other.orders;
        self.money += sign * other.money;
    }

    fn is_zero(&self) -> bool {
        *self == Delta::default()
    }
}

/// The deltas of one day: their total, and each by its exact time.
#[derive(Debug, Default)]
struct Day {
    total: Delta,
    at: BTreeMap<i64, Delta>,
}

#[derive(Debug)]
pub(crate) struct RfmIndex {
    /// The RFM window W, in ms.
    window: i64,
    /// The orders each profile contributes now, sorted by time.
    chains: FxHashMap<ProfileId, Box<[Order]>>,
    days: BTreeMap<i64, Day>,
    /// Profiles whose orders may have changed since the last flush.
    pending: Vec<ProfileId>,
}

impl RfmIndex {
    pub(crate) fn new(window_days: f64) -> RfmIndex {
        RfmIndex {
            window: siyu_model::score::window_ms(window_days),
            chains: FxHashMap::default(),
            days: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    /// Notes that the orders of `profile` may have changed (an order event, a merge).
    pub(crate) fn mark(&mut self, profile: ProfileId) {
        self.pending.push(profile);
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Brings the deltas of every marked profile up to date; `facts` gives a profile's sorted
    /// facts, or `None` for one that no longer exists (merged away).
    pub(crate) fn flush<'f>(&mut self, facts: impl Fn(ProfileId) -> Option<&'f [Fact]>) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_unstable();
        pending.dedup();
        let (paid, refunded) = (EventType::OrderPaid.code(), EventType::OrderRefunded.code());
        for id in pending {
            let orders: Box<[Order]> = facts(id)
                .unwrap_or(&[])
                .iter()
                .filter(|f| f.code == paid || f.code == refunded)
                .map(|f| Order { ts: f.ts.0, amount: f.amount.0, paid: f.code == paid })
                .collect();
            let old = self.chains.remove(&id).unwrap_or_default();
            if *old != *orders {
                self.contribute(&old, -1);
                self.contribute(&orders, 1);
            }
            if !orders.is_empty() {
                self.chains.insert(id, orders);
            }
        }
    }

    fn contribute(&mut self, orders: &[Order], sign: i64) {
        let mut deltas = Vec::new();
        deltas_of(orders, self.window, &mut |at, delta| deltas.push((at, delta)));
        for (at, delta) in deltas {
            let day_key = at.div_euclid(DAY);
            let day = self.days.entry(day_key).or_default();
            day.total.add(&delta, sign);
            let entry = day.at.entry(at).or_default();
            entry.add(&delta, sign);
            if entry.is_zero() {
                day.at.remove(&at);
            }
            if day.at.is_empty() {
                self.days.remove(&day_key);
            }
        }
    }

    /// The buyers' means at `t`. Marked profiles must have been flushed.
    pub(crate) fn means_at(&self, t: Millis) -> RfmMeans {
        debug_assert!(self.pending.is_empty(), "flush before reading means");
        let today = t.0.div_euclid(DAY);
        let mut sum = Delta::default();
        for day in self.days.range(..today).map(|(_, day)| day) {
            sum.add(&day.total, 1);
        }
        if let Some(day) = self.days.get(&today) {
            for delta in day.at.range(..=t.0).map(|(_, d)| d) {
                sum.add(delta, 1);
            }
        }
        if sum.buyers <= 0 {
            return RfmMeans::default();
        }
        let buyers = sum.buyers as f64;
        let recency_ms = (i128::from(sum.buyers) * i128::from(t.0) - sum.last_paid) as f64;
        RfmMeans {
            buyers: sum.buyers as u64,
            recency_days: recency_ms / buyers / DAY as f64,
            frequency: sum.orders as f64 / buyers,
            monetary_fen: sum.money as f64 / buyers,
        }
    }
}

/// Marks kept before they are brought up to date on the spot.
const PENDING_MAX: usize = 1 << 16;

impl Subscriber for RfmIndex {
    /// An order, or a merge of profiles with orders, changes what the profiles contribute.
    fn on_change(&mut self, profiles: &Profiles, change: &Change<'_>) {
        let is_order = change.code == EventType::OrderPaid.code() || change.code == EventType::OrderRefunded.code();
        let has_orders =
            || profiles.profile_summary(change.profile).is_some_and(|s| s.paid_orders + s.refunded_orders > 0);
        if is_order || (!change.absorbed.is_empty() && has_orders()) {
            self.mark(change.profile);
            for merged in &change.absorbed {
                self.mark(*merged);
            }
            // Bounded: a tenant nobody reads means of (an import) does not pile marks up.
            if self.pending.len() >= PENDING_MAX {
                self.flush(|id| profiles.live_facts(id));
            }
        }
    }
}

/// The deltas one profile's orders (sorted by time) contribute, for a window of `window` ms. An
/// order at `ts` is inside the window at `t` exactly when `ts <= t <= ts + window`, so a quantity
/// that holds over `[a, b]` is `+x` at `a` and `−x` at `b + 1`.
fn deltas_of(orders: &[Order], window: i64, out: &mut impl FnMut(i64, Delta)) {
    // Paid orders count and bring money while inside the window.
    for order in orders.iter().filter(|o| o.paid) {
        out(order.ts, Delta { orders: 1, money: order.amount, ..Delta::default() });
        out(order.ts + window + 1, Delta { orders: -1, money: -order.amount, ..Delta::default() });
    }
    // The profile is a buyer over the union of its paid orders' windows; inside each stretch of
    // that union its last paid time steps up at each paid order.
    let mut stretches: Vec<(i64, i64)> = Vec::new();
    let mut current: Option<(i64, i64, i64)> = None; // (start, end, last paid)
    for order in orders.iter().filter(|o| o.paid) {
        match current {
            Some((start, end, last)) if order.ts <= end + 1 => {
                out(order.ts, Delta { last_paid: i128::from(order.ts - last), ..Delta::default() });
                current = Some((start, order.ts + window, order.ts));
            }
            _ => {
                if let Some((start, end, last)) = current {
                    out(end + 1, Delta { buyers: -1, last_paid: -i128::from(last), ..Delta::default() });
                    stretches.push((start, end));
                }
                out(order.ts, Delta { buyers: 1, last_paid: i128::from(order.ts), ..Delta::default() });
                current = Some((order.ts, order.ts + window, order.ts));
            }
        }
    }
    if let Some((start, end, last)) = current {
        out(end + 1, Delta { buyers: -1, last_paid: -i128::from(last), ..Delta::default() });
        stretches.push((start, end));
    }
    // A refund takes its money off while inside the window, and only while the profile is a buyer.
    for refund in orders.iter().filter(|o| !o.paid) {
        for (start, end) in &stretches {
            let (from, to) = (refund.ts.max(*start), (refund.ts + window).min(*end));
            if from <= to {
                out(from, Delta { money: -refund.amount, ..Delta::default() });
                out(to + 1, Delta { money: refund.amount, ..Delta::default() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siyu_model::score::{rfm_input, ScoreConfig, ScoringRules};
    use siyu_model::{Channel, Fen};

    fn fact(day: f64, paid: bool, fen: i64, seq: i64) -> Fact {
        let code = if paid { EventType::OrderPaid } else { EventType::OrderRefunded };
        Fact {
            ts: Millis((day * DAY as f64) as i64),
            seq,
            amount: Fen(fen),
            code: code.code(),
            channel: Channel::Douyin,
            purpose: 0,
            account: 0,
            group: 0,
            source: 0,
        }
    }

    /// The index's means equal those of the per-profile RFM inputs at many times, for histories
    /// with overlapping windows, gaps longer than the window, refunds inside and outside buyer
    /// stretches, and a profile whose orders change (and one that goes away).
    #[test]
    fn means_equal_the_per_profile_inputs_at_every_time() {
        let config = ScoreConfig { rfm_window_days: 30.0, ..ScoreConfig::default() };
        let rules = ScoringRules::compile(&config, |_| None);
        let mut people: Vec<Vec<Fact>> = vec![
            vec![fact(1.0, true, 100, 1), fact(10.0, true, 300, 2), fact(12.0, false, 50, 3)],
            vec![fact(5.0, false, 70, 4), fact(20.0, true, 900, 5), fact(75.0, true, 10, 6), fact(80.0, false, 10, 7)],
            vec![fact(31.0, true, 1, 8), fact(31.0, true, 2, 9), fact(61.0, true, 4, 10)],
            vec![fact(40.0, false, 5, 11)],
        ];
        let mut index = RfmIndex::new(config.rfm_window_days);
        let check = |index: &mut RfmIndex, people: &[Vec<Fact>]| {
            for id in 1..=4 {
                index.mark(id);
            }
            index.flush(|id| people.get(id as usize - 1).map(|f| &f[..]));
            for step in -10..=260 {
                let t = Millis(step * DAY / 2 + 7);
                let inputs: Vec<_> = people.iter().filter_map(|f| rfm_input(f, t, &rules)).collect();
                let expected = RfmMeans::from_inputs(&inputs);
                let actual = index.means_at(t);
                assert_eq!(actual.buyers, expected.buyers, "buyers at {t:?}");
                assert!((actual.recency_days - expected.recency_days).abs() < 1e-9, "recency at {t:?}");
                assert!((actual.frequency - expected.frequency).abs() < 1e-12, "frequency at {t:?}");
                assert!((actual.monetary_fen - expected.monetary_fen).abs() < 1e-9, "money at {t:?}");
            }
        };
        check(&mut index, &people);
        people[0].push(fact(100.0, true, 5, 12));
        people[3].clear();
        check(&mut index, &people);
        people.truncate(1);
        check(&mut index, &people);
        people[0].clear();
        index.mark(1);
        index.flush(|_| None);
        assert!(index.days.is_empty() && index.chains.is_empty(), "nothing left once every order is gone");
    }
}
