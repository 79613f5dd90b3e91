//! GGUF: header, metadata and tensor infos under hard limits.
//!
//! Layout (v2/v3; v1 uses 32-bit counts and string lengths): magic `GGUF`, u32 version,
//! u64 tensor count, u64 metadata count, the metadata key/values, the tensor infos (name,
//! n_dims, dims, ggml type, offset), padding to `general.alignment` (default 32), then the tensor
//! data. Every count and length is checked against the bytes that remain before anything is
//! allocated, so a declared count of 2^63 costs nothing. Tensor data is never read.

use crate::inspect::{Capped, FileCtx, Sink};
use crate::inventory::{ModelFacts, TensorInfo};
use crate::limits;
use needle_report::{Rule, Severity};
use std::collections::{BTreeMap, HashSet};

pub static BAD_MAGIC: Rule = Rule {
    code: "gguf/bad-magic",
    severity: Severity::High,
    summary: "a file named .gguf does not start with the GGUF magic",
    fix: "find out what the file really is; loaders refuse it as GGUF",
};
pub static UNSUPPORTED_VERSION: Rule = Rule {
    code: "gguf/unsupported-version",
    severity: Severity::High,
    summary: "the GGUF version is not 1, 2 or 3",
    fix: "convert the model again with a current llama.cpp; this file cannot be checked or loaded",
};
pub static LEGACY_VERSION: Rule = Rule {
    code: "gguf/legacy-version",
    severity: Severity::Low,
    summary: "GGUF version 1, which current loaders no longer read",
    fix: "convert the model again with a current llama.cpp",
};
pub static BIG_ENDIAN: Rule = Rule {
    code: "gguf/big-endian",
    severity: Severity::Low,
    summary: "a big-endian GGUF file; most loaders read only little-endian ones and misread this",
    fix: "use the little-endian conversion of the model",
};
pub static TRUNCATED: Rule = Rule {
    code: "gguf/truncated",
    severity: Severity::High,
    summary: "the header, metadata or tensor infos run past the end of the file",
    fix: "download the file again and compare its hash with the publisher's",
};
pub static IMPLAUSIBLE_COUNT: Rule = Rule {
    code: "gguf/implausible-count",
    severity: Severity::High,
    summary: "a count or length is larger than the whole file could hold (a crafted header)",
    fix: "treat the file as hostile; loaders that trust the count allocate or read out of bounds",
};
pub static BAD_VALUE_TYPE: Rule = Rule {
    code: "gguf/bad-value-type",
    severity: Severity::High,
    summary: "a metadata value has an unknown type, so the rest of the file cannot be read",
    fix: "convert the model again with a current llama.cpp",
};
pub static NESTING_TOO_DEEP: Rule = Rule {
    code: "gguf/nesting-too-deep",
    severity: Severity::High,
    summary: "metadata arrays are nested deeper than any real model needs",
    fix: "treat the file as hostile; deep nesting targets recursive parsers",
};
pub static BAD_STRING: Rule = Rule {
    code: "gguf/bad-string",
    severity: Severity::Medium,
    summary: "a metadata key, string value or tensor name is not valid UTF-8",
    fix: "convert the model again; loaders may read the name differently",
};
pub static DUPLICATE_KEY: Rule = Rule {
    code: "gguf/duplicate-key",
    severity: Severity::High,
    summary: "a metadata key appears twice; loaders disagree on which value wins",
    fix: "treat the file as tampered with; convert the model again from a trusted source",
};
pub static DUPLICATE_TENSOR: Rule = Rule {
    code: "gguf/duplicate-tensor",
    severity: Severity::High,
    summary: "two tensor infos have the same name",
    fix: "treat the file as tampered with; convert the model again from a trusted source",
};
pub static BAD_ALIGNMENT: Rule = Rule {
    code: "gguf/bad-alignment",
    severity: Severity::High,
    summary: "`general.alignment` is not a power-of-two u32",
    fix: "convert the model again; loaders refuse or misplace every tensor",
};
pub static BAD_TENSOR_INFO: Rule = Rule {
    code: "gguf/bad-tensor-info",
    severity: Severity::High,
    summary: "a tensor info is malformed (too many dimensions, a size that overflows, a row not a whole number of blocks, a name too long)",
    fix: "convert the model again; loaders refuse the file or compute wrong sizes",
};
pub static UNKNOWN_TENSOR_TYPE: Rule = Rule {
    code: "gguf/unknown-tensor-type",
    severity: Severity::Medium,
    summary: "a tensor has a ggml type needle does not know, so its size cannot be checked",
    fix: "check that the file comes from a current llama.cpp; older loaders refuse it",
};
pub static MISALIGNED_TENSOR: Rule = Rule {
    code: "gguf/misaligned-tensor",
    severity: Severity::High,
    summary: "a tensor's data offset is not a multiple of the alignment",
    fix: "convert the model again; loaders refuse the file",
};
pub static TENSOR_OUT_OF_BOUNDS: Rule = Rule {
    code: "gguf/tensor-out-of-bounds",
    severity: Severity::High,
    summary: "a tensor's data runs past the end of the file",
    fix: "download the file again; a loader that trusts the offset reads out of bounds",
};
pub static OVERLAPPING: Rule = Rule {
    code: "gguf/overlapping-tensors",
    severity: Severity::High,
    summary: "two tensors share bytes of the data section",
    fix: "convert the model again; aliased tensors mean the file was crafted",
};
pub static GAP: Rule = Rule {
    code: "gguf/gap-between-tensors",
    severity: Severity::High,
    summary: "bytes of the data section beyond alignment padding belong to no tensor (room for a hidden payload)",
    fix: "convert the model again and find out what the unused bytes hold",
};
pub static TRAILING: Rule = Rule {
    code: "gguf/trailing-bytes",
    severity: Severity::Medium,
    summary: "bytes follow the last tensor's data (an appended payload or a polyglot file)",
    fix: "find out what the appended bytes hold; a clean conversion ends with the last tensor",
};

