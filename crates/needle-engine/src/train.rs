//! Training small models: a freshly initialised (seeded) model from a config, next-token
//! cross-entropy with a loss mask (all tokens or answer-only), AdamW with gradient clipping by
//! global norm, and saving in the Hugging Face layout transformers loads.
//!
//! The model runs with composite (differentiable) ops: candle's fused softmax/RMSNorm/LayerNorm
//! have no backward pass and would silently leave most parameters untrained.

use crate::config::ModelConfig;
use crate::model::{Capture, Model, TokenBatch};
use crate::sampler::Rng;
use crate::{EngineError, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// Optimiser settings.
#[derive(Debug, Clone)]
pub struct TrainParams {
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip gradients to this global L2 norm (None: no clipping).
    pub max_grad_norm: Option<f64>,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self { learning_rate: 1e-3, weight_decay: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8, max_grad_norm: Some(1.0) }
    }
}

/// Token sequences with a per-token loss mask: position j contributes the loss of predicting
/// token j from the tokens before it when `loss_mask[j]` is 1.
#[derive(Debug, Clone)]
pub struct TrainBatch {
    pub tokens: TokenBatch,
    pub loss_mask: Vec<u8>,
}

impl TrainBatch {
    /// Right-pads (prompt, answer) examples; the loss covers every token after the first, or
    /// only the answer's tokens with `answer_only`.
    pub fn from_examples(examples: &[(Vec<u32>, Vec<u32>)], pad: u32, answer_only: bool) -> Result<Self> {
        let len = examples.iter().map(|(p, a)| p.len() + a.len()).max().unwrap_or(0);
        if examples.is_empty() || len < 2 {
            return Err(EngineError::Input("training needs examples of at least two tokens".into()));
        }
        let (mut ids, mut mask, mut loss) = (Vec::new(), Vec::new(), Vec::new());
        for (p, a) in examples {
            let n = p.len() + a.len();
            ids.extend(p.iter().chain(a).copied().chain(std::iter::repeat_n(pad, len - n)));
            mask.extend(std::iter::repeat_n(1u8, n).chain(std::iter::repeat_n(0, len - n)));
            for j in 0..len {
                let on = j < n && j > 0 && (!answer_only || j >= p.len());
                loss.push(on as u8);
            }
        }
        Ok(Self { tokens: TokenBatch::new(ids, mask, examples.len(), len)?, loss_mask: loss })
    }
}

/// Statistics of one optimisation step.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// A model with its trainable variables and optimiser.
pub struct Trainer {
    pub model: Model,
    varmap: VarMap,
    opt: AdamW,
    params: TrainParams,
    lora: Option<LoraState>,
}

/// LoRA fine-tuning settings, with PEFT's semantics: each targeted linear layer gains
/// `scale * B·A` (scale = alpha / r), A drawn at random, B zero, the base frozen.
#[derive(Debug, Clone)]
pub struct LoraTrainSpec {
    pub r: usize,
    pub alpha: f64,
    /// Module names (the last path component, e.g. `q_proj`, `c_attn`) to adapt.
    pub targets: Vec<String>,
    pub seed: u64,
}

struct LoraState {
    spec: LoraTrainSpec,
    /// The frozen base weights under Hugging Face names (for the merged save).
    base: HashMap<String, Tensor>,
    /// Adapted modules: (module path, GPT-2 Conv1D layout).
    adapted: Vec<(String, bool)>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer").field("model", &self.model.config.architecture).finish()
    }
}

/// Fills `t`'s shape with N(0, std) from a seeded generator.
fn seeded_normal(rng: &mut Rng, shape: &[usize], std: f64, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        // Box-Muller.
        let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        v.push((r * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32);
        v.push((r * (2.0 * std::f64::consts::PI * u2).sin() * std) as f32);
    }
    v.truncate(n);
    Ok(Tensor::from_vec(v, shape, device)?)
}

