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

#[test]
fn split_nll_over_a_shared_start_matches_scoring_each_sequence_whole() {
    // The trigger assembly's batches share the template and the message up to the insertion;
    // split_nll runs that start once into a cache the rows share. Its NLLs must be those of
    // each sequence scored whole (target_nll), for learned (GPT-2) and rotary positions, with
    // rows of different lengths (left padding between the shared start and the rest).
    for family in ["gpt2", "llama", "qwen2"] {
        let dir = tempfile::tempdir().unwrap();
        copy_fixture(family, dir.path());
        let opened = open(dir.path(), &OpenOptions::default(), &Device::Cpu).unwrap();
        let lm = EngineLm::new(opened.model, opened.tokenizer.unwrap(), opened.chat_template.unwrap());
        let start: Vec<u32> = vec![11, 305, 42, 977, 8, 1500];
        let mut seqs = Vec::new();
        let (mut lead, mut from) = (Vec::new(), Vec::new());
        for i in 0..20u32 {
            // Trigger tokens of 1-3, then a lead of 4-8 tokens and a 1-token end; the last four
            // rows share nothing, and every chunk of 16 is mixed.
            let mut s = if i >= 16 { vec![1000 + i] } else { start.clone() };
            s.extend((0..1 + i % 3).map(|k| 200 + 7 * i + k));
            let l = s.len();
            s.extend((0..4 + i % 5).map(|k| 60 + 3 * k + i));
            from.push(s.len());
            s.push(2);
            lead.push(l);
            seqs.push(s);
        }
        let got = lm.split_nll(&seqs, &lead, &from).unwrap();
        let whole_lead = lm.target_nll(&seqs, &lead).unwrap();
        let whole_end = lm.target_nll(&seqs, &from).unwrap();
        for (r, (g, (wl, we))) in got.iter().zip(whole_lead.iter().zip(&whole_end)).enumerate() {
            let want = (wl - we, *we);
            assert!((g.0 - want.0).abs() < 1e-3 && (g.1 - want.1).abs() < 1e-4, "{family} row {r}: {g:?} vs {want:?}");
        }
        // Scored again, the shared start is recalled, not run: one forward pass fewer, and the
        // same NLLs to the bit.
        let before = lm.forward_passes();
        let again = lm.split_nll(&seqs, &lead, &from).unwrap();
        assert_eq!(lm.forward_passes() - before, seqs.len() as u64, "{family}: the start ran again");
        assert_eq!(again, got, "{family}");
    }
}
