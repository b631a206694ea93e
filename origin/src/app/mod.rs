//! The application API: one module per resource, routed here.

pub mod edge;
pub mod list;
pub mod message;
pub mod push;
pub mod receipt;
pub mod response;
pub mod vapid;

use crate::metrics::Gauges;
use crate::registry::Protocol;
use crate::state::State;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use response::{error, with_body, AppError, Body};
use shared::route::{AppRoute, RouteError};
use std::sync::Arc;
use std::time::Duration;

/// The address of the client that sent a request (its connection's peer:
/// behind a proxy or the edge, theirs), in the request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::IpAddr);

/// Routes one application request: the origin's own resources, then the
/// application's by `shared::route` (as the edge routes them).
pub async fn route<B>(state: Arc<State>, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    crate::metrics::inc(&state.metrics.app_requests);
    let path = req.uri().path().to_owned();
    if let Some(r) = own(&state, req.method(), &path, false) {
        return r;
    }
    let (app, id) = match shared::route::route(req.method().as_str(), &path) {
        Ok(r) => r,
        Err(e) => return route_error(e),
    };
    let mut req = req;
    if let Err(e) = combine_fields(req.headers_mut()) {
        return error(&e);
    }
    match state.config.edge_secret.clone() {
        Some(secret) => match edge::check(&state, &secret, req, app.body()).await {
            Ok(req) => dispatch(&state, req, &app, id).await,
            Err(resp) => resp,
        },
        None => dispatch(&state, req, &app, id).await,
    }
}

/// Routes one request to the operator listener: `/health`, `/ready` and
/// `/metrics`, nothing of the application's.
pub fn operator<B>(state: &State, req: &Request<B>) -> Response<Body> {
    let path = req.uri().path();
    own(state, req.method(), path, true)
        .unwrap_or_else(|| route_error(RouteError::NotFound(path.to_owned())))
}

/// The origin's own resources, for its operator: `/health`, `/ready`, and
/// `/metrics` where `metrics` (on the operator listener only).
fn own(state: &State, method: &Method, path: &str, metrics: bool) -> Option<Response<Body>> {
    let served = matches!(path, "/health" | "/ready") || (metrics && path == "/metrics");
    if !served {
        return None;
    }
    if method != Method::GET {
        return Some(route_error(shared::route::not_allowed(
            method.as_str(),
            "GET",
        )));
    }
    let shutting_down = state
        .shutting_down
        .load(std::sync::atomic::Ordering::Acquire);
    Some(match path {
        "/health" => with_body(StatusCode::OK, "application/json", r#"{"status":"ok"}"#),
        "/ready" if shutting_down => with_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            r#"{"status":"shutting down"}"#,
        ),
        "/ready" if state.cluster.get().is_some_and(|c| !c.is_up()) => {
            let mut r = with_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                r#"{"status":"redis unreachable"}"#,
            );
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            r
        }
        "/ready" => with_body(StatusCode::OK, "application/json", r#"{"status":"ready"}"#),
        _ => with_body(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render_metrics(state),
        ),
    })
}

/// The `/metrics` text.
fn render_metrics(state: &State) -> String {
    let connected = Protocol::ALL.map(|p| (p.label(), state.registry.connected(p) as u64));
    let cluster = state.cluster.get().map(|c| {
        let v = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let m = &c.metrics;
        crate::metrics::ClusterGauges {
            redis_up: u64::from(c.is_up()),
            redis_rtt_us: v(&m.redis_rtt_us),
            route_hits: v(&m.route_hits),
            route_misses: v(&m.route_misses),
            notices_sent: v(&m.notices_sent),
            notices_heard: v(&m.notices_heard),
            forwarded: v(&m.forwarded),
            members_sent: v(&m.members_sent),
            fanouts_taken_over: v(&m.fanouts_taken_over),
        }
    });
    state.metrics.render(&Gauges {
        connected: &connected,
        store: state.store.counts().unwrap_or_default(),
        writes_pending: state.committer.pending() as u64,
        writes_committed: state.committer.committed(),
        cluster,
    })
}

/// A `404`, or a `405` with `Allow`.
fn route_error(e: RouteError) -> Response<Body> {
    let allow = match &e {
        RouteError::Method { allow, .. } => Some(*allow),
        RouteError::NotFound(_) => None,
    };
    let mut r = error(&AppError::Service(e.into()));
    if let Some(a) = allow {
        r.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static(a));
    }
    r
}

/// Hands a request to its resource's handler.
async fn dispatch<B>(
    state: &Arc<State>,
    req: Request<B>,
    app: &AppRoute,
    id: &str,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match app {
        AppRoute::Push => push::handle(state, id, req).await,
        AppRoute::CancelMessage => message::cancel(state, id).await,
        AppRoute::CreateList => list::create(state, id, req).await,
        AppRoute::ReadList => list::read(state, id, &req),
        AppRoute::AmendList => list::amend(state, id, req).await,
        AppRoute::DeleteList => list::delete(state, id, &req).await,
        AppRoute::PushList { .. } => list::push(state, id, req).await,
        AppRoute::ListMessageStatus => list::status(state, id, &req).await,
    }
}

/// Holds a push's refusal for a rate (429) for `--refusal-hold-ms`, never
/// past its Retry-After, while fewer than `--refusal-holds` are held: a
/// sender that floods over its budget and waits for each answer slows to
/// a few requests a second, and leaves the cores to other senders.
async fn hold_refusal(state: &State, refusal: &Response<Body>) {
    if refusal.status() != StatusCode::TOO_MANY_REQUESTS {
        return;
    }
    let retry_after = refusal
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(1);
    let hold = state
        .config
        .refusal_hold
        .min(std::time::Duration::from_secs(retry_after));
    if hold.is_zero() {
        return;
    }
    if let Ok(_held) = state.refusal_holds.try_acquire() {
        crate::metrics::inc(&state.metrics.refusals_held);
        tokio::time::sleep(hold).await;
    }
}