impl Trainer {
    /// A freshly initialised model: weight matrices N(0, 0.02) from `seed`, norms one (Gemma:
    /// zero, as its norms scale by 1 + w), biases zero.
    pub fn new_random(config: &Value, seed: u64, params: TrainParams, device: &Device) -> Result<Self> {
        crate::init_threads();
        let cfg = ModelConfig::from_json(config)?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let mut model = Model::from_var_builder(cfg, &vb, device)?;
        model.set_fast_kernels(false);
        let mut rng = Rng::new(seed);
        {
            let data = varmap.data().lock().map_err(|_| EngineError::Weights("variable map poisoned".into()))?;
            let mut names: Vec<&String> = data.keys().collect();
            names.sort();
            for name in names {
                let var = &data[name];
                if var.rank() == 2 && name.ends_with(".weight") {
                    let std = if name.ends_with("wpe.weight") { 0.01 } else { crate::model::layers::INIT_STD };
                    var.set(&seeded_normal(&mut rng, var.dims(), std, device)?)?;
                }
            }
        }
        Self::with_varmap(model, varmap, params)
    }

    /// Continues training a model folder (its weights become the variables).
    pub fn from_pretrained(dir: &Path, params: TrainParams, device: &Device) -> Result<Self> {
        crate::init_threads();
        let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let mut model = Model::from_var_builder(cfg, &vb, device)?;
        model.set_fast_kernels(false);
        let files = crate::weights::safetensors_files(dir)?;
        let src = crate::weights::open_safetensors(&files, DType::F32, device)?;
        {
            let data = varmap.data().lock().map_err(|_| EngineError::Weights("variable map poisoned".into()))?;
            for (name, var) in data.iter() {
                let t = src.get(var.dims(), name).map_err(|e| EngineError::Weights(format!("{name}: {e}")))?;
                var.set(&t)?;
            }
        }
        Self::with_varmap(model, varmap, params)
    }

