//! VAPID on the origin: the rules (token form, claims, key) are
//! `shared::vapid`'s; only the ES256 signature is checked here, with `ring`
//! (P-256 in assembly), several times faster than the pure-Rust `p256` that
//! `shared` keeps so that it builds for wasm32. The edge does the same with
//! WebCrypto.
//!
//! A token verified lately (with the same key) is not verified again: an
//! application sends one token, valid for up to a day, with many requests,
//! and a sender over its budget is refused at the cost of a lookup, not of
//! a signature check (docs/performance.md, scenario s). Its claims (`exp`
//! above all) are checked every time.

use crate::clock::now;
use crate::state::State;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use shared::vapid::{Claims, Credentials, VapidError};

/// Verified tokens held at most (all forgotten when full).
const VERIFIED: usize = 4096;

/// Verifies VAPID credentials for this service: the signature, then the claims.
pub fn verify(state: &State, c: &Credentials) -> Result<Claims, VapidError> {
    let seen: Box<[u8]> = [c.token.as_bytes(), &c.key.0[..]].concat().into();
    let known = state
        .vapid_verified
        .lock()
        .expect("verified tokens")
        .contains(&seen);
    if !known {
        let signed = c.signed()?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &c.key.0)
            .verify(signed.input, &signed.signature)
            .map_err(|_| VapidError::Signature)?;
    }
    let claims = c.verify_claims(state.config.push_origin(), now(), &state.config.limits)?;
    if !known {
        let mut verified = state.vapid_verified.lock().expect("verified tokens");
        if verified.len() >= VERIFIED {
            verified.clear();
        }
        verified.insert(seen);
    }
    Ok(claims)
}
