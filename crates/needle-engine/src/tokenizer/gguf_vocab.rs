//! The tokenizer stored in GGUF metadata (`tokenizer.ggml.*`), both ways.
//!
//! Reading builds a `tokenizer.json` document in memory (the format `tokenizers` loads) the way
//! transformers' GGUF converters do:
//! - `gpt2`: byte-level BPE from `tokens` and `merges`; the pre-tokenizer regex follows
//!   `tokenizer.ggml.pre` (GPT-2, Llama 3, Qwen2 families);
//! - `llama`: SentencePiece-style BPE with byte fallback and `▁` for spaces; merges are derived
//!   from `scores` as `tokenizers`' `SentencePieceExtractor` does.
//!
//! Token types (`tokenizer.ggml.token_type`): 1 normal, 2 unknown, 3 control, 4 user-defined,
//! 5 unused, 6 byte. Control tokens become special added tokens, user-defined ones plain added
//! tokens.
//!
//! Writing goes the other way for byte-level BPE tokenizers (the `gpt2` model of llama.cpp).

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value as G;
use serde_json::{json, Value as Json};

use super::{SpecialTokens, Tokenizer, TokenizerError, MAX_VOCAB};

pub const TOKEN_NORMAL: i32 = 1;
pub const TOKEN_UNKNOWN: i32 = 2;
pub const TOKEN_CONTROL: i32 = 3;
pub const TOKEN_USER_DEFINED: i32 = 4;
pub const TOKEN_BYTE: i32 = 6;

/// Tokens longer than this (in chars) are not split into merge candidates (bounds the work a
/// hostile vocabulary can cause; real SentencePiece pieces are far shorter).
const MAX_MERGE_PIECE_CHARS: usize = 256;

/// GPT-2's pre-tokenizer regex (what `ByteLevel { use_regex: true }` applies).
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's pre-tokenizer regex (llama.cpp `llama-bpe`).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pre-tokenizer regex (llama.cpp `qwen2`).
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn bad(msg: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid(msg.into())
}

fn get_str<'a>(meta: &'a HashMap<String, G>, key: &str) -> Option<&'a str> {
    match meta.get(key) {
        Some(G::String(s)) => Some(s.as_str()),
        _ => None,
    }
}

fn get_u32(meta: &HashMap<String, G>, key: &str) -> Option<u32> {
    let v = meta.get(key)?;
    match v {
        G::U8(x) => Some(u32::from(*x)),
        G::U16(x) => Some(u32::from(*x)),
        G::U32(x) => Some(*x),
        G::U64(x) => u32::try_from(*x).ok(),
        G::I8(x) => u32::try_from(*x).ok(),
        G::I16(x) => u32::try_from(*x).ok(),
        G::I32(x) => u32::try_from(*x).ok(),
        G::I64(x) => u32::try_from(*x).ok(),
        _ => None,
    }
}

fn get_bool(meta: &HashMap<String, G>, key: &str) -> Option<bool> {
    match meta.get(key) {
        Some(G::Bool(b)) => Some(*b),
        _ => None,
    }
}

fn get_array<'a>(meta: &'a HashMap<String, G>, key: &str) -> Option<&'a [G]> {
    match meta.get(key) {
        Some(G::Array(a)) => Some(a.as_slice()),
        _ => None,
    }
}

fn strings(arr: &[G], what: &str) -> Result<Vec<String>, TokenizerError> {
    arr.iter()
        .map(|v| match v {
            G::String(s) => Ok(s.clone()),
            _ => Err(bad(format!("{what}: expected strings"))),
        })
        .collect()
}

fn ints(arr: &[G], what: &str) -> Result<Vec<i32>, TokenizerError> {
    arr.iter()
        .map(|v| match v {
            G::I32(x) => Ok(*x),
            G::U32(x) => i32::try_from(*x).map_err(|_| bad(format!("{what}: value out of range"))),
            G::I8(x) => Ok(i32::from(*x)),
            G::U8(x) => Ok(i32::from(*x)),
            _ => Err(bad(format!("{what}: expected integers"))),
        })
        .collect()
}

fn floats(arr: &[G], what: &str) -> Result<Vec<f32>, TokenizerError> {
    arr.iter()
        .map(|v| match v {
            G::F32(x) => Ok(*x),
            G::F64(x) => Ok(*x as f32),
            _ => Err(bad(format!("{what}: expected floats"))),
        })
        .collect()
}

