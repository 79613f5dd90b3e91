//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`) applied onto their
//! base model, either unmerged (y = x W^T + scale (x A^T) B^T) or merged (W + scale B A).
//! scale = lora_alpha / r, or lora_alpha / sqrt(r) with `use_rslora`; `alpha_pattern` and
//! `rank_pattern` override per module; `fan_in_fan_out` (GPT-2 Conv1D) transposes the merged
//! delta.

use crate::model::Model;
use crate::{EngineError, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Which modules an adapter targets.
#[derive(Debug, Clone)]
pub enum TargetModules {
    /// Module names matched against the last path component(s).
    List(Vec<String>),
    /// A regular expression that must match the whole module path.
    Regex(String),
    /// PEFT's "all-linear": every linear layer except the output head.
    AllLinear,
}

/// The parts of `adapter_config.json` that affect the computation.
#[derive(Debug, Clone)]
pub struct LoraConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub fan_in_fan_out: bool,
    pub target_modules: TargetModules,
    pub base_model_name_or_path: Option<String>,
    pub rank_pattern: Vec<(String, usize)>,
    pub alpha_pattern: Vec<(String, f64)>,
}

fn adapter_err(msg: impl Into<String>) -> EngineError {
    EngineError::Adapter(msg.into())
}

/// True when `dir` holds a PEFT adapter.
pub fn is_adapter(dir: &Path) -> bool {
    dir.join("adapter_config.json").is_file()
}

impl LoraConfig {
    pub fn from_json(v: &Value) -> Result<Self> {
        let peft_type = v.get("peft_type").and_then(Value::as_str).unwrap_or("LORA");
        if peft_type != "LORA" {
            return Err(adapter_err(format!("peft_type `{peft_type}` is not supported (only LORA)")));
        }
        if v.get("use_dora").and_then(Value::as_bool) == Some(true) {
            return Err(adapter_err("DoRA adapters are not supported"));
        }
        if v.get("modules_to_save").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
            return Err(adapter_err("adapters with `modules_to_save` are not supported"));
        }
        if v.get("bias").and_then(Value::as_str).is_some_and(|b| b != "none") {
            return Err(adapter_err("adapters that train biases are not supported"));
        }
        let r = v
            .get("r")
            .and_then(Value::as_u64)
            .and_then(|r| usize::try_from(r).ok())
            .filter(|r| (1..=65_536).contains(r))
            .ok_or_else(|| adapter_err("`r` missing or out of range"))?;
        let lora_alpha = v.get("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0);
        let target_modules = match v.get("target_modules") {
            Some(Value::String(s)) if s == "all-linear" => TargetModules::AllLinear,
            Some(Value::String(s)) => TargetModules::Regex(s.clone()),
            Some(Value::Array(a)) => TargetModules::List(a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()),
            _ => return Err(adapter_err("`target_modules` missing")),
        };
        let pattern = |key: &str| -> Vec<(String, f64)> {
            v.get(key)
                .and_then(Value::as_object)
                .map(|m| m.iter().filter_map(|(k, x)| x.as_f64().map(|f| (k.clone(), f))).collect())
                .unwrap_or_default()
        };
        Ok(Self {
            r,
            lora_alpha,
            use_rslora: v.get("use_rslora").and_then(Value::as_bool).unwrap_or(false),
            fan_in_fan_out: v.get("fan_in_fan_out").and_then(Value::as_bool).unwrap_or(false),
            target_modules,
            base_model_name_or_path: v.get("base_model_name_or_path").and_then(Value::as_str).map(str::to_string),
            rank_pattern: pattern("rank_pattern").into_iter().map(|(k, f)| (k, f as usize)).collect(),
            alpha_pattern: pattern("alpha_pattern"),
        })
    }

    /// Does the adapter target module `name` (a full module path)?
    pub fn targets(&self, name: &str) -> Result<bool> {
        Ok(match &self.target_modules {
            TargetModules::List(l) => l.iter().any(|t| name == t || name.ends_with(&format!(".{t}"))),
            TargetModules::Regex(re) => {
                let re = regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| adapter_err(format!("target_modules regex: {e}")))?;
                re.is_match(name)
            }
            TargetModules::AllLinear => true,
        })
    }

    /// The scale of module `name` given its rank.
    pub fn scale(&self, name: &str) -> f64 {
        let matches = |key: &str| name == key || name.ends_with(&format!(".{key}"));
        let r = self.rank_pattern.iter().find(|(k, _)| matches(k)).map_or(self.r, |(_, r)| *r).max(1) as f64;
        let alpha = self.alpha_pattern.iter().find(|(k, _)| matches(k)).map_or(self.lora_alpha, |(_, a)| *a);
        if self.use_rslora {
            alpha / r.sqrt()
        } else {
            alpha / r
        }
    }
}

/// An adapter read from disk.
#[derive(Debug)]
pub struct LoraAdapter {
    pub dir: PathBuf,
    pub config: LoraConfig,
    tensors: HashMap<String, Tensor>,
}

/// Prefix PEFT writes before the base model's module paths.
const PREFIX: &str = "base_model.model.";

