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

/// A push message resource (RFC 8030 §5): where the application server
/// cancels a message, and what a receipt names.
pub fn message(config: &Config, id: &Token) -> String {
    format!("{}/m/{}", config.public_url, tokens::encode(id))
}

/// A push message resource on the device API, which the user agent
/// acknowledges with `DELETE`.
pub fn device_message(config: &Config, id: &Token) -> String {
    format!("{}/m/{}", config.device_url, tokens::encode(id))
}

/// A list (docs/protocol.md §4).
pub fn list(config: &Config, token: &Token) -> String {
    format!("{}/l/{}", config.public_url, tokens::encode(token))
}

/// A list message's status resource.
pub fn list_message(config: &Config, id: &Token) -> String {
    format!("{}/lm/{}", config.public_url, tokens::encode(id))
}

/// An HTTP/2 subscription resource, which the user agent monitors.
pub fn subscription(config: &Config, resource: &Token) -> String {
    format!("{}/s/{}", config.device_url, tokens::encode(resource))
}

/// An HTTP/2 subscription set.
pub fn subscription_set(config: &Config, uaid: &Token) -> String {
    format!(
        "{}{}",
        subscription_set_prefix(config),
        tokens::encode(uaid)
    )
}

/// What every subscription set URL of this service starts with.
pub fn subscription_set_prefix(config: &Config) -> String {
    format!("{}/set/", config.device_url)
}

/// The receipt subscribe resource (RFC 8030 §6.1).
pub fn receipts(config: &Config) -> String {
    format!("{}/receipts", config.device_url)
}
