//! The CycloneDX BOM validates against the official 1.6 JSON schema and carries the facts.

use needle_artifact::{inspect, Target};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/cyclonedx").join(name);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn validator() -> jsonschema::Validator {
    // The BOM schema refers to its siblings by relative file name; register them under the
    // URIs those references resolve to.
    let bom = data("bom-1.6.SNAPSHOT.schema.json");
    let base = bom["$id"].as_str().unwrap().to_string();
    let dir = &base[..base.rfind('/').unwrap() + 1];
    jsonschema::options()
        .with_resource(format!("{dir}spdx.SNAPSHOT.schema.json"), jsonschema::Resource::from_contents(data("spdx.SNAPSHOT.schema.json")).unwrap())
        .with_resource(format!("{dir}jsf-0.82.SNAPSHOT.schema.json"), jsonschema::Resource::from_contents(data("jsf-0.82.SNAPSHOT.schema.json")).unwrap())
        .build(&bom)
        .unwrap()
}

fn model_copy() -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/model-signing/generated/files-sha256-p256/model");
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("tiny-qwen");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    (tmp, dst)
}

fn bom_of(p: &Path) -> Value {
    let set = Target::open(p).unwrap().walk().unwrap();
    let ins = inspect(&set);
    needle_sign::bom::build(p, &ins.inventory).unwrap()
}

fn prop<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["properties"].as_array()?.iter().find(|p| p["name"] == name)?["value"].as_str()
}

fn assert_valid(bom: &Value) {
    let v = validator();
    let errors: Vec<String> = v.iter_errors(bom).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn bom_is_valid_cyclonedx_and_carries_the_facts() {
    let (_t, m) = model_copy();
    std::fs::write(
        m.join("README.md"),
        "---\nlicense: apache-2.0\nbase_model: Qwen/Qwen2-0.5B\ndatasets:\n  - org/chat-data\n  - org/code\npipeline_tag: text-generation\n---\n# tiny\n",
    )
    .unwrap();
    let bom = bom_of(&m);
    assert_valid(&bom);
    let model = &bom["metadata"]["component"];
    assert_eq!(model["type"], "machine-learning-model");
    assert_eq!(model["name"], "tiny-qwen");
    assert_eq!(model["licenses"][0]["license"]["id"], "Apache-2.0");
    let datasets: Vec<&str> =
        model["modelCard"]["modelParameters"]["datasets"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(datasets, ["org/chat-data", "org/code"]);
    assert_eq!(model["modelCard"]["modelParameters"]["task"], "text-generation");
    assert!(prop(model, "needle:architecture").unwrap().contains("Qwen2"));
    assert!(prop(model, "needle:parameters").unwrap().parse::<u64>().unwrap() > 0);
    assert!(model["properties"].as_array().unwrap().iter().any(|p| p["name"].as_str().unwrap().starts_with("needle:dtype:")));
    assert!(model["properties"].as_array().unwrap().iter().any(|p| p["name"].as_str().unwrap().starts_with("needle:chat_template:")));
    // Every file with its SHA-256, matching an independent hash.
    let comps = bom["components"].as_array().unwrap();
    let cfg = comps.iter().find(|c| c["name"] == "config.json").unwrap();
    let want = needle_sign::HashAlg::Sha256.hash(&std::fs::read(m.join("config.json")).unwrap());
    assert_eq!(cfg["hashes"][0]["content"].as_str().unwrap(), hex::encode(want));
    assert_eq!(comps.iter().filter(|c| c["type"] == "file").count(), 10);
    // Base model and tokenizer are components the model depends on.
    let base = comps.iter().find(|c| c["name"] == "Qwen/Qwen2-0.5B").unwrap();
    let deps = bom["dependencies"].as_array().unwrap().iter().find(|d| d["ref"] == "model").unwrap();
    let on: Vec<&str> = deps["dependsOn"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(on.contains(&base["bom-ref"].as_str().unwrap()));
    assert!(on.contains(&"tokenizer"));
    assert!(prop(model, "needle:signature:sha256").is_none());
}

#[test]
fn bom_records_the_signature_and_signer() {
    let (_t, m) = model_copy();
    let sig = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/model-signing/generated/files-sha256-p256/model.sig");
    std::fs::copy(&sig, m.join("model.sig")).unwrap();
    let bom = bom_of(&m);
    assert_valid(&bom);
    let model = &bom["metadata"]["component"];
    let want = hex::encode(needle_sign::HashAlg::Sha256.hash(&std::fs::read(&sig).unwrap()));
    assert_eq!(prop(model, "needle:signature:sha256"), Some(want.as_str()));
    assert!(prop(model, "needle:signature:signer").unwrap().starts_with("key sha256:"));
    // The signature file is not one of the model's files.
    assert!(!bom["components"].as_array().unwrap().iter().any(|c| c["name"] == "model.sig"));
}

#[test]
fn invalid_bom_is_rejected_by_the_schema() {
    // The validator is real: a wrong component type fails.
    let (_t, m) = model_copy();
    let mut bom = bom_of(&m);
    bom["metadata"]["component"]["type"] = "neural-net".into();
    assert!(!validator().is_valid(&bom));
}
