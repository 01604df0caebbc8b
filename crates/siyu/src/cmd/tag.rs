//! `siyu tag create|list|add|remove|import`: tags from the command line, checked exactly as the API
//! checks them. Manual operations are recorded with actor `cli`.

use std::path::PathBuf;
use std::process::ExitCode;

use siyu_engine::query::ProfileRef;
use siyu_engine::segments::ops::{SegmentsError, TagAction};
use siyu_engine::{Engine, EngineError};
use siyu_model::{Identity, TenantId};

use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a tag; with --condition a rule tag, applied and removed by its condition.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// A tag group, by name or id.
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        condition: Option<String>,
    },
    /// List tags with how many profiles carry each.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Put a tag on the profile holding an identity (`kind:value`, e.g. `phone:13800138000`).
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        identity: String,
    },
    /// Take a tag off the profile holding an identity.
    Remove {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        identity: String,
    },
    /// Tag profiles from a CSV file: identity columns (user_id, phone, …), a `tag` column and an
    /// optional `action` column (add | remove, default add). Bad rows are reported with their line
    /// numbers and the good ones applied; re-running the file changes nothing more.
    Import {
        #[arg(long)]
        tenant: String,
        file: PathBuf,
    },
}

fn explain(e: EngineError) -> anyhow::Error {
    match e {
        EngineError::Segments(SegmentsError::InvalidCondition(errors)) => {
            let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            anyhow::anyhow!("the condition is not valid:\n{}", lines.join("\n"))
        }
        other => other.into(),
    }
}

fn parse_identity(text: &str) -> anyhow::Result<Identity> {
    let (kind, value) =
        text.split_once(':').ok_or_else(|| anyhow::anyhow!("an identity is kind:value, e.g. user_id:u1"))?;
    Ok(Identity::parse(kind.trim(), value.trim())?)
}

/// Applies one tag change to the profile holding `identity`, unless it is already in effect.
/// Returns whether anything changed.
async fn tag_one(
    engine: &Engine,
    tenant: TenantId,
    identity: &Identity,
    name: &str,
    action: TagAction,
) -> Result<bool, String> {
    let current = engine.profile_tags(tenant, &ProfileRef::Identity(identity.clone())).map_err(|e| match e {
        EngineError::NoSuchProfile(_) => format!("no profile holds {identity}"),
        other => other.to_string(),
    })?;
    let carries = current.tags.iter().any(|t| t == name);
    if carries == (action == TagAction::Add)
        && engine.tags(tenant).is_ok_and(|tags| tags.iter().any(|t| t.name == name))
    {
        return Ok(false);
    }
    engine
        .tag_profiles(tenant, &[current.profile_id], &[(name.to_string(), action)], "cli")
        .await
        .map(|_| true)
        .map_err(|e| e.to_string())
}

/// Tags profiles from a CSV file; returns (changed, unchanged, bad rows as `line: message`).
async fn import(engine: &Engine, tenant: TenantId, file: &PathBuf) -> anyhow::Result<(u64, u64, Vec<String>)> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_path(file)?;
    let headers: Vec<String> = reader.headers()?.iter().map(|h| h.trim().to_string()).collect();
    let tag_column = headers
        .iter()
        .position(|h| h == "tag")
        .ok_or_else(|| anyhow::anyhow!("{}: no `tag` column", file.display()))?;
    let action_column = headers.iter().position(|h| h == "action");
    let identity_columns: Vec<(usize, &str)> = headers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != tag_column && Some(*i) != action_column)
        .map(|(i, h)| (i, h.as_str()))
        .collect();
    if identity_columns.is_empty() {
        anyhow::bail!("{}: no identity columns (user_id, phone, …)", file.display());
    }
    let (mut changed, mut unchanged, mut bad) = (0, 0, Vec::new());
    for (index, row) in reader.records().enumerate() {
        let line = index + 2;
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                bad.push(format!("{line}: {e}"));
                continue;
            }
        };
        let cell = |i: usize| row.get(i).map(str::trim).unwrap_or("");
        let outcome = async {
            let name = cell(tag_column);
            if name.is_empty() {
                return Err("the tag is empty".to_string());
            }
            let action = match action_column.map(cell).unwrap_or("") {
                "" | "add" => TagAction::Add,
                "remove" => TagAction::Remove,
                other => return Err(format!("action must be add or remove, not {other:?}")),
            };
            let mut identities = Vec::new();
            for &(i, kind) in &identity_columns {
                if !cell(i).is_empty() {
                    identities.push(Identity::parse(kind, cell(i)).map_err(|e| format!("{kind}: {e}"))?);
                }
            }
            let identity = identities
                .iter()
                .find(|id| engine.profile_tags(tenant, &ProfileRef::Identity((*id).clone())).is_ok())
                .or(identities.first())
                .ok_or_else(|| "no identity in the row".to_string())?;
            tag_one(engine, tenant, identity, name, action).await
        }
        .await;
        match outcome {
            Ok(true) => changed += 1,
            Ok(false) => unchanged += 1,
            Err(message) => bad.push(format!("{line}: {message}")),
        }
    }
    Ok((changed, unchanged, bad))
}

async fn manual(engine: &Engine, tenant: &str, name: &str, identity: &str, action: TagAction) -> anyhow::Result<()> {
    let tenant = super::find_tenant(engine, tenant).await?;
    let identity = parse_identity(identity)?;
    let changed = tag_one(engine, tenant, &identity, name, action).await.map_err(|e| anyhow::anyhow!(e))?;
    println!("{}", if changed { "done" } else { "already so; nothing changed" });
    Ok(())
}

pub async fn run(settings: &Settings, command: Command) -> anyhow::Result<ExitCode> {
    let engine = super::open_engine(settings).await?;
    let mut code = ExitCode::SUCCESS;
    match command {
        Command::Create { tenant, name, group, condition } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            let group_id = match group {
                None => None,
                Some(group) => Some(
                    engine
                        .tag_groups(tenant)?
                        .iter()
                        .find(|g| g.name == group || g.id.to_string() == group)
                        .map(|g| g.id)
                        .ok_or_else(|| anyhow::anyhow!("no tag group named {group:?}"))?,
                ),
            };
            let tag = engine.create_tag(tenant, &name, group_id, condition.as_deref()).await.map_err(explain)?;
            println!("tag {} (id {}, {}): {} profiles", tag.name, tag.id, tag.kind, tag.profiles);
        }
        Command::List { tenant } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            println!("{:>4}  {:<24} {:<6} {:>10}  condition", "id", "name", "kind", "profiles");
            for t in engine.tags(tenant)? {
                let condition = t.condition.unwrap_or_default();
                println!("{:>4}  {:<24} {:<6} {:>10}  {condition}", t.id, t.name, t.kind, t.profiles);
            }
        }
        Command::Add { tenant, name, identity } => {
            manual(&engine, &tenant, &name, &identity, TagAction::Add).await?;
        }
        Command::Remove { tenant, name, identity } => {
            manual(&engine, &tenant, &name, &identity, TagAction::Remove).await?;
        }
        Command::Import { tenant, file } => {
            let tenant = super::find_tenant(&engine, &tenant).await?;
            let (changed, unchanged, bad) = import(&engine, tenant, &file).await?;
            for message in &bad {
                eprintln!("{}:{message}", file.display());
            }
            eprintln!("{changed} changed, {unchanged} already so, {} bad rows", bad.len());
            if !bad.is_empty() {
                code = ExitCode::from(3);
            }
        }
    }
    engine.shutdown();
    Ok(code)
}
