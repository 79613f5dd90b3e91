//! Turning a finished report into output and an exit status, the same way for every command.

use crate::cli::{ColorArg, FormatArg, ReportArgs};
use anyhow::Context;
use needle_report::render::{self, HumanOptions};
use needle_report::{ExitStatus, Outcome, Policy, Report, Rule, Severity};
use std::io::{IsTerminal, Write};
use std::path::Path;

/// Loads the policy: `--config FILE`, else `./needle.toml` when present, else the default.
/// Never from the inspected artifact: a model must not be able to configure its own scanner.
pub fn load_policy(args: &ReportArgs, catalogue: &[&Rule]) -> anyhow::Result<Policy> {
    match &args.config {
        Some(path) => Ok(Policy::load(path, catalogue)?),
        None => {
            let default = Path::new("needle.toml");
            if default.is_file() {
                Ok(Policy::load(default, catalogue)?)
            } else {
                Ok(Policy::default())
            }
        }
    }
}

/// Applies the policy, renders, writes, and returns the exit status.
pub fn finish(
    mut report: Report,
    args: &ReportArgs,
    policy: &Policy,
    catalogue: &[&Rule],
    preamble: Option<String>,
) -> anyhow::Result<ExitStatus> {
    policy.apply(&mut report);
    let fail_on = args.fail_on.or(policy.fail_on).unwrap_or(Severity::High);
    let outcome = Outcome::judge(&report, fail_on);
    let to_terminal = args.output.is_none() && std::io::stdout().is_terminal();
    let color = match args.color {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => to_terminal && std::env::var_os("NO_COLOR").is_none(),
    };
    let text = match args.format {
        FormatArg::Human => {
            let mut s = render::human(&report, &HumanOptions { color, preamble });
            s.push_str(&verdict_line(&outcome));
            s
        }
        FormatArg::Json => render::json(&report),
        FormatArg::Sarif => render::sarif(&report, catalogue),
    };
    match &args.output {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`needle inspect x | head`) is not an error worth a message.
            if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e).context("writing the report");
                }
            }
        }
    }
    Ok(outcome.status)
}

fn verdict_line(outcome: &Outcome) -> String {
    match outcome.status {
        ExitStatus::Clean => format!("verdict: pass (nothing at or above {})\n", outcome.fail_on),
        ExitStatus::Findings => format!("verdict: FAIL (findings at or above {})\n", outcome.fail_on),
        ExitStatus::Error => "verdict: INCOMPLETE (some content could not be examined; not a pass)\n".to_string(),
    }
}
