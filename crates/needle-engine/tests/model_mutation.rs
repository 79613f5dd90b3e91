//! Bounded mutational testing, with a fixed seed, of what `needle scan` and `needle generate` do
//! with a model a user or an attacker hands them: [`open`] it and generate one token.
//!
//! - GGUF files (the header prescan, candle's reader, the config, tokenizer and chat template
//!   rebuilt from metadata, the dequantized tensors, the model built from them): the committed
//!   GGUF fixtures and GGUFs this engine writes from the reference models, each mutated in its
//!   first 64 KiB (header, metadata, tensor infos: bit flips, extreme 32/64-bit values in
//!   counts, lengths and offsets, truncations, splices). `fuzz/fuzz_targets/engine_gguf.rs` is
//!   the open-ended version.
//! - Model folders (every reference architecture) and a PEFT LoRA adapter over its base: the
//!   weights (`model.safetensors`, `adapter_model.safetensors`) mutated the same way in their
//!   header and first tensors, or a value of `config.json` / `adapter_config.json` /
//!   `tokenizer.json` replaced by an extreme one (and the tokenizer's bytes mutated too).
//!
//! Passing means: no panic, every run terminates and stays fast.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use needle_engine::generate::{generate, GenerationRequest};
use needle_engine::gguf::{write_gguf, GgmlDType};
use needle_engine::open::{open, OpenOptions};

#[path = "../../needle-artifact/tests/common/mod.rs"]
mod common;
use common::{XorShift, TENSORS};

fn mutate(rng: &mut XorShift, seed: &[u8], all: &[Vec<u8>]) -> Vec<u8> {
    common::mutate(rng, seed, all, &TENSORS)
}

/// Bytes of each seed that are mutated; the rest (tensor data) is kept as it was.
const HEAD: usize = 64 * 1024;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn seeds(tmp: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for kind in ["clean", "hostile"] {
        let Ok(rd) = std::fs::read_dir(root().join(kind)) else { continue };
        let mut paths: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "gguf")).collect();
        paths.sort();
        out.extend(paths.iter().filter_map(|p| std::fs::read(p).ok()));
    }
    // Whole models with a tokenizer and chat template, as this engine exports them.
    for (arch, dtype) in [("llama", GgmlDType::Q8_0), ("gpt2", GgmlDType::F16), ("qwen2", GgmlDType::Q4K)] {
        let path = tmp.join(format!("{arch}.gguf"));
        write_gguf(&root().join("reference").join(arch), &path, dtype).expect("export a reference model");
        out.push(std::fs::read(&path).expect("read the export"));
    }
    out
}

/// How far a mutated file got.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Reached {
    Refused,
    Opened,
    Generated,
}

/// Opens `path` as `needle scan` does and, when that works, generates one token.
fn run_with(path: &Path, opts: &OpenOptions) -> Reached {
    let Ok(opened) = open(path, opts, &Device::Cpu) else { return Reached::Refused };
    let Some(ids) = opened.tokenizer.as_ref().and_then(|t| t.encode("Hello", true).ok()).filter(|ids| !ids.is_empty()) else { return Reached::Opened };
    match generate(&opened.model, &[GenerationRequest::greedy(&opened.model, ids, 1)]) {
        Ok(_) => Reached::Generated,
        Err(_) => Reached::Opened,
    }
}

