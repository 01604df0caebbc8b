//! The one contract every outbound channel implements: the outbox dispatcher hands a connector a
//! batch of rendered messages, each with its idempotency key, and gets one outcome per message.
//!
//! A connector holds no records: what was sent, retried or held lives in siyu-store's outbox. It may
//! cache what the remote side needs (an access token) and must be safe to share between tasks.

use std::time::Duration;

use async_trait::async_trait;
use siyu_model::reach::MessageContent;
use siyu_model::{Channel, Identity};

/// How a message goes out on its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendKind {
    /// A mass send (群发). On WeCom it becomes a task the staff member confirms in the app.
    Mass,
    /// A direct message (客服消息 / 私信) to one person.
    Direct,
    /// WeCom's welcome message, answering the add-contact callback that carried this code.
    Welcome { welcome_code: String },
}

/// One message to one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Stable across retries and restarts; a receiver that sees it twice must apply it once.
    pub key: String,
    pub channel: Channel,
    /// The channel account (矩阵号) it goes out from.
    pub account: String,
    /// The staff member who sends it, where the channel has one (WeCom `sender` userid).
    pub sender: Option<String>,
    /// Who receives it, in the identity the channel addresses people by.
    pub recipient: Identity,
    pub content: MessageContent,
    pub kind: SendKind,
}

/// What the remote side did with an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Handed to the channel; `remote_id` is the channel's id for it when it gives one.
    Sent { remote_id: Option<String> },
    /// Turned into a task a person must confirm (WeCom mass sends: the `msgid` of
    /// `add_msg_template`); delivery is learnt later from [`Connector::task_results`].
    Task { task_id: String },
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{connector}: {code}: {message}")]
pub struct SendError {
    pub connector: &'static str,
    /// The remote error code (`errcode` for WeCom) or a short name of our own (`timeout`, `http_503`).
    pub code: String,
    pub message: String,
    /// True when trying again later can succeed (5xx, timeouts, rate limits, expired tokens).
    pub retryable: bool,
    /// The remote side asked for this much patience (rate limits).
    pub retry_after: Option<Duration>,
}

/// The state of one recipient of a confirmed-by-staff task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRecipientStatus {
    /// The staff member has not confirmed yet.
    Unsent,
    Delivered,
    /// Not delivered: the person is no longer a contact.
    NotContact,
    /// Not delivered: the person already received a mass message within the platform's limit.
    QuotaReached,
}

#[async_trait]
pub trait Connector: Send + Sync {
    /// A short, stable name (`log`, `wecom`, `douyin`, `webhook`) used in metrics and errors.
    fn name(&self) -> &'static str;

    /// Attempts every message of the batch; the result at position i answers message i.
    async fn send(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>>;

    /// True when the remote side applies a message at most once per [`Outbound::key`] (the key
    /// travels with the message), so a send whose outcome was lost (a crash between the attempt and
    /// its record) can simply be attempted again.
    fn deduplicates(&self) -> bool;

    /// For connectors that do not deduplicate: asks the remote side whether messages attempted at
    /// or after `attempted_at` (Unix seconds) already took effect, so they are not sent twice.
    /// `Some` at position i means message i was accepted before; `None` that it was not.
    async fn find_accepted(&self, batch: &[Outbound], attempted_at: i64) -> Result<Vec<Option<Accepted>>, SendError> {
        let _ = attempted_at;
        if self.deduplicates() {
            return Ok(vec![None; batch.len()]);
        }
        Err(SendError {
            connector: self.name(),
            code: "cannot_reconcile".into(),
            message: format!("{} can neither deduplicate nor look up earlier sends", self.name()),
            retryable: false,
            retry_after: None,
        })
    }

    /// For connectors that create tasks: reminds the sender of a task they have not confirmed.
    async fn remind_task(&self, task_id: &str) -> Result<(), SendError> {
        Err(self.no_tasks(task_id))
    }

    /// For connectors that create tasks: stops a task (before it is sent again by someone else).
    async fn cancel_task(&self, task_id: &str) -> Result<(), SendError> {
        Err(self.no_tasks(task_id))
    }

    /// The answer of a connector that creates no tasks.
    fn no_tasks(&self, task_id: &str) -> SendError {
        SendError {
            connector: self.name(),
            code: "no_tasks".into(),
            message: format!("{} does not create tasks (asked about {task_id})", self.name()),
            retryable: false,
            retry_after: None,
        }
    }

    /// For connectors that create tasks: each recipient's state for a task created by `send`.
    /// The default answers that this connector creates none.
    async fn task_results(&self, task_id: &str, sender: &str) -> Result<Vec<(String, TaskRecipientStatus)>, SendError> {
        let _ = sender;
        Err(self.no_tasks(task_id))
    }
}
