//! RFC 8030 over HTTP/2 (cleartext, prior knowledge): `POST /subscribe`,
//! a long `GET` on the subscription that the service answers with server
//! pushes, and `DELETE` on each pushed message to acknowledge it.

use super::{decrypt, Delivery, Encoding, Incoming};
use crate::error::Error;
use crate::state::{DeviceState, Transport};
use bytes::Bytes;
use h2::client::SendRequest;
use http::Request;
use shared::headers::name;
use shared::links;
use std::ops::ControlFlow;
use std::time::Duration;

/// How long to wait for a reply to a subscribe or an acknowledgement.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(url: &str) -> Result<SendRequest<Bytes>, Error> {
    let t = crate::http::target(url, &["http"])?;
    let tcp = crate::http::connect(&t.addr).await?;
    let (client, conn) = h2::client::Builder::new()
        .enable_push(true)
        .handshake::<_, Bytes>(tcp)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client.ready().await?)
}

/// Reads a whole body, releasing flow-control capacity as it goes.
async fn read_body(mut body: h2::RecvStream) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Sends a request on the connection and reads the whole response.
async fn exchange(
    client: &mut SendRequest<Bytes>,
    req: Request<()>,
    body: Option<Vec<u8>>,
) -> Result<(http::response::Parts, Vec<u8>), Error> {
    let work = async {
        let mut c = client.clone().ready().await?;
        let (fut, mut stream) = c.send_request(req, body.is_none())?;
        if let Some(b) = body {
            stream.send_data(Bytes::from(b), true)?;
        }
        let (parts, recv) = fut.await?.into_parts();
        Ok::<_, Error>((parts, read_body(recv).await?))
    };
    tokio::time::timeout(REPLY_TIMEOUT, work)
        .await
        .map_err(|_| Error::Timeout(REPLY_TIMEOUT.as_secs()))?
}

fn problem(parts: &http::response::Parts, body: &[u8]) -> Error {
    Error::Service(crate::error::ServiceError::from_response(
        parts.status.as_u16(),
        None,
        body,
    ))
}

/// `POST /subscribe`, with `{"vapid": key}` for a restricted subscription.
pub(super) async fn subscribe(mut state: DeviceState) -> Result<DeviceState, Error> {
    let mut client = connect(&state.server).await?;
    let req = Request::post(format!("{}/subscribe", state.server))
        .body(())
        .map_err(|e| Error::Protocol(e.to_string()))?;
    let body = state
        .vapid
        .as_ref()
        .map(|k| serde_json::json!({"vapid": k}).to_string().into_bytes());
    let (parts, rbody) = exchange(&mut client, req, body).await?;
    if parts.status != 201 {
        return Err(problem(&parts, &rbody));
    }
    let link = |rel| {
        links::find(
            parts
                .headers
                .get_all(http::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok()),
            rel,
        )
    };
    let endpoint = link(links::REL_PUSH)
        .ok_or_else(|| Error::Protocol("the subscription has no push resource link".into()))?;
    let location = parts
        .headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Protocol("the subscription has no Location".into()))?;
    state.transport = Transport::Http2;
    state.subscription_url = Some(location.to_owned());
    state.multi = link(links::REL_MULTI);
    state.endpoint = endpoint;
    Ok(state)
}

fn subscription_url(state: &DeviceState) -> Result<&str, Error> {
    state
        .subscription_url
        .as_deref()
        .ok_or_else(|| Error::Protocol("the state file has no subscription_url".into()))
}

fn incoming(id: String, headers: &http::HeaderMap, body: Vec<u8>) -> Incoming {
    let get = |n| headers.get(n).and_then(|v| v.to_str().ok());
    let encoding = if body.is_empty() {
        Encoding::None
    } else {
        match (get(name::CONTENT_ENCODING), get(name::CONTENT_TYPE)) {
            (Some("aes128gcm"), _) => Encoding::Aes128gcm,
            (Some("aesgcm"), _) => Encoding::Aesgcm,
            (Some(o), _) => Encoding::Other(format!("Content-Encoding: {o}")),
            (None, Some(ct)) if ct.starts_with("application/jose") => Encoding::Jose(ct.into()),
            (None, Some(ct)) => Encoding::Other(format!("Content-Type: {ct}")),
            (None, None) => Encoding::None,
        }
    };
    Incoming { id, encoding, body }
}

/// Monitors the subscription until `on_message` breaks or the service ends
/// the request; acknowledges each message with `DELETE`.
pub(super) async fn listen<F>(state: &DeviceState, mut on_message: F) -> Result<(), Error>
where
    F: FnMut(&Delivery) -> ControlFlow<()>,
{
    let url = subscription_url(state)?;
    let mut client = connect(url).await?;
    let req = Request::get(url)
        .body(())
        .map_err(|e| Error::Protocol(e.to_string()))?;
    let (mut fut, _) = client.send_request(req, true)?;
    let mut pushes = fut.push_promises();
    while let Some(promise) = pushes.push_promise().await {
        let (preq, presp) = promise?.into_parts();
        let (parts, body) = presp.await?.into_parts();
        let body = read_body(body).await?;
        let message_url = preq.uri().to_string();
        let message = incoming(message_url.clone(), &parts.headers, body);
        let payload = decrypt(&message, state);
        let delivery = Delivery { message, payload };
        let flow = on_message(&delivery);
        let ack = Request::delete(&message_url)
            .body(())
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let (aparts, abody) = exchange(&mut client, ack, None).await?;
        if !aparts.status.is_success() {
            return Err(problem(&aparts, &abody));
        }
        if flow.is_break() {
            return Ok(());
        }
    }
    // The push stream ended: the service answered the GET.
    match fut.await {
        Ok(r) if r.status().is_success() => Err(Error::Protocol(
            "the service ended the subscription's monitoring request".into(),
        )),
        Ok(r) => {
            let (parts, body) = r.into_parts();
            let body = read_body(body).await.unwrap_or_default();
            Err(problem(&parts, &body))
        }
        Err(e) => Err(e.into()),
    }
}

/// `DELETE` on the subscription.
pub(super) async fn unsubscribe(state: &DeviceState) -> Result<(), Error> {
    let url = subscription_url(state)?;
    let mut client = connect(url).await?;
    let req = Request::delete(url)
        .body(())
        .map_err(|e| Error::Protocol(e.to_string()))?;
    let (parts, body) = exchange(&mut client, req, None).await?;
    if parts.status.is_success() {
        Ok(())
    } else {
        Err(problem(&parts, &body))
    }
}
