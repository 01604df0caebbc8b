//! [`ReachStore`] on PostgreSQL. Queuing takes a transaction-scoped advisory lock of the tenant's
//! outbox and folds in the rows other processes wrote before judging, so two `siyu serve`
//! processes planning sends to the same people are serialised and no cap is exceeded; dispatchers claim with `FOR UPDATE SKIP LOCKED`, so they never take the same
//! message.

use async_trait::async_trait;
use siyu_model::reach::template::Purpose;
use siyu_model::reach::{Sent, Verdict};
use siyu_model::{Millis, ProfileId, TenantId};
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::audience::AudienceKind;
use crate::ledger::{self, LedgerColumns, LedgerRow, LedgerSlot, TenantLedger};
use crate::postgres::PostgresStore;
use crate::reach::{
    outcome_columns, CampaignRecord, CampaignState, Claimed, ContactWayRecord, EnqueueBatch, Enqueued, OutboxRow,
    OutboxState, Outcome, ReachStore, StaffTask, Suppression, TaskState, TemplateRecord,
};
use crate::sqlite_reach::{decode_staff, encode_staff, parse_scope, CONTACT_WAY_COLUMNS};
use crate::{Result, StoreError};

/// Base of the advisory lock keys of reach writes ("SR" in the top bytes), plus the tenant id.
const REACH_LOCK: i64 = 0x5352_0000_0000_0000;

/// An outbox row, one table per message on PostgreSQL (SQLite's outbox is three tables,
/// sqlite_outbox.rs).
const OUTBOX_COLUMNS: &str = "outbox_id, msg_key, campaign_id, profile_id, channel, account, sender, scope, \
     recipient_kind, recipient_value, content, state, due_at, attempts, attempted_at, remote_id, error_code, \
     error_message, logged, updated_at";

/// The columns the guardrail ledger is read from.
const LEDGER_COLUMNS: &str = "outbox_id, profile_id, COALESCE(reserved_at, due_at), channel, scope, marketing, sender";

const CAMPAIGN_COLUMNS: &str = "campaign_id, name, spec, state, planned_at, planned, created_at, updated_at";
const TASK_COLUMNS: &str =
    "task_id, campaign_id, account, sender, state, recipients, delivered, created_at, deadline, \
     chased_at, reassigned_to, updated_at";

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} {value:?}"))
}

fn contact_way_from_row(r: &PgRow) -> Result<ContactWayRecord> {
    let state: String = r.try_get(0)?;
    let staff: String = r.try_get(4)?;
    Ok(ContactWayRecord {
        staff: decode_staff(&state, &staff)?,
        state,
        config_id: r.try_get(1)?,
        qr_code: r.try_get(2)?,
        account: r.try_get(3)?,
        campaign_id: r.try_get(5)?,
        remark: r.try_get(6)?,
        created_at: Millis(r.try_get(7)?),
    })
}

fn outbox_from_row(r: &PgRow) -> Result<OutboxRow> {
    let channel: String = r.try_get(4)?;
    let scope: String = r.try_get(7)?;
    let state: String = r.try_get(11)?;
    Ok(OutboxRow {
        id: r.try_get(0)?,
        key: r.try_get(1)?,
        campaign_id: r.try_get(2)?,
        profile_id: r.try_get::<i64, _>(3)? as ProfileId,
        channel: siyu_model::Channel::parse(&channel).ok_or_else(|| corrupt("channel", &channel))?,
        account: r.try_get(5)?,
        sender: r.try_get(6)?,
        scope: parse_scope(&scope).ok_or_else(|| corrupt("scope", &scope))?,
        recipient_kind: r.try_get(8)?,
        recipient_value: r.try_get(9)?,
        content: r.try_get(10)?,
        state: OutboxState::parse(&state).ok_or_else(|| corrupt("outbox state", &state))?,
        due_at: Millis(r.try_get(12)?),
        attempts: r.try_get::<i64, _>(13)? as u32,
        attempted_at: r.try_get::<Option<i64>, _>(14)?.map(Millis),
        remote_id: r.try_get(15)?,
        error_code: r.try_get(16)?,
        error_message: r.try_get(17)?,
        logged: r.try_get::<i64, _>(18)? != 0,
        updated_at: Millis(r.try_get(19)?),
    })
}

