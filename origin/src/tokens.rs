//! Capability tokens: the unguessable parts of resource URLs.
//!
//! Every resource (push, subscription, set, message, receipt subscription,
//! list) has its own token of 128 random bits, drawn independently, so no
//! token can be derived from another.

use shared::b64;

/// A 128-bit random token.
pub type Token = [u8; 16];

/// A map keyed by tokens, hashed by [`TokenHasher`].
pub type TokenMap<V> = std::collections::HashMap<Token, V, BuildTokenHasher>;

/// Builds [`TokenHasher`]s.
pub type BuildTokenHasher = std::hash::BuildHasherDefault<TokenHasher>;

/// Hashes a token by its last eight bytes, which are random already: the
/// tokens such maps are keyed by are drawn by the service (or are the XOR of
/// two such), so a keyed hash against chosen keys would buy nothing. Only
/// for such keys: a map keyed by anything a client chooses needs a keyed
/// hash. The last bytes, because shards are picked by the first.
#[derive(Default, Clone, Copy, Debug)]
pub struct TokenHasher(u64);

impl std::hash::Hasher for TokenHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut tail = [0u8; 8];
        let n = bytes.len().min(8);
        tail[..n].copy_from_slice(&bytes[bytes.len() - n..]);
        self.0 ^= u64::from_le_bytes(tail);
    }

    /// The length prefix of a slice: the same for every token.
    fn write_usize(&mut self, _: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A fresh token from the operating system's CSPRNG.
pub fn new_token() -> Token {
    let mut t = [0u8; 16];
    getrandom::fill(&mut t).expect("the OS random source works");
    t
}

/// The token as URL text (22 base64url characters).
pub fn encode(t: &Token) -> String {
    b64::encode(t)
}

/// Parses URL text back into a token.
pub fn decode(s: &str) -> Option<Token> {
    b64::token(s)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends a token as a lowercase hyphenated UUID (Firefox's channelID form).
pub fn push_uuid(t: &Token, out: &mut Vec<u8>) {
    for (i, b) in t.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

/// Formats a token as a lowercase hyphenated UUID (Firefox's channelID form).
pub fn to_uuid(t: &Token) -> String {
    let mut s = Vec::with_capacity(36);
    push_uuid(t, &mut s);
    String::from_utf8(s).expect("hex and hyphens")
}

/// Formats a token as 32 hex digits (the form of a uaid).
pub fn to_hex(t: &Token) -> String {
    let mut s = String::with_capacity(32);
    for b in t {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

/// Parses a UUID, hyphenated or not, or 32 hex digits.
pub fn from_uuid(s: &str) -> Option<Token> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 || s.len() > 36 {
        return None;
    }
    let mut t = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        t[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = new_token();
        assert_ne!(t, new_token());
        assert_eq!(decode(&encode(&t)), Some(t));
        assert_eq!(from_uuid(&to_uuid(&t)), Some(t));
        assert_eq!(from_uuid(&to_hex(&t)), Some(t));
        assert_eq!(decode("short"), None);
        assert_eq!(from_uuid("zz"), None);
    }

    #[test]
    fn token_maps_spread_by_the_last_bytes() {
        use std::hash::BuildHasher;
        let tokens: Vec<Token> = (0..10_000).map(|_| new_token()).collect();
        let mut map = TokenMap::default();
        for (i, t) in tokens.iter().enumerate() {
            map.insert(*t, i);
        }
        assert!(tokens.iter().enumerate().all(|(i, t)| map[t] == i));
        // Tokens of one shard (same first byte) hash apart by their last bytes.
        let hash = |t: Token| BuildTokenHasher::default().hash_one(t);
        let t = new_token();
        let (mut first, mut last) = (t, t);
        first[0] ^= 1;
        last[15] ^= 1;
        assert_eq!(hash(t), hash(first));
        assert_ne!(hash(t), hash(last));
    }
}
