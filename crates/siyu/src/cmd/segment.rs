//! `siyu segment create|list|show|delete|export`: segments from the command line, checked exactly
//! as the API checks them (condition errors with line and column).

use std::process::ExitCode;

use siyu_engine::segments::ops::ExportFormat;
use siyu_engine::EngineError;

use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a segment from a condition (see docs/conditions.md).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        condition: String,
    },
    /// List segments with their sizes.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Show a segment (by id or name) and a sample of members; with --condition, preview instead.
    Show {
        #[arg(long)]
        tenant: String,
        #[arg(long, required_unless_present = "condition")]
        name: Option<String>,
        #[arg(long)]
        condition: Option<String>,
        /// Evaluate as of this RFC 3339 time: only events up to it count.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Delete a segment (by id or name).
    Delete {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
    },
    /// Write a segment's members as CSV or NDJSON to stdout.
    Export {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// csv | ndjson
        #[arg(long, default_value = "csv")]
        format: String,
        /// Comma-separated fields, e.g. id,phone,tier,traits.city
        #[arg(long, default_value = "id")]
        fields: String,
        /// Who met the condition at this RFC 3339 time, with their values then (default: now).
        #[arg(long)]
        as_of: Option<String>,
    },
}

fn parse_as_of(text: Option<&str>) -> anyhow::Result<Option<siyu_model::Millis>> {
    text.map(|t| {
        siyu_model::Millis::parse_rfc3339(t).ok_or_else(|| anyhow::anyhow!("--as-of {t:?} is not an RFC 3339 time"))
    })
    .transpose()
}

fn explain(e: EngineError) -> anyhow::Error {
    match e {
        EngineError::Segments(siyu_engine::segments::ops::SegmentsError::InvalidCondition(errors)) => {
            let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            anyhow::anyhow!("the condition is not valid:\n{}", lines.join("\n"))
        }
        other => other.into(),
    }
}

pub async fn run(settings: &Settings, command: Command) -> anyhow::Result<ExitCode> {
    let engine = super::open_engine(settings).await?;
    let find = |tenant: siyu_model::TenantId, name: &str| -> anyhow::Result<i64> {
        let segments = engine.segments(tenant)?;
        segments
            .iter()
            .find(|s| s.name == name || s.id.to_string() == name)
            .map(|s| s.id)
            .ok_or_else(|| anyhow::anyhow!("no segment named {name:?} (see `siyu segment list`)"))
    };
    match command {
        Command::Create { tenant, name, condition } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            let segment = engine.create_segment(tenant, &name, &condition).await.map_err(explain)?;
            println!("segment {} (id {}): {} members", segment.name, segment.id, segment.size);
            println!("condition: {}", segment.condition);
        }
        Command::List { tenant } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            println!("{:>4}  {:<24} {:>10}  condition", "id", "name", "members");
            for s in engine.segments(tenant)? {
                println!("{:>4}  {:<24} {:>10}  {}", s.id, s.name, s.size, s.condition);
            }
        }
        Command::Show { tenant, name, condition, as_of } => {
            let as_of = parse_as_of(as_of.as_deref())?;
            let tenant = super::find_tenant(&engine, &tenant).await?;
            let text = match (condition, name) {
                (Some(condition), _) => condition,
                (None, Some(name)) => engine.segment(tenant, find(tenant, &name)?)?.condition,
                (None, None) => anyhow::bail!("give --name or --condition"),
            };
            let preview = engine.preview_segment(tenant, &text, 10, as_of).map_err(explain)?;
            println!("condition: {}", preview.condition);
            println!("members:   {}", preview.size);
            for row in preview.sample {
                println!("  {:>8}  {:<10} {:<10} {}", row.id, row.tier, row.pool_stage, row.identities.join(" "));
            }
        }
        Command::Delete { tenant, name } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            engine.delete_segment(tenant, find(tenant, &name)?).await?;
            println!("deleted");
        }
        Command::Export { tenant, name, format, fields, as_of } => {
            let as_of = parse_as_of(as_of.as_deref())?;
            let tenant = super::find_tenant(&engine, &tenant).await?;
            let format = match format.as_str() {
                "csv" => ExportFormat::Csv,
                "ndjson" => ExportFormat::Ndjson,
                other => anyhow::bail!("--format must be csv or ndjson, not {other:?}"),
            };
            let fields: Vec<String> =
                fields.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect();
            print!("{}", engine.export_segment(tenant, find(tenant, &name)?, format, &fields, as_of).map_err(explain)?);
        }
    }
    engine.shutdown();
    Ok(ExitCode::SUCCESS)
}
