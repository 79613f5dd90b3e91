//! `needle generate` reproduces transformers' greedy output on every reference fixture (ten
//! architectures) and on the LoRA adapter (its first token: that fixture stores logits only),
//! from the command line, as a user runs it.

use needle_engine::candle_core::{safetensors, Device, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference").join(name)
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all().and_then(|t| t.to_dtype(needle_engine::candle_core::DType::I64)).and_then(|t| t.to_vec1::<i64>()).expect("ids").into_iter().map(|x| x as u32).collect()
}

#[test]
fn generate_matches_transformers_greedy_on_every_fixture_and_the_adapter() {
    let names = ["llama", "llama-tied", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "phi3", "gpt2", "gpt_neox", "llama-lora"];
    for name in names {
        let dir = fixture(name);
        let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).expect("expected.json")).expect("json");
        let exp = safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).expect("expected.safetensors");
        for (i, prompt) in spec["prompts"].as_array().expect("prompts").iter().enumerate() {
            let prompt = prompt.as_str().expect("prompt");
            // The adapter fixture carries logits only: its first greedy token is their argmax at
            // the last position.
            let want = match exp.get(&format!("p{i}.greedy")) {
                Some(t) => ids(t),
                None => {
                    let logits = &exp[&format!("p{i}.logits")];
                    let logits = if logits.rank() == 3 { logits.squeeze(0).expect("squeeze") } else { logits.clone() };
                    let last = logits.dim(0).expect("positions") - 1;
                    let row = logits.get(last).and_then(|r| r.argmax(0)).and_then(|a| a.to_dtype(needle_engine::candle_core::DType::U32)).and_then(|a| a.to_scalar::<u32>()).expect("argmax");
                    vec![row]
                }
            };
            let o = Command::new(env!("CARGO_BIN_EXE_needle"))
                .arg("generate")
                .arg(&dir)
                .args(["--prompt", prompt, "--max-new-tokens", &want.len().to_string(), "--ignore-eos", "--format", "json"])
                .output()
                .expect("run needle generate");
            assert_eq!(o.status.code(), Some(0), "{name} p{i}: {}", String::from_utf8_lossy(&o.stderr));
            let got: serde_json::Value = serde_json::from_slice(&o.stdout).expect("generate JSON");
            let got: Vec<u32> = got["token_ids"].as_array().expect("token_ids").iter().map(|v| v.as_u64().unwrap_or(u64::MAX) as u32).collect();
            assert_eq!(got, want, "{name} p{i}: greedy tokens differ from transformers'");
        }
    }
}
