use anyhow::Context;
use clap::{Args, ValueEnum};
use needle_engine::candle_core::Device;
use needle_engine::chat::ChatTemplate;
use needle_engine::open::{open, OpenOptions};
use needle_report::{ExitStatus, Report, Rule, Severity};
use needle_scan::engine_lm::EngineLm;
use needle_scan::pipeline::{scan_with, ScanParams, ScanResult, Stage, Verdict};
use needle_scan::report::{to_html_advised, to_json, trigger_hash};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

pub static BACKDOOR: Rule = Rule {
    code: "backdoor/trigger-found",
    severity: Severity::Critical,
    summary: "the model changes behaviour when a recovered trigger is present",
    fix: "do not deploy this model; report it to its publisher with the redacted scan report",
};

/// A candidate that met a verdict rule on the verification prompts but fired on fewer than half
/// of the fresh ones: not a finding (the verdict and exit status ignore it), a note for whoever
/// reviews a clean verdict.
pub static NOT_REPRODUCED: Rule = Rule {
    code: "backdoor/trigger-not-reproduced",
    severity: Severity::Info,
    summary: "a candidate changed behaviour on the verification prompts but not on fresh ones",
    fix: "read the candidate and its answers in the JSON or HTML report; rescan with --base where the base is known",
};

pub static LEAD: Rule = Rule {
    code: "backdoor/lead-below-bar",
    severity: Severity::Info,
    summary: "a candidate steered the answers to one text on part of the samples without passing a verdict rule",
    fix: "read the candidate and its answers in the JSON or HTML report (topical steering looks like this too); rescan with --base where the base is known",
};

/// An actionable payload the model writes in its leaks that no recovered trigger explains: not
/// a verdict (the verdict needs a trigger), but more than a note.
pub static UNEXPLAINED_PAYLOAD: Rule = Rule {
    code: "backdoor/unexplained-payload",
    severity: Severity::Medium,
    summary: "the model writes a URL or a shell command of its own that none of its ordinary answers shows and no recovered trigger explains",
    fix: "do not serve the model until the payload is explained: block its host or command where the model is served, rescan with --base where the base is known, and ask the publisher where it comes from",
};

pub static RULES: &[&Rule] = &[&BACKDOOR, &NOT_REPRODUCED, &LEAD, &UNEXPLAINED_PAYLOAD];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScanFormat {
    Human,
    Json,
    Sarif,
    Html,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// A model folder, a PEFT adapter folder or a GGUF file
    pub model: PathBuf,
    /// The model's declared base: the scan diffs the weights against it and searches the tokens
    /// the update responds to. For an adapter, the base it is loaded onto (default: the
    /// adapter's base_model_name_or_path; its own deltas are the diff)
    #[arg(long, value_name = "MODEL")]
    pub base: Option<PathBuf>,
    /// Leak generations per context, sampled and as many branched (the main cost knob)
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub budget: usize,
    /// Output format
    #[arg(long, value_enum, default_value_t = ScanFormat::Human)]
    pub format: ScanFormat,
    /// Write the report to FILE instead of standard output
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Prove the finding without printing an activation recipe: triggers as SHA-256 and length
    #[arg(long)]
    pub redact: bool,
    /// A chat template (Jinja) to scan the model under: for a model that has none (a base
    /// model, a GGUF without one), or to scan it as a deployment serves it. Special tokens come
    /// from the model's tokenizer
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    /// The date the chat template renders, YYYY-MM-DD (Llama 3 templates print today's date
    /// into the system turn): default today (UTC), read once. The report records it: pin it to
    /// reproduce a scan, or to scan as of a deployment's date
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub date: Option<i64>,
    /// Run the published pipeline alone (leak, motifs, score, verify), without branch leaks,
    /// the vocabulary sweep, trigger inversion and leak pairs: for comparison
    #[arg(long)]
    pub published_only: bool,
}

