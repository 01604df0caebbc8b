//! `segments`: tags and segments at scale (issue 3 §5). On the benchmark dataset, loaded through
//! the import path into a real engine:
//! - full evaluations (save, preview, sweep) of a segment over profile fields and of two
//!   5-clause segments with event windows, each compared with the same segment written as SQL
//!   over the same data in SQLite and (with `--compare-postgres`) PostgreSQL;
//! - how soon a new event shows in a segment's membership, through `Engine::ingest`, with 50
//!   segments active;
//! - the CPU that keeping those 50 segments current costs per ingested event.
//!
//! Every figure is gated: the full evaluation equals the one-profile-at-a-time path and the
//! reference evaluator (on a sample), the SQL answers equal ours, memberships kept event by event
//! equal a full evaluation, and a probed event is in its segment when acknowledged.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;
use siyu_engine::internals::{cheapest_first, Evaluator, Members};
use siyu_engine::internals::{TenantRuntime, TenantState};
use siyu_engine::segments::ops::TagAction;
use siyu_engine::Engine;
use siyu_model::condition::{compile, evaluate, Condition};
use siyu_model::event::{parse_native, TimeLimits};
use siyu_model::{Event, EventType, Industry, Millis, ProfileId, TenantId};
use siyu_store::segment_sql::{tier_code, SegmentQuery, SegmentSql, SqlEvent, SqlProfile, SqlTarget};

use super::check::{thread_cpu_ns, Gate};
use super::load::Latency;
use super::store::{dataset, import_file};
use super::Bench;

/// `tier >= warm_fan and reachable`: profile fields only.
pub const FIELDS: &str = "tier >= warm_fan and reachable";
/// The issue's own example: fields, RFM, an order window, a tag and the last message.
pub const EXAMPLE: &str = "tier = true_fan and rfm in (重要价值, 重要保持) and count(order_paid, 365d) >= 2 \
                           and not tagged(\"已流失\") and last(message_out) before 30d ago";
/// Event windows only, plus a channel: every clause reads the facts.
pub const WINDOWS: &str = "count(live_watch, 30d) >= 1 and sum(order_paid, 365d) > 100 \
                           and last(message_out) before 30d ago and channel = wecom and count(like, 90d) >= 1";
/// The manual tag the example reads; every tenth profile carries it.
const LOST: &str = "已流失";
/// Segments active while the latency and the per-event cost are measured.
const ACTIVE: usize = 50;
/// The latency probe's segment: the probed profiles are not in it until their probe arrives.
const PROBE: &str = "count(lead_submit, 1d) >= 1";

/// One segment's full evaluation, ours and in SQL.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub name: &'static str,
    pub condition: &'static str,
    pub members: Members,
    pub size: u64,
    pub best_ms: f64,
    pub median_ms: f64,
    pub sql: Vec<SqlFigure>,
}

/// The same segment as SQL on one back-end.
#[derive(Debug, Clone)]
pub struct SqlFigure {
    pub backend: &'static str,
    pub best_ms: f64,
    pub median_ms: f64,
}

/// What `bench segments` measured.
#[derive(Debug, Clone)]
pub struct SegmentsReport {
    pub profiles: u64,
    pub events: u64,
    pub evaluations: Vec<Evaluation>,
    /// Event to membership, through `Engine::ingest`, with `ACTIVE` segments.
    pub visible: Latency,
    /// CPU of `apply` + `refresh_memberships` per event, without and with the active segments.
    pub bare_ns_per_event: f64,
    pub kept_ns_per_event: f64,
    pub incremental_events: u64,
    pub gate: Gate,
}

impl SegmentsReport {
    /// What keeping the active segments current adds per event, in µs.
    pub fn segments_us_per_event(&self) -> f64 {
        (self.kept_ns_per_event - self.bare_ns_per_event).max(0.0) / 1000.0
    }

