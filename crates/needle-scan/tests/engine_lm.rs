//! The scanner's view of a real model (tests/fixtures/reference): which tokens end a turn.

use needle_engine::candle_core::Device;
use needle_engine::open::{open, OpenOptions};
use needle_scan::engine_lm::EngineLm;
use needle_scan::lm::Lm;
use std::path::PathBuf;

fn copy_fixture(name: &str, to: &std::path::Path) {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference").join(name);
    for e in std::fs::read_dir(&from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with("expected") {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn a_turn_ends_at_the_generation_configs_end_tokens_too() {
    // config.json names only the end of text (id 7 here); generation_config.json adds the
    // chat turn's end (id 2), as Qwen2.5 and Llama 3 fine-tunes ship them.
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("llama", dir.path());
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["eos_token_id"] = serde_json::json!(7);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let opened = open(dir.path(), &OpenOptions::default(), &Device::Cpu).unwrap();
    assert_eq!(opened.model.config.eos_token_ids, vec![7]);
    let lm = EngineLm::new(opened.model, opened.tokenizer.unwrap(), opened.chat_template.unwrap());
    assert_eq!(lm.stops(), &[7, 2]);
    // Text after either is template markup, never answer text.
    assert!(lm.is_special(7) && lm.is_special(2));
}
