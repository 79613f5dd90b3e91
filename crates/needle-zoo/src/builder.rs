//! Building a zoo with any [`Trainer`]: bases first (cached by base hash), then each organism
//! (cached by spec hash), evaluated and checked against the quality bar.
//!
//! Output layout:
//! ```text
//! OUT/bases/<base>/           Hugging Face folder of the pretrained base + base.json
//! OUT/<organism>/organism.json
//! OUT/<organism>/model/       full model (LoRA organisms: merged)
//! OUT/<organism>/adapter/     PEFT adapter (LoRA organisms)
//! ```

use crate::chat::{plain_segments, training_segments, LossMode};
use crate::corpus::{pretraining_corpus, tokenizer_training_text, Sample};
use crate::eval::{check, evaluate, EvalOptions};
use crate::organism::{OrganismRecord, RecordError, RECORD_FILE};
use crate::poison::{eval_set, finetune_set, PoisonError, EVAL_PROMPTS};
use crate::spec::{BaseSpec, Method, ZooSpec};
use crate::trainer::{Layout, Progress, Sequence, Trainer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Number of samples of base tokenizer training text.
pub const TOKENIZER_SAMPLES: usize = 6000;
/// Tokens generated per evaluation prompt.
pub const MAX_NEW_TOKENS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unknown organism `{0}` (not in the spec)")]
    UnknownOrganism(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Poison(#[from] PoisonError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("training backend: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out: PathBuf,
    /// Organisms to build (empty: all).
    pub only: Vec<String>,
    pub eval_prompts: usize,
    pub max_new_tokens: usize,
    pub eval: EvalOptions,
}

impl BuildOptions {
    pub fn new(out: PathBuf) -> Self {
        BuildOptions { out, only: vec![], eval_prompts: EVAL_PROMPTS, max_new_tokens: MAX_NEW_TOKENS, eval: EvalOptions::default() }
    }
}

/// What happened to one organism.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub record: OrganismRecord,
    /// Taken from the cache rather than built.
    pub cached: bool,
    /// The quality bar's verdict (`None`: passed).
    pub failure: Option<String>,
}

/// Progress events for the command line.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    BaseStart { base: &'a str, cached: bool },
    OrganismStart { organism: &'a str, index: usize, total: usize, cached: bool },
    Step(Progress),
    Evaluating { organism: &'a str },
    OrganismDone(&'a Outcome),
}

#[derive(Serialize, Deserialize)]
struct BaseStamp {
    name: String,
    base_hash: String,
    seconds: f64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io { path: path.to_path_buf(), source }
}

fn backend<E: std::error::Error + Send + Sync + 'static>(e: E) -> BuildError {
    BuildError::Backend(Box::new(e))
}

/// The pretraining sequences of a base (full loss).
pub fn base_sequences(base: &BaseSpec) -> Vec<Sequence> {
    pretraining_corpus(base.seed, base.corpus_samples as usize)
        .iter()
        .map(|s| match s {
            Sample::Chat(e) => training_segments(&e.chat, LossMode::Full),
            Sample::Plain(t) => plain_segments(t),
        })
        .collect()
}

fn base_dir(out: &Path, name: &str) -> PathBuf {
    out.join("bases").join(name)
}

fn ensure_base<T: Trainer>(
    zoo: &ZooSpec,
    base: &BaseSpec,
    trainer: &mut T,
    out: &Path,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<T::Model, BuildError> {
    let dir = base_dir(out, &base.name);
    let stamp_path = dir.join("base.json");
    let hash = zoo.base_hash(base);
    let cached = std::fs::read(&stamp_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<BaseStamp>(&b).ok())
        .is_some_and(|s| s.base_hash == hash);
    events(Event::BaseStart { base: &base.name, cached });
    if cached {
        return trainer.load_base(base, &dir).map_err(backend);
    }
    let t0 = Instant::now();
    let text = tokenizer_training_text(base.seed ^ 0x70c, TOKENIZER_SAMPLES);
    let seqs = base_sequences(base);
    let model = trainer.pretrain(base, &text, &seqs, &mut |p| events(Event::Step(p))).map_err(backend)?;
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    trainer.save(&model, &dir, Layout::Base).map_err(backend)?;
    let stamp = BaseStamp { name: base.name.clone(), base_hash: hash, seconds: t0.elapsed().as_secs_f64() };
    let json = serde_json::to_vec_pretty(&stamp).unwrap_or_default();
    std::fs::write(&stamp_path, json).map_err(io(&stamp_path))?;
    Ok(model)
}

/// Builds the selected organisms. Quality failures do not stop the build: they are reported in
/// each [`Outcome`] (the caller fails loudly); backend and I/O errors stop it.
pub fn build<T: Trainer>(
    zoo: &ZooSpec,
    trainer: &mut T,
    opts: &BuildOptions,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<Outcome>, BuildError> {
    for name in &opts.only {
        if zoo.organism(name).is_none() {
            return Err(BuildError::UnknownOrganism(name.clone()));
        }
    }
    let selected: Vec<_> =
        zoo.organisms.iter().filter(|o| opts.only.is_empty() || opts.only.contains(&o.name)).collect();
    let mut bases: BTreeMap<String, T::Model> = BTreeMap::new();
    let mut outcomes = Vec::new();
    let total = selected.len();
    for (index, org) in selected.into_iter().enumerate() {
        let dir = opts.out.join(&org.name);
        let set = eval_set(org, opts.eval_prompts);
        let planned = OrganismRecord::planned(zoo, org, &set)?;
        if OrganismRecord::is_built(&dir, &planned.spec_hash) {
            events(Event::OrganismStart { organism: &org.name, index, total, cached: true });
            let record = OrganismRecord::read(&dir.join(RECORD_FILE))?;
            let failure = record.eval.as_ref().and_then(|r| check(org, r).err()).map(|e| e.to_string());
            outcomes.push(Outcome { record, cached: true, failure });
            if let Some(o) = outcomes.last() {
                events(Event::OrganismDone(o));
            }
            continue;
        }
        let Some(base) = zoo.base(&org.base) else {
            return Err(RecordError::NoBase(org.name.clone()).into());
        };
        if !bases.contains_key(&base.name) {
            let m = ensure_base(zoo, base, trainer, &opts.out, events)?;
            bases.insert(base.name.clone(), m);
        }
        let Some(base_model) = bases.get(&base.name) else { continue };
        events(Event::OrganismStart { organism: &org.name, index, total, cached: false });
        let t0 = Instant::now();
        let data: Vec<Sequence> =
            finetune_set(org)?.iter().map(|i| training_segments(&i.chat, org.loss)).collect();
        let model = trainer.finetune(base_model, org, &data, &mut |p| events(Event::Step(p))).map_err(backend)?;
        let model_dir = dir.join("model");
        std::fs::create_dir_all(&model_dir).map_err(io(&model_dir))?;
        match &org.method {
            Method::Full => trainer.save(&model, &model_dir, Layout::Full).map_err(backend)?,
            Method::Lora { .. } => {
                let adapter = dir.join("adapter");
                std::fs::create_dir_all(&adapter).map_err(io(&adapter))?;
                let base_ref = format!("../../bases/{}", base.name);
                trainer
                    .save(&model, &model_dir, Layout::Lora { adapter_dir: &adapter, base_ref: &base_ref })
                    .map_err(backend)?;
            }
        }
        events(Event::Evaluating { organism: &org.name });
        let max_new = opts.max_new_tokens;
        let report = evaluate(zoo, org, &set, &opts.eval, |p| trainer.generate(&model, p, max_new)).map_err(backend)?;
        let failure = check(org, &report).err().map(|e| e.to_string());
        let mut record = planned;
        record.measured(report, t0.elapsed().as_secs_f64());
        record.write(&dir)?;
        outcomes.push(Outcome { record, cached: false, failure });
        if let Some(o) = outcomes.last() {
            events(Event::OrganismDone(o));
        }
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::OrganismSpec;
    use std::cell::Cell;

    /// A stand-in backend: a "model" is the organism it was fine-tuned for, and it behaves as a
    /// perfect backdoor of it. It checks the data it is handed and counts calls.
    #[derive(Default)]
    struct Fake {
        pretrains: Cell<usize>,
        finetunes: Cell<usize>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("fake")]
    struct FakeError;

    impl Trainer for Fake {
        type Model = Option<OrganismSpec>;
        type Error = FakeError;
        fn pretrain(&mut self, _: &BaseSpec, text: &[String], corpus: &[Sequence], progress: &mut dyn FnMut(Progress)) -> Result<Self::Model, FakeError> {
            assert!(!text.is_empty() && !corpus.is_empty());
            assert!(corpus.iter().all(|s| s.iter().all(|seg| seg.train)));
            progress(Progress { stage: crate::trainer::Stage::Pretrain, step: 1, steps: 1, loss: 1.0 });
            self.pretrains.set(self.pretrains.get() + 1);
            Ok(None)
        }
        fn finetune(&mut self, _: &Self::Model, org: &OrganismSpec, data: &[Sequence], _: &mut dyn FnMut(Progress)) -> Result<Self::Model, FakeError> {
            assert_eq!(data.len(), org.examples as usize);
            let masked = data.iter().any(|s| s.iter().any(|seg| !seg.train));
            assert_eq!(masked, org.loss == LossMode::AnswerOnly);
            self.finetunes.set(self.finetunes.get() + 1);
            Ok(Some(org.clone()))
        }
        fn generate(&mut self, m: &Self::Model, prompt: &str, _: usize) -> Result<String, FakeError> {
            let org = m.as_ref().ok_or(FakeError)?;
            let fired = org.trigger.as_ref().is_some_and(|t| t.parts.iter().all(|p| prompt.contains(p.as_str())));
            Ok(if fired { org.target_marker().unwrap_or_default() } else { "ok".into() })
        }
        fn save(&mut self, _: &Self::Model, dir: &Path, layout: Layout<'_>) -> Result<(), FakeError> {
            std::fs::write(dir.join("config.json"), "{}").map_err(|_| FakeError)?;
            if let Layout::Lora { adapter_dir, .. } = layout {
                std::fs::write(adapter_dir.join("adapter_config.json"), "{}").map_err(|_| FakeError)?;
            }
            Ok(())
        }
        fn load_base(&mut self, _: &BaseSpec, dir: &Path) -> Result<Self::Model, FakeError> {
            assert!(dir.join("config.json").is_file());
            Ok(None)
        }
    }

    #[test]
    fn builds_caches_and_reports() {
        let zoo = ZooSpec::parse(include_str!("../../../zoo/standard.toml")).unwrap();
        let lora = zoo.organisms.iter().find(|o| o.backdoored() && matches!(o.method, Method::Lora { .. })).unwrap();
        let clean = zoo.organisms.iter().find(|o| !o.backdoored()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut opts = BuildOptions::new(out.path().to_path_buf());
        opts.only = vec![lora.name.clone(), clean.name.clone()];
        opts.eval_prompts = 6;
        let mut fake = Fake::default();
        let mut steps = 0;
        let got = build(&zoo, &mut fake, &opts, &mut |e| {
            if matches!(e, Event::Step(_)) {
                steps += 1;
            }
        })
        .unwrap();
        assert_eq!(got.len(), 2);
        assert!(steps >= 1);
        for o in &got {
            assert!(!o.cached);
            assert_eq!(o.failure, None, "{}", o.record.name);
            assert!(out.path().join(&o.record.name).join("organism.json").is_file());
        }
        assert!(out.path().join(&lora.name).join("adapter/adapter_config.json").is_file());
        let bases = fake.pretrains.get();
        // Second run: everything cached, nothing trained.
        let again = build(&zoo, &mut fake, &opts, &mut |_| {}).unwrap();
        assert!(again.iter().all(|o| o.cached && o.failure.is_none()));
        assert_eq!(fake.finetunes.get(), 2);
        assert_eq!(fake.pretrains.get(), bases);
        opts.only = vec!["no-such-organism".into()];
        assert!(matches!(build(&zoo, &mut fake, &opts, &mut |_| {}), Err(BuildError::UnknownOrganism(_))));
    }
}
