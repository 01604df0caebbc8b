//! The log connector: instead of reaching anyone it appends each accepted message as one NDJSON
//! line to a file (or keeps it in memory), for dry runs, the demo and the exactly-once tests.
//!
//! It deduplicates like a well-behaved remote: a key already written is answered `Sent` again
//! without a second line, and the set of keys is rebuilt from the file when it is opened, so
//! [`Connector::deduplicates`] is true across restarts. Each batch is written with one write and
//! one fsync before `send` answers; a line cut short by a crash (its batch was never
//! acknowledged) is dropped when the file is next opened. [`count_by_key`] reads a file back for
//! the tests: a count above 1 is a duplicate delivery.
//!
//! One line: `{"key", "channel", "account", "sender"?, "recipient": {"kind", "value"}, "kind",
//! "content": <MessageContent>, "at": <RFC 3339>}`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use siyu_model::reach::MessageContent;
use siyu_model::{Channel, Millis};

use crate::outbound::{Accepted, Connector, Outbound, SendError, SendKind};

const CONNECTOR: &str = "log";

/// Why the log could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a log connector line: {message}")]
    Corrupt { path: PathBuf, line: usize, message: String },
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub key: String,
    pub channel: Channel,
    pub account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    pub recipient: LogRecipient,
    /// `direct`, `mass` or `welcome`.
    pub kind: String,
    pub content: MessageContent,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecipient {
    pub kind: String,
    pub value: String,
}

impl LogLine {
    pub fn new(message: &Outbound, at: Millis) -> LogLine {
        let kind = match message.kind {
            SendKind::Direct => "direct",
            SendKind::Mass => "mass",
            SendKind::Welcome { .. } => "welcome",
        };
        LogLine {
            key: message.key.clone(),
            channel: message.channel,
            account: message.account.clone(),
            sender: message.sender.clone(),
            recipient: LogRecipient {
                kind: message.recipient.kind.to_string(),
                value: message.recipient.value.clone(),
            },
            kind: kind.to_string(),
            content: message.content.clone(),
            at: at.to_rfc3339(),
        }
    }
}

/// Appends accepted messages to a file or to memory, once per key.
pub struct LogConnector {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    sink: Sink,
    /// Key → its line number (1-based), the `remote_id` it is answered with.
    keys: HashMap<String, usize>,
    lines: usize,
}

enum Sink {
    File { path: PathBuf, file: File, len: u64 },
    Memory(Vec<String>),
}

impl LogConnector {
    /// Opens (or creates) the file at `path` and rebuilds the keys already in it.
    pub fn open(path: impl AsRef<Path>) -> Result<LogConnector, LogError> {
        let path = path.as_ref().to_path_buf();
        let io = |action: &'static str| {
            let path = path.clone();
            move |source| LogError::Io { action, path, source }
        };
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(io("open"))?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io("read"))?;
        // A batch is acknowledged only after its fsync, so a cut line was never acknowledged.
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            file.set_len(complete as u64).map_err(io("truncate"))?;
            file.sync_all().map_err(io("sync"))?;
        }
        let mut keys = HashMap::new();
        let mut lines = 0;
        for (number, key) in keys_of(&path, &text[..complete])? {
            keys.entry(key).or_insert(number);
            lines = number;
        }
        let sink = Sink::File { path, file, len: complete as u64 };
        Ok(LogConnector { inner: Arc::new(Mutex::new(Inner { sink, keys, lines })) })
    }

    /// A log kept in memory only.
    pub fn in_memory() -> LogConnector {
        let inner = Inner { sink: Sink::Memory(Vec::new()), keys: HashMap::new(), lines: 0 };
        LogConnector { inner: Arc::new(Mutex::new(inner)) }
    }

    /// Every line written, in order (from the file, or from memory).
    pub fn entries(&self) -> Result<Vec<LogLine>, LogError> {
        let inner = lock(&self.inner);
        match &inner.sink {
            Sink::File { path, .. } => read_lines(path),
            Sink::Memory(lines) => {
                lines.iter().enumerate().map(|(i, l)| parse_line(Path::new("<memory>"), i + 1, l)).collect()
            }
        }
    }

    /// How many lines each key has (1 everywhere when nothing was delivered twice).
    pub fn count_by_key(&self) -> Result<BTreeMap<String, usize>, LogError> {
        let mut counts = BTreeMap::new();
        for line in self.entries()? {
            *counts.entry(line.key).or_insert(0) += 1;
        }
        Ok(counts)
    }
}

