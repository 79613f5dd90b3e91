//! Behavioural checks: render sample conversations in minijinja's sandbox and look at the text
//! the template adds beyond the messages, role names and special-token markup.
//!
//! The sandbox: no loader (no `include` can read files), `fuel` bounds instructions, the
//! recursion limit bounds macros, a capped writer bounds output. Settings follow transformers:
//! `trim_blocks`, `lstrip_blocks`, `raise_exception`, `strftime_now`, Python string/dict methods
//! (pycompat), `tojson` like Python's `json.dumps`, insertion-ordered maps.

use std::sync::atomic::{AtomicU64, Ordering};
use super::scan::{red_flags, strip_markup, Red};
use super::{Hit, ADDED_TEXT, CONTENT_ALTERED, CONTENT_TRIGGER, DEFAULT_SYSTEM_PROMPT, INJECTED_CODE, INJECTED_INSTRUCTION, INJECTED_URL, RENDER_FAILED, RESOURCE_LIMIT};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Kwargs;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value};
use needle_report::Severity;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

/// Instructions one render may execute.
pub(crate) const FUEL: u64 = 2_000_000;
/// Bytes one render may output.
pub(crate) const MAX_OUTPUT: usize = 256 * 1024;
/// Macro/recursion depth.
const RECURSION: usize = 64;

const SYSTEM: &str = "qzsysmsg alpha";
const USER1: &str = "qzuserone bravo";
const ASSISTANT1: &str = "qzasstone charlie";
const USER2: &str = "qzusertwo delta";
const TOOL_RESULT: &str = "qztoolresult echo";
const ROLE_WORDS: &[&str] = &["user", "assistant", "system", "tool", "ipython", "model", "developer", "human", "function", "bot"];

/// One sample conversation.
struct Conversation {
    name: &'static str,
    system: bool,
    tools: bool,
    messages: serde_json::Value,
    /// The trigger literal planted in every message, for confirmation renders.
    trigger: Option<String>,
}

fn tools_json() -> serde_json::Value {
    json!([{
        "type": "function",
        "function": {
            "name": "qzlookup",
            "description": "qzdescription foxtrot",
            "parameters": {
                "type": "object",
                "properties": {"qzparam": {"type": "string", "description": "qzparamdesc golf"}},
                "required": ["qzparam"]
            }
        }
    }])
}

fn conversations() -> Vec<Conversation> {
    let sys = json!({"role": "system", "content": SYSTEM});
    let u1 = json!({"role": "user", "content": USER1});
    let a1 = json!({"role": "assistant", "content": ASSISTANT1});
    let u2 = json!({"role": "user", "content": USER2});
    let call = json!({"role": "assistant", "content": "", "tool_calls": [{
        "id": "qzcall123", "type": "function",
        "function": {"name": "qzlookup", "arguments": {"qzparam": "qzargvalue"}}
    }]});
    let result = json!({"role": "tool", "tool_call_id": "qzcall123", "name": "qzlookup", "content": TOOL_RESULT});
    let c = |name, system, tools, m: Vec<&serde_json::Value>| Conversation {
        name,
        system,
        tools,
        messages: serde_json::Value::Array(m.into_iter().cloned().collect()),
        trigger: None,
    };
    vec![
        c("user", false, false, vec![&u1]),
        c("system+user", true, false, vec![&sys, &u1]),
        c("multi-turn", true, false, vec![&sys, &u1, &a1, &u2]),
        c("multi-turn without system", false, false, vec![&u1, &a1, &u2]),
        c("tools", false, true, vec![&u1]),
        c("tools+system", true, true, vec![&sys, &u1]),
        c("tool call", false, true, vec![&u1, &call, &result]),
    ]
}

