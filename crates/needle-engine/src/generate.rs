//! Batched generation: many prompts with their own settings (greedy or sampled through
//! [`crate::sampler::Sampler`], own length, own stop behaviour) decoded together with one KV
//! cache; and beam search with a length penalty.

use crate::model::{Capture, KvCache, Model, TokenBatch};
use crate::sampler::{log_softmax, Sampler, SamplingParams};
use crate::{EngineError, Result};
use candle_core::Tensor;

/// Most new tokens one request may ask for.
pub const MAX_NEW_TOKENS: usize = 1 << 16;

/// One prompt and how to continue it.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub max_new_tokens: usize,
    /// `SamplingParams::greedy()` for greedy decoding.
    pub sampling: SamplingParams,
    /// Tokens that end the sequence (kept in the output). Empty: never stop early.
    pub stop_tokens: Vec<u32>,
}

/// Every id that ends a turn: `config.json`'s end-of-sequence ids, then the tokenizer's
/// (`generation_config.json` lists the chat turn's end where `config.json` may name only the
/// pretraining end of text), deduplicated.
pub fn stop_tokens(model: &Model, tokenizer: &crate::tokenizer::Tokenizer) -> Vec<u32> {
    let mut stops = model.config.eos_token_ids.clone();
    for &e in tokenizer.eos_ids() {
        if !stops.contains(&e) {
            stops.push(e);
        }
    }
    stops
}

