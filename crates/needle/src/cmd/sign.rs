use clap::Args;
use needle_report::ExitStatus;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Model folder or file
    pub path: PathBuf,
}

pub fn run(_args: SignArgs) -> anyhow::Result<ExitStatus> {
    anyhow::bail!("`needle sign` is not implemented yet")
}
