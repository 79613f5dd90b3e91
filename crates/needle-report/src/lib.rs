//! The report model shared by every needle command.
//!
//! A command produces a [`Report`]: a list of [`Finding`]s (data: something is wrong with the
//! artifact) and a list of [`Failure`]s (the command could not look at something). Findings carry
//! a stable kebab-case code grouped by family (`pickle/unsafe-global`), a [`Severity`], where it
//! was found, evidence and a one-line fix. Rules are declared once as `static` [`Rule`]s next to
//! the check that emits them, so the catalogue (`needle rules`, SARIF `rules`) cannot drift from
//! the checks.
//!
//! [`Policy`] is `needle.toml` validated: severity overrides, ignores (each with a reason) and the
//! fail level. [`Outcome`] turns a report plus a policy into the exit status every command shares.

mod finding;
mod outcome;
mod policy;
pub mod render;

pub use finding::{Failure, Finding, Location, Rule, Severity};
pub use outcome::{ExitStatus, Outcome};
pub use policy::{Policy, PolicyError, SuppressedFinding};

use serde::Serialize;

/// Version of the JSON report schema (`docs/report-schema.md`). Bumped on any incompatible change.
pub const SCHEMA_VERSION: &str = "1.0.0";

/// The result of one needle command over one target.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `needle`.
    pub tool: &'static str,
    /// needle's version.
    pub tool_version: &'static str,
    /// See [`SCHEMA_VERSION`].
    pub schema_version: &'static str,
    /// The subcommand that produced this report (`inspect`, `verify`, `scan`, ...).
    pub command: String,
    /// The path the user gave.
    pub target: String,
    /// Command-specific structured facts (the inventory for `inspect`, the manifest for `verify`).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub facts: serde_json::Value,
    /// What is wrong with the artifact, most severe first once [`Report::sort`] ran.
    pub findings: Vec<Finding>,
    /// Findings that matched an ignore in `needle.toml` (kept for the record).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<SuppressedFinding>,
    /// What could not be examined. Any failure makes the result inconclusive (exit 2).
    pub failures: Vec<Failure>,
}

impl Report {
    pub fn new(command: impl Into<String>, target: impl Into<String>) -> Self {
        Report {
            tool: "needle",
            tool_version: env!("CARGO_PKG_VERSION"),
            schema_version: SCHEMA_VERSION,
            command: command.into(),
            target: target.into(),
            facts: serde_json::Value::Null,
            findings: Vec::new(),
            suppressed: Vec::new(),
            failures: Vec::new(),
        }
    }

    pub fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    pub fn fail(&mut self, failure: Failure) {
        self.failures.push(failure);
    }

    pub fn extend(&mut self, findings: impl IntoIterator<Item = Finding>) {
        self.findings.extend(findings);
    }

    /// Most severe first, then by file, location and code, so output is stable.
    pub fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.location.file.cmp(&b.location.file))
                .then_with(|| a.location.at.cmp(&b.location.at))
                .then_with(|| a.code.cmp(&b.code))
                .then_with(|| a.message.cmp(&b.message))
        });
        self.failures
            .sort_by(|a, b| a.file.cmp(&b.file).then_with(|| a.message.cmp(&b.message)));
    }

    /// The highest severity among findings, if any.
    pub fn max_severity(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}
