//! WeCom behind the [`Connector`] contract: mass messages become `add_msg_template` tasks for the
//! staff member to confirm, welcome messages answer the add-contact callback, and a send whose
//! outcome was lost is found again through the group-message list instead of being sent twice.
//!
//! - [`SendKind::Mass`]: messages are grouped by (sender, identical content) into one
//!   `add_msg_template` per ≤ 10 000 recipients; each message of a task is
//!   [`Accepted::Task`] with the task's `msgid`, except the recipients WeCom put in `fail_list`,
//!   which fail permanently.
//! - [`SendKind::Welcome`]: `send_welcome_msg` with the callback's code → [`Accepted::Sent`].
//! - [`SendKind::Direct`]: refused permanently. WeCom's server API cannot message one external
//!   contact directly (only a task the staff member confirms, or the welcome message); 客服
//!   messages belong to WeChat Customer Service, a different product.
//!
//! WeCom has no idempotency key, so [`Connector::deduplicates`] is false and
//! [`Connector::find_accepted`] reconciles: it lists the sender's corp-created mass messages since
//! the attempt (`get_groupmsg_list_v2`), keeps those with identical content and adopts a task's
//! `msgid` for every recipient found in its `get_groupmsg_send_result`. The same lookup runs
//! right away when `add_msg_template` failed in a way that may have taken effect (timeout, 5xx,
//! unreadable answer).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Deserialize;
use siyu_model::reach::{Attachment, MessageContent};
use siyu_model::{Channel, IdentityKind};

use super::client::{
    ChatType, ClientConfig, CreatorFilter, GroupMsgQuery, Secret, WeComClient, WeComError, DEFAULT_BASE_URL,
    MAX_RECIPIENTS_PER_TASK,
};
use super::crypto::{CryptoError, MsgCrypt, DEFAULT_REPLAY_WINDOW_SECS};
use crate::outbound::{Accepted, Connector, Outbound, SendError, SendKind, TaskRecipientStatus};

const NAME: &str = "wecom";
/// `get_groupmsg_list_v2` spans at most a month.
const MAX_LIST_SPAN_SECS: i64 = 30 * 86_400;

/// One corp's WeCom settings: the API credentials and the callback's token and key. Its `Debug`
/// prints no secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeComConfig {
    /// The channel account (矩阵号) name events and messages carry for this corp.
    pub account: String,
    pub corp_id: String,
    /// The secret of the app allowed to call 客户联系 (its access token is used for everything).
    pub corp_secret: Secret,
    /// The callback URL's Token.
    #[serde(default)]
    pub callback_token: Secret,
    /// The callback URL's 43-character EncodingAESKey.
    #[serde(default)]
    pub encoding_aes_key: Secret,
    #[serde(default)]
    pub agent_id: Option<i64>,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_token_refresh_margin_secs")]
    pub token_refresh_margin_secs: u64,
    /// All API calls together; 0 for no limit.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// How long calls are refused after WeCom's frequency limit (45009, 45033).
    #[serde(default = "default_rate_limit_backoff_secs")]
    pub rate_limit_backoff_secs: u64,
    /// At most 10 000 (WeCom's limit); lower only to test the chunking.
    #[serde(default = "default_max_recipients")]
    pub max_recipients_per_task: usize,
    /// Widens reconciliation's time range on both sides (clock skew between us and WeCom).
    #[serde(default = "default_reconcile_margin_secs")]
    pub reconcile_margin_secs: i64,
    #[serde(default = "default_replay_window_secs")]
    pub callback_replay_window_secs: i64,
}

