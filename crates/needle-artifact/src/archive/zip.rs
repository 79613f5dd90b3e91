//! Zip, read the way PyTorch's miniz-based reader reads it: central directory first, data
//! offset from the local header's name and extra lengths, sizes from the central directory,
//! CRCs and general-purpose flags not enforced. Everything that makes another reader (Python's
//! `zipfile`, a scanner) see something else is reported, and the data is scanned anyway.

use super::{inflate_capped, inspect_member, report_bomb, ArchiveFacts, MALFORMED, POLYGLOT, UNINSPECTABLE};
use crate::inspect::{FileCtx, Sink};
use crate::limits;
use needle_report::{Rule, Severity};
use std::collections::{BTreeMap, HashMap, HashSet};

pub static FLAG_BITS: Rule = Rule {
    code: "zip/flag-bits",
    severity: Severity::High,
    summary: "a member sets encryption/patch flag bits (0x1, 0x20, 0x40) over readable data: PyTorch loads it, Python's zipfile and scanners refuse",
    fix: "do not load this file; re-create the archive without the flags",
};
pub static NAME_MISMATCH: Rule = Rule {
    code: "zip/name-mismatch",
    severity: Severity::High,
    summary: "a member's local header name differs from its central directory name",
    fix: "do not load this file; readers that trust either name see different members",
};
pub static CRC_MISMATCH: Rule = Rule {
    code: "zip/crc-mismatch",
    severity: Severity::Medium,
    summary: "a member's data does not match its CRC-32 (PyTorch does not check; other readers refuse)",
    fix: "re-create the archive; a wrong CRC makes scanners skip what PyTorch loads",
};
pub static ENCRYPTED: Rule = Rule {
    code: "zip/encrypted",
    severity: Severity::High,
    summary: "an encrypted member cannot be inspected",
    fix: "get an unencrypted copy and inspect it; nothing in the member was checked",
};
pub static HIDDEN_MEMBER: Rule = Rule {
    code: "zip/hidden-member",
    severity: Severity::High,
    summary: "a local header entry is missing from the central directory",
    fix: "re-create the archive; readers that walk local headers see a member others do not",
};

/// Where the central directory is, and how far the archive is shifted in the file.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Offset of the archive's first byte in `data` (non-zero when something precedes it).
    pub base: u64,
    pub cd_start: u64,
    pub cd_size: u64,
    pub entries: u64,
    pub zip64: bool,
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at.checked_add(2)?)?.try_into().ok()?))
}
fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at.checked_add(4)?)?.try_into().ok()?))
}
fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// Reads the end records at `eocd` (the `PK\5\6` offset) and checks that the central
/// directory they describe starts with a central header (or is empty).
pub fn layout(data: &[u8], eocd: usize) -> Option<Layout> {
    if data.get(eocd..eocd + 4)? != b"PK\x05\x06" {
        return None;
    }
    let comment = u16_at(data, eocd + 20)? as usize;
    if eocd + 22 + comment > data.len() {
        return None;
    }
    let mut entries = u16_at(data, eocd + 10)? as u64;
    let mut cd_size = u32_at(data, eocd + 12)? as u64;
    let mut cd_offset = u32_at(data, eocd + 16)? as u64;
    let mut record_at = eocd as u64;
    let mut zip64 = false;
    // Zip64: a locator right before the end record, the zip64 end record right before it.
    if eocd >= 20 && data.get(eocd - 20..eocd - 16) == Some(b"PK\x06\x07") {
        let z = eocd.checked_sub(20 + 56)?;
        if data.get(z..z + 4) == Some(b"PK\x06\x06") {
            entries = u64_at(data, z + 32)?;
            cd_size = u64_at(data, z + 40)?;
            cd_offset = u64_at(data, z + 48)?;
            record_at = z as u64;
            zip64 = true;
        }
    }
    let cd_start = record_at.checked_sub(cd_size)?;
    let base = cd_start.checked_sub(cd_offset)?;
    if entries > 0 {
        let s = usize::try_from(cd_start).ok()?;
        if data.get(s..s + 4)? != b"PK\x01\x02" {
            return None;
        }
    }
    Some(Layout { base, cd_start, cd_size, entries, zip64 })
}

