//! [`ReachStore`] on SQLite. One writer connection serialises every write, so a transaction is
//! all the locking the ledger needs here.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use siyu_model::reach::{SendScope, Sent, Verdict};
use siyu_model::{Channel, Millis, ProfileId, TenantId};

use crate::audience::AudienceKind;
use crate::reach::{
    CampaignRecord, CampaignState, Claimed, ContactWayRecord, EnqueueBatch, Enqueued, OutboxRow, OutboxState, Outcome,
    ReachStore, StaffTask, Suppression, TaskState, TemplateRecord,
};
use crate::sqlite::SqliteStore;
use crate::{Result, StoreError};

pub(crate) const OUTBOX_COLUMNS: &str =
    "outbox_id, msg_key, campaign_id, profile_id, channel, account, sender, scope, \
     recipient_kind, recipient_value, content, state, due_at, attempts, attempted_at, remote_id, error_code, \
     error_message, logged, updated_at";

fn corrupt(what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        Box::new(StoreError::Corrupt(format!("unknown {what} {value:?}"))),
    )
}

pub(crate) fn parse_scope(text: &str) -> Option<SendScope> {
    [SendScope::Mass, SendScope::Direct, SendScope::Welcome].into_iter().find(|s| s.as_str() == text)
}

pub(crate) const CONTACT_WAY_COLUMNS: &str =
    "state, config_id, qr_code, account, staff, campaign_id, remark, created_at";

/// The staff list as stored: a JSON array of userids.
pub(crate) fn encode_staff(staff: &[String]) -> String {
    serde_json::to_string(staff).expect("strings serialise")
}

pub(crate) fn decode_staff(state: &str, text: &str) -> std::result::Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("contact way {state:?} staff: {e}")))
}

fn contact_way_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContactWayRecord> {
    let state: String = r.get(0)?;
    let staff: String = r.get(4)?;
    let staff = decode_staff(&state, &staff)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(ContactWayRecord {
        state,
        config_id: r.get(1)?,
        qr_code: r.get(2)?,
        account: r.get(3)?,
        staff,
        campaign_id: r.get(5)?,
        remark: r.get(6)?,
        created_at: Millis(r.get(7)?),
    })
}

fn outbox_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let channel: String = r.get(4)?;
    let scope: String = r.get(7)?;
    let state: String = r.get(11)?;
    Ok(OutboxRow {
        id: r.get(0)?,
        key: r.get(1)?,
        campaign_id: r.get(2)?,
        profile_id: r.get::<_, i64>(3)? as ProfileId,
        channel: Channel::parse(&channel).ok_or_else(|| corrupt("channel", &channel))?,
        account: r.get(5)?,
        sender: r.get(6)?,
        scope: parse_scope(&scope).ok_or_else(|| corrupt("scope", &scope))?,
        recipient_kind: r.get(8)?,
        recipient_value: r.get(9)?,
        content: r.get(10)?,
        state: OutboxState::parse(&state).ok_or_else(|| corrupt("outbox state", &state))?,
        due_at: Millis(r.get(12)?),
        attempts: r.get::<_, i64>(13)? as u32,
        attempted_at: r.get::<_, Option<i64>>(14)?.map(Millis),
        remote_id: r.get(15)?,
        error_code: r.get(16)?,
        error_message: r.get(17)?,
        logged: r.get::<_, i64>(18)? != 0,
        updated_at: Millis(r.get(19)?),
    })
}

fn campaign_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CampaignRecord> {
    let state: String = r.get(3)?;
    Ok(CampaignRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        spec: r.get(2)?,
        state: CampaignState::parse(&state).ok_or_else(|| corrupt("campaign state", &state))?,
        planned_at: r.get::<_, Option<i64>>(4)?.map(Millis),
        planned: r.get::<_, i64>(5)? as u64,
        created_at: Millis(r.get(6)?),
        updated_at: Millis(r.get(7)?),
    })
}

fn task_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StaffTask> {
    let state: String = r.get(4)?;
    Ok(StaffTask {
        task_id: r.get(0)?,
        campaign_id: r.get(1)?,
        account: r.get(2)?,
        sender: r.get(3)?,
        state: TaskState::parse(&state).ok_or_else(|| corrupt("task state", &state))?,
        recipients: r.get::<_, i64>(5)? as u64,
        delivered: r.get::<_, i64>(6)? as u64,
        created_at: Millis(r.get(7)?),
        deadline: Millis(r.get(8)?),
        chased_at: r.get::<_, Option<i64>>(9)?.map(Millis),
        reassigned_to: r.get(10)?,
        updated_at: Millis(r.get(11)?),
    })
}