pub static RULES: &[&Rule] = &[
    &BAD_MAGIC,
    &UNSUPPORTED_VERSION,
    &LEGACY_VERSION,
    &BIG_ENDIAN,
    &TRUNCATED,
    &IMPLAUSIBLE_COUNT,
    &BAD_VALUE_TYPE,
    &NESTING_TOO_DEEP,
    &BAD_STRING,
    &DUPLICATE_KEY,
    &DUPLICATE_TENSOR,
    &BAD_ALIGNMENT,
    &BAD_TENSOR_INFO,
    &UNKNOWN_TENSOR_TYPE,
    &MISALIGNED_TENSOR,
    &TENSOR_OUT_OF_BOUNDS,
    &OVERLAPPING,
    &GAP,
    &TRAILING,
];

/// Default `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's limit on tensor name length (GGML_MAX_NAME, terminator included).
pub const MAX_TENSOR_NAME: usize = 64;

/// `(name, elements per block, bytes per block)` of a ggml type id, from ggml's type traits.
pub fn ggml_type(id: u32) -> Option<(&'static str, u64, u64)> {
    Some(match id {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        16 => ("IQ2_XXS", 256, 66),
        17 => ("IQ2_XS", 256, 74),
        18 => ("IQ3_XXS", 256, 98),
        19 => ("IQ1_S", 256, 50),
        20 => ("IQ4_NL", 32, 18),
        21 => ("IQ3_S", 256, 110),
        22 => ("IQ2_S", 256, 82),
        23 => ("IQ4_XS", 256, 136),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        29 => ("IQ1_M", 256, 56),
        30 => ("BF16", 1, 2),
        34 => ("TQ1_0", 256, 54),
        35 => ("TQ2_0", 256, 66),
        39 => ("MXFP4", 32, 17),
        _ => return None,
    })
}

