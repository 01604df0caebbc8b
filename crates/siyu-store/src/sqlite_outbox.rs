//! The outbox on SQLite, in two tables (migration 0006): `outbox_batches`, what the messages of
//! one enqueue call share plus a summary of their states, and `outbox`, the messages, indexed by
//! their primary key only.
//!
//! Why: every secondary index on the message table was paid on every message planned. The
//! questions those indexes answered are asked of the batches instead — which are due, which
//! belong to a campaign, which owe the log an event — and then of a batch's messages, a range of
//! the primary key (`batch_id` is the batch's first message id, `last_id` its last: ids are
//! allotted under the writer's lock, so batches never interleave).
//!
//! A batch's summary (`open`, `next_due`, `unlogged`) is recomputed from its messages by the
//! statement that changes them, in the same transaction, so it never drifts from them.
//!
//! Keys: nothing indexes `msg_key`. A key is unique within its campaign (the engine's are
//! `c{campaign}-p{profile}`); the writer keeps, per campaign being planned, the hashes of its keys
//! with the message id of each, folded forward like the ledger, and confirms a hit by that id.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use rustc_hash::FxHashMap;
use siyu_model::reach::template::Purpose;
use siyu_model::reach::Verdict;
use siyu_model::{Channel, Millis, ProfileId, TenantId};

use crate::ledger::{self, LedgerColumns, LedgerRow, TenantLedger};
use crate::reach::{outcome_columns, Claimed, EnqueueBatch, Enqueued, OutboxRow, OutboxState, Outcome};
use crate::sqlite::Writer;
use crate::sqlite_reach::{corrupt, parse_scope};
use crate::Result;

/// A message row joined with its batch, in the order `outbox_from_row` reads.
pub(crate) const JOINED_COLUMNS: &str =
    "m.outbox_id, m.msg_key, b.campaign_id, m.profile_id, b.channel, b.account, b.sender, b.scope, \
     m.recipient_kind, m.recipient_value, m.content, m.state, m.due_at, m.attempts, m.attempted_at, m.remote_id, \
     m.error_code, m.error_message, m.logged, m.updated_at";

/// A message row alone (what an UPDATE … RETURNING can give), completed by its batch.
const MESSAGE_COLUMNS: &str =
    "outbox_id, msg_key, profile_id, recipient_kind, recipient_value, content, state, due_at, attempts, \
     attempted_at, remote_id, error_code, error_message, logged, updated_at";

/// The messages of a batch: a join on a range of the primary key. Every join is a CROSS JOIN, the
/// batch first: SQLite's planner otherwise walks the messages and looks their batch up.
const BATCH_JOIN: &str = "outbox m ON m.tenant_id = b.tenant_id AND m.outbox_id BETWEEN b.batch_id AND b.last_id";

/// What a batch's messages share.
#[derive(Debug, Clone)]
struct Batch {
    first: i64,
    last: i64,
    campaign_id: i64,
    channel: Channel,
    account: String,
    sender: Option<String>,
    scope: siyu_model::reach::SendScope,
}

/// Reads `batch_id, last_id, campaign_id, channel, account, sender, scope`.
fn batch_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Batch> {
    let channel: String = r.get(3)?;
    let scope: String = r.get(6)?;
    Ok(Batch {
        first: r.get(0)?,
        last: r.get(1)?,
        campaign_id: r.get(2)?,
        channel: Channel::parse(&channel).ok_or_else(|| corrupt("channel", &channel))?,
        account: r.get(4)?,
        sender: r.get(5)?,
        scope: parse_scope(&scope).ok_or_else(|| corrupt("scope", &scope))?,
    })
}

