//! Sigstore keyless bundles, verified offline against a trusted root (Fulcio CAs, Rekor keys).
//!
//! Checked, in order: the Rekor (v1) entry's log key is in the trusted root and valid at the
//! integrated time; the signed entry timestamp (SET) verifies with that key; the inclusion proof
//! recomputes the root hash and the checkpoint carrying that root is signed by the same log;
//! the entry body is a `dsse` entry whose payload hash, signature and verifier certificate match
//! the bundle; the leaf certificate chains to a Fulcio CA of the trusted root, every certificate
//! valid at the integrated time; the leaf has the codeSigning EKU; its SAN equals `--identity`
//! and its OIDC-issuer extension (1.3.6.1.4.1.57264.1.8, or the legacy .1.1) equals `--issuer`.
//! Not checked offline: the certificate's embedded SCT (CT log) and RFC 3161 timestamps; the
//! inclusion proof is checked against the checkpoint in the bundle, not against a fresh log head.

use crate::bundle::{Bundle, Material};
use crate::keys::PublicKey;
use crate::verify::{IDENTITY_MISMATCH, TRANSPARENCY_LOG, UNTRUSTED_CERTIFICATE};
use crate::x509::{self, Cert};
use crate::SignError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use needle_report::Rule;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Sigstore's public-good trusted root, shipped with needle (see data/README.md for its origin).
pub const PUBLIC_GOOD_TRUSTED_ROOT: &[u8] = include_bytes!("../data/sigstore-trusted-root.json");

const OID_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
const OID_EKU: &str = "2.5.29.37";
const OID_CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";

/// A transparency log's key.
#[derive(Debug, Clone)]
pub struct LogKey {
    pub key_id: Vec<u8>,
    pub key: Option<PublicKey>,
    pub details: String,
    pub start: Option<i64>,
    pub end: Option<i64>,
}

/// A certificate authority: its chain (intermediates first, root last) and validity window.
#[derive(Debug, Clone)]
pub struct Authority {
    pub certs: Vec<Cert>,
    pub start: Option<i64>,
    pub end: Option<i64>,
}

/// The parts of a Sigstore `trusted_root.json` used offline.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    pub tlogs: Vec<LogKey>,
    pub authorities: Vec<Authority>,
}

fn window(v: Option<&Value>) -> Result<(Option<i64>, Option<i64>), SignError> {
    let get = |k: &str| -> Result<Option<i64>, SignError> {
        match v.and_then(|w| w.get(k)).and_then(Value::as_str) {
            Some(s) => parse_rfc3339(s).map(Some).ok_or_else(|| SignError::TrustedRoot(format!("bad time `{s}`"))),
            None => Ok(None),
        }
    };
    Ok((get("start")?, get("end")?))
}

impl TrustedRoot {
    pub fn public_good() -> Result<TrustedRoot, SignError> {
        Self::parse(PUBLIC_GOOD_TRUSTED_ROOT)
    }

    pub fn parse(bytes: &[u8]) -> Result<TrustedRoot, SignError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| SignError::TrustedRoot(format!("not JSON: {e}")))?;
        let mut tlogs = Vec::new();
        for t in v.get("tlogs").and_then(Value::as_array).into_iter().flatten() {
            let key_id = t
                .pointer("/logId/keyId")
                .and_then(Value::as_str)
                .and_then(|s| B64.decode(s).ok())
                .ok_or_else(|| SignError::TrustedRoot("tlog without logId".into()))?;
            let details = t.pointer("/publicKey/keyDetails").and_then(Value::as_str).unwrap_or_default().to_string();
            let raw = t.pointer("/publicKey/rawBytes").and_then(Value::as_str).and_then(|s| B64.decode(s).ok());
            // Keys needle cannot use (Ed25519 for Rekor v2) are kept so the error can say so.
            let key = raw.and_then(|r| PublicKey::from_spki_der(&r).ok()).filter(PublicKey::is_ec);
            let (start, end) = window(t.pointer("/publicKey/validFor"))?;
            tlogs.push(LogKey { key_id, key, details, start, end });
        }
        let mut authorities = Vec::new();
        for a in v.get("certificateAuthorities").and_then(Value::as_array).into_iter().flatten() {
            let mut certs = Vec::new();
            for c in a.pointer("/certChain/certificates").and_then(Value::as_array).into_iter().flatten() {
                let der = c
                    .get("rawBytes")
                    .and_then(Value::as_str)
                    .and_then(|s| B64.decode(s).ok())
                    .ok_or_else(|| SignError::TrustedRoot("CA certificate without rawBytes".into()))?;
                certs.push(Cert::from_der(&der)?);
            }
            let (start, end) = window(a.get("validFor"))?;
            if !certs.is_empty() {
                authorities.push(Authority { certs, start, end });
            }
        }
        if authorities.is_empty() || tlogs.is_empty() {
            return Err(SignError::TrustedRoot("no certificate authorities or transparency logs".into()));
        }
        Ok(TrustedRoot { tlogs, authorities })
    }
}

