//! Golden-token tests: the tokenizer gives the ids transformers produced for the reference
//! prompts (`expected.safetensors` `p{i}.input_ids`, add_special_tokens=False), and the
//! tokenizer rebuilt from GGUF metadata encodes like the original.

use std::path::PathBuf;

use candle_core::Device;
use needle_engine::tokenizer::{gguf_vocab, Tokenizer};

fn reference() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference")
}

/// Fixture folders that carry a tokenizer.
fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(reference())
        .expect("reference fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("tokenizer.json").is_file())
        .collect();
    v.sort();
    assert!(
        v.len() >= 10,
        "expected the 10 reference models, found {}",
        v.len()
    );
    v
}

fn prompts(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

fn expected_ids(dir: &std::path::Path, i: usize) -> Vec<u32> {
    let t = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    t[&format!("p{i}.input_ids")]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| u32::try_from(x).unwrap())
        .collect()
}

/// Inputs that exercise the pre-tokenizer regex: contractions, digits, unicode letters and
/// marks, emoji, runs of whitespace and newlines, special tokens inside text.
const TRICKY: &[&str] = &[
    "I'm sure you'll see they've done it, haven't they? IT'S 'quoted'.",
    "Numbers: 1234567 3.14159 -42 1,000,000 0x1F",
    "  leading and trailing spaces  \n\n\tand\ttabs\r\n",
    "Ünïcödé: naïve café, Straße, Ελληνικά, русский, 日本語のテキスト, 한국어, עברית, العربية",
    "emoji 🤖🚀 and combining e\u{301} and zero\u{200b}width",
    "<|im_start|>user\nhi<|im_end|><|endoftext|> after",
    "def f(x):\n    return x**2  # comment\n\n\n",
    "",
];

#[test]
fn fixture_tokenizers_match_transformers_ids() {
    for dir in fixtures() {
        let tok = Tokenizer::from_folder(&dir).unwrap();
        for (i, prompt) in prompts(&dir).iter().enumerate() {
            let ids = tok.encode(prompt, false).unwrap();
            assert_eq!(ids, expected_ids(&dir, i), "{} prompt {i}", dir.display());
            // Decoding with specials reproduces the text.
            assert_eq!(&tok.decode(&ids, false).unwrap(), prompt);
        }
    }
}

#[test]
fn special_tokens_come_from_the_configs() {
    let tok = Tokenizer::from_folder(reference().join("llama")).unwrap();
    // generation_config.json: bos 1, eos 2; tokenizer_config.json eos "<|im_end|>" (id 2).
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), &[2]);
    assert_eq!(tok.special_tokens().get("eos_token"), Some("<|im_end|>"));
    assert_eq!(tok.special_tokens().get("bos_token"), Some("<|endoftext|>"));
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.id_to_token(2).as_deref(), Some("<|im_end|>"));
    assert!(tok.is_special(0) && !tok.is_special(100));
    assert_eq!(tok.vocab_size(), 2048);
    assert_eq!(tok.added_tokens().len(), 3);
    // Specials are dropped when decoding with skip_special.
    let ids = tok.encode("<|im_start|>user\nhi<|im_end|>", false).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nhi");

    // gpt2: bos = eos = 0 in config, pad from nowhere.
    let tok = Tokenizer::from_folder(reference().join("gpt2")).unwrap();
    assert_eq!(tok.bos_id(), Some(0));
    assert_eq!(tok.eos_ids(), &[0, 2]);
    // gemma2 has a pad id in generation_config.json.
    let tok = Tokenizer::from_folder(reference().join("gemma2")).unwrap();
    assert_eq!(tok.pad_id(), Some(0));
}

#[test]
fn gguf_metadata_tokenizer_encodes_like_the_original() {
    let dir = reference().join("qwen2");
    let tok = Tokenizer::from_folder(&dir).unwrap();
    let meta: std::collections::HashMap<_, _> = gguf_vocab::tokenizer_to_gguf(&tok)
        .unwrap()
        .into_iter()
        .collect();
    let rebuilt = Tokenizer::from_gguf_metadata(&meta).unwrap();
    assert_eq!(rebuilt.vocab_size(), tok.vocab_size());
    assert_eq!(rebuilt.bos_id(), tok.bos_id());
    assert_eq!(rebuilt.eos_ids().first(), tok.eos_ids().first());
    assert_eq!(rebuilt.added_tokens(), tok.added_tokens());
    let mut inputs: Vec<String> = prompts(&dir);
    inputs.extend(TRICKY.iter().map(|s| (*s).to_owned()));
    for text in &inputs {
        let a = tok.encode(text, false).unwrap();
        let b = rebuilt.encode(text, false).unwrap();
        assert_eq!(a, b, "{text:?}");
        assert_eq!(
            tok.encode(text, true).unwrap(),
            rebuilt.encode(text, true).unwrap()
        );
        assert_eq!(rebuilt.decode(&b, false).unwrap(), *text);
    }
}

#[test]
fn malformed_or_missing_tokenizer_json_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, b"{ not json").unwrap();
    assert!(Tokenizer::from_file(&path).is_err());
    assert!(Tokenizer::from_file(dir.path().join("missing.json")).is_err());
}
