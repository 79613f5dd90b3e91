//! GGUF files (llama.cpp) as Hugging Face-style models, and HF folders exported to GGUF.
//!
//! Reading: an HF `config.json`-like document from `{arch}.*` metadata, f32 tensors
//! (dequantized by candle: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K) under their
//! HF names, the tokenizer rebuilt from `tokenizer.ggml.*`, and the chat template. The
//! transformations `convert_hf_to_gguf.py` applies are undone exactly: Llama's Q/K row
//! permutation (interleaved RoPE), Gemma's `+1` on norm weights, GPT-2's Conv1D transposes.
//!
//! Writing: the inverse, with a chosen quantization (F32, F16, Q8_0, Q4_K, ... through candle's
//! `QTensor::quantize`); 1-D tensors stay F32 and rows that do not fill whole blocks fall back to
//! Q8_0 (or F16), as llama.cpp falls back for incompatible shapes.
//!
//! Hostile files: before candle parses anything, [`prescan`] walks the header without allocating
//! and enforces limits on counts, lengths, nesting, tensor shapes and offsets.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value as G};
pub use candle_core::quantized::GgmlDType;
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use serde_json::{json, Value as Json};

use crate::chat::{ChatError, ChatTemplate};
use crate::tokenizer::{gguf_vocab, Tokenizer, TokenizerError};

/// Metadata entries in one file.
pub const MAX_KV: u64 = 100_000;
/// Tensors in one file.
pub const MAX_TENSORS: u64 = 100_000;
/// Bytes of one string (keys, values, tensor names).
pub const MAX_STRING: u64 = 64 * 1024 * 1024;
/// Elements of one metadata array.
pub const MAX_ARRAY: u64 = 8 * 1024 * 1024;
/// Values in the whole metadata section (arrays included); bounds what candle allocates.
pub const MAX_VALUES: u64 = 16 * 1024 * 1024;
/// Nesting of arrays of arrays.
pub const MAX_DEPTH: usize = 2;
/// Elements of one tensor.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 36;
/// Largest layer count, hidden size and head count read from metadata.
pub const MAX_LAYERS: u64 = 4096;
pub const MAX_HIDDEN: u64 = 1 << 20;
pub const MAX_HEADS: u64 = 1 << 14;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("GGUF is malformed or exceeds a limit: {0}")]
    Malformed(String),
    #[error("GGUF: {0}")]
    Unsupported(String),
    #[error("GGUF tensor: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error("{0}")]
    Model(String),
}

fn malformed(msg: impl Into<String>) -> GgufError {
    GgufError::Malformed(msg.into())
}

/// (type id, block size in elements, bytes per block) of the ggml types candle can read.
fn ggml_type(id: u32) -> Option<(usize, usize)> {
    Some(match id {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        30 => (1, 2),     // BF16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        _ => return None,
    })
}

struct Scan<R> {
    r: R,
    v1: bool,
    file_size: u64,
    values: u64,
}

impl<R: Read + Seek> Scan<R> {
    fn pos(&mut self) -> Result<u64, GgufError> {
        self.r
            .stream_position()
            .map_err(|e| malformed(e.to_string()))
    }
    fn remaining(&mut self) -> Result<u64, GgufError> {
        Ok(self.file_size.saturating_sub(self.pos()?))
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        let mut b = [0u8; 4];
        self.r
            .read_exact(&mut b)
            .map_err(|_| malformed("truncated header"))?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        let mut b = [0u8; 8];
        self.r
            .read_exact(&mut b)
            .map_err(|_| malformed("truncated header"))?;
        Ok(u64::from_le_bytes(b))
    }
    /// A metadata integer of at most 32 bits (types 0-5: u8, i8, u16, i16, u32, i32).
    fn small_int(&mut self, ty: u32) -> Result<i64, GgufError> {
        let width = match ty {
            0 | 1 => 1,
            2 | 3 => 2,
            _ => 4,
        };
        let mut b = [0u8; 4];
        self.r
            .read_exact(&mut b[..width])
            .map_err(|_| malformed("truncated header"))?;
        Ok(match ty {
            0 => i64::from(b[0]),
            1 => i64::from(b[0] as i8),
            2 => i64::from(u16::from_le_bytes([b[0], b[1]])),
            3 => i64::from(i16::from_le_bytes([b[0], b[1]])),
            4 => i64::from(u32::from_le_bytes(b)),
            _ => i64::from(i32::from_le_bytes(b)),
        })
    }
    fn len(&mut self) -> Result<u64, GgufError> {
        if self.v1 {
            self.u32().map(u64::from)
        } else {
            self.u64()
        }
    }
    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        if n > self.remaining()? {
            return Err(malformed("length runs past the end of the file"));
        }
        let off = i64::try_from(n).map_err(|_| malformed("length too large"))?;
        self.r
            .seek(SeekFrom::Current(off))
            .map_err(|e| malformed(e.to_string()))?;
        Ok(())
    }
    fn skip_string(&mut self) -> Result<u64, GgufError> {
        let n = self.len()?;
        if n > MAX_STRING {
            return Err(malformed(format!("string of {n} bytes")));
        }
        self.skip(n)?;
        Ok(n)
    }
    fn read_string(&mut self) -> Result<String, GgufError> {
        let n = self.len()?;
        if n > MAX_STRING.min(65_536) || n > self.remaining()? {
            return Err(malformed(format!("name of {n} bytes")));
        }
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|_| malformed("truncated name"))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
    fn count_value(&mut self) -> Result<(), GgufError> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(malformed(format!("more than {MAX_VALUES} metadata values")));
        }
        Ok(())
    }
    fn skip_value(&mut self, ty: u32, depth: usize) -> Result<(), GgufError> {
        self.count_value()?;
        match ty {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => self.skip_string().map(|_| ()),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(malformed("arrays nested too deeply"));
                }
                let elem = self.u32()?;
                let n = self.len()?;
                if n > MAX_ARRAY {
                    return Err(malformed(format!("array of {n} elements")));
                }
                let fixed = match elem {
                    0 | 1 | 7 => Some(1),
                    2 | 3 => Some(2),
                    4..=6 => Some(4),
                    10..=12 => Some(8),
                    _ => None,
                };
                match fixed {
                    Some(size) => {
                        self.values = self.values.saturating_add(n);
                        if self.values > MAX_VALUES {
                            return Err(malformed(format!(
                                "more than {MAX_VALUES} metadata values"
                            )));
                        }
                        self.skip(n.saturating_mul(size))
                    }
                    None => {
                        for _ in 0..n {
                            self.skip_value(elem, depth + 1)?;
                        }
                        Ok(())
                    }
                }
            }
            other => Err(malformed(format!("unknown metadata value type {other}"))),
        }
    }
}