/// How many lines each key has in the log file at `path`.
pub fn count_by_key(path: impl AsRef<Path>) -> Result<BTreeMap<String, usize>, LogError> {
    let mut counts = BTreeMap::new();
    for line in read_lines(path.as_ref())? {
        *counts.entry(line.key).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Every complete line of the log file at `path`.
pub fn read_lines(path: impl AsRef<Path>) -> Result<Vec<LogLine>, LogError> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).map_err(|source| LogError::Io { action: "read", path: path.into(), source })?;
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    text[..complete]
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(path, i + 1, l))
        .collect()
}

#[async_trait]
impl Connector for LogConnector {
    fn name(&self) -> &'static str {
        CONNECTOR
    }

    async fn send(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        let inner = Arc::clone(&self.inner);
        let batch = batch.to_vec();
        let count = batch.len();
        // The write and its fsync block; they run off the async workers.
        match tokio::task::spawn_blocking(move || append(&inner, &batch)).await {
            Ok(results) => results,
            Err(e) => (0..count).map(|_| Err(io_error(format!("the log writer task failed: {e}")))).collect(),
        }
    }

    fn deduplicates(&self) -> bool {
        true
    }
}

fn append(inner: &Mutex<Inner>, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
    let mut inner = lock(inner);
    let at = Millis::now();
    let mut buffer = String::new();
    let mut added = Vec::new();
    let mut numbers = Vec::with_capacity(batch.len());
    for message in batch {
        if let Some(number) = inner.keys.get(&message.key) {
            numbers.push(*number);
            continue;
        }
        let line = match serde_json::to_string(&LogLine::new(message, at)) {
            Ok(line) => line,
            Err(e) => {
                numbers.push(0);
                tracing::warn!(key = %message.key, error = %e, "failed to encode a log line");
                continue;
            }
        };
        buffer.push_str(&line);
        buffer.push('\n');
        inner.lines += 1;
        let number = inner.lines;
        inner.keys.insert(message.key.clone(), number);
        added.push((message.key.clone(), line));
        numbers.push(number);
    }
    if let Err(message) = write(&mut inner.sink, &buffer, &added) {
        // Nothing of this batch is acknowledged: forget its keys so a retry writes them.
        for (key, _) in &added {
            inner.keys.remove(key);
        }
        inner.lines -= added.len();
        return batch.iter().map(|_| Err(io_error(message.clone()))).collect();
    }
    numbers
        .into_iter()
        .map(|n| match n {
            0 => Err(SendError {
                connector: CONNECTOR,
                code: "encode".into(),
                message: "the message could not be encoded as JSON".into(),
                retryable: false,
                retry_after: None,
            }),
            n => Ok(Accepted::Sent { remote_id: Some(format!("log:{n}")) }),
        })
        .collect()
}

fn write(sink: &mut Sink, buffer: &str, added: &[(String, String)]) -> Result<(), String> {
    match sink {
        Sink::Memory(lines) => {
            lines.extend(added.iter().map(|(_, l)| l.clone()));
            Ok(())
        }
        Sink::File { .. } if buffer.is_empty() => Ok(()),
        Sink::File { path, file, len } => {
            let written = file.write_all(buffer.as_bytes()).and_then(|()| file.sync_data());
            match written {
                Ok(()) => {
                    *len += buffer.len() as u64;
                    Ok(())
                }
                Err(e) => {
                    // Take back a partial write so the file holds whole, acknowledged lines only.
                    let _ = file.set_len(*len);
                    Err(format!("failed to append to {}: {e}", path.display()))
                }
            }
        }
    }
}

