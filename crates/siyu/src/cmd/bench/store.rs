//! The log-side targets: `import` (the benchmark NDJSON through the path `siyu import` takes)
//! and `rebuild` (replaying the log into fresh state).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::ProgressBar;
use siyu_engine::Engine;
use siyu_model::{Industry, Millis, TenantId};

use super::check::{count_lines, peak_memory_bytes, resident_memory_bytes, verify_sample, Gate};
use super::Bench;
use crate::cmd::import::{import, Format};

/// What `bench import` measured.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub dataset: PathBuf,
    /// Lines of the dataset.
    pub events: u64,
    pub duplicates: u64,
    pub seconds: f64,
    /// Lines imported per second.
    pub rate: f64,
    /// The process's peak resident memory right after the import (VmHWM).
    pub peak_memory_bytes: u64,
    pub profiles: u64,
    pub rerun_seconds: f64,
    pub rerun_rate: f64,
    pub store_url: String,
    pub tenant: TenantId,
    pub gate: Gate,
}

/// What `bench rebuild` measured.
#[derive(Debug, Clone)]
pub struct RebuildReport {
    pub events: u64,
    pub seconds: f64,
    pub rate: f64,
    pub gate: Gate,
}

/// The benchmark dataset: the one given, or a generated one (kept in the work directory and
/// reused while its size matches: the generator is deterministic).
pub async fn dataset(bench: &Bench) -> anyhow::Result<(PathBuf, u64)> {
    if let Some(path) = &bench.args.dataset {
        let lines = count_lines(path)?;
        println!("dataset {} ({lines} lines)", path.display());
        return Ok((path.clone(), lines));
    }
    let (events, people, seed) = (bench.args.events, bench.people(), bench.args.seed);
    std::fs::create_dir_all(&bench.args.work_dir)
        .with_context(|| format!("failed to create {}", bench.args.work_dir.display()))?;
    let path = bench.args.work_dir.join(format!("dataset-{events}e-{people}p-s{seed}.ndjson"));
    if path.exists() && count_lines(&path)? == events {
        println!("dataset {} reused ({events} events, {people} people)", path.display());
        return Ok((path, events));
    }
    let started = Instant::now();
    let target = path.clone();
    tokio::task::spawn_blocking(move || write_dataset(&target, events, people, seed)).await??;
    let seconds = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "dataset {} generated: {events} events, {people} people, {} MiB in {seconds:.1}s",
        path.display(),
        bytes >> 20
    );
    Ok((path, events))
}

fn write_dataset(path: &Path, events: u64, people: u32, seed: u64) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial).with_context(|| format!("failed to create {}", partial.display()))?;
    siyu_sim::generate_bench_dataset(events, people, seed, std::io::BufWriter::with_capacity(1 << 20, file))
        .context("failed to write the dataset")?;
    std::fs::rename(&partial, path).with_context(|| format!("failed to rename {}", partial.display()))?;
    Ok(())
}

pub async fn bench_import(bench: &Bench) -> anyhow::Result<ImportReport> {
    println!("\n# import");
    let (dataset, lines) = dataset(bench).await?;
    let url = bench.fresh_store_url("import")?;
    println!("store {}", bench.describe_store(&url));
    let store = siyu_store::open(&url).await.context("failed to open the store")?;
    let engine = Engine::start(store, bench.settings.engine_config()).await?;
    let created = engine.create_tenant(&bench.tenant_name("import"), Industry::ConsumerGoods).await?;
    let tenant = created.record.id;
    let rss_before = resident_memory_bytes().unwrap_or(0);

    let report = import_file(&engine, tenant, &dataset).await?;
    let peak = peak_memory_bytes().unwrap_or(0);
    let rate = report.lines as f64 / report.seconds.max(1e-9);
    println!(
        "import: {} lines, {} appended, {} duplicates, {} rejected in {:.2}s = {:.0} events/s",
        report.lines,
        report.accepted,
        report.duplicates,
        report.rejected.len(),
        report.seconds,
        rate
    );
    println!(
        "memory: peak {} MiB (VmHWM of the process; {} MiB resident before the import)",
        peak >> 20,
        rss_before >> 20
    );

    let mut gate = Gate::default();
    let stored = engine.logged_events(tenant).await?;
    let first_reject = report.rejected.first().map(|r| format!(": line {} {} {}", r.line, r.code, r.message));
    gate.check(
        report.rejected.is_empty(),
        format!("no line rejected ({} rejected{})", report.rejected.len(), first_reject.unwrap_or_default()),
    );
    gate.check(report.lines == lines, format!("the importer read every line ({} of {lines})", report.lines));
    gate.check(
        stored == lines.saturating_sub(report.duplicates),
        format!("events in the store ({stored}) = dataset lines ({lines}) − duplicates ({})", report.duplicates),
    );
    gate.check(report.accepted == stored, format!("appended ({}) = stored ({stored})", report.accepted));
    let runtime = engine.runtime(tenant)?;
    let (profiles, applied) = {
        let state = runtime.state.read();
        (state.live_profiles, state.event_count)
    };
    gate.check(applied == stored, format!("events applied to profiles ({applied}) = stored ({stored})"));
    // A person may show up under one identity per channel (a Douyin open id, a WeChat openid, a
    // WeCom external id …) that only a multi-identity event links, so profiles may outnumber
    // people — but never the identity kinds a person can have times the people.
    let people = u64::from(bench.people());
    let kinds = 9;
    if bench.args.dataset.is_none() {
        gate.check(
            profiles > 0 && profiles <= kinds * people,
            format!(
                "profiles plausible: 0 < {profiles} ≤ {kinds} identity kinds × {people} people ({:.2} profiles per person)",
                profiles as f64 / people as f64
            ),
        );
    } else {
        gate.check(profiles > 0 && profiles <= stored, format!("profiles plausible: 0 < {profiles} ≤ {stored} events"));
    }

    let rerun = import_file(&engine, tenant, &dataset).await?;
    let rerun_rate = rerun.lines as f64 / rerun.seconds.max(1e-9);
    let stored_after = engine.logged_events(tenant).await?;
    println!(
        "re-import of the same file: {} appended in {:.2}s = {:.0} events/s",
        rerun.accepted, rerun.seconds, rerun_rate
    );
    gate.check(
        rerun.accepted == 0 && stored_after == stored,
        format!("re-import is idempotent ({} appended, {stored_after} stored)", rerun.accepted),
    );

    let replayed = engine.replay_tenant(tenant).await?;
    let sample = bench.args.sample;
    let live = runtime.clone();
    let mismatches =
        tokio::task::spawn_blocking(move || verify_sample(&live.state.read(), &replayed, Millis::now(), sample))
            .await?;
    report_mismatches(&mut gate, "the live state equals a replay and the reference evaluator", &mismatches);
    drop(runtime);
    engine.shutdown();
    Ok(ImportReport {
        dataset,
        events: lines,
        duplicates: report.duplicates,
        seconds: report.seconds,
        rate,
        peak_memory_bytes: peak,
        profiles,
        rerun_seconds: rerun.seconds,
        rerun_rate,
        store_url: url,
        tenant,
        gate,
    })
}

