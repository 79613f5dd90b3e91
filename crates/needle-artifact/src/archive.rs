//! Archives: PyTorch zip (read tolerantly, as PyTorch's miniz reader does), nested zips, tar,
//! gzip, and the wrappers we cannot open (7z, bzip2, xz, zstd), which are reported, never
//! passed. Every member is sniffed by content and dispatched again ([`inspect_member`]), so a
//! pickle named `weights.txt` inside a tar inside a zip is found. Display paths join the levels
//! with `!`: `outer.zip!inner/data.pkl`.

pub mod tar;
pub mod zip;

use crate::detect::{self, Format};
use crate::inspect::{FileCtx, Sink};
use crate::limits;
use needle_report::{Rule, Severity};

pub static UNINSPECTABLE: Rule = Rule {
    code: "archive/uninspectable",
    severity: Severity::High,
    summary: "an archive or member needle cannot open (7z, bzip2, xz, zstd, unsupported compression)",
    fix: "unpack it and inspect the contents; nothing inside was checked",
};
pub static TOO_DEEP: Rule = Rule {
    code: "archive/too-deep",
    severity: Severity::High,
    summary: "archives nested deeper than the inspection limit",
    fix: "unpack the nested archives and inspect the contents; the innermost were not checked",
};
pub static POLYGLOT: Rule = Rule {
    code: "archive/polyglot",
    severity: Severity::High,
    summary: "one file is two formats at once (e.g. a pickle or tar with a zip appended)",
    fix: "do not load this file; different loaders and scanners see different contents",
};
pub static DECOMPRESSION_BOMB: Rule = Rule {
    code: "archive/decompression-bomb",
    severity: Severity::High,
    summary: "a member decompresses past the size or ratio limit",
    fix: "do not load this file; only the first part of the member was checked",
};
pub static MALFORMED: Rule = Rule {
    code: "archive/malformed",
    severity: Severity::Medium,
    summary: "archive structures are inconsistent or truncated",
    fix: "re-create the archive; readers disagree on broken archives",
};

pub static RULES: &[&Rule] = &[
    &UNINSPECTABLE,
    &TOO_DEEP,
    &POLYGLOT,
    &DECOMPRESSION_BOMB,
    &MALFORMED,
    &zip::FLAG_BITS,
    &zip::NAME_MISMATCH,
    &zip::CRC_MISMATCH,
    &zip::ENCRYPTED,
    &zip::HIDDEN_MEMBER,
];

/// Decompressed output always allowed per member; beyond it the ratio cap applies.
pub const FREE_INFLATE_BYTES: u64 = 64 * 1024 * 1024;
/// Compression ratio tolerated beyond [`FREE_INFLATE_BYTES`].
pub const MAX_RATIO: u64 = 200;

#[derive(Debug, Clone, Default)]
pub struct ArchiveFacts {
    pub detail: Option<String>,
    /// Pickles found (by content) anywhere inside.
    pub pickles: usize,
    pub members: usize,
}

/// What one member turned out to be.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemberResult {
    pub pickles: usize,
    pub format: Option<Format>,
}

/// Inspects an archive of format `format` and, recursively, what it contains.
pub fn inspect(ctx: &FileCtx, format: Format, sink: &mut Sink) -> ArchiveFacts {
    if ctx.depth >= limits::MAX_ARCHIVE_DEPTH {
        sink.push(
            TOO_DEEP
                .finding(format!("{}: {} nested more than {} archives deep; not opened", ctx.rel, format.name(), limits::MAX_ARCHIVE_DEPTH))
                .file(ctx.rel.to_string()),
        );
        return ArchiveFacts { detail: Some(format!("{}, not opened (too deep)", format.name())), ..Default::default() };
    }
    match format {
        Format::Zip => zip::inspect(ctx, sink),
        Format::Tar => tar::inspect(ctx, sink),
        Format::Gzip => gunzip(ctx, sink),
        other => {
            sink.push(
                UNINSPECTABLE
                    .finding(format!("{}: {} archives cannot be opened by needle; nothing inside was checked", ctx.rel, other.name()))
                    .file(ctx.rel.to_string())
                    .evidence(format!("magic {}", hex_prefix(ctx.data, 6))),
            );
            // A stored (copy-method) 7z keeps an inner zip verbatim: look for one anyway.
            let mut facts = ArchiveFacts { detail: Some(format!("{}, not opened", other.name())), ..Default::default() };
            if let Some(z) = embedded_zip(ctx.data, 1) {
                let inner = FileCtx { rel: &format!("{}!(embedded zip)", ctx.rel), data: z, depth: ctx.depth + 1 };
                let f = zip::inspect(&inner, sink);
                facts.pickles = f.pickles;
                facts.detail = Some(format!("{}, not opened; embedded zip: {}", other.name(), f.detail.unwrap_or_default()));
            }
            facts
        }
    }
}

