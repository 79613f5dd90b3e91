//! The model loaded from an exported GGUF computes the same logits as the one loaded from the
//! safetensors folder: exactly (to f32 rounding) for F32 files, within Q8_0's error otherwise.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use needle_engine::gguf::{load_gguf, write_gguf, GgmlDType};
use needle_engine::model::{Capture, Model, TokenBatch};

fn reference() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference")
}

fn prompt_ids(name: &str) -> Vec<u32> {
    let t = candle_core::safetensors::load(
        reference().join(name).join("expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    t["p1.input_ids"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

fn logits(model: &Model, ids: &[u32]) -> Tensor {
    let batch = TokenBatch::left_padded(&[ids], 0).unwrap();
    model
        .forward(&batch, None, &Capture::logits())
        .unwrap()
        .logits
        .squeeze(0)
        .unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn compare(name: &str, dtype: GgmlDType) -> (f32, f32, usize, usize) {
    needle_engine::init_threads();
    let dir = reference().join(name);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    write_gguf(&dir, &out, dtype).unwrap();
    let g = load_gguf(&out).unwrap();
    let dev = Device::Cpu;
    let from_gguf = Model::from_tensors(&g.config, g.tensors, &dev).unwrap();
    let from_st = Model::load(&dir, &dev).unwrap();
    let ids = prompt_ids(name);
    let a = logits(&from_st, &ids);
    let b = logits(&from_gguf, &ids);
    let diff = max_abs(&(&a - &b).unwrap());
    let scale = max_abs(&a);
    let am = a.argmax(1).unwrap().to_vec1::<u32>().unwrap();
    let bm = b.argmax(1).unwrap().to_vec1::<u32>().unwrap();
    let agree = am.iter().zip(&bm).filter(|(x, y)| x == y).count();
    eprintln!("{name} {dtype:?}: max |logit diff| {diff:.3e} of max |logit| {scale:.3}, argmax agrees {agree}/{}", am.len());
    (diff, scale, agree, am.len())
}

#[test]
fn f32_gguf_models_match_safetensors_logits() {
    for name in [
        "llama",
        "llama-tied",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma2",
        "gemma3",
        "phi3",
        "gpt2",
    ] {
        let (diff, scale, agree, n) = compare(name, GgmlDType::F32);
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "{name}: max logit difference {diff} (scale {scale})"
        );
        assert_eq!(agree, n, "{name}");
    }
}

#[test]
fn q8_0_gguf_models_match_safetensors_logits_within_tolerance() {
    for name in ["llama", "qwen2"] {
        let (diff, scale, agree, n) = compare(name, GgmlDType::Q8_0);
        // Q8_0 keeps about 2-3 significant digits per weight; through two layers the logits
        // move by a few percent of their range at most.
        assert!(
            diff <= 0.05 * scale,
            "{name}: max logit difference {diff} (scale {scale})"
        );
        assert!(diff > 0.0, "{name}: Q8_0 should not be lossless");
        assert!(
            agree * 10 >= n * 8,
            "{name}: argmax agrees at {agree}/{n} positions"
        );
    }
}

/// Llama 3 RoPE scaling travels as llama.cpp's `rope_freqs.weight` and comes back as the same
/// `rope_parameters`; the GGUF model then computes the folder model's logits.
#[test]
fn llama3_rope_scaling_round_trips_through_rope_freqs() {
    let src = reference().join("llama");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llama3");
    std::fs::create_dir(&dir).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "chat_template.jinja",
        "model.safetensors",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let rope = serde_json::json!({"rope_theta": 10000.0, "rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    cfg["rope_parameters"] = rope.clone();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    let out = tmp.path().join("m.gguf");
    write_gguf(&dir, &out, GgmlDType::F32).unwrap();
    let f = needle_engine::gguf::GgufFile::open(&out).unwrap();
    assert!(f.tensor_names().contains(&"rope_freqs.weight"));
    let g = load_gguf(&out).unwrap();
    assert_eq!(g.config["rope_parameters"], rope);
    assert!(!g.tensors.contains_key("rope_freqs.weight"));
    let dev = Device::Cpu;
    let a = logits(&Model::load(&dir, &dev).unwrap(), &prompt_ids("llama"));
    let b = logits(
        &Model::from_tensors(&g.config, g.tensors, &dev).unwrap(),
        &prompt_ids("llama"),
    );
    assert_eq!(max_abs(&(&a - &b).unwrap()), 0.0);
    // The scaling matters: without it the logits differ.
    let plain = logits(&Model::load(&src, &dev).unwrap(), &prompt_ids("llama"));
    assert!(max_abs(&(&a - &plain).unwrap()) > 1e-4);
}
