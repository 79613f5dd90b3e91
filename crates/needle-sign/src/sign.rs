//! Signing: manifest → in-toto statement → DSSE (PAE) → ECDSA → Sigstore bundle v0.3.

use crate::bundle::{pae, Bundle, Material, Statement, PAYLOAD_TYPE};
use crate::keys::PrivateKey;
use crate::manifest::{self, HashAlg, Manifest, ManifestOptions, Method, Serialization, DEFAULT_IGNORES};
use crate::x509::Cert;
use crate::SignError;
use std::path::{Path, PathBuf};

/// What to sign and how.
#[derive(Debug)]
pub struct SignOptions {
    pub key: PrivateKey,
    /// Signing certificate first, then the rest of its chain (certificate signing); empty for
    /// key signing.
    pub chain: Vec<Cert>,
    pub hash: HashAlg,
    /// `None`: whole files; `Some(n)`: shards of n bytes.
    pub shard_size: Option<u64>,
    /// Paths relative to the model root.
    pub ignore_paths: Vec<String>,
    pub allow_symlinks: bool,
    /// Where the bundle goes (ignored when hashing if it lies inside the model).
    pub signature: PathBuf,
}

/// What signing produced.
#[derive(Debug)]
pub struct Signed {
    pub manifest: Manifest,
    pub bundle_json: String,
}

/// The signature file's path relative to the model root, when it lies inside it.
pub fn relative_inside(model: &Path, file: &Path) -> Option<String> {
    let root = model.canonicalize().ok()?;
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let abs = parent.canonicalize().ok()?.join(file.file_name()?);
    let rel = abs.strip_prefix(&root).ok()?;
    let s = rel.to_str()?.replace('\\', "/");
    (!s.is_empty()).then_some(s)
}

/// Hashes the model and builds the bundle JSON (does not write it).
pub fn sign(model: &Path, opts: &SignOptions) -> Result<Signed, SignError> {
    if let Some(leaf) = opts.chain.first() {
        if leaf.public_key()? != opts.key.public() {
            return Err(SignError::Certificate(
                "the signing certificate's public key does not match the private key".into(),
            ));
        }
    }
    let mut ignore_paths: Vec<String> = DEFAULT_IGNORES.iter().map(|s| s.to_string()).collect();
    for p in &opts.ignore_paths {
        if !ignore_paths.contains(p) {
            ignore_paths.push(p.clone());
        }
    }
    let single_file = std::fs::metadata(model).map(|m| m.is_file()).unwrap_or(false);
    if !single_file {
        if let Some(rel) = relative_inside(model, &opts.signature) {
            if !ignore_paths.contains(&rel) {
                ignore_paths.push(rel);
            }
        }
    }
    // BLAKE3 is already parallel inside a file: the reference records it as file serialization.
    let method = match (opts.shard_size, opts.hash) {
        (Some(n), h) if h != HashAlg::Blake3 => {
            if n < manifest::MIN_SHARD_SIZE {
                return Err(SignError::Other(format!("shard size must be at least {} bytes", manifest::MIN_SHARD_SIZE)));
            }
            Method::Shards { shard_size: n }
        }
        _ => Method::Files,
    };
    let serialization = Serialization { method, hash: opts.hash, allow_symlinks: opts.allow_symlinks, ignore_paths };
    let mopts = ManifestOptions { serialization, ignore_abs: vec![opts.signature.clone()], only_files: None };
    let manifest = manifest::compute(model, &mopts)?;
    let payload = serde_json::to_vec_pretty(&Statement::to_json(&manifest)).map_err(|e| SignError::Other(e.to_string()))?;
    let sig = opts.key.sign(&pae(PAYLOAD_TYPE, &payload));
    let material = if opts.chain.is_empty() {
        Material::PublicKey { hint: Some(opts.key.public().hint()?), raw: None }
    } else {
        Material::Chain(opts.chain.iter().map(|c| c.der.clone()).collect())
    };
    let bundle_json = serde_json::to_string_pretty(&Bundle::to_json(&payload, &sig, &material))
        .map_err(|e| SignError::Other(e.to_string()))?;
    Ok(Signed { manifest, bundle_json })
}
