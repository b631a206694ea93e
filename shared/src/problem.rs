//! Problem details (RFC 9457) for every error the service answers with.
//!
//! Each typed error of this crate implements [`ProblemSource`]: one status
//! code, a stable kind, a title and, where autopush has one, its `errno`
//! (application server libraries already read those numbers).

use serde::Serialize;
use std::fmt::Display;

/// The media type of a problem body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// autopush's `errno` values, as deployed push services answer them.
pub mod errno {
    /// Missing necessary crypto keys.
    pub const MISSING_CRYPTO_KEYS: u16 = 101;
    /// Invalid URL endpoint (unknown push resource).
    pub const INVALID_ENDPOINT: u16 = 102;
    /// Expired URL endpoint (the subscription is gone).
    pub const EXPIRED_ENDPOINT: u16 = 103;
    /// Data payload too large.
    pub const PAYLOAD_TOO_LARGE: u16 = 104;
    /// Endpoint became unavailable during the request.
    pub const ENDPOINT_UNAVAILABLE: u16 = 105;
    /// Invalid subscription.
    pub const INVALID_SUBSCRIPTION: u16 = 106;
    /// Invalid authentication (VAPID).
    pub const INVALID_AUTH: u16 = 109;
    /// Invalid crypto information (body encoding or its headers).
    pub const INVALID_CRYPTO: u16 = 110;
    /// Missing required header.
    pub const MISSING_HEADER: u16 = 111;
    /// Invalid TTL header value.
    pub const INVALID_TTL: u16 = 112;
    /// Invalid Topic header value.
    pub const INVALID_TOPIC: u16 = 113;
    /// Unknown error.
    pub const UNKNOWN: u16 = 999;
}

/// An error that knows how the service answers it.
pub trait ProblemSource: Display {
    /// The HTTP status code.
    fn status(&self) -> u16;
    /// A stable, short, kebab-case name of the kind of error; the `type` URI ends in it.
    fn kind(&self) -> &'static str;
    /// A short summary that does not change from occurrence to occurrence.
    fn title(&self) -> &'static str;
    /// autopush's `errno`, where one exists.
    fn errno(&self) -> Option<u16> {
        None
    }
    /// Seconds after which a retry may succeed (`Retry-After`, for 429 and 503).
    fn retry_after(&self) -> Option<u64> {
        None
    }
}

/// Errors of a service's resources rather than of the protocol's rules,
/// worded once so that the edge and the origin answer alike.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// No resource at this path (the path, shortened).
    #[error("no resource at {0}")]
    NotFound(String),
    /// The resource exists, the method does not.
    #[error("{0} is not allowed on this resource")]
    Method(String),
    /// Over a rate limit.
    #[error("over the limit of {what}; retry after {retry_after} s")]
    RateLimited {
        /// What is limited, as a phrase ("pushes to this list").
        what: &'static str,
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// As many list documents or patches as the service reads at once (the
    /// number) are being read already.
    #[error("{0} list documents or patches are being read already; retry shortly")]
    TooManyDocuments(usize),
    /// As many push bodies as the service reads at once (the number) are
    /// being read already.
    #[error("{0} request bodies are being read already; retry shortly")]
    TooManyBodies(usize),
}

impl ProblemSource for ServiceError {
    fn status(&self) -> u16 {
        match self {
            ServiceError::NotFound(_) => 404,
            ServiceError::Method(_) => 405,
            ServiceError::RateLimited { .. } => 429,
            ServiceError::TooManyDocuments(_) | ServiceError::TooManyBodies(_) => 503,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            ServiceError::NotFound(_) => "not-found",
            ServiceError::Method(_) => "method-not-allowed",
            ServiceError::RateLimited { .. } => "rate-limited",
            ServiceError::TooManyDocuments(_) => "too-many-documents",
            ServiceError::TooManyBodies(_) => "too-many-bodies",
        }
    }
    fn title(&self) -> &'static str {
        match self {
            ServiceError::NotFound(_) => "Not found",
            ServiceError::Method(_) => "Method not allowed",
            ServiceError::RateLimited { .. } => "Too many requests",
            ServiceError::TooManyDocuments(_) => "Too many list documents at once",
            ServiceError::TooManyBodies(_) => "Too many request bodies at once",
        }
    }
    fn retry_after(&self) -> Option<u64> {
        match self {
            ServiceError::RateLimited { retry_after, .. } => Some(*retry_after),
            ServiceError::TooManyDocuments(_) | ServiceError::TooManyBodies(_) => Some(1),
            _ => None,
        }
    }
}

/// A problem details object, ready to serialize.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    /// A URI reference naming the kind of problem (`/problems/<kind>`).
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the kind.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What was wrong with this request.
    pub detail: String,
    /// autopush's error number, where one exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<u16>,
    /// Further members (such as per-member rejections of a list request).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
    /// `Retry-After` seconds; sent as a header, not in the body.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// The problem that answers `err`.
    pub fn from_error<E: ProblemSource + ?Sized>(err: &E) -> Problem {
        Problem {
            type_uri: format!("/problems/{}", err.kind()),
            title: err.title().to_owned(),
            status: err.status(),
            detail: err.to_string(),
            errno: err.errno(),
            extra: None,
            retry_after: err.retry_after(),
        }
    }

    /// Adds a further member to the body.
    pub fn with(mut self, key: &str, value: serde_json::Value) -> Problem {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value);
        self
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a problem always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the thing is {0}")]
    struct Thing(u8);
    impl ProblemSource for Thing {
        fn status(&self) -> u16 {
            400
        }
        fn kind(&self) -> &'static str {
            "thing"
        }
        fn title(&self) -> &'static str {
            "Bad thing"
        }
        fn errno(&self) -> Option<u16> {
            Some(errno::INVALID_CRYPTO)
        }
    }

    #[test]
    fn serializes_rfc9457_members() {
        let p = Problem::from_error(&Thing(3)).with("members", serde_json::json!([1]));
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(v["type"], "/problems/thing");
        assert_eq!(v["title"], "Bad thing");
        assert_eq!(v["status"], 400);
        assert_eq!(v["detail"], "the thing is 3");
        assert_eq!(v["errno"], 110);
        assert_eq!(v["members"][0], 1);
    }
}
