//! Files the CLI keeps: a device's state, written readable by its owner only.

use crate::error::Error;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// How a device is connected to the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Mozilla's WebSocket push protocol (what Firefox speaks).
    WebSocket,
    /// RFC 8030 over HTTP/2.
    Http2,
}

/// Everything a device needs to receive and decrypt its messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// The protocol.
    pub transport: Transport,
    /// The WebSocket URL, or the HTTP/2 device API's base URL.
    pub server: String,
    /// WebSocket: the user agent id from `hello`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uaid: Option<String>,
    /// WebSocket: the channel registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// HTTP/2: the subscription resource (`Location` of the subscribe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_url: Option<String>,
    /// HTTP/2: the list registration service (`rel="urn:ietf:params:push:multi"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi: Option<String>,
    /// The push resource, the subscription's `endpoint`.
    pub endpoint: String,
    /// The VAPID key the subscription is restricted to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vapid: Option<String>,
    /// The subscription's P-256 private key (base64url scalar).
    pub private_key: String,
    /// Its public key, the subscription's `p256dh`.
    pub p256dh: String,
    /// The authentication secret, `auth`.
    pub auth: String,
}

impl DeviceState {
    /// The subscription to hand to application servers.
    pub fn subscription(&self) -> crate::Subscription {
        crate::Subscription {
            endpoint: self.endpoint.clone(),
            keys: crate::subscription::SubscriptionKeys {
                p256dh: self.p256dh.clone(),
                auth: self.auth.clone(),
            },
        }
    }
}

/// Reads a JSON file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::FileFormat {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// Writes a JSON file readable by its owner only, replacing it atomically.
pub fn write_private_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(value).expect("state serializes");
    text.push('\n');
    write_private(path, text.as_bytes())
}

/// Writes a file readable by its owner only (mode 0600), replacing it atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp~");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| Error::file(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::file(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, e))
}
