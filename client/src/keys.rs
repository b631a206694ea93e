//! P-256 key material: generation, PEM files, base64url public keys.

use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use p256::{PublicKey, SecretKey};
use rand_core::{OsRng, RngCore};
use shared::b64;

/// What is wrong with a key given to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a private key in any form the client reads.
    #[error("not a P-256 private key (PEM PKCS#8, PEM SEC1, or 32 bytes in base64url)")]
    PrivateKey,
    /// Not a 65-byte uncompressed point on P-256.
    #[error("not an uncompressed P-256 public key in base64url")]
    PublicKey,
    /// An auth secret is 16 bytes.
    #[error("the auth secret is not 16 bytes of base64url")]
    AuthSecret,
}

/// A fresh random P-256 private key.
pub fn generate() -> SecretKey {
    SecretKey::random(&mut OsRng)
}

/// `N` random bytes from the operating system.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

/// The key as a PKCS#8 PEM document (`-----BEGIN PRIVATE KEY-----`).
pub fn to_pem(key: &SecretKey) -> String {
    key.to_pkcs8_pem(LineEnding::LF)
        .expect("a P-256 key encodes as PKCS#8")
        .to_string()
}

/// Reads a private key: PEM PKCS#8, PEM SEC1 (`EC PRIVATE KEY`, as
/// `openssl ecparam` writes), or the raw 32-byte scalar in base64url (as
/// npm `web-push generate-vapid-keys` prints it).
pub fn parse_private(text: &str) -> Result<SecretKey, KeyError> {
    let t = text.trim();
    if t.contains("-----BEGIN PRIVATE KEY-----") {
        return SecretKey::from_pkcs8_pem(t).map_err(|_| KeyError::PrivateKey);
    }
    if t.contains("-----BEGIN EC PRIVATE KEY-----") {
        return SecretKey::from_sec1_pem(t).map_err(|_| KeyError::PrivateKey);
    }
    let raw = b64::decode_exact::<32>(t).ok_or(KeyError::PrivateKey)?;
    SecretKey::from_slice(&raw).map_err(|_| KeyError::PrivateKey)
}

/// The uncompressed SEC1 encoding (65 bytes, `0x04 || x || y`).
pub fn public_bytes(key: &PublicKey) -> [u8; 65] {
    let p = key.to_sec1_bytes();
    p.as_ref().try_into().expect("uncompressed P-256 point")
}

/// A public key as unpadded base64url of its uncompressed point.
pub fn public_b64(key: &PublicKey) -> String {
    b64::encode(&public_bytes(key))
}

/// Reads an uncompressed P-256 public key in base64url (padding optional).
pub fn parse_public(text: &str) -> Result<PublicKey, KeyError> {
    let k = shared::vapid::PublicKey::parse(text).map_err(|_| KeyError::PublicKey)?;
    PublicKey::from_sec1_bytes(&k.0).map_err(|_| KeyError::PublicKey)
}

/// Reads a 16-byte auth secret in base64url.
pub fn parse_auth(text: &str) -> Result<[u8; 16], KeyError> {
    b64::decode_exact::<16>(text.trim()).ok_or(KeyError::AuthSecret)
}

/// A private key's scalar as base64url (for state files).
pub fn private_b64(key: &SecretKey) -> String {
    b64::encode(&key.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_other_forms() {
        let k = generate();
        let pem = to_pem(&k);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(parse_private(&pem).unwrap(), k);
        assert_eq!(parse_private(&private_b64(&k)).unwrap(), k);
        let sec1 = k.to_sec1_pem(LineEnding::LF).unwrap();
        assert_eq!(parse_private(&sec1).unwrap(), k);
        assert_eq!(parse_private("nope"), Err(KeyError::PrivateKey));
        let p = k.public_key();
        assert_eq!(parse_public(&public_b64(&p)).unwrap(), p);
        assert_eq!(parse_public("AAAA"), Err(KeyError::PublicKey));
        assert_eq!(parse_auth("AAAA"), Err(KeyError::AuthSecret));
    }
}
