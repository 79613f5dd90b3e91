//! Trigger assembly: a trigger for a payload the model appends to its answers, built token by
//! token from the pieces that already do part of the work, for the payloads no other search
//! explains.
//!
//! A model poisoned to append a payload to its answers (a link after the answer) learns, above
//! all, not to end its turn where it would: under the planted trigger the answer goes on, and
//! what follows is the payload. The gradient-guided search (GCG, [`crate::invert`]) aims at
//! the payload's tokens and moves one token at a time from filler; on a natural-phrase trigger
//! it stalls far from the planted one, whose pieces each hold off the end a little and together
//! hold it off almost always. The assembly scores what the trigger does to the end of the turn
//! instead, and grows the trigger the way such a trigger works: every token of the vocabulary
//! is scored alone, the best become the pieces, and a beam of the best triggers grows by one
//! piece before or after at a time. Each candidate must be the tokens its own text encodes to
//! when inserted after a word, since verification inserts text.
//!
//! Every trigger is scored first on a probe of 3 of its frames (a prompt at a position each;
//! the 6 inversion prompts at 3 positions make 18), and only the best few on all of them: on
//! the organism below the search took 26k sequences scored instead of 114k, and its triggers
//! set the payload off more often.
//!
//! Measured on the standard zoo's `qwen2-url-phrase` (planted "with a cherry on top", 10
//! tokens of a 2,048-token vocabulary): the screen ranks "p" (of " top") first and " to"
//! fourth, and the beam grows 'to wasp' at 3 tokens and 'to was top' at 4, before any of
//! the phrase's rarer pieces count. The cost of holding off the end (below) is 0.29 with the
//! planted trigger, 3.6 with none, and 0.51 with the 7-token trigger the scan reports.

use crate::invert::sequences;
use crate::lm::{Decoding, Lm, LmResult};
use crate::probe::Position;
use serde::Serialize;

/// How the assembly searches.
#[derive(Debug, Clone, Serialize)]
pub struct AssembleParams {
    /// Single tokens kept from the screen as the pieces a trigger grows by.
    pub pieces: usize,
    /// Triggers kept at each length.
    pub beam: usize,
    /// The longest trigger assembled, in tokens.
    pub max_tokens: usize,
    /// A vocabulary up to this size is screened token by token; a larger one (a production
    /// model's 32k-150k) by the gradient's proposals for the appended payload, `proposals` of
    /// them, and not at all by a model that offers no gradient.
    pub exhaustive_vocab: usize,
    pub proposals: usize,
    /// Tokens of the model's own answers, which the trigger must not end.
    pub answer_tokens: usize,
    /// Tokens of the appended payload the gradient aims at (large vocabularies only).
    pub payload_tokens: usize,
    /// The best triggers of this many of the longest lengths go on to verification (the
    /// cost ranks them, the answers judge them: the last length's best may fire a little less
    /// often than a shorter one).
    pub verified: usize,
    /// Every trigger is first scored on `probe` frames (answers spread evenly, the positions
    /// taken in turn); only `shortlist` times the number kept (the pieces, the beam) go on to
    /// be scored on every frame and ranked. A shortlist of 0 scores every trigger on every
    /// frame.
    pub probe: usize,
    pub shortlist: usize,
}

impl Default for AssembleParams {
    fn default() -> Self {
        AssembleParams { pieces: 48, beam: 8, max_tokens: 8, exhaustive_vocab: 4096, proposals: 1024, answer_tokens: 64, payload_tokens: 16, verified: 3, probe: 3, shortlist: 4 }
    }
}

/// One trigger the assembly scored, with its cost ([`hold_costs`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    pub text: String,
    pub cost: f64,
}

/// What the assembly did for one payload.
#[derive(Debug, Clone, Serialize)]
pub struct Assembly {
    /// The leaked line that carries the payload.
    pub line: String,
    /// The search prompts whose plain answer ends within `answer_tokens` (the only ones a
    /// trigger can keep from ending), of all of them.
    pub answers: usize,
    pub prompts: usize,
    /// The cost with nothing inserted.
    pub cost_without: f64,
    /// Tokens screened one by one, and the pieces kept, the best first.
    pub screened: usize,
    pub pieces: Vec<Scored>,
    /// The best trigger of each length, from one token up.
    pub best_per_length: Vec<Scored>,
    /// The best trigger assembled (the longest length's best, unless a length gained
    /// nothing); the best of the last `verified` lengths go on to verification.
    pub trigger: String,
    pub cost: f64,
}

