//! Verification, in numbered steps (each recorded with what it checked):
//!
//! 1. read and parse the bundle (malformed → error, exit 2);
//! 2. establish the signer: the given key (and the bundle's key hint), a certificate chain to the
//!    given roots, or a Sigstore certificate checked offline (see [`crate::sigstore`]);
//! 3. verify the DSSE signature over the payload (standard PAE; the v0.2 encoding as fallback);
//! 4. parse the in-toto statement and check the manifest's root digest;
//! 5. rehash the model with the signature's serialization (hash, shards, ignored paths);
//! 6. compare: every changed, missing and extra file by name.

use crate::bundle::{pae, pae_compat, Bundle, Material, Statement, PAYLOAD_TYPE, PREDICATE_TYPE_V02};
use crate::keys::PublicKey;
use crate::manifest::{self, Manifest, ManifestOptions, Method, DEFAULT_IGNORES};
use crate::sigstore::{self, TrustedRoot};
use crate::x509::{self, Cert};
use crate::SignError;
use needle_report::{Finding, Rule, Severity};
use serde::Serialize;
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub static CHANGED_FILE: Rule = Rule {
    code: "verify/changed-file",
    severity: Severity::Critical,
    summary: "a file's content differs from what was signed",
    fix: "restore the file from the signed release, or re-sign after reviewing the change",
};
pub static MISSING_FILE: Rule = Rule {
    code: "verify/missing-file",
    severity: Severity::Critical,
    summary: "a signed file is missing from the model",
    fix: "restore the missing file from the signed release",
};
pub static EXTRA_FILE: Rule = Rule {
    code: "verify/extra-file",
    severity: Severity::High,
    summary: "the model contains a file the signature does not cover",
    fix: "remove the file, or re-sign; --ignore-unsigned-files skips files the signature does not list",
};
pub static BAD_SIGNATURE: Rule = Rule {
    code: "verify/bad-signature",
    severity: Severity::Critical,
    summary: "the signature does not verify over the signed statement",
    fix: "obtain the genuine signature; do not use a model whose signature fails",
};
pub static WRONG_KEY: Rule = Rule {
    code: "verify/wrong-key",
    severity: Severity::Critical,
    summary: "the signature was made with a different key than the one given",
    fix: "verify with the publisher's key, or find out who signed it",
};
pub static UNTRUSTED_CERTIFICATE: Rule = Rule {
    code: "verify/untrusted-certificate",
    severity: Severity::Critical,
    summary: "the signing certificate does not chain to a trusted root, is expired, or may not sign",
    fix: "verify against the publisher's CA certificates (--certificate-chain) or Sigstore's trusted root",
};
pub static IDENTITY_MISMATCH: Rule = Rule {
    code: "verify/identity-mismatch",
    severity: Severity::Critical,
    summary: "the Sigstore certificate names another identity or OIDC issuer",
    fix: "check --identity and --issuer against the publisher's documented signing identity",
};
pub static TRANSPARENCY_LOG: Rule = Rule {
    code: "verify/transparency-log",
    severity: Severity::Critical,
    summary: "the Rekor transparency-log entry is missing or does not verify",
    fix: "obtain the complete Sigstore bundle as published",
};
pub static WRONG_SIGNATURE_KIND: Rule = Rule {
    code: "verify/wrong-signature-kind",
    severity: Severity::Critical,
    summary: "the signature was made with a different method (key, certificate, Sigstore) than asked for",
    fix: "verify with the method the publisher used (see the bundle's verificationMaterial)",
};
pub static LEGACY_FORMAT: Rule = Rule {
    code: "verify/legacy-format",
    severity: Severity::Info,
    summary: "the signature uses a pre-1.0 model_signing format",
    fix: "ask the publisher to re-sign with model_signing 1.x or needle sign",
};

pub static RULES: &[&Rule] = &[
    &CHANGED_FILE,
    &MISSING_FILE,
    &EXTRA_FILE,
    &BAD_SIGNATURE,
    &WRONG_KEY,
    &UNTRUSTED_CERTIFICATE,
    &IDENTITY_MISMATCH,
    &TRANSPARENCY_LOG,
    &WRONG_SIGNATURE_KIND,
    &LEGACY_FORMAT,
];

