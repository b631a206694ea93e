//! `pushclient`: a Web Push client for both ends of the protocol that this
//! project's service speaks (`docs/protocol.md`).
//!
//! - As a **device**: subscribe over Mozilla's WebSocket protocol or RFC 8030
//!   HTTP/2 ([`device`]), keep the subscription's keys ([`state`]), receive,
//!   decrypt ([`ece`] for RFC 8291 `aes128gcm`, [`jwe`] for list messages)
//!   and acknowledge messages.
//! - As an **application server**: VAPID ([`vapid`]), send one encrypted
//!   message ([`app::send`]), and manage lists of subscriptions that share a
//!   group key wrapped for each member ([`list`]).
//!
//! HTTP is plain `http://` only (the service on loopback, or behind a TLS
//! terminating proxy); an `https://` URL is refused with [`Error::Scheme`].

#![warn(missing_docs)]

pub mod app;
pub mod device;
pub mod ece;
pub mod error;
pub mod http;
pub mod jwe;
pub mod keys;
pub mod list;
pub mod state;
pub mod subscription;
pub mod vapid;

pub use error::{Error, ServiceError};
pub use subscription::Subscription;

/// The current time in Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
