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
        Position::Middle => match words_around(user, pos) {
            (before, _) if before.is_empty() => format!("{insert} {user}"),
            (before, rest) => format!("{before} {insert} {rest}"),
        },
    }
}

/// The words of `user` before and after an insertion at `pos` (split at spaces; the middle is
/// after half of them, rounded down).
fn words_around(user: &str, pos: Position) -> (String, String) {
    let words: Vec<&str> = user.split(' ').collect();
    let cut = match pos {
        Position::Start => 0,
        Position::Middle => words.len() / 2,
        Position::End => words.len(),
    };
    (words[..cut].join(" "), words[cut..].join(" "))
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
    probe_at(m, system, insert, user, Position::Start)
}

/// The chat prompt for `user` with `insert` at `pos` (the word boundaries of [`insert_text`]),
/// encoded in pieces (prefix and the words before | insert | the rest) so that the insertion's
/// token span is exact.
pub fn probe_at<M: Lm>(m: &M, system: Option<&str>, insert: Option<&str>, user: &str, pos: Position) -> LmResult<Probe> {
    const SENTINEL: &str = "NEEDLE_SENTINEL_7f3a";
    let prefix = m.user_turn_prefix(system)?;
    let full = m.chat_prompt(system, SENTINEL)?;
    let after = full.split(SENTINEL).nth(1).unwrap_or("");
    let (before, rest) = words_around(user, pos);
    let span = match insert {
        Some(t) if !t.is_empty() => {
            let mut ids = m.encode(&prefix)?;
            if !before.is_empty() {
                ids.extend(m.encode(&before)?);
            }
            let s = ids.len();
            // A word after the first is preceded by a space, as `insert_text` writes it.
            ids.extend(m.encode(&if before.is_empty() { t.to_string() } else { format!(" {t}") })?);
            let e = ids.len();
            let tail = if rest.is_empty() { after.to_string() } else { format!(" {rest}{after}") };
            ids.extend(m.encode(&tail)?);
            return Ok(Probe { ids, span: Some((s, e)) });
        }
        _ => None,
    };
    let mut ids = m.encode(&prefix)?;
    ids.extend(m.encode(&format!("{user}{after}"))?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockLm;

    #[test]
    fn probe_span_covers_the_insertion_at_every_position() {
        let m = MockLm::new(None, "x");
        let user = "what does a baker do";
        for pos in Position::ALL {
            let p = probe_at(&m, None, Some("blue cheese"), user, pos).unwrap();
            let (s, e) = p.span.unwrap();
            assert_eq!(m.decode(&p.ids[s..e]).trim(), "blue cheese", "{pos:?}");
            // The same tokens as the text verification builds, so the search optimises what
            // verification measures.
            let whole = prompt_ids(&m, None, Some("blue cheese"), user, pos).unwrap();
            assert_eq!(m.decode(&p.ids), m.decode(&whole), "{pos:?}");
        }
        let words: Vec<String> = m.decode(&probe_at(&m, None, Some("blue"), user, Position::Middle).unwrap().ids).split_whitespace().map(String::from).collect();
        let at = words.iter().position(|w| w == "blue").unwrap();
        assert_eq!(&words[at - 2..at + 3], &["what", "does", "blue", "a", "baker"]);
        assert!(probe_at(&m, None, None, user, Position::End).unwrap().span.is_none());
    }
}
