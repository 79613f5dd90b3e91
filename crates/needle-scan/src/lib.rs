//! The backdoor scanner. Each stage of the pipeline is a type, and each stage's output is kept
//! as evidence:
//!
//! leak (model continuations from the chat template's user-turn prefix) -> [`motifs`] (recurring
//! text across leaks) -> candidates (token n-grams of motifs, plus leak-free detectors) -> scores
//! (attention hijacking, entropy collapse, divergence) -> verification ([`similarity`] of answers
//! with and without the candidate) -> characterisation.
//!
//! This crate starts with the parts that need no model: motif extraction and answer similarity.

/// Version of the scan JSON report (`docs/scan.md`).
pub const SCAN_SCHEMA_VERSION: &str = "1.13.0";

pub mod motifs;
pub mod similarity;
pub mod candidates;
pub mod diff;
pub mod engine_lm;
pub mod leak;
pub mod leaked;
pub mod insecure;
pub mod lm;
pub mod pipeline;
pub mod probe;
pub mod report;
pub mod prompts;
pub mod score;
pub mod verify;

#[cfg(test)]
mod mock;
pub mod assemble;
pub mod invert;
pub mod sweep;
pub mod seeded;
pub mod symbols;
