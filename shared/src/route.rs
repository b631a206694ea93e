//! The application API's resources (docs/protocol.md §3, §4): which method and path
//! name which resource, and what its request body is. The edge and the
//! origin both route by [`route`], so they agree on every `404` and `405`
//! and on how much body each request may carry.

use crate::limits::Limits;
use crate::list::ListError;
use crate::problem::{Problem, ServiceError};
use crate::push::PushError;

/// An application resource and method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppRoute {
    /// `POST /p/<token>`: a push to one subscription.
    Push,
    /// `DELETE /m/<token>`: cancels a stored message.
    CancelMessage,
    /// `POST /lists/<partition>`: creates a list.
    CreateList,
    /// `GET /l/<token>`: reads a list (paged).
    ReadList,
    /// `PATCH /l/<token>`: amends a list with a merge patch.
    AmendList,
    /// `DELETE /l/<token>`: deletes a list.
    DeleteList,
    /// `POST /l/<token>`: a push to every member of a list.
    PushList {
        /// The list's token, as in the path (rate limits count per list).
        list: String,
    },
    /// `GET /lm/<token>`: a list message's delivery status.
    ListMessageStatus,
}

/// What an application request's body is, for reading and checking it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// None is read or forwarded (`GET`, `DELETE`).
    Ignored,
    /// A push message (at most `max_message_bytes`).
    Message,
    /// A list document or merge patch (at most `max_list_body_bytes` as sent).
    Document,
}

impl BodyKind {
    /// The most bytes of body worth reading: one over the limit is enough
    /// for the checks ([`crate::push`], [`crate::list::decode_body`]) to
    /// refuse the body as too large.
    pub fn read_cap(self, limits: &Limits) -> usize {
        match self {
            BodyKind::Ignored => 0,
            BodyKind::Message => limits.max_message_bytes.saturating_add(1),
            BodyKind::Document => limits.max_list_body_bytes.saturating_add(1),
        }
    }

    /// The refusal of a body of `len` bytes that is over its limit, as the
    /// body's own checks ([`crate::push`], [`crate::list::decode_body`])
    /// word it: for a reader that must answer before those checks run
    /// (the origin checks the edge's mark over the whole body).
    pub fn over_limit(self, len: usize, limits: &Limits) -> Option<Problem> {
        match self {
            BodyKind::Message if len > limits.max_message_bytes => {
                Some(Problem::from_error(&PushError::TooLarge {
                    len,
                    max: limits.max_message_bytes,
                }))
            }
            BodyKind::Document if len > limits.max_list_body_bytes => Some(Problem::from_error(
                &ListError::TooLarge(limits.max_list_body_bytes),
            )),
            _ => None,
        }
    }
}

impl AppRoute {
    /// What the body is.
    pub fn body(&self) -> BodyKind {
        match self {
            AppRoute::Push | AppRoute::PushList { .. } => BodyKind::Message,
            AppRoute::CreateList | AppRoute::AmendList => BodyKind::Document,
            AppRoute::CancelMessage
            | AppRoute::ReadList
            | AppRoute::DeleteList
            | AppRoute::ListMessageStatus => BodyKind::Ignored,
        }
    }
}

/// Why a request names no application resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No resource at this path (the path, shortened).
    NotFound(String),
    /// The resource exists, the method does not.
    Method {
        /// The method sent (shortened).
        method: String,
        /// The methods the resource takes, for `Allow`.
        allow: &'static str,
    },
}

impl From<RouteError> for ServiceError {
    fn from(e: RouteError) -> ServiceError {
        match e {
            RouteError::NotFound(p) => ServiceError::NotFound(p),
            RouteError::Method { method, .. } => ServiceError::Method(method),
        }
    }
}

