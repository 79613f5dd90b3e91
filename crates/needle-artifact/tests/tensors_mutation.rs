//! Bounded mutational testing of the safetensors and GGUF readers with a fixed seed (the
//! stable-toolchain counterpart of `fuzz/fuzz_targets/{safetensors_header,gguf}.rs`): every
//! committed safetensors/GGUF fixture is mutated (bit flips, extreme 32/64-bit values in length
//! and offset fields, truncations, splices) and fed to the same entry points. Passing means: no
//! panic, every run terminates, and each run stays fast (no work driven by declared counts).

use needle_artifact::inspect::{FileCtx, Sink};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::XorShift;

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

const INTERESTING: &[u8] = &[0x00, 0x01, 0x7f, 0x80, 0xff, b'{', b'}', b'[', b']', b'"', b',', b':', b'0', b'9', b'-', b' '];

fn mutate(rng: &mut XorShift, seed: &[u8], all: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if len > 8 => {
                // A 64-bit field (GGUF counts, lengths and offsets; the safetensors length).
                let i = if rng.below(3) == 0 { 0 } else { rng.below(len - 8) };
                let v: u64 = [0, 1, u64::MAX, 1 << 63, 1 << 32, len as u64, 100_000_001][rng.below(7)];
                d[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            3 if len > 4 => {
                let i = rng.below(len - 4);
                let v: u32 = [0, 1, 4, 9, 8, 0xffff_ffff, 0x8000_0000][rng.below(7)];
                d[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            4 => d.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                let chunk = d[a..b].to_vec();
                let at = rng.below(len);
                d.splice(at..at, chunk);
            }
            6 => {
                let other = &all[rng.below(all.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = (a + rng.below(256)).min(other.len());
                    let at = rng.below(len + 1);
                    d.splice(at..at, other[a..b].iter().copied());
                }
            }
            7 => d.extend(std::iter::repeat_n(0u8, rng.below(256))),
            _ if len > 1 => {
                let a = rng.below(len);
                let b = (a + rng.below(32)).min(len);
                d.drain(a..b);
            }
            _ => {}
        }
    }
    d
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
        let d = mutate(&mut rng, seed, &all);
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
