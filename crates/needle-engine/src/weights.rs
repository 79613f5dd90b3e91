//! Locating and opening the weights of a model folder: `model.safetensors`, or the shards
//! listed in `model.safetensors.index.json`, memory-mapped through candle.

use crate::{EngineError, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Most shard files an index may name.
pub const MAX_SHARDS: usize = 4096;

/// The safetensors files holding a model's weights, in a stable order.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|source| EngineError::Io { path: index.clone(), source })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| EngineError::Json { path: index.clone(), source })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| EngineError::Weights(format!("{}: no `weight_map` object", index.display())))?;
        let mut names = BTreeSet::new();
        for file in map.values() {
            let file = file
                .as_str()
                .ok_or_else(|| EngineError::Weights(format!("{}: weight_map value is not a string", index.display())))?;
            // A shard must be a plain file name inside the folder.
            let plain = Path::new(file).components().count() == 1
                && !file.contains(['/', '\\'])
                && file != ".."
                && file != "."
                && file.ends_with(".safetensors");
            if !plain {
                return Err(EngineError::Weights(format!("{}: shard name `{file}` is not a file in the folder", index.display())));
            }
            names.insert(file.to_string());
            if names.len() > MAX_SHARDS {
                return Err(EngineError::Weights(format!("{}: more than {MAX_SHARDS} shards", index.display())));
            }
        }
        let files: Vec<PathBuf> = names.into_iter().map(|n| dir.join(n)).collect();
        for f in &files {
            if !f.is_file() {
                return Err(EngineError::Weights(format!("shard {} is missing", f.display())));
            }
        }
        if files.is_empty() {
            return Err(EngineError::Weights(format!("{}: empty weight_map", index.display())));
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(EngineError::Weights(format!(
        "{}: no model.safetensors or model.safetensors.index.json (only safetensors weights are loaded)",
        dir.display()
    )))
}

/// Opens safetensors files memory-mapped; tensors are converted to `dtype` when fetched.
pub fn open_safetensors(files: &[PathBuf], dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    // SAFETY: the files are mapped read-only. candle copies each tensor out of the mapping when
    // it is fetched, so a concurrent modification of the file could at worst yield wrong values,
    // never memory unsafety in our code; the mapping lives as long as the VarBuilder.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(files, dtype, device) }?;
    Ok(vb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_with_traversal_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "../evil.safetensors"}}"#,
        )
        .unwrap();
        let err = safetensors_files(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a file in the folder"), "{err}");
    }

    #[test]
    fn missing_weights_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(safetensors_files(dir.path()).is_err());
    }
}
