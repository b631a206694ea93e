//! The URLs by which clients reach the service's resources, named in one
//! place from the configured public URLs (docs/protocol.md §2–§4).

use crate::config::Config;
use crate::tokens::{self, Token};

/// The push resource of a subscription: where application servers send.
pub fn push_resource(config: &Config, push: &Token) -> String {
    format!("{}/p/{}", config.public_url, tokens::encode(push))
}

/// What every push resource URL of this service starts with.
pub fn push_resource_prefix(config: &Config) -> String {
    format!("{}/p/", config.public_url)
}

/// The list registration service of a subscription's partition (the
/// `urn:ietf:params:push:multi` link).
pub fn list_service(config: &Config, push: &Token) -> String {
    let partition = u32::from(push[0]) % config.partitions;
    format!("{}/lists/{partition}", config.public_url)
}

/// A receipt subscription (RFC 8030 §6.2), on the device API.
pub fn receipt_subscription(config: &Config, token: &Token) -> String {
    format!("{}/rs/{}", config.device_url, tokens::encode(token))
}

/// What every receipt subscription URL of this service starts with.
pub fn receipt_subscription_prefix(config: &Config) -> String {
    format!("{}/rs/", config.device_url)
}
