//! Renderers. Every renderer is a pure function of the report, so outputs are snapshot-tested.

mod human;
mod sarif;

pub use human::{human, HumanOptions};
pub use sarif::sarif;

use crate::Report;

/// The versioned JSON document (`docs/report-schema.md`).
pub fn json(report: &Report) -> String {
    // Serialising plain data into a String cannot fail.
    let mut s = serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// Output formats shared by the commands that emit a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Sarif,
}
