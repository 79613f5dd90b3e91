//! Safetensors: the reference parser's rules, plus duplicate keys. (stub: to be implemented)

use crate::inspect::{FileCtx, FileSet, Sink};
use crate::inventory::{ShardIndexFacts, TensorInfo};
use needle_report::Rule;
use std::collections::BTreeMap;

pub static RULES: &[&Rule] = &[];

/// Checks one safetensors file's header; returns its tensors when the header could be read.
pub fn inspect(_ctx: &FileCtx, _sink: &mut Sink) -> Option<Vec<TensorInfo>> {
    None
}

/// Checks `model.safetensors.index.json` (and other `*.index.json`) against the shards.
pub fn check_index(_set: &FileSet, _tensors: &BTreeMap<String, Vec<TensorInfo>>, _sink: &mut Sink) -> Option<ShardIndexFacts> {
    None
}

/// Rows of the input embedding matrix, when a tensor that is clearly one is present.
pub fn embedding_rows(_tensors: &BTreeMap<String, Vec<TensorInfo>>) -> Option<u64> {
    None
}