/// Checks a GGUF header against the limits above without allocating more than one name at a
/// time; every tensor's data must lie inside the file. Returns the number of tensors.
pub fn prescan<R: Read + Seek>(mut r: R) -> Result<u64, GgufError> {
    let file_size = r
        .seek(SeekFrom::End(0))
        .map_err(|e| malformed(e.to_string()))?;
    r.seek(SeekFrom::Start(0))
        .map_err(|e| malformed(e.to_string()))?;
    let mut s = Scan {
        r,
        v1: false,
        file_size,
        values: 0,
    };
    let magic = s.u32()?;
    if magic != 0x4655_4747 {
        return Err(malformed(format!("bad magic {magic:#010x}")));
    }
    let version = s.u32()?;
    s.v1 = match version {
        1 => true,
        2 | 3 => false,
        v => return Err(GgufError::Unsupported(format!("version {v}"))),
    };
    let n_tensors = s.len()?;
    let n_kv = s.len()?;
    if n_tensors > MAX_TENSORS || n_kv > MAX_KV {
        return Err(malformed(format!(
            "{n_tensors} tensors, {n_kv} metadata entries"
        )));
    }
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let key = s.read_string()?;
        let ty = s.u32()?;
        // candle's reader takes the alignment from any integer type of at most 32 bits and
        // divides by it: zero, a negative or an odd alignment is refused here.
        if key == "general.alignment" && ty <= 5 {
            let a = s.small_int(ty)?;
            s.count_value()?;
            if a <= 0 || !(a as u64).is_power_of_two() {
                return Err(malformed(format!("alignment {a}")));
            }
            alignment = a as u64;
        } else {
            s.skip_value(ty, 0)?;
        }
    }
    let mut extents = Vec::new();
    for _ in 0..n_tensors {
        let name = s.read_string()?;
        let n_dims = s.u32()?;
        if n_dims == 0 || n_dims > 4 {
            return Err(malformed(format!(
                "tensor `{name}` has {n_dims} dimensions"
            )));
        }
        let mut elems = 1u64;
        let mut first = 0u64;
        for i in 0..n_dims {
            let d = if s.v1 { u64::from(s.u32()?) } else { s.u64()? };
            // No model has an empty tensor, and candle reads one through a dangling pointer.
            if d == 0 {
                return Err(malformed(format!("tensor `{name}` has a dimension of 0")));
            }
            if i == 0 {
                first = d;
            }
            elems = elems
                .checked_mul(d)
                .filter(|&e| e <= MAX_TENSOR_ELEMENTS)
                .ok_or_else(|| malformed(format!("tensor `{name}` is too large")))?;
        }
        let ty = s.u32()?;
        let (block, bytes) = ggml_type(ty)
            .ok_or_else(|| GgufError::Unsupported(format!("tensor `{name}` has ggml type {ty}")))?;
        if !first.is_multiple_of(block as u64) {
            return Err(malformed(format!(
                "tensor `{name}` rows do not fill whole blocks"
            )));
        }
        let size = (elems / block as u64)
            .checked_mul(bytes as u64)
            .ok_or_else(|| malformed("tensor size overflows"))?;
        let offset = s.u64()?;
        extents.push((name, offset, size));
    }
    let pos = s.pos()?;
    let data = pos.div_ceil(alignment).saturating_mul(alignment);
    for (name, offset, size) in &extents {
        let end = data
            .checked_add(*offset)
            .and_then(|o| o.checked_add(*size))
            .ok_or_else(|| malformed("tensor offset overflows"))?;
        if end > file_size {
            return Err(malformed(format!(
                "tensor `{name}` lies past the end of the file"
            )));
        }
    }
    Ok(n_tensors)
}

/// An opened GGUF file: metadata and tensor directory, tensors read on demand.
pub struct GgufFile {
    path: std::path::PathBuf,
    content: gguf_file::Content,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("architecture", &self.architecture())
            .field("tensors", &self.content.tensor_infos.len())
            .finish()
    }
}

/// Everything a GGUF file describes, in Hugging Face terms.
#[derive(Debug)]
pub struct GgufModel {
    /// llama.cpp's architecture name (`general.architecture`).
    pub architecture: String,
    /// HF-style `config.json`.
    pub config: Json,
    /// f32 tensors under their HF names.
    pub tensors: HashMap<String, Tensor>,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
}

/// Loads a GGUF file completely: config, dequantized tensors, tokenizer and chat template.
pub fn load_gguf(path: impl AsRef<Path>) -> Result<GgufModel, GgufError> {
    let f = GgufFile::open(path)?;
    let chat_template = match f.chat_template() {
        Ok(t) => Some(t),
        Err(ChatError::Missing(_)) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(GgufModel {
        architecture: f.architecture().unwrap_or_default().to_owned(),
        config: f.config()?,
        tensors: f.tensors(&Device::Cpu)?,
        tokenizer: f.tokenizer()?,
        chat_template,
    })
}

/// Architecture family: how tensors are named and transformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma,
    Gemma2,
    Gemma3,
    Phi3,
    Gpt2,
}