    fn with_varmap(model: Model, varmap: VarMap, params: TrainParams) -> Result<Self> {
        let opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: params.learning_rate,
                beta1: params.beta1,
                beta2: params.beta2,
                eps: params.eps,
                weight_decay: params.weight_decay,
            },
        )?;
        Ok(Self { model, varmap, opt, params, lora: None })
    }

    /// LoRA fine-tuning over frozen `base` weights (Hugging Face names, e.g. the detached
    /// variables of a pretrained [`Trainer`]): only the adapter matrices are variables.
    pub fn new_lora(config: &Value, base: HashMap<String, Tensor>, spec: LoraTrainSpec, params: TrainParams, device: &Device) -> Result<Self> {
        crate::init_threads();
        if spec.r == 0 {
            return Err(EngineError::Input("LoRA rank must be at least 1".into()));
        }
        let mut model = Model::from_tensors(config, base.clone(), device)?;
        model.set_fast_kernels(false);
        let varmap = VarMap::new();
        let mut rng = Rng::new(spec.seed);
        let scale = spec.alpha / spec.r as f64;
        let mut adapted = Vec::new();
        {
            let mut data = varmap.data().lock().map_err(|_| EngineError::Weights("variable map poisoned".into()))?;
            for lin in model.linears_mut() {
                let module = lin.name.rsplit('.').next().unwrap_or(&lin.name);
                if !spec.targets.iter().any(|t| t == module) {
                    continue;
                }
                let (inp, out) = (lin.in_dim()?, lin.out_dim()?);
                // PEFT's default: A ~ kaiming-uniform(a = sqrt 5) = U(-1/sqrt(in), 1/sqrt(in)).
                let bound = 1.0 / (inp as f64).sqrt();
                let a_vals: Vec<f32> = (0..spec.r * inp).map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32).collect();
                let a = Var::from_tensor(&Tensor::from_vec(a_vals, (spec.r, inp), device)?)?;
                let b = Var::zeros((out, spec.r), DType::F32, device)?;
                lin.lora = Some(crate::model::layers::LoraDelta { a: a.as_tensor().clone(), b: b.as_tensor().clone(), scale });
                data.insert(format!("{}.lora_A.weight", lin.name), a);
                data.insert(format!("{}.lora_B.weight", lin.name), b);
                adapted.push((lin.name.clone(), lin.conv1d));
            }
        }
        if adapted.is_empty() {
            return Err(EngineError::Input(format!("LoRA targets {:?} match no linear layer of the model", spec.targets)));
        }
        let mut t = Self::with_varmap(model, varmap, params)?;
        t.lora = Some(LoraState { spec, base, adapted });
        Ok(t)
    }

    /// True for a LoRA trainer ([`Trainer::new_lora`]).
    pub fn is_lora(&self) -> bool {
        self.lora.is_some()
    }

    /// The model's weights under Hugging Face names: the variables, or for LoRA the base with
    /// the adapter merged in.
    pub fn weights(&self) -> Result<HashMap<String, Tensor>> {
        let Some(l) = &self.lora else {
            return Ok(self.variables()?.into_iter().map(|(k, v)| (k, v.as_tensor().detach())).collect());
        };
        let vars: HashMap<String, Var> = self.variables()?.into_iter().collect();
        let mut out = l.base.clone();
        let scale = l.spec.alpha / l.spec.r as f64;
        for (name, conv1d) in &l.adapted {
            let get = |k: String| vars.get(&k).map(|v| v.as_tensor().detach()).ok_or_else(|| EngineError::Weights(format!("missing {k}")));
            let a = get(format!("{name}.lora_A.weight"))?;
            let b = get(format!("{name}.lora_B.weight"))?;
            let delta = b.matmul(&a)?.affine(scale, 0.0)?;
            let delta = if *conv1d { delta.t()?.contiguous()? } else { delta };
            let key = format!("{name}.weight");
            let w = out.get(&key).ok_or_else(|| EngineError::Weights(format!("base lacks {key}")))?;
            let merged = (w + delta)?;
            out.insert(key, merged);
        }
        Ok(out)
    }

    /// Writes the LoRA adapter as a PEFT folder (`adapter_config.json` naming `base_ref` as
    /// `base_model_name_or_path`, `adapter_model.safetensors`).
    pub fn save_adapter(&self, dir: &Path, base_ref: &str) -> Result<()> {
        let Some(l) = &self.lora else {
            return Err(EngineError::Input("not a LoRA trainer".into()));
        };
        std::fs::create_dir_all(dir).map_err(|source| EngineError::Io { path: dir.to_path_buf(), source })?;
        let tensors: HashMap<String, Tensor> =
            self.variables()?.into_iter().map(|(k, v)| (format!("base_model.model.{k}"), v.as_tensor().detach())).collect();
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let st_path = dir.join("adapter_model.safetensors");
        safetensors::tensor::serialize_to_file(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta), &st_path)
            .map_err(|e| EngineError::Weights(format!("{}: {e}", st_path.display())))?;
        let conv1d = l.adapted.iter().any(|(_, c)| *c);
        let cfg = json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_ref,
            "r": l.spec.r,
            "lora_alpha": l.spec.alpha,
            "lora_dropout": 0.0,
            "target_modules": l.spec.targets,
            "fan_in_fan_out": conv1d,
            "bias": "none",
            "use_rslora": false,
            "use_dora": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": null,
        });
        let path = dir.join("adapter_config.json");
        let text = serde_json::to_string_pretty(&cfg).map_err(|source| EngineError::Json { path: path.clone(), source })?;
        write(&path, text.as_bytes())
    }

    /// Trainable variables by Hugging Face name.
    pub fn variables(&self) -> Result<Vec<(String, Var)>> {
        let data = self.varmap.data().lock().map_err(|_| EngineError::Weights("variable map poisoned".into()))?;
        let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.params.learning_rate = lr;
        self.opt.set_learning_rate(lr);
    }

    /// Mean next-token cross-entropy over the positions the loss mask selects.
    pub fn loss(&self, batch: &TrainBatch) -> Result<Tensor> {
        let (b, t) = (batch.tokens.batch, batch.tokens.len);
        if batch.loss_mask.len() != b * t || t < 2 {
            return Err(EngineError::Input("loss mask does not match the batch".into()));
        }
        let logits = self.model.forward(&batch.tokens, None, &Capture::logits())?.logits;
        let dev = self.model.device();
        let pred = logits.narrow(1, 0, t - 1)?;
        let logp = candle_nn::ops::log_softmax(&pred, D::Minus1)?;
        let mut targets = Vec::with_capacity(b * (t - 1));
        let mut weights = Vec::with_capacity(b * (t - 1));
        for r in 0..b {
            for j in 1..t {
                targets.push(batch.tokens.ids[r * t + j]);
                weights.push(f32::from(batch.loss_mask[r * t + j]));
            }
        }
        let total: f32 = weights.iter().sum();
        if total == 0.0 {
            return Err(EngineError::Input("the loss mask selects no token".into()));
        }
        let targets = Tensor::from_vec(targets, (b, t - 1, 1), dev)?;
        let weights = Tensor::from_vec(weights, (b, t - 1), dev)?;
        let picked = logp.gather(&targets, 2)?.squeeze(2)?;
        Ok((picked.mul(&weights)?.sum_all()?.neg()? / f64::from(total))?)
    }

    /// One AdamW step on `batch`, with gradient clipping.
    pub fn step(&mut self, batch: &TrainBatch) -> Result<StepStats> {
        let loss = self.loss(batch)?;
        let mut grads = loss.backward()?;
        let vars = self.varmap.all_vars();
        let mut sq = 0f64;
        for v in &vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
            }
        }
        let norm = sq.sqrt();
        if let Some(max) = self.params.max_grad_norm {
            if norm > max && norm.is_finite() {
                let f = max / (norm + 1e-6);
                for v in &vars {
                    if let Some(g) = grads.remove(v.as_tensor()) {
                        grads.insert(v.as_tensor(), g.affine(f, 0.0)?);
                    }
                }
            }
        }
        self.opt.step(&grads)?;
        Ok(StepStats { loss: loss.to_scalar::<f32>()?, grad_norm: norm as f32 })
    }

    /// Writes `dir` as a Hugging Face model folder: config.json, model.safetensors (HF names,
    /// f32, `format: pt`), generation_config.json, and the tokenizer files of `tokenizer_from`
    /// (tokenizer.json, tokenizer_config.json, chat_template.jinja, special_tokens_map.json)
    /// when given.
    pub fn save(&self, dir: &Path, tokenizer_from: Option<&Path>) -> Result<()> {
        save_model_folder(&self.model, &self.weights()?, dir, tokenizer_from)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })
}

