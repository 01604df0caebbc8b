//! The HTTP targets: the real server (`siyu_server::app`) on 127.0.0.1:0 over a fresh tenant, fed
//! Segment `/v1/batch` bodies (`http-batch`) or single `/v1/track` calls (`http-track`) by the
//! load generator of `load.rs`. The gate: every event acknowledged with a 200 is in the store and
//! in the tenant's in-memory state (acknowledgement means durable and applied).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use siyu_engine::internals::TenantRuntime;
use siyu_engine::Engine;
use siyu_model::{Identity, IdentityKind, Industry, TenantId};
use tokio_util::sync::CancellationToken;

use super::check::Gate;
use super::load::{closed_loop, on_own_runtime, open_loop, post_json, Latency, LoadResult, Workload};
use super::Bench;

/// What `bench http-batch` measured.
#[derive(Debug, Clone)]
pub struct BatchReport {
    pub requests: u64,
    pub events_acked: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// Per body.
    pub latency: Latency,
    pub errors: u64,
    pub gate: Gate,
}

/// One phase of `bench http-track`.
#[derive(Debug, Clone, Default)]
pub struct PhaseReport {
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    /// The open loop's schedule (0 for the closed loop).
    pub target_rate: f64,
    pub latency: Latency,
    pub errors: u64,
}

/// What `bench http-track` measured.
#[derive(Debug, Clone)]
pub struct TrackReport {
    pub closed: PhaseReport,
    pub open: PhaseReport,
    /// From each acknowledgement of the open loop until its event shows in the profile.
    pub visible: Latency,
    pub never_visible: u64,
    pub gate: Gate,
}

pub async fn bench_batch(bench: &Bench) -> anyhow::Result<BatchReport> {
    println!("\n# http-batch");
    let server = Server::start(bench, "http-batch").await?;
    let workload = Arc::new(BatchWorkload {
        ids: AtomicU64::new(0),
        run: bench.run_id.clone(),
        auth: server.basic_auth.clone(),
        size: bench.args.batch_size,
    });
    let duration = Duration::from_secs_f64(bench.args.seconds);
    println!(
        "POST /v1/batch, {} track events per body, {} connections, {:.0}s, generator on {} thread(s) …",
        bench.args.batch_size, bench.args.connections, bench.args.seconds, bench.args.client_threads
    );
    let result =
        on_own_runtime(bench.args.client_threads, closed_loop(server.addr, workload, bench.args.connections, duration))
            .await??;
    let latency = Latency::of(&result.latency);
    let events_per_second = result.events_acked as f64 / result.seconds.max(1e-9);
    println!(
        "http-batch: {} bodies, {} events acknowledged in {:.2}s = {:.0} events/s ({:.0} bodies/s); \
         per body p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} errors",
        result.requests,
        result.events_acked,
        result.seconds,
        events_per_second,
        result.requests as f64 / result.seconds.max(1e-9),
        latency.p50_ms(),
        latency.p90_ms(),
        latency.p99_ms(),
        latency.max_ms(),
        result.errors
    );
    let mut gate = Gate::default();
    check_load(&mut gate, &result);
    server.check_durable(&mut gate, result.events_acked).await?;
    server.stop().await;
    Ok(BatchReport {
        requests: result.requests,
        events_acked: result.events_acked,
        seconds: result.seconds,
        events_per_second,
        latency,
        errors: result.errors,
        gate,
    })
}

