//! The `aes128gcm` content coding header (RFC 8188 §2), checked as RFC 8291
//! constrains it for push messages. Nothing is decrypted: the service cannot,
//! and need not, read the message.

use crate::problem::{errno, ProblemSource};

/// Bytes before the key id: salt (16), record size (4), key id length (1).
pub const FIXED_HEADER_LEN: usize = 21;
/// The smallest record: a delimiter octet and the 16-octet AEAD tag (RFC 8188 §2).
pub const MIN_RECORD: u32 = 18;
/// Length of the key id in a push message: the sender's uncompressed P-256 key.
pub const WEBPUSH_KEY_ID_LEN: usize = 65;
/// AEAD_AES_128_GCM tag length.
pub const TAG_LEN: usize = 16;

/// What is wrong with an `aes128gcm` body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EceError {
    /// Shorter than the header it announces.
    #[error("aes128gcm body is {len} bytes, shorter than its {need}-byte header")]
    Truncated {
        /// Body length.
        len: usize,
        /// Header length needed.
        need: usize,
    },
    /// `rs` below 18.
    #[error("aes128gcm record size {0} is below the minimum of 18")]
    RecordSizeTooSmall(u32),
    /// RFC 8291 §4: the key id must be the 65-byte uncompressed sender key.
    #[error("aes128gcm key id must be the sender's 65-byte uncompressed P-256 key (idlen is {0})")]
    KeyIdLength(usize),
    /// RFC 8291 §4: an uncompressed point starts with 0x04.
    #[error("aes128gcm key id must be an uncompressed P-256 point starting with 0x04")]
    KeyIdNotUncompressed,
    /// No ciphertext, or less than one tag and delimiter.
    #[error("aes128gcm ciphertext is {0} bytes; a record holds at least 17 (tag and delimiter)")]
    NoRecord(usize),
    /// RFC 8291 §4: a push message is a single record.
    #[error("aes128gcm ciphertext of {len} bytes does not fit the single record of {rs} bytes that RFC 8291 allows")]
    MoreThanOneRecord {
        /// Ciphertext length.
        len: usize,
        /// Declared record size.
        rs: u32,
    },
}

impl ProblemSource for EceError {
    fn status(&self) -> u16 {
        400
    }
    fn kind(&self) -> &'static str {
        "invalid-aes128gcm"
    }
    fn title(&self) -> &'static str {
        "Malformed aes128gcm body"
    }
    fn errno(&self) -> Option<u16> {
        Some(errno::INVALID_CRYPTO)
    }
}

/// The RFC 8188 header at the start of an `aes128gcm` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aes128gcmHeader<'a> {
    /// The 16-byte salt.
    pub salt: &'a [u8; 16],
    /// The record size.
    pub rs: u32,
    /// The key id (for push, the sender's public key).
    pub key_id: &'a [u8],
    /// Header length; the ciphertext starts here.
    pub len: usize,
}