impl WeComConfig {
    /// The defaults for one corp.
    pub fn new(account: impl Into<String>, corp_id: impl Into<String>, corp_secret: Secret) -> WeComConfig {
        WeComConfig {
            account: account.into(),
            corp_id: corp_id.into(),
            corp_secret,
            callback_token: Secret::default(),
            encoding_aes_key: Secret::default(),
            agent_id: None,
            base_url: default_base_url(),
            timeout_ms: default_timeout_ms(),
            token_refresh_margin_secs: default_token_refresh_margin_secs(),
            requests_per_second: default_requests_per_second(),
            burst: default_burst(),
            rate_limit_backoff_secs: default_rate_limit_backoff_secs(),
            max_recipients_per_task: default_max_recipients(),
            reconcile_margin_secs: default_reconcile_margin_secs(),
            callback_replay_window_secs: default_replay_window_secs(),
        }
    }

    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            base_url: self.base_url.clone(),
            corp_id: self.corp_id.clone(),
            corp_secret: self.corp_secret.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            token_refresh_margin: Duration::from_secs(self.token_refresh_margin_secs),
            requests_per_second: (self.requests_per_second > 0.0).then_some(self.requests_per_second),
            burst: self.burst,
            rate_limit_backoff: Duration::from_secs(self.rate_limit_backoff_secs),
        }
    }

    /// The callback crypto of this corp (receiveid = the corp id).
    pub fn msg_crypt(&self) -> Result<MsgCrypt, CryptoError> {
        Ok(MsgCrypt::new(self.callback_token.expose(), self.encoding_aes_key.expose(), &self.corp_id)?
            .with_replay_window(self.callback_replay_window_secs))
    }
}

/// The WeCom connector of one corp.
#[derive(Debug)]
pub struct WeComConnector {
    client: WeComClient,
    max_recipients: usize,
    reconcile_margin_secs: i64,
}

impl WeComConnector {
    pub fn new(config: &WeComConfig) -> Result<WeComConnector, WeComError> {
        Ok(WeComConnector {
            client: WeComClient::new(config.client_config())?,
            max_recipients: config.max_recipients_per_task.clamp(1, MAX_RECIPIENTS_PER_TASK),
            reconcile_margin_secs: config.reconcile_margin_secs.max(0),
        })
    }

    /// The API client (tags, contact ways and customer lookups go through it directly).
    pub fn client(&self) -> &WeComClient {
        &self.client
    }

    async fn send_mass(&self, sender: &str, content: &MessageContent, chunk: &[(usize, &str)]) -> Vec<Outcome> {
        let mut recipients: Vec<String> = Vec::with_capacity(chunk.len());
        let mut seen = HashSet::new();
        for (_, id) in chunk {
            if seen.insert(*id) {
                recipients.push(id.to_string());
            }
        }
        let started = unix_now();
        match self.client.add_msg_template(sender, &recipients, content).await {
            Ok(created) => {
                let failed: HashSet<&str> = created.fail_list.iter().map(String::as_str).collect();
                chunk
                    .iter()
                    .map(|(_, id)| {
                        if failed.contains(id) {
                            return Err(permanent(
                                "fail_list",
                                format!("wecom refused {id} for task {} (not a customer of {sender}?)", created.msgid),
                            ));
                        }
                        Ok(Accepted::Task { task_id: created.msgid.clone() })
                    })
                    .collect()
            }
            Err(e) if e.may_have_taken_effect() => {
                let error = send_error(&e);
                let Ok(found) = self.reconcile(sender, content, &recipients, started).await else {
                    return vec![Err(error); chunk.len()];
                };
                chunk
                    .iter()
                    .map(|(_, id)| match found.get(*id) {
                        Some(msgid) => Ok(Accepted::Task { task_id: msgid.clone() }),
                        None => Err(error.clone()),
                    })
                    .collect()
            }
            Err(e) => vec![Err(send_error(&e)); chunk.len()],
        }
    }

