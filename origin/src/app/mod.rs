//! The application API: one module per resource, routed here.

pub mod edge;
pub mod list;
pub mod message;
pub mod push;
pub mod receipt;
pub mod response;
pub mod vapid;

use crate::state::State;
use crate::tokens::Token;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use response::{error, with_body, AppError, Body};
use std::sync::Arc;

/// Routes one application request.
pub async fn route<B>(state: Arc<State>, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    crate::metrics::inc(&state.metrics.app_requests);
    let path = req.uri().path().to_owned();
    if !matches!(path.as_str(), "/health" | "/ready" | "/metrics") {
        if let Some(secret) = state.config.edge_secret.clone() {
            return match edge::check(&state, &secret, req).await {
                Ok(req) => dispatch(state, req, path).await,
                Err(resp) => resp,
            };
        }
    }
    dispatch(state, req, path).await
}

/// Routes a request to its resource's handler.
async fn dispatch<B>(state: Arc<State>, req: Request<B>, path: String) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match (segments.as_slice(), method) {
        (["p", token], Method::POST) => push::handle(&state, token, req).await,
        (["m", token], Method::DELETE) => message::cancel(&state, token).await,
        (["lists", partition], Method::POST) => list::create(&state, partition, req).await,
        (["l", token], Method::GET) => list::read(&state, token, &req),
        (["l", token], Method::PATCH) => list::amend(&state, token, req).await,
        (["l", token], Method::DELETE) => list::delete(&state, token, &req).await,
        (["l", token], Method::POST) => list::push(&state, token, req).await,
        (["lm", token], Method::GET) => list::status(&state, token),
        (["health"], Method::GET) => {
            with_body(StatusCode::OK, "application/json", r#"{"status":"ok"}"#)
        }
        (["ready"], Method::GET) => {
            if state
                .shutting_down
                .load(std::sync::atomic::Ordering::Acquire)
            {
                let body = r#"{"status":"shutting down"}"#;
                with_body(StatusCode::SERVICE_UNAVAILABLE, "application/json", body)
            } else {
                with_body(StatusCode::OK, "application/json", r#"{"status":"ready"}"#)
            }
        }
        (["metrics"], Method::GET) => with_body(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::server::render_metrics(&state),
        ),
        (
            ["p", _]
            | ["m", _]
            | ["lists", _]
            | ["l", _]
            | ["lm", _]
            | ["health"]
            | ["ready"]
            | ["metrics"],
            m,
        ) => error(&AppError::method(m.to_string())),
        _ => error(&AppError::not_found(
            path.chars().take(100).collect::<String>(),
        )),
    }
}

/// Reads a body of at most `max` bytes; `Ok(None)` if it is longer.
pub async fn read_body<B>(body: B, max: usize) -> Result<Option<Bytes>, AppError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(Some(c.to_bytes())),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Ok(None)
        }
        Err(_) => Err(AppError::Body),
    }
}

/// The header fields the push rules read.
pub fn push_headers<B>(req: &Request<B>) -> shared::push::PushHeaders<'_> {
    shared::push::PushHeaders {
        ttl: header(req, "ttl"),
        urgency: header(req, "urgency"),
        topic: header(req, "topic"),
        content_encoding: header(req, "content-encoding"),
        content_type: header(req, "content-type"),
        encryption: header(req, "encryption"),
        crypto_key: header(req, "crypto-key"),
        authorization: header(req, "authorization"),
    }
}

/// Reads a push body (single or list) within the message limit; longer is 413.
pub async fn read_push_body<B>(body: B, limits: &shared::Limits) -> Result<Bytes, response::Refusal>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let max = limits.max_message_bytes;
    Ok(read_body(body, max)
        .await?
        .ok_or(shared::push::PushError::TooLarge { len: max + 1, max })?)
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

/// The list registration service of a subscription's partition.
pub fn multi_url(state: &State, push: &Token) -> String {
    let partition = u32::from(push[0]) % state.config.partitions;
    format!("{}/lists/{partition}", state.config.public_url)
}