fn campaign_from_row(r: &PgRow) -> Result<CampaignRecord> {
    let state: String = r.try_get(3)?;
    Ok(CampaignRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        spec: r.try_get(2)?,
        state: CampaignState::parse(&state).ok_or_else(|| corrupt("campaign state", &state))?,
        planned_at: r.try_get::<Option<i64>, _>(4)?.map(Millis),
        planned: r.try_get::<i64, _>(5)? as u64,
        created_at: Millis(r.try_get(6)?),
        updated_at: Millis(r.try_get(7)?),
    })
}

fn task_from_row(r: &PgRow) -> Result<StaffTask> {
    let state: String = r.try_get(4)?;
    Ok(StaffTask {
        task_id: r.try_get(0)?,
        campaign_id: r.try_get(1)?,
        account: r.try_get(2)?,
        sender: r.try_get(3)?,
        state: TaskState::parse(&state).ok_or_else(|| corrupt("task state", &state))?,
        recipients: r.try_get::<i64, _>(5)? as u64,
        delivered: r.try_get::<i64, _>(6)? as u64,
        created_at: Millis(r.try_get(7)?),
        deadline: Millis(r.try_get(8)?),
        chased_at: r.try_get::<Option<i64>, _>(9)?.map(Millis),
        reassigned_to: r.try_get(10)?,
        updated_at: Millis(r.try_get(11)?),
    })
}

/// The tenant's ledger brought up to date: the cached one with the rows other processes wrote
/// since folded in, or loaded (ledger.rs).
async fn current_ledger(
    cached: &mut Option<TenantLedger>,
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    horizon: Millis,
) -> Result<TenantLedger> {
    let (mut ledger, from) = ledger::take(cached.take(), horizon);
    let rows = sqlx::query(&format!(
        "SELECT {LEDGER_COLUMNS} FROM outbox
         WHERE tenant_id = $1 AND outbox_id > $2 AND COALESCE(reserved_at, due_at) >= $3"
    ))
    .bind(tenant.0)
    .bind(ledger.through())
    .bind(from.0)
    .fetch_all(&mut *conn)
    .await?;
    let mut folded = Vec::with_capacity(rows.len());
    for r in &rows {
        let columns = LedgerColumns {
            outbox_id: r.try_get(0)?,
            profile_id: r.try_get(1)?,
            reserved_at: r.try_get(2)?,
            channel: r.try_get(3)?,
            scope: r.try_get(4)?,
            marketing: r.try_get(5)?,
            sender: r.try_get(6)?,
        };
        folded.push(LedgerRow::parse(columns).map_err(|(what, value)| corrupt(what, &value))?);
    }
    ledger.fold(folded);
    Ok(ledger)
}

impl PostgresStore {
    /// This process's cached ledger of one tenant, behind the tenant's own lock (so tenants queue
    /// in parallel; the advisory lock orders processes).
    fn ledger_slot(&self, tenant: TenantId) -> LedgerSlot {
        self.ledgers.lock().entry(tenant).or_default().clone()
    }

