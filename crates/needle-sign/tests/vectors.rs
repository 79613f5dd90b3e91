//! Interoperability: every upstream (model_signing v0.2.0 .. v1.1.0) and generated
//! (model_signing 1.1.1) vector verifies; tampering fails naming what differs.

use needle_sign::keys::PublicKey;
use needle_sign::sigstore::TrustedRoot;
use needle_sign::verify::{verify, Trust, VerifyOptions};
use needle_sign::x509::Cert;
use std::path::{Path, PathBuf};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/model-signing")
}

fn upstream_dirs(kind: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(vectors().join("upstream"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().ends_with(kind))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no {kind} vectors");
    v
}

fn opts(dir: &Path, trust: Trust) -> VerifyOptions {
    let ignore = if dir.join("ignore-me").exists() { vec!["ignore-me".to_string()] } else { vec![] };
    VerifyOptions { trust, signature: dir.join("model.sig"), ignore_paths: ignore, ignore_unsigned_files: false }
}

fn model_path(dir: &Path) -> PathBuf {
    // Key vectors of v0.3.1 and v1.0.0 signed the single file `signme-1`.
    let sig = std::fs::read_to_string(dir.join("model.sig")).unwrap();
    if !dir.join("signme-2").exists() && sig.contains("publicKey") {
        dir.join("signme-1")
    } else {
        dir.to_path_buf()
    }
}

fn assert_passes(dir: &Path, trust: Trust) {
    let v = verify(&model_path(dir), &opts(dir, trust)).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert!(v.passed(), "{}: {:#?} {:#?}", dir.display(), v.steps, v.findings);
    assert!(v.resources_signed >= 1);
}

fn upstream_key() -> PublicKey {
    let pem = std::fs::read_to_string(vectors().join("upstream/keys/certificate/signing-key-pub.pem")).unwrap();
    PublicKey::from_pem(&pem).unwrap()
}

fn ca_roots() -> Vec<Cert> {
    Cert::from_pem_all(&std::fs::read_to_string(vectors().join("upstream/keys/certificate/ca-cert.pem")).unwrap()).unwrap()
}

#[test]
fn upstream_key_vectors_verify() {
    for d in upstream_dirs("elliptic-key") {
        assert_passes(&d, Trust::Key(upstream_key()));
    }
}

#[test]
fn upstream_certificate_vectors_verify() {
    for d in upstream_dirs("certificate") {
        assert_passes(&d, Trust::Chain(ca_roots()));
    }
}

#[test]
fn upstream_v02_is_flagged_legacy() {
    let d = vectors().join("upstream/v0.2.0-certificate");
    let v = verify(&d, &opts(&d, Trust::Chain(ca_roots()))).unwrap();
    assert!(v.passed());
    assert!(v.findings.iter().any(|f| f.code == "verify/legacy-format"), "{:?}", v.findings);
}

fn sigstore(identity: &str, issuer: &str) -> Trust {
    Trust::Sigstore { root: Box::new(TrustedRoot::public_good().unwrap()), identity: identity.into(), issuer: issuer.into() }
}

const ID: &str = "stefanb@us.ibm.com";
const ISSUER: &str = "https://sigstore.verify.ibm.com/oauth2";

#[test]
fn upstream_sigstore_vectors_verify_offline() {
    for d in upstream_dirs("sigstore") {
        assert_passes(&d, sigstore(ID, ISSUER));
        let v = verify(&d, &opts(&d, sigstore(ID, ISSUER))).unwrap();
        let names: Vec<&str> = v.steps.iter().map(|s| s.name).collect();
        for want in ["rekor signed entry timestamp", "rekor inclusion proof", "rekor entry body", "fulcio certificate chain", "identity"] {
            assert!(names.contains(&want), "{}: {names:?}", d.display());
        }
    }
}

#[test]
fn sigstore_identity_and_issuer_mismatch() {
    let d = vectors().join("upstream/v1.1.0-sigstore");
    let v = verify(&d, &opts(&d, sigstore("mallory@example.com", ISSUER))).unwrap();
    assert!(!v.passed());
    assert_eq!(v.findings[0].code, "verify/identity-mismatch");
    assert!(v.findings[0].message.contains(ID) && v.findings[0].message.contains("mallory@example.com"));
    let v = verify(&d, &opts(&d, sigstore(ID, "https://accounts.google.com"))).unwrap();
    assert_eq!(v.findings[0].code, "verify/identity-mismatch");
}

#[test]
fn sigstore_bundle_with_tampered_log_entry_fails() {
    let src = vectors().join("upstream/v1.1.0-sigstore");
    let tmp = tempfile::tempdir().unwrap();
    for f in ["signme-1", "signme-2", "ignore-me"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let mut b: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join("model.sig")).unwrap()).unwrap();
    let t = &mut b["verificationMaterial"]["tlogEntries"][0];
    t["integratedTime"] = serde_json::json!("1760062341");
    std::fs::write(tmp.path().join("model.sig"), serde_json::to_vec(&b).unwrap()).unwrap();
    let v = verify(tmp.path(), &opts(tmp.path(), sigstore(ID, ISSUER))).unwrap();
    assert_eq!(v.findings[0].code, "verify/transparency-log", "{:?}", v.findings);
}

