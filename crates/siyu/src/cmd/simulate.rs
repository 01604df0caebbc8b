//! `siyu simulate`: a merchant's event stream (or the benchmark dataset) as NDJSON.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use siyu_model::{Industry, Millis};
use siyu_sim::SimConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// heavy_decision | culture_entertainment | consumer_goods | local_life
    #[arg(long, default_value = "consumer_goods")]
    pub industry: Industry,
    /// Days of history, ending now (or at --end).
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// People reached in the public domain over the period.
    #[arg(long, default_value_t = 20_000)]
    pub audience: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// End of the period (RFC 3339; default now).
    #[arg(long)]
    pub end: Option<String>,
    /// Output file (default standard output).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Instead of a merchant, write exactly this many benchmark events …
    #[arg(long, value_name = "N")]
    pub bench_events: Option<u64>,
    /// … over this many people.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub bench_people: u32,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let out: Box<dyn Write> = match &args.out {
        Some(path) => {
            Box::new(std::fs::File::create(path).with_context(|| format!("failed to create {}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let out = std::io::BufWriter::with_capacity(1 << 20, out);
    let started = std::time::Instant::now();
    let lines = if let Some(events) = args.bench_events {
        siyu_sim::generate_bench_dataset(events, args.bench_people, args.seed, out)?;
        events
    } else {
        let end = match &args.end {
            Some(text) => Millis::parse_rfc3339(text).with_context(|| format!("--end {text:?} is not RFC 3339"))?,
            None => Millis::now(),
        };
        let config =
            SimConfig { days: args.days, audience: args.audience, ..SimConfig::new(args.industry, args.seed, end) };
        siyu_sim::write_ndjson(&config, out)?
    };
    eprintln!("{lines} events in {:.2}s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
