//! The durable records of reach (issue 11): templates, campaigns, the outbox, the guardrail
//! ledger, suppression lists, staff-confirmed tasks and WeCom contact ways.
//!
//! The outbox is the heart: a message is a row before it is attempted, keyed by an idempotency
//! key; a claim marks it `attempting` with a lease, so a crash leaves it *in doubt* and the next
//! claim says so. A person's guardrail ledger is their messages in the outbox (ledger.rs, kept in
//! memory); a send is judged and queued in one transaction under the tenant's write lock, with the
//! rows other processes wrote folded in first, which is how concurrent senders — tasks of one
//! process or several `siyu serve` on one PostgreSQL — never exceed a cap.

use std::sync::Arc;

use async_trait::async_trait;
use siyu_model::reach::template::Purpose;
use siyu_model::reach::{Guardrails, PersonReach, SendRequest, SendScope, Sent, Verdict};
use siyu_model::{Channel, Millis, ProfileId, TenantId};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    pub id: i64,
    pub name: String,
    /// The definition (siyu_model::reach::TemplateDef) as JSON.
    pub definition: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignRecord {
    pub id: i64,
    pub name: String,
    /// The campaign as asked for (siyu_model::reach::CampaignSpec) as JSON.
    pub spec: String,
    pub state: CampaignState,
    pub planned_at: Option<Millis>,
    /// Messages queued when planning ended.
    pub planned: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A campaign's life: `scheduled` until its time, `planning` while recipients are judged and
/// queued, `sending` until every message has an outcome, then `done`; `cancelled` at any point
/// before `done` stops what was not attempted yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CampaignState {
    Scheduled,
    Planning,
    Sending,
    Done,
    Cancelled,
}

impl CampaignState {
    pub const ALL: [CampaignState; 5] = [
        CampaignState::Scheduled,
        CampaignState::Planning,
        CampaignState::Sending,
        CampaignState::Done,
        CampaignState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Scheduled => "scheduled",
            CampaignState::Planning => "planning",
            CampaignState::Sending => "sending",
            CampaignState::Done => "done",
            CampaignState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<CampaignState> {
        CampaignState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Where a message is in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxState {
    /// Waiting for its due time (or for a retry).
    Queued,
    /// Claimed by a dispatcher; if its lease runs out the attempt's outcome is unknown.
    Attempting,
    /// Accepted by the channel.
    Sent,
    /// Turned into a task a staff member confirms; `remote_id` is the task.
    Task,
    /// The channel reported it delivered (or the staff member's confirmation went out).
    Delivered,
    /// Given up: a permanent error, too many attempts, or the task expired.
    Failed,
    /// Its campaign was cancelled before it was attempted.
    Cancelled,
}

impl OutboxState {
    pub const ALL: [OutboxState; 7] = [
        OutboxState::Queued,
        OutboxState::Attempting,
        OutboxState::Sent,
        OutboxState::Task,
        OutboxState::Delivered,
        OutboxState::Failed,
        OutboxState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Queued => "queued",
            OutboxState::Attempting => "attempting",
            OutboxState::Sent => "sent",
            OutboxState::Task => "task",
            OutboxState::Delivered => "delivered",
            OutboxState::Failed => "failed",
            OutboxState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<OutboxState> {
        OutboxState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub key: String,
    pub campaign_id: i64,
    pub profile_id: ProfileId,
    pub channel: Channel,
    pub account: String,
    pub sender: Option<String>,
    pub scope: SendScope,
    pub recipient_kind: String,
    pub recipient_value: String,
    /// The rendered message (siyu_model::reach::MessageContent) as JSON.
    pub content: String,
    pub state: OutboxState,
    pub due_at: Millis,
    pub attempts: u32,
    pub attempted_at: Option<Millis>,
    pub remote_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub logged: bool,
    pub updated_at: Millis,
}

impl OutboxRow {
    /// The row as recording `outcome` at `now` leaves it: what `complete` writes.
    pub fn settled(&self, outcome: &Outcome, now: Millis) -> OutboxRow {
        let (state, remote, code, message, due, _) = outcome_columns(outcome);
        let mut row = self.clone();
        row.state = state;
        if let Some(remote) = remote {
            row.remote_id = Some(remote.to_string());
        }
        row.error_code = code.map(str::to_string);
        row.error_message = message.map(str::to_string);
        if let Some(due) = due {
            row.due_at = Millis(due);
        }
        row.updated_at = now;
        row
    }
}

/// A message a claim hands to a dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub row: OutboxRow,
    /// An earlier attempt's lease ran out without an outcome: the message may have gone out.
    pub in_doubt: bool,
}

/// One recipient of a batch being queued.
#[derive(Debug, Clone, PartialEq)]
pub struct EnqueueItem {
    pub profile_id: ProfileId,
    pub key: String,
    pub person: PersonReach,
    pub recipient_kind: String,
    pub recipient_value: String,
    pub content: String,
}

/// Recipients of one campaign batch, sharing channel, account and sender.
#[derive(Debug, Clone)]
pub struct EnqueueBatch {
    pub campaign_id: i64,
    pub channel: Channel,
    pub account: String,
    pub account_type: Option<String>,
    pub scope: SendScope,
    pub purpose: Purpose,
    pub sender: Option<String>,
    /// When the messages should go out (quiet hours may move each later).
    pub at: Millis,
    pub guardrails: Arc<Guardrails>,
    pub items: Vec<EnqueueItem>,
    /// Recipients of the whole plan this batch is part of (0 when unknown): a hint by which a
    /// store sizes its caches once, rather than growing them batch by batch.
    pub plan_size: usize,
}

impl EnqueueBatch {
    pub fn request(&self) -> SendRequest<'_> {
        SendRequest {
            channel: self.channel,
            account_type: self.account_type.as_deref(),
            scope: self.scope,
            purpose: self.purpose,
            staff: self.sender.as_deref(),
            at: self.at,
        }
    }

    /// The verdict for one recipient and the ledger entry it adds; shared by both back-ends.
    pub fn judge(&self, item: &EnqueueItem, ledger: &mut Vec<Sent>) -> Verdict {
        let verdict = self.guardrails.judge(&item.person, ledger, &self.request());
        if let Verdict::Send { at } = verdict {
            // Most people get one message a plan: room for one (a first push would take four,
            // and a million people's ledgers would be mostly empty slots).
            ledger.reserve_exact(1);
            ledger.push(Sent {
                at,
                channel: self.channel,
                scope: self.scope,
                marketing: self.purpose == Purpose::Marketing,
                staff: self.sender.clone(),
            });
        }
        verdict
    }

    /// Forgets what can no longer count towards a cap.
    pub fn prune(&self, ledger: &mut Vec<Sent>) {
        if ledger.is_empty() {
            return;
        }
        ledger.retain(|s| self.guardrails.still_counts(s, self.at));
    }
}

/// What queuing did with one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    Queued {
        at: Millis,
    },
    Held {
        rule: String,
    },
    /// A message with this key already exists (planning resumed after a crash): left as it was.
    Duplicate,
}

/// The outcome of one claimed message, as the dispatcher records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        remote_id: Option<String>,
    },
    Task {
        task_id: String,
    },
    Delivered,
    /// Try again at `at`.
    Retry {
        at: Millis,
        code: String,
        message: String,
    },
    Failed {
        code: String,
        message: String,
    },
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

