//! X.509 certificates: parsing, signature checks (ECDSA P-256/P-384 with SHA-256/384/512, RSA
//! PKCS#1 v1.5), validity windows, CA constraints, key usage, and path building from a leaf
//! through the bundle's intermediates to a trust anchor.

use crate::keys::PublicKey;
use crate::SignError;
use der::asn1::AnyRef;
use der::{Decode, Encode, Reader, SliceReader};
use sha2::Digest;
use x509_cert::Certificate;

/// Longest chain followed.
pub const MAX_CHAIN: usize = 8;

const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_KEY_USAGE: &str = "2.5.29.15";
const OID_EXT_KEY_USAGE: &str = "2.5.29.37";
const OID_SAN: &str = "2.5.29.17";
const OID_CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";

/// A parsed certificate plus the exact bytes its signature covers.
#[derive(Clone)]
pub struct Cert {
    pub der: Vec<u8>,
    pub cert: Certificate,
    tbs: Vec<u8>,
}

impl std::fmt::Debug for Cert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cert({})", self.subject())
    }
}

fn cert_err(e: impl std::fmt::Display) -> SignError {
    SignError::Certificate(e.to_string())
}

impl Cert {
    pub fn from_der(der_bytes: &[u8]) -> Result<Cert, SignError> {
        let cert = Certificate::from_der(der_bytes).map_err(|e| cert_err(format!("not a DER certificate: {e}")))?;
        // The signed bytes exactly as they appear (no re-encoding).
        let outer = AnyRef::from_der(der_bytes).map_err(cert_err)?;
        let mut r = SliceReader::new(outer.value()).map_err(cert_err)?;
        let tbs_any: AnyRef<'_> = r.decode().map_err(cert_err)?;
        let tbs = tbs_any.to_der().map_err(cert_err)?;
        Ok(Cert { der: der_bytes.to_vec(), cert, tbs })
    }

    /// All certificates of a PEM file, in order.
    pub fn from_pem_all(pem: &str) -> Result<Vec<Cert>, SignError> {
        let mut out = Vec::new();
        let mut rest = pem;
        while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
            let tail = &rest[start..];
            let end_marker = "-----END CERTIFICATE-----";
            let end = tail.find(end_marker).ok_or_else(|| cert_err("unterminated PEM certificate"))? + end_marker.len();
            let (label, der_bytes) = der::pem::decode_vec(&tail.as_bytes()[..end]).map_err(cert_err)?;
            if label == "CERTIFICATE" {
                out.push(Cert::from_der(&der_bytes)?);
            }
            rest = &tail[end..];
            if out.len() > 1000 {
                return Err(cert_err("too many certificates"));
            }
        }
        if out.is_empty() {
            return Err(cert_err("no PEM certificate found"));
        }
        Ok(out)
    }

    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    pub fn issuer(&self) -> String {
        self.cert.tbs_certificate.issuer.to_string()
    }

    fn subject_der(&self) -> Vec<u8> {
        self.cert.tbs_certificate.subject.to_der().unwrap_or_default()
    }

    fn issuer_der(&self) -> Vec<u8> {
        self.cert.tbs_certificate.issuer.to_der().unwrap_or_default()
    }

    pub fn public_key(&self) -> Result<PublicKey, SignError> {
        let spki = self.cert.tbs_certificate.subject_public_key_info.to_der().map_err(cert_err)?;
        PublicKey::from_spki_der(&spki)
    }

    /// Seconds since the epoch.
    pub fn not_before(&self) -> i64 {
        self.cert.tbs_certificate.validity.not_before.to_unix_duration().as_secs() as i64
    }

    pub fn not_after(&self) -> i64 {
        self.cert.tbs_certificate.validity.not_after.to_unix_duration().as_secs() as i64
    }

    pub fn valid_at(&self, t: i64) -> bool {
        self.not_before() <= t && t <= self.not_after()
    }

    pub fn sha256_fingerprint(&self) -> String {
        hex::encode(sha2::Sha256::digest(&self.der))
    }

    /// The raw value (inside the OCTET STRING) of an extension.
    pub fn extension(&self, oid: &str) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    pub fn is_ca(&self) -> bool {
        self.extension(OID_BASIC_CONSTRAINTS)
            .and_then(|v| x509_cert::ext::pkix::BasicConstraints::from_der(v).ok())
            .is_some_and(|bc| bc.ca)
    }

    /// Whether the certificate may sign: digitalSignature key usage or the codeSigning EKU
    /// (the reference's rule).
    pub fn can_sign(&self) -> bool {
        let ku = self
            .extension(OID_KEY_USAGE)
            .and_then(|v| x509_cert::ext::pkix::KeyUsage::from_der(v).ok())
            .is_some_and(|k| k.digital_signature());
        let eku = self
            .extension(OID_EXT_KEY_USAGE)
            .and_then(|v| x509_cert::ext::pkix::ExtendedKeyUsage::from_der(v).ok())
            .is_some_and(|e| e.0.iter().any(|o| o.to_string() == OID_CODE_SIGNING));
        ku || eku
    }

    /// Subject alternative names: e-mail addresses and URIs (what Fulcio puts there).
    pub fn san_identities(&self) -> Vec<String> {
        use x509_cert::ext::pkix::name::GeneralName;
        let Some(v) = self.extension(OID_SAN) else { return Vec::new() };
        let Ok(san) = x509_cert::ext::pkix::SubjectAltName::from_der(v) else { return Vec::new() };
        san.0
            .iter()
            .filter_map(|g| match g {
                GeneralName::Rfc822Name(s) => Some(s.to_string()),
                GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
                GeneralName::OtherName(o) => {
                    o.value.decode_as::<der::asn1::Utf8StringRef<'_>>().ok().map(|s| s.to_string())
                }
                _ => None,
            })
            .collect()
    }

    /// Whether `issuer` signed this certificate.
    pub fn signed_by(&self, issuer: &PublicKey) -> bool {
        let alg = self.cert.signature_algorithm.oid.to_string();
        let Some(sig) = self.cert.signature.as_bytes() else { return false };
        let digest: Vec<u8> = match alg.as_str() {
            "1.2.840.10045.4.3.2" | "1.2.840.113549.1.1.11" => sha2::Sha256::digest(&self.tbs).to_vec(),
            "1.2.840.10045.4.3.3" | "1.2.840.113549.1.1.12" => sha2::Sha384::digest(&self.tbs).to_vec(),
            "1.2.840.10045.4.3.4" | "1.2.840.113549.1.1.13" => sha2::Sha512::digest(&self.tbs).to_vec(),
            _ => return false,
        };
        match issuer {
            PublicKey::Rsa(k) => {
                let scheme = match alg.as_str() {
                    "1.2.840.113549.1.1.11" => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                    "1.2.840.113549.1.1.12" => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                    "1.2.840.113549.1.1.13" => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
                    _ => return false,
                };
                k.verify(scheme, &digest, sig).is_ok()
            }
            ec => alg.starts_with("1.2.840.10045.4.3.") && ec.verify_prehash(&digest, sig),
        }
    }
}

