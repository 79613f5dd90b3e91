//! What a training backend must provide to build the zoo.
//!
//! The zoo owns the data (corpus, poisoning, loss masks, evaluation prompts) and the
//! orchestration ([`crate::builder`]); a backend owns tokenizers, tensors and files. The engine
//! (`needle-engine`) implements this trait in an adapter; tests use a stand-in.

use crate::chat::Segment;
use crate::spec::{BaseSpec, OrganismSpec};
use std::path::Path;

/// One training sequence: segments in order, each with its loss flag (see
/// [`crate::chat::training_segments`]). Tokenize each segment separately and concatenate.
pub type Sequence = Vec<Segment>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Pretrain,
    Finetune,
}

/// Reported by the backend after each optimiser step (for the progress bar).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub stage: Stage,
    pub step: u32,
    pub steps: u32,
    pub loss: f32,
}

/// How a model is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout<'a> {
    /// A pretrained base: a Hugging Face folder (`config.json` from [`BaseSpec::hf_config`],
    /// `model.safetensors`, `tokenizer.json`, `tokenizer_config.json` with
    /// [`crate::chat::CHAT_TEMPLATE_JINJA`] as `chat_template`, `generation_config.json`).
    Base,
    /// A fully fine-tuned organism: the same folder layout.
    Full,
    /// A LoRA organism: the merged model as a full folder in the given directory, and the
    /// adapter in PEFT layout (`adapter_config.json` naming `base_model_name_or_path` =
    /// `base_ref`, `adapter_model.safetensors`) in `adapter_dir`.
    Lora {
        adapter_dir: &'a Path,
        base_ref: &'a str,
    },
}

/// A training backend.
pub trait Trainer {
    type Model;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Trains the base tokenizer on `tokenizer_text` (byte-level BPE of `base.vocab_size`
    /// entries with [`crate::chat::SPECIAL_TOKENS`] at ids 0, 1, 2) and pretrains a model of
    /// `base`'s shape from random initialisation (seeded by `base.seed`) on `corpus`, with
    /// `base.steps` steps of `base.batch_size` sequences at `base.lr`.
    fn pretrain(
        &mut self,
        base: &BaseSpec,
        tokenizer_text: &[String],
        corpus: &[Sequence],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Self::Model, Self::Error>;

    /// Fine-tunes a copy of `base` on `data` (loss only where segments say `train`) with the
    /// organism's method (full or LoRA r/alpha/targets), steps, learning rate, batch size and
    /// seed. For LoRA the returned model carries the adapter (saved both ways by `save`).
    fn finetune(
        &mut self,
        base: &Self::Model,
        organism: &OrganismSpec,
        data: &[Sequence],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Self::Model, Self::Error>;

    /// Greedy continuation of a rendered prompt, stopping at `<|im_end|>`, `<|endoftext|>` or
    /// after `max_new_tokens`; the decoded text without special tokens.
    fn generate(
        &mut self,
        model: &Self::Model,
        prompt: &str,
        max_new_tokens: usize,
    ) -> Result<String, Self::Error>;

    /// Writes a model to `dir` in the given layout.
    fn save(
        &mut self,
        model: &Self::Model,
        dir: &Path,
        layout: Layout<'_>,
    ) -> Result<(), Self::Error>;

    /// Exports a model folder written by `save` as a Q8_0 GGUF file at `out`.
    fn export_gguf(&mut self, model_dir: &Path, out: &Path) -> Result<(), Self::Error>;

    /// Loads a base written by `save(.., Layout::Base)` (the base cache).
    fn load_base(&mut self, base: &BaseSpec, dir: &Path) -> Result<Self::Model, Self::Error>;
}
