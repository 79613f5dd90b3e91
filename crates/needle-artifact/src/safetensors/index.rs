//! Shard indexes (`model.safetensors.index.json`, any `*.safetensors.index.json`, and
//! `pytorch_model.bin.index.json`) checked against the shards on disk, and the embedding rows.

use super::dtype_bits;
use crate::detect::Format;
use crate::inspect::{Capped, FileEntry, FileSet, Sink};
use crate::inventory::{ShardIndexFacts, TensorInfo};
use crate::limits;
use needle_report::{Rule, Severity};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

pub static INDEX_MISSING_TENSOR: Rule = Rule {
    code: "safetensors/index-missing-tensor",
    severity: Severity::High,
    summary: "the shard index names a tensor that its shard does not contain",
    fix: "regenerate the index from the shards; loaders silently leave the weight randomly initialised",
};
pub static INDEX_UNLISTED_TENSOR: Rule = Rule {
    code: "safetensors/index-unlisted-tensor",
    severity: Severity::High,
    summary: "a shard contains a tensor the index does not list",
    fix: "regenerate the index from the shards; some loaders load the extra tensor, others ignore it",
};
pub static INDEX_MISSING_SHARD: Rule = Rule {
    code: "safetensors/index-missing-shard",
    severity: Severity::High,
    summary: "the shard index names a file that is not in the folder",
    fix: "download the missing shard, or regenerate the index",
};
pub static INDEX_ORPHAN_SHARD: Rule = Rule {
    code: "safetensors/index-orphan-shard",
    severity: Severity::High,
    summary: "a weight file next to the index is not named by it (loaders that glob will load it, others will not)",
    fix: "remove the extra weight file, or regenerate the index to include it",
};
pub static DUPLICATE_ACROSS_SHARDS: Rule = Rule {
    code: "safetensors/duplicate-tensor-across-shards",
    severity: Severity::High,
    summary: "the same tensor name is stored in more than one shard; which copy loads depends on the loader",
    fix: "re-shard the weights so each tensor is stored once, and find out why the copies exist",
};
pub static INDEX_SIZE_MISMATCH: Rule = Rule {
    code: "safetensors/index-size-mismatch",
    severity: Severity::Low,
    summary: "`metadata.total_size` of the index differs from the bytes of the tensors in its shards",
    fix: "regenerate the index from the shards",
};
pub static INDEX_BAD: Rule = Rule {
    code: "safetensors/index-bad",
    severity: Severity::High,
    summary: "the shard index is not valid JSON with a `weight_map` of tensor names to file names",
    fix: "regenerate the index from the shards; loaders refuse it",
};
pub static INDEX_PATH_ESCAPE: Rule = Rule {
    code: "safetensors/index-path-escape",
    severity: Severity::Critical,
    summary: "the shard index names a file outside the model folder (absolute path or `..`)",
    fix: "treat the model as hostile: loaders would read whatever file the index points to",
};
pub static INDEX_DUPLICATE_ENTRY: Rule = Rule {
    code: "safetensors/index-duplicate-entry",
    severity: Severity::High,
    summary: "a key appears twice in the shard index; JSON parsers keep different ones",
    fix: "regenerate the index from the shards; treat the folder as tampered with",
};

pub static INDEX_RULES: &[&Rule] = &[
    &INDEX_MISSING_TENSOR,
    &INDEX_UNLISTED_TENSOR,
    &INDEX_MISSING_SHARD,
    &INDEX_ORPHAN_SHARD,
    &DUPLICATE_ACROSS_SHARDS,
    &INDEX_SIZE_MISMATCH,
    &INDEX_BAD,
    &INDEX_PATH_ESCAPE,
    &INDEX_DUPLICATE_ENTRY,
];

/// The two kinds of index this module knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IndexKind {
    Safetensors,
    PytorchBin,
}

fn index_kind(name: &str) -> Option<(IndexKind, &str)> {
    if let Some(p) = name.strip_suffix(".safetensors.index.json") {
        Some((IndexKind::Safetensors, p))
    } else if let Some(p) = name.strip_suffix(".bin.index.json") {
        Some((IndexKind::PytorchBin, p))
    } else {
        None
    }
}

