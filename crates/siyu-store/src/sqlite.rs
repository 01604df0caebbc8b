//! The embedded back-end: one SQLite file in WAL mode. One writer connection (SQLite has one
//! writer anyway) and a few readers; every call runs on tokio's blocking pool so the async
//! runtime never waits on disk.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use rustc_hash::FxHashMap;
use siyu_model::{Event, Industry, Millis, Seq, TenantId, TenantSettings};

use crate::codec::{encode_identities, EventRow};
use crate::{
    AppendOutcome, Backend, KeyKind, ReplayRow, ReplayVisitor, Result, ScanDetail, Store, StoreError, StoredEvent,
    TenantRecord,
};

const READERS: usize = 4;

pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Writer>,
    readers: Vec<Mutex<Connection>>,
    /// Dropping it stops the checkpointer.
    _stop_checkpointer: std::sync::mpsc::Sender<()>,
}

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    /// The guardrail ledger per tenant, derived from the outbox (ledger.rs); only the writer
    /// judges sends, so only it keeps one.
    pub(crate) ledgers: std::collections::HashMap<TenantId, crate::ledger::TenantLedger>,
    /// The keys of campaigns being planned (sqlite_outbox.rs): nothing indexes them on disk.
    pub(crate) keys: crate::sqlite_outbox::KeyCache,
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // The busy timeout first: the pragmas below may need a lock another process holds.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL + synchronous=FULL: a commit is durable when it returns (fsync of the WAL).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -65_536)?; // 64 MiB
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Commits never checkpoint: the checkpointer thread does, on its own connection and core.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(())
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Copies committed WAL frames into the database in the background (PASSIVE: never blocks the
/// writer), so appends do not pay for checkpoints. Stops when the store is dropped.
fn spawn_checkpointer(path: &Path, stop: std::sync::mpsc::Receiver<()>) -> rusqlite::Result<()> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(1))?;
    std::thread::Builder::new()
        .name("siyu-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "wal checkpoint skipped");
                }
            }
            // A last full checkpoint so a cleanly stopped store leaves a small WAL.
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .expect("spawning the checkpoint thread");
    Ok(())
}

fn is_busy(e: &StoreError) -> bool {
    matches!(e, StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        // Two processes creating the same new file at once (a server and an import) can find it
        // locked while the other switches it to WAL; that passes within moments, so retry.
        let mut attempt = 0;
        loop {
            match SqliteStore::open_once(path) {
                Err(e) if is_busy(&e) && attempt < 50 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20 * attempt.min(10)));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path).map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
        // Larger pages mean fewer B-tree splits for the wide event rows (only takes effect on a
        // new database).
        conn.pragma_update(None, "page_size", 16_384)?;
        configure(&conn)?;
        migrate(&mut conn)?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open(path)?;
                configure(&reader)?;
                // Readers mostly stream the log once (replays) or fetch a few rows (timelines):
                // a small cache each; the writer keeps the large one.
                reader.pragma_update(None, "cache_size", -16_384)?;
                Ok(Mutex::new(reader))
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let (stop, stopped) = std::sync::mpsc::channel();
        spawn_checkpointer(path, stopped)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(Writer { conn, ledgers: Default::default(), keys: Default::default() }),
                readers,
                _stop_checkpointer: stop,
            }),
        })
    }

    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // Take a free reader if there is one, else queue on the first.
            let guard = inner.readers.iter().find_map(|r| r.try_lock()).unwrap_or_else(|| inner.readers[0].lock());
            f(&guard)
        })
        .await?
    }

    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut inner.writer.lock())).await?
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )?;
    for migration in crate::migrate::SQLITE {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let applied: Option<i64> = tx
            .query_row("SELECT version FROM schema_migrations WHERE version = ?1", [migration.version], |r| r.get(0))
            .optional()?;
        if applied.is_none() {
            tx.execute_batch(migration.sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![migration.version, migration.name, Millis::now().0],
            )?;
            tracing::info!(version = migration.version, name = migration.name, "applied sqlite migration");
        }
        tx.commit()?;
    }
    Ok(())
}

fn tenant_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, String, i64)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
}

pub(crate) fn tenant_record(raw: (i64, String, String, String, i64)) -> Result<TenantRecord> {
    let (id, name, industry, settings, created_at) = raw;
    let industry: Industry = industry.parse().map_err(StoreError::Corrupt)?;
    let settings: TenantSettings =
        serde_json::from_str(&settings).map_err(|e| StoreError::Corrupt(format!("tenant {id} settings: {e}")))?;
    Ok(TenantRecord { id: TenantId(id), name, industry, settings, created_at: Millis(created_at) })
}

const TENANT_COLUMNS: &str = "tenant_id, name, industry, settings, created_at";
const EVENT_COLUMNS: &str = "seq, message_id, event_type, channel, account, ts, received_at, amount_fen, currency, \
     identities, source_kind, source_id, group_id";

