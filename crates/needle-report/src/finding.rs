use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How bad a finding is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "info" => Ok(Severity::Info),
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            other => Err(format!(
                "unknown severity `{other}` (expected critical, high, medium, low or info)"
            )),
        }
    }
}

/// A check's rule: declared once, as a `static`, beside the code that emits it.
///
/// ```
/// use needle_report::{Rule, Severity};
/// pub static UNSAFE_GLOBAL: Rule = Rule {
///     code: "pickle/unsafe-global",
///     severity: Severity::Critical,
///     summary: "pickle imports a callable that loading tensors does not need",
///     fix: "re-save the weights as safetensors; never load this file with pickle",
/// };
/// assert_eq!(UNSAFE_GLOBAL.family(), "pickle");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Stable `family/kebab-case-name`. Never renamed once released.
    pub code: &'static str,
    /// Default severity (a finding may raise or lower it; `needle.toml` may override it).
    pub severity: Severity,
    /// One line: what the rule detects.
    pub summary: &'static str,
    /// One line: what the user should do.
    pub fix: &'static str,
}

impl Rule {
    pub fn family(&self) -> &'static str {
        self.code.split('/').next().unwrap_or(self.code)
    }

    /// A finding of this rule with its default severity.
    pub fn finding(&'static self, message: impl Into<String>) -> Finding {
        Finding {
            code: self.code.to_string(),
            severity: self.severity,
            message: message.into(),
            location: Location::default(),
            evidence: Vec::new(),
            fix: self.fix.to_string(),
        }
    }

    /// Whether `code` is well formed: `family/name`, lowercase ASCII, digits and dashes.
    pub fn is_valid_code(code: &str) -> bool {
        let mut parts = code.split('/');
        let ok = |p: Option<&str>| {
            p.is_some_and(|p| {
                !p.is_empty()
                    && !p.starts_with('-')
                    && !p.ends_with('-')
                    && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
        };
        ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
    }
}

/// Where a finding was made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Path relative to the inspected target (the file name for a single file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A location inside the file: `member data.pkl, offset 0x1f`, `tensor model.embed`, `line 3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// 1-based line, for text files (templates, configs), used by SARIF regions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// Something wrong with the artifact: data, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub code: String,
    pub severity: Severity,
    pub message: String,
    pub location: Location,
    /// Short, literal pieces of evidence (an opcode and its operands, a template excerpt).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub evidence: Vec<String>,
    pub fix: String,
}

/// Evidence strings are capped so that hostile input cannot blow up a report.
pub const MAX_EVIDENCE_CHARS: usize = 400;
/// At most this many evidence items per finding.
pub const MAX_EVIDENCE_ITEMS: usize = 16;

impl Finding {
    pub fn file(mut self, file: impl Into<String>) -> Self {
        self.location.file = Some(file.into());
        self
    }

    pub fn at(mut self, at: impl Into<String>) -> Self {
        self.location.at = Some(at.into());
        self
    }

    pub fn line(mut self, line: u32) -> Self {
        self.location.line = Some(line);
        self
    }

    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// Adds one piece of evidence, truncated and with control characters escaped.
    pub fn evidence(mut self, evidence: impl AsRef<str>) -> Self {
        if self.evidence.len() < MAX_EVIDENCE_ITEMS {
            self.evidence.push(sanitize(evidence.as_ref(), MAX_EVIDENCE_CHARS));
        }
        self
    }
}

/// Escapes control characters (terminal escapes in hostile files must not reach the user's
/// terminal) and truncates to `max` characters.
pub fn sanitize(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 8);
    for (count, c) in s.chars().enumerate() {
        if count >= max {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Something needle could not examine: the result is inconclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub message: String,
}

impl Failure {
    pub fn new(file: Option<String>, message: impl Into<String>) -> Self {
        Failure { file, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_validated() {
        assert!(Rule::is_valid_code("pickle/unsafe-global"));
        assert!(Rule::is_valid_code("gguf/bad-alignment-2"));
        assert!(!Rule::is_valid_code("pickle"));
        assert!(!Rule::is_valid_code("Pickle/unsafe"));
        assert!(!Rule::is_valid_code("pickle/unsafe_global"));
        assert!(!Rule::is_valid_code("a/b/c"));
        assert!(!Rule::is_valid_code("a/-b"));
    }

    #[test]
    fn severity_order_and_parse() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::Info < Severity::Low);
        assert_eq!("HIGH".parse::<Severity>().unwrap(), Severity::High);
        assert!("severe".parse::<Severity>().is_err());
    }

    #[test]
    fn evidence_is_sanitized_and_capped() {
        static R: Rule = Rule { code: "t/x", severity: Severity::Low, summary: "", fix: "" };
        let f = R.finding("m").evidence("a\x1b[31mred\n").evidence("x".repeat(1000));
        assert_eq!(f.evidence[0], "a\\u{1b}[31mred\\n");
        assert_eq!(f.evidence[1].chars().count(), MAX_EVIDENCE_CHARS + 1);
        let mut g = R.finding("m");
        for _ in 0..100 {
            g = g.evidence("e");
        }
        assert_eq!(g.evidence.len(), MAX_EVIDENCE_ITEMS);
    }
}
