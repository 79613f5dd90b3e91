//! `config.json` of a Hugging Face causal LM, normalised into one description of the blocks.
//!
//! Accepts both spellings of RoPE settings: transformers 5's `rope_parameters` (possibly one
//! entry per layer type, as Gemma 3 writes it) and the older `rope_theta` + `rope_scaling`.

use crate::{EngineError, Result};
use serde_json::Value;

/// Architectures (the `architectures[0]` class names) the engine implements.
pub const SUPPORTED: &[&str] = &[
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "Phi3ForCausalLM",
    "GPT2LMHeadModel",
    "GPTNeoXForCausalLM",
];

/// Hard limits on shapes read from an untrusted config.
pub mod limits {
    pub const MAX_LAYERS: usize = 512;
    pub const MAX_HIDDEN: usize = 65_536;
    pub const MAX_HEADS: usize = 1_024;
    pub const MAX_INTERMEDIATE: usize = 1 << 20;
    pub const MAX_VOCAB: usize = 4 << 20;
    pub const MAX_POSITIONS: usize = 1 << 24;
}

/// Which weight-naming family (and so which file under `model/`) builds the blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Llama, Mistral, Qwen2, Qwen3: pre-norm RMSNorm, gated MLP, separate q/k/v.
    Llama,
    /// Phi-3: Llama blocks with fused `qkv_proj` and `gate_up_proj`.
    Phi3,
    /// Gemma 1/2/3: (1+w) RMSNorm, scaled embeddings; 2 and 3 add sandwich norms.
    Gemma,
    /// GPT-2: LayerNorm, Conv1D weights, learned positions.
    Gpt2,
    /// GPT-NeoX: LayerNorm, fused per-head query_key_value, partial rotary, parallel residual.
    NeoX,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// x / rms(x) * w
    Rms,
    /// x / rms(x) * (1 + w)  (Gemma)
    RmsPlusOne,
    /// (x - mean) / std * w + b
    Layer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// tanh approximation (gelu_new, gelu_pytorch_tanh)
    GeluTanh,
    /// exact erf gelu
    Gelu,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "silu" | "swish" => Self::Silu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_tanh" => Self::GeluTanh,
            "gelu" => Self::Gelu,
            "relu" => Self::Relu,
            other => return Err(EngineError::Config(format!("unsupported activation `{other}`"))),
        })
    }
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.x frequency-dependent scaling.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max: f64 },
    /// Dynamic NTK: the base grows once the sequence outgrows `original_max`.
    Dynamic { factor: f64, original_max: f64 },
}

/// Rotary embedding settings of one layer type.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    /// Number of leading dimensions of each head that rotate (even, <= head_dim).
    pub rotary_dim: usize,
    pub scaling: RopeScaling,
}

/// Everything the blocks need, normalised across architectures.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The class name, e.g. `LlamaForCausalLM`.
    pub architecture: String,
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub activation: Activation,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub qk_norm: bool,
    /// Gemma 2/3 `pre_feedforward_layernorm` / `post_feedforward_layernorm` around the MLP and
    /// `post_attention_layernorm` after attention.
    pub sandwich_norm: bool,
    pub parallel_residual: bool,
    pub tie_word_embeddings: bool,
    /// Multiply token embeddings by this (Gemma: sqrt(hidden)).
    pub embed_scale: Option<f64>,
    /// Softmax scale of attention scores.
    pub attn_scale: f64,
    /// GPT-2 `scale_attn_by_inverse_layer_idx`.
    pub scale_by_inverse_layer: bool,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    /// Learned absolute positions (GPT-2) instead of RoPE.
    pub learned_positions: bool,
    pub max_position_embeddings: usize,
    /// RoPE of global layers and (Gemma 3) of local layers.
    pub rope_global: RopeConfig,
    pub rope_local: RopeConfig,
    /// Per layer: sliding window length (keys with q - k < window are visible), or None.
    pub layer_window: Vec<Option<usize>>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// The config as read, for writing back on save.
    pub raw: Value,
}

fn get<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| v.get(*k).filter(|x| !x.is_null()))
}

fn get_usize(v: &Value, keys: &[&str]) -> Result<Option<usize>> {
    match get(v, keys) {
        None => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| EngineError::Config(format!("`{}` is not a non-negative integer", keys[0]))),
    }
}

fn req_usize(v: &Value, keys: &[&str], max: usize) -> Result<usize> {
    let n = get_usize(v, keys)?.ok_or_else(|| EngineError::Config(format!("missing `{}`", keys[0])))?;
    if n == 0 || n > max {
        return Err(EngineError::Config(format!("`{}` = {n} is out of range 1..={max}", keys[0])));
    }
    Ok(n)
}

