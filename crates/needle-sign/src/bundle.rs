//! Sigstore bundle v0.3 JSON, its DSSE envelope and the in-toto statement inside, parsed into
//! checked types. Nothing here verifies a signature; it only refuses malformed input.

use crate::manifest::{split_shard, HashAlg, Item, Manifest, Method, Serialization};
use crate::SignError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Older Sigstore bundle media types accepted on read (keyless bundles from older clients).
const OLD_MEDIA_TYPES: [&str; 3] = [
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
];
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// The v0.2 predicate: one subject per file, no `serialization`.
pub const PREDICATE_TYPE_V02: &str = "https://model_signing/Digests/v0.1";

/// Largest bundle read (a signature for a million-file model stays well below).
pub const MAX_BUNDLE_BYTES: u64 = 256 << 20;
/// Most resources accepted from a signature.
pub const MAX_RESOURCES: usize = 4_000_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBundle {
    media_type: String,
    verification_material: RawMaterial,
    dsse_envelope: Option<RawEnvelope>,
    message_signature: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMaterial {
    public_key: Option<RawPublicKey>,
    x509_certificate_chain: Option<RawChain>,
    certificate: Option<RawCert>,
    #[serde(default)]
    tlog_entries: Vec<RawTlog>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPublicKey {
    hint: Option<String>,
    raw_bytes: Option<String>,
}

#[derive(Deserialize)]
struct RawChain {
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvelope {
    payload: String,
    payload_type: String,
    signatures: Vec<RawSig>,
}

#[derive(Deserialize)]
struct RawSig {
    sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTlog {
    log_index: Value,
    log_id: RawLogId,
    kind_version: RawKindVersion,
    integrated_time: Value,
    inclusion_promise: Option<RawPromise>,
    inclusion_proof: Option<RawProof>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
struct RawKindVersion {
    kind: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPromise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProof {
    log_index: Value,
    root_hash: String,
    tree_size: Value,
    #[serde(default)]
    hashes: Vec<String>,
    checkpoint: Option<RawCheckpoint>,
}

#[derive(Deserialize)]
struct RawCheckpoint {
    envelope: String,
}

/// How the bundle says the signer can be checked.
#[derive(Debug, Clone)]
pub enum Material {
    /// Key signing: the hint (hex SHA-256 of the key PEM), or for pre-1.0 bundles the key itself.
    PublicKey { hint: Option<String>, raw: Option<Vec<u8>> },
    /// Certificate signing: DER certificates, leaf first.
    Chain(Vec<Vec<u8>>),
    /// Sigstore keyless: the Fulcio leaf certificate (DER).
    Certificate(Vec<u8>),
}

/// A DSSE envelope: payload bytes and DER signatures.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub signatures: Vec<Vec<u8>>,
}

/// One transparency-log entry (Rekor v1).
#[derive(Debug, Clone)]
pub struct TlogEntry {
    pub log_index: i64,
    pub log_id: Vec<u8>,
    pub kind: String,
    pub version: String,
    pub integrated_time: i64,
    pub signed_entry_timestamp: Option<Vec<u8>>,
    pub proof: Option<InclusionProof>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct InclusionProof {
    pub log_index: i64,
    pub root_hash: Vec<u8>,
    pub tree_size: i64,
    pub hashes: Vec<Vec<u8>>,
    pub checkpoint: Option<String>,
}

/// A parsed OMS bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub media_type: String,
    pub material: Material,
    pub envelope: Envelope,
    pub tlog: Vec<TlogEntry>,
}

fn malformed(msg: impl Into<String>) -> SignError {
    SignError::Malformed(msg.into())
}

fn b64(field: &str, s: &str) -> Result<Vec<u8>, SignError> {
    B64.decode(s.trim()).map_err(|e| malformed(format!("{field}: not base64 ({e})")))
}

/// Protobuf JSON writes 64-bit integers as strings; accept both.
fn int(field: &str, v: &Value) -> Result<i64, SignError> {
    match v {
        Value::String(s) => s.parse().map_err(|_| malformed(format!("{field}: not an integer"))),
        Value::Number(n) => n.as_i64().ok_or_else(|| malformed(format!("{field}: not an integer"))),
        _ => Err(malformed(format!("{field}: not an integer"))),
    }
}

impl Bundle {
    /// Parses bundle JSON.
    pub fn parse(bytes: &[u8]) -> Result<Bundle, SignError> {
        let raw: RawBundle =
            serde_json::from_slice(bytes).map_err(|e| malformed(format!("not a Sigstore bundle: {e}")))?;
        if raw.media_type != BUNDLE_MEDIA_TYPE && !OLD_MEDIA_TYPES.contains(&raw.media_type.as_str()) {
            return Err(malformed(format!("unsupported bundle media type `{}`", raw.media_type)));
        }
        if raw.message_signature.is_some() && raw.dsse_envelope.is_none() {
            return Err(malformed("bundle has a message signature, not a DSSE envelope (not an OMS signature)"));
        }
        let env = raw.dsse_envelope.ok_or_else(|| malformed("bundle has no dsseEnvelope"))?;
        let vm = raw.verification_material;
        let material = if let Some(chain) = vm.x509_certificate_chain {
            if chain.certificates.is_empty() {
                return Err(malformed("empty x509CertificateChain"));
            }
            Material::Chain(
                chain.certificates.iter().map(|c| b64("certificate", &c.raw_bytes)).collect::<Result<_, _>>()?,
            )
        } else if let Some(cert) = vm.certificate {
            Material::Certificate(b64("certificate", &cert.raw_bytes)?)
        } else if let Some(pk) = vm.public_key {
            let raw = pk.raw_bytes.as_deref().map(|r| b64("publicKey.rawBytes", r)).transpose()?;
            Material::PublicKey { hint: pk.hint.filter(|h| !h.is_empty()), raw }
        } else {
            return Err(malformed("bundle has no verification material (publicKey, certificate or chain)"));
        };
        if env.signatures.len() != 1 {
            return Err(malformed(format!("expected exactly one DSSE signature, found {}", env.signatures.len())));
        }
        let envelope = Envelope {
            payload_type: env.payload_type,
            payload: b64("dsseEnvelope.payload", &env.payload)?,
            signatures: env.signatures.iter().map(|s| b64("signature", &s.sig)).collect::<Result<_, _>>()?,
        };
        let mut tlog = Vec::new();
        for t in vm.tlog_entries {
            let proof = match t.inclusion_proof {
                Some(p) => Some(InclusionProof {
                    log_index: int("inclusionProof.logIndex", &p.log_index)?,
                    root_hash: b64("rootHash", &p.root_hash)?,
                    tree_size: int("inclusionProof.treeSize", &p.tree_size)?,
                    hashes: p.hashes.iter().map(|h| b64("hashes", h)).collect::<Result<_, _>>()?,
                    checkpoint: p.checkpoint.map(|c| c.envelope),
                }),
                None => None,
            };
            tlog.push(TlogEntry {
                log_index: int("logIndex", &t.log_index)?,
                log_id: b64("logId.keyId", &t.log_id.key_id)?,
                kind: t.kind_version.kind,
                version: t.kind_version.version,
                integrated_time: int("integratedTime", &t.integrated_time)?,
                signed_entry_timestamp: t
                    .inclusion_promise
                    .map(|p| b64("signedEntryTimestamp", &p.signed_entry_timestamp))
                    .transpose()?,
                proof,
                body: b64("canonicalizedBody", &t.canonicalized_body)?,
            });
        }
        Ok(Bundle { media_type: raw.media_type, material, envelope, tlog })
    }

    /// The first (only) DSSE signature.
    pub fn signature(&self) -> &[u8] {
        self.envelope.signatures.first().map(Vec::as_slice).unwrap_or(&[])
    }

    /// Bundle JSON for key or certificate signing, as the reference writes it.
    pub fn to_json(payload: &[u8], sig: &[u8], material: &Material) -> Value {
        let vm = match material {
            Material::PublicKey { hint, .. } => serde_json::json!({
                "publicKey": { "hint": hint.clone().unwrap_or_default() },
                "tlogEntries": []
            }),
            Material::Chain(certs) => serde_json::json!({
                "x509CertificateChain": {
                    "certificates": certs.iter().map(|c| serde_json::json!({"rawBytes": B64.encode(c)})).collect::<Vec<_>>()
                },
                "tlogEntries": []
            }),
            Material::Certificate(c) => serde_json::json!({
                "certificate": { "rawBytes": B64.encode(c) },
                "tlogEntries": []
            }),
        };
        serde_json::json!({
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": vm,
            "dsseEnvelope": {
                "payload": B64.encode(payload),
                "payloadType": PAYLOAD_TYPE,
                "signatures": [ { "sig": B64.encode(sig) } ]
            }
        })
    }
}

/// DSSE pre-authentication encoding (DSSE v1).
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The encoding `model_signing` v0.2.0 signed by mistake: `DSSEV1` (capital V) and the payload
/// as Python's `repr(bytes)` (`b'...'` with escapes) instead of the raw bytes.
pub fn pae_compat(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    format!("DSSEV1 {} {} {} {}", payload_type.len(), payload_type, payload.len(), py_bytes_repr(payload)).into_bytes()
}

/// Python's `repr()` of a `bytes` object.
pub fn py_bytes_repr(b: &[u8]) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') { '"' } else { '\'' };
    let mut s = String::with_capacity(b.len() + 3);
    s.push('b');
    s.push(quote);
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            c if c as char == quote => {
                s.push('\\');
                s.push(quote);
            }
            0x20..=0x7e => s.push(c as char),
            c => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push(quote);
    s
}

/// The signed statement, checked: a manifest plus what the subject says.
#[derive(Debug, Clone)]
pub struct Statement {
    pub predicate_type: String,
    /// The subject name (the model's folder name when signed); absent for v0.2.
    pub model_name: Option<String>,
    /// The subject's root digest (v1.0 only).
    pub root_digest: Option<Vec<u8>>,
    pub manifest: Manifest,
}

impl Statement {
    /// Parses the DSSE payload into an OMS statement and checks its internal consistency
    /// (the root digest must be the SHA-256 of the resources' digests).
    pub fn parse(payload: &[u8]) -> Result<Statement, SignError> {
        let v: Value = serde_json::from_slice(payload).map_err(|e| malformed(format!("payload is not JSON: {e}")))?;
        let ty = v.get("_type").and_then(Value::as_str).unwrap_or_default();
        if ty != STATEMENT_TYPE {
            return Err(malformed(format!("payload is not an in-toto v1 statement (_type `{ty}`)")));
        }
        let pt = v.get("predicateType").and_then(Value::as_str).unwrap_or_default().to_string();
        let subjects = v.get("subject").and_then(Value::as_array).ok_or_else(|| malformed("statement has no subject"))?;
        if pt == PREDICATE_TYPE_V02 {
            return Self::parse_v02(subjects);
        }
        if pt != PREDICATE_TYPE {
            return Err(malformed(format!("unsupported predicate type `{pt}`")));
        }
        let [subject] = subjects.as_slice() else {
            return Err(malformed(format!("expected one subject, found {}", subjects.len())));
        };
        let name = subject.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let root_hex = subject
            .pointer("/digest/sha256")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("subject has no sha256 digest"))?;
        let root = hex::decode(root_hex).map_err(|_| malformed("subject digest is not hex"))?;
        let pred = v.get("predicate").ok_or_else(|| malformed("statement has no predicate"))?;
        let ser = parse_serialization(pred.get("serialization").ok_or_else(|| malformed("predicate has no serialization"))?)?;
        let resources =
            pred.get("resources").and_then(Value::as_array).ok_or_else(|| malformed("predicate has no resources"))?;
        if resources.len() > MAX_RESOURCES {
            return Err(malformed(format!("more than {MAX_RESOURCES} resources")));
        }
        let mut items = Vec::with_capacity(resources.len());
        let mut seen = std::collections::HashSet::new();
        for r in resources {
            let name = r.get("name").and_then(Value::as_str).ok_or_else(|| malformed("resource without a name"))?;
            let algorithm =
                r.get("algorithm").and_then(Value::as_str).ok_or_else(|| malformed(format!("resource `{name}` has no algorithm")))?;
            let digest = r
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| hex::decode(d).ok())
                .ok_or_else(|| malformed(format!("resource `{name}` has no hex digest")))?;
            if let Method::Shards { .. } = ser.method {
                if split_shard(name).is_none() {
                    return Err(malformed(format!("shard resource `{name}` is not `path:start:end`")));
                }
            }
            if !(algorithm.starts_with(ser.hash.name()) || (ser.hash == HashAlg::Blake2b && algorithm.starts_with("blake2"))) {
                return Err(malformed(format!("resource `{name}` uses `{algorithm}` but the serialization says `{}`", ser.hash.name())));
            }
            if digest.len() != ser.hash.digest_len() {
                return Err(malformed(format!("resource `{name}` digest has {} bytes", digest.len())));
            }
            if !seen.insert(name.to_string()) {
                return Err(malformed(format!("resource `{name}` listed twice")));
            }
            items.push(Item { name: name.to_string(), algorithm: algorithm.to_string(), digest });
        }
        let manifest = Manifest { model_name: name.clone(), serialization: ser, items };
        let computed = manifest.root_digest();
        if computed.as_slice() != root.as_slice() {
            return Err(malformed(format!(
                "manifest is inconsistent: the subject digest is {root_hex} but the resources hash to {}",
                hex::encode(computed)
            )));
        }
        Ok(Statement { predicate_type: pt, model_name: Some(name), root_digest: Some(root), manifest })
    }

    fn parse_v02(subjects: &[Value]) -> Result<Statement, SignError> {
        let mut items = Vec::new();
        for s in subjects {
            let name = s.get("name").and_then(Value::as_str).ok_or_else(|| malformed("subject without a name"))?;
            let digest = s
                .pointer("/digest/sha256")
                .and_then(Value::as_str)
                .and_then(|d| hex::decode(d).ok())
                .filter(|d| d.len() == 32)
                .ok_or_else(|| malformed(format!("subject `{name}` has no sha256 digest")))?;
            items.push(Item { name: name.to_string(), algorithm: "sha256".into(), digest });
        }
        let ser = Serialization { method: Method::Files, hash: HashAlg::Sha256, allow_symlinks: false, ignore_paths: vec![] };
        Ok(Statement {
            predicate_type: PREDICATE_TYPE_V02.into(),
            model_name: None,
            root_digest: None,
            manifest: Manifest { model_name: String::new(), serialization: ser, items },
        })
    }

    /// The in-toto statement JSON for a manifest (items must already be in manifest order).
    pub fn to_json(m: &Manifest) -> Value {
        let resources: Vec<Value> = m
            .items
            .iter()
            .map(|it| serde_json::json!({"name": it.name, "algorithm": it.algorithm, "digest": hex::encode(&it.digest)}))
            .collect();
        serde_json::json!({
            "_type": STATEMENT_TYPE,
            "subject": [ { "name": m.model_name, "digest": { "sha256": hex::encode(m.root_digest()) } } ],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": m.serialization.to_json(),
                "resources": resources,
            }
        })
    }
}

/// Reads the `serialization` object; `shard_size` may be a float (protobuf `Struct`).
pub fn parse_serialization(v: &Value) -> Result<Serialization, SignError> {
    let method = v.get("method").and_then(Value::as_str).ok_or_else(|| malformed("serialization has no method"))?;
    let hash_name = v.get("hash_type").and_then(Value::as_str).ok_or_else(|| malformed("serialization has no hash_type"))?;
    let hash = HashAlg::parse(hash_name).ok_or_else(|| malformed(format!("unsupported hash_type `{hash_name}`")))?;
    let allow_symlinks = match v.get("allow_symlinks") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    let ignore_paths = match v.get("ignore_paths") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let method = match method {
        "files" => Method::Files,
        "shards" => {
            let n = v.get("shard_size").and_then(Value::as_f64).ok_or_else(|| malformed("shards without shard_size"))?;
            if !(n.fract() == 0.0 && (1.0..=1e15).contains(&n)) {
                return Err(malformed(format!("bad shard_size {n}")));
            }
            Method::Shards { shard_size: n as u64 }
        }
        other => return Err(malformed(format!("unknown serialization method `{other}`"))),
    };
    Ok(Serialization { method, hash, allow_symlinks, ignore_paths })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(pae("t", b"hi"), b"DSSEv1 1 t 2 hi");
    }

    #[test]
    fn python_bytes_repr() {
        assert_eq!(py_bytes_repr(b"a\n'\\\x00\xff"), "b\"a\\n'\\\\\\x00\\xff\"");
        assert_eq!(py_bytes_repr(b"{\"a\": 'b'}"), "b'{\"a\": \\'b\\'}'");
        assert_eq!(pae_compat("t", b"x"), b"DSSEV1 1 t 1 b'x'");
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(Bundle::parse(b"{}"), Err(SignError::Malformed(_))));
        assert!(matches!(Bundle::parse(b"\x00\x01"), Err(SignError::Malformed(_))));
        assert!(matches!(Statement::parse(b"[]"), Err(SignError::Malformed(_))));
    }
}