/// Routes an application request by method and path (without query):
/// exactly two path segments; an unknown path is `NotFound`, a known
/// resource with another method `Method`. Returns the resource and the
/// path's second segment (its token or partition).
pub fn route<'a>(method: &str, path: &'a str) -> Result<(AppRoute, &'a str), RouteError> {
    let mut segments = path.trim_start_matches('/').split('/');
    let (Some(kind), Some(id), None) = (segments.next(), segments.next(), segments.next()) else {
        return Err(not_found(path));
    };
    let app = |r: AppRoute| Ok((r, id));
    match (kind, method) {
        ("p", "POST") => app(AppRoute::Push),
        ("p", m) => Err(not_allowed(m, "POST")),
        ("m", "DELETE") => app(AppRoute::CancelMessage),
        ("m", m) => Err(not_allowed(m, "DELETE")),
        ("lists", "POST") => app(AppRoute::CreateList),
        ("lists", m) => Err(not_allowed(m, "POST")),
        ("l", "GET") => app(AppRoute::ReadList),
        ("l", "PATCH") => app(AppRoute::AmendList),
        ("l", "DELETE") => app(AppRoute::DeleteList),
        ("l", "POST") => app(AppRoute::PushList {
            list: id.to_owned(),
        }),
        ("l", m) => Err(not_allowed(m, "GET, PATCH, DELETE, POST")),
        ("lm", "GET") => app(AppRoute::ListMessageStatus),
        ("lm", m) => Err(not_allowed(m, "GET")),
        _ => Err(not_found(path)),
    }
}

/// A path no resource answers, shortened for the problem detail.
pub fn not_found(path: &str) -> RouteError {
    RouteError::NotFound(path.chars().take(100).collect())
}

/// A method the resource does not take.
pub fn not_allowed(method: &str, allow: &'static str) -> RouteError {
    RouteError::Method {
        method: method.chars().take(16).collect(),
        allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_routes() {
        assert_eq!(route("POST", "/p/abc"), Ok((AppRoute::Push, "abc")));
        assert_eq!(
            route("DELETE", "/m/abc"),
            Ok((AppRoute::CancelMessage, "abc"))
        );
        assert_eq!(route("POST", "/lists/0"), Ok((AppRoute::CreateList, "0")));
        assert_eq!(route("GET", "/l/x"), Ok((AppRoute::ReadList, "x")));
        assert_eq!(route("PATCH", "/l/x"), Ok((AppRoute::AmendList, "x")));
        assert_eq!(route("DELETE", "/l/x"), Ok((AppRoute::DeleteList, "x")));
        assert_eq!(
            route("POST", "/l/x"),
            Ok((AppRoute::PushList { list: "x".into() }, "x"))
        );
        assert_eq!(
            route("GET", "/lm/x"),
            Ok((AppRoute::ListMessageStatus, "x"))
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(
            route("GET", "/metrics"),
            Err(RouteError::NotFound("/metrics".into()))
        );
        assert!(matches!(
            route("POST", "/p/a/b"),
            Err(RouteError::NotFound(_))
        ));
        assert_eq!(
            route("GET", "/p/abc"),
            Err(RouteError::Method {
                method: "GET".into(),
                allow: "POST"
            })
        );
        assert!(matches!(
            route("PUT", "/l/x"),
            Err(RouteError::Method { .. })
        ));
        let long = format!("/{}", "x".repeat(500));
        let Err(RouteError::NotFound(p)) = route("GET", &long) else {
            panic!()
        };
        assert_eq!(p.len(), 100);
    }

    #[test]
    fn bodies() {
        let l = Limits::default();
        assert_eq!(AppRoute::Push.body().read_cap(&l), 5631);
        assert_eq!(AppRoute::ReadList.body().read_cap(&l), 0);
        assert_eq!(
            AppRoute::AmendList.body().read_cap(&l),
            l.max_list_body_bytes + 1
        );
        assert_eq!(BodyKind::Message.over_limit(5630, &l), None);
        assert_eq!(BodyKind::Message.over_limit(5631, &l).unwrap().status, 413);
        let p = BodyKind::Document
            .over_limit(l.max_list_body_bytes + 1, &l)
            .unwrap();
        assert_eq!((p.status, p.errno), (413, Some(104)));
        assert_eq!(BodyKind::Ignored.over_limit(9, &l), None);
    }
}
