//! [`ReachStore`] on SQLite. One writer connection serialises every write, so a transaction is
//! all the locking the ledger needs here.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use siyu_model::reach::{SendScope, Sent};
use siyu_model::{Millis, ProfileId, TenantId};

use crate::audience::AudienceKind;
use crate::reach::{
    CampaignRecord, CampaignState, Claimed, ContactWayRecord, EnqueueBatch, Enqueued, OutboxRow, OutboxState, Outcome,
    ReachStore, StaffTask, Suppression, TaskState, TemplateRecord,
};
use crate::sqlite::SqliteStore;
use crate::sqlite_outbox;
use crate::{Result, StoreError};

pub(crate) fn corrupt(what: &str, value: &str) -> rusqlite::Error {
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
            sqlite_outbox::write_holds(&tx, tenant, campaign_id, &holds, Millis::now())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn hold_counts(&self, tenant: TenantId, campaign_id: i64) -> Result<Vec<(String, u64)>> {
        self.read(move |conn| {
            let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
            for (_, rule) in sqlite_outbox::read_holds(conn, tenant, campaign_id)? {
                *counts.entry(rule).or_default() += 1;
            }
            Ok(counts.into_iter().collect())
        })
        .await
    }

    async fn holds_for(&self, tenant: TenantId, campaign_id: i64, rule: &str) -> Result<Vec<ProfileId>> {
        let rule = rule.to_string();
        self.read(move |conn| {
            let holds = sqlite_outbox::read_holds(conn, tenant, campaign_id)?;
            Ok(holds.into_iter().filter(|(_, r)| *r == rule).map(|(p, _)| p).collect())
        })
        .await
    }

    async fn enqueue(&self, tenant: TenantId, batch: EnqueueBatch) -> Result<Vec<Enqueued>> {
        self.write(move |w| sqlite_outbox::enqueue(w, tenant, &batch)).await
    }

    async fn ledgers(&self, tenant: TenantId, horizon: Millis, profiles: &[ProfileId]) -> Result<Vec<Vec<Sent>>> {
        let profiles = profiles.to_vec();
        self.write(move |w| {
            let ledger = sqlite_outbox::current_ledger(&mut w.ledgers, &w.conn, tenant, horizon)?;
            let out = profiles.iter().map(|p| ledger.get(*p)).collect();
            w.ledgers.insert(tenant, ledger);
            Ok(out)
        })
        .await
    }

    async fn claim(&self, tenant: TenantId, now: Millis, lease_until: Millis, limit: usize) -> Result<Vec<Claimed>> {
        self.write(move |w| sqlite_outbox::claim(&mut w.conn, tenant, now, lease_until, limit)).await
    }

    async fn complete(&self, tenant: TenantId, outcomes: &[(i64, Outcome)]) -> Result<()> {
        let outcomes = outcomes.to_vec();
        self.write(move |w| sqlite_outbox::complete(&mut w.conn, tenant, &outcomes, false)).await
    }

    async fn complete_logged(&self, tenant: TenantId, outcomes: &[(i64, Outcome)]) -> Result<()> {
        let outcomes = outcomes.to_vec();
        self.write(move |w| sqlite_outbox::complete(&mut w.conn, tenant, &outcomes, true)).await
    }

    async fn unlogged(&self, tenant: TenantId, limit: usize) -> Result<Vec<OutboxRow>> {
        self.read(move |conn| sqlite_outbox::unlogged(conn, tenant, limit)).await
    }

    async fn mark_logged(&self, tenant: TenantId, ids: &[i64]) -> Result<()> {
        let ids = ids.to_vec();
        self.write(move |w| sqlite_outbox::mark_logged(&mut w.conn, tenant, &ids)).await
    }

    async fn outbox_counts(&self, tenant: TenantId, campaign_id: i64) -> Result<Vec<(OutboxState, u64)>> {
        self.read(move |conn| sqlite_outbox::outbox_counts(conn, tenant, campaign_id)).await
    }

    async fn failure_counts(&self, tenant: TenantId, campaign_id: i64) -> Result<Vec<(String, u64)>> {
        self.read(move |conn| counts(conn, sqlite_outbox::FAILURES_SQL, params![tenant.0, campaign_id], Some)).await
    }

    async fn outbox_rows(
        &self,
        tenant: TenantId,
        campaign_id: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>> {
        self.read(move |conn| sqlite_outbox::campaign_rows(conn, tenant, campaign_id, after_id, limit)).await
    }

    async fn cancel_queued(&self, tenant: TenantId, campaign_id: i64) -> Result<u64> {
        self.write(move |w| sqlite_outbox::cancel_queued(&mut w.conn, tenant, campaign_id)).await
    }

    async fn outbox_pending(&self, tenant: TenantId, campaign_id: Option<i64>) -> Result<u64> {
        self.read(move |conn| {
            let n: i64 = conn.query_row(sqlite_outbox::PENDING_SQL, params![tenant.0, campaign_id], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn has_pending(&self, tenant: TenantId, campaign_id: i64) -> Result<bool> {
        self.read(move |conn| {
            Ok(conn.query_row(sqlite_outbox::HAS_PENDING_SQL, params![tenant.0, campaign_id], |r| r.get(0))?)
        })
        .await
    }

    async fn task_rows(&self, tenant: TenantId, task_id: &str) -> Result<Vec<OutboxRow>> {
        let task_id = task_id.to_string();
        self.read(move |conn| sqlite_outbox::task_rows(conn, tenant, &task_id)).await
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan SQLite picks for `sql`, one line per step.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let unbound = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
        let rows = stmt.query_map(rusqlite::params_from_iter(unbound), |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    /// The dispatcher's queries stay on their indexes: a full scan of the outbox per tick or per
    /// task makes a campaign quadratic in its size.
    #[test]
    fn outbox_queries_use_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("siyu.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        use crate::sqlite_outbox::*;
        let range = "PRIMARY KEY (tenant_id=? AND outbox_id>? AND outbox_id<?)";
        let sqls = [
            (due_batches_sql(), "outbox_batches_due"),
            (reclaimable_sql(true), "SEARCH a USING PRIMARY KEY (tenant_id=? AND outbox_id>? AND outbox_id<?)"),
            (reclaimable_sql(false), "SEARCH a USING PRIMARY KEY (tenant_id=? AND outbox_id>? AND outbox_id<?)"),
            (reclaim_sql(true), range),
            (reclaim_sql(false), range),
            (UNCLAIMED_SQL.to_string(), range),
            (FIRST_ATTEMPTS_SQL.to_string(), range),
            (SUMMARY_SQL.to_string(), range),
            (batch_of_sql(), "PRIMARY KEY (tenant_id=? AND batch_id<?)"),
            (HAS_PENDING_SQL.to_string(), "outbox_batches_open"),
            (PENDING_SQL.to_string(), "outbox_batches_open"),
            (ATTEMPT_COUNTS_SQL.to_string(), "outbox_batches_by_campaign"),
            (UNCLAIMED_COUNT_SQL.to_string(), "outbox_batches_by_campaign"),
            (FAILURES_SQL.to_string(), "outbox_batches_by_campaign"),
            (campaign_batches_sql(), "outbox_batches_by_campaign"),
            (campaign_rows_sql(), range),
            (CAMPAIGN_KEYS_SQL.to_string(), "outbox_batches_by_campaign"),
            (LEDGER_TAIL_SQL.to_string(), "outbox_batches_by_last"),
            (unlogged_sql(), "outbox_batches_unlogged"),
            (task_rows_sql(), "outbox_tasks"),
        ];
        let cases: Vec<(&str, &str)> = sqls.iter().map(|(sql, index)| (sql.as_str(), *index)).collect();
        // Every join from the batches reaches their rows by a range of the primary key.
        for sql in [ATTEMPT_COUNTS_SQL, FAILURES_SQL, CAMPAIGN_KEYS_SQL, LEDGER_TAIL_SQL, unlogged_sql().as_str()] {
            let plan = plan(&conn, sql);
            assert!(plan.contains(&format!("USING {range}")), "{sql}\n  plans {plan}");
        }
        for (sql, index) in cases {
            let plan = plan(&conn, sql);
            assert!(plan.contains(index), "{sql}\n  plans {plan}");
        }
    }
}
