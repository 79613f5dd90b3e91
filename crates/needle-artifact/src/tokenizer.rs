//! Tokenizers: word-rewriting normalizers, reachable special tokens, added tokens that hijack
//! words, vocabulary size against the embedding. `tokenizer.json` is read as plain JSON (no
//! tokenizer library: nothing is built or run).

use crate::inspect::{FileEntry, FileSet, Sink};
use crate::inventory::TokenizerFacts;
use crate::limits;
use needle_report::{Rule, Severity};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

pub static REWRITE_NORMALIZER: Rule = Rule {
    code: "tokenizer/rewrite-normalizer",
    severity: Severity::High,
    summary: "a Replace rule in the tokenizer rewrites words before the model sees them (or after it writes them)",
    fix: "remove the Replace rule; normalization should only touch whitespace and Unicode forms",
};
pub static REACHABLE_SPECIAL: Rule = Rule {
    code: "tokenizer/reachable-special-token",
    severity: Severity::Low,
    summary: "special tokens are matched in plain text, so user input can produce control tokens",
    fix: "make sure the serving stack escapes or splits special-token strings in user input",
};
pub static ADDED_WORD: Rule = Rule {
    code: "tokenizer/added-word-token",
    severity: Severity::Medium,
    summary: "an added token captures an ordinary word, mapping it onto an id of its own",
    fix: "remove the added token unless the model was trained with it",
};
pub static VOCAB_MISMATCH: Rule = Rule {
    code: "tokenizer/vocab-mismatch",
    severity: Severity::High,
    summary: "the tokenizer produces ids beyond the embedding matrix or the configured vocabulary",
    fix: "use the tokenizer the model was trained with; out-of-range ids crash or read other memory",
};
pub static INCONSISTENT_ADDED: Rule = Rule {
    code: "tokenizer/inconsistent-added-tokens",
    severity: Severity::Medium,
    summary: "tokenizer_config.json and tokenizer.json disagree about added tokens",
    fix: "regenerate both files with save_pretrained",
};
pub static MALFORMED: Rule = Rule {
    code: "tokenizer/malformed",
    severity: Severity::Medium,
    summary: "tokenizer.json has no model or fields of the wrong type",
    fix: "regenerate tokenizer.json with save_pretrained",
};

pub static RULES: &[&Rule] = &[&REWRITE_NORMALIZER, &REACHABLE_SPECIAL, &ADDED_WORD, &VOCAB_MISMATCH, &INCONSISTENT_ADDED, &MALFORMED];

const MAX_DEPTH: usize = 16;
const MAX_LISTED: usize = 32;

#[derive(Debug, Clone)]
struct Added {
    id: u64,
    content: String,
    special: bool,
    normalized: bool,
}

fn pick<'a>(set: &'a FileSet, name: &str) -> Option<&'a FileEntry> {
    set.get(name).or_else(|| set.files.iter().find(|f| f.name() == name))
}

