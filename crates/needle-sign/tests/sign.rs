//! Signing round trips: every curve and key encoding, certificate signing, shards, hashes,
//! ignore paths, empty files and ordering.

use needle_sign::keys::{PrivateKey, PublicKey};
use needle_sign::verify::{verify, Trust, VerifyOptions};
use needle_sign::x509::Cert;
use needle_sign::{sign, HashAlg, SignOptions, Statement};
use std::path::{Path, PathBuf};

fn here(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(here(p)).unwrap()
}

fn model() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("m");
    std::fs::create_dir_all(m.join("a")).unwrap();
    std::fs::create_dir_all(m.join(".git")).unwrap();
    std::fs::write(m.join("a/b"), b"inside").unwrap();
    std::fs::write(m.join("a-b"), b"dash").unwrap();
    std::fs::write(m.join("empty"), b"").unwrap();
    std::fs::write(m.join(".git/HEAD"), b"ref").unwrap();
    std::fs::write(m.join("big.bin"), vec![7u8; 10_000]).unwrap();
    (t, m)
}

fn opts(key: PrivateKey, m: &Path) -> SignOptions {
    SignOptions {
        key,
        chain: vec![],
        hash: HashAlg::Sha256,
        shard_size: None,
        ignore_paths: vec![],
        allow_symlinks: false,
        signature: m.join("model.sig"),
    }
}

fn sign_and_verify(m: &Path, o: &SignOptions, trust: Trust) -> Statement {
    let s = sign(m, o).unwrap();
    std::fs::write(&o.signature, &s.bundle_json).unwrap();
    let v = verify(m, &VerifyOptions { trust, signature: o.signature.clone(), ignore_paths: vec![], ignore_unsigned_files: false }).unwrap();
    assert!(v.passed(), "{:#?} {:#?}", v.steps, v.findings);
    let b = needle_sign::Bundle::parse(s.bundle_json.as_bytes()).unwrap();
    Statement::parse(&b.envelope.payload).unwrap()
}

#[test]
fn every_curve_and_key_encoding() {
    let pw = read("tests/keys/password.txt");
    for (key, public, password) in [
        ("tests/keys/p521.pem", "tests/keys/p521-pub.pem", None),
        ("tests/keys/p384-encrypted.pem", "tests/keys/p384-encrypted-pub.pem", Some(pw.trim().as_bytes())),
        ("tests/keys/p256-sec1.pem", "tests/keys/p256-sec1-pub.pem", None),
    ] {
        let (_t, m) = model();
        let k = PrivateKey::from_pem(&read(key), password).unwrap();
        let p = PublicKey::from_pem(&read(public)).unwrap();
        assert!(k.public() == p, "{key}");
        sign_and_verify(&m, &opts(k, &m), Trust::Key(p));
    }
    // Wrong or missing password.
    assert!(PrivateKey::from_pem(&read("tests/keys/p384-encrypted.pem"), Some(b"nope")).is_err());
    assert!(PrivateKey::from_pem(&read("tests/keys/p384-encrypted.pem"), None).is_err());
}

#[test]
fn manifest_order_ignores_and_empty_files() {
    let (_t, m) = model();
    let k = PrivateKey::from_pem(&read("tests/keys/p521.pem"), None).unwrap();
    let p = PublicKey::from_pem(&read("tests/keys/p521-pub.pem")).unwrap();
    let st = sign_and_verify(&m, &opts(k, &m), Trust::Key(p));
    let names: Vec<&str> = st.manifest.items.iter().map(|i| i.name.as_str()).collect();
    // `a/b` before `a-b` (component order); .git and model.sig ignored; empty file listed.
    assert_eq!(names, ["a/b", "a-b", "big.bin", "empty"]);
    let ig = &st.manifest.serialization.ignore_paths;
    assert!(ig.contains(&"model.sig".to_string()) && ig.contains(&".git".to_string()));
}

#[test]
fn shards_cross_boundaries_and_skip_empty_files() {
    let (_t, m) = model();
    let k = PrivateKey::from_pem(&read("tests/keys/p521.pem"), None).unwrap();
    let p = PublicKey::from_pem(&read("tests/keys/p521-pub.pem")).unwrap();
    let mut o = opts(k, &m);
    o.shard_size = Some(4096);
    let st = sign_and_verify(&m, &o, Trust::Key(p));
    let names: Vec<&str> = st.manifest.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["a/b:0:6", "a-b:0:4", "big.bin:0:4096", "big.bin:4096:8192", "big.bin:8192:10000"]);
    assert!(st.manifest.items.iter().all(|i| i.algorithm == "sha256-sharded-4096"));
    // BLAKE3 with shards is recorded as files, like the reference.
    let (_t, m) = model();
    let k = PrivateKey::from_pem(&read("tests/keys/p521.pem"), None).unwrap();
    let p = PublicKey::from_pem(&read("tests/keys/p521-pub.pem")).unwrap();
    let mut o = opts(k, &m);
    o.shard_size = Some(4096);
    o.hash = HashAlg::Blake3;
    let st = sign_and_verify(&m, &o, Trust::Key(p));
    assert_eq!(st.manifest.serialization.method, needle_sign::Method::Files);
}

#[test]
fn certificate_signing_verifies_to_the_root() {
    let (_t, m) = model();
    let keys = "../../tests/vectors/model-signing/upstream/keys/certificate/";
    let k = PrivateKey::from_pem(&read(&format!("{keys}signing-key.pem")), None).unwrap();
    let mut chain = Cert::from_pem_all(&read(&format!("{keys}signing-key-cert.pem"))).unwrap();
    chain.extend(Cert::from_pem_all(&read(&format!("{keys}int-ca-cert.pem"))).unwrap());
    let mut o = opts(k, &m);
    o.chain = chain;
    let roots = Cert::from_pem_all(&read(&format!("{keys}ca-cert.pem"))).unwrap();
    sign_and_verify(&m, &o, Trust::Chain(roots));
    // A certificate that does not belong to the key is refused.
    let other = PrivateKey::from_pem(&read("tests/keys/p521.pem"), None).unwrap();
    let mut o2 = opts(other, &m);
    o2.chain = Cert::from_pem_all(&read(&format!("{keys}signing-key-cert.pem"))).unwrap();
    assert!(sign(&m, &o2).is_err());
}

#[cfg(unix)]
#[test]
fn symlinks_refused_unless_allowed() {
    let (_t, m) = model();
    std::os::unix::fs::symlink(m.join("a-b"), m.join("link")).unwrap();
    let k = PrivateKey::from_pem(&read("tests/keys/p521.pem"), None).unwrap();
    let mut o = opts(k, &m);
    let e = sign(&m, &o).unwrap_err();
    assert!(e.to_string().contains("link"), "{e}");
    o.allow_symlinks = true;
    let s = sign(&m, &o).unwrap();
    assert!(s.manifest.items.iter().any(|i| i.name == "link"));
}

#[test]
fn single_file_model_is_named_dot() {
    let (_t, m) = model();
    let k = PrivateKey::from_pem(&read("tests/keys/p521.pem"), None).unwrap();
    let p = PublicKey::from_pem(&read("tests/keys/p521-pub.pem")).unwrap();
    let mut o = opts(k, &m);
    o.signature = m.parent().unwrap().join("file.sig");
    let st = sign_and_verify(&m.join("big.bin"), &o, Trust::Key(p));
    assert_eq!(st.manifest.items.len(), 1);
    assert_eq!(st.manifest.items[0].name, ".");
    assert_eq!(st.model_name.as_deref(), Some("big.bin"));
}