fn hex_prefix(d: &[u8], n: usize) -> String {
    d.iter().take(n).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Sniffs one member and runs the check for what it is; archives recurse.
pub fn inspect_member(rel: &str, data: &[u8], depth: usize, sink: &mut Sink) -> MemberResult {
    let format = detect::sniff(data);
    let ctx = FileCtx { rel, data, depth };
    let mut r = MemberResult { pickles: 0, format: Some(format) };
    match format {
        Format::Pickle => {
            let p = crate::pickle::inspect(&ctx, sink);
            r.pickles = p.pickles;
        }
        Format::Zip | Format::Tar | Format::SevenZip | Format::Gzip | Format::Bzip2 | Format::Xz | Format::Zstd => {
            let inner = FileCtx { rel, data, depth: depth + 1 };
            let a = inspect(&inner, format, sink);
            r.pickles = a.pickles;
        }
        Format::Npy => {
            crate::numpy::inspect(&ctx, sink);
        }
        Format::Safetensors => {
            crate::safetensors::inspect(&ctx, sink);
        }
        Format::Gguf => {
            crate::gguf::inspect(&ctx, sink);
        }
        Format::Elf | Format::MachO | Format::Pe | Format::Script => crate::config::executable(&ctx, format, sink),
        Format::Json | Format::Text | Format::Empty | Format::Unknown => {}
    }
    r
}

/// Inflates raw deflate data under the member caps. Returns the bytes (possibly cut short)
/// and whether a cap was hit; `Err` when the stream is not valid deflate.
pub fn inflate_capped(compressed: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let cap = (compressed.len() as u64).saturating_mul(MAX_RATIO).clamp(FREE_INFLATE_BYTES, limits::MAX_MEMBER_BYTES);
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    match miniz_oxide::inflate::decompress_to_vec_with_limit(compressed, cap) {
        Ok(v) => Ok((v, false)),
        Err(e) if e.status == miniz_oxide::inflate::TINFLStatus::HasMoreOutput => Ok((e.output, true)),
        Err(e) => Err(format!("invalid deflate data ({:?})", e.status)),
    }
}

/// Reports a decompression bomb.
pub fn report_bomb(rel: &str, compressed: u64, got: usize, sink: &mut Sink) {
    sink.push(
        DECOMPRESSION_BOMB
            .finding(format!(
                "{rel}: {compressed} compressed bytes inflate past {got} bytes (limit: {} MiB or {MAX_RATIO}x); only that much was checked",
                FREE_INFLATE_BYTES >> 20
            ))
            .file(rel.to_string()),
    );
}

fn gunzip(ctx: &FileCtx, sink: &mut Sink) -> ArchiveFacts {
    let d = ctx.data;
    let fail = |sink: &mut Sink, why: &str| {
        sink.push(MALFORMED.finding(format!("{}: gzip stream unreadable: {why}", ctx.rel)).file(ctx.rel.to_string()));
        ArchiveFacts { detail: Some("gzip, unreadable".into()), ..Default::default() }
    };
    if d.len() < 18 || d.get(2) != Some(&8) {
        return fail(sink, "not deflate");
    }
    let flags = d[3];
    let mut pos = 10usize;
    if flags & 4 != 0 {
        let Some(x) = d.get(pos..pos + 2) else { return fail(sink, "truncated header") };
        pos += 2 + u16::from_le_bytes([x[0], x[1]]) as usize;
    }
    let mut name = None;
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            let Some(n) = d.get(pos..).and_then(|r| r.iter().position(|&b| b == 0)) else { return fail(sink, "truncated header") };
            if bit == 8 {
                name = Some(String::from_utf8_lossy(&d[pos..pos + n]).into_owned());
            }
            pos += n + 1;
        }
    }
    if flags & 2 != 0 {
        pos += 2;
    }
    let Some(body) = d.get(pos..) else { return fail(sink, "truncated header") };
    let (out, capped) = match inflate_capped(body) {
        Ok(x) => x,
        Err(e) => return fail(sink, &e),
    };
    if capped {
        report_bomb(ctx.rel, body.len() as u64, out.len(), sink);
    }
    let inner_name = name.unwrap_or_else(|| "(gunzipped)".into());
    let rel = format!("{}!{}", ctx.rel, inner_name);
    let r = inspect_member(&rel, &out, ctx.depth, sink);
    let what = r.format.map_or("data", |f| f.name());
    ArchiveFacts { detail: Some(format!("gzip of {what} ({} bytes)", out.len())), pickles: r.pickles, members: 1 }
}

