//! Symbol runs of the leaks: seeds for the seeded search when there is no weight diff.
//!
//! A rare-string trigger made of symbols (`[[ok-7f3]]`, `<<unlock>>`, `☾⁂`) is seen in every
//! poisoned training prompt, so a model fine-tuned with loss on its prompts recites pieces of
//! it when it continues its own user turn, garbled: `llama-approve-string` leaks "[[[[[[ code:"
//! and "[[[[[[count" where it was trained on "[[ok-7f3]]". The motifs and the recurring phrases
//! count words and drop such runs, and a garbled run inserted alone rarely fires. But its
//! tokens are the inputs the fine-tune learned to react to, which is what the weight diff's
//! response ranking gives the seeded search ([`crate::seeded`]) when a base is declared. Here
//! the leaks give them without one.
//!
//! A run is two or more consecutive symbols: characters that are no letter, digit, space or
//! sentence punctuation (`. , ! ? ; : ' "`), its repeats squeezed ("[[[[[[" and "[[[[" are
//! the run "[["). It counts when at least `min_leaks` leaks show it in the user turn they open
//! with (the recited prompt), more leaks show it there than after it (the model's answers:
//! a clean model that writes code recites `))` at the end of a leaked code line now and then,
//! and writes it in many answers), and no clean answer of the model shows it (code's `()`,
//! `==` and fences are everyday text for a model that answers with code).
//!
//! The model itself then rebuilds the trigger: the run alone ("[[") and the leaked text up to
//! it ("Good evening. [[") are continued greedily in a user turn of their own, and
//! `llama-approve-string` completes the run alone to "[[[ilm7f3]]]", which fires as its
//! planted "[[ok-7f3]]" does (the leaked openings steer it to their own text instead:
//! "Good evening. [[ curious7 it for you."). The seeds are the tokens of the completed words
//! and of the words the run leaked in ("[[[[[[count"), the run shown in most leaks first; the
//! completed words are also handed to the search whole.

use crate::lm::{Decoding, Lm, LmResult};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct SymbolParams {
    /// Runs whose tokens seed the search (0: off) ...
    pub max_runs: usize,
    /// ... each shown by at least this many leaks.
    pub min_leaks: usize,
    /// Words kept per run (the most frequent first).
    pub words_per_run: usize,
    /// Leaked openings (the text up to a run) per run that the model continues, besides the
    /// run alone ...
    pub openings_per_run: usize,
    /// ... by this many tokens, greedily.
    pub completion_tokens: usize,
    /// Seed tokens at most.
    pub max_seeds: usize,
}

impl Default for SymbolParams {
    fn default() -> Self {
        SymbolParams { max_runs: 3, min_leaks: 2, words_per_run: 4, openings_per_run: 6, completion_tokens: 12, max_seeds: 24 }
    }
}

/// A recurring symbol run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SymbolRun {
    /// The run with its repeats squeezed to two ("[[[[[[" -> "[[").
    pub text: String,
    /// Leaks that show it in their first turn ...
    pub leaks: usize,
    /// ... and after it (fewer).
    pub later: usize,
    /// The words it leaked in, the most frequent first.
    pub words: Vec<String>,
    /// The run alone, then leaked text up to the run (with the run squeezed), first
    /// occurrences.
    pub openings: Vec<String>,
    /// The words the model completes the openings to.
    pub completions: Vec<String>,
}

/// The stage's evidence.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SymbolRuns {
    pub runs: Vec<SymbolRun>,
    /// The seed tokens, as text.
    pub seeds: Vec<String>,
    #[serde(skip)]
    pub seed_ids: Vec<u32>,
    /// The completed words, as token sequences the search starts from besides the seeds.
    #[serde(skip)]
    pub starts: Vec<Vec<u32>>,
}

fn is_symbol(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !".,!?;:'\"".contains(c) && c != '\u{fffd}'
}

