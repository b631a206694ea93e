//! The edge's mark on a forwarded request (docs/protocol.md §5): an HMAC-SHA256,
//! under a secret both sides hold, over the request line, the time, the
//! body's hash and the VAPID key the edge verified. An origin behind the
//! edge trusts a valid mark instead of verifying the VAPID signature again.
//!
//! `Push-Edge-Mark: t=<unix secs>; k=<verified VAPID key or empty>; h=<sha256(body)>; s=<hmac>`

use crate::b64;
use crate::problem::ProblemSource;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The header that carries the mark.
pub const HEADER: &str = "push-edge-mark";

/// How far the mark's time may be from the origin's clock, in seconds.
pub const MAX_SKEW_SECS: u64 = 300;

/// Why a mark was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarkError {
    /// No mark on a request that needs one.
    #[error(
        "this origin serves applications only through its edge: the request carries no edge mark"
    )]
    Missing,
    /// Not of the `t=…; k=…; h=…; s=…` form.
    #[error("the edge mark is malformed")]
    Malformed,
    /// The HMAC does not match.
    #[error("the edge mark does not verify")]
    Forged,
    /// The time is too far from now.
    #[error("the edge mark is stale")]
    Stale,
}

impl ProblemSource for MarkError {
    fn status(&self) -> u16 {
        403
    }
    fn kind(&self) -> &'static str {
        "edge-mark"
    }
    fn title(&self) -> &'static str {
        "Not forwarded by the edge"
    }
}

/// What a valid mark vouches for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// When the edge forwarded the request.
    pub time: u64,
    /// The VAPID key whose signature the edge verified, base64url.
    pub vapid_key: Option<String>,
}

fn mac(
    secret: &[u8],
    method: &str,
    path: &str,
    time: u64,
    key: &str,
    body_hash: &str,
) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    for part in ["v1", method, path, &time.to_string(), key, body_hash] {
        m.update(part.as_bytes());
        m.update(b"\n");
    }
    m
}

/// base64url SHA-256 of a body.
pub fn body_hash(body: &[u8]) -> String {
    b64::encode(&Sha256::digest(body))
}

/// The header value marking a request (`path` with its query, if any).
pub fn sign(
    secret: &[u8],
    method: &str,
    path: &str,
    time: u64,
    vapid_key: Option<&str>,
    body: &[u8],
) -> String {
    let key = vapid_key.unwrap_or("");
    let h = body_hash(body);
    let s = mac(secret, method, path, time, key, &h)
        .finalize()
        .into_bytes();
    format!("t={time}; k={key}; h={h}; s={}", b64::encode(&s))
}

/// Checks a mark against the request it came with.
pub fn verify(
    secret: &[u8],
    value: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
    now: u64,
) -> Result<Mark, MarkError> {
    verify_head(secret, value, method, path, now)?.body(body)
}

/// A mark whose signature and time verified, with what it says of the
/// body: checked against the head of a request before its body is read,
/// so that a request the edge did not forward is refused unread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    mark: Mark,
    body_hash: String,
}

impl Signed {
    /// The mark, if `body` is the body it was made for.
    pub fn body(self, body: &[u8]) -> Result<Mark, MarkError> {
        if self.body_hash != body_hash(body) {
            return Err(MarkError::Forged);
        }
        Ok(self.mark)
    }
}

/// Checks a mark's form, signature and time against the request's method
/// and path; its body is checked by [`Signed::body`].
pub fn verify_head(
    secret: &[u8],
    value: Option<&str>,
    method: &str,
    path: &str,
    now: u64,
) -> Result<Signed, MarkError> {
    let value = value.ok_or(MarkError::Missing)?;
    let field = |name: &str| {
        value.split(';').find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    };
    let (Some(t), Some(k), Some(h), Some(s)) = (field("t"), field("k"), field("h"), field("s"))
    else {
        return Err(MarkError::Malformed);
    };
    let time: u64 = t.parse().map_err(|_| MarkError::Malformed)?;
    let sig = b64::decode(s).ok_or(MarkError::Malformed)?;
    mac(secret, method, path, time, k, h)
        .verify_slice(&sig)
        .map_err(|_| MarkError::Forged)?;
    if time.abs_diff(now) > MAX_SKEW_SECS {
        return Err(MarkError::Stale);
    }
    Ok(Signed {
        mark: Mark {
            time,
            vapid_key: (!k.is_empty()).then(|| k.to_owned()),
        },
        body_hash: h.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let v = sign(b"secret", "POST", "/p/abc", 1000, Some("KEY"), b"body");
        let m = verify(b"secret", Some(&v), "POST", "/p/abc", b"body", 1010).unwrap();
        assert_eq!(m.vapid_key.as_deref(), Some("KEY"));
        assert_eq!(
            verify(b"other", Some(&v), "POST", "/p/abc", b"body", 1010),
            Err(MarkError::Forged)
        );
        assert_eq!(
            verify(b"secret", Some(&v), "POST", "/p/abd", b"body", 1010),
            Err(MarkError::Forged)
        );
        assert_eq!(
            verify(b"secret", Some(&v), "POST", "/p/abc", b"bodx", 1010),
            Err(MarkError::Forged)
        );
        assert_eq!(
            verify(b"secret", Some(&v), "POST", "/p/abc", b"body", 2000),
            Err(MarkError::Stale)
        );
        assert_eq!(
            verify(b"secret", None, "POST", "/p/abc", b"body", 1000),
            Err(MarkError::Missing)
        );
        assert_eq!(
            verify(b"secret", Some("t=1"), "POST", "/", b"", 1),
            Err(MarkError::Malformed)
        );
        let forged = v.replace("k=KEY", "k=OTHER");
        assert_eq!(
            verify(b"secret", Some(&forged), "POST", "/p/abc", b"body", 1010),
            Err(MarkError::Forged)
        );
        let none = sign(b"secret", "GET", "/l/x?after=y", 5, None, b"");
        assert_eq!(
            verify(b"secret", Some(&none), "GET", "/l/x?after=y", b"", 5)
                .unwrap()
                .vapid_key,
            None
        );
    }

    #[test]
    fn the_head_is_checked_before_the_body() {
        let v = sign(b"secret", "POST", "/p/abc", 1000, None, b"body");
        let head = verify_head(b"secret", Some(&v), "POST", "/p/abc", 1000).unwrap();
        assert_eq!(head.clone().body(b"other"), Err(MarkError::Forged));
        assert_eq!(head.body(b"body").unwrap().vapid_key, None);
        assert_eq!(
            verify_head(b"wrong", Some(&v), "POST", "/p/abc", 1000),
            Err(MarkError::Forged)
        );
        assert_eq!(
            verify_head(b"secret", Some(&v), "POST", "/p/abc", 5000),
            Err(MarkError::Stale)
        );
        assert_eq!(
            verify_head(b"secret", None, "POST", "/p/abc", 1000),
            Err(MarkError::Missing)
        );
    }
}