    /// The recipients (of `recipients`) that a mass task of `sender` with this content, created
    /// at or after `since`, already addresses: external userid → msgid.
    async fn reconcile(
        &self,
        sender: &str,
        content: &MessageContent,
        recipients: &[String],
        since: i64,
    ) -> Result<HashMap<String, String>, WeComError> {
        let wanted: HashSet<&str> = recipients.iter().map(String::as_str).collect();
        let end_time = unix_now() + self.reconcile_margin_secs;
        let start_time = (since - self.reconcile_margin_secs).max(end_time - MAX_LIST_SPAN_SECS);
        let mut candidates = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = GroupMsgQuery {
                chat_type: ChatType::Single,
                start_time,
                end_time,
                creator: Some(sender.to_string()),
                filter: CreatorFilter::Corp,
                limit: 100,
                cursor: cursor.take(),
            };
            let page = self.client.get_groupmsg_list_v2(&query).await?;
            candidates.extend(
                page.group_msg_list
                    .into_iter()
                    .filter(|m| m.creator.as_deref().is_none_or(|c| c == sender))
                    .filter(|m| same_content(content, &m.content()))
                    .map(|m| m.msgid),
            );
            if page.next_cursor.is_empty() {
                break;
            }
            cursor = Some(page.next_cursor);
        }
        let mut found = HashMap::new();
        for msgid in candidates {
            for (external_userid, _) in self.all_results(&msgid, sender).await? {
                if wanted.contains(external_userid.as_str()) {
                    found.entry(external_userid).or_insert_with(|| msgid.clone());
                }
            }
        }
        Ok(found)
    }

    async fn all_results(&self, msgid: &str, sender: &str) -> Result<Vec<(String, u32)>, WeComError> {
        let mut results = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.client.get_groupmsg_send_result(msgid, sender, cursor.as_deref(), 1000).await?;
            results.extend(page.send_list.into_iter().filter_map(|r| r.external_userid.map(|id| (id, r.status))));
            if page.next_cursor.is_empty() {
                return Ok(results);
            }
            cursor = Some(page.next_cursor);
        }
    }
}