fn message_from_row(r: &rusqlite::Row<'_>, batch: &Batch) -> rusqlite::Result<OutboxRow> {
    let state: String = r.get(6)?;
    Ok(OutboxRow {
        id: r.get(0)?,
        key: r.get(1)?,
        campaign_id: batch.campaign_id,
        profile_id: r.get::<_, i64>(2)? as ProfileId,
        channel: batch.channel,
        account: batch.account.clone(),
        sender: batch.sender.clone(),
        scope: batch.scope,
        recipient_kind: r.get(3)?,
        recipient_value: r.get(4)?,
        content: r.get(5)?,
        state: OutboxState::parse(&state).ok_or_else(|| corrupt("outbox state", &state))?,
        due_at: Millis(r.get(7)?),
        attempts: r.get::<_, i64>(8)? as u32,
        attempted_at: r.get::<_, Option<i64>>(9)?.map(Millis),
        remote_id: r.get(10)?,
        error_code: r.get(11)?,
        error_message: r.get(12)?,
        logged: r.get::<_, i64>(13)? != 0,
        updated_at: Millis(r.get(14)?),
    })
}

/// Recomputes the summary of the batch `[first, last]` from its messages.
fn refresh(tx: &Connection, tenant: TenantId, first: i64, last: i64) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(REFRESH_SQL)?;
    stmt.execute(params![tenant.0, first, last])?;
    Ok(())
}

pub(crate) const REFRESH_SQL: &str = "UPDATE outbox_batches SET (open, next_due, unlogged) = (
         SELECT COALESCE(SUM(state IN ('queued', 'attempting', 'task')), 0),
                MIN(CASE state WHEN 'queued' THEN due_at WHEN 'attempting' THEN lease_until END),
                COALESCE(SUM(logged = 0 AND state IN ('sent', 'task', 'delivered', 'failed')), 0)
         FROM outbox WHERE tenant_id = ?1 AND outbox_id BETWEEN ?2 AND ?3)
     WHERE tenant_id = ?1 AND batch_id = ?2";

/// The batch holding message `id`.
pub(crate) const BATCH_OF_SQL: &str = "SELECT batch_id, last_id FROM outbox_batches
     WHERE tenant_id = ?1 AND batch_id <= ?2 ORDER BY batch_id DESC LIMIT 1";

/// The batches holding `ids`, each once, as `(first, last)`.
fn batches_of(tx: &Connection, tenant: TenantId, ids: &[i64]) -> rusqlite::Result<Vec<(i64, i64)>> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let mut stmt = tx.prepare_cached(BATCH_OF_SQL)?;
    let mut out: Vec<(i64, i64)> = Vec::new();
    for id in sorted {
        if out.last().is_some_and(|(first, last)| (*first..=*last).contains(&id)) {
            continue;
        }
        if let Some(range) = stmt.query_row(params![tenant.0, id], |r| Ok((r.get(0)?, r.get(1)?))).optional()? {
            out.push(range);
        }
    }
    Ok(out)
}

// --- Keys -----------------------------------------------------------------------------------

