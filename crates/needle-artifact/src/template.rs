//! Chat templates: code execution, behavioural poisoning, content triggers. (stub)

use crate::inspect::{FileSet, Sink};
use crate::inventory::TemplateFacts;
use needle_report::Rule;

pub static RULES: &[&Rule] = &[];

/// Every chat template of a folder: `(file, key, source)`.
pub fn collect(_set: &FileSet, _sink: &mut Sink) -> Vec<(String, String, String)> {
    Vec::new()
}

pub fn facts(file: &str, key: &str, src: &str) -> TemplateFacts {
    TemplateFacts { file: file.into(), key: key.into(), bytes: src.len() as u64, sha256: String::new() }
}

pub fn check(_src: &str, _file: &str, _key: &str, _sink: &mut Sink) {}