/// The regex a `tokenizer.ggml.pre` name stands for (`None`: GPT-2's, applied by ByteLevel).
fn pre_pattern(pre: Option<&str>) -> Result<Option<&'static str>, TokenizerError> {
    match pre {
        None | Some("default" | "gpt2" | "gpt-2" | "phi-2" | "olmo" | "jina-es" | "jina-de") => {
            Ok(None)
        }
        Some("llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" | "falcon3") => {
            Ok(Some(LLAMA3_PATTERN))
        }
        Some("qwen2" | "deepseek-r1-qwen" | "megrez") => Ok(Some(QWEN2_PATTERN)),
        Some(other) => Err(bad(format!(
            "tokenizer.ggml.pre `{other}` is not supported (known: gpt2, llama-bpe, qwen2)"
        ))),
    }
}

/// The `tokenizer.ggml.pre` name of a tokenizer.json pre-tokenizer, for the writer.
fn pre_name(pre_tokenizer: &Json) -> Option<&'static str> {
    let ty = pre_tokenizer.get("type").and_then(Json::as_str)?;
    match ty {
        "ByteLevel" if pre_tokenizer.get("use_regex").and_then(Json::as_bool) != Some(false) => {
            Some("gpt2")
        }
        "Sequence" => {
            let parts = pre_tokenizer.get("pretokenizers")?.as_array()?;
            let [split, bl] = parts.as_slice() else {
                return None;
            };
            if bl.get("type").and_then(Json::as_str) != Some("ByteLevel")
                || bl.get("use_regex").and_then(Json::as_bool) != Some(false)
                || split.get("type").and_then(Json::as_str) != Some("Split")
            {
                return None;
            }
            let regex = split.get("pattern")?.get("Regex")?.as_str()?;
            if regex == LLAMA3_PATTERN {
                Some("llama-bpe")
            } else if regex == QWEN2_PATTERN {
                Some("qwen2")
            } else if regex == GPT2_PATTERN {
                Some("gpt2")
            } else {
                None
            }
        }
        _ => None,
    }
}

fn added_token(id: usize, content: &str, special: bool) -> Json {
    json!({
        "id": id,
        "content": content,
        "single_word": false,
        "lstrip": false,
        "rstrip": false,
        "normalized": false,
        "special": special,
    })
}