/// One central directory entry.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    flags: u16,
    method: u16,
    crc: u32,
    csize: u64,
    usize: u64,
    local: u64,
}

fn read_central(data: &[u8], lay: &Layout) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut p = usize::try_from(lay.cd_start).map_err(|_| "central directory offset too large")?;
    let end = p.saturating_add(usize::try_from(lay.cd_size).unwrap_or(usize::MAX)).min(data.len());
    while p + 46 <= end && data.get(p..p + 4) == Some(b"PK\x01\x02") {
        if out.len() >= limits::MAX_ARCHIVE_ENTRIES {
            return Err(format!("more than {} entries", limits::MAX_ARCHIVE_ENTRIES));
        }
        let h = |o: usize| u16_at(data, p + o).unwrap_or(0);
        let w = |o: usize| u32_at(data, p + o).unwrap_or(0);
        let (nlen, xlen, clen) = (h(28) as usize, h(30) as usize, h(32) as usize);
        let name_b = data.get(p + 46..p + 46 + nlen).ok_or("truncated central header")?;
        let extra = data.get(p + 46 + nlen..p + 46 + nlen + xlen).ok_or("truncated central header")?;
        let mut e = Entry {
            name: String::from_utf8_lossy(name_b).into_owned(),
            flags: h(8),
            method: h(10),
            crc: w(16),
            csize: w(20) as u64,
            usize: w(24) as u64,
            local: w(42) as u64,
        };
        zip64_extra(extra, &mut e);
        out.push(e);
        p += 46 + nlen + xlen + clen;
    }
    Ok(out)
}

/// Applies the zip64 extended information field (id 1) to the sizes/offset set to 0xffffffff.
fn zip64_extra(extra: &[u8], e: &mut Entry) {
    let mut i = 0;
    while i + 4 <= extra.len() {
        let id = u16_at(extra, i).unwrap_or(0);
        let len = u16_at(extra, i + 2).unwrap_or(0) as usize;
        let body = extra.get(i + 4..i + 4 + len).unwrap_or(&[]);
        if id == 1 {
            let mut k = 0;
            for field in [&mut e.usize, &mut e.csize, &mut e.local] {
                if *field == 0xffff_ffff {
                    if let Some(v) = u64_at(body, k) {
                        *field = v;
                        k += 8;
                    }
                }
            }
        }
        i += 4 + len;
    }
}

