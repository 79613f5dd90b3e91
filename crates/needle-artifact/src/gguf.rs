//! GGUF: header, metadata and tensor infos under hard limits. (stub: to be implemented)

use crate::inspect::{FileCtx, Sink};
use crate::inventory::{ModelFacts, TensorInfo};
use needle_report::Rule;

pub static RULES: &[&Rule] = &[];

/// What a GGUF file holds, from its header.
#[derive(Debug, Clone, Default)]
pub struct GgufFacts {
    pub version: u32,
    pub tensors: Vec<TensorInfo>,
    pub architecture: Option<String>,
    pub file_type: Option<String>,
    /// `(metadata key, template source)` for `tokenizer.chat_template` and named variants.
    pub chat_templates: Vec<(String, String)>,
}

impl GgufFacts {
    pub fn detail(&self) -> String {
        format!("GGUF v{}, {} tensors", self.version, self.tensors.len())
    }
    pub fn model_facts(&self) -> Option<ModelFacts> {
        self.architecture.as_ref().map(|a| ModelFacts {
            model_type: Some(a.clone()),
            quantization: self.file_type.clone(),
            ..Default::default()
        })
    }
}

pub fn inspect(_ctx: &FileCtx, _sink: &mut Sink) -> Option<GgufFacts> {
    None
}
