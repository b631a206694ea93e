//! Which resource a request is for: the edge's own routes, then the
//! application's (`shared::route`, which the origin routes by too).

use crate::reply::EdgeError;

/// Path of the benchmark route (only in builds with the `bench` feature).
pub const BENCH_PATH: &str = "/_bench/validate";

/// A request's destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`: the edge's own liveness.
    Health,
    /// `POST /_bench/validate`: times the list push validation (the `bench`
    /// feature's builds only).
    #[cfg(feature = "bench")]
    Bench,
    /// An application request, checked and forwarded to the origin.
    App(AppRoute),
}

pub use shared::route::{AppRoute, BodyKind};
pub use shared::vapid::origin_of;

/// Routes a request by method and path (without query): the edge's own
/// routes, then the application's as `shared::route` (and so the origin)
/// has them. The origin's `/metrics` is for its operator, not the public.
pub fn route(method: &str, path: &str) -> Result<Route, EdgeError> {
    #[cfg(feature = "bench")]
    if path == BENCH_PATH {
        return match method {
            "POST" => Ok(Route::Bench),
            _ => Err(shared::route::not_allowed(method, "POST").into()),
        };
    }
    if path == "/health" {
        return match method {
            "GET" | "HEAD" => Ok(Route::Health),
            _ => Err(shared::route::not_allowed(method, "GET, HEAD").into()),
        };
    }
    Ok(Route::App(shared::route::route(method, path)?.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_routes() {
        let r = route;
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
            route("GET", "/metrics"),
            Err(EdgeError::NotFound("/metrics".into()))
        );
        assert!(matches!(
            route("POST", "/p/a/b"),
            Err(EdgeError::NotFound(_))
        ));
        assert_eq!(
            route("GET", "/p/abc"),
            Err(EdgeError::Method {
                method: "GET".into(),
                allow: "POST"
            })
        );
        assert!(matches!(
            route("PUT", "/l/x"),
            Err(EdgeError::Method { .. })
        ));
        let long = format!("/{}", "x".repeat(500));
        let Err(EdgeError::NotFound(p)) = route("GET", &long) else {
            panic!()
        };
        assert_eq!(p.len(), 100);
    }

    #[test]
    #[cfg(not(feature = "bench"))]
    fn no_bench_route_without_the_feature() {
        assert!(matches!(
            route("POST", BENCH_PATH),
            Err(EdgeError::NotFound(_))
        ));
    }

    #[test]
    #[cfg(feature = "bench")]
    fn bench_route_with_the_feature() {
        assert_eq!(route("POST", BENCH_PATH), Ok(Route::Bench));
        assert!(route("GET", BENCH_PATH).is_err());
    }
}