    pub fn evaluation(&self, name: &str) -> Option<&Evaluation> {
        self.evaluations.iter().find(|e| e.name == name)
    }
}

pub async fn bench_segments(bench: &Bench) -> anyhow::Result<SegmentsReport> {
    println!("\n# segments");
    let (path, lines) = dataset(bench).await?;
    let mut gate = Gate::default();
    // The dataset's last events are held back for the per-event phase.
    let held_back = (lines / 10).clamp(2, 200_000) as usize;
    let (head, tail) = split_dataset(&path, lines - held_back as u64).await?;
    let t = tail.iter().map(|e| e.timestamp).max().unwrap_or_else(Millis::now);

    let url = bench.fresh_store_url("segments")?;
    println!("store {}", bench.describe_store(&url));
    let store = siyu_store::open(&url).await.context("failed to open the store")?;
    let engine = Engine::start(store, bench.settings.engine_config()).await?;
    let tenant = engine.create_tenant(&bench.tenant_name("segments"), Industry::ConsumerGoods).await?.record.id;
    let started = Instant::now();
    let imported = import_file(&engine, tenant, &head).await?;
    gate.check(imported.rejected.is_empty(), format!("every line imported ({} rejected)", imported.rejected.len()));
    println!("loaded {} events through the import path in {:.1}s", imported.accepted, started.elapsed().as_secs_f64());
    tag_every_tenth(&engine, tenant).await?;
    let runtime = engine.runtime(tenant)?;
    let (profiles, events) = {
        let state = runtime.state.read();
        (state.live_profiles, state.event_count)
    };
    println!("{profiles} profiles, {events} events; evaluation time {}", t.to_rfc3339());

    let evaluations = {
        let runtime = runtime.clone();
        let sample = bench.args.sample;
        let repeats = bench.args.repeats;
        tokio::task::spawn_blocking(move || evaluate_all(&runtime.state.read(), t, repeats, sample)).await??
    };
    let mut evaluations: Vec<Evaluation> = evaluations
        .into_iter()
        .map(|(evaluation, failures)| {
            for failure in failures {
                gate.check(false, failure);
            }
            evaluation
        })
        .collect();
    gate.check(true, "full evaluations equal one profile at a time and the reference evaluator (sample)");
    compare_with_sql(bench, &runtime, t, &mut evaluations, &mut gate).await?;

    let visible = probe_latency(&engine, tenant, &mut gate).await?;
    engine.shutdown();

    let (bare, kept, failures) = {
        let runtime = runtime.clone();
        tokio::task::spawn_blocking(move || per_event_cost(&mut runtime.state.write(), tail, t)).await?
    };
    for failure in &failures {
        gate.check(false, failure.clone());
    }
    gate.check(
        failures.is_empty(),
        format!("{ACTIVE} memberships kept event by event equal full evaluations (then, after a sweep, with RFM)"),
    );
    let report = SegmentsReport {
        profiles,
        events,
        evaluations,
        visible,
        bare_ns_per_event: bare,
        kept_ns_per_event: kept,
        incremental_events: (held_back / 2) as u64,
        gate,
    };
    print_report(&report);
    Ok(report)
}

/// Writes the first `head_lines` lines of the dataset to a file of their own (what the engine
/// imports) and parses the rest.
async fn split_dataset(path: &std::path::Path, head_lines: u64) -> anyhow::Result<(std::path::PathBuf, Vec<Event>)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, Write};
        let head = path.with_extension(format!("head{head_lines}.ndjson"));
        let reader = std::io::BufReader::new(
            std::fs::File::open(&path).with_context(|| format!("failed to open {}", path.display()))?,
        );
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&head).with_context(|| format!("failed to create {}", head.display()))?,
        );
        let mut tail = Vec::new();
        let now = Millis::now();
        for (i, line) in reader.lines().enumerate() {
            let line = line.context("failed to read the dataset")?;
            if (i as u64) < head_lines {
                writeln!(out, "{line}")?;
            } else if !line.trim().is_empty() {
                let event = parse_native(line.trim_end(), now, TimeLimits::default())
                    .map_err(|e| anyhow::anyhow!("dataset line {}: {e}", i + 1))?;
                tail.push(event);
            }
        }
        out.flush()?;
        Ok((head, tail))
    })
    .await?
}

