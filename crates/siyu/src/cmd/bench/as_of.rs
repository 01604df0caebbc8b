//! `as-of`: reading the past. A profile lookup and the tenant summary, now and as of a time
//! inside the history (where every later event must be left out, RFM means included), over the
//! benchmark dataset folded in memory.

use std::time::Instant;

use hdrhistogram::Histogram;
use siyu_engine::internals::{AsOf, TenantState};
use siyu_model::score::RfmMeans;
use siyu_model::{Millis, ProfileId, TenantSettings};

use super::check::Gate;
use super::load::Latency;
use super::store::dataset;
use super::Bench;

/// What `bench as-of` measured.
#[derive(Debug, Clone, Default)]
pub struct AsOfReport {
    pub profiles: u64,
    /// The past time, and how many profiles existed then.
    pub as_of: String,
    pub profiles_then: u64,
    /// One profile lookup (view + the buyers' means), now and as of the past time.
    pub lookup_now: Latency,
    pub lookup_past: Latency,
    /// The whole summary, median of the runs, in ms.
    pub summary_now_ms: f64,
    pub summary_past_ms: f64,
    pub gate: Gate,
}

/// Lookups timed per phase.
const LOOKUPS: usize = 5_000;

pub async fn bench_as_of(bench: &Bench) -> anyhow::Result<AsOfReport> {
    println!("\n# as-of");
    let (path, _) = dataset(bench).await?;
    let repeats = bench.args.repeats.max(1);
    let folded = tokio::task::spawn_blocking(move || super::profile::fold(&path, TenantSettings::default())).await??;
    let report = tokio::task::spawn_blocking(move || measure(&folded.state, folded.rejected, repeats)).await?;
    println!("{} profiles; as of {} ({} existed then)", report.profiles, report.as_of, report.profiles_then);
    for (what, l) in [("now", &report.lookup_now), ("as of", &report.lookup_past)] {
        println!(
            "lookup {what}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms over {} lookups",
            l.p50_ms(),
            l.p99_ms(),
            l.max_ms(),
            l.count
        );
    }
    println!(
        "summary: now {:.1} ms, as of {:.1} ms (median of {repeats})",
        report.summary_now_ms, report.summary_past_ms
    );
    Ok(report)
}

fn measure(state: &TenantState, rejected: u64, repeats: usize) -> AsOfReport {
    let mut gate = Gate::default();
    gate.check(rejected == 0, format!("every line parsed ({rejected} rejected)"));
    let ids: Vec<ProfileId> = state.profile_ids().collect();
    let (first, last) = ids
        .iter()
        .filter_map(|id| state.profile(*id)?.facts.first().zip(state.profile(*id)?.facts.last()))
        .fold((i64::MAX, i64::MIN), |(lo, hi), (f, l)| (lo.min(f.ts.0), hi.max(l.ts.0)));
    // Two thirds into the history: most profiles have events after it.
    let past = Millis(first + (last - first) * 2 / 3);
    let now = Millis(last.max(Millis::now().0));

    // Correctness: what the past reads leave out, checked the long way.
    let exists_then: u64 = ids
        .iter()
        .filter(|id| state.profile(**id).is_some_and(|p| p.facts.first().is_some_and(|f| f.ts <= past)))
        .count() as u64;
    let events_then: u64 = ids
        .iter()
        .map(|id| state.profile(*id).map_or(0, |p| p.facts.iter().filter(|f| f.ts <= past).count() as u64))
        .sum();
    let summary = state.summary(AsOf::past(past));
    gate.check(summary.profiles == exists_then, format!("profiles as of T: {} = {exists_then}", summary.profiles));
    gate.check(summary.events == events_then, format!("events as of T: {} = {events_then}", summary.events));
    for t in [past, now] {
        let means = state.rfm_means(t);
        let long_way = RfmMeans::from_inputs(&state.rfm_inputs_in(state.live(), t));
        let same = means.buyers == long_way.buyers
            && (means.recency_days - long_way.recency_days).abs() < 1e-6
            && (means.frequency - long_way.frequency).abs() < 1e-9
            && (means.monetary_fen - long_way.monetary_fen).abs() < 1e-3;
        gate.check(same, format!("RFM means at {} equal the buyers' inputs ({} buyers)", t.to_rfc3339(), means.buyers));
    }

    let lookup = |when: AsOf| {
        let mut histogram = Histogram::<u64>::new(3).expect("histogram");
        let step = (ids.len() / LOOKUPS).max(1);
        for id in ids.iter().step_by(step).take(LOOKUPS) {
            let started = Instant::now();
            let view = state.at_when(*id, when).map(|_| state.view(*id, when, &state.rfm_means(when.t)));
            std::hint::black_box(view);
            histogram.record(started.elapsed().as_micros().max(1) as u64).expect("record");
        }
        Latency::of(&histogram)
    };
    let timed = |when: AsOf| {
        let mut runs: Vec<f64> = (0..repeats)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(state.summary(when));
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    };
    AsOfReport {
        profiles: ids.len() as u64,
        as_of: past.to_rfc3339(),
        profiles_then: exists_then,
        lookup_now: lookup(AsOf::current(now)),
        lookup_past: lookup(AsOf::past(past)),
        summary_now_ms: timed(AsOf::current(now)),
        summary_past_ms: timed(AsOf::past(past)),
        gate,
    }
}

/// The goals, for `bench all`'s summary.
pub(super) fn goals(report: &AsOfReport) -> Vec<super::Goal> {
    let correct = report.gate.passed();
    vec![
        super::Goal {
            name: "profile lookup as of T, p99",
            measured: report.lookup_past.p99_ms(),
            goal: 1.0,
            unit: "ms",
            higher_is_better: false,
            correct,
        },
        super::Goal {
            name: "summary as of T",
            measured: report.summary_past_ms,
            goal: 1000.0,
            unit: "ms",
            higher_is_better: false,
            correct,
        },
    ]
}
