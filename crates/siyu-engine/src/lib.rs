//! What happens to an event in siyu: validated events are appended durably to the log by a
//! group-committing pipeline, then applied — in log order — to each tenant's in-memory state
//! (identity resolution, profiles, scores). Reads are served from that state.
//!
//! The public surface is [`Engine`] — its commands and its reads, which return plain view types
//! (`query`, `segments::ops`, `activity`) — and the metrics registry. The state itself (profiles,
//! identities, subscribers, member sets, the slab and interning) is the crate's own: nothing
//! outside can break its invariants or hold its locks. The `internals` feature opens a window on
//! it ([`internals`]) for `siyu rebuild`'s verification, `siyu bench` and the engine's own
//! integration tests; the server is built without it (`.ci/run` checks).

pub mod activity;
pub mod contact_ways;
mod identity;
mod intern;
mod keys;
mod members;
pub mod metrics;
mod profiles;
pub mod query;
pub mod reach;
mod rfm_index;
pub mod segments;
mod slab;
mod state;
mod subscriber;

/// The engine's state, for measuring and verifying it from outside (`siyu bench`, `siyu
/// rebuild`, the property tests): never for serving.
#[cfg(feature = "internals")]
pub mod internals {
    pub use crate::identity::{IdentityLink, MergeRecord, RefusalReason, RefusedMerge};
    pub use crate::members::Members;
    pub use crate::profiles::{Change, EventRef, IdentityRef, Profile, Profiles};

    /// Builds a tenant's state from nothing by folding its whole log.
    pub async fn replay(
        store: &std::sync::Arc<dyn siyu_store::Store>,
        tenant: siyu_model::TenantId,
        settings: siyu_model::TenantSettings,
    ) -> crate::Result<TenantState> {
        crate::replay(store, tenant, settings).await
    }
    pub use crate::segments::eval::{cheapest_first, Evaluator};
    pub use crate::segments::{Entry, Segment, Segments, StateVersion};
    pub use crate::state::{AsOf, ProfileAt, TenantState};
    pub use crate::TenantRuntime;
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use siyu_model::event::TimeLimits;
use siyu_model::reach::template::Purpose;
use siyu_model::{CannotLink, Event, Industry, ProfileId, Seq, TenantId, TenantSettings};
use siyu_model::{Channel, Fen, Millis};
use siyu_store::{AppendOutcome, KeyKind, MembershipChange, ReplayRow, Store, StoreError, TenantRecord};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use metrics::Metrics;
use profiles::{EventRef, IdentityRef};
use state::TenantState;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no tenant {0}")]
    NoSuchTenant(TenantId),
    #[error("invalid settings: {0}")]
    InvalidSettings(#[from] siyu_model::score::ConfigError),
    #[error("profile {0} not found")]
    NoSuchProfile(ProfileId),
    #[error("profile {merged} was not merged into {survivor}")]
    NotMerged { survivor: ProfileId, merged: ProfileId },
    #[error("the ingest pipeline has shut down")]
    ShuttingDown,
    #[error(transparent)]
    Segments(#[from] segments::ops::SegmentsError),
    #[error(transparent)]
    Reach(#[from] reach::ReachError),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Tuning of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// At most this many events go into one group commit.
    pub group_max_events: usize,
    /// Clock-skew tolerance and oldest accepted timestamp.
    pub time_limits: TimeLimits,
    /// How often to look for events other processes appended (e.g. an import beside a server).
    pub follow_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            group_max_events: 50_000,
            time_limits: TimeLimits::default(),
            follow_interval: Duration::from_secs(1),
        }
    }
}

/// One tenant's record and in-memory state.
pub struct TenantRuntime {
    pub record: RwLock<TenantRecord>,
    pub state: RwLock<TenantState>,
}

/// Keys a tenant was created with, shown once.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub record: TenantRecord,
    pub write_key: String,
    pub secret_key: String,
}

/// What became of one submitted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Appended to the log at this position, and applied.
    Appended(Seq),
    /// A retry of a `message_id` the log holds already: nothing was appended.
    Duplicate,
}

impl From<&AppendOutcome> for Ingested {
    fn from(outcome: &AppendOutcome) -> Ingested {
        match outcome {
            AppendOutcome::Appended(seq) => Ingested::Appended(*seq),
            AppendOutcome::Duplicate => Ingested::Duplicate,
        }
    }
}

