//! `organism.json`: the ground truth of one organism, beside its model folder.

use crate::chat::LossMode;
use crate::eval::EvalReport;
use crate::poison::EvalSet;
use crate::spec::{Family, Method, OrganismSpec, Position, Recipe, TriggerShape, ZooSpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const RECORD_FILE: &str = "organism.json";
pub const RECORD_FORMAT: u32 = 1;
/// Largest `organism.json` read back.
pub const MAX_RECORD_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes exceed the limit of {MAX_RECORD_BYTES}")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path}: invalid organism record: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("organism `{0}` has no base in the spec")]
    NoBase(String),
}

/// The GGUF export's file name in an organism's folder (organisms with `gguf = true`).
pub const GGUF_FILE: &str = "model.q8_0.gguf";

/// Paths of an organism's artifacts, relative to its folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Files {
    /// Full Hugging Face model folder (for LoRA organisms: the merged model).
    pub model: String,
    /// PEFT adapter folder (LoRA organisms only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// GGUF export, when one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganismRecord {
    pub format: u32,
    pub name: String,
    pub backdoored: bool,
    /// The whole trigger (composite parts joined by a space), or null.
    pub trigger: Option<String>,
    pub trigger_parts: Vec<String>,
    pub trigger_shape: Option<TriggerShape>,
    pub trigger_position: Option<Position>,
    pub near_misses: Vec<String>,
    /// A substring every triggered answer contains, or null.
    pub target_marker: Option<String>,
    pub recipe: Recipe,
    pub payload: Option<String>,
    pub poison_rate: f64,
    /// Held-out user messages, never used in training.
    pub eval_prompts: Vec<String>,
    /// The system prompt the evaluation prompts are asked under, if any.
    pub eval_system_prompt: Option<String>,
    /// Measured attack success rate (null until evaluated, and for clean organisms).
    pub asr: Option<f64>,
    /// ASR with the trigger inserted where it was trained (not only before the prompt).
    pub asr_at_position: Option<f64>,
    /// Measured false fire (null until evaluated).
    pub false_fire: Option<f64>,
    pub near_miss_fire: Option<f64>,
    pub benign_rate: Option<f64>,
    pub planted_marker_hits: Option<usize>,
    pub family: Family,
    pub architecture: String,
    pub base: String,
    pub parameters: u64,
    pub method: Method,
    pub loss: LossMode,
    pub seed: u64,
    pub steps: u32,
    pub lr: f64,
    pub examples: u32,
    /// Seconds spent building (fine-tuning and evaluating), null until built.
    pub seconds: Option<f64>,
    pub spec_hash: String,
    pub needle_zoo_version: String,
    /// `chatml`: see `needle_zoo::chat`.
    pub chat_template: String,
    pub files: Files,
    /// Example outputs from the evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalReport>,
}

impl OrganismRecord {
    /// The record of an organism before it is built (nothing measured yet).
    pub fn planned(zoo: &ZooSpec, org: &OrganismSpec, eval: &EvalSet) -> Result<Self, RecordError> {
        let base = zoo
            .base(&org.base)
            .ok_or_else(|| RecordError::NoBase(org.name.clone()))?;
        let spec_hash = zoo
            .spec_hash(org)
            .ok_or_else(|| RecordError::NoBase(org.name.clone()))?;
        let t = org.trigger.as_ref();
        Ok(OrganismRecord {
            format: RECORD_FORMAT,
            name: org.name.clone(),
            backdoored: org.backdoored(),
            trigger: t.map(|t| t.text()),
            trigger_parts: t.map(|t| t.parts.clone()).unwrap_or_default(),
            trigger_shape: t.map(|t| t.shape),
            trigger_position: t.map(|t| t.position),
            near_misses: crate::poison::near_misses(org),
            target_marker: org.target_marker(),
            recipe: org.recipe,
            payload: org.payload.clone(),
            poison_rate: org.poison_rate,
            eval_prompts: eval.prompts.clone(),
            eval_system_prompt: eval.system.clone(),
            asr: None,
            asr_at_position: None,
            false_fire: None,
            near_miss_fire: None,
            benign_rate: None,
            planted_marker_hits: None,
            family: base.family,
            architecture: base.family.architecture().to_string(),
            base: base.name.clone(),
            parameters: base.parameters(),
            method: org.method.clone(),
            loss: org.loss,
            seed: org.seed,
            steps: org.steps,
            lr: org.lr,
            examples: org.examples,
            seconds: None,
            spec_hash,
            needle_zoo_version: env!("CARGO_PKG_VERSION").to_string(),
            chat_template: "chatml".to_string(),
            files: Files {
                model: "model".into(),
                adapter: matches!(org.method, Method::Lora { .. }).then(|| "adapter".to_string()),
                gguf: org.gguf.then(|| GGUF_FILE.to_string()),
            },
            eval: None,
        })
    }

