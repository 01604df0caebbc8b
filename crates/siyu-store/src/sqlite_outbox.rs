//! The outbox on SQLite, in three tables (migration 0006):
//! - `outbox_batches`: what the messages of one enqueue call share (campaign, channel, account,
//!   sender, scope, purpose, due and reserved time) plus a summary of their states;
//! - `outbox`: the messages as planned (key, person, recipient, content), never rewritten;
//! - `outbox_attempts`: a message's state from its first claim on.
//!
//! Why: every secondary index on a message table is paid on every message planned, and every
//! claim and outcome that rewrites a message rewrites its content too. The questions the indexes
//! answered — what is due, what belongs to a campaign, what the log is owed — are asked of the
//! batches instead, then of a batch's messages, a range of the primary key (`batch_id` is the
//! batch's first message id, `last_id` its last: ids are allotted under the writer's lock, so
//! batches never interleave). The messages after `claimed_through` were never claimed: queued,
//! due at the batch's time, without an attempt row; a claim takes the next range of them and
//! writes their attempt rows in one statement.
//!
//! A batch's summary (`open`, `retry_due`, `next_due`, `unlogged`) is recomputed from its rows by
//! the statement that changes them, in the same transaction, so it never drifts from them.
//!
//! Keys: nothing indexes `msg_key`. A key is unique within its campaign (the engine's are
//! `c{campaign}-p{profile}`); the writer keeps, per campaign being planned, the hashes of its keys
//! with the message id of each, folded forward like the ledger, and confirms a hit by that id.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use rustc_hash::FxHashMap;
use siyu_model::reach::template::Purpose;
use siyu_model::reach::{SendScope, Verdict};
use siyu_model::{Channel, Millis, ProfileId, TenantId};

use crate::ledger::{self, LedgerColumns, LedgerRow, TenantLedger};
use crate::reach::{outcome_columns, Claimed, EnqueueBatch, Enqueued, OutboxRow, OutboxState, Outcome};
use crate::sqlite::Writer;
use crate::sqlite_reach::{corrupt, parse_scope};
use crate::Result;

/// What a batch's messages share, and where its claims stand.
#[derive(Debug, Clone)]
struct Batch {
    first: i64,
    last: i64,
    campaign_id: i64,
    channel: Channel,
    account: String,
    sender: Option<String>,
    scope: SendScope,
    due_at: i64,
    claimed_through: i64,
    retry_due: Option<i64>,
    created_at: i64,
}

/// A batch's columns as [`batch_from_row`] reads them, prefixed by the table's alias.
fn batch_columns(alias: &str) -> String {
    [
        "batch_id",
        "last_id",
        "campaign_id",
        "channel",
        "account",
        "sender",
        "scope",
        "due_at",
        "claimed_through",
        "retry_due",
        "created_at",
    ]
    .map(|c| if alias.is_empty() { c.to_string() } else { format!("{alias}.{c}") })
    .join(", ")
}

/// Reads [`batch_columns`] starting at column `at`.
fn batch_from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Batch> {
    let channel: String = r.get(at + 3)?;
    let scope: String = r.get(at + 6)?;
    Ok(Batch {
        first: r.get(at)?,
        last: r.get(at + 1)?,
        campaign_id: r.get(at + 2)?,
        channel: Channel::parse(&channel).ok_or_else(|| corrupt("channel", &channel))?,
        account: r.get(at + 4)?,
        sender: r.get(at + 5)?,
        scope: parse_scope(&scope).ok_or_else(|| corrupt("scope", &scope))?,
        due_at: r.get(at + 7)?,
        claimed_through: r.get(at + 8)?,
        retry_due: r.get(at + 9)?,
        created_at: r.get(at + 10)?,
    })
}

/// A message and its attempt row (NULLs when it was never claimed), in the order
/// [`message_from_row`] reads; then, where a query needs it, its batch ([`batch_columns`]).
const MESSAGE_COLUMNS: &str = "m.outbox_id, m.msg_key, m.profile_id, m.recipient_kind, m.recipient_value, m.content, \
     a.state, a.due_at, a.attempts, a.attempted_at, a.remote_id, a.error_code, a.error_message, a.logged, a.updated_at";
