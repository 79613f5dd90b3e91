//! Static inspection of model artifacts. Nothing here executes, unpickles, imports or renders
//! outside a sandbox: every file is treated as hostile input and parsed under hard [`limits`].
//!
//! The pipeline is a chain of types:
//! [`Target`] (a path the user gave, checked to exist) -> [`FileSet`] (every file under it, with
//! its format detected by content) -> [`Inspection`] (inventory, findings, failures).

pub mod archive;
pub mod config;
pub mod detect;
pub mod gguf;
pub mod inspect;
pub mod inventory;
pub mod limits;
pub mod numpy;
pub mod pickle;
pub mod safetensors;
pub mod template;
pub mod tokenizer;

pub use detect::Format;
pub use inspect::{inspect, FileCtx, FileEntry, FileSet, Inspection, Sink, Target, TargetError};

use needle_report::Rule;

/// Every rule `needle inspect` can emit, for `needle rules`, SARIF and `needle.toml` validation.
pub fn rules() -> Vec<&'static Rule> {
    let mut all: Vec<&'static Rule> = Vec::new();
    all.extend_from_slice(archive::RULES);
    all.extend_from_slice(pickle::RULES);
    all.extend_from_slice(numpy::RULES);
    all.extend_from_slice(safetensors::RULES);
    all.extend_from_slice(gguf::RULES);
    all.extend_from_slice(template::RULES);
    all.extend_from_slice(config::RULES);
    all.extend_from_slice(tokenizer::RULES);
    all.extend_from_slice(inspect::RULES);
    all.sort_by_key(|r| r.code);
    all
}

#[cfg(test)]
mod tests {
    #[test]
    fn rule_codes_are_unique_and_well_formed() {
        let rules = super::rules();
        for w in rules.windows(2) {
            assert_ne!(w[0].code, w[1].code, "duplicate rule code");
        }
        for r in &rules {
            assert!(needle_report::Rule::is_valid_code(r.code), "bad code {}", r.code);
            assert!(!r.summary.is_empty() && !r.fix.is_empty(), "{} needs a summary and a fix", r.code);
        }
    }
}
