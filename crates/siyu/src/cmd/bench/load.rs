//! The load generator of the HTTP targets: a minimal keep-alive HTTP/1.1 client (one request in
//! flight per connection, nothing parsed but the status, `content-length` and the small JSON
//! answer), a closed-loop driver (each connection sends its next request when the previous one
//! is answered) and an open-loop driver (requests are due at fixed intervals whatever the server
//! does, and latency counts from when a request was due, so a stalled server cannot hide its
//! stall by slowing the generator down — no coordinated omission).
//!
//! A hand-rolled client rather than reqwest: the generator shares the machine's cores with the
//! server, so every microsecond it spends per request is taken from the server being measured.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }

    pub fn p50_ms(&self) -> f64 {
        self.p50_us as f64 / 1000.0
    }
    pub fn p90_ms(&self) -> f64 {
        self.p90_us as f64 / 1000.0
    }
    pub fn p99_ms(&self) -> f64 {
        self.p99_us as f64 / 1000.0
    }
    pub fn p999_ms(&self) -> f64 {
        self.p999_us as f64 / 1000.0
    }
    pub fn max_ms(&self) -> f64 {
        self.max_us as f64 / 1000.0
    }
}

/// What the generator sends.
pub trait Workload: Send + Sync + 'static {
    /// The counter request ids come from (ids make message ids unique across phases).
    fn ids(&self) -> &AtomicU64;
    /// Writes request `id` — a complete HTTP/1.1 request — into `out`.
    fn request(&self, id: u64, out: &mut Vec<u8>);
    /// Request `id` was acknowledged (200).
    fn acknowledged(&self, _id: u64) {}
    /// Whether what request `id` sent shows in the server's state yet.
    fn visible(&self, _id: u64) -> bool {
        true
    }
}

/// What one run of a driver saw.
pub struct LoadResult {
    /// Requests answered 200.
    pub requests: u64,
    /// Events the 200 answers said were accepted (or were duplicates: also durable).
    pub events_acked: u64,
    pub duplicates: u64,
    /// Requests answered otherwise or lost to a connection error.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Per request, µs: from sending (closed loop) or from when it was due (open loop).
    pub latency: Histogram<u64>,
    /// Open loop, per acknowledged request: µs from the acknowledgement until visible.
    pub visible: Histogram<u64>,
    /// Acknowledged requests that did not become visible within a second.
    pub never_visible: u64,
    pub seconds: f64,
}

impl LoadResult {
    fn new() -> LoadResult {
        LoadResult {
            requests: 0,
            events_acked: 0,
            duplicates: 0,
            errors: 0,
            first_error: None,
            latency: histogram(),
            visible: histogram(),
            never_visible: 0,
            seconds: 0.0,
        }
    }

    fn absorb(&mut self, other: LoadResult) {
        self.requests += other.requests;
        self.events_acked += other.events_acked;
        self.duplicates += other.duplicates;
        self.errors += other.errors;
        self.never_visible += other.never_visible;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency.add(&other.latency).expect("histograms of the same bounds");
        self.visible.add(&other.visible).expect("histograms of the same bounds");
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

/// Microseconds up to a minute (longer counts as a minute), three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `future` on a runtime of its own (`threads` worker threads), so the generator does not
/// queue behind the server's tasks; resolves when it is done.
pub async fn on_own_runtime<T, F>(threads: usize, future: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let thread = std::thread::Builder::new().name("bench-client".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("bench-client")
            .enable_all()
            .build()?;
        anyhow::Ok(runtime.block_on(future))
    })?;
    tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the load generator panicked"))?
}

/// `connections` connections each send request after request for `duration`.
pub async fn closed_loop<W: Workload>(
    addr: SocketAddr,
    workload: Arc<W>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(HttpConn::connect(addr).await?);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(connections);
    for mut conn in conns {
        let workload = workload.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = LoadResult::new();
            let mut request = Vec::with_capacity(16 * 1024);
            while Instant::now() < deadline {
                let id = workload.ids().fetch_add(1, Ordering::Relaxed);
                request.clear();
                workload.request(id, &mut request);
                let sent = Instant::now();
                let answer = conn.send(&request).await;
                let micros = sent.elapsed().as_micros() as u64;
                if record(&mut result, &mut conn, addr, answer, micros).await {
                    workload.acknowledged(id);
                } else if result.requests == 0 && result.errors > 100 {
                    break; // nothing works: stop hammering
                }
            }
            result
        }));
    }
    let mut total = LoadResult::new();
    for task in tasks {
        total.absorb(task.await?);
    }
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