pub(super) async fn import_file(
    engine: &Arc<Engine>,
    tenant: TenantId,
    path: &Path,
) -> anyhow::Result<crate::cmd::import::ImportReport> {
    let file = std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    import(engine, tenant, Box::new(file), Format::Ndjson, engine.config().time_limits, &ProgressBar::hidden()).await
}

pub fn report_mismatches(gate: &mut Gate, what: &str, mismatches: &[String]) {
    for m in mismatches.iter().take(5) {
        println!("  MISMATCH {m}");
    }
    gate.check(mismatches.is_empty(), format!("{what} ({} mismatches)", mismatches.len()));
}

/// Replays each tenant of the store `import` loaded (or of --database; `only` narrows it to one
/// tenant), twice, and checks the two agree with each other and with the reference evaluator.
pub async fn bench_rebuild(bench: &Bench, only: Option<(&str, TenantId)>) -> anyhow::Result<RebuildReport> {
    println!("\n# rebuild");
    let url = match (only, &bench.explicit_store) {
        (Some((url, _)), _) => url.to_string(),
        (None, Some(url)) => url.clone(),
        (None, None) => {
            let path = bench.work_dir_for("import").join("siyu.db");
            anyhow::ensure!(path.exists(), "no store at {}: run `siyu bench import` first", path.display());
            path.to_string_lossy().into_owned()
        }
    };
    println!("store {}", bench.describe_store(&url));
    let store = siyu_store::open(&url).await.context("failed to open the store")?;
    let mut tenants = store.tenants().await?;
    if let Some((_, id)) = only {
        tenants.retain(|t| t.id == id);
    }
    let mut gate = Gate::default();
    let (mut events, mut seconds) = (0u64, 0f64);
    for record in tenants {
        let stored = store.event_count(record.id).await?;
        let started = Instant::now();
        let state = siyu_engine::internals::replay(&store, record.id, record.settings.clone()).await?;
        let first = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let again = siyu_engine::internals::replay(&store, record.id, record.settings.clone()).await?;
        let second = started.elapsed().as_secs_f64();
        println!(
            "{}: {} events → {} profiles, {} merges; replay {first:.2}s = {:.0} events/s (again: {second:.2}s = {:.0} events/s)",
            record.name,
            state.event_count,
            state.live_profiles,
            state.merges.len(),
            state.event_count as f64 / first.max(1e-9),
            again.event_count as f64 / second.max(1e-9),
        );
        events += state.event_count;
        seconds += first;
        gate.check(
            state.event_count == stored,
            format!("{}: replayed {} of {stored} stored events", record.name, state.event_count),
        );
        let sample = bench.args.sample;
        let mismatches =
            tokio::task::spawn_blocking(move || verify_sample(&state, &again, Millis::now(), sample)).await?;
        report_mismatches(
            &mut gate,
            &format!("{}: two replays agree with each other and the reference evaluator", record.name),
            &mismatches,
        );
    }
    gate.check(events > 0, format!("something was replayed ({events} events)"));
    let rate = events as f64 / seconds.max(1e-9);
    println!("rebuild: {events} events in {seconds:.2}s = {rate:.0} events/s");
    Ok(RebuildReport { events, seconds, rate, gate })
}