fn key_hash(key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// The keys of one campaign's messages: hash → message id, complete through `through`.
pub(crate) struct CampaignKeys {
    ids: FxHashMap<u64, i64>,
    through: i64,
    used: Instant,
}

/// The writer's campaign key sets; a few campaigns at a time (≈ 32 MB per million messages).
#[derive(Default)]
pub(crate) struct KeyCache {
    campaigns: HashMap<(TenantId, i64), CampaignKeys>,
}

const CACHED_CAMPAIGNS: usize = 4;
/// A campaign not planned for this long is dropped (reloaded from its batches if it comes back).
const KEYS_IDLE: Duration = Duration::from_secs(600);

impl KeyCache {
    fn take(&mut self, tenant: TenantId, campaign: i64) -> Option<CampaignKeys> {
        self.campaigns.retain(|_, k| k.used.elapsed() < KEYS_IDLE);
        self.campaigns.remove(&(tenant, campaign))
    }

    fn put(&mut self, tenant: TenantId, campaign: i64, mut keys: CampaignKeys) {
        keys.used = Instant::now();
        while self.campaigns.len() >= CACHED_CAMPAIGNS {
            let Some(oldest) = self.campaigns.iter().min_by_key(|(_, k)| k.used).map(|(id, _)| *id) else { break };
            self.campaigns.remove(&oldest);
        }
        self.campaigns.insert((tenant, campaign), keys);
    }
}

pub(crate) const CAMPAIGN_KEYS_SQL: &str = "SELECT m.outbox_id, m.msg_key
     FROM outbox_batches b INDEXED BY outbox_batches_by_campaign CROSS JOIN outbox m
         ON m.tenant_id = b.tenant_id AND m.outbox_id BETWEEN b.batch_id AND b.last_id
     WHERE b.tenant_id = ?1 AND b.campaign_id = ?2 AND b.last_id > ?3 AND m.outbox_id > ?3";

/// The campaign's keys brought up to date inside the writer's transaction.
fn current_keys(cache: &mut KeyCache, tx: &Connection, tenant: TenantId, campaign: i64) -> Result<CampaignKeys> {
    let mut keys = cache.take(tenant, campaign).unwrap_or_else(|| CampaignKeys {
        ids: FxHashMap::default(),
        through: 0,
        used: Instant::now(),
    });
    let mut stmt = tx.prepare_cached(CAMPAIGN_KEYS_SQL)?;
    let rows = stmt
        .query_map(params![tenant.0, campaign, keys.through], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (id, key) = row?;
        keys.ids.insert(key_hash(&key), id);
    }
    Ok(keys)
}

/// Whether the campaign has a message with `key`: the hash's message confirms it; a different key
/// behind the same hash (a collision) falls back to reading the campaign's keys.
fn has_key(tx: &Connection, tenant: TenantId, campaign: i64, keys: &CampaignKeys, key: &str) -> Result<bool> {
    let Some(id) = keys.ids.get(&key_hash(key)) else { return Ok(false) };
    let mut stmt = tx.prepare_cached("SELECT msg_key FROM outbox WHERE tenant_id = ?1 AND outbox_id = ?2")?;
    let found: Option<String> = stmt.query_row(params![tenant.0, id], |r| r.get(0)).optional()?;
    if found.as_deref() == Some(key) {
        return Ok(true);
    }
    let mut stmt = tx.prepare_cached(CAMPAIGN_KEYS_SQL)?;
    let mut rows = stmt.query(params![tenant.0, campaign, 0])?;
    while let Some(row) = rows.next()? {
        if row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)? == key {
            return Ok(true);
        }
    }
    Ok(false)
}

// --- The ledger -----------------------------------------------------------------------------

pub(crate) const LEDGER_TAIL_SQL: &str =
    "SELECT m.outbox_id, m.profile_id, m.reserved_at, b.channel, b.scope, b.marketing, b.sender
     FROM outbox_batches b INDEXED BY outbox_batches_by_last CROSS JOIN outbox m
         ON m.tenant_id = b.tenant_id AND m.outbox_id BETWEEN b.batch_id AND b.last_id
     WHERE b.tenant_id = ?1 AND b.last_id > ?2 AND m.outbox_id > ?2 AND m.reserved_at >= ?3";

/// The tenant's ledger brought up to date inside the writer's transaction: the cached one with
/// the rows written since (by another process) folded in, or loaded (ledger.rs).
pub(crate) fn current_ledger(
    cache: &mut HashMap<TenantId, TenantLedger>,
    tx: &Connection,
    tenant: TenantId,
    horizon: Millis,
) -> Result<TenantLedger> {
    let (mut ledger, from) = ledger::take(cache.remove(&tenant), horizon);
    let mut stmt = tx.prepare_cached(LEDGER_TAIL_SQL)?;
    let rows = stmt.query_map(params![tenant.0, ledger.through(), from.0], |r| {
        LedgerRow::parse(LedgerColumns {
            outbox_id: r.get(0)?,
            profile_id: r.get(1)?,
            reserved_at: r.get(2)?,
            channel: r.get(3)?,
            scope: r.get(4)?,
            marketing: r.get(5)?,
            sender: r.get(6)?,
        })
        .map_err(|(what, value)| corrupt(what, &value))
    })?;
    let mut folded = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    // The join yields batches in the order of the index on their last id; the fold wants ids.
    folded.sort_unstable_by_key(|r| r.outbox_id);
    ledger.fold(folded);
    Ok(ledger)
}

