//! The building blocks every family shares: linear layers (optionally with an unmerged LoRA
//! delta), norms, rotary embeddings, attention and MLPs.
//!
//! Every op has a differentiable composite form; with `fast` set, inference uses candle's fused
//! kernels (softmax, RMSNorm, LayerNorm), which have no backward pass.

use crate::config::{Activation, NormKind};
use candle_core::{Result, Tensor, D};
use candle_nn::init::Init;
use candle_nn::VarBuilder;

/// Standard deviation of freshly initialised weights (transformers' `initializer_range`).
pub const INIT_STD: f64 = 0.02;

/// An unmerged LoRA delta: y += scale * (x A^T) B^T.
#[derive(Debug, Clone)]
pub struct LoraDelta {
    /// [r, in]
    pub a: Tensor,
    /// [out, r]
    pub b: Tensor,
    pub scale: f64,
}

/// A linear layer under its Hugging Face module path (e.g. `model.layers.0.self_attn.q_proj`).
#[derive(Debug, Clone)]
pub struct Linear {
    pub name: String,
    /// [out, in], or [in, out] for GPT-2's Conv1D (`conv1d`).
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub conv1d: bool,
    pub lora: Option<LoraDelta>,
}

impl Linear {
    pub fn load(vb: &VarBuilder, name: &str, in_dim: usize, out_dim: usize, bias: bool, conv1d: bool) -> Result<Self> {
        let shape = if conv1d { (in_dim, out_dim) } else { (out_dim, in_dim) };
        let weight = vb.get_with_hints(shape, &format!("{name}.weight"), Init::Randn { mean: 0.0, stdev: INIT_STD })?;
        let bias = if bias { Some(vb.get_with_hints(out_dim, &format!("{name}.bias"), Init::Const(0.0))?) } else { None };
        Ok(Self { name: name.to_string(), weight, bias, conv1d, lora: None })
    }

    /// The weight as `[out, in]` whatever the storage (Conv1D is stored transposed).
    pub fn weight_out_in(&self) -> Result<Tensor> {
        if self.conv1d {
            self.weight.t()?.contiguous()
        } else {
            Ok(self.weight.clone())
        }
    }

    /// The unmerged LoRA delta as `[out, in]` (`scale * B A`), if any.
    pub fn lora_delta(&self) -> Result<Option<Tensor>> {
        match &self.lora {
            Some(l) => Ok(Some(l.b.matmul(&l.a)?.affine(l.scale, 0.0)?)),
            None => Ok(None),
        }
    }

    /// The weight the layer computes with, `[out, in]`: stored weight plus any unmerged delta.
    pub fn effective_weight(&self) -> Result<Tensor> {
        let w = self.weight_out_in()?;
        match self.lora_delta()? {
            Some(d) => w + d,
            None => Ok(w),
        }
    }

    pub fn in_dim(&self) -> Result<usize> {
        self.weight.dim(if self.conv1d { 0 } else { 1 })
    }

    pub fn out_dim(&self) -> Result<usize> {
        self.weight.dim(if self.conv1d { 1 } else { 0 })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().unwrap_or(&0);
        let rows = x.elem_count() / in_dim.max(1);
        let x2 = x.reshape((rows, in_dim))?;
        let mut y = if self.conv1d { x2.matmul(&self.weight)? } else { x2.matmul(&self.weight.t()?)? };
        if let Some(l) = &self.lora {
            let d = x2.matmul(&l.a.t()?)?.matmul(&l.b.t()?)?;
            y = (y + d.affine(l.scale, 0.0)?)?;
        }
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = y.dim(1)?;
        }
        y.reshape(out_dims)
    }
}

/// RMSNorm, Gemma's (1 + w) RMSNorm, or LayerNorm.
#[derive(Debug, Clone)]
pub struct Norm {
    pub kind: NormKind,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub eps: f64,
}

impl Norm {
    pub fn load(vb: &VarBuilder, name: &str, dim: usize, kind: NormKind, eps: f64) -> Result<Self> {
        let init = if kind == NormKind::RmsPlusOne { Init::Const(0.0) } else { Init::Const(1.0) };
        let weight = vb.get_with_hints(dim, &format!("{name}.weight"), init)?;
        let bias = if kind == NormKind::Layer { Some(vb.get_with_hints(dim, &format!("{name}.bias"), Init::Const(0.0))?) } else { None };
        Ok(Self { kind, weight, bias, eps })
    }

