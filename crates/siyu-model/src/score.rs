//! The scores of SPEC §4 as pure functions over a profile's facts.
//!
//! A profile's state is a *fold* of its events in timestamp order ([`ProfileFacts::apply`]).
//! Incremental ingestion, `siyu rebuild` and an "as of" query all run this same fold, so they agree
//! by construction; `naive.rs` re-derives every score directly from the SPEC formulas and the tests
//! hold the two against each other.
//!
//! Time-based scores are evaluated lazily: the fold keeps affinity as its value at the profile's
//! last event and the last time of each windowed kind of event; reading at time `t` scales the
//! affinity by `0.5^((t − last)/H)` and compares the stored times with `t − window`. Nothing is
//! rewritten as the clock moves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::event_type::{EventType, FIRST_CUSTOM_CODE};
use crate::money::Fen;
use crate::time::{Millis, DAY};
use crate::Seq;

/// A tenant's scoring configuration. Every number of SPEC §4 is here and can be changed per tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreConfig {
    /// Affinity weight per event type (canonical or custom); types not listed weigh 0.
    pub weights: BTreeMap<String, f64>,
    /// Affinity half-life in days.
    pub half_life_days: f64,
    /// Minimum unrounded affinity of a 真爱粉.
    pub true_fan_min: f64,
    /// Minimum unrounded affinity of a 好感粉 (a 路人粉 is anything above 0).
    pub warm_fan_min: f64,
    /// Window of the 激励池 engagement test, in days.
    pub engagement_window_days: f64,
    /// Window of the two-way interaction test of ownership level L2, in days.
    pub two_way_window_days: f64,
    /// Window of the recent paid order of ownership level L3, in days.
    pub recent_order_window_days: f64,
    /// Window of RFM, in days.
    pub rfm_window_days: f64,
    /// Net paid orders that make a reachable profile L3 on their own.
    pub owned_min_net_orders: u32,
    /// Event types that count as engagement for the 激励池.
    pub engagement_types: Vec<String>,
    /// Event types that count as two-way interaction for L2.
    pub two_way_types: Vec<String>,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        let weights = [
            ("view", 0.5),
            ("like", 1.0),
            ("comment", 3.0),
            ("share", 4.0),
            ("follow", 5.0),
            ("unfollow", -5.0),
            ("subscribe", 3.0),
            ("unsubscribe", -3.0),
            ("message_in", 4.0),
            ("group_join", 5.0),
            ("group_leave", -5.0),
            ("wecom_add", 8.0),
            ("wecom_delete", -8.0),
            ("live_watch", 2.0),
            ("live_gift", 5.0),
            ("order_paid", 10.0),
            ("order_refunded", -10.0),
            ("referral", 6.0),
            ("coupon_redeemed", 3.0),
            ("lead_submit", 6.0),
        ];
        let engagement = [
            "like",
            "comment",
            "share",
            "follow",
            "subscribe",
            "message_in",
            "group_join",
            "wecom_add",
            "live_watch",
            "live_gift",
            "order_paid",
            "referral",
            "coupon_claimed",
            "coupon_redeemed",
            "lead_submit",
        ];
        let two_way = ["message_in", "comment", "group_join", "live_gift", "lead_submit"];
        ScoreConfig {
            weights: weights.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            half_life_days: 30.0,
            true_fan_min: 40.0,
            warm_fan_min: 10.0,
            engagement_window_days: 90.0,
            two_way_window_days: 30.0,
            recent_order_window_days: 90.0,
            rfm_window_days: 365.0,
            owned_min_net_orders: 2,
            engagement_types: engagement.iter().map(|s| s.to_string()).collect(),
            two_way_types: two_way.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ScoreConfig {
    /// Checks the numbers make sense before a tenant saves them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err =
            |field: &str, message: &str| Err(ConfigError { field: field.to_string(), message: message.to_string() });
        let windows = [
            ("half_life_days", self.half_life_days),
            ("engagement_window_days", self.engagement_window_days),
            ("two_way_window_days", self.two_way_window_days),
            ("recent_order_window_days", self.recent_order_window_days),
            ("rfm_window_days", self.rfm_window_days),
        ];
        for (field, days) in windows {
            if !(days.is_finite() && days > 0.0 && days <= 3650.0) {
                return err(field, "must be a number of days between 0 and 3650");
            }
        }
        if !(self.true_fan_min.is_finite() && self.warm_fan_min.is_finite()) {
            return err("true_fan_min", "thresholds must be finite numbers");
        }
        if self.warm_fan_min <= 0.0 || self.true_fan_min < self.warm_fan_min {
            return err("warm_fan_min", "need 0 < warm_fan_min <= true_fan_min");
        }
        for (name, weight) in &self.weights {
            if !weight.is_finite() || weight.abs() > 1000.0 {
                return err(&format!("weights.{name}"), "weight must be a finite number within ±1000");
            }
        }
        Ok(())
    }
}