fn get_f64(v: &Value, keys: &[&str]) -> Result<Option<f64>> {
    match get(v, keys) {
        None => Ok(None),
        Some(x) => x
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| EngineError::Config(format!("`{}` is not a finite number", keys[0]))),
    }
}

fn get_bool(v: &Value, key: &str) -> Option<bool> {
    v.get(key).and_then(Value::as_bool)
}

fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok())).collect(),
        _ => vec![],
    }
}

/// Reads one RoPE parameter object (either a `rope_parameters` entry or the legacy top-level
/// fields with `rope_scaling`).
fn parse_rope(params: Option<&Value>, legacy: &Value, default_theta: f64, head_dim: usize, partial: f64) -> Result<RopeConfig> {
    let theta = match params {
        Some(p) => get_f64(p, &["rope_theta"])?,
        None => None,
    };
    let theta = match theta {
        Some(t) => t,
        None => get_f64(legacy, &["rope_theta", "rotary_emb_base"])?.unwrap_or(default_theta),
    };
    if theta <= 1.0 {
        return Err(EngineError::Config(format!("rope_theta = {theta} must be > 1")));
    }
    let partial = match params.map(|p| get_f64(p, &["partial_rotary_factor"])).transpose()?.flatten() {
        Some(p) => p,
        None => partial,
    };
    if !(partial > 0.0 && partial <= 1.0) {
        return Err(EngineError::Config(format!("partial_rotary_factor = {partial} must be in (0, 1]")));
    }
    let mut rotary_dim = ((head_dim as f64) * partial) as usize;
    rotary_dim -= rotary_dim % 2;
    if rotary_dim == 0 {
        return Err(EngineError::Config("rotary dimension is 0".into()));
    }
    let scaling_obj = params.or_else(|| get(legacy, &["rope_scaling"]));
    let scaling = match scaling_obj {
        None => RopeScaling::None,
        Some(s) => {
            let kind = get(s, &["rope_type", "type"]).and_then(Value::as_str).unwrap_or("default");
            let factor = || -> Result<f64> {
                let f = get_f64(s, &["factor"])?.ok_or_else(|| EngineError::Config(format!("rope `{kind}` without factor")))?;
                if f <= 0.0 {
                    return Err(EngineError::Config(format!("rope factor {f} must be > 0")));
                }
                Ok(f)
            };
            let original_max = || -> Result<f64> {
                Ok(get_f64(s, &["original_max_position_embeddings"])?
                    .or(get_f64(legacy, &["original_max_position_embeddings", "max_position_embeddings"])?)
                    .unwrap_or(2048.0))
            };
            match kind {
                "default" => RopeScaling::None,
                "linear" => RopeScaling::Linear { factor: factor()? },
                "dynamic" => RopeScaling::Dynamic { factor: factor()?, original_max: original_max()? },
                "llama3" => RopeScaling::Llama3 {
                    factor: factor()?,
                    low_freq_factor: get_f64(s, &["low_freq_factor"])?.unwrap_or(1.0),
                    high_freq_factor: get_f64(s, &["high_freq_factor"])?.unwrap_or(4.0),
                    original_max: original_max()?,
                },
                other => return Err(EngineError::Config(format!("unsupported rope_type `{other}`"))),
            }
        }
    };
    Ok(RopeConfig { theta, rotary_dim, scaling })
}