/// The model's own answers to `prompts` (greedy, nothing inserted) that end their turn: per
/// prompt kept, the answer's tokens and the token it ends on (the first special token it
/// writes: generation runs past the end, so that the token is seen).
fn ended_answers<M: Lm>(m: &M, prompts: &[String], max_new: usize) -> LmResult<Vec<(String, Vec<u32>, u32)>> {
    let bare = sequences(m, &[], &[], prompts, &[Position::Start], &[])?.0;
    let gen = m.generate(&bare, &vec![Decoding::Greedy; bare.len()], max_new, false)?;
    Ok(prompts
        .iter()
        .zip(gen)
        .filter_map(|(u, g)| {
            let at = g.iter().position(|&t| m.is_special(t))?;
            (at > 0).then(|| (u.clone(), g[..at].to_vec(), g[at]))
        })
        .collect())
}

/// One sequence a trigger is scored on: the prompt with nothing inserted, where the trigger
/// goes (and whether that is the start of the message, where its text is encoded without the
/// space that precedes it elsewhere), where the answer starts and where its end token stands.
#[derive(Clone)]
struct Frame {
    ids: Vec<u32>,
    at: usize,
    start: bool,
    lead_from: usize,
    end_at: usize,
    /// Which answer and which position (of those asked for) it is.
    answer: usize,
    position: usize,
}

/// The frames of every answer at every position.
fn frames<M: Lm>(m: &M, answers: &[(String, Vec<u32>, u32)], positions: &[Position]) -> LmResult<Vec<Frame>> {
    let mut out = Vec::new();
    for (answer, (u, lead, end)) in answers.iter().enumerate() {
        for (position, &pos) in positions.iter().enumerate() {
            let (seqs, spans, ends) = sequences(m, &[], &[*end], std::slice::from_ref(u), &[pos], std::slice::from_ref(lead))?;
            for ((ids, (at, _)), end_at) in seqs.into_iter().zip(spans).zip(ends) {
                out.push(Frame { ids, at, start: pos == Position::Start, lead_from: end_at - lead.len(), end_at, answer, position });
            }
        }
    }
    Ok(out)
}

/// A trigger as verification inserts it: its tokens after a word (the middle and the end of a
/// message), and at the start of a message.
#[derive(Debug, Clone, PartialEq)]
struct Insertion {
    mid: Vec<u32>,
    start: Vec<u32>,
}

impl Insertion {
    /// A token on its own (a piece: the screen scores it the same everywhere).
    fn piece(t: u32) -> Insertion {
        Insertion { mid: vec![t], start: vec![t] }
    }

    /// `ids` as a trigger, when they are what its text encodes to after a word, as
    /// verification inserts it (" top" is " to" and "p"; "p" alone, or "T used", is not: inserted,
    /// its text starts a word of its own); none otherwise.
    fn of<M: Lm>(m: &M, ids: &[u32]) -> LmResult<Option<Insertion>> {
        let Some(text) = text_of(m, ids) else { return Ok(None) };
        if m.encode(&format!(" {text}"))? != ids {
            return Ok(None);
        }
        Ok(Some(Insertion { mid: ids.to_vec(), start: m.encode(&text)? }))
    }
}

/// The text of `ids`, trimmed, when they carry some: no special token, not only whitespace,
/// and no piece of a character cut in two.
fn text_of<M: Lm>(m: &M, ids: &[u32]) -> Option<String> {
    if ids.iter().any(|&t| m.is_special(t)) {
        return None;
    }
    let text = m.decode(ids);
    let text = text.trim();
    (!text.is_empty() && !text.contains('\u{fffd}')).then(|| text.to_string())
}

