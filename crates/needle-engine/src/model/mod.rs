//! The model: embeddings, blocks, final norm and head, with a forward pass over left-padded
//! batches that exposes logits at every position, attention probabilities of chosen layers and
//! heads, and hidden states; incremental decoding through [`KvCache`].
//!
//! One file per block family builds the blocks from Hugging Face weight names:
//! [`llama`] (Llama, Mistral, Qwen2, Qwen3, Phi-3), [`gemma`], [`gpt2`], [`neox`]. The shared
//! pieces live in [`layers`].

pub mod gemma;
pub mod gpt2;
pub mod layers;
pub mod llama;
pub mod neox;

use crate::config::{Family, ModelConfig};
use crate::{EngineError, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::init::Init;
use candle_nn::VarBuilder;
use layers::{Block, Ctx, Linear, Norm};
use std::path::Path;

/// What a family builder produces.
pub(crate) struct Parts {
    embed: Tensor,
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    final_norm: Norm,
    lm_head: Linear,
}

fn embedding(vb: &VarBuilder, name: &str, c: &ModelConfig) -> candle_core::Result<Tensor> {
    vb.get_with_hints((c.vocab_size, c.hidden_size), name, Init::Randn { mean: 0.0, stdev: layers::INIT_STD })
}

/// The output head: its own weight unless embeddings are tied (or the checkpoint has none).
fn lm_head(vb: &VarBuilder, name: &str, embed: &Tensor, c: &ModelConfig) -> candle_core::Result<Linear> {
    let weight_name = format!("{name}.weight");
    let own = !c.tie_word_embeddings;
    let weight = if own {
        vb.get_with_hints((c.vocab_size, c.hidden_size), &weight_name, Init::Randn { mean: 0.0, stdev: layers::INIT_STD })?
    } else {
        embed.clone()
    };
    Ok(Linear { name: name.to_string(), weight, bias: None, conv1d: false, lora: None })
}

/// Attention scores one layer of one forward pass may hold (f32: 4 GiB): a batch beyond it is an
/// input error. A scan's batches hold at most a few hundred million.
pub const MAX_ATTENTION_SCORES: usize = 1 << 30;

/// A batch of token sequences, left-padded to one length, with its attention mask.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// Row-major [batch, len].
    pub ids: Vec<u32>,
    /// Row-major [batch, len]: 1 for a real token, 0 for padding.
    pub mask: Vec<u8>,
    pub batch: usize,
    pub len: usize,
}

impl TokenBatch {
    /// Left-pads `seqs` with `pad` to the longest length.
    pub fn left_padded<S: AsRef<[u32]>>(seqs: &[S], pad: u32) -> Result<Self> {
        let len = seqs.iter().map(|s| s.as_ref().len()).max().unwrap_or(0);
        if seqs.is_empty() || len == 0 {
            return Err(EngineError::Input("empty batch or empty sequence".into()));
        }
        let mut ids = Vec::with_capacity(seqs.len() * len);
        let mut mask = Vec::with_capacity(seqs.len() * len);
        for s in seqs {
            let s = s.as_ref();
            if s.is_empty() {
                return Err(EngineError::Input("empty sequence in batch".into()));
            }
            let pad_n = len - s.len();
            ids.extend(std::iter::repeat_n(pad, pad_n));
            mask.extend(std::iter::repeat_n(0u8, pad_n));
            ids.extend_from_slice(s);
            mask.extend(std::iter::repeat_n(1u8, s.len()));
        }
        Ok(Self { ids, mask, batch: seqs.len(), len })
    }

    /// A batch from ids and mask given directly (e.g. right-padded training data).
    pub fn new(ids: Vec<u32>, mask: Vec<u8>, batch: usize, len: usize) -> Result<Self> {
        let n = batch.checked_mul(len).ok_or_else(|| EngineError::Input("batch too large".into()))?;
        if ids.len() != n || mask.len() != n || n == 0 {
            return Err(EngineError::Input(format!("ids/mask lengths {}/{} do not match {batch}x{len}", ids.len(), mask.len())));
        }
        Ok(Self { ids, mask, batch, len })
    }

    /// Row `r` of the mask.
    pub fn mask_row(&self, r: usize) -> &[u8] {
        self.mask.get(r * self.len..(r + 1) * self.len).unwrap_or(&[])
    }
}

/// Which extras a forward pass should return.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// Layers whose attention probabilities to return.
    pub attention_layers: Vec<usize>,
    /// Heads to keep (all when None).
    pub attention_heads: Option<Vec<usize>>,
    /// Return hidden states: the input of every layer, then the final normed output.
    pub hidden_states: bool,
    /// Compute logits for the last position only (generation).
    pub last_logits_only: bool,
    /// Compute logits for positions `from..t` of the (padded) batch only: a loss over the last
    /// few tokens needs no more, and with a large vocabulary the output projection of every
    /// position is most of the pass (151,936 rows for Qwen2). Ignored with `last_logits_only`.
    pub logits_from: Option<usize>,
}