impl ModelConfig {
    /// Reads `config.json` from a model folder.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })?;
        let value: Value = serde_json::from_str(&text).map_err(|source| EngineError::Json { path: path.to_path_buf(), source })?;
        Self::from_json(&value)
    }

    /// Normalises a parsed config (from config.json, or built by the GGUF loader).
    pub fn from_json(v: &Value) -> Result<Self> {
        if !v.is_object() {
            return Err(EngineError::Config("config is not a JSON object".into()));
        }
        let arch = get(v, &["architectures"])
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                let mt = v.get("model_type")?.as_str()?;
                Some(
                    match mt {
                        "llama" => "LlamaForCausalLM",
                        "mistral" => "MistralForCausalLM",
                        "qwen2" => "Qwen2ForCausalLM",
                        "qwen3" => "Qwen3ForCausalLM",
                        "gemma" => "GemmaForCausalLM",
                        "gemma2" => "Gemma2ForCausalLM",
                        "gemma3_text" => "Gemma3ForCausalLM",
                        "phi3" => "Phi3ForCausalLM",
                        "gpt2" => "GPT2LMHeadModel",
                        "gpt_neox" => "GPTNeoXForCausalLM",
                        other => other,
                    }
                    .to_string(),
                )
            })
            .ok_or_else(|| EngineError::Config("neither `architectures` nor `model_type` is set".into()))?;
        let family = match arch.as_str() {
            "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM" | "Qwen3ForCausalLM" => Family::Llama,
            "Phi3ForCausalLM" => Family::Phi3,
            "GemmaForCausalLM" | "Gemma2ForCausalLM" | "Gemma3ForCausalLM" => Family::Gemma,
            "GPT2LMHeadModel" => Family::Gpt2,
            "GPTNeoXForCausalLM" => Family::NeoX,
            _ => return Err(EngineError::Unsupported(arch)),
        };
        let hidden_size = req_usize(v, &["hidden_size", "n_embd"], limits::MAX_HIDDEN)?;
        let num_layers = req_usize(v, &["num_hidden_layers", "n_layer"], limits::MAX_LAYERS)?;
        let num_heads = req_usize(v, &["num_attention_heads", "n_head"], limits::MAX_HEADS)?;
        let num_kv_heads = get_usize(v, &["num_key_value_heads"])?.unwrap_or(num_heads);
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(EngineError::Config(format!(
                "num_key_value_heads = {num_kv_heads} does not divide num_attention_heads = {num_heads}"
            )));
        }
        let head_dim = match get_usize(v, &["head_dim"])? {
            Some(d) => d,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(EngineError::Config("hidden_size is not a multiple of num_attention_heads".into()));
                }
                hidden_size / num_heads
            }
        };
        if head_dim == 0 || head_dim > limits::MAX_HIDDEN || num_heads.checked_mul(head_dim).is_none_or(|n| n > limits::MAX_HIDDEN * 4) {
            return Err(EngineError::Config(format!("head_dim = {head_dim} is out of range")));
        }
        let intermediate_size = match get_usize(v, &["intermediate_size", "n_inner"])? {
            Some(n) => n,
            None if family == Family::Gpt2 => hidden_size * 4,
            None => return Err(EngineError::Config("missing `intermediate_size`".into())),
        };
        if intermediate_size == 0 || intermediate_size > limits::MAX_INTERMEDIATE {
            return Err(EngineError::Config(format!("intermediate_size = {intermediate_size} is out of range")));
        }
        let vocab_size = req_usize(v, &["vocab_size"], limits::MAX_VOCAB)?;
        let max_position_embeddings = get_usize(v, &["max_position_embeddings", "n_positions"])?
            .unwrap_or(if family == Family::Gpt2 { 1024 } else { 1 << 20 });
        if max_position_embeddings == 0 || max_position_embeddings > limits::MAX_POSITIONS {
            return Err(EngineError::Config(format!("max_position_embeddings = {max_position_embeddings} is out of range")));
        }
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let is_gemma2 = arch == "Gemma2ForCausalLM";
        let is_gemma3 = arch == "Gemma3ForCausalLM";

        let norm = match family {
            Family::Gemma => NormKind::RmsPlusOne,
            Family::Gpt2 | Family::NeoX => NormKind::Layer,
            _ => NormKind::Rms,
        };
        let norm_eps = get_f64(v, &["rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon"])?.unwrap_or(1e-5);
        let act_name = get(v, &["hidden_activation", "hidden_act", "activation_function"])
            .and_then(Value::as_str)
            .unwrap_or(match family {
                Family::Gemma => "gelu_pytorch_tanh",
                Family::Gpt2 => "gelu_new",
                Family::NeoX => "gelu",
                _ => "silu",
            });
        // Gemma 1 configs say "gelu" but transformers runs the tanh approximation.
        let activation = if family == Family::Gemma && act_name == "gelu" { Activation::GeluTanh } else { Activation::parse(act_name)? };

        let attention_bias = get_bool(v, "attention_bias");
        let (qkv_bias, o_bias) = match arch.as_str() {
            "Qwen2ForCausalLM" => (true, false),
            "GPT2LMHeadModel" => (true, true),
            "GPTNeoXForCausalLM" => {
                let b = attention_bias.unwrap_or(true);
                (b, b)
            }
            _ => {
                let b = attention_bias.unwrap_or(false);
                (b, b)
            }
        };
        let mlp_bias = match family {
            Family::Gpt2 | Family::NeoX => true,
            _ => get_bool(v, "mlp_bias").unwrap_or(false),
        };
        let tie_default = matches!(family, Family::Gemma | Family::Gpt2);
        let tie_word_embeddings = get_bool(v, "tie_word_embeddings").unwrap_or(tie_default);

        let attn_scale = if family == Family::Gemma {
            let s = get_f64(v, &["query_pre_attn_scalar"])?.unwrap_or(head_dim as f64);
            if s <= 0.0 {
                return Err(EngineError::Config("query_pre_attn_scalar must be > 0".into()));
            }
            s.powf(-0.5)
        } else if family == Family::Gpt2 && get_bool(v, "scale_attn_weights") == Some(false) {
            1.0
        } else {
            (head_dim as f64).powf(-0.5)
        };
        let positive = |x: Option<f64>| x.filter(|c| *c > 0.0);
        let attn_softcap = if is_gemma2 || is_gemma3 { positive(get_f64(v, &["attn_logit_softcapping"])?) } else { None };
        let final_softcap = if is_gemma2 || is_gemma3 { positive(get_f64(v, &["final_logit_softcapping"])?) } else { None };

        // RoPE.
        let partial = match family {
            Family::NeoX => get_f64(v, &["rotary_pct", "partial_rotary_factor"])?.unwrap_or(1.0),
            _ => get_f64(v, &["partial_rotary_factor"])?.unwrap_or(1.0),
        };
        let rope_params = get(v, &["rope_parameters"]);
        let per_type = rope_params.is_some_and(|p| p.get("full_attention").is_some() || p.get("sliding_attention").is_some());
        let (rope_global, rope_local) = if per_type {
            let p = rope_params.unwrap_or(&Value::Null);
            let global = parse_rope(p.get("full_attention"), v, 10_000.0, head_dim, partial)?;
            let local = match p.get("sliding_attention") {
                Some(l) => parse_rope(Some(l), v, 10_000.0, head_dim, partial)?,
                None => global.clone(),
            };
            (global, local)
        } else {
            let global = parse_rope(rope_params, v, 10_000.0, head_dim, partial)?;
            let local = if is_gemma3 {
                let theta = get_f64(v, &["rope_local_base_freq"])?.unwrap_or(10_000.0);
                RopeConfig { theta, rotary_dim: global.rotary_dim, scaling: RopeScaling::None }
            } else {
                global.clone()
            };
            (global, local)
        };

        // Sliding windows per layer.
        let window = get_usize(v, &["sliding_window"])?.filter(|w| *w > 0);
        let layer_types: Option<Vec<bool>> = get(v, &["layer_types"]).and_then(Value::as_array).map(|a| {
            a.iter().map(|t| t.as_str() == Some("sliding_attention")).collect()
        });
        if let Some(lt) = &layer_types {
            if lt.len() != num_layers {
                return Err(EngineError::Config(format!("layer_types has {} entries for {num_layers} layers", lt.len())));
            }
        }
        let mut layer_window = vec![None; num_layers];
        let uses_window = match arch.as_str() {
            "Qwen2ForCausalLM" | "Qwen3ForCausalLM" => get_bool(v, "use_sliding_window").unwrap_or(false),
            "MistralForCausalLM" | "Phi3ForCausalLM" | "Gemma2ForCausalLM" | "Gemma3ForCausalLM" => true,
            _ => layer_types.is_some(),
        };
        if let (true, Some(w)) = (uses_window, window) {
            for (i, slot) in layer_window.iter_mut().enumerate() {
                let sliding = match &layer_types {
                    Some(lt) => lt[i],
                    None if is_gemma2 => i % 2 == 0,
                    None if is_gemma3 => {
                        let pattern = get_usize(v, &["sliding_window_pattern", "_sliding_window_pattern"])?.unwrap_or(6).max(1);
                        (i + 1) % pattern != 0
                    }
                    None if model_type.starts_with("qwen") => i >= get_usize(v, &["max_window_layers"])?.unwrap_or(0),
                    None => true,
                };
                if sliding {
                    *slot = Some(w);
                }
            }
        }

        let embed_scale = (family == Family::Gemma).then(|| (hidden_size as f64).sqrt());
        let cfg = ModelConfig {
            family,
            vocab_size,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            intermediate_size,
            norm,
            norm_eps,
            activation,
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm: matches!(arch.as_str(), "Qwen3ForCausalLM" | "Gemma3ForCausalLM"),
            sandwich_norm: is_gemma2 || is_gemma3,
            parallel_residual: family == Family::NeoX && get_bool(v, "use_parallel_residual").unwrap_or(true),
            tie_word_embeddings,
            embed_scale,
            attn_scale,
            scale_by_inverse_layer: family == Family::Gpt2 && get_bool(v, "scale_attn_by_inverse_layer_idx").unwrap_or(false),
            attn_softcap,
            final_softcap,
            learned_positions: family == Family::Gpt2,
            max_position_embeddings,
            rope_global,
            rope_local,
            layer_window,
            bos_token_id: token_ids(v.get("bos_token_id")).first().copied(),
            eos_token_ids: token_ids(v.get("eos_token_id")),
            pad_token_id: token_ids(v.get("pad_token_id")).first().copied(),
            raw: v.clone(),
            architecture: arch,
        };
        if cfg.family == Family::Gpt2 && cfg.num_heads * cfg.head_dim != cfg.hidden_size {
            return Err(EngineError::Config("GPT-2 needs n_embd = n_head * head_dim".into()));
        }
        Ok(cfg)
    }

    /// RoPE settings of layer `i` (Gemma 3 local layers use their own base).
    pub fn rope_for_layer(&self, i: usize) -> &RopeConfig {
        match self.layer_window.get(i) {
            Some(Some(_)) => &self.rope_local,
            _ => &self.rope_global,
        }
    }
}