const MESSAGE_WIDTH: usize = 15;

/// A batch's messages `?2..=?3` with their attempt rows.
const MESSAGES_FROM: &str =
    "outbox m LEFT JOIN outbox_attempts a ON a.tenant_id = m.tenant_id AND a.outbox_id = m.outbox_id";

fn message_from_row(r: &rusqlite::Row<'_>, batch: &Batch) -> rusqlite::Result<OutboxRow> {
    let state = match r.get::<_, Option<String>>(6)? {
        Some(s) => OutboxState::parse(&s).ok_or_else(|| corrupt("outbox state", &s))?,
        None => OutboxState::Queued,
    };
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
        state,
        due_at: Millis(r.get::<_, Option<i64>>(7)?.unwrap_or(batch.due_at)),
        attempts: r.get::<_, Option<i64>>(8)?.unwrap_or(0) as u32,
        attempted_at: r.get::<_, Option<i64>>(9)?.map(Millis),
        remote_id: r.get(10)?,
        error_code: r.get(11)?,
        error_message: r.get(12)?,
        logged: r.get::<_, Option<i64>>(13)?.unwrap_or(0) != 0,
        updated_at: Millis(r.get::<_, Option<i64>>(14)?.unwrap_or(batch.created_at)),
    })
}

/// A message with its batch in the same row.
fn joined_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    message_from_row(r, &batch_from_row(r, MESSAGE_WIDTH)?)
}

/// The attempt rows' part of a batch's summary.
pub(crate) const SUMMARY_SQL: &str = "SELECT COALESCE(SUM(state IN ('queued', 'attempting', 'task')), 0),
         MIN(CASE state WHEN 'queued' THEN due_at WHEN 'attempting' THEN lease_until END),
         COALESCE(SUM(logged = 0 AND state IN ('sent', 'task', 'delivered', 'failed')), 0)
     FROM outbox_attempts WHERE tenant_id = ?1 AND outbox_id BETWEEN ?2 AND ?3";

/// Recomputes a batch's summary from its rows.
fn refresh(tx: &Connection, tenant: TenantId, batch: &Batch) -> rusqlite::Result<()> {
    let (open, retry_due, unlogged): (i64, Option<i64>, i64) = tx
        .prepare_cached(SUMMARY_SQL)?
        .query_row(params![tenant.0, batch.first, batch.claimed_through], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let unclaimed = batch.last - batch.claimed_through;
    let fresh_due = (unclaimed > 0).then_some(batch.due_at);
    let next_due = [retry_due, fresh_due].into_iter().flatten().min();
    tx.prepare_cached(
        "UPDATE outbox_batches SET open = ?3, retry_due = ?4, next_due = ?5, unlogged = ?6, claimed_through = ?7
         WHERE tenant_id = ?1 AND batch_id = ?2",
    )?
    .execute(params![
        tenant.0,
        batch.first,
        open + unclaimed,
        retry_due,
        next_due,
        unlogged,
        batch.claimed_through
    ])?;
    Ok(())
}

/// The batch holding message `?2`.
pub(crate) fn batch_of_sql() -> String {
    format!(
        "SELECT {} FROM outbox_batches WHERE tenant_id = ?1 AND batch_id <= ?2 ORDER BY batch_id DESC LIMIT 1",
        batch_columns("")
    )
}

/// The batches holding `ids`, each once.
fn batches_of(tx: &Connection, tenant: TenantId, ids: &[i64]) -> rusqlite::Result<Vec<Batch>> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let mut stmt = tx.prepare_cached(&batch_of_sql())?;
    let mut out: Vec<Batch> = Vec::new();
    for id in sorted {
        if out.last().is_some_and(|b| (b.first..=b.last).contains(&id)) {
            continue;
        }
        if let Some(batch) = stmt.query_row(params![tenant.0, id], |r| batch_from_row(r, 0)).optional()? {
            out.push(batch);
        }
    }
    Ok(out)
}

// --- Keys -----------------------------------------------------------------------------------

