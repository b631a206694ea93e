//! Stand-in push bodies framed as the service checks them: aes128gcm, list JWE, list documents.

use shared::b64;
use shared::ece::{FIXED_HEADER_LEN, TAG_LEN, WEBPUSH_KEY_ID_LEN};
use shared::jwe::{Alg, CompactTemplate, Enc};
use shared::list::Member;

/// Bytes of an aes128gcm push body besides its plaintext: the RFC 8188
/// header with the sender's key as key id, the delimiter and the tag.
pub const AES128GCM_OVERHEAD: usize = FIXED_HEADER_LEN + WEBPUSH_KEY_ID_LEN + 1 + TAG_LEN;

/// A syntactically valid aes128gcm body of `len` bytes (RFC 8188 header:
/// 16-byte salt, rs 4096, idlen 65, a key id starting 0x04; then "ciphertext").
pub fn aes128gcm_body(len: usize) -> Result<Vec<u8>, String> {
    const MIN: usize = AES128GCM_OVERHEAD;
    if len == 0 {
        return Ok(Vec::new());
    }
    if len < MIN {
        return Err(format!("--body-bytes must be 0 or at least {MIN}"));
    }
    let mut b = Vec::with_capacity(len);
    b.extend((0..16u8).map(|i| i.wrapping_mul(37)));
    b.extend_from_slice(&4096u32.to_be_bytes());
    b.push(WEBPUSH_KEY_ID_LEN as u8);
    b.push(0x04);
    b.extend((0..64u8).map(|i| i.wrapping_mul(11).wrapping_add(3)));
    let mut x = 0x2545_f491u32;
    while b.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b.push(x as u8);
    }
    Ok(b)
}

/// Key management algorithm of the list push: each member's key is the
/// content key wrapped with AES Key Wrap.
const ALG: Alg = Alg::A128kw;
/// Content encryption of the list push.
const ENC: Enc = Enc::A128gcm;
/// Bytes of a member's encrypted key: the 16-byte content key of `ENC`
/// wrapped by `ALG` (RFC 3394 adds 8).
const MEMBER_KEY_BYTES: usize = 24;

/// The compact JWE (`A128KW`/`A128GCM`) pushed to a list, with an empty
/// encrypted-key part, as close to `len` bytes as the encoding allows
/// (never more); checked as the service checks it.
pub fn list_jwe(len: usize) -> Result<CompactTemplate, String> {
    let header = serde_json::json!({"alg": ALG.name(), "enc": ENC.name()}).to_string();
    let head = format!(
        "{}..{}.",
        b64::encode(header.as_bytes()),
        b64::encode(&vec![7; ENC.iv_len()])
    );
    let tag = format!(".{}", b64::encode(&vec![9; ENC.tag_len()]));
    let room = len
        .checked_sub(head.len() + tag.len())
        .filter(|r| *r >= 4)
        .ok_or_else(|| {
            format!(
                "--body-bytes must be at least {}",
                head.len() + tag.len() + 4
            )
        })?;
    let n = room * 3 / 4;
    let ct: Vec<u8> = (0..n).map(|i| (i * 31 + 5) as u8).collect();
    let text = format!("{head}{}{tag}", b64::encode(&ct));
    CompactTemplate::parse(text.as_bytes()).map_err(|e| format!("the list push's JWE: {e}"))
}

/// Member `i`'s encrypted key, base64url.
pub fn member_key(i: usize) -> String {
    let mut k = [0u8; MEMBER_KEY_BYTES];
    k[..8].copy_from_slice(&(i as u64).to_be_bytes());
    k[8..]
        .iter_mut()
        .enumerate()
        .for_each(|(j, b)| *b = j as u8);
    b64::encode(&k)
}

/// Bytes of a member's copy of a list push of `jwe`.
pub fn copy_len(jwe: &CompactTemplate) -> usize {
    jwe.member_len(&member_key(0))
}

/// A list document (or merge patch) adding `members` (index, push
/// endpoint URL), each with its own encrypted key.
pub fn list_document(members: &[(usize, String)]) -> String {
    let members: Vec<Member> = members
        .iter()
        .map(|(i, url)| Member {
            uri: url.clone(),
            expires: None,
            encrypted_key: Some(member_key(*i)),
            header: None,
        })
        .collect();
    let mut doc = String::with_capacity(members.len() * 160);
    shared::list::write_document(&members, &mut doc);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::ece::Aes128gcmHeader;
    use shared::jwe::CompactJwe;

    #[test]
    fn aes128gcm_framing() {
        let b = aes128gcm_body(2048).unwrap();
        assert_eq!(b.len(), 2048);
        let h = Aes128gcmHeader::parse_webpush(&b).unwrap();
        assert_eq!(h.rs, 4096);
        assert_eq!(h.len, FIXED_HEADER_LEN + WEBPUSH_KEY_ID_LEN);
        assert!(
            Aes128gcmHeader::parse_webpush(&aes128gcm_body(AES128GCM_OVERHEAD).unwrap()).is_ok()
        );
        assert!(aes128gcm_body(0).unwrap().is_empty());
        assert!(aes128gcm_body(50).is_err());
        assert!(aes128gcm_body(AES128GCM_OVERHEAD - 1).is_err());
    }

    #[test]
    fn list_jwe_is_a_list_push() {
        for len in [2048, 2047, 2046, 200, 4096] {
            let t = list_jwe(len).unwrap();
            let j = t.as_str();
            assert!(j.len() <= len && j.len() + 3 >= len, "{len}: {}", j.len());
            let p = CompactJwe::parse(j.as_bytes(), true).unwrap();
            assert_eq!((p.alg, p.enc), (ALG, ENC));
            assert!(p.parts[1].is_empty());
        }
        assert!(list_jwe(10).is_err());
    }

    #[test]
    fn members_copies_are_whole_jwes() {
        assert!(ALG.key_len_fits(ENC, MEMBER_KEY_BYTES));
        assert_eq!(member_key(3).len(), 32);
        assert_ne!(member_key(3), member_key(4));
        let t = list_jwe(2048).unwrap();
        let mut copy = Vec::new();
        t.write_member(&member_key(7), &mut copy);
        assert_eq!(copy.len(), copy_len(&t));
        assert_eq!(copy_len(&t), t.as_str().len() + 32);
        let p = CompactJwe::parse(&copy, false).unwrap();
        assert_eq!(p.parts[1], member_key(7));
    }

    #[test]
    fn documents_parse_as_the_service_parses_them() {
        let members: Vec<(usize, String)> = (0..3)
            .map(|i| (i, format!("http://127.0.0.1:8080/p/device{i}")))
            .collect();
        let doc = list_document(&members);
        assert!(doc.starts_with(r#"{"http://127.0.0.1:8080/p/device0":{"encrypted_key":""#));
        let limits = shared::Limits::default();
        let p = shared::list::parse_document(doc.as_bytes(), 0, &limits).unwrap();
        assert!(p.rejected.is_empty());
        assert_eq!(p.accepted.len(), 3);
        assert_eq!(
            p.accepted[2].encrypted_key.as_deref(),
            Some(&*member_key(2))
        );
        let patch = shared::list::parse_patch(doc.as_bytes(), 0, &limits).unwrap();
        assert!(patch.rejected.is_empty());
        assert_eq!(list_document(&[]), "{}");
    }
}