impl Capture {
    pub fn logits() -> Self {
        Self::default()
    }

    /// All heads of the given layers.
    pub fn attention(layers: impl IntoIterator<Item = usize>) -> Self {
        Self { attention_layers: layers.into_iter().collect(), ..Self::default() }
    }
}

/// The result of a forward pass.
#[derive(Debug)]
pub struct ForwardOutput {
    /// [batch, t, vocab] (t = 1 with `last_logits_only`, t - from with `logits_from`).
    pub logits: Tensor,
    /// (layer, probabilities [batch, heads, t, s]) for each requested layer, in order.
    pub attentions: Vec<(usize, Tensor)>,
    /// [batch, t, hidden] each; empty unless requested.
    pub hidden_states: Vec<Tensor>,
}

/// Keys and values of past positions for incremental decoding, plus their padding mask.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Per row: 1 real / 0 padding, for every cached position.
    mask: Vec<Vec<u8>>,
}

impl KvCache {
    pub fn new(model: &Model) -> Self {
        Self { layers: vec![None; model.blocks.len()], mask: Vec::new() }
    }

    /// Cached positions.
    pub fn len(&self) -> usize {
        self.mask.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows in the cache.
    pub fn batch(&self) -> usize {
        self.mask.len()
    }

    /// Keeps rows `idx` in that order (beam search reordering, dropping finished rows).
    pub fn select_rows(&mut self, idx: &[usize]) -> Result<()> {
        if idx.iter().any(|&i| i >= self.mask.len()) || idx.is_empty() {
            return Err(EngineError::Input("row index out of range".into()));
        }
        let device = self.layers.iter().flatten().next().map(|(k, _)| k.device().clone());
        if let Some(device) = device {
            let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
            let t = Tensor::new(ids.as_slice(), &device)?;
            // Some families cache views of a fused projection (GPT-NeoX), which
            // `index_select` does not take.
            for (k, v) in self.layers.iter_mut().flatten() {
                *k = k.contiguous()?.index_select(&t, 0)?;
                *v = v.contiguous()?.index_select(&t, 0)?;
            }
        }
        self.mask = idx.iter().map(|&i| self.mask[i].clone()).collect();
        Ok(())
    }
}

/// A loaded (or freshly initialised) causal LM.
#[derive(Debug)]
pub struct Model {
    pub config: ModelConfig,
    embed: Tensor,
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    final_norm: Norm,
    lm_head: Linear,
    device: Device,
    /// Use fused inference kernels (no backward pass).
    fast: bool,
}

impl Model {
    /// Loads a Hugging Face model folder (config.json + safetensors), computing in f32.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        crate::init_threads();
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let files = crate::weights::safetensors_files(dir)?;
        let vb = crate::weights::open_safetensors(&files, DType::F32, device)?;
        Self::from_var_builder(config, &vb, device)
    }

    /// Builds from tensors already in memory under Hugging Face names (the GGUF loader).
    pub fn from_tensors(config: &serde_json::Value, tensors: std::collections::HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        crate::init_threads();
        let config = ModelConfig::from_json(config)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::from_var_builder(config, &vb, device)
    }