/// Reads at most `cap` bytes of a push's body (single or list): a
/// [`shared::route::BodyKind`]'s read cap, one byte over its limit, which
/// the checks in `shared` then refuse as too large. A body in one chunk is
/// not copied. It first takes one of `--max-body-reads`: a request that
/// waits the body timeout for one gets `503 too-many-bodies`.
pub async fn read_push_body<B>(state: &State, body: B, cap: usize) -> Result<Bytes, AppError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let wait = state.config.body_read_timeout();
    let _permit = match tokio::time::timeout(wait, state.body_reads.acquire()).await {
        Ok(Ok(p)) => p,
        _ => return Err(AppError::bodies(state.config.max_body_reads)),
    };
    read_body_within(body, cap, wait, None)
        .await
        .map(|(bytes, _)| bytes)
}

/// Reads at most `cap` bytes of a body, each chunk first taking as many permits of `budget`'s
/// semaphore as it has bytes (held by the permit returned). A body that
/// cannot get its bytes' permits within `wait` is [`AppError::documents`]
/// of `budget`'s count: the service holds as many bodies as it takes.
pub async fn read_body_within<'s, B>(
    body: B,
    cap: usize,
    wait: Duration,
    budget: Option<(&'s tokio::sync::Semaphore, usize)>,
) -> Result<(Bytes, Option<tokio::sync::SemaphorePermit<'s>>), AppError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0;
    let mut held: Option<tokio::sync::SemaphorePermit<'s>> = None;
    let mut waiting_for_room = false;
    let read = async {
        while len < cap {
            match body.frame().await {
                None => break,
                Some(Err(_)) => return Err(AppError::Body),
                Some(Ok(frame)) => {
                    if let Ok(d) = frame.into_data() {
                        let d = d.slice(..d.len().min(cap - len));
                        if let (Some((sem, _)), false) = (budget, d.is_empty()) {
                            let n = u32::try_from(d.len()).map_err(|_| AppError::Body)?;
                            waiting_for_room = true;
                            let p = sem.acquire_many(n).await.map_err(|_| AppError::Body)?;
                            waiting_for_room = false;
                            match &mut held {
                                Some(h) => h.merge(p),
                                None => held = Some(p),
                            }
                        }
                        len += d.len();
                        chunks.push(d);
                    }
                }
            }
        }
        Ok(())
    };
    // A client that stops sending its body is let go.
    match tokio::time::timeout(wait, read).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(match (budget, waiting_for_room) {
                (Some((_, docs)), true) => AppError::documents(docs),
                _ => AppError::BodyTimeout(wait.as_secs()),
            })
        }
    }
    let bytes = match chunks.len() {
        1 => chunks.pop().expect("one chunk"),
        _ => Bytes::from(chunks.concat()),
    };
    Ok((bytes, held))
}

/// The header fields the push rules read.
pub fn push_headers<B>(req: &Request<B>) -> shared::push::PushHeaders<'_> {
    shared::push::PushHeaders::read(|name| header(req, name))
}

/// Reads each field the service reads by `shared`'s rule (repeated values
/// joined, visible ASCII only), and keeps a joined one as one value.
fn combine_fields(headers: &mut http::HeaderMap) -> Result<(), shared::headers::HeaderError> {
    use shared::headers::{field_text, HeaderError, READ_FIELDS};
    for name in READ_FIELDS {
        let values = headers.get_all(name).iter().map(|v| v.as_bytes());
        if let Some(std::borrow::Cow::Owned(joined)) = field_text(name, values)? {
            let value =
                http::HeaderValue::from_str(&joined).map_err(|_| HeaderError::NotText(name))?;
            headers.insert(name, value);
        }
    }
    Ok(())
}

/// A request header as text.
pub fn header<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Verifies VAPID credentials, unless the edge's mark vouches for this key.
pub fn check_vapid<B>(
    state: &State,
    req: &Request<B>,
    creds: Option<&shared::vapid::Credentials>,
) -> Result<(), shared::vapid::VapidError> {
    let Some(c) = creds else { return Ok(()) };
    if let Some(edge::Vouched(Some(k))) = req.extensions().get::<edge::Vouched>() {
        if *k == c.key.to_b64() {
            return Ok(());
        }
    }
    vapid::verify(state, c).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::problem::ProblemSource;

    #[tokio::test]
    async fn a_body_that_finds_no_room_for_its_bytes_is_refused_503() {
        let full = tokio::sync::Semaphore::new(10);
        let body = http_body_util::Full::new(Bytes::from_static(&[b' '; 20]));
        let wait = Duration::from_millis(100);
        let r = read_body_within(body, 100, wait, Some((&full, 3))).await;
        let Err(e) = r else { panic!("read") };
        assert_eq!((e.status(), e.kind()), (503, "too-many-documents"));
        // With room, the bytes are held until the permit goes.
        let body = http_body_util::Full::new(Bytes::from_static(&[b' '; 8]));
        let (bytes, held) = read_body_within(body, 100, wait, Some((&full, 3)))
            .await
            .unwrap();
        assert_eq!((bytes.len(), full.available_permits()), (8, 2));
        drop(held);
        assert_eq!(full.available_permits(), 10);
    }
}
