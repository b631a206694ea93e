//! VAPID on the origin: the rules (token form, claims, key) are
//! `shared::vapid`'s; only the ES256 signature is checked here, with `ring`
//! (P-256 in assembly), several times faster than the pure-Rust `p256` that
//! `shared` keeps so that it builds for wasm32. The edge does the same with
//! WebCrypto.

use crate::clock::now;
use crate::state::State;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use shared::vapid::{Claims, Credentials, VapidError};

/// Verifies VAPID credentials for this service: the signature, then the claims.
pub fn verify(state: &State, c: &Credentials) -> Result<Claims, VapidError> {
    let signed = c.signed()?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &c.key.0)
        .verify(signed.input, &signed.signature)
        .map_err(|_| VapidError::Signature)?;
    c.verify_claims(state.config.push_origin(), now(), &state.config.limits)
}