/// Sends `rate` requests per second for `duration`, each due at its own instant, over up to
/// `connections` connections; a request waits for a free connection if all are busy, and that
/// wait counts in its latency. After each acknowledgement it measures how long until the
/// workload sees the request's effect (see [`Workload::visible`]).
pub async fn open_loop<W: Workload>(
    addr: SocketAddr,
    workload: Arc<W>,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(rate > 0.0, "the open-loop rate must be positive");
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(HttpConn::connect(addr).await?);
    }
    let mut tasks = Vec::with_capacity(connections);
    for mut conn in conns {
        let (workload, rx) = (workload.clone(), rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut result = LoadResult::new();
            let mut request = Vec::with_capacity(16 * 1024);
            loop {
                let job = rx.lock().await.recv().await;
                let Some((id, due)) = job else { break };
                request.clear();
                workload.request(id, &mut request);
                let answer = conn.send(&request).await;
                let acked_at = Instant::now();
                let micros = acked_at.saturating_duration_since(due).as_micros() as u64;
                if !record(&mut result, &mut conn, addr, answer, micros).await {
                    continue;
                }
                workload.acknowledged(id);
                match wait_visible(&*workload, id, acked_at).await {
                    Some(delay) => result.visible.saturating_record(delay.as_micros() as u64),
                    None => result.never_visible += 1,
                }
            }
            result
        }));
    }
    let started = Instant::now() + Duration::from_millis(2);
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        }
        let id = workload.ids().fetch_add(1, Ordering::Relaxed);
        if tx.send((id, due)).is_err() {
            break;
        }
    }
    drop(tx);
    let mut result = LoadResult::new();
    for task in tasks {
        result.absorb(task.await?);
    }
    result.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}

async fn wait_visible<W: Workload>(workload: &W, id: u64, acked_at: Instant) -> Option<Duration> {
    let mut polls = 0u32;
    loop {
        if workload.visible(id) {
            return Some(acked_at.elapsed());
        }
        if acked_at.elapsed() > Duration::from_secs(1) {
            return None;
        }
        polls += 1;
        if polls < 100 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[derive(serde::Deserialize)]
struct Ack {
    accepted: u64,
    #[serde(default)]
    duplicates: u64,
}

async fn record(
    result: &mut LoadResult,
    conn: &mut HttpConn,
    addr: SocketAddr,
    answer: std::io::Result<(u16, Vec<u8>)>,
    micros: u64,
) -> bool {
    result.latency.saturating_record(micros);
    match answer {
        Ok((200, body)) => match serde_json::from_slice::<Ack>(&body) {
            Ok(ack) => {
                result.requests += 1;
                result.events_acked += ack.accepted + ack.duplicates;
                result.duplicates += ack.duplicates;
                return true;
            }
            Err(e) => result.error(format!("200 with an unexpected body ({e}): {}", String::from_utf8_lossy(&body))),
        },
        Ok((status, body)) => result.error(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))),
        Err(e) => {
            result.error(format!("connection error: {e}"));
            if let Ok(fresh) = HttpConn::connect(addr).await {
                *conn = fresh;
            }
        }
    }
    false
}

/// One keep-alive HTTP/1.1 connection, one request at a time.
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<HttpConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConn { stream, buf: Vec::with_capacity(16 * 1024) })
    }

    /// Sends a complete request; returns the status and the body of the answer.
    pub async fn send(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let mut searched = 0;
        let head_end = loop {
            if let Some(at) = self.buf[searched..].windows(4).position(|w| w == b"\r\n\r\n") {
                break searched + at + 4;
            }
            searched = self.buf.len().saturating_sub(3);
            self.read_more().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| invalid("the answer head is not UTF-8"))?;
        let status: u16 = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid("bad status line"))?;
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
            })
            .ok_or_else(|| invalid("the answer has no content-length"))?;
        while self.buf.len() < head_end + length {
            self.read_more().await?;
        }
        Ok((status, self.buf[head_end..head_end + length].to_vec()))
    }

    async fn read_more(&mut self) -> std::io::Result<()> {
        self.buf.reserve(16 * 1024);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        Ok(())
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// A POST with a JSON body and basic auth, as Segment's SDKs send it.
pub fn post_json(out: &mut Vec<u8>, path: &str, basic_auth: &str, body: &[u8]) {
    use std::io::Write;
    let _ = write!(
        out,
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Basic {basic_auth}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}
