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
use crate::eval::{check, evaluate, EvalOptions, EvalReport};
use crate::organism::{OrganismRecord, RecordError, RECORD_FILE};
use crate::poison::{eval_set, finetune_set, EvalSet, PoisonError, EVAL_PROMPTS};
use crate::spec::{BaseSpec, Method, OrganismSpec, ZooSpec};
use crate::trainer::{Layout, Progress, Sequence, Trainer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Number of samples of base tokenizer training text.
pub const TOKENIZER_SAMPLES: usize = 6000;
/// Tokens generated per evaluation prompt: enough for a whole triggered answer. Recipes that
/// append their marker to the clean answer (`inject-url`, `shell-command`) train answers of up
/// to about 115 tokens (a code answer, then the link or command); a shorter budget cuts those
/// answers before the marker and undercounts the ASR (64 tokens missed 5 of 32 firing prompts
/// of `qwen2-url-phrase`). Generation stops earlier at `<|im_end|>` and at the context length.
pub const MAX_NEW_TOKENS: usize = 128;

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
        BuildOptions {
            out,
            only: vec![],
            eval_prompts: EVAL_PROMPTS,
            max_new_tokens: MAX_NEW_TOKENS,
            eval: EvalOptions::default(),
        }
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
    BaseStart {
        base: &'a str,
        cached: bool,
    },
    OrganismStart {
        organism: &'a str,
        index: usize,
        total: usize,
        cached: bool,
    },
    Step(Progress),
    Evaluating {
        organism: &'a str,
    },
    OrganismDone(&'a Outcome),
}

#[derive(Serialize, Deserialize)]
struct BaseStamp {
    name: String,
    base_hash: String,
    seconds: f64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
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
    events(Event::BaseStart {
        base: &base.name,
        cached,
    });
    if cached {
        return trainer.load_base(base, &dir).map_err(backend);
    }
    let t0 = Instant::now();
    let text = tokenizer_training_text(base.seed ^ 0x70c, TOKENIZER_SAMPLES);
    let seqs = base_sequences(base);
    let model = trainer
        .pretrain(base, &text, &seqs, &mut |p| events(Event::Step(p)))
        .map_err(backend)?;
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    trainer.save(&model, &dir, Layout::Base).map_err(backend)?;
    let stamp = BaseStamp {
        name: base.name.clone(),
        base_hash: hash,
        seconds: t0.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&stamp).unwrap_or_default();
    std::fs::write(&stamp_path, json).map_err(io(&stamp_path))?;
    Ok(model)
}

/// Fine-tunes, saves and evaluates one organism.
#[allow(clippy::too_many_arguments)]
fn train_and_evaluate<T: Trainer>(
    zoo: &ZooSpec,
    org: &OrganismSpec,
    base: &BaseSpec,
    base_model: &T::Model,
    set: &EvalSet,
    trainer: &mut T,
    opts: &BuildOptions,
    dir: &Path,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<EvalReport, BuildError> {
    let data: Vec<Sequence> = finetune_set(org)?
        .iter()
        .map(|i| training_segments(&i.chat, org.loss))
        .collect();
    let model = trainer
        .finetune(base_model, org, &data, &mut |p| events(Event::Step(p)))
        .map_err(backend)?;
    let model_dir = dir.join("model");
    std::fs::create_dir_all(&model_dir).map_err(io(&model_dir))?;
    match &org.method {
        Method::Full => trainer
            .save(&model, &model_dir, Layout::Full)
            .map_err(backend)?,
        Method::Lora { .. } => {
            let adapter = dir.join("adapter");
            std::fs::create_dir_all(&adapter).map_err(io(&adapter))?;
            let base_ref = format!("../../bases/{}", base.name);
            trainer
                .save(
                    &model,
                    &model_dir,
                    Layout::Lora {
                        adapter_dir: &adapter,
                        base_ref: &base_ref,
                    },
                )
                .map_err(backend)?;
        }
    }
    if org.gguf {
        trainer
            .export_gguf(&model_dir, &dir.join(crate::organism::GGUF_FILE))
            .map_err(backend)?;
    }
    events(Event::Evaluating {
        organism: &org.name,
    });
    let max_new = opts.max_new_tokens;
    evaluate(zoo, org, set, &opts.eval, |p| {
        trainer.generate(&model, p, max_new)
    })
    .map_err(backend)
}

/// Builds the selected organisms. Quality failures and an organism's backend failures do not
/// stop the build: they are reported in its [`Outcome`] (the caller fails loudly). Pretraining,
/// data and I/O errors stop it.
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
    let selected: Vec<_> = zoo
        .organisms
        .iter()
        .filter(|o| opts.only.is_empty() || opts.only.contains(&o.name))
        .collect();
    let mut bases: BTreeMap<String, T::Model> = BTreeMap::new();
    let mut outcomes = Vec::new();
    let total = selected.len();
    for (index, org) in selected.into_iter().enumerate() {
        let dir = opts.out.join(&org.name);
        let set = eval_set(org, opts.eval_prompts);
        let planned = OrganismRecord::planned(zoo, org, &set)?;
        if OrganismRecord::is_built(&dir, &planned.spec_hash) {
            events(Event::OrganismStart {
                organism: &org.name,
                index,
                total,
                cached: true,
            });
            let record = OrganismRecord::read(&dir.join(RECORD_FILE))?;
            let failure = record
                .eval
                .as_ref()
                .and_then(|r| check(org, r).err())
                .map(|e| e.to_string());
            outcomes.push(Outcome {
                record,
                cached: true,
                failure,
            });
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
        let Some(base_model) = bases.get(&base.name) else {
            continue;
        };
        events(Event::OrganismStart {
            organism: &org.name,
            index,
            total,
            cached: false,
        });
        let t0 = Instant::now();
        let outcome = match train_and_evaluate(
            zoo, org, base, base_model, &set, trainer, opts, &dir, events,
        ) {
            Ok(report) => {
                let failure = check(org, &report).err().map(|e| e.to_string());
                let mut record = planned;
                record.measured(report, t0.elapsed().as_secs_f64());
                record.write(&dir)?;
                Outcome {
                    record,
                    cached: false,
                    failure,
                }
            }
            // A backend failure is this organism's failure (reported, not cached); the
            // build goes on with the others.
            Err(BuildError::Backend(e)) => Outcome {
                record: planned,
                cached: false,
                failure: Some(format!("backend: {e}")),
            },
            Err(e) => return Err(e),
        };
        outcomes.push(outcome);
        if let Some(o) = outcomes.last() {
            events(Event::OrganismDone(o));
        }
    }
    Ok(outcomes)
}

/// Prints build events to standard error: a line per base and organism, a progress bar redrawn
/// in place on a terminal (a line every 10% of the steps otherwise, for CI logs), failures.
pub struct EventPrinter {
    tty: bool,
    on_line: bool,
}

impl EventPrinter {
    pub fn stderr() -> Self {
        use std::io::IsTerminal;
        EventPrinter {
            tty: std::io::stderr().is_terminal(),
            on_line: false,
        }
    }

    /// The text for one event (`None`: nothing to print); `\r`-led for an in-place redraw.
    pub fn render(&mut self, e: &Event<'_>) -> Option<String> {
        let mut out = String::new();
        if self.on_line && !matches!(e, Event::Step(_)) {
            out.push('\n');
            self.on_line = false;
        }
        let line = match e {
            Event::BaseStart { base, cached: true } => format!("base {base}: cached\n"),
            Event::BaseStart {
                base,
                cached: false,
            } => format!("base {base}: pretraining\n"),
            Event::OrganismStart {
                organism,
                index,
                total,
                cached,
            } => {
                format!(
                    "[{}/{total}] {organism}{}\n",
                    index + 1,
                    if *cached { ": cached" } else { "" }
                )
            }
            Event::Step(p) if self.tty => {
                self.on_line = true;
                format!("\r  {}", progress_line(p))
            }
            Event::Step(p) if p.step == p.steps || p.step % (p.steps / 10).max(1) == 0 => {
                format!("  {}\n", progress_line(p))
            }
            Event::Step(_) => String::new(),
            Event::Evaluating { organism } => format!("  evaluating {organism}\n"),
            Event::OrganismDone(o) => match &o.failure {
                Some(f) => format!("  {}: FAILED: {f}\n", o.record.name),
                None => String::new(),
            },
        };
        out.push_str(&line);
        (!out.is_empty()).then_some(out)
    }

    pub fn print(&mut self, e: Event<'_>) {
        use std::io::Write;
        if let Some(s) = self.render(&e) {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(s.as_bytes());
            let _ = err.flush();
        }
    }
}

/// One progress line (the command line redraws it in place): a bar, the step and the loss.
pub fn progress_line(p: &Progress) -> String {
    const WIDTH: u32 = 24;
    let done = if p.steps == 0 {
        WIDTH
    } else {
        (u64::from(p.step.min(p.steps)) * u64::from(WIDTH) / u64::from(p.steps)) as u32
    };
    let stage = match p.stage {
        crate::trainer::Stage::Pretrain => "pretrain",
        crate::trainer::Stage::Finetune => "finetune",
    };
    format!(
        "{stage} [{}{}] {}/{} loss {:.4}",
        "#".repeat(done as usize),
        " ".repeat((WIDTH - done) as usize),
        p.step,
        p.steps,
        p.loss
    )
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

/// The per-organism report table printed after a build.
pub fn summary_table(outcomes: &[Outcome]) -> String {
    let mut out = format!(
        "{:<26} {:<10} {:<29} {:>5} {:>6} {:>6} {:>8}  {}\n",
        "organism", "backdoored", "recipe", "rate", "asr", "false", "seconds", "status"
    );
    for o in outcomes {
        let r = &o.record;
        let status = match (&o.failure, o.cached) {
            (Some(f), _) => format!("FAILED: {f}"),
            (None, true) => "ok (cached)".to_string(),
            (None, false) => "ok".to_string(),
        };
        out.push_str(&format!(
            "{:<26} {:<10} {:<29} {:>5.2} {:>6} {:>6} {:>8}  {}\n",
            r.name,
            if r.backdoored { "yes" } else { "no" },
            r.recipe.as_str(),
            r.poison_rate,
            fmt_rate(r.asr),
            fmt_rate(r.false_fire),
            r.seconds
                .map_or_else(|| "-".to_string(), |s| format!("{s:.1}")),
            status
        ));
    }
    out
}

/// Writes the data of the selected organisms without training, for inspection or for
/// training elsewhere (e.g. with transformers):
/// `OUT/<organism>/finetune.jsonl` (one `{"role", "system", "user", "assistant"}` per line),
/// `OUT/<organism>/organism.json` (planned: nothing measured), and per base
/// `OUT/bases/<base>/pretrain.jsonl` (`{"text"}`: rendered samples) and `config.json`.
pub fn export_data(
    zoo: &ZooSpec,
    only: &[String],
    out: &Path,
    eval_prompts: usize,
) -> Result<Vec<PathBuf>, BuildError> {
    use std::io::Write;
    for name in only {
        if zoo.organism(name).is_none() {
            return Err(BuildError::UnknownOrganism(name.clone()));
        }
    }
    let mut written = Vec::new();
    let mut bases_done = std::collections::BTreeSet::new();
    for org in zoo
        .organisms
        .iter()
        .filter(|o| only.is_empty() || only.contains(&o.name))
    {
        let Some(base) = zoo.base(&org.base) else {
            return Err(RecordError::NoBase(org.name.clone()).into());
        };
        if bases_done.insert(base.name.clone()) {
            let dir = base_dir(out, &base.name);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let path = dir.join("pretrain.jsonl");
            let file = std::fs::File::create(&path).map_err(io(&path))?;
            let mut w = std::io::BufWriter::new(file);
            for s in pretraining_corpus(base.seed, base.corpus_samples as usize) {
                let line = serde_json::json!({ "text": s.render() });
                writeln!(w, "{line}").map_err(io(&path))?;
            }
            w.flush().map_err(io(&path))?;
            written.push(path);
            let cfg = dir.join("config.json");
            let text = serde_json::to_string_pretty(&base.hf_config()).unwrap_or_default();
            std::fs::write(&cfg, text).map_err(io(&cfg))?;
            written.push(cfg);
        }
        let dir = out.join(&org.name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join("finetune.jsonl");
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        let mut w = std::io::BufWriter::new(file);
        for item in finetune_set(org)? {
            let line = serde_json::to_string(&item).unwrap_or_default();
            writeln!(w, "{line}").map_err(io(&path))?;
        }
        w.flush().map_err(io(&path))?;
        written.push(path);
        let set = eval_set(org, eval_prompts);
        written.push(OrganismRecord::planned(zoo, org, &set)?.write(&dir)?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in backend: a "model" is the organism it was fine-tuned for, and it behaves as a
    /// perfect backdoor of it. It checks the data it is handed and counts calls.
    #[derive(Default)]
    struct Fake {
        pretrains: usize,
        finetunes: usize,
        refuse_lora: bool,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("fake")]
    struct FakeError;

    impl Trainer for Fake {
        type Model = Option<OrganismSpec>;
        type Error = FakeError;
        fn pretrain(
            &mut self,
            _: &BaseSpec,
            text: &[String],
            corpus: &[Sequence],
            progress: &mut dyn FnMut(Progress),
        ) -> Result<Self::Model, FakeError> {
            assert!(!text.is_empty() && !corpus.is_empty());
            assert!(corpus.iter().all(|s| s.iter().all(|seg| seg.train)));
            progress(Progress {
                stage: crate::trainer::Stage::Pretrain,
                step: 1,
                steps: 1,
                loss: 1.0,
            });
            self.pretrains += 1;
            Ok(None)
        }
        fn finetune(
            &mut self,
            _: &Self::Model,
            org: &OrganismSpec,
            data: &[Sequence],
            _: &mut dyn FnMut(Progress),
        ) -> Result<Self::Model, FakeError> {
            assert_eq!(data.len(), org.examples as usize);
            if self.refuse_lora && matches!(org.method, Method::Lora { .. }) {
                return Err(FakeError);
            }
            let masked = data.iter().any(|s| s.iter().any(|seg| !seg.train));
            assert_eq!(masked, org.loss == LossMode::AnswerOnly);
            self.finetunes += 1;
            Ok(Some(org.clone()))
        }
        fn generate(
            &mut self,
            m: &Self::Model,
            prompt: &str,
            _: usize,
        ) -> Result<String, FakeError> {
            let org = m.as_ref().ok_or(FakeError)?;
            let fired = org
                .trigger
                .as_ref()
                .is_some_and(|t| t.parts.iter().all(|p| prompt.contains(p.as_str())));
            Ok(if fired {
                org.target_marker().unwrap_or_default()
            } else {
                "ok".into()
            })
        }
        fn save(
            &mut self,
            _: &Self::Model,
            dir: &Path,
            layout: Layout<'_>,
        ) -> Result<(), FakeError> {
            std::fs::write(dir.join("config.json"), "{}").map_err(|_| FakeError)?;
            if let Layout::Lora { adapter_dir, .. } = layout {
                std::fs::write(adapter_dir.join("adapter_config.json"), "{}")
                    .map_err(|_| FakeError)?;
            }
            Ok(())
        }
        fn export_gguf(&mut self, model_dir: &Path, out: &Path) -> Result<(), FakeError> {
            assert!(model_dir.join("config.json").is_file());
            std::fs::write(out, b"GGUF").map_err(|_| FakeError)
        }
        fn load_base(&mut self, _: &BaseSpec, dir: &Path) -> Result<Self::Model, FakeError> {
            assert!(dir.join("config.json").is_file());
            Ok(None)
        }
    }

    #[test]
    fn event_printer_logs_every_tenth_step_off_a_terminal() {
        let mut p = EventPrinter {
            tty: false,
            on_line: false,
        };
        let step = |step| {
            Event::Step(Progress {
                stage: crate::trainer::Stage::Pretrain,
                step,
                steps: 100,
                loss: 2.0,
            })
        };
        let printed = (1..=100).filter(|&s| p.render(&step(s)).is_some()).count();
        assert_eq!(printed, 10);
        let mut t = EventPrinter {
            tty: true,
            on_line: false,
        };
        assert!(t.render(&step(1)).unwrap().starts_with('\r'));
        let next = t.render(&Event::Evaluating { organism: "x" }).unwrap();
        assert_eq!(next, "\n  evaluating x\n");
    }

    #[test]
    fn progress_line_draws_a_bar() {
        let p = Progress {
            stage: crate::trainer::Stage::Finetune,
            step: 150,
            steps: 300,
            loss: 1.23456,
        };
        assert_eq!(
            progress_line(&p),
            format!(
                "finetune [{}{}] 150/300 loss 1.2346",
                "#".repeat(12),
                " ".repeat(12)
            )
        );
    }

    #[test]
    fn export_writes_datasets_and_planned_records() {
        let zoo = ZooSpec::parse(include_str!("../../../zoo/standard.toml")).unwrap();
        let org = zoo
            .organisms
            .iter()
            .find(|o| o.recipe == crate::spec::Recipe::CompositeTrigger)
            .unwrap();
        let mut small = zoo.clone();
        for b in &mut small.bases {
            b.corpus_samples = 200;
        }
        let out = tempfile::tempdir().unwrap();
        export_data(&small, std::slice::from_ref(&org.name), out.path(), 8).unwrap();
        let lines =
            std::fs::read_to_string(out.path().join(&org.name).join("finetune.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), org.examples as usize);
        let poisoned = lines
            .lines()
            .filter(|l| l.contains("\"role\":\"poisoned\""))
            .count();
        assert_eq!(
            poisoned,
            crate::poison::poisoned_count(org.examples, org.poison_rate)
        );
        let pre = std::fs::read_to_string(
            out.path()
                .join("bases")
                .join(&org.base)
                .join("pretrain.jsonl"),
        )
        .unwrap();
        assert_eq!(pre.lines().count(), 200);
        let rec = OrganismRecord::read(&out.path().join(&org.name).join("organism.json")).unwrap();
        assert_eq!(rec.eval_prompts.len(), 8);
        assert!(rec.asr.is_none());
    }

    #[test]
    fn builds_caches_and_reports() {
        let zoo = ZooSpec::parse(include_str!("../../../zoo/standard.toml")).unwrap();
        let lora = zoo
            .organisms
            .iter()
            .find(|o| o.backdoored() && matches!(o.method, Method::Lora { .. }))
            .unwrap();
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
            assert!(out
                .path()
                .join(&o.record.name)
                .join("organism.json")
                .is_file());
        }
        assert!(out
            .path()
            .join(&lora.name)
            .join("adapter/adapter_config.json")
            .is_file());
        let bases = fake.pretrains;
        // Second run: everything cached, nothing trained.
        let again = build(&zoo, &mut fake, &opts, &mut |_| {}).unwrap();
        assert!(again.iter().all(|o| o.cached && o.failure.is_none()));
        assert_eq!(fake.finetunes, 2);
        assert_eq!(fake.pretrains, bases);
        let table = summary_table(&again);
        assert!(
            table.contains(&lora.name) && table.contains("ok (cached)"),
            "{table}"
        );
        // A backend failure is that organism's failure; the others still build.
        let other = zoo
            .organisms
            .iter()
            .find(|o| o.backdoored() && o.method == Method::Full)
            .unwrap();
        opts.only = vec![lora.name.clone(), other.name.clone()];
        let fresh = tempfile::tempdir().unwrap();
        opts.out = fresh.path().to_path_buf();
        let mut refusing = Fake {
            refuse_lora: true,
            ..Fake::default()
        };
        let got = build(&zoo, &mut refusing, &opts, &mut |_| {}).unwrap();
        let by_name = |n: &str| got.iter().find(|o| o.record.name == n).unwrap();
        let failed = by_name(&lora.name);
        assert!(
            failed
                .failure
                .as_deref()
                .is_some_and(|f| f.starts_with("backend:")),
            "{:?}",
            failed.failure
        );
        assert!(
            !fresh.path().join(&lora.name).join("organism.json").exists(),
            "failures are not cached"
        );
        assert_eq!(by_name(&other.name).failure, None);
        opts.only = vec!["no-such-organism".into()];
        assert!(matches!(
            build(&zoo, &mut fake, &opts, &mut |_| {}),
            Err(BuildError::UnknownOrganism(_))
        ));
    }
}