/// llama.cpp's `general.file_type` (llama_ftype) names.
pub fn file_type_name(v: u64) -> Option<&'static str> {
    Some(match v {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        4 => "Q4_1_SOME_F16",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

/// What a GGUF file holds, from its header.
#[derive(Debug, Clone, Default)]
pub struct GgufFacts {
    pub version: u32,
    pub big_endian: bool,
    pub tensors: Vec<TensorInfo>,
    pub architecture: Option<String>,
    pub file_type: Option<String>,
    pub name: Option<String>,
    pub alignment: u64,
    pub metadata_count: u64,
    /// `(metadata key, template source)` for `tokenizer.chat_template` and named variants.
    pub chat_templates: Vec<(String, String)>,
    /// `{arch}.embedding_length`, `{arch}.block_count`, number of `tokenizer.ggml.tokens`.
    pub hidden_size: Option<u64>,
    pub num_layers: Option<u64>,
    pub vocab_size: Option<u64>,
}

impl GgufFacts {
    pub fn detail(&self) -> String {
        let mut s = format!("GGUF v{}, {} tensors", self.version, self.tensors.len());
        if let Some(a) = &self.architecture {
            s.push_str(&format!(", {a}"));
        }
        if let Some(q) = &self.file_type {
            s.push_str(&format!(", {q}"));
        }
        if self.big_endian {
            s.push_str(", big-endian");
        }
        s
    }
    pub fn model_facts(&self) -> Option<ModelFacts> {
        self.architecture.as_ref().map(|a| ModelFacts {
            model_type: Some(a.clone()),
            quantization: self.file_type.clone(),
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            vocab_size: self.vocab_size,
            ..Default::default()
        })
    }
}

/// Why reading stopped early.
enum Stop {
    /// Ran out of bytes reading `what`.
    Truncated(String),
    /// A finding that makes the rest unreadable.
    Fatal(&'static Rule, String),
    /// Over one of needle's limits: not examined.
    Limit(String),
}

struct Reader<'a> {
    d: &'a [u8],
    pos: usize,
    be: bool,
    v1: bool,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.d.len() - self.pos) as u64
    }
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], Stop> {
        if n > self.remaining() {
            return Err(Stop::Truncated(format!("{what} at byte {} needs {n} bytes, {} remain", self.pos, self.remaining())));
        }
        let n = n as usize; // <= remaining, which fits usize
        let s = &self.d[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn skip(&mut self, n: u64, what: &str) -> Result<(), Stop> {
        self.take(n, what).map(|_| ())
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Stop> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32, Stop> {
        let a = self.arr::<4>(what)?;
        Ok(if self.be { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) })
    }
    fn u64(&mut self, what: &str) -> Result<u64, Stop> {
        let a = self.arr::<8>(what)?;
        Ok(if self.be { u64::from_be_bytes(a) } else { u64::from_le_bytes(a) })
    }
    /// A count or length: u32 in v1, u64 later.
    fn len(&mut self, what: &str) -> Result<u64, Stop> {
        if self.v1 { self.u32(what).map(u64::from) } else { self.u64(what) }
    }
    fn string(&mut self, what: &str) -> Result<&'a [u8], Stop> {
        let at = self.pos;
        let n = self.len(what)?;
        if n > self.d.len() as u64 {
            return Err(Stop::Fatal(
                &IMPLAUSIBLE_COUNT,
                format!("{what} at byte {at} declares {n} bytes, more than the whole {} byte file", self.d.len()),
            ));
        }
        if n > self.remaining() {
            return Err(Stop::Truncated(format!("{what} at byte {at} declares {n} bytes, {} remain", self.remaining())));
        }
        if n > limits::MAX_GGUF_STRING {
            return Err(Stop::Limit(format!("{what} at byte {at} is {n} bytes, over needle's {} byte limit", limits::MAX_GGUF_STRING)));
        }
        self.take(n, what)
    }
    /// Checks that `count` items of at least `min` bytes each can fit in what remains.
    fn plausible(&self, count: u64, min: u64, what: &str, at: usize) -> Result<(), Stop> {
        let need = count.saturating_mul(min);
        if need > self.d.len() as u64 {
            return Err(Stop::Fatal(
                &IMPLAUSIBLE_COUNT,
                format!("{what} at byte {at} is {count}, but the whole {} byte file holds at most {}", self.d.len(), self.d.len() as u64 / min.max(1)),
            ));
        }
        if need > self.remaining() {
            return Err(Stop::Truncated(format!("{what} at byte {at} is {count}; the {} remaining bytes hold at most {}", self.remaining(), self.remaining() / min.max(1))));
        }
        Ok(())
    }
}

