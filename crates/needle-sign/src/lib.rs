//! OpenSSF model signing (OMS) for needle: manifests of model folders, Sigstore bundle v0.3
//! signatures with EC keys or certificate chains, verification (key, certificate chain, Sigstore
//! keyless checked offline), and CycloneDX 1.6 ML-BOMs.
//!
//! Interoperable with `model_signing` 1.x (and reads the v0.2/v0.3 formats): see
//! `docs/signing.md` for the exact format and what each verification step checks.

pub mod bom;
pub mod bundle;
pub mod keys;
pub mod manifest;
pub mod sign;
pub mod sigstore;
pub mod verify;
pub mod x509;

pub use bundle::{Bundle, Statement};
pub use manifest::{HashAlg, Manifest, ManifestOptions, Method, Serialization};
pub use sign::{sign, SignOptions};
pub use verify::{verify, Trust, Verification, VerifyOptions};

use std::path::Path;

/// Why signing, verifying or building a BOM could not finish (as opposed to a verification
/// finding, which is data: see [`verify::RULES`]).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("`{0}` is a symbolic link; symlinks are refused unless --allow-symlinks is given")]
    Symlink(String),
    #[error("`{0}` is not a regular file or directory (special file, broken link or unreadable)")]
    SpecialFile(String),
    #[error("`{0}`: file name is not valid UTF-8")]
    BadName(String),
    #[error("limit exceeded: {0}")]
    Limit(String),
    #[error("`{0}` changed while it was being hashed")]
    Changed(String),
    #[error("key: {0}")]
    Key(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("malformed signature bundle: {0}")]
    Malformed(String),
    #[error("untrusted: {0}")]
    Untrusted(String),
    #[error("trusted root: {0}")]
    TrustedRoot(String),
    #[error("{0}")]
    Other(String),
}

impl SignError {
    pub fn io(path: &Path, source: std::io::Error) -> SignError {
        SignError::Io { path: path.display().to_string(), source }
    }
}

/// Every rule this crate can report.
pub fn rules() -> Vec<&'static needle_report::Rule> {
    verify::RULES.to_vec()
}