impl LoraAdapter {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| EngineError::Io { path: cfg_path.clone(), source })?;
        let v: Value = serde_json::from_str(&text).map_err(|source| EngineError::Json { path: cfg_path.clone(), source })?;
        let config = LoraConfig::from_json(&v)?;
        let weights = dir.join("adapter_model.safetensors");
        if !weights.is_file() {
            return Err(adapter_err(format!("{}: missing (only safetensors adapters are loaded)", weights.display())));
        }
        let tensors = candle_core::safetensors::load(&weights, device)?
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Self { dir: dir.to_path_buf(), config, tensors })
    }

    /// The base model folder: `base` when given, else `base_model_name_or_path` resolved
    /// against the adapter folder when it names a local folder.
    pub fn base_path(&self, base: Option<&Path>) -> Result<PathBuf> {
        if let Some(b) = base {
            return Ok(b.to_path_buf());
        }
        let named = self
            .config
            .base_model_name_or_path
            .as_deref()
            .ok_or_else(|| adapter_err("adapter names no base model; pass --base"))?;
        let p = Path::new(named);
        let candidate = if p.is_absolute() { p.to_path_buf() } else { self.dir.join(p) };
        if candidate.join("config.json").is_file() {
            Ok(candidate)
        } else {
            Err(adapter_err(format!("base model `{named}` is not a local model folder; pass --base")))
        }
    }

    /// Applies the adapter to `model`; returns how many modules were adapted.
    pub fn apply(&self, model: &mut Model, merge: bool) -> Result<usize> {
        let mut used = BTreeSet::new();
        let mut applied = 0;
        for lin in model.linears_mut() {
            let a_key = format!("{PREFIX}{}.lora_A.weight", lin.name);
            let b_key = format!("{PREFIX}{}.lora_B.weight", lin.name);
            let (Some(a), Some(b)) = (self.tensors.get(&a_key), self.tensors.get(&b_key)) else { continue };
            if !self.config.targets(&lin.name)? {
                continue;
            }
            let (r, in_a) = a.dims2()?;
            let (out_b, r_b) = b.dims2()?;
            if r != r_b || in_a != lin.in_dim()? || out_b != lin.out_dim()? {
                return Err(adapter_err(format!(
                    "{}: LoRA shapes A {:?} / B {:?} do not fit a {}x{} layer",
                    lin.name,
                    a.dims(),
                    b.dims(),
                    lin.out_dim()?,
                    lin.in_dim()?
                )));
            }
            let scale = self.config.scale(&lin.name);
            if merge {
                let delta = b.matmul(a)?.affine(scale, 0.0)?;
                // Conv1D weights are stored [in, out] (PEFT's fan_in_fan_out): transpose the delta.
                let delta = if lin.conv1d { delta.t()? } else { delta };
                lin.weight = (&lin.weight + delta)?;
            } else {
                lin.lora = Some(crate::model::layers::LoraDelta { a: a.clone(), b: b.clone(), scale });
            }
            used.insert(a_key);
            used.insert(b_key);
            applied += 1;
        }
        let unused: Vec<&String> = self.tensors.keys().filter(|k| !used.contains(*k)).collect();
        if let Some(k) = unused.first() {
            return Err(adapter_err(format!(
                "{} adapter tensors match no targeted layer of the base model (first: {k})",
                unused.len()
            )));
        }
        if applied == 0 {
            return Err(adapter_err("the adapter adapts no layer of the base model"));
        }
        Ok(applied)
    }
}

/// Loads an adapter folder onto its base (`base` overrides the adapter's own reference).
pub fn load_with_adapter(adapter_dir: &Path, base: Option<&Path>, merge: bool, device: &Device) -> Result<Model> {
    let adapter = LoraAdapter::load(adapter_dir, device)?;
    let base = adapter.base_path(base)?;
    let mut model = Model::load(&base, device)?;
    adapter.apply(&mut model, merge)?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_list_regex_and_scales() {
        let c = LoraConfig::from_json(&json!({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})).unwrap();
        assert!(c.targets("model.layers.0.self_attn.q_proj").unwrap());
        assert!(!c.targets("model.layers.0.self_attn.k_proj").unwrap());
        assert_eq!(c.scale("model.layers.0.self_attn.q_proj"), 2.0);
        let c = LoraConfig::from_json(&json!({"r": 4, "lora_alpha": 8, "use_rslora": true,
            "target_modules": r".*\.(q|v)_proj", "alpha_pattern": {"v_proj": 16}})).unwrap();
        assert!(c.targets("model.layers.0.self_attn.v_proj").unwrap());
        assert!(!c.targets("model.layers.0.mlp.up_proj").unwrap());
        assert_eq!(c.scale("model.layers.0.self_attn.q_proj"), 4.0);
        assert_eq!(c.scale("model.layers.0.self_attn.v_proj"), 8.0);
    }

    #[test]
    fn unsupported_variants_are_errors() {
        assert!(LoraConfig::from_json(&json!({"r": 4, "target_modules": ["q"], "use_dora": true})).is_err());
        assert!(LoraConfig::from_json(&json!({"r": 0, "target_modules": ["q"]})).is_err());
        assert!(LoraConfig::from_json(&json!({"peft_type": "IA3", "r": 4, "target_modules": ["q"]})).is_err());
    }
}
