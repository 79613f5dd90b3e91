use needle_report::render::{human, json, sarif, HumanOptions};
use needle_report::{Failure, Report, Rule, Severity};

static UNSAFE: Rule = Rule {
    code: "pickle/unsafe-global",
    severity: Severity::Critical,
    summary: "pickle imports a callable that loading tensors does not need",
    fix: "re-save as safetensors; never unpickle this file",
};
static PY: Rule = Rule {
    code: "config/python-file",
    severity: Severity::Medium,
    summary: "the model folder contains Python code",
    fix: "review the code; load without trust_remote_code",
};

fn sample() -> Report {
    let mut r = Report::new("inspect", "model/");
    r.push(PY.finding("modeling_evil.py is Python code").file("modeling_evil.py"));
    r.push(
        UNSAFE
            .finding("imports posix.system and calls it")
            .file("pytorch_model.bin")
            .at("member archive/data.pkl, offset 0x2")
            .evidence("STACK_GLOBAL posix system"),
    );
    r.sort();
    r
}

#[test]
fn human_report() {
    insta::assert_snapshot!(human(&sample(), &HumanOptions { color: false, preamble: Some("Inventory\n  1 file".into()) }));
}

#[test]
fn human_report_with_failure() {
    let mut r = sample();
    r.fail(Failure::new(Some("broken.safetensors".into()), "permission denied"));
    insta::assert_snapshot!(human(&r, &HumanOptions::default()));
}

#[test]
fn json_report() {
    insta::assert_snapshot!(json(&sample()));
}

#[test]
fn sarif_report_is_valid_shape() {
    let s = sarif(&sample(), &[&UNSAFE, &PY]);
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let results = v["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["ruleId"], "pickle/unsafe-global");
    assert_eq!(results[0]["level"], "error");
    let rules = v["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap();
    let idx = results[0]["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(rules[idx]["id"], "pickle/unsafe-global");
    insta::assert_snapshot!(s);
}
