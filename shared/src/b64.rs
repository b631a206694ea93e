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

/// Encodes as base64url without padding.
pub fn encode(bytes: &[u8]) -> String {
    LENIENT.encode(bytes)
}

/// Appends base64url without padding to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    LENIENT.encode_string(bytes, out);
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
    if !b
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
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
}
