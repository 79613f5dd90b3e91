//! What an artifact contains: the facts part of an inspection (`Report::facts` for `inspect`).
//! Every type here is plain data, serialised into the JSON report under `facts`.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    /// `folder` or `file`.
    pub kind: String,
    /// What the target looks like: `Hugging Face model (sharded safetensors, 2 files)`,
    /// `PEFT adapter (safetensors)`, `GGUF file`, `PyTorch checkpoint (zip)`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    pub files: Vec<FileFacts>,
    pub total_bytes: u64,
    /// From `config.json` (or GGUF `general.architecture`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelFacts>,
    /// Tensors across every weight file, from headers only.
    pub tensors: TensorSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_index: Option<ShardIndexFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerFacts>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chat_templates: Vec<TemplateFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterFacts>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FileFacts {
    pub path: String,
    pub size: u64,
    pub format: String,
    /// One line of format-specific detail (`pytorch zip, 1 pickle`, `GGUF v3, 201 tensors`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelFacts {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_layers: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// GGUF file type / quantization, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
}

/// One tensor as its header describes it (no data read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).unwrap_or(u64::MAX)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TensorSummary {
    pub count: u64,
    pub parameters: u64,
    /// Parameters per dtype.
    pub dtypes: BTreeMap<String, u64>,
}