fn iterations(default: usize) -> usize {
    std::env::var("NEEDLE_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `one` (which writes the mutated model and opens it) under `catch_unwind`, keeping the
/// input of a panic; returns how far it got.
fn guarded(i: usize, keep: &[u8], one: impl FnOnce() -> Reached + std::panic::UnwindSafe) -> Reached {
    match std::panic::catch_unwind(one) {
        Ok(r) => r,
        Err(_) => {
            let path = std::env::temp_dir().join(format!("needle-model-panic-{i}.bin"));
            let _ = std::fs::write(&path, keep);
            panic!("mutation {i} panicked; input kept at {}", path.display());
        }
    }
}

#[test]
fn mutated_gguf_models_never_panic() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let all = seeds(tmp.path());
    assert!(all.len() >= 4, "{} seeds", all.len());
    // The unmutated exports open and generate: the mutations start from working models.
    for arch in ["llama", "gpt2", "qwen2"] {
        let opened = open(&tmp.path().join(format!("{arch}.gguf")), &OpenOptions::default(), &Device::Cpu).expect("a seed opens");
        assert!(opened.tokenizer.is_some(), "{arch}: tokenizer");
    }
    let iterations = iterations(2_000);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let path = tmp.path().join("mutated.gguf");
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut reached = [0usize; 3];
    let models = all.len() - 3;
    for i in 0..iterations {
        // Every other mutation starts from a whole model (the last three seeds).
        let seed = if i % 2 == 0 { &all[models + (i / 2) % 3] } else { &all[(i / 2) % all.len()] };
        let cut = seed.len().min(HEAD);
        let mut d = mutate(&mut rng, &seed[..cut], &all);
        d.extend_from_slice(&seed[cut..]);
        std::fs::write(&path, &d).expect("write the mutated file");
        let t = Instant::now();
        reached[guarded(i, &d, || run_with(&path, &OpenOptions::default())) as usize] += 1;
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("{iterations} mutations over {} seeds: {}", all.len(), summary(start, slowest, &reached));
    // The mutations reach past the header: some files still generate.
    assert!(reached[2] > 0, "{reached:?}");
    assert!(slowest < Duration::from_secs(5), "an input took {slowest:?}");
}

/// How long the mutations took and how far they got.
fn summary(start: Instant, slowest: Duration, reached: &[usize; 3]) -> String {
    let secs = start.elapsed().as_secs_f64();
    let ms = slowest.as_secs_f64() * 1e3;
    format!("{secs:.1}s (slowest input {ms:.1} ms): {} refused, {} opened only, {} generated", reached[0], reached[1], reached[2])
}

/// Values a mutated JSON field takes (`1e999` and the lone surrogate made the `tokenizers` crate
/// panic on a `tokenizer.json` until the engine parsed it first).
const EXTREME: &[&str] = &["0", "-1", "1", "3", "1e30", "1e999", "4294967297", "18446744073709551615", "0.5", "null", "\"x\"", "\"\\ud800\"", "[]", "{}", "true"];

/// `text` with one JSON number (or `true`/`false`/`null`) replaced by an extreme value.
fn mutate_config(rng: &mut XorShift, text: &str) -> String {
    let bytes = text.as_bytes();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b':' {
            let mut a = i + 1;
            while a < bytes.len() && bytes[a] == b' ' {
                a += 1;
            }
            let mut b = a;
            while b < bytes.len() && !matches!(bytes[b], b',' | b'}' | b']' | b'\n' | b'"' | b'{' | b'[') {
                b += 1;
            }
            if b > a {
                spans.push((a, b));
            }
        }
        i += 1;
    }
    if spans.is_empty() {
        return text.to_string();
    }
    let (a, b) = spans[rng.below(spans.len())];
    format!("{}{}{}", &text[..a], EXTREME[rng.below(EXTREME.len())], &text[b..])
}

/// A model folder the folder test mutates: its weights and config files, as committed.
struct FolderSeed {
    dir: PathBuf,
    weights_file: &'static str,
    weights: Vec<u8>,
    config_file: &'static str,
    config: String,
    /// `tokenizer.json` (empty for the adapter, which takes its base's).
    tokenizer: String,
    opts: OpenOptions,
}

#[test]
fn mutated_model_folders_never_panic() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let archs = ["llama", "llama-tied", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "gpt2", "gpt_neox", "llama-lora"];
    let mut seeds: Vec<FolderSeed> = Vec::new();
    for a in archs {
        let src = root().join("reference").join(a);
        let dir = tmp.path().join(a);
        std::fs::create_dir_all(&dir).expect("model dir");
        for f in ["tokenizer_config.json", "generation_config.json", "chat_template.jinja"] {
            if src.join(f).exists() {
                std::fs::copy(src.join(f), dir.join(f)).expect("copy");
            }
        }
        // The adapter names its base by a relative path; the copy is given it explicitly.
        let adapter = src.join("adapter_config.json").exists();
        let (weights_file, config_file, opts) = if adapter {
            ("adapter_model.safetensors", "adapter_config.json", OpenOptions { base: Some(root().join("reference/llama")), ..OpenOptions::default() })
        } else {
            ("model.safetensors", "config.json", OpenOptions::default())
        };
        let weights = std::fs::read(src.join(weights_file)).expect("weights");
        let config = std::fs::read_to_string(src.join(config_file)).expect("config");
        let tokenizer = std::fs::read_to_string(src.join("tokenizer.json")).unwrap_or_default();
        seeds.push(FolderSeed { dir, weights_file, weights, config_file, config, tokenizer, opts });
    }
    let all: Vec<Vec<u8>> = seeds.iter().map(|s| s.weights[..s.weights.len().min(HEAD)].to_vec()).collect();
    let iterations = iterations(330);
    let mut rng = XorShift(0x853c_49e6_748f_ea9b);
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut reached = [0usize; 3];
    let mut adapter_ran = 0;
    for i in 0..iterations {
        let seed = &seeds[i % seeds.len()];
        let (mut w, mut c, mut tok) = (seed.weights.clone(), seed.config.clone(), seed.tokenizer.clone());
        match rng.below(4) {
            0 => c = mutate_config(&mut rng, &seed.config),
            1 if !tok.is_empty() => {
                tok = mutate_config(&mut rng, &seed.tokenizer);
                if rng.below(2) == 0 {
                    tok = String::from_utf8_lossy(&mutate(&mut rng, tok.as_bytes(), &all)).into_owned();
                }
            }
            _ => {
                let cut = seed.weights.len().min(HEAD);
                w = mutate(&mut rng, &seed.weights[..cut], &all);
                w.extend_from_slice(&seed.weights[cut..]);
            }
        }
        std::fs::write(seed.dir.join(seed.weights_file), &w).expect("write weights");
        std::fs::write(seed.dir.join(seed.config_file), &c).expect("write config");
        if !tok.is_empty() {
            std::fs::write(seed.dir.join("tokenizer.json"), &tok).expect("write tokenizer");
        }
        let t = Instant::now();
        let keep = [c.as_bytes(), b"\n----\n", tok.as_bytes(), b"\n----\n", &w[..w.len().min(HEAD)]].concat();
        let r = guarded(i, &keep, || run_with(&seed.dir, &seed.opts));
        reached[r as usize] += 1;
        if seed.opts.base.is_some() && r == Reached::Generated {
            adapter_ran += 1;
        }
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("{iterations} mutations over {} models: {} ({adapter_ran} through the adapter)", seeds.len(), summary(start, slowest, &reached));
    assert!(reached[2] > 0 && adapter_ran > 0, "{reached:?}, adapter {adapter_ran}");
    assert!(slowest < Duration::from_secs(5), "an input took {slowest:?}");
}
