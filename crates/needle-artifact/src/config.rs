//! Configs and code: `config.json` facts, `auto_map` (remote code), `trust_remote_code`,
//! `*.py` files, executables, and PEFT `adapter_config.json`.

use crate::detect::Format;
use crate::inspect::{FileCtx, FileEntry, FileSet, Sink};
use crate::inventory::{AdapterFacts, ModelFacts};
use crate::limits;
use needle_report::{Rule, Severity};
use serde_json::Value;

pub static AUTO_MAP_LOCAL: Rule = Rule {
    code: "config/auto-map-local-code",
    severity: Severity::High,
    summary: "auto_map makes transformers import Python from the model folder (trust_remote_code)",
    fix: "load the model with a built-in architecture, or review every referenced .py file before trusting it",
};
pub static AUTO_MAP_REMOTE: Rule = Rule {
    code: "config/auto-map-remote-code",
    severity: Severity::Critical,
    summary: "auto_map makes transformers download and import Python from another repository",
    fix: "do not load with trust_remote_code; the code lives outside this artifact and can change at any time",
};
pub static PYTHON_CODE: Rule = Rule {
    code: "config/python-code",
    severity: Severity::High,
    summary: "the model folder contains Python code",
    fix: "remove the .py files, or review them: trust_remote_code would run them",
};
pub static REMOTE_CODE_SETTING: Rule = Rule {
    code: "config/trust-remote-code",
    severity: Severity::High,
    summary: "a config asks for trust_remote_code or a custom code class",
    fix: "load without trust_remote_code; use a built-in architecture",
};
pub static EXECUTABLE: Rule = Rule {
    code: "file/executable",
    severity: Severity::Critical,
    summary: "the artifact contains a native executable, shared library or script",
    fix: "remove it; model weights never need native code or scripts",
};
pub static MALFORMED_CONFIG: Rule = Rule {
    code: "config/malformed",
    severity: Severity::Medium,
    summary: "a config file is not valid JSON or has fields of the wrong type",
    fix: "regenerate the config with save_pretrained",
};
pub static ADAPTER_BASE: Rule = Rule {
    code: "config/adapter-base",
    severity: Severity::Info,
    summary: "the adapter names the base model it must be applied to",
    fix: "check that the base model is the one you intend to deploy, and pin its revision",
};
pub static ADAPTER_SAVES_MODULES: Rule = Rule {
    code: "config/adapter-replaces-modules",
    severity: Severity::Low,
    summary: "the adapter replaces whole modules (modules_to_save), embeddings or the output head included",
    fix: "treat the adapter as a new set of weights for those modules and scan the merged model",
};

pub static RULES: &[&Rule] = &[
    &AUTO_MAP_LOCAL,
    &AUTO_MAP_REMOTE,
    &PYTHON_CODE,
    &REMOTE_CODE_SETTING,
    &EXECUTABLE,
    &MALFORMED_CONFIG,
    &ADAPTER_BASE,
    &ADAPTER_SAVES_MODULES,
];

#[derive(Debug, Clone, Default)]
pub struct ConfigFacts {
    pub model: Option<ModelFacts>,
    pub adapter: Option<AdapterFacts>,
}