impl GenerationRequest {
    /// Greedy continuation that stops at the model's end-of-sequence tokens.
    pub fn greedy(model: &Model, prompt: Vec<u32>, max_new_tokens: usize) -> Self {
        Self { prompt, max_new_tokens, sampling: SamplingParams::greedy(), stop_tokens: model.config.eos_token_ids.clone() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was generated (it is the last token of the output).
    Stop,
    /// `max_new_tokens` were generated.
    Length,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOutput {
    /// Generated token ids (the prompt excluded).
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
}

fn last_logits_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let (_, t, _) = logits.dims3()?;
    Ok(logits.narrow(1, t - 1, 1)?.squeeze(1)?.to_vec2::<f32>()?)
}

/// Runs all requests as one left-padded batch. Finished rows leave the batch (and the cache).
pub fn generate(model: &Model, requests: &[GenerationRequest]) -> Result<Vec<GenerationOutput>> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    for r in requests {
        if r.prompt.is_empty() {
            return Err(EngineError::Input("empty prompt".into()));
        }
        if r.max_new_tokens > MAX_NEW_TOKENS {
            return Err(EngineError::Input(format!("max_new_tokens {} exceeds {MAX_NEW_TOKENS}", r.max_new_tokens)));
        }
    }
    let mut outputs: Vec<GenerationOutput> =
        requests.iter().map(|_| GenerationOutput { tokens: Vec::new(), finish: FinishReason::Length }).collect();
    let mut samplers: Vec<Sampler> = requests.iter().map(|r| Sampler::new(r.sampling.clone())).collect();
    let mut history: Vec<Vec<u32>> = requests.iter().map(|r| r.prompt.clone()).collect();
    // Rows of the running batch -> request index.
    let mut active: Vec<usize> = (0..requests.len()).filter(|&i| requests[i].max_new_tokens > 0).collect();
    if active.is_empty() {
        return Ok(outputs);
    }
    let pad = model.pad_token();
    let prompts: Vec<&[u32]> = active.iter().map(|&i| requests[i].prompt.as_slice()).collect();
    let batch = TokenBatch::left_padded(&prompts, pad)?;
    let mut cache = KvCache::new(model);
    let capture = Capture { last_logits_only: true, ..Capture::default() };
    let mut rows = last_logits_rows(&model.forward(&batch, Some(&mut cache), &capture)?.logits)?;
    loop {
        let mut next = Vec::with_capacity(active.len());
        let mut keep = Vec::with_capacity(active.len());
        for (row, &req) in active.iter().enumerate() {
            let logits = rows.get(row).ok_or_else(|| EngineError::Input("logits row missing".into()))?;
            let token = samplers[req].sample(logits, &history[req]);
            history[req].push(token);
            let out = &mut outputs[req];
            out.tokens.push(token);
            if requests[req].stop_tokens.contains(&token) {
                out.finish = FinishReason::Stop;
            } else if out.tokens.len() >= requests[req].max_new_tokens {
                out.finish = FinishReason::Length;
            } else {
                keep.push(row);
                next.push(token);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() != active.len() {
            cache.select_rows(&keep)?;
            active = keep.iter().map(|&r| active[r]).collect();
        }
        let n = next.len();
        let step = TokenBatch::new(next, vec![1; n], n, 1)?;
        rows = last_logits_rows(&model.forward(&step, Some(&mut cache), &capture)?.logits)?;
    }
    Ok(outputs)
}

/// Beam search settings (Hugging Face semantics: a finished hypothesis scores
/// sum(log p) / generated_len ^ length_penalty).
#[derive(Debug, Clone)]
pub struct BeamParams {
    pub num_beams: usize,
    pub max_new_tokens: usize,
    pub length_penalty: f64,
    pub stop_tokens: Vec<u32>,
}

/// One finished beam.
#[derive(Debug, Clone, PartialEq)]
pub struct Beam {
    pub tokens: Vec<u32>,
    /// Sum of token log-probabilities.
    pub logprob: f64,
    /// Length-normalised score used for ranking.
    pub score: f64,
}

/// Beam search over one prompt; returns up to `num_beams` hypotheses, best first.
pub fn beam_search(model: &Model, prompt: &[u32], p: &BeamParams) -> Result<Vec<Beam>> {
    if prompt.is_empty() || p.num_beams == 0 || p.num_beams > 256 || p.max_new_tokens > MAX_NEW_TOKENS {
        return Err(EngineError::Input("beam search needs a prompt, 1..=256 beams and a sane length".into()));
    }
    let norm = |lp: f64, len: usize| lp / (len.max(1) as f64).powf(p.length_penalty);
    let mut cache = KvCache::new(model);
    let capture = Capture { last_logits_only: true, ..Capture::default() };
    let batch = TokenBatch::left_padded(&[prompt], model.pad_token())?;
    let mut rows = last_logits_rows(&model.forward(&batch, Some(&mut cache), &capture)?.logits)?;
    // Live beams: (tokens, logprob).
    let mut live: Vec<(Vec<u32>, f64)> = vec![(Vec::new(), 0.0)];
    let mut done: Vec<Beam> = Vec::new();
    for step in 0..p.max_new_tokens {
        let mut cands: Vec<(f64, usize, u32)> = Vec::new();
        for (bi, (_, lp)) in live.iter().enumerate() {
            let row = rows.get(bi).ok_or_else(|| EngineError::Input("logits row missing".into()))?;
            let ls = log_softmax(row);
            let mut idx: Vec<usize> = (0..ls.len()).filter(|&i| ls[i].is_finite()).collect();
            let k = (2 * p.num_beams).min(idx.len());
            if k == 0 {
                continue;
            }
            idx.select_nth_unstable_by(k - 1, |&a, &b| ls[b].total_cmp(&ls[a]));
            for &i in &idx[..k] {
                cands.push((lp + ls[i] as f64, bi, i as u32));
            }
        }
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut next: Vec<(Vec<u32>, f64)> = Vec::new();
        let mut parents = Vec::new();
        for (rank, &(lp, bi, tok)) in cands.iter().enumerate() {
            let mut toks = live[bi].0.clone();
            toks.push(tok);
            if p.stop_tokens.contains(&tok) {
                if rank < p.num_beams {
                    let len = toks.len();
                    done.push(Beam { tokens: toks, logprob: lp, score: norm(lp, len) });
                }
                continue;
            }
            next.push((toks, lp));
            parents.push(bi);
            if next.len() == p.num_beams {
                break;
            }
        }
        done.sort_by(|a, b| b.score.total_cmp(&a.score));
        done.truncate(p.num_beams);
        let cur_len = step + 1;
        let best_live = next.iter().map(|(_, lp)| norm(*lp, cur_len)).fold(f64::NEG_INFINITY, f64::max);
        let saturated = done.len() >= p.num_beams && done.last().is_some_and(|w| w.score >= best_live);
        if next.is_empty() || saturated || step + 1 == p.max_new_tokens {
            if !saturated {
                for (toks, lp) in next {
                    let len = toks.len();
                    done.push(Beam { tokens: toks, logprob: lp, score: norm(lp, len) });
                }
            }
            break;
        }
        cache.select_rows(&parents)?;
        let toks: Vec<u32> = next.iter().map(|(t, _)| *t.last().unwrap_or(&0)).collect();
        let n = toks.len();
        live = next;
        let step_batch = TokenBatch::new(toks, vec![1; n], n, 1)?;
        rows = last_logits_rows(&model.forward(&step_batch, Some(&mut cache), &capture)?.logits)?;
    }
    done.sort_by(|a, b| b.score.total_cmp(&a.score));
    done.truncate(p.num_beams);
    Ok(done)
}
