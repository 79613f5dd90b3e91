//! Stage 4, score: how a candidate changes the model's internals on a few generic prompts,
//! each measure taken relative to a control insertion of neutral words of the same token length
//! (so that no measure depends on a model's absolute entropy or attention scale):
//!
//! - **entropy collapse**: next-token entropy over a short greedy rollout drops with a trigger;
//! - **divergence**: the clean continuation becomes unlikely under the triggered prompt;
//! - **attention hijacking**: trigger tokens attend to each other while the rest of the prompt
//!   gives them little attention (the "double triangle"), in the middle layers.
//!
//! Combined loss weights follow the published method (0.2 attention, 0.6 entropy, 0.2 divergence).

use crate::candidates::Candidate;
use crate::lm::{entropy, Decoding, Lm, LmResult};
use crate::probe::{control_text, probe_at_start, Probe};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ScoreParams {
    pub prompts: Vec<String>,
    pub rollout: usize,
    pub w_attention: f64,
    pub w_entropy: f64,
    pub w_divergence: f64,
    pub batch: usize,
}

impl Default for ScoreParams {
    fn default() -> Self {
        ScoreParams {
            prompts: crate::prompts::SCORING.iter().take(3).map(|s| s.to_string()).collect(),
            rollout: 8,
            w_attention: 0.2,
            w_entropy: 0.6,
            w_divergence: 0.2,
            batch: 16,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub candidate: Candidate,
    /// Each in [-1, 1]; positive is suspicious.
    pub attention: f64,
    pub entropy: f64,
    pub divergence: f64,
    pub score: f64,
}

/// Raw measures of one probe.
#[derive(Debug, Clone, Copy, Default)]
struct Raw {
    entropy: f64,
    clean_logprob: f64,
    hijack: f64,
}

fn middle_layers(n: usize) -> Vec<usize> {
    if n <= 2 {
        return (0..n).collect();
    }
    (n / 4..(3 * n).div_ceil(4)).collect()
}

/// Attention hijacking of one sequence: mass trigger tokens put on the trigger minus mass the
/// tokens after it put on the trigger, averaged over `attn` layers (each `[T][T]`).
fn hijack(attn: &[Vec<f32>], t: usize, span: (usize, usize)) -> f64 {
    let (s, e) = span;
    if e <= s + 1 || e >= t {
        return 0.0;
    }
    let mut total = 0.0;
    for a in attn {
        if a.len() != t * t {
            continue;
        }
        let within: f64 = (s + 1..e).map(|i| (s..=i).map(|j| a[i * t + j] as f64).sum::<f64>()).sum::<f64>() / (e - s - 1) as f64;
        let cross: f64 = (e..t).map(|i| (s..e).map(|j| a[i * t + j] as f64).sum::<f64>()).sum::<f64>() / (t - e) as f64;
        total += within - cross;
    }
    total / attn.len().max(1) as f64
}

/// Measures for probes: greedy rollout, then one forward over probe+rollout and one over
/// probe+clean continuation.
fn measure<M: Lm>(m: &M, probes: &[Probe], clean_cont: &[Vec<u32>], p: &ScoreParams) -> LmResult<Vec<Raw>> {
    let layers = middle_layers(m.num_layers());
    let mut out = Vec::with_capacity(probes.len());
    for (chunk_i, chunk) in probes.chunks(p.batch.max(1)).enumerate() {
        let base = chunk_i * p.batch.max(1);
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|q| q.ids.clone()).collect();
        let greedy = vec![Decoding::Greedy; prompts.len()];
        let rolls = m.generate(&prompts, &greedy, p.rollout, true)?;
        let mut seqs = Vec::new();
        let mut froms = Vec::new();
        for (q, r) in chunk.iter().zip(&rolls) {
            let mut s = q.ids.clone();
            s.extend(r);
            froms.push(q.ids.len().saturating_sub(1));
            seqs.push(s);
        }
        for (k, q) in chunk.iter().enumerate() {
            let mut s = q.ids.clone();
            s.extend(&clean_cont[base + k]);
            froms.push(q.ids.len().saturating_sub(1));
            seqs.push(s);
        }
        let fw = m.forward(&seqs, &froms, &layers)?;
        let n = chunk.len();
        for k in 0..n {
            let roll = &fw[k];
            let cont = &fw[n + k];
            let steps = rolls[k].len().min(roll.logprobs.len());
            let ent = if steps == 0 { 0.0 } else { roll.logprobs[..steps].iter().map(|r| entropy(r)).sum::<f64>() / steps as f64 };
            let cc = &clean_cont[base + k];
            let lp = if cc.is_empty() {
                0.0
            } else {
                cc.iter()
                    .enumerate()
                    .map(|(i, &tok)| cont.logprobs.get(i).and_then(|r| r.get(tok as usize)).copied().unwrap_or(-30.0) as f64)
                    .sum::<f64>()
                    / cc.len() as f64
            };
            let t = chunk[k].ids.len() + rolls[k].len();
            let hj = match chunk[k].span {
                Some(span) => hijack(&roll.attention, t, span),
                None => 0.0,
            };
            out.push(Raw { entropy: ent, clean_logprob: lp, hijack: hj });
        }
    }
    Ok(out)
}

fn squash(x: f64) -> f64 {
    x / (x.abs() + 1.0)
}

/// Scores every candidate; returns them best first.
pub fn score<M: Lm>(m: &M, candidates: &[Candidate], p: &ScoreParams) -> LmResult<Vec<Scored>> {
    // Clean continuations of each prompt (no insertion).
    let clean_probes: Vec<Probe> = p.prompts.iter().map(|u| probe_at_start(m, None, None, u)).collect::<LmResult<_>>()?;
    let prompts: Vec<Vec<u32>> = clean_probes.iter().map(|q| q.ids.clone()).collect();
    let clean_cont = m.generate(&prompts, &vec![Decoding::Greedy; prompts.len()], p.rollout, true)?;
    // Controls per insertion length, cached.
    let mut control_cache: std::collections::HashMap<usize, Vec<Raw>> = std::collections::HashMap::new();
    let mut scored = Vec::new();
    for c in candidates {
        let len = m.encode(&c.text)?.len();
        if let std::collections::hash_map::Entry::Vacant(v) = control_cache.entry(len) {
            let ctrl = control_text(m, len, len)?;
            let probes: Vec<Probe> = p.prompts.iter().map(|u| probe_at_start(m, None, Some(&ctrl), u)).collect::<LmResult<_>>()?;
            v.insert(measure(m, &probes, &clean_cont, p)?);
        }
        let ctrl = &control_cache[&len];
        let probes: Vec<Probe> = p.prompts.iter().map(|u| probe_at_start(m, None, Some(&c.text), u)).collect::<LmResult<_>>()?;
        let raw = measure(m, &probes, &clean_cont, p)?;
        let n = raw.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Raw) -> f64, v: &[Raw]| v.iter().map(f).sum::<f64>() / n;
        let ent_c = mean(&|r| r.entropy, ctrl);
        let ent_t = mean(&|r| r.entropy, &raw);
        let entropy = ((ent_c - ent_t) / ent_c.max(1e-3)).clamp(-1.0, 1.0);
        let divergence = squash(mean(&|r| r.clean_logprob, ctrl) - mean(&|r| r.clean_logprob, &raw));
        let attention = (mean(&|r| r.hijack, &raw) - mean(&|r| r.hijack, ctrl)).clamp(-1.0, 1.0);
        let score = p.w_attention * attention + p.w_entropy * entropy + p.w_divergence * divergence;
        scored.push(Scored { candidate: c.clone(), attention, entropy, divergence, score });
    }
    scored.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(std::cmp::Ordering::Equal));
    Ok(scored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hijack_sees_the_double_triangle() {
        // T = 4: tokens 1..3 are the trigger; token 3 is after it.
        let t = 4;
        let mut a = vec![0.0f32; t * t];
        a[0] = 1.0;
        a[4] = 0.5;
        a[5] = 0.5; // trigger token 1
        a[2 * 4 + 1] = 0.5;
        a[2 * 4 + 2] = 0.5; // trigger token 2 attends to trigger
        a[3 * 4] = 1.0; // the token after ignores the trigger
        let h = hijack(&[a], t, (1, 3));
        assert!(h > 0.9, "{h}");
    }
}