    /// Builds the model from any candle VarBuilder (files, tensors, or a VarMap that creates
    /// freshly initialised variables for training).
    pub fn from_var_builder(config: ModelConfig, vb: &VarBuilder, device: &Device) -> Result<Self> {
        let parts = match config.family {
            Family::Llama | Family::Phi3 => llama::build(vb, &config),
            Family::Gemma => gemma::build(vb, &config),
            Family::Gpt2 => gpt2::build(vb, &config),
            Family::NeoX => neox::build(vb, &config),
        }
        .map_err(|e| EngineError::Weights(format!("{}: {e}", config.architecture)))?;
        Ok(Self {
            config,
            embed: parts.embed,
            pos_embed: parts.pos_embed,
            blocks: parts.blocks,
            final_norm: parts.final_norm,
            lm_head: parts.lm_head,
            device: device.clone(),
            fast: true,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// Turns fused inference kernels on (default) or off (needed for gradients).
    pub fn set_fast_kernels(&mut self, fast: bool) {
        self.fast = fast;
    }

    /// Every linear layer with its Hugging Face module path, read-only (weight diffs).
    pub fn linears(&self) -> Vec<&Linear> {
        let mut v: Vec<&Linear> = self.blocks.iter().flat_map(|b| b.linears()).collect();
        if !self.config.tie_word_embeddings {
            v.push(&self.lm_head);
        }
        v
    }

    /// Every linear layer with its Hugging Face module path (for LoRA).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v: Vec<&mut Linear> = self.blocks.iter_mut().flat_map(|b| b.linears_mut()).collect();
        if !self.config.tie_word_embeddings {
            v.push(&mut self.lm_head);
        }
        v
    }

    /// A token to pad batches with: pad, else eos, else 0.
    pub fn pad_token(&self) -> u32 {
        self.config.pad_token_id.or(self.config.eos_token_ids.first().copied()).unwrap_or(0)
    }

    /// Runs the model over `batch`. With a cache, the batch continues the cached sequences
    /// (same rows) and the cache is extended.
    pub fn forward(&self, batch: &TokenBatch, cache: Option<&mut KvCache>, capture: &Capture) -> Result<ForwardOutput> {
        self.forward_inner(batch, cache, capture, None, self.fast)
    }

    /// The token embedding matrix `[vocab, hidden]` (before any embedding scale).
    pub fn embedding_matrix(&self) -> &Tensor {
        &self.embed
    }

    /// Like [`Model::forward`] without a cache, but from input embeddings `[batch, len, hidden]`
    /// (rows of [`Model::embedding_matrix`], or anything of that shape) in place of the token
    /// lookup; `batch` still gives the mask and positions. Runs the differentiable path (no
    /// fused kernels), so gradients flow back to `embeds` (gradient-guided trigger search).
    pub fn forward_embeds(&self, batch: &TokenBatch, embeds: &Tensor, capture: &Capture) -> Result<ForwardOutput> {
        let want = (batch.batch, batch.len, self.config.hidden_size);
        if embeds.dims() != [want.0, want.1, want.2] {
            return Err(EngineError::Input(format!("embeddings of shape {:?}, expected {want:?}", embeds.dims())));
        }
        self.forward_inner(batch, None, capture, Some(embeds), false)
    }

    fn forward_inner(&self, batch: &TokenBatch, cache: Option<&mut KvCache>, capture: &Capture, embeds: Option<&Tensor>, fast: bool) -> Result<ForwardOutput> {
        let (b, t) = (batch.batch, batch.len);
        if b == 0 || t == 0 || batch.ids.len() != b * t || batch.mask.len() != b * t {
            return Err(EngineError::Input("malformed batch".into()));
        }
        if let Some(&bad) = batch.ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(EngineError::Input(format!("token id {bad} >= vocab size {}", self.config.vocab_size)));
        }
        for &l in &capture.attention_layers {
            if l >= self.blocks.len() {
                return Err(EngineError::Input(format!("layer {l} out of range (model has {})", self.blocks.len())));
            }
        }
        if let Some(hs) = &capture.attention_heads {
            if let Some(&h) = hs.iter().find(|&&h| h >= self.config.num_heads) {
                return Err(EngineError::Input(format!("head {h} out of range (model has {})", self.config.num_heads)));
            }
        }
        // The full mask: cached positions then the new ones.
        let past = match &cache {
            Some(c) if !c.mask.is_empty() => {
                if c.batch() != b {
                    return Err(EngineError::Input(format!("cache has {} rows, batch has {b}", c.batch())));
                }
                c.len()
            }
            _ => 0,
        };
        let s = past + t;
        // Attention scores take batch x heads x new x all positions floats per layer: a batch too
        // large for memory is an error here, not an abort on the allocation (a tokenizer whose
        // post-processor repeats the text 2,000 times asked for 62 GB).
        let scores = [b, self.config.num_heads, t, s].iter().try_fold(1usize, |a, &x| a.checked_mul(x));
        if scores.is_none_or(|n| n > MAX_ATTENTION_SCORES) {
            return Err(EngineError::Input(format!(
                "a batch of {b} sequences of {s} positions needs more than {MAX_ATTENTION_SCORES} attention scores per layer ({} heads); the inputs are too long",
                self.config.num_heads
            )));
        }
        let full_mask: Vec<Vec<u8>> = (0..b)
            .map(|r| {
                let mut row = cache.as_ref().and_then(|c| c.mask.get(r).cloned()).unwrap_or_default();
                row.extend_from_slice(batch.mask_row(r));
                row
            })
            .collect();
        // Position ids from the mask: index among the real tokens of the row.
        let mut positions = Vec::with_capacity(b * t);
        let mut max_pos = 0usize;
        for row in &full_mask {
            let mut count = 0usize;
            for (j, &m) in row.iter().enumerate() {
                if m != 0 {
                    count += 1;
                }
                if j >= past {
                    let p = if m != 0 { count - 1 } else { 0 };
                    max_pos = max_pos.max(p);
                    positions.push(p);
                }
            }
        }
        if self.config.learned_positions && max_pos >= self.config.max_position_embeddings {
            return Err(EngineError::Input(format!(
                "sequence of {} positions exceeds the model's {} learned positions",
                max_pos + 1,
                self.config.max_position_embeddings
            )));
        }
        let dev = &self.device;
        let mask_for = |window: Option<usize>| -> Result<Tensor> {
            let mut m = vec![0f32; b * t * s];
            for (r, row) in full_mask.iter().enumerate() {
                for i in 0..t {
                    let q = past + i;
                    let visible = |j: usize| row.get(j).is_some_and(|&valid| valid != 0) && j <= q && window.is_none_or(|w| q - j < w);
                    // A hidden key scores minus infinity, whose exponential is zero at once (the
                    // most negative finite float takes libm's underflow path: 1.7% of a scan's
                    // time); a padding position that sees no key keeps finite scores, so that its
                    // row (which no real position reads) stays free of NaN.
                    let hidden = if (0..s).any(visible) { f32::NEG_INFINITY } else { f32::MIN };
                    for j in (0..s).filter(|&j| !visible(j)) {
                        m[(r * t + i) * s + j] = hidden;
                    }
                }
            }
            Ok(Tensor::from_vec(m, (b, 1, t, s), dev)?)
        };
        let mask_full = mask_for(None)?;
        let window = self.blocks.iter().find_map(|bl| bl.attn.window);
        let mask_window = match window {
            Some(w) => Some(mask_for(Some(w))?),
            None => None,
        };
        // RoPE tables.
        let pos_f: Vec<f32> = positions.iter().map(|&p| p as f32).collect();
        let pos_t = Tensor::from_vec(pos_f, (b, t, 1), dev)?;
        let mut rope: [Option<(Tensor, Tensor)>; 2] = [None, None];
        if !self.config.learned_positions {
            for (slot, rc) in rope.iter_mut().zip([&self.config.rope_global, &self.config.rope_local]) {
                let inv = rc.inv_freq(max_pos + 1);
                let n = inv.len();
                let inv = Tensor::from_vec(inv, (1, 1, n), dev)?;
                let freqs = pos_t.broadcast_mul(&inv)?;
                let emb = Tensor::cat(&[&freqs, &freqs], 2)?.unsqueeze(1)?;
                *slot = Some((emb.cos()?, emb.sin()?));
            }
        }
        let ctx = Ctx { rope: &rope, mask_full: &mask_full, mask_window: mask_window.as_ref(), fast };

        // Embeddings.
        let mut x = match embeds {
            Some(e) => e.clone(),
            None => {
                let ids = Tensor::from_vec(batch.ids.clone(), b * t, dev)?;
                self.embed.index_select(&ids, 0)?.reshape((b, t, self.config.hidden_size))?
            }
        };
        if let Some(scale) = self.config.embed_scale {
            // transformers rounds the normaliser to the compute dtype first.
            x = x.affine(scale as f32 as f64, 0.0)?;
        }
        if let Some(pe) = &self.pos_embed {
            let pid: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
            let pid = Tensor::from_vec(pid, b * t, dev)?;
            x = (x + pe.index_select(&pid, 0)?.reshape((b, t, self.config.hidden_size))?)?;
        }

        let mut hidden_states = Vec::new();
        let mut attentions = Vec::new();
        let heads = match &capture.attention_heads {
            Some(h) => Some(Tensor::new(h.iter().map(|&i| i as u32).collect::<Vec<_>>().as_slice(), dev)?),
            None => None,
        };
        let mut cache = cache;
        for (i, block) in self.blocks.iter().enumerate() {
            if capture.hidden_states {
                hidden_states.push(x.clone());
            }
            let want = capture.attention_layers.contains(&i);
            let slot = cache.as_deref_mut().and_then(|c| c.layers.get_mut(i));
            let (y, probs) = block.forward(&x, &ctx, slot, want)?;
            x = y;
            if let Some(p) = probs {
                let p = match &heads {
                    Some(h) => p.index_select(h, 1)?,
                    None => p,
                };
                attentions.push((i, p));
            }
        }
        if let Some(c) = cache {
            c.mask = full_mask;
        }
        let mut x = self.final_norm.forward(&x, fast)?;
        if capture.hidden_states {
            hidden_states.push(x.clone());
        }
        if capture.last_logits_only {
            x = x.narrow(1, t - 1, 1)?;
        } else if let Some(from) = capture.logits_from {
            let from = from.min(t - 1);
            x = x.narrow(1, from, t - from)?;
        }
        let mut logits = self.lm_head.forward(&x)?;
        if let Some(cap) = self.config.final_softcap {
            logits = (logits / cap)?.tanh()?.affine(cap, 0.0)?;
        }
        Ok(ForwardOutput { logits, attentions, hidden_states })
    }
}
