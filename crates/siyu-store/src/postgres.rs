//! The production back-end: PostgreSQL through sqlx, with the same semantics as the SQLite one.
//!
//! Seqs stay dense per tenant, as on SQLite: an append locks the batch's tenant rows (in tenant
//! order, so two multi-tenant batches cannot deadlock), drops the events whose `message_id` the
//! log already holds, and numbers the rest from `tenants.next_seq`. The row lock serialises
//! appenders of one tenant, so no other transaction can insert the same `message_id` in between;
//! the `ON CONFLICT DO NOTHING` stays as a safety net, and if it ever fires it costs a gap in the
//! seqs, never a wrong outcome.

use async_trait::async_trait;
use rustc_hash::FxHashMap;
use siyu_model::{Event, Industry, Millis, Seq, TenantId, TenantSettings};
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{Executor, Row};

use crate::codec::{encode_identities, EventRow};
use crate::sqlite::tenant_record;
use crate::{
    AppendOutcome, Backend, KeyKind, ReplayRow, ReplayVisitor, Result, ScanDetail, Store, StoreError, StoredEvent,
    TenantRecord,
};

/// Rows per round trip of a replay.
const REPLAY_PAGE: i64 = 50_000;

pub struct PostgresStore {
    pub(crate) pool: sqlx::PgPool,
    /// The guardrail ledger per tenant, derived from the outbox (ledger.rs), each behind this
    /// process's lock of the tenant; the advisory lock inside the queuing transaction serialises
    /// processes.
    pub(crate) ledgers: parking_lot::Mutex<std::collections::HashMap<TenantId, crate::ledger::LedgerSlot>>,
}

impl PostgresStore {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
        migrate(&pool).await?;
        Ok(PostgresStore { pool, ledgers: Default::default() })
    }
}

/// The key of the advisory lock that serialises migrations of concurrently starting servers.
/// Arbitrary but fixed: the bytes of "siyu-mig".
const MIGRATION_LOCK: i64 = 0x7369_7975_2d6d_6967;