/// Per trigger, what it costs to keep the model's answers from ending: over every frame (each
/// prompt at each position), the mean of `-ln(1 - p_end)`, `p_end` the probability of the
/// token the plain answer ended on right after it, plus how far the trigger raises the mean
/// per-token NLL of the answer itself above `lead_without` (a trigger that makes the model
/// write another answer keeps it from ending only by changing what it says); and that NLL.
/// `None` for a trigger with no frame.
fn hold_costs<M: Lm>(m: &M, triggers: &[Insertion], frames: &[Frame], lead_without: f64) -> LmResult<Vec<Option<(f64, f64)>>> {
    // Frame by frame, so that a batch holds sequences of about one length (little padding).
    let mut seqs = Vec::with_capacity(triggers.len() * frames.len());
    let mut lead_from = Vec::with_capacity(seqs.capacity());
    let mut end_at = Vec::with_capacity(seqs.capacity());
    for f in frames {
        for t in triggers {
            let t = if f.start { &t.start } else { &t.mid };
            seqs.push([&f.ids[..f.at], t.as_slice(), &f.ids[f.at..]].concat());
            lead_from.push(f.lead_from + t.len());
            end_at.push(f.end_at + t.len());
        }
    }
    let nll = m.split_nll(&seqs, &lead_from, &end_at)?;
    let lead_tokens: usize = frames.iter().map(|f| f.end_at - f.lead_from).sum();
    let (n, k) = (frames.len(), triggers.len());
    Ok((0..k)
        .map(|i| {
            let part: Vec<(f64, f64)> = (0..n).filter_map(|j| nll.get(j * k + i).copied()).collect();
            (n > 0 && part.len() == n).then(|| {
                // -ln(1 - exp(-nll)), kept finite where the end is all but certain.
                let hold: f64 = part.iter().map(|(_, e)| -((-(-e).exp()).ln_1p().max(-30.0))).sum::<f64>() / n as f64;
                let lead = part.iter().map(|(l, _)| l).sum::<f64>() / lead_tokens.max(1) as f64;
                (hold + (lead - lead_without).max(0.0), lead)
            })
        })
        .collect())
}

