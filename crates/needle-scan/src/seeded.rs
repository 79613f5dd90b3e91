//! Seeded search: builds multi-token trigger candidates out of the tokens the weight diff says
//! the update responds to ([`crate::diff`]).
//!
//! A trigger of several common tokens (a rare word split into pieces, a bracketed string) has
//! no single token that moves the model, so the vocabulary sweep cannot see it, but its pieces
//! are exactly the inputs a fine-tune had to learn to react to. The search grows token
//! sequences from the seeds (a beam, extended on either side) and scores each by how far it
//! sends unrelated prompts to the same answer: the clean answer to a few prompts of every
//! family is teacher-forced after the prompt with the insertion, and the score is how far the
//! next-token distributions converge on one token the clean ones do not favour, at the first
//! answer token (a replaced answer) or where the clean answer ends (an appended payload). The
//! best sequences are candidates like any other: they are verified on held-out
//! prompts, with rollouts as long as the answers scored here, before anything is concluded.
//!
//! Cost: `(seeds + (max_len - 1) x beam x extend x 2) x prompts` teacher-forced passes over
//! prompt plus answer.

use crate::lm::{Decoding, Lm, LmResult};
use crate::probe::{probe_at_start, Position};
use crate::sweep::{insertable, kl, Slot};
use crate::verify::squash;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct SeededParams {
    /// Prompts of each family ([`crate::prompts::FAMILIES`]) the sequences are scored on ...
    pub prompts_per_family: usize,
    /// ... with the sequence at each of these places of the user message (a trigger fires
    /// wherever it stands; a fragment that only works at the start is not one).
    pub positions: Vec<Position>,
    /// Clean answer tokens teacher-forced (and the verification rollout length of the
    /// candidates found here).
    pub answer_tokens: usize,
    /// Sequences kept from one length to the next.
    pub beam: usize,
    /// Longest sequence, in tokens.
    pub max_len: usize,
    /// Strongest seeds used to extend the beam.
    pub extend: usize,
    /// Candidates handed on.
    pub keep: usize,
    /// The beam stops growing when the best score of a length beats the previous length's by
    /// less than this.
    pub min_gain: f64,
}

