//! The edge's own answers, and the errors of its own making.
//!
//! The protocol's errors come from `shared` (each implements
//! [`ProblemSource`]); [`EdgeError`] adds the few the origin answers from its
//! own code (unknown route, wrong method, rate limit), with the same kind,
//! title and detail, and those only an edge has (origin unreachable,
//! misconfiguration).

use crate::config::ConfigError;
use shared::list::{self, ListError, Rejected};
use shared::problem::{errno, Problem, ProblemSource, ServiceError, CONTENT_TYPE as PROBLEM_JSON};
use shared::push::PushError;
use shared::vapid::VapidError;

/// `application/json`.
pub const JSON: &str = "application/json";

/// An answer the edge gives itself, ready to be turned into a runtime response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Header fields besides `Content-Type`.
    pub headers: Vec<(&'static str, String)>,
    /// The `Content-Type` of `body`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            content_type: JSON,
            body: value.to_string(),
        }
    }

    /// The problem+json reply for a problem (with `Retry-After` where it has one).
    pub fn problem(p: &Problem) -> Reply {
        let mut headers = Vec::new();
        if let Some(secs) = p.retry_after {
            headers.push(("Retry-After", secs.to_string()));
        }
        Reply {
            status: p.status,
            headers,
            content_type: PROBLEM_JSON,
            body: p.to_json(),
        }
    }

    /// The problem+json reply for an error.
    pub fn error<E: ProblemSource + ?Sized>(err: &E) -> Reply {
        Reply::problem(&Problem::from_error(err))
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// The value of a header field of this reply (for tests and logs).
    pub fn header(&self, name: &str) -> Option<&str> {
        if name.eq_ignore_ascii_case("content-type") {
            return Some(self.content_type);
        }
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Errors the edge answers from its own code. The first three are worded by
/// `shared::problem::ServiceError`, as the origin's are, so that an
/// application server sees one service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    /// No route (the path, shortened).
    #[error("{}", ServiceError::NotFound(.0.clone()))]
    NotFound(String),
    /// The route exists, the method does not.
    #[error("{}", ServiceError::Method(.method.clone()))]
    Method {
        /// The method sent.
        method: String,
        /// The methods the resource takes, for `Allow`.
        allow: &'static str,
    },
    /// Over a rate limit.
    #[error("{}", rate_limited(.what, .retry_after))]
    RateLimited {
        /// What is limited.
        what: &'static str,
        /// Seconds until the window ends.
        retry_after: u64,
    },
    /// As many list documents as the isolate reads at once (the number)
    /// are being read.
    #[error("{}", ServiceError::TooManyDocuments(*.0))]
    TooManyDocuments(usize),
    /// The origin could not be reached.
    #[error("the push service's origin could not be reached; retry later")]
    OriginUnreachable,
    /// The edge's environment is wrong.
    #[error("the edge is misconfigured: {0}")]
    Misconfigured(#[from] ConfigError),
}

impl From<shared::route::RouteError> for EdgeError {
    fn from(e: shared::route::RouteError) -> Self {
        match e {
            shared::route::RouteError::NotFound(p) => EdgeError::NotFound(p),
            shared::route::RouteError::Method { method, allow } => {
                EdgeError::Method { method, allow }
            }
        }
    }
}

/// The shared wording of a rate limit (for `EdgeError`'s message).
fn rate_limited(what: &&'static str, retry_after: &u64) -> ServiceError {
    ServiceError::RateLimited {
        what,
        retry_after: *retry_after,
    }
}

impl EdgeError {
    /// The shared wording of the errors the origin also answers.
    fn service(&self) -> Option<ServiceError> {
        match self {
            EdgeError::NotFound(p) => Some(ServiceError::NotFound(p.clone())),
            EdgeError::Method { method, .. } => Some(ServiceError::Method(method.clone())),
            EdgeError::RateLimited { what, retry_after } => Some(ServiceError::RateLimited {
                what,
                retry_after: *retry_after,
            }),
            EdgeError::TooManyDocuments(n) => Some(ServiceError::TooManyDocuments(*n)),
            EdgeError::OriginUnreachable | EdgeError::Misconfigured(_) => None,
        }
    }
}

impl ProblemSource for EdgeError {
    fn status(&self) -> u16 {
        match self {
            EdgeError::OriginUnreachable => 502,
            EdgeError::Misconfigured(_) => 500,
            other => other.service().map_or(500, |s| s.status()),
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            EdgeError::OriginUnreachable => "origin-unreachable",
            EdgeError::Misconfigured(_) => "edge-misconfigured",
            other => other.service().map_or("edge-error", |s| s.kind()),
        }
    }
    fn title(&self) -> &'static str {
        match self {
            EdgeError::OriginUnreachable => "Origin unreachable",
            EdgeError::Misconfigured(_) => "Edge misconfigured",
            other => other.service().map_or("Edge error", |s| s.title()),
        }
    }
    fn errno(&self) -> Option<u16> {
        match self {
            EdgeError::OriginUnreachable | EdgeError::Misconfigured(_) => Some(errno::UNKNOWN),
            _ => None,
        }
    }
    fn retry_after(&self) -> Option<u64> {
        match self {
            EdgeError::OriginUnreachable => Some(1),
            other => other.service().and_then(|s| s.retry_after()),
        }
    }
}

/// Why the edge refused a request: a protocol rule of `shared`, or the edge's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A push rule (headers, body, VAPID).
    Push(PushError),
    /// A list document rule, with the members `shared` refused, if any.
    List(ListError, Vec<Rejected>),
    /// The edge's own.
    Edge(EdgeError),
}

