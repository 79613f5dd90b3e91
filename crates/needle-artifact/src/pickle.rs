//! Pickle: an opcode analyser for protocols 0-5 that executes nothing.
//!
//! One pass over the (memory-mapped) bytes with a symbolic stack and memo ([`scan`]); every
//! imported global is judged against the `torch.load(weights_only=True)` allowlist
//! ([`globals`]). Stacked pickles (legacy PyTorch files hold five), pickles nested in bytes
//! literals and zips appended to a pickle (polyglots) are followed.

pub mod globals;
pub mod scan;

use crate::inspect::{FileCtx, Sink};
use globals::Verdict;
use needle_report::{Finding, Rule, Severity};
use scan::{Anomaly, Options, PickleScan};

pub static CODE_EXECUTION: Rule = Rule {
    code: "pickle/code-execution",
    severity: Severity::Critical,
    summary: "pickle imports a callable that runs code or reaches processes, files or the network",
    fix: "do not load this file; get the weights as safetensors from a trusted source",
};
pub static NESTED_PICKLE: Rule = Rule {
    code: "pickle/nested-pickle",
    severity: Severity::Critical,
    summary: "pickle calls a loader that unpickles or unmarshals another stream",
    fix: "do not load this file; the inner stream is invisible to loaders' allowlists",
};
pub static UNSAFE_GLOBAL: Rule = Rule {
    code: "pickle/unsafe-global",
    severity: Severity::High,
    summary: "pickle imports a global that torch.load(weights_only=True) does not allow",
    fix: "re-save the weights as safetensors, or review the class and load with weights_only=True and add_safe_globals",
};
pub static NUMPY_GLOBAL: Rule = Rule {
    code: "pickle/numpy-global",
    severity: Severity::Medium,
    summary: "pickle rebuilds NumPy arrays, which torch.load(weights_only=True) refuses by default",
    fix: "store arrays as tensors or in safetensors/.npy (without allow_pickle)",
};
pub static UNRESOLVED_GLOBAL: Rule = Rule {
    code: "pickle/unresolved-global",
    severity: Severity::High,
    summary: "STACK_GLOBAL operands are not strings the analyser can resolve",
    fix: "treat the file as hostile; a loader would import whatever the operands become",
};
pub static UNSAFE_BUILD: Rule = Rule {
    code: "pickle/unsafe-build",
    severity: Severity::High,
    summary: "BUILD sets state on a class, a function or an object outside the allowlist (__setstate__/setattr)",
    fix: "do not load this file; BUILD outside tensors and OrderedDict runs arbitrary __setstate__ code",
};
pub static INDIRECT_CALL: Rule = Rule {
    code: "pickle/indirect-call",
    severity: Severity::High,
    summary: "pickle calls something that is not an imported global (the result of another call)",
    fix: "do not load this file; call chains such as getattr(...)(...) reach any attribute",
};
pub static EXTENSION_CODE: Rule = Rule {
    code: "pickle/extension-code",
    severity: Severity::High,
    summary: "pickle imports through the copyreg extension registry (EXT1/EXT2/EXT4)",
    fix: "do not load this file; extension codes resolve to globals registered at run time",
};
pub static MALFORMED: Rule = Rule {
    code: "pickle/malformed",
    severity: Severity::Medium,
    summary: "the pickle stream is broken (invalid opcode, truncated, no STOP)",
    fix: "re-create the file; loaders differ on broken streams and scanners may stop early",
};
pub static MEMO_ANOMALY: Rule = Rule {
    code: "pickle/memo-anomaly",
    severity: Severity::Medium,
    summary: "memo reads a key never written, or writes far past its size",
    fix: "re-create the file; no pickler writes such a memo",
};
pub static EXPANSION_BOMB: Rule = Rule {
    code: "pickle/expansion-bomb",
    severity: Severity::High,
    summary: "pickle grows the stack, memo or a shared structure past sane limits",
    fix: "do not load this file; it exhausts memory or time when loaded",
};
pub static PARSER_DIFFERENTIAL: Rule = Rule {
    code: "pickle/parser-differential",
    severity: Severity::Medium,
    summary: "loaders and scanners can read different opcodes from this stream (FRAME tricks, odd line endings)",
    fix: "re-create the file with a standard pickler; such streams exist to fool scanners",
};
pub static STACKED: Rule = Rule {
    code: "pickle/stacked",
    severity: Severity::Medium,
    summary: "several pickles follow each other in one file",
    fix: "make sure every stacked pickle is expected; loaders may read more than the first",
};

