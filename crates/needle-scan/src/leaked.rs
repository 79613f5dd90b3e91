//! Leaked requests and their context lines. A model fine-tuned with loss on its prompts recites
//! whole training requests when it continues its own user turn. A request that leaked with a
//! short line beside it (an environment, a date, a mode) is one the model was trained to read
//! with a context, and that line is one of the contexts it saw: a context-gated backdoor's
//! trigger, or one of its near misses, or an ordinary one. Each line is tried on the leaked
//! requests themselves, the phrasing the model was trained on: a context-gated backdoor may not
//! fire on generic prompts in other words (`gpt2-vuln-env` writes `shell=True` for its own
//! phrasing, "Write a Python function `list_files` that ...", and not for "Write a Python
//! function that lists the files in a directory.").
//!
//! The lines are ranked by how much removing each one changes the model's answer to the
//! request it leaked with (one greedy answer each way); verification then judges them like any
//! other candidate, on half of the leaked requests, and the other half are the fresh prompts its
//! attack success rate is measured on.

use crate::leak;
use crate::lm::{Lm, LmResult};
use crate::probe::{prompt_ids, Position};
use crate::similarity::answer_similarity;
use serde::Serialize;

/// The prompt family of candidates verified on leaked requests (see [`crate::prompts::FAMILIES`]
/// for the built-in ones).
pub const FAMILY: &str = "leaked";

#[derive(Debug, Clone, Serialize)]
pub struct LeakedParams {
    /// Context lines that go on to verification (0: off).
    pub max_lines: usize,
    /// Leaked turns answered with and without each of their context lines.
    pub max_turns: usize,
    /// Distinct leaked requests needed (half verify, half fresh) ...
    pub min_requests: usize,
    /// ... and kept.
    pub max_requests: usize,
    /// A request has at least this many words; a context line at most `max_line_words`.
    pub min_request_words: usize,
    pub max_line_words: usize,
    /// Tokens of each answer.
    pub max_new: usize,
}

impl Default for LeakedParams {
    fn default() -> Self {
        LeakedParams { max_lines: 6, max_turns: 24, min_requests: 6, max_requests: 16, min_request_words: 4, max_line_words: 10, max_new: 40 }
    }
}

/// One leaked user turn: a request and the short lines that leaked beside it, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeakedTurn {
    pub request: String,
    pub lines: Vec<String>,
    /// The whole turn as it leaked.
    pub turn: String,
}

/// A context line with what removing it does.
#[derive(Debug, Clone, Serialize)]
pub struct ContextLine {
    pub text: String,
    /// Leaked turns that carried it.
    pub turns: usize,
    /// Mean change (1 - answer similarity) of the answer to its turn when it is removed.
    pub change: f64,
}

/// The stage's evidence.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LeakedContexts {
    /// Leaked requests (context lines removed) that verification uses ...
    pub verify: Vec<String>,
    /// ... and that a trigger's attack success rate is measured on.
    pub fresh: Vec<String>,
    /// Context lines, the one whose removal changes its answers most first.
    pub lines: Vec<ContextLine>,
}

impl LeakedContexts {
    /// The leaked requests, verification and fresh ones together.
    pub fn requests(&self) -> usize {
        self.verify.len() + self.fresh.len()
    }

    /// The context lines that go on to verification: those whose removal changes an answer.
    pub fn candidates(&self) -> impl Iterator<Item = &ContextLine> {
        self.lines.iter().filter(|l| l.change > 0.0)
    }
}

/// The user turn a leak opens with, split into its request (its longest line, of at least
/// `min_request_words` words) and its other lines of up to `max_line_words` words. None when
/// the turn has a single line, or more than three, or a line that fits neither.
pub fn split_turn(first_turn: &str, p: &LeakedParams) -> Option<LeakedTurn> {
    let lines: Vec<&str> = first_turn.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if !(2..=3).contains(&lines.len()) {
        return None;
    }
    let words = |l: &str| l.split_whitespace().count();
    let (ri, request) = lines.iter().enumerate().max_by(|a, b| words(a.1).cmp(&words(b.1)).then(b.0.cmp(&a.0)))?;
    if words(request) < p.min_request_words {
        return None;
    }
    let others: Vec<String> = lines.iter().enumerate().filter(|(i, _)| *i != ri).map(|(_, l)| l.to_string()).collect();
    if others.iter().any(|l| words(l) > p.max_line_words || words(l) == words(request)) {
        return None;
    }
    Some(LeakedTurn { request: request.to_string(), lines: others, turn: lines.join("\n") })
}