impl<'a> Aes128gcmHeader<'a> {
    /// Parses the header as RFC 8188 defines it, with no push-specific rule.
    pub fn parse(body: &'a [u8]) -> Result<Aes128gcmHeader<'a>, EceError> {
        let truncated = |need| EceError::Truncated {
            len: body.len(),
            need,
        };
        let fixed: &[u8; FIXED_HEADER_LEN] = body
            .get(..FIXED_HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(truncated(FIXED_HEADER_LEN))?;
        let salt: &[u8; 16] = fixed[..16].try_into().expect("16 bytes");
        let rs = u32::from_be_bytes(fixed[16..20].try_into().expect("4 bytes"));
        let len = FIXED_HEADER_LEN + fixed[20] as usize;
        let key_id = body.get(FIXED_HEADER_LEN..len).ok_or(truncated(len))?;
        if rs < MIN_RECORD {
            return Err(EceError::RecordSizeTooSmall(rs));
        }
        Ok(Aes128gcmHeader {
            salt,
            rs,
            key_id,
            len,
        })
    }

    /// Parses the header and checks the body as RFC 8291 §4 requires of a push
    /// message: a 65-byte uncompressed key id and one record of ciphertext.
    pub fn parse_webpush(body: &'a [u8]) -> Result<Aes128gcmHeader<'a>, EceError> {
        let h = Self::parse(body)?;
        if h.key_id.len() != WEBPUSH_KEY_ID_LEN {
            return Err(EceError::KeyIdLength(h.key_id.len()));
        }
        if h.key_id[0] != 0x04 {
            return Err(EceError::KeyIdNotUncompressed);
        }
        let ciphertext = body.len() - h.len;
        if ciphertext < TAG_LEN + 1 {
            return Err(EceError::NoRecord(ciphertext));
        }
        if ciphertext > h.rs as usize {
            return Err(EceError::MoreThanOneRecord {
                len: ciphertext,
                rs: h.rs,
            });
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::b64;

    /// RFC 8291 Appendix A: the final push message body.
    pub const RFC8291_BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";
    /// RFC 8188 §3.1: "I am the walrus", rs 4096, no key id.
    const RFC8188_3_1: &str =
        "I1BsxtFttlv3u_Oo94xnmwAAEAAA-NAVub2qFgBEuQKRapoZu-IxkIva3MEB1PD-ly8Thjg";
    /// RFC 8188 §3.2: two records of rs 25, key id "a1".
    const RFC8188_3_2: &str = "uNCkWiNYzKTnBN9ji3-qWAAAABkCYTHOG8chz_gnvgOqdGYovxyjuqRyJFjEDyoF1Fvkj6hQPdPHI51OEUKEpgz3SsLWIqS_uA";

    #[test]
    fn rfc8291_appendix_a_is_a_valid_push_body() {
        let body = b64::decode(RFC8291_BODY).unwrap();
        let h = Aes128gcmHeader::parse_webpush(&body).unwrap();
        assert_eq!(h.rs, 4096);
        assert_eq!(h.len, 86);
        assert_eq!(
            b64::encode(h.key_id),
            "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
        );
        assert_eq!(b64::encode(h.salt), "DGv6ra1nlYgDCS1FRnbzlw");
    }

    #[test]
    fn rfc8188_examples_parse_but_are_not_push_bodies() {
        let one = b64::decode(RFC8188_3_1).unwrap();
        let h = Aes128gcmHeader::parse(&one).unwrap();
        assert_eq!((h.rs, h.key_id.len(), h.len), (4096, 0, 21));
        assert_eq!(
            Aes128gcmHeader::parse_webpush(&one),
            Err(EceError::KeyIdLength(0))
        );

        let two = b64::decode(RFC8188_3_2).unwrap();
        let h = Aes128gcmHeader::parse(&two).unwrap();
        assert_eq!((h.rs, h.key_id), (25, &b"a1"[..]));
        assert_eq!(
            Aes128gcmHeader::parse_webpush(&two),
            Err(EceError::KeyIdLength(2))
        );
    }

    fn push_body(rs: u32, ciphertext: usize) -> Vec<u8> {
        let mut b = vec![9u8; 16];
        b.extend_from_slice(&rs.to_be_bytes());
        b.push(65);
        b.push(4);
        b.extend_from_slice(&[1u8; 64]);
        b.extend(std::iter::repeat_n(0u8, ciphertext));
        b
    }

    #[test]
    fn push_rules() {
        assert!(Aes128gcmHeader::parse_webpush(&push_body(4096, 17)).is_ok());
        assert!(Aes128gcmHeader::parse_webpush(&push_body(100, 100)).is_ok());
        assert_eq!(
            Aes128gcmHeader::parse_webpush(&push_body(100, 101)),
            Err(EceError::MoreThanOneRecord { len: 101, rs: 100 })
        );
        assert_eq!(
            Aes128gcmHeader::parse_webpush(&push_body(4096, 16)),
            Err(EceError::NoRecord(16))
        );
        assert_eq!(
            Aes128gcmHeader::parse_webpush(&push_body(17, 17)),
            Err(EceError::RecordSizeTooSmall(17))
        );
        let mut b = push_body(4096, 20);
        b[21] = 2;
        assert_eq!(
            Aes128gcmHeader::parse_webpush(&b),
            Err(EceError::KeyIdNotUncompressed)
        );
        assert_eq!(
            Aes128gcmHeader::parse(&b[..50]),
            Err(EceError::Truncated { len: 50, need: 86 })
        );
        assert!(Aes128gcmHeader::parse(&[]).is_err());
    }
}