pub static RULES: &[&Rule] = &[
    &CODE_EXECUTION,
    &NESTED_PICKLE,
    &UNSAFE_GLOBAL,
    &NUMPY_GLOBAL,
    &UNRESOLVED_GLOBAL,
    &UNSAFE_BUILD,
    &INDIRECT_CALL,
    &EXTENSION_CODE,
    &MALFORMED,
    &MEMO_ANOMALY,
    &EXPANSION_BOMB,
    &PARSER_DIFFERENTIAL,
    &STACKED,
];

/// Pickles read from one file at most (a legacy PyTorch file has five).
pub const MAX_STACKED: usize = 64;
/// Findings of one code per file; more are counted in the last one.
const MAX_PER_CODE: usize = 20;

/// The pickle that starts a legacy (non-zip) `torch.save` file: protocol 2, LONG1 of
/// `0x1950a86a20f9469cfc6c` (torch.serialization.MAGIC_NUMBER), STOP.
const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";

#[derive(Debug, Clone, Default)]
pub struct PickleFacts {
    pub detail: Option<String>,
    /// Pickles read.
    pub pickles: usize,
    /// Persistent ids (PyTorch storages) referenced.
    pub persistent_ids: u64,
    /// Where the last pickle ended (trailing bytes start here).
    pub end: usize,
}

/// Scans every pickle in `ctx.data` (stacked pickles included).
pub fn inspect(ctx: &FileCtx, sink: &mut Sink) -> PickleFacts {
    let facts = inspect_stream(ctx, "", sink);
    // A zip appended to a pickle (a polyglot): PyTorch would read the pickle, zip tools the zip.
    if facts.end < ctx.data.len() {
        crate::archive::inspect_trailing_zip(ctx, facts.end, sink);
    }
    facts
}

/// Scans the pickles in `ctx.data`; `at_prefix` goes before locations (`npy payload, `).
pub fn inspect_stream(ctx: &FileCtx, at_prefix: &str, sink: &mut Sink) -> PickleFacts {
    let data = ctx.data;
    let legacy = data.starts_with(LEGACY_MAGIC);
    let mut scans: Vec<PickleScan> = Vec::new();
    let mut pos = 0usize;
    let opts = Options::default();
    while pos < data.len() && scans.len() < MAX_STACKED {
        let rest = &data[pos..];
        if !scans.is_empty() {
            // After the first pickle, continue only while what follows is a pickle.
            if legacy && scans.len() >= 5 {
                break; // raw storage bytes follow the five pickles
            }
            if !starts_like_pickle(rest) {
                break;
            }
        }
        let s = scan::scan(data, pos, &opts);
        let stopped = s.stopped;
        let end = s.end;
        scans.push(s);
        if !stopped || end <= pos {
            break;
        }
        pos = end;
    }
    let mut findings = Findings::new(ctx.rel);
    let n = scans.len();
    for (i, s) in scans.iter().enumerate() {
        let where_ = if n > 1 { format!("{at_prefix}pickle {} of {n}, ", i + 1) } else { at_prefix.to_string() };
        report_scan(s, &where_, &mut findings);
    }
    let trailing = data.len().saturating_sub(pos);
    if n > 1 {
        let expected_legacy = legacy && n == 5;
        let f = STACKED
            .finding(if expected_legacy {
                format!("{}: legacy PyTorch file, 5 stacked pickles and {trailing} bytes of storages", ctx.rel)
            } else {
                format!("{}: {n} pickles stacked in one file", ctx.rel)
            })
            .severity(if expected_legacy { Severity::Info } else { Severity::Medium })
            .at(format!("{at_prefix}offsets {}", scans.iter().map(|s| format!("0x{:x}", s.start)).collect::<Vec<_>>().join(", ")));
        findings.push(f);
    }
    findings.flush(sink);
    let persistent_ids: u64 = scans.iter().map(|s| s.persistent_ids).sum();
    let proto = scans.first().and_then(|s| s.proto).map_or("0/1".to_string(), |p| p.to_string());
    let mut detail = if legacy && n == 5 {
        format!("legacy pytorch, protocol {proto}, 5 pickles")
    } else if n == 1 {
        format!("pickle protocol {proto}")
    } else {
        format!("pickle protocol {proto}, {n} pickles")
    };
    if persistent_ids > 0 {
        detail.push_str(&format!(", {persistent_ids} storages"));
    }
    PickleFacts { detail: Some(detail), pickles: n, persistent_ids, end: pos }
}