/// Inspects a zip (`ctx.data` may have bytes before the archive: a polyglot).
pub fn inspect(ctx: &FileCtx, sink: &mut Sink) -> ArchiveFacts {
    let data = ctx.data;
    let Some(lay) = super::find_zip_end(data).and_then(|e| layout(data, e)) else {
        // No usable central directory: walk the local headers like a streaming reader.
        sink.push(
            MALFORMED
                .finding(format!("{}: zip without a readable end record or central directory; walking local headers", ctx.rel))
                .file(ctx.rel.to_string()),
        );
        let (pickles, n) = walk_locals(ctx, &HashMap::new(), sink);
        return ArchiveFacts { detail: Some(format!("zip (no central directory), {n} local entries")), pickles, members: n };
    };
    let entries = match read_central(data, &lay) {
        Ok(e) => e,
        Err(why) => {
            sink.push(MALFORMED.finding(format!("{}: central directory: {why}", ctx.rel)).file(ctx.rel.to_string()));
            Vec::new()
        }
    };
    if (entries.len() as u64) < lay.entries.min(limits::MAX_ARCHIVE_ENTRIES as u64) {
        sink.push(
            MALFORMED
                .finding(format!("{}: end record announces {} entries, central directory holds {}", ctx.rel, lay.entries, entries.len()))
                .file(ctx.rel.to_string()),
        );
    }
    if lay.base > 0 {
        let base = usize::try_from(lay.base).unwrap_or(data.len()).min(data.len());
        sink.push(
            POLYGLOT
                .finding(format!("{}: {} bytes precede the zip archive", ctx.rel, lay.base))
                .file(ctx.rel.to_string())
                .at(format!("offset 0x{base:x}")),
        );
        // What precedes it may itself be something a loader reads (a pickle: legacy torch.load).
        let prefix = &data[..base];
        let rel = format!("{}!(prefix)", ctx.rel);
        inspect_member(&rel, prefix, ctx.depth, sink);
    }
    let mut pickles = 0usize;
    let mut names: Vec<String> = Vec::new();
    let mut seen_locals = HashMap::new();
    let mut pickle_names: Vec<String> = Vec::new();
    for e in &entries {
        let Some(local) = e.local.checked_add(lay.base).and_then(|l| usize::try_from(l).ok()) else { continue };
        seen_locals.insert(local, e.csize);
        let member_rel = format!("{}!{}", ctx.rel, e.name);
        names.push(e.name.clone());
        let Some(body) = member_data(ctx, e, local, &member_rel, sink, &mut names) else { continue };
        let r = inspect_member(&member_rel, &body, ctx.depth, sink);
        let mut found = r.pickles;
        // PyTorch reads `<prefix>/data.pkl` by name: scan it as a pickle whatever it looks like.
        if found == 0 && e.name.ends_with("data.pkl") && r.format != Some(crate::detect::Format::Pickle) && !body.is_empty() {
            let c = FileCtx { rel: &member_rel, data: &body, depth: ctx.depth };
            found = crate::pickle::inspect(&c, sink).pickles;
        }
        if found > 0 {
            pickle_names.push(e.name.clone());
        }
        pickles += found;
    }
    let (hidden, _) = walk_locals(ctx, &seen_locals, sink);
    pickles += hidden;
    let detail = describe_layout(&names, pickles, entries.len(), lay.zip64);
    ArchiveFacts { detail: Some(detail), pickles, members: entries.len() }
}

