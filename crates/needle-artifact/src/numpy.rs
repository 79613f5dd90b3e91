//! NumPy `.npy`: the header is parsed; object arrays (`dtype` with `O`) store their payload as
//! a pickle, which `np.load(allow_pickle=True)` executes: it is reported and scanned. `.npz`
//! files are zips of `.npy` members and reach here through the archive recursion.

use crate::inspect::{FileCtx, Sink};
use needle_report::{Rule, Severity};

pub static OBJECT_ARRAY: Rule = Rule {
    code: "numpy/object-array",
    severity: Severity::High,
    summary: "a .npy array of Python objects: its payload is a pickle that np.load(allow_pickle=True) runs",
    fix: "store numeric arrays only; never load this file with allow_pickle=True",
};
pub static MALFORMED: Rule = Rule {
    code: "numpy/malformed",
    severity: Severity::Medium,
    summary: "the .npy header is unreadable or does not match the data",
    fix: "re-create the file with numpy.save",
};

pub static RULES: &[&Rule] = &[&OBJECT_ARRAY, &MALFORMED];

/// Largest header read (NumPy itself refuses headers over 10000 bytes unless told otherwise).
const MAX_HEADER: usize = 1 << 20;

/// The parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    pub version: (u8, u8),
    pub descr: String,
    pub shape: Vec<u64>,
    /// Offset of the data.
    pub data_offset: usize,
}

impl NpyHeader {
    pub fn is_object(&self) -> bool {
        // Any field (structured dtypes are lists) whose type is `O`.
        self.descr.split(['\'', '"']).any(|tok| matches!(tok.trim(), "O" | "|O" | "<O" | ">O" | "=O" | "O8" | "|O8" | "object"))
    }
}

pub fn parse_header(data: &[u8]) -> Result<NpyHeader, String> {
    if !data.starts_with(b"\x93NUMPY") {
        return Err("no NUMPY magic".into());
    }
    let (major, minor) = (*data.get(6).ok_or("truncated")?, *data.get(7).ok_or("truncated")?);
    let (len, start) = match major {
        1 => (u16::from_le_bytes([*data.get(8).ok_or("truncated")?, *data.get(9).ok_or("truncated")?]) as usize, 10),
        2 | 3 => {
            let b = data.get(8..12).ok_or("truncated")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(format!("unknown format version {v}.{minor}")),
    };
    if len > MAX_HEADER {
        return Err(format!("header of {len} bytes"));
    }
    let h = data.get(start..start + len).ok_or("header runs past the end")?;
    let h = std::str::from_utf8(h).map_err(|_| "header is not text")?;
    let descr = dict_value(h, "descr").ok_or("no 'descr' in the header")?;
    let shape_s = dict_value(h, "shape").ok_or("no 'shape' in the header")?;
    let mut shape = Vec::new();
    for part in shape_s.trim_matches(|c| c == '(' || c == ')').split(',') {
        let p = part.trim().trim_end_matches('L');
        if p.is_empty() {
            continue;
        }
        shape.push(p.parse::<u64>().map_err(|_| format!("bad shape {shape_s}"))?);
    }
    Ok(NpyHeader { version: (major, minor), descr: descr.to_string(), shape, data_offset: start + len })
}

/// The raw text of `'key': value` in a Python dict literal (value up to the matching bracket
/// or the closing quote).
fn dict_value<'h>(h: &'h str, key: &str) -> Option<&'h str> {
    let k = h.find(&format!("'{key}'")).or_else(|| h.find(&format!("\"{key}\"")))?;
    let rest = h.get(k + key.len() + 2..)?;
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let first = rest.chars().next()?;
    let end = match first {
        '\'' | '"' => rest.get(1..)?.find(first)? + 2,
        '(' | '[' => {
            let close = if first == '(' { ')' } else { ']' };
            let mut depth = 0i32;
            let mut end = None;
            for (i, c) in rest.char_indices() {
                if c == first {
                    depth += 1;
                } else if c == close {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
            }
            end?
        }
        _ => rest.find([',', '}'])?,
    };
    rest.get(..end)
}

