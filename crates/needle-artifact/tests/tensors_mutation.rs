//! Bounded mutational testing of the safetensors and GGUF readers with a fixed seed (the
//! stable-toolchain counterpart of `fuzz/fuzz_targets/{safetensors_header,gguf}.rs`): every
//! committed safetensors/GGUF fixture is mutated (bit flips, extreme 32/64-bit values in length
//! and offset fields, truncations, splices) and fed to the same entry points. Passing means: no
//! panic, every run terminates, and each run stays fast (no work driven by declared counts).

use needle_artifact::inspect::{FileCtx, Sink};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::{mutate, XorShift, TENSORS};

fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let mut out = Vec::new();
    for kind in ["clean", "hostile"] {
        let Ok(rd) = std::fs::read_dir(root.join(kind)) else { continue };
        let mut paths: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !(name.starts_with("safetensors-") || name.starts_with("gguf-")) || name.ends_with(".toml") || !p.is_file() {
                continue;
            }
            if let Ok(b) = std::fs::read(&p) {
                if b.len() <= 256 * 1024 {
                    out.push(b);
                }
            }
        }
    }
    // Built-in seeds so the test means something without the fixture folder.
    let h = br#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F4","shape":[4],"data_offsets":[16,18]}}"#;
    let mut st = (h.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(h);
    st.extend_from_slice(&[0u8; 18]);
    out.push(st);
    let mut g = b"GGUF".to_vec();
    g.extend_from_slice(&3u32.to_le_bytes());
    g.extend_from_slice(&1u64.to_le_bytes());
    g.extend_from_slice(&1u64.to_le_bytes());
    for part in [&b"general.architecture"[..], &b"llama"[..]] {
        if part == b"llama" {
            g.extend_from_slice(&8u32.to_le_bytes());
        }
        g.extend_from_slice(&(part.len() as u64).to_le_bytes());
        g.extend_from_slice(part);
    }
    g.extend_from_slice(&1u64.to_le_bytes());
    g.push(b'a');
    g.extend_from_slice(&1u32.to_le_bytes());
    g.extend_from_slice(&32u64.to_le_bytes());
    g.extend_from_slice(&0u32.to_le_bytes());
    g.extend_from_slice(&0u64.to_le_bytes());
    g.resize(g.len().div_ceil(32) * 32 + 128, 0);
    out.push(g);
    out
}

fn run_one(d: &[u8]) {
    let _ = needle_artifact::detect::sniff(d);
    let mut sink = Sink::default();
    let ctx = FileCtx { rel: "m", data: d, depth: 0 };
    let _ = needle_artifact::safetensors::inspect(&ctx, &mut sink);
    let _ = needle_artifact::gguf::inspect(&ctx, &mut sink);
    if d.len() > 8 {
        let _ = needle_artifact::safetensors::parse_header(&d[8..]);
    }
}

#[test]
fn mutated_tensor_files_never_panic() {
    let all = seeds();
    assert!(all.len() >= 2);
    let iterations: usize = std::env::var("NEEDLE_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(30_000);
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..iterations {
        let seed = &all[i % all.len()];
        let d = mutate(&mut rng, seed, &all, &TENSORS);
        let t = Instant::now();
        run_one(&d);
        slowest = slowest.max(t.elapsed());
    }
    eprintln!(
        "{iterations} mutations over {} seeds in {:.1}s (slowest input {:.1} ms)",
        all.len(),
        start.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
    assert!(slowest < Duration::from_secs(2), "an input took {slowest:?}");
}