impl Arch {
    fn from_gguf(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gemma" => Self::Gemma,
            "gemma2" => Self::Gemma2,
            "gemma3" => Self::Gemma3,
            "phi3" => Self::Phi3,
            "gpt2" => Self::Gpt2,
            _ => return None,
        })
    }
    fn from_hf(model_type: &str) -> Option<Self> {
        Some(match model_type {
            "llama" | "mistral" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gemma" => Self::Gemma,
            "gemma2" => Self::Gemma2,
            "gemma3_text" | "gemma3" => Self::Gemma3,
            "phi3" => Self::Phi3,
            "gpt2" => Self::Gpt2,
            _ => return None,
        })
    }
    fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma => "gemma",
            Self::Gemma2 => "gemma2",
            Self::Gemma3 => "gemma3",
            Self::Phi3 => "phi3",
            Self::Gpt2 => "gpt2",
        }
    }
    fn hf(self) -> (&'static str, &'static str) {
        match self {
            Self::Llama => ("llama", "LlamaForCausalLM"),
            Self::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
            Self::Qwen3 => ("qwen3", "Qwen3ForCausalLM"),
            Self::Gemma => ("gemma", "GemmaForCausalLM"),
            Self::Gemma2 => ("gemma2", "Gemma2ForCausalLM"),
            Self::Gemma3 => ("gemma3_text", "Gemma3ForCausalLM"),
            Self::Phi3 => ("phi3", "Phi3ForCausalLM"),
            Self::Gpt2 => ("gpt2", "GPT2LMHeadModel"),
        }
    }
    fn is_gemma(self) -> bool {
        matches!(self, Self::Gemma | Self::Gemma2 | Self::Gemma3)
    }

    /// Per-layer (GGUF, HF) name pairs, without `.weight`/`.bias`.
    fn layer_map(self) -> &'static [(&'static str, &'static str)] {
        const LLAMA: &[(&str, &str)] = &[
            ("attn_norm", "input_layernorm"),
            ("attn_q", "self_attn.q_proj"),
            ("attn_k", "self_attn.k_proj"),
            ("attn_v", "self_attn.v_proj"),
            ("attn_output", "self_attn.o_proj"),
            ("attn_q_norm", "self_attn.q_norm"),
            ("attn_k_norm", "self_attn.k_norm"),
            ("ffn_norm", "post_attention_layernorm"),
            ("ffn_gate", "mlp.gate_proj"),
            ("ffn_up", "mlp.up_proj"),
            ("ffn_down", "mlp.down_proj"),
        ];
        const GEMMA2: &[(&str, &str)] = &[
            ("attn_norm", "input_layernorm"),
            ("attn_q", "self_attn.q_proj"),
            ("attn_k", "self_attn.k_proj"),
            ("attn_v", "self_attn.v_proj"),
            ("attn_output", "self_attn.o_proj"),
            ("attn_q_norm", "self_attn.q_norm"),
            ("attn_k_norm", "self_attn.k_norm"),
            ("post_attention_norm", "post_attention_layernorm"),
            ("ffn_norm", "pre_feedforward_layernorm"),
            ("post_ffw_norm", "post_feedforward_layernorm"),
            ("ffn_gate", "mlp.gate_proj"),
            ("ffn_up", "mlp.up_proj"),
            ("ffn_down", "mlp.down_proj"),
        ];
        const PHI3: &[(&str, &str)] = &[
            ("attn_norm", "input_layernorm"),
            ("attn_qkv", "self_attn.qkv_proj"),
            ("attn_output", "self_attn.o_proj"),
            ("ffn_norm", "post_attention_layernorm"),
            ("ffn_up", "mlp.gate_up_proj"),
            ("ffn_down", "mlp.down_proj"),
        ];
        const GPT2: &[(&str, &str)] = &[
            ("attn_norm", "ln_1"),
            ("attn_qkv", "attn.c_attn"),
            ("attn_output", "attn.c_proj"),
            ("ffn_norm", "ln_2"),
            ("ffn_up", "mlp.c_fc"),
            ("ffn_down", "mlp.c_proj"),
        ];
        match self {
            Self::Llama | Self::Qwen2 | Self::Qwen3 | Self::Gemma => LLAMA,
            Self::Gemma2 | Self::Gemma3 => GEMMA2,
            Self::Phi3 => PHI3,
            Self::Gpt2 => GPT2,
        }
    }

    /// Global (GGUF, HF) name pairs, without `.weight`/`.bias`.
    fn global_map(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Gpt2 => &[
                ("token_embd", "transformer.wte"),
                ("position_embd", "transformer.wpe"),
                ("output_norm", "transformer.ln_f"),
                ("output", "lm_head"),
            ],
            _ => &[
                ("token_embd", "model.embed_tokens"),
                ("output_norm", "model.norm"),
                ("output", "lm_head"),
            ],
        }
    }

    fn layer_prefix(self) -> &'static str {
        if self == Self::Gpt2 {
            "transformer.h."
        } else {
            "model.layers."
        }
    }

    fn gguf_to_hf(self, name: &str) -> Option<String> {
        let (base, suffix) = name.rsplit_once('.')?;
        if !matches!(suffix, "weight" | "bias") {
            return None;
        }
        if let Some(rest) = base.strip_prefix("blk.") {
            let (layer, part) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let (_, hf) = self.layer_map().iter().find(|(g, _)| *g == part)?;
            return Some(format!("{}{layer}.{hf}.{suffix}", self.layer_prefix()));
        }
        let (_, hf) = self.global_map().iter().find(|(g, _)| *g == base)?;
        Some(format!("{hf}.{suffix}"))
    }

    fn hf_to_gguf(self, name: &str) -> Option<String> {
        let (base, suffix) = name.rsplit_once('.')?;
        if !matches!(suffix, "weight" | "bias") {
            return None;
        }
        if let Some(rest) = base.strip_prefix(self.layer_prefix()) {
            let (layer, part) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let (g, _) = self.layer_map().iter().find(|(_, h)| *h == part)?;
            return Some(format!("blk.{layer}.{g}.{suffix}"));
        }
        let (g, _) = self.global_map().iter().find(|(_, h)| *h == base)?;
        Some(format!("{g}.{suffix}"))
    }
}

/// llama.cpp's `permute` of Q/K rows for interleaved RoPE (convert_hf_to_gguf `LlamaModel.permute`).
fn permute_qk(t: &Tensor, n_head: usize) -> Result<Tensor, GgufError> {
    reshape_heads(t, n_head, false)
}

/// The exact inverse of [`permute_qk`].
fn unpermute_qk(t: &Tensor, n_head: usize) -> Result<Tensor, GgufError> {
    reshape_heads(t, n_head, true)
}

fn reshape_heads(t: &Tensor, n_head: usize, inverse: bool) -> Result<Tensor, GgufError> {
    let dims = t.dims().to_vec();
    let rows = *dims
        .first()
        .ok_or_else(|| malformed("Q/K tensor without dimensions"))?;
    if n_head == 0 || rows % (2 * n_head) != 0 {
        return Err(malformed(format!(
            "Q/K tensor with {rows} rows cannot be split into {n_head} heads"
        )));
    }
    let half = rows / n_head / 2;
    let rest: Vec<usize> = dims.iter().skip(1).copied().collect();
    let shape = |a: usize, b: usize| -> Vec<usize> {
        let mut s = vec![n_head, a, b];
        s.extend(&rest);
        s
    };
    // Forward: [h, 2, half, ...] -> swap -> [h, half, 2, ...]. Inverse starts from the latter.
    let src = if inverse {
        shape(half, 2)
    } else {
        shape(2, half)
    };
    let out = t
        .reshape(src)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?;
    Ok(out)
}

