//! The segments of `siyu bench segments` written as SQL, for comparing siyu's in-memory evaluation
//! with what a SQL-based CDP does: profiles materialised in batch plus raw events, in tables of
//! their own (an own SQLite file, or the `siyu_segment_bench` schema of an empty PostgreSQL
//! database), queried with the SQL a competent engineer would write and the indexes a DBA would
//! add. It lives here because this is the only crate that writes SQL; nothing else uses it.
//! Benchmark-only, so compiled only with the `bench-sql` feature, which the `siyu` binary enables
//! (so a workspace test run includes these tests; alone: `cargo test -p siyu-store --features bench-sql`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use rusqlite::Connection;
use siyu_model::time::DAY;
use siyu_model::{Channel, EventType, FanTier, RfmGroup};
use sqlx::postgres::{PgConnectOptions, PgPoolCopyExt, PgPoolOptions};
use sqlx::Executor;

use crate::{Result, StoreError};

/// A materialised profile, as a batch job would leave it.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlProfile {
    pub id: i64,
    /// [`tier_code`] of the fan tier: 0 none, 1 passerby, 2 warm fan, 3 true fan.
    pub tier: i16,
    pub reachable: bool,
    pub affinity: f64,
    /// The RFM group's Chinese label (`重要价值`, …); `None` for non-buyers.
    pub rfm: Option<String>,
    /// Bit `n` is set when the profile has events on the channel with code `n` ([`channel_mask`]).
    pub channels: i32,
    /// Distinct (they are the key of `seg_profile_tags` with the id).
    pub tags: Vec<String>,
}

/// A raw event row. The type is a `&'static str` (an [`EventType`] name) so that streaming tens of
/// millions of rows allocates nothing per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlEvent {
    pub profile_id: i64,
    pub event_type: &'static str,
    /// Unix millis.
    pub ts: i64,
    /// Fen; 0 when the event carries no amount.
    pub amount: i64,
    /// [`Channel::code`].
    pub channel: i16,
}

/// The code of a fan tier in `seg_profiles.tier`.
pub fn tier_code(tier: FanTier) -> i16 {
    match tier {
        FanTier::None => 0,
        FanTier::Passerby => 1,
        FanTier::WarmFan => 2,
        FanTier::TrueFan => 3,
    }
}

/// The bit of a channel in `seg_profiles.channels`.
pub fn channel_mask(channel: Channel) -> i32 {
    1 << channel.code()
}

/// Where the bench tables go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlTarget {
    /// A SQLite file of its own (created if missing).
    Sqlite(PathBuf),
    /// The URL of an existing, empty PostgreSQL database.
    Postgres(String),
}

/// What [`SegmentSql::load`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadReport {
    pub profiles: u64,
    pub events: u64,
    /// Loading the rows (the tables have only their primary keys meanwhile).
    pub seconds: f64,
    /// Building the secondary indexes and collecting statistics afterwards.
    pub index_seconds: f64,
}

/// What [`SegmentSql::run`] measured. Times cover executing the query and fetching every id.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRun {
    /// The matching profile ids, ascending.
    pub ids: Vec<i64>,
    pub best_ms: f64,
    pub median_ms: f64,
}

/// One of the benchmark's segments, written as SQL and evaluated at time `t`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentQuery {
    pub name: &'static str,
    /// The evaluation time, unix millis.
    pub t: i64,
    kind: QueryKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryKind {
    Fields,
    Example,
    Windows,
}

impl SegmentQuery {
    /// `tier >= warm_fan and reachable`: profile columns only.
    pub fn fields(t: i64) -> SegmentQuery {
        SegmentQuery { name: "fields", t, kind: QueryKind::Fields }
    }

    /// `tier = true_fan and rfm in (重要价值, 重要保持) and count(order_paid, 365d) >= 2 and
    /// not tagged("已流失") and last(message_out) before 30d ago`.
    pub fn example(t: i64) -> SegmentQuery {
        SegmentQuery { name: "example", t, kind: QueryKind::Example }
    }

    /// `count(live_watch, 30d) >= 1 and sum(order_paid, 365d) > 100 and last(message_out) before
    /// 30d ago and channel = wecom and count(like, 90d) >= 1`.
    pub fn windows(t: i64) -> SegmentQuery {
        SegmentQuery { name: "windows", t, kind: QueryKind::Windows }
    }

