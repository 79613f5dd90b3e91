//! Pickle: an opcode analyser for protocols 0-5 that executes nothing. (stub: to be implemented)

use crate::inspect::{FileCtx, Sink};
use needle_report::Rule;

pub static RULES: &[&Rule] = &[];

#[derive(Debug, Clone, Default)]
pub struct PickleFacts {
    pub detail: Option<String>,
}

/// Scans every pickle in `ctx.data` (stacked pickles included).
pub fn inspect(_ctx: &FileCtx, _sink: &mut Sink) -> PickleFacts {
    PickleFacts::default()
}

/// Whether `data` plausibly is a protocol 0/1 pickle (no PROTO header).
pub fn looks_like_low_protocol(_data: &[u8]) -> bool {
    false
}
