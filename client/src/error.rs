//! The client's errors.

use crate::ece::EceError;
use crate::jwe::JweError;
use crate::keys::KeyError;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{}: {detail}", path.display())]
    FileFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Refusing to overwrite a file.
    #[error("{} exists; remove it or pass --force", .0.display())]
    Exists(PathBuf),
    /// Bad key material.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An `aes128gcm` message could not be encrypted or decrypted.
    #[error(transparent)]
    Ece(#[from] EceError),
    /// A JWE could not be read.
    #[error(transparent)]
    Jwe(#[from] JweError),
    /// A URL the client cannot use.
    #[error("unusable URL {url:?}: {why}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        why: &'static str,
    },
    /// A scheme the client does not speak (`https`, `wss`).
    #[error("{0}:// is not supported: this client speaks plain http:// and ws:// (put a TLS proxy in front, or use the service on loopback)")]
    Scheme(String),
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// HTTP/1.1 failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// HTTP/2 failed.
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    /// The WebSocket failed.
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The service refused a request.
    #[error("{0}")]
    Service(ServiceError),
    /// The service answered something this client does not understand.
    #[error("unexpected answer from the service: {0}")]
    Protocol(String),
    /// A message's content coding is not one this client decrypts.
    #[error("messages with {0} are not supported")]
    Unsupported(String),
    /// A command was given too little to act on.
    #[error("{0}")]
    Usage(&'static str),
    /// Nothing happened within the time allowed.
    #[error("timed out after {0} s")]
    Timeout(u64),
}

impl Error {
    /// A [`Error::File`] for `path`.
    pub fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::File {
            path: path.into(),
            source,
        }
    }
}

/// One member a list request refused (docs/protocol.md §4).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RejectedMember {
    /// The member's push resource URI.
    pub uri: String,
    /// A kebab-case reason: `unknown`, `gone`, `key-restriction`, …
    pub reason: String,
    /// A sentence for people.
    #[serde(default)]
    pub detail: String,
}

/// A refusal from the service: its status and `application/problem+json`
/// body (RFC 9457, with autopush's `errno`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceError {
    /// The HTTP status.
    pub status: u16,
    /// `title`.
    pub title: Option<String>,
    /// `detail`.
    pub detail: Option<String>,
    /// autopush's `errno`.
    pub errno: Option<u64>,
    /// `Retry-After`, for a `429`.
    pub retry_after: Option<String>,
    /// Refused list members, if the problem lists them.
    pub members: Vec<RejectedMember>,
}

impl ServiceError {
    /// Reads a problem body; any other body leaves the fields empty.
    pub fn from_response(status: u16, retry_after: Option<&str>, body: &[u8]) -> ServiceError {
        #[derive(Deserialize, Default)]
        struct Problem {
            title: Option<String>,
            detail: Option<String>,
            errno: Option<u64>,
            #[serde(default)]
            members: Vec<RejectedMember>,
        }
        let p: Problem = serde_json::from_slice(body).unwrap_or_default();
        ServiceError {
            status,
            title: p.title,
            detail: p.detail,
            errno: p.errno,
            retry_after: retry_after.map(str::to_owned),
            members: p.members,
        }
    }

    /// Whether the subscription is gone for good (`404`/`410`): delete it.
    pub fn is_gone(&self) -> bool {
        matches!(self.status, 404 | 410)
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the service answered {}", self.status)?;
        if let Some(t) = &self.title {
            write!(f, " {t}")?;
        }
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        if let Some(e) = self.errno {
            write!(f, " (errno {e})")?;
        }
        if let Some(r) = &self.retry_after {
            write!(f, "; retry after {r} s")?;
        }
        for m in &self.members {
            write!(f, "\n  {}: {} ({})", m.uri, m.reason, m.detail)?;
        }
        Ok(())
    }
}
