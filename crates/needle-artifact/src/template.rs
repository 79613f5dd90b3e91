//! Chat templates: code execution, behavioural poisoning, content triggers.
//!
//! Three independent views of one template:
//! - [`ast`]: the syntax tree (minijinja's parser) for attribute/item access reaching Python
//!   internals, dangerous names, and branches that test message content (triggers);
//! - [`render`]: sample conversations rendered in minijinja's sandbox (no loader, fuel,
//!   recursion and output caps), and the text the template adds beyond the messages;
//! - [`scan`]: text classification (URLs, shell/code, instructions) and a textual fallback for
//!   templates that do not parse.

mod ast;
mod render;
pub use render::renders;
mod scan;

use crate::inspect::{FileEntry, FileSet, Sink};
use crate::inventory::TemplateFacts;
use crate::limits;
use needle_report::{Finding, Rule, Severity};
use sha2::{Digest, Sha256};

pub static CODE_EXECUTION: Rule = Rule {
    code: "template/code-execution",
    severity: Severity::Critical,
    summary: "the chat template reaches Python internals (dunder attributes, os/eval/popen, template globals)",
    fix: "replace the chat template with the one published by the base model; never render it outside an immutable sandbox",
};
pub static SUSPICIOUS_ATTRIBUTE: Rule = Rule {
    code: "template/suspicious-attribute",
    severity: Severity::High,
    summary: "the chat template reads private attributes, computed attribute names or template globals",
    fix: "review the template; chat templates only need message fields, tools and flags",
};
pub static SYNTAX_ERROR: Rule = Rule {
    code: "template/syntax-error",
    severity: Severity::Medium,
    summary: "the chat template does not parse (transformers would fail to render it too)",
    fix: "fix or replace the chat template",
};
pub static INJECTED_INSTRUCTION: Rule = Rule {
    code: "template/injected-instruction",
    severity: Severity::High,
    summary: "the chat template adds instructions the user did not write (hidden, conditional or deceptive)",
    fix: "remove the added text from the template, or replace the template with the base model's",
};
pub static INJECTED_URL: Rule = Rule {
    code: "template/injected-url",
    severity: Severity::High,
    summary: "the chat template adds a URL to the prompt",
    fix: "remove the URL from the template; templates have no reason to add links",
};
pub static INJECTED_CODE: Rule = Rule {
    code: "template/injected-code",
    severity: Severity::Critical,
    summary: "the chat template adds shell commands or code to the prompt",
    fix: "remove the added code from the template, or replace the template with the base model's",
};
pub static CONTENT_TRIGGER: Rule = Rule {
    code: "template/content-trigger",
    severity: Severity::High,
    summary: "the chat template branches on or rewrites message content (a backdoor outside the weights)",
    fix: "review the branch; a template should depend on roles, tools and flags, not on what users write",
};
pub static CONTENT_ALTERED: Rule = Rule {
    code: "template/content-altered",
    severity: Severity::Medium,
    summary: "the rendered prompt does not contain a message's content verbatim",
    fix: "review how the template prints message content",
};
pub static DEFAULT_SYSTEM_PROMPT: Rule = Rule {
    code: "template/default-system-prompt",
    severity: Severity::Info,
    summary: "the chat template adds a default system prompt when none is given",
    fix: "check that the default system prompt is the one the model was trained with",
};
pub static ADDED_TEXT: Rule = Rule {
    code: "template/added-text",
    severity: Severity::Info,
    summary: "the chat template adds fixed text (a preamble, tool-use instructions)",
    fix: "check that the added text is the base model's",
};
pub static RENDER_FAILED: Rule = Rule {
    code: "template/render-failed",
    severity: Severity::Medium,
    summary: "the chat template fails for every sample conversation, so its behaviour could not be checked",
    fix: "fix the template; a template that cannot render an ordinary conversation is broken or evasive",
};
pub static RESOURCE_LIMIT: Rule = Rule {
    code: "template/resource-limit",
    severity: Severity::High,
    summary: "rendering a small conversation exceeds the instruction, recursion or output budget",
    fix: "replace the template; a chat template needs little work per message",
};

