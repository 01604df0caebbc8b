//! `siyu bench TARGET`: measures one path of siyu (import, rebuild, HTTP ingestion, the in-memory
//! profile update, segments, reads of the past, campaigns and the outbox) and prints throughput
//! and latency. Every target first checks that the answer is right — a faster wrong answer counts
//! as zero — and exits non-zero with `CORRECTNESS FAILED` when it is not.

mod as_of;
mod check;
mod http;
mod load;
mod profile;
mod reach;
mod segments;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::settings::Settings;

pub use as_of::AsOfReport;
pub use http::{BatchReport, TrackReport};
pub use profile::ProfileReport;
pub use reach::ReachReport;
pub use segments::SegmentsReport;
pub use store::{ImportReport, RebuildReport};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to measure.
    #[arg(value_enum)]
    pub target: Target,
    /// Events in the generated benchmark dataset.
    #[arg(long, default_value_t = 10_000_000)]
    pub events: u64,
    /// People in the generated dataset (default: a tenth of --events).
    #[arg(long)]
    pub people: Option<u32>,
    /// Seed of the generated dataset.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Use this NDJSON file instead of generating one.
    #[arg(long, value_name = "FILE")]
    pub dataset: Option<PathBuf>,
    /// Where generated datasets and fresh SQLite stores go (unless --database is given).
    #[arg(long, value_name = "DIR", default_value = "bench-data")]
    pub work_dir: PathBuf,
    /// Concurrent connections of the closed-loop /v1/batch phase.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Concurrent connections of the closed-loop /v1/track phase: enough requests in flight for
    /// group commits to fill, as many SDK clients would.
    #[arg(long, default_value_t = 256)]
    pub track_connections: usize,
    /// Length of each HTTP phase, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Requests/s of the open-loop /v1/track phase (default: 80 % of the measured maximum).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Connections of the open-loop phase (requests in flight at once, at most).
    #[arg(long, default_value_t = 256)]
    pub open_connections: usize,
    /// Messages per /v1/batch body.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Threads of the load generator's own runtime (it shares the machine with the server).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Profiles compared with the reference evaluator in each correctness check.
    #[arg(long, default_value_t = 1000)]
    pub sample: usize,
    /// Runs of each timed segment evaluation (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub repeats: usize,
    /// A PostgreSQL server on which `segments` also runs its segments as SQL (in a scratch
    /// database, dropped afterwards); SQLite always does.
    #[arg(long, value_name = "URL")]
    pub compare_postgres: Option<String>,
    /// Contacts of each `reach` campaign through the WeCom connector to its stand-in (at most
    /// --people): one run with a message per person, one with identical text (10 000 a call).
    /// The dispatcher's staff-task bookkeeping grows with the square of the per-person run.
    #[arg(long, default_value_t = 2_000)]
    pub wecom_people: u32,
    /// The WeCom send account's rate limit (API calls/s) in `reach`.
    #[arg(long, default_value_t = 500)]
    pub wecom_rate: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Import,
    Rebuild,
    HttpBatch,
    HttpTrack,
    ProfileUpdate,
    Segments,
    AsOf,
    Reach,
    All,
}

/// What every target needs: the options, the settings, and where its stores live.
pub struct Bench {
    pub args: Args,
    pub settings: Settings,
    /// The store named by --database (or the configuration), when one was given; otherwise each
    /// target makes a fresh SQLite store under the work directory.
    pub explicit_store: Option<String>,
    /// Tells this run's tenants and message ids from earlier runs'.
    pub run_id: String,
}

impl Bench {
    pub fn new(settings: &Settings, args: Args) -> anyhow::Result<Bench> {
        anyhow::ensure!(args.events > 0, "--events must be positive");
        anyhow::ensure!(
            args.connections > 0 && args.track_connections > 0 && args.open_connections > 0,
            "connections must be positive"
        );
        anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
        anyhow::ensure!((1..=2500).contains(&args.batch_size), "--batch-size must be within 1..=2500");
        anyhow::ensure!(
            args.wecom_people > 0 && args.wecom_rate > 0,
            "--wecom-people and --wecom-rate must be positive"
        );
        let default_url = default_store_url()?;
        let explicit_store = (settings.store.url != default_url).then(|| settings.store.url.clone());
        let run_id = format!("{:x}", siyu_model::Millis::now().0);
        Ok(Bench { args, settings: settings.clone(), explicit_store, run_id })
    }

