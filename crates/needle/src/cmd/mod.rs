//! One module per subcommand; each turns its arguments into library calls.

pub mod inspect;
pub mod rules;

use crate::cli::{Cli, Command};
use needle_report::ExitStatus;

pub fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Rules(args) => rules::run(args),
    }
}
