//! Tokenizers: Hugging Face `tokenizer.json` through the `tokenizers` crate, special tokens from
//! the model folder's `tokenizer_config.json` / `generation_config.json` / `config.json`, and a
//! tokenizer rebuilt in memory from GGUF metadata (`tokenizer.ggml.*`).
//!
//! The `tokenizers` crate is built with its pure-Rust `fancy-regex` backend instead of the
//! default C Oniguruma: no C build (about 77 s saved on a clean build), and the golden-token tests
//! (`tests/text_tokenizer.rs`) show ids identical to transformers on the reference prompts.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as Json;

pub mod gguf_vocab;

/// Largest `tokenizer.json` read (vocabularies of 10^6 tokens are far below).
pub const MAX_TOKENIZER_JSON_BYTES: u64 = 256 * 1024 * 1024;
/// Largest small JSON side file (`tokenizer_config.json`, `config.json`, ...).
pub const MAX_CONFIG_JSON_BYTES: u64 = 64 * 1024 * 1024;
/// Largest vocabulary accepted from any source.
pub const MAX_VOCAB: usize = 4 * 1024 * 1024;
/// Largest text encoded in one call.
pub const MAX_ENCODE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: file of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("tokenizer: {0}")]
    Tokenizers(String),
    #[error("tokenizer: {0}")]
    Invalid(String),
}

impl TokenizerError {
    fn tk(e: impl std::fmt::Display) -> Self {
        Self::Tokenizers(e.to_string())
    }
}

/// `f`, with a panic of the `tokenizers` crate inside it (an index out of bounds in its
/// normalizer under a `Replace` of an empty string, say) turned into an error.
fn unpanicked<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TokenizerError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| {
        TokenizerError::Invalid(format!(
            "the tokenizers library failed while {what} (it panicked): the tokenizer.json is malformed"
        ))
    })
}

/// How far a tokenizer's normalizer may lengthen a text: `Replace` steps multiply it by their
/// content's length over their pattern's, `Prepend` steps add their text, stripping keeps it,
/// lower-casing may double it and other steps (Unicode normalization, a SentencePiece charsmap,
/// BERT's normalizer) multiply it by at most [`NORMALIZER_OTHER_GROWTH`]. Real tokenizers replace one space by one marker and prepend one
/// marker; a chain of `Replace` steps whose contents feed one another grows a prompt
/// exponentially, and the `tokenizers` crate allocates in proportion before it can fail (a
/// `Prepend` of 50 MB made it ask for 10^16 bytes and abort).
pub const MAX_NORMALIZER_GROWTH: f64 = 4096.0;
/// Bytes all `Prepend` steps of a normalizer may add together.
pub const MAX_NORMALIZER_PREPEND: usize = 1024;
const NORMALIZER_OTHER_GROWTH: f64 = 4.0;

/// Checks the `normalizer` of a `tokenizer.json` against [`MAX_NORMALIZER_GROWTH`] and
/// [`MAX_NORMALIZER_PREPEND`], and refuses a `Replace` of an empty string.
fn check_normalizer(doc: &Json) -> Result<(), TokenizerError> {
    fn walk(n: &Json, growth: &mut f64, prepend: &mut usize, depth: usize) -> Result<(), TokenizerError> {
        let bad = |m: String| TokenizerError::Invalid(format!("tokenizer.json normalizer: {m}"));
        if depth > 16 {
            return Err(bad("nested more than 16 deep".into()));
        }
        match n.get("type").and_then(Json::as_str) {
            Some("Sequence") => {
                for child in n.get("normalizers").and_then(Json::as_array).into_iter().flatten() {
                    walk(child, growth, prepend, depth + 1)?;
                }
            }
            Some("Replace") => {
                let pattern = n.get("pattern").and_then(|p| p.get("String").or_else(|| p.get("Regex"))).and_then(Json::as_str).unwrap_or("");
                let content = n.get("content").and_then(Json::as_str).unwrap_or("");
                if pattern.is_empty() {
                    return Err(bad("a Replace of an empty pattern".into()));
                }
                // A regex may match a single character whatever its source's length.
                let matched = if n.get("pattern").is_some_and(|p| p.get("String").is_some()) { pattern.len() } else { 1 };
                *growth *= (content.len() as f64 / matched as f64).max(1.0);
            }
            Some("Prepend") => {
                *prepend += n.get("prepend").and_then(Json::as_str).map_or(0, str::len);
            }
            Some("Strip" | "StripAccents" | "Nmt") => {}
            Some("Lowercase") => *growth *= 2.0,
            Some(_) => *growth *= NORMALIZER_OTHER_GROWTH,
            None => {}
        }
        Ok(())
    }
    let Some(n) = doc.get("normalizer").filter(|n| !n.is_null()) else { return Ok(()) };
    let (mut growth, mut prepend) = (1.0, 0usize);
    walk(n, &mut growth, &mut prepend, 0)?;
    if growth > MAX_NORMALIZER_GROWTH || prepend > MAX_NORMALIZER_PREPEND {
        return Err(TokenizerError::Invalid(format!(
            "tokenizer.json normalizer may lengthen a text {growth:.0} times and prepend {prepend} bytes (limits {MAX_NORMALIZER_GROWTH:.0} and {MAX_NORMALIZER_PREPEND})"
        )));
    }
    Ok(())
}

