//! EC keys: PEM private keys (PKCS#8, SEC1, encrypted PKCS#8) and public keys (SPKI), for the
//! curves OMS accepts (P-256, P-384, P-521). The curve picks the hash: SHA-256, SHA-384, SHA-512.

use crate::SignError;
use der::{Decode, Encode};
use p521::elliptic_curve::sec1::ToEncodedPoint;
use pkcs8::DecodePrivateKey;
use sha2::{Digest, Sha256};
use signature::hazmat::PrehashVerifier;
use signature::{Signer as _, Verifier as _};
use spki::{DecodePublicKey, EncodePublicKey, SubjectPublicKeyInfoRef};

const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";
pub(crate) const OID_RSA: &str = "1.2.840.113549.1.1.1";

/// An EC private key.
pub enum PrivateKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
}

/// A public key: EC for signatures, RSA only as a certificate issuer.
#[derive(Clone, Debug)]
pub enum PublicKey {
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    P521(p521::PublicKey),
    Rsa(rsa::RsaPublicKey),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.curve())
    }
}

impl PrivateKey {
    /// Reads a PEM private key; `password` for `ENCRYPTED PRIVATE KEY`.
    pub fn from_pem(pem: &str, password: Option<&[u8]>) -> Result<PrivateKey, SignError> {
        let (label, doc) = der::SecretDocument::from_pem(pem).map_err(|e| SignError::Key(format!("not a PEM key: {e}")))?;
        match label {
            "ENCRYPTED PRIVATE KEY" => {
                let pw = password.ok_or_else(|| SignError::Key("the key is encrypted: give --password-file".into()))?;
                let enc = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
                    .map_err(|e| SignError::Key(format!("encrypted key: {e}")))?;
                let plain = enc.decrypt(pw).map_err(|_| SignError::Key("cannot decrypt the key (wrong password?)".into()))?;
                Self::from_pkcs8_der(plain.as_bytes())
            }
            "PRIVATE KEY" => Self::from_pkcs8_der(doc.as_bytes()),
            "EC PRIVATE KEY" => {
                let k = sec1::EcPrivateKey::from_der(doc.as_bytes()).map_err(|e| SignError::Key(format!("SEC1 key: {e}")))?;
                let oid = k
                    .parameters
                    .and_then(|p| p.named_curve())
                    .ok_or_else(|| SignError::Key("SEC1 key without a named curve".into()))?;
                Self::from_scalar(&oid.to_string(), k.private_key)
            }
            other => Err(SignError::Key(format!("unsupported PEM block `{other}` (expected an EC private key)"))),
        }
    }

    fn from_pkcs8_der(der_bytes: &[u8]) -> Result<PrivateKey, SignError> {
        let info = pkcs8::PrivateKeyInfo::try_from(der_bytes).map_err(|e| SignError::Key(format!("PKCS#8: {e}")))?;
        if info.algorithm.oid.to_string() != OID_EC {
            return Err(SignError::Key(format!("only elliptic-curve keys are supported (algorithm {})", info.algorithm.oid)));
        }
        let curve = info
            .algorithm
            .parameters_oid()
            .map_err(|_| SignError::Key("EC key without a named curve".into()))?
            .to_string();
        match curve.as_str() {
            OID_P256 => Ok(PrivateKey::P256(p256::ecdsa::SigningKey::from_pkcs8_der(der_bytes).map_err(key_err)?)),
            OID_P384 => Ok(PrivateKey::P384(p384::ecdsa::SigningKey::from_pkcs8_der(der_bytes).map_err(key_err)?)),
            OID_P521 => {
                let sk = p521::SecretKey::from_pkcs8_der(der_bytes).map_err(key_err)?;
                Ok(PrivateKey::P521(p521::ecdsa::SigningKey::from_bytes(&sk.to_bytes()).map_err(key_err)?))
            }
            other => Err(SignError::Key(format!("unsupported curve {other} (P-256, P-384, P-521 only)"))),
        }
    }