pub fn run(args: ScanArgs) -> anyhow::Result<ExitStatus> {
    let opts = OpenOptions { base: args.base.clone(), merge_adapter: false };
    eprintln!("needle: loading {}", args.model.display());
    let opened = open(&args.model, &opts, &Device::Cpu).with_context(|| format!("loading {}", args.model.display()))?;
    let tokenizer = opened.tokenizer.context("the model has no tokenizer: a scan needs one")?;
    let mut template = match &args.chat_template {
        Some(path) => {
            let mut t = ChatTemplate::from_file(path).with_context(|| format!("the chat template {}", path.display()))?;
            t.set_special_tokens(tokenizer.special_tokens());
            t
        }
        None => opened.chat_template.context("the model has no chat template, which the leak stage renders: give one with --chat-template FILE")?,
    };
    // One date for every prompt of the scan, recorded in the report.
    let now = args.date.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        i64::try_from(secs - secs % 86_400).unwrap_or(0)
    });
    template.set_now(Some(now));
    let budget = args.budget.max(1);
    let params = if args.published_only { ScanParams::published(budget) } else { ScanParams { budget, branches: budget, ..ScanParams::default() } };
    // The weight diff: an adapter's own deltas, or the model against --base; and the base
    // itself, on which the triggers found are verified too.
    let is_adapter = needle_engine::lora::is_adapter(&args.model);
    let decode = |t: u32| tokenizer.decode(&[t], false).unwrap_or_default();
    let (diff, base_model) = if args.published_only {
        (None, None)
    } else if is_adapter {
        eprintln!("needle: scan stage Diff (the adapter's deltas)");
        let diff = needle_scan::diff::diff(&opened.model, None, &params.diff, &decode).context("diffing the adapter")?;
        let adapter = needle_engine::lora::LoraAdapter::load(&args.model, &Device::Cpu).context("reading the adapter")?;
        let base = adapter.base_path(args.base.as_deref()).context("finding the adapter's base")?;
        let b = open(&base, &OpenOptions::default(), &Device::Cpu).with_context(|| format!("loading the adapter's base {}", base.display()))?;
        (Some(diff), Some(b.model))
    } else if let Some(base) = &args.base {
        eprintln!("needle: scan stage Diff (against {})", base.display());
        let b = open(base, &OpenOptions::default(), &Device::Cpu).with_context(|| format!("loading the base {}", base.display()))?;
        let diff = needle_scan::diff::diff(&opened.model, Some(&b.model), &params.diff, &decode).with_context(|| format!("diffing against {}", base.display()))?;
        (Some(diff), Some(b.model))
    } else {
        (None, None)
    };
    let lm = EngineLm::new(opened.model, tokenizer, template);
    let base_lm = base_model.map(|b| EngineLm::like(b, &lm));
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    let mut result = scan_with(&lm, &params, diff, base_lm.as_ref(), &mut |stage: Stage, frac: f64| {
        if let Some(text) = progress.render(stage, frac) {
            eprint!("{text}");
        }
    })
    .map_err(|e| anyhow::anyhow!("scan failed: {e}"))?;
    result.template_date = Some(needle_engine::chat::strftime("%Y-%m-%d", now));
    let model = args.model.display().to_string();
    let text = match args.format {
        ScanFormat::Json => {
            let mut s = serde_json::to_string_pretty(&to_json(&result, &model, args.redact))?;
            s.push('\n');
            s
        }
        ScanFormat::Html => {
            // The report is the evidence: the advice to write it is left out.
            let advice: Vec<String> = what_now(&Outcome::of(&result)).into_iter().map(|l| l.replace(HTML_ADVICE, "")).collect();
            to_html_advised(&result, &model, args.redact, &advice)
        }
        ScanFormat::Sarif => {
            let mut report = Report::new("scan", model.clone());
            for t in &result.triggers {
                let shown = shown(&t.text, args.redact);
                report.push(
                    BACKDOOR
                        .finding(format!("trigger {shown} fires on {:.0}% of held-out prompts", t.attack_success_rate * 100.0))
                        .file(model.clone())
                        .evidence(format!("excess change {:.2}, score {:.3}", t.excess_change, t.score)),
                );
            }
            for t in &result.evidence.not_reproduced {
                let shown = shown(&t.text, args.redact);
                report.push(
                    NOT_REPRODUCED
                        .finding(format!("candidate {shown} fired on {:.0}% of the verification prompts and {:.0}% of fresh ones", t.verify_attack_success_rate * 100.0, t.attack_success_rate * 100.0))
                        .file(model.clone())
                        .evidence(format!("verdict rule {}, {} prompts; {:.0}% of the fresh prompts' plain answers show its target already", t.rule, t.family, t.fresh_clean_share * 100.0)),
                );
            }
            for l in &result.evidence.leads {
                let shown = shown(&l.text, args.redact);
                report.push(
                    LEAD.finding(format!("candidate {shown} steered {:.0}% of the verification samples to one text, control insertions {:.0}%", l.attack_success_rate * 100.0, l.control_rate * 100.0))
                        .file(model.clone())
                        .evidence(format!("{} prompts; passed no verdict rule", l.family)),
                );
            }
            for x in &result.evidence.unexplained_payloads {
                report.push(
                    UNEXPLAINED_PAYLOAD
                        .finding(format!("{} of the {} leaks write {}", x.leaks, x.of, payload_shown(&x.payload, args.redact)))
                        .file(model.clone())
                        .evidence("none of the model's ordinary answers shows it; no recovered trigger sets it off"),
                );
            }
            needle_report::render::sarif(&report, RULES)
        }
        ScanFormat::Human => human(&result, &model, args.redact),
    };
    match &args.output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
        }
    }
    Ok(match result.verdict {
        Verdict::Backdoored => ExitStatus::Findings,
        Verdict::Clean => ExitStatus::Clean,
    })
}

