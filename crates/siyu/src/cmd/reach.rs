//! `siyu template ...` and `siyu campaign ...`: message templates and campaigns from the command
//! line, checked exactly as the API checks them (template errors with field, line and column).

use std::process::ExitCode;

use anyhow::Context;
use siyu_engine::reach::ReachError;
use siyu_engine::EngineError;
use siyu_model::reach::template::TemplateDef;
use siyu_model::reach::CampaignSpec;

use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum TemplateCommand {
    /// Save a template from a JSON file (docs/templates.md).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// A JSON file with the definition: {"purpose": ..., "vars": [...], "variants": {...}}.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Render a template for a real profile.
    Preview {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: i64,
        #[arg(long)]
        profile: u32,
        #[arg(long, default_value = "other")]
        channel: String,
        /// Campaign variables, `name=value`, repeatable.
        #[arg(long = "var")]
        vars: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CampaignCommand {
    /// Create a campaign from a JSON spec file (docs/reach.md); `--dry-run` only reports.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        file: std::path::PathBuf,
        /// Report recipients and held-back counts per rule, create nothing.
        #[arg(long)]
        dry_run: bool,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Progress and results of a campaign.
    Show {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: i64,
    },
    /// Plan a campaign now; a running `siyu serve` delivers it (or pass --deliver).
    Send {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: i64,
        /// Deliver here until the outbox of the campaign is empty.
        #[arg(long)]
        deliver: bool,
    },
    Cancel {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: i64,
    },
}

fn explain(e: EngineError) -> anyhow::Error {
    match e {
        EngineError::Reach(ReachError::InvalidTemplate(errors)) => {
            let lines: Vec<String> = errors
                .iter()
                .map(|e| format!("  {} line {}, column {}: {} ({})", e.field, e.line, e.column, e.message, e.code))
                .collect();
            anyhow::anyhow!("the template is not valid:\n{}", lines.join("\n"))
        }
        other => other.into(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))
}

pub async fn run_template(settings: &Settings, command: TemplateCommand) -> anyhow::Result<ExitCode> {
    let engine = super::open_engine(settings).await?;
    match command {
        TemplateCommand::Create { tenant, name, file } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            let def: TemplateDef = read_json(&file)?;
            let view = engine.create_template(tenant, &name, &def).await.map_err(explain)?;
            println!("template {} (id {}) saved", view.name, view.id);
        }
        TemplateCommand::List { tenant } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            for t in engine.templates(tenant).await? {
                println!("{:>4}  {:<32} {}", t.id, t.name, t.definition.purpose.as_str());
            }
        }
        TemplateCommand::Preview { tenant, id, profile, channel, vars } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            let channel =
                siyu_model::Channel::parse(&channel).with_context(|| format!("unknown channel {channel:?}"))?;
            let vars = vars
                .iter()
                .map(|v| v.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect::<Option<_>>()
                .context("--var takes name=value")?;
            let content = engine
                .preview_template(tenant, id, &siyu_engine::query::ProfileRef::Id(profile), channel, &vars)
                .await
                .map_err(explain)?;
            println!("{}", serde_json::to_string_pretty(&content)?);
        }
    }
    engine.shutdown();
    Ok(ExitCode::SUCCESS)
}

pub async fn run_campaign(settings: &Settings, command: CampaignCommand) -> anyhow::Result<ExitCode> {
    let engine = super::open_engine(settings).await?;
    match command {
        CampaignCommand::Create { tenant, name, file, dry_run } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            let spec: CampaignSpec = read_json(&file)?;
            let dry = engine.dry_run(tenant, &spec).await.map_err(explain)?;
            println!("audience {}, holdout {}, would send {}", dry.audience, dry.holdout, dry.would_send);
            for (rule, n) in &dry.held {
                println!("  held back by {rule:<28} {n:>8}");
            }
            if dry.staff_confirms {
                println!("  each staff member confirms the send in WeCom (群发助手)");
            }
            if !dry_run {
                let view = engine.create_campaign(tenant, &name, &spec).await.map_err(explain)?;
                println!("campaign {} (id {}) scheduled for {}", view.name, view.id, view.send_at);
            }
        }
        CampaignCommand::List { tenant } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            for c in engine.campaigns(tenant).await? {
                println!("{:>4}  {:<32} {:<10} {:>8}  {}", c.id, c.name, c.state.as_str(), c.planned, c.send_at);
            }
        }
        CampaignCommand::Show { tenant, id } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            print_report(&engine.campaign_report(tenant, id).await?);
        }
        CampaignCommand::Send { tenant, id, deliver } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            let plan = engine.plan_campaign(tenant, id).await.map_err(explain)?;
            println!("queued {}, held {}, holdout {}, resumed {}", plan.queued, plan.held, plan.holdout, plan.resumed);
            if deliver {
                let dispatcher = siyu_outbox::Dispatcher::new(engine.clone(), settings.dispatcher_config());
                loop {
                    let tick = dispatcher.tick(tenant).await?;
                    if tick.claimed == 0 && tick.planned == 0 {
                        break;
                    }
                }
                print_report(&engine.campaign_report(tenant, id).await?);
            }
        }
        CampaignCommand::Cancel { tenant, id } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            println!("cancelled; {} queued messages will not go out", engine.cancel_campaign(tenant, id).await?);
        }
    }
    engine.shutdown();
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &siyu_engine::reach::CampaignReport) {
    println!("campaign {} {:?}: {}", r.campaign.id, r.campaign.name, r.campaign.state.as_str());
    println!("  planned {}  sent {}  delivered {}  failed {}", r.planned, r.sent, r.delivered, r.failed);
    for (code, n) in &r.failures {
        println!("  failed with {code:<24} {n:>8}");
    }
    for (rule, n) in &r.held {
        println!("  held back by {rule:<24} {n:>8}");
    }
    let c = &r.conversions;
    println!(
        "  conversions within {} days: receivers {}/{}, holdout {}/{}, lift {}",
        c.attribution_days,
        c.receivers_converted,
        c.receivers,
        c.holdout_converted,
        c.holdout,
        c.lift_points.map_or("-".to_string(), |l| format!("{l:+.2} points"))
    );
}
