//! Building prompts with a piece of text inserted into the user turn, keeping the token span of
//! the insertion so that attention can be read over it.

use crate::lm::{Lm, LmResult};
use crate::prompts::CONTROL_WORDS;

/// Where an inserted text goes in the user message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Position {
    Start,
    Middle,
    End,
}

impl Position {
    pub const ALL: [Position; 3] = [Position::Start, Position::Middle, Position::End];
}

/// Inserts `insert` into `user` at a word boundary.
pub fn insert_text(user: &str, insert: &str, pos: Position) -> String {
    if insert.is_empty() {
        return user.to_string();
    }
    match pos {
        Position::Start => format!("{insert} {user}"),
        Position::End => format!("{user} {insert}"),
        Position::Middle => {
            let words: Vec<&str> = user.split(' ').collect();
            let mid = words.len() / 2;
            if mid == 0 {
                format!("{insert} {user}")
            } else {
                format!("{} {insert} {}", words[..mid].join(" "), words[mid..].join(" "))
            }
        }
    }
}

/// A prompt as token ids with the inserted span, when there is one.
#[derive(Debug, Clone)]
pub struct Probe {
    pub ids: Vec<u32>,
    /// `[start, end)` of the inserted tokens.
    pub span: Option<(usize, usize)>,
}

/// The chat prompt for `user` with `insert` at the start of the user message, encoded in
/// pieces (prefix | insert | rest) so that the insertion's token span is exact.
pub fn probe_at_start<M: Lm>(m: &M, system: Option<&str>, insert: Option<&str>, user: &str) -> LmResult<Probe> {
    const SENTINEL: &str = "NEEDLE_SENTINEL_7f3a";
    let prefix = m.user_turn_prefix(system)?;
    let full = m.chat_prompt(system, SENTINEL)?;
    let after = full.split(SENTINEL).nth(1).unwrap_or("");
    let mut ids = m.encode(&prefix)?;
    let span = match insert {
        Some(t) if !t.is_empty() => {
            let s = ids.len();
            ids.extend(m.encode(t)?);
            let e = ids.len();
            ids.extend(m.encode(&format!(" {user}{after}"))?);
            Some((s, e))
        }
        _ => {
            ids.extend(m.encode(&format!("{user}{after}"))?);
            None
        }
    };
    Ok(Probe { ids, span })
}

/// A full chat prompt with `insert` placed at `pos` (no span bookkeeping).
pub fn prompt_ids<M: Lm>(m: &M, system: Option<&str>, insert: Option<&str>, user: &str, pos: Position) -> LmResult<Vec<u32>> {
    let text = match insert {
        Some(t) => insert_text(user, t, pos),
        None => user.to_string(),
    };
    m.encode(&m.chat_prompt(system, &text)?)
}

/// Neutral words with about `tokens` tokens in total, varied by `salt`: the control insertion.
pub fn control_text<M: Lm>(m: &M, tokens: usize, salt: usize) -> LmResult<String> {
    let mut words: Vec<&str> = Vec::new();
    let mut i = salt.wrapping_mul(7);
    loop {
        let w = CONTROL_WORDS[i % CONTROL_WORDS.len()];
        words.push(w);
        i += 3;
        let n = m.encode(&words.join(" "))?.len();
        if n >= tokens.max(1) || words.len() > 64 {
            break;
        }
    }
    Ok(words.join(" "))
}
