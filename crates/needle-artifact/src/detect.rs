//! Format detection by content, never by extension.

use serde::Serialize;

/// What a file is, judged from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Safetensors,
    Gguf,
    /// A zip archive (PyTorch's zip format, `.npz`, or any zip), found by its local header or,
    /// for polyglots with a prefix, by its end-of-central-directory record.
    Zip,
    Tar,
    SevenZip,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
    /// A pickle stream (protocol 2+ by its PROTO header; 0/1 by a plausible opcode stream).
    Pickle,
    Npy,
    Json,
    Elf,
    MachO,
    Pe,
    /// A text file starting with `#!`.
    Script,
    Text,
    Empty,
    Unknown,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::Gguf => "gguf",
            Format::Zip => "zip",
            Format::Tar => "tar",
            Format::SevenZip => "7z",
            Format::Gzip => "gzip",
            Format::Bzip2 => "bzip2",
            Format::Xz => "xz",
            Format::Zstd => "zstd",
            Format::Pickle => "pickle",
            Format::Npy => "npy",
            Format::Json => "json",
            Format::Elf => "elf-executable",
            Format::MachO => "mach-o-executable",
            Format::Pe => "pe-executable",
            Format::Script => "script",
            Format::Text => "text",
            Format::Empty => "empty",
            Format::Unknown => "unknown",
        }
    }

    /// Native code or a script: never expected in a model folder.
    pub fn is_executable(self) -> bool {
        matches!(self, Format::Elf | Format::MachO | Format::Pe | Format::Script)
    }
}

/// Detects the format of `data` (the whole file, usually memory-mapped).
pub fn sniff(data: &[u8]) -> Format {
    if data.is_empty() {
        return Format::Empty;
    }
    if data.starts_with(b"GGUF") {
        return Format::Gguf;
    }
    if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
        return Format::Zip;
    }
    if data.starts_with(b"7z\xbc\xaf\x27\x1c") {
        return Format::SevenZip;
    }
    if data.starts_with(b"\x1f\x8b") {
        return Format::Gzip;
    }
    if data.starts_with(b"BZh") && data.len() > 3 && data[3].is_ascii_digit() {
        return Format::Bzip2;
    }
    if data.starts_with(b"\xfd7zXZ\x00") {
        return Format::Xz;
    }
    if data.starts_with(b"\x28\xb5\x2f\xfd") {
        return Format::Zstd;
    }
    if data.starts_with(b"\x93NUMPY") {
        return Format::Npy;
    }
    if data.starts_with(b"\x7fELF") {
        return Format::Elf;
    }
    if data.len() >= 4 {
        let m = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        if matches!(m, 0xfeedface | 0xfeedfacf | 0xcefaedfe | 0xcffaedfe | 0xcafebabe) {
            return Format::MachO;
        }
    }
    if data.starts_with(b"MZ") && data.len() >= 64 {
        return Format::Pe;
    }
    if data.len() >= 262 && &data[257..262] == b"ustar" {
        return Format::Tar;
    }
    if looks_like_safetensors(data) {
        return Format::Safetensors;
    }
    if data.len() >= 2 && data[0] == 0x80 && (2..=5).contains(&data[1]) {
        return Format::Pickle;
    }
    if data.starts_with(b"#!") {
        return Format::Script;
    }
    if looks_like_json(data) {
        return Format::Json;
    }
    if crate::pickle::looks_like_low_protocol(data) {
        return Format::Pickle;
    }
    if crate::archive::find_zip_end(data).is_some() {
        // A zip with something before it (a polyglot): PyTorch and Python's zipfile both open it.
        return Format::Zip;
    }
    if is_text(head(data, 8192)) {
        return Format::Text;
    }
    Format::Unknown
}

/// `{` followed by `"` or `}`, or `[`: a Jinja `{%`/`{{` is not JSON.
fn looks_like_json(data: &[u8]) -> bool {
    let t = trim_ascii_start(data);
    if std::str::from_utf8(head(data, 4096)).is_err() {
        return false;
    }
    match t.first() {
        Some(b'{') => matches!(trim_ascii_start(&t[1..]).first(), Some(b'"') | Some(b'}')),
        Some(b'[') => !t[1..].starts_with(b"[") || t.len() > 2,
        _ => false,
    }
}

fn head(data: &[u8], n: usize) -> &[u8] {
    let mut end = data.len().min(n);
    // Do not cut a UTF-8 sequence in half.
    while end < data.len() && end > 0 && (data[end] & 0xc0) == 0x80 {
        end -= 1;
    }
    &data[..end]
}

fn trim_ascii_start(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &d[n..]
}

fn is_text(d: &[u8]) -> bool {
    std::str::from_utf8(d).is_ok() && !d.iter().any(|&b| b == 0 || (b < 0x20 && !b"\n\r\t\x0c".contains(&b)))
}

/// An 8-byte little-endian header length, then a JSON object within the file.
pub fn looks_like_safetensors(data: &[u8]) -> bool {
    if data.len() < 10 {
        return false;
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&data[..8]);
    let n = u64::from_le_bytes(n);
    n >= 2 && n <= (data.len() as u64 - 8) && trim_ascii_start(&data[8..]).first() == Some(&b'{')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_content() {
        assert_eq!(sniff(b""), Format::Empty);
        assert_eq!(sniff(b"GGUF\x03\x00\x00\x00"), Format::Gguf);
        assert_eq!(sniff(b"PK\x03\x04rest"), Format::Zip);
        assert_eq!(sniff(b"\x80\x02}q\x00."), Format::Pickle);
        assert_eq!(sniff(b"\x93NUMPY\x01\x00"), Format::Npy);
        assert_eq!(sniff(b"#!/bin/sh\necho hi\n"), Format::Script);
        assert_eq!(sniff(b"{\"a\": 1}"), Format::Json);
        assert_eq!(sniff(b"hello world\n"), Format::Text);
        assert_eq!(sniff(b"{% for m in messages %}{{ m }}{% endfor %}"), Format::Text);
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{}");
        assert_eq!(sniff(&st), Format::Safetensors);
    }
}
