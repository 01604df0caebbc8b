//! `siyu`: the one binary — server, demo, import, simulation, rebuild and benchmarks.

mod cmd;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::settings::{FlagOverrides, ServerFlag, Settings, StoreFlag};

// Ingestion allocates many small strings per event; mimalloc measured markedly faster than the
// system allocator on the import and HTTP benchmarks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "siyu", version, about = "siyu (私域) — turn public-domain traffic into owned, loyal customers")]
struct Cli {
    /// Configuration file (default: ./siyu.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Store URL: a SQLite file path or postgres://… (overrides store.url and DATABASE_URL).
    #[arg(long, global = true, value_name = "URL")]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(cmd::serve::Args),
    /// Create a demo merchant with a simulated history, load it, print what to try, and serve.
    Demo(cmd::demo::Args),
    /// Manage tenants (经营者).
    #[command(subcommand)]
    Tenant(cmd::tenant::Command),
    /// Manage segments (人群): create, list, show/preview, delete, export.
    #[command(subcommand)]
    Segment(cmd::segment::Command),
    /// Manage tags (标签): create (manual or rule), list, add, remove, import from CSV.
    #[command(subcommand)]
    Tag(cmd::tag::Command),
    /// Manage message templates (内容库).
    #[command(subcommand)]
    Template(cmd::reach::TemplateCommand),
    /// Manage campaigns (群发): create with a dry run, send, show results, cancel.
    #[command(subcommand)]
    Campaign(cmd::reach::CampaignCommand),
    /// WeCom operations: contact ways (渠道活码) with attribution, contact sync, tags (mark_tag).
    #[command(subcommand)]
    Wecom(cmd::wecom::Command),
    /// Import NDJSON or CSV events into a tenant's log (streaming, idempotent).
    Import(cmd::import::Args),
    /// Write a simulated merchant's event stream as NDJSON.
    Simulate(cmd::simulate::Args),
    /// Replay the log into fresh profiles, verify them, and report the speed.
    Rebuild(cmd::rebuild::Args),
    /// Run a benchmark and print throughput and latency.
    Bench(cmd::bench::Args),
    /// Print the default configuration file.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Config) {
        print!("{}", settings::EXAMPLE);
        return ExitCode::SUCCESS;
    }
    let flags = FlagOverrides {
        store: cli.database.clone().map(|url| StoreFlag { url }),
        server: match &cli.command {
            Command::Serve(args) => args.bind.clone().map(|bind| ServerFlag { bind }),
            Command::Demo(args) => args.bind.clone().map(|bind| ServerFlag { bind }),
            _ => None,
        },
    };
    let settings = match Settings::load(cli.config.as_deref(), flags) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(&settings);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(&settings, args).await,
            Command::Demo(args) => cmd::demo::run(&settings, args).await,
            Command::Tenant(command) => cmd::tenant::run(&settings, command).await,
            Command::Segment(command) => cmd::segment::run(&settings, command).await,
            Command::Tag(command) => cmd::tag::run(&settings, command).await,
            Command::Template(command) => cmd::reach::run_template(&settings, command).await,
            Command::Campaign(command) => cmd::reach::run_campaign(&settings, command).await,
            Command::Wecom(command) => cmd::wecom::run(&settings, command).await,
            Command::Import(args) => cmd::import::run(&settings, args).await,
            Command::Simulate(args) => cmd::simulate::run(args),
            Command::Rebuild(args) => cmd::rebuild::run(&settings, args).await,
            Command::Bench(args) => cmd::bench::run(&settings, args).await,
            Command::Config => unreachable!("handled above"),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(settings: &Settings) {
    // sqlx logs every notice ("relation already exists, skipping") at info: keep it to warnings
    // unless asked for (RUST_LOG, or a log.level naming sqlx).
    let level = if settings.log.level.contains("sqlx") {
        settings.log.level.clone()
    } else {
        format!("{},sqlx=warn", settings.log.level)
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if settings.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