/// The path found from a leaf to a trust anchor.
#[derive(Debug, Clone)]
pub struct TrustedPath {
    /// Leaf first, the anchor last.
    pub certs: Vec<Cert>,
}

/// Builds and checks a path from `leaf` through `intermediates` to one of `roots`, every
/// certificate valid at time `at`, issuers marked CA. A certificate in `intermediates` that is
/// byte-identical to a root is accepted as that root.
pub fn verify_path(leaf: &Cert, intermediates: &[Cert], roots: &[Cert], at: i64) -> Result<TrustedPath, SignError> {
    if !leaf.valid_at(at) {
        return Err(SignError::Untrusted(format!("certificate `{}` is not valid at the signing time", leaf.subject())));
    }
    let mut path = vec![leaf.clone()];
    let mut current = leaf.clone();
    for _ in 0..MAX_CHAIN {
        if roots.iter().any(|r| r.der == current.der) {
            return Ok(TrustedPath { certs: path });
        }
        // An anchor that issued the current certificate ends the path.
        for r in roots {
            if r.subject_der() == current.issuer_der() {
                let key = r.public_key()?;
                if current.signed_by(&key) {
                    path.push(r.clone());
                    return Ok(TrustedPath { certs: path });
                }
            }
        }
        let next = intermediates.iter().find(|c| {
            c.der != current.der
                && c.subject_der() == current.issuer_der()
                && c.public_key().is_ok_and(|k| current.signed_by(&k))
        });
        match next {
            Some(c) => {
                if !c.is_ca() {
                    return Err(SignError::Untrusted(format!("issuer `{}` is not a CA certificate", c.subject())));
                }
                if !c.valid_at(at) {
                    return Err(SignError::Untrusted(format!("issuer `{}` is not valid at the signing time", c.subject())));
                }
                path.push(c.clone());
                current = c.clone();
            }
            None => {
                return Err(SignError::Untrusted(format!(
                    "no trusted issuer for `{}` (issuer `{}`): the chain does not lead to a given root",
                    current.subject(),
                    current.issuer()
                )))
            }
        }
    }
    Err(SignError::Untrusted("certificate chain too long".into()))
}