#[test]
fn key_vector_with_wrong_method_is_a_finding() {
    let d = vectors().join("upstream/v1.1.0-elliptic-key");
    let v = verify(&d, &opts(&d, Trust::Chain(ca_roots()))).unwrap();
    assert_eq!(v.findings[0].code, "verify/wrong-signature-kind");
}

#[test]
fn certificate_vector_against_unrelated_root_is_untrusted() {
    let d = vectors().join("upstream/v1.1.0-certificate");
    // The Sigstore Fulcio root is a valid CA certificate, but not this chain's.
    let fulcio = TrustedRoot::public_good().unwrap().authorities[1].certs.last().unwrap().clone();
    let v = verify(&d, &opts(&d, Trust::Chain(vec![fulcio]))).unwrap();
    assert_eq!(v.findings[0].code, "verify/untrusted-certificate");
    assert!(v.findings[0].message.contains("intermediate-ca") || v.findings[0].message.contains("root-ca"), "{}", v.findings[0].message);
}

fn generated(name: &str, pub_pem: &str) -> (PathBuf, VerifyOptions) {
    let d = vectors().join("generated").join(name);
    let key = PublicKey::from_pem(&std::fs::read_to_string(vectors().join("generated").join(pub_pem)).unwrap()).unwrap();
    let o = VerifyOptions { trust: Trust::Key(key), signature: d.join("model.sig"), ignore_paths: vec![], ignore_unsigned_files: false };
    (d.join("model"), o)
}

#[test]
fn generated_vectors_verify() {
    for (name, key) in [
        ("files-sha256-p256", "pub-prime256v1.pem"),
        ("files-blake3-p256", "pub-prime256v1.pem"),
        ("files-blake2-p256", "pub-prime256v1.pem"),
        ("shards-sha256-p384", "pub-secp384r1.pem"),
    ] {
        let (m, o) = generated(name, key);
        let v = verify(&m, &o).unwrap();
        assert!(v.passed(), "{name}: {:#?} {:#?}", v.steps, v.findings);
    }
}

#[test]
fn generated_with_the_wrong_key_names_the_keys() {
    let (m, o) = generated("files-sha256-p256", "pub-secp384r1.pem");
    let v = verify(&m, &o).unwrap();
    assert_eq!(v.findings.len(), 1);
    assert_eq!(v.findings[0].code, "verify/wrong-key");
    assert!(v.findings[0].message.contains("key hint"));
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
            let mut p = std::fs::metadata(&to).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            p.set_readonly(false);
            std::fs::set_permissions(&to, p).unwrap();
        }
    }
}

/// A writable copy of a generated vector: (tmp guard, model dir, options).
fn tampered(name: &str, key: &str) -> (tempfile::TempDir, PathBuf, VerifyOptions) {
    let (m, mut o) = generated(name, key);
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&m, &tmp.path().join("model"));
    std::fs::copy(&o.signature, tmp.path().join("model.sig")).unwrap();
    o.signature = tmp.path().join("model.sig");
    let model = tmp.path().join("model");
    (tmp, model, o)
}