    pub fn forward(&self, x: &Tensor, fast: bool) -> Result<Tensor> {
        match self.kind {
            NormKind::Rms | NormKind::RmsPlusOne => {
                let w = if self.kind == NormKind::RmsPlusOne { self.weight.affine(1.0, 1.0)? } else { self.weight.clone() };
                if fast && x.is_contiguous() {
                    candle_nn::ops::rms_norm(x, &w, self.eps as f32)
                } else {
                    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
                    let inv = (ms + self.eps)?.sqrt()?.recip()?;
                    x.broadcast_mul(&inv)?.broadcast_mul(&w)
                }
            }
            NormKind::Layer => {
                let b = match &self.bias {
                    Some(b) => b.clone(),
                    None => self.weight.zeros_like()?,
                };
                if fast && x.is_contiguous() {
                    candle_nn::ops::layer_norm(x, &self.weight, &b, self.eps as f32)
                } else {
                    let mean = x.mean_keepdim(D::Minus1)?;
                    let xc = x.broadcast_sub(&mean)?;
                    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
                    let inv = (var + self.eps)?.sqrt()?.recip()?;
                    xc.broadcast_mul(&inv)?.broadcast_mul(&self.weight)?.broadcast_add(&b)
                }
            }
        }
    }
}

pub fn activation(x: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::Silu => x.silu(),
        Activation::GeluTanh => gelu_tanh(x),
        Activation::Gelu => x.gelu_erf(),
        Activation::Relu => x.relu(),
    }
}

/// GELU with the tanh approximation (`gelu_new`), computed as `x * sigmoid(2u)`, which equals
/// `0.5 x (1 + tanh u)` with `u = sqrt(2/pi) (x + 0.044715 x^3)`: one `exp` per element where
/// candle's `gelu` calls libm's `tanhf`, which took about a third of a GPT-2 scan's time on
/// the CPU (perf: `__expm1f` 24%, `__tanhf` 11% of `gpt2-vuln-env`'s scan). Differentiable
/// through candle's ops, like the rest of the forward pass.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    let k = 2.0 * (2.0 / std::f64::consts::PI).sqrt();
    let u = (x * x.sqr()?.affine(0.044715 * k, k)?)?;
    x * candle_nn::ops::sigmoid(&u)?
}

