//! `siyu import FILE`: streams NDJSON or CSV into a tenant's log. Files larger than memory are
//! fine (one chunk in memory at a time), bad lines are reported with their line number while good
//! ones are kept, and a re-run is idempotent (`message_id`, or a hash of the line when absent).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use siyu_engine::Engine;
use siyu_engine::Ingested;
use siyu_model::event::{parse_native, TimeLimits};
use siyu_model::{Event, Millis, TenantId};

use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to import (`-` for standard input, read as NDJSON).
    pub file: PathBuf,
    /// Tenant name or id.
    #[arg(long)]
    pub tenant: String,
    /// ndjson | csv (default: from the file extension).
    #[arg(long)]
    pub format: Option<Format>,
    /// Write every rejected line (line number, code, field, message) to this NDJSON file.
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Ndjson,
    Csv,
}

/// One refused line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rejected {
    pub line: u64,
    pub code: String,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct ImportReport {
    pub lines: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: Vec<Rejected>,
    pub seconds: f64,
}

const CHUNK: usize = 10_000;
/// Chunks queued in the pipeline at once: enough to keep parsing, committing and applying busy.
const IN_FLIGHT: usize = 4;

pub async fn run(settings: &Settings, args: Args) -> anyhow::Result<ExitCode> {
    let engine = super::open_engine(settings).await?;
    let tenant = super::find_tenant(&engine, &args.tenant).await?;
    let format = match args.format {
        Some(f) => f,
        None if args.file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) => Format::Csv,
        None => Format::Ndjson,
    };
    let (input, size): (Box<dyn Read + Send>, u64) = if args.file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), 0)
    } else {
        let file =
            std::fs::File::open(&args.file).with_context(|| format!("failed to open {}", args.file.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(file), size)
    };
    let progress = progress_bar(size, args.quiet);
    let report = import(&engine, tenant, input, format, engine.config().time_limits, &progress).await?;
    progress.finish_and_clear();
    print_report(&args.file, &report);
    if let Some(path) = &args.rejects {
        write_rejects(path, &report.rejected)?;
    }
    engine.shutdown();
    Ok(if report.rejected.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

pub fn progress_bar(bytes: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = if bytes > 0 { ProgressBar::new(bytes) } else { ProgressBar::new_spinner() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}")
            .expect("valid template"),
    );
    bar
}

/// Streams `input` into the tenant's log; usable by the demo and the benchmarks too.
pub async fn import(
    engine: &Arc<Engine>,
    tenant: TenantId,
    input: Box<dyn Read + Send>,
    format: Format,
    limits: TimeLimits,
    progress: &ProgressBar,
) -> anyhow::Result<ImportReport> {
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<Chunk>>(IN_FLIGHT);
    let reader = std::thread::spawn(move || {
        let result = match format {
            Format::Ndjson => read_ndjson(input, limits, &tx),
            Format::Csv => read_csv(input, limits, &tx),
        };
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let mut report = ImportReport::default();
    let mut pending = VecDeque::new();
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk?;
        report.lines = chunk.last_line;
        report.rejected.extend(chunk.rejected);
        progress.set_position(chunk.bytes_read);
        pending.push_back(engine.submit(tenant, "import", chunk.events).await?);
        if pending.len() >= IN_FLIGHT {
            tally(&mut report, pending.pop_front().expect("non-empty").wait().await?);
        }
    }
    for p in pending {
        tally(&mut report, p.wait().await?);
    }
    reader.join().map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn tally(report: &mut ImportReport, outcomes: Vec<Ingested>) {
    for outcome in outcomes {
        match outcome {
            Ingested::Appended(_) => report.accepted += 1,
            Ingested::Duplicate => report.duplicates += 1,
        }
    }
}

struct Chunk {
    events: Vec<Event>,
    rejected: Vec<Rejected>,
    last_line: u64,
    bytes_read: u64,
}

fn reject(line: u64, e: siyu_model::EventError) -> Rejected {
    Rejected { line, code: e.code.to_string(), field: e.field, message: e.message }
}

fn read_ndjson(
    input: Box<dyn Read + Send>,
    limits: TimeLimits,
    tx: &tokio::sync::mpsc::Sender<anyhow::Result<Chunk>>,
) -> anyhow::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut buf = Vec::with_capacity(4096);
    let (mut line, mut bytes) = (0u64, 0u64);
    let mut chunk = Chunk { events: Vec::with_capacity(CHUNK), rejected: Vec::new(), last_line: 0, bytes_read: 0 };
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).context("failed to read the input")?;
        if n == 0 {
            break;
        }
        line += 1;
        bytes += n as u64;
        let now = Millis::now();
        match std::str::from_utf8(&buf) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => match parse_native(text.trim_end(), now, limits) {
                Ok(event) => chunk.events.push(event),
                Err(e) => chunk.rejected.push(reject(line, e)),
            },
            Err(e) => chunk.rejected.push(Rejected {
                line,
                code: "invalid_encoding".into(),
                field: String::new(),
                message: format!("line is not UTF-8 ({e}); convert the file, e.g. iconv -f GBK -t UTF-8"),
            }),
        }
        if chunk.events.len() >= CHUNK {
            chunk.last_line = line;
            chunk.bytes_read = bytes;
            let full = std::mem::replace(
                &mut chunk,
                Chunk { events: Vec::with_capacity(CHUNK), rejected: Vec::new(), last_line: 0, bytes_read: 0 },
            );
            if tx.blocking_send(Ok(full)).is_err() {
                return Ok(()); // the importer stopped (it reports its own error)
            }
        }
    }
    chunk.last_line = line;
    chunk.bytes_read = bytes;
    let _ = tx.blocking_send(Ok(chunk));
    Ok(())
}

