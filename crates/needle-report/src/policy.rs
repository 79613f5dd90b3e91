//! `needle.toml`: the user's policy, validated into [`Policy`] before any check runs.
//!
//! ```toml
//! fail_on = "medium"                       # optional; the CLI's --fail-on wins
//!
//! [severity]                               # per-code overrides
//! "template/added-text" = "low"
//!
//! [[ignore]]                               # each ignore needs a reason
//! code = "config/python-file"
//! path = "modeling_*.py"                   # optional glob over the finding's file
//! reason = "reviewed in SEC-1234"
//! ```

use crate::{Finding, Report, Rule, Severity};
use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    fail_on: Option<String>,
    #[serde(default)]
    severity: BTreeMap<String, String>,
    #[serde(default)]
    ignore: Vec<RawIgnore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIgnore {
    code: String,
    path: Option<String>,
    reason: String,
}

#[derive(Debug, Clone)]
struct Ignore {
    code: String,
    path: Option<(String, GlobMatcher)>,
    reason: String,
}

/// A finding that an ignore matched, with the reason the user gave.
#[derive(Debug, Clone, Serialize)]
pub struct SuppressedFinding {
    pub finding: Finding,
    pub reason: String,
}

/// The validated policy. `Policy::default()` is what applies without a `needle.toml`.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub fail_on: Option<Severity>,
    severity: BTreeMap<String, Severity>,
    ignores: Vec<Ignore>,
}

impl Policy {
    /// Reads and validates a policy file. `known` is the catalogue of rules: overrides and
    /// ignores that name an unknown code are errors (a typo must not silently disable nothing).
    pub fn load(path: &Path, known: &[&Rule]) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyError::Read { path: path.display().to_string(), source })?;
        Policy::parse(&text, known).map_err(|message| PolicyError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str, known: &[&Rule]) -> Result<Policy, String> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| e.to_string())?;
        let check_code = |code: &str| -> Result<(), String> {
            let family = code.strip_suffix("/*");
            if known.iter().any(|r| r.code == code || Some(r.family()) == family) {
                Ok(())
            } else {
                Err(format!("unknown finding code `{code}` (see `needle rules`)"))
            }
        };
        let fail_on = raw.fail_on.as_deref().map(str::parse).transpose()?;
        let mut severity = BTreeMap::new();
        for (code, level) in raw.severity {
            check_code(&code)?;
            severity.insert(code, level.parse()?);
        }
        let mut ignores = Vec::new();
        for ig in raw.ignore {
            check_code(&ig.code)?;
            if ig.reason.trim().is_empty() {
                return Err(format!("ignore of `{}` needs a non-empty reason", ig.code));
            }
            let path = match ig.path {
                Some(p) => {
                    let m = Glob::new(&p)
                        .map_err(|e| format!("ignore of `{}`: bad path glob `{p}`: {e}", ig.code))?
                        .compile_matcher();
                    Some((p, m))
                }
                None => None,
            };
            ignores.push(Ignore { code: ig.code, path, reason: ig.reason });
        }
        Ok(Policy { fail_on, severity, ignores })
    }

    fn code_matches(pattern: &str, code: &str) -> bool {
        pattern == code
            || pattern
                .strip_suffix("/*")
                .is_some_and(|fam| code.split('/').next() == Some(fam))
    }

    /// Applies overrides and ignores to a finished report.
    pub fn apply(&self, report: &mut Report) {
        let findings = std::mem::take(&mut report.findings);
        for mut f in findings {
            // Exact code beats family wildcard.
            if let Some(s) = self.severity.get(&f.code) {
                f.severity = *s;
            } else if let Some((_, s)) =
                self.severity.iter().find(|(p, _)| Self::code_matches(p, &f.code))
            {
                f.severity = *s;
            }
            let ignore = self.ignores.iter().find(|ig| {
                Self::code_matches(&ig.code, &f.code)
                    && match (&ig.path, &f.location.file) {
                        (None, _) => true,
                        (Some((_, m)), Some(file)) => m.is_match(file),
                        (Some(_), None) => false,
                    }
            });
            match ignore {
                Some(ig) => report
                    .suppressed
                    .push(SuppressedFinding { finding: f, reason: ig.reason.clone() }),
                None => report.findings.push(f),
            }
        }
        report.sort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static A: Rule = Rule { code: "pickle/unsafe-global", severity: Severity::Critical, summary: "", fix: "" };
    static B: Rule = Rule { code: "config/python-file", severity: Severity::High, summary: "", fix: "" };
    const KNOWN: &[&Rule] = &[&A, &B];

    #[test]
    fn unknown_keys_and_codes_are_errors() {
        assert!(Policy::parse("fail_onn = 'high'", KNOWN).unwrap_err().contains("unknown field"));
        assert!(Policy::parse("[severity]\n\"pickle/nope\" = 'low'", KNOWN)
            .unwrap_err()
            .contains("unknown finding code"));
        assert!(Policy::parse("[[ignore]]\ncode='config/python-file'\nreason=' '", KNOWN)
            .unwrap_err()
            .contains("reason"));
        assert!(Policy::parse("[[ignore]]\ncode='config/python-file'", KNOWN)
            .unwrap_err()
            .contains("reason"));
        assert!(Policy::parse("fail_on = 'severe'", KNOWN).is_err());
    }

    #[test]
    fn overrides_and_ignores_apply() {
        let p = Policy::parse(
            "fail_on='low'\n[severity]\n\"pickle/*\" = 'medium'\n[[ignore]]\ncode='config/python-file'\npath='modeling_*.py'\nreason='reviewed'",
            KNOWN,
        )
        .unwrap();
        assert_eq!(p.fail_on, Some(Severity::Low));
        let mut r = Report::new("inspect", "x");
        r.push(A.finding("a").file("data.pkl"));
        r.push(B.finding("b").file("modeling_x.py"));
        r.push(B.finding("c").file("other.py"));
        p.apply(&mut r);
        assert_eq!(r.findings.len(), 2);
        assert_eq!(r.suppressed.len(), 1);
        assert_eq!(r.suppressed[0].reason, "reviewed");
        let a = r.findings.iter().find(|f| f.code == A.code).unwrap();
        assert_eq!(a.severity, Severity::Medium);
    }
}