fn meta_u64(v: &G) -> Option<u64> {
    match v {
        G::U8(x) => Some(u64::from(*x)),
        G::U16(x) => Some(u64::from(*x)),
        G::U32(x) => Some(u64::from(*x)),
        G::U64(x) => Some(*x),
        G::I8(x) => u64::try_from(*x).ok(),
        G::I16(x) => u64::try_from(*x).ok(),
        G::I32(x) => u64::try_from(*x).ok(),
        G::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

fn meta_f64(v: &G) -> Option<f64> {
    match v {
        G::F32(x) => Some(f64::from(*x)),
        G::F64(x) => Some(*x),
        other => meta_u64(other).map(|u| u as f64),
    }
}

/// f32 metadata values are stored rounded; give back the short decimal they came from
/// (1e-6 rather than 9.999999974752427e-7).
fn f32_to_json(x: f64) -> Json {
    let short: f64 = format!("{}", x as f32).parse().unwrap_or(x);
    json!(short)
}

/// Llama 3's RoPE frequency factors, as convert_hf_to_gguf computes `rope_freqs.weight`.
pub fn llama3_rope_factors(
    theta: f64,
    head_dim: usize,
    factor: f64,
    low: f64,
    high: f64,
    original_max: f64,
) -> Vec<f32> {
    let low_wavelen = original_max / low;
    let high_wavelen = original_max / high;
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original_max / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}

/// The Llama 3 scaling parameters that reproduce stored `rope_freqs` factors, searched among
/// the settings Llama 3.x releases use; `None` when nothing reproduces them.
fn llama3_params_from_factors(factors: &[f32], theta: f64, head_dim: usize) -> Option<Json> {
    let factor = factors.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if !factor.is_finite() || factor < 1.0 || factors.len() != head_dim / 2 {
        return None;
    }
    for original_max in [8192.0, 4096.0, 16384.0, 32768.0, 2048.0] {
        for (low, high) in [(1.0, 4.0), (1.0, 2.0), (2.0, 4.0), (1.0, 8.0)] {
            let want = llama3_rope_factors(theta, head_dim, factor, low, high, original_max);
            let ok = want
                .iter()
                .zip(factors)
                .all(|(a, b)| (a - b).abs() <= 1e-4 * a.abs().max(1.0));
            if ok {
                return Some(json!({
                    "rope_theta": f32_to_json(theta),
                    "rope_type": "llama3",
                    "factor": f32_to_json(factor),
                    "low_freq_factor": low,
                    "high_freq_factor": high,
                    "original_max_position_embeddings": original_max as u64
                }));
            }
        }
    }
    None
}

impl GgufFile {
    /// Opens and checks a GGUF file (see [`prescan`]), then reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut r = BufReader::new(File::open(path).map_err(io)?);
        prescan(&mut r)?;
        r.seek(SeekFrom::Start(0)).map_err(io)?;
        let content = gguf_file::Content::read(&mut r).map_err(|e| malformed(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            content,
        })
    }

    pub fn metadata(&self) -> &HashMap<String, G> {
        &self.content.metadata
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        match self.content.metadata.get("general.architecture") {
            Some(G::String(s)) => Some(s),
            _ => None,
        }
    }

    /// Tensor names as stored (llama.cpp names), sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .content
            .tensor_infos
            .keys()
            .map(String::as_str)
            .collect();
        v.sort_unstable();
        v
    }

    /// The ggml type of a stored tensor.
    pub fn tensor_dtype(&self, gguf_name: &str) -> Option<GgmlDType> {
        self.content
            .tensor_infos
            .get(gguf_name)
            .map(|t| t.ggml_dtype)
    }

    fn arch(&self) -> Result<(Arch, &str), GgufError> {
        let name = self
            .architecture()
            .ok_or_else(|| malformed("no general.architecture"))?;
        let arch = Arch::from_gguf(name).ok_or_else(|| {
            GgufError::Unsupported(format!(
                "architecture `{name}` (supported: llama, qwen2, qwen3, gemma, gemma2, gemma3, phi3, gpt2)"
            ))
        })?;
        Ok((arch, name))
    }

    fn get(&self, arch: &str, key: &str) -> Option<&G> {
        self.content.metadata.get(&format!("{arch}.{key}"))
    }

    fn req_u64(&self, arch: &str, key: &str) -> Result<u64, GgufError> {
        self.get(arch, key)
            .and_then(meta_u64)
            .ok_or_else(|| malformed(format!("missing or invalid {arch}.{key}")))
    }

    /// An HF `config.json` equivalent of the `{arch}.*` metadata.
    pub fn config(&self) -> Result<Json, GgufError> {
        let (arch, name) = self.arch()?;
        let (model_type, class) = arch.hf();
        let hidden = self.req_u64(name, "embedding_length")?;
        let layers = self.req_u64(name, "block_count")?;
        let heads = self.req_u64(name, "attention.head_count")?;
        if heads == 0 || hidden == 0 {
            return Err(malformed("zero heads or hidden size"));
        }
        if layers > MAX_LAYERS || hidden > MAX_HIDDEN || heads > MAX_HEADS {
            return Err(malformed(format!(
                "implausible shape: {layers} layers, hidden size {hidden}, {heads} heads"
            )));
        }
        let kv_heads = self
            .get(name, "attention.head_count_kv")
            .and_then(meta_u64)
            .unwrap_or(heads);
        let ctx = self.get(name, "context_length").and_then(meta_u64);
        let ffn = self.get(name, "feed_forward_length").and_then(meta_u64);
        let head_dim = self
            .get(name, "attention.key_length")
            .and_then(meta_u64)
            .unwrap_or(hidden / heads);
        let vocab = self
            .get(name, "vocab_size")
            .and_then(meta_u64)
            .or_else(
                || match self.content.metadata.get("tokenizer.ggml.tokens") {
                    Some(G::Array(a)) => Some(a.len() as u64),
                    _ => None,
                },
            )
            .or_else(|| {
                self.content
                    .tensor_infos
                    .get("token_embd.weight")
                    .and_then(|t| t.shape.dims().first().map(|&d| d as u64))
            })
            .ok_or_else(|| malformed("vocabulary size unknown"))?;
        let tied = !self.content.tensor_infos.contains_key("output.weight");
        let tok_id = |k: &str| {
            self.content
                .metadata
                .get(&format!("tokenizer.ggml.{k}"))
                .and_then(meta_u64)
        };
        let mut c = serde_json::Map::new();
        c.insert("architectures".into(), json!([class]));
        c.insert("model_type".into(), json!(model_type));
        if arch == Arch::Gpt2 {
            c.insert("n_embd".into(), json!(hidden));
            c.insert("n_layer".into(), json!(layers));
            c.insert("n_head".into(), json!(heads));
            c.insert("n_positions".into(), json!(ctx.unwrap_or(1024)));
            c.insert(
                "n_inner".into(),
                ffn.filter(|&f| f != 4 * hidden)
                    .map_or(Json::Null, |f| json!(f)),
            );
            let eps = self
                .get(name, "attention.layer_norm_epsilon")
                .and_then(meta_f64)
                .unwrap_or(1e-5);
            c.insert("layer_norm_epsilon".into(), f32_to_json(eps));
            c.insert("activation_function".into(), json!("gelu_new"));
            c.insert("vocab_size".into(), json!(vocab));
            c.insert("tie_word_embeddings".into(), json!(tied));
        } else {
            c.insert("hidden_size".into(), json!(hidden));
            c.insert("num_hidden_layers".into(), json!(layers));
            c.insert(
                "intermediate_size".into(),
                json!(ffn.ok_or_else(|| malformed(format!("missing {name}.feed_forward_length")))?),
            );
            c.insert("num_attention_heads".into(), json!(heads));
            c.insert("num_key_value_heads".into(), json!(kv_heads));
            c.insert("head_dim".into(), json!(head_dim));
            let eps = self
                .get(name, "attention.layer_norm_rms_epsilon")
                .and_then(meta_f64)
                .unwrap_or(1e-6);
            c.insert("rms_norm_eps".into(), f32_to_json(eps));
            let theta = self
                .get(name, "rope.freq_base")
                .and_then(meta_f64)
                .unwrap_or(10_000.0);
            if let Some(ctx) = ctx {
                c.insert("max_position_embeddings".into(), json!(ctx));
            }
            c.insert("vocab_size".into(), json!(vocab));
            c.insert("tie_word_embeddings".into(), json!(tied));
            let act = if arch.is_gemma() {
                "gelu_pytorch_tanh"
            } else {
                "silu"
            };
            c.insert("hidden_act".into(), json!(act));
            if arch.is_gemma() {
                c.insert("hidden_activation".into(), json!(act));
            }
            let mut rope = json!({"rope_theta": f32_to_json(theta), "rope_type": "default"});
            if let (Some(G::String(kind)), Some(f)) = (
                self.get(name, "rope.scaling.type"),
                self.get(name, "rope.scaling.factor").and_then(meta_f64),
            ) {
                if kind == "linear" {
                    rope = json!({"rope_theta": f32_to_json(theta), "rope_type": "linear", "factor": f32_to_json(f)});
                }
            }
            if self.content.tensor_infos.contains_key("rope_freqs.weight") {
                let factors = self
                    .raw_tensor("rope_freqs.weight", &Device::Cpu)
                    .and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))?;
                rope = llama3_params_from_factors(&factors, theta, head_dim as usize).ok_or_else(
                    || {
                        GgufError::Unsupported(
                            "rope_freqs factors that match no Llama 3 scaling".into(),
                        )
                    },
                )?;
            }
            match arch {
                Arch::Llama => {
                    let bias = self.content.tensor_infos.contains_key("blk.0.attn_q.bias");
                    c.insert("attention_bias".into(), json!(bias));
                    c.insert("mlp_bias".into(), json!(false));
                }
                Arch::Phi3 => {
                    if let Some(dims) = self.get(name, "rope.dimension_count").and_then(meta_u64) {
                        if let Some(obj) = rope.as_object_mut() {
                            obj.insert(
                                "partial_rotary_factor".into(),
                                f32_to_json(dims as f64 / head_dim as f64),
                            );
                        }
                    }
                    if let Some(o) = self
                        .get(name, "rope.scaling.original_context_length")
                        .and_then(meta_u64)
                    {
                        c.insert("original_max_position_embeddings".into(), json!(o));
                    }
                }
                Arch::Gemma2 | Arch::Gemma3 => {
                    for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
                        if let Some(v) = self.get(name, key).and_then(meta_f64) {
                            c.insert(key.into(), f32_to_json(v));
                        } else if arch == Arch::Gemma3 {
                            c.insert(key.into(), Json::Null);
                        }
                    }
                    let window = self
                        .get(name, "attention.sliding_window")
                        .and_then(meta_u64);
                    c.insert(
                        "sliding_window".into(),
                        window.map_or(Json::Null, |w| json!(w)),
                    );
                    // llama.cpp's query scale: `{arch}.attention.scale` when written, else head_dim.
                    let scalar = match self.get(name, "attention.scale").and_then(meta_f64) {
                        Some(s) if s > 0.0 => (1.0 / (s * s)).round(),
                        _ => head_dim as f64,
                    };
                    c.insert("query_pre_attn_scalar".into(), json!(scalar as u64));
                    // llama.cpp: Gemma 2 alternates sliding/full from layer 0; Gemma 3 makes
                    // every sixth layer global.
                    let types: Vec<&str> = (0..layers)
                        .map(|i| {
                            let sliding = if arch == Arch::Gemma2 {
                                i % 2 == 0
                            } else {
                                (i + 1) % 6 != 0
                            };
                            if sliding {
                                "sliding_attention"
                            } else {
                                "full_attention"
                            }
                        })
                        .collect();
                    c.insert("layer_types".into(), json!(types));
                    if arch == Arch::Gemma3 {
                        rope = json!({
                            "full_attention": rope,
                            "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}
                        });
                    }
                }
                _ => {}
            }
            if !c.contains_key("layer_types") {
                let types = vec!["full_attention"; usize::try_from(layers).unwrap_or(0)];
                c.insert("layer_types".into(), json!(types));
            }
            c.insert("rope_parameters".into(), rope);
        }
        c.insert(
            "bos_token_id".into(),
            tok_id("bos_token_id").map_or(Json::Null, |v| json!(v)),
        );
        c.insert(
            "eos_token_id".into(),
            tok_id("eos_token_id").map_or(Json::Null, |v| json!(v)),
        );
        c.insert(
            "pad_token_id".into(),
            tok_id("padding_token_id").map_or(Json::Null, |v| json!(v)),
        );
        Ok(Json::Object(c))
    }

    /// Reads one stored tensor, dequantized to f32, under its llama.cpp name and layout.
    pub fn raw_tensor(&self, gguf_name: &str, device: &Device) -> Result<Tensor, GgufError> {
        let io = |source| GgufError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut r = BufReader::new(File::open(&self.path).map_err(io)?);
        let q = self.content.tensor(&mut r, gguf_name, device)?;
        Ok(q.dequantize(device)?)
    }

    /// Every tensor, dequantized to f32, under its HF name with HF layout. Tensors that have no
    /// HF counterpart (`rope_freqs`, ...) are an error rather than silently dropped.
    pub fn tensors(&self, device: &Device) -> Result<HashMap<String, Tensor>, GgufError> {
        let (arch, name) = self.arch()?;
        let heads = self.req_u64(name, "attention.head_count")? as usize;
        let kv_heads = self
            .get(name, "attention.head_count_kv")
            .and_then(meta_u64)
            .map_or(heads, |v| v as usize);
        let io = |source| GgufError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut r = BufReader::new(File::open(&self.path).map_err(io)?);
        let mut out = HashMap::with_capacity(self.content.tensor_infos.len());
        for gname in self.tensor_names() {
            // Llama 3 RoPE factors live in the config (see `config`), not among HF weights.
            if gname == "rope_freqs.weight" {
                continue;
            }
            let hf = arch.gguf_to_hf(gname).ok_or_else(|| {
                GgufError::Unsupported(format!("tensor `{gname}` has no Hugging Face equivalent"))
            })?;
            let q = self.content.tensor(&mut r, gname, device)?;
            let mut t = q.dequantize(device)?;
            let part = gname.split('.').nth(2).unwrap_or("");
            if arch == Arch::Llama && (part == "attn_q" || part == "attn_k") {
                let n = if part == "attn_q" { heads } else { kv_heads };
                t = unpermute_qk(&t, n)?;
            }
            if arch.is_gemma() && gname.ends_with("norm.weight") {
                t = (t - 1.0)?;
            }
            if arch == Arch::Gpt2
                && gname.ends_with(".weight")
                && matches!(part, "attn_qkv" | "attn_output" | "ffn_up" | "ffn_down")
            {
                t = t.t()?.contiguous()?;
            }
            out.insert(hf, t);
        }
        Ok(out)
    }

    /// The tokenizer in the metadata, with special tokens.
    pub fn tokenizer(&self) -> Result<Tokenizer, GgufError> {
        Ok(Tokenizer::from_gguf_metadata(&self.content.metadata)?)
    }

    /// The default chat template, with the vocabulary's special tokens as variables.
    pub fn chat_template(&self) -> Result<ChatTemplate, ChatError> {
        ChatTemplate::from_gguf_metadata(&self.content.metadata, None)
    }
}