const CAMPAIGN_COLUMNS: &str = "campaign_id, name, spec, state, planned_at, planned, created_at, updated_at";
const TASK_COLUMNS: &str =
    "task_id, campaign_id, account, sender, state, recipients, delivered, created_at, deadline, \
     chased_at, reassigned_to, updated_at";

fn counts<T>(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    parse: impl Fn(String) -> Option<T>,
) -> Result<Vec<(T, u64)>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(args, |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (k, n) = row?;
        let Some(k) = parse(k.clone()) else { return Err(StoreError::Corrupt(format!("unknown value {k:?}"))) };
        out.push((k, n as u64));
    }
    Ok(out)
}

fn enqueue_blocking(conn: &mut Connection, tenant: TenantId, batch: &EnqueueBatch) -> Result<Vec<Enqueued>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = Millis::now();
    let mut out = Vec::with_capacity(batch.items.len());
    {
        let mut exists = tx.prepare_cached("SELECT 1 FROM outbox WHERE tenant_id = ?1 AND msg_key = ?2")?;
        let mut read = tx.prepare_cached("SELECT sends FROM reach_ledger WHERE tenant_id = ?1 AND profile_id = ?2")?;
        let mut write = tx.prepare_cached(
            "INSERT INTO reach_ledger (tenant_id, profile_id, sends) VALUES (?1, ?2, ?3)
             ON CONFLICT (tenant_id, profile_id) DO UPDATE SET sends = excluded.sends",
        )?;
        let mut hold = tx.prepare_cached(
            "INSERT INTO campaign_holds (tenant_id, campaign_id, profile_id, rule, at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO outbox (tenant_id, outbox_id, msg_key, campaign_id, profile_id, channel, account, sender, scope,
                 recipient_kind, recipient_value, content, state, due_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'queued', ?13, ?14)",
        )?;
        let mut next_id: i64 =
            tx.query_row("SELECT COALESCE(MAX(outbox_id), 0) + 1 FROM outbox WHERE tenant_id = ?1", [tenant.0], |r| {
                r.get(0)
            })?;
        for item in &batch.items {
            if exists.query_row(params![tenant.0, item.key], |_| Ok(())).optional()?.is_some() {
                out.push(Enqueued::Duplicate);
                continue;
            }
            let stored: Option<String> = read.query_row(params![tenant.0, item.profile_id], |r| r.get(0)).optional()?;
            let mut ledger: Vec<Sent> = match stored {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("ledger of profile {}: {e}", item.profile_id)))?,
                None => Vec::new(),
            };
            batch.prune(&mut ledger);
            match batch.judge(item, &mut ledger) {
                Verdict::Hold { rule } => {
                    hold.execute(params![tenant.0, batch.campaign_id, item.profile_id, rule, now.0])?;
                    out.push(Enqueued::Held { rule });
                }
                Verdict::Send { at } => {
                    let sends = serde_json::to_string(&ledger).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    write.execute(params![tenant.0, item.profile_id, sends])?;
                    insert.execute(params![
                        tenant.0,
                        next_id,
                        item.key,
                        batch.campaign_id,
                        item.profile_id,
                        batch.channel.as_str(),
                        batch.account,
                        batch.sender,
                        batch.scope.as_str(),
                        item.recipient_kind,
                        item.recipient_value,
                        item.content,
                        at.0,
                        now.0,
                    ])?;
                    next_id += 1;
                    out.push(Enqueued::Queued { at });
                }
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

fn claim_blocking(
    conn: &mut Connection,
    tenant: TenantId,
    now: Millis,
    lease_until: Millis,
    limit: usize,
) -> Result<Vec<Claimed>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let rows = {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox
             WHERE tenant_id = ?1 AND ((state = 'queued' AND due_at <= ?2) OR (state = 'attempting' AND lease_until <= ?2))
             ORDER BY due_at, outbox_id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![tenant.0, now.0, limit as i64], outbox_from_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut claimed = Vec::with_capacity(rows.len());
    {
        let mut mark = tx.prepare_cached(
            "UPDATE outbox SET attempts = attempts + 1, lease_until = ?4, updated_at = ?3,
                 attempted_at = CASE WHEN state = 'attempting' THEN attempted_at ELSE ?3 END, state = 'attempting'
             WHERE tenant_id = ?1 AND outbox_id = ?2",
        )?;
        for mut row in rows {
            let in_doubt = row.state == OutboxState::Attempting;
            mark.execute(params![tenant.0, row.id, now.0, lease_until.0])?;
            // An in-doubt message keeps the time of the attempt whose outcome was lost: that is
            // where a reconciliation must look.
            if !in_doubt {
                row.attempted_at = Some(now);
            }
            row.state = OutboxState::Attempting;
            row.attempts += 1;
            claimed.push(Claimed { row, in_doubt });
        }
    }
    tx.commit()?;
    Ok(claimed)
}

fn complete_blocking(conn: &mut Connection, tenant: TenantId, outcomes: &[(i64, Outcome)]) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = Millis::now();
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE outbox SET state = ?3, remote_id = COALESCE(?4, remote_id), error_code = ?5, error_message = ?6,
                 due_at = COALESCE(?7, due_at), lease_until = NULL, logged = ?8, updated_at = ?9
             WHERE tenant_id = ?1 AND outbox_id = ?2",
        )?;
        for (id, outcome) in outcomes {
            let (state, remote, code, message, due, logged) = outcome_columns(outcome);
            stmt.execute(params![tenant.0, id, state.as_str(), remote, code, message, due, logged, now.0])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The columns an outcome sets: state, remote id, error code and message, next due time, and
/// whether an event is still owed to the log (0) or none is (1, for retries).
pub(crate) type OutcomeColumns<'a> = (OutboxState, Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<i64>, i64);

pub(crate) fn outcome_columns(outcome: &Outcome) -> OutcomeColumns<'_> {
    match outcome {
        Outcome::Sent { remote_id } => (OutboxState::Sent, remote_id.as_deref(), None, None, None, 0),
        Outcome::Task { task_id } => (OutboxState::Task, Some(task_id.as_str()), None, None, None, 0),
        Outcome::Delivered => (OutboxState::Delivered, None, None, None, None, 0),
        Outcome::Retry { at, code, message } => {
            (OutboxState::Queued, None, Some(code.as_str()), Some(message.as_str()), Some(at.0), 1)
        }
        Outcome::Failed { code, message } => {
            (OutboxState::Failed, None, Some(code.as_str()), Some(message.as_str()), None, 0)
        }
    }
}