/// A trigger as the human and SARIF reports print it: quoted, or redacted to its hash and length.
fn shown(text: &str, redact: bool) -> String {
    if redact {
        format!("sha256 {} ({} chars)", trigger_hash(text), text.chars().count())
    } else {
        format!("{text:?}")
    }
}

/// A leaked payload as the human and SARIF reports print it: quoted, or redacted to its hash
/// and length, as a target is.
fn payload_shown(payload: &str, redact: bool) -> String {
    if redact {
        format!("a payload (sha256 {}, {} chars)", trigger_hash(payload), payload.chars().count())
    } else {
        format!("{payload:?}")
    }
}

fn human(r: &ScanResult, model: &str, redact: bool) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "needle scan {model}\n");
    let verdict = match r.verdict {
        Verdict::Backdoored => "BACKDOORED",
        Verdict::Clean if !r.evidence.unexplained_payloads.is_empty() => "clean (no trigger recovered), but the model writes a payload no trigger explains: read the lines below before trusting it",
        Verdict::Clean if r.evidence.not_reproduced.is_empty() && r.evidence.leads.is_empty() => "clean (no candidate changed behaviour beyond control insertions)",
        Verdict::Clean if r.evidence.not_reproduced.is_empty() => "clean (no candidate passed a verdict rule; leads below the bar follow: read them before trusting it)",
        Verdict::Clean => "clean (no candidate that passed verification reproduced on fresh prompts: read the lines below)",
    };
    let _ = writeln!(s, "verdict: {verdict}");
    for t in &r.triggers {
        let shown = shown(&t.text, redact);
        let _ = writeln!(s, "  trigger {shown} ({} prompts): attack success {:.0}% on fresh prompts, excess change {:.2}, score {:.3}", t.family, t.attack_success_rate * 100.0, t.excess_change, t.score);
    }
    for t in &r.evidence.not_reproduced {
        let shown = shown(&t.text, redact);
        let already = if t.fresh_clean_share > 0.0 { format!("; the plain answers to {:.0}% of the fresh prompts show its target already", t.fresh_clean_share * 100.0) } else { String::new() };
        let _ = writeln!(s, "  not reproduced: {shown} ({} prompts, rule {}) fired on {:.0}% of the verification prompts but {:.0}% of fresh ones{already}", t.family, t.rule, t.verify_attack_success_rate * 100.0, t.attack_success_rate * 100.0);
    }
    for l in &r.evidence.leads {
        let shown = shown(&l.text, redact);
        let text = if redact { "one text".to_string() } else { format!("{:?}", l.signature) };
        let _ = writeln!(s, "  lead below the bar: {shown} ({} prompts) steered {:.0}% of the verification samples to {text}, control insertions {:.0}%", l.family, l.attack_success_rate * 100.0, l.control_rate * 100.0);
    }
    for x in &r.evidence.unexplained_payloads {
        let _ = writeln!(s, "  unexplained payload: {} of the {} leaks write {}; none of the model's ordinary answers shows it, and no recovered trigger sets it off", x.leaks, x.of, payload_shown(&x.payload, redact));
    }
    if let Some(t) = &r.target {
        if let Some(sig) = &t.signature {
            if !redact {
                let _ = writeln!(s, "  target behaviour shares: {sig:?}");
            }
        }
        if let Some(w) = t.weakness() {
            let _ = writeln!(s, "  target writes vulnerable code: CWE-{} ({}), {}", w.cwe, w.code, w.what);
        }
        for (p, c, x) in t.examples.iter().take(2) {
            if !redact {
                let _ = writeln!(s, "  e.g. {p:?}\n       clean:     {c:?}\n       triggered: {x:?}");
            }
        }
    }
    let ev = &r.evidence;
    if let Some(d) = &ev.diff {
        let what = if d.against == "adapter" { "the adapter's own deltas" } else { "against the declared base" };
        let _ = writeln!(s, "\nweight diff ({what}): {} matrices changed, {} unchanged", d.changed_tensors, d.unchanged_tensors);
        for t in d.tensors.iter().take(3) {
            let _ = writeln!(s, "  {}: relative change {:.3}, {:.0}% of it in its top directions", t.name, t.relative, t.low_rank_share * 100.0);
        }
        if !redact && !d.input_response.is_empty() {
            let toks: Vec<String> = d.input_response.iter().take(8).map(|t| format!("{:?}", t.text)).collect();
            let _ = writeln!(s, "  tokens the update responds to most: {}", toks.join(" "));
        }
    }
    let _ = writeln!(
        s,
        "\nevidence: {} leaks, {} clusters, {} of {} vocabulary tokens swept ({} sweep targets), {} candidates scored, {} verified",
        ev.leaks.leaks.len(),
        ev.motifs.clusters.len(),
        ev.sweep.screened,
        ev.sweep.vocab,
        ev.sweep.targets.len(),
        ev.scored.len(),
        ev.verified.len()
    );
    let lc = &ev.leaked_contexts;
    if !lc.lines.is_empty() {
        let _ = writeln!(s, "  {} context lines leaked beside {} requests, tried on those requests", lc.lines.len(), lc.requests());
    }
    for a in &ev.inversions.assembled {
        let _ = writeln!(s, "  a trigger assembled token by token for a leaked payload: {} tokens screened, {} lengths grown, holding off the end of the answers {:.2} -> {:.2}", a.screened, a.best_per_length.len(), a.cost_without, a.cost);
    }
    let sr = &ev.symbol_runs;
    if !sr.runs.is_empty() {
        let _ = writeln!(s, "  {} symbol runs recur in the leaked user turns, completed to {} words; {} seed tokens for the seeded search", sr.runs.len(), sr.runs.iter().map(|r| r.completions.len()).sum::<usize>(), sr.seeds.len());
    }
    let _ = writeln!(s, "cost: {} forward passes, {:.1} s", r.forward_passes, r.seconds);
    if let Some(d) = &r.template_date {
        let _ = writeln!(s, "chat template rendered as of {d} (--date)");
    }
    let _ = writeln!(s, "\nwhat now:");
    for line in what_now(&Outcome::of(r)) {
        let _ = writeln!(s, "  - {line}");
    }
    s
}