/// What the signer must be.
#[derive(Debug)]
pub enum Trust {
    Key(PublicKey),
    /// Trust anchors for certificate signing.
    Chain(Vec<Cert>),
    /// Sigstore keyless, checked offline.
    Sigstore { root: Box<TrustedRoot>, identity: String, issuer: String },
}

#[derive(Debug)]
pub struct VerifyOptions {
    pub trust: Trust,
    pub signature: PathBuf,
    /// Extra paths (relative to the model) to ignore.
    pub ignore_paths: Vec<String>,
    pub ignore_unsigned_files: bool,
}

/// One numbered step and what it established.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: u8,
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// The result: findings (data) plus facts.
#[derive(Debug, Default, Serialize)]
pub struct Verification {
    pub steps: Vec<Step>,
    #[serde(skip)]
    pub findings: Vec<Finding>,
    /// Who signed: key hint, certificate subject, or Sigstore identity.
    pub signer: Option<String>,
    pub predicate_type: Option<String>,
    pub serialization: Option<serde_json::Value>,
    pub model_name: Option<String>,
    pub files_checked: usize,
    pub resources_signed: usize,
}

impl Verification {
    fn step(&mut self, name: &'static str, passed: bool, detail: impl Into<String>) {
        let n = self.steps.len() as u8 + 1;
        self.steps.push(Step { step: n, name, passed, detail: detail.into() });
    }

    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.severity < Severity::High) && self.steps.iter().all(|s| s.passed)
    }
}

/// Reads a bundle file with a size cap.
pub fn read_bundle(path: &Path) -> Result<Bundle, SignError> {
    let meta = std::fs::metadata(path).map_err(|e| SignError::io(path, e))?;
    if meta.len() > crate::bundle::MAX_BUNDLE_BYTES {
        return Err(SignError::Malformed(format!("{} is larger than {} bytes", path.display(), crate::bundle::MAX_BUNDLE_BYTES)));
    }
    let bytes = std::fs::read(path).map_err(|e| SignError::io(path, e))?;
    Bundle::parse(&bytes)
}

/// Verifies `model` against the signature in `opts`. `Err` means verification could not be
/// carried out (unreadable or malformed bundle, unreadable model); a failed check is a finding.
pub fn verify(model: &Path, opts: &VerifyOptions) -> Result<Verification, SignError> {
    let mut v = Verification::default();
    let bundle = read_bundle(&opts.signature)?;
    v.step("read bundle", true, format!("{} ({})", opts.signature.display(), bundle.media_type));
    if bundle.envelope.payload_type != PAYLOAD_TYPE {
        return Err(SignError::Malformed(format!("DSSE payload type `{}` is not in-toto", bundle.envelope.payload_type)));
    }
    let sig_name = opts.signature.display().to_string();

    // Step 2: who signed.
    let (key, compat_sha256) = match establish_signer(&bundle, &opts.trust, &mut v, &sig_name)? {
        Some(k) => k,
        None => return Ok(v),
    };

    // Step 3: the DSSE signature.
    let sig = bundle.signature();
    let payload = &bundle.envelope.payload;
    let mut legacy_pae = false;
    let ok = if key.verify(&pae(PAYLOAD_TYPE, payload), sig) {
        true
    } else {
        let compat = pae_compat(PAYLOAD_TYPE, payload);
        let ok = if compat_sha256 { key.verify_prehash(&sha2::Sha256::digest(&compat), sig) } else { key.verify(&compat, sig) };
        legacy_pae = ok;
        ok
    };
    if !ok {
        v.step("DSSE signature", false, "the signature does not verify over the payload");
        v.findings.push(
            BAD_SIGNATURE
                .finding(format!("the signature in {sig_name} does not verify with the {}: the statement or signature was altered, or it belongs to another bundle", key.describe()))
                .file(sig_name.clone()),
        );
        return Ok(v);
    }
    v.step(
        "DSSE signature",
        true,
        format!("{} signature over the {} pre-authentication encoding", key.describe(), if legacy_pae { "v0.2 (legacy)" } else { "DSSE v1" }),
    );

    // Step 4: the statement.
    let statement = Statement::parse(payload)?;
    v.predicate_type = Some(statement.predicate_type.clone());
    v.model_name = statement.model_name.clone();
    v.serialization = Some(statement.manifest.serialization.to_json());
    v.resources_signed = statement.manifest.items.len();
    v.step(
        "statement",
        true,
        match &statement.root_digest {
            Some(r) => format!("{} with {} resources, root sha256 {}", statement.predicate_type, statement.manifest.items.len(), hex::encode(r)),
            None => format!("{} with {} subjects", statement.predicate_type, statement.manifest.items.len()),
        },
    );
    if legacy_pae || statement.predicate_type == PREDICATE_TYPE_V02 {
        v.findings.push(
            LEGACY_FORMAT
                .finding(format!("{sig_name} uses the model_signing v0.2 format ({})", statement.predicate_type))
                .file(sig_name.clone()),
        );
    }

    // Step 5: rehash.
    let expected = &statement.manifest;
    let mut ser = expected.serialization.clone();
    for p in DEFAULT_IGNORES.iter().map(|s| s.to_string()).chain(opts.ignore_paths.iter().cloned()) {
        if !ser.ignore_paths.contains(&p) {
            ser.ignore_paths.push(p);
        }
    }
    let only_files = opts
        .ignore_unsigned_files
        .then(|| expected.items.iter().map(|i| i.file(&expected.serialization.method).to_string()).collect::<BTreeSet<_>>());
    let mopts = ManifestOptions { serialization: ser, ignore_abs: vec![opts.signature.clone()], only_files };
    let actual = manifest::compute(model, &mopts)?;
    v.step("rehash", true, format!("{} resources from {}", actual.items.len(), model.display()));

    // Step 6: compare.
    compare(expected, &actual, &mut v);
    let clean = !v.findings.iter().any(|f| f.severity >= Severity::High);
    v.step("compare", clean, if clean { "every signed file matches; no extra files".to_string() } else { "the model differs from what was signed".to_string() });
    Ok(v)
}

