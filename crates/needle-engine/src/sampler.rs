//! Token sampling with Hugging Face `generate` semantics, and row-wise softmax helpers.
//!
//! Order of operations (as transformers' logits processors and warpers run them): repetition
//! penalty, then temperature, top-k, top-p (nucleus), min-p, then a draw from the remaining
//! distribution. Greedy decoding applies the repetition penalty and takes the argmax (ties go to
//! the lowest id, as `torch.argmax`). The random source is a seeded xoshiro256** generator, so a
//! given seed reproduces the same tokens on every platform.

use serde::{Deserialize, Serialize};

/// Parameters of one sampler. Neutral defaults: temperature 1, no top-k/top-p/min-p filtering,
/// no repetition penalty, seed 0, sampling (not greedy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Divides the logits before filtering; `0` (or less) means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` highest logits (ties with the k-th are kept); `0` disables.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose mass reaches `top_p`; `1` disables.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the largest probability; `0` disables.
    pub min_p: f32,
    /// HF repetition penalty over the tokens in the history: positive logits are divided by
    /// it, negative ones multiplied; `1` disables.
    pub repetition_penalty: f32,
    /// Seed of the random generator.
    pub seed: u64,
    /// Always take the most likely token (after the repetition penalty).
    pub greedy: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
            greedy: false,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding with no penalty.
    pub fn greedy() -> Self {
        Self {
            greedy: true,
            ..Self::default()
        }
    }

    /// True when this configuration always picks the argmax.
    pub fn is_greedy(&self) -> bool {
        self.greedy || self.temperature.is_nan() || self.temperature <= 0.0
    }
}

/// xoshiro256** (Blackman and Vigna), seeded through splitmix64.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A stateful sampler: parameters plus the random generator they seed.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = Rng::new(params.seed);
        Self { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from one row of logits, given the tokens seen so far (prompt and
    /// generated) for the repetition penalty. Non-finite logits (NaN) count as impossible. An
    /// empty row, or a row where nothing is possible, yields the argmax of what is there (0 for
    /// an empty row).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut scores: Vec<f32> = logits
            .iter()
            .map(|&l| if l.is_nan() { f32::NEG_INFINITY } else { l })
            .collect();
        apply_repetition_penalty(&mut scores, history, self.params.repetition_penalty);
        if self.params.is_greedy() {
            return argmax(&scores);
        }
        let t = self.params.temperature;
        if t != 1.0 {
            for s in scores.iter_mut() {
                *s /= t;
            }
        }
        apply_top_k(&mut scores, self.params.top_k);
        apply_top_p(&mut scores, self.params.top_p);
        apply_min_p(&mut scores, self.params.min_p);
        let probs = softmax_f64(&scores);
        let total: f64 = probs.iter().sum();
        if total.is_nan() || total <= 0.0 || !total.is_finite() {
            return argmax(&scores);
        }
        let u = self.rng.next_f64() * total;
        let mut acc = 0.0f64;
        let mut last_possible = None;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                acc += p;
                last_possible = Some(i);
                if u < acc {
                    return i as u32;
                }
            }
        }
        // Rounding left `u` just above the accumulated mass: take the last possible token.
        last_possible.map_or_else(|| argmax(&scores), |i| i as u32)
    }
}

/// HF `RepetitionPenaltyLogitsProcessor`: each distinct token of `history` inside the row is
/// penalised once.
pub fn apply_repetition_penalty(scores: &mut [f32], history: &[u32], penalty: f32) {
    if penalty == 1.0 || penalty.is_nan() || penalty <= 0.0 {
        return;
    }
    let mut seen = vec![false; scores.len()];
    for &tok in history {
        let i = tok as usize;
        if let (Some(s), Some(flag)) = (scores.get_mut(i), seen.get_mut(i)) {
            if !*flag {
                *flag = true;
                *s = if *s > 0.0 { *s / penalty } else { *s * penalty };
            }
        }
    }
}