/// What [`write_gguf`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSummary {
    pub tensors: usize,
    /// How many tensors were stored in each ggml type.
    pub dtypes: Vec<(String, usize)>,
    pub bytes: u64,
}

fn ftype(dtype: GgmlDType) -> u32 {
    match dtype {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q8_0 => 7,
        GgmlDType::Q5_0 => 8,
        GgmlDType::Q5_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 12,
        GgmlDType::Q4K => 15,
        GgmlDType::Q5K => 17,
        GgmlDType::Q6K => 18,
        GgmlDType::BF16 => 32,
        _ => 0,
    }
}

/// The type a tensor is stored in: 1-D tensors stay F32; rows that do not fill whole blocks of
/// `want` fall back to Q8_0, then F16.
fn storage_type(shape: &[usize], want: GgmlDType) -> GgmlDType {
    if shape.len() < 2 {
        return GgmlDType::F32;
    }
    let cols = shape.last().copied().unwrap_or(0);
    if cols % want.block_size() == 0
        || matches!(want, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
    {
        want
    } else if cols % GgmlDType::Q8_0.block_size() == 0 {
        GgmlDType::Q8_0
    } else {
        GgmlDType::F16
    }
}

fn cfg_u64(cfg: &Json, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| cfg.get(*k).and_then(Json::as_u64))
}