/// Pieces a post-processor's template may have (real ones: the text between one or two special
/// tokens, or two texts for a pair).
pub const MAX_TEMPLATE_PIECES: usize = 64;

/// Checks that the `post_processor` of a `tokenizer.json` does not multiply a text: at most
/// [`MAX_TEMPLATE_PIECES`] pieces per template (one repeating `$A` 2,000 times made every prompt
/// 44,000 tokens long), at most 16 processors in a sequence.
fn check_post_processor(doc: &Json) -> Result<(), TokenizerError> {
    let bad = |m: String| TokenizerError::Invalid(format!("tokenizer.json post_processor: {m}"));
    let Some(p) = doc.get("post_processor").filter(|p| !p.is_null()) else { return Ok(()) };
    let processors: Vec<&Json> = match p.get("type").and_then(Json::as_str) {
        Some("Sequence") => p.get("processors").and_then(Json::as_array).map(|a| a.iter().collect()).unwrap_or_default(),
        _ => vec![p],
    };
    if processors.len() > 16 {
        return Err(bad(format!("{} processors in a sequence", processors.len())));
    }
    for q in processors {
        for key in ["single", "pair"] {
            let n = q.get(key).and_then(Json::as_array).map_or(0, Vec::len);
            if n > MAX_TEMPLATE_PIECES {
                return Err(bad(format!("a `{key}` template of {n} pieces (limit {MAX_TEMPLATE_PIECES})")));
            }
        }
    }
    Ok(())
}

/// A `tokenizers::Tokenizer` from a `tokenizer.json`, `text`, that serde_json has parsed into
/// `doc` (or that was serialized from it): the `tokenizers` crate panics (an `expect` in
/// its decoder deserializer) on JSON its own reader rejects inside some fields, such as a number
/// out of range (`"decoder": 1e999`) or a lone surrogate escape, and serde_json refuses those
/// with an error. Any other panic of the crate while it reads the document is an error too, and
/// a normalizer that could lengthen a text without bound is refused first ([`check_normalizer`]).
pub(crate) fn parse_tokenizers(doc: &Json, text: &[u8]) -> Result<tokenizers::Tokenizer, TokenizerError> {
    check_normalizer(doc)?;
    check_post_processor(doc)?;
    unpanicked("reading it", || tokenizers::Tokenizer::from_bytes(text))?.map_err(TokenizerError::tk)
}

/// Reads a file whose size is checked against `limit` before allocating.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, TokenizerError> {
    let io = |source| TokenizerError::Io {
        path: path.display().to_string(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > limit {
        return Err(TokenizerError::TooLarge {
            path: path.display().to_string(),
            size,
            limit,
        });
    }
    std::fs::read(path).map_err(io)
}

/// Reads an optional JSON side file: `Ok(None)` when it does not exist.
pub(crate) fn read_json_opt(path: &Path) -> Result<Option<Json>, TokenizerError> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = read_limited(path, MAX_CONFIG_JSON_BYTES)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| TokenizerError::Json {
            path: path.display().to_string(),
            source,
        })
}

