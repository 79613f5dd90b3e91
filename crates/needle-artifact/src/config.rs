//! Configs and code: `auto_map`, `trust_remote_code`, `*.py`, executables. (stub: to be implemented)

use crate::detect::Format;
use crate::inspect::{FileCtx, FileSet, Sink};
use crate::inventory::{AdapterFacts, ModelFacts};
use needle_report::Rule;

pub static RULES: &[&Rule] = &[];

#[derive(Debug, Clone, Default)]
pub struct ConfigFacts {
    pub model: Option<ModelFacts>,
    pub adapter: Option<AdapterFacts>,
}

pub fn inspect_folder(_set: &FileSet, _sink: &mut Sink) -> ConfigFacts {
    ConfigFacts::default()
}

/// A native executable or script in the artifact.
pub fn executable(_ctx: &FileCtx, _format: Format, _sink: &mut Sink) {}