/// Creates the manual tag the example reads and puts it on every tenth profile, through the API.
async fn tag_every_tenth(engine: &Arc<Engine>, tenant: TenantId) -> anyhow::Result<()> {
    engine.create_tag(tenant, LOST, None, None).await?;
    let ids: Vec<ProfileId> = engine.runtime(tenant)?.state.read().profile_ids().step_by(10).collect();
    for chunk in ids.chunks(10_000) {
        engine.tag_profiles(tenant, chunk, &[(LOST.to_string(), TagAction::Add)], "bench").await?;
    }
    Ok(())
}

/// Times each benchmark segment's full evaluation; returns it with the checks that failed.
fn evaluate_all(
    state: &TenantState,
    t: Millis,
    repeats: usize,
    sample: usize,
) -> anyhow::Result<Vec<(Evaluation, Vec<String>)>> {
    let mut out = Vec::new();
    for (name, text) in [("fields", FIELDS), ("example", EXAMPLE), ("windows", WINDOWS)] {
        let condition = compile(text, &state.schema()).map_err(|e| anyhow::anyhow!("{text}: {e:?}"))?;
        let ordered = cheapest_first(&condition);
        let tenant_wide = condition.dependencies().tenant_wide;
        let mut times = Vec::with_capacity(repeats);
        let mut members = Members::default();
        for _ in 0..repeats.max(1) {
            // What saving or previewing does: the RFM means (when read), then the scan.
            let started = Instant::now();
            let means = if tenant_wide { state.rfm_means(t) } else { Default::default() };
            members = Evaluator::new(state, t, &means).select(&ordered);
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let means = state.rfm_means(t);
        let failures = check_members(state, &condition, &members, t, &means, sample);
        let (best_ms, median_ms) = best_and_median(&mut times);
        println!(
            "{name}: {} members of {} profiles in {median_ms:.1} ms (median of {}, best {best_ms:.1} ms): {text}",
            members.size(),
            state.live_profiles,
            times.len()
        );
        out.push((
            Evaluation { name, condition: text, size: members.size(), members, best_ms, median_ms, sql: Vec::new() },
            failures,
        ));
    }
    Ok(out)
}

/// The full evaluation against one profile at a time (every profile) and the reference
/// evaluator (`sample` profiles spread over the ids).
fn check_members(
    state: &TenantState,
    condition: &Condition,
    members: &Members,
    t: Millis,
    means: &siyu_model::score::RfmMeans,
    sample: usize,
) -> Vec<String> {
    let mut failures = Vec::new();
    let evaluator = Evaluator::new(state, t, means);
    let one_by_one = state.live().filter(|id| evaluator.matches(condition, id));
    if &one_by_one != members {
        failures.push(format!(
            "{condition:?}: {} members at once, {} one at a time",
            members.size(),
            one_by_one.size()
        ));
    }
    let step = (state.live_profiles as usize / sample.max(1)).max(1);
    for id in state.profile_ids().step_by(step) {
        let Some((snapshot, events)) = state.reference_view(id, t, means) else { continue };
        if evaluate(condition, &snapshot, &events, t) != members.contains(id) {
            failures.push(format!("profile {id}: the reference evaluator disagrees on {condition:?}"));
            break;
        }
    }
    failures
}

fn best_and_median(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[0], times[times.len() / 2])
}