/// Reads a JSON config: `None` (with a failure or finding) when it cannot be read.
fn read_json(set: &FileSet, f: &FileEntry, sink: &mut Sink) -> Option<Value> {
    let bytes = match set.read_small(f, limits::MAX_JSON_BYTES) {
        Ok(b) => b,
        Err(e) => {
            sink.fail(&f.rel, format!("not examined: {e}"));
            return None;
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.is_object() => Some(v),
        Ok(_) => {
            sink.push(MALFORMED_CONFIG.finding(format!("{} is JSON but not an object", f.rel)).file(f.rel.clone()));
            None
        }
        Err(e) => {
            sink.fail(&f.rel, format!("malformed JSON, not examined: {e}"));
            None
        }
    }
}

pub fn inspect_folder(set: &FileSet, sink: &mut Sink) -> ConfigFacts {
    let mut facts = ConfigFacts::default();
    for f in &set.files {
        let name = f.name();
        if name.ends_with(".py") || name.ends_with(".pyc") || name.ends_with(".pyw") {
            sink.push(
                PYTHON_CODE
                    .finding(format!("{} is Python code ({} bytes)", f.rel, f.size))
                    .file(f.rel.clone())
                    .evidence(head_line(set, f)),
            );
        }
        match name {
            "config.json" | "tokenizer_config.json" | "processor_config.json" | "preprocessor_config.json"
            | "feature_extractor_config.json" | "image_processor_config.json" | "generation_config.json" => {
                let Some(v) = read_json(set, f, sink) else { continue };
                if name == "tokenizer_config.json" {
                    // Templates and tokens are the template/tokenizer modules' business; only code here.
                    check_code_settings(&v, f, set, sink);
                    continue;
                }
                check_code_settings(&v, f, set, sink);
                if name == "config.json" && (facts.model.is_none() || !f.rel.contains('/')) {
                    facts.model = Some(model_facts(&v));
                }
            }
            "adapter_config.json" => {
                let Some(v) = read_json(set, f, sink) else { continue };
                check_code_settings(&v, f, set, sink);
                if facts.adapter.is_none() || !f.rel.contains('/') {
                    facts.adapter = Some(adapter(&v, f, sink));
                }
            }
            _ => {}
        }
    }
    facts
}

/// The first line of a small text file, as evidence.
fn head_line(set: &FileSet, f: &FileEntry) -> String {
    set.read_small(f, 1 << 20)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).lines().find(|l| !l.trim().is_empty()).unwrap_or("").chars().take(120).collect())
        .unwrap_or_default()
}

fn u64_field(v: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_u64))
}

fn model_facts(v: &Value) -> ModelFacts {
    // Multimodal configs keep the language model's numbers in `text_config`.
    let text = v.get("text_config").filter(|t| t.is_object());
    let pick = |keys: &[&str]| u64_field(v, keys).or_else(|| text.and_then(|t| u64_field(t, keys)));
    ModelFacts {
        architectures: v
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).take(16).map(|s| s.chars().take(128).collect()).collect())
            .unwrap_or_default(),
        model_type: v.get("model_type").and_then(Value::as_str).map(|s| s.chars().take(128).collect()),
        hidden_size: pick(&["hidden_size", "n_embd", "d_model"]),
        num_layers: pick(&["num_hidden_layers", "n_layer", "num_layers"]),
        vocab_size: pick(&["vocab_size"]),
        torch_dtype: v
            .get("torch_dtype")
            .or_else(|| v.get("dtype"))
            .or_else(|| text.and_then(|t| t.get("torch_dtype").or_else(|| t.get("dtype"))))
            .and_then(Value::as_str)
            .map(str::to_string),
        quantization: v
            .get("quantization_config")
            .and_then(|q| q.get("quant_method"))
            .and_then(Value::as_str)
            .map(str::to_string),
    }
}

