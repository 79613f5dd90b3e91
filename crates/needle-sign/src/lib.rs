//! OMS (OpenSSF model signing) manifests, signing and verification, and CycloneDX ML-BOMs.
//! (stub: to be implemented)