pub async fn bench_track(bench: &Bench) -> anyhow::Result<TrackReport> {
    println!("\n# http-track");
    let server = Server::start(bench, "http-track").await?;
    let users = 200_000;
    let workload = Arc::new(TrackWorkload {
        ids: AtomicU64::new(0),
        run: bench.run_id.clone(),
        auth: server.basic_auth.clone(),
        acked: (0..users).map(|_| AtomicU32::new(0)).collect(),
        runtime: server.engine.runtime(server.tenant)?,
        why_not_visible: std::sync::OnceLock::new(),
    });
    let duration = Duration::from_secs_f64(bench.args.seconds);
    let threads = bench.args.client_threads;
    println!(
        "POST /v1/track, closed loop: {} connections, {:.0}s, generator on {threads} thread(s) …",
        bench.args.track_connections, bench.args.seconds
    );
    let closed =
        on_own_runtime(threads, closed_loop(server.addr, workload.clone(), bench.args.track_connections, duration))
            .await??;
    let closed_report = phase(&closed, 0.0);
    println!(
        "closed loop: {} requests in {:.2}s = {:.0} req/s; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} errors",
        closed_report.requests,
        closed_report.seconds,
        closed_report.requests_per_second,
        closed_report.latency.p50_ms(),
        closed_report.latency.p99_ms(),
        closed_report.latency.p999_ms(),
        closed_report.latency.max_ms(),
        closed_report.errors
    );

    let rate = bench.args.rate.unwrap_or(0.8 * closed_report.requests_per_second).max(1.0);
    println!(
        "POST /v1/track, open loop: {rate:.0} req/s scheduled{} for {:.0}s over up to {} connections, latency from the scheduled send …",
        if bench.args.rate.is_some() { "" } else { " (80 % of the maximum)" },
        bench.args.seconds,
        bench.args.open_connections
    );
    let open =
        on_own_runtime(threads, open_loop(server.addr, workload.clone(), bench.args.open_connections, rate, duration))
            .await??;
    let open_report = phase(&open, rate);
    let visible = Latency::of(&open.visible);
    println!(
        "open loop: {} requests in {:.2}s = {:.0} req/s (scheduled {rate:.0}); p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} errors",
        open_report.requests,
        open_report.seconds,
        open_report.requests_per_second,
        open_report.latency.p50_ms(),
        open_report.latency.p99_ms(),
        open_report.latency.p999_ms(),
        open_report.latency.max_ms(),
        open_report.errors
    );
    println!(
        "visible within: after each acknowledgement the profile already holds the event — p50 {} µs, p99 {} µs, max {} µs ({} checks, {} never visible)",
        visible.p50_us, visible.p99_us, visible.max_us, visible.count, open.never_visible
    );

    if let Some(why) = workload.why_not_visible.get() {
        println!("  first acknowledged event not yet visible: {why}");
    }
    let mut gate = Gate::default();
    check_load(&mut gate, &closed);
    check_load(&mut gate, &open);
    gate.check(
        open.never_visible == 0 && visible.count == open.requests,
        format!("every acknowledged event was visible in its profile ({} of {})", visible.count, open.requests),
    );
    server.check_durable(&mut gate, closed.events_acked + open.events_acked).await?;
    server.stop().await;
    Ok(TrackReport { closed: closed_report, open: open_report, visible, never_visible: open.never_visible, gate })
}

fn phase(result: &LoadResult, target_rate: f64) -> PhaseReport {
    PhaseReport {
        requests: result.requests,
        seconds: result.seconds,
        requests_per_second: result.requests as f64 / result.seconds.max(1e-9),
        target_rate,
        latency: Latency::of(&result.latency),
        errors: result.errors,
    }
}

fn check_load(gate: &mut Gate, result: &LoadResult) {
    let first = result.first_error.as_deref().map(|e| format!("; first: {e}")).unwrap_or_default();
    gate.check(result.requests > 0, format!("requests were acknowledged ({})", result.requests));
    gate.check(result.errors == 0, format!("no request failed ({} failed{first})", result.errors));
    gate.check(result.duplicates == 0, format!("no message was a duplicate ({})", result.duplicates));
}

/// The server under test, on its own fresh tenant (and fresh store unless --database was given).
struct Server {
    engine: Arc<Engine>,
    tenant: TenantId,
    addr: SocketAddr,
    basic_auth: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(bench: &Bench, target: &str) -> anyhow::Result<Server> {
        let url = bench.fresh_store_url(target)?;
        println!("store {}", bench.describe_store(&url));
        let store = siyu_store::open(&url).await?;
        let engine = Engine::start(store, bench.settings.engine_config()).await?;
        let created = engine.create_tenant(&bench.tenant_name(target), Industry::ConsumerGoods).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // As `siyu serve` serves it.
        let state = siyu_server::AppState::new(engine.clone(), Default::default());
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task =
            tokio::spawn(
                async move { siyu_server::serve(listener, state, async move { token.cancelled().await }).await },
            );
        let basic_auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:", created.write_key));
        Ok(Server { engine, tenant: created.record.id, addr, basic_auth, stop, task })
    }

    /// Acknowledged means durable and applied: the store and the in-memory state hold exactly
    /// the acknowledged events.
    async fn check_durable(&self, gate: &mut Gate, acked: u64) -> anyhow::Result<()> {
        let stored = self.engine.logged_events(self.tenant).await?;
        gate.check(stored == acked, format!("events in the store ({stored}) = events acknowledged ({acked})"));
        let applied = self.engine.runtime(self.tenant)?.state.read().event_count;
        gate.check(applied == acked, format!("events in the profiles ({applied}) = events acknowledged ({acked})"));
        Ok(())
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        self.engine.shutdown();
    }
}

