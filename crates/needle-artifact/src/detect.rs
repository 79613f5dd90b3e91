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

/// An 8-byte little-endian header length, then a JSON object. The length is not checked against
/// the file here (the safetensors checks report a length that is too large or runs past the end),
/// but its two top bytes must be zero (under 256 TB), which no JSON or text file starts with.
pub fn looks_like_safetensors(data: &[u8]) -> bool {
    if data.len() < 10 || data[6] != 0 || data[7] != 0 {
        return false;
    }
    let rest = trim_ascii_start(&data[8..]);
    rest.first() == Some(&b'{') && matches!(trim_ascii_start(&rest[1..]).first(), Some(b'"') | Some(b'}'))
}

/// The format a file's name claims, for the formats whose parsers should run on any content with
/// that name (so that a damaged `model.safetensors` is reported as damaged, not as "unknown").
pub fn claimed_by_name(name: &str) -> Option<Format> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".safetensors") {
        Some(Format::Safetensors)
    } else if lower.ends_with(".gguf") {
        Some(Format::Gguf)
    } else {
        None
    }
}

/// What a zip holds, from its first member's name: PyTorch's `<name>/data.pkl` layout or `.npz`.
pub fn zip_flavor(data: &[u8]) -> Option<&'static str> {
    if !data.starts_with(b"PK\x03\x04") || data.len() < 30 {
        return None;
    }
    let n = u16::from_le_bytes([data[26], data[27]]) as usize;
    let name = data.get(30..30 + n)?;
    let mut flavor = None;
    if name.ends_with(b".npy") {
        flavor = Some("NumPy archive (.npz)");
    } else if name.ends_with(b"data.pkl") || name.ends_with(b".data/version") || name.ends_with(b"/version") || name.ends_with(b"byteorder") {
        flavor = Some("PyTorch checkpoint (zip)");
    }
    flavor
}

/// A one-line description of what the target is, from its files' names and formats: a Hugging
/// Face folder (single or sharded safetensors, PyTorch `.bin`), a PEFT adapter, GGUF, or one file.
pub fn layout(set: &crate::inspect::FileSet, single_flavor: Option<&'static str>) -> String {
    let files = &set.files;
    if !set.target.is_dir {
        let Some(f) = files.first() else { return "empty".into() };
        let ext = f.name().rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
        return match f.format {
            Format::Safetensors => "safetensors file".into(),
            Format::Gguf => "GGUF file".into(),
            Format::Zip => single_flavor.unwrap_or("zip archive").into(),
            Format::Pickle if matches!(ext.as_str(), "bin" | "pt" | "pth" | "ckpt") => "PyTorch checkpoint (legacy pickle)".into(),
            Format::Pickle => "pickle file".into(),
            Format::Npy => "NumPy array (.npy)".into(),
            other => format!("{} file", other.name()),
        };
    }
    let top: Vec<&crate::inspect::FileEntry> = files.iter().filter(|f| !f.rel.contains('/')).collect();
    let has = |n: &str| top.iter().any(|f| f.rel == n);
    let count = |pred: &dyn Fn(&crate::inspect::FileEntry) -> bool| top.iter().filter(|f| pred(f)).count();
    let st = count(&|f| f.format == Format::Safetensors || f.name().ends_with(".safetensors"));
    let bins = count(&|f| f.name().starts_with("pytorch_model") && f.name().ends_with(".bin"));
    let ggufs = count(&|f| f.format == Format::Gguf || f.name().ends_with(".gguf"));
    let st_index = top.iter().any(|f| f.name().ends_with(".safetensors.index.json"));
    let bin_index = top.iter().any(|f| f.name().ends_with(".bin.index.json"));
    let weights = if st_index {
        format!("sharded safetensors, {st} files")
    } else if st > 0 {
        "safetensors".to_string()
    } else if bin_index {
        format!("sharded PyTorch .bin, {bins} files")
    } else if bins > 0 {
        "PyTorch .bin".to_string()
    } else if ggufs > 0 {
        format!("GGUF, {ggufs} files")
    } else {
        "no weights".to_string()
    };
    if has("adapter_config.json") {
        format!("PEFT adapter ({weights})")
    } else if has("config.json") {
        format!("Hugging Face model ({weights})")
    } else if ggufs > 0 && st == 0 && bins == 0 {
        format!("GGUF folder ({ggufs} files)")
    } else {
        format!("loose files ({weights})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_content() {
        assert_eq!(sniff(b""), Format::Empty);
        assert_eq!(sniff(b"GGUF\x03\x00\x00\x00"), Format::Gguf);
        assert_eq!(claimed_by_name("Model.SafeTensors"), Some(Format::Safetensors));
        assert_eq!(claimed_by_name("x.gguf"), Some(Format::Gguf));
        assert_eq!(claimed_by_name("x.bin"), None);
        let mut z = b"PK\x03\x04".to_vec();
        z.extend_from_slice(&[0u8; 22]);
        z.extend_from_slice(&16u16.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(b"archive/data.pkl");
        assert_eq!(zip_flavor(&z), Some("PyTorch checkpoint (zip)"));
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
        // A length past the end still reads as safetensors (the checks report it)...
        let mut st = 4096u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{\"a\":{}}");
        assert_eq!(sniff(&st), Format::Safetensors);
        // ...but JSON whose ninth byte happens to be `{` does not.
        assert_eq!(sniff(b"{\"abcd\":{\"e\":1}}"), Format::Json);
    }
}