/// A member's bytes (stored: borrowed; deflate: inflated under caps), with the anomalies of
/// its headers reported. `None` when nothing can be read.
fn member_data<'d>(
    ctx: &FileCtx<'d>,
    e: &Entry,
    local: usize,
    rel: &str,
    sink: &mut Sink,
    names: &mut Vec<String>,
) -> Option<std::borrow::Cow<'d, [u8]>> {
    let data = ctx.data;
    if data.get(local..local + 4) != Some(b"PK\x03\x04") {
        sink.push(MALFORMED.finding(format!("{rel}: no local header at 0x{local:x}")).file(ctx.rel.to_string()));
        return None;
    }
    let lflags = u16_at(data, local + 6)?;
    let nlen = u16_at(data, local + 26)? as usize;
    let xlen = u16_at(data, local + 28)? as usize;
    let lname_b = data.get(local + 30..local + 30 + nlen)?;
    let lname = String::from_utf8_lossy(lname_b).into_owned();
    if lname != e.name {
        sink.push(
            NAME_MISMATCH
                .finding(format!("{rel}: local header names it {lname:?}, the central directory {:?}", e.name))
                .file(ctx.rel.to_string())
                .at(format!("local header at 0x{local:x}"))
                .evidence(format!("local: {lname:?}"))
                .evidence(format!("central: {:?}", e.name)),
        );
        names.push(lname);
    }
    let start = local + 30 + nlen + xlen;
    let csize = usize::try_from(e.csize).ok()?;
    let raw = match data.get(start..start.checked_add(csize)?) {
        Some(r) => r,
        None => {
            sink.push(
                MALFORMED
                    .finding(format!("{rel}: member data runs past the end of the file ({} bytes at 0x{start:x})", e.csize))
                    .file(ctx.rel.to_string()),
            );
            data.get(start..)?
        }
    };
    let odd_flags = (e.flags | lflags) & 0x61;
    let body: std::borrow::Cow<'d, [u8]> = match e.method {
        0 => std::borrow::Cow::Borrowed(raw),
        8 => match inflate_capped(raw) {
            Ok((v, capped)) => {
                if capped {
                    report_bomb(rel, e.csize, v.len(), sink);
                }
                std::borrow::Cow::Owned(v)
            }
            Err(why) if odd_flags & 1 != 0 => {
                encrypted(rel, ctx.rel, e, &why, sink);
                return None;
            }
            Err(why) => {
                sink.push(MALFORMED.finding(format!("{rel}: {why}")).file(ctx.rel.to_string()));
                return None;
            }
        },
        99 => {
            encrypted(rel, ctx.rel, e, "AES (method 99)", sink);
            return None;
        }
        m => {
            sink.push(
                UNINSPECTABLE
                    .finding(format!("{rel}: compression method {m} is not supported (PyTorch only reads stored members); not checked"))
                    .file(ctx.rel.to_string()),
            );
            return None;
        }
    };
    if odd_flags != 0 {
        // PyTorch reads the bytes as they are: if they are readable, the flag is a lie.
        let readable = e.method == 8 || crate::detect::sniff(&body) != crate::detect::Format::Unknown;
        if odd_flags & 1 != 0 && !readable {
            encrypted(rel, ctx.rel, e, "ZipCrypto", sink);
            return None;
        }
        sink.push(
            FLAG_BITS
                .finding(format!("{rel}: general-purpose flags 0x{:04x} (local 0x{lflags:04x}) mark readable data as encrypted/patched", e.flags))
                .file(ctx.rel.to_string())
                .at(format!("local header at 0x{local:x}"))
                .evidence(format!("flags central 0x{:04x}, local 0x{lflags:04x}", e.flags)),
        );
    }
    if body.len() as u64 == e.usize || e.method == 0 {
        let crc = crc32fast::hash(&body);
        if crc != e.crc {
            sink.push(
                CRC_MISMATCH
                    .finding(format!("{rel}: CRC-32 is 0x{crc:08x}, the central directory says 0x{:08x}", e.crc))
                    .file(ctx.rel.to_string())
                    .evidence(format!("crc 0x{crc:08x} != 0x{:08x}", e.crc)),
            );
        }
    }
    Some(body)
}

fn encrypted(rel: &str, file: &str, e: &Entry, how: &str, sink: &mut Sink) {
    sink.push(
        ENCRYPTED
            .finding(format!("{rel}: member is encrypted ({how}); its {} bytes could not be checked", e.csize))
            .file(file.to_string())
            .evidence(format!("flags 0x{:04x}, method {}", e.flags, e.method)),
    );
}

/// Walks local headers from the start of the file and scans entries the central directory
/// does not list (`seen`: local header offset -> compressed size of the listed entries), or
/// every entry when there is no central directory.
fn walk_locals(ctx: &FileCtx, seen: &HashMap<usize, u64>, sink: &mut Sink) -> (usize, usize) {
    let data = ctx.data;
    let mut p = 0usize;
    let mut pickles = 0;
    let mut n = 0;
    while let Some(off) = find(data, b"PK\x03\x04", p) {
        if n >= limits::MAX_ARCHIVE_ENTRIES {
            break;
        }
        p = off + 4;
        let (Some(flags), Some(method), Some(csize), Some(nlen), Some(xlen)) =
            (u16_at(data, off + 6), u16_at(data, off + 8), u32_at(data, off + 18), u16_at(data, off + 26), u16_at(data, off + 28))
        else {
            break;
        };
        let start = off + 30 + nlen as usize + xlen as usize;
        let Some(name_b) = data.get(off + 30..off + 30 + nlen as usize) else { break };
        if let Some(&listed) = seen.get(&off) {
            // Listed: skip its data (the central size also covers data-descriptor entries).
            p = p.max(start.saturating_add(usize::try_from(listed).unwrap_or(usize::MAX)));
            continue;
        }
        if flags & 8 != 0 || method != 0 && method != 8 {
            continue;
        }
        let Some(raw) = data.get(start..start.saturating_add(csize as usize)) else { continue };
        n += 1;
        let name = String::from_utf8_lossy(name_b).into_owned();
        let rel = format!("{}!{name}", ctx.rel);
        if !seen.is_empty() {
            sink.push(
                HIDDEN_MEMBER
                    .finding(format!("{rel}: local entry at 0x{off:x} is not in the central directory"))
                    .file(ctx.rel.to_string())
                    .at(format!("offset 0x{off:x}")),
            );
        }
        let body: std::borrow::Cow<[u8]> = if method == 8 {
            match inflate_capped(raw) {
                Ok((v, _)) => std::borrow::Cow::Owned(v),
                Err(_) => continue,
            }
        } else {
            std::borrow::Cow::Borrowed(raw)
        };
        pickles += inspect_member(&rel, &body, ctx.depth, sink).pickles;
        p = p.max(start.saturating_add(csize as usize));
    }
    (pickles, n)
}

