//! Opening whatever a user points at: a model folder, a PEFT adapter folder (onto its base) or
//! a GGUF file, with its tokenizer and chat template when present.

use crate::chat::ChatTemplate;
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::{EngineError, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// How to open a model.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Base model folder for an adapter (overrides `base_model_name_or_path`).
    pub base: Option<PathBuf>,
    /// Merge an adapter into the base weights instead of running it unmerged.
    pub merge_adapter: bool,
}

/// A runnable model with its text side.
#[derive(Debug)]
pub struct Opened {
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    pub chat_template: Option<ChatTemplate>,
    /// What was loaded, for messages: "model folder", "adapter over <base>", "GGUF".
    pub kind: String,
}

fn text_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Text(e.to_string())
}

fn folder_text(dirs: &[&Path]) -> Result<(Option<Tokenizer>, Option<ChatTemplate>)> {
    let mut tok = None;
    let mut chat = None;
    for d in dirs {
        if tok.is_none() && d.join("tokenizer.json").is_file() {
            tok = Some(Tokenizer::from_folder(d).map_err(text_err)?);
        }
        if chat.is_none() {
            match ChatTemplate::from_folder(d, None) {
                Ok(t) => chat = Some(t),
                Err(crate::chat::ChatError::Missing(_)) => {}
                Err(e) => return Err(text_err(e)),
            }
        }
    }
    Ok((tok, chat))
}

/// Opens a model folder, an adapter folder or a `.gguf` file on `device`.
pub fn open(path: &Path, opts: &OpenOptions, device: &Device) -> Result<Opened> {
    crate::init_threads();
    if path.is_file() {
        let gg = crate::gguf::load_gguf(path).map_err(text_err)?;
        let model = Model::from_tensors(&gg.config, gg.tensors, device)?;
        return Ok(Opened { model, tokenizer: Some(gg.tokenizer), chat_template: gg.chat_template, kind: "GGUF".into() });
    }
    if !path.is_dir() {
        return Err(EngineError::Io { path: path.to_path_buf(), source: std::io::Error::from(std::io::ErrorKind::NotFound) });
    }
    if crate::lora::is_adapter(path) {
        let adapter = crate::lora::LoraAdapter::load(path, device)?;
        let base = adapter.base_path(opts.base.as_deref())?;
        let mut model = Model::load(&base, device)?;
        adapter.apply(&mut model, opts.merge_adapter)?;
        let (tokenizer, chat_template) = folder_text(&[path, &base])?;
        return Ok(Opened { model, tokenizer, chat_template, kind: format!("adapter over {}", base.display()) });
    }
    let model = Model::load(path, device)?;
    let (tokenizer, chat_template) = folder_text(&[path])?;
    Ok(Opened { model, tokenizer, chat_template, kind: "model folder".into() })
}
