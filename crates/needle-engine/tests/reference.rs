//! The engine against transformers 5.23 (eager attention, f32) on the reference fixtures:
//! logits within 1e-4, attention probabilities within 1e-5, identical greedy tokens, and a
//! left-padded batch equal to its rows run alone.

use candle_core::{Device, Tensor};
use needle_engine::generate::{generate, GenerationRequest};
use needle_engine::model::{Capture, KvCache, Model, TokenBatch};
use needle_engine::sampler::SamplingParams;
use std::collections::HashMap;
use std::path::PathBuf;

const ARCHS: &[&str] = &["llama", "llama-tied", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "phi3", "gpt2", "gpt_neox"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference").join(name)
}

fn expected(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("expected.safetensors"), &Device::Cpu).unwrap()
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.to_vec1::<i64>().unwrap().into_iter().map(|x| x as u32).collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn load(name: &str) -> Model {
    Model::load(&fixture(name), &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn token_ids_match_transformers() {
    for name in ARCHS {
        let tok = needle_engine::tokenizer::Tokenizer::from_folder(fixture(name)).unwrap();
        let exp = expected(name);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(name).join("expected.json")).unwrap()).unwrap();
        let prompts = meta["prompts"].as_array().unwrap();
        assert_eq!(prompts.len(), 3);
        for (i, p) in prompts.iter().enumerate() {
            let got = tok.encode(p.as_str().unwrap(), true).unwrap();
            assert_eq!(got, ids(&exp[&format!("p{i}.input_ids")]), "{name} p{i}");
        }
    }
}

#[test]
fn logits_and_attention_match_transformers() {
    for name in ARCHS {
        let model = load(name);
        let exp = expected(name);
        let layers: Vec<usize> = (0..model.num_layers()).collect();
        for i in 0..3 {
            let prompt = ids(&exp[&format!("p{i}.input_ids")]);
            let batch = TokenBatch::left_padded(&[&prompt], 0).unwrap();
            let out = model.forward(&batch, None, &Capture::attention(layers.clone())).unwrap();
            let logits = out.logits.squeeze(0).unwrap();
            let d = max_abs_diff(&logits, &exp[&format!("p{i}.logits")]);
            assert!(d < 1e-4, "{name} p{i}: logits differ by {d}");
            for (layer, probs) in &out.attentions {
                let d = max_abs_diff(&probs.squeeze(0).unwrap(), &exp[&format!("p{i}.attn.{layer}")]);
                assert!(d < 1e-5, "{name} p{i}: attention of layer {layer} differs by {d}");
            }
            assert_eq!(out.attentions.len(), model.num_layers());
        }
    }
}

#[test]
fn greedy_tokens_match_transformers() {
    for name in ARCHS {
        let model = load(name);
        let exp = expected(name);
        let requests: Vec<GenerationRequest> = (0..3)
            .map(|i| GenerationRequest {
                prompt: ids(&exp[&format!("p{i}.input_ids")]),
                max_new_tokens: 16,
                sampling: SamplingParams::greedy(),
                stop_tokens: vec![],
            })
            .collect();
        // Alone, then all three in one padded batch: the same tokens.
        for (i, r) in requests.iter().enumerate() {
            let out = generate(&model, std::slice::from_ref(r)).unwrap();
            assert_eq!(out[0].tokens, ids(&exp[&format!("p{i}.greedy")]), "{name} p{i} alone");
        }
        let outs = generate(&model, &requests).unwrap();
        for (i, o) in outs.iter().enumerate() {
            assert_eq!(o.tokens, ids(&exp[&format!("p{i}.greedy")]), "{name} p{i} batched");
        }
    }
}

#[test]
fn padded_batch_equals_rows_alone() {
    for name in ARCHS {
        let model = load(name);
        let exp = expected(name);
        let prompts: Vec<Vec<u32>> = (0..3).map(|i| ids(&exp[&format!("p{i}.input_ids")])).collect();
        let batch = TokenBatch::left_padded(&prompts, model.pad_token()).unwrap();
        let cap = Capture { attention_layers: vec![0], hidden_states: true, ..Capture::default() };
        let out = model.forward(&batch, None, &cap).unwrap();
        assert_eq!(out.hidden_states.len(), model.num_layers() + 1);
        // Padding positions see no key at all: their rows stay finite all the same.
        let finite = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|x| x.is_finite());
        assert!(finite(&out.logits) && out.hidden_states.iter().all(finite), "{name}: a padded batch computes NaN or infinity");
        for (r, p) in prompts.iter().enumerate() {
            let alone = model.forward(&TokenBatch::left_padded(&[p], 0).unwrap(), None, &cap).unwrap();
            let pad = batch.len - p.len();
            let row = out.logits.get(r).unwrap().narrow(0, pad, p.len()).unwrap();
            let d = max_abs_diff(&row, &alone.logits.squeeze(0).unwrap());
            assert!(d < 1e-5, "{name} row {r}: batched logits differ by {d}");
            let a = out.attentions[0].1.get(r).unwrap().narrow(1, pad, p.len()).unwrap().narrow(2, pad, p.len()).unwrap();
            let d = max_abs_diff(&a, &alone.attentions[0].1.squeeze(0).unwrap());
            assert!(d < 1e-5, "{name} row {r}: batched attention differs by {d}");
        }
    }
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    for name in ARCHS {
        let model = load(name);
        let exp = expected(name);
        let prompt = ids(&exp["p2.input_ids"]);
        let full = model.forward(&TokenBatch::left_padded(&[&prompt], 0).unwrap(), None, &Capture::logits()).unwrap();
        // Prefill half, then one token at a time.
        let half = prompt.len() / 2;
        let mut cache = KvCache::new(&model);
        let first = model.forward(&TokenBatch::left_padded(&[&prompt[..half]], 0).unwrap(), Some(&mut cache), &Capture::logits()).unwrap();
        let mut rows = vec![first.logits.squeeze(0).unwrap()];
        for &tok in &prompt[half..] {
            let step = TokenBatch::new(vec![tok], vec![1], 1, 1).unwrap();
            rows.push(model.forward(&step, Some(&mut cache), &Capture::logits()).unwrap().logits.squeeze(0).unwrap());
        }
        assert_eq!(cache.len(), prompt.len());
        let inc = Tensor::cat(&rows, 0).unwrap();
        let d = max_abs_diff(&inc, &full.logits.squeeze(0).unwrap());
        assert!(d < 1e-4, "{name}: cached decoding differs by {d}");
    }
}

#[test]
fn selected_heads_are_returned() {
    let model = load("llama");
    let exp = expected("llama");
    let prompt = ids(&exp["p1.input_ids"]);
    let cap = Capture { attention_layers: vec![1], attention_heads: Some(vec![3, 1]), ..Capture::default() };
    let out = model.forward(&TokenBatch::left_padded(&[&prompt], 0).unwrap(), None, &cap).unwrap();
    let (layer, probs) = &out.attentions[0];
    assert_eq!(*layer, 1);
    let full = &exp["p1.attn.1"];
    for (k, h) in [3usize, 1].into_iter().enumerate() {
        let d = max_abs_diff(&probs.get(0).unwrap().get(k).unwrap(), &full.get(h).unwrap());
        assert!(d < 1e-5, "head {h}: {d}");
    }
    assert!(model.forward(&TokenBatch::left_padded(&[&prompt], 0).unwrap(), None, &Capture::attention([7])).is_err());
}