/// What a key may do: send events (write key), or also manage the tenant (secret key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRole {
    Write,
    Secret,
}

impl KeyRole {
    fn of(kind: KeyKind) -> KeyRole {
        match kind {
            KeyKind::Write => KeyRole::Write,
            KeyKind::Secret => KeyRole::Secret,
        }
    }

    fn kind(self) -> KeyKind {
        match self {
            KeyRole::Write => KeyKind::Write,
            KeyRole::Secret => KeyKind::Secret,
        }
    }
}

/// What `Engine::health` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub tenants: usize,
    /// `sqlite` or `postgres`.
    pub backend: String,
}

/// Events queued for the pipeline; see [`Engine::submit`].
pub struct Pending(oneshot::Receiver<Result<Vec<AppendOutcome>>>);

impl Pending {
    pub async fn wait(self) -> Result<Vec<Ingested>> {
        let outcomes = self.0.await.map_err(|_| EngineError::ShuttingDown)??;
        Ok(outcomes.iter().map(Ingested::from).collect())
    }
}

struct IngestRequest {
    tenant: TenantId,
    path: &'static str,
    events: Vec<Event>,
    /// `events.len()` as submitted (the events themselves move into the commit batch).
    events_len: usize,
    reply: Reply,
}

pub struct Engine {
    store: Arc<dyn Store>,
    config: EngineConfig,
    tenants: RwLock<FxHashMap<TenantId, Arc<TenantRuntime>>>,
    key_cache: RwLock<FxHashMap<String, (TenantId, KeyRole)>>,
    ingest_tx: mpsc::Sender<IngestRequest>,
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl Engine {
    /// Loads every tenant's state from the log and starts the ingest pipeline.
    pub async fn start(store: Arc<dyn Store>, config: EngineConfig) -> Result<Arc<Engine>> {
        let (ingest_tx, ingest_rx) = mpsc::channel(4096);
        let engine = Arc::new(Engine {
            store,
            config,
            tenants: RwLock::new(FxHashMap::default()),
            key_cache: RwLock::new(FxHashMap::default()),
            ingest_tx,
            metrics: Arc::new(Metrics::default()),
            shutdown: CancellationToken::new(),
        });
        for record in engine.store.tenants().await? {
            engine.load_tenant(record).await?;
        }
        tokio::spawn(run_pipeline(engine.clone(), ingest_rx));
        tokio::spawn(run_segment_sweeper(engine.clone()));
        Ok(engine)
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Stops the pipeline after the batch in flight.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Loads a tenant unless it is loaded already. Two loads can race (a tenant created here while
    /// the log follower notices it in the store); the first runtime in the map wins and everyone
    /// gets that one, so no holder of a runtime is ever left with a replaced, stale copy.
    async fn load_tenant(&self, record: TenantRecord) -> Result<Arc<TenantRuntime>> {
        if let Some(existing) = self.tenants.read().get(&record.id) {
            return Ok(existing.clone());
        }
        let state = replay(&self.store, record.id, record.settings.clone()).await?;
        let fresh = Arc::new(TenantRuntime { record: RwLock::new(record.clone()), state: RwLock::new(state) });
        let mut tenants = self.tenants.write();
        let runtime = tenants.entry(record.id).or_insert(fresh).clone();
        self.metrics.tenants_loaded.set(tenants.len() as i64);
        Ok(runtime)
    }

    pub(crate) fn tenant(&self, tenant: TenantId) -> Result<Arc<TenantRuntime>> {
        self.tenants.read().get(&tenant).cloned().ok_or(EngineError::NoSuchTenant(tenant))
    }

    /// A tenant's record and state, for measuring them (`siyu bench`).
    #[cfg(feature = "internals")]
    pub fn runtime(&self, tenant: TenantId) -> Result<Arc<TenantRuntime>> {
        self.tenant(tenant)
    }

    pub fn tenant_ids(&self) -> Vec<TenantId> {
        let mut ids: Vec<_> = self.tenants.read().keys().copied().collect();
        ids.sort();
        ids
    }

    pub async fn create_tenant(&self, name: &str, industry: Industry) -> Result<NewTenant> {
        let write_key = keys::generate("wk");
        let secret_key = keys::generate("sk");
        let record = self
            .store
            .create_tenant(
                name,
                industry,
                &[(KeyKind::Write, keys::hash(&write_key)), (KeyKind::Secret, keys::hash(&secret_key))],
            )
            .await?;
        self.load_tenant(record.clone()).await?;
        Ok(NewTenant { record, write_key, secret_key })
    }

    /// Adds a fresh key of `kind` to a tenant (e.g. when the demo's keys were not kept).
    pub async fn issue_key(&self, tenant: TenantId, role: KeyRole) -> Result<String> {
        let key = keys::generate(if role == KeyRole::Write { "wk" } else { "sk" });
        self.store.add_key(tenant, role.kind(), &keys::hash(&key)).await?;
        Ok(key)
    }

    /// The tenant's settings (scores, identity limits, event mapping, cannot-link rules).
    pub fn settings(&self, tenant: TenantId) -> Result<TenantSettings> {
        Ok(self.tenant(tenant)?.record.read().settings.clone())
    }

    /// The tenant's own names for Segment event types (`settings.event_mapping`), usually none;
    /// cheaper than [`Engine::settings`] on the tracking path.
    pub fn event_mapping(&self, tenant: TenantId) -> Result<std::collections::BTreeMap<String, String>> {
        Ok(self.tenant(tenant)?.record.read().settings.event_mapping.clone())
    }

    /// A tenant's stored record by name, loaded or not.
    pub async fn tenant_by_name(&self, name: &str) -> Result<Option<TenantRecord>> {
        Ok(self.store.tenant_by_name(name).await?)
    }

    /// A tenant's stored record by id.
    pub async fn tenant_record(&self, tenant: TenantId) -> Result<Option<TenantRecord>> {
        Ok(self.store.tenant(tenant).await?)
    }

    /// Every tenant in the store.
    pub async fn tenant_records(&self) -> Result<Vec<TenantRecord>> {
        Ok(self.store.tenants().await?)
    }

    /// Events in a tenant's log (as stored: including any not applied here yet).
    pub async fn logged_events(&self, tenant: TenantId) -> Result<u64> {
        Ok(self.store.event_count(tenant).await?)
    }

    /// Liveness: the store answers; how many tenants it holds and which back-end it is.
    pub async fn health(&self) -> Result<Health> {
        let tenants = self.store.tenants().await?.len();
        Ok(Health { tenants, backend: format!("{:?}", self.store.backend()).to_lowercase() })
    }

    /// Which tenant a key belongs to, and what it may do.
    pub async fn authenticate(&self, key: &str) -> Result<Option<(TenantId, KeyRole)>> {
        let hash = keys::hash(key);
        if let Some(found) = self.key_cache.read().get(&hash) {
            return Ok(Some(*found));
        }
        let found = self.store.tenant_by_key_hash(&hash).await?.map(|(tenant, kind)| (tenant, KeyRole::of(kind)));
        if let Some(found) = found {
            self.key_cache.write().insert(hash, found);
        }
        Ok(found)
    }

    /// Appends events durably and applies them; returns one outcome per event once both are done.
    pub async fn ingest(&self, tenant: TenantId, path: &'static str, events: Vec<Event>) -> Result<Vec<Ingested>> {
        self.submit(tenant, path, events).await?.wait().await
    }

    /// Queues events for the pipeline and returns at once; the [`Pending`] resolves when they are
    /// durable and applied. Lets a bulk loader keep several groups in flight, in order.
    pub async fn submit(&self, tenant: TenantId, path: &'static str, events: Vec<Event>) -> Result<Pending> {
        let (reply, rx) = oneshot::channel();
        if events.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return Ok(Pending(rx));
        }
        self.tenant(tenant)?;
        self.ingest_tx
            .send(IngestRequest { tenant, path, events_len: events.len(), events, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        Ok(Pending(rx))
    }

    /// Saves new settings and re-derives the tenant's state from the log under them.
    pub async fn update_settings(&self, tenant: TenantId, settings: TenantSettings) -> Result<()> {
        settings.validate()?;
        let runtime = self.tenant(tenant)?;
        self.store.save_settings(tenant, &settings).await?;
        runtime.record.write().settings = settings.clone();
        self.rematerialise(tenant, &runtime, settings).await
    }

    /// Undoes the merge of `merged` into `survivor`: the two anchors recorded as evidence become
    /// a cannot-link pair in the tenant's settings, and the state is re-derived from the log, so
    /// the events that were attributed through the link go back where their identities say.
    pub async fn unmerge(
        &self,
        tenant: TenantId,
        survivor: ProfileId,
        merged: ProfileId,
        reason: &str,
    ) -> Result<CannotLink> {
        let runtime = self.tenant(tenant)?;
        let rule = {
            let state = runtime.state.read();
            let record = state
                .merges
                .iter()
                .find(|m| m.merged == merged && state.resolve(m.survivor) == state.resolve(survivor))
                .ok_or(EngineError::NotMerged { survivor, merged })?;
            CannotLink {
                a: record.survivor_anchor.clone(),
                b: record.merged_anchor.clone(),
                reason: reason.to_string(),
            }
        };
        let mut settings = runtime.record.read().settings.clone();
        settings.cannot_link.push(rule.clone());
        self.update_settings(tenant, settings).await?;
        Ok(rule)
    }

    async fn rematerialise(
        &self,
        tenant: TenantId,
        runtime: &Arc<TenantRuntime>,
        settings: TenantSettings,
    ) -> Result<()> {
        let fresh = replay(&self.store, tenant, settings).await?;
        *runtime.state.write() = fresh;
        // Events appended while we replayed are folded in as any other process's would be.
        catch_up(&self.store, runtime, None).await?;
        Ok(())
    }

    /// Re-derives a tenant's state from its log into a fresh value (for `siyu rebuild`).
    #[cfg(feature = "internals")]
    pub async fn replay_tenant(&self, tenant: TenantId) -> Result<TenantState> {
        self.replay_tenant_state(tenant).await
    }

    #[cfg(any(test, feature = "internals"))]
    async fn replay_tenant_state(&self, tenant: TenantId) -> Result<TenantState> {
        let settings = self.tenant(tenant)?.record.read().settings.clone();
        replay(&self.store, tenant, settings).await
    }

    /// Replaces a tenant's in-memory state by a fresh replay of its log.
    pub async fn rebuild(&self, tenant: TenantId) -> Result<()> {
        let runtime = self.tenant(tenant)?;
        let settings = runtime.record.read().settings.clone();
        self.rematerialise(tenant, &runtime, settings).await
    }

    /// Applies events other processes appended since we last looked.
    pub async fn follow_log(&self) -> Result<u64> {
        let mut applied = 0;
        for tenant in self.tenant_ids() {
            let runtime = self.tenant(tenant)?;
            applied += catch_up(&self.store, &runtime, None).await?;
        }
        // Tenants created by another process.
        let known: Vec<TenantId> = self.tenant_ids();
        for record in self.store.tenants().await? {
            if !known.contains(&record.id) {
                self.load_tenant(record).await?;
            }
        }
        Ok(applied)
    }
}

/// Builds a tenant's state from nothing by folding its whole log.
pub(crate) async fn replay(store: &Arc<dyn Store>, tenant: TenantId, settings: TenantSettings) -> Result<TenantState> {
    let mut state = TenantState::new(tenant, settings);
    state.segments = segments::Segments::load(
        store.tag_groups(tenant).await?,
        store.tags(tenant).await?,
        store.tag_ops(tenant).await?,
        store.segments(tenant).await?,
    );
    store
        .replay(tenant, 0, &mut |row| {
            state.apply_due_tag_ops(row.seq);
            apply_row(&mut state, row)
        })
        .await?;
    state.finish_replay(Millis::now());
    let property_types = state.recount_property_types();
    if !property_types.is_empty() {
        segments::load_properties_into(store, &mut state, &property_types).await?;
    }
    Ok(state)
}

/// Folds one log row into the state, straight from the borrowed row.
fn apply_row(state: &mut TenantState, row: &ReplayRow<'_>) -> Result<(), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("event {} of tenant {}: bad {what}", row.seq, state.tenant));
    let channel = Channel::parse(row.channel).ok_or_else(|| corrupt("channel"))?;
    let mut identities = Vec::with_capacity(2);
    for pair in siyu_store::split_identities(row.identities) {
        let (kind, value) = pair.ok_or_else(|| corrupt("identities"))?;
        identities.push(IdentityRef { kind, value });
    }
    let event = EventRef {
        type_name: row.event_type,
        channel,
        account: row.account,
        identities: &identities,
        timestamp: Millis(row.ts),
        amount: row.amount_fen.map(Fen),
        source_kind: row.source_kind,
        source_id: row.source_id.unwrap_or(""),
        group_id: row.group_id,
        traits: row.traits,
        properties: None,
        consent_purpose: Purpose::consent_code(row.consent_purpose),
    };
    state.apply_ref(row.seq, &event);
    Ok(())
}

/// Applies log events between the state's position and `until` (exclusive; `None` = the end):
/// off the async workers when there are many, [`APPLY_CHUNK`] per write lock.
async fn catch_up(store: &Arc<dyn Store>, runtime: &Arc<TenantRuntime>, until: Option<Seq>) -> Result<u64> {
    let (tenant, from) = {
        let state = runtime.state.read();
        (state.tenant, state.applied_seq)
    };
    // Read the (few) missing events first and apply them under the write lock afterwards, so
    // readers never wait on the disk.
    let mut missing = Vec::new();
    store
        .replay(tenant, from, &mut |row| {
            if until.is_none_or(|u| row.seq < u) {
                missing.push(OwnedRow::of(row));
            }
            Ok(())
        })
        .await?;
    let missing_len = missing.len();
    let runtime = runtime.clone();
    let apply = move || -> Result<u64, StoreError> {
        let mut applied = 0;
        for chunk in missing.chunks(APPLY_CHUNK) {
            let mut state = runtime.state.write();
            for row in chunk {
                if row.seq > state.applied_seq {
                    apply_row(&mut state, &row.borrow())?;
                    applied += 1;
                }
            }
        }
        Ok(applied)
    };
    let applied = if missing_len <= INLINE_APPLY_MAX { apply()? } else { blocking(apply).await?? };
    Ok(applied)
}

/// A replay row kept beyond its visit (events another process appended; few).
struct OwnedRow {
    seq: Seq,
    event_type: String,
    channel: String,
    account: String,
    ts: i64,
    amount_fen: Option<i64>,
    identities: String,
    source_kind: Option<String>,
    source_id: Option<String>,
    group_id: Option<String>,
    traits: Option<String>,
    consent_purpose: Option<String>,
}

impl OwnedRow {
    fn of(row: &ReplayRow<'_>) -> OwnedRow {
        OwnedRow {
            seq: row.seq,
            event_type: row.event_type.to_string(),
            channel: row.channel.to_string(),
            account: row.account.to_string(),
            ts: row.ts,
            amount_fen: row.amount_fen,
            identities: row.identities.to_string(),
            source_kind: row.source_kind.map(str::to_string),
            source_id: row.source_id.map(str::to_string),
            group_id: row.group_id.map(str::to_string),
            traits: row.traits.map(str::to_string),
            consent_purpose: row.consent_purpose.map(str::to_string),
        }
    }

    fn borrow(&self) -> ReplayRow<'_> {
        ReplayRow {
            seq: self.seq,
            event_type: &self.event_type,
            channel: &self.channel,
            account: &self.account,
            ts: self.ts,
            amount_fen: self.amount_fen,
            identities: &self.identities,
            source_kind: self.source_kind.as_deref(),
            source_id: self.source_id.as_deref(),
            group_id: self.group_id.as_deref(),
            traits: self.traits.as_deref(),
            consent_purpose: self.consent_purpose.as_deref(),
        }
    }
}

/// The ingest pipeline, in two stages. The committer takes every waiting request, appends them as
/// one durable transaction (group commit: one fsync shared by everyone waiting) and hands the group
/// to the applier; while the applier folds group N into the in-memory state and acknowledges it,
/// the committer is already writing group N+1. Both stages are single tasks fed in order, so events
/// are applied — and acknowledged — in log order.
async fn run_pipeline(engine: Arc<Engine>, mut rx: mpsc::Receiver<IngestRequest>) {
    let (applier_tx, applier_rx) = mpsc::channel::<CommittedGroup>(2);
    let applier = tokio::spawn(run_applier(engine.clone(), applier_rx));
    loop {
        let first = tokio::select! {
            _ = engine.shutdown.cancelled() => break,
            request = rx.recv() => match request {
                Some(request) => request,
                None => break,
            },
        };
        let mut group = vec![first];
        let mut size = group[0].events.len();
        while size < engine.config.group_max_events {
            match rx.try_recv() {
                Ok(request) => {
                    size += request.events.len();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        if let Some(committed) = commit_group(&engine, group).await {
            if applier_tx.send(committed).await.is_err() {
                break;
            }
        }
    }
    drop(applier_tx);
    let _ = applier.await;
}

type Reply = oneshot::Sender<Result<Vec<AppendOutcome>>>;

/// A durably appended group waiting to be applied and acknowledged: per request its tenant,
/// ingestion path, event count and reply channel.
struct CommittedGroup {
    requests: Vec<(TenantId, &'static str, usize, Reply)>,
    batch: Vec<(TenantId, Event)>,
    outcomes: Vec<AppendOutcome>,
}

async fn commit_group(engine: &Engine, mut group: Vec<IngestRequest>) -> Option<CommittedGroup> {
    let batch: Vec<(TenantId, Event)> =
        group.iter_mut().flat_map(|r| std::mem::take(&mut r.events).into_iter().map(move |e| (r.tenant, e))).collect();
    let started = Instant::now();
    match engine.store.append(&batch).await {
        Ok(outcomes) => {
            engine.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
            engine.metrics.commit_events.observe(batch.len() as f64);
            let requests = group.into_iter().map(|r| (r.tenant, r.path, r.events_len, r.reply)).collect();
            Some(CommittedGroup { requests, batch, outcomes })
        }
        Err(e) => {
            tracing::error!(error = %e, events = batch.len(), "group commit failed; nothing was acknowledged");
            let message = e.to_string();
            for request in group {
                let _ = request.reply.send(Err(EngineError::Store(StoreError::Task(message.clone()))));
            }
            None
        }
    }
}

/// Applies committed groups in order, acknowledges them, and between groups picks up events other
/// processes appended to the log.
async fn run_applier(engine: Arc<Engine>, mut rx: mpsc::Receiver<CommittedGroup>) {
    let mut follow = tokio::time::interval(engine.config.follow_interval);
    follow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Committed groups first: the log follower only runs when none is waiting.
            biased;
            group = rx.recv() => match group {
                Some(group) => apply_group(&engine, group).await,
                None => return,
            },
            _ = follow.tick() => match engine.follow_log().await {
                Ok(_) => {}
                Err(EngineError::Store(StoreError::Cancelled)) => return,
                Err(e) => tracing::warn!(error = %e, "failed to follow the log"),
            },
        }
    }
}

/// A request of at most this many events is folded on the pipeline task itself (well under a
/// millisecond); a larger one goes to the blocking pool, so no async worker is held up.
const INLINE_APPLY_MAX: usize = 256;

/// At most this many events are folded under one write lock: readers and the sweep wait on
/// ingestion for a few milliseconds at most, however large the batch.
const APPLY_CHUNK: usize = 4096;

/// A committed group's events and their outcomes, shared with the blocking pool while it folds
/// them.
struct GroupEvents {
    batch: Vec<(TenantId, Event)>,
    outcomes: Vec<AppendOutcome>,
}

async fn apply_group(engine: &Engine, group: CommittedGroup) {
    let applied_at = Instant::now();
    let CommittedGroup { requests, batch, outcomes } = group;
    let events = Arc::new(GroupEvents { batch, outcomes });
    let mut offset = 0;
    let mut replies = Vec::with_capacity(requests.len());
    for (tenant, path, count, reply) in requests {
        let slice = offset..offset + count;
        offset += count;
        let result = apply_request(engine, tenant, path, &events, slice).await;
        replies.push((reply, result));
    }
    engine.metrics.apply_seconds.observe(applied_at.elapsed().as_secs_f64());
    for (reply, result) in replies {
        let _ = reply.send(result);
    }
}

/// What folding one request did, for the metrics.
#[derive(Default)]
struct Folded {
    appended: u64,
    duplicates: u64,
    merges: u64,
    refusals: u64,
    created: u64,
    membership: Vec<MembershipChange>,
}

async fn apply_request(
    engine: &Engine,
    tenant: TenantId,
    path: &'static str,
    events: &Arc<GroupEvents>,
    slice: std::ops::Range<usize>,
) -> Result<Vec<AppendOutcome>> {
    let runtime = engine.tenant(tenant)?;
    let mut folded = Folded::default();
    let mut from = slice.start;
    // Folds stop at a gap in the log (another process appended in between, or a re-derivation
    // swapped the state meanwhile): the gap is read from the log, then folding goes on.
    while from < slice.end {
        let first_new = events.outcomes[from..slice.end].iter().find_map(|o| match o {
            AppendOutcome::Appended(seq) => Some(*seq),
            AppendOutcome::Duplicate => None,
        });
        if let Some(first) = first_new {
            if first > runtime.state.read().applied_seq + 1 {
                catch_up(&engine.store, &runtime, Some(first)).await?;
            }
        }
        // A gap the log cannot fill (it always should) is folded over rather than waited on.
        let tolerate_gap = first_new.is_some_and(|first| first > runtime.state.read().applied_seq + 1);
        if tolerate_gap {
            tracing::error!(tenant = %tenant, "the log has a gap before this group; folding over it");
        }
        let part = from..slice.end;
        let (done, stopped) = if part.len() <= INLINE_APPLY_MAX {
            fold_request(&runtime, events, part, tolerate_gap)
        } else {
            let (runtime, events) = (runtime.clone(), events.clone());
            blocking(move || fold_request(&runtime, &events, part, tolerate_gap)).await?
        };
        folded.add(done);
        from = stopped.unwrap_or(slice.end);
    }
    engine.store_derived(tenant, Vec::new(), &folded.membership).await;
    let label = metrics::PathLabel { path: path.to_string() };
    engine.metrics.events_ingested.get_or_create(&label).inc_by(folded.appended);
    engine.metrics.events_duplicate.get_or_create(&label).inc_by(folded.duplicates);
    engine.metrics.merges.inc_by(folded.merges);
    engine.metrics.merges_refused.inc_by(folded.refusals);
    engine.metrics.profiles_created.inc_by(folded.created);
    Ok(events.outcomes[slice].to_vec())
}

/// Runs `f` on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| EngineError::Store(StoreError::Task(e.to_string())))
}

impl Folded {
    fn add(&mut self, other: Folded) {
        self.appended += other.appended;
        self.duplicates += other.duplicates;
        self.merges += other.merges;
        self.refusals += other.refusals;
        self.created += other.created;
        self.membership.extend(other.membership);
    }
}

/// Folds appended events of `part` into the tenant's state, [`APPLY_CHUNK`] events per write
/// lock, and keeps segment memberships current after each chunk. Stops before an event that
/// does not follow the state's last one (returning its index), unless `tolerate_gap`: the write
/// lock is let go between chunks, and a re-derivation may swap the state in between.
fn fold_request(
    runtime: &TenantRuntime,
    events: &GroupEvents,
    part: std::ops::Range<usize>,
    mut tolerate_gap: bool,
) -> (Folded, Option<usize>) {
    let mut folded = Folded::default();
    let mut index = part.start;
    while index < part.end {
        let chunk = index..(index + APPLY_CHUNK).min(part.end);
        let mut state = runtime.state.write();
        for i in chunk.clone() {
            match events.outcomes[i] {
                AppendOutcome::Appended(seq) if seq > state.applied_seq => {
                    let tolerated = std::mem::take(&mut tolerate_gap);
                    if seq != state.applied_seq + 1 && !tolerated {
                        folded.membership.extend(state.refresh_memberships(Millis::now()));
                        return (folded, Some(i));
                    }
                    let change = state.apply(seq, &events.batch[i].1);
                    folded.appended += 1;
                    folded.merges += change.absorbed.len() as u64;
                    folded.refusals += u64::from(change.refusals);
                    folded.created += u64::from(change.created);
                }
                AppendOutcome::Appended(_) => folded.appended += 1,
                AppendOutcome::Duplicate => folded.duplicates += 1,
            }
        }
        folded.membership.extend(state.refresh_memberships(Millis::now()));
        index = chunk.end;
    }
    (folded, None)
}

/// Every [`SEGMENT_SWEEP_INTERVAL`], re-evaluates the segments time can change and records sizes.
async fn run_segment_sweeper(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(segments::SEGMENT_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; memberships were just evaluated on load
    loop {
        tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = engine.sweep_segments().await {
                    tracing::warn!(error = %e, "segment sweep failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant loaded twice (created here while the log follower also finds it in the store)
    /// keeps one runtime: a holder of the first must see every event applied afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_load_of_a_tenant_keeps_the_first_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = siyu_store::open(dir.path().join("siyu.db").to_str().unwrap()).await.unwrap();
        let engine = Engine::start(store, EngineConfig::default()).await.unwrap();
        let created = engine.create_tenant("t", Industry::LocalLife).await.unwrap();
        let held = engine.tenant(created.record.id).unwrap();
        let again = engine.load_tenant(created.record.clone()).await.unwrap();
        assert!(Arc::ptr_eq(&held, &again), "the second load returned a new runtime");
        assert!(Arc::ptr_eq(&held, &engine.tenant(created.record.id).unwrap()), "the map holds a new runtime");
        let event = siyu_model::event::parse_native(
            r#"{"type":"like","identities":{"user_id":"u1"}}"#,
            Millis::now(),
            TimeLimits::default(),
        )
        .unwrap();
        engine.ingest(created.record.id, "test", vec![event]).await.unwrap();
        assert_eq!(held.state.read().event_count, 1, "the held runtime sees the event");
        engine.shutdown();
    }

    /// A fold stops before an event that does not follow the state's last one (the state was
    /// swapped, or another process appended in between), and folds over it only when told to.
    #[test]
    fn a_fold_stops_at_a_gap_in_the_log() {
        let event = |id: &str| {
            let text = format!(r#"{{"message_id":"{id}","type":"like","identities":{{"user_id":"u1"}}}}"#);
            siyu_model::event::parse_native(&text, Millis::now(), TimeLimits::default()).unwrap()
        };
        let runtime = TenantRuntime {
            record: RwLock::new(TenantRecord {
                id: TenantId(1),
                name: "t".into(),
                industry: Industry::LocalLife,
                settings: TenantSettings::default(),
                created_at: Millis(0),
            }),
            state: RwLock::new(TenantState::new(TenantId(1), TenantSettings::default())),
        };
        let group = GroupEvents {
            batch: ["a", "b", "c"].iter().map(|id| (TenantId(1), event(id))).collect(),
            outcomes: vec![AppendOutcome::Appended(1), AppendOutcome::Duplicate, AppendOutcome::Appended(3)],
        };
        let (folded, stopped) = fold_request(&runtime, &group, 0..3, false);
        assert_eq!((folded.appended, folded.duplicates, stopped), (1, 1, Some(2)), "stops before seq 3");
        assert_eq!(runtime.state.read().applied_seq, 1);
        let (folded, stopped) = fold_request(&runtime, &group, 2..3, true);
        assert_eq!((folded.appended, stopped), (1, None), "told to, folds over the gap");
        assert_eq!(runtime.state.read().applied_seq, 3);
    }

    /// Large requests fold in chunks, letting the write lock go in between; re-derivations of the
    /// tenant (a rebuild, as settings changes and unmerges do) swap the state meanwhile. No event
    /// may be lost or applied twice: the state ends equal to a replay of the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunked_folds_survive_concurrent_rederivations() {
        let dir = tempfile::tempdir().unwrap();
        let store = siyu_store::open(dir.path().join("siyu.db").to_str().unwrap()).await.unwrap();
        let engine = Engine::start(store, EngineConfig::default()).await.unwrap();
        let tenant = engine.create_tenant("t", Industry::LocalLife).await.unwrap().record.id;
        let now = Millis::now();
        let batch = move |round: usize| -> Vec<Event> {
            (0..3 * APPLY_CHUNK)
                .map(|i| {
                    let text = format!(
                        r#"{{"message_id":"r{round}-{i}","type":"like","identities":{{"user_id":"u{}"}}}}"#,
                        (round * 7 + i) % 997
                    );
                    siyu_model::event::parse_native(&text, now, TimeLimits::default()).unwrap()
                })
                .collect()
        };
        let rounds = 4;
        let ingest = {
            let engine = engine.clone();
            tokio::spawn(async move {
                for round in 0..rounds {
                    engine.ingest(tenant, "test", batch(round)).await.unwrap();
                }
            })
        };
        let mut rebuilds = 0;
        while !ingest.is_finished() {
            engine.rebuild(tenant).await.unwrap();
            rebuilds += 1;
        }
        ingest.await.unwrap();
        assert!(rebuilds > 0);
        let live = engine.tenant(tenant).unwrap();
        let replayed = engine.replay_tenant_state(tenant).await.unwrap();
        let state = live.state.read();
        assert_eq!(state.event_count, (rounds * 3 * APPLY_CHUNK) as u64, "every event applied once");
        assert_eq!(state.applied_seq, replayed.applied_seq);
        let t = Millis::now();
        for id in replayed.profile_ids() {
            assert_eq!(state.scores_at(id, t), replayed.scores_at(id, t), "profile {id}");
            assert_eq!(state.profile(id).map(|p| p.facts.len()), replayed.profile(id).map(|p| p.facts.len()));
        }
        assert_eq!(state.live_profiles, replayed.live_profiles);
        drop(state);
        engine.shutdown();
    }
}
