//! Every configurable limit of the service, in one struct.
//!
//! The edge and the origin load the same struct (from wrangler vars, from the
//! origin's config file or environment), so a limit means the same thing at
//! both. Defaults are what a public push service would run with.

use serde::{Deserialize, Serialize};

/// The limits the protocol rules are checked against. Field docs give defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest `TTL` kept; larger values are lowered to it and echoed. 30 days.
    pub max_ttl_secs: u32,
    /// Largest push message body, single or list push (RFC 8030 asks ≥ 4096).
    /// 5630: what Mozilla's push service takes, the `aesgcm` body older
    /// libraries make of a 4,096-byte payload.
    pub max_message_bytes: usize,
    /// Largest list document or merge patch as sent (maybe gzip). 16 MiB.
    pub max_list_body_bytes: usize,
    /// Largest list document or merge patch after gzip decoding. 64 MiB.
    pub max_list_document_bytes: usize,
    /// Members one list may hold. 1,000,000.
    pub max_list_members: usize,
    /// Lists one VAPID key (or, for lists without one, the service) may own. 10,000.
    pub max_lists_per_key: usize,
    /// Pushes to one list in a minute. 60.
    pub list_pushes_per_minute: u32,
    /// Lists one VAPID key may create in a minute (lists without one, all
    /// together). 60.
    pub list_creations_per_minute: u32,
    /// Copies one VAPID key's list pushes may cause in a minute, summed
    /// over all its lists (a push to a list of m members is m copies; lists
    /// without a key, all together). A push past it is refused whole. Ten
    /// million: a million-member list ten times a minute.
    pub owner_copies_per_minute: u32,
    /// Messages one subscription accepts in a minute (list copies count). 600.
    pub subscription_messages_per_minute: u32,
    /// Undelivered messages stored for one subscription; the oldest go first. 100.
    pub max_stored_per_subscription: usize,
    /// Subscriptions one user agent holds: a WebSocket `uaid`'s channels, or
    /// an HTTP/2 subscription set's members. At least 1; 1000.
    pub max_subscriptions_per_user_agent: usize,
    /// Receipts stored for one receipt subscription until its application
    /// server fetches them; the oldest go first. At least 1; 10,000.
    pub max_stored_receipts: usize,
    /// Length of a member's push resource URI. 2048.
    pub max_member_uri_bytes: usize,
    /// Length of a member's base64url `encrypted_key`. 1024 (fits RSA-4096).
    pub max_encrypted_key_chars: usize,
    /// Length of a member's per-recipient JWE `header`, as JSON. 2048.
    pub max_member_header_bytes: usize,
    /// Members per page of a list `GET`. 1000.
    pub list_page_size: usize,
    /// Length of an `Authorization` or `Crypto-Key` header. 4096.
    pub max_auth_header_bytes: usize,
    /// How far ahead a VAPID `exp` may lie (RFC 8292: 24 h). 86,400.
    pub vapid_max_exp_secs: u64,
    /// Clock skew tolerated on the VAPID `exp` bound. 60.
    pub clock_skew_secs: u64,
}

impl Limits {
    /// Refuses limits that would break the protocol: a push service must
    /// take message bodies of at least 4,096 bytes (RFC 8030 §7.2).
    pub fn check(&self) -> Result<(), String> {
        if self.max_message_bytes < 4096 {
            return Err(format!(
                "max_message_bytes is {}: RFC 8030 requires at least 4096",
                self.max_message_bytes
            ));
        }
        Ok(())
    }

    /// Longest JSON text of one member's value in a list document: room for
    /// the largest `encrypted_key` and `header` twice over (whitespace),
    /// plus 1 KiB. A longer one is refused unread, so that a document's
    /// members cannot grow into more memory than the document takes.
    pub fn max_member_value_bytes(&self) -> usize {
        (self.max_encrypted_key_chars + self.max_member_header_bytes)
            .saturating_mul(2)
            .saturating_add(1024)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ttl_secs: 30 * 24 * 3600,
            max_message_bytes: 5630,
            max_list_body_bytes: 16 << 20,
            max_list_document_bytes: 64 << 20,
            max_list_members: 1_000_000,
            max_lists_per_key: 10_000,
            list_pushes_per_minute: 60,
            list_creations_per_minute: 60,
            owner_copies_per_minute: 10_000_000,
            subscription_messages_per_minute: 600,
            max_stored_per_subscription: 100,
            max_subscriptions_per_user_agent: 1000,
            max_stored_receipts: 10_000,
            max_member_uri_bytes: 2048,
            max_encrypted_key_chars: 1024,
            max_member_header_bytes: 2048,
            list_page_size: 1000,
            max_auth_header_bytes: 4096,
            vapid_max_exp_secs: 24 * 3600,
            clock_skew_secs: 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_config_keeps_defaults() {
        let l: Limits = serde_json::from_str(r#"{"max_message_bytes": 8192}"#).unwrap();
        assert_eq!(l.max_message_bytes, 8192);
        assert!(l.check().is_ok() && Limits::default().check().is_ok());
        let small = Limits {
            max_message_bytes: 4095,
            ..Limits::default()
        };
        assert!(small.check().unwrap_err().contains("4096"));
        assert_eq!(l.max_ttl_secs, Limits::default().max_ttl_secs);
        assert!(serde_json::from_str::<Limits>(r#"{"max_mesage_bytes": 1}"#).is_err());
    }
}