/// Fixed size of a scalar metadata type, `None` for string/array, `Err` for unknown.
fn scalar_size(t: u32) -> Result<Option<u64>, ()> {
    match t {
        0 | 1 | 7 => Ok(Some(1)),
        2 | 3 => Ok(Some(2)),
        4..=6 => Ok(Some(4)),
        10..=12 => Ok(Some(8)),
        8 | 9 => Ok(None),
        _ => Err(()),
    }
}

/// A metadata value as far as we keep it.
enum Value<'a> {
    Int(u64),
    /// Other scalars (floats, negative numbers, booleans): not kept.
    Scalar,
    Str(&'a [u8]),
    Array { len: u64 },
}

fn type_name(t: u32) -> &'static str {
    match t {
        0 => "uint8",
        1 => "int8",
        2 => "uint16",
        3 => "int16",
        4 => "uint32",
        5 => "int32",
        6 => "float32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "uint64",
        11 => "int64",
        12 => "float64",
        _ => "unknown",
    }
}

struct Walker<'a, 'b> {
    r: Reader<'a>,
    budget: u64,
    bad_strings: &'b mut Vec<String>,
}

impl<'a> Walker<'a, '_> {
    fn value(&mut self, t: u32, depth: usize, key: &str) -> Result<Value<'a>, Stop> {
        self.budget = self.budget.checked_sub(1).ok_or_else(|| {
            Stop::Limit(format!("more than {} metadata values, over needle's limit", limits::MAX_GGUF_VALUES))
        })?;
        let at = self.r.pos;
        match scalar_size(t) {
            Err(()) => Err(Stop::Fatal(&BAD_VALUE_TYPE, format!("value of `{key}` at byte {at} has unknown type {t}"))),
            Ok(Some(n)) => {
                let b = self.r.take(n, "a metadata value")?;
                let unsigned = match (t, n) {
                    (0, _) => Some(u64::from(b[0])),
                    (2, _) => Some(u64::from(if self.r.be { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) })),
                    (4, _) => {
                        let a = [b[0], b[1], b[2], b[3]];
                        Some(u64::from(if self.r.be { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }))
                    }
                    (5, _) => {
                        let a = [b[0], b[1], b[2], b[3]];
                        let v = if self.r.be { i32::from_be_bytes(a) } else { i32::from_le_bytes(a) };
                        u64::try_from(v).ok()
                    }
                    (10, _) | (11, _) => {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(b);
                        let v = if self.r.be { u64::from_be_bytes(a) } else { u64::from_le_bytes(a) };
                        if t == 11 { u64::try_from(v as i64).ok() } else { Some(v) }
                    }
                    _ => None,
                };
                Ok(unsigned.map(Value::Int).unwrap_or(Value::Scalar))
            }
            Ok(None) if t == 8 => {
                let s = self.r.string("a string value")?;
                if std::str::from_utf8(s).is_err() && self.bad_strings.len() < limits::MAX_FINDINGS_PER_CODE {
                    self.bad_strings.push(format!("value of `{key}` at byte {at}"));
                }
                Ok(Value::Str(s))
            }
            Ok(None) => {
                let et = self.r.u32("an array element type")?;
                let count_at = self.r.pos;
                let count = self.r.len("an array length")?;
                match scalar_size(et) {
                    Err(()) => Err(Stop::Fatal(&BAD_VALUE_TYPE, format!("array `{key}` at byte {at} has unknown element type {et}"))),
                    Ok(Some(n)) => {
                        self.r.plausible(count, n, &format!("the length of array `{key}`"), count_at)?;
                        self.r.skip(count * n, "array elements")?; // count*n <= remaining
                        Ok(Value::Array { len: count })
                    }
                    Ok(None) => {
                        if et == 9 && depth + 1 >= limits::MAX_GGUF_ARRAY_DEPTH {
                            return Err(Stop::Fatal(
                                &NESTING_TOO_DEEP,
                                format!("array `{key}` at byte {at} nests arrays more than {} deep", limits::MAX_GGUF_ARRAY_DEPTH),
                            ));
                        }
                        let min = if et == 8 { if self.r.v1 { 4 } else { 8 } } else { 4 + if self.r.v1 { 4 } else { 8 } };
                        self.r.plausible(count, min, &format!("the length of array `{key}`"), count_at)?;
                        if count > limits::MAX_GGUF_ARRAY_LEN {
                            return Err(Stop::Limit(format!("array `{key}` has {count} elements, over needle's limit")));
                        }
                        for _ in 0..count {
                            self.value(et, depth + 1, key)?;
                        }
                        Ok(Value::Array { len: count })
                    }
                }
            }
        }
    }
}