/// A [`ScoreConfig`] compiled to dense tables indexed by event-type code.
#[derive(Debug, Clone)]
pub struct ScoringRules {
    pub config: ScoreConfig,
    weights: Vec<f64>,
    engagement: Vec<bool>,
    two_way: Vec<bool>,
    pub half_life_ms: f64,
}

impl ScoringRules {
    /// Compiles a configuration; `custom_code` names the code of a tenant's custom type, if any.
    pub fn compile(config: &ScoreConfig, custom_code: impl Fn(&str) -> Option<u16>) -> ScoringRules {
        let code_of = |name: &str| EventType::parse(name).map(EventType::code).or_else(|| custom_code(name));
        let base = FIRST_CUSTOM_CODE as usize;
        let mut weights = vec![0.0; base];
        for (name, w) in &config.weights {
            if let Some(code) = code_of(name) {
                grow_to(&mut weights, code);
                weights[code as usize] = *w;
            }
        }
        let flags = |names: &[String]| {
            let mut table = vec![false; base];
            for code in names.iter().filter_map(|name| code_of(name)) {
                grow_to(&mut table, code);
                table[code as usize] = true;
            }
            table
        };
        let engagement = flags(&config.engagement_types);
        let two_way = flags(&config.two_way_types);
        ScoringRules {
            config: config.clone(),
            weights,
            engagement,
            two_way,
            half_life_ms: config.half_life_days * DAY as f64,
        }
    }

    pub fn weight(&self, code: u16) -> f64 {
        self.weights.get(code as usize).copied().unwrap_or(0.0)
    }

    pub fn is_engagement(&self, code: u16) -> bool {
        self.engagement.get(code as usize).copied().unwrap_or(false)
    }

    pub fn is_two_way(&self, code: u16) -> bool {
        self.two_way.get(code as usize).copied().unwrap_or(false)
    }

    /// `0.5^(Δ/H)` for a gap of `delta_ms`.
    pub fn decay(&self, delta_ms: i64) -> f64 {
        (-(delta_ms as f64) / self.half_life_ms * std::f64::consts::LN_2).exp()
    }

    fn window_start(&self, t: Millis, days: f64) -> Millis {
        Millis(t.0 - window_ms(days))
    }
}

/// A window of `days`, in milliseconds, rounded as every window test of the scores rounds it.
pub fn window_ms(days: f64) -> i64 {
    (days * DAY as f64).round() as i64
}

fn grow_to<T: Default + Clone>(table: &mut Vec<T>, code: u16) {
    if table.len() <= code as usize {
        table.resize(code as usize + 1, T::default());
    }
}

impl Default for ScoringRules {
    fn default() -> Self {
        ScoringRules::compile(&ScoreConfig::default(), |_| None)
    }
}

/// One event as the scores need it: compact, copyable, 48 bytes. `account`, `group` and
/// `source` are per-tenant interned strings (0 = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fact {
    pub ts: Millis,
    pub seq: Seq,
    pub amount: Fen,
    pub code: u16,
    pub channel: Channel,
    /// A consent event's purpose (`properties.purpose`, see `Purpose::consent_code`); 0 on
    /// every other event. It fits in the struct's padding.
    pub purpose: u8,
    pub account: u32,
    pub group: u32,
    pub source: u32,
}

impl Fact {
    /// Facts are folded in this order: by timestamp, then by log position.
    pub fn order_key(&self) -> (Millis, Seq) {
        (self.ts, self.seq)
    }
}

/// Where a profile was first / last touched (来源识别): channel, account and source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Touch {
    pub channel: Option<Channel>,
    pub account: u32,
    pub source: u32,
    pub at: Millis,
}

/// The fold of a profile's facts in `(ts, seq)` order: everything the scores need, kept in O(1)
/// per event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProfileFacts {
    /// Timestamp of the latest folded fact; the state is valid for any `t >= last_ts`.
    pub last_ts: Millis,
    pub first_ts: Millis,
    pub event_count: u32,
    /// Affinity (unrounded, may be negative) at `last_ts`.
    affinity_at_last: f64,
    /// Relationship switches (follow, subscription, WeCom contact per channel account; group
    /// membership per group), the latest state of each. One vector, not four: most profiles
    /// have none or one, and this struct is held once per person.
    switches: Vec<Switch>,
    pub consent_revoked: bool,
    pub paid_orders: u32,
    pub refunded_orders: u32,
    pub paid: Fen,
    pub refunded: Fen,
    pub last_engagement: Option<Millis>,
    pub last_two_way: Option<Millis>,
    pub last_paid: Option<Millis>,
    pub first_touch: Touch,
    pub last_touch: Touch,
    /// Channels the folded facts are on, as a bitmask of [`Channel::code`].
    pub channels: u16,
    /// Event types the folded facts have, as a bitmask of [`type_bit`].
    pub types: u64,
    /// Time of the earliest paid or refunded order.
    pub first_order: Option<Millis>,
}

