//! Bounded mutational testing of the engine's GGUF path with a fixed seed: what `needle scan`
//! and `needle generate` do with a GGUF file a user or an attacker hands them (the header
//! prescan, candle's reader, the config, tokenizer and chat template rebuilt from metadata, the
//! dequantized tensors, the model built from them, and one generation step). Seeds are the
//! committed GGUF fixtures and GGUFs this engine writes from the reference models; each is
//! mutated in its first 64 KiB (header, metadata, tensor infos: bit flips, extreme 32/64-bit
//! values in counts, lengths and offsets, truncations, splices). Passing means: no panic, every
//! run terminates and stays fast. `fuzz/fuzz_targets/engine_gguf.rs` is the open-ended version.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use needle_engine::generate::{generate, GenerationRequest};
use needle_engine::gguf::{write_gguf, GgmlDType};
use needle_engine::open::{open, OpenOptions};

#[path = "../../needle-artifact/tests/common/mod.rs"]
mod common;
#[path = "../../needle-artifact/tests/tensor_mutations/mod.rs"]
mod tensor_mutations;
use common::XorShift;
use tensor_mutations::mutate;

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
fn run_one(path: &Path) -> Reached {
    let Ok(opened) = open(path, &OpenOptions::default(), &Device::Cpu) else { return Reached::Refused };
    let Some(ids) = opened.tokenizer.as_ref().and_then(|t| t.encode("Hello", true).ok()).filter(|ids| !ids.is_empty()) else { return Reached::Opened };
    match generate(&opened.model, &[GenerationRequest::greedy(&opened.model, ids, 1)]) {
        Ok(_) => Reached::Generated,
        Err(_) => Reached::Opened,
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
    let iterations: usize = std::env::var("NEEDLE_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
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
        match std::panic::catch_unwind(|| run_one(&path)) {
            Ok(r) => reached[r as usize] += 1,
            Err(_) => {
                let keep = std::env::temp_dir().join(format!("needle-gguf-panic-{i}.gguf"));
                let _ = std::fs::write(&keep, &d);
                panic!("mutation {i} panicked; input kept at {}", keep.display());
            }
        }
        slowest = slowest.max(t.elapsed());
    }
    eprintln!(
        "{iterations} mutations over {} seeds in {:.1}s (slowest input {:.1} ms): {} refused, {} opened only, {} generated",
        all.len(),
        start.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1e3,
        reached[0],
        reached[1],
        reached[2]
    );
    // The mutations reach past the header: some files still open, and some still generate.
    assert!(reached[1] + reached[2] > 0 && reached[2] > 0, "{reached:?}");
    assert!(slowest < Duration::from_secs(5), "an input took {slowest:?}");
}
