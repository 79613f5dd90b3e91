//! Training: every parameter receives a non-zero gradient through the differentiable path, the
//! loss falls on a toy task, and a saved model reloads with the same logits.

use candle_core::{Device, Tensor};
use needle_engine::model::{Capture, Model};
use needle_engine::train::{LoraTrainSpec, TrainBatch, TrainParams, Trainer};
use serde_json::Value;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference").join(name)
}

fn config(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap()).unwrap()
}

fn toy_batch(answer_only: bool) -> TrainBatch {
    let examples: Vec<(Vec<u32>, Vec<u32>)> = (0..4u32).map(|i| (vec![5 + i, 17, 40 + i, 9], vec![100 + i, 101 + i, 2])).collect();
    TrainBatch::from_examples(&examples, 0, answer_only).unwrap()
}

#[test]
fn every_parameter_gets_a_gradient() {
    for name in ["llama", "llama-tied", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "phi3", "gpt2", "gpt_neox"] {
        let trainer = Trainer::new_random(&config(name), 7, TrainParams::default(), &Device::Cpu).unwrap();
        let loss = trainer.loss(&toy_batch(false)).unwrap();
        let grads = loss.backward().unwrap();
        let vars = trainer.variables().unwrap();
        assert!(vars.len() > 10, "{name}: only {} variables", vars.len());
        for (vname, var) in vars {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: {vname} has no gradient"));
            let n = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(n > 0.0 && n.is_finite(), "{name}: {vname} gradient is {n}");
        }
    }
}

#[test]
fn loss_falls_and_the_saved_model_reloads() {
    let params = TrainParams { learning_rate: 3e-3, ..TrainParams::default() };
    let mut trainer = Trainer::new_random(&config("llama"), 1, params, &Device::Cpu).unwrap();
    let batch = toy_batch(true);
    let first = trainer.step(&batch).unwrap();
    let mut last = first;
    for _ in 0..30 {
        last = trainer.step(&batch).unwrap();
    }
    assert!(last.loss < first.loss * 0.5, "loss {} -> {}", first.loss, last.loss);
    assert!(first.grad_norm > 0.0);

    let dir = tempfile::tempdir().unwrap();
    trainer.save(dir.path(), Some(&fixture("llama"))).unwrap();
    for f in ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let reloaded = Model::load(dir.path(), &Device::Cpu).unwrap();
    let a = trainer.model.forward(&batch.tokens, None, &Capture::logits()).unwrap().logits;
    let b = reloaded.forward(&batch.tokens, None, &Capture::logits()).unwrap().logits;
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-4, "reloaded logits differ by {d}");
}

#[test]
fn random_init_is_seeded() {
    let a = Trainer::new_random(&config("gpt2"), 3, TrainParams::default(), &Device::Cpu).unwrap();
    let b = Trainer::new_random(&config("gpt2"), 3, TrainParams::default(), &Device::Cpu).unwrap();
    let c = Trainer::new_random(&config("gpt2"), 4, TrainParams::default(), &Device::Cpu).unwrap();
    let get = |t: &Trainer| -> Tensor {
        t.variables().unwrap().into_iter().find(|(n, _)| n == "transformer.wte.weight").unwrap().1.as_tensor().clone()
    };
    let same = (get(&a) - get(&b)).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    let diff = (get(&a) - get(&c)).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(same, 0.0);
    assert!(diff > 0.0);
}

/// LoRA training: only the adapter is trained, the loss falls, and the PEFT adapter it writes
/// loads onto the base (unmerged and merged) with the trainer's logits, as does the merged save.
#[test]
fn lora_trains_and_round_trips_as_a_peft_adapter() {
    for (name, targets) in [("llama", vec!["q_proj", "v_proj", "up_proj", "down_proj"]), ("gpt2", vec!["c_attn", "c_fc", "c_proj"])] {
        let base = Trainer::new_random(&config(name), 5, TrainParams::default(), &Device::Cpu).unwrap();
        let base_dir = tempfile::tempdir().unwrap();
        base.save(base_dir.path(), Some(&fixture(name))).unwrap();
        let frozen = base.weights().unwrap();
        let spec = LoraTrainSpec { r: 4, alpha: 8.0, targets: targets.iter().map(|s| s.to_string()).collect(), seed: 9 };
        let params = TrainParams { learning_rate: 1e-2, ..TrainParams::default() };
        let mut lora = Trainer::new_lora(&config(name), frozen, spec, params, &Device::Cpu).unwrap();
        assert!(lora.is_lora());
        let vars = lora.variables().unwrap();
        assert!(!vars.is_empty() && vars.iter().all(|(n, _)| n.contains(".lora_A.") || n.contains(".lora_B.")), "{name}");
        let batch = toy_batch(true);
        let first = lora.step(&batch).unwrap();
        let mut last = first;
        for _ in 0..40 {
            last = lora.step(&batch).unwrap();
        }
        assert!(last.loss < first.loss * 0.9, "{name}: loss {} -> {}", first.loss, last.loss);

        let adapter = tempfile::tempdir().unwrap();
        lora.save_adapter(adapter.path(), &base_dir.path().display().to_string()).unwrap();
        let merged_dir = tempfile::tempdir().unwrap();
        lora.save(merged_dir.path(), None).unwrap();
        let want = lora.model.forward(&batch.tokens, None, &Capture::logits()).unwrap().logits;
        for model in [
            needle_engine::lora::load_with_adapter(adapter.path(), None, false, &Device::Cpu).unwrap(),
            needle_engine::lora::load_with_adapter(adapter.path(), None, true, &Device::Cpu).unwrap(),
            Model::load(merged_dir.path(), &Device::Cpu).unwrap(),
        ] {
            let got = model.forward(&batch.tokens, None, &Capture::logits()).unwrap().logits;
            let d = (&want - got).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-4, "{name}: reloaded logits differ by {d}");
        }
        // The adapter changed the model.
        let before = base.model.forward(&batch.tokens, None, &Capture::logits()).unwrap().logits;
        let moved = (&want - before).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(moved > 1e-3, "{name}: LoRA did not change the model ({moved})");
    }
}