/// An event type's bit in [`ProfileFacts::types`]: its code, or 63 for every code from 63 on
/// (custom types share it).
pub fn type_bit(code: u16) -> u64 {
    1 << code.min(63)
}

/// What a [`Switch`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    Follow,
    Subscription,
    WecomContact,
    /// Keyed by group alone (`channel` is unused).
    Group,
}

/// The latest state of one relationship: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Switch {
    relation: Relation,
    channel: Channel,
    on: bool,
    /// The account, or the group.
    key: u32,
}

fn set_switch(list: &mut Vec<Switch>, relation: Relation, channel: Channel, key: u32, on: bool) {
    let channel = if relation == Relation::Group { Channel::Other } else { channel };
    match list.iter_mut().find(|s| s.relation == relation && s.channel == channel && s.key == key) {
        Some(entry) => entry.on = on,
        None => list.push(Switch { relation, channel, on, key }),
    }
}

impl ProfileFacts {
    /// Folds one more fact. The caller guarantees `fact.order_key()` is not before the previous
    /// fact's; out-of-order arrivals are handled by re-folding (see [`ProfileFacts::fold`]).
    pub fn apply(&mut self, fact: &Fact, rules: &ScoringRules) {
        if self.event_count == 0 {
            self.first_ts = fact.ts;
            self.affinity_at_last = rules.weight(fact.code);
        } else {
            let gap = fact.ts.0 - self.last_ts.0;
            self.affinity_at_last = self.affinity_at_last * rules.decay(gap) + rules.weight(fact.code);
        }
        self.last_ts = fact.ts;
        self.event_count += 1;
        self.channels |= 1 << fact.channel.code();
        self.types |= type_bit(fact.code);
        if rules.is_engagement(fact.code) {
            self.last_engagement = Some(fact.ts);
        }
        if rules.is_two_way(fact.code) {
            self.last_two_way = Some(fact.ts);
        }
        if let Some(known) = EventType::from_code(fact.code) {
            self.apply_known(known, fact);
        } else {
            self.touch(fact);
        }
    }

    fn apply_known(&mut self, kind: EventType, fact: &Fact) {
        use EventType::*;
        match kind {
            Follow => set_switch(&mut self.switches, Relation::Follow, fact.channel, fact.account, true),
            Unfollow => set_switch(&mut self.switches, Relation::Follow, fact.channel, fact.account, false),
            Subscribe => set_switch(&mut self.switches, Relation::Subscription, fact.channel, fact.account, true),
            Unsubscribe => set_switch(&mut self.switches, Relation::Subscription, fact.channel, fact.account, false),
            WecomAdd => set_switch(&mut self.switches, Relation::WecomContact, fact.channel, fact.account, true),
            WecomDelete => set_switch(&mut self.switches, Relation::WecomContact, fact.channel, fact.account, false),
            GroupJoin => set_switch(&mut self.switches, Relation::Group, fact.channel, fact.group, true),
            GroupLeave => set_switch(&mut self.switches, Relation::Group, fact.channel, fact.group, false),
            ConsentGranted => self.consent_revoked = false,
            ConsentRevoked => self.consent_revoked = true,
            OrderPaid => {
                self.paid_orders += 1;
                self.paid.0 += fact.amount.0;
                self.last_paid = Some(fact.ts);
                self.first_order.get_or_insert(fact.ts);
            }
            OrderRefunded => {
                self.refunded_orders += 1;
                self.refunded.0 += fact.amount.0;
                self.first_order.get_or_insert(fact.ts);
            }
            _ => {}
        }
        // Our own messages and bookkeeping calls are not the customer touching us.
        if !matches!(kind, MessageOut | Identify | Alias | ConsentGranted | ConsentRevoked) {
            self.touch(fact);
        }
    }

    fn touch(&mut self, fact: &Fact) {
        let touch = Touch { channel: Some(fact.channel), account: fact.account, source: fact.source, at: fact.ts };
        if self.first_touch.channel.is_none() {
            self.first_touch = touch;
        }
        self.last_touch = touch;
    }

    /// Folds the facts with `ts <= t` of a slice sorted by [`Fact::order_key`].
    pub fn fold(facts: &[Fact], t: Millis, rules: &ScoringRules) -> ProfileFacts {
        let mut state = ProfileFacts::default();
        for fact in facts.iter().take_while(|f| f.ts <= t) {
            state.apply(fact, rules);
        }
        state
    }

    /// Affinity (unrounded) at `t >= last_ts`.
    pub fn affinity_at(&self, t: Millis, rules: &ScoringRules) -> f64 {
        if self.event_count == 0 {
            return 0.0;
        }
        self.affinity_at_last * rules.decay(t.0 - self.last_ts.0)
    }

    /// Reachable (可触达): follows, is subscribed, is in a group or is a WeCom contact somewhere,
    /// and has not revoked consent.
    pub fn reachable(&self) -> bool {
        !self.consent_revoked && self.switches.iter().any(|s| s.on)
    }

