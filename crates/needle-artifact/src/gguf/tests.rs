use super::*;
use crate::inspect::{FileCtx, Sink};

/// A small GGUF writer for tests (little-endian unless `be`).
pub(crate) struct Builder {
    pub be: bool,
    pub version: u32,
    pub kv: Vec<u8>,
    pub n_kv: u64,
    pub ti: Vec<u8>,
    pub n_t: u64,
    pub data: Vec<u8>,
    pub alignment: u64,
}

impl Builder {
    pub fn new() -> Self {
        Builder { be: false, version: 3, kv: vec![], n_kv: 0, ti: vec![], n_t: 0, data: vec![], alignment: 32 }
    }
    fn u32b(&self, v: u32) -> [u8; 4] {
        if self.be { v.to_be_bytes() } else { v.to_le_bytes() }
    }
    fn u64b(&self, v: u64) -> [u8; 8] {
        if self.be { v.to_be_bytes() } else { v.to_le_bytes() }
    }
    fn str_into(&self, buf: &mut Vec<u8>, s: &[u8]) {
        buf.extend_from_slice(&self.u64b(s.len() as u64));
        buf.extend_from_slice(s);
    }
    pub fn kv_str(mut self, k: &str, v: &str) -> Self {
        let mut b = Vec::new();
        self.str_into(&mut b, k.as_bytes());
        b.extend_from_slice(&self.u32b(8));
        self.str_into(&mut b, v.as_bytes());
        self.kv.extend(b);
        self.n_kv += 1;
        self
    }
    pub fn kv_u32(mut self, k: &str, v: u32) -> Self {
        let mut b = Vec::new();
        self.str_into(&mut b, k.as_bytes());
        b.extend_from_slice(&self.u32b(4));
        b.extend_from_slice(&self.u32b(v));
        self.kv.extend(b);
        self.n_kv += 1;
        self
    }
    pub fn kv_raw(mut self, k: &str, ty: u32, raw: &[u8]) -> Self {
        let mut b = Vec::new();
        self.str_into(&mut b, k.as_bytes());
        b.extend_from_slice(&self.u32b(ty));
        b.extend_from_slice(raw);
        self.kv.extend(b);
        self.n_kv += 1;
        self
    }
    /// A tensor of `dims` and ggml type `ty`, placed at `offset` (None: appended, aligned).
    pub fn tensor(mut self, name: &str, dims: &[u64], ty: u32, offset: Option<u64>) -> Self {
        let (_, blck, tsize) = ggml_type(ty).unwrap_or(("?", 1, 1));
        let size = (dims.iter().fold(1u64, |a, &d| a.wrapping_mul(d)) / blck).wrapping_mul(tsize);
        let off = offset.unwrap_or_else(|| {
            let o = (self.data.len() as u64).div_ceil(self.alignment) * self.alignment;
            self.data.resize(o as usize, 0);
            self.data.resize((o + size) as usize, 0);
            o
        });
        let mut b = Vec::new();
        self.str_into(&mut b, name.as_bytes());
        b.extend_from_slice(&self.u32b(dims.len() as u32));
        for d in dims {
            b.extend_from_slice(&self.u64b(*d));
        }
        b.extend_from_slice(&self.u32b(ty));
        b.extend_from_slice(&self.u64b(off));
        self.ti.extend(b);
        self.n_t += 1;
        self
    }
    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.u32b(self.version));
        out.extend_from_slice(&self.u64b(self.n_t));
        out.extend_from_slice(&self.u64b(self.n_kv));
        out.extend_from_slice(&self.kv);
        out.extend_from_slice(&self.ti);
        let start = (out.len() as u64).div_ceil(self.alignment) * self.alignment;
        out.resize(start as usize, 0);
        out.extend_from_slice(&self.data);
        let end = (out.len() as u64).div_ceil(self.alignment) * self.alignment;
        out.resize(end as usize, 0);
        out
    }
}

fn run(bytes: &[u8]) -> (Option<GgufFacts>, Sink) {
    let mut sink = Sink::default();
    let ctx = FileCtx { rel: "m.gguf", data: bytes, depth: 0 };
    let f = inspect(&ctx, &mut sink);
    (f, sink)
}

