use clap::Args;
use needle_report::ExitStatus;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model folder or file
    pub path: PathBuf,
}

pub fn run(_args: GenerateArgs) -> anyhow::Result<ExitStatus> {
    anyhow::bail!("`needle generate` is not implemented yet")
}