fn trigger_conversation(lit: &str) -> Conversation {
    let m = |role: &str, base: &str| json!({"role": role, "content": format!("{base} {lit}")});
    Conversation {
        name: "trigger",
        system: true,
        tools: false,
        messages: json!([m("system", SYSTEM), m("user", USER1), m("assistant", ASSISTANT1), m("user", USER2)]),
        trigger: Some(lit.to_string()),
    }
}

/// A render's outcome.
enum Outcome {
    Text(String),
    Failed(String),
    Limit(String),
}

struct CapWriter {
    buf: Vec<u8>,
    over: bool,
}

impl Write for CapWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > MAX_OUTPUT {
            self.over = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The sandboxed environment, set up as transformers sets up Jinja.
pub(crate) fn environment<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    if let Ok(syntax) = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build() {
        env.set_syntax(syntax);
    }
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    minijinja_contrib::add_to_environment(&mut env);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> { Err(Error::new(ErrorKind::InvalidOperation, msg)) });
    env.add_function("strftime_now", |fmt: String| -> String { strftime_fixed(&fmt) });
    env.add_filter("tojson", tojson);
    env
}

/// Renders started and finished in this process: minijinja bounds instructions, recursion and
/// output, not the memory of intermediate values, so the `needle` binary watches memory while
/// one render runs long.
pub fn renders() -> (u64, u64) {
    (STARTED.load(Ordering::Relaxed), FINISHED.load(Ordering::Relaxed))
}

static STARTED: AtomicU64 = AtomicU64::new(0);
static FINISHED: AtomicU64 = AtomicU64::new(0);

fn render<'s>(env: &Environment<'s>, src: &'s str, conv: &Conversation, agp: bool) -> Outcome {
    STARTED.fetch_add(1, Ordering::Relaxed);
    let out = render_in_sandbox(env, src, conv, agp);
    FINISHED.fetch_add(1, Ordering::Relaxed);
    out
}

fn render_in_sandbox<'s>(env: &Environment<'s>, src: &'s str, conv: &Conversation, agp: bool) -> Outcome {
    let tmpl = match env.template_from_str(src) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let mut ctx = json!({
        "messages": conv.messages,
        "add_generation_prompt": agp,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
    });
    if conv.tools {
        ctx["tools"] = tools_json();
    }
    let mut w = CapWriter { buf: Vec::new(), over: false };
    let result = tmpl.render_captured_to(Value::from(minijinja::value::Serde(&ctx)), &mut w);
    match result {
        Ok(_) => Outcome::Text(String::from_utf8_lossy(&w.buf).into_owned()),
        Err(e) if w.over => Outcome::Limit(format!("output over {MAX_OUTPUT} bytes ({e})")),
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Outcome::Limit(format!("more than {FUEL} instructions")),
        Err(e) if e.to_string().contains("recursion") => Outcome::Limit(format!("recursion limit ({e})")),
        Err(e) => Outcome::Failed(e.detail().map(str::to_string).unwrap_or_else(|| e.to_string())),
    }
}

/// Lines of added text in one rendered prompt: message contents, tool JSON strings, role words
/// and special-token markup removed.
fn added_lines(out: &str, conv: &Conversation, vocab: &BTreeSet<String>) -> Vec<String> {
    let mut s = out.to_string();
    let mut contents: Vec<String> = conv
        .messages
        .as_array()
        .map(|m| m.iter().filter_map(|x| x.get("content").and_then(|c| c.as_str()).map(str::to_string)).collect())
        .unwrap_or_default();
    if let Some(t) = &conv.trigger {
        contents.push(t.clone());
    }
    contents.sort_by_key(|c| std::cmp::Reverse(c.len()));
    for c in contents.iter().filter(|c| !c.is_empty()) {
        s = s.replace(c.as_str(), "\n");
    }
    let s = strip_markup(&s);
    let mut lines = Vec::new();
    for line in s.lines() {
        let line = line.trim();
        let meaningful = line
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .filter(|w| {
                let l = w.to_lowercase();
                !(vocab.contains(&l) || ROLE_WORDS.contains(&l.as_str()) || l.chars().all(|c| c.is_ascii_digit()))
            })
            .count();
        if meaningful > 0 {
            lines.push(line.chars().take(300).collect::<String>());
        }
    }
    lines
}