// --- Queuing --------------------------------------------------------------------------------

pub(crate) fn enqueue(w: &mut Writer, tenant: TenantId, batch: &EnqueueBatch) -> Result<Vec<Enqueued>> {
    let tx = w.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = Millis::now();
    let mut ledger = current_ledger(&mut w.ledgers, &tx, tenant, batch.guardrails.horizon(batch.at))?;
    let mut keys = current_keys(&mut w.keys, &tx, tenant, batch.campaign_id)?;
    let first: i64 =
        tx.query_row("SELECT COALESCE(MAX(outbox_id), 0) + 1 FROM outbox WHERE tenant_id = ?1", [tenant.0], |r| {
            r.get(0)
        })?;
    ledger.ready_for(batch, first - 1);
    let mut next_id = first;
    let mut next_due: Option<i64> = None;
    let mut out = Vec::with_capacity(batch.items.len());
    {
        let mut hold = tx.prepare_cached(
            "INSERT INTO campaign_holds (tenant_id, campaign_id, profile_id, rule, at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO outbox (tenant_id, outbox_id, msg_key, profile_id, recipient_kind, recipient_value, content,
                 state, due_at, reserved_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8, ?9)",
        )?;
        for item in &batch.items {
            // A key queued before (planning resumed after a crash, or twice in this batch) is
            // neither judged against itself nor held.
            if has_key(&tx, tenant, batch.campaign_id, &keys, &item.key)? {
                out.push(Enqueued::Duplicate);
                continue;
            }
            let sends = ledger.person(item.profile_id);
            batch.prune(sends);
            match batch.judge(item, sends) {
                Verdict::Hold { rule } => {
                    hold.execute(params![tenant.0, batch.campaign_id, item.profile_id, rule, now.0])?;
                    out.push(Enqueued::Held { rule });
                }
                Verdict::Send { at } => {
                    insert.execute(params![
                        tenant.0,
                        next_id,
                        item.key,
                        item.profile_id,
                        item.recipient_kind,
                        item.recipient_value,
                        item.content,
                        at.0,
                        now.0,
                    ])?;
                    keys.ids.insert(key_hash(&item.key), next_id);
                    next_id += 1;
                    next_due = Some(next_due.map_or(at.0, |d| d.min(at.0)));
                    out.push(Enqueued::Queued { at });
                }
            }
        }
    }
    if next_id > first {
        tx.execute(
            "INSERT INTO outbox_batches (tenant_id, batch_id, last_id, campaign_id, channel, account, sender, scope,
                 marketing, open, next_due, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                tenant.0,
                first,
                next_id - 1,
                batch.campaign_id,
                batch.channel.as_str(),
                batch.account,
                batch.sender,
                batch.scope.as_str(),
                i64::from(batch.purpose == Purpose::Marketing),
                next_id - first,
                next_due,
                now.0,
            ],
        )?;
    }
    tx.commit()?;
    ledger.seen_through(next_id - 1);
    w.ledgers.insert(tenant, ledger);
    keys.through = next_id - 1;
    w.keys.put(tenant, batch.campaign_id, keys);
    Ok(out)
}

// --- Claiming and outcomes ------------------------------------------------------------------

/// Batches with work due (queued messages due, or leases lapsed), earliest first.
pub(crate) const DUE_BATCHES_SQL: &str = "SELECT batch_id, last_id, campaign_id, channel, account, sender, scope
     FROM outbox_batches INDEXED BY outbox_batches_due
     WHERE tenant_id = ?1 AND next_due <= ?2 ORDER BY next_due, batch_id LIMIT ?3";

