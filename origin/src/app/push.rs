//! `POST` on a push resource: one message to one subscription (docs/protocol.md §3).

use super::response::{AppError, Body, Refusal};
use crate::clock::now;
use crate::state::{Outcome, State};
use crate::store::{Encoding, Message};
use crate::tokens::{self, new_token};
use bytes::Bytes;
use http::{header as h, HeaderValue, Request, Response, StatusCode};
use shared::headers::name;
use shared::links;
use shared::push::{validate_push, Payload};
use shared::route::BodyKind;
use shared::vapid::VapidError;

/// Handles a push to the subscription named by `token`.
pub async fn handle<B>(state: &State, token: &str, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let resp = match accept(state, token, req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status() < 500 {
                crate::metrics::inc(&state.metrics.pushes_refused);
            }
            let r = e.response();
            super::hold_refusal(state, &r).await;
            r
        }
    };
    resp
}

async fn accept<B>(state: &State, token: &str, req: Request<B>) -> Result<Response<Body>, Refusal>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = &state.config.limits;
    let push = tokens::decode(token).ok_or(AppError::UnknownSubscription)?;
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts, ());
    let body = super::read_push_body(state, body, BodyKind::Message.read_cap(limits)).await?;
    let headers = super::push_headers(&req);
    let (meta, payload) = validate_push(&headers, &body, limits)?;
    let sub = match state
        .store
        .subscription(&push)
        .map_err(|_| AppError::Store)?
    {
        Some(s) => s,
        None if state.store.ended(&push).map_err(|_| AppError::Store)? => {
            return Err(AppError::EndedSubscription.into())
        }
        None => return Err(AppError::UnknownSubscription.into()),
    };
    let t = now();
    super::check_vapid(state, &req, meta.vapid.as_ref())?;
    if let Some(required) = &sub.vapid {
        match &meta.vapid {
            None => return Err(VapidError::Required.into()),
            Some(c) if &c.key.0 != required => return Err(VapidError::KeyMismatch.into()),
            Some(_) => {}
        }
    }
    let (receipt, asynchronous) = super::receipt::requested(state, &req)?;
    state.rate.check(&sub.push).map_err(|retry_after| {
        AppError::rate_limited("messages to this subscription", retry_after)
    })?;
    let encoding = match payload {
        Payload::Empty => Encoding::None,
        Payload::Aes128gcm => Encoding::Aes128gcm,
        Payload::Aesgcm(p) => Encoding::Aesgcm {
            encryption: p.encryption,
            crypto_key: p.crypto_key,
        },
        Payload::JweCompact => Encoding::Jose(shared::jwe::CONTENT_TYPE_COMPACT.into()),
        Payload::JweJson => Encoding::Jose(shared::jwe::CONTENT_TYPE_JSON.into()),
    };
    let id = new_token();
    let msg = Message {
        id,
        uaid: sub.uaid,
        push: sub.push,
        channel: sub.channel,
        seq: 0,
        expires: t + u64::from(meta.ttl.0),
        urgency: meta.urgency,
        topic: meta.topic.map(|t| t.as_str().to_owned()),
        receipt,
        encoding,
        body,
        list_message: None,
    };
    let outcome = state
        .deliver(msg, meta.ttl.0 == 0)
        .await
        .map_err(|_| AppError::Store)?;
    let status = if asynchronous {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    let mut resp = super::response::empty(status);
    let hs = resp.headers_mut();
    let location = crate::urls::message(&state.config, &id);
    hs.insert(
        h::LOCATION,
        HeaderValue::from_str(&location).expect("ascii"),
    );
    hs.insert(name::TTL, meta.ttl.0.into());
    let multi = links::link(
        &crate::urls::list_service(&state.config, &sub.push),
        links::REL_MULTI,
    );
    hs.insert(h::LINK, HeaderValue::from_str(&multi).expect("ascii"));
    if outcome == Outcome::Discarded {
        tracing::debug!("TTL 0 message discarded: device not connected");
    }
    Ok(resp)
}