/// HF `TopKLogitsWarper`: scores below the k-th largest become `-inf` (ties are kept).
pub fn apply_top_k(scores: &mut [f32], k: usize) {
    if k == 0 || k >= scores.len() {
        return;
    }
    // The k-th largest by selection, not a sort: linear in the vocabulary.
    let mut sorted: Vec<f32> = scores.to_vec();
    let (_, &mut threshold, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    for s in scores.iter_mut() {
        if *s < threshold {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// HF `TopPLogitsWarper`: keeps the most likely tokens until their mass reaches `top_p`
/// (always at least one).
pub fn apply_top_p(scores: &mut [f32], top_p: f32) {
    if top_p.is_nan() || top_p >= 1.0 {
        return;
    }
    let probs = softmax_f64(scores);
    let n = scores.len();
    if n == 0 {
        return;
    }
    let top_p = f64::from(top_p);
    // Descending probability; ties by id so the result does not depend on the sort.
    let cmp = |a: &usize, b: &usize| probs[*b].total_cmp(&probs[*a]).then(a.cmp(b));
    // The nucleus is the first `kept` tokens of that order: the fewest (at least one) whose
    // mass reaches `top_p`. Found by selection, not a sort (a flat distribution over a large
    // vocabulary has a nucleus of most of it): `order[..lo]` are the `lo` most likely tokens,
    // of mass `mass_lo` < `top_p`, and `kept` lies in `lo + 1..=hi`.
    let mut order: Vec<usize> = (0..n).collect();
    let (mut lo, mut hi, mut mass_lo) = (0usize, n, 0.0f64);
    while hi - lo > 32 {
        let mid = lo + (hi - lo) / 2;
        order[lo..hi].select_nth_unstable_by(mid - lo, cmp);
        let m = mass_lo + order[lo..=mid].iter().map(|&i| probs[i]).sum::<f64>();
        if m >= top_p {
            hi = mid + 1;
        } else {
            (lo, mass_lo) = (mid + 1, m);
        }
    }
    order[lo..hi].sort_unstable_by(cmp);
    let mut kept = hi;
    let mut mass = mass_lo;
    for (r, &i) in order.iter().enumerate().take(hi).skip(lo) {
        mass += probs[i];
        if mass >= top_p {
            kept = r + 1;
            break;
        }
    }
    let mut keep = vec![false; n];
    for &i in &order[..kept] {
        keep[i] = true;
    }
    for (s, k) in scores.iter_mut().zip(keep) {
        if !k {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// HF `MinPLogitsWarper`: drops tokens whose probability is below `min_p` times the largest
/// probability (always keeps the most likely token).
pub fn apply_min_p(scores: &mut [f32], min_p: f32) {
    if min_p.is_nan() || min_p <= 0.0 {
        return;
    }
    let probs = softmax_f64(scores);
    let top = probs.iter().copied().fold(0.0f64, f64::max);
    let threshold = f64::from(min_p) * top;
    let best = argmax(scores) as usize;
    for (i, (s, &p)) in scores.iter_mut().zip(probs.iter()).enumerate() {
        if p < threshold && i != best {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// Index of the largest value; ties go to the lowest index; NaN is ignored; 0 for an empty row.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

fn softmax_f64(row: &[f32]) -> Vec<f64> {
    let max = row
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![0.0; row.len()];
    }
    let max = f64::from(max);
    let exps: Vec<f64> = row
        .iter()
        .map(|&v| {
            if v.is_nan() {
                0.0
            } else {
                (f64::from(v) - max).exp()
            }
        })
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Softmax of one row (computed in f64). A row with no finite value gives all zeros.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    softmax_f64(row).into_iter().map(|p| p as f32).collect()
}

/// Log-softmax of one row (computed in f64); `-inf` where the logit is `-inf` or NaN.
pub fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![f32::NEG_INFINITY; row.len()];
    }
    let max = f64::from(max);
    let sum: f64 = row
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| (f64::from(v) - max).exp())
        .sum();
    let lse = max + sum.ln();
    row.iter()
        .map(|&v| {
            if v.is_nan() {
                f32::NEG_INFINITY
            } else {
                (f64::from(v) - lse) as f32
            }
        })
        .collect()
}

/// Shannon entropy, in nats, of the distribution `softmax(logits)`.
pub fn entropy(logits: &[f32]) -> f32 {
    let probs = softmax_f64(logits);
    let h: f64 = probs
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| -p * p.ln())
        .sum();
    h as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn softmax_and_log_softmax_match_hand_computation() {
        // softmax([0, ln 2, ln 3]) = [1/6, 2/6, 3/6].
        let row = [0.0, 2f32.ln(), 3f32.ln()];
        let p = softmax(&row);
        assert!(close(p[0], 1.0 / 6.0, 1e-6) && close(p[1], 2.0 / 6.0, 1e-6));
        assert!(close(p[2], 0.5, 1e-6));
        let lp = log_softmax(&row);
        assert!(close(lp[2], 0.5f32.ln(), 1e-6));
        assert!(close(lp[0], (1.0f32 / 6.0).ln(), 1e-6));
        // Large logits do not overflow.
        let p = softmax(&[1000.0, 1000.0]);
        assert!(close(p[0], 0.5, 1e-6));
        assert_eq!(log_softmax(&[f32::NEG_INFINITY, 0.0])[0], f32::NEG_INFINITY);
    }

    #[test]
    fn entropy_matches_hand_computation() {
        assert!(close(entropy(&[0.0; 4]), 4f32.ln(), 1e-6));
        assert!(close(entropy(&[0.0, f32::NEG_INFINITY]), 0.0, 1e-7));
        // p = [1/6, 2/6, 3/6]: H = -(sum p ln p).
        let h = -(1.0f32 / 6.0 * (1.0f32 / 6.0).ln()
            + 2.0 / 6.0 * (2.0f32 / 6.0).ln()
            + 0.5 * 0.5f32.ln());
        assert!(close(entropy(&[0.0, 2f32.ln(), 3f32.ln()]), h, 1e-6));
    }

    #[test]
    fn argmax_ties_take_lowest_id_and_skip_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.5]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn repetition_penalty_follows_hf() {
        let mut s = [2.0, -2.0, 1.0, 4.0];
        // Token 0 twice: penalised once. Token 9 is outside the row: ignored.
        apply_repetition_penalty(&mut s, &[0, 1, 0, 9], 2.0);
        assert_eq!(s, [1.0, -4.0, 1.0, 4.0]);
        // Greedy after the penalty: token 3 drops from 4 to 0.5 and token 0 wins.
        let mut sampler = Sampler::new(SamplingParams {
            repetition_penalty: 8.0,
            ..SamplingParams::greedy()
        });
        assert_eq!(sampler.sample(&[2.0, -2.0, 1.0, 4.0], &[3]), 0);
    }

    #[test]
    fn top_k_keeps_ties() {
        let mut s = [1.0, 5.0, 3.0, 3.0, 0.0];
        apply_top_k(&mut s, 2);
        assert_eq!(s[1], 5.0);
        assert_eq!((s[2], s[3]), (3.0, 3.0));
        assert_eq!(s[0], f32::NEG_INFINITY);
        assert_eq!(s[4], f32::NEG_INFINITY);
    }

    /// Top-p by a full sort, as HF's warper does it: the oracle for the selection in
    /// [`apply_top_p`].
    fn top_p_by_full_sort(scores: &mut [f32], top_p: f32) {
        let probs = softmax_f64(scores);
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_unstable_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let mut mass_before = 0.0f64;
        for (rank, &i) in order.iter().enumerate() {
            if rank > 0 && mass_before >= f64::from(top_p) {
                scores[i] = f32::NEG_INFINITY;
            }
            mass_before += probs[i];
        }
    }

    #[test]
    fn top_p_and_top_k_by_selection_match_a_full_sort_on_a_large_vocabulary() {
        let mut rng = Rng::new(7);
        for (scale, ties) in [(0.5f64, false), (4.0, false), (12.0, false), (2.0, true)] {
            // 50,000 logits, flat to peaked; with ties, values on a coarse grid.
            let row: Vec<f32> = (0..50_000)
                .map(|_| {
                    let v = (rng.next_f64() - 0.5) * 2.0 * scale;
                    (if ties { (v * 4.0).round() / 4.0 } else { v }) as f32
                })
                .collect();
            for top_p in [1e-6f32, 0.1, 0.5, 0.9, 0.95, 0.999] {
                let (mut a, mut b) = (row.clone(), row.clone());
                apply_top_p(&mut a, top_p);
                top_p_by_full_sort(&mut b, top_p);
                assert_eq!(a, b, "scale {scale} ties {ties} top_p {top_p}");
            }
            for k in [1usize, 40, 1000] {
                let mut a = row.clone();
                apply_top_k(&mut a, k);
                let mut sorted = row.clone();
                sorted.sort_unstable_by(|x, y| y.total_cmp(x));
                let want: Vec<f32> = row.iter().map(|&v| if v < sorted[k - 1] { f32::NEG_INFINITY } else { v }).collect();
                assert_eq!(a, want, "k {k}");
            }
        }
    }

    #[test]
    fn top_p_keeps_smallest_nucleus() {
        // probs = [0.1, 0.2, 0.3, 0.4]
        let row: Vec<f32> = [0.1f32, 0.2, 0.3, 0.4].iter().map(|p| p.ln()).collect();
        let mut s = row.clone();
        apply_top_p(&mut s, 0.7);
        // 0.4 + 0.3 = 0.7 reaches top_p: tokens 3 and 2 kept.
        let kept: Vec<bool> = s.iter().map(|v| v.is_finite()).collect();
        assert_eq!(kept, [false, false, true, true]);
        let mut s = row.clone();
        apply_top_p(&mut s, 0.71);
        let kept: Vec<bool> = s.iter().map(|v| v.is_finite()).collect();
        assert_eq!(kept, [false, true, true, true]);
        // Tiny top_p keeps exactly one.
        let mut s = row;
        apply_top_p(&mut s, 1e-6);
        assert_eq!(s.iter().filter(|v| v.is_finite()).count(), 1);
        assert!(s[3].is_finite());
    }

    #[test]
    fn min_p_is_relative_to_max() {
        // probs = [0.05, 0.15, 0.3, 0.5]; min_p 0.35 -> threshold 0.175.
        let mut s: Vec<f32> = [0.05f32, 0.15, 0.3, 0.5].iter().map(|p| p.ln()).collect();
        apply_min_p(&mut s, 0.35);
        let kept: Vec<bool> = s.iter().map(|v| v.is_finite()).collect();
        assert_eq!(kept, [false, false, true, true]);
    }

    #[test]
    fn temperature_zero_is_greedy() {
        let mut sampler = Sampler::new(SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        });
        for _ in 0..10 {
            assert_eq!(sampler.sample(&[0.0, 1.0, 0.9], &[]), 1);
        }
    }

    #[test]
    fn sampling_frequencies_follow_the_distribution() {
        // Target distribution [0.1, 0.2, 0.3, 0.4]; 40k draws with a fixed seed.
        let row: Vec<f32> = [0.1f32, 0.2, 0.3, 0.4].iter().map(|p| p.ln()).collect();
        let mut sampler = Sampler::new(SamplingParams {
            seed: 1234,
            ..SamplingParams::default()
        });
        let n = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[sampler.sample(&row, &[]) as usize] += 1;
        }
        // Chi-square with 3 degrees of freedom; 16.27 is the 0.001 critical value.
        let chi2: f64 = counts
            .iter()
            .zip([0.1, 0.2, 0.3, 0.4])
            .map(|(&c, p)| {
                let e = n as f64 * p;
                (c as f64 - e).powi(2) / e
            })
            .sum();
        assert!(chi2 < 16.27, "counts {counts:?} chi2 {chi2}");

        // Temperature 0.5 squares then renormalises: [1, 4, 9, 16] / 30.
        let mut sampler = Sampler::new(SamplingParams {
            seed: 99,
            temperature: 0.5,
            ..SamplingParams::default()
        });
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[sampler.sample(&row, &[]) as usize] += 1;
        }
        let chi2: f64 = counts
            .iter()
            .zip([1.0 / 30.0, 4.0 / 30.0, 9.0 / 30.0, 16.0 / 30.0])
            .map(|(&c, p)| {
                let e = n as f64 * p;
                (c as f64 - e).powi(2) / e
            })
            .sum();
        assert!(chi2 < 16.27, "counts {counts:?} chi2 {chi2}");
    }

    #[test]
    fn filters_never_sample_removed_tokens_and_seed_reproduces() {
        let row = [0.0f32, 1.0, 2.0, 3.0, f32::NAN];
        let params = SamplingParams {
            seed: 7,
            top_k: 3,
            top_p: 0.9,
            ..SamplingParams::default()
        };
        let draws = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..500).map(|_| s.sample(&row, &[])).collect::<Vec<u32>>()
        };
        let a = draws(&params);
        assert!(a.iter().all(|&t| (1..=3).contains(&t)));
        assert_eq!(a, draws(&params));
        let other = draws(&SamplingParams { seed: 8, ..params });
        assert_ne!(a, other);
    }

    #[test]
    fn params_deserialize_with_defaults() {
        let p: SamplingParams = serde_json::from_str(r#"{"temperature":0.7,"top_p":0.9}"#).unwrap();
        assert_eq!(p.top_k, 0);
        assert_eq!(p.repetition_penalty, 1.0);
        assert!(!p.is_greedy());
        let back: SamplingParams =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