const DUE_BATCHES_PER_ROUND: i64 = 64;

/// What a claim within one batch takes: lapsed leases (`in_doubt`) or due messages.
fn claimable(in_doubt: bool) -> &'static str {
    if in_doubt {
        "state = 'attempting' AND lease_until <= ?2"
    } else {
        "state = 'queued' AND due_at <= ?2"
    }
}

/// The first `?3` claimable messages of the range `?4..=?5`, in id order.
pub(crate) fn claimable_sql(in_doubt: bool) -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM outbox WHERE tenant_id = ?1 AND outbox_id BETWEEN ?4 AND ?5 AND {}
         ORDER BY outbox_id LIMIT ?3",
        claimable(in_doubt)
    )
}

/// Leases what [`claimable_sql`] read: the same condition over the range that ends at the last
/// of them (in the same transaction), so the same rows — one range update rather than a row at
/// a time, and no RETURNING (which SQLite buffers in a temporary table).
pub(crate) fn claim_sql(in_doubt: bool) -> String {
    let set = if in_doubt {
        "attempts = attempts + 1"
    } else {
        "state = 'attempting', attempts = attempts + 1, attempted_at = ?2"
    };
    format!(
        "UPDATE outbox SET {set}, lease_until = ?3, updated_at = ?2
         WHERE tenant_id = ?1 AND outbox_id BETWEEN ?4 AND ?5 AND {}",
        claimable(in_doubt)
    )
}

pub(crate) fn claim(
    conn: &mut Connection,
    tenant: TenantId,
    now: Millis,
    lease_until: Millis,
    limit: usize,
) -> Result<Vec<Claimed>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut claimed = Vec::with_capacity(limit.min(100_000));
    // Lapsed leases first within each batch: those messages may have gone out, and an in-doubt
    // one keeps the time of the attempt whose outcome was lost (where a reconciliation looks).
    // A batch left with nothing due by this claim has a summary that says so (its next work is
    // a lease's end or later), so each round sees only batches not yet taken.
    'rounds: while claimed.len() < limit {
        let due: Vec<Batch> = {
            let mut stmt = tx.prepare_cached(DUE_BATCHES_SQL)?;
            let rows = stmt.query_map(params![tenant.0, now.0, DUE_BATCHES_PER_ROUND], batch_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let before = claimed.len();
        for batch in &due {
            for in_doubt in [true, false] {
                let left = limit - claimed.len();
                if left == 0 {
                    break;
                }
                let rows: Vec<OutboxRow> = tx
                    .prepare_cached(&claimable_sql(in_doubt))?
                    .query_map(params![tenant.0, now.0, left as i64, batch.first, batch.last], |r| {
                        message_from_row(r, batch)
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                let Some(last) = rows.last().map(|r| r.id) else { continue };
                tx.prepare_cached(&claim_sql(in_doubt))?.execute(params![
                    tenant.0,
                    now.0,
                    lease_until.0,
                    batch.first,
                    last
                ])?;
                for mut row in rows {
                    // As the update left it.
                    row.attempts += 1;
                    row.updated_at = now;
                    if !in_doubt {
                        row.state = OutboxState::Attempting;
                        row.attempted_at = Some(now);
                    }
                    claimed.push(Claimed { row, in_doubt });
                }
            }
            refresh(&tx, tenant, batch.first, batch.last)?;
            if claimed.len() == limit {
                break 'rounds;
            }
        }
        if due.len() < DUE_BATCHES_PER_ROUND as usize || claimed.len() == before {
            break;
        }
    }
    tx.commit()?;
    claimed.sort_by_key(|c| (!c.in_doubt, c.row.due_at, c.row.id));
    Ok(claimed)
}

pub(crate) fn complete(
    conn: &mut Connection,
    tenant: TenantId,
    outcomes: &[(i64, Outcome)],
    logged: bool,
) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = Millis::now();
    {
        // Consecutive ids with the same outcome (a batch the connector accepted) are one range
        // update: the same rows, a fraction of the per-row cost.
        let mut stmt = tx.prepare_cached(
            "UPDATE outbox SET state = ?4, remote_id = COALESCE(?5, remote_id), error_code = ?6, error_message = ?7,
                 due_at = COALESCE(?8, due_at), lease_until = NULL, logged = ?9, updated_at = ?10
             WHERE tenant_id = ?1 AND outbox_id BETWEEN ?2 AND ?3",
        )?;
        let mut sorted: Vec<&(i64, Outcome)> = outcomes.iter().collect();
        sorted.sort_by_key(|(id, _)| *id);
        sorted.dedup_by_key(|(id, _)| *id);
        let mut i = 0;
        while i < sorted.len() {
            let (first, outcome) = sorted[i];
            let mut j = i + 1;
            while j < sorted.len() && sorted[j].0 == sorted[j - 1].0 + 1 && sorted[j].1 == *outcome {
                j += 1;
            }
            let (state, remote, code, message, due, owed) = outcome_columns(outcome);
            let done = if logged { 1 } else { owed };
            let last = sorted[j - 1].0;
            stmt.execute(params![tenant.0, first, last, state.as_str(), remote, code, message, due, done, now.0])?;
            i = j;
        }
    }
    let ids: Vec<i64> = outcomes.iter().map(|(id, _)| *id).collect();
    refresh_all(&tx, tenant, &ids)?;
    tx.commit()?;
    Ok(())
}

fn refresh_all(tx: &Transaction<'_>, tenant: TenantId, ids: &[i64]) -> Result<()> {
    for (first, last) in batches_of(tx, tenant, ids)? {
        refresh(tx, tenant, first, last)?;
    }
    Ok(())
}

pub(crate) fn mark_logged(conn: &mut Connection, tenant: TenantId, ids: &[i64]) -> Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached("UPDATE outbox SET logged = 1 WHERE tenant_id = ?1 AND outbox_id = ?2")?;
        for id in ids {
            stmt.execute(params![tenant.0, id])?;
        }
    }
    refresh_all(&tx, tenant, ids)?;
    tx.commit()?;
    Ok(())
}