    /// The SQL text, which is the same on both back-ends (SQLite reads the 0/1 `reachable` as a
    /// truth value). Time bounds are inlined integer literals derived from `t`: they are ours, so
    /// there is nothing to inject, and the printed text is exactly what runs.
    ///
    /// Windows are inclusive (`t - w <= ts <= t`) and events after `t` never count; `last(x)
    /// before d ago` compares the latest `x` at or before `t` with `t - d`, and `NULL < …` makes
    /// it false for a profile without any `x`.
    pub fn sql(&self) -> String {
        let t = self.t;
        let message_out_before_30d = format!(
            "(SELECT max(e.ts) FROM seg_events e\n       WHERE {}) < {}",
            events_of(EventType::MessageOut, None, t),
            t - 30 * DAY
        );
        match self.kind {
            QueryKind::Fields => {
                format!("SELECT id FROM seg_profiles WHERE tier >= {} AND reachable", tier_code(FanTier::WarmFan))
            }
            QueryKind::Example => format!(
                "SELECT p.id FROM seg_profiles p\n\
                 WHERE p.tier = {true_fan}\n  \
                 AND p.rfm IN ({value}, {keep})\n  \
                 AND (SELECT count(*) FROM seg_events e\n       WHERE {orders}) >= 2\n  \
                 AND NOT EXISTS (SELECT 1 FROM seg_profile_tags g WHERE g.profile_id = p.id AND g.tag = {lost})\n  \
                 AND {message_out_before_30d}",
                true_fan = tier_code(FanTier::TrueFan),
                value = quote(RfmGroup::ImportantValue.label_zh()),
                keep = quote(RfmGroup::ImportantKeep.label_zh()),
                orders = events_of(EventType::OrderPaid, Some(t - 365 * DAY), t),
                lost = quote("已流失"),
            ),
            QueryKind::Windows => format!(
                "SELECT p.id FROM seg_profiles p\n\
                 WHERE (p.channels & {wecom}) <> 0\n  \
                 AND EXISTS (SELECT 1 FROM seg_events e\n       WHERE {live})\n  \
                 AND (SELECT sum(e.amount) FROM seg_events e\n       WHERE {orders}) > 10000\n  \
                 AND {message_out_before_30d}\n  \
                 AND EXISTS (SELECT 1 FROM seg_events e\n       WHERE {likes})",
                wecom = channel_mask(Channel::Wecom),
                live = events_of(EventType::LiveWatch, Some(t - 30 * DAY), t),
                orders = events_of(EventType::OrderPaid, Some(t - 365 * DAY), t),
                likes = events_of(EventType::Like, Some(t - 90 * DAY), t),
            ),
        }
    }
}

/// An open connection to one target, owning the bench tables in it.
pub struct SegmentSql {
    backend: Conn,
}

enum Conn {
    /// Behind a mutex only so that blocking tasks can borrow it; calls never overlap (`&mut self`).
    Sqlite(Arc<Mutex<Connection>>),
    /// A pool of [`PG_CONNECTIONS`], for loading over several `COPY`s at once; a query runs on one.
    Postgres(sqlx::PgPool),
}

impl SegmentSql {
    /// Connects and (re)creates empty bench tables, dropping those of an earlier run.
    pub async fn open(target: &SqlTarget) -> Result<SegmentSql> {
        let backend = match target {
            SqlTarget::Sqlite(path) => {
                let path = path.clone();
                let conn = tokio::task::spawn_blocking(move || open_sqlite(&path)).await??;
                Conn::Sqlite(Arc::new(Mutex::new(conn)))
            }
            SqlTarget::Postgres(url) => Conn::Postgres(open_postgres(url).await?),
        };
        Ok(SegmentSql { backend })
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Conn::Sqlite(_) => "SQLite",
            Conn::Postgres(_) => "PostgreSQL",
        }
    }

    /// Bulk-loads the rows (streamed in chunks, never all in memory), then builds the indexes and
    /// collects statistics. Meant for freshly opened, empty tables.
    pub async fn load(
        &mut self,
        profiles: impl Iterator<Item = SqlProfile> + Send,
        events: impl Iterator<Item = SqlEvent> + Send,
    ) -> Result<LoadReport> {
        let start = Instant::now();
        let (profile_count, event_count) = match &self.backend {
            Conn::Sqlite(conn) => load_sqlite(conn.clone(), profiles, events).await?,
            Conn::Postgres(pool) => load_postgres(pool, profiles, events).await?,
        };
        let seconds = start.elapsed().as_secs_f64();
        let start = Instant::now();
        match &self.backend {
            Conn::Sqlite(conn) => {
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || index_sqlite(&conn.lock())).await??;
            }
            Conn::Postgres(pool) => index_postgres(pool).await?,
        }
        Ok(LoadReport {
            profiles: profile_count,
            events: event_count,
            seconds,
            index_seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Runs the query `repeats` times (at least once) on one connection, keeping its prepared
    /// statement, so every run after the first measures execution and fetching only.
    pub async fn run(&mut self, query: &SegmentQuery, repeats: usize) -> Result<QueryRun> {
        let sql = query.sql();
        let repeats = repeats.max(1);
        let (mut ids, times) = match &self.backend {
            Conn::Sqlite(conn) => {
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || {
                    let conn = conn.lock();
                    let (mut ids, mut times) = (Vec::new(), Vec::with_capacity(repeats));
                    for _ in 0..repeats {
                        let start = Instant::now();
                        let mut stmt = conn.prepare_cached(&sql)?;
                        ids = stmt.query_map([], |row| row.get(0))?.collect::<rusqlite::Result<Vec<i64>>>()?;
                        times.push(start.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok::<_, StoreError>((ids, times))
                })
                .await??
            }
            Conn::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                let (mut ids, mut times) = (Vec::new(), Vec::with_capacity(repeats));
                for _ in 0..repeats {
                    let start = Instant::now();
                    ids = sqlx::query_scalar(&sql).fetch_all(&mut *conn).await?;
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                }
                (ids, times)
            }
        };
        ids.sort_unstable();
        let (best_ms, median_ms) = best_and_median(times);
        Ok(QueryRun { ids, best_ms, median_ms })
    }
}

/// `e.profile_id = p.id AND e.event_type = '…' AND <ts bound>`: a range of the
/// `(profile_id, event_type, ts)` index.
fn events_of(event_type: EventType, from: Option<i64>, to: i64) -> String {
    let ts = match from {
        Some(from) => format!("e.ts BETWEEN {from} AND {to}"),
        None => format!("e.ts <= {to}"),
    };
    format!("e.profile_id = p.id AND e.event_type = {} AND {ts}", quote(event_type.as_str()))
}

/// A SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn best_and_median(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2.0 };
    (times[0], median)
}