fn find(h: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let hay = h.get(from..)?;
    hay.windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

/// `pytorch zip, 1 pickle, 12 storages` when the PyTorch layout is there.
fn describe_layout(names: &[String], pickles: usize, members: usize, zip64: bool) -> String {
    let mut prefixes: BTreeMap<&str, usize> = BTreeMap::new();
    for n in names {
        if let Some(p) = n.strip_suffix("data.pkl") {
            if p.is_empty() || p.ends_with('/') {
                prefixes.insert(p, 0);
            }
        }
    }
    let z = if zip64 { "zip64" } else { "zip" };
    let plural = |n: usize, w: &str| if n == 1 { format!("1 {w}") } else { format!("{n} {w}s") };
    for (prefix, count) in prefixes.iter_mut() {
        let data_dir = format!("{prefix}data/");
        let is_torch = names.iter().any(|n| *n == format!("{prefix}version") || *n == format!("{prefix}byteorder") || n.starts_with(&data_dir));
        if is_torch {
            *count = names
                .iter()
                .filter(|n| n.strip_prefix(&data_dir).is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit())))
                .collect::<HashSet<_>>()
                .len();
            return format!("pytorch {z}, {}, {}", plural(pickles, "pickle"), plural(*count, "storage"));
        }
    }
    format!("{z}, {}, {}", plural(members, "member"), plural(pickles, "pickle"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal zip writer for tests: (name, data, flags, stored crc override).
    pub(crate) fn make_zip(members: &[(&str, &[u8])], flags: u16, bad_crc: bool, local_name: Option<&str>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, body) in members {
            let off = out.len() as u32;
            let mut crc = crc32fast::hash(body);
            if bad_crc {
                crc ^= 1;
            }
            let lname = local_name.unwrap_or(name);
            out.extend_from_slice(b"PK\x03\x04\x14\x00");
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&(lname.len() as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(lname.as_bytes());
            out.extend_from_slice(body);
            central.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00");
            central.extend_from_slice(&flags.to_le_bytes());
            central.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&(body.len() as u32).to_le_bytes());
            central.extend_from_slice(&(body.len() as u32).to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&off.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let cd_off = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
        out.extend_from_slice(&(members.len() as u16).to_le_bytes());
        out.extend_from_slice(&(members.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_off.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }

    const EVIL: &[u8] = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.";
    const CLEAN: &[u8] = b"\x80\x02ccollections\nOrderedDict\n)R.";

    fn run(z: &[u8]) -> (ArchiveFacts, Sink) {
        let mut sink = Sink::default();
        let ctx = FileCtx { rel: "m.zip", data: z, depth: 0 };
        let f = inspect(&ctx, &mut sink);
        (f, sink)
    }

    fn codes(s: &Sink) -> Vec<&str> {
        s.findings.iter().map(|f| f.code.as_str()).collect()
    }

    #[test]
    fn pytorch_layout_is_summarised() {
        let z = make_zip(&[("archive/data.pkl", CLEAN), ("archive/data/0", &[1, 2, 3, 4]), ("archive/data/1", &[0; 8]), ("archive/version", b"3\n")], 0, false, None);
        assert!(crate::archive::find_zip_end(&z).is_some());
        let (f, s) = run(&z);
        assert!(s.findings.is_empty(), "{:?}", s.findings);
        assert_eq!(f.detail.as_deref(), Some("pytorch zip, 1 pickle, 2 storages"));
    }

    #[test]
    fn pickle_found_by_content_under_any_name() {
        let z = make_zip(&[("weights.txt", EVIL)], 0, false, None);
        let (f, s) = run(&z);
        assert_eq!(f.pickles, 1);
        let hit = s.findings.iter().find(|f| f.code == "pickle/code-execution").expect("found");
        assert_eq!(hit.location.file.as_deref(), Some("m.zip!weights.txt"));
    }

    #[test]
    fn flag_bits_crc_and_name_mismatch_are_reported_and_scanned() {
        let z = make_zip(&[("a/data.pkl", EVIL)], 0x41, false, None);
        let c = codes(&run(&z).1).join(" ");
        assert!(c.contains("zip/flag-bits") && c.contains("pickle/code-execution"), "{c}");
        let z = make_zip(&[("a/data.pkl", EVIL)], 0, true, None);
        let c = codes(&run(&z).1).join(" ");
        assert!(c.contains("zip/crc-mismatch") && c.contains("pickle/code-execution"), "{c}");
        let z = make_zip(&[("a/data.pkl", EVIL)], 0, false, Some("a/other.bin"));
        let c = codes(&run(&z).1).join(" ");
        assert!(c.contains("zip/name-mismatch") && c.contains("pickle/code-execution"), "{c}");
    }

    #[test]
    fn encrypted_member_is_a_finding() {
        let z = make_zip(&[("a/data.pkl", &[0x9c, 0x11, 0x42, 0xe7, 0x01, 0xfe, 0x33, 0x9a, 0x10, 0x20, 0x30, 0x40, 0x50])], 1, false, None);
        let s = run(&z).1;
        let c = codes(&s);
        assert!(c.contains(&"zip/encrypted"), "{c:?}");
    }

    #[test]
    fn nested_zip_and_prefix() {
        let inner = make_zip(&[("x/data.pkl", EVIL)], 0, false, None);
        let outer = make_zip(&[("inner.zip", &inner)], 0, false, None);
        let (f, s) = run(&outer);
        assert_eq!(f.pickles, 1);
        assert!(s.findings.iter().any(|f| f.location.file.as_deref() == Some("m.zip!inner.zip!x/data.pkl")));
        // A pickle in front of a zip (polyglot)
        let mut poly = EVIL.to_vec();
        poly.extend_from_slice(&make_zip(&[("a/data.pkl", CLEAN)], 0, false, None));
        let c = codes(&run(&poly).1).join(" ");
        assert!(c.contains("archive/polyglot") && c.contains("pickle/code-execution"), "{c}");
    }

    #[test]
    fn hidden_local_entry() {
        let mut z = make_zip(&[("hidden.pkl", EVIL)], 0, false, None);
        let visible = make_zip(&[("a.txt", b"hello")], 0, false, None);
        z.truncate(30 + "hidden.pkl".len() + EVIL.len());
        z.extend_from_slice(&visible);
        // the visible zip's offsets are relative to its own start: base adjusts for it
        let (_, s) = run(&z);
        let c = codes(&s).join(" ");
        assert!(c.contains("pickle/code-execution"), "{c}");
    }

    #[test]
    fn garbage_is_not_a_zip() {
        assert!(crate::archive::find_zip_end(b"PK\x05\x06 not really").is_none());
        let mut d = vec![0u8; 40];
        d.extend_from_slice(b"PK\x05\x06\0\0\0\0\x01\0\x01\0\x10\0\0\0\x05\0\0\0\0\0");
        assert!(crate::archive::find_zip_end(&d).is_none());
        let (_, s) = run(b"PK\x03\x04\x00");
        assert!(codes(&s).contains(&"archive/malformed"));
    }
}
