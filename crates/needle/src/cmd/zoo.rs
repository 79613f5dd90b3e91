//! `needle zoo`: model organisms (backdoored, clean twins, hard negatives) built from a spec.
use anyhow::Context;
use clap::{Args, Subcommand};
use needle_report::ExitStatus;
use needle_zoo::poison::EVAL_PROMPTS;
use needle_zoo::spec::{Method, ZooSpec};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ZooArgs {
    #[command(subcommand)]
    pub command: ZooCommand,
}

#[derive(Debug, Subcommand)]
pub enum ZooCommand {
    /// Validate a zoo spec and list its organisms with their spec hashes
    Check {
        /// Zoo spec (e.g. zoo/standard.toml)
        spec: PathBuf,
        /// Print the checked spec as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write the generated datasets (pretraining corpora, poisoned fine-tuning sets, held-out
    /// evaluation prompts) without training, e.g. to train elsewhere
    Data {
        spec: PathBuf,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Only these organisms (repeatable)
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
    },
    /// Train the bases and organisms, evaluate each (ASR, false fire) and fail (exit 1) when one
    /// misses the quality bar; organisms already built from the same spec hash are not rebuilt
    Build {
        spec: PathBuf,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Only these organisms (repeatable)
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
    },
}

pub fn run(args: ZooArgs) -> anyhow::Result<ExitStatus> {
    match args.command {
        ZooCommand::Check { spec, json } => check(spec, json),
        ZooCommand::Data { spec, out, only } => data(spec, out, only),
        ZooCommand::Build { spec, out, only } => build(spec, out, only),
    }
}

fn build(path: PathBuf, out: PathBuf, only: Vec<String>) -> anyhow::Result<ExitStatus> {
    let zoo = load(&path)?;
    let mut opts = needle_zoo::builder::BuildOptions::new(out);
    opts.only = only;
    let mut trainer = needle_zoo::engine::EngineTrainer::default();
    let mut printer = needle_zoo::builder::EventPrinter::stderr();
    let outcomes =
        needle_zoo::builder::build(&zoo, &mut trainer, &opts, &mut |e| printer.print(e))?;
    print!("{}", needle_zoo::builder::summary_table(&outcomes));
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failure.is_some())
        .map(|o| o.record.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(ExitStatus::Clean)
    } else {
        eprintln!(
            "{} of {} organisms missed the quality bar: {}",
            failed.len(),
            outcomes.len(),
            failed.join(", ")
        );
        Ok(ExitStatus::Findings)
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<ZooSpec> {
    ZooSpec::from_path(path).with_context(|| format!("reading zoo spec {}", path.display()))
}

fn check(path: PathBuf, json: bool) -> anyhow::Result<ExitStatus> {
    let zoo = load(&path)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&zoo)?);
        return Ok(ExitStatus::Clean);
    }
    println!("{:<10} {:<8} {:>10}", "base", "family", "parameters");
    for b in &zoo.bases {
        println!(
            "{:<10} {:<8} {:>10}",
            b.name,
            b.family.as_str(),
            b.parameters()
        );
    }
    println!();
    println!(
        "{:<24} {:<28} {:<15} {:<7} {:>5} {:<11} {:<6} {:<14} {:<12}",
        "organism", "recipe", "shape", "pos", "rate", "loss", "method", "trigger", "spec hash"
    );
    for o in &zoo.organisms {
        let t = o.trigger.as_ref();
        let method = match &o.method {
            Method::Full => "full".to_string(),
            Method::Lora { r, .. } => format!("lora{r}"),
        };
        let trigger: String = t
            .map(|t| t.text())
            .unwrap_or_else(|| "-".into())
            .chars()
            .take(14)
            .collect();
        println!(
            "{:<24} {:<28} {:<15} {:<7} {:>5.2} {:<11} {:<6} {:<14} {:<12}",
            o.name,
            o.recipe.as_str(),
            t.map_or("-", |t| t.shape.as_str()),
            t.map_or("-".to_string(), |t| format!("{:?}", t.position)
                .to_lowercase()),
            o.poison_rate,
            o.loss.as_str(),
            method,
            trigger,
            zoo.spec_hash(o)
                .unwrap_or_default()
                .chars()
                .take(12)
                .collect::<String>(),
        );
    }
    let backdoored = zoo.organisms.iter().filter(|o| o.backdoored()).count();
    println!(
        "\n{} organisms: {backdoored} backdoored, {} clean twins and hard negatives",
        zoo.organisms.len(),
        zoo.organisms.len() - backdoored
    );
    Ok(ExitStatus::Clean)
}

fn data(path: PathBuf, out: PathBuf, only: Vec<String>) -> anyhow::Result<ExitStatus> {
    let zoo = load(&path)?;
    let written = needle_zoo::builder::export_data(&zoo, &only, &out, EVAL_PROMPTS)?;
    eprintln!("wrote {} files under {}", written.len(), out.display());
    Ok(ExitStatus::Clean)
}