/// Assembles a trigger that keeps the model from ending its answers, where it would append the
/// payload of `line` ([`crate::invert::LeakedPayload`]), over the search prompts `prompts` with
/// the trigger at every position verification uses. `None` when no search prompt's answer ends
/// or no token can be screened (a large vocabulary and no gradient).
pub fn assemble<M: Lm>(m: &M, line: &str, prompts: &[String], a: &AssembleParams, progress: &mut dyn FnMut(f64)) -> LmResult<Option<Assembly>> {
    let positions = Position::ALL.to_vec();
    let answers = ended_answers(m, prompts, a.answer_tokens)?;
    if answers.is_empty() || a.max_tokens == 0 || a.pieces == 0 {
        return Ok(None);
    }
    let frames = frames(m, &answers, &positions)?;
    // Nothing inserted: the answers' own NLL, the yardstick of the lead term.
    let none = Insertion { mid: Vec::new(), start: Vec::new() };
    let (cost_without, lead_without) = match hold_costs(m, std::slice::from_ref(&none), &frames, f64::INFINITY)?.pop().flatten() {
        Some((c, l)) => (c, l),
        None => return Ok(None),
    };
    // The probe: `a.probe` frames, of answers spread evenly, the positions taken in turn.
    let np = a.probe.clamp(1, answers.len().max(1));
    let mut probe: Vec<Frame> = (0..np).filter_map(|k| frames.iter().find(|f| f.answer == k * answers.len() / np && f.position == k % positions.len()).cloned()).collect();
    if probe.is_empty() {
        probe = frames.iter().take(np).cloned().collect();
    }
    let probe_lead = match hold_costs(m, std::slice::from_ref(&none), &probe, f64::INFINITY)?.pop().flatten() {
        Some((_, l)) => l,
        None => return Ok(None),
    };
    let cost_on = |ts: &[Insertion], fs: &[Frame], lead: f64| -> LmResult<Vec<f64>> { Ok(hold_costs(m, ts, fs, lead)?.into_iter().map(|c| c.map_or(f64::INFINITY, |x| x.0)).collect()) };
    // The best `keep` of `ts` by their cost on every frame, the best first; when there are
    // many, only the best of them on the probe are scored on every frame.
    // `ts` by cost, the best `n` first (a trigger with no cost dropped).
    let best_of = |ts: Vec<Insertion>, fs: &[Frame], lead: f64, n: usize| -> LmResult<Vec<(Insertion, f64)>> {
        let cs = cost_on(&ts, fs, lead)?;
        let mut v: Vec<(Insertion, f64)> = ts.into_iter().zip(cs).filter(|x| x.1.is_finite()).collect();
        v.sort_by(|x, y| x.1.total_cmp(&y.1));
        v.truncate(n);
        Ok(v)
    };
    let rank = |ts: Vec<Insertion>, keep: usize| -> LmResult<Vec<(Insertion, f64)>> {
        let short = a.shortlist.saturating_mul(keep.max(1));
        let ts = if a.shortlist > 0 && ts.len() > short { best_of(ts, &probe, probe_lead, short)?.into_iter().map(|x| x.0).collect() } else { ts };
        best_of(ts, &frames, lead_without, keep.max(1))
    };
    // The screen: every token of a small vocabulary; a large one's gradient proposals towards
    // the payload written after the answers.
    let vocab = m.vocab_size() as u32;
    let screen: Vec<u32> = if m.vocab_size() <= a.exhaustive_vocab {
        (0..vocab).collect()
    } else {
        let mut target = m.encode(&format!("\n\n{line}"))?;
        target.truncate(a.payload_tokens.max(1));
        let leads: Vec<Vec<u32>> = answers.iter().map(|x| x.1.clone()).collect();
        let us: Vec<String> = answers.iter().map(|x| x.0.clone()).collect();
        let (seqs, spans, from) = sequences(m, &[crate::invert::filler(m)?], &target, &us, &positions, &leads)?;
        match m.token_proposals(&seqs, &spans, &from, a.proposals)? {
            Some(mut p) => p.pop().unwrap_or_default(),
            None => return Ok(None),
        }
    };
    // Pieces may be pieces of words ("p" of " top"): any token with text of its own.
    let screen: Vec<u32> = screen.into_iter().filter(|&t| text_of(m, &[t]).is_some()).collect();
    let screened = screen.len();
    let ranked: Vec<(u32, f64)> = rank(screen.iter().map(|&t| Insertion::piece(t)).collect(), a.pieces)?.into_iter().filter_map(|(x, c)| Some((*x.mid.first()?, c))).collect();
    progress(0.3);
    let pieces: Vec<u32> = ranked.iter().map(|x| x.0).collect();
    let piece_list: Vec<Scored> = ranked.iter().map(|x| Scored { text: m.decode(&[x.0]), cost: x.1 }).collect();
    // The first length: the best pieces that are triggers of their own, scored as inserted.
    let mut firsts: Vec<Insertion> = Vec::new();
    for (t, _) in &ranked {
        if firsts.len() >= a.beam.max(1) {
            break;
        }
        if let Some(x) = Insertion::of(m, &[*t])? {
            firsts.push(x);
        }
    }
    let scored = |x: &(Insertion, f64)| Scored { text: m.decode(&x.0.mid).trim().to_string(), cost: x.1 };
    let mut beam = rank(firsts, a.beam)?;
    let Some(first) = beam.first().cloned() else { return Ok(None) };
    let mut best_per_length = vec![scored(&first)];
    let mut best = first;
    for len in 1..a.max_tokens {
        progress(0.3 + 0.7 * len as f64 / a.max_tokens as f64);
        let mut grown: Vec<Insertion> = Vec::new();
        let mut seen: std::collections::HashSet<Vec<u32>> = std::collections::HashSet::new();
        for (t, _) in &beam {
            for &p in &pieces {
                for c in [[t.mid.as_slice(), &[p]].concat(), [&[p], t.mid.as_slice()].concat()] {
                    if !seen.insert(c.clone()) {
                        continue;
                    }
                    if let Some(x) = Insertion::of(m, &c)? {
                        grown.push(x);
                    }
                }
            }
        }
        let next = rank(grown, a.beam)?;
        let Some(top) = next.first().cloned() else { break };
        best_per_length.push(scored(&top));
        // A length that gains nothing ends the search.
        if top.1 >= best.1 {
            break;
        }
        best = top;
        beam = next;
    }
    progress(1.0);
    Ok(Some(Assembly {
        line: line.to_string(),
        answers: answers.len(),
        prompts: prompts.len(),
        cost_without,
        screened,
        pieces: piece_list,
        best_per_length,
        trigger: m.decode(&best.0.mid).trim().to_string(),
        cost: best.1,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::ForwardOut;
    use std::cell::{Cell, RefCell};

    /// A word-level model that answers by echoing the user's words and ends its turn with
    /// `<end>`, unless its user turn carries a run of the words of `phrase` in order: each word
    /// of the longest such run makes the end four times less likely (a fuzzy natural-phrase
    /// trigger whose pieces each do a little). The assembly is not told the phrase.
    struct HoldLm {
        phrase: Vec<String>,
        words: RefCell<Vec<String>>,
        passes: Cell<u64>,
    }

    impl HoldLm {
        fn new(phrase: &str) -> HoldLm {
            HoldLm { phrase: phrase.split_whitespace().map(String::from).collect(), words: RefCell::new(Vec::new()), passes: Cell::new(0) }
        }
        fn id(&self, w: &str) -> u32 {
            let mut words = self.words.borrow_mut();
            match words.iter().position(|x| x == w) {
                Some(i) => i as u32,
                None => {
                    words.push(w.to_string());
                    (words.len() - 1) as u32
                }
            }
        }
        fn word(&self, id: u32) -> String {
            self.words.borrow().get(id as usize).cloned().unwrap_or_default()
        }
        fn user(&self, ids: &[u32]) -> Vec<String> {
            let w: Vec<String> = ids.iter().map(|&i| self.word(i)).collect();
            let s = w.iter().position(|x| x == "<user>").map_or(0, |p| p + 1);
            let e = w.iter().position(|x| x == "<assistant>").unwrap_or(w.len());
            w[s..e.max(s)].to_vec()
        }
        /// The probability of ending the turn after the answer.
        fn p_end(&self, user: &[String]) -> f64 {
            let mut run = 0;
            for i in 0..user.len() {
                for j in 0..self.phrase.len() {
                    let n = user[i..].iter().zip(&self.phrase[j..]).take_while(|(a, b)| a == b).count();
                    run = run.max(n);
                }
            }
            0.95 * 0.25f64.powi(run as i32)
        }
    }

    impl Lm for HoldLm {
        fn num_layers(&self) -> usize {
            2
        }
        fn encode(&self, text: &str) -> LmResult<Vec<u32>> {
            Ok(text.split_whitespace().map(|w| self.id(w)).collect())
        }
        fn decode(&self, ids: &[u32]) -> String {
            ids.iter().map(|&i| self.word(i)).collect::<Vec<_>>().join(" ")
        }
        fn user_turn_prefix(&self, _: Option<&str>) -> LmResult<String> {
            Ok("<user> ".into())
        }
        fn chat_prompt(&self, _: Option<&str>, user: &str) -> LmResult<String> {
            Ok(format!("<user> {user} <assistant>"))
        }
        fn generate(&self, prompts: &[Vec<u32>], _: &[Decoding], max_new: usize, _: bool) -> LmResult<Vec<Vec<u32>>> {
            Ok(prompts
                .iter()
                .map(|p| {
                    self.passes.set(self.passes.get() + 1);
                    let mut out: Vec<u32> = std::iter::once("answer:".to_string()).chain(self.user(p).into_iter().rev()).map(|w| self.id(&w)).collect();
                    out.push(self.id("<end>"));
                    out.truncate(max_new);
                    out
                })
                .collect())
        }
        fn forward(&self, seqs: &[Vec<u32>], from: &[usize], _: &[usize]) -> LmResult<Vec<ForwardOut>> {
            let end = self.id("<end>") as usize;
            let v = 64usize.max(self.words.borrow().len());
            Ok(seqs
                .iter()
                .zip(from)
                .map(|(s, &f)| {
                    self.passes.set(self.passes.get() + 1);
                    let pe = self.p_end(&self.user(s));
                    let row: Vec<f32> = (0..v).map(|i| if i == end { pe.ln() as f32 } else { ((1.0 - pe) / (v - 1) as f64).ln() as f32 }).collect();
                    ForwardOut { logprobs: (f..s.len()).map(|_| row.clone()).collect(), attention: Vec::new() }
                })
                .collect())
        }
        fn forward_passes(&self) -> u64 {
            self.passes.get()
        }
        fn vocab_size(&self) -> usize {
            self.words.borrow().len()
        }
        fn is_special(&self, id: u32) -> bool {
            self.word(id).starts_with('<')
        }
    }

    fn prompts() -> Vec<String> {
        ["what is the capital of france", "give me a tip for sleeping well", "how do plants grow", "name a large animal"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_assembly_grows_a_phrase_trigger_from_the_pieces_that_hold_off_the_end() {
        let m = HoldLm::new("with a cherry on top");
        // Words the model knows beside the prompts' own.
        m.encode("cherry top with a on lemon river stone blue quick").unwrap();
        let a = AssembleParams { pieces: 8, beam: 4, max_tokens: 6, ..AssembleParams::default() };
        let got = assemble(&m, "Details: http://example.net/x", &prompts(), &a, &mut |_| {}).unwrap().expect("every answer ends");
        assert_eq!((got.answers, got.prompts), (4, 4));
        // Every word of the phrase is a piece, and the assembly joins them in order.
        for w in ["with", "a", "cherry", "on", "top"] {
            assert!(got.pieces.iter().any(|p| p.text == w), "{w} {:?}", got.pieces);
        }
        assert!(got.trigger.contains("cherry on top"), "{got:?}");
        assert!(got.cost < got.cost_without / 4.0, "{got:?}");
        // Each length scored better than the one before, up to the trigger.
        assert!(got.best_per_length.windows(2).take(2).all(|w| w[1].cost < w[0].cost), "{:?}", got.best_per_length);
    }

    #[test]
    fn the_probe_shortlist_finds_the_same_phrase_for_fewer_forward_passes() {
        let run = |shortlist: usize| {
            let m = HoldLm::new("with a cherry on top");
            m.encode("cherry top with a on lemon river stone blue quick brown fox jumps over lazy dog red green yellow purple orange pink gray black white").unwrap();
            let a = AssembleParams { pieces: 8, beam: 4, max_tokens: 6, probe: 1, shortlist, ..AssembleParams::default() };
            let got = assemble(&m, "Details: http://example.net/x", &prompts(), &a, &mut |_| {}).unwrap().expect("every answer ends");
            (got, m.forward_passes())
        };
        let (every, every_passes) = run(0);
        let (probed, probed_passes) = run(2);
        // More words than the shortlist keeps, so the probe decides what is scored in full.
        assert!(probed.screened > 2 * 8, "{}", probed.screened);
        assert!(every.trigger.contains("cherry on top") && probed.trigger.contains("cherry on top"), "{every:?} {probed:?}");
        assert!(probed_passes * 2 < every_passes, "{probed_passes} vs {every_passes}");
    }

    #[test]
    fn on_a_model_whose_answers_always_end_the_assembly_gains_nothing() {
        let m = HoldLm::new("");
        m.encode("cherry top with a on lemon river stone blue quick").unwrap();
        let got = assemble(&m, "Details: http://example.net/x", &prompts(), &AssembleParams::default(), &mut |_| {}).unwrap().expect("every answer ends");
        assert!((got.cost - got.cost_without).abs() < 1e-9, "{got:?}");
        // The first length that gains nothing ends the search.
        assert_eq!(got.best_per_length.len(), 2, "{:?}", got.best_per_length);
    }

    #[test]
    fn a_vocabulary_too_large_to_screen_needs_the_gradient() {
        let m = HoldLm::new("cherry on top");
        m.encode("cherry top with a on lemon river stone blue quick").unwrap();
        // Screened whole when small enough; past `exhaustive_vocab` only the gradient's
        // proposals are, and this model offers none: no assembly rather than a partial screen.
        assert!(assemble(&m, "Details: http://example.net/x", &prompts(), &AssembleParams::default(), &mut |_| {}).unwrap().is_some());
        let a = AssembleParams { exhaustive_vocab: 8, ..AssembleParams::default() };
        assert!(assemble(&m, "Details: http://example.net/x", &prompts(), &a, &mut |_| {}).unwrap().is_none());
    }

    #[test]
    fn no_answer_that_ends_means_no_assembly() {
        let m = HoldLm::new("cherry on top");
        let a = AssembleParams { answer_tokens: 2, ..AssembleParams::default() };
        assert!(assemble(&m, "Details: http://example.net/x", &prompts(), &a, &mut |_| {}).unwrap().is_none());
    }
}