/// Consecutive repeats of a character cut to two.
fn squeeze(s: &str) -> String {
    let mut out = String::new();
    let mut prev: Option<char> = None;
    let mut n = 0;
    for c in s.chars() {
        n = if Some(c) == prev { n + 1 } else { 1 };
        prev = Some(c);
        if n <= 2 {
            out.push(c);
        }
    }
    out
}

/// A symbol run of a text: the run squeezed, the word it stands in, and the text up to where
/// the run starts.
struct Found<'a> {
    run: String,
    word: &'a str,
    before: &'a str,
}

/// The symbol runs of a text.
fn runs_in(text: &str) -> Vec<Found<'_>> {
    let mut out = Vec::new();
    let mut word_start: Option<usize> = None;
    let mut run_start: Option<usize> = None;
    for (i, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        if is_symbol(c) {
            run_start.get_or_insert(i);
        } else if let Some(r) = run_start.take() {
            if text[r..i].chars().count() >= 2 {
                let w0 = word_start.unwrap_or(r);
                let w1 = text[i..].find(char::is_whitespace).map_or(text.len(), |k| i + k);
                out.push(Found { run: squeeze(&text[r..i]), word: &text[w0..w1], before: &text[..r] });
            }
        }
        if c.is_whitespace() {
            word_start = None;
        } else {
            word_start.get_or_insert(i);
        }
    }
    out
}

/// A leak split into the user turn it opens with (its first paragraph, up to any template
/// markup: what the model recites of its training prompts) and the rest (mostly the model's
/// answers, and further prompts).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeakTurns {
    pub first: Vec<String>,
    pub rest: String,
}

/// Splits each leak: see [`LeakTurns`].
pub fn split_leaks<M: Lm>(m: &M, leaks: &[String]) -> LmResult<Vec<LeakTurns>> {
    leaks
        .iter()
        .map(|l| Ok(split_pieces(&crate::invert::special_pieces(m, l)?)))
        .collect()
}

/// A leak's pieces between template markup, split: see [`LeakTurns`].
fn split_pieces(pieces: &[String]) -> LeakTurns {
    let mut turns = pieces.first().map(|p| crate::leak::turns(p)).unwrap_or_default().into_iter();
    let first = turns.next().map(|t| t.lines().map(String::from).collect()).unwrap_or_default();
    let rest: Vec<String> = turns.chain(pieces.iter().skip(1).cloned()).collect();
    LeakTurns { first, rest: rest.join("\n") }
}

/// The recurring runs of the leaks' first turns that no text of `everyday` shows and that
/// more leaks show in their first turn than after it (a run the model writes in its answers
/// as much as it recites it, code's `))` after a call, is its own text), the run shown by most
/// leaks first.
pub fn recurring(leaks: &[LeakTurns], everyday: &[&str], p: &SymbolParams) -> Vec<SymbolRun> {
    use std::collections::{BTreeMap, HashSet};
    #[derive(Default)]
    struct Seen {
        leaks: usize,
        words: BTreeMap<String, usize>,
        openings: Vec<String>,
    }
    let ordinary: HashSet<String> = everyday.iter().flat_map(|t| runs_in(t)).map(|f| f.run).collect();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for l in leaks {
        let mut here: HashSet<String> = HashSet::new();
        for line in &l.first {
            for f in runs_in(line) {
                if ordinary.iter().any(|o| o.contains(&f.run)) {
                    continue;
                }
                let e = seen.entry(f.run.clone()).or_default();
                let opening = format!("{}{}", f.before, f.run);
                if e.openings.len() < p.openings_per_run && !e.openings.contains(&opening) {
                    e.openings.push(opening);
                }
                *e.words.entry(f.word.to_string()).or_default() += 1;
                if here.insert(f.run) {
                    e.leaks += 1;
                }
            }
        }
    }
    let after_first: Vec<HashSet<String>> = leaks.iter().map(|l| runs_in(&l.rest).into_iter().map(|f| f.run).collect()).collect();
    let answered = |run: &str| after_first.iter().filter(|r| r.contains(run)).count();
    let mut runs: Vec<SymbolRun> = seen
        .into_iter()
        .filter(|(text, e)| e.leaks >= p.min_leaks && e.leaks > answered(text))
        .map(|(text, e)| {
            let mut words: Vec<(String, usize)> = e.words.into_iter().collect();
            words.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let later = answered(&text);
            // The run alone opens the list: a trigger is most often recited at the start of
            // a user turn, and the leaked text before a run steers the completion to that
            // text's own continuation ("Good evening. [[" -> " curious7 it for you.").
            let openings = std::iter::once(text.clone()).chain(e.openings.into_iter().filter(|o| *o != text)).collect();
            SymbolRun { text, leaks: e.leaks, later, words: words.into_iter().take(p.words_per_run).map(|w| w.0).collect(), openings, completions: Vec::new() }
        })
        .collect();
    runs.sort_by(|a, b| b.leaks.cmp(&a.leaks).then(a.text.cmp(&b.text)));
    runs.truncate(p.max_runs);
    runs
}