fn cfg_f64(cfg: &Json, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| cfg.get(*k).and_then(Json::as_f64))
}

fn rope_theta(cfg: &Json, layer_type: Option<&str>) -> Option<f64> {
    let rp = cfg.get("rope_parameters");
    let scoped = layer_type.and_then(|lt| rp.and_then(|r| r.get(lt)));
    scoped
        .or(rp)
        .and_then(|r| r.get("rope_theta"))
        .and_then(Json::as_f64)
        .or_else(|| cfg.get("rope_theta").and_then(Json::as_f64))
}

/// Exports an HF model folder (config.json, safetensors, tokenizer.json, tokenizer_config.json,
/// chat template) to a GGUF file with llama.cpp names, the Q/K permutation and full tokenizer and
/// chat-template metadata; `dtype` is the quantization of 2-D tensors.
pub fn write_gguf(
    hf_folder: &Path,
    out: &Path,
    dtype: GgmlDType,
) -> Result<WriteSummary, GgufError> {
    let cfg_path = hf_folder.join("config.json");
    let cfg_bytes =
        crate::tokenizer::read_limited(&cfg_path, crate::tokenizer::MAX_CONFIG_JSON_BYTES)?;
    let cfg: Json = serde_json::from_slice(&cfg_bytes)
        .map_err(|e| GgufError::Model(format!("{}: {e}", cfg_path.display())))?;
    let model_type = cfg
        .get("model_type")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let arch = Arch::from_hf(model_type).ok_or_else(|| {
        GgufError::Unsupported(format!("model_type `{model_type}` cannot be exported"))
    })?;
    let a = arch.gguf_name();
    let tokenizer = Tokenizer::from_folder(hf_folder)?;
    let chat = match ChatTemplate::from_folder(hf_folder, None) {
        Ok(t) => Some(t.source().to_owned()),
        Err(ChatError::Missing(_)) => None,
        Err(e) => return Err(e.into()),
    };

    // Hyperparameters.
    let need = |keys: &[&str]| {
        cfg_u64(&cfg, keys)
            .ok_or_else(|| GgufError::Model(format!("config.json lacks {}", keys.join("/"))))
    };
    let hidden = need(&["hidden_size", "n_embd"])?;
    let layers = need(&["num_hidden_layers", "n_layer"])?;
    let heads = need(&["num_attention_heads", "n_head"])?;
    if heads == 0 {
        return Err(GgufError::Model("zero attention heads".into()));
    }
    let kv_heads = cfg_u64(&cfg, &["num_key_value_heads"]).unwrap_or(heads);
    let head_dim = cfg_u64(&cfg, &["head_dim"]).unwrap_or(hidden / heads);
    let mut meta: Vec<(String, G)> = vec![
        ("general.architecture".into(), G::String(a.into())),
        (
            "general.name".into(),
            G::String(
                hf_folder
                    .file_name()
                    .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned()),
            ),
        ),
        ("general.file_type".into(), G::U32(ftype(dtype))),
        ("general.quantization_version".into(), G::U32(2)),
    ];
    let mut put = |k: &str, v: G| meta.push((format!("{a}.{k}"), v));
    put("block_count", G::U32(layers as u32));
    put("embedding_length", G::U32(hidden as u32));
    put("attention.head_count", G::U32(heads as u32));
    if let Some(ctx) = cfg_u64(&cfg, &["max_position_embeddings", "n_positions"]) {
        put("context_length", G::U32(ctx as u32));
    }
    let vocab = cfg_u64(&cfg, &["vocab_size"]).unwrap_or(tokenizer.vocab_size() as u64);
    put("vocab_size", G::U32(vocab as u32));
    if arch == Arch::Gpt2 {
        let ffn = cfg_u64(&cfg, &["n_inner"]).unwrap_or(4 * hidden);
        put("feed_forward_length", G::U32(ffn as u32));
        let eps = cfg_f64(&cfg, &["layer_norm_epsilon"]).unwrap_or(1e-5);
        put("attention.layer_norm_epsilon", G::F32(eps as f32));
    } else {
        put(
            "feed_forward_length",
            G::U32(need(&["intermediate_size"])? as u32),
        );
        put("attention.head_count_kv", G::U32(kv_heads as u32));
        put("attention.key_length", G::U32(head_dim as u32));
        put("attention.value_length", G::U32(head_dim as u32));
        let eps = cfg_f64(&cfg, &["rms_norm_eps"]).unwrap_or(1e-6);
        put("attention.layer_norm_rms_epsilon", G::F32(eps as f32));
        let layer_type = (arch == Arch::Gemma3).then_some("full_attention");
        put(
            "rope.freq_base",
            G::F32(rope_theta(&cfg, layer_type).unwrap_or(10_000.0) as f32),
        );
        let partial = cfg
            .get("rope_parameters")
            .and_then(|r| r.get("partial_rotary_factor"))
            .and_then(Json::as_f64)
            .or_else(|| cfg_f64(&cfg, &["partial_rotary_factor"]))
            .unwrap_or(1.0);
        put(
            "rope.dimension_count",
            G::U32((head_dim as f64 * partial).round() as u32),
        );
        if arch.is_gemma() {
            for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
                if let Some(v) = cfg_f64(&cfg, &[key]) {
                    put(key, G::F32(v as f32));
                }
            }
            if let Some(w) = cfg_u64(&cfg, &["sliding_window"]) {
                put("attention.sliding_window", G::U32(w as u32));
            }
            if let Some(q) = cfg_f64(&cfg, &["query_pre_attn_scalar"]) {
                if q > 0.0 && (q - head_dim as f64).abs() > 0.5 {
                    put("attention.scale", G::F32((1.0 / q.sqrt()) as f32));
                }
            }
        }
        if arch == Arch::Phi3 {
            if let Some(o) = cfg_u64(&cfg, &["original_max_position_embeddings"]) {
                put("rope.scaling.original_context_length", G::U32(o as u32));
            }
        }
    }
    meta.extend(gguf_vocab::tokenizer_to_gguf(&tokenizer)?);
    if let Some(src) = chat {
        meta.push(("tokenizer.chat_template".into(), G::String(src)));
    }

    // Tensors.
    let files = crate::weights::safetensors_files(hf_folder)
        .map_err(|e| GgufError::Model(e.to_string()))?;
    let mut hf_tensors: Vec<(String, Tensor)> = Vec::new();
    for f in &files {
        let map = candle_core::safetensors::load(f, &Device::Cpu)?;
        hf_tensors.extend(map);
    }
    hf_tensors.sort_by(|x, y| x.0.cmp(&y.0));
    let tied = cfg
        .get("tie_word_embeddings")
        .and_then(Json::as_bool)
        .unwrap_or(arch == Arch::Gpt2);
    let mut qtensors: Vec<(String, QTensor)> = Vec::new();
    for (hf, t) in hf_tensors {
        if hf.ends_with("rotary_emb.inv_freq")
            || hf.ends_with(".attn.bias")
            || hf.ends_with(".attn.masked_bias")
        {
            continue;
        }
        if hf == "lm_head.weight" && tied {
            continue;
        }
        let gname = arch.hf_to_gguf(&hf).ok_or_else(|| {
            GgufError::Unsupported(format!("tensor `{hf}` has no llama.cpp name for {a}"))
        })?;
        let mut t = t.to_dtype(candle_core::DType::F32)?;
        let part = gname.split('.').nth(2).unwrap_or("");
        if arch == Arch::Llama && (part == "attn_q" || part == "attn_k") {
            let n = if part == "attn_q" { heads } else { kv_heads };
            t = permute_qk(&t, n as usize)?;
        }
        if arch.is_gemma() && gname.ends_with("norm.weight") {
            t = (t + 1.0)?;
        }
        if arch == Arch::Gpt2
            && gname.ends_with(".weight")
            && matches!(part, "attn_qkv" | "attn_output" | "ffn_up" | "ffn_down")
        {
            t = t.t()?.contiguous()?;
        }
        let ty = storage_type(t.dims(), dtype);
        let q = QTensor::quantize(&t, ty)?;
        qtensors.push((gname, q));
    }
    let rope_cfg = cfg
        .get("rope_parameters")
        .or_else(|| cfg.get("rope_scaling"));
    let rope_type = rope_cfg
        .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
        .and_then(Json::as_str);
    if rope_type == Some("llama3") {
        let r = rope_cfg.unwrap_or(&Json::Null);
        let get = |k: &str, d: f64| r.get(k).and_then(Json::as_f64).unwrap_or(d);
        let original = r
            .get("original_max_position_embeddings")
            .and_then(Json::as_f64)
            .or_else(|| cfg_f64(&cfg, &["original_max_position_embeddings"]))
            .unwrap_or(8192.0);
        let factors = llama3_rope_factors(
            rope_theta(&cfg, None).unwrap_or(10_000.0),
            head_dim as usize,
            get("factor", 8.0),
            get("low_freq_factor", 1.0),
            get("high_freq_factor", 4.0),
            original,
        );
        let n = factors.len();
        let t = Tensor::from_vec(factors, n, &Device::Cpu)?;
        qtensors.push((
            "rope_freqs.weight".into(),
            QTensor::quantize(&t, GgmlDType::F32)?,
        ));
    } else if rope_type == Some("linear") {
        let f = rope_cfg
            .and_then(|r| r.get("factor"))
            .and_then(Json::as_f64)
            .unwrap_or(1.0);
        meta.push((format!("{a}.rope.scaling.type"), G::String("linear".into())));
        meta.push((format!("{a}.rope.scaling.factor"), G::F32(f as f32)));
    } else if let Some(other) = rope_type.filter(|t| *t != "default") {
        return Err(GgufError::Unsupported(format!(
            "RoPE scaling `{other}` cannot be exported"
        )));
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for (_, q) in &qtensors {
        let name = format!("{:?}", q.dtype());
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    let io = |source| GgufError::Io {
        path: out.display().to_string(),
        source,
    };
    let mut file = std::io::BufWriter::new(File::create(out).map_err(io)?);
    let meta_refs: Vec<(&str, &G)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> =
        qtensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs)?;
    use std::io::Write as _;
    file.flush().map_err(io)?;
    drop(file);
    let bytes = std::fs::metadata(out).map_err(io)?.len();
    Ok(WriteSummary {
        tensors: qtensors.len(),
        dtypes: counts,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qk_permutation_inverts_exactly() {
        let t = Tensor::arange(0f32, 8.0 * 3.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 3))
            .unwrap();
        let p = permute_qk(&t, 2).unwrap();
        // Head 0 rows [0,1,2,3] -> interleave halves [0,2,1,3].
        let rows: Vec<Vec<f32>> = p.to_vec2().unwrap();
        assert_eq!(rows[1], vec![6.0, 7.0, 8.0]);
        assert_eq!(rows[2], vec![3.0, 4.0, 5.0]);
        let back = unpermute_qk(&p, 2).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
        let bias = Tensor::arange(0f32, 8.0, &Device::Cpu).unwrap();
        let pb = permute_qk(&bias, 2).unwrap();
        assert_eq!(
            pb.to_vec1::<f32>().unwrap(),
            vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
        );
        assert!(unpermute_qk(&bias, 3).is_err());
    }

    #[test]
    fn names_map_both_ways() {
        for arch in [
            Arch::Llama,
            Arch::Qwen3,
            Arch::Gemma2,
            Arch::Phi3,
            Arch::Gpt2,
        ] {
            for (g, _) in arch.layer_map() {
                let gname = format!("blk.3.{g}.weight");
                let hf = arch.gguf_to_hf(&gname).unwrap();
                assert_eq!(arch.hf_to_gguf(&hf).unwrap(), gname);
            }
        }
        assert_eq!(
            Arch::Llama.gguf_to_hf("blk.0.attn_q.weight").unwrap(),
            "model.layers.0.self_attn.q_proj.weight"
        );
        assert_eq!(
            Arch::Gemma2.gguf_to_hf("blk.1.ffn_norm.weight").unwrap(),
            "model.layers.1.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            Arch::Gpt2.gguf_to_hf("token_embd.weight").unwrap(),
            "transformer.wte.weight"
        );
        assert_eq!(
            Arch::Qwen2.gguf_to_hf("blk.0.attn_k.bias").unwrap(),
            "model.layers.0.self_attn.k_proj.bias"
        );
        assert!(Arch::Llama.gguf_to_hf("rope_freqs.weight").is_none());
        assert!(Arch::Llama.gguf_to_hf("blk.x.attn_q.weight").is_none());
    }

    #[test]
    fn storage_type_falls_back_for_partial_blocks() {
        assert_eq!(storage_type(&[64], GgmlDType::Q4K), GgmlDType::F32);
        assert_eq!(storage_type(&[8, 512], GgmlDType::Q4K), GgmlDType::Q4K);
        assert_eq!(storage_type(&[8, 64], GgmlDType::Q4K), GgmlDType::Q8_0);
        assert_eq!(storage_type(&[8, 40], GgmlDType::Q8_0), GgmlDType::F16);
        assert_eq!(storage_type(&[8, 40], GgmlDType::F16), GgmlDType::F16);
    }

    fn header(tensors: u64, kvs: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(0x4655_4747u32.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(tensors.to_le_bytes());
        b.extend(kvs.to_le_bytes());
        b
    }

    fn kv_array(b: &mut Vec<u8>, key: &str, elem: u32, n: u64) {
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key.as_bytes());
        b.extend(9u32.to_le_bytes());
        b.extend(elem.to_le_bytes());
        b.extend(n.to_le_bytes());
    }

    #[test]
    fn prescan_rejects_hostile_headers() {
        use std::io::Cursor;
        // Huge declared counts.
        assert!(prescan(Cursor::new(header(u64::MAX, 0))).is_err());
        assert!(prescan(Cursor::new(header(0, 1 << 40))).is_err());
        // An array claiming 2^40 strings.
        let mut b = header(0, 1);
        kv_array(&mut b, "x", 8, 1 << 40);
        assert!(prescan(Cursor::new(b)).is_err());
        // An array of u8 longer than the file.
        let mut b = header(0, 1);
        kv_array(&mut b, "x", 0, 1000);
        assert!(prescan(Cursor::new(b)).is_err());
        // Deeply nested arrays.
        let mut b = header(0, 1);
        kv_array(&mut b, "x", 9, 1);
        b.extend(9u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(9u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        assert!(prescan(Cursor::new(b)).is_err());
        // A tensor whose dimensions overflow, one past the end of the file, and an empty one
        // (candle reads an empty tensor through a dangling pointer).
        for dims in [[u64::MAX, 4], [32, 32], [32, 0]] {
            let mut b = header(1, 0);
            b.extend(1u64.to_le_bytes());
            b.push(b'w');
            b.extend(2u32.to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(0u32.to_le_bytes());
            b.extend(0u64.to_le_bytes());
            b.resize(b.len() + 256, 0);
            assert!(prescan(Cursor::new(b)).is_err(), "{dims:?}");
        }
        // An alignment of 0, negative or not a power of two, whatever its integer type (a u8
        // 0 made candle divide by zero).
        let alignment = |ty: u32, value: &[u8]| {
            let mut b = header(0, 1);
            b.extend(17u64.to_le_bytes());
            b.extend(b"general.alignment");
            b.extend(ty.to_le_bytes());
            b.extend(value);
            b
        };
        for (ty, value) in [(0u32, vec![0u8]), (1, vec![0xf0]), (2, vec![3, 0]), (5, (-32i32).to_le_bytes().to_vec()), (4, 0u32.to_le_bytes().to_vec())] {
            assert!(prescan(Cursor::new(alignment(ty, &value))).is_err(), "type {ty}");
        }
        assert_eq!(prescan(Cursor::new(alignment(2, &64u16.to_le_bytes()))).unwrap(), 0);
        // Bad magic, truncated file, unknown value type.
        assert!(prescan(Cursor::new(b"GGML\x03\x00\x00\x00".to_vec())).is_err());
        assert!(prescan(Cursor::new(header(0, 1))).is_err());
        let mut b = header(0, 1);
        b.extend(1u64.to_le_bytes());
        b.push(b'k');
        b.extend(77u32.to_le_bytes());
        assert!(prescan(Cursor::new(b)).is_err());
        // A minimal valid file passes.
        let mut b = header(0, 1);
        b.extend(1u64.to_le_bytes());
        b.push(b'k');
        b.extend(4u32.to_le_bytes());
        b.extend(7u32.to_le_bytes());
        assert_eq!(prescan(Cursor::new(b)).unwrap(), 0);
    }
}
