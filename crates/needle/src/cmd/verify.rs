use clap::Args;
use needle_report::ExitStatus;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Model folder or file
    pub path: PathBuf,
}

pub fn run(_args: VerifyArgs) -> anyhow::Result<ExitStatus> {
    anyhow::bail!("`needle verify` is not implemented yet")
}
