//! RFC 8291 message encryption: the `aes128gcm` content coding (RFC 8188)
//! keyed by ECDH between the application server and the subscription.

use crate::keys;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::Aes128Gcm;
use hkdf::Hkdf;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;
use shared::ece::{Aes128gcmHeader, FIXED_HEADER_LEN, TAG_LEN};

/// The record size written: one record holds any push message.
pub const RECORD_SIZE: u32 = 4096;

/// Why a message could not be encrypted or decrypted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EceError {
    /// The body's RFC 8188 header is malformed.
    #[error(transparent)]
    Header(#[from] shared::ece::EceError),
    /// The key id is not the sender's P-256 public key.
    #[error("the aes128gcm key id is not the sender's 65-byte P-256 public key")]
    SenderKey,
    /// Authentication failed: not for this subscription, or altered.
    #[error("the message does not decrypt with this subscription's keys")]
    Decrypt,
    /// A decrypted record lacks its padding delimiter.
    #[error("a decrypted record has no valid padding delimiter")]
    Padding,
    /// The plaintext does not fit one record of [`RECORD_SIZE`].
    #[error("a payload of {0} bytes does not fit one {RECORD_SIZE}-byte record")]
    TooLong(usize),
}

/// The content encryption key and nonce of RFC 8291 §3.3–3.4.
fn derive(
    ecdh_secret: &[u8],
    auth: &[u8; 16],
    ua_public: &[u8; 65],
    as_public: &[u8; 65],
    salt: &[u8; 16],
) -> ([u8; 16], [u8; 12]) {
    let mut info = Vec::with_capacity(14 + 130);
    info.extend_from_slice(b"WebPush: info\0");
    info.extend_from_slice(ua_public);
    info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), ecdh_secret)
        .expand(&info, &mut ikm)
        .expect("32 bytes is a valid HKDF length");
    let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .expect("16 bytes");
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .expect("12 bytes");
    (cek, nonce)
}

/// Encrypts `plaintext` for a subscription with a fresh sender key and salt.
pub fn encrypt(
    plaintext: &[u8],
    ua_public: &PublicKey,
    auth: &[u8; 16],
) -> Result<Vec<u8>, EceError> {
    encrypt_with(
        plaintext,
        ua_public,
        auth,
        &keys::generate(),
        &keys::random::<16>(),
    )
}