/// Words of the sample data (JSON keys and values), which a template may print itself.
fn sample_vocab() -> BTreeSet<String> {
    let mut v = BTreeSet::new();
    let messages: Vec<serde_json::Value> = conversations().into_iter().map(|c| c.messages).collect();
    let all = json!({"tools": tools_json(), "messages": messages});
    fn walk(x: &serde_json::Value, v: &mut BTreeSet<String>) {
        match x {
            serde_json::Value::String(s) => words_into(s, v),
            serde_json::Value::Array(a) => a.iter().for_each(|y| walk(y, v)),
            serde_json::Value::Object(o) => o.iter().for_each(|(k, y)| {
                words_into(k, v);
                walk(y, v)
            }),
            _ => {}
        }
    }
    fn words_into(s: &str, v: &mut BTreeSet<String>) {
        for w in s.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()) {
            v.insert(w.to_lowercase());
            for part in w.split('_').filter(|p| !p.is_empty()) {
                v.insert(part.to_lowercase());
            }
        }
    }
    walk(&all, &mut v);
    v
}

/// Where a line of added text appears.
#[derive(Default)]
struct Seen {
    renders: BTreeSet<usize>,
}

pub(crate) fn behaviour(src: &str, triggers: &[String]) -> Vec<Hit> {
    let env = environment();
    let vocab = sample_vocab();
    let convs = conversations();
    let mut hits = Vec::new();
    // (conversation index, agp, lines)
    let mut renders: Vec<(usize, bool, Vec<String>)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for (ci, conv) in convs.iter().enumerate() {
        for agp in [false, true] {
            match render(&env, src, conv, agp) {
                Outcome::Text(out) => {
                    if !agp {
                        altered(&out, conv, &mut hits);
                    }
                    renders.push((ci, agp, added_lines(&out, conv, &vocab)));
                }
                Outcome::Failed(e) => failures.push(format!("{}: {e}", conv.name)),
                Outcome::Limit(e) => {
                    hits.push(
                        Hit::new(&RESOURCE_LIMIT, format!("rendering the `{}` conversation exceeds a limit: {e}", conv.name)).evidence(e),
                    );
                    return hits;
                }
            }
        }
    }
    if renders.is_empty() {
        let mut h = Hit::new(&RENDER_FAILED, "no sample conversation renders; behavioural checks were not possible");
        for f in failures.iter().take(3) {
            h = h.evidence(f.clone());
        }
        hits.push(h);
        return hits;
    }
    // Where each line appears.
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for (ri, (_, _, lines)) in renders.iter().enumerate() {
        for l in lines {
            seen.entry(l.clone()).or_default().renders.insert(ri);
        }
    }
    let all: BTreeSet<usize> = (0..renders.len()).collect();
    let mut groups: BTreeMap<(&'static str, Severity, String), Vec<String>> = BTreeMap::new();
    for (line, s) in &seen {
        let convs_of: Vec<&Conversation> = s.renders.iter().filter_map(|r| renders.get(*r)).filter_map(|(ci, _, _)| convs.get(*ci)).collect();
        let only_tools = convs_of.iter().all(|c| c.tools);
        let only_without_system = convs_of.iter().all(|c| !c.system);
        let only_agp = s.renders.iter().all(|r| renders.get(*r).is_some_and(|x| x.1));
        let pattern = if s.renders == all {
            "every conversation"
        } else if only_tools {
            "conversations with tools"
        } else if only_without_system {
            "conversations without a system message"
        } else if only_agp {
            "generation prompts"
        } else {
            "some conversations"
        };
        let flags = red_flags(line);
        if !flags.is_empty() {
            for (kind, what) in flags {
                let (rule, label) = match kind {
                    Red::Url => (&INJECTED_URL, "a URL"),
                    Red::Code => (&INJECTED_CODE, "code or a shell command"),
                    Red::Instruction => (&INJECTED_INSTRUCTION, "an instruction"),
                };
                hits.push(
                    Hit::new(rule, format!("the template adds {label} (`{what}`) to {pattern}")).evidence(line.clone()),
                );
            }
            continue;
        }
        let words = line.split_whitespace().filter(|w| w.chars().any(char::is_alphabetic)).count();
        let key = match pattern {
            "conversations without a system message" => (DEFAULT_SYSTEM_PROMPT.code, Severity::Info, "the template adds a default system prompt when no system message is given".to_string()),
            "some conversations" if words >= 3 => (
                INJECTED_INSTRUCTION.code,
                Severity::High,
                "the template adds text to some conversations only, not explained by tools or a missing system message".to_string(),
            ),
            "some conversations" => (ADDED_TEXT.code, Severity::Low, "the template adds short text to some conversations only".to_string()),
            p => (ADDED_TEXT.code, Severity::Info, format!("the template adds fixed text to {p}")),
        };
        groups.entry(key).or_default().push(line.clone());
    }
    for ((code, sev, msg), lines) in groups {
        let rule = match code {
            c if c == DEFAULT_SYSTEM_PROMPT.code => &DEFAULT_SYSTEM_PROMPT,
            c if c == INJECTED_INSTRUCTION.code => &INJECTED_INSTRUCTION,
            _ => &ADDED_TEXT,
        };
        let mut h = Hit::new(rule, msg).severity(sev);
        for l in lines {
            h = h.evidence(l);
        }
        hits.push(h);
    }
    confirm_triggers(&env, src, triggers, &convs, &renders, &vocab, &mut hits);
    hits
}

/// Renders the multi-turn conversation with each trigger literal planted in every message; text
/// that appears only then is what the trigger switches on.
fn confirm_triggers<'s>(
    env: &Environment<'s>,
    src: &'s str,
    triggers: &[String],
    convs: &[Conversation],
    renders: &[(usize, bool, Vec<String>)],
    vocab: &BTreeSet<String>,
    hits: &mut Vec<Hit>,
) {
    let base_idx = convs.iter().position(|c| c.name == "multi-turn");
    let base: BTreeSet<&String> = renders.iter().filter(|(ci, agp, _)| Some(*ci) == base_idx && *agp).flat_map(|(_, _, l)| l.iter()).collect();
    let everything: BTreeSet<&String> = renders.iter().flat_map(|(_, _, l)| l.iter()).collect();
    for lit in triggers {
        let conv = trigger_conversation(lit);
        let Outcome::Text(out) = render(env, src, &conv, true) else { continue };
        let new: BTreeSet<String> =
            added_lines(&out, &conv, vocab).into_iter().filter(|l| !base.contains(l) && !everything.contains(l)).collect();
        if new.is_empty() {
            continue;
        }
        let mut h = Hit::new(
            &CONTENT_TRIGGER,
            format!("confirmed by rendering: message content containing `{lit}` makes the template add text"),
        )
        .severity(Severity::High);
        for l in &new {
            h = h.evidence(l.clone());
        }
        hits.push(h);
        for l in new {
            let flags = red_flags(&l);
            if flags.is_empty() {
                hits.push(
                    Hit::new(&INJECTED_INSTRUCTION, format!("the template adds text only when message content contains `{lit}`"))
                        .evidence(l.clone()),
                );
            }
            for (kind, what) in flags {
                let rule = match kind {
                    Red::Url => &INJECTED_URL,
                    Red::Code => &INJECTED_CODE,
                    Red::Instruction => &INJECTED_INSTRUCTION,
                };
                hits.push(
                    Hit::new(rule, format!("the template adds `{what}` when message content contains `{lit}`")).evidence(l.clone()),
                );
            }
        }
    }
}

