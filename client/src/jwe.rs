//! JWE (RFC 7516, RFC 7518) for list messages: one content key per list
//! (the *group key*), wrapped for each member with `ECDH-ES+A128KW` against
//! the member's own subscription key (`p256dh`), so that a device unwraps it
//! with the private key it already holds. The per-member ephemeral key
//! (`epk`) travels in the member's per-recipient `header` (docs/protocol.md §4).
//!
//! Messages are `A128GCM` under the group key, in the JSON serialization.
//! [`decrypt`] also reads the compact serialization and the other
//! `ECDH-ES` variants a sender may choose. The serialization and its headers
//! are read and checked by `shared::jwe`, as the service checks them (an
//! overlapping header parameter is refused); this module holds the
//! cryptography.

use crate::keys;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use aes_kw::{KekAes128, KekAes192, KekAes256};
use p256::{PublicKey, SecretKey};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use shared::b64;
use shared::jwe::{Alg, CompactJwe, Enc, JsonJwe};

/// The key management algorithm this client writes.
pub const ALG: &str = "ECDH-ES+A128KW";
/// The content encryption algorithm this client writes.
pub const ENC: &str = "A128GCM";

/// Why a JWE could not be made or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JweError {
    /// Not a well-formed JWE, as the service would refuse it.
    #[error(transparent)]
    Invalid(#[from] shared::jwe::JweError),
    /// A part the checks let through does not decode.
    #[error("not a JWE: {0}")]
    Format(&'static str),
    /// An algorithm or feature this client does not implement.
    #[error("JWE {what} {value:?} is not supported")]
    Unsupported {
        /// The header parameter.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// The `epk` is not a P-256 public key JWK.
    #[error("the JWE epk is not a P-256 public key")]
    Epk,
    /// No recipient's key unwraps with this private key.
    #[error("no recipient of this JWE is this key (or the wrapped key was altered)")]
    NoRecipient,
    /// The content does not authenticate under the unwrapped key.
    #[error("the JWE content does not decrypt under the unwrapped key (was the group key rotated after it was sent?)")]
    Decrypt,
    /// A group key file does not hold a 16-byte key.
    #[error("a group key is 16 bytes of base64url")]
    GroupKey,
}

/// A list's content encryption key for `A128GCM`.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupKey([u8; 16]);

impl GroupKey {
    /// A fresh random key.
    pub fn generate() -> GroupKey {
        GroupKey(keys::random())
    }
    /// From its raw bytes.
    pub fn from_bytes(b: [u8; 16]) -> GroupKey {
        GroupKey(b)
    }
    /// From base64url text.
    pub fn from_b64(s: &str) -> Result<GroupKey, JweError> {
        b64::decode_exact::<16>(s.trim())
            .map(GroupKey)
            .ok_or(JweError::GroupKey)
    }
    /// As base64url text.
    pub fn to_b64(&self) -> String {
        b64::encode(&self.0)
    }
}

impl std::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupKey(…)")
    }
}

/// The group key wrapped for one member: its list document entry.
#[derive(Clone, Debug, PartialEq)]
pub struct WrappedKey {
    /// The JWE Encrypted Key, base64url.
    pub encrypted_key: String,
    /// The member's per-recipient header: `alg` and its own `epk`.
    pub header: Value,
}

/// A P-256 public key as a JWK (`kty`, `crv`, `x`, `y`).
pub fn jwk(key: &PublicKey) -> Value {
    let p = keys::public_bytes(key);
    json!({"kty": "EC", "crv": "P-256", "x": b64::encode(&p[1..33]), "y": b64::encode(&p[33..])})
}

/// Reads a P-256 public key JWK; the point must be on the curve.
fn parse_jwk(v: &Value) -> Result<PublicKey, JweError> {
    let field = |n| v.get(n).and_then(Value::as_str).ok_or(JweError::Epk);
    if field("kty")? != "EC" || field("crv")? != "P-256" {
        return Err(JweError::Epk);
    }
    let x = b64::decode_exact::<32>(field("x")?).ok_or(JweError::Epk)?;
    let y = b64::decode_exact::<32>(field("y")?).ok_or(JweError::Epk)?;
    let mut sec1 = [4u8; 65];
    sec1[1..33].copy_from_slice(&x);
    sec1[33..].copy_from_slice(&y);
    PublicKey::from_sec1_bytes(&sec1).map_err(|_| JweError::Epk)
}