/// A key's hash: a fast one (a hit is confirmed by the message it names, so a collision costs a
/// lookup, never a wrong answer).
fn key_hash(key: &str) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
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
fn has_key(
    tx: &Connection,
    tenant: TenantId,
    campaign: i64,
    keys: &CampaignKeys,
    hash: u64,
    key: &str,
) -> Result<bool> {
    let Some(id) = keys.ids.get(&hash) else { return Ok(false) };
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
    "SELECT m.outbox_id, m.profile_id, b.reserved_at, b.channel, b.scope, b.marketing, b.sender
     FROM outbox_batches b INDEXED BY outbox_batches_by_last CROSS JOIN outbox m
         ON m.tenant_id = b.tenant_id AND m.outbox_id BETWEEN b.batch_id AND b.last_id
     WHERE b.tenant_id = ?1 AND b.last_id > ?2 AND m.outbox_id > ?2 AND b.reserved_at >= ?3";

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

// --- Holds ----------------------------------------------------------------------------------

/// Records holds as one run per rule (see migration 0006), in the caller's transaction.
pub(crate) fn write_holds(
    tx: &Connection,
    tenant: TenantId,
    campaign: i64,
    holds: &[(ProfileId, String)],
    at: Millis,
) -> rusqlite::Result<()> {
    if holds.is_empty() {
        return Ok(());
    }
    let mut by_rule: std::collections::BTreeMap<&str, String> = std::collections::BTreeMap::new();
    for (profile, rule) in holds {
        let list = by_rule.entry(rule.as_str()).or_default();
        if !list.is_empty() {
            list.push(',');
        }
        list.push_str(&profile.to_string());
    }
    let mut run: i64 = tx.query_row(
        "SELECT COALESCE(MAX(run_id), 0) FROM campaign_hold_runs WHERE tenant_id = ?1 AND campaign_id = ?2",
        params![tenant.0, campaign],
        |r| r.get(0),
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO campaign_hold_runs (tenant_id, campaign_id, run_id, rule, at, profiles) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (rule, profiles) in by_rule {
        run += 1;
        insert.execute(params![tenant.0, campaign, run, rule, at.0, profiles])?;
    }
    Ok(())
}

/// A campaign's holds, a person once (by their first run), in profile order.
pub(crate) fn read_holds(conn: &Connection, tenant: TenantId, campaign: i64) -> Result<Vec<(ProfileId, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT rule, profiles FROM campaign_hold_runs WHERE tenant_id = ?1 AND campaign_id = ?2 ORDER BY run_id",
    )?;
    let mut rows = stmt.query(params![tenant.0, campaign])?;
    let mut first: FxHashMap<ProfileId, usize> = FxHashMap::default();
    let mut rules: Vec<String> = Vec::new();
    while let Some(row) = rows.next()? {
        let rule: String = row.get(0)?;
        let profiles = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
        let index = rules.len();
        rules.push(rule);
        for p in profiles.split(',') {
            let profile: ProfileId = p.parse().map_err(|_| corrupt("held profile", p))?;
            first.entry(profile).or_insert(index);
        }
    }
    let mut out: Vec<(ProfileId, String)> = first.into_iter().map(|(p, i)| (p, rules[i].clone())).collect();
    out.sort_unstable_by_key(|(p, _)| *p);
    Ok(out)
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
    ledger.reserve_people(batch.plan_size);
    keys.ids.reserve(batch.plan_size.saturating_sub(keys.ids.len()));
    let mut next_id = first;
    // The guardrails give every message of a call the same time (the batch's, or the end of the
    // quiet hours); a batch records it once.
    let mut due: Option<Millis> = None;
    let mut out = Vec::with_capacity(batch.items.len());
    let mut holds: Vec<(ProfileId, String)> = Vec::new();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO outbox (tenant_id, outbox_id, msg_key, profile_id, recipient_kind, recipient_value, content)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for item in &batch.items {
            // A key queued before (planning resumed after a crash, or twice in this batch) is
            // neither judged against itself nor held.
            let hash = key_hash(&item.key);
            if has_key(&tx, tenant, batch.campaign_id, &keys, hash, &item.key)? {
                out.push(Enqueued::Duplicate);
                continue;
            }
            match ledger.judge(batch, item) {
                Verdict::Hold { rule } => {
                    holds.push((item.profile_id, rule.clone()));
                    out.push(Enqueued::Held { rule });
                }
                Verdict::Send { at } => {
                    if due.is_some_and(|d| d != at) {
                        return Err(crate::StoreError::Corrupt(format!(
                            "one enqueue call was given two send times ({} and {})",
                            due.map_or(0, |d| d.0),
                            at.0
                        )));
                    }
                    due = Some(at);
                    insert.execute(params![
                        tenant.0,
                        next_id,
                        item.key,
                        item.profile_id,
                        item.recipient_kind,
                        item.recipient_value,
                        item.content,
                    ])?;
                    keys.ids.insert(hash, next_id);
                    next_id += 1;
                    out.push(Enqueued::Queued { at });
                }
            }
        }
    }
    write_holds(&tx, tenant, batch.campaign_id, &holds, now)?;
    if let Some(at) = due {
        tx.execute(
            "INSERT INTO outbox_batches (tenant_id, batch_id, last_id, campaign_id, channel, account, sender, scope,
                 marketing, due_at, reserved_at, claimed_through, open, next_due, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?10, ?13)",
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
                at.0,
                first - 1,
                next_id - first,
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

/// Batches with work due (unclaimed messages due, retries due, or leases lapsed), earliest first.
pub(crate) fn due_batches_sql() -> String {
    format!(
        "SELECT {} FROM outbox_batches INDEXED BY outbox_batches_due
         WHERE tenant_id = ?1 AND next_due <= ?2 ORDER BY next_due, batch_id LIMIT ?3",
        batch_columns("")
    )
}

const DUE_BATCHES_PER_ROUND: i64 = 64;

/// Which attempt rows a claim takes again: lapsed leases (`in_doubt`) or retries due.
fn claimable(in_doubt: bool) -> &'static str {
    if in_doubt {
        "a.state = 'attempting' AND a.lease_until <= ?2"
    } else {
        "a.state = 'queued' AND a.due_at <= ?2"
    }
}

/// The first `?3` attempt rows of the range `?4..=?5` a claim takes again, with their messages.
pub(crate) fn reclaimable_sql(in_doubt: bool) -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM outbox_attempts a CROSS JOIN outbox m
             ON m.tenant_id = a.tenant_id AND m.outbox_id = a.outbox_id
         WHERE a.tenant_id = ?1 AND a.outbox_id BETWEEN ?4 AND ?5 AND {}
         ORDER BY a.outbox_id LIMIT ?3",
        claimable(in_doubt)
    )
}