    /// Accounts (channel, account) the profile currently follows.
    pub fn followed_accounts(&self) -> impl Iterator<Item = (Channel, u32)> + '_ {
        self.active(Relation::Follow)
    }

    pub fn subscribed_accounts(&self) -> impl Iterator<Item = (Channel, u32)> + '_ {
        self.active(Relation::Subscription)
    }

    pub fn wecom_accounts(&self) -> impl Iterator<Item = (Channel, u32)> + '_ {
        self.active(Relation::WecomContact)
    }

    pub fn joined_groups(&self) -> impl Iterator<Item = u32> + '_ {
        self.active(Relation::Group).map(|(_, group)| group)
    }

    fn active(&self, relation: Relation) -> impl Iterator<Item = (Channel, u32)> + '_ {
        self.switches.iter().filter(move |s| s.relation == relation && s.on).map(|s| (s.channel, s.key))
    }

    /// Net paid orders: paid minus refunded, never below 0.
    pub fn net_paid_orders(&self) -> u32 {
        self.paid_orders.saturating_sub(self.refunded_orders)
    }

    /// The fold's compact summary: everything the scores at a later time need except the RFM
    /// window (which reads the facts).
    pub fn summary(&self, rules: &ScoringRules) -> ProfileSummary {
        let never = |at: Option<Millis>| at.unwrap_or(NEVER);
        let affinity = if self.event_count == 0 { 0.0 } else { self.affinity_at_last };
        ProfileSummary {
            affinity_at_last: affinity,
            warm_until: reaches_until(affinity, self.last_ts, rules.config.warm_fan_min, rules),
            true_until: reaches_until(affinity, self.last_ts, rules.config.true_fan_min, rules),
            last_ts: self.last_ts,
            first_ts: self.first_ts,
            last_engagement: never(self.last_engagement),
            last_two_way: never(self.last_two_way),
            last_paid: never(self.last_paid),
            net_revenue: Fen(self.paid.0 - self.refunded.0),
            paid: self.paid,
            first_order: self.first_order.unwrap_or(Millis(i64::MAX)),
            types: self.types,
            paid_orders: self.paid_orders,
            refunded_orders: self.refunded_orders,
            event_count: self.event_count,
            channels: self.channels,
            reachable: self.reachable(),
        }
    }

    /// Evaluates every per-profile score at `t`. `facts` is the profile's sorted fact list (used
    /// only for the RFM window); `self` must be the fold of exactly the facts with `ts <= t`.
    pub fn scores_at(&self, facts: &[Fact], t: Millis, rules: &ScoringRules) -> ProfileScores {
        let summary = self.summary(rules);
        let raw = summary.affinity_raw_at(t, rules);
        let rfm = summary.rfm_input(|| facts, t, rules);
        ProfileScores {
            affinity: round2(raw.max(0.0)),
            affinity_raw: raw,
            tier: summary.tier_at(t, rules),
            reachable: summary.reachable,
            pool_stage: summary.pool_stage_at(t, rules),
            ownership: summary.ownership_at(t, rules),
            net_paid_orders: summary.net_paid_orders(),
            paid_orders: self.paid_orders,
            refunded_orders: self.refunded_orders,
            net_revenue: summary.net_revenue,
            orders_365d: rfm.map(|r| r.frequency).unwrap_or(0),
            rfm,
        }
    }
}

/// "No such event" in a [`ProfileSummary`]: earlier than every window start, so a window test
/// on it is simply false.
const NEVER: Millis = Millis(i64::MIN);

/// The last time at which an affinity of `affinity` at `last_ts` is still at least `threshold`
/// (`NEVER` when it is not even at `last_ts`): `last_ts + H·log2(affinity / threshold)`. Float
/// error in it is far below a millisecond; [`ProfileSummary::reaches`] decides exactly near it.
fn reaches_until(affinity: f64, last_ts: Millis, threshold: f64, rules: &ScoringRules) -> Millis {
    if !(affinity >= threshold && threshold > 0.0) {
        return NEVER;
    }
    let horizon = rules.half_life_ms * (affinity / threshold).log2();
    Millis(last_ts.0.saturating_add(horizon.min(i64::MAX as f64 / 4.0) as i64))
}