/// Encrypts with a given sender key and salt (for test vectors; a real
/// message must use fresh ones, as [`encrypt`] does).
pub fn encrypt_with(
    plaintext: &[u8],
    ua_public: &PublicKey,
    auth: &[u8; 16],
    as_secret: &SecretKey,
    salt: &[u8; 16],
) -> Result<Vec<u8>, EceError> {
    if plaintext.len() + 1 + TAG_LEN > RECORD_SIZE as usize {
        return Err(EceError::TooLong(plaintext.len()));
    }
    let as_public = keys::public_bytes(&as_secret.public_key());
    let ua_bytes = keys::public_bytes(ua_public);
    let shared = p256::ecdh::diffie_hellman(as_secret.to_nonzero_scalar(), ua_public.as_affine());
    let (cek, nonce) = derive(shared.raw_secret_bytes(), auth, &ua_bytes, &as_public, salt);
    // One record, the last: the plaintext, then the delimiter 0x02, no padding.
    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(2);
    let sealed = Aes128Gcm::new(&cek.into())
        .encrypt(&nonce.into(), record.as_slice())
        .map_err(|_| EceError::Decrypt)?;
    let mut body = Vec::with_capacity(FIXED_HEADER_LEN + 65 + sealed.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(&as_public);
    body.extend_from_slice(&sealed);
    Ok(body)
}

/// Decrypts an `aes128gcm` push message body with the subscription's
/// private key and auth secret.
pub fn decrypt(body: &[u8], ua_secret: &SecretKey, auth: &[u8; 16]) -> Result<Vec<u8>, EceError> {
    let h = Aes128gcmHeader::parse(body)?;
    let as_public: [u8; 65] = h.key_id.try_into().map_err(|_| EceError::SenderKey)?;
    let sender = PublicKey::from_sec1_bytes(&as_public).map_err(|_| EceError::SenderKey)?;
    let ua_public = keys::public_bytes(&ua_secret.public_key());
    let shared = p256::ecdh::diffie_hellman(ua_secret.to_nonzero_scalar(), sender.as_affine());
    let (cek, nonce) = derive(
        shared.raw_secret_bytes(),
        auth,
        &ua_public,
        &as_public,
        h.salt,
    );
    let cipher = Aes128Gcm::new(&cek.into());
    let records: Vec<&[u8]> = body[h.len..].chunks(h.rs as usize).collect();
    let mut out = Vec::new();
    for (seq, rec) in records.iter().enumerate() {
        let mut n = nonce;
        for (i, b) in (seq as u64).to_be_bytes().iter().enumerate() {
            n[4 + i] ^= b;
        }
        let mut plain = cipher
            .decrypt(&n.into(), *rec)
            .map_err(|_| EceError::Decrypt)?;
        // RFC 8188 §2: strip zero padding, then the delimiter: 2 last, 1 other.
        while plain.last() == Some(&0) {
            plain.pop();
        }
        let want = if seq + 1 == records.len() { 2 } else { 1 };
        if plain.pop() != Some(want) {
            return Err(EceError::Padding);
        }
        out.extend_from_slice(&plain);
    }
    if records.is_empty() {
        return Err(EceError::Padding);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::b64;

    fn d(s: &str) -> Vec<u8> {
        b64::decode(s).unwrap()
    }

    // RFC 8291 Appendix A.
    const PLAINTEXT: &[u8] = b"When I grow up, I want to be a watermelon";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn vector_keys() -> (SecretKey, SecretKey, [u8; 16], [u8; 16]) {
        let as_secret = SecretKey::from_slice(&d(AS_PRIVATE)).unwrap();
        let ua_secret = SecretKey::from_slice(&d(UA_PRIVATE)).unwrap();
        // The vector's key pairs are consistent.
        assert_eq!(keys::public_b64(&as_secret.public_key()), AS_PUBLIC);
        assert_eq!(keys::public_b64(&ua_secret.public_key()), UA_PUBLIC);
        let salt = d(SALT).try_into().unwrap();
        let auth = d(AUTH).try_into().unwrap();
        (as_secret, ua_secret, salt, auth)
    }

    #[test]
    fn rfc8291_appendix_a_encrypts_to_the_exact_bytes() {
        let (as_secret, ua_secret, salt, auth) = vector_keys();
        let ua_public = keys::parse_public(UA_PUBLIC).unwrap();
        let body = encrypt_with(PLAINTEXT, &ua_public, &auth, &as_secret, &salt).unwrap();
        assert_eq!(b64::encode(&body), BODY);
        // And it is a valid push body for the service.
        Aes128gcmHeader::parse_webpush(&body).unwrap();
        assert_eq!(decrypt(&body, &ua_secret, &auth).unwrap(), PLAINTEXT);
    }

    #[test]
    fn rfc8291_appendix_a_decrypts() {
        let (_, ua_secret, _, auth) = vector_keys();
        assert_eq!(decrypt(&d(BODY), &ua_secret, &auth).unwrap(), PLAINTEXT);
    }

    #[test]
    fn fresh_keys_round_trip_and_tampering_fails() {
        let ua = keys::generate();
        let auth = keys::random::<16>();
        let a = encrypt(b"hello", &ua.public_key(), &auth).unwrap();
        let b = encrypt(b"hello", &ua.public_key(), &auth).unwrap();
        assert_ne!(a, b, "fresh salt and sender key each time");
        assert_eq!(decrypt(&a, &ua, &auth).unwrap(), b"hello");
        let mut bad = a.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(decrypt(&bad, &ua, &auth), Err(EceError::Decrypt));
        assert_eq!(
            decrypt(&a, &ua, &keys::random::<16>()),
            Err(EceError::Decrypt)
        );
        assert_eq!(
            decrypt(&a, &keys::generate(), &auth),
            Err(EceError::Decrypt)
        );
        assert!(matches!(
            decrypt(&a[..40], &ua, &auth),
            Err(EceError::Header(_))
        ));
        assert_eq!(
            encrypt(&[0; 4080], &ua.public_key(), &auth),
            Err(EceError::TooLong(4080))
        );
        assert!(encrypt(&[0; 4079], &ua.public_key(), &auth).is_ok());
    }
}