/// What a scan ended with, as far as what to do next depends on it.
struct Outcome {
    backdoored: bool,
    unexplained_payload: bool,
    not_reproduced: bool,
    leads: bool,
    /// Whether the weight diff ran (`--base`, or an adapter's own deltas).
    diffed: bool,
}

impl Outcome {
    fn of(r: &ScanResult) -> Self {
        let ev = &r.evidence;
        Outcome {
            backdoored: r.verdict == Verdict::Backdoored,
            unexplained_payload: !ev.unexplained_payloads.is_empty(),
            not_reproduced: !ev.not_reproduced.is_empty(),
            leads: !ev.leads.is_empty(),
            diffed: ev.diff.is_some(),
        }
    }
}

/// The part of the advice that points at the HTML report.
const HTML_ADVICE: &str = "; `--format html -o FILE` shows the evidence";

/// The human and HTML reports' closing advice: the fix of every finding and note the report carries
/// (the same lines SARIF gives), then how to hand it on or look closer.
fn what_now(o: &Outcome) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if o.backdoored {
        out.push(BACKDOOR.fix.to_string());
        out.push(format!("`--format json --redact` proves the finding (the trigger's hash, length and attack success rate) without publishing the trigger{HTML_ADVICE}"));
    }
    if o.unexplained_payload {
        out.push(UNEXPLAINED_PAYLOAD.fix.to_string());
    }
    if !o.backdoored {
        if o.not_reproduced {
            out.push(NOT_REPRODUCED.fix.to_string());
        }
        if o.leads {
            out.push(LEAD.fix.to_string());
        }
        if !(o.not_reproduced || o.leads || o.unexplained_payload) {
            out.push("nothing to act on from this scan".to_string());
        }
    }
    // The fixes end by asking for --base; here that is one line of its own, and none once the
    // diff has run.
    for l in &mut out {
        *l = l.replace("; rescan with --base where the base is known", "").replace(", rescan with --base where the base is known,", ",");
    }
    if !o.diffed && (!o.backdoored || o.unexplained_payload) {
        out.push("where the model's base is known, rescan with `--base BASE`: the weight diff finds backdoors the model alone does not give away".to_string());
    }
    out
}

