use crate::cli::ReportArgs;
use crate::output;
use clap::Args;
use needle_artifact::{inspect, Target};
use needle_report::{ExitStatus, Report};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A model folder, an adapter folder, or a single file (.safetensors, .gguf, .bin, .pt, .pkl, .npy, .zip, ...)
    pub path: PathBuf,
    #[command(flatten)]
    pub report: ReportArgs,
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitStatus> {
    let catalogue = super::rules::catalogue();
    let policy = output::load_policy(&args.report, &catalogue)?;
    let target = Target::open(&args.path)?;
    eprintln!("needle: inspecting {}", args.path.display());
    let files = target.walk()?;
    let inspection = inspect(&files);
    let mut report = Report::new("inspect", args.path.display().to_string());
    report.facts = serde_json::to_value(&inspection.inventory)?;
    report.extend(inspection.findings);
    for f in inspection.failures {
        report.fail(f);
    }
    let preamble = needle_artifact::inventory::render_text(&inspection.inventory);
    output::finish(report, &args.report, &policy, &catalogue, Some(preamble))
}
