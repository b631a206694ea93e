//! "Behind edge" mode (PROTOCOL §5): application requests carry the edge's
//! HMAC mark; a valid one vouches for the VAPID key the edge verified.

use super::read_body;
use super::response::{error, Body};
use crate::state::{now, State};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use shared::list::ListError;
use shared::mark::{self, MarkError};

/// The VAPID key a valid mark vouches for (base64url), as a request extension.
#[derive(Clone, Debug)]
pub struct Vouched(pub Option<String>);

/// Reads the body, verifies the mark, and hands the request on with the
/// body in memory and what the mark vouches for. Unmarked requests pass
/// only when the origin is not configured to sit behind the edge.
pub async fn check<B>(
    state: &State,
    secret: &[u8],
    req: Request<B>,
) -> Result<Request<Full<Bytes>>, Response<Body>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    // A push body is held to the message limit, a list document to its own.
    let limits = &state.config.limits;
    let is_push = parts.method == http::Method::POST
        && (parts.uri.path().starts_with("/p/") || parts.uri.path().starts_with("/l/"));
    let max = if is_push {
        limits.max_message_bytes
    } else {
        limits.max_list_body_bytes
    };
    let body = match read_body(body, max).await {
        Ok(Some(b)) => b,
        Ok(None) if is_push => {
            return Err(error(&shared::push::PushError::TooLarge {
                len: max + 1,
                max,
            }))
        }
        Ok(None) => return Err(error(&ListError::TooLarge(max))),
        Err(e) => return Err(error(&e)),
    };
    let value = parts
        .headers
        .get(mark::HEADER)
        .and_then(|v| v.to_str().ok());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let vouched = match mark::verify(secret, value, parts.method.as_str(), path, &body, now()) {
        Ok(m) => Some(Vouched(m.vapid_key)),
        Err(MarkError::Missing) if !state.config.behind_edge => None,
        Err(e) => {
            crate::metrics::inc(&state.metrics.edge_refused);
            return Err(error(&e));
        }
    };
    let mut req = Request::from_parts(parts, Full::new(body));
    if let Some(v) = vouched {
        req.extensions_mut().insert(v);
    }
    Ok(req)
}