fn in_window(start: Option<i64>, end: Option<i64>, t: i64) -> bool {
    start.is_none_or(|s| s <= t) && end.is_none_or(|e| t <= e)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(10) != Some(&b'T') || !s.ends_with('Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d, h, mi, se) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + se)
}

/// What an accepted Sigstore bundle established.
#[derive(Debug)]
pub struct Accepted {
    pub key: PublicKey,
    pub identity: String,
    pub issuer: String,
    pub integrated_time: i64,
    pub checks: Vec<(&'static str, String)>,
}

/// Why a Sigstore bundle was refused: the rule, a message, and the checks that passed before.
#[derive(Debug)]
pub struct Rejection {
    pub rule: &'static Rule,
    pub message: String,
    pub checks: Vec<(&'static str, String)>,
}

fn hash_children(l: &[u8], r: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// RFC 9162 inclusion proof: the root implied by a leaf hash, its index and the audit path.
pub fn root_from_inclusion_proof(index: u64, size: u64, leaf: [u8; 32], proof: &[Vec<u8>]) -> Option<[u8; 32]> {
    if index >= size {
        return None;
    }
    let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = (index >> inner).count_ones() as usize;
    if proof.len() != inner.checked_add(border)? || proof.iter().any(|h| h.len() != 32) {
        return None;
    }
    let mut seed = leaf;
    for (i, h) in proof.iter().take(inner).enumerate() {
        seed = if (index >> i) & 1 == 0 { hash_children(&seed, h) } else { hash_children(h, &seed) };
    }
    for h in proof.iter().skip(inner) {
        seed = hash_children(h, &seed);
    }
    Some(seed)
}

/// Verifies a signed note (checkpoint) with the log key; returns (size, root hash).
fn verify_checkpoint(note: &str, key: &PublicKey, key_id: &[u8]) -> Result<(u64, Vec<u8>), String> {
    let (text, sigs) = note.split_once("\n\n").ok_or("checkpoint has no signature block")?;
    let signed = format!("{text}\n");
    let mut lines = text.lines();
    let _origin = lines.next().ok_or("empty checkpoint")?;
    let size: u64 = lines.next().and_then(|l| l.parse().ok()).ok_or("checkpoint without a tree size")?;
    let root = lines.next().and_then(|l| B64.decode(l).ok()).ok_or("checkpoint without a root hash")?;
    let hint = key_id.get(..4).ok_or("short log id")?;
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else { continue };
        let Some((_name, sig_b64)) = rest.rsplit_once(' ') else { continue };
        let Ok(raw) = B64.decode(sig_b64) else { continue };
        if raw.len() > 4 && &raw[..4] == hint && key.verify(signed.as_bytes(), &raw[4..]) {
            return Ok((size, root));
        }
    }
    Err("no checkpoint signature verifies with the log key".into())
}

/// Checks a Sigstore bundle offline. On success, the returned key must have made the DSSE
/// signature (the caller verifies that next).
pub fn verify_bundle(bundle: &Bundle, root: &TrustedRoot, identity: &str, issuer: &str) -> Result<Accepted, Rejection> {
    let mut checks: Vec<(&'static str, String)> = Vec::new();
    macro_rules! reject {
        ($rule:expr, $($arg:tt)*) => {
            return Err(Rejection { rule: &$rule, message: format!($($arg)*), checks })
        };
    }
    let leaf_der = match &bundle.material {
        Material::Certificate(c) => c.clone(),
        Material::Chain(c) => c.first().cloned().unwrap_or_default(),
        Material::PublicKey { .. } => reject!(UNTRUSTED_CERTIFICATE, "the bundle has no certificate"),
    };
    let leaf = match Cert::from_der(&leaf_der) {
        Ok(c) => c,
        Err(e) => reject!(UNTRUSTED_CERTIFICATE, "{e}"),
    };

    // Transparency log.
    let Some(entry) = bundle.tlog.first() else {
        reject!(TRANSPARENCY_LOG, "the bundle has no transparency-log entry; offline keyless verification needs one")
    };
    let t = entry.integrated_time;
    let Some(log) = root.tlogs.iter().find(|l| l.key_id == entry.log_id) else {
        reject!(TRANSPARENCY_LOG, "the entry's log ({}) is not in the trusted root", B64.encode(&entry.log_id))
    };
    let Some(log_key) = &log.key else {
        reject!(TRANSPARENCY_LOG, "the log key type {} is not supported by needle (Rekor v1 ECDSA logs are)", log.details)
    };
    if !in_window(log.start, log.end, t) {
        reject!(TRANSPARENCY_LOG, "the log key was not valid at the integrated time {t}");
    }
    let mut log_ok = false;
    if let Some(set) = &entry.signed_entry_timestamp {
        let canon = format!(
            "{{\"body\":\"{}\",\"integratedTime\":{},\"logID\":\"{}\",\"logIndex\":{}}}",
            B64.encode(&entry.body),
            t,
            hex::encode(&entry.log_id),
            entry.log_index
        );
        if !log_key.verify(canon.as_bytes(), set) {
            reject!(TRANSPARENCY_LOG, "the signed entry timestamp does not verify with the Rekor key");
        }
        checks.push(("rekor signed entry timestamp", format!("log index {}, integrated time {t}", entry.log_index)));
        log_ok = true;
    }
    if let Some(p) = &entry.proof {
        let leaf_hash: [u8; 32] = {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(&entry.body);
            h.finalize().into()
        };
        let (Ok(idx), Ok(size)) = (u64::try_from(p.log_index), u64::try_from(p.tree_size)) else {
            reject!(TRANSPARENCY_LOG, "negative index or tree size in the inclusion proof")
        };
        match root_from_inclusion_proof(idx, size, leaf_hash, &p.hashes) {
            Some(r) if r.as_slice() == p.root_hash.as_slice() => {}
            _ => reject!(TRANSPARENCY_LOG, "the inclusion proof does not lead to the stated root hash"),
        }
        let Some(cp) = &p.checkpoint else { reject!(TRANSPARENCY_LOG, "the inclusion proof has no checkpoint") };
        match verify_checkpoint(cp, log_key, &log.key_id) {
            Ok((cs, cr)) if cs == size && cr == p.root_hash => {}
            Ok(_) => reject!(TRANSPARENCY_LOG, "the checkpoint is for another tree than the inclusion proof"),
            Err(e) => reject!(TRANSPARENCY_LOG, "{e}"),
        }
        checks.push(("rekor inclusion proof", format!("leaf {idx} of {size}, checkpoint signed by the log")));
        log_ok = true;
    }
    if !log_ok {
        reject!(TRANSPARENCY_LOG, "the entry has neither a signed entry timestamp nor an inclusion proof");
    }
    // The entry must be about this envelope.
    if entry.kind != "dsse" {
        reject!(TRANSPARENCY_LOG, "unsupported Rekor entry kind `{}` {} (needle checks `dsse` entries)", entry.kind, entry.version);
    }
    let body: Value = match serde_json::from_slice(&entry.body) {
        Ok(b) => b,
        Err(_) => reject!(TRANSPARENCY_LOG, "the log entry body is not JSON"),
    };
    let payload_hash = body.pointer("/spec/payloadHash/value").and_then(Value::as_str).unwrap_or_default();
    if payload_hash != hex::encode(Sha256::digest(&bundle.envelope.payload)) {
        reject!(TRANSPARENCY_LOG, "the log entry is for another payload (payload hash differs)");
    }
    let sig = bundle.signature();
    let sigs = body.pointer("/spec/signatures").and_then(Value::as_array).cloned().unwrap_or_default();
    let matched = sigs.iter().any(|s| {
        let sig_ok = s.get("signature").and_then(Value::as_str).and_then(|x| B64.decode(x).ok()).is_some_and(|x| x == sig);
        let cert_ok = s
            .get("verifier")
            .and_then(Value::as_str)
            .and_then(|x| B64.decode(x).ok())
            .and_then(|pem| String::from_utf8(pem).ok())
            .and_then(|pem| Cert::from_pem_all(&pem).ok())
            .is_some_and(|c| c.first().is_some_and(|c| c.der == leaf.der));
        sig_ok && cert_ok
    });
    if !matched {
        reject!(TRANSPARENCY_LOG, "the log entry records another signature or certificate than the bundle's");
    }
    checks.push(("rekor entry body", "dsse entry matches the payload hash, signature and certificate".into()));

    // Certificate chain to a Fulcio CA, at the integrated time.
    let mut last_err = String::from("no certificate authority in the trusted root was valid at the integrated time");
    let mut path_ok = None;
    for a in root.authorities.iter().filter(|a| in_window(a.start, a.end, t)) {
        let Some((anchor, inter)) = a.certs.split_last() else { continue };
        match x509::verify_path(&leaf, inter, std::slice::from_ref(anchor), t) {
            Ok(p) => {
                path_ok = Some(p);
                break;
            }
            Err(e) => last_err = e.to_string(),
        }
    }
    let Some(path) = path_ok else { reject!(UNTRUSTED_CERTIFICATE, "{last_err}") };
    checks.push((
        "fulcio certificate chain",
        format!("{} (valid at {t})", path.certs.iter().map(|c| c.subject()).collect::<Vec<_>>().join(" <- ")),
    ));
    let code_signing = leaf
        .extension(OID_EKU)
        .and_then(|v| <x509_cert::ext::pkix::ExtendedKeyUsage as der::Decode>::from_der(v).ok())
        .is_some_and(|e| e.0.iter().any(|o| o.to_string() == OID_CODE_SIGNING));
    if !code_signing {
        reject!(UNTRUSTED_CERTIFICATE, "the certificate lacks the codeSigning extended key usage");
    }

    // Identity and issuer.
    let sans = leaf.san_identities();
    let cert_issuer = oidc_issuer(&leaf).unwrap_or_default();
    if !sans.iter().any(|s| s == identity) {
        reject!(IDENTITY_MISMATCH, "the certificate identity is {} but --identity is {identity}", sans.join(", "));
    }
    if cert_issuer != issuer {
        reject!(IDENTITY_MISMATCH, "the certificate's OIDC issuer is {cert_issuer} but --issuer is {issuer}");
    }
    checks.push(("identity", format!("SAN {identity}, OIDC issuer {issuer}")));
    let key = match leaf.public_key() {
        Ok(k) if k.is_ec() => k,
        _ => reject!(UNTRUSTED_CERTIFICATE, "the certificate key is not a supported EC key"),
    };
    Ok(Accepted { key, identity: identity.to_string(), issuer: cert_issuer, integrated_time: t, checks })
}

/// The OIDC issuer recorded by Fulcio.
pub fn oidc_issuer(cert: &Cert) -> Option<String> {
    if let Some(v) = cert.extension(OID_ISSUER_V2) {
        if let Ok(s) = <der::asn1::Utf8StringRef<'_> as der::Decode>::from_der(v) {
            return Some(s.to_string());
        }
    }
    cert.extension(OID_ISSUER_V1).and_then(|v| std::str::from_utf8(v).ok()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2022-12-31T23:59:59.999Z"), Some(1672531199));
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn shipped_root_parses() {
        let r = TrustedRoot::public_good().unwrap();
        assert!(r.tlogs.iter().any(|l| l.key.is_some()));
        assert!(r.authorities.len() >= 2);
    }

    #[test]
    fn inclusion_proof_of_two_leaves() {
        let leaf = |b: u8| -> [u8; 32] { Sha256::digest([0u8, b]).into() };
        let (a, b) = (leaf(1), leaf(2));
        let root = hash_children(&a, &b);
        assert_eq!(root_from_inclusion_proof(0, 2, a, &[b.to_vec()]), Some(root));
        assert_eq!(root_from_inclusion_proof(1, 2, b, &[a.to_vec()]), Some(root));
        assert_eq!(root_from_inclusion_proof(2, 2, b, &[a.to_vec()]), None);
    }
}
