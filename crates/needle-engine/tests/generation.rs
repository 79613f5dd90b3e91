//! The batched generation loop: per-row settings, independence from batch composition,
//! stopping, and beam search scores checked against a full forward pass.

use candle_core::Device;
use needle_engine::generate::{beam_search, generate, BeamParams, FinishReason, GenerationRequest};
use needle_engine::model::{Capture, Model, TokenBatch};
use needle_engine::sampler::{log_softmax, SamplingParams};
use std::path::PathBuf;

fn model(name: &str) -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference").join(name);
    Model::load(&dir, &Device::Cpu).unwrap()
}

fn requests() -> Vec<GenerationRequest> {
    let sampled = |seed, temperature, top_k, top_p| SamplingParams { temperature, top_k, top_p, seed, ..SamplingParams::default() };
    vec![
        GenerationRequest { prompt: vec![5, 6, 7, 8, 9, 10, 11], max_new_tokens: 12, sampling: SamplingParams::greedy(), stop_tokens: vec![] },
        GenerationRequest { prompt: vec![300, 301], max_new_tokens: 9, sampling: sampled(1, 0.8, 0, 1.0), stop_tokens: vec![] },
        GenerationRequest { prompt: vec![42; 11], max_new_tokens: 5, sampling: sampled(2, 1.3, 20, 0.9), stop_tokens: vec![] },
        GenerationRequest {
            prompt: vec![1000, 7, 1001],
            max_new_tokens: 10,
            sampling: SamplingParams { repetition_penalty: 1.3, ..SamplingParams::greedy() },
            stop_tokens: vec![],
        },
    ]
}

#[test]
fn mixed_settings_in_one_batch_equal_each_request_alone() {
    for name in ["qwen2", "gpt2", "gemma2"] {
        let m = model(name);
        let reqs = requests();
        let together = generate(&m, &reqs).unwrap();
        for (r, out) in reqs.iter().zip(&together) {
            let alone = generate(&m, std::slice::from_ref(r)).unwrap();
            assert_eq!(out, &alone[0], "{name}");
            assert_eq!(out.tokens.len(), r.max_new_tokens);
            assert_eq!(out.finish, FinishReason::Length);
        }
        // Seeded: the same again.
        assert_eq!(generate(&m, &reqs).unwrap(), together);
        // A different seed changes a sampled row.
        let mut other = reqs.clone();
        other[2].sampling.seed = 99;
        other[1].sampling.seed = 98;
        let changed = generate(&m, &other).unwrap();
        assert_eq!(changed[0], together[0]);
        assert!(changed[1] != together[1] || changed[2] != together[2], "{name}: seeds had no effect");
    }
}

#[test]
fn stop_tokens_end_a_row_early() {
    let m = model("llama");
    let mut reqs = requests();
    let free = generate(&m, &reqs[..1]).unwrap().remove(0);
    let stop = free.tokens[3];
    let first = free.tokens.iter().position(|&t| t == stop).unwrap();
    reqs[0].stop_tokens = vec![stop];
    let outs = generate(&m, &reqs).unwrap();
    assert_eq!(outs[0].finish, FinishReason::Stop);
    assert_eq!(outs[0].tokens, free.tokens[..=first].to_vec());
    assert_eq!(outs[1].tokens.len(), reqs[1].max_new_tokens);
}

#[test]
fn beam_scores_are_the_sequence_log_probabilities() {
    // Every architecture: beam search reorders the KV cache, whose layout differs by family
    // (GPT-NeoX's keys and values are views of a fused projection).
    for name in ["llama", "llama-tied", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "phi3", "gpt2", "gpt_neox"] {
        beam_scores_match(name);
    }
}

fn beam_scores_match(name: &str) {
    let m = model(name);
    let prompt = vec![5u32, 6, 7, 8, 9];
    let greedy = generate(&m, &[GenerationRequest { prompt: prompt.clone(), max_new_tokens: 6, sampling: SamplingParams::greedy(), stop_tokens: vec![] }]).unwrap();
    let one = beam_search(&m, &prompt, &BeamParams { num_beams: 1, max_new_tokens: 6, length_penalty: 1.0, stop_tokens: vec![] }).unwrap();
    assert_eq!(one[0].tokens, greedy[0].tokens, "{name}: one beam is greedy");
    let beams = beam_search(&m, &prompt, &BeamParams { num_beams: 4, max_new_tokens: 6, length_penalty: 1.0, stop_tokens: vec![] }).unwrap();
    assert_eq!(beams.len(), 4);
    for w in beams.windows(2) {
        assert!(w[0].score >= w[1].score);
        assert_ne!(w[0].tokens, w[1].tokens);
    }
    for beam in &beams {
        let mut seq = prompt.clone();
        seq.extend(&beam.tokens);
        let logits = m.forward(&TokenBatch::left_padded(&[&seq], 0).unwrap(), None, &Capture::logits()).unwrap().logits;
        let rows = logits.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        let lp: f64 = beam.tokens.iter().enumerate().map(|(k, &tok)| log_softmax(&rows[prompt.len() - 1 + k])[tok as usize] as f64).sum();
        assert!((lp - beam.logprob).abs() < 1e-3, "{name}: {lp} vs {}", beam.logprob);
        assert!((beam.score - beam.logprob / beam.tokens.len() as f64).abs() < 1e-9);
    }
}

#[test]
fn logits_from_a_position_are_that_slice_of_the_full_logits() {
    for name in ["llama", "gemma2", "gpt2", "gpt_neox"] {
        let m = model(name);
        let (a, b) = (vec![5u32, 6, 7, 8, 9, 10, 11], vec![300u32, 301, 302]);
        let tb = TokenBatch::left_padded(&[&a, &b], m.pad_token()).unwrap();
        let full = m.forward(&tb, None, &Capture::logits()).unwrap().logits;
        for from in [0usize, 3, 6, 40] {
            let part = m.forward(&tb, None, &Capture { logits_from: Some(from), ..Capture::logits() }).unwrap().logits;
            let from = from.min(tb.len - 1);
            assert_eq!(part.dims(), &[2, tb.len - from, full.dims()[2]], "{name}");
            let want = full.narrow(1, from, tb.len - from).unwrap();
            let diff = (part - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{name} from {from}: {diff}");
        }
    }
}
