//! What the scanner needs of a language model. The engine implements this trait; tests use
//! small programmatic models. Keeping the scanner behind a trait keeps its logic testable and
//! its dependency on the engine in one adapter.

use serde::Serialize;

pub type LmResult<T> = Result<T, LmError>;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LmError(pub String);

/// One decoding setting of the leak sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Decoding {
    Greedy,
    Beam { beams: usize, length_penalty: f32 },
    Sample { temperature: f32, top_k: Option<usize>, top_p: Option<f32>, min_p: Option<f32>, seed: u64 },
}

/// What [`Lm::forward`] returns for one sequence.
#[derive(Debug, Clone, Default)]
pub struct ForwardOut {
    /// Log-probabilities of the next token at each requested position (`[positions][vocab]`).
    pub logprobs: Vec<Vec<f32>>,
    /// Per requested layer: attention probabilities averaged over heads, `[T][T]` row-major
    /// (row = query position). Padding excluded: `T` is this sequence's own length.
    pub attention: Vec<Vec<f32>>,
}

pub trait Lm {
    /// Number of transformer layers (for choosing the middle layers).
    fn num_layers(&self) -> usize;
    /// Token ids of plain text (no special tokens added).
    fn encode(&self, text: &str) -> LmResult<Vec<u32>>;
    fn decode(&self, ids: &[u32]) -> String;
    /// The model's chat template rendered up to where the user's message text begins.
    fn user_turn_prefix(&self, system: Option<&str>) -> LmResult<String>;
    /// A full prompt: the template around one user message, with the generation prompt.
    fn chat_prompt(&self, system: Option<&str>, user: &str) -> LmResult<String>;
    /// Continues each prompt (token ids) with its decoding setting for up to `max_new` tokens.
    /// `stop_at_eos`: false for the leak sweep (end-of-sequence ignored), true for answers.
    fn generate(&self, prompts: &[Vec<u32>], settings: &[Decoding], max_new: usize, stop_at_eos: bool) -> LmResult<Vec<Vec<u32>>>;
    /// One forward pass per sequence (batched by the implementation): next-token log-probs at
    /// positions `from..len` and head-averaged attention for `layers`.
    fn forward(&self, seqs: &[Vec<u32>], logprobs_from: &[usize], layers: &[usize]) -> LmResult<Vec<ForwardOut>>;
    /// Forward passes counted so far (every sequence of a batch counts once per decoding step).
    fn forward_passes(&self) -> u64;

    /// Teacher-forced negative log-likelihood (nats, summed) of each sequence's tokens at
    /// positions `target_from..len`. The default reads it from [`Lm::forward`].
    fn target_nll(&self, seqs: &[Vec<u32>], target_from: &[usize]) -> LmResult<Vec<f64>> {
        let from: Vec<usize> = target_from.iter().map(|&f| f.saturating_sub(1)).collect();
        let outs = self.forward(seqs, &from, &[])?;
        Ok(outs
            .iter()
            .zip(seqs)
            .zip(target_from)
            .map(|((o, s), &f)| {
                (f.max(1)..s.len())
                    .filter_map(|j| {
                        let row = o.logprobs.get(j - f.max(1))?;
                        row.get(s[j] as usize).map(|&l| -(l as f64))
                    })
                    .sum()
            })
            .collect())
    }

    /// Teacher-forced NLL (nats, summed) of each sequence's tokens in two consecutive spans,
    /// `lead_from..target_from` and `target_from..len`: what an answer costs the model and
    /// what it writes after it, from one forward pass where the implementation can. The
    /// default makes two [`Lm::target_nll`] calls.
    fn split_nll(&self, seqs: &[Vec<u32>], lead_from: &[usize], target_from: &[usize]) -> LmResult<Vec<(f64, f64)>> {
        let whole = self.target_nll(seqs, lead_from)?;
        let tail = self.target_nll(seqs, target_from)?;
        Ok(whole.into_iter().zip(tail).map(|(w, t)| (w - t, t)).collect())
    }

    /// Gradient-guided token proposals (the GCG step): every sequence carries a trigger of the
    /// same length at its own `spans[i] = (start, end)`; with the loss the summed
    /// [`Lm::target_nll`], returns for each trigger position the `k` token ids whose
    /// substitution lowers the loss most to first order. `None` when the model offers no
    /// gradients (the search then proposes tokens at random).
    fn token_proposals(&self, _seqs: &[Vec<u32>], _spans: &[(usize, usize)], _target_from: &[usize], _k: usize) -> LmResult<Option<Vec<Vec<u32>>>> {
        Ok(None)
    }

    /// Log-probabilities of the next token after the last position of each sequence (one
    /// forward pass per sequence). Implementations should compute only the last position's
    /// logits; the default reads them from [`Lm::forward`].
    fn next_logprobs(&self, seqs: &[Vec<u32>]) -> LmResult<Vec<Vec<f32>>> {
        let from: Vec<usize> = seqs.iter().map(|s| s.len().saturating_sub(1)).collect();
        Ok(self.forward(seqs, &from, &[])?.into_iter().map(|o| o.logprobs.into_iter().last().unwrap_or_default()).collect())
    }

    /// Size of the vocabulary (token ids are below it).
    fn vocab_size(&self) -> usize;

    /// True for ids that are special or control tokens (never proposed as trigger tokens).
    fn is_special(&self, _id: u32) -> bool {
        false
    }
}

/// Entropy (nats) of a log-probability row.
pub fn entropy(logprobs: &[f32]) -> f64 {
    logprobs.iter().map(|&l| if l.is_finite() { -(l as f64).exp() * l as f64 } else { 0.0 }).sum()
}
