//! The white-box LM engine: Hugging Face-format causal language models run on candle with
//! everything a scanner needs exposed (logits at every position, attention probabilities per
//! layer and head, hidden states), batched decoding with a KV cache, and training of small
//! models.
//!
//! Model side: [`config`], [`weights`], [`model`], [`lora`], [`generate`], [`train`].
//! Text side: [`tokenizer`], [`chat`], [`sampler`], [`gguf`].
//!
//! Everything runs in f32 on the CPU by default (weights stored as f16/bf16 are widened on
//! load). Call [`init_threads`] once before heavy work: on small machines candle's thread pool
//! spins and a single thread is faster (see its docs).

pub mod chat;
pub mod config;
pub mod generate;
pub mod gguf;
pub mod lora;
pub mod model;
pub mod open;
pub mod sampler;
pub mod tokenizer;
pub mod train;
pub mod weights;

/// The tensor library, re-exported so callers need not depend on it themselves.
pub use candle_core;
pub use candle_nn;

use std::path::PathBuf;

/// Errors of the model side of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The architecture named in config.json is not one the engine implements.
    #[error("unsupported architecture `{0}` (supported: {supported})", supported = config::SUPPORTED.join(", "))]
    Unsupported(String),
    /// config.json is missing a field, has a wrong type or an out-of-range value.
    #[error("config: {0}")]
    Config(String),
    /// Weights are missing, misshapen or inconsistent with the config.
    #[error("weights: {0}")]
    Weights(String),
    /// A PEFT adapter could not be applied.
    #[error("adapter: {0}")]
    Adapter(String),
    /// Tokenizer, chat template or GGUF reading failed.
    #[error("{0}")]
    Text(String),
    /// The caller passed an input the model cannot run (empty batch, too long, bad token id).
    #[error("input: {0}")]
    Input(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Chooses candle's CPU thread count once per process, before the first tensor operation.
///
/// Measured on the 2-vCPU build machines with `bench/engine` (tiny llama, batch 4 x 32 tokens):
/// prefill 14.3k tokens/s with one thread against 6.5k with two, decode equal; the shared notes
/// saw the same for training steps (0.33 s against 2.08 s). candle's pool spins, so one thread
/// is the default there. Unless the user already set
/// `CANDLE_NUM_THREADS` (or `RAYON_NUM_THREADS`), this sets it to `NEEDLE_THREADS` when given,
/// else to 1 on machines with at most 2 logical CPUs and leaves candle's default otherwise.
pub fn init_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("CANDLE_NUM_THREADS").is_some()
            || std::env::var_os("RAYON_NUM_THREADS").is_some()
        {
            return;
        }
        let chosen = match std::env::var("NEEDLE_THREADS") {
            Ok(v) if v.parse::<usize>().is_ok_and(|n| n > 0) => Some(v),
            _ => {
                let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
                (cpus <= 2).then(|| "1".to_string())
            }
        };
        if let Some(n) = chosen {
            // SAFETY-free in 2021 edition: set before any candle thread pool is created, once.
            std::env::set_var("CANDLE_NUM_THREADS", &n);
            std::env::set_var("RAYON_NUM_THREADS", &n);
        }
    });
}