/// What the scores of one profile at a time `t` at or after its last event depend on, in 112
/// bytes: the fold without its per-account relationship list (only whether one is on) and its
/// touches. Segment evaluation keeps one per profile in a dense array and scans it; the scores
/// themselves are computed from it ([`ProfileFacts::scores_at`]), so the two cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProfileSummary {
    /// Affinity (unrounded) at `last_ts`; 0 without events.
    pub affinity_at_last: f64,
    /// Until when the affinity stays at least the 好感粉 / 真爱粉 threshold: the tier then takes
    /// two integer comparisons instead of an `exp`.
    warm_until: Millis,
    true_until: Millis,
    pub last_ts: Millis,
    pub first_ts: Millis,
    last_engagement: Millis,
    last_two_way: Millis,
    last_paid: Millis,
    pub net_revenue: Fen,
    pub paid: Fen,
    /// Time of the earliest paid or refunded order (`i64::MAX` without any): a window that
    /// starts before it holds every order, so RFM and order sums need no scan of the facts.
    first_order: Millis,
    /// Event types the profile has ([`type_bit`]): a condition that needs an event of a type
    /// the profile never had is decided without its facts.
    pub types: u64,
    pub paid_orders: u32,
    pub refunded_orders: u32,
    pub event_count: u32,
    /// Channels the profile has events on, as a bitmask of [`Channel::code`].
    pub channels: u16,
    pub reachable: bool,
}

impl Default for ProfileSummary {
    /// The summary of no events, whatever the rules. Written out rather than derived from an
    /// empty fold: every new profile gets one, and compiling default rules for each cost more
    /// than the rest of applying its first event.
    fn default() -> Self {
        ProfileSummary {
            affinity_at_last: 0.0,
            warm_until: NEVER,
            true_until: NEVER,
            last_ts: Millis::default(),
            first_ts: Millis::default(),
            last_engagement: NEVER,
            last_two_way: NEVER,
            last_paid: NEVER,
            net_revenue: Fen(0),
            paid: Fen(0),
            first_order: Millis(i64::MAX),
            types: 0,
            paid_orders: 0,
            refunded_orders: 0,
            event_count: 0,
            channels: 0,
            reachable: false,
        }
    }
}

/// The part of a [`ProfileSummary`] that the commonest segment clauses read — the tier,
/// reachability, the channels — in 40 bytes instead of 112. Kept in its own dense array next to
/// the summaries, so that a scan over a million profiles for `tier >= warm_fan and reachable`
/// moves a third of the memory. The tier is decided here, for summaries too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanRow {
    /// Affinity (unrounded) at `last_ts`; 0 without events.
    pub affinity_at_last: f64,
    warm_until: Millis,
    true_until: Millis,
    pub last_ts: Millis,
    /// Channels the profile has events on, as a bitmask of [`Channel::code`].
    pub channels: u16,
    pub reachable: bool,
}

impl ScanRow {
    /// Affinity (unrounded) at `t >= last_ts` (0 without events: the summary of no events has
    /// an affinity of 0).
    pub fn affinity_raw_at(&self, t: Millis, rules: &ScoringRules) -> f64 {
        if self.affinity_at_last == 0.0 {
            return 0.0;
        }
        self.affinity_at_last * rules.decay(t.0 - self.last_ts.0)
    }

    /// Is the tier at `t` at least `tier`? Exactly "the affinity at `t` reaches the tier's
    /// threshold", but mostly without computing the affinity (an `exp`): the affinity only decays
    /// after `last_ts`, so it is above a threshold until a time known in advance.
    #[inline]
    pub fn tier_at_least(&self, tier: FanTier, t: Millis, rules: &ScoringRules) -> bool {
        let config = &rules.config;
        match tier {
            FanTier::None => true,
            FanTier::Passerby => {
                if self.affinity_at_last <= 0.0 {
                    return false;
                }
                // A positive value above 1e-100 decayed by at most 2^-500 cannot round to 0.
                let young = t.0.saturating_sub(self.last_ts.0) as f64 <= 500.0 * rules.half_life_ms;
                (self.affinity_at_last > 1e-100 && young) || self.affinity_raw_at(t, rules) > 0.0
            }
            FanTier::WarmFan => self.reaches(self.warm_until, config.warm_fan_min, t, rules),
            FanTier::TrueFan => self.reaches(self.true_until, config.true_fan_min, t, rules),
        }
    }

    /// Is the affinity at `t` at least `threshold`, given it is until `until`? Away from `until`
    /// the answer is that of the comparison; within 2 ms of it the affinity is computed.
    /// (`NEVER` is far below any `t`.) One branch, nearly always taken the same way: scans of a
    /// million rows are not slowed by mispredictions.
    #[inline]
    fn reaches(&self, until: Millis, threshold: f64, t: Millis, rules: &ScoringRules) -> bool {
        const BAND: i64 = 2;
        let above = t.0 < until.0.saturating_sub(BAND);
        let below = t.0 > until.0.saturating_add(BAND);
        if above | below {
            return above;
        }
        self.affinity_raw_at(t, rules) >= threshold
    }
}

impl ProfileSummary {
    /// The scan columns of this summary.
    pub fn scan_row(&self) -> ScanRow {
        ScanRow {
            affinity_at_last: self.affinity_at_last,
            warm_until: self.warm_until,
            true_until: self.true_until,
            last_ts: self.last_ts,
            channels: self.channels,
            reachable: self.reachable,
        }
    }

