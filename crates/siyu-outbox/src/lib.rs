//! The outbox dispatcher: the one loop that makes messages leave. On each tick, per tenant, it
//!
//! 1. plans campaigns whose time has come (and resumes plans a crash interrupted),
//! 2. claims due messages from the outbox (a lease marks them `attempting`),
//! 3. settles messages *in doubt* — claimed before, lease lapsed, no outcome (a crash between the
//!    attempt and its record): a connector that deduplicates by key gets them again; one that
//!    cannot is asked whether they took effect, so nothing is sent twice,
//! 4. hands each account's messages to its connector, records every outcome (retries with
//!    exponential backoff and jitter, permanent failures with the connector's error), and writes
//!    the outcome events to the log,
//! 5. follows staff-confirmed tasks (WeCom mass sends): delivered, chased past the deadline,
//!    expired at the second one.
//!
//! Exactly once is the product of three things: the outbox row is durable before any attempt,
//! the attempt is recorded (`attempting`) before the remote call, and the idempotency key travels
//! with the message (or the remote side is asked). See ARCHITECTURE.md.

mod connectors;
mod metrics;
pub mod wecom_ops;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use siyu_connect::{Accepted, Connector, Outbound, SendError, SendKind, TaskRecipientStatus};
use siyu_engine::Engine;
use siyu_model::reach::{MessageContent, SendAccount, SendScope};
use siyu_model::{Identity, Millis, TenantId};
use siyu_store::{Claimed, OutboxRow, Outcome, StaffTask, TaskState};
use tokio_util::sync::CancellationToken;

pub use connectors::build_connector;
pub use metrics::OutboxMetrics;

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// How long to wait between ticks when there is nothing to do.
    pub idle: Duration,
    /// How long a claim holds a message; past it, an unfinished attempt is in doubt.
    pub lease: Duration,
    /// Messages claimed per round; a tick runs up to `rounds_per_tick` rounds while they come
    /// back full.
    pub batch: usize,
    pub rounds_per_tick: usize,
    /// Attempts before a retryable error becomes a failure.
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How often staff-confirmed tasks are asked about.
    pub task_poll: Duration,
    /// Hours a staff member has to confirm a task (a campaign may say otherwise).
    pub confirm_hours: u32,
    /// Where log connectors write when their account names no file.
    pub data_dir: PathBuf,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            idle: Duration::from_millis(250),
            lease: Duration::from_secs(30),
            batch: 1_000,
            rounds_per_tick: 4,
            max_attempts: 8,
            first_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(3_600),
            task_poll: Duration::from_secs(60),
            confirm_hours: 24,
            data_dir: PathBuf::from("."),
        }
    }
}

/// What one tick did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tick {
    pub planned: u64,
    pub claimed: u64,
    pub in_doubt: u64,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub delivered: u64,
    /// Staff tasks created this round: task id → (campaign, account, sender).
    pub tasks: HashMap<String, (i64, String, Option<String>)>,
}

/// A connector built for an account, with the settings it was built from (rebuilt when they change).
type CachedConnector = (SendAccount, Arc<dyn Connector>);

pub struct Dispatcher {
    engine: Arc<Engine>,
    config: DispatcherConfig,
    connectors: Mutex<HashMap<(TenantId, String), CachedConnector>>,
    last_task_poll: Mutex<HashMap<TenantId, Millis>>,
    /// Tenants whose outcomes recorded before a crash are back in the log: a repair each runs
    /// once per process, since every outcome recorded since went to the log first.
    repaired: Mutex<std::collections::HashSet<TenantId>>,
    metrics: OutboxMetrics,
}

impl Dispatcher {
    pub fn new(engine: Arc<Engine>, config: DispatcherConfig) -> Arc<Dispatcher> {
        let metrics = OutboxMetrics::register(&engine.metrics);
        Arc::new(Dispatcher {
            engine,
            config,
            connectors: Mutex::new(HashMap::new()),
            last_task_poll: Mutex::new(HashMap::new()),
            repaired: Mutex::new(Default::default()),
            metrics,
        })
    }