/// Checks every shard index of the folder against the shards; returns the facts of the main one.
pub fn check_index(set: &FileSet, tensors: &BTreeMap<String, Vec<TensorInfo>>, sink: &mut Sink) -> Option<ShardIndexFacts> {
    let mut all: Vec<(u8, ShardIndexFacts)> = Vec::new();
    for f in &set.files {
        let Some((kind, prefix)) = index_kind(f.name()) else { continue };
        let bytes = match set.read_small(f, limits::MAX_JSON_BYTES) {
            Ok(b) => b,
            Err(e) => {
                sink.fail(&f.rel, format!("cannot read the shard index: {e}"));
                continue;
            }
        };
        let before = sink.findings.len();
        let mut facts = check_one(set, f, kind, prefix, &bytes, tensors, sink);
        facts.consistent = sink.findings.len() == before;
        let rank = match (kind, f.rel.as_str()) {
            (IndexKind::Safetensors, "model.safetensors.index.json") => 0,
            (IndexKind::Safetensors, _) => 1,
            (IndexKind::PytorchBin, _) => 2,
        };
        all.push((rank, facts));
    }
    all.sort_by_key(|(r, _)| *r);
    all.into_iter().next().map(|(_, f)| f)
}

fn dir_of(rel: &str) -> &str {
    rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

/// Whether a shard name stays inside the folder.
fn escapes(name: &str) -> bool {
    name.is_empty()
        || name.starts_with('/')
        || name.starts_with('\\')
        || name.contains('\0')
        || name.as_bytes().get(1) == Some(&b':')
        || name.split(['/', '\\']).any(|c| c == "..")
}

fn tensor_bytes(t: &TensorInfo) -> Option<u64> {
    let bits = dtype_bits(&t.dtype)?;
    t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?.checked_mul(bits).map(|b| b / 8)
}

fn check_one(
    set: &FileSet,
    index: &FileEntry,
    kind: IndexKind,
    prefix: &str,
    bytes: &[u8],
    tensors: &BTreeMap<String, Vec<TensorInfo>>,
    sink: &mut Sink,
) -> ShardIndexFacts {
    let file = index.rel.as_str();
    let mut facts = ShardIndexFacts { index_file: file.to_string(), ..Default::default() };
    let parsed = match parse_index(bytes) {
        Ok(p) => p,
        Err(e) => {
            sink.push(INDEX_BAD.finding(format!("the shard index cannot be read: {e}")).file(file));
            return facts;
        }
    };
    let mut out = Capped::new(sink);
    for k in &parsed.duplicate_keys {
        out.push(
            INDEX_DUPLICATE_ENTRY
                .finding(format!("key `{k}` appears more than once in the shard index"))
                .file(file)
                .at(format!("key {k}"))
                .evidence(format!("\"{k}\" repeated")),
        );
    }
    if let Some(p) = &parsed.problem {
        out.push(INDEX_BAD.finding(format!("the shard index is malformed: {p}")).file(file));
    }
    let dir = dir_of(file);
    // Shard name (as written) -> rel path, for names that stay inside.
    let mut shards: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for (_, shard) in &parsed.weight_map {
        if shards.contains_key(shard.as_str()) {
            continue;
        }
        if escapes(shard) {
            out.push(
                INDEX_PATH_ESCAPE
                    .finding(format!("the index names shard `{shard}`, outside the model folder"))
                    .file(file)
                    .evidence(format!("\"…\": \"{shard}\"")),
            );
            shards.insert(shard, None);
            continue;
        }
        let rel = join(dir, shard);
        if set.get(&rel).is_none() {
            out.push(
                INDEX_MISSING_SHARD
                    .finding(format!("the index names shard `{shard}`, which is not in the folder"))
                    .file(file)
                    .evidence(format!("\"…\": \"{shard}\"")),
            );
            shards.insert(shard, None);
            continue;
        }
        shards.insert(shard, Some(rel));
    }
    facts.shards = shards.keys().map(|s| s.to_string()).collect();
    facts.tensors = parsed.weight_map.len() as u64;

    // Orphans: weight files next to the index, named like its shards, that it does not name.
    let listed: HashSet<&str> = shards.values().flatten().map(|s| s.as_str()).collect();
    for f in &set.files {
        if dir_of(&f.rel) != dir || listed.contains(f.rel.as_str()) || f.rel == index.rel {
            continue;
        }
        let name = f.name();
        let named_like_shard = name.strip_prefix(prefix).is_some_and(|r| r.starts_with('-') || r.starts_with('.'));
        let is_weights = match kind {
            IndexKind::Safetensors => f.format == Format::Safetensors || name.ends_with(".safetensors"),
            IndexKind::PytorchBin => name.ends_with(".bin") && index_kind(name).is_none(),
        };
        if named_like_shard && is_weights {
            out.push(
                INDEX_ORPHAN_SHARD
                    .finding(format!("`{}` is not named by `{file}`", f.rel))
                    .file(f.rel.clone())
                    .evidence(format!("{} ({} bytes) not in the index", f.rel, f.size)),
            );
        }
    }

    if kind == IndexKind::Safetensors {
        // Where each tensor actually is, among the shards the index names.
        let mut found_in: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut all_parsed = true;
        let mut sum = 0u64;
        for (shard, rel) in &shards {
            let Some(rel) = rel else {
                all_parsed = false;
                continue;
            };
            let Some(ts) = tensors.get(rel) else {
                all_parsed = false;
                continue;
            };
            for t in ts {
                found_in.entry(t.name.as_str()).or_default().push(shard);
                sum = sum.saturating_add(tensor_bytes(t).unwrap_or(0));
            }
        }
        let mut indexed: BTreeSet<&str> = BTreeSet::new();
        for (tensor, shard) in &parsed.weight_map {
            indexed.insert(tensor);
            let Some(Some(rel)) = shards.get(shard.as_str()) else { continue };
            let Some(ts) = tensors.get(rel) else { continue };
            if !ts.iter().any(|t| &t.name == tensor) {
                let elsewhere = found_in.get(tensor.as_str()).map(|v| format!(" (it is in {})", v.join(", "))).unwrap_or_default();
                out.push(
                    INDEX_MISSING_TENSOR
                        .finding(format!("the index puts `{tensor}` in `{shard}`, which does not contain it{elsewhere}"))
                        .file(file)
                        .at(format!("weight_map {tensor}"))
                        .evidence(format!("\"{tensor}\": \"{shard}\"")),
                );
            }
        }
        for (tensor, where_) in &found_in {
            if where_.len() > 1 {
                out.push(
                    DUPLICATE_ACROSS_SHARDS
                        .finding(format!("tensor `{tensor}` is stored in {} shards: {}", where_.len(), where_.join(", ")))
                        .file(file)
                        .at(format!("tensor {tensor}"))
                        .evidence(where_.join(", ")),
                );
            } else if !indexed.contains(tensor) {
                out.push(
                    INDEX_UNLISTED_TENSOR
                        .finding(format!("shard `{}` holds `{tensor}`, which the index does not list", where_.join(", ")))
                        .file(file)
                        .at(format!("tensor {tensor}"))
                        .evidence(format!("{tensor} in {}", where_.join(", "))),
                );
            }
        }
        if let (Some(total), true) = (parsed.total_size, all_parsed) {
            if total != sum {
                out.push(
                    INDEX_SIZE_MISMATCH
                        .finding(format!("`metadata.total_size` is {total} but the shards' tensors take {sum} bytes"))
                        .file(file)
                        .at("metadata.total_size")
                        .evidence(format!("total_size {total}, tensors {sum}")),
                );
            }
        }
    }
    out.finish();
    facts
}

/// An index as written: every weight_map entry in order, duplicates included.
#[derive(Debug, Default)]
struct Index {
    weight_map: Vec<(String, String)>,
    total_size: Option<u64>,
    duplicate_keys: Vec<String>,
    problem: Option<String>,
}

fn parse_index(bytes: &[u8]) -> Result<Index, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 (byte {})", e.valid_up_to()))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let idx = de.deserialize_map(IndexVisitor).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    if idx.weight_map.is_empty() && idx.problem.is_none() {
        return Ok(Index { problem: Some("no `weight_map` entries".into()), ..idx });
    }
    Ok(idx)
}