impl Refusal {
    /// The problem+json answer, as the origin words it.
    pub fn reply(&self) -> Reply {
        match self {
            Refusal::Push(e) => Reply::error(e),
            Refusal::List(e, rejected) => Reply::problem(&list::problem(e, rejected)),
            Refusal::Edge(e) => {
                let r = Reply::error(e);
                match e {
                    EdgeError::Method { allow, .. } => r.with_header("Allow", *allow),
                    _ => r,
                }
            }
        }
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
impl From<ListError> for Refusal {
    fn from(e: ListError) -> Self {
        Refusal::List(e, Vec::new())
    }
}
impl From<EdgeError> for Refusal {
    fn from(e: EdgeError) -> Self {
        Refusal::Edge(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn body(r: &Reply) -> Value {
        serde_json::from_str(&r.body).unwrap()
    }

    #[test]
    fn origin_wording() {
        let r = Refusal::from(EdgeError::NotFound("/x".into())).reply();
        assert_eq!((r.status, r.content_type), (404, PROBLEM_JSON));
        assert_eq!(body(&r)["detail"], "no resource at /x");
        let r = Refusal::from(EdgeError::Method {
            method: "PUT".into(),
            allow: "POST",
        })
        .reply();
        assert_eq!(r.header("allow"), Some("POST"));
        assert_eq!(body(&r)["detail"], "PUT is not allowed on this resource");
        let r = Refusal::from(EdgeError::RateLimited {
            what: "pushes to this list",
            retry_after: 7,
        })
        .reply();
        assert_eq!((r.status, r.header("retry-after")), (429, Some("7")));
        let b = body(&r);
        assert_eq!(b["type"], "/problems/rate-limited");
        assert_eq!(b["title"], "Too many requests");
        assert_eq!(
            b["detail"],
            "over the limit of pushes to this list; retry after 7 s"
        );
        assert!(b.get("errno").is_none());
        let r = Refusal::from(EdgeError::TooManyDocuments(1)).reply();
        assert_eq!((r.status, r.header("retry-after")), (503, Some("1")));
        let b = body(&r);
        assert_eq!(b["type"], "/problems/too-many-documents");
        assert_eq!(
            b["detail"],
            "1 list documents or patches are being read already; retry shortly"
        );
    }

    #[test]
    fn members_report() {
        let rejected = vec![Rejected {
            uri: "ftp://x".into(),
            reason: shared::list::Rejection::MalformedUri("bad"),
        }];
        let r = Refusal::List(ListError::Rejected(1), rejected).reply();
        assert_eq!(r.status, 422);
        let b = body(&r);
        assert_eq!(b["members"][0]["uri"], "ftp://x");
        assert_eq!(b["members"][0]["reason"], "malformed-uri");
        let r = Refusal::from(ListError::Gzip).reply();
        assert!(body(&r).get("members").is_none());
    }
}