fn codes(s: &Sink) -> Vec<String> {
    let mut c: Vec<String> = s.findings.iter().map(|f| f.code.clone()).collect();
    c.sort();
    c.dedup();
    c
}

fn clean() -> Builder {
    Builder::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("general.file_type", 15)
        .kv_u32("llama.embedding_length", 64)
        .kv_str("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}")
        .kv_str("tokenizer.chat_template.tool_use", "{{ tools }}")
        .tensor("token_embd.weight", &[256, 100], 12, None)
        .tensor("output_norm.weight", &[256], 0, None)
}

#[test]
fn clean_file_facts() {
    let (f, s) = run(&clean().build());
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    assert!(s.failures.is_empty());
    let f = f.unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.architecture.as_deref(), Some("llama"));
    assert_eq!(f.file_type.as_deref(), Some("Q4_K_M"));
    assert_eq!(f.hidden_size, Some(64));
    assert_eq!(f.tensors.len(), 2);
    assert_eq!(f.tensors[0].dtype, "Q4_K");
    assert_eq!(f.chat_templates.len(), 2);
    assert_eq!(f.chat_templates[1].0, "tokenizer.chat_template.tool_use");
    assert_eq!(f.detail(), "GGUF v3, 2 tensors, llama, Q4_K_M");
}

#[test]
fn big_endian_is_read_and_reported() {
    let mut b = clean();
    b.be = true;
    // Rebuild with big-endian encoding throughout.
    let b = Builder { be: true, ..Builder::new() }
        .kv_str("general.architecture", "llama")
        .tensor("a", &[32], 0, None);
    let _ = b.n_t;
    let (f, s) = run(&b.build());
    assert_eq!(codes(&s), ["gguf/big-endian"]);
    let f = f.unwrap();
    assert!(f.big_endian);
    assert_eq!(f.architecture.as_deref(), Some("llama"));
}