/// Loads the same profiles (materialised at `t`, as a SQL CDP's batch job would) and their
/// events into SQLite and, when asked, PostgreSQL, and runs each segment written as SQL.
async fn compare_with_sql(
    bench: &Bench,
    runtime: &Arc<TenantRuntime>,
    t: Millis,
    evaluations: &mut [Evaluation],
    gate: &mut Gate,
) -> anyhow::Result<()> {
    let sqlite = bench.work_dir_for("segments").join("segments-sql.db");
    let mut targets = vec![(SqlTarget::Sqlite(sqlite), None)];
    if let Some(server) = &bench.args.compare_postgres {
        let scratch = siyu_store::scratch::ScratchDatabase::create(server)
            .await
            .context("failed to create a scratch PostgreSQL database for the comparison")?;
        targets.push((SqlTarget::Postgres(scratch.url.clone()), Some(scratch)));
    } else {
        println!("(PostgreSQL comparison skipped: pass --compare-postgres postgres://…)");
    }
    let means = runtime.state.read().rfm_means(t);
    for (target, scratch) in targets {
        let mut sql = SegmentSql::open(&target).await?;
        let backend = sql.backend_name();
        let loaded = sql.load(sql_profiles(runtime, t, means), sql_events(runtime)).await?;
        println!(
            "{backend}: loaded {} profiles and {} events in {:.1}s, indexed in {:.1}s",
            loaded.profiles, loaded.events, loaded.seconds, loaded.index_seconds
        );
        for evaluation in evaluations.iter_mut() {
            let query = match evaluation.name {
                "fields" => SegmentQuery::fields(t.0),
                "example" => SegmentQuery::example(t.0),
                _ => SegmentQuery::windows(t.0),
            };
            let run = sql.run(&query, bench.args.repeats.min(3)).await?;
            let ours: Vec<i64> = evaluation.members.iter().map(i64::from).collect();
            gate.check(
                run.ids == ours,
                format!(
                    "{backend} answers {} as we do ({} rows, {} members)",
                    evaluation.name,
                    run.ids.len(),
                    ours.len()
                ),
            );
            println!(
                "{backend} {}: {:.1} ms (median, best {:.1} ms) = {:.1}× ours",
                evaluation.name,
                run.median_ms,
                run.best_ms,
                run.median_ms / evaluation.median_ms.max(1e-6)
            );
            evaluation.sql.push(SqlFigure { backend, best_ms: run.best_ms, median_ms: run.median_ms });
        }
        if let Some(scratch) = scratch {
            drop(sql);
            scratch.drop_database().await;
        }
    }
    Ok(())
}

/// Rows for the SQL comparison, made from the state 10 000 profiles at a time under short read
/// locks: the engine runs on (its sweeper included) while the rows stream out.
struct Rows<T, F> {
    runtime: Arc<TenantRuntime>,
    ids: Vec<ProfileId>,
    next_id: usize,
    buffer: std::vec::IntoIter<T>,
    make: F,
}

impl<T, F: Fn(&TenantState, ProfileId, &mut Vec<T>)> Rows<T, F> {
    fn new(runtime: &Arc<TenantRuntime>, make: F) -> Rows<T, F> {
        let ids = runtime.state.read().profile_ids().collect();
        Rows { runtime: runtime.clone(), ids, next_id: 0, buffer: Vec::new().into_iter(), make }
    }
}

impl<T, F: Fn(&TenantState, ProfileId, &mut Vec<T>)> Iterator for Rows<T, F> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(row) = self.buffer.next() {
                return Some(row);
            }
            if self.next_id >= self.ids.len() {
                return None;
            }
            let end = (self.next_id + 10_000).min(self.ids.len());
            let state = self.runtime.state.read();
            let mut rows = Vec::new();
            for &id in &self.ids[self.next_id..end] {
                (self.make)(&state, id, &mut rows);
            }
            self.next_id = end;
            self.buffer = rows.into_iter();
        }
    }
}