fn event_from_row(row: &rusqlite::Row<'_>, detail: ScanDetail) -> rusqlite::Result<EventRow> {
    let full = detail == ScanDetail::Full;
    Ok(EventRow {
        seq: row.get(0)?,
        message_id: row.get(1)?,
        event_type: row.get(2)?,
        channel: row.get(3)?,
        account: row.get(4)?,
        ts: row.get(5)?,
        received_at: row.get(6)?,
        amount_fen: row.get(7)?,
        currency: row.get(8)?,
        identities: row.get(9)?,
        source_kind: row.get(10)?,
        source_id: row.get(11)?,
        group_id: row.get(12)?,
        properties: if full { row.get(13)? } else { None },
        traits: row.get(14)?,
        context: if full { row.get(15)? } else { None },
    })
}

fn select_events(detail: ScanDetail) -> String {
    match detail {
        ScanDetail::Envelope => format!("SELECT {EVENT_COLUMNS}, NULL, traits, NULL FROM events"),
        ScanDetail::Full => format!("SELECT {EVENT_COLUMNS}, properties, traits, context FROM events"),
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn create_tenant(&self, name: &str, industry: Industry, keys: &[(KeyKind, String)]) -> Result<TenantRecord> {
        let name = name.to_string();
        let keys = keys.to_vec();
        self.write(move |w| {
            let tx = w.conn.transaction()?;
            let exists: Option<i64> =
                tx.query_row("SELECT tenant_id FROM tenants WHERE name = ?1", [&name], |r| r.get(0)).optional()?;
            if exists.is_some() {
                return Err(StoreError::TenantExists(name));
            }
            let now = Millis::now().0;
            let settings = serde_json::to_string(&TenantSettings::default()).expect("settings serialise");
            tx.execute(
                "INSERT INTO tenants (name, industry, settings, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, industry.as_str(), settings, now],
            )?;
            let id = tx.last_insert_rowid();
            for (kind, hash) in &keys {
                tx.execute(
                    "INSERT INTO api_keys (tenant_id, key_hash, kind, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![id, hash, kind.as_str(), now],
                )?;
            }
            let raw = tx.query_row(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = ?1"),
                [id],
                tenant_from_row,
            )?;
            tx.commit()?;
            tenant_record(raw)
        })
        .await
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY tenant_id"))?;
            let rows = stmt.query_map([], tenant_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(tenant_record).collect()
        })
        .await
    }

    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantRecord>> {
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = ?1"),
                [tenant.0],
                tenant_from_row,
            )
            .optional()?
            .map(tenant_record)
            .transpose()
        })
        .await
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<TenantRecord>> {
        let name = name.to_string();
        self.read(move |c| {
            c.query_row(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE name = ?1"), [name], tenant_from_row)
                .optional()?
                .map(tenant_record)
                .transpose()
        })
        .await
    }

    async fn tenant_by_key_hash(&self, key_hash: &str) -> Result<Option<(TenantId, KeyKind)>> {
        let key_hash = key_hash.to_string();
        self.read(move |c| {
            let row: Option<(i64, String)> = c
                .query_row("SELECT tenant_id, kind FROM api_keys WHERE key_hash = ?1", [key_hash], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            Ok(row.map(|(id, kind)| (TenantId(id), KeyKind::parse(&kind))))
        })
        .await
    }

    async fn add_key(&self, tenant: TenantId, kind: KeyKind, key_hash: &str) -> Result<()> {
        let key_hash = key_hash.to_string();
        self.write(move |w| {
            w.conn.execute(
                "INSERT INTO api_keys (tenant_id, key_hash, kind, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![tenant.0, key_hash, kind.as_str(), Millis::now().0],
            )?;
            Ok(())
        })
        .await
    }

    async fn save_settings(&self, tenant: TenantId, settings: &TenantSettings) -> Result<()> {
        let text = serde_json::to_string(settings).expect("settings serialise");
        self.write(move |w| {
            let changed =
                w.conn.execute("UPDATE tenants SET settings = ?1 WHERE tenant_id = ?2", params![text, tenant.0])?;
            if changed == 0 {
                return Err(StoreError::NoSuchTenant(tenant));
            }
            Ok(())
        })
        .await
    }

    async fn append(&self, batch: &[(TenantId, Event)]) -> Result<Vec<AppendOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // On a multi-threaded runtime the transaction runs in place, borrowing the batch; copying
        // every event into a 'static closure for the blocking pool cost more than the insert.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            return tokio::task::block_in_place(|| append_blocking(&mut self.inner.writer.lock(), batch));
        }
        let batch: Vec<(TenantId, Event)> = batch.to_vec();
        self.write(move |w| append_blocking(w, &batch)).await
    }

    async fn scan(&self, tenant: TenantId, after: Seq, limit: usize, detail: ScanDetail) -> Result<Vec<StoredEvent>> {
        self.read(move |c| {
            let sql = format!("{} WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3", select_events(detail));
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params![tenant.0, after, limit as i64], |r| event_from_row(r, detail))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(EventRow::into_stored).collect()
        })
        .await
    }

    async fn events_by_seq(&self, tenant: TenantId, seqs: &[Seq]) -> Result<Vec<StoredEvent>> {
        let mut seqs = seqs.to_vec();
        seqs.sort_unstable();
        seqs.dedup();
        self.read(move |c| {
            let sql = format!("{} WHERE tenant_id = ?1 AND seq = ?2", select_events(ScanDetail::Full));
            let mut stmt = c.prepare_cached(&sql)?;
            let mut out = Vec::with_capacity(seqs.len());
            for seq in seqs {
                if let Some(row) =
                    stmt.query_row(params![tenant.0, seq], |r| event_from_row(r, ScanDetail::Full)).optional()?
                {
                    out.push(row.into_stored()?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn replay(&self, tenant: TenantId, after: Seq, visit: &mut ReplayVisitor<'_>) -> Result<u64> {
        // The visitor borrows the caller's state, so the rows are read in place (on a
        // multi-threaded runtime, telling tokio this thread blocks for a while).
        let run = || {
            let reader =
                self.inner.readers.iter().find_map(|r| r.try_lock()).unwrap_or_else(|| self.inner.readers[0].lock());
            replay_blocking(&reader, tenant, after, visit)
        };
        crate::blocking_in_place(run)
    }

    async fn event_count(&self, tenant: TenantId) -> Result<u64> {
        self.read(move |c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM events WHERE tenant_id = ?1", [tenant.0], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }
}

fn text<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    match row.get_ref(i)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        value => value
            .as_str()
            .map(Some)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, value.data_type(), Box::new(e))),
    }
}

fn replay_blocking(conn: &Connection, tenant: TenantId, after: Seq, visit: &mut ReplayVisitor<'_>) -> Result<u64> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT seq, event_type, channel, account, ts, amount_fen, identities, source_kind, source_id, group_id, traits, \
         {} FROM events WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq",
        crate::consent_purpose_sql("CAST(json_extract(properties, '$.purpose') AS TEXT)")
    ))?;
    let mut rows = stmt.query(params![tenant.0, after])?;
    let mut visited = 0;
    while let Some(row) = rows.next()? {
        let replay = ReplayRow {
            seq: row.get(0)?,
            event_type: text(row, 1)?.unwrap_or_default(),
            channel: text(row, 2)?.unwrap_or_default(),
            account: text(row, 3)?.unwrap_or_default(),
            ts: row.get(4)?,
            amount_fen: row.get(5)?,
            identities: text(row, 6)?.unwrap_or_default(),
            source_kind: text(row, 7)?,
            source_id: text(row, 8)?,
            group_id: text(row, 9)?,
            traits: text(row, 10)?,
            consent_purpose: text(row, 11)?,
        };
        visit(&replay)?;
        visited += 1;
    }
    Ok(visited)
}

fn append_blocking(w: &mut Writer, batch: &[(TenantId, Event)]) -> Result<Vec<AppendOutcome>> {
    // IMMEDIATE takes the write lock up front, so the MAX(seq) read below cannot race another
    // process appending to the same file (an import running beside a server).
    let tx = w.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut staged: FxHashMap<TenantId, Seq> = FxHashMap::default();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (tenant_id, seq, message_id, event_type, channel, account, ts, received_at, amount_fen, \
             currency, identities, source_kind, source_id, group_id, properties, traits, context) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
             ON CONFLICT (tenant_id, message_id) DO NOTHING",
        )?;
        let mut max_seq = tx.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events WHERE tenant_id = ?1")?;
        for (tenant, event) in batch {
            let seq = match staged.get(tenant) {
                Some(seq) => *seq,
                None => max_seq.query_row([tenant.0], |r| r.get::<_, i64>(0))? + 1,
            };
            let changed = insert.execute(params![
                tenant.0,
                seq,
                event.message_id,
                event.kind.as_str(),
                event.channel.as_str(),
                event.account,
                event.timestamp.0,
                event.received_at.0,
                event.amount.map(|a| a.0),
                event.currency,
                encode_identities(&event.identities),
                event.source.as_ref().map(|s| s.kind.as_str()),
                event.source.as_ref().map(|s| s.id.as_str()),
                event.group_id,
                event.properties.as_ref().map(|p| p.get()),
                event.traits.as_ref().map(|p| p.get()),
                event.context.as_ref().map(|p| p.get()),
            ])?;
            if changed == 1 {
                staged.insert(*tenant, seq + 1);
                outcomes.push(AppendOutcome::Appended(seq));
            } else {
                staged.insert(*tenant, seq);
                outcomes.push(AppendOutcome::Duplicate);
            }
        }
    }
    tx.commit()?;
    Ok(outcomes)
}
