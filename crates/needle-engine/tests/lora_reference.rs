//! The PEFT LoRA fixture (r=4 on q_proj, v_proj, down_proj over `llama`) against transformers +
//! peft: logits within 1e-4, both unmerged and merged into the base weights.

use candle_core::{Device, Tensor};
use needle_engine::lora::{load_with_adapter, LoraAdapter};
use needle_engine::model::{Capture, Model, TokenBatch};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference").join(name)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn adapter_logits_match_peft_unmerged_and_merged() {
    let dev = Device::Cpu;
    let exp = candle_core::safetensors::load(fixture("llama-lora").join("expected.safetensors"), &dev).unwrap();
    let base = Model::load(&fixture("llama"), &dev).unwrap();
    for merge in [false, true] {
        let model = load_with_adapter(&fixture("llama-lora"), None, merge, &dev).unwrap();
        for i in 0..3 {
            let ids: Vec<u32> = exp[&format!("p{i}.input_ids")].to_vec1::<i64>().unwrap().into_iter().map(|x| x as u32).collect();
            let batch = TokenBatch::left_padded(&[&ids], 0).unwrap();
            let logits = model.forward(&batch, None, &Capture::logits()).unwrap().logits.squeeze(0).unwrap();
            let d = max_abs_diff(&logits, &exp[&format!("p{i}.logits")]);
            assert!(d < 1e-4, "merge={merge} p{i}: {d}");
            // The adapter really changes the model.
            let plain = base.forward(&batch, None, &Capture::logits()).unwrap().logits.squeeze(0).unwrap();
            assert!(max_abs_diff(&plain, &exp[&format!("p{i}.logits")]) > 1e-3);
        }
    }
}

#[test]
fn explicit_base_and_count_of_adapted_layers() {
    let dev = Device::Cpu;
    let adapter = LoraAdapter::load(&fixture("llama-lora"), &dev).unwrap();
    assert_eq!(adapter.base_path(None).unwrap(), fixture("llama-lora").join("../llama"));
    let mut model = Model::load(&fixture("llama"), &dev).unwrap();
    // 2 layers x (q_proj, v_proj, down_proj).
    assert_eq!(adapter.apply(&mut model, false).unwrap(), 6);
    // An adapter whose modules the base lacks is an error, not a silent no-op.
    let mut gpt2 = Model::load(&fixture("gpt2"), &dev).unwrap();
    assert!(adapter.apply(&mut gpt2, false).is_err());
}