fn bos_post_processor(bos: Option<(&str, u32)>, eos: Option<(&str, u32)>) -> Json {
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = serde_json::Map::new();
    if let Some((tok, id)) = bos {
        single.push(json!({"SpecialToken": {"id": tok, "type_id": 0}}));
        pair.push(json!({"SpecialToken": {"id": tok, "type_id": 0}}));
        specials.insert(tok.into(), json!({"id": tok, "ids": [id], "tokens": [tok]}));
    }
    single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    pair.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    if let Some((tok, id)) = eos {
        single.push(json!({"SpecialToken": {"id": tok, "type_id": 0}}));
        pair.push(json!({"SpecialToken": {"id": tok, "type_id": 0}}));
        specials.insert(tok.into(), json!({"id": tok, "ids": [id], "tokens": [tok]}));
    }
    if let Some((tok, _)) = bos {
        pair.push(json!({"SpecialToken": {"id": tok, "type_id": 1}}));
    }
    pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
    if let Some((tok, _)) = eos {
        pair.push(json!({"SpecialToken": {"id": tok, "type_id": 1}}));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}

/// Merges for a SentencePiece vocabulary with scores, as `SentencePieceExtractor` derives them:
/// every split of a piece into two pieces of the vocabulary, ordered by the merged piece's score
/// (descending, stable over ids), within one piece by the ids of its halves.
fn spm_merges(tokens: &[String], scores: &[f32], vocab: &HashMap<&str, usize>) -> Vec<String> {
    let mut merges: Vec<(f32, String)> = Vec::new();
    for (piece, &score) in tokens.iter().zip(scores) {
        let chars: Vec<(usize, char)> = piece.char_indices().collect();
        if chars.len() < 2 || chars.len() > MAX_MERGE_PIECE_CHARS {
            continue;
        }
        let mut local: Vec<(usize, usize, &str, &str)> = Vec::new();
        for &(i, _) in chars.iter().skip(1) {
            let (l, r) = piece.split_at(i);
            if let (Some(&il), Some(&ir)) = (vocab.get(l), vocab.get(r)) {
                local.push((il, ir, l, r));
            }
        }
        local.sort_by_key(|&(il, ir, _, _)| (il, ir));
        merges.extend(
            local
                .into_iter()
                .map(|(_, _, l, r)| (score, format!("{l} {r}"))),
        );
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges.into_iter().map(|(_, m)| m).collect()
}

/// Builds the tokenizer a GGUF file describes.
pub fn tokenizer_from_gguf(meta: &HashMap<String, G>) -> Result<Tokenizer, TokenizerError> {
    let model = get_str(meta, "tokenizer.ggml.model")
        .ok_or_else(|| bad("GGUF has no tokenizer.ggml.model"))?;
    let tokens = strings(
        get_array(meta, "tokenizer.ggml.tokens")
            .ok_or_else(|| bad("GGUF has no tokenizer.ggml.tokens"))?,
        "tokenizer.ggml.tokens",
    )?;
    if tokens.is_empty() || tokens.len() > MAX_VOCAB {
        return Err(bad(format!("vocabulary of {} tokens", tokens.len())));
    }
    let types = match get_array(meta, "tokenizer.ggml.token_type") {
        Some(a) => ints(a, "tokenizer.ggml.token_type")?,
        None => vec![TOKEN_NORMAL; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(bad("tokenizer.ggml.token_type and tokens differ in length"));
    }
    let n = tokens.len();
    let id_ok = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
    let bos_id = id_ok(get_u32(meta, "tokenizer.ggml.bos_token_id"));
    let eos_id = id_ok(get_u32(meta, "tokenizer.ggml.eos_token_id"));
    let unk_id = id_ok(get_u32(meta, "tokenizer.ggml.unknown_token_id"));
    let pad_id = id_ok(get_u32(meta, "tokenizer.ggml.padding_token_id"));
    let eot_id = id_ok(get_u32(meta, "tokenizer.ggml.eot_token_id"));
    let eom_id = id_ok(get_u32(meta, "tokenizer.ggml.eom_token_id"));
    let tok = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize)).map(String::as_str);

    let mut vocab_json = serde_json::Map::with_capacity(n);
    let mut vocab_idx: HashMap<&str, usize> = HashMap::with_capacity(n);
    for (i, t) in tokens.iter().enumerate() {
        // Duplicates: the first id wins, as in llama.cpp's token-to-id map.
        if !vocab_idx.contains_key(t.as_str()) {
            vocab_idx.insert(t.as_str(), i);
            vocab_json.insert(t.clone(), json!(i));
        }
    }
    let mut added = Vec::new();
    for (i, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
        let kind = ty == TOKEN_CONTROL
            || ty == TOKEN_USER_DEFINED
            || (ty == TOKEN_UNKNOWN && model == "llama");
        if kind && vocab_idx.get(t.as_str()) == Some(&i) && !t.is_empty() {
            added.push(added_token(i, t, ty != TOKEN_USER_DEFINED));
        }
    }
    let add_bos = get_bool(meta, "tokenizer.ggml.add_bos_token");
    let add_eos = get_bool(meta, "tokenizer.ggml.add_eos_token");

    let doc = match model {
        "gpt2" => {
            let merges = match get_array(meta, "tokenizer.ggml.merges") {
                Some(a) => strings(a, "tokenizer.ggml.merges")?,
                None => Vec::new(),
            };
            for m in &merges {
                let mut parts = m.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {}
                    _ => return Err(bad(format!("malformed merge `{}`", m.escape_debug()))),
                }
            }
            let pattern = pre_pattern(get_str(meta, "tokenizer.ggml.pre"))?;
            let pre = match pattern {
                None => {
                    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
                }
                Some(p) => json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
                ]}),
            };
            let post = if add_bos == Some(true) || add_eos == Some(true) {
                bos_post_processor(
                    tok(bos_id).zip(bos_id).filter(|_| add_bos == Some(true)),
                    tok(eos_id).zip(eos_id).filter(|_| add_eos == Some(true)),
                )
            } else {
                json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
            };
            json!({
                "version": "1.0",
                "truncation": null,
                "padding": null,
                "added_tokens": added,
                "normalizer": null,
                "pre_tokenizer": pre,
                "post_processor": post,
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {
                    "type": "BPE", "dropout": null, "unk_token": tok(unk_id),
                    "continuing_subword_prefix": null, "end_of_word_suffix": null,
                    "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                    "vocab": vocab_json, "merges": merges
                }
            })
        }
        "llama" => {
            let scores = match get_array(meta, "tokenizer.ggml.scores") {
                Some(a) => floats(a, "tokenizer.ggml.scores")?,
                None => vec![0.0; n],
            };
            if scores.len() != n {
                return Err(bad("tokenizer.ggml.scores and tokens differ in length"));
            }
            let merges = spm_merges(&tokens, &scores, &vocab_idx);
            let add_space_prefix =
                get_bool(meta, "tokenizer.ggml.add_space_prefix").unwrap_or(true);
            let pre = json!({
                "type": "Metaspace", "replacement": "\u{2581}",
                "prepend_scheme": if add_space_prefix { "first" } else { "never" },
                "split": false
            });
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if add_space_prefix {
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            let post = bos_post_processor(
                tok(bos_id).zip(bos_id).filter(|_| add_bos != Some(false)),
                tok(eos_id).zip(eos_id).filter(|_| add_eos == Some(true)),
            );
            json!({
                "version": "1.0",
                "truncation": null,
                "padding": null,
                "added_tokens": added,
                "normalizer": null,
                "pre_tokenizer": pre,
                "post_processor": post,
                "decoder": {"type": "Sequence", "decoders": decoders},
                "model": {
                    "type": "BPE", "dropout": null, "unk_token": tok(unk_id),
                    "continuing_subword_prefix": null, "end_of_word_suffix": null,
                    "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                    "vocab": vocab_json, "merges": merges
                }
            })
        }
        other => {
            return Err(bad(format!(
                "tokenizer.ggml.model `{other}` is not supported (known: gpt2, llama)"
            )))
        }
    };
    let text = serde_json::to_vec(&doc).map_err(|e| bad(e.to_string()))?;
    let inner = super::parse_tokenizers(&doc, &text)?;

    let mut special = SpecialTokens {
        bos_id,
        pad_id,
        add_bos,
        add_eos,
        ..SpecialTokens::default()
    };
    for (name, id) in [
        ("bos_token", bos_id),
        ("eos_token", eos_id),
        ("unk_token", unk_id),
        ("pad_token", pad_id),
    ] {
        if let Some(t) = tok(id) {
            special.set(name, t.to_owned());
        }
    }
    let mut eos: Vec<u32> = [eos_id, eot_id, eom_id].into_iter().flatten().collect();
    eos.dedup();
    special.eos_ids = eos;
    Tokenizer::from_tokenizers(inner, special)
}

