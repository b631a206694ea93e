//! Building responses: problem+json errors and the errors of the origin itself.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use shared::problem::{errno, Problem, ProblemSource, CONTENT_TYPE};

/// The response body type of the application API.
pub type Body = Full<Bytes>;

/// Errors the origin finds beyond the protocol crate's rules.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No route.
    #[error("no resource at {0}")]
    NotFound(String),
    /// The route exists, the method does not.
    #[error("{0} is not allowed on this resource")]
    Method(String),
    /// Unknown push resource.
    #[error("no such subscription")]
    UnknownSubscription,
    /// Unknown message resource.
    #[error("no such message (delivered, expired or never sent)")]
    UnknownMessage,
    /// `Push-Receipt` names no receipt subscription of this service.
    #[error("Push-Receipt does not name a receipt subscription of this service")]
    BadReceipt,
    /// The request body could not be read.
    #[error("the request body could not be read")]
    Body,
    /// Over a rate limit.
    #[error("too many messages for this {what}; retry after {retry_after} s")]
    RateLimited {
        /// What is limited.
        what: &'static str,
        /// Seconds.
        retry_after: u64,
    },
    /// Storage failed.
    #[error("the service could not store the request; retry later")]
    Store,
}

impl ProblemSource for AppError {
    fn status(&self) -> u16 {
        match self {
            AppError::NotFound(_) | AppError::UnknownSubscription | AppError::UnknownMessage => 404,
            AppError::Method(_) => 405,
            AppError::BadReceipt | AppError::Body => 400,
            AppError::RateLimited { .. } => 429,
            AppError::Store => 503,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            AppError::NotFound(_) => "not-found",
            AppError::Method(_) => "method-not-allowed",
            AppError::UnknownSubscription => "unknown-subscription",
            AppError::UnknownMessage => "unknown-message",
            AppError::BadReceipt => "bad-push-receipt",
            AppError::Body => "unreadable-body",
            AppError::RateLimited { .. } => "rate-limited",
            AppError::Store => "store-unavailable",
        }
    }
    fn title(&self) -> &'static str {
        match self {
            AppError::NotFound(_) => "Not found",
            AppError::Method(_) => "Method not allowed",
            AppError::UnknownSubscription => "Unknown subscription",
            AppError::UnknownMessage => "Unknown message",
            AppError::BadReceipt => "Bad Push-Receipt",
            AppError::Body => "Unreadable body",
            AppError::RateLimited { .. } => "Too many requests",
            AppError::Store => "Storage unavailable",
        }
    }
    fn errno(&self) -> Option<u16> {
        match self {
            AppError::UnknownSubscription => Some(errno::INVALID_ENDPOINT),
            AppError::Store => Some(errno::UNKNOWN),
            _ => None,
        }
    }
    fn retry_after(&self) -> Option<u64> {
        match self {
            AppError::RateLimited { retry_after, .. } => Some(*retry_after),
            AppError::Store => Some(1),
            _ => None,
        }
    }
}

/// A problem+json response.
pub fn problem(p: &Problem) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(p.to_json())));
    *r.status_mut() = StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Some(s) = p.retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, s.into());
    }
    r
}

/// The problem+json response for an error.
pub fn error<E: ProblemSource + ?Sized>(e: &E) -> Response<Body> {
    problem(&Problem::from_error(e))
}

/// An empty response with a status.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// A response with a body and content type.
pub fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
