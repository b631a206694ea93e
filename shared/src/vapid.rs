//! VAPID (RFC 8292): the application server's identity on a push request.
//!
//! Parsing is separate from verification so that a caller can look at the
//! key (for key-restricted subscriptions and list ownership) before it spends
//! an ECDSA verification, and so that a verified token can be cached.

use crate::b64;
use crate::headers::param;
use crate::problem::{errno, ProblemSource};
use crate::Limits;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::Deserialize;

/// Length of an uncompressed P-256 public key.
pub const KEY_LEN: usize = 65;

/// What is wrong with a request's VAPID credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VapidError {
    /// The resource needs VAPID and the request has none.
    #[error("this resource requires VAPID: send Authorization: vapid t=<JWT>, k=<public key>")]
    Required,
    /// The header is longer than allowed.
    #[error("the Authorization or Crypto-Key header is longer than {0} bytes")]
    TooLong(usize),
    /// Not `vapid`, `WebPush` or `Bearer`.
    #[error("Authorization scheme {0:?} is not supported; use vapid t=<JWT>, k=<public key>")]
    Scheme(String),
    /// `t=` missing.
    #[error("Authorization: vapid has no t= token")]
    MissingToken,
    /// `k=` (or `Crypto-Key: p256ecdsa=`) missing.
    #[error("no VAPID public key: send k= in Authorization (or p256ecdsa= in Crypto-Key)")]
    MissingKey,
    /// The key is not a 65-byte uncompressed P-256 point.
    #[error("the VAPID public key is not an uncompressed P-256 point in base64url")]
    BadKey,
    /// The token is not three base64url parts with JSON header and claims.
    #[error("the VAPID token is not a JWT: {0}")]
    BadToken(&'static str),
    /// The JWT's `alg` is not ES256.
    #[error("the VAPID token must be signed with ES256")]
    WrongAlg,
    /// The signature does not verify with the key.
    #[error("the VAPID token's signature does not verify with the given key")]
    Signature,
    /// `aud` is not the push resource's origin.
    #[error("the VAPID token's aud {got:?} is not this push resource's origin {want:?}")]
    Audience {
        /// The claim.
        got: String,
        /// The origin expected.
        want: String,
    },
    /// `exp` has passed.
    #[error("the VAPID token expired at {0}")]
    Expired(u64),
    /// `exp` lies too far ahead.
    #[error("the VAPID token's exp is more than {0} seconds ahead")]
    ExpTooFar(u64),
    /// `sub` is not a `mailto:` or `https:` URI.
    #[error("the VAPID token's sub must be a mailto: or https: URI")]
    BadSubject,
    /// A key-restricted subscription or an owned list, and another key.
    #[error("the VAPID key does not match the key this resource is restricted to")]
    KeyMismatch,
}

impl ProblemSource for VapidError {
    fn status(&self) -> u16 {
        401
    }
    fn kind(&self) -> &'static str {
        match self {
            VapidError::Required => "vapid-required",
            VapidError::KeyMismatch => "vapid-key-mismatch",
            _ => "invalid-vapid",
        }
    }
    fn title(&self) -> &'static str {
        match self {
            VapidError::Required => "VAPID required",
            VapidError::KeyMismatch => "VAPID key mismatch",
            _ => "Invalid VAPID credentials",
        }
    }
    fn errno(&self) -> Option<u16> {
        Some(errno::INVALID_AUTH)
    }
}

/// A 65-byte uncompressed P-256 public key, as VAPID and subscriptions carry it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// Parses base64url text (padding optional) into a key on the curve.
    pub fn parse(text: &str) -> Result<PublicKey, VapidError> {
        let raw = b64::decode_exact::<KEY_LEN>(text.trim()).ok_or(VapidError::BadKey)?;
        if raw[0] != 0x04 || VerifyingKey::from_sec1_bytes(&raw).is_err() {
            return Err(VapidError::BadKey);
        }
        Ok(PublicKey(raw))
    }

    /// The key as unpadded base64url.
    pub fn to_b64(&self) -> String {
        b64::encode(&self.0)
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_b64())
    }
}

/// Parsed, not yet verified, VAPID credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The JWT.
    pub token: String,
    /// The application server's public key.
    pub key: PublicKey,
}

/// The claims of a verified token.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// The push resource's origin.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Contact URI.
    #[serde(default)]
    pub sub: Option<String>,
}

#[derive(Deserialize)]
struct JwtHeader {
    alg: String,
}