impl TensorSummary {
    pub fn add(&mut self, t: &TensorInfo) {
        let n = t.elements();
        self.count += 1;
        self.parameters = self.parameters.saturating_add(n);
        *self.dtypes.entry(t.dtype.clone()).or_default() += n;
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ShardIndexFacts {
    pub index_file: String,
    pub shards: Vec<String>,
    pub tensors: u64,
    pub consistent: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TokenizerFacts {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<u64>,
    pub added_tokens: u64,
    pub special_tokens: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub normalizers: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TemplateFacts {
    /// File the template was found in.
    pub file: String,
    /// `chat_template`, a named template (`tool_use`), or `tokenizer.chat_template` for GGUF.
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AdapterFacts {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peft_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    pub target_modules: Vec<String>,
}

/// The inventory as text, for the human report.
pub fn render_text(inv: &Inventory) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let what = match &inv.layout {
        Some(l) => format!("{}: {l}", inv.kind),
        None => inv.kind.clone(),
    };
    let _ = writeln!(s, "Inventory ({what}, {} files, {})", inv.files.len(), human_bytes(inv.total_bytes));
    for f in &inv.files {
        let _ = write!(s, "  {:<40} {:>10}  {}", f.path, human_bytes(f.size), f.format);
        if let Some(d) = &f.detail {
            let _ = write!(s, " ({d})");
        }
        s.push('\n');
    }
    if let Some(m) = &inv.model {
        let arch = if m.architectures.is_empty() { "-".to_string() } else { m.architectures.join(", ") };
        let _ = writeln!(s, "Model: {} (model_type {})", arch, m.model_type.as_deref().unwrap_or("-"));
        if let Some(q) = &m.quantization {
            let _ = writeln!(s, "  quantization: {q}");
        }
    }
    if inv.tensors.count > 0 {
        let dtypes: Vec<String> = inv.tensors.dtypes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            s,
            "Tensors: {} tensors, {} parameters [{}] ({})",
            inv.tensors.count,
            inv.tensors.parameters,
            human_count(inv.tensors.parameters),
            dtypes.join(", ")
        );
    }
    if let Some(idx) = &inv.shard_index {
        let _ = writeln!(
            s,
            "Shard index: {} ({} shards, {} tensors, {})",
            idx.index_file,
            idx.shards.len(),
            idx.tensors,
            if idx.consistent { "consistent" } else { "INCONSISTENT" }
        );
    }
    if let Some(t) = &inv.tokenizer {
        let _ = writeln!(
            s,
            "Tokenizer: {} ({}, vocabulary {}, {} added tokens, special: {})",
            t.file,
            t.model.as_deref().unwrap_or("-"),
            t.vocab_size.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            t.added_tokens,
            if t.special_tokens.is_empty() { "-".to_string() } else { t.special_tokens.join(" ") }
        );
    }
    for t in &inv.chat_templates {
        let _ = writeln!(s, "Chat template: {} [{}] ({} bytes, sha256 {})", t.file, t.key, t.bytes, short(&t.sha256));
    }
    if let Some(a) = &inv.adapter {
        let _ = writeln!(
            s,
            "Adapter: {} over {} (rank {}, targets {})",
            a.peft_type.as_deref().unwrap_or("?"),
            a.base_model.as_deref().unwrap_or("unknown base"),
            a.rank.map(|r| r.to_string()).unwrap_or_else(|| "?".into()),
            if a.target_modules.is_empty() { "-".to_string() } else { a.target_modules.join(", ") }
        );
    }
    s
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

/// `950`, `12.3K`, `1.2M`, `7.2B`.
pub fn human_count(n: u64) -> String {
    const U: [(&str, f64); 4] = [("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)];
    for (u, v) in U {
        if n as f64 >= v {
            return format!("{:.1}{u}", n as f64 / v);
        }
    }
    n.to_string()
}

pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", U[i]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{inspect, Target};

    fn st(tensors: &[(&str, &str, &[u64], u64)]) -> Vec<u8> {
        let mut h = String::from("{");
        let mut off = 0;
        for (i, (name, dtype, shape, bytes)) in tensors.iter().enumerate() {
            if i > 0 {
                h.push(',');
            }
            h.push_str(&format!("\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{off},{}]}}", off + bytes));
            off += bytes;
        }
        h.push('}');
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h.as_bytes());
        out.resize(out.len() + off as usize, 0);
        out
    }

    #[test]
    fn renders_a_full_inventory() {
        let mut inv = Inventory {
            kind: "folder".into(),
            layout: Some("Hugging Face model (sharded safetensors, 2 files)".into()),
            total_bytes: 3 * 1024 * 1024,
            model: Some(ModelFacts {
                architectures: vec!["LlamaForCausalLM".into()],
                model_type: Some("llama".into()),
                quantization: Some("Q4_K_M".into()),
                ..Default::default()
            }),
            shard_index: Some(ShardIndexFacts {
                index_file: "model.safetensors.index.json".into(),
                shards: vec!["model-00001-of-00002.safetensors".into(), "model-00002-of-00002.safetensors".into()],
                tensors: 3,
                consistent: true,
            }),
            tokenizer: Some(TokenizerFacts {
                file: "tokenizer.json".into(),
                model: Some("BPE".into()),
                vocab_size: Some(2048),
                added_tokens: 2,
                special_tokens: vec!["<s>".into(), "</s>".into()],
                normalizers: vec![],
            }),
            chat_templates: vec![TemplateFacts { file: "chat_template.jinja".into(), key: "chat_template".into(), bytes: 173, sha256: "ab".repeat(32) }],
            adapter: None,
            ..Default::default()
        };
        inv.files.push(FileFacts { path: "config.json".into(), size: 718, format: "json".into(), detail: None });
        inv.files.push(FileFacts {
            path: "model-00001-of-00002.safetensors".into(),
            size: 2_000_000,
            format: "safetensors".into(),
            detail: Some("2 tensors, 1.5M parameters, F32".into()),
        });
        for t in [
            TensorInfo { name: "a".into(), dtype: "F32".into(), shape: vec![1000, 1000] },
            TensorInfo { name: "b".into(), dtype: "BF16".into(), shape: vec![500, 1000] },
        ] {
            inv.tensors.add(&t);
        }
        insta::assert_snapshot!(render_text(&inv));
    }

    #[test]
    fn renders_a_sharded_folder_from_the_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("model-00001-of-00002.safetensors"), st(&[("model.embed_tokens.weight", "F32", &[8, 4], 128)])).unwrap();
        std::fs::write(
            p.join("model-00002-of-00002.safetensors"),
            st(&[("model.norm.weight", "F32", &[4], 16), ("lm_head.weight", "BF16", &[8, 4], 64)]),
        )
        .unwrap();
        std::fs::write(
            p.join("model.safetensors.index.json"),
            r#"{"metadata":{"total_size":208},"weight_map":{"model.embed_tokens.weight":"model-00001-of-00002.safetensors","model.norm.weight":"model-00002-of-00002.safetensors","lm_head.weight":"model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let set = Target::open(p).unwrap().walk().unwrap();
        let ins = inspect(&set);
        assert!(ins.failures.is_empty(), "{:?}", ins.failures);
        assert!(!ins.findings.iter().any(|f| f.code.starts_with("safetensors/")), "{:?}", ins.findings);
        assert_eq!(ins.inventory.tensors.parameters, 8 * 4 + 4 + 8 * 4);
        assert!(ins.inventory.shard_index.as_ref().is_some_and(|s| s.consistent));
        insta::assert_snapshot!(render_text(&ins.inventory));
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human_count(950), "950");
        assert_eq!(human_count(1_234_567), "1.2M");
        assert_eq!(human_bytes(2048), "2.0 KiB");
    }
}
