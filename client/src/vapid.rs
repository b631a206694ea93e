//! VAPID (RFC 8292): the application server signs a JWT for each push
//! service origin and sends it with its public key.

use crate::keys;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::SecretKey;
use shared::b64;

/// How long a token is valid: 12 hours (RFC 8292 §2 allows at most 24).
pub const TOKEN_LIFETIME_SECS: u64 = 12 * 3600;

/// An application server's VAPID identity: its key pair and contact.
#[derive(Clone, Debug)]
pub struct Vapid {
    key: SigningKey,
    subject: Option<String>,
}

impl Vapid {
    /// An identity from a private key; `subject` is a `mailto:` or `https:`
    /// contact URI put in the `sub` claim.
    pub fn new(key: &SecretKey, subject: Option<String>) -> Vapid {
        Vapid {
            key: SigningKey::from(key),
            subject,
        }
    }

    /// The public key as base64url: the `k=` parameter, and what a
    /// subscription is restricted to.
    pub fn public_key(&self) -> String {
        keys::public_b64(&self.key.verifying_key().into())
    }

    /// A signed JWT (`ES256`) with `aud`, `exp` and, if set, `sub`.
    pub fn token(&self, audience: &str, exp: u64) -> String {
        let mut claims = serde_json::json!({"aud": audience, "exp": exp});
        if let Some(s) = &self.subject {
            claims["sub"] = s.as_str().into();
        }
        let input = format!(
            "{}.{}",
            b64::encode(br#"{"typ":"JWT","alg":"ES256"}"#),
            b64::encode(claims.to_string().as_bytes())
        );
        let sig: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64::encode(&sig.to_bytes()))
    }

    /// The `Authorization` header value for a request to `url`, valid for
    /// [`TOKEN_LIFETIME_SECS`] from `now`: `vapid t=<JWT>, k=<key>`.
    pub fn authorization(&self, url: &str, now: u64) -> String {
        let token = self.token(audience(url), now + TOKEN_LIFETIME_SECS);
        format!("vapid t={token}, k={}", self.public_key())
    }
}

/// The origin of a URL (`scheme://host[:port]`), the VAPID `aud`.
pub fn audience(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?']) {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::vapid::Credentials;
    use shared::Limits;

    #[test]
    fn audience_is_the_origin() {
        assert_eq!(
            audience("http://127.0.0.1:8080/p/abc"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            audience("https://push.example.net"),
            "https://push.example.net"
        );
        assert_eq!(audience("https://a.example?x=/y"), "https://a.example");
    }

    /// RFC 8292 §2 and §3: a JWT of three base64url parts, an ES256 header,
    /// `aud`/`exp`/`sub` claims, a 64-byte raw signature, and the
    /// `vapid t=…, k=…` scheme; the service's own verifier accepts it.
    #[test]
    fn rfc8292_token_shape() {
        let key = keys::generate();
        let v = Vapid::new(&key, Some("mailto:ops@example.com".into()));
        let now = 1_700_000_000;
        let auth = v.authorization("https://push.example.net/p/xyz", now);
        let (t, k) = auth
            .strip_prefix("vapid t=")
            .unwrap()
            .split_once(", k=")
            .unwrap();
        assert_eq!(k, keys::public_b64(&key.public_key()));
        assert_eq!(b64::decode(k).unwrap().len(), 65);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| b64::is_canonical(p)));
        let header: serde_json::Value =
            serde_json::from_slice(&b64::decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"typ": "JWT", "alg": "ES256"}));
        let claims: serde_json::Value =
            serde_json::from_slice(&b64::decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net");
        assert_eq!(claims["exp"], now + TOKEN_LIFETIME_SECS);
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        assert_eq!(b64::decode(parts[2]).unwrap().len(), 64);

        let l = Limits::default();
        let c = Credentials::parse(Some(&auth), None, &l).unwrap().unwrap();
        c.verify("https://push.example.net", now, &l).unwrap();
        assert!(c.verify("https://other.example", now, &l).is_err());
        // Without a subject there is no sub claim.
        let bare = Vapid::new(&key, None).token("https://a.example", now + 60);
        let claims: serde_json::Value =
            serde_json::from_slice(&b64::decode(bare.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert!(claims.get("sub").is_none());
    }
}