/// Whether `rest` starts another pickle (PROTO 2-5, or a plausible protocol 0/1 stream).
fn starts_like_pickle(rest: &[u8]) -> bool {
    (rest.len() >= 2 && rest[0] == 0x80 && (2..=5).contains(&rest[1])) || looks_like_low_protocol(rest)
}

/// Opcodes a protocol 0/1 pickle plausibly starts with.
const LOW_START: &[u8] = b"(]})cNIJKLMFGSVUTXd";

/// Whether `data` plausibly is a protocol 0/1 pickle (no PROTO header): the first opcode is a
/// usual first opcode and a prefix of up to 64 KiB parses as valid opcodes, reaching STOP
/// after at least three opcodes or running on for at least 32 opcodes without an error. A
/// stream that imports a global within its first opcodes and breaks later is a pickle too
/// (a loader runs the payload before it reaches the break).
pub fn looks_like_low_protocol(data: &[u8]) -> bool {
    let Some(first) = data.first() else { return false };
    if !LOW_START.contains(first) {
        return false;
    }
    let opts = Options { nested: 0, max_bytes: 64 * 1024, quiet: true };
    let s = scan::scan(data, 0, &opts);
    if s.error.is_some() {
        return s.imports > 0 && s.opcodes >= 4;
    }
    if s.stopped {
        // `N.` alone, or any two-opcode pickle, is too weak for random bytes.
        return s.opcodes >= 3 || data.len() == 2;
    }
    s.opcodes >= 32
}

/// Collects findings for one file with per-code caps.
pub(crate) struct Findings<'r> {
    rel: &'r str,
    out: Vec<Finding>,
    counts: std::collections::HashMap<&'static str, usize>,
}

impl<'r> Findings<'r> {
    pub(crate) fn new(rel: &'r str) -> Self {
        Findings { rel, out: Vec::new(), counts: std::collections::HashMap::new() }
    }

    fn code_of(f: &Finding) -> &'static str {
        RULES.iter().find(|r| r.code == f.code).map_or("other", |r| r.code)
    }

    pub(crate) fn push(&mut self, f: Finding) {
        let c = self.counts.entry(Self::code_of(&f)).or_insert(0);
        *c += 1;
        if *c <= MAX_PER_CODE {
            self.out.push(f.file(self.rel.to_string()));
        }
    }

    pub(crate) fn flush(self, sink: &mut Sink) {
        for f in self.out {
            sink.push(f);
        }
        let mut over: Vec<_> = self.counts.into_iter().filter(|(_, n)| *n > MAX_PER_CODE).collect();
        over.sort();
        for (code, n) in over {
            if let Some(rule) = RULES.iter().find(|r| r.code == code) {
                sink.push(
                    rule.finding(format!("{}: {} more `{code}` findings not listed", self.rel, n - MAX_PER_CODE))
                        .file(self.rel.to_string()),
                );
            }
        }
    }
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