/// Step 2. Returns the key that must have made the signature, and whether the v0.2 fallback
/// hashes with SHA-256 regardless of the curve (certificate signing did).
fn establish_signer(
    bundle: &Bundle,
    trust: &Trust,
    v: &mut Verification,
    sig_name: &str,
) -> Result<Option<(PublicKey, bool)>, SignError> {
    match (trust, &bundle.material) {
        (Trust::Key(key), Material::PublicKey { hint, raw }) => {
            let given = key.hint()?;
            if let Some(h) = hint {
                if !h.eq_ignore_ascii_case(&given) {
                    v.step("signer", false, "key hint mismatch");
                    v.findings.push(
                        WRONG_KEY
                            .finding(format!("{sig_name} was signed with another key: bundle key hint {h}, given key {given}"))
                            .file(sig_name.to_string()),
                    );
                    return Ok(None);
                }
            } else if let Some(raw) = raw {
                // Pre-1.0 bundles carry the public key PEM itself.
                let pem = String::from_utf8_lossy(raw);
                match PublicKey::from_pem(&pem) {
                    Ok(k) if &k == key => {}
                    _ => {
                        v.step("signer", false, "bundle public key differs from the given key");
                        v.findings.push(
                            WRONG_KEY
                                .finding(format!("{sig_name} carries another public key than the given one ({given})"))
                                .file(sig_name.to_string()),
                        );
                        return Ok(None);
                    }
                }
            }
            v.signer = Some(format!("{} key sha256:{given}", key.describe()));
            v.step("signer", true, format!("given {} public key, hint {given}", key.describe()));
            Ok(Some((key.clone(), false)))
        }
        (Trust::Chain(roots), Material::Chain(_) | Material::Certificate(_)) => {
            let ders: Vec<Vec<u8>> = match &bundle.material {
                Material::Chain(c) => c.clone(),
                Material::Certificate(c) => vec![c.clone()],
                Material::PublicKey { .. } => Vec::new(),
            };
            let certs: Vec<Cert> = ders.iter().map(|d| Cert::from_der(d)).collect::<Result<_, _>>()?;
            let (leaf, rest) = certs.split_first().ok_or_else(|| SignError::Malformed("empty certificate chain".into()))?;
            // As the reference: the chain is checked at the leaf's notBefore (the signing time
            // is not otherwise attested without a transparency log).
            let at = leaf.not_before();
            match x509::verify_path(leaf, rest, roots, at) {
                Ok(path) => {
                    if !leaf.can_sign() {
                        v.step("signer", false, "leaf certificate may not sign");
                        v.findings.push(
                            UNTRUSTED_CERTIFICATE
                                .finding(format!("certificate `{}` has neither digitalSignature key usage nor the codeSigning EKU", leaf.subject()))
                                .file(sig_name.to_string()),
                        );
                        return Ok(None);
                    }
                    let names: Vec<String> = path.certs.iter().map(|c| c.subject()).collect();
                    v.signer = Some(format!("certificate `{}`", leaf.subject()));
                    v.step("signer", true, format!("certificate path {} (checked at {})", names.join(" <- "), at));
                    Ok(Some((leaf.public_key()?, true)))
                }
                Err(SignError::Untrusted(msg)) => {
                    v.step("signer", false, msg.clone());
                    v.findings.push(UNTRUSTED_CERTIFICATE.finding(msg).file(sig_name.to_string()).evidence(format!("leaf sha256:{}", leaf.sha256_fingerprint())));
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        }
        (Trust::Sigstore { root, identity, issuer }, Material::Certificate(_) | Material::Chain(_)) => {
            match sigstore::verify_bundle(bundle, root, identity, issuer) {
                Ok(ok) => {
                    for (name, detail) in &ok.checks {
                        v.step(name, true, detail.clone());
                    }
                    v.signer = Some(format!("{} (issuer {})", ok.identity, ok.issuer));
                    Ok(Some((ok.key, false)))
                }
                Err(sigstore::Rejection { rule, message, checks }) => {
                    for (name, detail) in checks {
                        v.step(name, true, detail);
                    }
                    v.step("sigstore", false, message.clone());
                    v.findings.push(rule.finding(message).file(sig_name.to_string()));
                    Ok(None)
                }
            }
        }
        (t, m) => {
            let made = match m {
                Material::PublicKey { .. } => "a key",
                Material::Chain(_) => "a certificate chain",
                Material::Certificate(_) => "Sigstore (keyless)",
            };
            let asked = match t {
                Trust::Key(_) => "--key",
                Trust::Chain(_) => "--certificate-chain",
                Trust::Sigstore { .. } => "Sigstore (--identity/--issuer)",
            };
            v.step("signer", false, format!("signature made with {made}, verification asked for {asked}"));
            v.findings.push(
                WRONG_SIGNATURE_KIND
                    .finding(format!("{sig_name} was signed with {made}, but verification used {asked}"))
                    .file(sig_name.to_string()),
            );
            Ok(None)
        }
    }
}

/// Step 6: by file, so that a changed shard names its file.
fn compare(expected: &Manifest, actual: &Manifest, v: &mut Verification) {
    let method = expected.serialization.method;
    let group = |m: &Manifest| {
        let mut g: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
        for it in &m.items {
            g.entry(it.file(&method).to_string()).or_default().insert(it.name.clone(), it.digest.clone());
        }
        g
    };
    let exp = group(expected);
    let act = group(actual);
    v.files_checked = act.len();
    for (file, shards) in &exp {
        match act.get(file) {
            None => v.findings.push(
                MISSING_FILE
                    .finding(format!("`{file}` is signed but missing from the model"))
                    .file(file.clone()),
            ),
            Some(a) if a != shards => {
                let mut f = CHANGED_FILE.finding(format!("`{file}` differs from the signed content")).file(file.clone());
                match method {
                    Method::Files => {
                        if let (Some(e), Some(x)) = (shards.values().next(), a.values().next()) {
                            f = f.evidence(format!("signed {}: {}", expected.serialization.hash.name(), hex::encode(e)));
                            f = f.evidence(format!("actual {}: {}", expected.serialization.hash.name(), hex::encode(x)));
                        }
                    }
                    Method::Shards { .. } => {
                        let diff: Vec<&String> = shards
                            .iter()
                            .filter(|(k, d)| a.get(*k) != Some(d))
                            .map(|(k, _)| k)
                            .chain(a.keys().filter(|k| !shards.contains_key(*k)))
                            .collect();
                        f = f.at(format!("{} differing shard(s)", diff.len()));
                        for d in diff.iter().take(8) {
                            f = f.evidence(format!("shard {d}"));
                        }
                    }
                }
                v.findings.push(f);
            }
            Some(_) => {}
        }
    }
    for file in act.keys().filter(|f| !exp.contains_key(*f)) {
        v.findings.push(EXTRA_FILE.finding(format!("`{file}` is in the model but not covered by the signature")).file(file.clone()));
    }
}
