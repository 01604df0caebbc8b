//! `siyu serve`.

use std::process::ExitCode;

use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen address (overrides server.bind).
    #[arg(long)]
    pub bind: Option<String>,
}

pub async fn run(settings: &Settings, _args: Args) -> anyhow::Result<ExitCode> {
    let engine = super::open_engine(settings).await?;
    eprintln!("siyu listening on http://{}  (store: {})", settings.server.bind, super::redact(&settings.store.url));
    super::serve(engine, &settings.server.bind, settings.dispatcher_config()).await?;
    Ok(ExitCode::SUCCESS)
}