struct IndexVisitor;

impl<'de> Visitor<'de> for IndexVisitor {
    type Value = Index;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with `weight_map`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Index, A::Error> {
        let mut idx = Index::default();
        let mut seen_top: HashSet<String> = HashSet::new();
        let mut seen_tensors: HashSet<String> = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if !seen_top.insert(k.clone()) {
                idx.duplicate_keys.push(k.clone());
            }
            match k.as_str() {
                "weight_map" => {
                    let wm: WeightMap = map.next_value()?;
                    if let Some(kind) = wm.not_object {
                        idx.problem = Some(format!("`weight_map` is {kind}, not an object"));
                    }
                    for (t, s) in wm.entries {
                        if !seen_tensors.insert(t.clone()) {
                            idx.duplicate_keys.push(format!("weight_map.{t}"));
                        }
                        match s {
                            Ok(s) => idx.weight_map.push((t, s)),
                            Err(kind) => {
                                idx.problem.get_or_insert_with(|| format!("`weight_map` value for `{t}` is {kind}, not a file name"));
                            }
                        }
                    }
                }
                "metadata" => {
                    let m: IndexMeta = map.next_value()?;
                    idx.total_size = m.total_size;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(idx)
    }
}

#[derive(Default)]
struct WeightMap {
    entries: Vec<(String, Result<String, &'static str>)>,
    not_object: Option<&'static str>,
}

struct WeightMapVisitor;

impl<'de> Visitor<'de> for WeightMapVisitor {
    type Value = WeightMap;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of tensor names to file names")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WeightMap, A::Error> {
        let mut wm = WeightMap::default();
        while let Some(k) = map.next_key::<String>()? {
            if wm.entries.len() as u64 >= limits::MAX_TENSORS {
                return Err(de::Error::custom(format!("more than {} entries", limits::MAX_TENSORS)));
            }
            let v: StrOr = map.next_value()?;
            wm.entries.push((k, v.0));
        }
        Ok(wm)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WeightMap, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(WeightMap { not_object: Some("an array"), ..Default::default() })
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<WeightMap, E> {
        Ok(WeightMap { not_object: Some("a string"), ..Default::default() })
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<WeightMap, E> {
        Ok(WeightMap { not_object: Some("a number"), ..Default::default() })
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<WeightMap, E> {
        Ok(WeightMap { not_object: Some("a number"), ..Default::default() })
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<WeightMap, E> {
        Ok(WeightMap { not_object: Some("a number"), ..Default::default() })
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<WeightMap, E> {
        Ok(WeightMap { not_object: Some("a boolean"), ..Default::default() })
    }
    fn visit_unit<E: de::Error>(self) -> Result<WeightMap, E> {
        Ok(WeightMap { not_object: Some("null"), ..Default::default() })
    }
}

impl<'de> de::Deserialize<'de> for WeightMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<WeightMap, D::Error> {
        d.deserialize_any(WeightMapVisitor)
    }
}

/// A string, or the kind of the value that is not one (nested values are skipped, not kept).
struct StrOr(Result<String, &'static str>);

struct StrOrVisitor;

impl<'de> Visitor<'de> for StrOrVisitor {
    type Value = StrOr;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOr, E> {
        Ok(StrOr(Ok(v.to_string())))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<StrOr, E> {
        Ok(StrOr(Err("a number")))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<StrOr, E> {
        Ok(StrOr(Err("a number")))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<StrOr, E> {
        Ok(StrOr(Err("a number")))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<StrOr, E> {
        Ok(StrOr(Err("a boolean")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<StrOr, E> {
        Ok(StrOr(Err("null")))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrOr, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(StrOr(Err("an array")))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrOr, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(StrOr(Err("an object")))
    }
}

impl<'de> de::Deserialize<'de> for StrOr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrOr, D::Error> {
        d.deserialize_any(StrOrVisitor)
    }
}

/// `metadata`: only `total_size` is kept.
struct IndexMeta {
    total_size: Option<u64>,
}

struct IndexMetaVisitor;

impl<'de> Visitor<'de> for IndexMetaVisitor {
    type Value = IndexMeta;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IndexMeta, A::Error> {
        let mut m = IndexMeta { total_size: None };
        while let Some(k) = map.next_key::<String>()? {
            if k == "total_size" {
                m.total_size = map.next_value::<SizeValue>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(m)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IndexMeta, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(IndexMeta { total_size: None })
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<IndexMeta, E> {
        Ok(IndexMeta { total_size: None })
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<IndexMeta, E> {
        Ok(IndexMeta { total_size: None })
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<IndexMeta, E> {
        Ok(IndexMeta { total_size: None })
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<IndexMeta, E> {
        Ok(IndexMeta { total_size: None })
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<IndexMeta, E> {
        Ok(IndexMeta { total_size: None })
    }
    fn visit_unit<E: de::Error>(self) -> Result<IndexMeta, E> {
        Ok(IndexMeta { total_size: None })
    }
}

impl<'de> de::Deserialize<'de> for IndexMeta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IndexMeta, D::Error> {
        d.deserialize_any(IndexMetaVisitor)
    }
}

/// A non-negative integer (also written as a float, as some tools do), else nothing.
struct SizeValue(Option<u64>);

impl<'de> de::Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SizeValue, D::Error> {
        let v: StrOrNum = de::Deserialize::deserialize(d)?;
        Ok(SizeValue(v.0))
    }
}

struct StrOrNum(Option<u64>);

struct NumVisitor;

impl<'de> Visitor<'de> for NumVisitor {
    type Value = StrOrNum;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrOrNum, E> {
        Ok(StrOrNum(Some(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrOrNum, E> {
        Ok(StrOrNum(u64::try_from(v).ok()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrOrNum, E> {
        Ok(StrOrNum((v >= 0.0 && v.fract() == 0.0 && v < 1.8e19).then_some(v as u64)))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<StrOrNum, E> {
        Ok(StrOrNum(None))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<StrOrNum, E> {
        Ok(StrOrNum(None))
    }
    fn visit_unit<E: de::Error>(self) -> Result<StrOrNum, E> {
        Ok(StrOrNum(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrOrNum, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(StrOrNum(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrOrNum, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(StrOrNum(None))
    }
}

impl<'de> de::Deserialize<'de> for StrOrNum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrOrNum, D::Error> {
        d.deserialize_any(NumVisitor)
    }
}

/// Suffixes of input embedding matrices, most specific first.
const EMBEDDING_SUFFIXES: &[&str] =
    &["embed_tokens.weight", "tok_embeddings.weight", "word_embeddings.weight", "wte.weight", "embed_in.weight", "token_embd.weight"];

/// Rows of the input embedding matrix, when a tensor that is clearly one is present.
///
/// Hugging Face stores it as `[vocab, hidden]`; GGUF's `token_embd.weight` lists dimensions in
/// ggml order (`[hidden, vocab]`), so its rows are the second dimension.
pub fn embedding_rows(tensors: &BTreeMap<String, Vec<TensorInfo>>) -> Option<u64> {
    let mut best: Option<(usize, usize, u64)> = None; // (suffix rank, name length, rows)
    for ts in tensors.values() {
        for t in ts {
            if t.shape.len() != 2 || t.name.contains("lora_") {
                continue;
            }
            let Some(rank) = EMBEDDING_SUFFIXES.iter().position(|s| t.name == *s || t.name.ends_with(&format!(".{s}"))) else {
                continue;
            };
            let rows = if EMBEDDING_SUFFIXES[rank] == "token_embd.weight" { t.shape[1] } else { t.shape[0] };
            let key = (rank, t.name.len(), rows);
            if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
                best = Some(key);
            }
        }
    }
    best.map(|b| b.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_that_leave_the_folder() {
        for bad in ["../x.safetensors", "/etc/passwd", "a/../../b", "C:\\x", "..\\x", "", "a\0b"] {
            assert!(escapes(bad), "{bad:?}");
        }
        for ok in ["model-00001-of-00002.safetensors", "sub/model.safetensors", "..model.safetensors"] {
            assert!(!escapes(ok), "{ok:?}");
        }
    }

    #[test]
    fn index_json_keeps_duplicates_and_problems() {
        let i = parse_index(br#"{"metadata":{"total_size":16.0},"weight_map":{"a":"s1","a":"s2","b":3}}"#).unwrap();
        assert_eq!(i.total_size, Some(16));
        assert_eq!(i.weight_map, vec![("a".to_string(), "s1".to_string()), ("a".to_string(), "s2".to_string())]);
        assert_eq!(i.duplicate_keys, ["weight_map.a"]);
        assert!(i.problem.as_deref().unwrap_or("").contains("`b`"));
        assert!(parse_index(b"[1,2]").is_err());
        assert!(parse_index(br#"{"weight_map": {"a": "s"}"#).is_err());
        let i = parse_index(br#"{"weight_map": [1]}"#).unwrap();
        assert!(i.problem.is_some());
        let i = parse_index(br#"{"metadata": {}}"#).unwrap();
        assert!(i.problem.is_some());
    }

    #[test]
    fn index_kinds() {
        assert_eq!(index_kind("model.safetensors.index.json"), Some((IndexKind::Safetensors, "model")));
        assert_eq!(index_kind("diffusion_pytorch_model.safetensors.index.json"), Some((IndexKind::Safetensors, "diffusion_pytorch_model")));
        assert_eq!(index_kind("pytorch_model.bin.index.json"), Some((IndexKind::PytorchBin, "pytorch_model")));
        assert_eq!(index_kind("config.json"), None);
    }
}