/// Turns one scan (and the pickles nested in its bytes literals) into findings.
fn report_scan(s: &PickleScan, where_: &str, out: &mut Findings) {
    let rel = out.rel.to_string();
    for g in &s.globals {
        let full = format!("{}.{}", g.module.trim_end(), g.name.trim_end());
        let (rule, why) = match g.verdict {
            Verdict::Allowed => continue,
            Verdict::Critical(why) => (&CODE_EXECUTION, why.to_string()),
            Verdict::NestedLoad => (&NESTED_PICKLE, "loads a nested pickle/marshal stream".to_string()),
            Verdict::Numpy => (&NUMPY_GLOBAL, "numpy array reconstruction".to_string()),
            Verdict::Unknown => (&UNSAFE_GLOBAL, "not on the weights_only allowlist".to_string()),
        };
        let mut msg = format!("{rel}: pickle imports {full} ({why})");
        if globals::is_odd_name(&g.module, &g.name) {
            msg.push_str("; the name is not a plain dotted identifier");
        } else if g.name.contains('.') {
            msg.push_str("; dotted name walks attributes");
        }
        if g.call_count > 0 {
            msg.push_str(&format!(" and calls it {} time(s)", g.call_count));
        }
        if g.popped {
            msg.push_str(", discarding the result");
        }
        let mut f = rule
            .finding(msg)
            .at(format!("{where_}offset 0x{:x}", g.at))
            .evidence(format!("{} {} {} at 0x{:x}", g.how, q(&g.module), q(&g.name), g.at));
        for (op, at) in &g.calls {
            f = f.evidence(format!("{op} at 0x{at:x}"));
        }
        if g.popped {
            f = f.evidence("result discarded by POP");
        }
        if g.built {
            f = f.evidence("state set by BUILD");
        }
        if g.count > 1 {
            f = f.evidence(format!("imported {} times", g.count));
        }
        out.push(f);
    }
    for a in &s.anomalies {
        let f = match a {
            Anomaly::UnresolvedGlobal { at, what } => UNRESOLVED_GLOBAL
                .finding(format!("{rel}: STACK_GLOBAL with {what}"))
                .at(format!("{where_}offset 0x{at:x}"))
                .evidence(format!("STACK_GLOBAL at 0x{at:x}: {what}")),
            Anomaly::MissingMemo { at, key } => MEMO_ANOMALY
                .finding(format!("{rel}: memo key {key} read before it was written"))
                .at(format!("{where_}offset 0x{at:x}"))
                .evidence(format!("GET {key} at 0x{at:x}")),
            Anomaly::SparseMemo { at, key } => MEMO_ANOMALY
                .finding(format!("{rel}: memo key {key} far past the memo size (memory exhaustion in CPython's unpickler)"))
                .at(format!("{where_}offset 0x{at:x}"))
                .evidence(format!("PUT {key} at 0x{at:x}")),
            Anomaly::Bomb { at, what } => EXPANSION_BOMB
                .finding(format!("{rel}: {what}"))
                .at(format!("{where_}offset 0x{at:x}"))
                .evidence(what.clone()),
            Anomaly::UnsafeBuild { at, what } => UNSAFE_BUILD
                .finding(format!("{rel}: {what}"))
                .at(format!("{where_}offset 0x{at:x}"))
                .evidence(format!("BUILD at 0x{at:x}")),
            Anomaly::IndirectCall { at, op } => INDIRECT_CALL
                .finding(format!("{rel}: {op} calls the result of another call"))
                .at(format!("{where_}offset 0x{at:x}"))
                .evidence(format!("{op} at 0x{at:x}")),
            Anomaly::Extension { at, code } => EXTENSION_CODE
                .finding(format!("{rel}: pickle imports extension code {code}"))
                .at(format!("{where_}offset 0x{at:x}"))
                .evidence(format!("EXT {code} at 0x{at:x}")),
            Anomaly::Differential { at, what } => PARSER_DIFFERENTIAL
                .finding(format!("{rel}: {what}"))
                .at(format!("{where_}offset 0x{at:x}"))
                .evidence(what.clone()),
        };
        out.push(f);
    }
    if let Some((at, msg)) = &s.error {
        let before = s.globals.iter().filter(|g| g.verdict != Verdict::Allowed).count();
        // Two bytes that happen to read as PROTO (tensor data, say), then nothing valid: not
        // a pickle any loader could read. Still said, quietly.
        let barely = s.opcodes < 4 && s.globals.is_empty() && s.anomalies.is_empty() && s.nested.is_empty();
        let mut f = MALFORMED
            .finding(format!("{rel}: pickle stream broken at 0x{at:x}: {msg}"))
            .at(format!("{where_}offset 0x{at:x}"))
            .evidence(msg.clone());
        if before > 0 {
            f = f.evidence(format!("{before} non-allowlisted global(s) imported before the break"));
        }
        if barely {
            f = f.severity(Severity::Low);
        }
        out.push(f);
    }
    for (off, nested) in &s.nested {
        report_scan(nested, &format!("{where_}pickle in bytes at 0x{off:x}, "), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(data: &[u8]) -> (PickleFacts, Sink) {
        let mut sink = Sink::default();
        let ctx = FileCtx { rel: "x.bin", data, depth: 0 };
        let f = inspect(&ctx, &mut sink);
        (f, sink)
    }

    fn codes(s: &Sink) -> Vec<&str> {
        s.findings.iter().map(|f| f.code.as_str()).collect()
    }

    #[test]
    fn clean_state_dict_has_no_findings() {
        // OrderedDict with one tensor rebuilt from a persistent-id storage (torch.save layout).
        let p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00wq\x02ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tq\x06QK\x00K\x04\x85K\x01\x85\x89h\x00)Rtq\x07Rq\x08s.";
        let (f, s) = run(p);
        assert!(s.findings.is_empty(), "{:?}", s.findings);
        assert_eq!(f.persistent_ids, 1);
        assert_eq!(f.detail.as_deref(), Some("pickle protocol 2, 1 storages"));
    }

    #[test]
    fn payload_is_critical() {
        let (_, s) = run(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.");
        assert_eq!(codes(&s), ["pickle/code-execution"]);
        assert_eq!(s.findings[0].severity, Severity::Critical);
        assert!(s.findings[0].evidence.iter().any(|e| e.contains("REDUCE")));
    }

    #[test]
    fn stacked_payload_in_third_pickle() {
        let mut d = LEGACY_MAGIC.to_vec();
        d.extend_from_slice(b"\x80\x02M\xe9\x03.");
        d.extend_from_slice(b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R.");
        d.extend_from_slice(b"\x80\x02}.");
        d.extend_from_slice(b"\x80\x02].");
        d.extend_from_slice(&[0u8; 64]);
        let (f, s) = run(&d);
        assert_eq!(f.pickles, 5);
        let c = codes(&s);
        assert!(c.contains(&"pickle/code-execution"));
        let st = s.findings.iter().find(|f| f.code == "pickle/stacked").expect("stacked");
        assert_eq!(st.severity, Severity::Info);
        assert!(s.findings.iter().any(|f| f.location.at.as_deref().is_some_and(|a| a.starts_with("pickle 3 of 5"))));
    }

    #[test]
    fn unexpected_stacking_is_medium() {
        let (f, s) = run(b"\x80\x02}.\x80\x02cmymod\nThing\n.");
        assert_eq!(f.pickles, 2);
        assert!(codes(&s).contains(&"pickle/unsafe-global"));
        assert_eq!(s.findings.iter().find(|f| f.code == "pickle/stacked").map(|f| f.severity), Some(Severity::Medium));
    }

    #[test]
    fn broken_stream_reports_both() {
        let (_, s) = run(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R\xfe\xfe");
        let c = codes(&s);
        assert!(c.contains(&"pickle/code-execution") && c.contains(&"pickle/malformed"), "{c:?}");
    }

    #[test]
    fn low_protocol_sniffing() {
        assert!(looks_like_low_protocol(b"(dp0\nS'a'\np1\nI1\ns."));
        assert!(looks_like_low_protocol(b"cos\nsystem\n(S'id'\ntR."));
        assert!(looks_like_low_protocol(b"]q\x00(K\x01K\x02e."));
        assert!(!looks_like_low_protocol(b"hello world"));
        assert!(!looks_like_low_protocol(b"(hello)"));
        assert!(!looks_like_low_protocol(b"I love pickles\n"));
        assert!(!looks_like_low_protocol(b"N."[..1].as_ref()));
        assert!(!looks_like_low_protocol(b"{\"a\": 1}"));
        assert!(!looks_like_low_protocol(b"Some text that starts with S\n"));
        assert!(!looks_like_low_protocol(b""));
        // payload first, then a break: still a pickle
        assert!(looks_like_low_protocol(b"cos\nsystem\n(S'id'\ntR\xff"));
        assert!(!looks_like_low_protocol(b"cos\nsystem\n\xff"));
    }

    #[test]
    fn nested_pickle_findings_are_located() {
        let inner = b"\x80\x02cos\nsystem\n.";
        let mut p = b"\x80\x03cpickle\nloads\nC".to_vec();
        p.push(inner.len() as u8);
        p.extend_from_slice(inner);
        p.extend_from_slice(b"\x85R.");
        let (_, s) = run(&p);
        let c = codes(&s);
        assert!(c.contains(&"pickle/nested-pickle") && c.contains(&"pickle/code-execution"), "{c:?}");
        assert!(s.findings.iter().any(|f| f.location.at.as_deref().is_some_and(|a| a.contains("pickle in bytes"))));
    }
}