/// A message whose content shows up in pieces but not verbatim was rewritten by the template.
fn altered(out: &str, conv: &Conversation, hits: &mut Vec<Hit>) {
    let Some(msgs) = conv.messages.as_array() else { return };
    for m in msgs {
        let Some(c) = m.get("content").and_then(|c| c.as_str()) else { continue };
        let Some(marker) = c.split_whitespace().next() else { continue };
        if !out.contains(c) && out.contains(marker) {
            let role = m.get("role").and_then(|r| r.as_str()).unwrap_or("?");
            let h = Hit::new(&CONTENT_ALTERED, format!("the {role} message of the `{}` conversation is not rendered verbatim", conv.name))
                .evidence(format!("content {c:?}"));
            if !hits.iter().any(|x| x.message == h.message) {
                hits.push(h);
            }
        }
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _ = kwargs.get::<Option<bool>>("ensure_ascii")?;
    let _ = kwargs.get::<Option<bool>>("sort_keys")?;
    kwargs.assert_all_used()?;
    let v = serde_json::to_value(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    py_json(&v, indent.map(|n| n.min(16)), 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn py_json(v: &serde_json::Value, indent: Option<usize>, level: usize, out: &mut String) {
    use serde_json::Value as J;
    let nl = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Array(a) if a.is_empty() => out.push_str("[]"),
        J::Object(o) if o.is_empty() => out.push_str("{}"),
        J::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                nl(out, level + 1);
                py_json(x, indent, level + 1, out);
            }
            nl(out, level);
            out.push(']');
        }
        J::Object(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                nl(out, level + 1);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(": ");
                py_json(x, indent, level + 1, out);
            }
            nl(out, level);
            out.push('}');
        }
        J::Null => out.push_str("null"),
        other => out.push_str(&other.to_string()),
    }
}

