//! The edge's mark on a forwarded request (docs/protocol.md §5): an HMAC-SHA256,
//! under a secret both sides hold, over the request line, the time, the
//! body's hash, the VAPID key the edge verified, and every header field the
//! service reads (TTL, Urgency, Topic, the content coding and its fields,
//! Authorization, Push-Receipt, Prefer), so that nothing the origin trusts
//! can be changed on the way. An origin behind the edge trusts a valid mark
//! instead of verifying the VAPID signature again.
//!
//! `Push-Edge-Mark: t=<unix secs>; k=<verified VAPID key or empty>; h=<sha256(body)>; s=<hmac>`

use crate::b64;
use crate::headers::READ_FIELDS;
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

/// The header fields a mark covers: those of [`READ_FIELDS`], in its
/// order, each as `headers::field_text` reads it (repeated values joined),
/// `None` if absent.
pub type Fields<'a> = [Option<&'a str>; READ_FIELDS.len()];

/// A request's [`Fields`], from a lookup by (lowercase) field name.
pub fn fields<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Fields<'a> {
    READ_FIELDS.map(get)
}

fn mac(
    secret: &[u8],
    method: &str,
    path: &str,
    time: u64,
    key: &str,
    body_hash: &str,
    fields: &Fields<'_>,
) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    for part in ["v2", method, path, &time.to_string(), key, body_hash] {
        m.update(part.as_bytes());
        m.update(b"\n");
    }
    // Field values hold no line breaks: one line each, absent told apart
    // from empty.
    for (name, value) in READ_FIELDS.iter().zip(fields) {
        m.update(name.as_bytes());
        match value {
            Some(v) => {
                m.update(b"=");
                m.update(v.trim().as_bytes());
            }
            None => m.update(b"!"),
        }
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
    fields: &Fields<'_>,
    body: &[u8],
) -> String {
    let key = vapid_key.unwrap_or("");
    let h = body_hash(body);
    let s = mac(secret, method, path, time, key, &h, fields)
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
    fields: &Fields<'_>,
    body: &[u8],
    now: u64,
) -> Result<Mark, MarkError> {
    verify_head(secret, value, method, path, fields, now)?.body(body)
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

/// Checks a mark's form, signature and time against the request's method,
/// path and header fields; its body is checked by [`Signed::body`].
pub fn verify_head(
    secret: &[u8],
    value: Option<&str>,
    method: &str,
    path: &str,
    fields: &Fields<'_>,
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
    mac(secret, method, path, time, k, h, fields)
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

    /// `TTL: 60` and nothing else.
    const TTL_60: Fields<'static> = [
        Some("60"),
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ];

    #[test]
    fn every_field_read_is_covered() {
        let v = sign(b"secret", "POST", "/p/abc", 1000, None, &TTL_60, b"");
        assert!(verify(b"secret", Some(&v), "POST", "/p/abc", &TTL_60, b"", 1000).is_ok());
        for i in 0..READ_FIELDS.len() {
            // Any field changed, added or dropped on the way: refused.
            for value in [Some("x"), Some(""), None] {
                let mut other = TTL_60;
                if other[i] == value {
                    continue;
                }
                other[i] = value;
                assert_eq!(
                    verify(b"secret", Some(&v), "POST", "/p/abc", &other, b"", 1000),
                    Err(MarkError::Forged),
                    "{} = {value:?}",
                    READ_FIELDS[i]
                );
            }
        }
        // Whitespace around a value is not part of it (HTTP strips it).
        let mut spaced = TTL_60;
        spaced[0] = Some(" 60 ");
        assert!(verify(b"secret", Some(&v), "POST", "/p/abc", &spaced, b"", 1000).is_ok());
        let by_name = fields(|n| (n == "ttl").then_some("60"));
        assert_eq!(by_name, TTL_60);
    }

    #[test]
    fn sign_and_verify() {
        let v = sign(
            b"secret",
            "POST",
            "/p/abc",
            1000,
            Some("KEY"),
            &TTL_60,
            b"body",
        );
        let m = verify(
            b"secret",
            Some(&v),
            "POST",
            "/p/abc",
            &TTL_60,
            b"body",
            1010,
        )
        .unwrap();
        assert_eq!(m.vapid_key.as_deref(), Some("KEY"));
        assert_eq!(
            verify(b"other", Some(&v), "POST", "/p/abc", &TTL_60, b"body", 1010),
            Err(MarkError::Forged)
        );
        assert_eq!(
            verify(
                b"secret",
                Some(&v),
                "POST",
                "/p/abd",
                &TTL_60,
                b"body",
                1010
            ),
            Err(MarkError::Forged)
        );
        assert_eq!(
            verify(
                b"secret",
                Some(&v),
                "POST",
                "/p/abc",
                &TTL_60,
                b"bodx",
                1010
            ),
            Err(MarkError::Forged)
        );
        assert_eq!(
            verify(
                b"secret",
                Some(&v),
                "POST",
                "/p/abc",
                &TTL_60,
                b"body",
                2000
            ),
            Err(MarkError::Stale)
        );
        assert_eq!(
            verify(b"secret", None, "POST", "/p/abc", &TTL_60, b"body", 1000),
            Err(MarkError::Missing)
        );
        assert_eq!(
            verify(b"secret", Some("t=1"), "POST", "/", &TTL_60, b"", 1),
            Err(MarkError::Malformed)
        );
        let forged = v.replace("k=KEY", "k=OTHER");
        assert_eq!(
            verify(
                b"secret",
                Some(&forged),
                "POST",
                "/p/abc",
                &TTL_60,
                b"body",
                1010
            ),
            Err(MarkError::Forged)
        );
        let none = sign(b"secret", "GET", "/l/x?after=y", 5, None, &TTL_60, b"");
        assert_eq!(
            verify(
                b"secret",
                Some(&none),
                "GET",
                "/l/x?after=y",
                &TTL_60,
                b"",
                5
            )
            .unwrap()
            .vapid_key,
            None
        );
    }

    #[test]
    fn the_head_is_checked_before_the_body() {
        let v = sign(b"secret", "POST", "/p/abc", 1000, None, &TTL_60, b"body");
        let head = verify_head(b"secret", Some(&v), "POST", "/p/abc", &TTL_60, 1000).unwrap();
        assert_eq!(head.clone().body(b"other"), Err(MarkError::Forged));
        assert_eq!(head.body(b"body").unwrap().vapid_key, None);
        assert_eq!(
            verify_head(b"wrong", Some(&v), "POST", "/p/abc", &TTL_60, 1000),
            Err(MarkError::Forged)
        );
        assert_eq!(
            verify_head(b"secret", Some(&v), "POST", "/p/abc", &TTL_60, 5000),
            Err(MarkError::Stale)
        );
        assert_eq!(
            verify_head(b"secret", None, "POST", "/p/abc", &TTL_60, 1000),
            Err(MarkError::Missing)
        );
    }
}