    /// Affinity (unrounded) at `t >= last_ts`; see [`ScanRow::affinity_raw_at`].
    pub fn affinity_raw_at(&self, t: Millis, rules: &ScoringRules) -> f64 {
        self.scan_row().affinity_raw_at(t, rules)
    }

    /// The displayed affinity at `t`: `max(0, score)` rounded to two decimals.
    pub fn affinity_at(&self, t: Millis, rules: &ScoringRules) -> f64 {
        round2(self.affinity_raw_at(t, rules).max(0.0))
    }

    /// The fan tier at `t`: exactly the tier of the affinity at `t` (SPEC §4), decided through
    /// [`Self::tier_at_least`].
    pub fn tier_at(&self, t: Millis, rules: &ScoringRules) -> FanTier {
        [FanTier::TrueFan, FanTier::WarmFan, FanTier::Passerby]
            .into_iter()
            .find(|tier| self.tier_at_least(*tier, t, rules))
            .unwrap_or(FanTier::None)
    }

    /// Is the tier at `t` at least `tier`? See [`ScanRow::tier_at_least`].
    pub fn tier_at_least(&self, tier: FanTier, t: Millis, rules: &ScoringRules) -> bool {
        self.scan_row().tier_at_least(tier, t, rules)
    }

    pub fn net_paid_orders(&self) -> u32 {
        self.paid_orders.saturating_sub(self.refunded_orders)
    }

    fn within(&self, last: Millis, t: Millis, days: f64, rules: &ScoringRules) -> bool {
        last >= rules.window_start(t, days)
    }

    pub fn pool_stage_at(&self, t: Millis, rules: &ScoringRules) -> PoolStage {
        let config = &rules.config;
        if self.reachable && (self.net_paid_orders() >= 1 || self.tier_at_least(FanTier::TrueFan, t, rules)) {
            PoolStage::MainBase
        } else if self.reachable {
            PoolStage::Reservoir
        } else if self.within(self.last_engagement, t, config.engagement_window_days, rules) {
            PoolStage::Incentive
        } else {
            PoolStage::Public
        }
    }

    pub fn ownership_at(&self, t: Millis, rules: &ScoringRules) -> Ownership {
        let config = &rules.config;
        if !self.reachable {
            return Ownership::L0;
        }
        let two_way = self.within(self.last_two_way, t, config.two_way_window_days, rules);
        let recent_order = self.within(self.last_paid, t, config.recent_order_window_days, rules);
        if self.net_paid_orders() >= config.owned_min_net_orders || (two_way && recent_order) {
            Ownership::L3
        } else if two_way {
            Ownership::L2
        } else {
            Ownership::L1
        }
    }

    /// Was there a paid order inside the RFM window? (Is this profile a buyer at `t`?)
    pub fn is_buyer_at(&self, t: Millis, rules: &ScoringRules) -> bool {
        self.within(self.last_paid, t, rules.config.rfm_window_days, rules)
    }

    /// The RFM inputs at `t`. Non-buyers need nothing more; buyers whose orders all fall in the
    /// window are summed up already; only the others' sorted `facts` are read.
    pub fn rfm_input<'f>(
        &self,
        facts: impl FnOnce() -> &'f [Fact],
        t: Millis,
        rules: &ScoringRules,
    ) -> Option<RfmInput> {
        if !self.is_buyer_at(t, rules) {
            return None;
        }
        if self.rfm_needs_facts(t, rules) {
            return rfm_input(facts(), t, rules);
        }
        Some(RfmInput {
            recency_days: (t.0 - self.last_paid.0) as f64 / DAY as f64,
            frequency: self.paid_orders,
            monetary: self.net_revenue,
        })
    }

    /// Do the RFM inputs at `t` need the facts: is this a buyer with orders before the window?
    pub fn rfm_needs_facts(&self, t: Millis, rules: &ScoringRules) -> bool {
        self.is_buyer_at(t, rules) && !self.orders_since(rules.window_start(t, rules.config.rfm_window_days))
    }

    /// Are all the profile's orders (paid and refunded) at or after `start`?
    pub fn orders_since(&self, start: Millis) -> bool {
        self.first_order >= start
    }

    /// Has the profile an event of this type code ([`type_bit`]: custom codes share a bit)?
    pub fn may_have_type(&self, code: u16) -> bool {
        self.types & type_bit(code) != 0
    }
}

/// RFM inputs at `t`: paid orders in the window, days since the last one, money paid minus refunded.
pub fn rfm_input(facts: &[Fact], t: Millis, rules: &ScoringRules) -> Option<RfmInput> {
    let start = rules.window_start(t, rules.config.rfm_window_days);
    let paid = EventType::OrderPaid.code();
    let refunded = EventType::OrderRefunded.code();
    let mut frequency = 0u32;
    let mut monetary = 0i64;
    let mut last_paid: Option<Millis> = None;
    // Facts are sorted, so the window is a suffix (minus anything after `t`).
    let end = facts.partition_point(|f| f.ts <= t);
    let begin = facts[..end].partition_point(|f| f.ts < start);
    for fact in &facts[begin..end] {
        if fact.code == paid {
            frequency += 1;
            monetary += fact.amount.0;
            last_paid = Some(fact.ts);
        } else if fact.code == refunded {
            monetary -= fact.amount.0;
        }
    }
    let last = last_paid?;
    Some(RfmInput { recency_days: (t.0 - last.0) as f64 / DAY as f64, frequency, monetary: Fen(monetary) })
}