/// The Concat KDF of RFC 7518 §4.6.2 (NIST SP 800-56A) with SHA-256.
fn derive_kek(z: &[u8], algorithm_id: &str, apu: &[u8], apv: &[u8], out: &mut [u8]) {
    let mut info = Vec::new();
    for part in [algorithm_id.as_bytes(), apu, apv] {
        info.extend_from_slice(&(part.len() as u32).to_be_bytes());
        info.extend_from_slice(part);
    }
    info.extend_from_slice(&((out.len() * 8) as u32).to_be_bytes());
    concat_kdf::derive_key_into::<Sha256>(z, &info, out).expect("a short key length");
}

/// Wraps the group key for a member with a fresh ephemeral key.
pub fn wrap(key: &GroupKey, member: &PublicKey) -> WrappedKey {
    wrap_with(key, member, &keys::generate())
}

/// Wraps the group key for a member with a given ephemeral key.
pub fn wrap_with(key: &GroupKey, member: &PublicKey, ephemeral: &SecretKey) -> WrappedKey {
    let z = p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), member.as_affine());
    let mut kek = [0u8; 16];
    derive_kek(z.raw_secret_bytes(), ALG, b"", b"", &mut kek);
    let wrapped = KekAes128::new(&kek.into())
        .wrap_vec(&key.0)
        .expect("a 16-byte key wraps");
    WrappedKey {
        encrypted_key: b64::encode(&wrapped),
        header: json!({"alg": ALG, "epk": jwk(&ephemeral.public_key())}),
    }
}

/// Encrypts a list message under the group key: the JSON serialization's
/// shared members (`protected`, `iv`, `ciphertext`, `tag`) with no
/// recipients; the service adds each member's.
pub fn encrypt(key: &GroupKey, plaintext: &[u8]) -> Value {
    encrypt_with_iv(key, plaintext, &keys::random())
}

/// [`encrypt`] with a given IV (for tests; an IV must never repeat under a key).
pub fn encrypt_with_iv(key: &GroupKey, plaintext: &[u8], iv: &[u8; 12]) -> Value {
    let protected = b64::encode(format!(r#"{{"enc":"{ENC}"}}"#).as_bytes());
    let sealed = Aes128Gcm::new(&key.0.into())
        .encrypt(
            iv.into(),
            Payload {
                msg: plaintext,
                aad: protected.as_bytes(),
            },
        )
        .expect("AES-GCM encrypts");
    let (ct, tag) = sealed.split_at(sealed.len() - 16);
    json!({
        "protected": protected,
        "iv": b64::encode(iv),
        "ciphertext": b64::encode(ct),
        "tag": b64::encode(tag),
    })
}

/// A general JSON serialization of `shared` (from [`encrypt`]) for the given
/// recipients: what one member receives when the list holds one entry.
pub fn with_recipients(shared: &Value, recipients: &[WrappedKey]) -> Value {
    let mut v = shared.clone();
    v["recipients"] = recipients
        .iter()
        .map(|r| json!({"encrypted_key": r.encrypted_key, "header": r.header}))
        .collect();
    v
}

fn text<'a>(h: &'a Map<String, Value>, name: &'static str) -> Result<Option<&'a str>, JweError> {
    match h.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JweError::Format("a header parameter is not a string")),
    }
}

fn decode(s: &str, what: &'static str) -> Result<Vec<u8>, JweError> {
    b64::decode(s).ok_or(JweError::Format(what))
}

/// Derives the content key of one recipient from its JOSE header (whose
/// `alg` and `enc` are given) and its encrypted key.
fn content_key(
    alg: Alg,
    enc: Enc,
    h: &Map<String, Value>,
    ek: &[u8],
    key: &SecretKey,
) -> Result<Vec<u8>, JweError> {
    if let Some(z) = text(h, "zip")? {
        return Err(JweError::Unsupported {
            what: "zip",
            value: z.into(),
        });
    }
    let enc_len = match enc {
        Enc::A128gcm | Enc::A256gcm => enc.key_len(),
        other => {
            return Err(JweError::Unsupported {
                what: "enc",
                value: other.name().into(),
            })
        }
    };
    let (kdf_alg, kek_len) = match alg {
        Alg::EcdhEs => (enc.name(), enc_len),
        Alg::EcdhEsA128kw => (alg.name(), 16),
        Alg::EcdhEsA192kw => (alg.name(), 24),
        Alg::EcdhEsA256kw => (alg.name(), 32),
        other => {
            return Err(JweError::Unsupported {
                what: "alg",
                value: other.name().into(),
            })
        }
    };
    let epk = parse_jwk(h.get("epk").ok_or(JweError::Epk)?)?;
    let apu = text(h, "apu")?.map_or(Ok(Vec::new()), |s| decode(s, "apu is not base64url"))?;
    let apv = text(h, "apv")?.map_or(Ok(Vec::new()), |s| decode(s, "apv is not base64url"))?;
    let z = p256::ecdh::diffie_hellman(key.to_nonzero_scalar(), epk.as_affine());
    let mut kek = vec![0u8; kek_len];
    derive_kek(z.raw_secret_bytes(), kdf_alg, &apu, &apv, &mut kek);
    let cek = match kek_len {
        // The key agreed is the content key; `shared::jwe` checked that
        // the encrypted key is empty.
        _ if alg == Alg::EcdhEs => Ok(kek),
        16 => KekAes128::new(kek.as_slice().into()).unwrap_vec(ek),
        24 => KekAes192::new(kek.as_slice().into()).unwrap_vec(ek),
        _ => KekAes256::new(kek.as_slice().into()).unwrap_vec(ek),
    }
    .map_err(|_| JweError::NoRecipient)?;
    if cek.len() != enc_len {
        return Err(JweError::NoRecipient);
    }
    Ok(cek)
}

