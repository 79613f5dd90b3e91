use anyhow::Context;
use clap::Args;
use needle_artifact::{inspect, Target};
use needle_report::ExitStatus;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct BomArgs {
    /// Model folder or file
    pub path: PathBuf,
    /// Write the BOM to FILE instead of standard output
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(args: BomArgs) -> anyhow::Result<ExitStatus> {
    let target = Target::open(&args.path)?;
    let files = target.walk()?;
    let inspection = inspect(&files);
    let bom = needle_sign::bom::build(&args.path, &inspection.inventory)
        .with_context(|| format!("building the BOM of {}", args.path.display()))?;
    let text = serde_json::to_string_pretty(&bom)? + "\n";
    match &args.output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    // What could not be inspected makes the BOM incomplete: say so and exit 2.
    for f in &inspection.failures {
        eprintln!("needle: warning: {}{}", f.file.as_deref().map(|p| format!("{p}: ")).unwrap_or_default(), f.message);
    }
    Ok(if inspection.failures.is_empty() { ExitStatus::Clean } else { ExitStatus::Error })
}
