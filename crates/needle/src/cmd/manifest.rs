use clap::Args;
use needle_report::ExitStatus;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// Model folder or file
    pub path: PathBuf,
}

pub fn run(_args: ManifestArgs) -> anyhow::Result<ExitStatus> {
    anyhow::bail!("`needle manifest` is not implemented yet")
}
