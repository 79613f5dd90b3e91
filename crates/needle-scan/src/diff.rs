//! Weight diff against the declared base (`--base`, or an adapter's own delta): where the
//! fine-tune changed the model, how low-rank the change is, and which input tokens it responds
//! to. A backdoor has to be written somewhere: a trigger is an input the update reacts to, so
//! the tokens whose first-layer input projections the update moves most (and, for a full
//! fine-tune, the embedding rows that moved most) are trigger-token candidates. They seed the
//! vocabulary sweep and the seeded search; they are never evidence of a backdoor on their own
//! (every fine-tune moves something), only where to look.
//!
//! Cost: one pass over the weights. Each changed matrix is summarised by a randomized range
//! finder (`rank` columns), so the per-token response costs `vocab x hidden x rank` per
//! first-layer projection, not `vocab x hidden x out`.

use needle_engine::candle_core::{DType, Tensor};
use needle_engine::model::Model;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("the base does not match the model: {0}")]
    Mismatch(String),
    #[error("weight diff: {0}")]
    Tensor(#[from] needle_engine::candle_core::Error),
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffParams {
    /// Columns of the randomized range finder per changed matrix (above a LoRA rank).
    pub rank: usize,
    /// Seed tokens taken from the first-layer response ranking ...
    pub seeds_response: usize,
    /// ... and from the embedding-row ranking (full fine-tunes with a base). Off by default:
    /// under Adam every embedding row a fine-tune touches moves about alike (on the zoo the
    /// top rows stand at robust z 2-3, trigger tokens among the crowd), so the ranking is
    /// reported, not searched.
    pub seeds_embedding: usize,
    /// Tokens listed in the report per ranking.
    pub report_tokens: usize,
}

impl Default for DiffParams {
    fn default() -> Self {
        DiffParams { rank: 24, seeds_response: 24, seeds_embedding: 0, report_tokens: 16 }
    }
}

/// One matrix's change.
#[derive(Debug, Clone, Serialize)]
pub struct TensorChange {
    pub name: String,
    pub layer: Option<usize>,
    /// `||delta||_F / ||W_base||_F`.
    pub relative: f64,
    /// Share of the delta's energy in its top `rank` directions (1.0: low-rank, as LoRA is).
    pub low_rank_share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerChange {
    pub layer: usize,
    /// Root-mean-square of the layer's matrices' relative changes.
    pub relative: f64,
}

/// A token and how strongly a ranking picks it.
#[derive(Debug, Clone, Serialize)]
pub struct TokenShift {
    pub id: u32,
    pub text: String,
    pub value: f64,
    /// Robust z-score over the vocabulary (median, MAD).
    pub z: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WeightDiff {
    /// "adapter" (the LoRA deltas alone) or "base model".
    pub against: String,
    pub changed_tensors: usize,
    pub unchanged_tensors: usize,
    /// Changed matrices, largest relative change first.
    pub tensors: Vec<TensorChange>,
    pub layers: Vec<LayerChange>,
    /// Relative embedding change; `None` without a base (an adapter's embeddings are the base's).
    pub embedding_relative: Option<f64>,
    /// Embedding rows that moved most.
    pub embedding_rows: Vec<TokenShift>,
    /// Tokens the first changed layer's input projections respond to most, relative to the
    /// projections' own size.
    pub input_response: Vec<TokenShift>,
    /// Tokens handed to the sweep and the seeded search, strongest first.
    pub seeds: Vec<u32>,
}

/// Projections that read the normalised residual stream directly (Hugging Face names across
/// the families the engine loads).
const INPUT_PROJECTIONS: &[&str] =
    &["q_proj", "k_proj", "v_proj", "c_attn", "query_key_value", "qkv_proj", "W_pack", "gate_proj", "up_proj", "gate_up_proj", "c_fc", "fc1", "dense_h_to_4h"];

fn layer_of(name: &str) -> Option<usize> {
    name.split('.').find_map(|p| p.parse::<usize>().ok())
}

fn frob2(t: &Tensor) -> Result<f64, DiffError> {
    Ok(t.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// A deterministic pseudo-random `[n, k]` matrix (xorshift), so scans are reproducible.
fn gaussianish(n: usize, k: usize, seed: u64, device: &needle_engine::candle_core::Device) -> Result<Tensor, DiffError> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n * k);
    for _ in 0..n * k {
        // Sum of uniforms: close enough to Gaussian for a range finder.
        let mut acc = 0.0f32;
        for _ in 0..4 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        }
        v.push(acc);
    }
    Ok(Tensor::from_vec(v, (n, k), device)?)
}

/// Orthonormal columns spanning `y` (`[out, k]`), by modified Gram-Schmidt; near-null columns
/// are dropped.
fn orthonormal(y: &Tensor) -> Result<Option<Tensor>, DiffError> {
    let (out, k) = y.dims2()?;
    let cols: Vec<Vec<f32>> = y.t()?.contiguous()?.to_vec2::<f32>()?;
    let scale = cols.iter().map(|c| c.iter().map(|x| x * x).sum::<f32>()).fold(0.0f32, f32::max).sqrt();
    let mut q: Vec<Vec<f32>> = Vec::new();
    for mut c in cols {
        for _ in 0..2 {
            for b in &q {
                let d: f32 = c.iter().zip(b).map(|(x, y)| x * y).sum();
                for (x, y) in c.iter_mut().zip(b) {
                    *x -= d * y;
                }
            }
        }
        let n = c.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 1e-5 * scale.max(f32::MIN_POSITIVE) {
            q.push(c.into_iter().map(|x| x / n).collect());
        }
    }
    if q.is_empty() {
        return Ok(None);
    }
    let kk = q.len().min(k);
    let flat: Vec<f32> = q.into_iter().take(kk).flatten().collect();
    Ok(Some(Tensor::from_vec(flat, (kk, out), y.device())?.t()?.contiguous()?))
}

fn robust_z(values: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if s.is_empty() {
        return vec![0.0; values.len()];
    }
    s.sort_by(f64::total_cmp);
    let med = s[s.len() / 2];
    let mut dev: Vec<f64> = s.iter().map(|v| (v - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mad = (dev[dev.len() / 2] * 1.4826).max(1e-12);
    values.iter().map(|v| if v.is_finite() { (v - med) / mad } else { 0.0 }).collect()
}

fn top_tokens(values: &[f64], n: usize, decode: &dyn Fn(u32) -> String) -> Vec<TokenShift> {
    let z = robust_z(values);
    let mut idx: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_finite()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.into_iter().take(n).map(|i| TokenShift { id: i as u32, text: decode(i as u32), value: values[i], z: z[i] }).collect()
}

/// Diffs `model` against `base` (`None`: the model's unmerged adapter deltas are the change).
pub fn diff(model: &Model, base: Option<&Model>, p: &DiffParams, decode: &dyn Fn(u32) -> String) -> Result<WeightDiff, DiffError> {
    let lins = model.linears();
    let base_lins = base.map(|b| b.linears());
    if let Some(bl) = &base_lins {
        let a: Vec<&str> = lins.iter().map(|l| l.name.as_str()).collect();
        let b: Vec<&str> = bl.iter().map(|l| l.name.as_str()).collect();
        if a != b {
            return Err(DiffError::Mismatch(format!("{} linear layers against {} (or different names)", a.len(), b.len())));
        }
    }
    let embed = model.embedding_matrix();
    let (vocab, hidden) = embed.dims2()?;
    let mut tensors = Vec::new();
    // (layer, name, delta summary `[k, in]`, ||W||_F^2 / in) of the input projections.
    let mut summaries: Vec<(usize, String, Tensor, f64)> = Vec::new();
    let mut unchanged = 0usize;
    for (i, lin) in lins.iter().enumerate() {
        let (delta, w_base) = match &base_lins {
            Some(bl) => {
                let wb = bl[i].effective_weight()?;
                let wm = lin.effective_weight()?;
                if wb.dims() != wm.dims() {
                    return Err(DiffError::Mismatch(format!("{}: {:?} against {:?}", lin.name, wm.dims(), wb.dims())));
                }
                ((&wm - &wb)?, wb)
            }
            None => match lin.lora_delta()? {
                Some(d) => (d, lin.weight_out_in()?),
                None => {
                    unchanged += 1;
                    continue;
                }
            },
        };
        let d2 = frob2(&delta)?;
        let w2 = frob2(&w_base)?.max(f64::MIN_POSITIVE);
        if d2 <= 1e-20 * w2 {
            unchanged += 1;
            continue;
        }
        let (_out, inn) = delta.dims2()?;
        let omega = gaussianish(inn, p.rank.min(inn).max(1), i as u64 + 1, delta.device())?;
        let y = delta.matmul(&omega)?;
        let share = match orthonormal(&y)? {
            Some(q) => {
                let summary = q.t()?.matmul(&delta)?; // [k, in]
                let share = (frob2(&summary)? / d2).min(1.0);
                let leaf = lin.name.rsplit('.').next().unwrap_or("");
                if let Some(layer) = layer_of(&lin.name) {
                    if INPUT_PROJECTIONS.contains(&leaf) && inn == hidden {
                        summaries.push((layer, lin.name.clone(), summary, w2 / inn as f64));
                    }
                }
                share
            }
            None => 0.0,
        };
        tensors.push(TensorChange { name: lin.name.clone(), layer: layer_of(&lin.name), relative: (d2 / w2).sqrt(), low_rank_share: share });
    }
    let changed = tensors.len();
    let mut layers: Vec<LayerChange> = Vec::new();
    for t in &tensors {
        if let Some(l) = t.layer {
            match layers.iter_mut().find(|x| x.layer == l) {
                Some(x) => x.relative += t.relative * t.relative,
                None => layers.push(LayerChange { layer: l, relative: t.relative * t.relative }),
            }
        }
    }
    for l in layers.iter_mut() {
        let n = tensors.iter().filter(|t| t.layer == Some(l.layer)).count().max(1);
        l.relative = (l.relative / n as f64).sqrt();
    }
    layers.sort_by_key(|l| l.layer);
    tensors.sort_by(|a, b| b.relative.total_cmp(&a.relative));

    // Tokens the first changed layer's input projections respond to: ||delta e|| for the
    // RMS-normalised embedding row e, relative to the projection's typical response.
    let e = embed.to_dtype(DType::F32)?;
    let rms = e.sqr()?.mean_keepdim(1)?.sqrt()?.clamp(1e-8f32, f32::MAX)?;
    let e_hat = e.broadcast_div(&rms)?;
    let first = summaries.iter().map(|s| s.0).min();
    let mut response = vec![0.0f64; vocab];
    for (layer, _name, summary, w_scale) in &summaries {
        if Some(*layer) != first {
            continue;
        }
        let r: Vec<f32> = e_hat.matmul(&summary.t()?)?.sqr()?.sum(1)?.to_vec1::<f32>()?;
        for (acc, x) in response.iter_mut().zip(r) {
            *acc += x as f64 / w_scale;
        }
    }
    let input_response = if first.is_some() { top_tokens(&response, p.report_tokens.max(p.seeds_response), decode) } else { Vec::new() };

    let (embedding_relative, embedding_rows) = match base {
        Some(b) => {
            let eb = b.embedding_matrix().to_dtype(DType::F32)?;
            if eb.dims() != e.dims() {
                return Err(DiffError::Mismatch(format!("embeddings {:?} against {:?}", e.dims(), eb.dims())));
            }
            let d = (&e - &eb)?;
            let rel = (frob2(&d)? / frob2(&eb)?.max(f64::MIN_POSITIVE)).sqrt();
            let mean_norm = eb.sqr()?.sum(1)?.sqrt()?.mean_all()?.to_scalar::<f32>()? as f64;
            let moved: Vec<f64> = d.sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?.into_iter().map(|x| x as f64 / mean_norm.max(1e-12)).collect();
            let any = moved.iter().any(|&m| m > 1e-9);
            (Some(rel), if any { top_tokens(&moved, p.report_tokens.max(p.seeds_embedding), decode) } else { Vec::new() })
        }
        None => (None, Vec::new()),
    };
    let mut seeds: Vec<u32> = Vec::new();
    let mut push = |id: u32| {
        if !seeds.contains(&id) {
            seeds.push(id);
        }
    };
    // Interleave the two rankings so neither crowds the other out.
    let (a, b) = (&input_response[..input_response.len().min(p.seeds_response)], &embedding_rows[..embedding_rows.len().min(p.seeds_embedding)]);
    for i in 0..a.len().max(b.len()) {
        if let Some(t) = a.get(i) {
            push(t.id);
        }
        if let Some(t) = b.get(i) {
            push(t.id);
        }
    }
    let mut input_response = input_response;
    input_response.truncate(p.report_tokens);
    let mut embedding_rows = embedding_rows;
    embedding_rows.truncate(p.report_tokens);
    Ok(WeightDiff {
        against: if base.is_some() { "base model".into() } else { "adapter".into() },
        changed_tensors: changed,
        unchanged_tensors: unchanged,
        tensors,
        layers,
        embedding_relative,
        embedding_rows,
        input_response,
        seeds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use needle_engine::candle_core::Device;

    #[test]
    fn range_finder_captures_a_low_rank_matrix() {
        let d = Device::Cpu;
        let u = gaussianish(40, 3, 7, &d).unwrap();
        let v = gaussianish(3, 30, 9, &d).unwrap();
        let delta = u.matmul(&v).unwrap();
        let y = delta.matmul(&gaussianish(30, 8, 1, &d).unwrap()).unwrap();
        let q = orthonormal(&y).unwrap().unwrap();
        assert_eq!(q.dims()[1], 3, "rank-3 delta gives 3 directions");
        let s = q.t().unwrap().matmul(&delta).unwrap();
        let share = frob2(&s).unwrap() / frob2(&delta).unwrap();
        assert!((share - 1.0).abs() < 1e-4, "share {share}");
    }

    #[test]
    fn robust_z_marks_the_outlier() {
        let mut v = vec![1.0, 1.1, 0.9, 1.05, 0.95, 1.0];
        v.push(10.0);
        let z = robust_z(&v);
        assert!(z[6] > 10.0 && z[0].abs() < 2.0);
    }

    #[test]
    fn layer_is_the_first_number_in_the_path() {
        assert_eq!(layer_of("model.layers.3.self_attn.q_proj"), Some(3));
        assert_eq!(layer_of("transformer.h.0.attn.c_attn"), Some(0));
        assert_eq!(layer_of("lm_head"), None);
    }
}