/// Leases what [`reclaimable_sql`] read: the same condition over the range that ends at the last
/// of them (in the same transaction), so the same rows, in one range update.
pub(crate) fn reclaim_sql(in_doubt: bool) -> String {
    let set = if in_doubt {
        "attempts = attempts + 1"
    } else {
        "state = 'attempting', attempts = attempts + 1, attempted_at = ?2"
    };
    format!(
        "UPDATE OR FAIL outbox_attempts AS a SET {set}, lease_until = ?3, updated_at = ?2
         WHERE a.tenant_id = ?1 AND a.outbox_id BETWEEN ?4 AND ?5 AND {}",
        claimable(in_doubt)
    )
}

/// Unclaimed messages `?2..=?3`, with no attempt row yet.
pub(crate) const UNCLAIMED_SQL: &str =
    "SELECT outbox_id, msg_key, profile_id, recipient_kind, recipient_value, content,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
     FROM outbox WHERE tenant_id = ?1 AND outbox_id BETWEEN ?2 AND ?3";

/// The first attempt rows of the unclaimed messages `?2..=?3`, in one statement: state `?4`, due
/// `?5`, attempts `?6`, attempted `?7`, lease `?8`, logged `?9`, at `?10`. Multi-row writes say
/// OR FAIL: a failure fails the whole transaction anyway, and without it SQLite keeps a
/// statement journal of every page the statement touches (≈ 6 % of the dispatcher's CPU when
/// measured).
pub(crate) const FIRST_ATTEMPTS_SQL: &str =
    "INSERT OR FAIL INTO outbox_attempts (tenant_id, outbox_id, state, due_at, attempts, attempted_at, lease_until,
         logged, updated_at)
     SELECT tenant_id, outbox_id, ?4, ?5, ?6, ?7, ?8, ?9, ?10 FROM outbox
     WHERE tenant_id = ?1 AND outbox_id BETWEEN ?2 AND ?3";