/// `strftime` at a fixed date (2024-07-26, a Friday), so reports are reproducible.
fn strftime_fixed(fmt: &str) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str("26"),
            Some('e') => out.push_str("26"),
            Some('m') => out.push_str("07"),
            Some('Y') => out.push_str("2024"),
            Some('y') => out.push_str("24"),
            Some('b') | Some('h') => out.push_str("Jul"),
            Some('B') => out.push_str("July"),
            Some('a') => out.push_str("Fri"),
            Some('A') => out.push_str("Friday"),
            Some('H') | Some('M') | Some('S') | Some('I') => out.push_str("00"),
            Some('p') => out.push_str("AM"),
            Some('j') => out.push_str("208"),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tojson_matches_python() {
        let env = environment();
        let t = env.template_from_str("{{ x|tojson }}|{{ x|tojson(indent=2) }}").unwrap();
        let out = t.render(Value::from(minijinja::value::Serde(json!({"x": {"b": [1, "é<"], "a": null}})))).unwrap();
        assert_eq!(out, "{\"b\": [1, \"é<\"], \"a\": null}|{\n  \"b\": [\n    1,\n    \"é<\"\n  ],\n  \"a\": null\n}");
    }

    #[test]
    fn sandbox_limits_hold() {
        let env = environment();
        let conv = &conversations()[0];
        assert!(matches!(render(&env, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", conv, true), Outcome::Limit(_)));
        assert!(matches!(render(&env, "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", conv, true), Outcome::Limit(_)));
        assert!(matches!(render(&env, "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", conv, true), Outcome::Limit(_)));
        assert!(matches!(render(&env, "{{ raise_exception('no') }}", conv, true), Outcome::Failed(m) if m.contains("no")));
        assert!(matches!(render(&env, "{% include 'x' %}", conv, true), Outcome::Failed(_)));
    }

    #[test]
    fn strftime_is_fixed() {
        assert_eq!(strftime_fixed("%d %b %Y"), "26 Jul 2024");
    }
}
