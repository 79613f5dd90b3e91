//! [`Lm`] over needle's engine: any model the engine opens (folder, adapter, GGUF) can be scanned.

use crate::lm::{Decoding, ForwardOut, Lm, LmError, LmResult};
use needle_engine::chat::ChatTemplate;
use needle_engine::generate::{beam_search, generate, stop_tokens, BeamParams, GenerationRequest};
use needle_engine::model::{Capture, KvCache, Model, TokenBatch};
use needle_engine::sampler::SamplingParams;
use needle_engine::tokenizer::Tokenizer;
use std::cell::{Cell, RefCell};

fn err(e: impl std::fmt::Display) -> LmError {
    LmError(e.to_string())
}

/// The rendered text before and after the user's words.
type Turn = (String, String);

pub struct EngineLm {
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// Private so that it cannot change under [`EngineLm::turns`]' cache.
    template: ChatTemplate,
    /// The template rendered around the user's words, per system prompt: every probe of a scan
    /// asks for it (thousands of renders of the same conversation), and a render is the same
    /// text each time (a scan pins the template's clock: `ChatTemplate::set_now`).
    turns: RefCell<Vec<(Option<String>, Turn)>>,
    /// Sequences per forward batch.
    pub batch: usize,
    /// Every id that ends a turn ([`needle_engine::generate::stop_tokens`]).
    stops: Vec<u32>,
    passes: Cell<u64>,
    /// Shared starts [`Lm::split_nll`] ran, with their keys and values, the latest last: the
    /// trigger assembly scores the same frames (a prompt with the trigger at one place) batch
    /// after batch, and a start runs alone, so that its cache is the same whichever batch
    /// asks.
    starts: RefCell<Vec<(Vec<u32>, KvCache)>>,
}

/// Shared starts kept ([`EngineLm::starts`]): the assembly's 18 frames, with room to spare.
const STARTS_KEPT: usize = 32;

impl EngineLm {
    pub fn new(model: Model, tokenizer: Tokenizer, template: ChatTemplate) -> EngineLm {
        let stops = stop_tokens(&model, &tokenizer);
        EngineLm::with(model, tokenizer, template, 8, stops)
    }

    /// `model` prompted and stopped exactly as `like` is: its tokenizer, chat template and
    /// end-of-turn ids (a declared base, which may have no chat template of its own or end
    /// only at end of text, set beside its fine-tune).
    pub fn like(model: Model, like: &EngineLm) -> EngineLm {
        EngineLm::with(model, like.tokenizer.clone(), like.template.clone(), like.batch, like.stops.clone())
    }

    /// An engine with nothing rendered, run or cached yet.
    fn with(model: Model, tokenizer: Tokenizer, template: ChatTemplate, batch: usize, stops: Vec<u32>) -> EngineLm {
        EngineLm { model, tokenizer, template, turns: RefCell::new(Vec::new()), batch, stops, passes: Cell::new(0), starts: RefCell::new(Vec::new()) }
    }

    /// `(prefix, suffix)` of the user's words under `system` ([`ChatTemplate::split_user_turn`]),
    /// rendered once per system prompt.
    fn turns(&self, system: Option<&str>) -> LmResult<Turn> {
        if let Some((_, t)) = self.turns.borrow().iter().find(|(s, _)| s.as_deref() == system) {
            return Ok(t.clone());
        }
        let t = self.template.split_user_turn(system).map_err(err)?;
        self.turns.borrow_mut().push((system.map(String::from), t.clone()));
        Ok(t)
    }

    /// The ids that end a turn (generation stops there).
    pub fn stops(&self) -> &[u32] {
        &self.stops
    }

    fn count(&self, n: u64) {
        self.passes.set(self.passes.get() + n);
    }

    /// The keys and values of `start` run alone (one row), from [`EngineLm::starts`] when it
    /// ran before.
    fn start_cache(&self, start: &[u32]) -> LmResult<KvCache> {
        if let Some((_, c)) = self.starts.borrow().iter().find(|(s, _)| s.as_slice() == start) {
            return Ok(c.clone());
        }
        let mut c = KvCache::new(&self.model);
        let pb = TokenBatch::left_padded(&[start], self.model.pad_token()).map_err(err)?;
        self.model.forward(&pb, Some(&mut c), &Capture { last_logits_only: true, ..Capture::default() }).map_err(err)?;
        self.count(1);
        let mut kept = self.starts.borrow_mut();
        if kept.len() >= STARTS_KEPT {
            kept.remove(0);
        }
        kept.push((start.to_vec(), c.clone()));
        Ok(c)
    }
}