/// GGUF metadata (`tokenizer.ggml.*`) describing `tok`. Supported: byte-level BPE tokenizers
/// (llama.cpp's `gpt2` model) with a GPT-2, Llama 3 or Qwen2 pre-tokenizer.
pub fn tokenizer_to_gguf(tok: &Tokenizer) -> Result<Vec<(String, G)>, TokenizerError> {
    let doc: Json =
        serde_json::from_str(&tok.inner().to_string(false).map_err(TokenizerError::tk)?)
            .map_err(|e| bad(e.to_string()))?;
    let model = doc
        .get("model")
        .ok_or_else(|| bad("tokenizer has no model"))?;
    if model.get("type").and_then(Json::as_str) != Some("BPE")
        || model.get("byte_fallback").and_then(Json::as_bool) == Some(true)
    {
        return Err(bad(
            "only byte-level BPE tokenizers can be written to GGUF (llama.cpp `gpt2` model)",
        ));
    }
    let pre = doc
        .get("pre_tokenizer")
        .and_then(pre_name)
        .ok_or_else(|| bad("pre-tokenizer has no llama.cpp equivalent (gpt2, llama-bpe, qwen2)"))?;
    if !doc.get("normalizer").is_none_or(Json::is_null) {
        return Err(bad(
            "tokenizers with a normalizer cannot be written to GGUF",
        ));
    }
    let n = tok.vocab_size();
    let mut tokens: Vec<Option<String>> = vec![None; n];
    for (t, id) in tok.vocab() {
        if let Some(slot) = tokens.get_mut(id as usize) {
            *slot = Some(t);
        } else {
            return Err(bad(format!("token id {id} outside a vocabulary of {n}")));
        }
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| bad(format!("vocabulary has no token with id {i}"))))
        .collect::<Result<_, _>>()?;
    let mut types = vec![TOKEN_NORMAL; n];
    for (id, _, special) in tok.added_tokens() {
        if let Some(t) = types.get_mut(id as usize) {
            *t = if special {
                TOKEN_CONTROL
            } else {
                TOKEN_USER_DEFINED
            };
        }
    }
    let merges: Vec<String> = match model.get("merges") {
        Some(Json::Array(a)) => a
            .iter()
            .map(|m| match m {
                Json::String(s) => Ok(s.clone()),
                Json::Array(p) => match p.as_slice() {
                    [Json::String(a), Json::String(b)] => Ok(format!("{a} {b}")),
                    _ => Err(bad("malformed merge")),
                },
                _ => Err(bad("malformed merge")),
            })
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let st = tok.special_tokens();
    // Whether BOS is prepended: ask the post-processor itself.
    let add_bos = match (st.bos_id, tok.encode("", true)) {
        (Some(b), Ok(ids)) => ids.first() == Some(&b),
        _ => false,
    };
    let mut out: Vec<(String, G)> = vec![
        ("tokenizer.ggml.model".into(), G::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), G::String(pre.into())),
        (
            "tokenizer.ggml.tokens".into(),
            G::Array(tokens.into_iter().map(G::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            G::Array(types.into_iter().map(G::I32).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            G::Array(merges.into_iter().map(G::String).collect()),
        ),
    ];
    if let Some(b) = st.bos_id {
        out.push(("tokenizer.ggml.bos_token_id".into(), G::U32(b)));
    }
    if let Some(&e) = st.eos_ids.first() {
        out.push(("tokenizer.ggml.eos_token_id".into(), G::U32(e)));
    }
    // A chat model's end-of-turn token, when it differs from the configured EOS.
    if let Some(eot) = st.get("eos_token").and_then(|t| tok.token_to_id(t)) {
        if st.eos_ids.first() != Some(&eot) {
            out.push(("tokenizer.ggml.eot_token_id".into(), G::U32(eot)));
        }
    }
    if let Some(p) = st.pad_id {
        out.push(("tokenizer.ggml.padding_token_id".into(), G::U32(p)));
    }
    if let Some(u) = st.get("unk_token").and_then(|t| tok.token_to_id(t)) {
        out.push(("tokenizer.ggml.unknown_token_id".into(), G::U32(u)));
    }
    out.push(("tokenizer.ggml.add_bos_token".into(), G::Bool(add_bos)));
    out.push(("tokenizer.ggml.add_eos_token".into(), G::Bool(false)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(entries: Vec<(&str, G)>) -> HashMap<String, G> {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    fn strs(v: &[&str]) -> G {
        G::Array(v.iter().map(|s| G::String((*s).to_owned())).collect())
    }

    /// A small SentencePiece vocabulary: unk, bos, eos, 256 byte tokens, then pieces.
    fn spm_meta() -> HashMap<String, G> {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL];
        let mut scores = vec![0.0f32; 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(TOKEN_BYTE);
            scores.push(0.0);
        }
        let pieces = [
            "\u{2581}",
            "H",
            "e",
            "l",
            "o",
            "w",
            "r",
            "d",
            "\u{2581}w",
            "ll",
            "He",
            "llo",
            "Hello",
            "\u{2581}Hello",
            "or",
            "\u{2581}wor",
            "ld",
            "\u{2581}world",
        ];
        for (i, p) in pieces.iter().enumerate() {
            tokens.push((*p).to_owned());
            types.push(TOKEN_NORMAL);
            // Later pieces are merged later: lower score.
            scores.push(-(i as f32));
        }
        meta(vec![
            ("tokenizer.ggml.model", G::String("llama".into())),
            (
                "tokenizer.ggml.tokens",
                G::Array(tokens.into_iter().map(G::String).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                G::Array(types.into_iter().map(G::I32).collect()),
            ),
            (
                "tokenizer.ggml.scores",
                G::Array(scores.into_iter().map(G::F32).collect()),
            ),
            ("tokenizer.ggml.bos_token_id", G::U32(1)),
            ("tokenizer.ggml.eos_token_id", G::U32(2)),
            ("tokenizer.ggml.unknown_token_id", G::U32(0)),
            ("tokenizer.ggml.add_bos_token", G::Bool(true)),
        ])
    }

    #[test]
    fn spm_tokenizer_merges_by_score_with_byte_fallback() {
        let tok = tokenizer_from_gguf(&spm_meta()).unwrap();
        let id = |t: &str| tok.token_to_id(t).unwrap();
        let ids = tok.encode("Hello world", false).unwrap();
        assert_eq!(ids, vec![id("\u{2581}Hello"), id("\u{2581}world")]);
        // BOS is prepended with special tokens; unknown characters fall back to bytes.
        let ids = tok.encode("Hello!", true).unwrap();
        assert_eq!(ids, vec![1, id("\u{2581}Hello"), id("<0x21>")]);
        assert_eq!(tok.decode(&ids, true).unwrap(), "Hello!");
        // Control tokens in the text are matched as specials.
        let ids = tok.encode("Hello</s>", false).unwrap();
        assert_eq!(ids.last(), Some(&2));
        assert_eq!(tok.eos_ids(), &[2]);
        assert_eq!(tok.special_tokens().get("bos_token"), Some("<s>"));
        // A multi-byte character without a piece decodes back through its bytes.
        let ids = tok.encode("é", false).unwrap();
        assert_eq!(ids, vec![id("\u{2581}"), id("<0xC3>"), id("<0xA9>")]);
        assert_eq!(tok.decode(&ids, false).unwrap(), "é");
    }

    #[test]
    fn gpt2_tokenizer_from_tokens_and_merges() {
        let m = meta(vec![
            ("tokenizer.ggml.model", G::String("gpt2".into())),
            ("tokenizer.ggml.pre", G::String("qwen2".into())),
            (
                "tokenizer.ggml.tokens",
                strs(&["<|end|>", "a", "b", "ab", "\u{120}", "\u{120}ab", "1", "2"]),
            ),
            (
                "tokenizer.ggml.token_type",
                G::Array(vec![
                    G::I32(3),
                    G::I32(1),
                    G::I32(1),
                    G::I32(1),
                    G::I32(1),
                    G::I32(1),
                    G::I32(1),
                    G::I32(1),
                ]),
            ),
            ("tokenizer.ggml.merges", strs(&["a b", "\u{120} ab"])),
            ("tokenizer.ggml.eos_token_id", G::U32(0)),
        ]);
        let tok = tokenizer_from_gguf(&m).unwrap();
        assert_eq!(tok.encode("ab ab<|end|>", false).unwrap(), vec![3, 5, 0]);
        // Qwen2 splits digits one by one.
        assert_eq!(tok.encode("12", false).unwrap(), vec![6, 7]);
        assert_eq!(tok.decode(&[3, 5, 0], true).unwrap(), "ab ab");
        assert!(tok.is_special(0));
    }

    #[test]
    fn hostile_or_unknown_metadata_is_an_error() {
        assert!(tokenizer_from_gguf(&meta(vec![])).is_err());
        let mut m = spm_meta();
        m.insert("tokenizer.ggml.model".into(), G::String("bert".into()));
        assert!(tokenizer_from_gguf(&m).is_err());
        let mut m = spm_meta();
        m.insert("tokenizer.ggml.scores".into(), G::Array(vec![G::F32(0.0)]));
        assert!(tokenizer_from_gguf(&m).is_err());
        let mut m = spm_meta();
        m.insert("tokenizer.ggml.tokens".into(), G::Array(vec![G::U32(1)]));
        assert!(tokenizer_from_gguf(&m).is_err());
        let m = meta(vec![
            ("tokenizer.ggml.model", G::String("gpt2".into())),
            ("tokenizer.ggml.pre", G::String("mystery".into())),
            ("tokenizer.ggml.tokens", strs(&["a"])),
        ]);
        assert!(tokenizer_from_gguf(&m).is_err());
        let m = meta(vec![
            ("tokenizer.ggml.model", G::String("gpt2".into())),
            ("tokenizer.ggml.tokens", strs(&["a"])),
            ("tokenizer.ggml.merges", strs(&["a"])),
        ]);
        assert!(tokenizer_from_gguf(&m).is_err());
        // Out-of-range special ids are ignored, not trusted.
        let mut m = spm_meta();
        m.insert("tokenizer.ggml.bos_token_id".into(), G::U32(1 << 30));
        assert_eq!(tokenizer_from_gguf(&m).unwrap().bos_id(), None);
    }
}