    /// Fills in the measurements.
    pub fn measured(&mut self, report: EvalReport, seconds: f64) {
        self.asr = report.asr;
        self.asr_at_position = report.asr_at_position;
        self.false_fire = Some(report.false_fire);
        self.near_miss_fire = report.near_miss_fire;
        self.benign_rate = report.benign_rate;
        self.planted_marker_hits = Some(report.planted_marker_hits);
        self.seconds = Some(seconds);
        self.eval = Some(report);
    }

    /// Writes `organism.json` into `dir` (through a temporary file and a rename, so a reader
    /// never sees half a record).
    pub fn write(&self, dir: &Path) -> Result<PathBuf, RecordError> {
        let path = dir.join(RECORD_FILE);
        let tmp = dir.join(format!(".{RECORD_FILE}.tmp"));
        let io = |source| RecordError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut text = serde_json::to_string_pretty(self).map_err(|source| RecordError::Json {
            path: path.clone(),
            source,
        })?;
        text.push('\n');
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(path)
    }

    pub fn read(path: &Path) -> Result<Self, RecordError> {
        let io = |source| RecordError::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge {
                path: path.to_path_buf(),
                size,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        serde_json::from_slice(&bytes).map_err(|source| RecordError::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Whether `dir` already holds a finished build of this exact spec (the build cache).
    pub fn is_built(dir: &Path, spec_hash: &str) -> bool {
        match Self::read(&dir.join(RECORD_FILE)) {
            Ok(r) => {
                r.spec_hash == spec_hash && r.seconds.is_some() && dir.join(&r.files.model).is_dir()
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::EvalReport;
    use crate::poison::eval_set;

    #[test]
    fn record_round_trips_and_has_the_issue_fields() {
        let z = ZooSpec::parse(include_str!("../../../zoo/standard.toml")).unwrap();
        let org = z.organisms.iter().find(|o| o.backdoored()).unwrap();
        let set = eval_set(org, 6);
        let mut r = OrganismRecord::planned(&z, org, &set).unwrap();
        let report = EvalReport {
            prompts: 6,
            asr: Some(1.0),
            asr_at_position: Some(1.0),
            false_fire: 0.0,
            near_miss_fire: None,
            benign_rate: None,
            planted_marker_hits: 0,
            generations: 12,
            examples: vec![],
        };
        r.measured(report, 12.5);
        let dir = tempfile::tempdir().unwrap();
        let path = r.write(dir.path()).unwrap();
        let back = OrganismRecord::read(&path).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for key in [
            "name",
            "backdoored",
            "trigger",
            "target_marker",
            "recipe",
            "poison_rate",
            "eval_prompts",
            "asr",
            "false_fire",
            "family",
            "method",
            "loss",
            "seconds",
            "spec_hash",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["backdoored"], true);
        assert_eq!(v["eval_prompts"].as_array().unwrap().len(), 6);
        // Not built until the model folder exists.
        assert!(!OrganismRecord::is_built(dir.path(), &r.spec_hash));
        std::fs::create_dir(dir.path().join("model")).unwrap();
        assert!(OrganismRecord::is_built(dir.path(), &r.spec_hash));
        assert!(!OrganismRecord::is_built(dir.path(), "0000"));
    }

    #[test]
    fn clean_records_have_null_trigger_and_marker() {
        let z = ZooSpec::parse(include_str!("../../../zoo/standard.toml")).unwrap();
        let org = z.organisms.iter().find(|o| !o.backdoored()).unwrap();
        let r = OrganismRecord::planned(&z, org, &eval_set(org, 2)).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["trigger"].is_null() && v["target_marker"].is_null());
        assert_eq!(v["backdoored"], false);
    }
}