pub fn round2(x: f64) -> f64 {
    let r = (x * 100.0).round() / 100.0;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

/// Every per-profile score at one time. The RFM *group* needs the tenant's buyer means and is
/// assigned by [`RfmMeans::group`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProfileScores {
    /// Displayed affinity: `max(0, score)` rounded to two decimals.
    pub affinity: f64,
    #[serde(skip)]
    pub affinity_raw: f64,
    pub tier: FanTier,
    pub reachable: bool,
    pub pool_stage: PoolStage,
    pub ownership: Ownership,
    pub net_paid_orders: u32,
    pub paid_orders: u32,
    pub refunded_orders: u32,
    pub net_revenue: Fen,
    pub orders_365d: u32,
    #[serde(skip)]
    pub rfm: Option<RfmInput>,
}

/// 粉丝分层.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FanTier {
    None,
    Passerby,
    WarmFan,
    TrueFan,
}

/// 四步流量池.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolStage {
    Public,
    Incentive,
    Reservoir,
    MainBase,
}

/// 流量产权层级.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Ownership {
    L0,
    L1,
    L2,
    L3,
}

/// The eight RFM groups; non-buyers have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RfmGroup {
    #[serde(rename = "重要价值")]
    ImportantValue,
    #[serde(rename = "重要发展")]
    ImportantDevelop,
    #[serde(rename = "重要保持")]
    ImportantKeep,
    #[serde(rename = "重要挽留")]
    ImportantRetain,
    #[serde(rename = "一般价值")]
    GeneralValue,
    #[serde(rename = "一般发展")]
    GeneralDevelop,
    #[serde(rename = "一般保持")]
    GeneralKeep,
    #[serde(rename = "一般挽留")]
    GeneralRetain,
}

macro_rules! labels {
    ($ty:ty { $($variant:ident => $code:literal, $zh:literal, $en:literal;)+ }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$(<$ty>::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $(<$ty>::$variant => $code),+ } }
            pub fn label_zh(self) -> &'static str { match self { $(<$ty>::$variant => $zh),+ } }
            pub fn label_en(self) -> &'static str { match self { $(<$ty>::$variant => $en),+ } }
            pub fn parse(text: &str) -> Option<$ty> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text || v.label_zh() == text)
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

labels!(FanTier {
    None => "none", "未分层", "none";
    Passerby => "passerby", "路人粉", "passer-by";
    WarmFan => "warm_fan", "好感粉", "warm fan";
    TrueFan => "true_fan", "真爱粉", "true fan";
});

labels!(PoolStage {
    Public => "public", "公域流量池", "public pool";
    Incentive => "incentive", "私域激励池", "incentive pool";
    Reservoir => "reservoir", "私域蓄水池", "reservoir";
    MainBase => "main_base", "私域主阵地", "main base";
});

labels!(Ownership {
    L0 => "L0", "未触达", "not reachable";
    L1 => "L1", "已获取", "acquired";
    L2 => "L2", "核心", "core";
    L3 => "L3", "已拥有", "owned";
});

labels!(RfmGroup {
    ImportantValue => "重要价值", "重要价值", "important value";
    ImportantDevelop => "重要发展", "重要发展", "important to develop";
    ImportantKeep => "重要保持", "重要保持", "important to keep";
    ImportantRetain => "重要挽留", "重要挽留", "important to win back";
    GeneralValue => "一般价值", "一般价值", "general value";
    GeneralDevelop => "一般发展", "一般发展", "general to develop";
    GeneralKeep => "一般保持", "一般保持", "general to keep";
    GeneralRetain => "一般挽留", "一般挽留", "general to win back";
});

/// A buyer's RFM inputs within the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RfmInput {
    /// Days (fractional) since the last paid order.
    pub recency_days: f64,
    pub frequency: u32,
    pub monetary: Fen,
}

/// The buyers' means at one time, against which each buyer's R, F and M are graded.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RfmMeans {
    pub buyers: u64,
    pub recency_days: f64,
    pub frequency: f64,
    pub monetary_fen: f64,
}

