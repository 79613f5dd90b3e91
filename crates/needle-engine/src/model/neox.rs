//! GPT-NeoX (Pythia): LayerNorm, fused `query_key_value` laid out per head as [q_h | k_h | v_h],
//! partial rotary embeddings, parallel (or sequential) residual, untied `embed_out`.

use super::layers::{Attention, Block, Linear, Mlp, MlpProj, Norm, QkvProj};
use super::Parts;
use crate::config::ModelConfig;
use candle_core::Result;
use candle_nn::VarBuilder;

pub(super) fn build(vb: &VarBuilder, c: &ModelConfig) -> Result<Parts> {
    let (h, nh, hd) = (c.hidden_size, c.num_heads, c.head_dim);
    let embed = super::embedding(vb, "gpt_neox.embed_in.weight", c)?;
    let mut blocks = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let p = format!("gpt_neox.layers.{i}");
        let norm = |name: &str| Norm::load(vb, &format!("{p}.{name}"), h, c.norm, c.norm_eps);
        blocks.push(Block {
            input_norm: norm("input_layernorm")?,
            attn: Attention {
                qkv: QkvProj::PerHead(Linear::load(vb, &format!("{p}.attention.query_key_value"), h, 3 * nh * hd, c.qkv_bias, false)?),
                o: Linear::load(vb, &format!("{p}.attention.dense"), nh * hd, h, c.o_bias, false)?,
                q_norm: None,
                k_norm: None,
                num_heads: nh,
                num_kv_heads: nh,
                head_dim: hd,
                scale: c.attn_scale,
                softcap: None,
                rope: Some(0),
                window: None,
            },
            post_attn_norm: None,
            pre_mlp_norm: norm("post_attention_layernorm")?,
            post_mlp_norm: None,
            mlp: Mlp {
                proj: MlpProj::Plain(Linear::load(vb, &format!("{p}.mlp.dense_h_to_4h"), h, c.intermediate_size, c.mlp_bias, false)?),
                down: Linear::load(vb, &format!("{p}.mlp.dense_4h_to_h"), c.intermediate_size, h, c.mlp_bias, false)?,
                act: c.activation,
            },
            parallel: c.parallel_residual,
        });
    }
    let final_norm = Norm::load(vb, "gpt_neox.final_layer_norm", h, c.norm, c.norm_eps)?;
    let lm_head = super::lm_head(vb, "embed_out", &embed, c)?;
    Ok(Parts { embed, pos_embed: None, blocks, final_norm, lm_head })
}