#[async_trait]
impl Connector for WeComConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn send(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut welcomes = Vec::new();
        let mut groups: Vec<MassGroup> = Vec::new();
        let mut group_index: HashMap<(&str, String), usize> = HashMap::new();
        for (i, message) in batch.iter().enumerate() {
            if let Err(refusal) = check_addressable(message) {
                outcomes[i] = Some(Err(refusal));
                continue;
            }
            match &message.kind {
                SendKind::Direct => {
                    outcomes[i] = Some(Err(permanent(
                        "direct_unsupported",
                        "wecom cannot message one external contact directly; send a mass task or a welcome message"
                            .into(),
                    )));
                }
                SendKind::Welcome { welcome_code } => welcomes.push((i, welcome_code.as_str())),
                SendKind::Mass => {
                    let Some(sender) = message.sender.as_deref().filter(|s| !s.is_empty()) else {
                        outcomes[i] = Some(Err(permanent("missing_sender", "a wecom mass task needs a sender".into())));
                        continue;
                    };
                    let key = (sender, serde_json::to_string(&message.content).unwrap_or_default());
                    let index = *group_index.entry(key).or_insert_with(|| {
                        groups.push(MassGroup { sender, content: &message.content, members: Vec::new() });
                        groups.len() - 1
                    });
                    groups[index].members.push((i, message.recipient.value.as_str()));
                }
            }
        }

        // After WeCom's frequency limit the rest of the batch waits too, without being tried.
        let mut halted: Option<SendError> = None;
        // Welcome codes expire 20 s after the callback: they go first.
        for (i, code) in welcomes {
            if let Some(error) = &halted {
                outcomes[i] = Some(Err(error.clone()));
                continue;
            }
            let outcome = self.client.send_welcome_msg(code, &batch[i].content).await;
            outcomes[i] = Some(match outcome {
                Ok(()) => Ok(Accepted::Sent { remote_id: None }),
                Err(e) => {
                    let error = send_error(&e);
                    if e.is_rate_limit() {
                        halted = Some(error.clone());
                    }
                    Err(error)
                }
            });
        }
        for group in &groups {
            for chunk in group.members.chunks(self.max_recipients) {
                let results = match &halted {
                    Some(error) => vec![Err(error.clone()); chunk.len()],
                    None => self.send_mass(group.sender, group.content, chunk).await,
                };
                for ((i, _), outcome) in chunk.iter().zip(results) {
                    if let Err(error) = &outcome {
                        if error.retry_after.is_some() && halted.is_none() {
                            halted = Some(error.clone());
                        }
                    }
                    outcomes[*i] = Some(outcome);
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(permanent("internal", "message was not attempted".into()))))
            .collect()
    }

    fn deduplicates(&self) -> bool {
        false
    }

    /// Mass messages are looked up as described in the module docs. Welcome messages are
    /// answered `None`: a welcome code is single-use, so trying it again cannot send twice
    /// (WeCom refuses the second use).
    async fn find_accepted(&self, batch: &[Outbound], attempted_at: i64) -> Result<Vec<Option<Accepted>>, SendError> {
        let mut found: Vec<Option<Accepted>> = vec![None; batch.len()];
        let mut groups: Vec<MassGroup> = Vec::new();
        let mut group_index: HashMap<(&str, String), usize> = HashMap::new();
        for (i, message) in batch.iter().enumerate() {
            let Some(sender) = message.sender.as_deref().filter(|s| !s.is_empty()) else { continue };
            if message.kind != SendKind::Mass || check_addressable(message).is_err() {
                continue;
            }
            let key = (sender, serde_json::to_string(&message.content).unwrap_or_default());
            let index = *group_index.entry(key).or_insert_with(|| {
                groups.push(MassGroup { sender, content: &message.content, members: Vec::new() });
                groups.len() - 1
            });
            groups[index].members.push((i, message.recipient.value.as_str()));
        }
        for group in groups {
            let recipients: Vec<String> = group.members.iter().map(|(_, id)| id.to_string()).collect();
            let tasks = self
                .reconcile(group.sender, group.content, &recipients, attempted_at)
                .await
                .map_err(|e| send_error(&e))?;
            for (i, id) in group.members {
                found[i] = tasks.get(id).map(|msgid| Accepted::Task { task_id: msgid.clone() });
            }
        }
        Ok(found)
    }

    /// Every recipient of the task, paged through `get_groupmsg_send_result`. Statuses WeCom may
    /// add later are reported as [`TaskRecipientStatus::Unsent`] (not known to be delivered).
    async fn remind_task(&self, task_id: &str) -> Result<(), SendError> {
        self.client.remind_groupmsg_send(task_id).await.map_err(|e| send_error(&e))
    }

    async fn cancel_task(&self, task_id: &str) -> Result<(), SendError> {
        self.client.cancel_groupmsg_send(task_id).await.map_err(|e| send_error(&e))
    }

    async fn task_results(&self, task_id: &str, sender: &str) -> Result<Vec<(String, TaskRecipientStatus)>, SendError> {
        let results = self.all_results(task_id, sender).await.map_err(|e| send_error(&e))?;
        Ok(results
            .into_iter()
            .map(|(id, status)| {
                let status = match status {
                    1 => TaskRecipientStatus::Delivered,
                    2 => TaskRecipientStatus::NotContact,
                    3 => TaskRecipientStatus::QuotaReached,
                    _ => TaskRecipientStatus::Unsent,
                };
                (id, status)
            })
            .collect())
    }
}

/// Identical content as far as `get_groupmsg_list_v2` shows it: the same text, and attachments
/// of the same kinds in the same order with the same link, mini program and media. An image
/// sent by URL may come back by media id, so images match when any id they share matches.
pub fn same_content(sent: &MessageContent, listed: &MessageContent) -> bool {
    let text = |c: &MessageContent| c.text.clone().unwrap_or_default();
    text(sent) == text(listed)
        && sent.attachments.len() == listed.attachments.len()
        && sent.attachments.iter().zip(&listed.attachments).all(|pair| match pair {
            (Attachment::Image { pic_url: u1, media_id: m1 }, Attachment::Image { pic_url: u2, media_id: m2 }) => {
                let agree = |a: &Option<String>, b: &Option<String>| match (a, b) {
                    (Some(a), Some(b)) => Some(a == b),
                    _ => None,
                };
                match (agree(u1, u2), agree(m1, m2)) {
                    (None, None) => true,
                    (a, b) => a.unwrap_or(false) || b.unwrap_or(false),
                }
            }
            (Attachment::Link { title: t1, url: u1, .. }, Attachment::Link { title: t2, url: u2, .. }) => {
                t1 == t2 && u1 == u2
            }
            (
                Attachment::MiniProgram { appid: a1, page: p1, title: t1, .. },
                Attachment::MiniProgram { appid: a2, page: p2, title: t2, .. },
            ) => a1 == a2 && p1 == p2 && t1 == t2,
            (Attachment::Video { media_id: m1 }, Attachment::Video { media_id: m2 })
            | (Attachment::File { media_id: m1 }, Attachment::File { media_id: m2 }) => m1 == m2,
            _ => false,
        })
}

