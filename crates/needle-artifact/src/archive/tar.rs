//! Tar (v7, ustar, GNU long names, pax `path`): members are slices of the input, never copied.

use super::{inspect_member, inspect_trailing_zip, ArchiveFacts, MALFORMED};
use crate::inspect::{FileCtx, Sink};
use crate::limits;

/// Octal (NUL/space padded) or GNU base-256 number.
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let s: Vec<u8> = field.iter().copied().skip_while(|b| *b == b' ').take_while(|b| (b'0'..=b'7').contains(b)).collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

fn cstr(field: &[u8]) -> String {
    let n = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..n]).into_owned()
}

fn checksum_ok(h: &[u8]) -> bool {
    let Some(stored) = h.get(148..156).and_then(number) else { return false };
    let sum: u64 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { b as u64 }).sum();
    sum == stored
}

/// `path=` from a pax extended header.
fn pax_path(body: &[u8]) -> Option<String> {
    let mut rest = body;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        let rec = rest.get(sp + 1..len)?;
        if let Some(v) = rec.strip_prefix(b"path=") {
            return Some(String::from_utf8_lossy(v.strip_suffix(b"\n").unwrap_or(v)).into_owned());
        }
        rest = rest.get(len..)?;
    }
    None
}

pub fn inspect(ctx: &FileCtx, sink: &mut Sink) -> ArchiveFacts {
    let data = ctx.data;
    let mut off = 0usize;
    let mut members = 0usize;
    let mut pickles = 0usize;
    let mut next_name: Option<String> = None;
    let mut end = data.len();
    while let Some(h) = data.get(off..off + 512) {
        if h.iter().all(|&b| b == 0) {
            end = off + 512;
            if data.get(off + 512..off + 1024).is_some_and(|n| n.iter().all(|&b| b == 0)) {
                end = off + 1024;
            }
            break;
        }
        if !checksum_ok(h) {
            sink.push(MALFORMED.finding(format!("{}: tar header checksum wrong at 0x{off:x}; stopped reading", ctx.rel)).file(ctx.rel.to_string()));
            end = off;
            break;
        }
        if members >= limits::MAX_ARCHIVE_ENTRIES {
            sink.push(MALFORMED.finding(format!("{}: more than {} tar entries; the rest was not read", ctx.rel, limits::MAX_ARCHIVE_ENTRIES)).file(ctx.rel.to_string()));
            break;
        }
        let size = number(&h[124..136]).unwrap_or(0);
        let kind = h[156];
        let body_start = off + 512;
        let body_end = usize::try_from(size).ok().and_then(|s| body_start.checked_add(s));
        let body = match body_end.and_then(|e| data.get(body_start..e)) {
            Some(b) => b,
            None => {
                sink.push(MALFORMED.finding(format!("{}: tar member at 0x{off:x} runs past the end", ctx.rel)).file(ctx.rel.to_string()));
                data.get(body_start..).unwrap_or(&[])
            }
        };
        let mut name = cstr(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if let Some(n) = next_name.take() {
            name = n;
        }
        match kind {
            b'L' => next_name = Some(cstr(body)),
            b'x' => next_name = pax_path(body),
            b'0' | 0 | b'7' => {
                members += 1;
                let rel = format!("{}!{name}", ctx.rel);
                pickles += inspect_member(&rel, body, ctx.depth, sink).pickles;
            }
            _ => {}
        }
        let padded = size.div_ceil(512).saturating_mul(512);
        match usize::try_from(padded).ok().and_then(|p| body_start.checked_add(p)) {
            Some(n) => off = n,
            None => break,
        }
    }
    // A zip appended after the tar's end (a polyglot).
    inspect_trailing_zip(ctx, end.min(data.len()), sink);
    ArchiveFacts { detail: Some(format!("tar, {members} members, {pickles} pickles")), pickles, members }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tar_entry(name: &str, body: &[u8]) -> Vec<u8> {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{:011o}", body.len()).as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut out = h.to_vec();
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    #[test]
    fn tar_members_are_scanned() {
        let mut t = tar_entry("model/weights.bin", b"\x80\x02cos\nsystem\n.");
        t.extend_from_slice(&[0u8; 1024]);
        let mut sink = Sink::default();
        let f = inspect(&FileCtx { rel: "m.tar", data: &t, depth: 0 }, &mut sink);
        assert_eq!(f.pickles, 1);
        assert!(sink.findings.iter().any(|f| f.location.file.as_deref() == Some("m.tar!model/weights.bin")));
        assert_eq!(crate::detect::sniff(&t), crate::detect::Format::Tar);
    }

    #[test]
    fn bad_checksum_stops() {
        let mut t = tar_entry("a", b"x");
        t[0] = b'b';
        let mut sink = Sink::default();
        inspect(&FileCtx { rel: "m.tar", data: &t, depth: 0 }, &mut sink);
        assert_eq!(sink.findings[0].code, "archive/malformed");
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"\x80\0\0\0\0\0\0\0\0\0\x01\0"), Some(256));
        assert_eq!(number(b"\0\0\0"), Some(0));
    }
}