    /// Runs until `stop` is cancelled; errors of one tick are logged and the loop goes on.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let mut busy = false;
            for tenant in self.engine.tenant_ids() {
                match self.tick(tenant).await {
                    Ok(tick) => busy |= tick.claimed > 0 || tick.planned > 0,
                    Err(e) => tracing::warn!(tenant = %tenant, error = %e, "outbox tick failed"),
                }
            }
            if !busy {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(self.config.idle) => {}
                }
            }
        }
    }

    /// One round for one tenant.
    pub async fn tick(&self, tenant: TenantId) -> anyhow::Result<Tick> {
        let mut tick = Tick::default();
        let now = Millis::now();
        for id in self.engine.due_campaigns(tenant, now).await? {
            let plan = self.engine.plan_campaign(tenant, id).await?;
            tracing::info!(tenant = %tenant, campaign = id, queued = plan.queued, held = plan.held, holdout = plan.holdout, resumed = plan.resumed, "campaign planned");
            tick.planned += 1;
        }
        // Outcomes recorded before a crash (by an older version) but not yet in the log.
        if !self.repaired.lock().contains(&tenant) {
            self.engine.log_outcomes(tenant).await?;
            self.repaired.lock().insert(tenant);
        }
        // Rounds of up to `batch` messages, pipelined over the two halves of the work: the store
        // claims the next round while the connector sends this one, and records this round's
        // outcomes while the next one is sent. Outcomes are recorded in order, one round at a
        // time, and nothing is left in flight when the tick returns.
        let claim = |engine: Arc<Engine>, batch: usize, lease: Duration| {
            tokio::spawn(async move {
                let now = Millis::now();
                engine.claim_outbox(tenant, now, Millis(now.0 + lease.as_millis() as i64), batch).await
            })
        };
        let (batch, lease) = (self.config.batch, self.config.lease);
        let mut next = Some(claim(self.engine.clone(), batch, lease));
        let mut recording: Option<tokio::task::JoinHandle<siyu_engine::Result<()>>> = None;
        let mut rounds = 0;
        while let Some(claiming) = next.take() {
            let claimed = claiming.await??;
            rounds += 1;
            if claimed.len() == batch && rounds < self.config.rounds_per_tick {
                next = Some(claim(self.engine.clone(), batch, lease));
            }
            if claimed.is_empty() {
                break;
            }
            tick.claimed += claimed.len() as u64;
            let outcomes = self.deliver_round(tenant, claimed, &mut tick).await;
            if let Some(previous) = recording.take() {
                previous.await??;
            }
            if !outcomes.is_empty() {
                let engine = self.engine.clone();
                recording = Some(tokio::spawn(async move { engine.complete_outbox(tenant, &outcomes).await }));
            }
        }
        if let Some(last) = recording {
            last.await??;
        }
        self.record_tasks(tenant, &tick).await?;
        self.follow_tasks(tenant, &mut tick).await?;
        self.engine.finish_campaigns(tenant).await?;
        Ok(tick)
    }

    /// Sends one round's claimed messages, account by account; returns their outcomes.
    async fn deliver_round(
        &self,
        tenant: TenantId,
        claimed: Vec<Claimed>,
        tick: &mut Tick,
    ) -> Vec<(OutboxRow, Outcome)> {
        let mut by_account: HashMap<String, Vec<Claimed>> = HashMap::new();
        for c in claimed {
            by_account.entry(c.row.account.clone()).or_default().push(c);
        }
        let mut outcomes = Vec::new();
        for (account, rows) in by_account {
            let connector = match self.connector(tenant, &account) {
                Ok(c) => c,
                Err(e) => {
                    let message = format!("{e:#}");
                    for c in &rows {
                        outcomes.push((
                            c.row.clone(),
                            Outcome::Failed { code: "no_connector".into(), message: message.clone() },
                        ));
                    }
                    tick.failed += rows.len() as u64;
                    continue;
                }
            };
            self.deliver(connector, rows, &mut outcomes, tick).await;
        }
        outcomes
    }

    fn connector(&self, tenant: TenantId, account: &str) -> anyhow::Result<Arc<dyn Connector>> {
        let current = self
            .engine
            .send_account(tenant, account)?
            .ok_or_else(|| anyhow::anyhow!("no send account {account:?} in the tenant's settings"))?;
        let mut cache = self.connectors.lock();
        if let Some((cached, connector)) = cache.get(&(tenant, account.to_string())) {
            if *cached == current {
                return Ok(connector.clone());
            }
        }
        let connector = build_connector(tenant, account, &current, &self.config.data_dir)?;
        cache.insert((tenant, account.to_string()), (current, connector.clone()));
        Ok(connector)
    }

    async fn deliver(
        &self,
        connector: Arc<dyn Connector>,
        rows: Vec<Claimed>,
        outcomes: &mut Vec<(OutboxRow, Outcome)>,
        tick: &mut Tick,
    ) {
        let mut to_send: Vec<(OutboxRow, Outbound)> = Vec::with_capacity(rows.len());
        let mut doubtful: Vec<(OutboxRow, Outbound)> = Vec::new();
        for Claimed { row, in_doubt } in rows {
            let outbound = match outbound_of(&row) {
                Ok(o) => o,
                Err(message) => {
                    outcomes.push((row, Outcome::Failed { code: "bad_message".into(), message }));
                    tick.failed += 1;
                    continue;
                }
            };
            if in_doubt && !connector.deduplicates() {
                doubtful.push((row, outbound));
            } else {
                to_send.push((row, outbound));
            }
        }
        tick.in_doubt += doubtful.len() as u64;
        // In-doubt messages, grouped by the attempt they were part of.
        let mut groups: HashMap<i64, Vec<(OutboxRow, Outbound)>> = HashMap::new();
        for (row, outbound) in doubtful {
            groups.entry(row.attempted_at.map_or(0, |t| t.0 / 1000)).or_default().push((row, outbound));
        }
        for (attempted_at, group) in groups {
            let batch: Vec<Outbound> = group.iter().map(|(_, o)| o.clone()).collect();
            match connector.find_accepted(&batch, attempted_at - 1).await {
                Ok(found) => {
                    for ((row, outbound), accepted) in group.into_iter().zip(found) {
                        match accepted {
                            Some(accepted) => {
                                self.metrics.reconciled.inc();
                                let outcome = self.accepted(&row, accepted, tick);
                                outcomes.push((row, outcome));
                            }
                            None => to_send.push((row, outbound)),
                        }
                    }
                }
                Err(e) => {
                    // Neither deduplicated nor answerable: sending again could double it.
                    for (row, _) in group {
                        let outcome = self.retry_or_fail(&row, &e, tick);
                        outcomes.push((row, outcome));
                    }
                }
            }
        }
        if to_send.is_empty() {
            return;
        }
        let batch: Vec<Outbound> = to_send.iter().map(|(_, o)| o.clone()).collect();
        let results = connector.send(&batch).await;
        for ((row, _), result) in to_send.into_iter().zip(results) {
            let outcome = match result {
                Ok(accepted) => self.accepted(&row, accepted, tick),
                Err(e) => {
                    self.metrics
                        .errors
                        .get_or_create(&metrics::ErrorLabels {
                            connector: e.connector.to_string(),
                            code: e.code.clone(),
                        })
                        .inc();
                    self.retry_or_fail(&row, &e, tick)
                }
            };
            outcomes.push((row, outcome));
        }
    }

    fn accepted(&self, row: &OutboxRow, accepted: Accepted, tick: &mut Tick) -> Outcome {
        tick.sent += 1;
        self.metrics.sent.inc();
        match accepted {
            Accepted::Sent { remote_id } => Outcome::Sent { remote_id },
            Accepted::Task { task_id } => {
                tick.tasks.insert(task_id.clone(), (row.campaign_id, row.account.clone(), row.sender.clone()));
                Outcome::Task { task_id }
            }
        }
    }

    /// Records the staff tasks this round's sends created (once their messages are recorded, so
    /// the recipients are counted from the outbox and a repeat counts nothing twice).
    async fn record_tasks(&self, tenant: TenantId, tick: &Tick) -> anyhow::Result<()> {
        let now = Millis::now();
        for (task_id, (campaign_id, account, sender)) in &tick.tasks {
            let existing = self.engine.staff_tasks(tenant, Some(*campaign_id)).await?;
            let existing = existing.into_iter().find(|t| &t.task_id == task_id);
            let recipients = self.engine.task_rows(tenant, task_id).await?.len() as u64;
            let hours = match self.engine.campaign(tenant, *campaign_id).await {
                Ok(c) => c.spec.confirm_hours.unwrap_or(self.config.confirm_hours),
                Err(_) => self.config.confirm_hours,
            };
            let task = match existing {
                Some(old) => StaffTask { recipients: old.recipients.max(recipients), updated_at: now, ..old },
                None => StaffTask {
                    task_id: task_id.clone(),
                    campaign_id: *campaign_id,
                    account: account.clone(),
                    sender: sender.clone().unwrap_or_default(),
                    // The sender is named in the task itself: created and assigned at once.
                    state: TaskState::Assigned,
                    recipients,
                    delivered: 0,
                    created_at: now,
                    deadline: Millis(now.0 + i64::from(hours) * 3_600_000),
                    chased_at: None,
                    reassigned_to: None,
                    updated_at: now,
                },
            };
            self.engine.upsert_task(tenant, &task).await?;
        }
        Ok(())
    }

    fn retry_or_fail(&self, row: &OutboxRow, e: &SendError, tick: &mut Tick) -> Outcome {
        if !e.retryable || row.attempts >= self.config.max_attempts {
            tick.failed += 1;
            self.metrics.failed.inc();
            return Outcome::Failed { code: e.code.clone(), message: e.message.clone() };
        }
        tick.retried += 1;
        self.metrics.retried.inc();
        let wait = e.retry_after.unwrap_or_else(|| self.backoff(row.attempts));
        Outcome::Retry {
            at: Millis(Millis::now().0 + wait.as_millis() as i64),
            code: e.code.clone(),
            message: e.message.clone(),
        }
    }

    /// Exponential backoff with full jitter: a random wait up to `first · 2^(attempts-1)`.
    fn backoff(&self, attempts: u32) -> Duration {
        let cap = self
            .config
            .first_backoff
            .saturating_mul(1 << attempts.saturating_sub(1).min(20))
            .min(self.config.max_backoff);
        let ms = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
    }

    /// Asks about open staff tasks, at most every `task_poll`.
    async fn follow_tasks(&self, tenant: TenantId, tick: &mut Tick) -> anyhow::Result<()> {
        let now = Millis::now();
        {
            let mut last = self.last_task_poll.lock();
            let due = last.get(&tenant).is_none_or(|t| now.0 - t.0 >= self.config.task_poll.as_millis() as i64);
            if !due {
                return Ok(());
            }
            last.insert(tenant, now);
        }
        let tasks = self.engine.staff_tasks(tenant, None).await?;
        for mut task in tasks
            .into_iter()
            .filter(|t| matches!(t.state, TaskState::Created | TaskState::Assigned | TaskState::Confirmed))
        {
            let connector = match self.connector(tenant, &task.account) {
                Ok(c) => c,
                Err(_) => continue,
            };
            let sender = task.sender.clone();
            let statuses = match connector.task_results(&task.task_id, &sender).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(tenant = %tenant, task = %task.task_id, error = %e, "task results failed");
                    continue;
                }
            };
            let rows = self.engine.task_rows(tenant, &task.task_id).await?;
            let status: HashMap<String, TaskRecipientStatus> = statuses.into_iter().collect();
            let mut outcomes = Vec::new();
            let mut open = 0;
            for row in &rows {
                match status.get(&row.recipient_value) {
                    Some(TaskRecipientStatus::Delivered) => outcomes.push((row.clone(), Outcome::Delivered)),
                    Some(TaskRecipientStatus::NotContact) => outcomes.push((
                        row.clone(),
                        Outcome::Failed { code: "not_contact".into(), message: "no longer a contact".into() },
                    )),
                    Some(TaskRecipientStatus::QuotaReached) => outcomes.push((
                        row.clone(),
                        Outcome::Failed {
                            code: "platform_quota".into(),
                            message: "already received a mass message".into(),
                        },
                    )),
                    _ => open += 1,
                }
            }
            let delivered = outcomes.iter().filter(|(_, o)| *o == Outcome::Delivered).count() as u64;
            tick.delivered += delivered;
            task.delivered += delivered;
            if !outcomes.is_empty() && open < rows.len() {
                task.state = TaskState::Confirmed;
            }
            if open == 0 {
                task.state = TaskState::Delivered;
            } else if now > task.deadline {
                let span = task.deadline.0 - task.created_at.0;
                if task.chased_at.is_none() {
                    // Chased once: WeCom reminds the sender, the deadline moves on by the same
                    // span, and the chase is on record.
                    tracing::info!(tenant = %tenant, task = %task.task_id, sender = %sender, "staff task unconfirmed past its deadline: chased");
                    if let Err(e) = connector.remind_task(&task.task_id).await {
                        tracing::warn!(tenant = %tenant, task = %task.task_id, error = %e, "reminding the sender failed");
                    }
                    task.chased_at = Some(now);
                    task.deadline = Millis(now.0 + span);
                } else {
                    task.state = TaskState::Expired;
                    let unsent: Vec<&OutboxRow> = rows
                        .iter()
                        .filter(|r| !status.get(&r.recipient_value).is_some_and(|s| *s != TaskRecipientStatus::Unsent))
                        .collect();
                    let reassigned = match self.reassignee(tenant, &task).await? {
                        Some(to) if !unsent.is_empty() => {
                            self.reassign(tenant, &connector, &task, &to, &unsent, Millis(now.0 + span), &mut outcomes)
                                .await
                        }
                        _ => None,
                    };
                    if let Some(to) = reassigned {
                        task.reassigned_to = Some(to);
                    } else {
                        for row in unsent {
                            outcomes.push((
                                row.clone(),
                                Outcome::Failed {
                                    code: "task_expired".into(),
                                    message: format!("{sender} did not confirm"),
                                },
                            ));
                        }
                    }
                }
            }
            task.updated_at = now;
            self.engine.upsert_task(tenant, &task).await?;
            if !outcomes.is_empty() {
                self.engine.complete_outbox(tenant, &outcomes).await?;
            }
        }
        Ok(())
    }
}

