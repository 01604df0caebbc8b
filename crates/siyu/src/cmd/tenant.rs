//! `siyu tenant create|list|key`.

use std::process::ExitCode;

use siyu_engine::KeyRole;
use siyu_model::Industry;

use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a tenant; prints its write key (ingestion) and secret key (management) once.
    Create {
        #[arg(long)]
        name: String,
        /// heavy_decision | culture_entertainment | consumer_goods | local_life (or 重决策商品 ...)
        #[arg(long)]
        industry: Industry,
    },
    /// List tenants.
    List,
    /// Issue an additional key for a tenant (keys are stored hashed and cannot be shown again).
    Key {
        /// Tenant name or id.
        tenant: String,
        /// write | secret
        #[arg(long, default_value = "write")]
        kind: String,
    },
}

pub async fn run(settings: &Settings, command: Command) -> anyhow::Result<ExitCode> {
    let engine = super::open_engine(settings).await?;
    match command {
        Command::Create { name, industry } => {
            anyhow::ensure!(!name.trim().is_empty(), "--name must not be empty");
            let created = engine.create_tenant(name.trim(), industry).await?;
            println!("tenant     {} (id {}, {})", created.record.name, created.record.id, industry.label_zh());
            println!("write key  {}   (ingestion only: SDKs, /v1/*, POST /api/v1/events)", created.write_key);
            println!("secret key {}   (management API: keep it secret)", created.secret_key);
            println!("The keys are stored hashed and are shown only now.");
        }
        Command::List => {
            println!("{:>4}  {:<24} {:<22} {:>10}", "id", "name", "industry", "events");
            for record in engine.tenant_records().await? {
                let events = engine.logged_events(record.id).await?;
                println!("{:>4}  {:<24} {:<22} {:>10}", record.id, record.name, record.industry.as_str(), events);
            }
        }
        Command::Key { tenant, kind } => {
            let kind = match kind.as_str() {
                "write" => KeyRole::Write,
                "secret" => KeyRole::Secret,
                other => anyhow::bail!("--kind must be write or secret, not {other:?}"),
            };
            let id = super::find_tenant(&engine, &tenant).await?;
            println!("{}", engine.issue_key(id, kind).await?);
        }
    }
    engine.shutdown();
    Ok(ExitCode::SUCCESS)
}