// ---------------------------------------------------------------------------------------------
// SQLite

/// Profiles or events per batch handed from the async side to the blocking writer.
const SQLITE_BATCH: usize = 8_192;
/// Rows per `INSERT … VALUES (…), (…)`: one statement step per many rows (1.8 times the rows per
/// second of single-row inserts, measured at 4 M events), far below SQLite's 32 766 parameters.
const SQLITE_ROWS_PER_INSERT: usize = 64;

const SQLITE_SCHEMA: &str = "
    DROP TABLE IF EXISTS seg_events;
    DROP TABLE IF EXISTS seg_profile_tags;
    DROP TABLE IF EXISTS seg_profiles;
    -- INTEGER PRIMARY KEY (not BIGINT) makes the id the rowid: 64-bit all the same, no second b-tree.
    CREATE TABLE seg_profiles (
        id INTEGER PRIMARY KEY,
        tier INTEGER NOT NULL,
        reachable INTEGER NOT NULL,
        affinity REAL NOT NULL,
        rfm TEXT,
        channels INTEGER NOT NULL
    );
    CREATE TABLE seg_profile_tags (
        profile_id INTEGER NOT NULL,
        tag TEXT NOT NULL,
        PRIMARY KEY (profile_id, tag)
    ) WITHOUT ROWID;
    CREATE TABLE seg_events (
        profile_id INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        ts INTEGER NOT NULL,
        amount INTEGER NOT NULL,
        channel INTEGER NOT NULL
    );
";

const INDEXES: &str = "
    CREATE INDEX seg_events_profile_type_ts ON seg_events (profile_id, event_type, ts);
    CREATE INDEX seg_events_type_ts ON seg_events (event_type, ts);
    CREATE INDEX seg_profiles_tier ON seg_profiles (tier);
";

fn open_sqlite(path: &std::path::Path) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
    }
    let conn = Connection::open(path).map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
    // A throw-away file rebuilt on every run: no journal and no fsync. A large cache and sorter
    // threads are what a DBA would give a bulk load and its index builds.
    conn.pragma_update(None, "journal_mode", "OFF")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -262_144)?; // 256 MiB
    conn.pragma_update(None, "threads", 4)?;
    conn.execute_batch(SQLITE_SCHEMA)?;
    Ok(conn)
}

enum Batch {
    Profiles(Vec<SqlProfile>),
    Events(Vec<SqlEvent>),
}