/// CSV columns: the native field names (`message_id`, `type`, `channel`, `account`, `timestamp`,
/// `amount`, `currency`), `source_kind`/`source_id`, identity kinds as columns (`user_id`,
/// `phone`, … or `identities.KIND`), and `properties.KEY` / `traits.KEY` for the rest.
fn read_csv(
    input: Box<dyn Read + Send>,
    limits: TimeLimits,
    tx: &tokio::sync::mpsc::Sender<anyhow::Result<Chunk>>,
) -> anyhow::Result<()> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(BufReader::with_capacity(1 << 20, input));
    let headers = reader.byte_headers().context("failed to read the CSV header")?.clone();
    let headers: Vec<String> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            std::str::from_utf8(h)
                .map(|s| s.trim().trim_start_matches('\u{feff}').to_string())
                .map_err(|_| anyhow::anyhow!("line 1: header {} is not UTF-8", i + 1))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(headers.iter().any(|h| h == "type"), "line 1: the CSV header needs a `type` column");
    let mut chunk = Chunk { events: Vec::with_capacity(CHUNK), rejected: Vec::new(), last_line: 0, bytes_read: 0 };
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                chunk.rejected.push(Rejected {
                    line,
                    code: "invalid_csv".into(),
                    field: String::new(),
                    message: e.to_string(),
                });
                continue;
            }
        }
        let line = record.position().map(|p| p.line()).unwrap_or(line);
        match csv_row_to_json(&headers, &record) {
            Ok(json) => match parse_native(&json, Millis::now(), limits) {
                Ok(event) => chunk.events.push(event),
                Err(e) => chunk.rejected.push(reject(line, e)),
            },
            Err(rejected) => chunk.rejected.push(Rejected { line, ..rejected }),
        }
        if chunk.events.len() >= CHUNK {
            chunk.last_line = line;
            chunk.bytes_read = reader.position().byte();
            let full = std::mem::replace(
                &mut chunk,
                Chunk { events: Vec::with_capacity(CHUNK), rejected: Vec::new(), last_line: 0, bytes_read: 0 },
            );
            if tx.blocking_send(Ok(full)).is_err() {
                return Ok(());
            }
        }
    }
    chunk.last_line = reader.position().line();
    chunk.bytes_read = reader.position().byte();
    let _ = tx.blocking_send(Ok(chunk));
    Ok(())
}

const ENVELOPE: [&str; 7] = ["message_id", "type", "channel", "account", "timestamp", "amount", "currency"];

fn csv_row_to_json(headers: &[String], record: &csv::ByteRecord) -> Result<String, Rejected> {
    use serde_json::{Map, Value};
    let mut event = Map::new();
    let mut identities = Map::new();
    let mut properties = Map::new();
    let mut traits = Map::new();
    let (mut source_kind, mut source_id) = (None, None);
    for (i, raw) in record.iter().enumerate() {
        let Some(header) = headers.get(i) else { continue };
        let value = std::str::from_utf8(raw).map_err(|_| Rejected {
            line: 0,
            code: "invalid_encoding".into(),
            field: header.clone(),
            message: "cell is not UTF-8; convert the file, e.g. iconv -f GBK -t UTF-8".into(),
        })?;
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let text = Value::String(value.to_string());
        if ENVELOPE.contains(&header.as_str()) {
            // Amount goes in as a number token so money parsing stays exact.
            let v = if header == "amount" {
                value.parse::<serde_json::Number>().map(Value::Number).unwrap_or(text)
            } else {
                text
            };
            event.insert(header.clone(), v);
        } else if header == "source_kind" {
            source_kind = Some(value.to_string());
        } else if header == "source_id" {
            source_id = Some(value.to_string());
        } else if let Some(key) = header.strip_prefix("properties.") {
            properties.insert(key.to_string(), text);
        } else if let Some(key) = header.strip_prefix("traits.") {
            traits.insert(key.to_string(), text);
        } else {
            let kind = header.strip_prefix("identities.").unwrap_or(header);
            identities.insert(kind.to_string(), text);
        }
    }
    if !identities.is_empty() {
        event.insert("identities".into(), Value::Object(identities));
    }
    if !properties.is_empty() {
        event.insert("properties".into(), Value::Object(properties));
    }
    if !traits.is_empty() {
        event.insert("traits".into(), Value::Object(traits));
    }
    if let Some(kind) = source_kind {
        event.insert("source".into(), serde_json::json!({"kind": kind, "id": source_id.unwrap_or_default()}));
    }
    Ok(Value::Object(event).to_string())
}

fn print_report(path: &Path, report: &ImportReport) {
    let rate = (report.accepted + report.duplicates) as f64 / report.seconds.max(1e-9);
    eprintln!(
        "{}: {} lines, {} appended, {} duplicates skipped, {} rejected in {:.2}s ({:.0} events/s)",
        path.display(),
        report.lines,
        report.accepted,
        report.duplicates,
        report.rejected.len(),
        report.seconds,
        rate
    );
    for r in report.rejected.iter().take(20) {
        let field = if r.field.is_empty() { String::new() } else { format!(" ({})", r.field) };
        eprintln!("{}:{}: {}{}: {}", path.display(), r.line, r.code, field, r.message);
    }
    if report.rejected.len() > 20 {
        eprintln!("… and {} more rejected lines (use --rejects FILE for all)", report.rejected.len() - 20);
    }
}

fn write_rejects(path: &Path, rejected: &[Rejected]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("failed to create {}", path.display()))?,
    );
    for r in rejected {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