fn itemsize(descr: &str) -> Option<u64> {
    let d = descr.trim_matches(|c| c == '\'' || c == '"');
    let d = d.trim_start_matches(['<', '>', '|', '=']);
    let (kind, n) = d.split_at(d.find(|c: char| c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    Some(match kind {
        "U" => n * 4,
        "b" | "i" | "u" | "f" | "c" | "S" | "V" | "M" | "m" => n,
        _ => return None,
    })
}

/// Returns a one-line detail for the inventory.
pub fn inspect(ctx: &FileCtx, sink: &mut Sink) -> Option<String> {
    let h = match parse_header(ctx.data) {
        Ok(h) => h,
        Err(why) => {
            sink.push(MALFORMED.finding(format!("{}: {why}", ctx.rel)).file(ctx.rel.to_string()));
            return Some("npy, unreadable header".into());
        }
    };
    let shape = h.shape.iter().map(u64::to_string).collect::<Vec<_>>().join("x");
    let payload = ctx.data.get(h.data_offset..).unwrap_or(&[]);
    if h.is_object() {
        sink.push(
            OBJECT_ARRAY
                .finding(format!("{}: object array (dtype {}); its {} payload bytes are a pickle", ctx.rel, h.descr, payload.len()))
                .file(ctx.rel.to_string())
                .at(format!("offset 0x{:x}", h.data_offset))
                .evidence(format!("descr {}", h.descr)),
        );
        let inner = FileCtx { rel: ctx.rel, data: payload, depth: ctx.depth };
        crate::pickle::inspect_stream(&inner, &format!("npy payload at 0x{:x}, ", h.data_offset), sink);
        return Some(format!("npy object array, shape {shape}"));
    }
    if let Some(size) = itemsize(&h.descr) {
        let want = h.shape.iter().try_fold(size, |a, &d| a.checked_mul(d));
        match want {
            Some(w) if w <= payload.len() as u64 => {}
            _ => sink.push(
                MALFORMED
                    .finding(format!("{}: shape {shape} of {} needs {} bytes, {} present", ctx.rel, h.descr, want.map_or("too many".into(), |w| w.to_string()), payload.len()))
                    .file(ctx.rel.to_string()),
            ),
        }
    }
    Some(format!("npy v{}.{}, {} {shape}", h.version.0, h.version.1, h.descr.trim_matches('\'')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, payload: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut d = b"\x93NUMPY\x01\x00".to_vec();
        d.extend_from_slice(&(h.len() as u16).to_le_bytes());
        d.extend_from_slice(h.as_bytes());
        d.extend_from_slice(payload);
        d
    }

    #[test]
    fn float_array() {
        let d = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", &[0u8; 24]);
        let mut sink = Sink::default();
        let detail = inspect(&FileCtx { rel: "a.npy", data: &d, depth: 0 }, &mut sink);
        assert!(sink.findings.is_empty(), "{:?}", sink.findings);
        assert_eq!(detail.as_deref(), Some("npy v1.0, <f4 2x3"));
        let d = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", &[0u8; 20]);
        let mut sink = Sink::default();
        inspect(&FileCtx { rel: "a.npy", data: &d, depth: 0 }, &mut sink);
        assert_eq!(sink.findings[0].code, "numpy/malformed");
    }

    #[test]
    fn object_array_payload_is_scanned() {
        let d = npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\x80\x03cos\nsystem\n.");
        let mut sink = Sink::default();
        inspect(&FileCtx { rel: "a.npy", data: &d, depth: 0 }, &mut sink);
        let codes: Vec<_> = sink.findings.iter().map(|f| f.code.as_str()).collect();
        assert!(codes.contains(&"numpy/object-array") && codes.contains(&"pickle/code-execution"), "{codes:?}");
    }

    #[test]
    fn structured_with_object_field() {
        let h = parse_header(&npy("{'descr': [('a', '<f4'), ('b', '|O')], 'fortran_order': False, 'shape': (3,), }", &[])).expect("parses");
        assert!(h.is_object());
        assert_eq!(h.shape, [3]);
        let h = parse_header(&npy("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", &[])).expect("parses");
        assert!(!h.is_object() && h.shape.is_empty());
    }

    #[test]
    fn broken_headers() {
        assert!(parse_header(b"\x93NUMPY\x09\x00").is_err());
        assert!(parse_header(b"\x93NUMPY\x01\x00\xff\xff{").is_err());
    }
}