/// Pulls batches from the iterators here and inserts them on the blocking pool, so producing the
/// next batch overlaps with writing the last one. Returns the numbers of profiles and events.
async fn load_sqlite(
    conn: Arc<Mutex<Connection>>,
    profiles: impl Iterator<Item = SqlProfile> + Send,
    events: impl Iterator<Item = SqlEvent> + Send,
) -> Result<(u64, u64)> {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Batch>(2);
    let writer = tokio::task::spawn_blocking(move || {
        let mut conn = conn.lock();
        let tx = conn.transaction()?;
        let mut counts = (0, 0);
        while let Some(batch) = receiver.blocking_recv() {
            match batch {
                Batch::Profiles(profiles) => {
                    insert_profiles(&tx, &profiles)?;
                    counts.0 += profiles.len() as u64;
                }
                Batch::Events(events) => {
                    insert_rows(
                        &tx,
                        "seg_events (profile_id, event_type, ts, amount, channel)",
                        5,
                        &events,
                        bind_event,
                    )?;
                    counts.1 += events.len() as u64;
                }
            }
        }
        tx.commit()?;
        Ok::<_, StoreError>(counts)
    });
    let complete =
        send_batches(&sender, profiles, Batch::Profiles).await && send_batches(&sender, events, Batch::Events).await;
    drop(sender);
    let counts = writer.await??;
    if !complete {
        // The writer only stops receiving when it fails, so this is not expected to happen.
        return Err(StoreError::Task("the sqlite loader stopped before the end of the data".into()));
    }
    Ok(counts)
}

/// Sends the items in batches; false when the receiver is gone (the writer failed).
async fn send_batches<T>(
    sender: &tokio::sync::mpsc::Sender<Batch>,
    mut items: impl Iterator<Item = T>,
    wrap: fn(Vec<T>) -> Batch,
) -> bool {
    loop {
        let batch: Vec<T> = items.by_ref().take(SQLITE_BATCH).collect();
        if batch.is_empty() {
            return true;
        }
        if sender.send(wrap(batch)).await.is_err() {
            return false;
        }
    }
}

fn insert_profiles(tx: &rusqlite::Transaction<'_>, profiles: &[SqlProfile]) -> Result<()> {
    insert_rows(tx, "seg_profiles (id, tier, reachable, affinity, rfm, channels)", 6, profiles, bind_profile)?;
    let tags: Vec<(i64, &str)> =
        profiles.iter().flat_map(|p| p.tags.iter().map(move |tag| (p.id, tag.as_str()))).collect();
    insert_rows(tx, "seg_profile_tags (profile_id, tag)", 2, &tags, bind_tag)
}