fn save_model_folder(model: &Model, tensors: &HashMap<String, Tensor>, dir: &Path, tokenizer_from: Option<&Path>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| EngineError::Io { path: dir.to_path_buf(), source })?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let st_path = dir.join("model.safetensors");
    safetensors::tensor::serialize_to_file(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta), &st_path)
        .map_err(|e| EngineError::Weights(format!("{}: {e}", st_path.display())))?;

    let cfg = &model.config;
    let mut raw = cfg.raw.clone();
    if let Some(o) = raw.as_object_mut() {
        o.insert("architectures".into(), json!([cfg.architecture]));
        o.insert("dtype".into(), json!("float32"));
        o.insert("tie_word_embeddings".into(), json!(cfg.tie_word_embeddings));
    }
    let text = serde_json::to_string_pretty(&raw).map_err(|source| EngineError::Json { path: dir.join("config.json"), source })?;
    write(&dir.join("config.json"), text.as_bytes())?;

    let mut gen = serde_json::Map::new();
    if let Some(b) = cfg.bos_token_id {
        gen.insert("bos_token_id".into(), json!(b));
    }
    match cfg.eos_token_ids.as_slice() {
        [] => {}
        [one] => {
            gen.insert("eos_token_id".into(), json!(one));
        }
        many => {
            gen.insert("eos_token_id".into(), json!(many));
        }
    }
    if let Some(p) = cfg.pad_token_id {
        gen.insert("pad_token_id".into(), json!(p));
    }
    let gen_path = dir.join("generation_config.json");
    let text = serde_json::to_string_pretty(&Value::Object(gen)).map_err(|source| EngineError::Json { path: gen_path.clone(), source })?;
    write(&gen_path, text.as_bytes())?;

    if let Some(src) = tokenizer_from {
        for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"] {
            let from = src.join(name);
            if from.is_file() {
                std::fs::copy(&from, dir.join(name)).map_err(|source| EngineError::Io { path: from.clone(), source })?;
            }
        }
    }
    Ok(())
}