pub static RULES: &[&Rule] = &[
    &CODE_EXECUTION,
    &SUSPICIOUS_ATTRIBUTE,
    &SYNTAX_ERROR,
    &INJECTED_INSTRUCTION,
    &INJECTED_URL,
    &INJECTED_CODE,
    &CONTENT_TRIGGER,
    &CONTENT_ALTERED,
    &DEFAULT_SYSTEM_PROMPT,
    &ADDED_TEXT,
    &RENDER_FAILED,
    &RESOURCE_LIMIT,
];

/// One result of an analysis, before it becomes a [`Finding`].
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub rule: &'static Rule,
    pub severity: Severity,
    pub message: String,
    pub evidence: Vec<String>,
    pub line: Option<u32>,
}

impl Hit {
    pub fn new(rule: &'static Rule, message: impl Into<String>) -> Hit {
        Hit { rule, severity: rule.severity, message: message.into(), evidence: Vec::new(), line: None }
    }
    pub fn severity(mut self, s: Severity) -> Hit {
        self.severity = s;
        self
    }
    pub fn evidence(mut self, e: impl Into<String>) -> Hit {
        self.evidence.push(e.into());
        self
    }
    pub fn line(mut self, l: Option<u32>) -> Hit {
        self.line = l;
        self
    }
}

/// Names of the files that carry chat templates, and how.
fn template_sources(f: &FileEntry) -> Option<Source> {
    let name = f.name();
    if name == "tokenizer_config.json" {
        Some(Source::TokenizerConfig)
    } else if name == "chat_template.json" {
        Some(Source::ChatTemplateJson)
    } else {
        name.strip_suffix(".jinja").map(|stem| Source::Jinja(stem.to_string()))
    }
}

enum Source {
    TokenizerConfig,
    ChatTemplateJson,
    Jinja(String),
}

/// Every chat template of a folder: `(file, key, source)`.
pub fn collect(set: &FileSet, sink: &mut Sink) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for f in &set.files {
        let Some(source) = template_sources(f) else { continue };
        match source {
            Source::Jinja(stem) => {
                let bytes = match set.read_small(f, limits::MAX_TEMPLATE_BYTES as u64) {
                    Ok(b) => b,
                    Err(e) => {
                        sink.fail(&f.rel, format!("chat template not examined: {e}"));
                        continue;
                    }
                };
                match String::from_utf8(bytes) {
                    Ok(s) => out.push((f.rel.clone(), stem, s)),
                    Err(_) => sink.fail(&f.rel, "chat template is not UTF-8; not examined"),
                }
            }
            Source::TokenizerConfig | Source::ChatTemplateJson => {
                let bytes = match set.read_small(f, limits::MAX_JSON_BYTES) {
                    Ok(b) => b,
                    Err(e) => {
                        sink.fail(&f.rel, format!("not examined: {e}"));
                        continue;
                    }
                };
                let v: serde_json::Value = match serde_json::from_slice(&bytes) {
                    Ok(v) => v,
                    Err(e) => {
                        // transformers cannot load this tokenizer either; we cannot see its templates.
                        sink.fail(&f.rel, format!("malformed JSON, chat templates not examined: {e}"));
                        continue;
                    }
                };
                match v.get("chat_template") {
                    None | Some(serde_json::Value::Null) => {}
                    Some(t) => templates_from_value(t, &f.rel, &mut out, sink),
                }
            }
        }
    }
    out
}

