//! A push subscription as browsers and application servers exchange it:
//! `{"endpoint": …, "keys": {"p256dh": …, "auth": …}}`.

use crate::keys::{self, KeyError};
use p256::PublicKey;
use serde::{Deserialize, Serialize};

/// A subscription: where to push and the keys to encrypt for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The push resource URL.
    pub endpoint: String,
    /// The subscription's public keys.
    pub keys: SubscriptionKeys,
}

/// The keys of a subscription (RFC 8291 §2), base64url.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionKeys {
    /// The user agent's P-256 public key, uncompressed.
    pub p256dh: String,
    /// The 16-byte authentication secret.
    pub auth: String,
}

impl Subscription {
    /// The user agent's public key.
    pub fn public_key(&self) -> Result<PublicKey, KeyError> {
        keys::parse_public(&self.keys.p256dh)
    }

    /// The authentication secret.
    pub fn auth(&self) -> Result<[u8; 16], KeyError> {
        keys::parse_auth(&self.keys.auth)
    }
}

/// Reads subscriptions from text: JSON objects one after another (one per
/// line, or concatenated), JSON arrays of them, or a mix.
pub fn parse_many(text: &str) -> Result<Vec<Subscription>, serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Subscription),
        Many(Vec<Subscription>),
    }
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_str(text).into_iter::<OneOrMany>() {
        match v? {
            OneOrMany::One(s) => out.push(s),
            OneOrMany::Many(v) => out.extend(v),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_forms() {
        let one =
            r#"{"endpoint":"http://a/p/1","expirationTime":null,"keys":{"p256dh":"x","auth":"y"}}"#;
        let two = r#"[{"endpoint":"http://a/p/2","keys":{"p256dh":"x","auth":"y"}}]"#;
        let subs = parse_many(&format!("{one}\n{two}\n{one}")).unwrap();
        assert_eq!(subs.len(), 3);
        assert_eq!(subs[1].endpoint, "http://a/p/2");
        assert!(parse_many("{").is_err());
        assert!(parse_many("").unwrap().is_empty());
    }
}
