use clap::Args;
use needle_report::ExitStatus;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct BomArgs {
    /// Model folder or file
    pub path: PathBuf,
}

pub fn run(_args: BomArgs) -> anyhow::Result<ExitStatus> {
    anyhow::bail!("`needle bom` is not implemented yet")
}