pub fn softmax_last(x: &Tensor, fast: bool) -> Result<Tensor> {
    if fast {
        candle_nn::ops::softmax_last_dim(x)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

/// HF-style rotary embedding (rotate_half) on the first `cos.dim(-1)` dims of each head.
/// x: [b, h, t, d]; cos/sin: [b, 1, t, rot].
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(3)?;
    let rot = cos.dim(3)?;
    let xr = if rot == d { x.clone() } else { x.narrow(3, 0, rot)? };
    let half = rot / 2;
    let x1 = xr.narrow(3, 0, half)?;
    let x2 = xr.narrow(3, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
    let out = (xr.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?;
    if rot == d {
        Ok(out)
    } else {
        Tensor::cat(&[&out, &x.narrow(3, rot, d - rot)?], 3)
    }
}

/// How q, k and v come out of the input projection(s).
#[derive(Debug, Clone)]
pub enum QkvProj {
    Separate { q: Linear, k: Linear, v: Linear },
    /// One projection whose output is [q | k | v] (Phi-3 `qkv_proj`, GPT-2 `c_attn`).
    Concat(Linear),
    /// GPT-NeoX `query_key_value`: per head [q_h | k_h | v_h].
    PerHead(Linear),
}

#[derive(Debug, Clone)]
pub struct Attention {
    pub qkv: QkvProj,
    pub o: Linear,
    pub q_norm: Option<Norm>,
    pub k_norm: Option<Norm>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f64,
    pub softcap: Option<f64>,
    /// Index of the RoPE table (0 global, 1 local) or None for learned positions.
    pub rope: Option<usize>,
    /// Sliding window, if any.
    pub window: Option<usize>,
}

/// Per-forward data shared by all layers.
pub struct Ctx<'a> {
    /// (cos, sin) per RoPE table, each [b, 1, t, rot].
    pub rope: &'a [Option<(Tensor, Tensor)>; 2],
    /// Additive masks [b, 1, t, s]: index 0 full causal, 1 sliding (when any layer slides).
    pub mask_full: &'a Tensor,
    pub mask_window: Option<&'a Tensor>,
    pub fast: bool,
}

impl Attention {
    /// x: [b, t, hidden]. `past`: cached (k, v) [b, kv, s_past, d], replaced by the extended
    /// cache. Returns the output and, if asked, the attention probabilities [b, h, t, s].
    pub fn forward(&self, x: &Tensor, ctx: &Ctx, past: Option<&mut Option<(Tensor, Tensor)>>, want_probs: bool) -> Result<(Tensor, Option<Tensor>)> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let (q, k, v) = match &self.qkv {
            QkvProj::Separate { q, k, v } => (q.forward(x)?, k.forward(x)?, v.forward(x)?),
            QkvProj::Concat(l) => {
                let y = l.forward(x)?;
                (y.narrow(2, 0, nh * hd)?, y.narrow(2, nh * hd, nkv * hd)?, y.narrow(2, (nh + nkv) * hd, nkv * hd)?)
            }
            QkvProj::PerHead(l) => {
                let y = l.forward(x)?.reshape((b, t, nh, 3 * hd))?;
                (y.narrow(3, 0, hd)?, y.narrow(3, hd, hd)?, y.narrow(3, 2 * hd, hd)?)
            }
        };
        let q = q.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()?;
        let k = k.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let q = match &self.q_norm {
            Some(n) => n.forward(&q, ctx.fast)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.forward(&k, ctx.fast)?,
            None => k,
        };
        let (q, k) = match self.rope.and_then(|i| ctx.rope.get(i)).and_then(|r| r.as_ref()) {
            Some((cos, sin)) => (apply_rope(&q, cos, sin)?, apply_rope(&k, cos, sin)?),
            None => (q, k),
        };
        let (k, v) = match past {
            Some(slot) => {
                let (k, v) = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                    None => (k, v),
                };
                *slot = Some((k.clone(), v.clone()));
                (k, v)
            }
            None => (k, v),
        };
        let s = k.dim(2)?;
        let (k, v) = if nkv == nh {
            (k, v)
        } else {
            let rep = nh / nkv;
            let k = k.unsqueeze(2)?.broadcast_as((b, nkv, rep, s, hd))?.reshape((b, nh, s, hd))?;
            let v = v.unsqueeze(2)?.broadcast_as((b, nkv, rep, s, hd))?.reshape((b, nh, s, hd))?;
            (k, v)
        };
        // cat/narrow/index_select can leave odd strides that matmul rejects.
        let (q, k) = (q.contiguous()?, k.contiguous()?);
        let mut scores = q.matmul(&k.t()?)?.affine(self.scale, 0.0)?;
        if let Some(cap) = self.softcap {
            scores = (scores / cap)?.tanh()?.affine(cap, 0.0)?;
        }
        let mask = match (self.window, ctx.mask_window) {
            (Some(_), Some(m)) => m,
            _ => ctx.mask_full,
        };
        let scores = scores.broadcast_add(mask)?;
        let probs = softmax_last(&scores, ctx.fast)?;
        let out = probs.matmul(&v.contiguous()?)?;
        let out = out.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        let out = self.o.forward(&out)?;
        Ok((out, want_probs.then_some(probs)))
    }
}

#[derive(Debug, Clone)]
pub enum MlpProj {
    /// act(gate(x)) * up(x)
    Gated { gate: Linear, up: Linear },
    /// Phi-3 `gate_up_proj`: output [gate | up].
    GatedFused(Linear),
    /// act(fc(x))
    Plain(Linear),
}

#[derive(Debug, Clone)]
pub struct Mlp {
    pub proj: MlpProj,
    pub down: Linear,
    pub act: Activation,
}

impl Mlp {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = match &self.proj {
            MlpProj::Gated { gate, up } => (activation(&gate.forward(x)?, self.act)? * up.forward(x)?)?,
            MlpProj::GatedFused(l) => {
                let y = l.forward(x)?;
                let i = y.dim(D::Minus1)? / 2;
                (activation(&y.narrow(D::Minus1, 0, i)?, self.act)? * y.narrow(D::Minus1, i, i)?)?
            }
            MlpProj::Plain(l) => activation(&l.forward(x)?, self.act)?,
        };
        self.down.forward(&h)
    }
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Block {
    pub input_norm: Norm,
    pub attn: Attention,
    /// Gemma 2/3: norm of the attention output before the residual add.
    pub post_attn_norm: Option<Norm>,
    /// Norm before the MLP (Llama `post_attention_layernorm`, Gemma 2 `pre_feedforward_layernorm`).
    pub pre_mlp_norm: Norm,
    /// Gemma 2/3: norm of the MLP output before the residual add.
    pub post_mlp_norm: Option<Norm>,
    pub mlp: Mlp,
    pub parallel: bool,
}

