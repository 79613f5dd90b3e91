use super::*;
use std::collections::BTreeMap;
use crate::inspect::{FileCtx, Sink};

/// Builds a safetensors file: `header` JSON, padded with spaces to 8 bytes, then `data`.
pub(crate) fn build(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

fn run(bytes: &[u8]) -> (Option<Vec<TensorInfo>>, Sink) {
    let mut sink = Sink::default();
    let ctx = FileCtx { rel: "m.safetensors", data: bytes, depth: 0 };
    let t = inspect(&ctx, &mut sink);
    (t, sink)
}

fn codes(s: &Sink) -> Vec<String> {
    let mut c: Vec<String> = s.findings.iter().map(|f| f.code.clone()).collect();
    c.sort();
    c.dedup();
    c
}

#[test]
fn clean_file_has_no_findings() {
    let f = build(
        r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]}}"#,
        &[0u8; 22],
    );
    let (t, s) = run(&f);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    assert!(s.failures.is_empty());
    let t = t.unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0], TensorInfo { name: "a".into(), dtype: "F32".into(), shape: vec![2, 2] });
}

#[test]
fn empty_header_and_sub_byte_dtypes() {
    let (t, s) = run(&build("{}", &[]));
    assert!(s.findings.is_empty());
    assert_eq!(t.unwrap().len(), 0);
    // F4: 4 bits x 3 = 12 bits, not whole bytes.
    let (_, s) = run(&build(r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, &[0; 2]));
    assert_eq!(codes(&s), ["safetensors/size-mismatch"]);
    let (_, s) = run(&build(r#"{"a":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}}"#, &[0; 2]));
    assert!(s.findings.is_empty());
}

#[test]
fn each_rule_fires() {
    let cases: &[(&str, usize, &str)] = &[
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, 12, "safetensors/overlapping-tensors"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#, 20, "safetensors/gap-between-tensors"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, 12, "safetensors/gap-between-tensors"),
        (r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8, "safetensors/size-mismatch"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 8, "safetensors/duplicate-key"),
        (r#"{"a":{"dtype":"F32","dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#, 8, "safetensors/duplicate-key"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 20, "safetensors/trailing-bytes"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 4, "safetensors/truncated"),
        (r#"{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 8, "safetensors/bad-metadata"),
        (r#"{"__metadata__":[],"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 8, "safetensors/bad-metadata"),
        (r#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#, 8, "safetensors/unknown-dtype"),
        (r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, 8, "safetensors/bad-header"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, 8, "safetensors/bad-header"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}}"#, 8, "safetensors/bad-header"),
        (r#"{"a":5}"#, 0, "safetensors/bad-header"),
        (r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#, 8, "safetensors/size-mismatch"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#, 8, "safetensors/bad-header"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x"#, 8, "safetensors/bad-header"),
    ];
    for (h, n, code) in cases {
        let (_, s) = run(&build(h, &vec![0u8; *n]));
        assert!(codes(&s).iter().any(|c| c == code), "{h}: expected {code}, got {:?}", s.findings);
        assert!(s.failures.is_empty(), "{h}: {:?}", s.failures);
    }
}

#[test]
fn header_length_rules() {
    let (_, s) = run(&[1, 2, 3]);
    assert_eq!(codes(&s), ["safetensors/truncated"]);
    let mut f = (100_000_001u64).to_le_bytes().to_vec();
    f.extend_from_slice(b"{}");
    let (_, s) = run(&f);
    assert_eq!(codes(&s), ["safetensors/header-too-large"]);
    let mut f = u64::MAX.to_le_bytes().to_vec();
    f.extend_from_slice(b"{}");
    let (_, s) = run(&f);
    assert_eq!(codes(&s), ["safetensors/header-too-large"]);
    let mut f = (1000u64).to_le_bytes().to_vec();
    f.extend_from_slice(b"{}");
    let (_, s) = run(&f);
    assert_eq!(codes(&s), ["safetensors/truncated"]);
    // Leading space and non-UTF-8 are refused by the reference.
    let (_, s) = run(&build(" {}", &[]));
    assert_eq!(codes(&s), ["safetensors/bad-header"]);
    let mut f = build("{}", &[]);
    f[9] = 0xff;
    let (_, s) = run(&f);
    assert_eq!(codes(&s), ["safetensors/bad-header"]);
}

#[test]
fn trailing_bytes_name_what_they_look_like() {
    let mut data = vec![0u8; 8];
    data.extend_from_slice(b"PK\x03\x04 appended zip");
    let (_, s) = run(&build(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &data));
    let f = s.findings.iter().find(|f| f.code == "safetensors/trailing-bytes").unwrap();
    assert!(f.evidence[0].contains("zip"), "{:?}", f.evidence);
}

#[test]
fn findings_are_capped_per_code() {
    let mut h = String::from("{");
    for i in 0..100 {
        h.push_str(&format!("\"t{i}\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}},"));
    }
    h.pop();
    h.push('}');
    let (t, s) = run(&build(&h, &[0; 8]));
    assert_eq!(t.unwrap().len(), 100);
    let n = s.findings.iter().filter(|f| f.code == "safetensors/overlapping-tensors").count();
    assert_eq!(n, crate::limits::MAX_FINDINGS_PER_CODE + 1);
    assert!(s.findings.last().unwrap().message.contains("79 more"));
}

#[test]
fn deep_nesting_is_refused_not_overflowing() {
    let h = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let (_, s) = run(&build(&h, &[]));
    assert_eq!(codes(&s), ["safetensors/bad-header"]);
}

#[test]
fn embedding_rows_prefers_the_input_embedding() {
    let mut m = BTreeMap::new();
    m.insert(
        "model.safetensors".to_string(),
        vec![
            TensorInfo { name: "lm_head.weight".into(), dtype: "F32".into(), shape: vec![100, 8] },
            TensorInfo { name: "model.embed_tokens.weight".into(), dtype: "F32".into(), shape: vec![2048, 64] },
        ],
    );
    assert_eq!(embedding_rows(&m), Some(2048));
    m.insert("x.gguf".into(), vec![TensorInfo { name: "token_embd.weight".into(), dtype: "Q4_K".into(), shape: vec![64, 32000] }]);
    assert_eq!(embedding_rows(&m), Some(2048));
    m.remove("model.safetensors");
    assert_eq!(embedding_rows(&m), Some(32000));
    let empty = BTreeMap::new();
    assert_eq!(embedding_rows(&empty), None);
}