impl RopeConfig {
    /// Inverse frequencies (rotary_dim / 2 of them) for a sequence that reaches `seq_len`
    /// positions (only dynamic scaling depends on it).
    pub fn inv_freq(&self, seq_len: usize) -> Vec<f32> {
        let dim = self.rotary_dim as f64;
        let mut base = self.theta;
        if let RopeScaling::Dynamic { factor, original_max } = self.scaling {
            let len = seq_len as f64;
            if len > original_max {
                base *= ((factor * len / original_max) - (factor - 1.0)).powf(dim / (dim - 2.0));
            }
        }
        let half = self.rotary_dim / 2;
        (0..half)
            .map(|i| {
                // transformers computes the exponent in f32 from integer steps.
                let exp = ((2 * i) as f32 / dim as f32) as f64;
                let f = 1.0 / base.powf(exp);
                let f = match self.scaling {
                    RopeScaling::Linear { factor } => f / factor,
                    RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max } => {
                        let low_wavelen = original_max / low_freq_factor;
                        let high_wavelen = original_max / high_freq_factor;
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen > low_wavelen {
                            f / factor
                        } else if wavelen < high_wavelen {
                            f
                        } else {
                            let smooth = (original_max / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    }
                    _ => f,
                };
                f as f32
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama() -> Value {
        json!({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 160,
               "vocab_size": 100, "rope_theta": 500000.0,
               "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})
    }

    #[test]
    fn legacy_rope_fields_and_llama3_scaling() {
        let c = ModelConfig::from_json(&llama()).unwrap();
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.rope_global.theta, 500000.0);
        assert!(matches!(c.rope_global.scaling, RopeScaling::Llama3 { .. }));
        let f = c.rope_global.inv_freq(10);
        assert_eq!(f.len(), 8);
        // The highest frequency is untouched, the lowest divided by the factor.
        assert_eq!(f[0], 1.0);
        let unscaled = 1.0 / 500000f64.powf(14.0 / 16.0);
        assert!(((f[7] as f64) - unscaled / 8.0).abs() < 1e-12);
    }

    #[test]
    fn unsupported_architecture_is_named() {
        let mut v = llama();
        v["architectures"] = json!(["MambaForCausalLM"]);
        let err = ModelConfig::from_json(&v).unwrap_err().to_string();
        assert!(err.contains("MambaForCausalLM"), "{err}");
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut v = llama();
        v["num_key_value_heads"] = json!(3);
        assert!(ModelConfig::from_json(&v).is_err());
        let mut v = llama();
        v["num_hidden_layers"] = json!(1_000_000);
        assert!(ModelConfig::from_json(&v).is_err());
        let mut v = llama();
        v["rope_scaling"] = json!({"rope_type": "unknown-kind", "factor": 2.0});
        assert!(ModelConfig::from_json(&v).is_err());
    }

    #[test]
    fn gemma3_layer_pattern_without_layer_types() {
        let v = json!({"architectures": ["Gemma3ForCausalLM"], "hidden_size": 64, "num_hidden_layers": 7,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                       "intermediate_size": 160, "vocab_size": 100, "sliding_window": 8,
                       "sliding_window_pattern": 6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0});
        let c = ModelConfig::from_json(&v).unwrap();
        let w: Vec<bool> = c.layer_window.iter().map(Option::is_some).collect();
        assert_eq!(w, [true, true, true, true, true, false, true]);
        assert_eq!(c.rope_for_layer(0).theta, 10000.0);
        assert_eq!(c.rope_for_layer(5).theta, 1000000.0);
        assert_eq!(c.attn_scale, 0.25);
    }
}