/// Inspects a file detected as GGUF (or named `.gguf`). Returns `None` when not even the header
/// could be read.
pub fn inspect(ctx: &FileCtx, sink: &mut Sink) -> Option<GgufFacts> {
    let file = ctx.rel;
    let d = ctx.data;
    if d.len() < 4 || &d[..4] != b"GGUF" {
        let head: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
        sink.push(
            BAD_MAGIC
                .finding(format!("{file} does not start with `GGUF`"))
                .file(file)
                .at("bytes 0..4")
                .evidence(format!("first bytes: {head}")),
        );
        return None;
    }
    let mut r = Reader { d, pos: 4, be: false, v1: false };
    let version = match r.u32("the version") {
        Ok(v) => v,
        Err(_) => {
            sink.push(TRUNCATED.finding(format!("{file} ends inside the GGUF header")).file(file));
            return None;
        }
    };
    let mut facts = GgufFacts { version, alignment: DEFAULT_ALIGNMENT, ..Default::default() };
    if !(1..=3).contains(&version) {
        let swapped = version.swap_bytes();
        if (1..=3).contains(&swapped) {
            r.be = true;
            facts.version = swapped;
            facts.big_endian = true;
            sink.push(
                BIG_ENDIAN
                    .finding(format!("{file} is a big-endian GGUF v{swapped}"))
                    .file(file)
                    .at("bytes 4..8")
                    .evidence(format!("version bytes {:02x?}", &d[4..8])),
            );
        } else {
            sink.push(
                UNSUPPORTED_VERSION
                    .finding(format!("GGUF version {version} is not 1, 2 or 3"))
                    .file(file)
                    .at("bytes 4..8")
                    .evidence(format!("version {version} (bytes {:02x?})", &d[4..8])),
            );
            return None;
        }
    }
    if facts.version == 1 {
        r.v1 = true;
        sink.push(LEGACY_VERSION.finding(format!("{file} is GGUF version 1")).file(file).at("bytes 4..8"));
    }
    let mut out = Capped::new(sink);
    match read_body(&mut r, &mut facts, file, &mut out) {
        Ok(()) => {}
        Err(Stop::Truncated(what)) => out.push(TRUNCATED.finding(format!("the file ends early: {what}")).file(file)),
        Err(Stop::Fatal(rule, msg)) => out.push(rule.finding(msg).file(file)),
        Err(Stop::Limit(msg)) => out.fail(file, msg),
    }
    out.finish();
    Some(facts)
}

