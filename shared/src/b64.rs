//! base64url helpers: the one alphabet every part of Web Push uses.
//!
//! Decoding accepts input with or without `=` padding (senders differ), and
//! never allocates more than the input implies.

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// base64url without padding on output, padding optional on input.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes base64url, with or without padding.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    LENIENT.decode(s).ok()
}

/// Decodes base64url into exactly `N` bytes, or `None`.
pub fn decode_exact<const N: usize>(s: &str) -> Option<[u8; N]> {
    // A longer input cannot fit; refuse it before decoding anything.
    if s.trim_end_matches('=').len() > (N * 4).div_ceil(3) {
        return None;
    }
    let v = decode(s)?;
    v.try_into().ok()
}

/// A 16-byte service token as URLs carry it (push resources, lists, list
/// messages): exactly 22 base64url characters, in canonical form.
pub fn token(s: &str) -> Option<[u8; 16]> {
    if s.len() != 22 {
        return None;
    }
    decode_exact::<16>(s)
}

/// Encodes as base64url without padding.
pub fn encode(bytes: &[u8]) -> String {
    LENIENT.encode(bytes)
}

/// Appends base64url without padding to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    LENIENT.encode_string(bytes, out);
}

/// Appends base64url without padding to a byte buffer.
pub fn encode_into_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let n = LENIENT
        .encode_slice(bytes, &mut out[start..])
        .expect("room for the encoding was made");
    out.truncate(start + n);
}

/// The base64url encoding of `head ‖ middle ‖ tail` for many middles, the
/// long shared `head` and `tail` encoded once (a list message's copies
/// differ only in a member's key, and the Firefox protocol sends each copy
/// in base64url).
///
/// base64 maps each 3 bytes to 4 characters on its own, so the encoding of
/// chunks whose lengths are multiples of 3 is the concatenation of their
/// encodings. The head is encoded up to a multiple of 3; its last 0–2 bytes,
/// the middle and 0–2 bytes of the tail make an aligned middle chunk; and the
/// rest of the tail is encoded ahead of time for each of the 3 alignments.
#[derive(Clone, Debug)]
pub struct Spliced {
    head_b64: Vec<u8>,
    head_rest: Vec<u8>,
    tail: Vec<u8>,
    tail_b64: [Vec<u8>; 3],
}

impl Spliced {
    /// Encodes the shared parts.
    pub fn new(head: &[u8], tail: &[u8]) -> Spliced {
        let cut = head.len() / 3 * 3;
        let mut head_b64 = Vec::new();
        encode_into_bytes(&head[..cut], &mut head_b64);
        let tail_b64 = [0, 1, 2].map(|k| {
            let mut v = Vec::new();
            encode_into_bytes(tail.get(k..).unwrap_or_default(), &mut v);
            v
        });
        Spliced {
            head_b64,
            head_rest: head[cut..].to_vec(),
            tail: tail.to_vec(),
            tail_b64,
        }
    }

    /// Length of the encoding for a middle of `middle_len` bytes.
    pub fn encoded_len(&self, middle_len: usize) -> usize {
        (self.head_b64.len() / 4 * 3 + self.head_rest.len() + middle_len + self.tail.len()) * 4 / 3
            + 1
    }

    /// Appends the encoding of `head ‖ middle ‖ tail` to `out`; `scratch`
    /// holds the short aligned middle chunk.
    pub fn encode_into(&self, middle: &[u8], scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len(middle.len()));
        out.extend_from_slice(&self.head_b64);
        scratch.clear();
        scratch.extend_from_slice(&self.head_rest);
        scratch.extend_from_slice(middle);
        let k = (3 - scratch.len() % 3) % 3;
        if k > self.tail.len() {
            // A tail too short to align with: encode it with the middle.
            scratch.extend_from_slice(&self.tail);
            encode_into_bytes(scratch, out);
            return;
        }
        scratch.extend_from_slice(&self.tail[..k]);
        encode_into_bytes(scratch, out);
        out.extend_from_slice(&self.tail_b64[k]);
    }
}

/// Whether every byte of `s` is in the base64url alphabet (no padding).
pub fn is_alphabet(s: &str) -> bool {
    s.bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Whether `s` is non-padded base64url text that decodes cleanly.
///
/// Checks the alphabet and the length without allocating; the last
/// character's unused bits must be zero, as a canonical encoder writes them.
pub fn is_canonical(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() % 4 == 1 {
        return false;
    }
    if !is_alphabet(s) {
        return false;
    }
    // Trailing bits must be zero: 2 leftover chars carry 4 spare bits, 3 carry 2.
    let spare_mask = match b.len() % 4 {
        2 => 0b1111,
        3 => 0b11,
        _ => 0,
    };
    match b.last() {
        Some(&c) if spare_mask != 0 => sextet(c) & spare_mask == 0,
        _ => true,
    }
}

/// Decoded length of a canonical base64url string (see [`is_canonical`]).
pub fn decoded_len(s: &str) -> usize {
    s.len() * 3 / 4
}

fn sextet(c: u8) -> u8 {
    match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_is_optional() {
        assert_eq!(decode("YQ").unwrap(), b"a");
        assert_eq!(decode("YQ==").unwrap(), b"a");
        assert_eq!(encode(b"a"), "YQ");
    }

    #[test]
    fn exact_length() {
        assert_eq!(decode_exact::<1>("YQ"), Some([b'a']));
        assert_eq!(decode_exact::<2>("YQ"), None);
        assert_eq!(decode_exact::<1>("YWJj"), None);
    }

    #[test]
    fn canonical() {
        for n in 0..40 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let s = encode(&bytes);
            assert!(is_canonical(&s), "{s}");
            assert_eq!(decoded_len(&s), n as usize);
        }
        assert!(!is_canonical("YR")); // spare bits set
        assert!(!is_canonical("Y"));
        assert!(!is_canonical("YQ=="));
        assert!(!is_canonical("a+b/"));
    }

    #[test]
    fn spliced_equals_whole() {
        for h in 0..7 {
            for t in 0..7 {
                let head: Vec<u8> = (0..h as u8).map(|i| i.wrapping_mul(37)).collect();
                let tail: Vec<u8> = (0..t as u8).map(|i| i.wrapping_mul(91) ^ 0x5a).collect();
                let sp = super::Spliced::new(&head, &tail);
                for m in 0..7 {
                    let middle: Vec<u8> = (0..m as u8).map(|i| i ^ 0xc3).collect();
                    let mut whole = head.clone();
                    whole.extend_from_slice(&middle);
                    whole.extend_from_slice(&tail);
                    let (mut scratch, mut out) = (Vec::new(), b"x".to_vec());
                    sp.encode_into(&middle, &mut scratch, &mut out);
                    assert_eq!(&out[1..], super::encode(&whole).as_bytes(), "{h} {m} {t}");
                    assert!(sp.encoded_len(m) >= out.len() - 1);
                }
            }
        }
    }
}