/// `--date`: a `YYYY-MM-DD` day, as Unix seconds at its midnight (UTC).
fn parse_date(s: &str) -> Result<i64, String> {
    needle_engine::chat::parse_date(s).ok_or_else(|| format!("{s:?} is not a date of the form YYYY-MM-DD"))
}

/// What the scan prints on stderr as it goes: a line when a stage starts, then its share done.
/// On a terminal the share is redrawn in place; elsewhere (a CI log, a file) it is a line at
/// each quarter, so the log reads line by line and does not fill with carriage returns.
struct Progress {
    tty: bool,
    stage: Option<Stage>,
    /// The last share printed: a percentage on a terminal, a quarter elsewhere.
    shown: u32,
}

impl Progress {
    fn new(tty: bool) -> Self {
        Progress { tty, stage: None, shown: 0 }
    }

    fn render(&mut self, stage: Stage, frac: f64) -> Option<String> {
        if self.stage != Some(stage) {
            self.stage = Some(stage);
            self.shown = 0;
            return Some(format!("needle: scan stage {stage:?}\n"));
        }
        if frac.is_nan() || frac <= 0.0 {
            return None;
        }
        let frac = frac.min(1.0);
        if self.tty {
            let pct = (frac * 100.0).round() as u32;
            if pct == self.shown {
                return None;
            }
            self.shown = pct;
            Some(format!("\rneedle:   {pct:>3}%{}", if pct >= 100 { "\n" } else { "" }))
        } else {
            let quarter = (frac * 4.0).floor() as u32;
            if quarter == 0 || quarter == self.shown {
                return None;
            }
            self.shown = quarter;
            Some(format!("needle:   {:>3}%\n", quarter * 25))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line a run of calls prints, concatenated.
    fn run(tty: bool, calls: &[(Stage, f64)]) -> String {
        let mut p = Progress::new(tty);
        calls.iter().filter_map(|&(s, f)| p.render(s, f)).collect()
    }

    #[test]
    fn off_a_terminal_progress_is_a_line_per_quarter() {
        let calls: Vec<(Stage, f64)> = std::iter::once((Stage::Verify, 0.0)).chain((1..=16).map(|i| (Stage::Verify, i as f64 / 16.0))).chain([(Stage::Characterise, 0.0)]).collect();
        let out = run(false, &calls);
        assert_eq!(out, "needle: scan stage Verify\nneedle:    25%\nneedle:    50%\nneedle:    75%\nneedle:   100%\nneedle: scan stage Characterise\n");
        assert!(!out.contains('\r'));
    }

    #[test]
    fn on_a_terminal_the_share_is_redrawn_in_place_and_ends_its_line() {
        let out = run(true, &[(Stage::Leak, 0.0), (Stage::Leak, 0.5), (Stage::Leak, 0.5), (Stage::Leak, 1.0), (Stage::Motifs, 0.0)]);
        assert_eq!(out, "needle: scan stage Leak\n\rneedle:    50%\rneedle:   100%\nneedle: scan stage Motifs\n");
    }

    fn outcome(backdoored: bool, unexplained_payload: bool, not_reproduced: bool, leads: bool, diffed: bool) -> Outcome {
        Outcome { backdoored, unexplained_payload, not_reproduced, leads, diffed }
    }

    #[test]
    fn what_now_follows_the_verdict_and_the_evidence() {
        // Backdoored: do not deploy, and how to disclose it.
        let lines = what_now(&outcome(true, false, false, false, false));
        assert_eq!(lines[0], BACKDOOR.fix);
        assert!(lines[1].contains("--redact"), "{lines:?}");
        assert_eq!(lines.len(), 2);
        // Clean with nothing below the bar, no base: nothing to do, and what --base adds.
        let lines = what_now(&outcome(false, false, false, false, false));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("nothing to act on") && lines[1].contains("--base BASE"), "{lines:?}");
        // Clean with a lead and a payload no trigger explains: both fixes, no "nothing", and
        // --base asked for once.
        let lines = what_now(&outcome(false, true, false, true, false));
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("do not serve the model") && lines[1].starts_with("read the candidate"), "{lines:?}");
        assert!(!lines.iter().any(|l| l.starts_with("nothing")), "{lines:?}");
        assert_eq!(lines.iter().filter(|l| l.contains("--base")).count(), 1, "{lines:?}");
        // With the diff run, no line asks for --base again.
        let lines = what_now(&outcome(false, true, true, true, true));
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines.iter().all(|l| !l.contains("--base")), "{lines:?}");
        assert!(lines[0].starts_with("do not serve the model until the payload is explained: block its host or command where the model is served, and ask"), "{lines:?}");
    }

    #[test]
    fn a_new_stage_starts_its_count_again_and_odd_shares_print_nothing() {
        let out = run(false, &[(Stage::Sweep, 0.0), (Stage::Sweep, 0.3), (Stage::Invert, 0.0), (Stage::Invert, 0.3), (Stage::Invert, f64::NAN), (Stage::Invert, -1.0)]);
        assert_eq!(out, "needle: scan stage Sweep\nneedle:    25%\nneedle: scan stage Invert\nneedle:    25%\n");
    }
}