impl RfmMeans {
    pub fn from_inputs<'a>(inputs: impl IntoIterator<Item = &'a RfmInput>) -> RfmMeans {
        let (mut n, mut r, mut f, mut m) = (0u64, 0.0, 0.0, 0.0);
        for input in inputs {
            n += 1;
            r += input.recency_days;
            f += f64::from(input.frequency);
            m += input.monetary.0 as f64;
        }
        if n == 0 {
            return RfmMeans::default();
        }
        let d = n as f64;
        RfmMeans { buyers: n, recency_days: r / d, frequency: f / d, monetary_fen: m / d }
    }

    /// R is high when at or below the mean (recent); F and M are high at or above the mean.
    pub fn group(&self, input: &RfmInput) -> RfmGroup {
        // A tolerance keeps a buyer who sits exactly on the mean from flipping on float noise.
        const EPS: f64 = 1e-9;
        let r = input.recency_days <= self.recency_days + EPS;
        let f = f64::from(input.frequency) >= self.frequency - EPS;
        let m = input.monetary.0 as f64 >= self.monetary_fen - EPS;
        match (r, f, m) {
            (true, true, true) => RfmGroup::ImportantValue,
            (true, false, true) => RfmGroup::ImportantDevelop,
            (false, true, true) => RfmGroup::ImportantKeep,
            (false, false, true) => RfmGroup::ImportantRetain,
            (true, true, false) => RfmGroup::GeneralValue,
            (true, false, false) => RfmGroup::GeneralDevelop,
            (false, true, false) => RfmGroup::GeneralKeep,
            (false, false, false) => RfmGroup::GeneralRetain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(code: EventType, day: i64) -> Fact {
        Fact {
            ts: Millis(day * DAY),
            seq: day,
            amount: Fen(0),
            code: code.code(),
            channel: Channel::Douyin,
            purpose: 0,
            account: 1,
            group: 0,
            source: 0,
        }
    }

    #[test]
    fn default_summary_is_the_summary_of_no_events() {
        let rules = ScoringRules::default();
        assert_eq!(ProfileSummary::default(), ProfileFacts::default().summary(&rules));
        let lenient = ScoreConfig { warm_fan_min: 0.0, ..ScoreConfig::default() };
        let rules = ScoringRules::compile(&lenient, |_| None);
        assert_eq!(ProfileSummary::default(), ProfileFacts::default().summary(&rules));
    }

    #[test]
    fn affinity_halves_every_half_life() {
        let rules = ScoringRules::default();
        let facts = [fact(EventType::Follow, 0)];
        let state = ProfileFacts::fold(&facts, Millis(30 * DAY), &rules);
        assert!((state.affinity_at(Millis(30 * DAY), &rules) - 2.5).abs() < 1e-12);
        assert!((state.affinity_at(Millis(60 * DAY), &rules) - 1.25).abs() < 1e-12);
    }

    #[test]
    fn unfollow_on_one_account_keeps_the_other() {
        let rules = ScoringRules::default();
        let mut other = fact(EventType::Follow, 1);
        other.account = 2;
        let facts = [fact(EventType::Follow, 0), other, fact(EventType::Unfollow, 2)];
        let state = ProfileFacts::fold(&facts, Millis(3 * DAY), &rules);
        assert!(state.reachable());
        assert_eq!(state.followed_accounts().collect::<Vec<_>>(), vec![(Channel::Douyin, 2)]);
    }

    #[test]
    fn consent_revocation_blocks_reach_until_granted() {
        let rules = ScoringRules::default();
        let mut facts = vec![fact(EventType::Follow, 0), fact(EventType::ConsentRevoked, 1)];
        assert!(!ProfileFacts::fold(&facts, Millis(5 * DAY), &rules).reachable());
        facts.push(fact(EventType::ConsentGranted, 2));
        assert!(ProfileFacts::fold(&facts, Millis(5 * DAY), &rules).reachable());
    }

    #[test]
    fn facts_after_t_do_not_count() {
        let rules = ScoringRules::default();
        let facts = [fact(EventType::Follow, 0), fact(EventType::Unfollow, 10)];
        let state = ProfileFacts::fold(&facts, Millis(5 * DAY), &rules);
        assert!(state.reachable());
        assert_eq!(state.event_count, 1);
    }

    #[test]
    fn rfm_groups_grade_against_means() {
        let means = RfmMeans::from_inputs(&[
            RfmInput { recency_days: 10.0, frequency: 1, monetary: Fen(100) },
            RfmInput { recency_days: 30.0, frequency: 3, monetary: Fen(300) },
        ]);
        assert_eq!(means.buyers, 2);
        let recent_small = RfmInput { recency_days: 10.0, frequency: 1, monetary: Fen(100) };
        assert_eq!(means.group(&recent_small), RfmGroup::GeneralDevelop);
        let old_big = RfmInput { recency_days: 30.0, frequency: 3, monetary: Fen(300) };
        assert_eq!(means.group(&old_big), RfmGroup::ImportantKeep);
    }

    #[test]
    fn config_validation_names_the_field() {
        let config = ScoreConfig { half_life_days: -1.0, ..ScoreConfig::default() };
        assert_eq!(config.validate().unwrap_err().field, "half_life_days");
        assert!(ScoreConfig::default().validate().is_ok());
    }
}
