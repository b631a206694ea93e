//! The device's side: subscribe, receive, decrypt, acknowledge.
//!
//! [`subscribe`] picks the protocol from the server URL: `ws://` is
//! Mozilla's WebSocket protocol ([`ws`]), `http://` is RFC 8030 over
//! HTTP/2 ([`h2`]). Either way the result is a [`DeviceState`] holding the
//! subscription's fresh keys.

pub mod h2;
pub mod ws;

use crate::error::Error;
use crate::state::{DeviceState, Transport};
use crate::{ece, jwe, keys};
use std::ops::ControlFlow;

/// How a received message's body is encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// No body.
    None,
    /// RFC 8291 `aes128gcm`.
    Aes128gcm,
    /// The obsolete `aesgcm` draft coding.
    Aesgcm,
    /// A JWE (`application/jose` or `application/jose+json`): a list message.
    Jose(String),
    /// Something else.
    Other(String),
}

/// A message as the service delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// WebSocket: the `version`; HTTP/2: the push message resource.
    pub id: String,
    /// The body's encoding.
    pub encoding: Encoding,
    /// The body.
    pub body: Vec<u8>,
}

/// A decrypted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A message with no body.
    Empty,
    /// An `aes128gcm` message for this subscription.
    Aes128gcm(Vec<u8>),
    /// A list message, decrypted with the group key unwrapped for this member.
    Jwe(Vec<u8>),
}

impl Payload {
    /// `empty`, `aes128gcm` or `jwe`.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Empty => "empty",
            Payload::Aes128gcm(_) => "aes128gcm",
            Payload::Jwe(_) => "jwe",
        }
    }
    /// The plaintext (empty for an empty message).
    pub fn data(&self) -> &[u8] {
        match self {
            Payload::Empty => &[],
            Payload::Aes128gcm(d) | Payload::Jwe(d) => d,
        }
    }
}

/// A received message and the outcome of decrypting it.
#[derive(Debug)]
pub struct Delivery {
    /// The message as delivered.
    pub message: Incoming,
    /// Its plaintext, or why it could not be read.
    pub payload: Result<Payload, Error>,
}

/// Decrypts a message with the subscription's keys.
pub fn decrypt(msg: &Incoming, state: &DeviceState) -> Result<Payload, Error> {
    let key = keys::parse_private(&state.private_key)?;
    match &msg.encoding {
        _ if msg.body.is_empty() => Ok(Payload::Empty),
        Encoding::Aes128gcm => {
            let auth = keys::parse_auth(&state.auth)?;
            Ok(Payload::Aes128gcm(ece::decrypt(&msg.body, &key, &auth)?))
        }
        Encoding::Jose(_) => Ok(Payload::Jwe(jwe::decrypt(&msg.body, &key)?)),
        Encoding::Aesgcm => Err(Error::Unsupported("Content-Encoding: aesgcm".into())),
        Encoding::Other(o) => Err(Error::Unsupported(o.clone())),
        Encoding::None => Err(Error::Unsupported("a body with no content coding".into())),
    }
}

/// Subscribes at `server` (`ws://…` or `http://…`), optionally restricted to
/// an application server's VAPID public key (base64url).
pub async fn subscribe(server: &str, vapid_key: Option<&str>) -> Result<DeviceState, Error> {
    if let Some(k) = vapid_key {
        keys::parse_public(k)?;
    }
    let scheme = server.split("://").next().unwrap_or("");
    let secret = keys::generate();
    let fresh = DeviceState {
        transport: Transport::WebSocket,
        server: server.trim_end_matches('/').to_owned(),
        uaid: None,
        channel_id: None,
        subscription_url: None,
        multi: None,
        endpoint: String::new(),
        vapid: vapid_key.map(str::to_owned),
        private_key: keys::private_b64(&secret),
        p256dh: keys::public_b64(&secret.public_key()),
        auth: shared::b64::encode(&keys::random::<16>()),
    };
    match scheme {
        "ws" => ws::subscribe(fresh).await,
        "http" => h2::subscribe(fresh).await,
        "wss" | "https" => Err(Error::Scheme(scheme.into())),
        _ => Err(Error::Url {
            url: server.into(),
            why: "use ws://host:port (WebSocket) or http://host:port (RFC 8030 HTTP/2)",
        }),
    }
}

/// Connects and hands each message, decrypted, to `on_message`, then
/// acknowledges it; returns when `on_message` says `Break` or the
/// connection ends.
pub async fn listen<F>(state: &DeviceState, on_message: F) -> Result<(), Error>
where
    F: FnMut(&Delivery) -> ControlFlow<()>,
{
    match state.transport {
        Transport::WebSocket => ws::listen(state, on_message).await,
        Transport::Http2 => h2::listen(state, on_message).await,
    }
}

/// Ends the subscription at the service.
pub async fn unsubscribe(state: &DeviceState) -> Result<(), Error> {
    match state.transport {
        Transport::WebSocket => ws::unsubscribe(state).await,
        Transport::Http2 => h2::unsubscribe(state).await,
    }
}
