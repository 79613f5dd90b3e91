//! SARIF 2.1.0, as GitHub code scanning ingests it.

use crate::{Report, Rule, Severity};
use serde_json::{json, Value};

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// GitHub's `security-severity` (0.0-10.0) drives its critical/high/medium/low labels.
fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "2.0",
        Severity::Info => "0.0",
    }
}

/// Renders the report as a SARIF 2.1.0 log. `catalogue` lists every rule the command can emit;
/// codes found in the report but missing from it still get a rule entry.
pub fn sarif(report: &Report, catalogue: &[&Rule]) -> String {
    let mut rules: Vec<Value> = Vec::new();
    let mut index = std::collections::BTreeMap::new();
    let mut add_rule = |code: &str, summary: &str, fix: &str, sev: Severity, rules: &mut Vec<Value>| {
        if index.contains_key(code) {
            return;
        }
        index.insert(code.to_string(), rules.len());
        rules.push(json!({
            "id": code,
            "name": code.replace(['/', '-'], "_"),
            "shortDescription": {"text": if summary.is_empty() { code } else { summary }},
            "help": {"text": fix, "markdown": fix},
            "defaultConfiguration": {"level": level(sev)},
            "properties": {"security-severity": security_severity(sev), "tags": ["security", code.split('/').next().unwrap_or(code)]}
        }));
    };
    for r in catalogue {
        add_rule(r.code, r.summary, r.fix, r.severity, &mut rules);
    }
    for f in &report.findings {
        add_rule(&f.code, "", &f.fix, f.severity, &mut rules);
    }
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let uri = f.location.file.clone().unwrap_or_else(|| report.target.clone());
            let mut physical = json!({"artifactLocation": {"uri": uri}});
            if let Some(line) = f.location.line {
                physical["region"] = json!({"startLine": line.max(1)});
            }
            let mut text = f.message.clone();
            if let Some(at) = &f.location.at {
                text.push_str(&format!(" (at {at})"));
            }
            let mut result = json!({
                "ruleId": f.code,
                "ruleIndex": index.get(&f.code).copied().unwrap_or(0),
                "level": level(f.severity),
                "message": {"text": text},
                "locations": [{"physicalLocation": physical}],
                "properties": {"severity": f.severity.as_str(), "evidence": f.evidence, "fix": f.fix},
            });
            // Stable fingerprint so code scanning tracks a finding across runs.
            result["partialFingerprints"] = json!({
                "needle/v1": format!("{}:{}:{}", f.code, f.location.file.as_deref().unwrap_or(""), f.location.at.as_deref().unwrap_or(""))
            });
            result
        })
        .collect();
    let notifications: Vec<Value> = report
        .failures
        .iter()
        .map(|e| {
            json!({
                "level": "error",
                "message": {"text": match &e.file { Some(f) => format!("{f}: {}", e.message), None => e.message.clone() }}
            })
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "needle",
                "version": report.tool_version,
                "semanticVersion": report.tool_version,
                "informationUri": "https://github.com/needle-ml/needle",
                "rules": rules
            }},
            "invocations": [{
                "executionSuccessful": report.failures.is_empty(),
                "toolExecutionNotifications": notifications
            }],
            "results": results
        }]
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}