/// What [`FIRST_ATTEMPTS_SQL`] writes for each message of a range.
struct FirstAttempt {
    state: OutboxState,
    attempts: i64,
    attempted_at: Option<Millis>,
    lease_until: Option<Millis>,
    logged: bool,
}

/// Gives the unclaimed messages of `batch` up to `to` their attempt rows; returns how many.
fn first_attempts(
    tx: &Connection,
    tenant: TenantId,
    batch: &mut Batch,
    to: i64,
    attempt: FirstAttempt,
    now: Millis,
) -> rusqlite::Result<usize> {
    let n = tx.prepare_cached(FIRST_ATTEMPTS_SQL)?.execute(params![
        tenant.0,
        batch.claimed_through + 1,
        to,
        attempt.state.as_str(),
        batch.due_at,
        attempt.attempts,
        attempt.attempted_at.map(|t| t.0),
        attempt.lease_until.map(|t| t.0),
        i64::from(attempt.logged),
        now.0,
    ])?;
    batch.claimed_through = batch.claimed_through.max(to);
    Ok(n)
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
    // Within a batch: lapsed leases first (those messages may have gone out, and an in-doubt one
    // keeps the time of the attempt whose outcome was lost, where a reconciliation looks), then
    // retries, then the next unclaimed messages. A batch this claim leaves with nothing due has
    // a summary that says so, so each round sees only batches not yet taken.
    'rounds: while claimed.len() < limit {
        let due: Vec<Batch> = {
            let mut stmt = tx.prepare_cached(&due_batches_sql())?;
            let rows = stmt.query_map(params![tenant.0, now.0, DUE_BATCHES_PER_ROUND], |r| batch_from_row(r, 0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let before = claimed.len();
        for mut batch in due {
            if batch.retry_due.is_some_and(|d| d <= now.0) {
                for in_doubt in [true, false] {
                    let left = limit - claimed.len();
                    if left == 0 {
                        break;
                    }
                    let rows: Vec<OutboxRow> = tx
                        .prepare_cached(&reclaimable_sql(in_doubt))?
                        .query_map(params![tenant.0, now.0, left as i64, batch.first, batch.claimed_through], |r| {
                            message_from_row(r, &batch)
                        })?
                        .collect::<rusqlite::Result<_>>()?;
                    let Some(last) = rows.last().map(|r| r.id) else { continue };
                    tx.prepare_cached(&reclaim_sql(in_doubt))?.execute(params![
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
            }
            let left = limit - claimed.len();
            if left > 0 && batch.claimed_through < batch.last && batch.due_at <= now.0 {
                let (from, to) = (batch.claimed_through + 1, batch.last.min(batch.claimed_through + left as i64));
                let rows: Vec<OutboxRow> = tx
                    .prepare_cached(UNCLAIMED_SQL)?
                    .query_map(params![tenant.0, from, to], |r| message_from_row(r, &batch))?
                    .collect::<rusqlite::Result<_>>()?;
                let attempt = FirstAttempt {
                    state: OutboxState::Attempting,
                    attempts: 1,
                    attempted_at: Some(now),
                    lease_until: Some(lease_until),
                    logged: false,
                };
                first_attempts(&tx, tenant, &mut batch, to, attempt, now)?;
                for mut row in rows {
                    row.state = OutboxState::Attempting;
                    row.attempts = 1;
                    row.attempted_at = Some(now);
                    row.updated_at = now;
                    claimed.push(Claimed { row, in_doubt: false });
                }
            }
            refresh(&tx, tenant, &batch)?;
            if claimed.len() == limit {
                break 'rounds;
            }
        }
        if claimed.len() == before {
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
    let mut sorted: Vec<&(i64, Outcome)> = outcomes.iter().collect();
    sorted.sort_by_key(|(id, _)| *id);
    sorted.dedup_by_key(|(id, _)| *id);
    // Only claimed messages have an outcome; one that was never claimed gets its attempt row
    // (queued, as it was) first.
    let mut batches = batches_of(&tx, tenant, &sorted.iter().map(|(id, _)| *id).collect::<Vec<_>>())?;
    for batch in &mut batches {
        let unclaimed = batch.claimed_through + 1..=batch.last;
        if let Some(to) = sorted.iter().map(|(id, _)| *id).filter(|id| unclaimed.contains(id)).max() {
            let attempt = FirstAttempt {
                state: OutboxState::Queued,
                attempts: 0,
                attempted_at: None,
                lease_until: None,
                logged: false,
            };
            first_attempts(&tx, tenant, batch, to, attempt, now)?;
        }
    }
    {
        // Consecutive ids with the same outcome are one range update: the same rows, a fraction
        // of the per-row cost.
        let mut stmt = tx.prepare_cached(
            "UPDATE OR FAIL outbox_attempts SET state = ?4, remote_id = COALESCE(?5, remote_id), error_code = ?6,
                 error_message = ?7, due_at = COALESCE(?8, due_at), lease_until = NULL, logged = ?9, updated_at = ?10
             WHERE tenant_id = ?1 AND outbox_id BETWEEN ?2 AND ?3",
        )?;
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
    for batch in &batches {
        refresh(&tx, tenant, batch)?;
    }
    tx.commit()?;
    Ok(())
}

pub(crate) fn mark_logged(conn: &mut Connection, tenant: TenantId, ids: &[i64]) -> Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt =
            tx.prepare_cached("UPDATE outbox_attempts SET logged = 1 WHERE tenant_id = ?1 AND outbox_id = ?2")?;
        for id in ids {
            stmt.execute(params![tenant.0, id])?;
        }
    }
    for batch in batches_of(&tx, tenant, ids)? {
        refresh(&tx, tenant, &batch)?;
    }
    tx.commit()?;
    Ok(())
}

pub(crate) fn unlogged_sql() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS}, {} FROM outbox_batches b INDEXED BY outbox_batches_unlogged
         CROSS JOIN outbox_attempts a ON a.tenant_id = b.tenant_id AND a.outbox_id BETWEEN b.batch_id AND b.claimed_through
         CROSS JOIN outbox m ON m.tenant_id = a.tenant_id AND m.outbox_id = a.outbox_id
         WHERE b.tenant_id = ?1 AND b.unlogged > 0 AND a.logged = 0 AND a.state IN ('sent', 'task', 'delivered', 'failed')
         ORDER BY a.outbox_id LIMIT ?2",
        batch_columns("b")
    )
}

pub(crate) fn unlogged(conn: &Connection, tenant: TenantId, limit: usize) -> Result<Vec<OutboxRow>> {
    let mut stmt = conn.prepare_cached(&unlogged_sql())?;
    let rows = stmt.query_map(params![tenant.0, limit as i64], joined_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn task_rows_sql() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS}, {} FROM outbox_attempts a INDEXED BY outbox_tasks
         CROSS JOIN outbox m ON m.tenant_id = a.tenant_id AND m.outbox_id = a.outbox_id
         CROSS JOIN outbox_batches b ON b.tenant_id = a.tenant_id
             AND b.batch_id = (SELECT MAX(batch_id) FROM outbox_batches WHERE tenant_id = a.tenant_id AND batch_id <= a.outbox_id)
         WHERE a.tenant_id = ?1 AND a.remote_id = ?2 AND a.state = 'task' ORDER BY a.outbox_id",
        batch_columns("b")
    )
}

pub(crate) fn task_rows(conn: &Connection, tenant: TenantId, task_id: &str) -> Result<Vec<OutboxRow>> {
    let mut stmt = conn.prepare_cached(&task_rows_sql())?;
    let rows = stmt.query_map(params![tenant.0, task_id], joined_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

// --- Per campaign ---------------------------------------------------------------------------

pub(crate) fn campaign_batches_sql() -> String {
    format!(
        "SELECT {} FROM outbox_batches INDEXED BY outbox_batches_by_campaign
         WHERE tenant_id = ?1 AND campaign_id = ?2 AND last_id > ?3 ORDER BY batch_id",
        batch_columns("")
    )
}

fn campaign_batches(conn: &Connection, tenant: TenantId, campaign: i64, after: i64) -> rusqlite::Result<Vec<Batch>> {
    let mut stmt = conn.prepare_cached(&campaign_batches_sql())?;
    let rows = stmt.query_map(params![tenant.0, campaign, after], |r| batch_from_row(r, 0))?;
    rows.collect()
}

/// A campaign's messages by state: the unclaimed ones are queued, the others have their attempt.
pub(crate) const ATTEMPT_COUNTS_SQL: &str = "SELECT a.state, COUNT(*)
     FROM outbox_batches b INDEXED BY outbox_batches_by_campaign CROSS JOIN outbox_attempts a
         ON a.tenant_id = b.tenant_id AND a.outbox_id BETWEEN b.batch_id AND b.claimed_through
     WHERE b.tenant_id = ?1 AND b.campaign_id = ?2 GROUP BY a.state";

pub(crate) const UNCLAIMED_COUNT_SQL: &str = "SELECT COALESCE(SUM(last_id - claimed_through), 0)
     FROM outbox_batches INDEXED BY outbox_batches_by_campaign WHERE tenant_id = ?1 AND campaign_id = ?2";

pub(crate) fn outbox_counts(conn: &Connection, tenant: TenantId, campaign: i64) -> Result<Vec<(OutboxState, u64)>> {
    let mut counts: HashMap<OutboxState, u64> = HashMap::new();
    let mut stmt = conn.prepare_cached(ATTEMPT_COUNTS_SQL)?;
    for row in stmt.query_map(params![tenant.0, campaign], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (state, n) = row?;
        let state = OutboxState::parse(&state).ok_or_else(|| corrupt("outbox state", &state))?;
        *counts.entry(state).or_default() += n as u64;
    }
    let unclaimed: i64 =
        conn.prepare_cached(UNCLAIMED_COUNT_SQL)?.query_row(params![tenant.0, campaign], |r| r.get(0))?;
    if unclaimed > 0 {
        *counts.entry(OutboxState::Queued).or_default() += unclaimed as u64;
    }
    let mut out: Vec<(OutboxState, u64)> = counts.into_iter().collect();
    out.sort_by_key(|(s, _)| s.as_str());
    Ok(out)
}

pub(crate) const FAILURES_SQL: &str = "SELECT a.error_code, COUNT(*)
     FROM outbox_batches b INDEXED BY outbox_batches_by_campaign CROSS JOIN outbox_attempts a
         ON a.tenant_id = b.tenant_id AND a.outbox_id BETWEEN b.batch_id AND b.claimed_through
     WHERE b.tenant_id = ?1 AND b.campaign_id = ?2 AND a.state = 'failed' GROUP BY a.error_code ORDER BY a.error_code";

pub(crate) const HAS_PENDING_SQL: &str = "SELECT EXISTS (SELECT 1 FROM outbox_batches INDEXED BY outbox_batches_open
     WHERE tenant_id = ?1 AND campaign_id = ?2 AND open > 0)";

pub(crate) const PENDING_SQL: &str = "SELECT COALESCE(SUM(open), 0) FROM outbox_batches INDEXED BY outbox_batches_open
     WHERE tenant_id = ?1 AND (?2 IS NULL OR campaign_id = ?2) AND open > 0";

pub(crate) fn campaign_rows_sql() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM {MESSAGES_FROM}
         WHERE m.tenant_id = ?1 AND m.outbox_id BETWEEN ?2 AND ?3 ORDER BY m.outbox_id LIMIT ?4"
    )
}

/// A campaign's messages after `after_id`, in id order, at most `limit`.
pub(crate) fn campaign_rows(
    conn: &Connection,
    tenant: TenantId,
    campaign: i64,
    after_id: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare_cached(&campaign_rows_sql())?;
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
    for mut batch in campaign_batches(&tx, tenant, campaign, 0)? {
        let mut n = tx
            .prepare_cached(
                "UPDATE OR FAIL outbox_attempts SET state = 'cancelled', logged = 1, updated_at = ?4
                 WHERE tenant_id = ?1 AND outbox_id BETWEEN ?2 AND ?3 AND state = 'queued'",
            )?
            .execute(params![tenant.0, batch.first, batch.claimed_through, now.0])? as u64;
        if batch.claimed_through < batch.last {
            let attempt = FirstAttempt {
                state: OutboxState::Cancelled,
                attempts: 0,
                attempted_at: None,
                lease_until: None,
                logged: true,
            };
            let last = batch.last;
            n += first_attempts(&tx, tenant, &mut batch, last, attempt, now)? as u64;
        }
        if n > 0 {
            refresh(&tx, tenant, &batch)?;
        }
        cancelled += n;
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
            tx.execute_batch(
                "INSERT INTO campaign_holds (tenant_id, campaign_id, profile_id, rule, at)
                 VALUES (1, 7, 12, 'consent', 500), (1, 7, 13, 'holdout', 500)",
            )
            .unwrap();
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

        // Holds became runs; a person held again keeps their first rule.
        assert_eq!(store.hold_counts(T, 7).await.unwrap(), [("consent".to_string(), 1), ("holdout".to_string(), 1)]);
        store.record_holds(T, 7, &[(12, "unsubscribed".into()), (14, "holdout".into())]).await.unwrap();
        assert_eq!(store.hold_counts(T, 7).await.unwrap(), [("consent".to_string(), 1), ("holdout".to_string(), 2)]);
        assert_eq!(store.holds_for(T, 7, "holdout").await.unwrap(), [13, 14]);
        assert_eq!(store.holds_for(T, 7, "unsubscribed").await.unwrap(), Vec::<ProfileId>::new());
    }

    /// The engine's keys of a large campaign hash apart: a collision is correct but costs a read of
    /// the campaign's keys, so a hash that collided on such keys would make planning quadratic.
    #[test]
    fn engine_shaped_keys_do_not_collide() {
        for campaign in [7, 1_000_000] {
            let hashes: rustc_hash::FxHashSet<u64> =
                (0..1_000_000u32).map(|p| key_hash(&format!("c{campaign}-p{p}"))).collect();
            assert_eq!(hashes.len(), 1_000_000, "campaign {campaign}");
        }
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
                 due_at, reserved_at, claimed_through, open, created_at)
             VALUES (1, 1, 2, 7, 'app', 'a', 'direct', 1, 0, 0, 0, 2, 0);
             INSERT INTO outbox (tenant_id, outbox_id, msg_key, profile_id, recipient_kind, recipient_value, content)
             VALUES (1, 1, 'k1', 1, 'user_id', 'u1', '{}'), (1, 2, 'k2', 2, 'user_id', 'u2', '{}');",
        )
        .unwrap();
        let mut keys = CampaignKeys { ids: FxHashMap::default(), through: 2, used: Instant::now() };
        // As if "k2" and "other" hashed like "k1": the id behind the hash is message 1.
        for key in ["k1", "k2", "other"] {
            keys.ids.insert(key_hash(key), 1);
        }
        assert!(has_key(&conn, T, 7, &keys, key_hash("k1"), "k1").unwrap(), "confirmed by the cached id");
        assert!(has_key(&conn, T, 7, &keys, key_hash("k2"), "k2").unwrap(), "found among the campaign's keys");
        assert!(!has_key(&conn, T, 7, &keys, key_hash("other"), "other").unwrap(), "a collision is not a duplicate");
        assert!(!has_key(&conn, T, 8, &keys, key_hash("k2"), "k2").unwrap(), "another campaign's keys are its own");
        assert!(!has_key(&conn, T, 7, &keys, key_hash("k3"), "k3").unwrap(), "an unknown hash is no duplicate");
    }
}