/// A send a staff member confirms in the channel's app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffTask {
    pub task_id: String,
    pub campaign_id: i64,
    pub account: String,
    pub sender: String,
    pub state: TaskState,
    pub recipients: u64,
    pub delivered: u64,
    pub created_at: Millis,
    pub deadline: Millis,
    pub chased_at: Option<Millis>,
    pub reassigned_to: Option<String>,
    pub updated_at: Millis,
}

/// created → assigned → confirmed → delivered, or expired past its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    Created,
    Assigned,
    Confirmed,
    Delivered,
    Expired,
}

impl TaskState {
    pub const ALL: [TaskState; 5] =
        [TaskState::Created, TaskState::Assigned, TaskState::Confirmed, TaskState::Delivered, TaskState::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Created => "created",
            TaskState::Assigned => "assigned",
            TaskState::Confirmed => "confirmed",
            TaskState::Delivered => "delivered",
            TaskState::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub list: String,
    pub identity_kind: String,
    pub identity_value: String,
    pub reason: String,
    pub created_at: Millis,
}

/// A WeCom contact way (渠道活码) siyu created: customers who add through it arrive with its
/// `state` as their source (`contact_way:<state>`), which is how adds are attributed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactWayRecord {
    /// Unique per tenant, at most 30 characters (WeCom's limit).
    pub state: String,
    /// WeCom's id of the configuration.
    pub config_id: String,
    /// The QR code's URL (scene 2).
    pub qr_code: Option<String>,
    /// The send account (corp) it was created through.
    pub account: String,
    /// The staff userids customers are added to.
    pub staff: Vec<String>,
    pub campaign_id: Option<i64>,
    pub remark: Option<String>,
    pub created_at: Millis,
}

/// Templates, campaigns and the outbox. Every method takes the tenant first.
#[async_trait]
pub trait ReachStore: Send + Sync {
    /// Fails with `NameTaken` when a live template has the name.
    async fn create_template(&self, tenant: TenantId, name: &str, definition: &str) -> Result<TemplateRecord>;
    /// False when there is no such live template.
    async fn update_template(&self, tenant: TenantId, id: i64, definition: &str) -> Result<bool>;
    async fn templates(&self, tenant: TenantId) -> Result<Vec<TemplateRecord>>;
    async fn delete_template(&self, tenant: TenantId, id: i64) -> Result<bool>;