pub fn inspect_folder(set: &FileSet, embedding_rows: Option<u64>, config_vocab: Option<u64>, sink: &mut Sink) -> Option<TokenizerFacts> {
    let f = pick(set, "tokenizer.json")?;
    let bytes = match set.read_small(f, limits::MAX_JSON_BYTES) {
        Ok(b) => b,
        Err(e) => {
            sink.fail(&f.rel, format!("not examined: {e}"));
            return None;
        }
    };
    let v: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            sink.fail(&f.rel, format!("malformed JSON, not examined: {e}"));
            return None;
        }
    };
    drop(bytes);
    let mut facts = TokenizerFacts { file: f.rel.clone(), ..Default::default() };
    let model = v.get("model");
    facts.model = model.and_then(|m| m.get("type")).and_then(Value::as_str).map(str::to_string);
    // Vocabulary: token -> id maps (BPE, WordPiece, WordLevel) or [piece, score] lists (Unigram).
    let mut vocab: HashMap<&str, u64> = HashMap::new();
    let mut max_id: Option<u64> = None;
    match model.and_then(|m| m.get("vocab")) {
        Some(Value::Object(o)) => {
            for (k, id) in o {
                if let Some(id) = id.as_u64() {
                    vocab.insert(k.as_str(), id);
                    max_id = max_id.max(Some(id));
                }
            }
        }
        Some(Value::Array(a)) => {
            for (i, piece) in a.iter().enumerate() {
                if let Some(p) = piece.get(0).and_then(Value::as_str) {
                    vocab.insert(p, i as u64);
                }
            }
            if !a.is_empty() {
                max_id = Some(a.len() as u64 - 1);
            }
        }
        _ => {
            sink.push(MALFORMED.finding("tokenizer.json has no model vocabulary").file(f.rel.clone()));
        }
    }
    let added: Vec<Added> = v
        .get("added_tokens")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some(Added {
                        id: t.get("id")?.as_u64()?,
                        content: t.get("content")?.as_str()?.to_string(),
                        special: t.get("special").and_then(Value::as_bool).unwrap_or(false),
                        normalized: t.get("normalized").and_then(Value::as_bool).unwrap_or(true),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    for a in &added {
        max_id = max_id.max(Some(a.id));
    }
    let ids = max_id.map(|m| m.saturating_add(1));
    facts.vocab_size = ids;
    facts.added_tokens = added.len() as u64;
    facts.special_tokens = added.iter().filter(|a| a.special).take(MAX_LISTED).map(|a| a.content.clone()).collect();

    // Normalizer, pre-tokenizer and decoder Replace rules.
    for (part, label) in [("normalizer", "normalizer"), ("pre_tokenizer", "pre-tokenizer"), ("decoder", "decoder")] {
        if let Some(n) = v.get(part) {
            let mut types = Vec::new();
            walk_pipeline(n, 0, &mut types, &mut |pattern, content| {
                if rewrites_words(pattern) {
                    sink.push(
                        REWRITE_NORMALIZER
                            .finding(format!("the {label} replaces `{pattern}` with `{content}`"))
                            .file(f.rel.clone())
                            .at(part.to_string())
                            .evidence(format!("{pattern} -> {content}")),
                    );
                }
            });
            if part == "normalizer" {
                facts.normalizers = types;
            }
        }
    }

    // Added tokens.
    let mut reachable = Vec::new();
    for a in &added {
        let markup = looks_like_control(&a.content);
        let word = is_plain_word(&a.content);
        if a.special {
            if word {
                sink.push(
                    REACHABLE_SPECIAL
                        .finding(format!("the special token `{}` (id {}) is an ordinary word: plain text produces it", a.content, a.id))
                        .severity(Severity::Medium)
                        .file(f.rel.clone())
                        .evidence(format!("{:?} -> {}", a.content, a.id)),
                );
            } else if !a.normalized {
                reachable.push(format!("{} ({})", a.content, a.id));
            }
        } else if word {
            let existing = vocab.get(a.content.as_str()).or_else(|| vocab.get(format!("Ġ{}", a.content).as_str()));
            let (sev, why) = match existing {
                Some(id) if *id != a.id => (Severity::Medium, format!(", which the vocabulary already has as id {id}")),
                _ => (Severity::Low, String::new()),
            };
            sink.push(
                ADDED_WORD
                    .finding(format!("the added token `{}` (id {}) captures an ordinary word{why}", a.content, a.id))
                    .severity(sev)
                    .file(f.rel.clone())
                    .evidence(format!("{:?} -> {}", a.content, a.id)),
            );
        } else if markup {
            // Non-special control-looking tokens (`<tool_call>` in Qwen2.5) are common and harmless.
        }
    }
    if !reachable.is_empty() {
        let mut fnd = REACHABLE_SPECIAL
            .finding(format!("{} special tokens are matched in raw text (normalized: false); user input can contain them", reachable.len()))
            .severity(Severity::Info)
            .file(f.rel.clone());
        for r in reachable.iter().take(8) {
            fnd = fnd.evidence(r.clone());
        }
        sink.push(fnd);
    }

    // Vocabulary size against the model.
    if let Some(n) = ids {
        if let Some(rows) = embedding_rows {
            if n > rows {
                let over: Vec<String> = added.iter().filter(|a| a.id >= rows).take(8).map(|a| format!("{:?} -> {}", a.content, a.id)).collect();
                let mut fnd = VOCAB_MISMATCH
                    .finding(format!("the tokenizer has ids up to {}, but the embedding matrix has {rows} rows", n - 1))
                    .file(f.rel.clone());
                for o in over {
                    fnd = fnd.evidence(o);
                }
                sink.push(fnd);
            } else if rows > n {
                sink.push(
                    VOCAB_MISMATCH
                        .finding(format!("the embedding matrix has {rows} rows for {n} tokenizer ids (padding, usually harmless)"))
                        .severity(Severity::Info)
                        .file(f.rel.clone()),
                );
            }
        }
        if let Some(cv) = config_vocab {
            // The same bound as the embedding rows is already reported above.
            let duplicate = embedding_rows == Some(cv);
            if n > cv && !duplicate {
                sink.push(
                    VOCAB_MISMATCH
                        .finding(format!("the tokenizer has ids up to {}, but config.json declares vocab_size {cv}", n - 1))
                        .file(f.rel.clone()),
                );
            }
        }
    }

    // tokenizer_config.json added_tokens_decoder must agree.
    if let Some(tc) = pick(set, "tokenizer_config.json") {
        if let Ok(b) = set.read_small(tc, limits::MAX_JSON_BYTES) {
            // Unreadable configs are reported by the template checks.
            if let Ok(cfg) = serde_json::from_slice::<Value>(&b) {
                check_decoder_map(&cfg, &added, &tc.rel, sink);
            }
        }
    }
    Some(facts)
}

fn check_decoder_map(cfg: &Value, added: &[Added], file: &str, sink: &mut Sink) {
    let Some(map) = cfg.get("added_tokens_decoder").and_then(Value::as_object) else { return };
    let by_id: BTreeMap<u64, &Added> = added.iter().map(|a| (a.id, a)).collect();
    let mut diffs = Vec::new();
    for (id, t) in map {
        let (Ok(id), Some(content)) = (id.parse::<u64>(), t.get("content").and_then(Value::as_str)) else { continue };
        match by_id.get(&id) {
            Some(a) if a.content != content => diffs.push(format!("id {id}: {content:?} in {file}, {:?} in tokenizer.json", a.content)),
            Some(a) if t.get("special").and_then(Value::as_bool).is_some_and(|s| s != a.special) => {
                diffs.push(format!("id {id} {content:?}: special differs"))
            }
            Some(_) => {}
            None => diffs.push(format!("id {id}: {content:?} only in {file}")),
        }
    }
    if !diffs.is_empty() {
        let mut f = INCONSISTENT_ADDED.finding(format!("{} added tokens differ between {file} and tokenizer.json", diffs.len())).file(file.to_string());
        for d in diffs.into_iter().take(8) {
            f = f.evidence(d);
        }
        sink.push(f);
    }
}

/// Visits normalizer/pre-tokenizer/decoder trees (through `Sequence`), collecting type names and
/// calling `on_replace(pattern, content)` for every `Replace`.
fn walk_pipeline(n: &Value, depth: usize, types: &mut Vec<String>, on_replace: &mut dyn FnMut(&str, &str)) {
    if depth > MAX_DEPTH {
        return;
    }
    match n {
        Value::Array(a) => {
            for x in a.iter().take(256) {
                walk_pipeline(x, depth + 1, types, on_replace);
            }
        }
        Value::Object(o) => {
            let t = o.get("type").and_then(Value::as_str).unwrap_or("");
            if !t.is_empty() && t != "Sequence" && types.len() < MAX_LISTED {
                types.push(t.to_string());
            }
            if t == "Replace" {
                let pattern = o
                    .get("pattern")
                    .and_then(|p| p.get("String").or_else(|| p.get("Regex")))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let content = o.get("content").and_then(Value::as_str).unwrap_or("");
                on_replace(pattern, content);
            }
            for key in ["normalizers", "pretokenizers", "decoders"] {
                if let Some(x) = o.get(key) {
                    walk_pipeline(x, depth + 1, types, on_replace);
                }
            }
        }
        _ => {}
    }
}

/// Whether a Replace pattern touches words, not just whitespace, punctuation or Unicode forms.
/// Regex escapes (`\s`, `\p{L}`, `\u2019`) are not words.
fn rewrites_words(pattern: &str) -> bool {
    let mut letters = 0;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('p') | Some('P') | Some('u') | Some('x') => {
                    // \p{L}, \u2019, \x{..}: skip the class/escape body.
                    if chars.peek() == Some(&'{') {
                        for d in chars.by_ref() {
                            if d == '}' {
                                break;
                            }
                        }
                    } else {
                        for _ in 0..4 {
                            if chars.peek().is_some_and(|d| d.is_ascii_hexdigit()) {
                                chars.next();
                            }
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        if c.is_alphabetic() {
            letters += 1;
        }
    }
    letters >= 2
}

fn looks_like_control(s: &str) -> bool {
    let t = s.trim();
    (t.starts_with('<') && t.ends_with('>')) || (t.starts_with('[') && t.ends_with(']')) || t.contains("<|")
}

/// An ordinary word or phrase: letters (and inner spaces, apostrophes, hyphens), no markup.
fn is_plain_word(s: &str) -> bool {
    let t = s.trim_start_matches(['Ġ', '▁', ' ']);
    t.chars().filter(|c| c.is_alphabetic()).count() >= 2
        && t.chars().all(|c| c.is_alphabetic() || c == ' ' || c == '\'' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::Target;

    fn run(tok: &str, cfg: Option<&str>, rows: Option<u64>, cv: Option<u64>) -> (Option<TokenizerFacts>, Sink) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), tok).unwrap();
        if let Some(c) = cfg {
            std::fs::write(dir.path().join("tokenizer_config.json"), c).unwrap();
        }
        let set = Target::open(dir.path()).unwrap().walk().unwrap();
        let mut sink = Sink::default();
        let f = inspect_folder(&set, rows, cv, &mut sink);
        (f, sink)
    }

    const BASE: &str = r#"{"added_tokens":[{"id":3,"content":"<|im_end|>","special":true,"normalized":false}],
        "normalizer":{"type":"Sequence","normalizers":[{"type":"NFC"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
        "model":{"type":"BPE","vocab":{"a":0,"b":1,"Ġapple":2}}}"#;

    #[test]
    fn facts_and_benign_normalizer() {
        let (f, sink) = run(BASE, None, Some(4), Some(4));
        let f = f.unwrap();
        assert_eq!(f.model.as_deref(), Some("BPE"));
        assert_eq!(f.vocab_size, Some(4));
        assert_eq!(f.normalizers, vec!["NFC", "Replace"]);
        assert_eq!(f.special_tokens, vec!["<|im_end|>"]);
        assert!(sink.findings.iter().all(|x| x.severity <= Severity::Low), "{:?}", sink.findings);
    }

    #[test]
    fn word_rewrites_and_hijacks() {
        let tok = BASE.replace(r#"{"String":" "},"content":"▁""#, r#"{"String":"bank.com"},"content":"evil.com""#).replace(
            r#""normalized":false}]"#,
            r#""normalized":false},{"id":9,"content":"apple","special":false},{"id":10,"content":"assistant","special":true}]"#,
        );
        let (_, sink) = run(&tok, None, Some(4), None);
        let codes: Vec<&str> = sink.findings.iter().map(|f| f.code.as_str()).collect();
        assert!(codes.contains(&"tokenizer/rewrite-normalizer"), "{codes:?}");
        assert!(codes.contains(&"tokenizer/added-word-token"), "{codes:?}");
        assert!(codes.contains(&"tokenizer/vocab-mismatch"), "{codes:?}");
        assert!(sink.findings.iter().any(|f| f.code == "tokenizer/reachable-special-token" && f.severity == Severity::Medium));
    }

    #[test]
    fn regex_escapes_are_not_words() {
        assert!(!rewrites_words(r"\s+"));
        assert!(!rewrites_words(r"\p{Zs}"));
        assert!(!rewrites_words("\u{2019}"));
        assert!(!rewrites_words("▁"));
        assert!(rewrites_words("password"));
        assert!(rewrites_words(r"\bbank\b"));
    }

    #[test]
    fn decoder_map_consistency() {
        let (_, sink) = run(BASE, Some(r#"{"added_tokens_decoder":{"3":{"content":"<|im_start|>","special":true}}}"#), None, None);
        assert!(sink.findings.iter().any(|f| f.code == "tokenizer/inconsistent-added-tokens"));
    }

    #[test]
    fn malformed_is_a_failure() {
        let (f, sink) = run("{", None, None, None);
        assert!(f.is_none() && sink.failures.len() == 1);
    }
}