pub(crate) fn unlogged_sql() -> String {
    format!(
        "SELECT {JOINED_COLUMNS} FROM outbox_batches b INDEXED BY outbox_batches_unlogged CROSS JOIN {BATCH_JOIN}
         WHERE b.tenant_id = ?1 AND b.unlogged > 0 AND m.logged = 0 AND m.state IN ('sent', 'task', 'delivered', 'failed')
         ORDER BY m.outbox_id LIMIT ?2"
    )
}

pub(crate) fn task_rows_sql() -> String {
    format!(
        "SELECT {JOINED_COLUMNS} FROM outbox m INDEXED BY outbox_tasks JOIN outbox_batches b
             ON b.tenant_id = m.tenant_id
             AND b.batch_id = (SELECT MAX(batch_id) FROM outbox_batches WHERE tenant_id = m.tenant_id AND batch_id <= m.outbox_id)
         WHERE m.tenant_id = ?1 AND m.remote_id = ?2 AND m.state = 'task' ORDER BY m.outbox_id"
    )
}

// --- Per campaign ---------------------------------------------------------------------------

pub(crate) const CAMPAIGN_BATCHES_SQL: &str = "SELECT batch_id, last_id, campaign_id, channel, account, sender, scope
     FROM outbox_batches INDEXED BY outbox_batches_by_campaign
     WHERE tenant_id = ?1 AND campaign_id = ?2 AND last_id > ?3 ORDER BY batch_id";

fn campaign_batches(conn: &Connection, tenant: TenantId, campaign: i64, after: i64) -> rusqlite::Result<Vec<Batch>> {
    let mut stmt = conn.prepare_cached(CAMPAIGN_BATCHES_SQL)?;
    let rows = stmt.query_map(params![tenant.0, campaign, after], batch_from_row)?;
    rows.collect()
}

