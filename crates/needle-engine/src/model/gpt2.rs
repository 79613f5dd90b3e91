//! GPT-2: learned absolute positions, LayerNorm, Conv1D weights stored [in, out], a plain MLP
//! with gelu_new, fused `c_attn` producing [q | k | v], tied `lm_head`.

use super::layers::{Attention, Block, Linear, Mlp, MlpProj, Norm, QkvProj};
use super::Parts;
use crate::config::ModelConfig;
use candle_core::Result;
use candle_nn::init::Init;
use candle_nn::VarBuilder;

pub(super) fn build(vb: &VarBuilder, c: &ModelConfig) -> Result<Parts> {
    // Original OpenAI checkpoints have no `transformer.` prefix.
    let root = if vb.contains_tensor("wte.weight") && !vb.contains_tensor("transformer.wte.weight") { "" } else { "transformer." };
    let h = c.hidden_size;
    let embed = super::embedding(vb, &format!("{root}wte.weight"), c)?;
    let pos = vb.get_with_hints((c.max_position_embeddings, h), &format!("{root}wpe.weight"), Init::Randn { mean: 0.0, stdev: 0.01 })?;
    let mut blocks = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let p = format!("{root}h.{i}");
        let norm = |name: &str| Norm::load(vb, &format!("{p}.{name}"), h, c.norm, c.norm_eps);
        let scale = if c.scale_by_inverse_layer { c.attn_scale / (i as f64 + 1.0) } else { c.attn_scale };
        blocks.push(Block {
            input_norm: norm("ln_1")?,
            attn: Attention {
                qkv: QkvProj::Concat(Linear::load(vb, &format!("{p}.attn.c_attn"), h, 3 * h, true, true)?),
                o: Linear::load(vb, &format!("{p}.attn.c_proj"), h, h, true, true)?,
                q_norm: None,
                k_norm: None,
                num_heads: c.num_heads,
                num_kv_heads: c.num_heads,
                head_dim: c.head_dim,
                scale,
                softcap: None,
                rope: None,
                window: None,
            },
            post_attn_norm: None,
            pre_mlp_norm: norm("ln_2")?,
            post_mlp_norm: None,
            mlp: Mlp {
                proj: MlpProj::Plain(Linear::load(vb, &format!("{p}.mlp.c_fc"), h, c.intermediate_size, true, true)?),
                down: Linear::load(vb, &format!("{p}.mlp.c_proj"), c.intermediate_size, h, true, true)?,
                act: c.activation,
            },
            parallel: false,
        });
    }
    let final_norm = Norm::load(vb, &format!("{root}ln_f"), h, c.norm, c.norm_eps)?;
    let lm_head = super::lm_head(vb, "lm_head", &embed, c)?;
    Ok(Parts { embed, pos_embed: Some(pos), blocks, final_norm, lm_head })
}