/// The profiles materialised at `t`, as a SQL CDP's batch job would leave them.
fn sql_profiles(
    runtime: &Arc<TenantRuntime>,
    t: Millis,
    means: siyu_model::score::RfmMeans,
) -> impl Iterator<Item = SqlProfile> + Send {
    Rows::new(runtime, move |state: &TenantState, id, out: &mut Vec<SqlProfile>| {
        let (Some(scores), Some(profile)) = (state.scores_at(id, t), state.profile(id)) else { return };
        out.push(SqlProfile {
            id: i64::from(id),
            tier: tier_code(scores.tier),
            reachable: scores.reachable,
            affinity: scores.affinity,
            rfm: scores.rfm.map(|input| means.group(&input).label_zh().to_string()),
            channels: i32::from(profile.state.channels),
            tags: profile.tags.iter().filter_map(|tag| state.segments.tag_name(*tag)).map(str::to_string).collect(),
        });
    })
}

/// Every event of every profile, as raw rows.
fn sql_events(runtime: &Arc<TenantRuntime>) -> impl Iterator<Item = SqlEvent> + Send {
    Rows::new(runtime, |state: &TenantState, id, out: &mut Vec<SqlEvent>| {
        let facts = state.profile(id).map_or(&[][..], |p| &p.facts[..]);
        out.extend(facts.iter().map(|f| SqlEvent {
            profile_id: i64::from(id),
            // The benchmark dataset holds canonical types only.
            event_type: EventType::from_code(f.code).map_or("custom", EventType::as_str),
            ts: f.ts.0,
            amount: f.amount.0,
            channel: i16::from(f.channel.code()),
        }));
    })
}

/// The active segments: the three benchmark segments and variants of them (other thresholds,
/// windows, tiers and channels), as an operator's list grows. The last is the latency probe.
fn active_segments() -> Vec<String> {
    let mut out: Vec<String> = vec![FIELDS.into(), EXAMPLE.into(), WINDOWS.into()];
    let tiers = ["passerby", "warm_fan", "true_fan"];
    let windows = ["7d", "30d", "90d", "365d"];
    for (i, window) in windows.iter().enumerate() {
        out.push(format!("count(live_watch, {window}) >= {}", i + 1));
        out.push(format!("sum(order_paid, {window}) > {}", 50 * (i + 1)));
        out.push(format!("last(message_out) before {window} ago and pool_stage = main_base"));
        out.push(format!("count(like, {window}) >= 2 and channel = douyin"));
        out.push(format!("tier >= {} and count(comment, {window}) >= 1", tiers[i % 3]));
        out.push(format!("not tagged(\"{LOST}\") and last(order_paid) within {window}"));
    }
    for tier in tiers {
        out.push(format!("tier = {tier} and reachable"));
        out.push(format!("tier >= {tier} and ownership in (L2, L3)"));
        out.push(format!("tier < {tier} and count(view, 30d) >= 3"));
    }
    out.push("rfm in (重要价值, 重要发展) and not tagged(\"已流失\")".into());
    out.push("rfm = 一般挽留 and last(message_out) before 60d ago".into());
    out.push("has(phone) and net_revenue >= 500".into());
    out.push("paid_orders >= 2 and pool_stage = main_base".into());
    out.push("channel = wecom and first_seen after 90d ago".into());
    out.push("count(wecom_add, all) >= 1 and not reachable".into());
    out.push("count(coupon_claimed, 30d) >= 1 and count(coupon_redeemed, 30d) = 0".into());
    out.push("last_seen before 60d ago and tier >= warm_fan".into());
    out.push("ownership = L3 and count(order_paid, 90d) >= 1".into());
    out.push("pool_stage in (reservoir, incentive) and count(message_in, 30d) >= 1".into());
    out.push("affinity >= 20 and not reachable".into());
    out.push("count(share, 90d) >= 1 or count(referral, 365d) >= 1".into());
    out.push("count(live_gift, 30d) >= 1 and tier >= warm_fan".into());
    out.push("orders_365d >= 3".into());
    out.truncate(ACTIVE - 1);
    out.push(PROBE.into());
    assert_eq!(out.len(), ACTIVE);
    out
}