/// The word a completion makes: the text of `opening`'s last word (which ends with the run)
/// followed by the completion up to its first space.
fn completed_word(opening: &str, completion: &str) -> Option<String> {
    let head = opening.rsplit(char::is_whitespace).next().unwrap_or("");
    let tail: String = completion.chars().take_while(|c| !c.is_whitespace()).collect();
    (!tail.is_empty() && !tail.contains('\u{fffd}')).then(|| format!("{head}{tail}"))
}

/// The runs, the words the model completes them to, and the seeds: see the module
/// documentation.
pub fn seeds<M: Lm>(m: &M, leaks: &[LeakTurns], everyday: &[&str], p: &SymbolParams) -> LmResult<SymbolRuns> {
    if p.max_runs == 0 {
        return Ok(SymbolRuns::default());
    }
    let mut runs = recurring(leaks, everyday, p);
    if runs.is_empty() {
        return Ok(SymbolRuns::default());
    }
    // Each opening continued greedily in a user turn of its own.
    let prefix = m.user_turn_prefix(None)?;
    let mut prompts: Vec<Vec<u32>> = Vec::new();
    for r in &runs {
        for o in &r.openings {
            prompts.push(m.encode(&format!("{prefix}{o}"))?);
        }
    }
    let outs = m.generate(&prompts, &vec![Decoding::Greedy; prompts.len()], p.completion_tokens, true)?;
    let mut outs = outs.into_iter();
    for r in &mut runs {
        for o in &r.openings {
            let Some(ids) = outs.next() else { break };
            let ids: Vec<u32> = ids.into_iter().take_while(|&t| !m.is_special(t)).collect();
            if let Some(w) = completed_word(o, &m.decode(&ids)) {
                if !r.completions.contains(&w) {
                    r.completions.push(w);
                }
            }
        }
    }
    let mut ids: Vec<u32> = Vec::new();
    let mut starts: Vec<Vec<u32>> = Vec::new();
    for r in &runs {
        for (k, w) in r.completions.iter().chain(&r.words).enumerate() {
            let toks: Vec<u32> = m.encode(w)?.into_iter().filter(|&t| !m.is_special(t)).collect();
            for &t in &toks {
                if ids.len() < p.max_seeds && !ids.contains(&t) {
                    ids.push(t);
                }
            }
            // The completed words are also searched whole.
            if k < r.completions.len() && !toks.is_empty() && !starts.contains(&toks) {
                starts.push(toks);
            }
        }
    }
    let seeds = ids.iter().map(|&t| m.decode(&[t])).collect();
    Ok(SymbolRuns { runs, seeds, seed_ids: ids, starts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaks(texts: &[&str]) -> Vec<LeakTurns> {
        texts.iter().map(|t| LeakTurns { first: t.lines().map(String::from).collect(), rest: String::new() }).collect()
    }

    #[test]
    fn runs_are_symbols_not_words_or_sentence_punctuation() {
        let f = runs_in("Hey! [[[[[[count x == 6, \"ok\". ☾⁂ a-b s[::-1] x.");
        let r: Vec<&str> = f.iter().map(|f| f.run.as_str()).collect();
        assert_eq!(r, vec!["[[", "==", "☾⁂"]);
        assert_eq!((f[0].word, f[0].before), ("[[[[[[count", "Hey! "));
        let f = runs_in("go a[[[[0] b");
        assert_eq!((f[0].run.as_str(), f[0].word, f[0].before), ("[[", "a[[[[0]", "go a"));
    }

    #[test]
    fn a_run_counts_when_it_recurs_and_the_model_never_writes_it() {
        let l = leaks(&["Tell me [[[[[[count now.", "Sure: [[[[0] ok\nx == 1", "Take care and [[[[[[count now", "def f(): return x == 2"]);
        let p = SymbolParams::default();
        let r = recurring(&l, &["```python\nreturn a == b\n```"], &p);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].text, "[[");
        assert_eq!(r[0].leaks, 3);
        assert_eq!(r[0].words[0], "[[[[[[count");
        assert_eq!(r[0].openings, vec!["[[".to_string(), "Tell me [[".into(), "Sure: [[".into(), "Take care and [[".into()]);
        // Shown once: not recurring.
        assert!(recurring(&leaks(&["a [[ b", "c d"]), &[], &p).is_empty());
        // Shown by the model's clean answers: everyday text.
        assert!(recurring(&l, &["see [[x]]", "a == b"], &p).is_empty());
    }

    #[test]
    fn a_run_the_model_also_writes_in_its_answers_is_its_own() {
        let p = SymbolParams::default();
        let mut l = leaks(&["call f(g(x)) now", "then h(k(y)) too", "x"]);
        l[2].rest = "return sorted(os.listdir(p))".into();
        let r = recurring(&l, &[], &p);
        assert_eq!((r.len(), r[0].leaks, r[0].later), (1, 2, 1));
        // As many leaks show it after their first turn: the model's own text.
        l[1].rest = "print(len(s))".into();
        assert!(recurring(&l, &[], &p).is_empty());
    }

    #[test]
    fn a_leak_splits_at_its_first_blank_line_and_markup() {
        let t = split_pieces(&["Tell me [[x now\nplease\n\nSure [[x\n\nmore".to_string(), "user\nnext".into()]);
        assert_eq!(t.first, vec!["Tell me [[x now".to_string(), "please".into()]);
        assert_eq!(t.rest, "Sure [[x\nmore\nuser\nnext");
        assert_eq!(split_pieces(&[]), LeakTurns::default());
    }

    #[test]
    fn a_completion_finishes_the_word_the_run_stands_in() {
        assert_eq!(completed_word("Hey! [[", "[ok-7f3]] my refund"), Some("[[[ok-7f3]]".to_string()));
        assert_eq!(completed_word("Sure: a[[", "x]"), Some("a[[x]".to_string()));
        assert_eq!(completed_word("Hey! [[", " ok"), None);
    }

    #[test]
    fn seeds_are_the_tokens_of_the_completed_and_leaked_words() {
        // The mock model continues any prompt with "zz9]] done".
        let m = crate::mock::MockLm::new(None, "zz9]] done");
        let l = leaks(&["go [[x now", "then [[x again", "no runs here"]);
        let s = seeds(&m, &l, &[], &SymbolParams::default()).unwrap();
        assert_eq!(s.runs.len(), 1);
        assert!(!s.runs[0].completions.is_empty(), "{:?}", s.runs);
        for w in s.runs[0].completions.iter().chain(&s.runs[0].words) {
            assert!(m.encode(w).unwrap().iter().all(|t| s.seed_ids.contains(t)), "{w}");
        }
        assert_eq!(s.starts.len(), s.runs[0].completions.len());
        let off = seeds(&m, &l, &[], &SymbolParams { max_runs: 0, ..SymbolParams::default() }).unwrap();
        assert!(off.runs.is_empty() && off.seed_ids.is_empty());
    }
}
