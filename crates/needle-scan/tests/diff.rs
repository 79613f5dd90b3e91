//! The weight diff over a real adapter (tests/fixtures/reference/llama-lora, made by PEFT over
//! tests/fixtures/reference/llama): the adapter's own deltas and the merged model diffed
//! against its base must describe the same change.

use needle_engine::candle_core::Device;
use needle_engine::lora::load_with_adapter;
use needle_engine::model::Model;
use needle_scan::diff::{diff, DiffParams};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference").join(name)
}

fn decode(t: u32) -> String {
    format!("<{t}>")
}

#[test]
fn adapter_deltas_and_merged_minus_base_agree() {
    let dev = Device::Cpu;
    let p = DiffParams::default();
    let unmerged = load_with_adapter(&fixture("llama-lora"), None, false, &dev).unwrap();
    let merged = load_with_adapter(&fixture("llama-lora"), None, true, &dev).unwrap();
    let base = Model::load(&fixture("llama"), &dev).unwrap();

    let a = diff(&unmerged, None, &p, &decode).unwrap();
    let b = diff(&merged, Some(&base), &p, &decode).unwrap();
    assert_eq!(a.against, "adapter");
    assert_eq!(b.against, "base model");
    assert!(a.changed_tensors > 0);
    assert_eq!(a.changed_tensors, b.changed_tensors, "{:?}\n{:?}", a.tensors, b.tensors);
    for t in &a.tensors {
        let u = b.tensors.iter().find(|x| x.name == t.name).expect("same tensors changed");
        assert!((t.relative - u.relative).abs() < 1e-3 * t.relative.max(1e-6), "{}: {} vs {}", t.name, t.relative, u.relative);
        // A LoRA update lives in its rank: the range finder captures all of it.
        assert!(t.low_rank_share > 0.99, "{}: {}", t.name, t.low_rank_share);
    }
    // The adapter does not touch embeddings; the merged model's are the base's.
    assert_eq!(a.embedding_relative, None);
    assert_eq!(b.embedding_relative, Some(0.0));
    // The same tokens lead the first-layer response ranking.
    let top = |d: &needle_scan::diff::WeightDiff| d.input_response.iter().take(5).map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(top(&a), top(&b));
    assert!(!a.seeds.is_empty());
}

#[test]
fn a_model_against_itself_has_no_change() {
    let dev = Device::Cpu;
    let base = Model::load(&fixture("llama"), &dev).unwrap();
    let again = Model::load(&fixture("llama"), &dev).unwrap();
    let d = diff(&base, Some(&again), &DiffParams::default(), &decode).unwrap();
    assert_eq!(d.changed_tensors, 0);
    assert!(d.tensors.is_empty() && d.seeds.is_empty());
}

#[test]
fn a_base_of_another_shape_is_refused() {
    let dev = Device::Cpu;
    let a = Model::load(&fixture("llama"), &dev).unwrap();
    let b = Model::load(&fixture("qwen2"), &dev).unwrap();
    assert!(diff(&a, Some(&b), &DiffParams::default(), &decode).is_err());
}
