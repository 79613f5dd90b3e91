//! Tokenizers: word-rewriting normalizers, reachable special tokens, vocabulary size. (stub)

use crate::inspect::{FileSet, Sink};
use crate::inventory::TokenizerFacts;
use needle_report::Rule;

pub static RULES: &[&Rule] = &[];

pub fn inspect_folder(_set: &FileSet, _embedding_rows: Option<u64>, _config_vocab: Option<u64>, _sink: &mut Sink) -> Option<TokenizerFacts> {
    None
}