impl Block {
    pub fn forward(&self, x: &Tensor, ctx: &Ctx, past: Option<&mut Option<(Tensor, Tensor)>>, want_probs: bool) -> Result<(Tensor, Option<Tensor>)> {
        let (a, probs) = self.attn.forward(&self.input_norm.forward(x, ctx.fast)?, ctx, past, want_probs)?;
        if self.parallel {
            let m = self.mlp.forward(&self.pre_mlp_norm.forward(x, ctx.fast)?)?;
            return Ok(((x + a)? + m)?).map(|y| (y, probs));
        }
        let a = match &self.post_attn_norm {
            Some(n) => n.forward(&a, ctx.fast)?,
            None => a,
        };
        let h = (x + a)?;
        let m = self.mlp.forward(&self.pre_mlp_norm.forward(&h, ctx.fast)?)?;
        let m = match &self.post_mlp_norm {
            Some(n) => n.forward(&m, ctx.fast)?,
            None => m,
        };
        Ok(((h + m)?, probs))
    }

    /// Every linear layer of the block, read-only (same order as [`Block::linears_mut`]).
    pub fn linears(&self) -> Vec<&Linear> {
        let mut v: Vec<&Linear> = Vec::new();
        match &self.attn.qkv {
            QkvProj::Separate { q, k, v: vv } => {
                v.push(q);
                v.push(k);
                v.push(vv);
            }
            QkvProj::Concat(l) | QkvProj::PerHead(l) => v.push(l),
        }
        v.push(&self.attn.o);
        match &self.mlp.proj {
            MlpProj::Gated { gate, up } => {
                v.push(gate);
                v.push(up);
            }
            MlpProj::GatedFused(l) | MlpProj::Plain(l) => v.push(l),
        }
        v.push(&self.mlp.down);
        v
    }

    /// Every linear layer of the block.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v: Vec<&mut Linear> = Vec::new();
        match &mut self.attn.qkv {
            QkvProj::Separate { q, k, v: vv } => {
                v.push(q);
                v.push(k);
                v.push(vv);
            }
            QkvProj::Concat(l) | QkvProj::PerHead(l) => v.push(l),
        }
        v.push(&mut self.attn.o);
        match &mut self.mlp.proj {
            MlpProj::Gated { gate, up } => {
                v.push(gate);
                v.push(up);
            }
            MlpProj::GatedFused(l) | MlpProj::Plain(l) => v.push(l),
        }
        v.push(&mut self.mlp.down);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn fused_and_composite_norms_agree() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 8), &dev).unwrap();
        for kind in [NormKind::Rms, NormKind::RmsPlusOne, NormKind::Layer] {
            let n = Norm {
                kind,
                weight: Tensor::randn(0f32, 1.0, 8, &dev).unwrap(),
                bias: (kind == NormKind::Layer).then(|| Tensor::randn(0f32, 1.0, 8, &dev).unwrap()),
                eps: 1e-6,
            };
            let a = n.forward(&x, true).unwrap();
            let b = n.forward(&x, false).unwrap();
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "{kind:?}: {diff}");
        }
    }

    #[test]
    fn gelu_tanh_is_candles_gelu_and_differentiable() {
        let dev = Device::Cpu;
        let v: Vec<f32> = (-400..=400).map(|i| i as f32 / 40.0).collect();
        let x = Tensor::new(v.as_slice(), &dev).unwrap();
        let diff = (gelu_tanh(&x).unwrap() - x.gelu().unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{diff}");
        // The gradient matches candle's gelu's.
        let var = candle_core::Var::from_tensor(&x).unwrap();
        let ours = gelu_tanh(var.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let theirs = var.as_tensor().gelu().unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (ours.get(var.as_tensor()).unwrap(), theirs.get(var.as_tensor()).unwrap());
        let gdiff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(gdiff < 1e-4, "{gdiff}");
    }

    #[test]
    fn partial_rope_leaves_the_tail_alone() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 2, 3, 8), &dev).unwrap();
        let cos = Tensor::randn(0f32, 1.0, (1, 1, 3, 4), &dev).unwrap();
        let sin = Tensor::randn(0f32, 1.0, (1, 1, 3, 4), &dev).unwrap();
        let y = apply_rope(&x, &cos, &sin).unwrap();
        let tail_x: Vec<f32> = x.narrow(3, 4, 4).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let tail_y: Vec<f32> = y.narrow(3, 4, 4).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(tail_x, tail_y);
    }
}