impl Credentials {
    /// Reads `Authorization` (and, for the pre-RFC form, `Crypto-Key`).
    /// No `Authorization` is `Ok(None)`: VAPID is optional unless the resource needs it.
    pub fn parse(
        authorization: Option<&str>,
        crypto_key: Option<&str>,
        limits: &Limits,
    ) -> Result<Option<Credentials>, VapidError> {
        let Some(auth) = authorization else {
            return Ok(None);
        };
        let max = limits.max_auth_header_bytes;
        if auth.len() > max || crypto_key.is_some_and(|c| c.len() > max) {
            return Err(VapidError::TooLong(max));
        }
        let auth = auth.trim();
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        let (token, key) = if scheme.eq_ignore_ascii_case("vapid") {
            let token = param(rest, "t").ok_or(VapidError::MissingToken)?;
            let key = param(rest, "k").ok_or(VapidError::MissingKey)?;
            (token, key)
        } else if scheme.eq_ignore_ascii_case("webpush") || scheme.eq_ignore_ascii_case("bearer") {
            let key = crypto_key
                .and_then(|c| param(c, "p256ecdsa"))
                .ok_or(VapidError::MissingKey)?;
            (rest.trim(), key)
        } else {
            return Err(VapidError::Scheme(scheme.chars().take(32).collect()));
        };
        if token.is_empty() {
            return Err(VapidError::MissingToken);
        }
        Ok(Some(Credentials {
            token: token.to_owned(),
            key: PublicKey::parse(key)?,
        }))
    }

    /// The token's signed part and signature, checked for form: three
    /// base64url parts, a JSON header with `alg` ES256, a raw (r‖s) or DER
    /// signature. For runtimes that verify ECDSA with the platform's crypto
    /// (WebCrypto in a Worker) before [`Self::verify_claims`].
    pub fn signed(&self) -> Result<Signed<'_>, VapidError> {
        let mut parts = self.token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VapidError::BadToken("it needs three parts"));
        };
        let header: JwtHeader = b64::decode(h)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(VapidError::BadToken("the header is not base64url JSON"))?;
        if header.alg != "ES256" {
            return Err(VapidError::WrongAlg);
        }
        let sig_bytes =
            b64::decode(s).ok_or(VapidError::BadToken("the signature is not base64url"))?;
        let sig = match sig_bytes.len() {
            64 => Signature::from_slice(&sig_bytes),
            _ => Signature::from_der(&sig_bytes),
        }
        .map_err(|_| VapidError::Signature)?;
        Ok(Signed {
            input: &self.token.as_bytes()[..h.len() + 1 + c.len()],
            signature: sig.to_bytes().into(),
            claims: c,
        })
    }

    /// Verifies the ES256 signature and the claims:  `aud` is `audience` (the
    /// push resource's origin, `scheme://host[:port]`), `exp` is after `now`
    /// and at most `vapid_max_exp_secs` (plus skew) ahead, `sub` if present is
    /// `mailto:` or `https:`.
    pub fn verify(&self, audience: &str, now: u64, limits: &Limits) -> Result<Claims, VapidError> {
        let signed = self.signed()?;
        let key = VerifyingKey::from_sec1_bytes(&self.key.0).map_err(|_| VapidError::BadKey)?;
        let sig = Signature::from_slice(&signed.signature).map_err(|_| VapidError::Signature)?;
        key.verify(signed.input, &sig)
            .map_err(|_| VapidError::Signature)?;
        self.verify_claims(audience, now, limits)
    }

    /// The claims rules of [`Self::verify`], for a token whose signature
    /// ([`Self::signed`]) was verified elsewhere.
    pub fn verify_claims(
        &self,
        audience: &str,
        now: u64,
        limits: &Limits,
    ) -> Result<Claims, VapidError> {
        let c = self.token.split('.').nth(1).unwrap_or("");
        let claims: Claims = b64::decode(c)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(VapidError::BadToken(
                "the claims are not base64url JSON with aud and exp",
            ))?;
        if !same_origin(&claims.aud, audience) {
            return Err(VapidError::Audience {
                got: claims.aud.chars().take(128).collect(),
                want: audience.to_owned(),
            });
        }
        if claims.exp <= now {
            return Err(VapidError::Expired(claims.exp));
        }
        if claims.exp > now + limits.vapid_max_exp_secs + limits.clock_skew_secs {
            return Err(VapidError::ExpTooFar(limits.vapid_max_exp_secs));
        }
        if let Some(sub) = &claims.sub {
            if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
                return Err(VapidError::BadSubject);
            }
        }
        Ok(claims)
    }
}

/// What a VAPID signature covers, and the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signed<'a> {
    /// `base64url(header) "." base64url(claims)`, the ES256 signing input.
    pub input: &'a [u8],
    /// The signature as r‖s (IEEE P1363, what WebCrypto takes).
    pub signature: [u8; 64],
    /// The claims part, base64url.
    pub claims: &'a str,
}