    pub fn people(&self) -> u32 {
        self.args.people.unwrap_or_else(|| (self.args.events / 10).clamp(1, u64::from(u32::MAX)) as u32)
    }

    /// The store URL for one purpose: the explicit store, or a fresh SQLite file.
    pub fn fresh_store_url(&self, purpose: &str) -> anyhow::Result<String> {
        if let Some(url) = &self.explicit_store {
            return Ok(url.clone());
        }
        let dir = self.work_dir_for(purpose);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| anyhow::anyhow!("failed to clear {}: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("failed to create {}: {e}", dir.display()))?;
        Ok(dir.join("siyu.db").to_string_lossy().into_owned())
    }

    /// Where the SQLite store of `purpose` lives when no store was given.
    pub fn work_dir_for(&self, purpose: &str) -> PathBuf {
        self.args.work_dir.join(purpose)
    }

    pub fn describe_store(&self, url: &str) -> String {
        let kind = if url.starts_with("postgres") { "PostgreSQL" } else { "SQLite" };
        format!("{kind} {}", super::redact(url))
    }

    pub fn tenant_name(&self, target: &str) -> String {
        format!("bench-{target}-{}", self.run_id)
    }
}

/// The store URL of the built-in defaults, to tell whether --database (or the config) named one.
fn default_store_url() -> anyhow::Result<String> {
    use figment::providers::{Format, Toml};
    let defaults: Settings = figment::Figment::new()
        .merge(Toml::string(crate::settings::EXAMPLE))
        .extract()
        .map_err(|e| anyhow::anyhow!("invalid built-in configuration: {e}"))?;
    Ok(defaults.store.url)
}

pub async fn run(settings: &Settings, args: Args) -> anyhow::Result<ExitCode> {
    let bench = Bench::new(settings, args)?;
    print_machine();
    let failures = match bench.args.target {
        Target::Import => store::bench_import(&bench).await?.gate.failures,
        Target::Rebuild => store::bench_rebuild(&bench, None).await?.gate.failures,
        Target::HttpBatch => http::bench_batch(&bench).await?.gate.failures,
        Target::HttpTrack => http::bench_track(&bench).await?.gate.failures,
        Target::ProfileUpdate => profile::bench_profile_update(&bench, None).await?.gate.failures,
        Target::Segments => segments::bench_segments(&bench).await?.gate.failures,
        Target::AsOf => as_of::bench_as_of(&bench).await?.gate.failures,
        Target::Reach => reach::bench_reach(&bench).await?.gate.failures,
        Target::All => run_all(&bench).await?.failures(),
    };
    Ok(conclude(&failures))
}

/// Prints the verdict; the exit code fails when any correctness check did.
fn conclude(failures: &[String]) -> ExitCode {
    if failures.is_empty() {
        println!("\nall correctness checks passed");
        return ExitCode::SUCCESS;
    }
    println!("\nCORRECTNESS FAILED ({} checks):", failures.len());
    for f in failures {
        println!("  - {f}");
    }
    ExitCode::FAILURE
}

fn print_machine() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "siyu bench {} — {cores} cores; in the HTTP targets the load generator and the server share them",
        env!("CARGO_PKG_VERSION")
    );
    if cfg!(debug_assertions) {
        println!("WARNING: a debug build; figures mean nothing (use cargo build --release)");
    }
}

/// Every target's results, for the summary.
pub struct AllReport {
    pub import: ImportReport,
    pub rebuild: RebuildReport,
    pub batch: BatchReport,
    pub track: TrackReport,
    pub profile: ProfileReport,
    pub segments: SegmentsReport,
    pub as_of: AsOfReport,
    pub reach: ReachReport,
}

