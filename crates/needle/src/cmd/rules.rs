use clap::Args;
use needle_report::ExitStatus;

#[derive(Debug, Args)]
pub struct RulesArgs {
    /// Print the catalogue as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: RulesArgs) -> anyhow::Result<ExitStatus> {
    let rules = catalogue();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rules)?);
    } else {
        for r in &rules {
            println!("{:<40} {:<8} {}\n{:<49} fix: {}", r.code, r.severity.as_str(), r.summary, "", r.fix);
        }
    }
    Ok(ExitStatus::Clean)
}

/// Every rule of every command.
pub fn catalogue() -> Vec<&'static needle_report::Rule> {
    let mut all = needle_artifact::rules();
    all.extend(needle_sign::rules());
    all.extend_from_slice(super::scan::RULES);
    all.sort_by_key(|r| r.code);
    all.dedup_by_key(|r| r.code);
    all
}
