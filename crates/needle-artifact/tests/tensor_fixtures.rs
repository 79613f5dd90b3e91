//! The safetensors / GGUF / shard-index / model-folder fixtures, checked at the library level:
//! each fixture's sidecar `<name>.expect.toml` gives the exit status `needle inspect` must reach
//! (0 clean, 1 findings at or above `high`, 2 failures) and codes that must be among the findings.
//! (The binary-level harness in crates/needle/tests/fixtures.rs checks the same sidecars.)

use needle_artifact::{inspect, Target};
use needle_report::Severity;
use std::path::Path;

struct Expect {
    exit: i32,
    codes: Vec<String>,
}

/// The sidecars are three `key = value` lines; `codes` is a JSON-compatible string array.
fn read_expect(p: &Path) -> Expect {
    let text = std::fs::read_to_string(p).unwrap();
    let mut e = Expect { exit: -1, codes: vec![] };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("exit = ") {
            e.exit = v.trim().parse().unwrap();
        } else if let Some(v) = line.strip_prefix("codes = ") {
            e.codes = serde_json::from_str(v.trim()).unwrap();
        }
    }
    e
}

#[test]
fn tensor_fixtures_meet_their_expectations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let mut checked = 0;
    let mut problems = Vec::new();
    for kind in ["clean", "hostile"] {
        let Ok(rd) = std::fs::read_dir(root.join(kind)) else { continue };
        let mut paths: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let ours = ["safetensors-", "gguf-", "json-", "model-"].iter().any(|pre| name.starts_with(pre));
            if !ours || name.ends_with(".expect.toml") {
                continue;
            }
            let sidecar = p.with_file_name(format!("{name}.expect.toml"));
            assert!(sidecar.exists(), "{name} has no sidecar");
            let want = read_expect(&sidecar);
            let ins = inspect(&Target::open(&p).unwrap().walk().unwrap());
            let exit = if !ins.failures.is_empty() {
                2
            } else if ins.findings.iter().any(|f| f.severity >= Severity::High) {
                1
            } else {
                0
            };
            let got: Vec<&str> = ins.findings.iter().map(|f| f.code.as_str()).collect();
            if exit != want.exit {
                problems.push(format!("{kind}/{name}: exit {exit}, expected {} (findings {got:?}, failures {:?})", want.exit, ins.failures));
            }
            for c in &want.codes {
                if !got.contains(&c.as_str()) {
                    problems.push(format!("{kind}/{name}: missing {c} (got {got:?})"));
                }
            }
            if kind == "clean" && !ins.failures.is_empty() {
                problems.push(format!("{kind}/{name}: failures {:?}", ins.failures));
            }
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} fixtures found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