async fn migrate(pool: &sqlx::PgPool) -> Result<()> {
    for migration in crate::migrate::POSTGRES {
        let mut tx = pool.begin().await?;
        // Taken before anything else, the table creation included: two servers starting on an
        // empty database would otherwise race on CREATE TABLE.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations \
             (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .await?;
        let applied: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(migration.version)
            .fetch_optional(&mut *tx)
            .await?;
        if applied.is_none() {
            // A plain string runs as a simple query, which may hold several statements.
            tx.execute(migration.sql).await?;
            sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                .bind(migration.version)
                .bind(migration.name)
                .bind(Millis::now().0)
                .execute(&mut *tx)
                .await?;
            tracing::info!(version = migration.version, name = migration.name, "applied postgres migration");
        }
        tx.commit().await?;
    }
    Ok(())
}

const TENANT_COLUMNS: &str = "tenant_id, name, industry, settings, created_at";
const EVENT_COLUMNS: &str = "seq, message_id, event_type, channel, account, ts, received_at, amount_fen, currency, \
     identities, source_kind, source_id, group_id";

fn tenant_from_row(row: &PgRow) -> Result<TenantRecord> {
    tenant_record((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?))
}

fn select_events(detail: ScanDetail) -> String {
    // JSONB goes out as text: the event keeps it as raw JSON and parses it only when needed.
    match detail {
        ScanDetail::Envelope => format!("SELECT {EVENT_COLUMNS}, NULL::text, traits::text, NULL::text FROM events"),
        ScanDetail::Full => {
            format!("SELECT {EVENT_COLUMNS}, properties::text, traits::text, context::text FROM events")
        }
    }
}

/// Reads a row of [`select_events`]; the detail is already in which columns are NULL.
fn event_from_row(row: &PgRow) -> Result<StoredEvent> {
    EventRow {
        seq: row.try_get(0)?,
        message_id: row.try_get(1)?,
        event_type: row.try_get(2)?,
        channel: row.try_get(3)?,
        account: row.try_get(4)?,
        ts: row.try_get(5)?,
        received_at: row.try_get(6)?,
        amount_fen: row.try_get(7)?,
        currency: row.try_get(8)?,
        identities: row.try_get(9)?,
        source_kind: row.try_get(10)?,
        source_id: row.try_get(11)?,
        group_id: row.try_get(12)?,
        properties: row.try_get(13)?,
        traits: row.try_get(14)?,
        context: row.try_get(15)?,
    }
    .into_stored()
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn create_tenant(&self, name: &str, industry: Industry, keys: &[(KeyKind, String)]) -> Result<TenantRecord> {
        let mut tx = self.pool.begin().await?;
        let now = Millis::now().0;
        let settings = serde_json::to_string(&TenantSettings::default()).expect("settings serialise");
        let row = sqlx::query(&format!(
            "INSERT INTO tenants (name, industry, settings, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING RETURNING {TENANT_COLUMNS}"
        ))
        .bind(name)
        .bind(industry.as_str())
        .bind(settings)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::TenantExists(name.to_string()));
        };
        let record = tenant_from_row(&row)?;
        for (kind, hash) in keys {
            sqlx::query("INSERT INTO api_keys (tenant_id, key_hash, kind, created_at) VALUES ($1, $2, $3, $4)")
                .bind(record.id.0)
                .bind(hash)
                .bind(kind.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY tenant_id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantRecord>> {
        sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = $1"))
            .bind(tenant.0)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tenant_from_row)
            .transpose()
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<TenantRecord>> {
        sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tenant_from_row)
            .transpose()
    }

    async fn tenant_by_key_hash(&self, key_hash: &str) -> Result<Option<(TenantId, KeyKind)>> {
        let row: Option<(i64, String)> = sqlx::query_as("SELECT tenant_id, kind FROM api_keys WHERE key_hash = $1")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(id, kind)| (TenantId(id), KeyKind::parse(&kind))))
    }

    async fn add_key(&self, tenant: TenantId, kind: KeyKind, key_hash: &str) -> Result<()> {
        sqlx::query("INSERT INTO api_keys (tenant_id, key_hash, kind, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant.0)
            .bind(key_hash)
            .bind(kind.as_str())
            .bind(Millis::now().0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn save_settings(&self, tenant: TenantId, settings: &TenantSettings) -> Result<()> {
        let text = serde_json::to_string(settings).expect("settings serialise");
        let changed = sqlx::query("UPDATE tenants SET settings = $1 WHERE tenant_id = $2")
            .bind(text)
            .bind(tenant.0)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if changed == 0 {
            return Err(StoreError::NoSuchTenant(tenant));
        }
        Ok(())
    }

    async fn append(&self, batch: &[(TenantId, Event)]) -> Result<Vec<AppendOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let plan = AppendPlan::new(batch);
        let mut tx = self.pool.begin().await?;
        let tenant_ids: Vec<i64> = plan.tenants.iter().map(|(tenant, _)| tenant.0).collect();
        // ORDER BY with FOR UPDATE locks in sorted order: concurrent batches take their tenant
        // locks in the same order and cannot deadlock.
        let locked: Vec<(i64,)> =
            sqlx::query_as("SELECT tenant_id FROM tenants WHERE tenant_id = ANY($1) ORDER BY tenant_id FOR UPDATE")
                .bind(&tenant_ids)
                .fetch_all(&mut *tx)
                .await?;
        if locked.len() != tenant_ids.len() {
            let missing = tenant_ids.iter().find(|id| !locked.iter().any(|(l,)| l == *id)).copied().unwrap_or_default();
            return Err(StoreError::NoSuchTenant(TenantId(missing)));
        }
        let mut outcomes = vec![AppendOutcome::Duplicate; batch.len()];
        for (tenant, indices) in &plan.tenants {
            let appended = insert_tenant_events(&mut tx, *tenant, batch, indices).await?;
            for (index, seq) in appended {
                outcomes[index] = AppendOutcome::Appended(seq);
            }
        }
        // With the default synchronous_commit = on, the commit returns once the WAL is flushed.
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn scan(&self, tenant: TenantId, after: Seq, limit: usize, detail: ScanDetail) -> Result<Vec<StoredEvent>> {
        // PostgreSQL refuses a negative LIMIT, so "no limit" (usize::MAX) is clamped, not wrapped.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!("{} WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3", select_events(detail));
        let rows = sqlx::query(&sql).bind(tenant.0).bind(after).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_by_seq(&self, tenant: TenantId, seqs: &[Seq]) -> Result<Vec<StoredEvent>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("{} WHERE tenant_id = $1 AND seq = ANY($2) ORDER BY seq", select_events(ScanDetail::Full));
        let rows = sqlx::query(&sql).bind(tenant.0).bind(seqs).fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn event_count(&self, tenant: TenantId) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE tenant_id = $1")
            .bind(tenant.0)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn replay(&self, tenant: TenantId, mut after: Seq, visit: &mut ReplayVisitor<'_>) -> Result<u64> {
        let mut visited = 0;
        loop {
            let rows: Vec<PgRow> = sqlx::query(&format!(
                "SELECT seq, event_type, channel, account, ts, amount_fen, identities, source_kind, source_id, \
                 group_id, traits::text, {} FROM events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                crate::consent_purpose_sql("properties->>'purpose'")
            ))
            .bind(tenant.0)
            .bind(after)
            .bind(REPLAY_PAGE)
            .fetch_all(&self.pool)
            .await?;
            // The visitor folds the page into the caller's state: heavy work, so tokio is told
            // this thread blocks for a while (as the SQLite store does for its whole read).
            let fold = || -> Result<()> {
                for row in &rows {
                    let replay = ReplayRow {
                        seq: row.try_get(0)?,
                        event_type: row.try_get(1)?,
                        channel: row.try_get(2)?,
                        account: row.try_get(3)?,
                        ts: row.try_get(4)?,
                        amount_fen: row.try_get(5)?,
                        identities: row.try_get(6)?,
                        source_kind: row.try_get(7)?,
                        source_id: row.try_get(8)?,
                        group_id: row.try_get(9)?,
                        traits: row.try_get(10)?,
                        consent_purpose: row.try_get(11)?,
                    };
                    visit(&replay)?;
                    after = replay.seq;
                    visited += 1;
                }
                Ok(())
            };
            crate::blocking_in_place(fold)?;
            if (rows.len() as i64) < REPLAY_PAGE {
                return Ok(visited);
            }
        }
    }
}

/// A batch grouped by tenant, in tenant order, with the repeats of a `message_id` inside the
/// batch already dropped: only the first occurrence is a candidate, the later ones are
/// duplicates whatever the log holds.
struct AppendPlan {
    tenants: Vec<(TenantId, Vec<usize>)>,
}

impl AppendPlan {
    fn new(batch: &[(TenantId, Event)]) -> AppendPlan {
        let mut by_tenant: FxHashMap<TenantId, (Vec<usize>, rustc_hash::FxHashSet<&str>)> = FxHashMap::default();
        for (index, (tenant, event)) in batch.iter().enumerate() {
            let (indices, seen) = by_tenant.entry(*tenant).or_default();
            if seen.insert(event.message_id.as_str()) {
                indices.push(index);
            }
        }
        let mut tenants: Vec<(TenantId, Vec<usize>)> =
            by_tenant.into_iter().map(|(tenant, (indices, _))| (tenant, indices)).collect();
        tenants.sort_unstable_by_key(|(tenant, _)| *tenant);
        AppendPlan { tenants }
    }
}

/// Inserts one tenant's candidates with one statement and returns `(batch index, seq)` of those
/// appended. Must run while holding the tenant's row lock.
async fn insert_tenant_events(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    batch: &[(TenantId, Event)],
    indices: &[usize],
) -> Result<Vec<(usize, Seq)>> {
    let n = indices.len();
    let mut cols = Columns::with_capacity(n);
    for &index in indices {
        cols.push(index, &batch[index].1);
    }
    // `fresh` numbers the candidates the log does not hold yet, in batch order, from next_seq;
    // `bump` advances next_seq past every number handed out. Both read the tenant row this
    // transaction has locked, so the numbering is gap-free and unique.
    let rows: Vec<(i64, Seq)> = sqlx::query_as(
        "WITH u AS ( \
             SELECT * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], \
                 $8::bigint[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], \
                 $15::text[], $16::text[], $17::text[]) \
             AS u(idx, message_id, event_type, channel, account, ts, received_at, amount_fen, currency, \
                 identities, source_kind, source_id, group_id, properties, traits, context) \
         ), fresh AS ( \
             SELECT u.*, (SELECT next_seq FROM tenants WHERE tenant_id = $1) \
                 + row_number() OVER (ORDER BY u.idx) - 1 AS seq \
             FROM u \
             WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.tenant_id = $1 AND e.message_id = u.message_id) \
         ), ins AS ( \
             INSERT INTO events (tenant_id, seq, message_id, event_type, channel, account, ts, received_at, \
                 amount_fen, currency, identities, source_kind, source_id, group_id, properties, traits, context) \
             SELECT $1, seq, message_id, event_type, channel, account, ts, received_at, amount_fen, currency, \
                 identities, source_kind, source_id, group_id, properties::jsonb, traits::jsonb, context::jsonb \
             FROM fresh ORDER BY seq \
             ON CONFLICT (tenant_id, message_id) DO NOTHING \
             RETURNING seq \
         ), bump AS ( \
             UPDATE tenants SET next_seq = next_seq + (SELECT count(*) FROM fresh) WHERE tenant_id = $1 \
         ) \
         SELECT fresh.idx, fresh.seq FROM fresh JOIN ins ON ins.seq = fresh.seq",
    )
    .bind(tenant.0)
    .bind(cols.index)
    .bind(cols.message_id)
    .bind(cols.event_type)
    .bind(cols.channel)
    .bind(cols.account)
    .bind(cols.ts)
    .bind(cols.received_at)
    .bind(cols.amount_fen)
    .bind(cols.currency)
    .bind(cols.identities)
    .bind(cols.source_kind)
    .bind(cols.source_id)
    .bind(cols.group_id)
    .bind(cols.properties)
    .bind(cols.traits)
    .bind(cols.context)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(|(index, seq)| (index as usize, seq)).collect())
}

/// One tenant's candidates as column arrays, for `UNNEST`.
struct Columns<'a> {
    index: Vec<i64>,
    message_id: Vec<&'a str>,
    event_type: Vec<&'a str>,
    channel: Vec<&'a str>,
    account: Vec<&'a str>,
    ts: Vec<i64>,
    received_at: Vec<i64>,
    amount_fen: Vec<Option<i64>>,
    currency: Vec<Option<&'a str>>,
    identities: Vec<String>,
    source_kind: Vec<Option<&'a str>>,
    source_id: Vec<Option<&'a str>>,
    group_id: Vec<Option<&'a str>>,
    properties: Vec<Option<&'a str>>,
    traits: Vec<Option<&'a str>>,
    context: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn with_capacity(n: usize) -> Columns<'a> {
        Columns {
            index: Vec::with_capacity(n),
            message_id: Vec::with_capacity(n),
            event_type: Vec::with_capacity(n),
            channel: Vec::with_capacity(n),
            account: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            received_at: Vec::with_capacity(n),
            amount_fen: Vec::with_capacity(n),
            currency: Vec::with_capacity(n),
            identities: Vec::with_capacity(n),
            source_kind: Vec::with_capacity(n),
            source_id: Vec::with_capacity(n),
            group_id: Vec::with_capacity(n),
            properties: Vec::with_capacity(n),
            traits: Vec::with_capacity(n),
            context: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, index: usize, event: &'a Event) {
        self.index.push(index as i64);
        self.message_id.push(&event.message_id);
        self.event_type.push(event.kind.as_str());
        self.channel.push(event.channel.as_str());
        self.account.push(&event.account);
        self.ts.push(event.timestamp.0);
        self.received_at.push(event.received_at.0);
        self.amount_fen.push(event.amount.map(|a| a.0));
        self.currency.push(event.currency.as_deref());
        self.identities.push(encode_identities(&event.identities));
        self.source_kind.push(event.source.as_ref().map(|s| s.kind.as_str()));
        self.source_id.push(event.source.as_ref().map(|s| s.id.as_str()));
        self.group_id.push(event.group_id.as_deref());
        self.properties.push(event.properties.as_ref().map(|p| p.get()));
        self.traits.push(event.traits.as_ref().map(|p| p.get()));
        self.context.push(event.context.as_ref().map(|p| p.get()));
    }
}

#[cfg(test)]
mod tests {
    fn assert_send<T: Send>(_: &T) {}

    /// A server spawns the open on tokio, which needs a `Send` future; `sqlx::raw_sql(..)
    /// .execute(&mut *tx)` once made it `!Send` (a higher-ranked `Executor` bound), and only a
    /// compile-time check like this one notices.
    #[test]
    fn connecting_is_send() {
        let fut = super::PostgresStore::connect("postgres://nowhere/x");
        assert_send(&fut);
        let fut = crate::open("postgres://nowhere/x");
        assert_send(&fut);
    }
}