/// `(line number, key)` of each line of `text`.
fn keys_of(path: &Path, text: &str) -> Result<Vec<(usize, String)>, LogError> {
    #[derive(Deserialize)]
    struct KeyOnly {
        key: String,
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<KeyOnly>(l).map(|k| (i + 1, k.key)).map_err(|e| LogError::Corrupt {
                path: path.into(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

fn parse_line(path: &Path, number: usize, line: &str) -> Result<LogLine, LogError> {
    serde_json::from_str(line).map_err(|e| LogError::Corrupt {
        path: path.into(),
        line: number,
        message: e.to_string(),
    })
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io_error(message: String) -> SendError {
    SendError { connector: CONNECTOR, code: "io".into(), message, retryable: true, retry_after: None }
}

#[cfg(test)]
mod tests {
    use siyu_model::{Identity, IdentityKind};

    use super::*;

    fn message(key: &str) -> Outbound {
        Outbound {
            key: key.into(),
            channel: Channel::Douyin,
            account: "brand-main".into(),
            sender: None,
            recipient: Identity::new(IdentityKind::DouyinOpenId, "open-1").unwrap(),
            content: MessageContent { text: Some(format!("hello {key}")), attachments: vec![] },
            kind: SendKind::Direct,
        }
    }

    #[tokio::test]
    async fn deduplicates_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.ndjson");
        {
            let log = LogConnector::open(&path).unwrap();
            let results = log.send(&[message("a"), message("b"), message("a")]).await;
            let ids: Vec<_> = results.into_iter().map(Result::unwrap).collect();
            assert_eq!(ids[0], Accepted::Sent { remote_id: Some("log:1".into()) });
            assert_eq!(ids[2], ids[0]);
        }
        let reopened = LogConnector::open(&path).unwrap();
        let again = reopened.send(&[message("b"), message("c")]).await;
        assert_eq!(again[0], Ok(Accepted::Sent { remote_id: Some("log:2".into()) }));
        assert_eq!(again[1], Ok(Accepted::Sent { remote_id: Some("log:3".into()) }));
        let counts = count_by_key(&path).unwrap();
        assert_eq!(counts, BTreeMap::from([("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]));
        let lines = read_lines(&path).unwrap();
        assert_eq!(lines[2].key, "c");
        assert_eq!(lines[2].content.text.as_deref(), Some("hello c"));
        assert_eq!(lines[2].recipient, LogRecipient { kind: "douyin_open_id".into(), value: "open-1".into() });
        assert_eq!(lines[2].kind, "direct");
        assert!(reopened.deduplicates());
    }

    #[tokio::test]
    async fn a_line_cut_by_a_crash_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.ndjson");
        LogConnector::open(&path).unwrap().send(&[message("a")]).await.remove(0).unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(br#"{"key":"b","chan"#).unwrap();
        let reopened = LogConnector::open(&path).unwrap();
        assert_eq!(reopened.send(&[message("b")]).await[0], Ok(Accepted::Sent { remote_id: Some("log:2".into()) }));
        assert_eq!(count_by_key(&path).unwrap(), BTreeMap::from([("a".into(), 1), ("b".into(), 1)]));
    }

    #[test]
    fn a_corrupt_line_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.ndjson");
        std::fs::write(&path, "{\"key\":\"a\"}\nnot json\n").unwrap();
        let err = LogConnector::open(&path).err().unwrap();
        assert!(matches!(err, LogError::Corrupt { line: 2, .. }), "{err}");
    }

    #[tokio::test]
    async fn in_memory_mode() {
        let log = LogConnector::in_memory();
        log.send(&[message("x"), message("y")]).await;
        log.send(&[message("x")]).await;
        assert_eq!(log.count_by_key().unwrap(), BTreeMap::from([("x".into(), 1), ("y".into(), 1)]));
        assert_eq!(log.entries().unwrap()[1].key, "y");
        assert_eq!(log.name(), "log");
    }
}