/// `/v1/batch` bodies of `size` track events about a million users.
struct BatchWorkload {
    ids: AtomicU64,
    run: String,
    auth: String,
    size: usize,
}

impl Workload for BatchWorkload {
    fn ids(&self) -> &AtomicU64 {
        &self.ids
    }

    fn request(&self, id: u64, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(self.size * 220 + 16);
        body.extend_from_slice(b"{\"batch\":[");
        for j in 0..self.size as u64 {
            if j > 0 {
                body.push(b',');
            }
            let n = id * self.size as u64 + j;
            let user = n.wrapping_mul(2_654_435_761) % 1_000_000;
            write_track(&mut body, &format!("bench-b-{user}"), &format!("{}-b-{n}", self.run), n);
        }
        body.extend_from_slice(b"]}");
        post_json(out, "/v1/batch", &self.auth, &body);
    }
}

/// Single `/v1/track` calls about `acked.len()` users; remembers how many events of each user
/// were acknowledged, to check they are all visible in the profile.
struct TrackWorkload {
    ids: AtomicU64,
    run: String,
    auth: String,
    acked: Vec<AtomicU32>,
    runtime: Arc<TenantRuntime>,
    /// The first time an acknowledged event was not visible, and what the profile held.
    why_not_visible: std::sync::OnceLock<String>,
}

impl TrackWorkload {
    fn user(&self, id: u64) -> usize {
        (id.wrapping_mul(2_654_435_761) % self.acked.len() as u64) as usize
    }
}

impl Workload for TrackWorkload {
    fn ids(&self) -> &AtomicU64 {
        &self.ids
    }

    fn request(&self, id: u64, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(256);
        write_track(&mut body, &format!("bench-u-{}", self.user(id)), &format!("{}-t-{id}", self.run), id);
        post_json(out, "/v1/track", &self.auth, &body);
    }

    fn acknowledged(&self, id: u64) {
        self.acked[self.user(id)].fetch_add(1, Ordering::Relaxed);
    }

    fn visible(&self, id: u64) -> bool {
        let user = self.user(id);
        let need = self.acked[user].load(Ordering::Relaxed) as usize;
        let Ok(identity) = Identity::new(IdentityKind::UserId, &format!("bench-u-{user}")) else { return false };
        // Never block the generator's thread behind the pipeline's write lock: a busy lock reads
        // as "not visible yet" and is polled again, so the wait counts in the delay.
        let Some(state) = self.runtime.state.try_read() else { return false };
        let facts = state.lookup(&identity).and_then(|p| state.profile(p)).map_or(0, |p| p.facts.len());
        if facts < need && self.why_not_visible.get().is_none() {
            let _ = self.why_not_visible.set(format!(
                "request {id}: {identity} holds {facts} events in its profile, {need} acknowledged (state at seq {}, {} events)",
                state.applied_seq, state.event_count
            ));
        }
        facts >= need
    }
}

/// One Segment track message: mostly product views, some wishlist adds, one order in twenty.
fn write_track(out: &mut Vec<u8>, user: &str, message_id: &str, n: u64) {
    let _ = match n % 20 {
        0 => write!(
            out,
            r#"{{"type":"track","userId":"{user}","event":"Order Completed","messageId":"{message_id}","properties":{{"order_id":"o-{message_id}","total":199.00,"currency":"CNY","products":[{{"product_id":"sku-{}","quantity":1}}]}},"context":{{"library":{{"name":"siyu-bench","version":"1"}}}}}}"#,
            n % 500
        ),
        1 | 6 | 11 => write!(
            out,
            r#"{{"type":"track","userId":"{user}","event":"Product Added to Wishlist","messageId":"{message_id}","properties":{{"product_id":"sku-{}"}},"context":{{"library":{{"name":"siyu-bench","version":"1"}}}}}}"#,
            n % 500
        ),
        _ => write!(
            out,
            r#"{{"type":"track","userId":"{user}","event":"Product Viewed","messageId":"{message_id}","properties":{{"product_id":"sku-{}","price":99.9,"category":"skincare"}},"context":{{"library":{{"name":"siyu-bench","version":"1"}}}}}}"#,
            n % 500
        ),
    };
}
