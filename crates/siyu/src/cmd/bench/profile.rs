//! `profile-update`: the pure in-memory cost of folding one event into a tenant's state
//! (identity resolution, profile facts, scores) — `TenantState::apply` alone, with parsing done
//! beforehand, chunk by chunk, outside the timing.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use siyu_engine::internals::TenantState;
use siyu_model::event::{parse_native, TimeLimits};
use siyu_model::{Event, Millis, TenantId, TenantSettings};

use super::check::{thread_cpu_ns, verify_sample, Gate};
use super::store::{dataset, report_mismatches, ImportReport};
use super::Bench;

/// What `bench profile-update` measured.
#[derive(Debug, Clone)]
pub struct ProfileReport {
    pub events: u64,
    /// Wall time in `apply`.
    pub seconds: f64,
    pub wall_ns_per_event: f64,
    /// CPU time of the applying thread in `apply`.
    pub cpu_ns_per_event: f64,
    pub gate: Gate,
}

/// Lines parsed, then applied, at a time.
const CHUNK: usize = 100_000;

/// With `import`, the events of that run's dataset, and the state is compared with a replay of
/// the log the import wrote; alone, with a second in-memory fold of the same events.
pub async fn bench_profile_update(bench: &Bench, import: Option<&ImportReport>) -> anyhow::Result<ProfileReport> {
    println!("\n# profile-update");
    let (path, lines) = match import {
        Some(report) => (report.dataset.clone(), report.events),
        None => dataset(bench).await?,
    };
    // The replay to compare with, when the import left one usable: the same events, none skipped.
    let replay_source = import.filter(|r| r.duplicates == 0 && r.gate.passed());
    let (store, settings) = match replay_source {
        Some(report) => {
            let store = siyu_store::open(&report.store_url).await.context("failed to open the import's store")?;
            let record = store.tenant(report.tenant).await?.context("the imported tenant is gone")?;
            (Some((store, report.tenant)), record.settings)
        }
        None => (None, TenantSettings::default()),
    };

    let timed = {
        let (path, settings) = (path.clone(), settings.clone());
        tokio::task::spawn_blocking(move || fold(&path, settings)).await??
    };
    let events = timed.state.event_count;
    let wall_ns = timed.wall.as_nanos() as f64 / events.max(1) as f64;
    let cpu_ns = timed.cpu_ns as f64 / events.max(1) as f64;
    println!(
        "profile-update: {events} events applied in {:.3}s wall = {wall_ns:.0} ns/event ({:.2} M events/s); \
         CPU {:.3}s = {cpu_ns:.0} ns/event; {} profiles, {} merges (parsing {:.1}s, not counted)",
        timed.wall.as_secs_f64(),
        events as f64 / timed.wall.as_secs_f64().max(1e-9) / 1e6,
        timed.cpu_ns as f64 / 1e9,
        timed.state.live_profiles,
        timed.state.merges.len(),
        timed.parse.as_secs_f64()
    );

    let mut gate = Gate::default();
    gate.check(timed.rejected == 0, format!("every line parsed ({} rejected)", timed.rejected));
    gate.check(events == lines, format!("every event applied ({events} of {lines})"));
    let (reference, what) = match store {
        Some((store, tenant)) => (replay(&store, tenant, settings).await?, "a replay of the imported log"),
        None => {
            let path = path.clone();
            let again = tokio::task::spawn_blocking(move || fold(&path, settings)).await??;
            (again.state, "a second fold of the same events")
        }
    };
    let sample = bench.args.sample;
    let mismatches =
        tokio::task::spawn_blocking(move || verify_sample(&timed.state, &reference, Millis::now(), sample)).await?;
    report_mismatches(&mut gate, &format!("the state equals {what} and the reference evaluator"), &mismatches);
    Ok(ProfileReport {
        events,
        seconds: timed.wall.as_secs_f64(),
        wall_ns_per_event: wall_ns,
        cpu_ns_per_event: cpu_ns,
        gate,
    })
}

async fn replay(
    store: &std::sync::Arc<dyn siyu_store::Store>,
    tenant: TenantId,
    settings: TenantSettings,
) -> anyhow::Result<TenantState> {
    Ok(siyu_engine::internals::replay(store, tenant, settings).await?)
}

pub(super) struct Fold {
    pub(super) state: TenantState,
    wall: Duration,
    cpu_ns: u64,
    parse: Duration,
    pub(super) rejected: u64,
}

/// Folds the file's events into a fresh state, timing only `apply` (on this thread).
pub(super) fn fold(path: &Path, settings: TenantSettings) -> anyhow::Result<Fold> {
    let mut state = TenantState::new(TenantId(1), settings);
    let mut reader = open(path)?;
    let limits = TimeLimits::default();
    let (mut wall, mut cpu_ns, mut parse, mut rejected, mut seq) = (Duration::ZERO, 0u64, Duration::ZERO, 0u64, 0);
    let mut line = String::new();
    let mut events: Vec<Event> = Vec::with_capacity(CHUNK);
    loop {
        let parsing = Instant::now();
        events.clear();
        let now = Millis::now();
        while events.len() < CHUNK {
            line.clear();
            if reader.read_line(&mut line).context("failed to read the dataset")? == 0 {
                break;
            }
            let text = line.trim_end();
            if text.is_empty() {
                continue;
            }
            match parse_native(text, now, limits) {
                Ok(event) => events.push(event),
                Err(_) => rejected += 1,
            }
        }
        parse += parsing.elapsed();
        if events.is_empty() {
            break;
        }
        let cpu_before = thread_cpu_ns().unwrap_or(0);
        let started = Instant::now();
        for event in &events {
            seq += 1;
            state.apply(seq, event);
        }
        wall += started.elapsed();
        cpu_ns += thread_cpu_ns().unwrap_or(0).saturating_sub(cpu_before);
    }
    Ok(Fold { state, wall, cpu_ns, parse, rejected })
}

fn open(path: &Path) -> anyhow::Result<std::io::BufReader<std::fs::File>> {
    let file = std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    Ok(std::io::BufReader::with_capacity(1 << 20, file))
}