/// The origin (`scheme://host[:port]`) of an absolute URL: the VAPID `aud`
/// of the resources under it.
pub fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?', '#']) {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// Origins compare by scheme and host case-insensitively; one trailing `/` is ignored.
fn same_origin(a: &str, b: &str) -> bool {
    a.strip_suffix('/')
        .unwrap_or(a)
        .eq_ignore_ascii_case(b.strip_suffix('/').unwrap_or(b))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;

    /// Signs a token with a fixed test key; returns (Authorization value, key text).
    pub(crate) fn token(claims: &str) -> (String, String) {
        let sk = SigningKey::from_slice(&[0x42; 32]).unwrap();
        let pk = b64::encode(sk.verifying_key().to_encoded_point(false).as_bytes());
        let signing_input = format!(
            "{}.{}",
            b64::encode(br#"{"typ":"JWT","alg":"ES256"}"#),
            b64::encode(claims.as_bytes())
        );
        let sig: Signature = sk.sign(signing_input.as_bytes());
        let jwt = format!("{signing_input}.{}", b64::encode(&sig.to_bytes()));
        (format!("vapid t={jwt}, k={pk}"), pk)
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("http://127.0.0.1:8787/p/x?y"),
            "http://127.0.0.1:8787"
        );
        assert_eq!(origin_of("https://push.example"), "https://push.example");
        assert_eq!(origin_of("https://a.b?q"), "https://a.b");
        assert_eq!(origin_of("https://a.b:8/p/x"), "https://a.b:8");
    }

    const AUD: &str = "https://push.example.net";
    const NOW: u64 = 1_700_000_000;

    fn check(claims: &str) -> Result<Claims, VapidError> {
        let (auth, _) = token(claims);
        let l = Limits::default();
        Credentials::parse(Some(&auth), None, &l)?
            .unwrap()
            .verify(AUD, NOW, &l)
    }

    #[test]
    fn good_token() {
        let c = check(&format!(
            r#"{{"aud":"{AUD}","exp":{},"sub":"mailto:ops@example.com"}}"#,
            NOW + 3600
        ))
        .unwrap();
        assert_eq!(c.exp, NOW + 3600);
    }

    #[test]
    fn claim_rules() {
        let exp = NOW + 60;
        assert!(matches!(
            check(&format!(r#"{{"aud":"https://other.example","exp":{exp}}}"#)),
            Err(VapidError::Audience { .. })
        ));
        assert_eq!(
            check(&format!(r#"{{"aud":"{AUD}","exp":{NOW}}}"#)),
            Err(VapidError::Expired(NOW))
        );
        assert!(matches!(
            check(&format!(r#"{{"aud":"{AUD}","exp":{}}}"#, NOW + 2 * 86400)),
            Err(VapidError::ExpTooFar(_))
        ));
        assert_eq!(
            check(&format!(r#"{{"aud":"{AUD}","exp":{exp},"sub":"ops"}}"#)),
            Err(VapidError::BadSubject)
        );
        assert!(matches!(
            check(r#"{"aud":1}"#),
            Err(VapidError::BadToken(_))
        ));
    }

    #[test]
    fn signature_must_match_key() {
        let (auth, _) = token(&format!(r#"{{"aud":"{AUD}","exp":{}}}"#, NOW + 60));
        let (_, other_key) = {
            let sk = SigningKey::from_slice(&[0x43; 32]).unwrap();
            (
                (),
                b64::encode(sk.verifying_key().to_encoded_point(false).as_bytes()),
            )
        };
        let forged = auth.split(", k=").next().unwrap().to_owned() + ", k=" + &other_key;
        let l = Limits::default();
        let creds = Credentials::parse(Some(&forged), None, &l)
            .unwrap()
            .unwrap();
        assert_eq!(creds.verify(AUD, NOW, &l), Err(VapidError::Signature));
    }

    #[test]
    fn legacy_webpush_scheme() {
        let (auth, key) = token(&format!(r#"{{"aud":"{AUD}","exp":{}}}"#, NOW + 60));
        let jwt = auth["vapid t=".len()..].split(',').next().unwrap();
        let l = Limits::default();
        let c = Credentials::parse(
            Some(&format!("WebPush {jwt}")),
            Some(&format!("dh=abc;p256ecdsa={key}")),
            &l,
        )
        .unwrap()
        .unwrap();
        c.verify(AUD, NOW, &l).unwrap();
        assert_eq!(
            Credentials::parse(Some(&format!("WebPush {jwt}")), None, &l),
            Err(VapidError::MissingKey)
        );
        assert!(matches!(
            Credentials::parse(Some("Basic abc"), None, &l),
            Err(VapidError::Scheme(_))
        ));
        assert_eq!(Credentials::parse(None, None, &l), Ok(None));
        assert_eq!(
            Credentials::parse(Some("vapid t=a.b.c, k=AAAA"), None, &l),
            Err(VapidError::BadKey)
        );
    }
}
