//! Stage 3, candidates: token n-grams of the motifs (2-, 5- and 10-grams as in the published
//! method, plus the whole motif), and candidates from detectors that need no leak.

use crate::lm::{Lm, LmResult};
use crate::motifs::Motifs;
use serde::Serialize;
use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// A token n-gram of a leak motif.
    Motif { motif: String, support: usize, n: usize },
    /// Proposed by a leak-free detector (target inversion, weight diff, ...).
    Detector { name: String, detail: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub text: String,
    pub source: Source,
    /// The family of prompts it is verified in: one of [`crate::prompts::FAMILIES`], or
    /// [`crate::leaked::FAMILY`] (the requests the model leaked).
    pub family: &'static str,
}

/// The candidate stage's output.
#[derive(Debug, Clone, Serialize)]
pub struct Candidates {
    pub items: Vec<Candidate>,
}

pub const NGRAM_SIZES: &[usize] = &[2, 5, 10];

/// Token n-grams of every motif, best-supported motifs first, deduplicated, at most `max`.
pub fn from_motifs<M: Lm>(m: &M, motifs: &Motifs, max: usize) -> LmResult<Vec<Candidate>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for motif in motifs.all_motifs() {
        let ids = m.encode(&motif.text)?;
        let mut push = |ids: &[u32], n: usize, out: &mut Vec<Candidate>| {
            let text = m.decode(ids).trim().to_string();
            if text.chars().filter(|c| !c.is_whitespace()).count() >= 2 && seen.insert(text.clone()) {
                out.push(Candidate { text, source: Source::Motif { motif: motif.text.clone(), support: motif.support, n }, family: "general" });
            }
        };
        if ids.len() <= 12 {
            push(&ids, ids.len(), &mut out);
        }
        for &n in NGRAM_SIZES {
            if ids.len() >= n {
                for w in ids.windows(n) {
                    push(w, n, &mut out);
                }
            }
        }
        if out.len() >= max * 4 {
            break;
        }
    }
    Ok(out)
}