/// Decrypts content: `iv`, `ciphertext`, `tag` with the AAD.
fn open(cek: &[u8], iv: &[u8], ct: &[u8], tag: &[u8], aad: &[u8]) -> Result<Vec<u8>, JweError> {
    if iv.len() != 12 || tag.len() != 16 {
        return Err(JweError::Format(
            "A*GCM needs a 12-byte iv and a 16-byte tag",
        ));
    }
    let mut msg = Vec::with_capacity(ct.len() + 16);
    msg.extend_from_slice(ct);
    msg.extend_from_slice(tag);
    let payload = Payload { msg: &msg, aad };
    match cek.len() {
        16 => Aes128Gcm::new(cek.into()).decrypt(iv.into(), payload),
        _ => Aes256Gcm::new(cek.into()).decrypt(iv.into(), payload),
    }
    .map_err(|_| JweError::Decrypt)
}

/// Decrypts a JWE, compact or JSON (general or flattened), for which `key`
/// (a subscription's private key) is a recipient through `ECDH-ES` or
/// `ECDH-ES+A*KW`, with `A128GCM` or `A256GCM` content.
pub fn decrypt(body: &[u8], key: &SecretKey) -> Result<Vec<u8>, JweError> {
    let text = std::str::from_utf8(body).map_err(|_| shared::jwe::JweError::NotText)?;
    let text = text.trim();
    if text.starts_with('{') {
        decrypt_json(text, key)
    } else {
        decrypt_compact(text, key)
    }
}

fn decrypt_compact(text: &str, key: &SecretKey) -> Result<Vec<u8>, JweError> {
    let jwe = CompactJwe::parse(text.as_bytes(), false)?;
    let [protected, ek, iv, ct, tag] = jwe.parts;
    let cek = content_key(
        jwe.alg,
        jwe.enc,
        &jwe.header()?,
        &decode(ek, "the encrypted key is not base64url")?,
        key,
    )?;
    open(
        &cek,
        &decode(iv, "the iv is not base64url")?,
        &decode(ct, "the ciphertext is not base64url")?,
        &decode(tag, "the tag is not base64url")?,
        protected.as_bytes(),
    )
}

