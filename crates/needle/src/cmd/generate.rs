//! `needle generate`: run a model folder, adapter or GGUF file on one prompt.

use anyhow::Context;
use clap::{Args, ValueEnum};
use needle_engine::chat::{Message, RenderOptions};
use needle_engine::generate::{generate, FinishReason, GenerationRequest};
use needle_engine::open::{open, OpenOptions};
use needle_engine::sampler::SamplingParams;
use needle_report::ExitStatus;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenerateFormat {
    /// The generated text only
    Text,
    /// A JSON object: prompt, token ids, text, finish reason
    Json,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model folder, PEFT adapter folder or GGUF file
    pub path: PathBuf,
    /// The prompt (raw text unless --chat)
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template
    #[arg(long)]
    pub chat: bool,
    /// Most tokens to generate
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_new_tokens: u32,
    /// Sampling temperature; 0 (the default) is greedy decoding
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep only the K most likely tokens when sampling (0: off)
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling mass (1: off)
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep generating past end-of-sequence tokens
    #[arg(long)]
    pub ignore_eos: bool,
    /// Base model folder for an adapter (default: the adapter's base_model_name_or_path)
    #[arg(long, value_name = "PATH")]
    pub base: Option<PathBuf>,
    /// Merge the adapter into the base weights before running
    #[arg(long)]
    pub merge: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = GenerateFormat::Text)]
    pub format: GenerateFormat,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<ExitStatus> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        anyhow::bail!("--temperature must be a finite number >= 0");
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        anyhow::bail!("--top-p must be in (0, 1]");
    }
    let device = needle_engine::candle_core::Device::Cpu;
    let opts = OpenOptions { base: args.base.clone(), merge_adapter: args.merge };
    let opened = open(&args.path, &opts, &device).with_context(|| format!("loading {}", args.path.display()))?;
    let tokenizer = opened
        .tokenizer
        .as_ref()
        .with_context(|| format!("{}: no tokenizer.json to encode the prompt with", args.path.display()))?;
    let (prompt_text, add_special) = if args.chat {
        let template = opened
            .chat_template
            .as_ref()
            .with_context(|| format!("{}: --chat given but the model has no chat template", args.path.display()))?;
        let rendered = template
            .render(&[Message::user(args.prompt.clone())], &RenderOptions { add_generation_prompt: true, ..Default::default() })
            .context("rendering the chat template")?;
        (rendered, false)
    } else {
        (args.prompt.clone(), true)
    };
    let prompt_ids = tokenizer.encode(&prompt_text, add_special).context("tokenizing the prompt")?;
    if prompt_ids.is_empty() {
        anyhow::bail!("the prompt encodes to no tokens");
    }
    let model = &opened.model;
    let sampling = if args.temperature == 0.0 {
        SamplingParams::greedy()
    } else {
        SamplingParams { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed, ..SamplingParams::default() }
    };
    let mut stop_tokens = needle_engine::generate::stop_tokens(model, tokenizer);
    if args.ignore_eos {
        stop_tokens.clear();
    }
    let request = GenerationRequest { prompt: prompt_ids.clone(), max_new_tokens: args.max_new_tokens as usize, sampling, stop_tokens };
    let out = generate(model, std::slice::from_ref(&request))?.pop().context("no output")?;
    let text = tokenizer.decode(&out.tokens, true).context("decoding the output")?;
    match args.format {
        GenerateFormat::Text => println!("{text}"),
        GenerateFormat::Json => {
            let v = serde_json::json!({
                "model": args.path.display().to_string(),
                "loaded_as": opened.kind,
                "architecture": model.config.architecture,
                "prompt": prompt_text,
                "prompt_token_ids": prompt_ids,
                "token_ids": out.tokens,
                "text": text,
                "finish_reason": match out.finish { FinishReason::Stop => "stop", FinishReason::Length => "length" },
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(ExitStatus::Clean)
}
