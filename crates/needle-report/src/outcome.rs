use crate::{Report, Severity};

/// The exit status every needle command shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: finished, nothing at or above the fail level.
    Clean = 0,
    /// 1: finished, with findings at or above the fail level.
    Findings = 1,
    /// 2: could not finish (bad input where no verdict is possible, bad arguments, I/O).
    Error = 2,
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// A finished report judged against a fail level.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: ExitStatus,
    pub fail_on: Severity,
}

impl Outcome {
    /// Errors win over findings: a report with any failure is never clean, and never merely
    /// "has findings" either: the user must know the result is incomplete.
    pub fn judge(report: &Report, fail_on: Severity) -> Outcome {
        let status = if !report.failures.is_empty() {
            ExitStatus::Error
        } else if report.findings.iter().any(|f| f.severity >= fail_on) {
            ExitStatus::Findings
        } else {
            ExitStatus::Clean
        };
        Outcome { status, fail_on }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Failure, Rule};

    static R: Rule = Rule { code: "t/r", severity: Severity::Medium, summary: "", fix: "" };

    #[test]
    fn errors_win_over_findings() {
        let mut r = Report::new("inspect", "x");
        assert_eq!(Outcome::judge(&r, Severity::High).status, ExitStatus::Clean);
        r.push(R.finding("m"));
        assert_eq!(Outcome::judge(&r, Severity::High).status, ExitStatus::Clean);
        assert_eq!(Outcome::judge(&r, Severity::Medium).status, ExitStatus::Findings);
        r.fail(Failure::new(None, "boom"));
        assert_eq!(Outcome::judge(&r, Severity::Info).status, ExitStatus::Error);
    }
}
