//! Gemma 1/2/3 blocks: Llama naming with (1 + w) RMSNorm, embeddings scaled by sqrt(hidden),
//! and for Gemma 2/3 sandwich norms (post-attention, pre/post-feedforward), attention and
//! final-logit softcapping, local (sliding) and global layers with their own RoPE bases, and
//! `query_pre_attn_scalar`. Gemma 3 adds q/k norms. All of that is carried by the config, so
//! the weights load exactly like Llama's.

use super::Parts;
use crate::config::ModelConfig;
use candle_core::Result;
use candle_nn::VarBuilder;

pub(super) fn build(vb: &VarBuilder, c: &ModelConfig) -> Result<Parts> {
    super::llama::build(vb, c)
}