    /// Fails with `NameTaken` when the tenant already has a campaign of that name.
    async fn create_campaign(
        &self,
        tenant: TenantId,
        name: &str,
        spec: &str,
        state: CampaignState,
    ) -> Result<CampaignRecord>;
    async fn campaigns(&self, tenant: TenantId) -> Result<Vec<CampaignRecord>>;
    async fn campaign(&self, tenant: TenantId, id: i64) -> Result<Option<CampaignRecord>>;
    /// Moves a campaign from one of `from` to `to`; false when it was in none of them (someone
    /// else moved it first). `planned` is recorded when given.
    async fn move_campaign(
        &self,
        tenant: TenantId,
        id: i64,
        from: &[CampaignState],
        to: CampaignState,
        planned: Option<u64>,
    ) -> Result<bool>;

    /// Records who a campaign kept back and why (a rule name or `holdout`); a profile already
    /// recorded keeps its first reason.
    async fn record_holds(&self, tenant: TenantId, campaign_id: i64, holds: &[(ProfileId, String)]) -> Result<()>;
    /// Held-back counts per rule.
    async fn hold_counts(&self, tenant: TenantId, campaign_id: i64) -> Result<Vec<(String, u64)>>;
    /// Held-back profiles for one rule.
    async fn holds_for(&self, tenant: TenantId, campaign_id: i64, rule: &str) -> Result<Vec<ProfileId>>;

    /// Judges and queues a batch in one transaction, each person's ledger locked, read, extended
    /// and written back; held recipients are recorded with their rule.
    async fn enqueue(&self, tenant: TenantId, batch: EnqueueBatch) -> Result<Vec<Enqueued>>;

    /// What is reserved for each of these profiles (in their order) from `horizon` on, for a dry
    /// run. The ledger is derived from the outbox: every queued message counts from the time it
    /// was reserved for.
    async fn ledgers(&self, tenant: TenantId, horizon: Millis, profiles: &[ProfileId]) -> Result<Vec<Vec<Sent>>>;

    /// Claims up to `limit` messages due by `now` (queued, or attempting with a lapsed lease),
    /// marking them attempting until `lease_until`.
    async fn claim(&self, tenant: TenantId, now: Millis, lease_until: Millis, limit: usize) -> Result<Vec<Claimed>>;
    /// Records outcomes of claimed messages; their events are owed to the log until
    /// `mark_logged`.
    async fn complete(&self, tenant: TenantId, outcomes: &[(i64, Outcome)]) -> Result<()>;
    /// Records outcomes whose events are already in the log (the dispatcher appends them first,
    /// so a crash in between leaves the message in doubt, never an outcome without its event).
    async fn complete_logged(&self, tenant: TenantId, outcomes: &[(i64, Outcome)]) -> Result<()>;
    /// Messages whose outcome is recorded but whose event is not in the log yet.
    async fn unlogged(&self, tenant: TenantId, limit: usize) -> Result<Vec<OutboxRow>>;
    async fn mark_logged(&self, tenant: TenantId, ids: &[i64]) -> Result<()>;
    /// Message counts per state for a campaign.
    async fn outbox_counts(&self, tenant: TenantId, campaign_id: i64) -> Result<Vec<(OutboxState, u64)>>;
    /// Failure counts per error code for a campaign.
    async fn failure_counts(&self, tenant: TenantId, campaign_id: i64) -> Result<Vec<(String, u64)>>;
    /// A campaign's messages in outbox order, after `after_id`.
    async fn outbox_rows(
        &self,
        tenant: TenantId,
        campaign_id: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>>;
    /// Cancels the messages of a campaign that were not attempted yet; returns how many.
    async fn cancel_queued(&self, tenant: TenantId, campaign_id: i64) -> Result<u64>;
    /// Messages without a final outcome yet: queued, being attempted, or waiting for a staff
    /// member's confirmation (a campaign is done when there are none).
    async fn outbox_pending(&self, tenant: TenantId, campaign_id: Option<i64>) -> Result<u64>;
    /// Whether a campaign has a message without a final outcome yet (what `outbox_pending`
    /// counts, answered at the first one).
    async fn has_pending(&self, tenant: TenantId, campaign_id: i64) -> Result<bool>;
    /// Messages in `task` state for one task id (the recipients of a staff-confirmed send).
    async fn task_rows(&self, tenant: TenantId, task_id: &str) -> Result<Vec<OutboxRow>>;

    async fn upsert_task(&self, tenant: TenantId, task: &StaffTask) -> Result<()>;
    async fn tasks(&self, tenant: TenantId, campaign_id: Option<i64>) -> Result<Vec<StaffTask>>;

    async fn add_suppressions(&self, tenant: TenantId, entries: &[Suppression]) -> Result<u64>;
    async fn remove_suppression(&self, tenant: TenantId, list: &str, kind: &str, value: &str) -> Result<bool>;
    async fn suppressions(&self, tenant: TenantId) -> Result<Vec<Suppression>>;

    /// Records a contact way; false, and nothing written, when the tenant has one with its state.
    async fn create_contact_way(&self, tenant: TenantId, way: &ContactWayRecord) -> Result<bool>;
    /// The tenant's contact ways, oldest first.
    async fn contact_ways(&self, tenant: TenantId) -> Result<Vec<ContactWayRecord>>;
    async fn contact_way(&self, tenant: TenantId, state: &str) -> Result<Option<ContactWayRecord>>;
}