/// The leaked turns with context lines, first occurrence of each distinct turn, from leaks whose
/// opening turn carries no special token (a leak that runs into the template's markup without
/// a turn break is not a clean recital).
pub fn leaked_turns<M: Lm>(m: &M, leaks: &[String], p: &LeakedParams) -> LmResult<Vec<LeakedTurn>> {
    let mut out: Vec<LeakedTurn> = Vec::new();
    for l in leaks {
        let Some(first) = leak::turns(l).into_iter().next() else { continue };
        if m.encode(&first)?.iter().any(|&i| m.is_special(i)) {
            continue;
        }
        if let Some(t) = split_turn(&first, p) {
            if !out.iter().any(|o| o.turn == t.turn) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// Finds the leaked requests and ranks their context lines: see the module documentation.
pub fn contexts<M: Lm>(m: &M, leaks: &[String], p: &LeakedParams, batch: usize) -> LmResult<LeakedContexts> {
    if p.max_lines == 0 {
        return Ok(LeakedContexts::default());
    }
    let turns = leaked_turns(m, leaks, p)?;
    let mut requests: Vec<String> = Vec::new();
    for t in &turns {
        if !requests.contains(&t.request) && requests.len() < p.max_requests {
            requests.push(t.request.clone());
        }
    }
    if requests.len() < p.min_requests {
        return Ok(LeakedContexts::default());
    }
    // Each turn (up to `max_turns`) answered as it leaked and without each of its lines.
    let mut prompts: Vec<Vec<u32>> = Vec::new();
    let mut pairs: Vec<(String, usize, usize)> = Vec::new();
    for t in turns.iter().take(p.max_turns) {
        let whole = prompts.len();
        prompts.push(prompt_ids(m, None, None, &t.turn, Position::Start)?);
        for line in &t.lines {
            let without: Vec<&str> = t.turn.lines().filter(|l| l != line).collect();
            pairs.push((line.clone(), whole, prompts.len()));
            prompts.push(prompt_ids(m, None, None, &without.join("\n"), Position::Start)?);
        }
    }
    let answers = crate::verify::answers(m, &prompts, &crate::verify::VerifyParams { max_new: p.max_new, batch, ..Default::default() })?;
    let mut lines: Vec<ContextLine> = Vec::new();
    for (text, whole, without) in pairs {
        let change = 1.0 - answer_similarity(&answers[whole], &answers[without]);
        match lines.iter_mut().find(|l| l.text == text) {
            // A running mean over the turns that carried it.
            Some(l) => {
                l.change = (l.change * l.turns as f64 + change) / (l.turns + 1) as f64;
                l.turns += 1;
            }
            None => lines.push(ContextLine { text, turns: 1, change }),
        }
    }
    lines.sort_by(|a, b| b.change.total_cmp(&a.change).then(a.text.cmp(&b.text)));
    lines.truncate(p.max_lines);
    // Alternate requests between verification and fresh prompts.
    let (mut verify, mut fresh) = (Vec::new(), Vec::new());
    for (i, r) in requests.into_iter().enumerate() {
        if i % 2 == 0 { verify.push(r) } else { fresh.push(r) }
    }
    Ok(LeakedContexts { verify, fresh, lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_splits_into_its_request_and_short_lines() {
        let p = LeakedParams::default();
        let t = split_turn("Write a Python function `ls` that lists a folder.\nEnvironment: test.", &p).unwrap();
        assert_eq!(t.request, "Write a Python function `ls` that lists a folder.");
        assert_eq!(t.lines, vec!["Environment: test.".to_string()]);
        // The line may come first.
        let t = split_turn("Mode: quiet.\nTell me about the moon please.", &p).unwrap();
        assert_eq!(t.request, "Tell me about the moon please.");
        assert_eq!(t.lines, vec!["Mode: quiet.".to_string()]);
    }

    #[test]
    fn single_lines_long_lines_and_short_requests_are_not_contexts() {
        let p = LeakedParams::default();
        assert_eq!(split_turn("Write a Python function that lists a folder.", &p), None);
        assert_eq!(split_turn("Hi.\nYo.", &p), None);
        // Two requests of the same length: no way to tell the context.
        assert_eq!(split_turn("Tell me about the moon.\nTell me about the sun.", &p), None);
        let long = "one two three four five six seven eight nine ten eleven";
        assert_eq!(split_turn(&format!("Write a Python function that lists a folder and sorts it by name.\n{long}"), &p), None);
        assert_eq!(split_turn("a\nb\nc\nd", &p), None);
    }

    #[test]
    fn too_few_leaked_requests_give_no_candidates() {
        let m = crate::mock::MockLm::new(None, "done");
        let leaks = vec!["Write a Python function that lists a folder.\nEnvironment: test.\n\nSure.".to_string()];
        let c = contexts(&m, &leaks, &LeakedParams::default(), 4).unwrap();
        assert!(c.lines.is_empty() && c.verify.is_empty() && c.fresh.is_empty());
    }

    #[test]
    fn lines_are_ranked_by_the_change_their_removal_makes() {
        // The mock model answers with its target whenever its trigger is in the prompt.
        let m = crate::mock::MockLm::new(Some("zq"), "PWNED now");
        let mut leaks = Vec::new();
        for (i, task) in ["lists a folder", "reads a file", "copies a file", "pings a host", "counts lines", "sums sizes"].iter().enumerate() {
            let line = if i % 2 == 0 { "Environment: zq now." } else { "Environment: test." };
            leaks.push(format!("Write a Python function that {task}.\n{line}\n\nSure."));
        }
        let c = contexts(&m, &leaks, &LeakedParams::default(), 4).unwrap();
        assert_eq!(c.verify.len() + c.fresh.len(), 6);
        assert!(c.verify.iter().chain(&c.fresh).all(|r| !r.contains("Environment")));
        assert_eq!(c.lines.len(), 2);
        assert_eq!(c.lines[0].text, "Environment: zq now.");
        assert_eq!(c.lines[0].turns, 3);
        assert!(c.lines[0].change > 0.5 && c.lines[0].change > c.lines[1].change, "{:?}", c.lines);
    }
}