/// A special-token entry of `tokenizer_config.json`: a plain string or an `AddedToken` object.
pub(crate) fn token_content(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_owned),
        _ => None,
    }
}

/// Token ids of a config field that may be an integer or a list of integers.
fn ids_of(v: Option<&Json>) -> Vec<u32> {
    match v {
        Some(Json::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .into_iter()
            .collect(),
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect(),
        _ => Vec::new(),
    }
}

/// Special tokens of a model: names as the tokenizer config spells them and the ids generation
/// uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecialTokens {
    /// `bos_token`, `eos_token`, `pad_token`, `unk_token`, `sep_token`, `cls_token`,
    /// `mask_token` as strings (what chat templates receive as variables).
    pub named: Vec<(String, String)>,
    /// `additional_special_tokens`.
    pub additional: Vec<String>,
    pub bos_id: Option<u32>,
    /// Every id that ends generation: `generation_config.json`, then `config.json`, then the
    /// tokenizer's `eos_token`, deduplicated in that order.
    pub eos_ids: Vec<u32>,
    pub pad_id: Option<u32>,
    /// Whether the tokenizer is meant to prepend BOS (`add_bos_token`).
    pub add_bos: Option<bool>,
    /// Whether the tokenizer is meant to append EOS (`add_eos_token`).
    pub add_eos: Option<bool>,
}

impl SpecialTokens {
    /// The string of a named special token (`"bos_token"`, `"eos_token"`, ...).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.named
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn set(&mut self, name: &str, value: String) {
        if let Some(slot) = self.named.iter_mut().find(|(k, _)| k == name) {
            slot.1 = value;
        } else {
            self.named.push((name.to_owned(), value));
        }
    }
}

/// Names of special tokens read from `tokenizer_config.json`.
pub const SPECIAL_TOKEN_NAMES: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "sep_token",
    "cls_token",
    "mask_token",
];