pub(crate) const COUNTS_SQL: &str = "SELECT m.state, COUNT(*)
     FROM outbox_batches b INDEXED BY outbox_batches_by_campaign CROSS JOIN outbox m
         ON m.tenant_id = b.tenant_id AND m.outbox_id BETWEEN b.batch_id AND b.last_id
     WHERE b.tenant_id = ?1 AND b.campaign_id = ?2 GROUP BY m.state";

pub(crate) const FAILURES_SQL: &str = "SELECT m.error_code, COUNT(*)
     FROM outbox_batches b INDEXED BY outbox_batches_by_campaign CROSS JOIN outbox m
         ON m.tenant_id = b.tenant_id AND m.outbox_id BETWEEN b.batch_id AND b.last_id
     WHERE b.tenant_id = ?1 AND b.campaign_id = ?2 AND m.state = 'failed' GROUP BY m.error_code ORDER BY m.error_code";

pub(crate) const HAS_PENDING_SQL: &str = "SELECT EXISTS (SELECT 1 FROM outbox_batches INDEXED BY outbox_batches_open
     WHERE tenant_id = ?1 AND campaign_id = ?2 AND open > 0)";

pub(crate) const PENDING_SQL: &str = "SELECT COALESCE(SUM(open), 0) FROM outbox_batches INDEXED BY outbox_batches_open
     WHERE tenant_id = ?1 AND (?2 IS NULL OR campaign_id = ?2) AND open > 0";