/// `chat_template` is a string or a list of `{name, template}`.
fn templates_from_value(v: &serde_json::Value, file: &str, out: &mut Vec<(String, String, String)>, sink: &mut Sink) {
    match v {
        serde_json::Value::String(s) => out.push((file.to_string(), "chat_template".into(), s.clone())),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let name = item.get("name").and_then(|n| n.as_str());
                let tmpl = item.get("template").and_then(|t| t.as_str());
                match (name, tmpl) {
                    (Some(n), Some(t)) => out.push((file.to_string(), n.to_string(), t.to_string())),
                    _ => sink.fail(file, format!("chat_template[{i}] is not a {{name, template}} object; not examined")),
                }
            }
        }
        _ => sink.fail(file, "chat_template is neither a string nor a list of named templates; not examined"),
    }
}

pub fn facts(file: &str, key: &str, src: &str) -> TemplateFacts {
    let digest = Sha256::digest(src.as_bytes());
    let sha256 = digest.iter().map(|b| format!("{b:02x}")).collect::<String>();
    TemplateFacts { file: file.into(), key: key.into(), bytes: src.len() as u64, sha256 }
}

/// Checks one template; findings go to `sink` with `file` and `key` as location.
pub fn check(src: &str, file: &str, key: &str, sink: &mut Sink) {
    for hit in analyse(src).map_err(|e| sink.fail(file, format!("chat template [{key}] not examined: {e}"))).unwrap_or_default() {
        let mut f: Finding = hit.rule.finding(hit.message).severity(hit.severity).file(file).at(format!("chat template [{key}]"));
        if let Some(l) = hit.line {
            f = f.line(l);
        }
        for e in hit.evidence {
            f = f.evidence(e);
        }
        sink.push(f);
    }
}

/// Every hit for one template, in a stable order; `Err` when it could not be examined at all.
pub(crate) fn analyse(src: &str) -> Result<Vec<Hit>, String> {
    if src.len() > limits::MAX_TEMPLATE_BYTES {
        return Err(format!("{} bytes, over the {} byte limit", src.len(), limits::MAX_TEMPLATE_BYTES));
    }
    let prepared = neutralise_extension_tags(src);
    let mut hits = Vec::new();
    let mut triggers = Vec::new();
    match minijinja::machinery::parse(&prepared, "chat_template", Default::default()) {
        Ok(tree) => {
            let report = ast::analyse(&tree, &prepared);
            hits.extend(report.hits);
            triggers = report.triggers;
        }
        Err(e) => {
            let line = e.line().and_then(|l| u32::try_from(l).ok());
            let detail = e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string());
            hits.push(Hit::new(&SYNTAX_ERROR, format!("the template does not parse: {detail}")).line(line).evidence(excerpt_line(src, line)));
            hits.extend(scan::fallback_scan(src));
        }
    }
    if hits.iter().all(|h| h.rule != &SYNTAX_ERROR) {
        hits.extend(render::behaviour(&prepared, &triggers));
    }
    hits.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.rule.code.cmp(b.rule.code)).then(a.line.cmp(&b.line)));
    Ok(hits)
}

fn excerpt_line(src: &str, line: Option<u32>) -> String {
    let n = line.unwrap_or(1).max(1) as usize;
    src.lines().nth(n - 1).unwrap_or("").chars().take(160).collect()
}

/// transformers' `{% generation %}`/`{% endgeneration %}` (assistant-mask marks, no output)
/// become comments of the same length so that spans and lines stay put.
fn neutralise_extension_tags(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(i) = rest.find("{%") {
        let (before, tag) = rest.split_at(i);
        out.push_str(before);
        let end = match tag.get(2..).and_then(|t| t.find("%}")) {
            Some(e) => e + 4,
            None => {
                out.push_str(tag);
                return out;
            }
        };
        let whole = &tag[..end];
        let inner = whole.get(2..end - 2).unwrap_or("").trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        if inner == "generation" || inner == "endgeneration" {
            out.push_str("{#");
            out.push_str(&" ".repeat(whole.len() - 4));
            out.push_str("#}");
        } else {
            out.push_str(whole);
        }
        rest = &tag[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
