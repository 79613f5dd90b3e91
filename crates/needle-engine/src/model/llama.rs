//! Llama-style blocks: Llama, Mistral, Qwen2 (q/k/v bias), Qwen3 (q/k norm) and Phi-3 (fused
//! `qkv_proj` and `gate_up_proj`). Pre-norm RMSNorm, gated MLP, RoPE.

use super::layers::{Attention, Block, Linear, Mlp, MlpProj, Norm, QkvProj};
use super::Parts;
use crate::config::{Family, ModelConfig};
use candle_core::Result;
use candle_nn::VarBuilder;

pub(super) fn attention(vb: &VarBuilder, c: &ModelConfig, i: usize, p: &str) -> Result<Attention> {
    let (h, nh, nkv, hd) = (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim);
    let qkv = if c.family == Family::Phi3 {
        QkvProj::Concat(Linear::load(vb, &format!("{p}.self_attn.qkv_proj"), h, (nh + 2 * nkv) * hd, c.qkv_bias, false)?)
    } else {
        QkvProj::Separate {
            q: Linear::load(vb, &format!("{p}.self_attn.q_proj"), h, nh * hd, c.qkv_bias, false)?,
            k: Linear::load(vb, &format!("{p}.self_attn.k_proj"), h, nkv * hd, c.qkv_bias, false)?,
            v: Linear::load(vb, &format!("{p}.self_attn.v_proj"), h, nkv * hd, c.qkv_bias, false)?,
        }
    };
    let (q_norm, k_norm) = if c.qk_norm {
        (
            Some(Norm::load(vb, &format!("{p}.self_attn.q_norm"), hd, c.norm, c.norm_eps)?),
            Some(Norm::load(vb, &format!("{p}.self_attn.k_norm"), hd, c.norm, c.norm_eps)?),
        )
    } else {
        (None, None)
    };
    let window = c.layer_window.get(i).copied().flatten();
    Ok(Attention {
        qkv,
        o: Linear::load(vb, &format!("{p}.self_attn.o_proj"), nh * hd, h, c.o_bias, false)?,
        q_norm,
        k_norm,
        num_heads: nh,
        num_kv_heads: nkv,
        head_dim: hd,
        scale: c.attn_scale,
        softcap: c.attn_softcap,
        rope: Some(if window.is_some() { 1 } else { 0 }),
        window,
    })
}

pub(super) fn mlp(vb: &VarBuilder, c: &ModelConfig, p: &str) -> Result<Mlp> {
    let (h, im) = (c.hidden_size, c.intermediate_size);
    let proj = if c.family == Family::Phi3 {
        MlpProj::GatedFused(Linear::load(vb, &format!("{p}.mlp.gate_up_proj"), h, 2 * im, c.mlp_bias, false)?)
    } else {
        MlpProj::Gated {
            gate: Linear::load(vb, &format!("{p}.mlp.gate_proj"), h, im, c.mlp_bias, false)?,
            up: Linear::load(vb, &format!("{p}.mlp.up_proj"), h, im, c.mlp_bias, false)?,
        }
    };
    Ok(Mlp { proj, down: Linear::load(vb, &format!("{p}.mlp.down_proj"), im, h, c.mlp_bias, false)?, act: c.activation })
}

/// `model.embed_tokens`, `model.layers.N.*`, `model.norm`, `lm_head` (or tied). Gemma reuses
/// this with its sandwich norms.
pub(super) fn build(vb: &VarBuilder, c: &ModelConfig) -> Result<Parts> {
    let embed = super::embedding(vb, "model.embed_tokens.weight", c)?;
    let mut blocks = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let p = format!("model.layers.{i}");
        let norm = |name: &str| Norm::load(vb, &format!("{p}.{name}"), c.hidden_size, c.norm, c.norm_eps);
        let (post_attn_norm, pre_mlp_norm, post_mlp_norm) = if c.sandwich_norm {
            (Some(norm("post_attention_layernorm")?), norm("pre_feedforward_layernorm")?, Some(norm("post_feedforward_layernorm")?))
        } else {
            (None, norm("post_attention_layernorm")?, None)
        };
        blocks.push(Block {
            input_norm: norm("input_layernorm")?,
            attn: attention(vb, c, i, &p)?,
            post_attn_norm,
            pre_mlp_norm,
            post_mlp_norm,
            mlp: mlp(vb, c, &p)?,
            parallel: false,
        });
    }
    let final_norm = Norm::load(vb, "model.norm", c.hidden_size, c.norm, c.norm_eps)?;
    let lm_head = super::lm_head(vb, "lm_head", &embed, c)?;
    Ok(Parts { embed, pos_embed: None, blocks, final_norm, lm_head })
}
