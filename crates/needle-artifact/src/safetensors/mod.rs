//! Safetensors: the reference parser's rules, plus duplicate keys.
//!
//! Only the header is read: an 8-byte little-endian length N, then N bytes of JSON. Tensor data
//! is never touched, so inspecting a 100 GB shard costs the same as a 1 MB one.
//!
//! Every departure from what the reference parser (`safetensors` 0.4+) accepts is a finding, not a
//! failure: the file is there and we can say what is wrong with it. Failures are kept for what we
//! could not examine (I/O errors, needle's own limits exceeded by a file that may be valid).

mod header;
mod index;

pub use header::{dtype_bits, parse_header, Header, MetadataProblem, RawTensor};
pub use index::{check_index, embedding_rows, INDEX_RULES};

use crate::inspect::{Capped, FileCtx, Sink};
use crate::inventory::TensorInfo;
use crate::limits;
use needle_report::{Rule, Severity};

pub static HEADER_TOO_LARGE: Rule = Rule {
    code: "safetensors/header-too-large",
    severity: Severity::High,
    summary: "the header length is over the reference parser's 100,000,000 byte limit",
    fix: "re-save the weights with the safetensors library; loaders refuse this file",
};
pub static TRUNCATED: Rule = Rule {
    code: "safetensors/truncated",
    severity: Severity::High,
    summary: "the header or the tensor data it describes runs past the end of the file",
    fix: "download the file again and compare its hash with the publisher's",
};
pub static BAD_HEADER: Rule = Rule {
    code: "safetensors/bad-header",
    severity: Severity::High,
    summary: "the header is not a JSON object the reference parser accepts",
    fix: "re-save the weights with the safetensors library; loaders refuse or misread this file",
};
pub static DUPLICATE_KEY: Rule = Rule {
    code: "safetensors/duplicate-key",
    severity: Severity::High,
    summary: "a key appears twice in the header JSON; parsers disagree on which one wins",
    fix: "re-save the weights with the safetensors library; treat the file as tampered with",
};
pub static BAD_METADATA: Rule = Rule {
    code: "safetensors/bad-metadata",
    severity: Severity::High,
    summary: "`__metadata__` is not a map of strings to strings",
    fix: "re-save the weights with the safetensors library; the reference parser refuses this file",
};
pub static UNKNOWN_DTYPE: Rule = Rule {
    code: "safetensors/unknown-dtype",
    severity: Severity::High,
    summary: "a tensor has a dtype the reference parser does not know",
    fix: "re-save the tensor in a standard dtype; loaders refuse this file",
};
pub static SIZE_MISMATCH: Rule = Rule {
    code: "safetensors/size-mismatch",
    severity: Severity::High,
    summary: "a tensor's byte range does not match its shape and dtype",
    fix: "re-save the weights with the safetensors library; the data does not mean what the header says",
};
pub static OVERLAPPING: Rule = Rule {
    code: "safetensors/overlapping-tensors",
    severity: Severity::High,
    summary: "two tensors share bytes of the data section",
    fix: "re-save the weights; aliased tensors are a parser differential and are refused by the reference",
};
pub static GAP: Rule = Rule {
    code: "safetensors/gap-between-tensors",
    severity: Severity::High,
    summary: "bytes of the data section belong to no tensor (room for a hidden payload)",
    fix: "re-save the weights with the safetensors library and find out what the unused bytes hold",
};
pub static TRAILING: Rule = Rule {
    code: "safetensors/trailing-bytes",
    severity: Severity::High,
    summary: "bytes follow the last tensor (an appended payload or a polyglot file)",
    fix: "re-save the weights with the safetensors library and find out what the appended bytes hold",
};

pub static RULES: &[&Rule] = &[
    &HEADER_TOO_LARGE,
    &TRUNCATED,
    &BAD_HEADER,
    &DUPLICATE_KEY,
    &BAD_METADATA,
    &UNKNOWN_DTYPE,
    &SIZE_MISMATCH,
    &OVERLAPPING,
    &GAP,
    &TRAILING,
    &index::INDEX_MISSING_TENSOR,
    &index::INDEX_UNLISTED_TENSOR,
    &index::INDEX_MISSING_SHARD,
    &index::INDEX_ORPHAN_SHARD,
    &index::DUPLICATE_ACROSS_SHARDS,
    &index::INDEX_SIZE_MISMATCH,
    &index::INDEX_BAD,
    &index::INDEX_PATH_ESCAPE,
    &index::INDEX_DUPLICATE_ENTRY,
];

/// What one safetensors file holds, from its header.
#[derive(Debug, Clone, Default)]
pub struct SafetensorsFacts {
    pub tensors: Vec<TensorInfo>,
    /// Byte ranges (relative to the data section) of tensors whose entry was well formed.
    pub data_bytes: u64,
}