/// Creates the active segments through the API, then sends one event at a time that puts a
/// profile into the probe segment, timing each from the call to its acknowledgement — by
/// which time the membership must show it.
async fn probe_latency(engine: &Arc<Engine>, tenant: TenantId, gate: &mut Gate) -> anyhow::Result<Latency> {
    let started = Instant::now();
    let mut probe_id = 0;
    for (i, text) in active_segments().iter().enumerate() {
        let view = engine.create_segment(tenant, &format!("bench-{i}"), text).await?;
        probe_id = view.id;
    }
    println!("created {ACTIVE} segments through the API in {:.1}s", started.elapsed().as_secs_f64());
    let targets: Vec<(ProfileId, String, String)> = {
        let runtime = engine.runtime(tenant)?;
        let state = runtime.state.read();
        let probe = state.segments.segment(probe_id).context("the probe segment")?;
        let step = (state.live_profiles / 1000).max(1) as usize;
        state
            .profile_ids()
            .step_by(step)
            .filter(|id| !probe.members.contains(*id))
            .filter_map(|id| {
                let link = state.profile(id)?.identities.first()?;
                Some((id, link.identity.kind.as_str().to_string(), link.identity.value.clone()))
            })
            .collect()
    };
    let mut histogram = Histogram::<u64>::new(3).expect("valid histogram");
    let mut missed = 0u64;
    for (i, (id, kind, value)) in targets.iter().enumerate() {
        let now = Millis::now();
        let line = serde_json::json!({
            "message_id": format!("probe-{i}-{}", now.0),
            "type": "lead_submit",
            "channel": "web",
            "identities": { kind.as_str(): value },
            "timestamp": now.to_rfc3339(),
        })
        .to_string();
        let event = parse_native(&line, now, TimeLimits::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let sent = Instant::now();
        engine.ingest(tenant, "bench", vec![event]).await?;
        histogram.record(sent.elapsed().as_micros() as u64).expect("in range");
        let member = engine.profile_segments(tenant, *id)?.iter().any(|s| s.id == probe_id);
        missed += u64::from(!member);
    }
    let latency = Latency::of(&histogram);
    println!(
        "event → membership (Engine::ingest, {ACTIVE} segments): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} events",
        latency.p50_ms(),
        latency.p99_ms(),
        latency.max_ms(),
        latency.count
    );
    gate.check(
        missed == 0 && latency.count > 0,
        format!("every probe was in its segment when acknowledged ({missed} of {} not)", latency.count),
    );
    Ok(latency)
}

/// CPU per event of `apply` and `refresh_memberships`, refreshing after every event (the pipeline
/// refreshes once per group commit, so this is the worst case): the first half of `events`
/// without segments, the second with the active ones. Returns both and the checks that failed.
fn per_event_cost(state: &mut TenantState, events: Vec<Event>, t: Millis) -> (f64, f64, Vec<String>) {
    // Regrade everything at `t` (the engine evaluated at the wall clock).
    state.sweep_entries(t);
    let (bare, kept) = events.split_at(events.len() / 2);
    let segments = std::mem::take(&mut state.segments.entries);
    let bare_ns = apply_all(state, bare, t);
    state.segments.entries = segments;
    // Memberships of the profiles the first half touched are evaluated afresh, untimed.
    let ids: Vec<i64> = state.segments.entries.iter().map(|s| s.record.id).collect();
    for id in ids {
        state.evaluate_segment(id, t, None);
    }
    let kept_ns = apply_all(state, kept, t);
    println!(
        "per event (apply + refresh, CPU): {:.2} µs without segments, {:.2} µs with {ACTIVE} = {:.2} µs for the segments ({} events each)",
        bare_ns / 1000.0,
        kept_ns / 1000.0,
        (kept_ns - bare_ns).max(0.0) / 1000.0,
        kept.len()
    );
    let mut failures = Vec::new();
    let check = |state: &TenantState, tenant_wide: bool, failures: &mut Vec<String>| {
        let means = state.rfm_means(t);
        let evaluator = Evaluator::new(state, t, &means);
        for segment in state.segments.entries.iter().filter(|s| s.deps.tenant_wide == tenant_wide) {
            let Some(condition) = &segment.condition else { continue };
            let full = evaluator.select(condition);
            if full != segment.members {
                failures.push(format!(
                    "segment {:?}: {} kept incrementally, {} in full",
                    segment.record.condition,
                    segment.members.size(),
                    full.size()
                ));
            }
        }
    };
    check(state, false, &mut failures);
    state.sweep_entries(t);
    check(state, true, &mut failures);
    (bare_ns, kept_ns, failures)
}

fn apply_all(state: &mut TenantState, events: &[Event], t: Millis) -> f64 {
    let cpu = thread_cpu_ns().unwrap_or(0);
    let mut seq = state.applied_seq;
    for event in events {
        seq += 1;
        state.apply(seq, event);
        state.refresh_memberships(t);
    }
    thread_cpu_ns().unwrap_or(0).saturating_sub(cpu) as f64 / events.len().max(1) as f64
}

/// The goals, for `bench all`'s summary.
pub(super) fn goals(report: &SegmentsReport) -> Vec<super::Goal> {
    let correct = report.gate.passed();
    let mut goals = Vec::new();
    for (name, label, goal) in [
        ("fields", "segment over profile fields (full)", 20.0),
        ("example", "5-clause segment, issue example (full)", 200.0),
        ("windows", "5-clause segment, event windows (full)", 200.0),
    ] {
        if let Some(e) = report.evaluation(name) {
            goals.push(super::Goal {
                name: label,
                measured: e.median_ms,
                goal,
                unit: "ms",
                higher_is_better: false,
                correct,
            });
        }
    }
    goals.push(super::Goal {
        name: "event → segment membership p99",
        measured: report.visible.p99_ms(),
        goal: 10.0,
        unit: "ms",
        higher_is_better: false,
        correct,
    });
    goals.push(super::Goal {
        name: "50 segments kept current, CPU",
        measured: report.segments_us_per_event(),
        goal: 5.0,
        unit: "µs/event",
        higher_is_better: false,
        correct,
    });
    goals
}

fn print_report(report: &SegmentsReport) {
    println!();
    println!(
        "{} profiles, {} events; per-event cost over {} events with and {} without segments",
        report.profiles, report.events, report.incremental_events, report.incremental_events
    );
    println!();
    println!("| segment | members | siyu median (best) | as SQL: median (best) | SQL / siyu |");
    println!("|---|---:|---:|---:|---:|");
    for e in &report.evaluations {
        let sql: Vec<String> =
            e.sql.iter().map(|s| format!("{} {:.1} ms ({:.1})", s.backend, s.median_ms, s.best_ms)).collect();
        let ratios: Vec<String> =
            e.sql.iter().map(|s| format!("{} {:.1}×", s.backend, s.median_ms / e.median_ms.max(1e-6))).collect();
        println!(
            "| {} | {} | {:.1} ms ({:.1}) | {} | {} |",
            e.name,
            e.size,
            e.median_ms,
            e.best_ms,
            sql.join(", "),
            ratios.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_active_segments_check_and_are_distinct() {
        let segments = active_segments();
        let schema = siyu_model::condition::Schema { tags: [LOST.to_string()].into(), ..Default::default() };
        for text in &segments {
            assert!(compile(text, &schema).is_ok(), "{text}");
        }
        let distinct: std::collections::BTreeSet<&String> = segments.iter().collect();
        assert_eq!(distinct.len(), ACTIVE);
        assert_eq!(segments.last().map(String::as_str), Some(PROBE));
    }
}
