//! Bounded mutational testing of the pickle and archive analysers with a fixed seed (the
//! stable-toolchain counterpart of `fuzz/fuzz_targets/{pickle,zip}.rs`): every committed
//! pickle/zip/archive/numpy fixture is mutated (bit flips, byte sets, interesting values,
//! splices, truncations, duplications) and fed to the same entry points. Passing means: no
//! panic, and every run terminates.

use needle_artifact::detect::{self, Format};
use needle_artifact::inspect::{FileCtx, Sink};
use std::path::Path;

mod common;
use common::{mutate, Profile, XorShift};

fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let mut out = Vec::new();
    for kind in ["clean", "hostile"] {
        let Ok(rd) = std::fs::read_dir(root.join(kind)) else { continue };
        let mut paths: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let ours = ["pickle-", "zip-", "archive-", "numpy-"].iter().any(|pre| name.starts_with(pre));
            if !ours || name.ends_with(".toml") {
                continue;
            }
            if p.is_dir() {
                for f in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                    if let Ok(b) = std::fs::read(f.path()) {
                        out.push(b);
                    }
                }
            } else if let Ok(b) = std::fs::read(&p) {
                out.push(b);
            }
        }
    }
    // Built-in seeds so the test means something even without the fixture folder.
    out.push(b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x8c\x02id\x85R.".to_vec());
    out.push(b"(dp0\nS'a'\np1\nI1\nsccollections\nOrderedDict\n(tR.".to_vec());
    out
}

/// Pickle opcodes and protocol bytes; 32-bit lengths, offsets and memo keys.
const PICKLE: Profile = Profile {
    interesting: &[0x00, 0x01, 0x7f, 0x80, 0xff, b'.', b'(', b'\n', 0x93, 0x94, 0x95, b'h', b'q', b'r', b'j', b'X'],
    narrow: &[0, 1, 0x7fff_ffff, 0xffff_ffff, 0x8000_0000],
    wide: &[],
};

fn run_one(d: &[u8]) {
    let _ = needle_artifact::pickle::looks_like_low_protocol(d);
    let mut sink = Sink::default();
    let ctx = FileCtx { rel: "m", data: d, depth: 0 };
    let _ = needle_artifact::pickle::inspect(&ctx, &mut sink);
    let _ = needle_artifact::archive::find_zip_end(d);
    let _ = needle_artifact::archive::inspect(&ctx, Format::Zip, &mut sink);
    match detect::sniff(d) {
        f @ (Format::Tar | Format::Gzip | Format::SevenZip) => {
            let _ = needle_artifact::archive::inspect(&ctx, f, &mut sink);
        }
        Format::Npy => {
            let _ = needle_artifact::numpy::inspect(&ctx, &mut sink);
        }
        _ => {}
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let all = seeds();
    assert!(all.len() >= 2);
    let iterations: usize = std::env::var("NEEDLE_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let start = std::time::Instant::now();
    for i in 0..iterations {
        let seed = &all[i % all.len()];
        let d = mutate(&mut rng, seed, &all, &PICKLE);
        run_one(&d);
    }
    eprintln!("{iterations} mutations over {} seeds in {:.1}s", all.len(), start.elapsed().as_secs_f64());
}