/// Checks one safetensors file's header; returns its tensors when the header could be read.
pub fn inspect(ctx: &FileCtx, sink: &mut Sink) -> Option<Vec<TensorInfo>> {
    inspect_facts(ctx, sink).map(|f| f.tensors)
}

/// [`inspect`], with the byte total of well-formed tensors (for the index's `total_size`).
pub fn inspect_facts(ctx: &FileCtx, sink: &mut Sink) -> Option<SafetensorsFacts> {
    let data = ctx.data;
    let file = ctx.rel;
    if data.len() < 8 {
        sink.push(
            TRUNCATED
                .finding(format!("{file} is {} bytes, too short for the 8-byte header length", data.len()))
                .file(file),
        );
        return None;
    }
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(&data[..8]);
    let n = u64::from_le_bytes(n8);
    if n > limits::MAX_SAFETENSORS_HEADER {
        sink.push(
            HEADER_TOO_LARGE
                .finding(format!("header length {n} is over the {} byte limit", limits::MAX_SAFETENSORS_HEADER))
                .file(file)
                .at("bytes 0..8")
                .evidence(format!("header length {n} (0x{n:x}), file size {}", data.len())),
        );
        return None;
    }
    let file_len = data.len() as u64;
    let stop = n + 8; // n <= 1e8: no overflow
    if stop > file_len {
        sink.push(
            TRUNCATED
                .finding(format!("header length {n} runs past the end of the {file_len} byte file"))
                .file(file)
                .at("bytes 0..8")
                .evidence(format!("header length {n}, file size {file_len}")),
        );
        return None;
    }
    // `stop <= data.len()` was checked above.
    let header_bytes = &data[8..stop as usize];
    let header = match parse_header(header_bytes) {
        Ok(h) => h,
        Err(header::HeaderError::Invalid(msg)) => {
            sink.push(
                BAD_HEADER
                    .finding(format!("the header cannot be parsed: {msg}"))
                    .file(file)
                    .evidence(excerpt(header_bytes)),
            );
            return None;
        }
        Err(header::HeaderError::TooManyTensors) => {
            sink.fail(file, format!("the header lists more than {} tensors, over needle's limit", limits::MAX_TENSORS));
            return None;
        }
    };
    let data_len = file_len - stop;
    Some(check_header(file, &header, data_len, &data[stop as usize..], sink))
}