type Outcome = Result<Accepted, SendError>;

/// Mass messages of one (sender, content), in batch order.
struct MassGroup<'a> {
    sender: &'a str,
    content: &'a MessageContent,
    members: Vec<(usize, &'a str)>,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_token_refresh_margin_secs() -> u64 {
    300
}
fn default_requests_per_second() -> f64 {
    20.0
}
fn default_burst() -> u32 {
    5
}
fn default_rate_limit_backoff_secs() -> u64 {
    60
}
fn default_max_recipients() -> usize {
    MAX_RECIPIENTS_PER_TASK
}
fn default_reconcile_margin_secs() -> i64 {
    120
}
fn default_replay_window_secs() -> i64 {
    DEFAULT_REPLAY_WINDOW_SECS
}

fn check_addressable(message: &Outbound) -> Result<(), SendError> {
    if message.channel != Channel::Wecom {
        return Err(permanent("wrong_channel", format!("wecom cannot send on channel {}", message.channel)));
    }
    if message.recipient.kind != IdentityKind::WecomExternalUserid {
        return Err(permanent(
            "bad_recipient",
            format!("wecom addresses customers by wecom_external_userid, not {}", message.recipient.kind),
        ));
    }
    Ok(())
}

fn permanent(code: &str, message: String) -> SendError {
    SendError { connector: NAME, code: code.to_string(), message, retryable: false, retry_after: None }
}

fn send_error(e: &WeComError) -> SendError {
    SendError {
        connector: NAME,
        code: e.code(),
        message: e.to_string(),
        retryable: e.retryable(),
        retry_after: e.retry_after(),
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(url: Option<&str>, media: Option<&str>) -> MessageContent {
        MessageContent {
            text: Some("hi".into()),
            attachments: vec![Attachment::Image {
                pic_url: url.map(str::to_string),
                media_id: media.map(str::to_string),
            }],
        }
    }

    #[test]
    fn contents_match_as_wecom_lists_them() {
        assert!(same_content(&image(Some("u"), None), &image(Some("u"), None)));
        assert!(same_content(&image(Some("u"), None), &image(None, Some("m"))));
        assert!(same_content(&image(Some("u"), Some("m")), &image(Some("other"), Some("m"))));
        assert!(!same_content(&image(Some("u"), None), &image(Some("v"), None)));
        let mut other_text = image(Some("u"), None);
        other_text.text = Some("bye".into());
        assert!(!same_content(&image(Some("u"), None), &other_text));
        assert!(!same_content(
            &image(Some("u"), None),
            &MessageContent { text: Some("hi".into()), attachments: vec![] }
        ));
    }

    #[test]
    fn the_config_reads_from_settings_and_hides_secrets() {
        let config: WeComConfig = serde_json::from_value(serde_json::json!({
            "account": "wecom-main", "corp_id": "ww1", "corp_secret": "s3cr3t",
            "callback_token": "QDG6eK", "encoding_aes_key": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
        }))
        .unwrap();
        assert_eq!(config.max_recipients_per_task, 10_000);
        let printed = format!("{config:?}");
        for secret in ["s3cr3t", "QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert_eq!(config.msg_crypt().unwrap().receive_id(), "ww1");
    }
}