impl AllReport {
    pub fn failures(&self) -> Vec<String> {
        [
            &self.import.gate,
            &self.rebuild.gate,
            &self.batch.gate,
            &self.track.gate,
            &self.profile.gate,
            &self.segments.gate,
            &self.as_of.gate,
            &self.reach.gate,
        ]
        .into_iter()
        .flat_map(|g| g.failures.iter().cloned())
        .collect()
    }
}

/// Runs every target in turn (rebuild and profile-update on the events import loaded) and prints
/// a markdown summary against the goals.
pub async fn run_all(bench: &Bench) -> anyhow::Result<AllReport> {
    let import = store::bench_import(bench).await?;
    let rebuild = store::bench_rebuild(bench, Some((&import.store_url, import.tenant))).await?;
    let batch = http::bench_batch(bench).await?;
    let track = http::bench_track(bench).await?;
    let profile = profile::bench_profile_update(bench, Some(&import)).await?;
    let segments = segments::bench_segments(bench).await?;
    let as_of = as_of::bench_as_of(bench).await?;
    let reach = reach::bench_reach(bench).await?;
    let all = AllReport { import, rebuild, batch, track, profile, segments, as_of, reach };
    print_summary(bench, &all);
    Ok(all)
}

/// One line of the summary: a measure against its goal.
struct Goal {
    name: &'static str,
    measured: f64,
    goal: f64,
    unit: &'static str,
    /// Higher is better (throughput) or lower is better (latency, memory, cost).
    higher_is_better: bool,
    correct: bool,
}

impl Goal {
    /// How far past the goal, as a factor: ≥ 1 meets it, whichever direction is better.
    fn ratio(&self) -> f64 {
        if self.higher_is_better {
            self.measured / self.goal
        } else {
            self.goal / self.measured.max(f64::MIN_POSITIVE)
        }
    }

    fn verdict(&self) -> &'static str {
        if !self.correct {
            "FAIL (wrong)"
        } else if self.ratio() >= 1.0 {
            "PASS"
        } else {
            "MISS"
        }
    }
}

