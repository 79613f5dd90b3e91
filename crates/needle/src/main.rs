//! The `needle` binary: parses arguments, runs a command from the libraries, maps the outcome
//! to the exit status (0 clean, 1 findings at or above the fail level, 2 could not finish).

mod cli;
mod cmd;
mod output;
mod watchdog;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    watchdog::start();
    match cmd::run(cli) {
        Ok(status) => ExitCode::from(status.code() as u8),
        Err(err) => {
            eprintln!("needle: error: {err:#}");
            ExitCode::from(needle_report::ExitStatus::Error.code() as u8)
        }
    }
}