fn codes(v: &needle_sign::Verification) -> Vec<(String, String)> {
    v.findings.iter().map(|f| (f.code.clone(), f.location.file.clone().unwrap_or_default())).collect()
}

#[test]
fn tampering_is_named() {
    for (name, key) in [("files-sha256-p256", "pub-prime256v1.pem"), ("shards-sha256-p384", "pub-secp384r1.pem")] {
        // Flipped byte in a file spanning two shards.
        let (_t, m, o) = tampered(name, key);
        let p = m.join("expected.safetensors");
        let mut b = std::fs::read(&p).unwrap();
        b[300_000] ^= 1;
        std::fs::write(&p, &b).unwrap();
        let v = verify(&m, &o).unwrap();
        assert_eq!(codes(&v), [("verify/changed-file".into(), "expected.safetensors".into())], "{name}");

        // Truncated file.
        let (_t, m, o) = tampered(name, key);
        let p = m.join("config.json");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 1]).unwrap();
        assert_eq!(codes(&verify(&m, &o).unwrap()), [("verify/changed-file".into(), "config.json".into())]);

        // Added, removed, renamed.
        let (_t, m, o) = tampered(name, key);
        std::fs::write(m.join("nested/evil.py"), "import os").unwrap();
        assert_eq!(codes(&verify(&m, &o).unwrap()), [("verify/extra-file".into(), "nested/evil.py".into())]);
        let (_t, m, o) = tampered(name, key);
        std::fs::remove_file(m.join("tokenizer.json")).unwrap();
        assert_eq!(codes(&verify(&m, &o).unwrap()), [("verify/missing-file".into(), "tokenizer.json".into())]);
        let (_t, m, o) = tampered(name, key);
        std::fs::rename(m.join("config.json"), m.join("config2.json")).unwrap();
        let mut c = codes(&verify(&m, &o).unwrap());
        c.sort();
        assert_eq!(c, [("verify/extra-file".into(), "config2.json".into()), ("verify/missing-file".into(), "config.json".into())]);
    }
    // --ignore-unsigned-files skips the extra file.
    let (_t, m, mut o) = tampered("files-sha256-p256", "pub-prime256v1.pem");
    std::fs::write(m.join("unsigned.txt"), "x").unwrap();
    o.ignore_unsigned_files = true;
    assert!(verify(&m, &o).unwrap().passed());
}

#[test]
fn changed_signature_and_swapped_payload_fail() {
    let (_t, m, o) = tampered("files-sha256-p256", "pub-prime256v1.pem");
    let mut b: serde_json::Value = serde_json::from_slice(&std::fs::read(&o.signature).unwrap()).unwrap();
    let sig = b["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap().to_string();
    let mut raw = base64_decode(&sig);
    let n = raw.len();
    raw[n - 2] ^= 1;
    b["dsseEnvelope"]["signatures"][0]["sig"] = base64_encode(&raw).into();
    std::fs::write(&o.signature, serde_json::to_vec(&b).unwrap()).unwrap();
    assert_eq!(codes(&verify(&m, &o).unwrap())[0].0, "verify/bad-signature");

    // Payload from the blake3 bundle under the sha256 bundle's signature (same key).
    let (_t, m, o) = tampered("files-sha256-p256", "pub-prime256v1.pem");
    let other: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors().join("generated/files-blake3-p256/model.sig")).unwrap()).unwrap();
    let mut b: serde_json::Value = serde_json::from_slice(&std::fs::read(&o.signature).unwrap()).unwrap();
    b["dsseEnvelope"]["payload"] = other["dsseEnvelope"]["payload"].clone();
    std::fs::write(&o.signature, serde_json::to_vec(&b).unwrap()).unwrap();
    let v = verify(&m, &o).unwrap();
    assert_eq!(codes(&v)[0].0, "verify/bad-signature");
}

#[test]
fn malformed_bundles_are_errors() {
    let (_t, m, o) = tampered("files-sha256-p256", "pub-prime256v1.pem");
    for bad in [&b"not json"[..], b"{}", b"{\"mediaType\":\"x\"}"] {
        std::fs::write(&o.signature, bad).unwrap();
        assert!(verify(&m, &o).is_err());
    }
    std::fs::remove_file(&o.signature).unwrap();
    assert!(verify(&m, &o).is_err());
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
