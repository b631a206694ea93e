//! Mozilla's WebSocket push protocol (docs/protocol.md §2.2), as Firefox speaks it:
//! `hello` (keeping the `uaid`), `register`, `notification`, `ack`.

use super::{decrypt, Delivery, Encoding, Incoming};
use crate::error::Error;
use crate::state::{DeviceState, Transport};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::ops::ControlFlow;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long to wait for a reply to `hello`, `register` or `unregister`.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a listening device pings the service.
const PING_EVERY: Duration = Duration::from_secs(60);
/// Mozilla's ack codes: delivered, decryption failed.
const ACK_OK: u16 = 100;
const ACK_DECRYPT_FAILED: u16 = 101;

async fn connect(url: &str) -> Result<Ws, Error> {
    crate::http::target(url, &["ws"])?;
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static("push-notification"),
    );
    let (ws, _) = tokio::time::timeout(REPLY_TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .map_err(|_| Error::Timeout(REPLY_TIMEOUT.as_secs()))??;
    Ok(ws)
}

async fn send(ws: &mut Ws, v: Value) -> Result<(), Error> {
    ws.send(Message::text(v.to_string())).await?;
    Ok(())
}

/// The next JSON message other than a ping `{}`, or `None` when the
/// connection ends.
async fn next(ws: &mut Ws) -> Result<Option<Value>, Error> {
    while let Some(m) = ws.next().await {
        match m? {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).map_err(|e| {
                    Error::Protocol(format!("a WebSocket message is not JSON: {e}"))
                })?;
                if v.get("messageType").is_some() {
                    return Ok(Some(v));
                }
            }
            Message::Close(_) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

/// Waits for the reply of `kind`, skipping anything else.
async fn reply(ws: &mut Ws, kind: &str) -> Result<Value, Error> {
    let wait = async {
        loop {
            match next(ws).await? {
                Some(v) if v["messageType"] == kind => return Ok(v),
                Some(_) => continue,
                None => {
                    return Err(Error::Protocol(format!(
                        "the service closed the connection before its {kind} reply"
                    )))
                }
            }
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, wait)
        .await
        .map_err(|_| Error::Timeout(REPLY_TIMEOUT.as_secs()))?
}

fn check_status(v: &Value, what: &str) -> Result<(), Error> {
    match v["status"].as_u64() {
        Some(200) => Ok(()),
        s => Err(Error::Protocol(format!(
            "{what} answered status {}",
            s.map_or("none".into(), |s| s.to_string())
        ))),
    }
}

/// Says `hello`; with `uaid`, resumes that user agent with its channels.
async fn hello(ws: &mut Ws, state: &DeviceState) -> Result<String, Error> {
    let mut h = json!({"messageType": "hello", "use_webpush": true});
    if let Some(u) = &state.uaid {
        h["uaid"] = u.as_str().into();
        h["channelIDs"] = json!(state.channel_id.iter().collect::<Vec<_>>());
    }
    send(ws, h).await?;
    let r = reply(ws, "hello").await?;
    check_status(&r, "hello")?;
    let uaid = r["uaid"]
        .as_str()
        .ok_or_else(|| Error::Protocol("the hello reply has no uaid".into()))?
        .to_owned();
    if state.uaid.as_ref().is_some_and(|u| *u != uaid) {
        return Err(Error::Protocol(format!(
            "the service no longer knows this device (it gave the new uaid {uaid}); subscribe again"
        )));
    }
    Ok(uaid)
}

/// A random version 4 UUID, as Firefox makes channel ids.
fn channel_id() -> String {
    let mut b: [u8; 16] = crate::keys::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `hello` as a new user agent, then `register` one channel.
pub(super) async fn subscribe(mut state: DeviceState) -> Result<DeviceState, Error> {
    let mut ws = connect(&state.server).await?;
    let uaid = hello(&mut ws, &state).await?;
    let channel = channel_id();
    let mut reg = json!({"messageType": "register", "channelID": channel});
    if let Some(k) = &state.vapid {
        reg["key"] = k.as_str().into();
    }
    send(&mut ws, reg).await?;
    let r = reply(&mut ws, "register").await?;
    check_status(&r, "register")?;
    let endpoint = r["pushEndpoint"]
        .as_str()
        .ok_or_else(|| Error::Protocol("the register reply has no pushEndpoint".into()))?;
    state.transport = Transport::WebSocket;
    state.uaid = Some(uaid);
    state.channel_id = Some(channel);
    state.endpoint = endpoint.to_owned();
    let _ = ws.close(None).await;
    Ok(state)
}

fn incoming(n: &Value) -> Incoming {
    let body = n["data"]
        .as_str()
        .and_then(shared::b64::decode)
        .unwrap_or_default();
    let h = &n["headers"];
    let encoding = if body.is_empty() {
        Encoding::None
    } else if let Some(ct) = h["content_type"].as_str() {
        Encoding::Jose(ct.to_owned())
    } else {
        match h["encoding"].as_str() {
            Some("aes128gcm") => Encoding::Aes128gcm,
            Some("aesgcm") => Encoding::Aesgcm,
            Some(o) => Encoding::Other(format!("Content-Encoding: {o}")),
            None => Encoding::None,
        }
    };
    Incoming {
        id: n["version"].as_str().unwrap_or_default().to_owned(),
        encoding,
        body,
    }
}

/// Receives notifications until `on_message` breaks or the service closes.
pub(super) async fn listen<F>(state: &DeviceState, mut on_message: F) -> Result<(), Error>
where
    F: FnMut(&Delivery) -> ControlFlow<()>,
{
    let mut ws = connect(&state.server).await?;
    hello(&mut ws, state).await?;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        let v = tokio::select! {
            v = next(&mut ws) => v?,
            _ = ping.tick() => {
                send(&mut ws, json!({})).await?;
                continue;
            }
        };
        let Some(n) = v else {
            return Err(Error::Protocol("the service closed the connection".into()));
        };
        if n["messageType"] != "notification" {
            continue;
        }
        let message = incoming(&n);
        let payload = decrypt(&message, state);
        let code = if payload.is_ok() {
            ACK_OK
        } else {
            ACK_DECRYPT_FAILED
        };
        let delivery = Delivery { message, payload };
        let flow = on_message(&delivery);
        send(
            &mut ws,
            json!({"messageType": "ack", "updates": [{
                "channelID": n["channelID"], "version": n["version"], "code": code
            }]}),
        )
        .await?;
        if flow.is_break() {
            // Let the ack reach the service before closing.
            ws.flush().await?;
            let _ = ws.close(None).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
            return Ok(());
        }
    }
}

/// `unregister`s the channel.
pub(super) async fn unsubscribe(state: &DeviceState) -> Result<(), Error> {
    let mut ws = connect(&state.server).await?;
    hello(&mut ws, state).await?;
    send(
        &mut ws,
        json!({"messageType": "unregister", "channelID": state.channel_id}),
    )
    .await?;
    let r = reply(&mut ws, "unregister").await?;
    check_status(&r, "unregister")?;
    let _ = ws.close(None).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_are_v4_uuids() {
        let c = channel_id();
        assert_eq!(c.len(), 36);
        assert_eq!(&c[14..15], "4");
        assert_ne!(c, channel_id());
    }

    #[test]
    fn notification_encodings() {
        let n = json!({"version": "v", "data": "AAEC", "headers": {"encoding": "aes128gcm"}});
        assert_eq!(incoming(&n).encoding, Encoding::Aes128gcm);
        let n = json!({"version": "v", "data": "AAEC", "headers": {"content_type": "application/jose+json"}});
        assert_eq!(
            incoming(&n).encoding,
            Encoding::Jose("application/jose+json".into())
        );
        assert_eq!(incoming(&json!({"version": "v"})).encoding, Encoding::None);
    }
}