fn decrypt_json(text: &str, key: &SecretKey) -> Result<Vec<u8>, JweError> {
    let jwe = JsonJwe::parse(text.as_bytes(), false)?;
    let member =
        |name: &'static str, what: &'static str| decode(jwe.member(name).unwrap_or_default(), what);
    let iv = member("iv", "the iv is not base64url")?;
    let ct = member("ciphertext", "the ciphertext is not base64url")?;
    let tag = member("tag", "the tag is not base64url")?;
    let mut aad = jwe.member("protected").unwrap_or_default().to_owned();
    if let Some(a) = jwe.member("aad") {
        aad.push('.');
        aad.push_str(a);
    }
    let mut last = JweError::NoRecipient;
    for r in jwe.recipients()? {
        let ek = decode(r.encrypted_key, "an encrypted key is not base64url")?;
        match content_key(r.alg, jwe.enc, &r.header, &ek, key)
            .and_then(|cek| open(&cek, &iv, &ct, &tag, aad.as_bytes()))
        {
            Ok(plain) => return Ok(plain),
            Err(e @ (JweError::NoRecipient | JweError::Decrypt | JweError::Epk)) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_message_round_trip_per_member() {
        let gk = GroupKey::generate();
        let members: Vec<SecretKey> = (0..3).map(|_| keys::generate()).collect();
        let shared = encrypt(&gk, b"to the group");
        let wrapped: Vec<WrappedKey> = members.iter().map(|m| wrap(&gk, &m.public_key())).collect();
        // Each member's copy, as the service writes it, decrypts with its key only.
        for (i, m) in members.iter().enumerate() {
            let copy = with_recipients(&shared, &wrapped[i..=i]);
            let body = copy.to_string();
            assert_eq!(decrypt(body.as_bytes(), m).unwrap(), b"to the group");
            shared::jwe::JsonJwe::parse(body.as_bytes(), false).unwrap();
            let other = &members[(i + 1) % 3];
            assert_eq!(decrypt(body.as_bytes(), other), Err(JweError::NoRecipient));
        }
        // The general form with every recipient decrypts for any member.
        let all = with_recipients(&shared, &wrapped).to_string();
        for m in &members {
            assert_eq!(decrypt(all.as_bytes(), m).unwrap(), b"to the group");
        }
        // The shared part is an acceptable list push body.
        shared::jwe::JsonTemplate::parse(shared.to_string().as_bytes()).unwrap();
        let w = &wrapped[0];
        assert_eq!(b64::decode(&w.encrypted_key).unwrap().len(), 24);
        shared::jwe::member_header(&w.header, 2048).unwrap();
    }

    #[test]
    fn rotated_key_and_tampering_are_refused() {
        let old = GroupKey::generate();
        let new = GroupKey::generate();
        let m = keys::generate();
        let msg = encrypt(&old, b"x");
        let copy = with_recipients(&msg, &[wrap(&new, &m.public_key())]).to_string();
        assert_eq!(decrypt(copy.as_bytes(), &m), Err(JweError::Decrypt));
        let mut bad = with_recipients(&msg, &[wrap(&old, &m.public_key())]);
        bad["protected"] = b64::encode(br#"{"enc":"A128GCM","x":1}"#).into();
        assert_eq!(
            decrypt(bad.to_string().as_bytes(), &m),
            Err(JweError::Decrypt)
        );
        assert!(matches!(decrypt(b"{}", &m), Err(JweError::Invalid(_))));
        assert!(matches!(decrypt(b"a.b", &m), Err(JweError::Invalid(_))));
    }

    #[test]
    fn compact_with_a_shared_epk() {
        // The compact form of a list push: one epk in the protected header.
        let gk = GroupKey::generate();
        let m = keys::generate();
        let eph = keys::generate();
        let w = wrap_with(&gk, &m.public_key(), &eph);
        let protected = b64::encode(
            json!({"alg": ALG, "enc": ENC, "epk": jwk(&eph.public_key())})
                .to_string()
                .as_bytes(),
        );
        let iv = [7u8; 12];
        let sealed = Aes128Gcm::new(&gk.0.into())
            .encrypt(
                &iv.into(),
                Payload {
                    msg: b"compact",
                    aad: protected.as_bytes(),
                },
            )
            .unwrap();
        let (ct, tag) = sealed.split_at(sealed.len() - 16);
        let text = format!(
            "{protected}.{}.{}.{}.{}",
            w.encrypted_key,
            b64::encode(&iv),
            b64::encode(ct),
            b64::encode(tag)
        );
        assert_eq!(decrypt(text.as_bytes(), &m).unwrap(), b"compact");
    }

    #[test]
    fn overlapping_header_parameters_are_refused() {
        // RFC 7516 §7.2.1: the protected, unprotected and per-recipient
        // headers share no parameter, even one with the same value.
        let gk = GroupKey::generate();
        let m = keys::generate();
        let msg = encrypt(&gk, b"x");
        let w = wrap(&gk, &m.public_key());
        let good = with_recipients(&msg, std::slice::from_ref(&w));
        assert_eq!(decrypt(good.to_string().as_bytes(), &m).unwrap(), b"x");

        let mut in_recipient = good.clone();
        in_recipient["recipients"][0]["header"]["enc"] = ENC.into();
        let mut in_unprotected = good.clone();
        in_unprotected["unprotected"] = json!({"enc": ENC});
        let mut alg_twice = good;
        alg_twice["unprotected"] = json!({"alg": ALG});
        for (body, param) in [
            (in_recipient, "enc"),
            (in_unprotected, "enc"),
            (alg_twice, "alg"),
        ] {
            assert_eq!(
                decrypt(body.to_string().as_bytes(), &m),
                Err(JweError::Invalid(shared::jwe::JweError::DuplicateParam(
                    param.into()
                ))),
                "{body}"
            );
        }
    }

    #[test]
    fn group_key_text() {
        let k = GroupKey::generate();
        assert_eq!(GroupKey::from_b64(&k.to_b64()).unwrap(), k);
        assert_eq!(GroupKey::from_b64("AAAA"), Err(JweError::GroupKey));
        assert_eq!(format!("{k:?}"), "GroupKey(…)");
    }
}