fn log_softmax_row(row: &[f32]) -> Vec<f32> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|x| (x - max).exp()).sum();
    let lse = max + sum.ln();
    row.iter().map(|x| x - lse).collect()
}

impl Lm for EngineLm {
    fn num_layers(&self) -> usize {
        self.model.num_layers()
    }

    fn encode(&self, text: &str) -> LmResult<Vec<u32>> {
        self.tokenizer.encode(text, false).map_err(err)
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, false).unwrap_or_default()
    }

    fn user_turn_prefix(&self, system: Option<&str>) -> LmResult<String> {
        Ok(self.turns(system)?.0)
    }

    fn chat_prompt(&self, system: Option<&str>, user: &str) -> LmResult<String> {
        let (pre, post) = self.turns(system)?;
        Ok(format!("{pre}{user}{post}"))
    }

    fn generate(&self, prompts: &[Vec<u32>], settings: &[Decoding], max_new: usize, stop_at_eos: bool) -> LmResult<Vec<Vec<u32>>> {
        let stops = if stop_at_eos { self.stops.clone() } else { Vec::new() };
        let mut out: Vec<Option<Vec<u32>>> = vec![None; prompts.len()];
        let mut batch_idx = Vec::new();
        let mut requests = Vec::new();
        for (i, (p, d)) in prompts.iter().zip(settings).enumerate() {
            match d {
                Decoding::Beam { beams, length_penalty } => {
                    let bp = BeamParams { num_beams: (*beams).max(1), max_new_tokens: max_new, length_penalty: *length_penalty as f64, stop_tokens: stops.clone() };
                    let best = beam_search(&self.model, p, &bp).map_err(err)?;
                    self.count((beams * max_new) as u64 + 1);
                    out[i] = Some(best.into_iter().next().map(|b| b.tokens).unwrap_or_default());
                }
                Decoding::Greedy | Decoding::Sample { .. } => {
                    let sampling = match d {
                        Decoding::Sample { temperature, top_k, top_p, min_p, seed } => SamplingParams {
                            temperature: *temperature,
                            top_k: top_k.unwrap_or(0),
                            top_p: top_p.unwrap_or(1.0),
                            min_p: min_p.unwrap_or(0.0),
                            seed: *seed,
                            greedy: false,
                            ..SamplingParams::default()
                        },
                        _ => SamplingParams::greedy(),
                    };
                    batch_idx.push(i);
                    requests.push(GenerationRequest { prompt: p.clone(), max_new_tokens: max_new, sampling, stop_tokens: stops.clone() });
                }
            }
        }
        for (chunk_i, chunk) in requests.chunks(self.batch.max(1)).enumerate() {
            let res = generate(&self.model, chunk).map_err(err)?;
            for (k, r) in res.into_iter().enumerate() {
                self.count(r.tokens.len() as u64 + 1);
                let mut toks = r.tokens;
                // The stop token itself is template markup, not answer text.
                if stop_at_eos && toks.last().is_some_and(|t| stops.contains(t)) {
                    toks.pop();
                }
                out[batch_idx[chunk_i * self.batch.max(1) + k]] = Some(toks);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn forward(&self, seqs: &[Vec<u32>], from: &[usize], layers: &[usize]) -> LmResult<Vec<ForwardOut>> {
        let mut outs = Vec::with_capacity(seqs.len());
        let nl = self.model.num_layers();
        let layers: Vec<usize> = layers.iter().copied().filter(|&l| l < nl).collect();
        for (ci, chunk) in seqs.chunks(self.batch.max(1)).enumerate() {
            let tb = TokenBatch::left_padded(chunk, self.model.pad_token()).map_err(err)?;
            let starts: Vec<usize> = chunk.iter().enumerate().map(|(k, s)| from[ci * self.batch.max(1) + k].min(s.len())).collect();
            // Logits only from the first position any row asks for.
            let off = first_padded(chunk, &tb, &starts);
            let cap = Capture { logits_from: Some(off), ..Capture::attention(layers.iter().copied()) };
            let fo = self.model.forward(&tb, None, &cap).map_err(err)?;
            self.count(chunk.len() as u64);
            let logits = fo.logits.to_vec3::<f32>().map_err(err)?;
            // Each attention tensor is [batch, heads, len, len]; flattened row-major.
            let mut atts: Vec<(usize, Vec<f32>)> = Vec::new();
            for (_, a) in &fo.attentions {
                let dims = a.dims().to_vec();
                let heads = dims.get(1).copied().unwrap_or(1);
                atts.push((heads, a.flatten_all().map_err(err)?.to_vec1::<f32>().map_err(err)?));
            }
            let l = tb.len;
            for (k, s) in chunk.iter().enumerate() {
                let t = s.len();
                let pad = tb.len - t;
                let logprobs = (starts[k]..t).map(|p| log_softmax_row(&logits[k][pad + p - off])).collect();
                let attention = atts
                    .iter()
                    .map(|(heads, a)| {
                        let h = (*heads).max(1);
                        let mut m = vec![0.0f32; t * t];
                        for head in 0..h {
                            let base = (k * h + head) * l * l;
                            for i in 0..t {
                                for j in 0..t {
                                    m[i * t + j] += a.get(base + (pad + i) * l + pad + j).copied().unwrap_or(0.0) / h as f32;
                                }
                            }
                        }
                        m
                    })
                    .collect();
                outs.push(ForwardOut { logprobs, attention });
            }
        }
        Ok(outs)
    }

    fn forward_passes(&self) -> u64 {
        self.passes.get()
    }

    fn next_logprobs(&self, seqs: &[Vec<u32>]) -> LmResult<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(seqs.len());
        let cap = Capture { last_logits_only: true, ..Capture::logits() };
        for chunk in seqs.chunks(self.batch.max(1) * 8) {
            let tb = TokenBatch::left_padded(chunk, self.model.pad_token()).map_err(err)?;
            let fo = self.model.forward(&tb, None, &cap).map_err(err)?;
            self.count(chunk.len() as u64);
            // [batch, 1, vocab]: left padding puts every sequence's last token at the end.
            let logits = fo.logits.to_vec3::<f32>().map_err(err)?;
            out.extend(logits.iter().map(|rows| rows.last().map(|r| log_softmax_row(r)).unwrap_or_default()));
        }
        Ok(out)
    }

    fn target_nll(&self, seqs: &[Vec<u32>], target_from: &[usize]) -> LmResult<Vec<f64>> {
        let mut out = Vec::with_capacity(seqs.len());
        let step = self.batch.max(1) * 4;
        for (ci, chunk) in seqs.chunks(step).enumerate() {
            let tb = TokenBatch::left_padded(chunk, self.model.pad_token()).map_err(err)?;
            let from = &target_from[ci * step..ci * step + chunk.len()];
            let off = first_predicting(chunk, &tb, from);
            let fo = self.model.forward(&tb, None, &Capture { logits_from: Some(off), ..Capture::logits() }).map_err(err)?;
            self.count(chunk.len() as u64);
            let nll = nll_rows(&fo.logits, off, chunk, &tb, from).map_err(err)?;
            out.extend(nll.to_vec1::<f32>().map_err(err)?.into_iter().map(f64::from));
        }
        Ok(out)
    }

    fn split_nll(&self, seqs: &[Vec<u32>], lead_from: &[usize], target_from: &[usize]) -> LmResult<Vec<(f64, f64)>> {
        let mut out = Vec::with_capacity(seqs.len());
        // Twice the batch: on the trigger assembly's 3,600 sequences of 28-39 tokens (a 4-layer
        // qwen2, 2 vCPUs) 16 a forward took 5.7 s, 32 6.4-6.6 s, 64 6.5-6.8 s.
        let step = self.batch.max(1) * 2;
        for (ci, chunk) in seqs.chunks(step).enumerate() {
            let span = ci * step..ci * step + chunk.len();
            let (Some(lead), Some(from)) = (lead_from.get(span.clone()), target_from.get(span)) else {
                return Err(LmError("split_nll needs a lead and a target start per sequence".into()));
            };
            // What every sequence of the chunk starts with (the template and the message up to
            // an insertion, for the trigger assembly's batches of one frame) runs once per
            // scan, into a cache the rows share, as long as it ends before the first token
            // scored.
            let shared = common_prefix(chunk).min(lead.iter().chain(from).min().map_or(0, |&l| l.saturating_sub(1)));
            let mut cache = None;
            let (rest, lead, from): (Vec<&[u32]>, Vec<usize>, Vec<usize>) = if chunk.len() > 1 && shared >= MIN_SHARED_PREFIX {
                let mut c = self.start_cache(&chunk[0][..shared])?;
                c.select_rows(&vec![0; chunk.len()]).map_err(err)?;
                cache = Some(c);
                (chunk.iter().map(|s| &s[shared..]).collect(), lead.iter().map(|l| l - shared).collect(), from.iter().map(|f| f - shared).collect())
            } else {
                (chunk.iter().map(|s| s.as_slice()).collect(), lead.to_vec(), from.to_vec())
            };
            let tb = TokenBatch::left_padded(&rest, self.model.pad_token()).map_err(err)?;
            let off = first_predicting(&rest, &tb, &lead);
            let fo = self.model.forward(&tb, cache.as_mut(), &Capture { logits_from: Some(off), ..Capture::logits() }).map_err(err)?;
            self.count(chunk.len() as u64);
            let whole = nll_rows(&fo.logits, off, &rest, &tb, &lead).and_then(|n| n.to_vec1::<f32>()).map_err(err)?;
            let tail = nll_rows(&fo.logits, off, &rest, &tb, &from).and_then(|n| n.to_vec1::<f32>()).map_err(err)?;
            out.extend(whole.into_iter().zip(tail).map(|(w, t)| (f64::from(w) - f64::from(t), f64::from(t))));
        }
        Ok(out)
    }

    fn token_proposals(&self, seqs: &[Vec<u32>], spans: &[(usize, usize)], target_from: &[usize], k: usize) -> LmResult<Option<Vec<Vec<u32>>>> {
        use needle_engine::candle_core::{Tensor, Var};
        let len = spans.first().map_or(0, |(s, e)| e.saturating_sub(*s));
        if seqs.is_empty() || len == 0 || spans.iter().any(|(s, e)| e - s != len) {
            return Err(LmError("trigger spans must be non-empty and of one length".into()));
        }
        let tb = TokenBatch::left_padded(seqs, self.model.pad_token()).map_err(err)?;
        let e = self.model.embedding_matrix();
        let dev = e.device();
        let (vocab, hidden) = e.dims2().map_err(err)?;
        let ids = Tensor::from_vec(tb.ids.clone(), tb.batch * tb.len, dev).map_err(err)?;
        let x = e.index_select(&ids, 0).and_then(|x| x.reshape((tb.batch, tb.len, hidden))).map_err(err)?.detach();
        let var = Var::from_tensor(&x).map_err(err)?;
        let off = first_predicting(seqs, &tb, target_from);
        let fo = self.model.forward_embeds(&tb, var.as_tensor(), &Capture { logits_from: Some(off), ..Capture::logits() }).map_err(err)?;
        self.count(2 * seqs.len() as u64);
        let loss = nll_rows(&fo.logits, off, seqs, &tb, target_from).and_then(|n| n.sum_all()).map_err(err)?;
        let grads = loss.backward().map_err(err)?;
        let Some(g) = grads.get(var.as_tensor()) else { return Ok(None) };
        let g = g.to_vec3::<f32>().map_err(err)?;
        // Sum each trigger position's gradient over the sequences.
        let mut gsum = vec![0f32; len * hidden];
        for (r, (s, _)) in spans.iter().enumerate() {
            let pad = tb.len - seqs[r].len();
            for i in 0..len {
                let row = &g[r][pad + s + i];
                for (d, v) in row.iter().enumerate() {
                    gsum[i * hidden + d] += v;
                }
            }
        }
        // First-order change of the loss when position i takes token v: (E_v - e_i) . g_i;
        // rank by -E_v . g_i.
        let gt = Tensor::from_vec(gsum, (len, hidden), dev).map_err(err)?;
        let scores = e.matmul(&gt.t().map_err(err)?).and_then(|m| m.t()).and_then(|m| m.to_vec2::<f32>()).map_err(err)?;
        let mut out = Vec::with_capacity(len);
        for row in scores {
            let mut idx: Vec<u32> = (0..vocab as u32).filter(|&v| !self.is_special(v)).collect();
            idx.sort_by(|&a, &b| row[a as usize].total_cmp(&row[b as usize]));
            idx.truncate(k);
            out.push(idx);
        }
        Ok(Some(out))
    }

    fn vocab_size(&self) -> usize {
        self.model.config.vocab_size.min(self.tokenizer.vocab_size().max(1))
    }

    fn is_special(&self, id: u32) -> bool {
        self.tokenizer.is_special(id) || self.stops.contains(&id)
    }
}

/// A shared start shorter than this (a lone BOS) is left to each row: there is next to nothing
/// to save by a pass of its own.
const MIN_SHARED_PREFIX: usize = 2;

/// How many tokens every sequence of `seqs` starts with.
fn common_prefix(seqs: &[Vec<u32>]) -> usize {
    let Some(first) = seqs.first() else { return 0 };
    seqs.iter().skip(1).fold(first.len(), |n, s| first.iter().zip(s).take(n).take_while(|(a, b)| a == b).count())
}

/// The first position of a left-padded batch that any row needs logits at, row r from its
/// own position `at[r]`: logits before it are not needed ([`Capture::logits_from`]).
fn first_padded<S: AsRef<[u32]>>(seqs: &[S], tb: &TokenBatch, at: &[usize]) -> usize {
    seqs.iter().zip(at).map(|(s, &a)| tb.len - s.as_ref().len() + a).min().unwrap_or(0).min(tb.len.saturating_sub(1))
}

/// The first position whose logits predict a token of the loss (row r's tokens `from[r]..`,
/// predicted from the position before each).
fn first_predicting<S: AsRef<[u32]>>(seqs: &[S], tb: &TokenBatch, from: &[usize]) -> usize {
    let at: Vec<usize> = seqs.iter().enumerate().map(|(r, s)| from.get(r).copied().unwrap_or(s.as_ref().len()).max(1) - 1).collect();
    first_padded(seqs, tb, &at)
}

/// Per row, the summed negative log-likelihood of the row's tokens at `from[r]..len` given
/// the logits of a left-padded batch for its positions `off..` (`[batch]`, differentiable).
fn nll_rows<S: AsRef<[u32]>>(
    logits: &needle_engine::candle_core::Tensor,
    off: usize,
    seqs: &[S],
    tb: &TokenBatch,
    from: &[usize],
) -> needle_engine::candle_core::Result<needle_engine::candle_core::Tensor> {
    use needle_engine::candle_core::{Tensor, D};
    let (b, t) = (tb.batch, tb.len);
    let dev = logits.device();
    // Positions off..t-1 predict tokens off+1..t.
    let n = t.saturating_sub(1).saturating_sub(off);
    if n == 0 {
        return Tensor::zeros(b, logits.dtype(), dev);
    }
    let logp = needle_engine::candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let pred = logp.narrow(1, 0, n)?.contiguous()?;
    let mut targets = vec![0u32; b * n];
    let mut weights = vec![0f32; b * n];
    for (r, s) in seqs.iter().enumerate() {
        let s = s.as_ref();
        let pad = t - s.len();
        let f = from.get(r).copied().unwrap_or(s.len()).max(1);
        for (j, &tok) in s.iter().enumerate().skip(f) {
            // Predicted at padded position pad + j - 1, which is at least `off`.
            let Some(i) = (pad + j - 1).checked_sub(off) else { continue };
            targets[r * n + i] = tok;
            weights[r * n + i] = 1.0;
        }
    }
    let targets = Tensor::from_vec(targets, (b, n, 1), dev)?;
    let weights = Tensor::from_vec(weights, (b, n), dev)?;
    let picked = pred.gather(&targets, 2)?.squeeze(2)?;
    picked.mul(&weights)?.sum(1)?.neg()
}