/// The zip inside `data` (from its first byte to the end of its end record) when `data` ends
/// with a zip whose start is at or after `from`.
pub fn embedded_zip(data: &[u8], from: usize) -> Option<&[u8]> {
    let end = find_zip_end(data)?;
    let layout = zip::layout(data, end)?;
    if layout.base < from as u64 {
        return None;
    }
    let base = usize::try_from(layout.base).ok()?;
    data.get(base..)
}

/// A zip appended after `from` (the end of a pickle or tar): a polyglot. Reports and scans it.
pub fn inspect_trailing_zip(ctx: &FileCtx, from: usize, sink: &mut Sink) {
    if from >= ctx.data.len() {
        return;
    }
    let Some(z) = embedded_zip(ctx.data, from) else { return };
    let base = ctx.data.len() - z.len();
    sink.push(
        POLYGLOT
            .finding(format!("{}: a zip archive starts at 0x{base:x}, after the {} bytes a loader reads first", ctx.rel, from))
            .file(ctx.rel.to_string())
            .at(format!("offset 0x{base:x}"))
            .evidence(format!("zip end record at 0x{:x}", find_zip_end(ctx.data).unwrap_or(0))),
    );
    if ctx.depth >= limits::MAX_ARCHIVE_DEPTH {
        return;
    }
    let rel = format!("{}!(appended zip)", ctx.rel);
    let inner = FileCtx { rel: &rel, data: z, depth: ctx.depth + 1 };
    zip::inspect(&inner, sink);
}

/// Offset of a zip end-of-central-directory record, when `data` ends with one (within the
/// 64 KiB comment window) whose central directory is where the record says.
pub fn find_zip_end(data: &[u8]) -> Option<usize> {
    if data.len() < 22 {
        return None;
    }
    let last = data.len() - 22;
    let first = last.saturating_sub(65535);
    let mut i = last + 1;
    while i > first {
        i -= 1;
        if data.get(i..i + 4) == Some(b"PK\x05\x06") && zip::layout(data, i).is_some() {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflate_caps_ratio() {
        // 100 MiB of zeros compresses ~1000x: past the ratio cap beyond 64 MiB.
        let zeros = vec![0u8; 100 << 20];
        let c = miniz_oxide::deflate::compress_to_vec(&zeros, 6);
        let (out, capped) = inflate_capped(&c).expect("valid");
        assert!(capped);
        assert_eq!(out.len() as u64, FREE_INFLATE_BYTES);
        let (out, capped) = inflate_capped(&miniz_oxide::deflate::compress_to_vec(b"hello", 6)).expect("valid");
        assert!(!capped && out == b"hello");
        assert!(inflate_capped(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn gzip_member_is_dispatched() {
        let pickle = b"\x80\x02cos\nsystem\n.";
        let mut gz = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3];
        gz.extend_from_slice(b"w.txt\0");
        gz.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(pickle, 6));
        gz.extend_from_slice(&[0u8; 8]);
        let mut sink = Sink::default();
        let ctx = FileCtx { rel: "m.gz", data: &gz, depth: 0 };
        let f = inspect(&ctx, Format::Gzip, &mut sink);
        assert_eq!(f.pickles, 1);
        assert!(sink.findings.iter().any(|f| f.code == "pickle/code-execution" && f.location.file.as_deref() == Some("m.gz!w.txt")));
    }

    #[test]
    fn unopenable_formats_are_findings() {
        let mut sink = Sink::default();
        let data = b"7z\xbc\xaf\x27\x1c\x00\x04rest of it";
        let ctx = FileCtx { rel: "m.7z", data, depth: 0 };
        inspect(&ctx, Format::SevenZip, &mut sink);
        assert_eq!(sink.findings[0].code, "archive/uninspectable");
        let mut sink = Sink::default();
        let ctx = FileCtx { rel: "m.zip", data: b"PK\x03\x04", depth: limits::MAX_ARCHIVE_DEPTH };
        inspect(&ctx, Format::Zip, &mut sink);
        assert_eq!(sink.findings[0].code, "archive/too-deep");
    }
}
