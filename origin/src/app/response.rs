//! Building responses: problem+json errors and the errors of the origin itself.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use shared::list::{ListError, Rejected};
use shared::problem::{errno, Problem, ProblemSource, ServiceError, CONTENT_TYPE};
use shared::push::PushError;
use shared::vapid::VapidError;

/// The response body type of the application API.
pub type Body = Full<Bytes>;

/// Errors the origin finds beyond the protocol crate's rules.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No route, wrong method, over a rate limit: worded in `shared`, as the edge words them.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Unknown push resource.
    #[error("no such subscription")]
    UnknownSubscription,
    /// A push resource whose subscription has ended (unsubscribed, or its
    /// user agent away past the idle expiry).
    #[error("the subscription has ended: stop sending to it")]
    EndedSubscription,
    /// Unknown message resource.
    #[error("no such message (delivered, expired or never sent)")]
    UnknownMessage,
    /// `Push-Receipt` names no receipt subscription of this service.
    #[error("Push-Receipt does not name a receipt subscription of this service")]
    BadReceipt,
    /// The request body could not be read.
    #[error("the request body could not be read")]
    Body,
    /// The request body did not arrive in time (`body_read_timeout_secs`).
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// Storage failed.
    #[error("the service could not store the request; retry later")]
    Store,
}

impl AppError {
    /// No resource at `path`.
    pub fn not_found(path: impl Into<String>) -> AppError {
        ServiceError::NotFound(path.into()).into()
    }
    /// `method` is not allowed here.
    pub fn method(method: impl Into<String>) -> AppError {
        ServiceError::Method(method.into()).into()
    }
    /// Over the rate limit of `what`.
    pub fn rate_limited(what: &'static str, retry_after: u64) -> AppError {
        ServiceError::RateLimited { what, retry_after }.into()
    }
    /// `cap` list documents were being read throughout the body timeout.
    pub fn documents(cap: usize) -> AppError {
        ServiceError::TooManyDocuments(cap).into()
    }
    /// `cap` push bodies were being read throughout the body timeout.
    pub fn bodies(cap: usize) -> AppError {
        ServiceError::TooManyBodies(cap).into()
    }
}

impl ProblemSource for AppError {
    fn status(&self) -> u16 {
        match self {
            AppError::Service(e) => e.status(),
            AppError::UnknownSubscription | AppError::UnknownMessage => 404,
            AppError::EndedSubscription => 410,
            AppError::BadReceipt | AppError::Body => 400,
            AppError::BodyTimeout(_) => 408,
            AppError::Store => 503,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            AppError::Service(e) => e.kind(),
            AppError::UnknownSubscription => "unknown-subscription",
            AppError::EndedSubscription => "subscription-gone",
            AppError::UnknownMessage => "unknown-message",
            AppError::BadReceipt => "bad-push-receipt",
            AppError::Body => "unreadable-body",
            AppError::BodyTimeout(_) => "body-timeout",
            AppError::Store => "store-unavailable",
        }
    }
    fn title(&self) -> &'static str {
        match self {
            AppError::Service(e) => e.title(),
            AppError::UnknownSubscription => "Unknown subscription",
            AppError::EndedSubscription => "Subscription gone",
            AppError::UnknownMessage => "Unknown message",
            AppError::BadReceipt => "Bad Push-Receipt",
            AppError::Body => "Unreadable body",
            AppError::BodyTimeout(_) => "Request body too slow",
            AppError::Store => "Storage unavailable",
        }
    }
    fn errno(&self) -> Option<u16> {
        match self {
            AppError::UnknownSubscription => Some(errno::INVALID_ENDPOINT),
            AppError::EndedSubscription => Some(errno::EXPIRED_ENDPOINT),
            AppError::Store => Some(errno::UNKNOWN),
            _ => None,
        }
    }
    fn retry_after(&self) -> Option<u64> {
        match self {
            AppError::Service(e) => e.retry_after(),
            AppError::Store => Some(1),
            _ => None,
        }
    }
}

/// A refused request: by a protocol rule of `shared` (with, for a list
/// document, the members refused), or by the origin itself.
#[derive(Debug)]
pub enum Refusal {
    /// A list document or patch.
    List(ListError, Vec<Rejected>),
    /// A push's headers, body or VAPID.
    Push(PushError),
    /// The origin's own.
    App(AppError),
}

impl From<ListError> for Refusal {
    fn from(e: ListError) -> Self {
        Refusal::List(e, Vec::new())
    }
}
impl From<PushError> for Refusal {
    fn from(e: PushError) -> Self {
        Refusal::Push(e)
    }
}
impl From<VapidError> for Refusal {
    fn from(e: VapidError) -> Self {
        Refusal::Push(e.into())
    }
}
impl From<AppError> for Refusal {
    fn from(e: AppError) -> Self {
        Refusal::App(e)
    }
}

impl Refusal {
    /// The status it is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::List(e, _) => e.status(),
            Refusal::Push(e) => e.status(),
            Refusal::App(e) => e.status(),
        }
    }

    /// The problem+json response (with the refused members' report, if any).
    pub fn response(&self) -> Response<Body> {
        match self {
            Refusal::List(e, rejected) => problem(&shared::list::problem(e, rejected)),
            Refusal::Push(e) => error(e),
            Refusal::App(e) => error(e),
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
