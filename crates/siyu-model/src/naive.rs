//! A reference evaluator: SPEC §4 written out as directly as possible, one formula at a time, with
//! no state carried between events. The tests (and `siyu rebuild --verify`) hold the incremental
//! fold of `score.rs` against it. Slow on purpose; never used on a hot path.

use crate::channel::Channel;
use crate::money::Fen;
use crate::score::{round2, FanTier, Ownership, PoolStage, RfmGroup, RfmInput, RfmMeans, ScoreConfig};
use crate::time::{Millis, DAY};

/// One event as the reference evaluator reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlainEvent {
    pub event_type: String,
    pub channel: Channel,
    pub account: String,
    pub group_id: Option<String>,
    pub ts: Millis,
    pub amount: Fen,
}

/// Every score of one person, as the reference evaluator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NaiveScores {
    pub affinity: f64,
    pub affinity_raw: f64,
    pub tier: FanTier,
    pub reachable: bool,
    pub pool_stage: PoolStage,
    pub ownership: Ownership,
    pub net_paid_orders: u32,
    pub net_revenue: Fen,
    pub orders_365d: u32,
    pub rfm_input: Option<RfmInput>,
}

fn days_ago(t: Millis, days: f64) -> Millis {
    Millis(t.0 - (days * DAY as f64).round() as i64)
}

/// Is the relationship `on_type`/`off_type` switched on at the end of `events` (sorted), for the
/// key chosen by `key`? "The latest switch per key wins; any key on means on."
fn any_switch_on(events: &[&PlainEvent], on_type: &str, off_type: &str, key: impl Fn(&PlainEvent) -> String) -> bool {
    let mut keys: Vec<String> =
        events.iter().filter(|e| e.event_type == on_type || e.event_type == off_type).map(|e| key(e)).collect();
    keys.sort();
    keys.dedup();
    keys.iter().any(|k| {
        events
            .iter()
            .rev()
            .find(|e| (e.event_type == on_type || e.event_type == off_type) && &key(e) == k)
            .is_some_and(|e| e.event_type == on_type)
    })
}

/// Evaluates one person's scores at `t` from their events (any order; events after `t` ignored).
pub fn evaluate(events: &[PlainEvent], t: Millis, config: &ScoreConfig) -> NaiveScores {
    let mut seen: Vec<&PlainEvent> = events.iter().filter(|e| e.ts <= t).collect();
    // A stable sort keeps arrival order among equal timestamps, as the log does.
    seen.sort_by_key(|e| e.ts);
    let h = config.half_life_days * DAY as f64;
    let weight = |e: &PlainEvent| config.weights.get(&e.event_type).copied().unwrap_or(0.0);
    let affinity_raw: f64 = seen.iter().map(|e| weight(e) * 0.5f64.powf((t.0 - e.ts.0) as f64 / h)).sum();
    let tier = if affinity_raw >= config.true_fan_min {
        FanTier::TrueFan
    } else if affinity_raw >= config.warm_fan_min {
        FanTier::WarmFan
    } else if affinity_raw > 0.0 {
        FanTier::Passerby
    } else {
        FanTier::None
    };
    let by_account = |e: &PlainEvent| format!("{}/{}", e.channel, e.account);
    let by_group = |e: &PlainEvent| e.group_id.clone().unwrap_or_default();
    let consent_ok = seen
        .iter()
        .rev()
        .find(|e| e.event_type == "consent_granted" || e.event_type == "consent_revoked")
        .is_none_or(|e| e.event_type == "consent_granted");
    let reachable = consent_ok
        && (any_switch_on(&seen, "follow", "unfollow", by_account)
            || any_switch_on(&seen, "subscribe", "unsubscribe", by_account)
            || any_switch_on(&seen, "group_join", "group_leave", by_group)
            || any_switch_on(&seen, "wecom_add", "wecom_delete", by_account));
    let count = |ty: &str| seen.iter().filter(|e| e.event_type == ty).count() as u32;
    let sum = |ty: &str| seen.iter().filter(|e| e.event_type == ty).map(|e| e.amount.0).sum::<i64>();
    let net_paid_orders = count("order_paid").saturating_sub(count("order_refunded"));
    let any_in = |types: &[String], days: f64| {
        let start = days_ago(t, days);
        seen.iter().any(|e| e.ts >= start && types.contains(&e.event_type))
    };
    let pool_stage = if reachable && (net_paid_orders >= 1 || tier == FanTier::TrueFan) {
        PoolStage::MainBase
    } else if reachable {
        PoolStage::Reservoir
    } else if any_in(&config.engagement_types, config.engagement_window_days) {
        PoolStage::Incentive
    } else {
        PoolStage::Public
    };
    let two_way = any_in(&config.two_way_types, config.two_way_window_days);
    let paid_recently = any_in(&["order_paid".to_string()], config.recent_order_window_days);
    let l2 = reachable && two_way;
    let ownership = if reachable && (net_paid_orders >= config.owned_min_net_orders || (l2 && paid_recently)) {
        Ownership::L3
    } else if l2 {
        Ownership::L2
    } else if reachable {
        Ownership::L1
    } else {
        Ownership::L0
    };
    let rfm_start = days_ago(t, config.rfm_window_days);
    let in_rfm: Vec<&&PlainEvent> = seen.iter().filter(|e| e.ts >= rfm_start).collect();
    let paid: Vec<&&&PlainEvent> = in_rfm.iter().filter(|e| e.event_type == "order_paid").collect();
    let rfm_input = paid.iter().map(|e| e.ts).max().map(|last| RfmInput {
        recency_days: (t.0 - last.0) as f64 / DAY as f64,
        frequency: paid.len() as u32,
        monetary: Fen(paid.iter().map(|e| e.amount.0).sum::<i64>()
            - in_rfm.iter().filter(|e| e.event_type == "order_refunded").map(|e| e.amount.0).sum::<i64>()),
    });
    NaiveScores {
        affinity: round2(affinity_raw.max(0.0)),
        affinity_raw,
        tier,
        reachable,
        pool_stage,
        ownership,
        net_paid_orders,
        net_revenue: Fen(sum("order_paid") - sum("order_refunded")),
        orders_365d: paid.len() as u32,
        rfm_input,
    }
}

/// RFM groups of a whole population, graded against the buyers' means.
pub fn rfm_groups(population: &[NaiveScores]) -> Vec<Option<RfmGroup>> {
    let means = RfmMeans::from_inputs(population.iter().filter_map(|s| s.rfm_input.as_ref()));
    population.iter().map(|s| s.rfm_input.as_ref().map(|i| means.group(i))).collect()
}
