use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// needle: can this model be trusted before it is deployed?
///
/// Exit status: 0 finished with nothing at or above the fail level; 1 finished with findings at
/// or above it; 2 could not finish (bad input, I/O, a check errored). A partial result is never
/// reported as clean.
#[derive(Debug, Parser)]
#[command(name = "needle", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inventory a model folder, adapter or file and flag anything dangerous to load or serve
    Inspect(crate::cmd::inspect::InspectArgs),
    /// Sign a model folder or file: an OpenSSF model-signing (OMS) Sigstore bundle
    Sign(crate::cmd::sign::SignArgs),
    /// Verify a model against an OMS signature: every changed, missing and extra file by name
    Verify(crate::cmd::verify::VerifyArgs),
    /// Print the OMS manifest (file names and digests) without signing
    Manifest(crate::cmd::manifest::ManifestArgs),
    /// Write a CycloneDX 1.6 ML-BOM describing the model and where it came from
    Bom(crate::cmd::bom::BomArgs),
    /// Look for a planted backdoor without knowing the trigger or the target
    Scan(crate::cmd::scan::ScanArgs),
    /// Build model organisms (backdoored, clean twins, hard negatives) from a zoo spec
    Zoo(crate::cmd::zoo::ZooArgs),
    /// Run a model: generate text from a prompt (greedy by default)
    Generate(crate::cmd::generate::GenerateArgs),
    /// List every finding code needle can report, with its severity and fix
    Rules(crate::cmd::rules::RulesArgs),
}

/// Options shared by every command that emits a report.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = FormatArg::Human)]
    pub format: FormatArg,
    /// Write the report to FILE instead of standard output
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Lowest severity that makes the exit status 1 [default: high, or fail_on in needle.toml]
    #[arg(long, value_name = "LEVEL", value_parser = parse_severity)]
    pub fail_on: Option<needle_report::Severity>,
    /// Policy file: severity overrides and ignores [default: ./needle.toml when present]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Colour in human output
    #[arg(long, value_enum, default_value_t = ColorArg::Auto)]
    pub color: ColorArg,
}

fn parse_severity(s: &str) -> Result<needle_report::Severity, String> {
    s.parse()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Human,
    Json,
    Sarif,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}
