//! Which resource a request is for: the origin's application routes
//! (origin/src/app/mod.rs), and the edge's own.

use crate::reply::EdgeError;
use shared::Limits;

/// Path of the benchmark route (answers only when `EDGE_BENCH` is `1`).
pub const BENCH_PATH: &str = "/_bench/validate";

/// A request's destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`: the edge's own liveness.
    Health,
    /// `POST /_bench/validate`: times the list push validation (benchmarks only).
    Bench,
    /// An application request, checked and forwarded to the origin.
    App(AppRoute),
}

/// The application API (PROTOCOL §3, §4).
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
    /// for `shared` to refuse the body as too large.
    pub fn read_cap(self, limits: &Limits) -> usize {
        match self {
            BodyKind::Ignored => 0,
            BodyKind::Message => limits.max_message_bytes.saturating_add(1),
            BodyKind::Document => limits.max_list_body_bytes.saturating_add(1),
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

/// Routes a request by method and path (without query), as the origin does:
/// exactly two path segments for application resources; an unknown path is
/// `404`, a known resource with another method `405`.
pub fn route(method: &str, path: &str, bench: bool) -> Result<Route, EdgeError> {
    if bench && path == BENCH_PATH {
        return match method {
            "POST" => Ok(Route::Bench),
            _ => Err(not_allowed(method, "POST")),
        };
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let app = |r: AppRoute| Ok(Route::App(r));
    match (segments.as_slice(), method) {
        (["p", _], "POST") => app(AppRoute::Push),
        (["p", _], m) => Err(not_allowed(m, "POST")),
        (["m", _], "DELETE") => app(AppRoute::CancelMessage),
        (["m", _], m) => Err(not_allowed(m, "DELETE")),
        (["lists", _], "POST") => app(AppRoute::CreateList),
        (["lists", _], m) => Err(not_allowed(m, "POST")),
        (["l", _], "GET") => app(AppRoute::ReadList),
        (["l", _], "PATCH") => app(AppRoute::AmendList),
        (["l", _], "DELETE") => app(AppRoute::DeleteList),
        (["l", token], "POST") => app(AppRoute::PushList {
            list: (*token).to_owned(),
        }),
        (["l", _], m) => Err(not_allowed(m, "GET, PATCH, DELETE, POST")),
        (["lm", _], "GET") => app(AppRoute::ListMessageStatus),
        (["lm", _], m) => Err(not_allowed(m, "GET")),
        (["health"], "GET" | "HEAD") => Ok(Route::Health),
        (["health"], m) => Err(not_allowed(m, "GET, HEAD")),
        // The origin's /metrics is for its operator, not for the public.
        _ => Err(EdgeError::NotFound(path.chars().take(100).collect())),
    }
}

fn not_allowed(method: &str, allow: &'static str) -> EdgeError {
    EdgeError::Method {
        method: method.chars().take(16).collect(),
        allow,
    }
}

/// The origin (`scheme://host[:port]`) of an absolute URL: the VAPID `aud`
/// of the resources the edge serves is the origin of the request's URL.
pub fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?', '#']) {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_routes() {
        let r = |m, p| route(m, p, false);
        assert_eq!(r("POST", "/p/abc"), Ok(Route::App(AppRoute::Push)));
        assert_eq!(
            r("DELETE", "/m/abc"),
            Ok(Route::App(AppRoute::CancelMessage))
        );
        assert_eq!(r("POST", "/lists/0"), Ok(Route::App(AppRoute::CreateList)));
        assert_eq!(r("GET", "/l/x"), Ok(Route::App(AppRoute::ReadList)));
        assert_eq!(r("PATCH", "/l/x"), Ok(Route::App(AppRoute::AmendList)));
        assert_eq!(r("DELETE", "/l/x"), Ok(Route::App(AppRoute::DeleteList)));
        assert_eq!(
            r("POST", "/l/x"),
            Ok(Route::App(AppRoute::PushList { list: "x".into() }))
        );
        assert_eq!(
            r("GET", "/lm/x"),
            Ok(Route::App(AppRoute::ListMessageStatus))
        );
        assert_eq!(r("GET", "/health"), Ok(Route::Health));
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(
            route("GET", "/metrics", false),
            Err(EdgeError::NotFound("/metrics".into()))
        );
        assert!(matches!(
            route("POST", "/p/a/b", false),
            Err(EdgeError::NotFound(_))
        ));
        assert_eq!(
            route("GET", "/p/abc", false),
            Err(EdgeError::Method {
                method: "GET".into(),
                allow: "POST"
            })
        );
        assert!(matches!(
            route("PUT", "/l/x", false),
            Err(EdgeError::Method { .. })
        ));
        let long = format!("/{}", "x".repeat(500));
        let Err(EdgeError::NotFound(p)) = route("GET", &long, false) else {
            panic!()
        };
        assert_eq!(p.len(), 100);
    }

    #[test]
    fn bench_route_only_when_enabled() {
        assert!(matches!(
            route("POST", BENCH_PATH, false),
            Err(EdgeError::NotFound(_))
        ));
        assert_eq!(route("POST", BENCH_PATH, true), Ok(Route::Bench));
    }

    #[test]
    fn bodies() {
        let l = Limits::default();
        assert_eq!(AppRoute::Push.body().read_cap(&l), 4097);
        assert_eq!(AppRoute::ReadList.body().read_cap(&l), 0);
        assert_eq!(
            AppRoute::AmendList.body().read_cap(&l),
            l.max_list_body_bytes + 1
        );
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("http://127.0.0.1:8787/p/x?y"),
            "http://127.0.0.1:8787"
        );
        assert_eq!(origin_of("https://push.example"), "https://push.example");
        assert_eq!(origin_of("https://a.b?q"), "https://a.b");
    }
}