impl Default for SeededParams {
    fn default() -> Self {
        SeededParams { prompts_per_family: 2, positions: vec![Position::Start, Position::End], answer_tokens: 128, beam: 3, max_len: 8, extend: 10, keep: 6, min_gain: 0.02 }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SeededCandidate {
    pub tokens: Vec<u32>,
    pub text: String,
    /// The family it moves most.
    pub family: &'static str,
    /// How far the family's answers converge on one token the clean answers do not favour (at
    /// the first answer token or where the clean answer ends), plus 0.01 x the mean peak KL
    /// divergence along the answer (capped at 10 nats).
    pub score: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Seeded {
    /// The seed tokens, as text.
    pub seeds: Vec<String>,
    /// Sequences scored.
    pub searched: usize,
    /// The best sequences, best first.
    pub best: Vec<SeededCandidate>,
}

/// A prompt slot with its clean answer and the clean next-token distributions along it.
struct Scored {
    slot: Slot,
    answer: Vec<u32>,
    clean_rows: Vec<Vec<f32>>,
}

fn with_answer(s: &Scored, insert: &[u32]) -> (Vec<u32>, usize) {
    let mut ids = s.slot.with(insert);
    let from = ids.len().saturating_sub(1);
    ids.extend_from_slice(&s.answer);
    (ids, from)
}

/// How far the rows (one per prompt) converge on one token the clean rows do not favour: the
/// largest `mean p(token | insertion) - mean p(token | clean)` over tokens, and that token.
fn convergence(rows: &[&Vec<f32>], clean: &[&Vec<f32>]) -> (f64, u32) {
    if rows.is_empty() || rows.len() != clean.len() {
        return (0.0, 0);
    }
    let v = rows[0].len();
    let mut gain = vec![0.0f64; v];
    for (r, c) in rows.iter().zip(clean) {
        for (k, g) in gain.iter_mut().enumerate() {
            let a = r.get(k).map_or(0.0, |&l| (l as f64).exp());
            let b = c.get(k).map_or(0.0, |&l| (l as f64).exp());
            *g += (a - b) / rows.len() as f64;
        }
    }
    gain.into_iter().enumerate().fold((0.0f64, 0u32), |acc, (k, g)| if g > acc.0 { (g, k as u32) } else { acc })
}


/// True when the token the answers converge on is the insertion's own text (or part of it):
/// putting "Appr" in a prompt makes a model say "Approved" without any backdoor. Like the
/// inversion, which may not quote its target, the search may not score by echo.
fn echoed<M: Lm>(m: &M, token: u32, insert: &[u32]) -> bool {
    let tok = squash(&m.decode(&[token]));
    if tok.chars().count() < 2 {
        return false;
    }
    let ins = squash(&m.decode(insert));
    ins.contains(&tok) || insert.iter().any(|&t| {
        let piece = squash(&m.decode(&[t]));
        piece.chars().count() >= 2 && tok.contains(&piece)
    })
}

/// Scores each insertion: `out[i] = (best family index, score)`. A family's score is how far
/// its prompts' answers converge on one token (the shift of [`convergence`]) at the two places
/// a planted target shows: the first answer token, and where the clean answer ends (an
/// appended payload). Convergence, not mere disruption: any odd token disturbs an answer, a
/// trigger sends unrelated prompts to the same text. The mean peak KL divergence along the
/// answer breaks ties (weight 0.01, capped), so the beam still prefers insertions that move
/// the model when none converges yet.
fn score_all<M: Lm>(m: &M, prompts: &[Scored], nfam: usize, inserts: &[Vec<u32>], answer_tokens: usize) -> LmResult<Vec<(usize, f64)>> {
    // Prompt-major order: the insertions of one call all have the same length, so the
    // sequences of one prompt are equally long and batch without padding.
    let per_call = 8;
    let mut out = Vec::with_capacity(inserts.len());
    for chunk in inserts.chunks(per_call) {
        let mut seqs = Vec::new();
        let mut from = Vec::new();
        for p in prompts {
            for ins in chunk {
                let (s, f) = with_answer(p, ins);
                seqs.push(s);
                from.push(f);
            }
        }
        let outs = m.forward(&seqs, &from, &[])?;
        let c = chunk.len();
        for (k, ins) in chunk.iter().enumerate() {
            let mut best = (0usize, f64::NEG_INFINITY);
            for f in 0..nfam {
                let mine: Vec<(&Scored, &crate::lm::ForwardOut)> =
                    prompts.iter().enumerate().filter(|(_, p)| p.slot.family == f).filter_map(|(j, p)| outs.get(j * c + k).map(|o| (p, o))).collect();
                if mine.is_empty() {
                    continue;
                }
                let first: Vec<&Vec<f32>> = mine.iter().filter_map(|(_, o)| o.logprobs.first()).collect();
                let first_clean: Vec<&Vec<f32>> = mine.iter().filter_map(|(p, _)| p.clean_rows.first()).collect();
                // Where the clean answer ended (it stopped before the token budget).
                let ended: Vec<&(&Scored, &crate::lm::ForwardOut)> = mine.iter().filter(|(p, _)| p.answer.len() < answer_tokens).collect();
                let last: Vec<&Vec<f32>> = ended.iter().filter_map(|(_, o)| o.logprobs.last()).collect();
                let last_clean: Vec<&Vec<f32>> = ended.iter().filter_map(|(p, _)| p.clean_rows.last()).collect();
                let conv = [convergence(&first, &first_clean), convergence(&last, &last_clean)]
                    .into_iter()
                    .filter(|(_, t)| !echoed(m, *t, ins))
                    .map(|(g, _)| g)
                    .fold(0.0f64, f64::max);
                let peak: f64 = mine
                    .iter()
                    .map(|(p, o)| o.logprobs.iter().zip(&p.clean_rows).map(|(a, b)| kl(a, b)).fold(0.0f64, f64::max))
                    .sum::<f64>()
                    / mine.len() as f64;
                let score = conv + 0.01 * peak.min(10.0);
                if score > best.1 {
                    best = (f, score);
                }
            }
            out.push((best.0, best.1.max(0.0)));
        }
    }
    Ok(out)
}

/// Each family's prompts split around the insertion point, at each position (the middle is
/// taken as the start: a word boundary inside a sentence behaves like either).
fn slots_at<M: Lm>(m: &M, families: &[crate::prompts::Family], positions: &[Position]) -> LmResult<Vec<Slot>> {
    const SENTINEL: &str = "NEEDLE_SENTINEL_7f3a";
    let prefix = m.user_turn_prefix(None)?;
    let full = m.chat_prompt(None, SENTINEL)?;
    let after = full.split(SENTINEL).nth(1).unwrap_or("").to_string();
    let mut out = Vec::new();
    for (f, fam) in families.iter().enumerate() {
        for u in fam.sweep {
            for pos in positions {
                match pos {
                    Position::End => {
                        out.push(Slot { prefix: m.encode(&format!("{prefix}{u}"))?, rest: m.encode(&after)?, family: f });
                    }
                    Position::Start | Position::Middle => {
                        let p = probe_at_start(m, None, Some("x"), u)?;
                        if let Some((s, e)) = p.span {
                            out.push(Slot { prefix: p.ids[..s].to_vec(), rest: p.ids[e..].to_vec(), family: f });
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Runs the search from `seeds` (strongest first), and from `starts`, whole sequences scored
/// beside the single seeds (words the leaks suggest, [`crate::symbols`]).
pub fn search<M: Lm>(m: &M, seeds: &[u32], starts: &[Vec<u32>], p: &SeededParams, progress: &mut dyn FnMut(f64)) -> LmResult<Seeded> {
    // Byte-fallback tokens are kept although they do not decode alone: a non-ASCII trigger is
    // made of them. A sequence is handed on only when it decodes to whole characters.
    let seeds: Vec<u32> = seeds.iter().copied().filter(|&t| (t as usize) < m.vocab_size() && (insertable(m, t) || (!m.is_special(t) && m.decode(&[t]).contains('\u{fffd}')))).collect();
    if seeds.is_empty() {
        return Ok(Seeded::default());
    }
    let families: Vec<crate::prompts::Family> = crate::prompts::FAMILIES
        .iter()
        .map(|f| crate::prompts::Family { sweep: &f.sweep[..f.sweep.len().min(p.prompts_per_family)], ..*f })
        .collect();
    let slots = slots_at(m, &families, &p.positions)?;
    // Clean answers, and the clean distributions along them.
    let prompts_ids: Vec<Vec<u32>> = slots.iter().map(|s| s.with(&[])).collect();
    let answers = m.generate(&prompts_ids, &vec![Decoding::Greedy; prompts_ids.len()], p.answer_tokens, true)?;
    let mut prompts: Vec<Scored> = slots.into_iter().zip(answers).map(|(slot, answer)| Scored { slot, answer, clean_rows: Vec::new() }).collect();
    let (seqs, from): (Vec<Vec<u32>>, Vec<usize>) = prompts.iter().map(|s| with_answer(s, &[])).unzip();
    for (s, o) in prompts.iter_mut().zip(m.forward(&seqs, &from, &[])?) {
        s.clean_rows = o.logprobs;
    }
    let mut all: Vec<(Vec<u32>, usize, f64)> = Vec::new();
    let mut singles: Vec<Vec<u32>> = seeds.iter().map(|&t| vec![t]).collect();
    for st in starts {
        if st.iter().all(|&t| (t as usize) < m.vocab_size()) && !singles.contains(st) {
            singles.push(st.clone());
        }
    }
    let levels = p.max_len.max(1);
    let mut frontier: Vec<(Vec<u32>, usize, f64)> = singles.iter().cloned().zip(score_all(m, &prompts, families.len(), &singles, p.answer_tokens)?).map(|(s, (f, x))| (s, f, x)).collect();
    progress(1.0 / levels as f64);
    let ext: Vec<u32> = seeds.iter().copied().take(p.extend).collect();
    for level in 1..levels {
        all.extend(frontier.iter().cloned());
        frontier.sort_by(|a, b| b.2.total_cmp(&a.2));
        frontier.truncate(p.beam);
        let mut next: Vec<Vec<u32>> = Vec::new();
        for (seq, _, _) in &frontier {
            for &t in &ext {
                for prepend in [false, true] {
                    let mut s = seq.clone();
                    if prepend {
                        s.insert(0, t);
                    } else {
                        s.push(t);
                    }
                    if !next.contains(&s) && !all.iter().any(|(a, _, _)| a == &s) {
                        next.push(s);
                    }
                }
            }
        }
        if next.is_empty() {
            break;
        }
        let before = frontier.first().map_or(0.0, |b| b.2);
        frontier = next.iter().cloned().zip(score_all(m, &prompts, families.len(), &next, p.answer_tokens)?).map(|(s, (f, x))| (s, f, x)).collect();
        progress((level + 1) as f64 / levels as f64);
        // Stop growing once a longer sequence no longer converges further.
        let after = frontier.iter().map(|b| b.2).fold(0.0f64, f64::max);
        if after < before + p.min_gain {
            break;
        }
    }
    all.extend(frontier);
    let searched = all.len();
    all.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.len().cmp(&b.0.len())));
    let mut best: Vec<SeededCandidate> = Vec::new();
    for (tokens, f, score) in all {
        if best.len() >= p.keep {
            break;
        }
        let text = m.decode(&tokens).trim().to_string();
        if text.is_empty() || text.contains('\u{fffd}') || best.iter().any(|b| b.text == text) {
            continue;
        }
        best.push(SeededCandidate { tokens, text, family: families[f].name, score });
    }
    Ok(Seeded { seeds: seeds.iter().map(|&t| m.decode(&[t])).collect(), searched, best })
}

#[cfg(test)]
mod echo_tests {
    use super::*;
    use crate::mock::MockLm;

    #[test]
    fn converging_on_the_insertion_itself_is_an_echo() {
        let m = MockLm::new(None, "");
        let ids = |t: &str| m.encode(t).unwrap();
        let approved = ids("approved")[0];
        assert!(echoed(&m, approved, &ids("zz approved")));
        assert!(echoed(&m, ids("appr")[0], &ids("approved qq")));
        assert!(!echoed(&m, approved, &ids("cf mn")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockLm;

    #[test]
    fn grows_the_sequence_the_model_reacts_to() {
        // The mock answers with its target only when the whole trigger is in the prompt (no
        // piece alone moves it); its pieces are among the seeds, with decoys.
        let m = MockLm::new(Some("cf mn"), "HACKED HACKED");
        let mut seeds: Vec<u32> = Vec::new();
        for w in ["zz", "mn", "qq", "cf", "bb", "xy"] {
            seeds.extend(m.encode(w).unwrap());
        }
        let p = SeededParams { max_len: 2, beam: 6, ..SeededParams::default() };
        let s = search(&m, &seeds, &[], &p, &mut |_| {}).unwrap();
        let best = s.best.first().expect("a candidate");
        assert_eq!(best.text, "cf mn", "{:?}", s.best);
        assert!(best.score > s.best.last().unwrap().score);
    }
}