type Bind<T> = fn(&mut rusqlite::Statement<'_>, usize, &T) -> rusqlite::Result<()>;

/// Inserts `rows` with a cached multi-row statement, the remainder with a cached single-row one.
/// `bind` binds one row's `columns` values starting at the given (1-based) parameter index.
fn insert_rows<T>(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    columns: usize,
    rows: &[T],
    bind: Bind<T>,
) -> Result<()> {
    let mut chunks = rows.chunks_exact(SQLITE_ROWS_PER_INSERT);
    if rows.len() >= SQLITE_ROWS_PER_INSERT {
        let mut many = tx.prepare_cached(&insert_sql(table, columns, SQLITE_ROWS_PER_INSERT))?;
        for chunk in &mut chunks {
            for (i, row) in chunk.iter().enumerate() {
                bind(&mut many, i * columns + 1, row)?;
            }
            many.raw_execute()?;
        }
    }
    if !chunks.remainder().is_empty() {
        let mut one = tx.prepare_cached(&insert_sql(table, columns, 1))?;
        for row in chunks.remainder() {
            bind(&mut one, 1, row)?;
            one.raw_execute()?;
        }
    }
    Ok(())
}

fn insert_sql(table: &str, columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    format!("INSERT INTO {table} VALUES {}", vec![row; rows].join(", "))
}

fn bind_profile(stmt: &mut rusqlite::Statement<'_>, at: usize, p: &SqlProfile) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(at, p.id)?;
    stmt.raw_bind_parameter(at + 1, p.tier)?;
    stmt.raw_bind_parameter(at + 2, p.reachable)?;
    stmt.raw_bind_parameter(at + 3, p.affinity)?;
    stmt.raw_bind_parameter(at + 4, p.rfm.as_deref())?;
    stmt.raw_bind_parameter(at + 5, p.channels)
}

fn bind_tag(stmt: &mut rusqlite::Statement<'_>, at: usize, &(profile_id, tag): &(i64, &str)) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(at, profile_id)?;
    stmt.raw_bind_parameter(at + 1, tag)
}

fn bind_event(stmt: &mut rusqlite::Statement<'_>, at: usize, e: &SqlEvent) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(at, e.profile_id)?;
    stmt.raw_bind_parameter(at + 1, e.event_type)?;
    stmt.raw_bind_parameter(at + 2, e.ts)?;
    stmt.raw_bind_parameter(at + 3, e.amount)?;
    stmt.raw_bind_parameter(at + 4, e.channel)
}

fn index_sqlite(conn: &Connection) -> Result<()> {
    conn.execute_batch(INDEXES)?;
    conn.execute_batch("ANALYZE")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// The schema holding the bench tables, so that they can never touch (or be confused with) siyu's.
const PG_SCHEMA: &str = "siyu_segment_bench";
/// The pool's size: [`load_postgres`] keeps this many `COPY`s going at once (at least two, as
/// profiles and their tags are copied side by side).
const PG_CONNECTIONS: u32 = 2;
/// Bytes of `COPY` text per message sent.
const PG_COPY_CHUNK: usize = 4 << 20;

const PG_TABLES: &str = "
    DROP TABLE IF EXISTS seg_events, seg_profile_tags, seg_profiles;
    CREATE UNLOGGED TABLE seg_profiles (
        id BIGINT PRIMARY KEY,
        tier SMALLINT NOT NULL,
        reachable BOOLEAN NOT NULL,
        affinity DOUBLE PRECISION NOT NULL,
        rfm TEXT,
        channels INTEGER NOT NULL
    );
    CREATE UNLOGGED TABLE seg_profile_tags (
        profile_id BIGINT NOT NULL,
        tag TEXT NOT NULL,
        PRIMARY KEY (profile_id, tag)
    );
    CREATE UNLOGGED TABLE seg_events (
        profile_id BIGINT NOT NULL,
        event_type TEXT NOT NULL,
        ts BIGINT NOT NULL,
        amount BIGINT NOT NULL,
        channel SMALLINT NOT NULL
    );
";

async fn open_postgres(url: &str) -> Result<sqlx::PgPool> {
    let options: PgConnectOptions =
        url.parse().map_err(|e: sqlx::Error| StoreError::Open(format!("postgres url: {e}")))?;
    // Names resolve through search_path at each use, so the schema may be created after connecting;
    // with it alone on the path, the DROPs below cannot reach tables elsewhere. JIT off, as a DBA
    // would for queries of index probes: compiling them took 0.2–0.6 s of every run at 1 M
    // profiles, more than it saved.
    let options = options.options([("search_path", PG_SCHEMA), ("jit", "off")]);
    let pool = PgPoolOptions::new().max_connections(PG_CONNECTIONS).connect_with(options).await?;
    pool.execute(format!("CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}").as_str()).await?;
    // A plain string runs as a simple query, which may hold several statements.
    pool.execute(PG_TABLES).await?;
    Ok(pool)
}

/// Streams the rows in `COPY … FROM STDIN` text format, a few MB per message, on all the pool's
/// connections at once: profiles and their tags go to two `COPY`s side by side, and the events are
/// dealt out in chunks to one `COPY` per connection, because parsing the rows on the server is the
/// bottleneck and each connection has a server process of its own (two streams load 4 M events
/// about a quarter faster than one on a 2-core machine).
async fn load_postgres(
    pool: &sqlx::PgPool,
    profiles: impl Iterator<Item = SqlProfile> + Send,
    events: impl Iterator<Item = SqlEvent> + Send,
) -> Result<(u64, u64)> {
    let mut profile_copy =
        pool.copy_in_raw("COPY seg_profiles (id, tier, reachable, affinity, rfm, channels) FROM STDIN").await?;
    let mut tag_copy = pool.copy_in_raw("COPY seg_profile_tags (profile_id, tag) FROM STDIN").await?;
    let mut rows = Vec::with_capacity(PG_COPY_CHUNK + 4096);
    let mut tag_rows = Vec::with_capacity(PG_COPY_CHUNK + 4096);
    for p in profiles {
        copy_profile(&mut rows, &p);
        for tag in &p.tags {
            copy_int(&mut tag_rows, p.id);
            tag_rows.push(b'\t');
            copy_text(&mut tag_rows, tag);
            tag_rows.push(b'\n');
        }
        if rows.len() >= PG_COPY_CHUNK {
            profile_copy.send(rows.as_slice()).await?;
            rows.clear();
        }
        if tag_rows.len() >= PG_COPY_CHUNK {
            tag_copy.send(tag_rows.as_slice()).await?;
            tag_rows.clear();
        }
    }
    profile_copy.send(rows.as_slice()).await?;
    tag_copy.send(tag_rows.as_slice()).await?;
    let profile_count = profile_copy.finish().await?;
    tag_copy.finish().await?;

    let mut event_copies = Vec::with_capacity(PG_CONNECTIONS as usize);
    for _ in 0..PG_CONNECTIONS {
        event_copies
            .push(pool.copy_in_raw("COPY seg_events (profile_id, event_type, ts, amount, channel) FROM STDIN").await?);
    }
    rows.clear();
    let mut turn = 0;
    for e in events {
        copy_event(&mut rows, &e);
        if rows.len() >= PG_COPY_CHUNK {
            event_copies[turn].send(rows.as_slice()).await?;
            rows.clear();
            turn = (turn + 1) % event_copies.len();
        }
    }
    event_copies[turn].send(rows.as_slice()).await?;
    let mut event_count = 0;
    for copy in event_copies {
        event_count += copy.finish().await?;
    }
    Ok((profile_count, event_count))
}

async fn index_postgres(pool: &sqlx::PgPool) -> Result<()> {
    let mut conn = pool.acquire().await?;
    // What a DBA gives index builds over tens of millions of rows (the default is 64 MB).
    conn.execute("SET maintenance_work_mem = '512MB'").await?;
    // One statement per call: VACUUM cannot run inside the implicit transaction of a multi-statement
    // query.
    for index in INDEXES.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        conn.execute(index).await?;
    }
    // VACUUM as well as ANALYZE, as after any bulk load: it sets the visibility map (without which
    // index-only scans visit the heap for every row) and the hint bits the first query would
    // otherwise write.
    conn.execute("VACUUM (ANALYZE) seg_profiles, seg_profile_tags, seg_events").await?;
    conn.execute("RESET maintenance_work_mem").await?;
    Ok(())
}

fn copy_profile(out: &mut Vec<u8>, p: &SqlProfile) {
    copy_int(out, p.id);
    out.push(b'\t');
    copy_int(out, i64::from(p.tier));
    out.extend_from_slice(if p.reachable { b"\tt\t" } else { b"\tf\t" });
    // Display prints the shortest text that reads back as the same f64, never an exponent.
    out.extend_from_slice(p.affinity.to_string().as_bytes());
    out.push(b'\t');
    match &p.rfm {
        Some(rfm) => copy_text(out, rfm),
        None => out.extend_from_slice(b"\\N"),
    }
    out.push(b'\t');
    copy_int(out, i64::from(p.channels));
    out.push(b'\n');
}

fn copy_event(out: &mut Vec<u8>, e: &SqlEvent) {
    copy_int(out, e.profile_id);
    out.push(b'\t');
    copy_text(out, e.event_type);
    out.push(b'\t');
    copy_int(out, e.ts);
    out.push(b'\t');
    copy_int(out, e.amount);
    out.push(b'\t');
    copy_int(out, i64::from(e.channel));
    out.push(b'\n');
}

/// A decimal integer, without going through `fmt` (this runs five times per event row).
fn copy_int(out: &mut Vec<u8>, value: i64) {
    let mut digits = [0u8; 20];
    let mut n = value.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

/// A text field of the `COPY` text format: backslash, tab, newline and carriage return escaped.
fn copy_text(out: &mut Vec<u8>, text: &str) {
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDatabase;

    /// The evaluation time; every boundary below is relative to it.
    const T: i64 = 1_700_000_000_000;
    const WECOM: i32 = 1 << 2;
    const DOUYIN: i32 = 1 << 0;

    fn event(profile_id: i64, event_type: EventType, ts: i64, amount: i64) -> SqlEvent {
        SqlEvent { profile_id, event_type: event_type.as_str(), ts, amount, channel: Channel::Wecom.code().into() }
    }

    /// A true fan meeting all three segments, each condition only just: the first order exactly
    /// 365 days back (counted), the two orders summing to 10001 fen, the last message before `t`
    /// 31 days back (one after `t` does not count), live_watch exactly 30 and like exactly 90
    /// days back. The tag with a tab, a backslash and a newline checks the COPY escaping.
    fn passing(id: i64) -> (SqlProfile, Vec<SqlEvent>) {
        let profile = SqlProfile {
            id,
            tier: 3,
            reachable: true,
            affinity: 0.1 + id as f64,
            rfm: Some("重要价值".into()),
            channels: WECOM | DOUYIN,
            tags: vec!["高价值".into(), "a\tb\\c\nd".into()],
        };
        let events = vec![
            event(id, EventType::OrderPaid, T - 365 * DAY, 5_000),
            event(id, EventType::OrderPaid, T - DAY, 5_001),
            event(id, EventType::MessageOut, T - 31 * DAY, 0),
            event(id, EventType::MessageOut, T + 1, 0),
            event(id, EventType::LiveWatch, T - 30 * DAY, 0),
            event(id, EventType::Like, T - 90 * DAY, 0),
        ];
        (profile, events)
    }

    fn at(data: &mut [(SqlProfile, Vec<SqlEvent>)], id: usize) -> (&mut SqlProfile, &mut Vec<SqlEvent>) {
        let (p, e) = &mut data[id - 1];
        (p, e)
    }

    /// Sixteen profiles, each `passing` but for one change (comments: fields / example / windows).
    fn dataset() -> (Vec<SqlProfile>, Vec<SqlEvent>) {
        let mut data: Vec<(SqlProfile, Vec<SqlEvent>)> = (1..=16).map(passing).collect();
        // 1: unchanged. ✓ ✓ ✓
        // 2: the orders sum to exactly 10000. ✓ ✓ ✗
        at(&mut data, 2).1[1].amount = 5_000;
        // 3: the first order 1 ms before the window, plus one of 99999 after t. ✓ ✗ ✗
        let (_, e) = at(&mut data, 3);
        e[0].ts = T - 365 * DAY - 1;
        e.push(event(3, EventType::OrderPaid, T + 1, 99_999));
        // 4: a single order of 20000 fen: count 1 but sum > 10000. ✓ ✗ ✓
        let (_, e) = at(&mut data, 4);
        e.remove(0);
        e[0].amount = 20_000;
        // 5: the last message exactly 30 days back: not before 30d ago. ✓ ✗ ✗
        at(&mut data, 5).1.push(event(5, EventType::MessageOut, T - 30 * DAY, 0));
        // 6: no message_out at all. ✓ ✗ ✗
        at(&mut data, 6).1.retain(|e| e.event_type != EventType::MessageOut.as_str());
        // 7: tagged 已流失 (only the example reads tags). ✓ ✗ ✓
        at(&mut data, 7).0.tags.push("已流失".into());
        // 8: no wecom channel. ✓ ✓ ✗
        at(&mut data, 8).0.channels = DOUYIN;
        // 9: a non-buyer's rfm. ✓ ✗ ✓
        at(&mut data, 9).0.rfm = None;
        // 10: a warm fan in 重要保持. ✓ ✗ ✓
        let (p, _) = at(&mut data, 10);
        p.tier = 2;
        p.rfm = Some("重要保持".into());
        // 11: unreachable, in 重要保持 (the other rfm of the example). ✗ ✓ ✓
        let (p, _) = at(&mut data, 11);
        p.reachable = false;
        p.rfm = Some("重要保持".into());
        // 12: live_watch 1 ms before its window. ✓ ✓ ✗
        at(&mut data, 12).1[4].ts = T - 30 * DAY - 1;
        // 13: like 1 ms before its window. ✓ ✓ ✗
        at(&mut data, 13).1[5].ts = T - 90 * DAY - 1;
        // 14: a passer-by. ✗ ✗ ✓
        at(&mut data, 14).0.tier = 1;
        // 15: an rfm outside the example's two. ✓ ✗ ✓
        at(&mut data, 15).0.rfm = Some("一般价值".into());
        // 16: live_watch only after t. ✓ ✓ ✗
        at(&mut data, 16).1[4].ts = T + 1;
        let mut profiles = Vec::new();
        let mut events = Vec::new();
        for (p, e) in data {
            profiles.push(p);
            events.extend(e);
        }
        // Untagged, eventless, unreachable: in no segment.
        profiles.push(SqlProfile {
            id: 17,
            tier: 0,
            reachable: false,
            affinity: 0.0,
            rfm: None,
            channels: 0,
            tags: vec![],
        });
        (profiles, events)
    }

    const FIELDS: &[i64] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 15, 16];
    const EXAMPLE: &[i64] = &[1, 2, 8, 11, 12, 13, 16];
    const WINDOWS: &[i64] = &[1, 4, 7, 9, 10, 11, 14, 15];

    /// Fails with an error rather than a panic, so that the caller still drops its scratch database.
    async fn check(target: &SqlTarget) -> anyhow::Result<()> {
        // Twice: opening again must drop the first run's tables (else the ids would collide).
        for _ in 0..2 {
            let mut sql = SegmentSql::open(target).await?;
            let (profiles, events) = dataset();
            let report = sql.load(profiles.into_iter(), events.into_iter()).await?;
            // 16 × 6 events, +1 for profile 3, −1 for 4, +1 for 5, −2 for 6.
            anyhow::ensure!((report.profiles, report.events) == (17, 95), "{}: {report:?}", sql.backend_name());
            for (query, expected) in [
                (SegmentQuery::fields(T), FIELDS),
                (SegmentQuery::example(T), EXAMPLE),
                (SegmentQuery::windows(T), WINDOWS),
            ] {
                let run = sql.run(&query, 3).await?;
                anyhow::ensure!(run.ids == expected, "{} on {}: {:?}", query.name, sql.backend_name(), run.ids);
                anyhow::ensure!(run.best_ms <= run.median_ms, "{run:?}");
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn segments_on_sqlite() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        check(&SqlTarget::Sqlite(dir.path().join("bench").join("segments.db"))).await
    }

    #[tokio::test]
    async fn segments_on_postgres() -> anyhow::Result<()> {
        let Some(db) = ScratchDatabase::from_test_env().await else {
            return Ok(());
        };
        let result = check(&SqlTarget::Postgres(db.url.clone())).await;
        db.drop_database().await;
        result
    }

    /// More rows than one batch of everything: SQLite's multi-row inserts with a remainder, and
    /// several `COPY` chunks of events (~10 MB) dealt out over PostgreSQL's connections.
    async fn check_bulk(target: &SqlTarget) -> anyhow::Result<()> {
        const EVENTS_EACH: i64 = 20;
        let mut sql = SegmentSql::open(target).await?;
        let n = SQLITE_BATCH as i64 * 2 + SQLITE_ROWS_PER_INSERT as i64 + 3;
        let profiles = (1..=n).map(|id| SqlProfile {
            id,
            tier: (id % 4) as i16,
            reachable: id % 2 == 0,
            affinity: 1.0,
            rfm: None,
            channels: 0,
            tags: vec![format!("t{}", id % 3)],
        });
        let events = (0..n * EVENTS_EACH).map(|i| event(i / EVENTS_EACH + 1, EventType::View, T - i, 0));
        let report = sql.load(profiles, events).await?;
        let expected = (n as u64, (n * EVENTS_EACH) as u64);
        anyhow::ensure!((report.profiles, report.events) == expected, "{}: {report:?}", sql.backend_name());
        let ids = sql.run(&SegmentQuery::fields(T), 1).await?.ids;
        // tier >= 2 and reachable (even): id % 4 is 2 (tier 2) or 3 (tier 3, but odd) → only 2.
        anyhow::ensure!(ids == (1..=n).filter(|id| id % 4 == 2).collect::<Vec<_>>(), "{}", sql.backend_name());
        Ok(())
    }

    #[tokio::test]
    async fn bulk_on_sqlite() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        check_bulk(&SqlTarget::Sqlite(dir.path().join("segments.db"))).await
    }

    #[tokio::test]
    async fn bulk_on_postgres() -> anyhow::Result<()> {
        let Some(db) = ScratchDatabase::from_test_env().await else {
            return Ok(());
        };
        let result = check_bulk(&SqlTarget::Postgres(db.url.clone())).await;
        db.drop_database().await;
        result
    }

    #[test]
    fn sql_reads_like_the_condition() {
        assert_eq!(SegmentQuery::fields(T).sql(), "SELECT id FROM seg_profiles WHERE tier >= 2 AND reachable");
        let windows = SegmentQuery::windows(T).sql();
        assert!(windows.contains("(p.channels & 4) <> 0"), "{windows}");
        assert!(windows.contains("e.event_type = 'like' AND e.ts BETWEEN 1692224000000 AND 1700000000000"));
        let example = SegmentQuery::example(T).sql();
        assert!(example.contains("p.rfm IN ('重要价值', '重要保持')"), "{example}");
        assert!(example.contains("e.event_type = 'message_out' AND e.ts <= 1700000000000) < 1697408000000"));
    }

    #[test]
    fn copy_text_is_escaped() {
        let mut out = Vec::new();
        copy_event(
            &mut out,
            &SqlEvent { profile_id: -42, event_type: "a\tb\\c\nd\re", ts: 0, amount: i64::MIN, channel: 7 },
        );
        assert_eq!(out, b"-42\ta\\tb\\\\c\\nd\\re\t0\t-9223372036854775808\t7\n");
        out.clear();
        copy_profile(
            &mut out,
            &SqlProfile { id: 1, tier: 3, reachable: false, affinity: 0.1, rfm: None, channels: 5, tags: vec![] },
        );
        assert_eq!(out, b"1\t3\tf\t0.1\t\\N\t5\n");
    }

    #[test]
    fn medians_of_odd_and_even_runs() {
        assert_eq!(best_and_median(vec![3.0, 1.0, 2.0]), (1.0, 2.0));
        assert_eq!(best_and_median(vec![4.0, 1.0, 2.0, 3.0]), (1.0, 2.5));
    }

    fn assert_send<T: Send>(_: &T) {}

    /// The benchmark may run these on a spawned task.
    #[test]
    fn futures_are_send() {
        let target = SqlTarget::Postgres("postgres://nowhere/x".into());
        assert_send(&SegmentSql::open(&target));
        let mut sql = SegmentSql { backend: Conn::Sqlite(Arc::new(Mutex::new(Connection::open_in_memory().unwrap()))) };
        assert_send(&sql.load(std::iter::empty::<SqlProfile>(), std::iter::empty::<SqlEvent>()));
        let query = SegmentQuery::fields(T);
        assert_send(&sql.run(&query, 1));
    }
}