    fn from_scalar(curve: &str, scalar: &[u8]) -> Result<PrivateKey, SignError> {
        match curve {
            OID_P256 => Ok(PrivateKey::P256(p256::ecdsa::SigningKey::from_slice(scalar).map_err(key_err)?)),
            OID_P384 => Ok(PrivateKey::P384(p384::ecdsa::SigningKey::from_slice(scalar).map_err(key_err)?)),
            OID_P521 => Ok(PrivateKey::P521(p521::ecdsa::SigningKey::from_slice(scalar).map_err(key_err)?)),
            other => Err(SignError::Key(format!("unsupported curve {other} (P-256, P-384, P-521 only)"))),
        }
    }

    pub fn curve(&self) -> &'static str {
        match self {
            PrivateKey::P256(_) => "P-256",
            PrivateKey::P384(_) => "P-384",
            PrivateKey::P521(_) => "P-521",
        }
    }

    pub fn public(&self) -> PublicKey {
        match self {
            PrivateKey::P256(k) => PublicKey::P256((*k.verifying_key()).into()),
            PrivateKey::P384(k) => PublicKey::P384((*k.verifying_key()).into()),
            PrivateKey::P521(k) => PublicKey::P521(p521::PublicKey::from_secret_scalar(k.as_nonzero_scalar())),
        }
    }

    /// ECDSA over `msg` with the curve's hash; DER signature.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            PrivateKey::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            PrivateKey::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            PrivateKey::P521(k) => {
                let s: p521::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
        }
    }
}

fn key_err(e: impl std::fmt::Display) -> SignError {
    SignError::Key(e.to_string())
}

impl PublicKey {
    /// Reads a `PUBLIC KEY` PEM (SubjectPublicKeyInfo).
    pub fn from_pem(pem: &str) -> Result<PublicKey, SignError> {
        let (label, doc) = der::Document::from_pem(pem).map_err(|e| SignError::Key(format!("not a PEM public key: {e}")))?;
        if label != "PUBLIC KEY" {
            return Err(SignError::Key(format!("expected a `PUBLIC KEY` PEM block, found `{label}`")));
        }
        Self::from_spki_der(doc.as_bytes())
    }