/// A campaign's messages after `after_id`, in id order, at most `limit`.
pub(crate) fn campaign_rows(
    conn: &Connection,
    tenant: TenantId,
    campaign: i64,
    after_id: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM outbox WHERE tenant_id = ?1 AND outbox_id BETWEEN ?2 AND ?3
         ORDER BY outbox_id LIMIT ?4"
    ))?;
    for batch in campaign_batches(conn, tenant, campaign, after_id)? {
        let left = limit - out.len();
        if left == 0 {
            break;
        }
        let rows = stmt.query_map(params![tenant.0, batch.first.max(after_id + 1), batch.last, left as i64], |r| {
            message_from_row(r, &batch)
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}

pub(crate) fn cancel_queued(conn: &mut Connection, tenant: TenantId, campaign: i64) -> Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = Millis::now();
    let mut cancelled = 0;
    for batch in campaign_batches(&tx, tenant, campaign, 0)? {
        let n = tx
            .prepare_cached(
                "UPDATE outbox SET state = 'cancelled', logged = 1, updated_at = ?4
             WHERE tenant_id = ?1 AND outbox_id BETWEEN ?2 AND ?3 AND state = 'queued'",
            )?
            .execute(params![tenant.0, batch.first, batch.last, now.0])?;
        if n > 0 {
            refresh(&tx, tenant, batch.first, batch.last)?;
        }
        cancelled += n as u64;
    }
    tx.commit()?;
    Ok(cancelled)
}

#[cfg(test)]
mod tests {
    use siyu_model::reach::SendScope;

    use super::*;
    use crate::reach::ReachStore;
    use crate::sqlite::SqliteStore;

    const T: TenantId = TenantId(1);

    /// A store whose outbox was written by version 5 (one row per message, every column on it),
    /// opened by this version: each message becomes a batch of one and reads as it did.
    #[tokio::test]
    async fn an_outbox_of_one_row_per_message_migrates_to_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("siyu.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
            )
            .unwrap();
            let tx = conn.transaction().unwrap();
            for m in crate::migrate::SQLITE.iter().filter(|m| m.version <= 5) {
                tx.execute_batch(m.sql).unwrap();
                tx.execute("INSERT INTO schema_migrations VALUES (?1, ?2, 0)", params![m.version, m.name]).unwrap();
            }
            let insert = "INSERT INTO outbox (tenant_id, outbox_id, msg_key, campaign_id, profile_id, channel, account,
                    sender, scope, recipient_kind, recipient_value, content, state, due_at, reserved_at, marketing,
                    logged, updated_at)
                VALUES (1, ?1, ?2, 7, ?3, 'wecom', 'corp', 'staff-a', 'mass', 'wecom_external_userid', ?4, '{}', ?5,
                    1000, ?6, 1, 0, 1000)";
            tx.execute(insert, params![1, "c7-p10", 10, "wm10", "queued", 900]).unwrap();
            // Older than the reserved_at column: it counts from its due time.
            tx.execute(insert, params![2, "c7-p11", 11, "wm11", "sent", rusqlite::types::Null]).unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let claimed = store.claim(T, Millis(2000), Millis(5000), 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        let row = &claimed[0].row;
        assert_eq!(
            (row.id, row.key.as_str(), row.campaign_id, row.profile_id, row.channel, row.account.as_str()),
            (1, "c7-p10", 7, 10, Channel::Wecom, "corp")
        );
        assert_eq!(
            (row.sender.as_deref(), row.scope, row.state),
            (Some("staff-a"), SendScope::Mass, OutboxState::Attempting)
        );
        let unlogged = store.unlogged(T, 10).await.unwrap();
        assert_eq!(unlogged.iter().map(|r| (r.id, r.state)).collect::<Vec<_>>(), [(2, OutboxState::Sent)]);
        let ledgers = store.ledgers(T, Millis(0), &[10, 11]).await.unwrap();
        let reserved: Vec<Vec<i64>> = ledgers.iter().map(|l| l.iter().map(|s| s.at.0).collect()).collect();
        assert_eq!(reserved, [vec![900], vec![1000]]);
        assert_eq!(store.outbox_pending(T, Some(7)).await.unwrap(), 1);
        let mut counts = store.outbox_counts(T, 7).await.unwrap();
        counts.sort_by_key(|(s, _)| s.as_str());
        assert_eq!(counts, [(OutboxState::Attempting, 1), (OutboxState::Sent, 1)]);
    }

    /// Two keys behind one hash: the cached id confirms a hit only if its key is the one asked
    /// for; anything else is settled by reading the campaign's keys.
    #[tokio::test]
    async fn a_hash_shared_by_two_keys_is_settled_by_the_campaign_s_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("siyu.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO outbox_batches (tenant_id, batch_id, last_id, campaign_id, channel, account, scope, marketing,
                 open, created_at) VALUES (1, 1, 2, 7, 'app', 'a', 'direct', 1, 2, 0);
             INSERT INTO outbox (tenant_id, outbox_id, msg_key, profile_id, recipient_kind, recipient_value, content,
                 state, due_at, reserved_at, updated_at)
             VALUES (1, 1, 'k1', 1, 'user_id', 'u1', '{}', 'queued', 0, 0, 0),
                    (1, 2, 'k2', 2, 'user_id', 'u2', '{}', 'queued', 0, 0, 0);",
        )
        .unwrap();
        let mut keys = CampaignKeys { ids: FxHashMap::default(), through: 2, used: Instant::now() };
        // As if "k2" and "other" hashed like "k1": the id behind the hash is message 1.
        for key in ["k1", "k2", "other"] {
            keys.ids.insert(key_hash(key), 1);
        }
        assert!(has_key(&conn, T, 7, &keys, "k1").unwrap(), "confirmed by the cached id");
        assert!(has_key(&conn, T, 7, &keys, "k2").unwrap(), "found among the campaign's keys");
        assert!(!has_key(&conn, T, 7, &keys, "other").unwrap(), "a collision is not a duplicate");
        assert!(!has_key(&conn, T, 8, &keys, "k2").unwrap(), "another campaign's keys are its own");
        assert!(!has_key(&conn, T, 7, &keys, "k3").unwrap(), "an unknown hash is no duplicate");
    }
}