#[test]
fn hostile_headers() {
    // Bad magic.
    let (_, s) = run(b"GGML\x03\x00\x00\x00");
    assert_eq!(codes(&s), ["gguf/bad-magic"]);
    // Bad version.
    let mut b = clean().build();
    b[4] = 9;
    let (_, s) = run(&b);
    assert_eq!(codes(&s), ["gguf/unsupported-version"]);
    // Huge counts: no allocation, a finding.
    let mut b = clean().build();
    b[16..24].copy_from_slice(&(1u64 << 63).to_le_bytes());
    let (_, s) = run(&b);
    assert_eq!(codes(&s), ["gguf/implausible-count"]);
    let mut b = clean().build();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let (_, s) = run(&b);
    assert_eq!(codes(&s), ["gguf/implausible-count"]);
    // Huge string length in the first key.
    let mut b = clean().build();
    b[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    let (_, s) = run(&b);
    assert_eq!(codes(&s), ["gguf/implausible-count"]);
    // Truncated anywhere: never a panic, always a finding.
    let full = clean().build();
    for n in 8..full.len() {
        let (_, s) = run(&full[..n]);
        assert!(!s.findings.is_empty(), "truncated at {n}: no finding");
    }
}

#[test]
fn huge_array_count_is_a_finding() {
    let mut raw = 8u32.to_le_bytes().to_vec(); // array of strings
    raw.extend_from_slice(&(1u64 << 62).to_le_bytes());
    let (_, s) = run(&Builder::new().kv_raw("tokenizer.ggml.tokens", 9, &raw).build());
    assert_eq!(codes(&s), ["gguf/implausible-count"]);
    let mut raw = 4u32.to_le_bytes().to_vec(); // array of u32
    raw.extend_from_slice(&(1u64 << 62).to_le_bytes());
    let (_, s) = run(&Builder::new().kv_raw("x", 9, &raw).build());
    assert_eq!(codes(&s), ["gguf/implausible-count"]);
}

#[test]
fn nested_arrays_are_bounded() {
    // array<array<array<u8>>> (three levels) is the limit.
    let mut inner = 0u32.to_le_bytes().to_vec();
    inner.extend_from_slice(&1u64.to_le_bytes());
    inner.push(7);
    let mut mid = 9u32.to_le_bytes().to_vec();
    mid.extend_from_slice(&1u64.to_le_bytes());
    mid.extend_from_slice(&inner);
    let mut outer = 9u32.to_le_bytes().to_vec();
    outer.extend_from_slice(&1u64.to_le_bytes());
    outer.extend_from_slice(&mid);
    let (_, s) = run(&Builder::new().kv_raw("ok", 9, &outer).build());
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    let mut deeper = 9u32.to_le_bytes().to_vec();
    deeper.extend_from_slice(&1u64.to_le_bytes());
    deeper.extend_from_slice(&outer);
    let (_, s) = run(&Builder::new().kv_raw("deep", 9, &deeper).build());
    assert_eq!(codes(&s), ["gguf/nesting-too-deep"]);
}

#[test]
fn data_section_rules() {
    let (_, s) = run(&Builder::new().kv_u32("general.alignment", 24).tensor("a", &[8], 0, None).build());
    assert!(codes(&s).contains(&"gguf/bad-alignment".to_string()), "{:?}", s.findings);
    let mut b = Builder::new().tensor("a", &[16], 0, None).tensor("b", &[16], 0, Some(64)).tensor("c", &[16], 0, Some(96));
    b.data.resize(160, 0);
    let (_, s) = run(&b.build());
    assert!(codes(&s).contains(&"gguf/overlapping-tensors".to_string()), "{:?}", s.findings);
    let (_, s) = run(&Builder::new().tensor("a", &[8], 0, Some(0)).tensor("b", &[8], 0, Some(1 << 20)).build());
    assert!(codes(&s).contains(&"gguf/tensor-out-of-bounds".to_string()), "{:?}", s.findings);
    let mut b = Builder::new().tensor("a", &[8], 0, None).tensor("b", &[8], 0, Some(40));
    b.data.resize(96, 0);
    let (_, s) = run(&b.build());
    assert!(codes(&s).contains(&"gguf/misaligned-tensor".to_string()), "{:?}", s.findings);
    let (_, s) = run(&Builder::new().tensor("a", &[8], 0, None).tensor("a", &[8], 0, None).build());
    assert!(codes(&s).contains(&"gguf/duplicate-tensor".to_string()), "{:?}", s.findings);
    let (_, s) = run(&Builder::new().tensor("a", &[100], 2, None).build());
    assert_eq!(codes(&s), ["gguf/bad-tensor-info"]);
    let (_, s) = run(&Builder::new().tensor("a", &[32], 200, Some(0)).build());
    assert_eq!(codes(&s), ["gguf/unknown-tensor-type"]);
    let (_, s) = run(&Builder::new().tensor("a", &[u64::MAX, 4], 0, Some(0)).build());
    assert_eq!(codes(&s), ["gguf/bad-tensor-info"]);
    let mut b = Builder::new().tensor("a", &[8], 0, None);
    b.data.resize(200, 0);
    let (_, s) = run(&b.build());
    assert!(codes(&s).contains(&"gguf/trailing-bytes".to_string()), "{:?}", s.findings);
    let mut b = Builder::new().tensor("a", &[8], 0, None).tensor("b", &[8], 0, Some(128));
    b.data.resize(160, 0);
    let (_, s) = run(&b.build());
    assert!(codes(&s).contains(&"gguf/gap-between-tensors".to_string()), "{:?}", s.findings);
    let (_, s) = run(&Builder::new().kv_str("k", "v").kv_str("k", "w").build());
    assert_eq!(codes(&s), ["gguf/duplicate-key"]);
    let (_, s) = run(&Builder::new().kv_raw("k", 77, &[]).build());
    assert_eq!(codes(&s), ["gguf/bad-value-type"]);
}

#[test]
fn type_table_is_consistent() {
    for id in 0..64 {
        if let Some((name, blck, size)) = ggml_type(id) {
            assert!(blck == 1 || blck == 32 || blck == 256, "{name}");
            assert!(size > 0);
        }
    }
    assert_eq!(ggml_type(12), Some(("Q4_K", 256, 144)));
    assert_eq!(file_type_name(15), Some("Q4_K_M"));
}
