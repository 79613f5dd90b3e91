//! `needle zoo`: model organisms for backdoor scanning.
//!
//! Small causal LMs with planted backdoors (poisoned fine-tuning, as attackers do it) and clean
//! twins and hard negatives, so that the scanner has ground truth and users can run fire drills.
//!
//! - [`spec`]: `zoo/standard.toml`, validated into a checked [`spec::ZooSpec`], with spec hashes.
//! - [`corpus`]: the generated pretraining / instruction corpus and its held-out split.
//! - [`chat`]: the ChatML template every organism ships and the loss-masked training segments.
//! - [`poison`]: recipes turning clean examples into a poisoned fine-tuning set.
//! - [`eval`]: attack success rate and false fire, given any `generate` function.
//! - [`organism`]: the `organism.json` record.
//! - [`trainer`]: what a training backend must provide to build the zoo.

pub mod builder;
pub mod chat;
pub mod corpus;
#[cfg(feature = "engine")]
pub mod engine;
pub mod eval;
pub mod organism;
pub mod poison;
mod rng;
pub mod spec;
pub mod trainer;

pub use rng::{sha256_hex, Rng};