fn read_body(r: &mut Reader, facts: &mut GgufFacts, file: &str, out: &mut Capped) -> Result<(), Stop> {
    let (min_kv, min_ti) = if r.v1 { (4 + 4 + 1, 4 + 4 + 4 + 8) } else { (8 + 4 + 1, 8 + 4 + 4 + 8) };
    let n_tensors = r.len("the tensor count")?;
    let n_kv_at = r.pos;
    let n_kv = r.len("the metadata count")?;
    facts.metadata_count = n_kv;
    r.plausible(n_kv, min_kv, "the metadata count", n_kv_at)?;
    r.plausible(n_tensors, min_ti, "the tensor count", 8)?;
    if n_kv > limits::MAX_GGUF_KV {
        return Err(Stop::Limit(format!("{n_kv} metadata entries, over needle's limit of {}", limits::MAX_GGUF_KV)));
    }
    if n_tensors > limits::MAX_TENSORS {
        return Err(Stop::Limit(format!("{n_tensors} tensors, over needle's limit of {}", limits::MAX_TENSORS)));
    }

    let mut bad_strings: Vec<String> = Vec::new();
    let mut ints: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut alignment_value: Option<(u32, Option<u64>)> = None;
    let mut tokens_len: Option<u64> = None;
    {
        let mut w = Walker { r: Reader { d: r.d, pos: r.pos, be: r.be, v1: r.v1 }, budget: limits::MAX_GGUF_VALUES, bad_strings: &mut bad_strings };
        for _ in 0..n_kv {
            let key_at = w.r.pos;
            let key_bytes = w.r.string("a metadata key")?;
            let key = String::from_utf8_lossy(key_bytes).into_owned();
            if std::str::from_utf8(key_bytes).is_err() && w.bad_strings.len() < limits::MAX_FINDINGS_PER_CODE {
                w.bad_strings.push(format!("key at byte {key_at}"));
            }
            if !seen.insert(key_bytes) {
                out.push(
                    DUPLICATE_KEY
                        .finding(format!("metadata key `{key}` appears more than once"))
                        .file(file)
                        .at(format!("byte {key_at}"))
                        .evidence(&key),
                );
            }
            let t = w.r.u32("a metadata value type")?;
            let v = w.value(t, 0, &key)?;
            match (key.as_str(), &v) {
                ("general.alignment", Value::Int(n)) => alignment_value = Some((t, Some(*n))),
                ("general.alignment", _) => alignment_value = Some((t, None)),
                ("general.architecture", Value::Str(s)) => facts.architecture = Some(String::from_utf8_lossy(s).into_owned()),
                ("general.name", Value::Str(s)) => facts.name = Some(String::from_utf8_lossy(s).into_owned()),
                ("tokenizer.ggml.tokens", Value::Array { len }) => tokens_len = Some(*len),
                (k, Value::Str(s)) if k == "tokenizer.chat_template" || k.starts_with("tokenizer.chat_template.") => {
                    facts.chat_templates.push((key.clone(), String::from_utf8_lossy(s).into_owned()));
                }
                (_, Value::Int(n)) if ints.len() < 10_000 && key.len() < 256 => {
                    ints.insert(key.clone(), *n);
                }
                _ => {}
            }
        }
        r.pos = w.r.pos;
    }
    for b in &bad_strings {
        out.push(BAD_STRING.finding(format!("{b} is not valid UTF-8")).file(file));
    }
    if let Some(ft) = ints.get("general.file_type") {
        facts.file_type = Some(file_type_name(*ft).map(str::to_string).unwrap_or_else(|| format!("file_type {ft}")));
    }
    if let Some(a) = &facts.architecture {
        facts.hidden_size = ints.get(&format!("{a}.embedding_length")).copied();
        facts.num_layers = ints.get(&format!("{a}.block_count")).copied();
    }
    facts.vocab_size = tokens_len;
    match alignment_value {
        None => {}
        Some((4, Some(n))) if n > 0 && n.is_power_of_two() => facts.alignment = n,
        Some((t, n)) => {
            let shown = n.map(|n| n.to_string()).unwrap_or_else(|| "not a number".into());
            out.push(
                BAD_ALIGNMENT
                    .finding(format!("`general.alignment` is {shown} of type {}; it must be a power-of-two uint32", type_name(t)))
                    .file(file)
                    .at("general.alignment")
                    .evidence(format!("general.alignment = {shown} ({})", type_name(t))),
            );
        }
    }

    // Tensor infos.
    struct Ti {
        name: String,
        offset: u64,
        size: Option<u64>,
    }
    let mut infos: Vec<Ti> = Vec::new();
    let mut names: HashSet<&[u8]> = HashSet::new();
    for _ in 0..n_tensors {
        let at = r.pos;
        let name_bytes = r.string("a tensor name")?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        if std::str::from_utf8(name_bytes).is_err() {
            out.push(BAD_STRING.finding(format!("tensor name at byte {at} is not valid UTF-8")).file(file).evidence(&name));
        }
        if name_bytes.len() >= MAX_TENSOR_NAME {
            out.push(
                BAD_TENSOR_INFO
                    .finding(format!("tensor name is {} bytes; ggml allows {}", name_bytes.len(), MAX_TENSOR_NAME - 1))
                    .file(file)
                    .at(format!("byte {at}"))
                    .evidence(&name),
            );
        }
        if !names.insert(name_bytes) {
            out.push(
                DUPLICATE_TENSOR
                    .finding(format!("tensor `{name}` is described twice"))
                    .file(file)
                    .at(format!("tensor {name}"))
                    .evidence(&name),
            );
        }
        let n_dims = r.u32("a tensor's dimension count")?;
        if n_dims > 2 * limits::MAX_GGUF_DIMS {
            return Err(Stop::Fatal(
                &BAD_TENSOR_INFO,
                format!("tensor `{name}` declares {n_dims} dimensions (ggml allows {})", limits::MAX_GGUF_DIMS),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64("a tensor dimension")?);
        }
        let type_id = r.u32("a tensor type")?;
        let offset = r.u64("a tensor offset")?;
        let ty = ggml_type(type_id);
        let dtype = ty.map(|t| t.0.to_string()).unwrap_or_else(|| format!("type {type_id}"));
        let info = TensorInfo { name: name.clone(), dtype: dtype.clone(), shape: dims.clone() };
        let at_t = format!("tensor {name}");
        let evidence = format!("{name}: {dtype} {dims:?} at offset {offset}");
        if n_dims > limits::MAX_GGUF_DIMS {
            out.push(
                BAD_TENSOR_INFO
                    .finding(format!("tensor `{name}` has {n_dims} dimensions; ggml allows {}", limits::MAX_GGUF_DIMS))
                    .file(file)
                    .at(at_t.clone())
                    .evidence(&evidence),
            );
        }
        let elements = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&e| e <= i64::MAX as u64);
        let mut size = None;
        match (ty, elements) {
            (_, None) => out.push(
                BAD_TENSOR_INFO
                    .finding(format!("tensor `{name}`: the element count of {dims:?} overflows"))
                    .file(file)
                    .at(at_t.clone())
                    .evidence(&evidence),
            ),
            (None, Some(_)) => out.push(
                UNKNOWN_TENSOR_TYPE
                    .finding(format!("tensor `{name}` has ggml type {type_id}, unknown to needle"))
                    .file(file)
                    .at(at_t.clone())
                    .evidence(&evidence),
            ),
            (Some((tname, blck, tsize)), Some(e)) => {
                let row = dims.first().copied().unwrap_or(1);
                if row % blck != 0 {
                    out.push(
                        BAD_TENSOR_INFO
                            .finding(format!("tensor `{name}`: a row of {row} elements is not a whole number of {tname} blocks of {blck}"))
                            .file(file)
                            .at(at_t.clone())
                            .evidence(&evidence),
                    );
                } else {
                    size = (e / blck).checked_mul(tsize);
                    if size.is_none() {
                        out.push(
                            BAD_TENSOR_INFO
                                .finding(format!("tensor `{name}`: its byte size overflows"))
                                .file(file)
                                .at(at_t.clone())
                                .evidence(&evidence),
                        );
                    }
                }
            }
        }
        facts.tensors.push(info);
        infos.push(Ti { name, offset, size });
    }

    // Data section.
    let align = facts.alignment;
    let data_start = (r.pos as u64).div_ceil(align).saturating_mul(align);
    let file_len = r.d.len() as u64;
    let mut ranges: Vec<(u64, u64, usize)> = Vec::new();
    for (i, t) in infos.iter().enumerate() {
        if t.offset % align != 0 {
            out.push(
                MISALIGNED_TENSOR
                    .finding(format!("tensor `{}` starts at data offset {}, not a multiple of {align}", t.name, t.offset))
                    .file(file)
                    .at(format!("tensor {}", t.name))
                    .evidence(format!("offset {} % {align} = {}", t.offset, t.offset % align)),
            );
        }
        let Some(size) = t.size else { continue };
        let begin = data_start.checked_add(t.offset);
        let end = begin.and_then(|b| b.checked_add(size));
        match end {
            Some(e) if e <= file_len => ranges.push((t.offset, t.offset + size, i)),
            _ => out.push(
                TENSOR_OUT_OF_BOUNDS
                    .finding(format!(
                        "tensor `{}` ({size} bytes at data offset {}) runs past the end of the {file_len} byte file",
                        t.name, t.offset
                    ))
                    .file(file)
                    .at(format!("tensor {}", t.name))
                    .evidence(format!("data starts at {data_start}, offset {}, size {size}, file {file_len}", t.offset)),
            ),
        }
    }
    ranges.sort_unstable();
    let mut cursor = 0u64; // end of data so far, relative to data_start
    let mut owner: Option<usize> = None;
    for &(begin, end, i) in &ranges {
        let padded = cursor.div_ceil(align).saturating_mul(align);
        if begin < cursor {
            let other = owner.map(|o| infos[o].name.as_str()).unwrap_or("?");
            out.push(
                OVERLAPPING
                    .finding(format!("tensor `{}` (data bytes {begin}..{end}) overlaps `{other}` (ending at {cursor})", infos[i].name))
                    .file(file)
                    .at(format!("tensor {}", infos[i].name))
                    .evidence(format!("{}: {begin}..{end}; {other}: ..{cursor}", infos[i].name)),
            );
        } else if begin > padded {
            out.push(
                GAP.finding(format!("{} unused bytes in the data section at offset {padded}..{begin}", begin - padded))
                    .file(file)
                    .at(format!("data bytes {padded}..{begin}"))
                    .evidence(format!("before tensor {}", infos[i].name)),
            );
        }
        if end > cursor {
            cursor = end;
            owner = Some(i);
        }
    }
    let all_sized = infos.iter().all(|t| t.size.is_some()) && ranges.len() == infos.len();
    if all_sized {
        let end = if infos.is_empty() { data_start } else { data_start.saturating_add(cursor.div_ceil(align).saturating_mul(align)) };
        if file_len > end {
            out.push(
                TRAILING
                    .finding(format!("{} bytes follow the last tensor (file byte {end} of {file_len})", file_len - end))
                    .file(file)
                    .at(format!("bytes {end}..{file_len}"))
                    .evidence(trailing_excerpt(r.d, end)),
            );
        }
    }
    Ok(())
}

fn trailing_excerpt(d: &[u8], from: u64) -> String {
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(d.len());
    let region = &d[from..];
    let shown: String = region.iter().take(32).map(|b| format!("{b:02x}")).collect();
    format!("{} bytes, content looks like {}: {shown}", region.len(), crate::detect::sniff(&region[..region.len().min(64 * 1024)]).name())
}

#[cfg(test)]
mod tests;