fn print_summary(bench: &Bench, all: &AllReport) {
    let gib = 1024.0 * 1024.0 * 1024.0;
    let goals = [
        Goal {
            name: "import throughput",
            measured: all.import.rate,
            goal: 500_000.0,
            unit: "events/s",
            higher_is_better: true,
            correct: all.import.gate.passed(),
        },
        Goal {
            name: "import peak memory",
            measured: all.import.peak_memory_bytes as f64 / gib,
            goal: 2.0,
            unit: "GiB",
            higher_is_better: false,
            correct: all.import.gate.passed(),
        },
        Goal {
            name: "rebuild (replay)",
            measured: all.rebuild.rate,
            goal: 2_000_000.0,
            unit: "events/s",
            higher_is_better: true,
            correct: all.rebuild.gate.passed(),
        },
        Goal {
            name: "/v1/batch (100 events/body)",
            measured: all.batch.events_per_second,
            goal: 250_000.0,
            unit: "events/s",
            higher_is_better: true,
            correct: all.batch.gate.passed(),
        },
        Goal {
            name: "/v1/track max (closed loop)",
            measured: all.track.closed.requests_per_second,
            goal: 30_000.0,
            unit: "req/s",
            higher_is_better: true,
            correct: all.track.gate.passed(),
        },
        Goal {
            name: "/v1/track p99 at the open-loop rate",
            measured: all.track.open.latency.p99_ms(),
            goal: 5.0,
            unit: "ms",
            higher_is_better: false,
            correct: all.track.gate.passed(),
        },
        Goal {
            name: "profile update CPU",
            measured: all.profile.cpu_ns_per_event / 1000.0,
            goal: 1.0,
            unit: "µs/event",
            higher_is_better: false,
            correct: all.profile.gate.passed(),
        },
    ];
    let goals: Vec<Goal> = goals
        .into_iter()
        .chain(segments::goals(&all.segments))
        .chain(as_of::goals(&all.as_of))
        .chain(reach::goals(&all.reach))
        .collect();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!();
    println!("## siyu bench all — summary");
    println!();
    println!(
        "{} events / {} people, {} store, {cores} cores shared by server and load generator, \
         {} connections, {} s per HTTP phase, open-loop rate {:.0} req/s.",
        all.import.events,
        bench.people(),
        if bench.explicit_store.as_deref().is_some_and(|u| u.starts_with("postgres")) {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        bench.args.connections,
        bench.args.seconds,
        all.track.open.target_rate
    );
    println!();
    println!("| measure | measured | goal | ratio | result |");
    println!("|---|---:|---:|---:|---|");
    for g in &goals {
        let cmp = if g.higher_is_better { "≥" } else { "≤" };
        println!(
            "| {} | {} {} | {cmp} {} {} | {:.2}× | {} |",
            g.name,
            fmt_num(g.measured),
            g.unit,
            fmt_num(g.goal),
            g.unit,
            g.ratio(),
            g.verdict()
        );
    }
    println!();
    println!("Other figures:");
    println!(
        "- import: {} events → {} profiles in {:.2} s; idempotent re-run {:.2} s ({:.0} events/s), 0 appended",
        all.import.events, all.import.profiles, all.import.seconds, all.import.rerun_seconds, all.import.rerun_rate
    );
    println!("- rebuild: {} events replayed in {:.2} s", all.rebuild.events, all.rebuild.seconds);
    println!(
        "- /v1/batch: {} bodies, {} events acknowledged in {:.1} s, {} errors; per body p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.batch.requests,
        all.batch.events_acked,
        all.batch.seconds,
        all.batch.errors,
        all.batch.latency.p50_ms(),
        all.batch.latency.p90_ms(),
        all.batch.latency.p99_ms(),
        all.batch.latency.max_ms()
    );
    println!(
        "- /v1/track closed loop: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        all.track.closed.latency.p50_ms(),
        all.track.closed.latency.p99_ms(),
        all.track.closed.latency.p999_ms(),
        all.track.closed.latency.max_ms()
    );
    println!(
        "- /v1/track open loop at {:.0} req/s (achieved {:.0}): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        all.track.open.target_rate,
        all.track.open.requests_per_second,
        all.track.open.latency.p50_ms(),
        all.track.open.latency.p99_ms(),
        all.track.open.latency.p999_ms(),
        all.track.open.latency.max_ms()
    );
    println!(
        "- visible within (ack → profile shows the event): p99 {:.3} ms, max {:.3} ms over {} acks, {} never visible",
        all.track.visible.p99_ms(),
        all.track.visible.max_ms(),
        all.track.visible.count,
        all.track.never_visible
    );
    println!(
        "- profile update: {:.0} ns/event wall, {:.0} ns/event CPU over {} events ({:.2} s in apply)",
        all.profile.wall_ns_per_event, all.profile.cpu_ns_per_event, all.profile.events, all.profile.seconds
    );
    for e in &all.segments.evaluations {
        let sql: Vec<String> = e
            .sql
            .iter()
            .map(|s| format!("{} {:.1} ms ({:.1}×)", s.backend, s.median_ms, s.median_ms / e.median_ms.max(1e-6)))
            .collect();
        println!("- segment {} `{}`: {} members; as SQL: {}", e.name, e.condition, e.size, sql.join(", "));
    }
    println!(
        "- as of {}: lookup p50 {:.3} ms (now {:.3} ms); summary {:.1} ms (now {:.1} ms) over {} profiles, {} existing then",
        all.as_of.as_of,
        all.as_of.lookup_past.p50_ms(),
        all.as_of.lookup_now.p50_ms(),
        all.as_of.summary_past_ms,
        all.as_of.summary_now_ms,
        all.as_of.profiles,
        all.as_of.profiles_then
    );
    let reach = &all.reach;
    println!(
        "- reach: {} people; dry run {:.0} recipients/s; same-day second campaign (daily cap) {:.0} recipients/s; outbox {} sends in {:.2} s",
        reach.people,
        reach.dry_run.rate(),
        reach.capped.rate(),
        reach.outbox.messages,
        reach.outbox.seconds
    );
    for w in &reach.wecom {
        println!(
            "- WeCom stand-in, {}: {} recipients in {} calls ({} bursts), {:.1} calls/s while sending at a limit of {}/s, {:.0} recipients/s end to end",
            w.mode,
            w.recipients,
            w.calls,
            w.bursts,
            w.call_rate(),
            w.configured_rate,
            w.recipients_per_second()
        );
    }
    println!(
        "- ratio: measured/goal for throughput, goal/measured for latency, memory and CPU (≥ 1.00× meets the goal)"
    );
}

fn fmt_num(x: f64) -> String {
    if x >= 100_000.0 {
        format!("{:.0} k", x / 1000.0)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{FlagOverrides, StoreFlag};

    /// `bench all`, scaled way down, through the same functions the command runs: keeps every
    /// benchmark runnable and its correctness gates green in CI.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bench_all_scaled_down_passes_every_correctness_gate() {
        let dir = tempfile::tempdir().unwrap();
        // The default store URL: the benchmark uses fresh stores in the work directory, whatever
        // DATABASE_URL the environment holds.
        let flags = FlagOverrides { store: Some(StoreFlag { url: default_store_url().unwrap() }), server: None };
        let settings = Settings::load(None, flags).unwrap();
        let args = Args {
            target: Target::All,
            events: 20_000,
            people: Some(2_000),
            seed: 7,
            dataset: None,
            work_dir: dir.path().to_path_buf(),
            connections: 4,
            track_connections: 8,
            seconds: 1.0,
            rate: Some(300.0),
            open_connections: 16,
            batch_size: 100,
            client_threads: 1,
            sample: 200,
            repeats: 2,
            compare_postgres: std::env::var(siyu_store::scratch::TEST_DATABASE_URL).ok(),
            wecom_people: 300,
            wecom_rate: 2_000,
        };
        let bench = Bench::new(&settings, args).unwrap();
        assert!(bench.explicit_store.is_none());
        let all = run_all(&bench).await.unwrap();
        assert_eq!(all.failures(), Vec::<String>::new());
        assert_eq!(all.import.events, 20_000);
        assert!(all.batch.events_acked > 0 && all.batch.events_acked % 100 == 0);
        assert!(all.track.closed.requests > 0 && all.track.open.requests > 0);
        assert_eq!(all.profile.events, 20_000);
        assert_eq!(all.track.visible.count, all.track.open.requests);
        assert_eq!(all.segments.evaluations.len(), 3);
        // At this scale hardly anyone is a true fan or matches five windows; fields find some.
        assert!(all.segments.evaluation("fields").is_some_and(|e| e.size > 0));
        let backends = if std::env::var(siyu_store::scratch::TEST_DATABASE_URL).is_ok() { 2 } else { 1 };
        assert!(all.segments.evaluations.iter().all(|e| e.sql.len() == backends));
        assert!(all.segments.visible.count > 0);
        assert!(all.as_of.profiles_then > 0 && all.as_of.profiles_then < all.as_of.profiles);
        assert!(all.as_of.lookup_past.count > 0);
        assert_eq!(all.reach.people, 2_000);
        assert!(all.reach.plan.queued > 0 && all.reach.outbox.messages == all.reach.plan.queued);
        // The second campaign reaches exactly the open people the first kept in its holdout.
        assert_eq!(all.reach.plan.queued + all.reach.capped.queued, all.reach.dry_run.queued);
        assert!(all.reach.wecom.iter().all(|w| w.recipients == 300));
    }

    #[test]
    fn goals_compare_in_the_right_direction() {
        let fast = Goal { name: "x", measured: 600.0, goal: 500.0, unit: "", higher_is_better: true, correct: true };
        assert_eq!(fast.verdict(), "PASS");
        let slow = Goal { name: "x", measured: 10.0, goal: 5.0, unit: "", higher_is_better: false, correct: true };
        assert_eq!(slow.verdict(), "MISS");
        assert!((slow.ratio() - 0.5).abs() < 1e-9);
        let wrong = Goal { correct: false, ..fast };
        assert_eq!(wrong.verdict(), "FAIL (wrong)");
    }
}
