//! `siyu bench`: placeholder replaced below.
use std::process::ExitCode;

use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_settings: &Settings, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
