//! One module per subcommand; each turns its arguments into library calls.

pub mod bom;
pub mod generate;
pub mod inspect;
pub mod manifest;
pub mod rules;
pub mod scan;
pub mod sign;
pub mod verify;
pub mod zoo;

use crate::cli::{Cli, Command};
use needle_report::ExitStatus;

pub fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Sign(args) => sign::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Manifest(args) => manifest::run(args),
        Command::Bom(args) => bom::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Zoo(args) => zoo::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Rules(args) => rules::run(args),
    }
}
