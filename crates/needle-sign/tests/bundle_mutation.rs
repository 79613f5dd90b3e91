//! Bounded mutational testing, with a fixed seed, of `needle verify` on signature bundles an
//! attacker hands it: every upstream model_signing vector (key, certificate and Sigstore kinds,
//! v0.2.0 to v1.1.0) with its `model.sig` mutated (the JSON's bytes, one of its values made
//! extreme, or a base64 field decoded, mutated and encoded again, which reaches the DSSE
//! statement, the X.509 and ASN.1 parsers and the Rekor entry), then verified under the trust
//! it was made for. Passing means: no panic, and every run terminates and stays fast.

use base64::Engine as _;
use needle_sign::keys::PublicKey;
use needle_sign::sigstore::TrustedRoot;
use needle_sign::verify::{verify, Trust, VerifyOptions};
use needle_sign::x509::Cert;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "../../needle-artifact/tests/common/mod.rs"]
mod common;
use common::{mutate, XorShift, TENSORS};

fn upstream() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/model-signing/upstream")
}

fn trust_for(name: &str) -> Trust {
    let read = |p: &str| std::fs::read_to_string(upstream().join(p)).expect("key material");
    if name.ends_with("elliptic-key") {
        Trust::Key(PublicKey::from_pem(&read("keys/certificate/signing-key-pub.pem")).expect("key"))
    } else if name.ends_with("certificate") {
        Trust::Chain(Cert::from_pem_all(&read("keys/certificate/ca-cert.pem")).expect("CA"))
    } else {
        let root = Box::new(TrustedRoot::public_good().expect("Sigstore root"));
        Trust::Sigstore { root, identity: "stefanb@us.ibm.com".into(), issuer: "https://sigstore.verify.ibm.com/oauth2".into() }
    }
}

/// Every string of `v` that is standard base64 of at least 16 bytes, by its JSON pointer.
fn base64_fields(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.len() >= 24 && base64::engine::general_purpose::STANDARD.decode(s).is_ok() => out.push(at),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| base64_fields(x, format!("{at}/{i}"), out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| base64_fields(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out)),
        _ => {}
    }
}

/// Every scalar of `v`, by its JSON pointer.
fn scalars(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| scalars(x, format!("{at}/{i}"), out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| scalars(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out)),
        _ => out.push(at),
    }
}

fn extreme(rng: &mut XorShift) -> Value {
    let all = [Value::Null, Value::from(0), Value::from(-1), Value::from(u64::MAX), Value::from(1e300), Value::from(""), Value::from("AAAA"), Value::from("x".repeat(10_000)), Value::Array(vec![]), Value::Object(Default::default()), Value::Bool(true)];
    all[rng.below(all.len())].clone()
}

/// `bundle` mutated one of three ways (see the module's documentation).
fn mutate_bundle(rng: &mut XorShift, bundle: &[u8], all: &[Vec<u8>]) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(bundle) else { return mutate(rng, bundle, all, &TENSORS) };
    match rng.below(3) {
        0 => return mutate(rng, bundle, all, &TENSORS),
        1 => {
            let mut at = Vec::new();
            scalars(&v, String::new(), &mut at);
            if let Some(slot) = at.get(rng.below(at.len())).and_then(|p| v.pointer_mut(p)) {
                *slot = extreme(rng);
            }
        }
        _ => {
            let mut at = Vec::new();
            base64_fields(&v, String::new(), &mut at);
            let b64 = base64::engine::general_purpose::STANDARD;
            if let Some(slot) = at.get(rng.below(at.len())).and_then(|p| v.pointer_mut(p)) {
                let raw = slot.as_str().and_then(|s| b64.decode(s).ok()).unwrap_or_default();
                *slot = Value::from(b64.encode(mutate(rng, &raw, all, &TENSORS)));
            }
        }
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

#[test]
fn mutated_signature_bundles_never_panic() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(upstream()).expect("vectors").filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("model.sig").exists()).collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "{} vectors", dirs.len());
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut cases = Vec::new();
    for d in &dirs {
        let name = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let copy = tmp.path().join(&name);
        std::fs::create_dir_all(&copy).expect("copy dir");
        for f in std::fs::read_dir(d).expect("vector").filter_map(|e| e.ok()) {
            std::fs::copy(f.path(), copy.join(f.file_name())).expect("copy");
        }
        let bundle = std::fs::read(d.join("model.sig")).expect("bundle");
        // Key vectors of v0.3.1 and v1.0.0 signed the single file `signme-1`.
        let model = if !copy.join("signme-2").exists() && name.ends_with("elliptic-key") { copy.join("signme-1") } else { copy.clone() };
        let ignore = if copy.join("ignore-me").exists() { vec!["ignore-me".to_string()] } else { vec![] };
        cases.push((name, copy, model, bundle, ignore));
    }
    let all: Vec<Vec<u8>> = cases.iter().map(|c| c.3.clone()).collect();
    let iterations: usize = std::env::var("NEEDLE_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let mut rng = XorShift(0x5851_f42d_4c95_7f2d);
    let (start, mut slowest, mut passed, mut failed, mut errors) = (Instant::now(), Duration::ZERO, 0usize, 0usize, 0usize);
    for i in 0..iterations {
        let (name, copy, model, bundle, ignore) = &cases[i % cases.len()];
        let d = mutate_bundle(&mut rng, bundle, &all);
        let sig = copy.join("model.sig");
        std::fs::write(&sig, &d).expect("write bundle");
        let opts = VerifyOptions { trust: trust_for(name), signature: sig, ignore_paths: ignore.clone(), ignore_unsigned_files: false };
        let t = Instant::now();
        match std::panic::catch_unwind(|| verify(model, &opts)) {
            Ok(Ok(v)) if v.passed() => passed += 1,
            Ok(Ok(_)) => failed += 1,
            Ok(Err(_)) => errors += 1,
            Err(_) => {
                let keep = std::env::temp_dir().join(format!("needle-bundle-panic-{i}.sig"));
                let _ = std::fs::write(&keep, &d);
                panic!("mutation {i} of {name} panicked; bundle kept at {}", keep.display());
            }
        }
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("{iterations} mutations over {} bundles in {:.1}s (slowest {:.1} ms): {passed} still verify, {failed} fail verification, {errors} errors", cases.len(), start.elapsed().as_secs_f64(), slowest.as_secs_f64() * 1e3);
    assert!(failed > 0 && errors > 0, "the mutations reach both verification and parsing");
    assert!(slowest < Duration::from_secs(5), "a bundle took {slowest:?}");
}
