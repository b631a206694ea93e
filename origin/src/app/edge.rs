//! "Behind edge" mode (docs/protocol.md §5): application requests carry the edge's
//! HMAC mark; a valid one vouches for the VAPID key the edge verified.

use super::read_body_within;
use super::response::{error, problem, Body};
use crate::clock::now;
use crate::state::State;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use shared::mark::{self, MarkError};
use shared::route::BodyKind;

/// The VAPID key a valid mark vouches for (base64url), as a request extension.
#[derive(Clone, Debug)]
pub struct Vouched(pub Option<String>);

/// Verifies the mark's signature and time from the request's head, then
/// reads the body and checks it is the one the mark was made for, and
/// hands the request on with the body in memory and what the mark vouches
/// for. A request that carries no valid mark is refused before its body is
/// read; unmarked requests pass only when the origin is not configured to
/// sit behind the edge.
pub async fn check<B>(
    state: &State,
    secret: &[u8],
    req: Request<B>,
    kind: BodyKind,
) -> Result<Request<Full<Bytes>>, Response<Body>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let value = parts
        .headers
        .get(mark::HEADER)
        .and_then(|v| v.to_str().ok());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let refuse = |e: MarkError| {
        crate::metrics::inc(&state.metrics.edge_refused);
        error(&e)
    };
    // As route() joined them: one value each.
    let fields = mark::fields(|n| parts.headers.get(n).and_then(|v| v.to_str().ok()));
    let signed = match mark::verify_head(secret, value, parts.method.as_str(), path, &fields, now())
    {
        Ok(s) => Some(s),
        Err(MarkError::Missing) if !state.config.behind_edge => None,
        Err(e) => return Err(refuse(e)),
    };
    // As much body as the route takes; one over its limit is refused now,
    // as the route's own checks would, since no mark covers a cut body. A
    // list document's bytes count against the documents' byte budget.
    let limits = &state.config.limits;
    let wait = state.config.body_read_timeout();
    let budget = matches!(kind, BodyKind::Document)
        .then_some((&state.document_bytes, state.config.max_list_documents));
    let body = match read_body_within(body, kind.read_cap(limits), wait, budget).await {
        Ok((b, _)) => b,
        Err(e) => return Err(error(&e)),
    };
    if let Some(p) = kind.over_limit(body.len(), limits) {
        return Err(problem(&p));
    }
    let vouched = match signed.map(|s| s.body(&body)) {
        Some(Ok(m)) => Some(Vouched(m.vapid_key)),
        Some(Err(e)) => return Err(refuse(e)),
        None => None,
    };
    let mut req = Request::from_parts(parts, Full::new(body));
    if let Some(v) = vouched {
        req.extensions_mut().insert(v);
    }
    Ok(req)
}
