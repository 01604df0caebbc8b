//! siyu's storage boundary. The engine keeps hot state in memory; what must survive a restart —
//! tenants, keys, settings and the append-only event log — goes through the [`Store`] trait, with
//! an embedded SQLite back-end (default) and a PostgreSQL one (`DATABASE_URL`). This is the only
//! crate that writes SQL.

use std::sync::Arc;

use async_trait::async_trait;
use siyu_model::{Event, Industry, Millis, Seq, TenantId, TenantSettings};

pub mod audience;
mod codec;
mod ledger;
mod migrate;
pub mod postgres;
mod postgres_audience;
mod postgres_reach;
pub mod reach;
pub mod scratch;
#[cfg(feature = "bench-sql")]
pub mod segment_sql;
pub mod sqlite;
mod sqlite_audience;
mod sqlite_outbox;
mod sqlite_reach;

pub use audience::{AudienceKind, AudienceStore, MembershipChange, SegmentRecord, TagGroupRecord, TagOp, TagRecord};
pub use codec::{decode_identities, encode_identities, split_identities};
pub use reach::{
    CampaignRecord, CampaignState, Claimed, ContactWayRecord, EnqueueBatch, EnqueueItem, Enqueued, OutboxRow,
    OutboxState, Outcome, ReachStore, StaffTask, Suppression, TaskState, TemplateRecord,
};

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
    pub industry: Industry,
    pub settings: TenantSettings,
    pub created_at: Millis,
}

/// What a key may do: a write key only ingests; a secret key manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Write,
    Secret,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Write => "write",
            KeyKind::Secret => "secret",
        }
    }

    fn parse(text: &str) -> KeyKind {
        if text == "secret" {
            KeyKind::Secret
        } else {
            KeyKind::Write
        }
    }
}

/// The outcome of appending one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Durably appended at this position of the tenant's log.
    Appended(Seq),
    /// The tenant's log already holds an event with this `message_id`: nothing was written.
    Duplicate,
}

/// An event read back from the log.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: Seq,
    pub event: Event,
}

/// One event of a replay, borrowed from the storage row: what folding needs, nothing owned.
#[derive(Debug, Clone, Copy)]
pub struct ReplayRow<'a> {
    pub seq: Seq,
    pub event_type: &'a str,
    pub channel: &'a str,
    pub account: &'a str,
    pub ts: i64,
    pub amount_fen: Option<i64>,
    /// The compact `kind␟value␞…` form; see [`decode_identities`].
    pub identities: &'a str,
    pub source_kind: Option<&'a str>,
    pub source_id: Option<&'a str>,
    pub group_id: Option<&'a str>,
    pub traits: Option<&'a str>,
    /// `properties.purpose` of a consent event (none on other events): the one property the
    /// fold keeps, read without the rest of the properties.
    pub consent_purpose: Option<&'a str>,
}

/// The replay's column for a consent event's purpose, given the back-end's expression for
/// `properties.purpose` as text.
pub(crate) fn consent_purpose_sql(json_text: &str) -> String {
    format!("CASE WHEN event_type IN ('consent_granted', 'consent_revoked') THEN {json_text} END")
}

/// Called for each row of a replay; an error stops the replay.
pub type ReplayVisitor<'v> = dyn FnMut(&ReplayRow<'_>) -> Result<()> + Send + 'v;

/// How much of each event a scan reads. Replays need only the envelope; timelines need it all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanDetail {
    /// Everything but `properties` and `context` (traits are kept: replays fold them).
    Envelope,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a tenant named {0:?} already exists")]
    TenantExists(String),
    #[error("no tenant {0}")]
    NoSuchTenant(TenantId),
    /// A live tag group, tag or segment of the tenant already has this name.
    #[error("a {} named {name:?} already exists", kind.as_str())]
    NameTaken { kind: AudienceKind, name: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("failed to open the database: {0}")]
    Open(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("storage task failed: {0}")]
    Task(String),
    /// The runtime is shutting down and cancelled the storage call.
    #[error("storage call cancelled by shutdown")]
    Cancelled,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> StoreError {
        if e.is_cancelled() {
            StoreError::Cancelled
        } else {
            StoreError::Task(e.to_string())
        }
    }
}

/// Everything siyu persists. Every method that touches tenant data takes the tenant first.
#[async_trait]
pub trait Store: AudienceStore + ReachStore + Send + Sync + 'static {
    fn backend(&self) -> Backend;

    async fn create_tenant(&self, name: &str, industry: Industry, keys: &[(KeyKind, String)]) -> Result<TenantRecord>;
    async fn tenants(&self) -> Result<Vec<TenantRecord>>;
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantRecord>>;
    async fn tenant_by_name(&self, name: &str) -> Result<Option<TenantRecord>>;
    /// Finds the tenant owning a key, by the key's SHA-256 hash (keys are never stored in clear).
    async fn tenant_by_key_hash(&self, key_hash: &str) -> Result<Option<(TenantId, KeyKind)>>;
    async fn add_key(&self, tenant: TenantId, kind: KeyKind, key_hash: &str) -> Result<()>;
    async fn save_settings(&self, tenant: TenantId, settings: &TenantSettings) -> Result<()>;

    /// Appends events (possibly of several tenants) in one durable transaction, in order.
    /// Returns one outcome per event; an event whose `message_id` its tenant already has is
    /// skipped. Returns only after the commit is durable.
    async fn append(&self, batch: &[(TenantId, Event)]) -> Result<Vec<AppendOutcome>>;
    /// Events of a tenant with `seq > after`, in seq order, at most `limit`.
    async fn scan(&self, tenant: TenantId, after: Seq, limit: usize, detail: ScanDetail) -> Result<Vec<StoredEvent>>;
    /// The events at these positions (any order in, seq order out); missing ones are skipped.
    async fn events_by_seq(&self, tenant: TenantId, seqs: &[Seq]) -> Result<Vec<StoredEvent>>;
    async fn event_count(&self, tenant: TenantId) -> Result<u64>;
    /// Streams the tenant's events with `seq > after` in seq order to `visit`, without building
    /// owned events — the hot path of start-up and `siyu rebuild`. Returns how many it visited.
    async fn replay(&self, tenant: TenantId, after: Seq, visit: &mut ReplayVisitor<'_>) -> Result<u64>;
}

/// Opens the store named by a URL: `postgres://…` for PostgreSQL, anything else is a SQLite
/// file path (optionally prefixed `sqlite://`). Migrations are applied on open.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::connect(url).await?))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(Arc::new(sqlite::SqliteStore::open(std::path::Path::new(path))?))
    }
}

/// Runs `f`, which blocks for a while (a replay folding rows into the caller's state, a scan of
/// every profile), telling a multi-threaded tokio runtime so that it moves other tasks off this
/// thread meanwhile.
pub fn blocking_in_place<T>(f: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}