/// A tokenizer with the special-token facts generation and chat templates need.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("special", &self.special)
            .finish()
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json` alone (no special-token ids beyond what it declares).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let bytes = read_limited(path, MAX_TOKENIZER_JSON_BYTES)?;
        let doc: Json = serde_json::from_slice(&bytes).map_err(|source| TokenizerError::Json {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_tokenizers(parse_tokenizers(&doc, &bytes)?, SpecialTokens::default())
    }

    /// Loads a model folder: `tokenizer.json` plus, when present, `tokenizer_config.json`,
    /// `generation_config.json` and `config.json` for special tokens.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let dir = dir.as_ref();
        let mut tok = Self::from_file(dir.join("tokenizer.json"))?;
        let tcfg = read_json_opt(&dir.join("tokenizer_config.json"))?;
        let gcfg = read_json_opt(&dir.join("generation_config.json"))?;
        let mcfg = read_json_opt(&dir.join("config.json"))?;
        tok.special = tok.special_from_configs(tcfg.as_ref(), gcfg.as_ref(), mcfg.as_ref());
        Ok(tok)
    }

    /// Wraps a `tokenizers::Tokenizer` built elsewhere (GGUF metadata, tests).
    pub fn from_tokenizers(
        inner: tokenizers::Tokenizer,
        special: SpecialTokens,
    ) -> Result<Self, TokenizerError> {
        let size = inner.get_vocab_size(true);
        if size > MAX_VOCAB {
            return Err(TokenizerError::Invalid(format!(
                "vocabulary of {size} tokens exceeds the limit of {MAX_VOCAB}"
            )));
        }
        Ok(Self { inner, special })
    }

    fn special_from_configs(
        &self,
        tcfg: Option<&Json>,
        gcfg: Option<&Json>,
        mcfg: Option<&Json>,
    ) -> SpecialTokens {
        let mut s = SpecialTokens::default();
        if let Some(t) = tcfg {
            for name in SPECIAL_TOKEN_NAMES {
                if let Some(v) = t.get(name).and_then(token_content) {
                    s.set(name, v);
                }
            }
            if let Some(Json::Array(a)) = t.get("additional_special_tokens") {
                s.additional = a.iter().filter_map(token_content).collect();
            }
            s.add_bos = t.get("add_bos_token").and_then(Json::as_bool);
            s.add_eos = t.get("add_eos_token").and_then(Json::as_bool);
        }
        let field = |name: &str| -> Vec<u32> {
            let g = ids_of(gcfg.and_then(|g| g.get(name)));
            if g.is_empty() {
                ids_of(mcfg.and_then(|m| m.get(name)))
            } else {
                g
            }
        };
        let by_name = |s: &SpecialTokens, name: &str| s.get(name).and_then(|t| self.token_to_id(t));
        s.bos_id = field("bos_token_id")
            .first()
            .copied()
            .or_else(|| by_name(&s, "bos_token"));
        s.pad_id = field("pad_token_id")
            .first()
            .copied()
            .or_else(|| by_name(&s, "pad_token"));
        let mut eos = ids_of(gcfg.and_then(|g| g.get("eos_token_id")));
        eos.extend(ids_of(mcfg.and_then(|m| m.get("eos_token_id"))));
        eos.extend(by_name(&s, "eos_token"));
        let mut seen = std::collections::HashSet::new();
        eos.retain(|id| seen.insert(*id));
        s.eos_ids = eos;
        s
    }

    /// Token ids of `text`. With `add_special_tokens`, the tokenizer's post-processor adds what
    /// it declares (BOS for Llama-style tokenizers); transformers' `add_special_tokens=False`
    /// is `false` here.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        if text.len() > MAX_ENCODE_BYTES {
            return Err(TokenizerError::Invalid(format!(
                "text of {} bytes exceeds the limit of {MAX_ENCODE_BYTES}",
                text.len()
            )));
        }
        let enc = unpanicked("encoding", || self.inner.encode(text, add_special_tokens))?
            .map_err(TokenizerError::tk)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; with `skip_special`, special tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        unpanicked("decoding", || self.inner.decode(ids, skip_special))?
            .map_err(TokenizerError::tk)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Added tokens as `(id, content, special)`, sorted by id.
    pub fn added_tokens(&self) -> Vec<(u32, String, bool)> {
        let mut v: Vec<(u32, String, bool)> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (id, t.content, t.special))
            .collect();
        v.sort_by_key(|(id, _, _)| *id);
        v
    }

    /// True when `id` is an added token marked special.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .get_added_tokens_decoder()
            .get(&id)
            .is_some_and(|t| t.special)
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn special_tokens_mut(&mut self) -> &mut SpecialTokens {
        &mut self.special
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.special.bos_id
    }

    pub fn eos_ids(&self) -> &[u32] {
        &self.special.eos_ids
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.special.pad_id
    }

    /// Vocabulary (token -> id) including added tokens.
    pub fn vocab(&self) -> HashMap<String, u32> {
        self.inner.get_vocab(true)
    }

    /// The underlying `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Builds the tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata.
    pub fn from_gguf_metadata(
        meta: &HashMap<String, candle_core::quantized::gguf_file::Value>,
    ) -> Result<Self, TokenizerError> {
        gguf_vocab::tokenizer_from_gguf(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tokenizer_json_the_tokenizers_crate_panics_on_is_an_error() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference/llama/tokenizer.json");
        let text = std::fs::read_to_string(&src).expect("reference tokenizer");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokenizer.json");
        assert!(Tokenizer::from_file(&src).is_ok());
        let mut doc: Json = serde_json::from_str(&text).expect("JSON");
        doc["decoder"] = json!("__DECODER__");
        let shell = serde_json::to_string(&doc).expect("JSON");
        // `tokenizers::Tokenizer::from_bytes` panics on each of these (an `expect` in its
        // decoder deserializer); read through serde_json first they are errors.
        for decoder in ["1e999", r#"{"type":"ByteLevel","add_prefix_space":1e999}"#, r#""\ud800""#] {
            std::fs::write(&path, shell.replace(r#""__DECODER__""#, decoder)).expect("write");
            let r = std::panic::catch_unwind(|| Tokenizer::from_file(&path));
            assert!(matches!(r, Ok(Err(TokenizerError::Json { .. }))), "{decoder}: {r:?}");
        }
    }

    #[test]
    fn normalizers_that_could_grow_a_text_without_bound_are_refused() {
        let with = |n: Json| json!({ "normalizer": n });
        let space = |content: &str| json!({"type": "Replace", "pattern": {"String": " "}, "content": content});
        // What real tokenizers use: Llama 2 / Mistral, Gemma, Qwen2, BERT, none.
        for ok in [
            json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, space("▁")]}),
            space("▁"),
            json!({"type": "NFC"}),
            json!({"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}),
            json!({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"}, {"type": "StripAccents"}, {"type": "Strip", "left": true, "right": true}]}),
            Json::Null,
        ] {
            assert!(check_normalizer(&with(ok.clone())).is_ok(), "{ok}");
        }
        // A 50 MB prepend (the tokenizers crate asked for 10^16 bytes and aborted), a chain of
        // replacements that feed one another, a replacement of the empty string (an index out of
        // bounds in the crate), and a nesting bomb.
        let chain: Vec<Json> = (0..4).map(|_| space(&" ".repeat(64))).collect();
        let mut deep = json!({"type": "NFC"});
        for _ in 0..40 {
            deep = json!({"type": "Sequence", "normalizers": [deep]});
        }
        for bad in [
            json!({"type": "Prepend", "prepend": "x".repeat(50_000)}),
            json!({"type": "Sequence", "normalizers": chain}),
            json!({"type": "Replace", "pattern": {"String": ""}, "content": "yy"}),
            deep,
        ] {
            assert!(matches!(check_normalizer(&with(bad.clone())), Err(TokenizerError::Invalid(_))), "{}", bad.to_string().chars().take(80).collect::<String>());
        }
    }

    #[test]
    fn post_processors_that_repeat_the_text_are_refused() {
        let a = json!({"Sequence": {"id": "A", "type_id": 0}});
        let bos = json!({"SpecialToken": {"id": "<s>", "type_id": 0}});
        let llama = json!({"post_processor": {"type": "TemplateProcessing", "single": [bos, a], "pair": [bos, a, bos, {"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": {}}});
        assert!(check_post_processor(&llama).is_ok());
        assert!(check_post_processor(&json!({"post_processor": {"type": "ByteLevel"}})).is_ok());
        let repeated = json!({"post_processor": {"type": "TemplateProcessing", "single": vec![a.clone(); 2000], "pair": [a], "special_tokens": {}}});
        assert!(matches!(check_post_processor(&repeated), Err(TokenizerError::Invalid(m)) if m.contains("2000 pieces")));
        let nested = json!({"post_processor": {"type": "Sequence", "processors": vec![json!({"type": "ByteLevel"}); 17]}});
        assert!(check_post_processor(&nested).is_err());
    }

    #[test]
    fn a_panic_inside_the_tokenizers_crate_is_an_error() {
        assert!(matches!(unpanicked("encoding", || -> u32 { panic!("index out of bounds") }), Err(TokenizerError::Invalid(m)) if m.contains("encoding")));
        assert_eq!(unpanicked("decoding", || 7).ok(), Some(7));
    }

    #[test]
    fn ids_of_accepts_int_and_list() {
        assert_eq!(ids_of(Some(&json!(5))), vec![5]);
        assert_eq!(ids_of(Some(&json!([1, 2, -1, "x"]))), vec![1, 2]);
        assert!(ids_of(Some(&json!(null))).is_empty());
        assert!(ids_of(Some(&json!(1u64 << 40))).is_empty());
    }

    #[test]
    fn token_content_reads_added_token_objects() {
        assert_eq!(token_content(&json!("<s>")), Some("<s>".into()));
        assert_eq!(
            token_content(&json!({"content": "</s>", "special": true})),
            Some("</s>".into())
        );
        assert_eq!(token_content(&json!(3)), None);
    }
}