    /// Reads DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der_bytes: &[u8]) -> Result<PublicKey, SignError> {
        let spki = SubjectPublicKeyInfoRef::from_der(der_bytes).map_err(|e| SignError::Key(format!("public key: {e}")))?;
        let alg = spki.algorithm.oid.to_string();
        if alg == OID_RSA {
            use rsa::pkcs8::DecodePublicKey as _;
            return Ok(PublicKey::Rsa(rsa::RsaPublicKey::from_public_key_der(der_bytes).map_err(key_err)?));
        }
        if alg != OID_EC {
            return Err(SignError::Key(format!("unsupported public key algorithm {alg}")));
        }
        let curve = spki
            .algorithm
            .parameters_oid()
            .map_err(|_| SignError::Key("EC key without a named curve".into()))?
            .to_string();
        match curve.as_str() {
            OID_P256 => Ok(PublicKey::P256(p256::PublicKey::from_public_key_der(der_bytes).map_err(key_err)?)),
            OID_P384 => Ok(PublicKey::P384(p384::PublicKey::from_public_key_der(der_bytes).map_err(key_err)?)),
            OID_P521 => {
                let bytes = spki.subject_public_key.as_bytes().ok_or_else(|| SignError::Key("bad key bits".into()))?;
                Ok(PublicKey::P521(p521::PublicKey::from_sec1_bytes(bytes).map_err(key_err)?))
            }
            other => Err(SignError::Key(format!("unsupported curve {other} (P-256, P-384, P-521 only)"))),
        }
    }

    pub fn is_ec(&self) -> bool {
        !matches!(self, PublicKey::Rsa(_))
    }

    pub fn describe(&self) -> &'static str {
        match self {
            PublicKey::P256(_) => "ECDSA P-256",
            PublicKey::P384(_) => "ECDSA P-384",
            PublicKey::P521(_) => "ECDSA P-521",
            PublicKey::Rsa(_) => "RSA",
        }
    }

    /// DER SubjectPublicKeyInfo (uncompressed point, as the reference writes it).
    pub fn to_spki_der(&self) -> Result<Vec<u8>, SignError> {
        let doc = match self {
            PublicKey::P256(k) => k.to_public_key_der(),
            PublicKey::P384(k) => k.to_public_key_der(),
            PublicKey::P521(k) => {
                let spki = spki::SubjectPublicKeyInfo {
                    algorithm: spki::AlgorithmIdentifier {
                        oid: spki::ObjectIdentifier::new_unwrap(OID_EC),
                        parameters: Some(der::Any::from(&spki::ObjectIdentifier::new_unwrap(OID_P521))),
                    },
                    subject_public_key: der::asn1::BitString::from_bytes(k.to_encoded_point(false).as_bytes())
                        .map_err(key_err)?,
                };
                return spki.to_der().map_err(key_err);
            }
            PublicKey::Rsa(k) => {
                use rsa::pkcs8::EncodePublicKey as _;
                return Ok(k.to_public_key_der().map_err(key_err)?.as_bytes().to_vec());
            }
        };
        Ok(doc.map_err(key_err)?.as_bytes().to_vec())
    }

    /// PEM as Python's `cryptography` writes it (64-column lines, LF).
    pub fn to_pem(&self) -> Result<String, SignError> {
        let der_bytes = self.to_spki_der()?;
        der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &der_bytes).map_err(key_err)
    }

    /// The OMS `publicKey.hint`: hex SHA-256 of the PEM.
    pub fn hint(&self) -> Result<String, SignError> {
        Ok(hex::encode(Sha256::digest(self.to_pem()?.as_bytes())))
    }

    /// Verifies a DER ECDSA signature over `msg`, hashed with the curve's hash.
    pub fn verify(&self, msg: &[u8], sig_der: &[u8]) -> bool {
        match self {
            PublicKey::P256(k) => p256::ecdsa::Signature::from_der(sig_der)
                .is_ok_and(|s| p256::ecdsa::VerifyingKey::from(k).verify(msg, &s).is_ok()),
            PublicKey::P384(k) => p384::ecdsa::Signature::from_der(sig_der)
                .is_ok_and(|s| p384::ecdsa::VerifyingKey::from(k).verify(msg, &s).is_ok()),
            PublicKey::P521(k) => p521::ecdsa::Signature::from_der(sig_der).is_ok_and(|s| {
                p521::ecdsa::VerifyingKey::from_sec1_bytes(k.to_encoded_point(false).as_bytes())
                    .is_ok_and(|v| v.verify(msg, &s).is_ok())
            }),
            PublicKey::Rsa(_) => false,
        }
    }

    /// Verifies a DER ECDSA signature over an already computed digest.
    pub fn verify_prehash(&self, digest: &[u8], sig_der: &[u8]) -> bool {
        match self {
            PublicKey::P256(k) => p256::ecdsa::Signature::from_der(sig_der)
                .is_ok_and(|s| p256::ecdsa::VerifyingKey::from(k).verify_prehash(digest, &s).is_ok()),
            PublicKey::P384(k) => p384::ecdsa::Signature::from_der(sig_der)
                .is_ok_and(|s| p384::ecdsa::VerifyingKey::from(k).verify_prehash(digest, &s).is_ok()),
            PublicKey::P521(k) => p521::ecdsa::Signature::from_der(sig_der).is_ok_and(|s| {
                p521::ecdsa::VerifyingKey::from_sec1_bytes(k.to_encoded_point(false).as_bytes())
                    .is_ok_and(|v| v.verify_prehash(digest, &s).is_ok())
            }),
            PublicKey::Rsa(_) => false,
        }
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        matches!((self.to_spki_der(), other.to_spki_der()), (Ok(a), Ok(b)) if a == b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_matches_reference_pem_hash() {
        // The reference records hex(sha256(PEM)); the PEM must round-trip byte for byte.
        let pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEY32c1Qu5APmRfKordQ/HXajD0mwI\nRvF1YU/EQGQ0dlraWVlHZW5AJvd1EdaQS0iD+oobZBSaJO7gQCbqnVvpFQ==\n-----END PUBLIC KEY-----\n";
        let k = PublicKey::from_pem(pem).unwrap();
        assert_eq!(k.to_pem().unwrap(), pem);
        assert_eq!(k.hint().unwrap(), hex::encode(Sha256::digest(pem.as_bytes())));
    }

    #[test]
    fn rejects_garbage() {
        assert!(PublicKey::from_pem("nope").is_err());
        assert!(PrivateKey::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", None).is_err());
    }
}
