use crate::{Report, Severity};
use std::fmt::Write;

#[derive(Debug, Clone, Default)]
pub struct HumanOptions {
    /// ANSI colours (the binary decides: a terminal, and `NO_COLOR` unset).
    pub color: bool,
    /// Command-specific text shown before the findings (the inventory for `inspect`).
    pub preamble: Option<String>,
}

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn sev(&self, s: Severity) -> String {
        let code = match s {
            Severity::Critical => "1;31",
            Severity::High => "31",
            Severity::Medium => "33",
            Severity::Low => "36",
            Severity::Info => "2",
        };
        self.wrap(code, &format!("{:<8}", s.as_str()))
    }
    fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
}

/// The default, human-readable report.
pub fn human(report: &Report, opts: &HumanOptions) -> String {
    let p = Paint(opts.color);
    let mut out = String::new();
    let _ = writeln!(out, "{} {} {}", p.bold("needle"), report.command, report.target);
    if let Some(pre) = &opts.preamble {
        out.push('\n');
        out.push_str(pre);
        if !pre.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push('\n');
    if report.findings.is_empty() {
        let _ = writeln!(out, "{}", p.bold("Findings: none"));
    } else {
        let _ = writeln!(out, "{}", p.bold(&format!("Findings ({})", report.findings.len())));
    }
    for f in &report.findings {
        let _ = writeln!(out, "  {} {}  {}", p.sev(f.severity), p.bold(&f.code), f.message);
        let mut loc = String::new();
        if let Some(file) = &f.location.file {
            loc.push_str(file);
            if let Some(line) = f.location.line {
                let _ = write!(loc, ":{line}");
            }
        }
        if let Some(at) = &f.location.at {
            if !loc.is_empty() {
                loc.push_str(", ");
            }
            loc.push_str(at);
        }
        if !loc.is_empty() {
            let _ = writeln!(out, "           at: {loc}");
        }
        for e in &f.evidence {
            let _ = writeln!(out, "           {} {e}", p.dim("evidence:"));
        }
        let _ = writeln!(out, "           fix: {}", f.fix);
    }
    if !report.suppressed.is_empty() {
        let _ = writeln!(out, "\n{}", p.bold(&format!("Ignored by needle.toml ({})", report.suppressed.len())));
        for s in &report.suppressed {
            let _ = writeln!(
                out,
                "  {} {}  ({})",
                s.finding.code,
                s.finding.location.file.as_deref().unwrap_or(""),
                s.reason
            );
        }
    }
    if !report.failures.is_empty() {
        let _ = writeln!(out, "\n{}", p.wrap("1;31", &format!("Could not examine ({}): the result is incomplete", report.failures.len())));
        for f in &report.failures {
            match &f.file {
                Some(file) => {
                    let _ = writeln!(out, "  {file}: {}", f.message);
                }
                None => {
                    let _ = writeln!(out, "  {}", f.message);
                }
            }
        }
    }
    // Summary line: counts per severity.
    let mut counts = Vec::new();
    for s in Severity::ALL {
        let n = report.findings.iter().filter(|f| f.severity == s).count();
        if n > 0 {
            counts.push(format!("{n} {s}"));
        }
    }
    let summary = if counts.is_empty() { "no findings".to_string() } else { counts.join(", ") };
    let _ = writeln!(out, "\n{summary}; {} not examinable", report.failures.len());
    out
}