    /// Outcomes in one statement; `logged` when their events are in the log already.
    async fn record_outcomes(&self, tenant: TenantId, outcomes: &[(i64, Outcome)], logged: bool) -> Result<()> {
        let n = outcomes.len();
        let (mut ids, mut states, mut remotes, mut codes, mut messages, mut dues, mut owed) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (id, outcome) in outcomes {
            let (state, remote, code, message, due, left) = outcome_columns(outcome);
            ids.push(*id);
            states.push(state.as_str());
            remotes.push(remote);
            codes.push(code);
            messages.push(message);
            dues.push(due);
            owed.push(if logged { 1 } else { left });
        }
        sqlx::query(
            "UPDATE outbox o SET state = t.s, remote_id = COALESCE(t.r, o.remote_id), error_code = t.c,
                 error_message = t.m, due_at = COALESCE(t.d, o.due_at), lease_until = NULL, logged = t.l,
                 updated_at = $2
             FROM UNNEST($3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::BIGINT[], $9::BIGINT[])
                 AS t(id, s, r, c, m, d, l)
             WHERE o.tenant_id = $1 AND o.outbox_id = t.id",
        )
        .bind(tenant.0)
        .bind(Millis::now().0)
        .bind(&ids)
        .bind(&states)
        .bind(&remotes)
        .bind(&codes)
        .bind(&messages)
        .bind(&dues)
        .bind(&owed)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl ReachStore for PostgresStore {
    async fn create_template(&self, tenant: TenantId, name: &str, definition: &str) -> Result<TemplateRecord> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(REACH_LOCK + tenant.0).execute(&mut *tx).await?;
        let taken: Option<i64> = sqlx::query_scalar(
            "SELECT template_id FROM templates WHERE tenant_id = $1 AND name = $2 AND deleted_at IS NULL",
        )
        .bind(tenant.0)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Err(StoreError::NameTaken { kind: AudienceKind::Template, name: name.to_string() });
        }
        let id: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(template_id), 0) + 1 FROM templates WHERE tenant_id = $1")
                .bind(tenant.0)
                .fetch_one(&mut *tx)
                .await?;
        let now = Millis::now();
        sqlx::query(
            "INSERT INTO templates (tenant_id, template_id, name, definition, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(tenant.0)
        .bind(id)
        .bind(name)
        .bind(definition)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TemplateRecord {
            id,
            name: name.to_string(),
            definition: definition.to_string(),
            created_at: now,
            updated_at: now,
        })
    }

    async fn update_template(&self, tenant: TenantId, id: i64, definition: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE templates SET definition = $3, updated_at = $4
             WHERE tenant_id = $1 AND template_id = $2 AND deleted_at IS NULL",
        )
        .bind(tenant.0)
        .bind(id)
        .bind(definition)
        .bind(Millis::now().0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn templates(&self, tenant: TenantId) -> Result<Vec<TemplateRecord>> {
        let rows: Vec<(i64, String, String, i64, i64)> = sqlx::query_as(
            "SELECT template_id, name, definition, created_at, updated_at FROM templates
             WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY template_id",
        )
        .bind(tenant.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, definition, c, u)| TemplateRecord {
                id,
                name,
                definition,
                created_at: Millis(c),
                updated_at: Millis(u),
            })
            .collect())
    }

    async fn delete_template(&self, tenant: TenantId, id: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE templates SET deleted_at = $3 WHERE tenant_id = $1 AND template_id = $2 AND deleted_at IS NULL",
        )
        .bind(tenant.0)
        .bind(id)
        .bind(Millis::now().0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn create_campaign(
        &self,
        tenant: TenantId,
        name: &str,
        spec: &str,
        state: CampaignState,
    ) -> Result<CampaignRecord> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(REACH_LOCK + tenant.0).execute(&mut *tx).await?;
        let taken: Option<i64> =
            sqlx::query_scalar("SELECT campaign_id FROM campaigns WHERE tenant_id = $1 AND name = $2")
                .bind(tenant.0)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        if taken.is_some() {
            return Err(StoreError::NameTaken { kind: AudienceKind::Campaign, name: name.to_string() });
        }
        let id: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(campaign_id), 0) + 1 FROM campaigns WHERE tenant_id = $1")
                .bind(tenant.0)
                .fetch_one(&mut *tx)
                .await?;
        let now = Millis::now();
        sqlx::query(
            "INSERT INTO campaigns (tenant_id, campaign_id, name, spec, state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(tenant.0)
        .bind(id)
        .bind(name)
        .bind(spec)
        .bind(state.as_str())
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(CampaignRecord {
            id,
            name: name.to_string(),
            spec: spec.to_string(),
            state,
            planned_at: None,
            planned: 0,
            created_at: now,
            updated_at: now,
        })
    }

    async fn campaigns(&self, tenant: TenantId) -> Result<Vec<CampaignRecord>> {
        let rows =
            sqlx::query(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE tenant_id = $1 ORDER BY campaign_id"))
                .bind(tenant.0)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(campaign_from_row).collect()
    }

    async fn campaign(&self, tenant: TenantId, id: i64) -> Result<Option<CampaignRecord>> {
        let row =
            sqlx::query(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE tenant_id = $1 AND campaign_id = $2"))
                .bind(tenant.0)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(campaign_from_row).transpose()
    }

    async fn move_campaign(
        &self,
        tenant: TenantId,
        id: i64,
        from: &[CampaignState],
        to: CampaignState,
        planned: Option<u64>,
    ) -> Result<bool> {
        let from: Vec<String> = from.iter().map(|s| s.as_str().to_string()).collect();
        let now = Millis::now();
        let n = sqlx::query(
            "UPDATE campaigns SET state = $3, updated_at = $4, planned = COALESCE($5, planned),
                 planned_at = CASE WHEN $3 = 'planning' THEN $4 ELSE planned_at END
             WHERE tenant_id = $1 AND campaign_id = $2 AND state = ANY($6)",
        )
        .bind(tenant.0)
        .bind(id)
        .bind(to.as_str())
        .bind(now.0)
        .bind(planned.map(|p| p as i64))
        .bind(&from)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn record_holds(&self, tenant: TenantId, campaign_id: i64, holds: &[(ProfileId, String)]) -> Result<()> {
        for chunk in holds.chunks(10_000) {
            let profiles: Vec<i64> = chunk.iter().map(|(p, _)| i64::from(*p)).collect();
            let rules: Vec<&str> = chunk.iter().map(|(_, r)| r.as_str()).collect();
            sqlx::query(
                "INSERT INTO campaign_holds (tenant_id, campaign_id, profile_id, rule, at)
                 SELECT $1, $2, p, r, $5 FROM UNNEST($3::BIGINT[], $4::TEXT[]) AS t(p, r)
                 ON CONFLICT DO NOTHING",
            )
            .bind(tenant.0)
            .bind(campaign_id)
            .bind(&profiles)
            .bind(&rules)
            .bind(Millis::now().0)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    async fn hold_counts(&self, tenant: TenantId, campaign_id: i64) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT rule, COUNT(*) FROM campaign_holds WHERE tenant_id = $1 AND campaign_id = $2
             GROUP BY rule ORDER BY rule",
        )
        .bind(tenant.0)
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(r, n)| (r, n as u64)).collect())
    }

    async fn holds_for(&self, tenant: TenantId, campaign_id: i64, rule: &str) -> Result<Vec<ProfileId>> {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT profile_id FROM campaign_holds WHERE tenant_id = $1 AND campaign_id = $2 AND rule = $3
             ORDER BY profile_id",
        )
        .bind(tenant.0)
        .bind(campaign_id)
        .bind(rule)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|p| p as ProfileId).collect())
    }

    async fn enqueue(&self, tenant: TenantId, batch: EnqueueBatch) -> Result<Vec<Enqueued>> {
        let slot = self.ledger_slot(tenant);
        let mut cached = slot.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(REACH_LOCK + tenant.0).execute(&mut *tx).await?;
        let mut ledger = current_ledger(&mut cached, &mut tx, tenant, batch.guardrails.horizon(batch.at)).await?;
        let mut next_id: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(outbox_id), 0) + 1 FROM outbox WHERE tenant_id = $1")
                .bind(tenant.0)
                .fetch_one(&mut *tx)
                .await?;
        ledger.ready_for(&batch, next_id - 1);
        // A campaign with messages already is being resumed: its keys are looked up first.
        let resuming: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox WHERE tenant_id = $1 AND campaign_id = $2)")
                .bind(tenant.0)
                .bind(batch.campaign_id)
                .fetch_one(&mut *tx)
                .await?;
        let mut existing: std::collections::HashSet<String> = if resuming {
            let keys: Vec<&str> = batch.items.iter().map(|i| i.key.as_str()).collect();
            sqlx::query_scalar("SELECT msg_key FROM outbox WHERE tenant_id = $1 AND msg_key = ANY($2)")
                .bind(tenant.0)
                .bind(&keys)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect()
        } else {
            Default::default()
        };
        let now = Millis::now();
        let mut out = Vec::with_capacity(batch.items.len());
        let (mut ids, mut q_keys, mut q_profiles, mut q_kinds, mut q_values, mut q_contents, mut q_due) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut h_profiles, mut h_rules) = (vec![], vec![]);
        for item in &batch.items {
            if existing.contains(&item.key) {
                out.push(Enqueued::Duplicate);
                continue;
            }
            match ledger.judge(&batch, item) {
                Verdict::Hold { rule } => {
                    h_profiles.push(i64::from(item.profile_id));
                    h_rules.push(rule.clone());
                    out.push(Enqueued::Held { rule });
                }
                Verdict::Send { at } => {
                    // A key repeated later in the batch is a duplicate, as on SQLite.
                    existing.insert(item.key.clone());
                    ids.push(next_id);
                    next_id += 1;
                    q_keys.push(item.key.as_str());
                    q_profiles.push(i64::from(item.profile_id));
                    q_kinds.push(item.recipient_kind.as_str());
                    q_values.push(item.recipient_value.as_str());
                    q_contents.push(item.content.as_str());
                    q_due.push(at.0);
                    out.push(Enqueued::Queued { at });
                }
            }
        }
        if !ids.is_empty() {
            sqlx::query(
                "INSERT INTO outbox (tenant_id, outbox_id, msg_key, campaign_id, profile_id, channel, account, sender,
                     scope, recipient_kind, recipient_value, content, state, due_at, reserved_at, marketing, updated_at)
                 SELECT $1, id, k, $2, p, $3, $4, $5, $6, rk, rv, c, 'queued', d, d, $15, $7
                 FROM UNNEST($8::BIGINT[], $9::TEXT[], $10::BIGINT[], $11::TEXT[], $12::TEXT[], $13::TEXT[], $14::BIGINT[])
                     AS t(id, k, p, rk, rv, c, d)",
            )
            .bind(tenant.0)
            .bind(batch.campaign_id)
            .bind(batch.channel.as_str())
            .bind(&batch.account)
            .bind(&batch.sender)
            .bind(batch.scope.as_str())
            .bind(now.0)
            .bind(&ids)
            .bind(&q_keys)
            .bind(&q_profiles)
            .bind(&q_kinds)
            .bind(&q_values)
            .bind(&q_contents)
            .bind(&q_due)
            .bind(i64::from(batch.purpose == Purpose::Marketing))
            .execute(&mut *tx)
            .await?;
        }
        if !h_profiles.is_empty() {
            sqlx::query(
                "INSERT INTO campaign_holds (tenant_id, campaign_id, profile_id, rule, at)
                 SELECT $1, $2, p, r, $5 FROM UNNEST($3::BIGINT[], $4::TEXT[]) AS t(p, r)
                 ON CONFLICT DO NOTHING",
            )
            .bind(tenant.0)
            .bind(batch.campaign_id)
            .bind(&h_profiles)
            .bind(&h_rules)
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        ledger.seen_through(next_id - 1);
        *cached = Some(ledger);
        Ok(out)
    }

    async fn ledgers(&self, tenant: TenantId, horizon: Millis, profiles: &[ProfileId]) -> Result<Vec<Vec<Sent>>> {
        let slot = self.ledger_slot(tenant);
        let mut cached = slot.lock().await;
        let mut conn = self.pool.acquire().await?;
        let ledger = current_ledger(&mut cached, &mut conn, tenant, horizon).await?;
        let out = profiles.iter().map(|p| ledger.get(*p)).collect();
        *cached = Some(ledger);
        Ok(out)
    }

    async fn claim(&self, tenant: TenantId, now: Millis, lease_until: Millis, limit: usize) -> Result<Vec<Claimed>> {
        let columns: String =
            OUTBOX_COLUMNS.split(", ").map(|c| format!("o.{}", c.trim())).collect::<Vec<_>>().join(", ");
        // Lapsed leases first, then due messages, in one transaction.
        let mut tx = self.pool.begin().await?;
        let mut claimed = Vec::with_capacity(limit.min(100_000));
        for in_doubt in [true, false] {
            let left = limit - claimed.len();
            if left == 0 {
                break;
            }
            // An in-doubt message keeps the time of the attempt whose outcome was lost.
            let (attempted_at, due) = if in_doubt {
                ("o.attempted_at", "state = 'attempting' AND lease_until <= $2")
            } else {
                ("$2", "state = 'queued' AND due_at <= $2")
            };
            let rows = sqlx::query(&format!(
                "WITH picked AS (
                     SELECT outbox_id FROM outbox WHERE tenant_id = $1 AND {due}
                     ORDER BY due_at, outbox_id LIMIT $4 FOR UPDATE SKIP LOCKED)
                 UPDATE outbox o SET state = 'attempting', attempts = o.attempts + 1, lease_until = $3,
                     updated_at = $2, attempted_at = {attempted_at}
                 FROM picked p WHERE o.tenant_id = $1 AND o.outbox_id = p.outbox_id
                 RETURNING {columns}"
            ))
            .bind(tenant.0)
            .bind(now.0)
            .bind(lease_until.0)
            .bind(left as i64)
            .fetch_all(&mut *tx)
            .await?;
            for r in &rows {
                claimed.push(Claimed { row: outbox_from_row(r)?, in_doubt });
            }
        }
        tx.commit().await?;
        claimed.sort_by_key(|c| (!c.in_doubt, c.row.due_at, c.row.id));
        Ok(claimed)
    }

    async fn complete(&self, tenant: TenantId, outcomes: &[(i64, Outcome)]) -> Result<()> {
        self.record_outcomes(tenant, outcomes, false).await
    }

    async fn complete_logged(&self, tenant: TenantId, outcomes: &[(i64, Outcome)]) -> Result<()> {
        self.record_outcomes(tenant, outcomes, true).await
    }

    async fn unlogged(&self, tenant: TenantId, limit: usize) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox
             WHERE tenant_id = $1 AND logged = 0 AND state IN ('sent', 'task', 'delivered', 'failed')
             ORDER BY outbox_id LIMIT $2"
        ))
        .bind(tenant.0)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn mark_logged(&self, tenant: TenantId, ids: &[i64]) -> Result<()> {
        sqlx::query("UPDATE outbox SET logged = 1 WHERE tenant_id = $1 AND outbox_id = ANY($2)")
            .bind(tenant.0)
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn outbox_counts(&self, tenant: TenantId, campaign_id: i64) -> Result<Vec<(OutboxState, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM outbox WHERE tenant_id = $1 AND campaign_id = $2 GROUP BY state",
        )
        .bind(tenant.0)
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(s, n)| OutboxState::parse(&s).map(|s| (s, n as u64)).ok_or_else(|| corrupt("outbox state", &s)))
            .collect()
    }

    async fn failure_counts(&self, tenant: TenantId, campaign_id: i64) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT error_code, COUNT(*) FROM outbox WHERE tenant_id = $1 AND campaign_id = $2 AND state = 'failed'
             GROUP BY error_code ORDER BY error_code",
        )
        .bind(tenant.0)
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(c, n)| (c.unwrap_or_default(), n as u64)).collect())
    }

    async fn outbox_rows(
        &self,
        tenant: TenantId,
        campaign_id: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE tenant_id = $1 AND campaign_id = $2 AND outbox_id > $3
             ORDER BY outbox_id LIMIT $4"
        ))
        .bind(tenant.0)
        .bind(campaign_id)
        .bind(after_id)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn cancel_queued(&self, tenant: TenantId, campaign_id: i64) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE outbox SET state = 'cancelled', logged = 1, updated_at = $3
             WHERE tenant_id = $1 AND campaign_id = $2 AND state = 'queued'",
        )
        .bind(tenant.0)
        .bind(campaign_id)
        .bind(Millis::now().0)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn outbox_pending(&self, tenant: TenantId, campaign_id: Option<i64>) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE tenant_id = $1 AND ($2::BIGINT IS NULL OR campaign_id = $2)
                 AND state IN ('queued', 'attempting', 'task')",
        )
        .bind(tenant.0)
        .bind(campaign_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn has_pending(&self, tenant: TenantId, campaign_id: i64) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE tenant_id = $1 AND campaign_id = $2
                 AND state IN ('queued', 'attempting', 'task'))",
        )
        .bind(tenant.0)
        .bind(campaign_id)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn task_rows(&self, tenant: TenantId, task_id: &str) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE tenant_id = $1 AND remote_id = $2 AND state = 'task'
             ORDER BY outbox_id"
        ))
        .bind(tenant.0)
        .bind(task_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn upsert_task(&self, tenant: TenantId, t: &StaffTask) -> Result<()> {
        sqlx::query(
            "INSERT INTO staff_tasks_out (tenant_id, task_id, campaign_id, account, sender, state, recipients,
                 delivered, created_at, deadline, chased_at, reassigned_to, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (tenant_id, task_id) DO UPDATE SET state = excluded.state, sender = excluded.sender,
                 recipients = excluded.recipients, delivered = excluded.delivered, deadline = excluded.deadline,
                 chased_at = excluded.chased_at, reassigned_to = excluded.reassigned_to,
                 updated_at = excluded.updated_at",
        )
        .bind(tenant.0)
        .bind(&t.task_id)
        .bind(t.campaign_id)
        .bind(&t.account)
        .bind(&t.sender)
        .bind(t.state.as_str())
        .bind(t.recipients as i64)
        .bind(t.delivered as i64)
        .bind(t.created_at.0)
        .bind(t.deadline.0)
        .bind(t.chased_at.map(|m| m.0))
        .bind(&t.reassigned_to)
        .bind(t.updated_at.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn tasks(&self, tenant: TenantId, campaign_id: Option<i64>) -> Result<Vec<StaffTask>> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM staff_tasks_out
             WHERE tenant_id = $1 AND ($2::BIGINT IS NULL OR campaign_id = $2) ORDER BY created_at, task_id"
        ))
        .bind(tenant.0)
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    async fn add_suppressions(&self, tenant: TenantId, entries: &[Suppression]) -> Result<u64> {
        let mut added = 0;
        let mut tx = self.pool.begin().await?;
        for e in entries {
            added += sqlx::query(
                "INSERT INTO suppressions (tenant_id, list, identity_kind, identity_value, reason, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(tenant.0)
            .bind(&e.list)
            .bind(&e.identity_kind)
            .bind(&e.identity_value)
            .bind(&e.reason)
            .bind(e.created_at.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn remove_suppression(&self, tenant: TenantId, list: &str, kind: &str, value: &str) -> Result<bool> {
        let n = sqlx::query(
            "DELETE FROM suppressions WHERE tenant_id = $1 AND list = $2 AND identity_kind = $3
                 AND identity_value = $4",
        )
        .bind(tenant.0)
        .bind(list)
        .bind(kind)
        .bind(value)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn suppressions(&self, tenant: TenantId) -> Result<Vec<Suppression>> {
        let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT list, identity_kind, identity_value, reason, created_at FROM suppressions
             WHERE tenant_id = $1 ORDER BY list, identity_kind, identity_value",
        )
        .bind(tenant.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(list, identity_kind, identity_value, reason, at)| Suppression {
                list,
                identity_kind,
                identity_value,
                reason,
                created_at: Millis(at),
            })
            .collect())
    }

    async fn create_contact_way(&self, tenant: TenantId, way: &ContactWayRecord) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO contact_ways (tenant_id, state, config_id, qr_code, account, staff, campaign_id, remark,
                 created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.0)
        .bind(&way.state)
        .bind(&way.config_id)
        .bind(&way.qr_code)
        .bind(&way.account)
        .bind(encode_staff(&way.staff))
        .bind(way.campaign_id)
        .bind(&way.remark)
        .bind(way.created_at.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn contact_ways(&self, tenant: TenantId) -> Result<Vec<ContactWayRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {CONTACT_WAY_COLUMNS} FROM contact_ways WHERE tenant_id = $1 ORDER BY created_at, state"
        ))
        .bind(tenant.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(contact_way_from_row).collect()
    }

    async fn contact_way(&self, tenant: TenantId, state: &str) -> Result<Option<ContactWayRecord>> {
        let row =
            sqlx::query(&format!("SELECT {CONTACT_WAY_COLUMNS} FROM contact_ways WHERE tenant_id = $1 AND state = $2"))
                .bind(tenant.0)
                .bind(state)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(contact_way_from_row).transpose()
    }
}