impl Dispatcher {
    /// Who an expired task goes to: a task of the campaign's own sender is reassigned once, to
    /// the first other staff member of the send account (`staff`); a reassigned one is not.
    async fn reassignee(&self, tenant: TenantId, task: &StaffTask) -> anyhow::Result<Option<String>> {
        let Some(account) = self.engine.send_account(tenant, &task.account)? else { return Ok(None) };
        let original = match self.engine.campaign(tenant, task.campaign_id).await {
            Ok(campaign) => campaign.spec.sender,
            Err(_) => None,
        };
        if original.as_deref() != Some(task.sender.as_str()) {
            return Ok(None);
        }
        Ok(account.staff.into_iter().find(|s| *s != task.sender))
    }

    /// Stops the task and sends its unconfirmed recipients as new tasks of `to` (their outbox
    /// rows follow the new task ids). Answers `to` once done; `None` when the task could not be
    /// stopped, so it expires as if nobody else could take it.
    #[allow(clippy::too_many_arguments)]
    async fn reassign(
        &self,
        tenant: TenantId,
        connector: &Arc<dyn Connector>,
        task: &StaffTask,
        to: &str,
        unsent: &[&OutboxRow],
        deadline: Millis,
        outcomes: &mut Vec<(OutboxRow, Outcome)>,
    ) -> Option<String> {
        if let Err(e) = connector.cancel_task(&task.task_id).await {
            tracing::warn!(tenant = %tenant, task = %task.task_id, error = %e, "stopping the task failed: it expires");
            return None;
        }
        let mut batch = Vec::with_capacity(unsent.len());
        let mut sendable = Vec::with_capacity(unsent.len());
        for row in unsent {
            match outbound_of(row) {
                Ok(mut outbound) => {
                    outbound.sender = Some(to.to_string());
                    batch.push(outbound);
                    sendable.push(*row);
                }
                Err(message) => {
                    outcomes.push(((*row).clone(), Outcome::Failed { code: "bad_message".into(), message }))
                }
            }
        }
        let now = Millis::now();
        let mut created: HashMap<String, u64> = HashMap::new();
        for (row, result) in sendable.into_iter().zip(connector.send(&batch).await) {
            let outcome = match result {
                Ok(Accepted::Task { task_id }) => {
                    *created.entry(task_id.clone()).or_default() += 1;
                    Outcome::Task { task_id }
                }
                Ok(Accepted::Sent { remote_id }) => Outcome::Sent { remote_id },
                Err(e) => Outcome::Failed { code: e.code.clone(), message: e.message.clone() },
            };
            outcomes.push((row.clone(), outcome));
        }
        for (task_id, recipients) in created {
            tracing::info!(tenant = %tenant, from = %task.task_id, to = %task_id, staff = %to, recipients, "staff task reassigned");
            let new = StaffTask {
                task_id,
                campaign_id: task.campaign_id,
                account: task.account.clone(),
                sender: to.to_string(),
                state: TaskState::Assigned,
                recipients,
                delivered: 0,
                created_at: now,
                deadline,
                chased_at: None,
                reassigned_to: None,
                updated_at: now,
            };
            if let Err(e) = self.engine.upsert_task(tenant, &new).await {
                tracing::warn!(tenant = %tenant, task = %new.task_id, error = %e, "recording the reassigned task failed");
            }
        }
        Some(to.to_string())
    }
}

fn outbound_of(row: &OutboxRow) -> Result<Outbound, String> {
    let content: MessageContent =
        serde_json::from_str(&row.content).map_err(|e| format!("message {} has no readable content: {e}", row.key))?;
    let recipient = Identity::parse(&row.recipient_kind, &row.recipient_value)
        .map_err(|e| format!("message {} has no valid recipient: {e}", row.key))?;
    Ok(Outbound {
        key: row.key.clone(),
        channel: row.channel,
        account: row.account.clone(),
        sender: row.sender.clone(),
        recipient,
        content,
        kind: match row.scope {
            SendScope::Mass => SendKind::Mass,
            SendScope::Direct => SendKind::Direct,
            // A welcome message needs the add callback's code, carried in the message's key.
            SendScope::Welcome => {
                SendKind::Welcome { welcome_code: row.key.rsplit(':').next().unwrap_or_default().to_string() }
            }
        },
    })
}