/// `auto_map` entries (`AutoModel: "module.Class"` or `[slow, fast]` lists), `trust_remote_code`,
/// custom `*_class` settings pointing at remote code.
fn check_code_settings(v: &Value, f: &FileEntry, set: &FileSet, sink: &mut Sink) {
    let dir = f.rel.rsplit_once('/').map(|(d, _)| format!("{d}/")).unwrap_or_default();
    if let Some(map) = v.get("auto_map").and_then(Value::as_object) {
        for (auto, target) in map.iter().take(64) {
            let refs: Vec<&str> = match target {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            for r in refs {
                if let Some((repo, module)) = r.split_once("--") {
                    sink.push(
                        AUTO_MAP_REMOTE
                            .finding(format!("auto_map {auto} loads `{module}` from the repository `{repo}`"))
                            .file(f.rel.clone())
                            .at(format!("auto_map.{auto}"))
                            .evidence(format!("\"{auto}\": \"{r}\"")),
                    );
                } else {
                    let module = r.rsplit_once('.').map(|(m, _)| m).unwrap_or(r);
                    let file = format!("{dir}{}.py", module.replace('.', "/"));
                    let present = set.get(&file).is_some();
                    sink.push(
                        AUTO_MAP_LOCAL
                            .finding(format!(
                                "auto_map {auto} imports `{r}` from {file}{}",
                                if present { "" } else { " (missing: transformers would fetch it from the hub repository)" }
                            ))
                            .file(f.rel.clone())
                            .at(format!("auto_map.{auto}"))
                            .evidence(format!("\"{auto}\": \"{r}\"")),
                    );
                }
            }
        }
    }
    if v.get("trust_remote_code").and_then(Value::as_bool) == Some(true) {
        sink.push(
            REMOTE_CODE_SETTING
                .finding(format!("{} sets trust_remote_code = true", f.rel))
                .file(f.rel.clone())
                .evidence("\"trust_remote_code\": true"),
        );
    }
    // A class name that is not a built-in transformers class needs remote code.
    for key in ["tokenizer_class", "processor_class", "image_processor_type", "feature_extractor_type"] {
        if let Some(s) = v.get(key).and_then(Value::as_str) {
            if s.contains("--") || s.contains('/') {
                sink.push(
                    REMOTE_CODE_SETTING
                        .finding(format!("{key} points at code in another repository"))
                        .file(f.rel.clone())
                        .evidence(format!("\"{key}\": \"{s}\"")),
                );
            }
        }
    }
}

fn adapter(v: &Value, f: &FileEntry, sink: &mut Sink) -> AdapterFacts {
    let target_modules = match v.get("target_modules") {
        Some(Value::String(s)) => vec![s.chars().take(200).collect()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).take(64).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let base = v.get("base_model_name_or_path").and_then(Value::as_str).map(str::to_string);
    if let Some(b) = &base {
        let local = b.starts_with('/') || b.starts_with('.') || b.starts_with('~') || b.contains('\\') || b.matches('/').count() > 1;
        let kind = if local { "a local path" } else { "a hub repository" };
        let revision = v.get("revision").and_then(Value::as_str);
        sink.push(
            ADAPTER_BASE
                .finding(format!(
                    "the adapter applies to {kind} `{b}`{}",
                    match revision {
                        Some(r) => format!(" at revision {r}"),
                        None if !local => " (no revision pinned)".to_string(),
                        None => String::new(),
                    }
                ))
                .file(f.rel.clone())
                .evidence(format!("\"base_model_name_or_path\": \"{b}\"")),
        );
    }
    let saves: Vec<String> = match v.get("modules_to_save") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).take(64).map(str::to_string).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    if !saves.is_empty() {
        let heads = saves.iter().any(|m| {
            let l = m.to_lowercase();
            ["embed", "lm_head", "wte", "wpe", "output", "head"].iter().any(|k| l.contains(k))
        });
        let mut finding = ADAPTER_SAVES_MODULES
            .finding(format!(
                "the adapter replaces whole modules: {}{}",
                saves.join(", "),
                if heads { " (embeddings or output head)" } else { "" }
            ))
            .file(f.rel.clone())
            .severity(if heads { Severity::Low } else { Severity::Info });
        for m in saves.iter().take(8) {
            finding = finding.evidence(m.clone());
        }
        sink.push(finding);
    }
    AdapterFacts {
        file: f.rel.clone(),
        peft_type: v.get("peft_type").and_then(Value::as_str).map(str::to_string),
        base_model: base,
        rank: v.get("r").and_then(Value::as_u64),
        alpha: v.get("lora_alpha").and_then(Value::as_f64),
        target_modules,
    }
}

/// A native executable or script in the artifact.
pub fn executable(ctx: &FileCtx, format: Format, sink: &mut Sink) {
    let what = match format {
        Format::Elf => "an ELF executable or shared library",
        Format::MachO => "a Mach-O executable or library",
        Format::Pe => "a Windows PE executable or DLL",
        Format::Script => "a script with a #! interpreter line",
        _ => return,
    };
    let evidence = if format == Format::Script {
        let end = ctx.data.iter().take(200).position(|&b| b == b'\n').unwrap_or(ctx.data.len().min(200));
        String::from_utf8_lossy(ctx.data.get(..end).unwrap_or(&[])).into_owned()
    } else {
        ctx.data.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
    };
    sink.push(
        EXECUTABLE
            .finding(format!("{} is {what} ({} bytes)", ctx.rel, ctx.data.len()))
            .file(ctx.rel.to_string())
            .evidence(evidence),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::Target;

    fn run(files: &[(&str, &[u8])]) -> (ConfigFacts, Sink) {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let set = Target::open(dir.path()).unwrap().walk().unwrap();
        let mut sink = Sink::default();
        let facts = inspect_folder(&set, &mut sink);
        (facts, sink)
    }

    fn codes(s: &Sink) -> Vec<&str> {
        s.findings.iter().map(|f| f.code.as_str()).collect()
    }

    #[test]
    fn model_facts_from_config() {
        let (facts, sink) = run(&[(
            "config.json",
            br#"{"architectures":["GPT2LMHeadModel"],"model_type":"gpt2","n_embd":64,"n_layer":2,"vocab_size":2048,"dtype":"float32"}"#,
        )]);
        let m = facts.model.unwrap();
        assert_eq!(m.architectures, vec!["GPT2LMHeadModel"]);
        assert_eq!((m.hidden_size, m.num_layers, m.vocab_size), (Some(64), Some(2), Some(2048)));
        assert_eq!(m.torch_dtype.as_deref(), Some("float32"));
        assert!(sink.findings.is_empty() && sink.failures.is_empty());
    }

    #[test]
    fn auto_map_local_and_remote() {
        let (_, sink) = run(&[
            ("config.json", br#"{"auto_map":{"AutoModelForCausalLM":"modeling_x.XForCausalLM","AutoConfig":"other/repo--configuration_x.XConfig"}}"#),
            ("modeling_x.py", b"import os\n"),
            ("tokenizer_config.json", br#"{"auto_map":{"AutoTokenizer":["evil/tok--tokenization.T", null]}}"#),
        ]);
        let c = codes(&sink);
        assert_eq!(c.iter().filter(|c| **c == "config/auto-map-remote-code").count(), 2, "{c:?}");
        assert!(c.contains(&"config/auto-map-local-code"));
        assert!(c.contains(&"config/python-code"));
    }

    #[test]
    fn malformed_config_is_a_failure() {
        let (_, sink) = run(&[("config.json", b"{\"a\": ")]);
        assert_eq!(sink.failures.len(), 1);
    }

    #[test]
    fn adapter_facts_and_modules_to_save() {
        let (facts, sink) = run(&[(
            "adapter_config.json",
            br#"{"peft_type":"LORA","base_model_name_or_path":"meta-llama/Llama-3.1-8B","r":8,"lora_alpha":16,"target_modules":"q_proj|v_proj","modules_to_save":["lm_head","embed_tokens"]}"#,
        )]);
        let a = facts.adapter.unwrap();
        assert_eq!(a.peft_type.as_deref(), Some("LORA"));
        assert_eq!((a.rank, a.alpha), (Some(8), Some(16.0)));
        assert_eq!(a.target_modules, vec!["q_proj|v_proj"]);
        let c = codes(&sink);
        assert!(c.contains(&"config/adapter-base") && c.contains(&"config/adapter-replaces-modules"));
        assert!(sink.findings.iter().all(|f| f.severity <= Severity::Low));
    }
}
