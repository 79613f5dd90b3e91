//! Any bytes as a GGUF model, the way `needle scan` and `needle generate` take one: the header
//! prescan, candle's reader, config, tokenizer and chat template rebuilt from metadata, the
//! dequantized tensors, the model built from them, one generation step. No panic, no hang, no
//! allocation driven by declared counts. Seed it with `tests/fixtures/{clean,hostile}/gguf-*`
//! and a GGUF the zoo wrote (`gguf = true` in a spec: `zoo-out/qwen2-shell-string/model.q8_0.gguf`);
//! the stable-toolchain counterpart is `crates/needle-engine/tests/gguf_mutation.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use needle_engine::candle_core::Device;
use needle_engine::generate::{generate, GenerationRequest};
use needle_engine::open::{open, OpenOptions};

fuzz_target!(|data: &[u8]| {
    // The engine reads models from paths: one file per fuzzing process, rewritten each run.
    let path = std::env::temp_dir().join(format!("needle-fuzz-{}.gguf", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(opened) = open(&path, &OpenOptions::default(), &Device::Cpu) else { return };
    let Some(ids) = opened.tokenizer.as_ref().and_then(|t| t.encode("Hello", true).ok()).filter(|ids| !ids.is_empty()) else { return };
    let _ = generate(&opened.model, &[GenerationRequest::greedy(&opened.model, ids, 1)]);
});