#[async_trait]
impl ReachStore for SqliteStore {
    async fn create_template(&self, tenant: TenantId, name: &str, definition: &str) -> Result<TemplateRecord> {
        let (name, definition) = (name.to_string(), definition.to_string());
        self.write(move |w| {
            let tx = w.conn.transaction()?;
            let taken: Option<i64> = tx
                .query_row(
                    "SELECT template_id FROM templates WHERE tenant_id = ?1 AND name = ?2 AND deleted_at IS NULL",
                    params![tenant.0, name],
                    |r| r.get(0),
                )
                .optional()?;
            if taken.is_some() {
                return Err(StoreError::NameTaken { kind: AudienceKind::Template, name });
            }
            let id: i64 = tx.query_row(
                "SELECT COALESCE(MAX(template_id), 0) + 1 FROM templates WHERE tenant_id = ?1",
                [tenant.0],
                |r| r.get(0),
            )?;
            let now = Millis::now();
            tx.execute(
                "INSERT INTO templates (tenant_id, template_id, name, definition, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![tenant.0, id, name, definition, now.0],
            )?;
            tx.commit()?;
            Ok(TemplateRecord { id, name, definition, created_at: now, updated_at: now })
        })
        .await
    }

    async fn update_template(&self, tenant: TenantId, id: i64, definition: &str) -> Result<bool> {
        let definition = definition.to_string();
        self.write(move |w| {
            let changed = w.conn.execute(
                "UPDATE templates SET definition = ?3, updated_at = ?4
                 WHERE tenant_id = ?1 AND template_id = ?2 AND deleted_at IS NULL",
                params![tenant.0, id, definition, Millis::now().0],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn templates(&self, tenant: TenantId) -> Result<Vec<TemplateRecord>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT template_id, name, definition, created_at, updated_at FROM templates
                 WHERE tenant_id = ?1 AND deleted_at IS NULL ORDER BY template_id",
            )?;
            let rows = stmt.query_map([tenant.0], |r| {
                Ok(TemplateRecord {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    definition: r.get(2)?,
                    created_at: Millis(r.get(3)?),
                    updated_at: Millis(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_template(&self, tenant: TenantId, id: i64) -> Result<bool> {
        self.write(move |w| {
            let changed = w.conn.execute(
                "UPDATE templates SET deleted_at = ?3 WHERE tenant_id = ?1 AND template_id = ?2 AND deleted_at IS NULL",
                params![tenant.0, id, Millis::now().0],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn create_campaign(
        &self,
        tenant: TenantId,
        name: &str,
        spec: &str,
        state: CampaignState,
    ) -> Result<CampaignRecord> {
        let (name, spec) = (name.to_string(), spec.to_string());
        self.write(move |w| {
            let tx = w.conn.transaction()?;
            let taken: Option<i64> = tx
                .query_row(
                    "SELECT campaign_id FROM campaigns WHERE tenant_id = ?1 AND name = ?2",
                    params![tenant.0, name],
                    |r| r.get(0),
                )
                .optional()?;
            if taken.is_some() {
                return Err(StoreError::NameTaken { kind: AudienceKind::Campaign, name });
            }
            let id: i64 = tx.query_row(
                "SELECT COALESCE(MAX(campaign_id), 0) + 1 FROM campaigns WHERE tenant_id = ?1",
                [tenant.0],
                |r| r.get(0),
            )?;
            let now = Millis::now();
            tx.execute(
                "INSERT INTO campaigns (tenant_id, campaign_id, name, spec, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![tenant.0, id, name, spec, state.as_str(), now.0],
            )?;
            tx.commit()?;
            Ok(CampaignRecord { id, name, spec, state, planned_at: None, planned: 0, created_at: now, updated_at: now })
        })
        .await
    }

    async fn campaigns(&self, tenant: TenantId) -> Result<Vec<CampaignRecord>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE tenant_id = ?1 ORDER BY campaign_id"
            ))?;
            let rows = stmt.query_map([tenant.0], campaign_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn campaign(&self, tenant: TenantId, id: i64) -> Result<Option<CampaignRecord>> {
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE tenant_id = ?1 AND campaign_id = ?2"),
                    params![tenant.0, id],
                    campaign_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn move_campaign(
        &self,
        tenant: TenantId,
        id: i64,
        from: &[CampaignState],
        to: CampaignState,
        planned: Option<u64>,
    ) -> Result<bool> {
        let from: Vec<&'static str> = from.iter().map(|s| s.as_str()).collect();
        self.write(move |w| {
            let tx = w.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let state: Option<String> = tx
                .query_row(
                    "SELECT state FROM campaigns WHERE tenant_id = ?1 AND campaign_id = ?2",
                    params![tenant.0, id],
                    |r| r.get(0),
                )
                .optional()?;
            if !state.is_some_and(|s| from.contains(&s.as_str())) {
                return Ok(false);
            }
            let now = Millis::now();
            tx.execute(
                "UPDATE campaigns SET state = ?3, updated_at = ?4,
                     planned = COALESCE(?5, planned),
                     planned_at = CASE WHEN ?3 = 'planning' THEN ?4 ELSE planned_at END
                 WHERE tenant_id = ?1 AND campaign_id = ?2",
                params![tenant.0, id, to.as_str(), now.0, planned.map(|p| p as i64)],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn record_holds(&self, tenant: TenantId, campaign_id: i64, holds: &[(ProfileId, String)]) -> Result<()> {
        let holds = holds.to_vec();
        self.write(move |w| {
            let tx = w.conn.transaction()?;
            let now = Millis::now();
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO campaign_holds (tenant_id, campaign_id, profile_id, rule, at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT DO NOTHING",
                )?;
                for (profile, rule) in &holds {
                    stmt.execute(params![tenant.0, campaign_id, profile, rule, now.0])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn hold_counts(&self, tenant: TenantId, campaign_id: i64) -> Result<Vec<(String, u64)>> {
        self.read(move |conn| {
            counts(
                conn,
                "SELECT rule, COUNT(*) FROM campaign_holds WHERE tenant_id = ?1 AND campaign_id = ?2
                 GROUP BY rule ORDER BY rule",
                params![tenant.0, campaign_id],
                Some,
            )
        })
        .await
    }

    async fn holds_for(&self, tenant: TenantId, campaign_id: i64, rule: &str) -> Result<Vec<ProfileId>> {
        let rule = rule.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT profile_id FROM campaign_holds WHERE tenant_id = ?1 AND campaign_id = ?2 AND rule = ?3
                 ORDER BY profile_id",
            )?;
            let rows = stmt.query_map(params![tenant.0, campaign_id, rule], |r| r.get::<_, i64>(0))?;
            Ok(rows.map(|r| r.map(|p| p as ProfileId)).collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn enqueue(&self, tenant: TenantId, batch: EnqueueBatch) -> Result<Vec<Enqueued>> {
        self.write(move |w| enqueue_blocking(&mut w.conn, tenant, &batch)).await
    }

    async fn ledgers(&self, tenant: TenantId, profiles: &[ProfileId]) -> Result<Vec<Vec<Sent>>> {
        let profiles = profiles.to_vec();
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT sends FROM reach_ledger WHERE tenant_id = ?1 AND profile_id = ?2")?;
            let mut out = Vec::with_capacity(profiles.len());
            for p in &profiles {
                let text: Option<String> = stmt.query_row(params![tenant.0, p], |r| r.get(0)).optional()?;
                out.push(match text {
                    Some(t) => serde_json::from_str(&t)
                        .map_err(|e| StoreError::Corrupt(format!("ledger of profile {p}: {e}")))?,
                    None => Vec::new(),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn claim(&self, tenant: TenantId, now: Millis, lease_until: Millis, limit: usize) -> Result<Vec<Claimed>> {
        self.write(move |w| claim_blocking(&mut w.conn, tenant, now, lease_until, limit)).await
    }

    async fn complete(&self, tenant: TenantId, outcomes: &[(i64, Outcome)]) -> Result<()> {
        let outcomes = outcomes.to_vec();
        self.write(move |w| complete_blocking(&mut w.conn, tenant, &outcomes)).await
    }

    async fn unlogged(&self, tenant: TenantId, limit: usize) -> Result<Vec<OutboxRow>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox
                 WHERE tenant_id = ?1 AND logged = 0 AND state IN ('sent', 'task', 'delivered', 'failed')
                 ORDER BY outbox_id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![tenant.0, limit as i64], outbox_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn mark_logged(&self, tenant: TenantId, ids: &[i64]) -> Result<()> {
        let ids = ids.to_vec();
        self.write(move |w| {
            let tx = w.conn.transaction()?;
            {
                let mut stmt =
                    tx.prepare_cached("UPDATE outbox SET logged = 1 WHERE tenant_id = ?1 AND outbox_id = ?2")?;
                for id in &ids {
                    stmt.execute(params![tenant.0, id])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn outbox_counts(&self, tenant: TenantId, campaign_id: i64) -> Result<Vec<(OutboxState, u64)>> {
        self.read(move |conn| {
            counts(
                conn,
                "SELECT state, COUNT(*) FROM outbox WHERE tenant_id = ?1 AND campaign_id = ?2 GROUP BY state",
                params![tenant.0, campaign_id],
                |s| OutboxState::parse(&s),
            )
        })
        .await
    }

    async fn failure_counts(&self, tenant: TenantId, campaign_id: i64) -> Result<Vec<(String, u64)>> {
        self.read(move |conn| {
            counts(
                conn,
                "SELECT error_code, COUNT(*) FROM outbox
                 WHERE tenant_id = ?1 AND campaign_id = ?2 AND state = 'failed' GROUP BY error_code ORDER BY error_code",
                params![tenant.0, campaign_id],
                Some,
            )
        })
        .await
    }

    async fn outbox_rows(
        &self,
        tenant: TenantId,
        campaign_id: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox
                 WHERE tenant_id = ?1 AND campaign_id = ?2 AND outbox_id > ?3 ORDER BY outbox_id LIMIT ?4"
            ))?;
            let rows = stmt.query_map(params![tenant.0, campaign_id, after_id, limit as i64], outbox_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn cancel_queued(&self, tenant: TenantId, campaign_id: i64) -> Result<u64> {
        self.write(move |w| {
            let n = w.conn.execute(
                "UPDATE outbox SET state = 'cancelled', logged = 1, updated_at = ?3
                 WHERE tenant_id = ?1 AND campaign_id = ?2 AND state = 'queued'",
                params![tenant.0, campaign_id, Millis::now().0],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn outbox_pending(&self, tenant: TenantId, campaign_id: Option<i64>) -> Result<u64> {
        self.read(move |conn| {
            let n: i64 = conn.query_row(
                "SELECT COUNT(*) FROM outbox WHERE tenant_id = ?1 AND (?2 IS NULL OR campaign_id = ?2)
                     AND state IN ('queued', 'attempting', 'task')",
                params![tenant.0, campaign_id],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn task_rows(&self, tenant: TenantId, task_id: &str) -> Result<Vec<OutboxRow>> {
        let task_id = task_id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE tenant_id = ?1 AND remote_id = ?2 AND state = 'task'
                 ORDER BY outbox_id"
            ))?;
            let rows = stmt.query_map(params![tenant.0, task_id], outbox_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn upsert_task(&self, tenant: TenantId, task: &StaffTask) -> Result<()> {
        let t = task.clone();
        self.write(move |w| {
            w.conn.execute(
                "INSERT INTO staff_tasks_out (tenant_id, task_id, campaign_id, account, sender, state, recipients,
                     delivered, created_at, deadline, chased_at, reassigned_to, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (tenant_id, task_id) DO UPDATE SET state = excluded.state, sender = excluded.sender,
                     recipients = excluded.recipients, delivered = excluded.delivered, deadline = excluded.deadline,
                     chased_at = excluded.chased_at, reassigned_to = excluded.reassigned_to,
                     updated_at = excluded.updated_at",
                params![
                    tenant.0,
                    t.task_id,
                    t.campaign_id,
                    t.account,
                    t.sender,
                    t.state.as_str(),
                    t.recipients as i64,
                    t.delivered as i64,
                    t.created_at.0,
                    t.deadline.0,
                    t.chased_at.map(|m| m.0),
                    t.reassigned_to,
                    t.updated_at.0,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn tasks(&self, tenant: TenantId, campaign_id: Option<i64>) -> Result<Vec<StaffTask>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {TASK_COLUMNS} FROM staff_tasks_out WHERE tenant_id = ?1 AND (?2 IS NULL OR campaign_id = ?2)
                 ORDER BY created_at, task_id"
            ))?;
            let rows = stmt.query_map(params![tenant.0, campaign_id], task_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn add_suppressions(&self, tenant: TenantId, entries: &[Suppression]) -> Result<u64> {
        let entries = entries.to_vec();
        self.write(move |w| {
            let tx = w.conn.transaction()?;
            let mut added = 0;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO suppressions (tenant_id, list, identity_kind, identity_value, reason, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                )?;
                for e in &entries {
                    added += stmt.execute(params![
                        tenant.0,
                        e.list,
                        e.identity_kind,
                        e.identity_value,
                        e.reason,
                        e.created_at.0
                    ])? as u64;
                }
            }
            tx.commit()?;
            Ok(added)
        })
        .await
    }

    async fn remove_suppression(&self, tenant: TenantId, list: &str, kind: &str, value: &str) -> Result<bool> {
        let (list, kind, value) = (list.to_string(), kind.to_string(), value.to_string());
        self.write(move |w| {
            let n = w.conn.execute(
                "DELETE FROM suppressions WHERE tenant_id = ?1 AND list = ?2 AND identity_kind = ?3
                     AND identity_value = ?4",
                params![tenant.0, list, kind, value],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn suppressions(&self, tenant: TenantId) -> Result<Vec<Suppression>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT list, identity_kind, identity_value, reason, created_at FROM suppressions
                 WHERE tenant_id = ?1 ORDER BY list, identity_kind, identity_value",
            )?;
            let rows = stmt.query_map([tenant.0], |r| {
                Ok(Suppression {
                    list: r.get(0)?,
                    identity_kind: r.get(1)?,
                    identity_value: r.get(2)?,
                    reason: r.get(3)?,
                    created_at: Millis(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn create_contact_way(&self, tenant: TenantId, way: &ContactWayRecord) -> Result<bool> {
        let way = way.clone();
        self.write(move |w| {
            let n = w.conn.execute(
                "INSERT INTO contact_ways (tenant_id, state, config_id, qr_code, account, staff, campaign_id, remark,
                     created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                params![
                    tenant.0,
                    way.state,
                    way.config_id,
                    way.qr_code,
                    way.account,
                    encode_staff(&way.staff),
                    way.campaign_id,
                    way.remark,
                    way.created_at.0
                ],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn contact_ways(&self, tenant: TenantId) -> Result<Vec<ContactWayRecord>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {CONTACT_WAY_COLUMNS} FROM contact_ways WHERE tenant_id = ?1 ORDER BY created_at, state"
            ))?;
            let rows = stmt.query_map([tenant.0], contact_way_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn contact_way(&self, tenant: TenantId, state: &str) -> Result<Option<ContactWayRecord>> {
        let state = state.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {CONTACT_WAY_COLUMNS} FROM contact_ways WHERE tenant_id = ?1 AND state = ?2"),
                    params![tenant.0, state],
                    contact_way_from_row,
                )
                .optional()?)
        })
        .await
    }
}