/// Applies the reference parser's rules to a parsed header whose data section is `data_len` bytes.
fn check_header(file: &str, h: &Header, data_len: u64, data: &[u8], sink: &mut Sink) -> SafetensorsFacts {
    let mut out = Capped::new(sink);
    for key in &h.duplicate_keys {
        out.push(
            DUPLICATE_KEY
                .finding(format!("key `{key}` appears more than once in the header; parsers disagree on which one wins"))
                .file(file)
                .at(format!("key {key}"))
                .evidence(format!("\"{key}\" repeated")),
        );
    }
    for p in &h.metadata_problems {
        let msg = match p {
            MetadataProblem::NotAnObject(kind) => format!("`__metadata__` is {kind}, not a map of strings"),
            MetadataProblem::NonString { key, kind } => format!("`__metadata__` value for `{key}` is {kind}, not a string"),
            MetadataProblem::DuplicateKey(key) => format!("`__metadata__` has key `{key}` twice"),
        };
        out.push(BAD_METADATA.finding(msg).file(file).at("__metadata__"));
    }
    let mut facts = SafetensorsFacts::default();
    // (begin, end, index) of entries whose offsets are usable.
    let mut ranges: Vec<(u64, u64, usize)> = Vec::with_capacity(h.tensors.len());
    for (i, t) in h.tensors.iter().enumerate() {
        if let Some(problem) = &t.problem {
            out.push(
                BAD_HEADER
                    .finding(format!("tensor `{}`: {problem}", t.name))
                    .file(file)
                    .at(format!("tensor {}", t.name))
                    .evidence(t.describe()),
            );
            continue;
        }
        let bits = match dtype_bits(&t.dtype) {
            Some(b) => b,
            None => {
                out.push(
                    UNKNOWN_DTYPE
                        .finding(format!("tensor `{}` has unknown dtype `{}`", t.name, t.dtype))
                        .file(file)
                        .at(format!("tensor {}", t.name))
                        .evidence(t.describe()),
                );
                0
            }
        };
        let (begin, end) = (t.offsets[0], t.offsets[1]);
        let info = TensorInfo { name: t.name.clone(), dtype: t.dtype.clone(), shape: t.shape.clone() };
        if end < begin {
            out.push(
                BAD_HEADER
                    .finding(format!("tensor `{}` ends (byte {end}) before it begins (byte {begin})", t.name))
                    .file(file)
                    .at(format!("tensor {}", t.name))
                    .evidence(t.describe()),
            );
            facts.tensors.push(info);
            continue;
        }
        if bits > 0 {
            let expected = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).and_then(|e| e.checked_mul(bits));
            match expected {
                None => out.push(
                    SIZE_MISMATCH
                        .finding(format!("tensor `{}`: the size of shape {:?} overflows 64 bits", t.name, t.shape))
                        .file(file)
                        .at(format!("tensor {}", t.name))
                        .evidence(t.describe()),
                ),
                Some(b) if b % 8 != 0 => out.push(
                    SIZE_MISMATCH
                        .finding(format!("tensor `{}`: {b} bits of {} is not a whole number of bytes", t.name, t.dtype))
                        .file(file)
                        .at(format!("tensor {}", t.name))
                        .evidence(t.describe()),
                ),
                Some(b) if b / 8 != end - begin => out.push(
                    SIZE_MISMATCH
                        .finding(format!(
                            "tensor `{}` takes {} bytes but shape {:?} of {} needs {}",
                            t.name,
                            end - begin,
                            t.shape,
                            t.dtype,
                            b / 8
                        ))
                        .file(file)
                        .at(format!("tensor {}", t.name))
                        .evidence(t.describe()),
                ),
                Some(_) => {}
            }
        }
        facts.data_bytes = facts.data_bytes.saturating_add(end - begin);
        ranges.push((begin, end, i));
        facts.tensors.push(info);
    }
    // Contiguity: sorted by start, every range must begin where the previous one ended.
    ranges.sort_unstable();
    let mut cursor = 0u64;
    let mut cursor_owner: Option<usize> = None;
    for &(begin, end, i) in &ranges {
        let t = &h.tensors[i];
        if begin > cursor {
            let after = cursor_owner.map(|o| format!(" after `{}`", h.tensors[o].name)).unwrap_or_default();
            out.push(
                GAP.finding(format!("{} unused bytes at data offset {cursor}..{begin}{after}", begin - cursor))
                    .file(file)
                    .at(format!("data bytes {cursor}..{begin}"))
                    .evidence(gap_excerpt(data, cursor, begin)),
            );
        } else if begin < cursor {
            let other = cursor_owner.map(|o| h.tensors[o].name.as_str()).unwrap_or("?");
            out.push(
                OVERLAPPING
                    .finding(format!("tensor `{}` (bytes {begin}..{end}) overlaps `{other}` (ending at {cursor})", t.name))
                    .file(file)
                    .at(format!("tensor {}", t.name))
                    .evidence(t.describe()),
            );
        }
        if end > cursor {
            cursor = end;
            cursor_owner = Some(i);
        }
    }
    if cursor > data_len {
        let who = cursor_owner.map(|o| h.tensors[o].name.as_str()).unwrap_or("?");
        out.push(
            TRUNCATED
                .finding(format!("tensor `{who}` ends at data byte {cursor}, past the end of the data section ({data_len} bytes)"))
                .file(file)
                .at(format!("tensor {who}"))
                .evidence(format!("data section {data_len} bytes, tensors need {cursor}")),
        );
    } else if cursor < data_len {
        out.push(
            TRAILING
                .finding(format!("{} bytes follow the last tensor (data byte {cursor} of {data_len})", data_len - cursor))
                .file(file)
                .at(format!("data bytes {cursor}..{data_len}"))
                .evidence(gap_excerpt(data, cursor, data_len)),
        );
    }
    out.finish();
    facts
}

/// The first bytes of a region, with what they look like (a zip, a pickle...).
fn gap_excerpt(data: &[u8], begin: u64, end: u64) -> String {
    let b = usize::try_from(begin).unwrap_or(usize::MAX).min(data.len());
    let e = usize::try_from(end).unwrap_or(usize::MAX).min(data.len());
    let region = data.get(b..e).unwrap_or(&[]);
    // Sniff only the start of the region: a hostile multi-gigabyte gap must not cost a scan.
    let kind = crate::detect::sniff(&region[..region.len().min(64 * 1024)]);
    let shown: String = region.iter().take(32).map(|b| format!("{b:02x}")).collect();
    let more = if region.len() > 32 { "…" } else { "" };
    format!("{} bytes, content looks like {}: {shown}{more}", region.len(), kind.name())
}

fn excerpt(b: &[u8]) -> String {
    let head = &b[..b.len().min(120)];
    String::from_utf8_lossy(head).into_owned()
}

#[cfg(test)]
mod tests;
