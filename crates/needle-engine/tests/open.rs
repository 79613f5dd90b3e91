//! Opening what `needle generate` accepts: a model folder, an adapter folder and a GGUF file,
//! each with its tokenizer and chat template, then greedy generation from a chat prompt.

use candle_core::Device;
use needle_engine::chat::{Message, RenderOptions};
use needle_engine::generate::{generate, GenerationRequest};
use needle_engine::open::{open, OpenOptions};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference").join(name)
}

fn greedy(path: &std::path::Path, opts: &OpenOptions) -> (String, Vec<u32>) {
    let o = open(path, opts, &Device::Cpu).unwrap();
    let tok = o.tokenizer.as_ref().expect("tokenizer");
    let chat = o.chat_template.as_ref().expect("chat template");
    let text = chat.render(&[Message::user("Spell cat backwards.")], &RenderOptions { add_generation_prompt: true, ..Default::default() }).unwrap();
    let ids = tok.encode(&text, false).unwrap();
    let out = generate(&o.model, &[GenerationRequest::greedy(&o.model, ids, 8)]).unwrap().remove(0);
    (o.kind, out.tokens)
}

#[test]
fn folder_adapter_and_gguf_open_and_generate() {
    let (kind, from_folder) = greedy(&fixture("llama"), &OpenOptions::default());
    assert_eq!(kind, "model folder");
    assert!(!from_folder.is_empty());

    let (kind, unmerged) = greedy(&fixture("llama-lora"), &OpenOptions::default());
    assert!(kind.starts_with("adapter over"), "{kind}");
    let (_, merged) = greedy(&fixture("llama-lora"), &OpenOptions { base: Some(fixture("llama")), merge_adapter: true });
    assert_eq!(unmerged, merged);

    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("llama.gguf");
    needle_engine::gguf::write_gguf(&fixture("llama"), &gguf, needle_engine::gguf::GgmlDType::F32).unwrap();
    let (kind, from_gguf) = greedy(&gguf, &OpenOptions::default());
    assert_eq!(kind, "GGUF");
    assert_eq!(from_gguf, from_folder);
}

#[test]
fn missing_paths_and_bases_are_errors() {
    assert!(open(&fixture("does-not-exist"), &OpenOptions::default(), &Device::Cpu).is_err());
    let opts = OpenOptions { base: Some(fixture("nowhere")), merge_adapter: false };
    assert!(open(&fixture("llama-lora"), &opts, &Device::Cpu).is_err());
}

#[test]
fn a_batch_too_long_for_memory_is_an_input_error_not_an_abort() {
    use needle_engine::model::{Capture, TokenBatch, MAX_ATTENTION_SCORES};
    let o = open(&fixture("llama"), &OpenOptions::default(), &Device::Cpu).unwrap();
    // One sequence whose attention scores (4 heads x 20,000 x 20,000) exceed the limit: refused
    // before anything that size is allocated.
    let len = 20_000;
    let batch = TokenBatch::new(vec![1; len], vec![1; len], 1, len).unwrap();
    let err = o.model.forward(&batch, None, &Capture::logits()).unwrap_err().to_string();
    assert!(err.contains("too long") && err.contains(&MAX_ATTENTION_SCORES.to_string()), "{err}");
    // An ordinary one still runs.
    let batch = TokenBatch::new(vec![1; 8], vec![1; 8], 1, 8).unwrap();
    assert!(o.model.forward(&batch, None, &Capture::logits()).is_ok());
}
