//! Mozilla's WebSocket push protocol (docs/protocol.md §2.2), as Firefox speaks it:
//! `hello` (keeping the `uaid`), `register`, `notification`, `ack`.

use super::{decrypt, Delivery, Encoding, Incoming};
use crate::error::Error;
use crate::state::{DeviceState, Transport};
use futures_util::{SinkExt, StreamExt};
use shared::webpush_ws::{
    ack_code, AckUpdate, DeviceMessage, Notification, ServerMessage, STATUS_OK,
};
use std::borrow::Cow;
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

async fn send(ws: &mut Ws, m: &DeviceMessage<'_>) -> Result<(), Error> {
    ws.send(Message::text(m.to_text())).await?;
    Ok(())
}

/// The next message other than a ping (or one of a type this client does
/// not know), or `None` when the connection ends.
async fn next(ws: &mut Ws) -> Result<Option<ServerMessage<'static>>, Error> {
    while let Some(m) = ws.next().await {
        match m? {
            Message::Text(t) => match ServerMessage::parse(&t) {
                Ok(ServerMessage::Ping | ServerMessage::Other) => {}
                Ok(m) => return Ok(Some(m)),
                Err(e) => {
                    return Err(Error::Protocol(format!(
                        "a WebSocket message is not a push protocol message: {e}"
                    )))
                }
            },
            Message::Close(_) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

/// Waits for the reply `pick` takes (the `kind` of message it wants),
/// skipping anything else.
async fn reply<T>(
    ws: &mut Ws,
    kind: &str,
    mut pick: impl FnMut(ServerMessage<'static>) -> Option<T>,
) -> Result<T, Error> {
    let wait = async {
        loop {
            match next(ws).await? {
                Some(m) => {
                    if let Some(r) = pick(m) {
                        return Ok(r);
                    }
                }
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

fn check_status(status: u16, what: &str) -> Result<(), Error> {
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(Error::Protocol(format!("{what} answered status {status}")))
    }
}

/// Says `hello`; with `uaid`, resumes that user agent with its channels.
async fn hello(ws: &mut Ws, state: &DeviceState) -> Result<String, Error> {
    let h = DeviceMessage::Hello {
        uaid: state.uaid.as_deref().map(Cow::Borrowed),
        channel_ids: state
            .uaid
            .as_ref()
            .map(|_| state.channel_id.iter().map(|c| c.as_str().into()).collect()),
        use_webpush: Some(true),
    };
    send(ws, &h).await?;
    let (status, uaid) = reply(ws, "hello", |m| match m {
        ServerMessage::Hello { status, uaid, .. } => Some((status, uaid.into_owned())),
        _ => None,
    })
    .await?;
    check_status(status, "hello")?;
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
    let reg = DeviceMessage::Register {
        channel_id: channel.as_str().into(),
        key: state.vapid.as_deref().map(Cow::Borrowed),
    };
    send(&mut ws, &reg).await?;
    let (status, endpoint) = reply(&mut ws, "register", |m| match m {
        ServerMessage::Register {
            status,
            push_endpoint,
            ..
        } => Some((status, push_endpoint)),
        _ => None,
    })
    .await?;
    check_status(status, "register")?;
    let endpoint =
        endpoint.ok_or_else(|| Error::Protocol("the register reply has no pushEndpoint".into()))?;
    state.transport = Transport::WebSocket;
    state.uaid = Some(uaid);
    state.channel_id = Some(channel);
    state.endpoint = endpoint.into_owned();
    let _ = ws.close(None).await;
    Ok(state)
}

fn incoming(n: &Notification) -> Incoming {
    let body = n
        .data
        .as_deref()
        .and_then(shared::b64::decode)
        .unwrap_or_default();
    let h = n.headers.clone().unwrap_or_default();
    let encoding = if body.is_empty() {
        Encoding::None
    } else if let Some(ct) = h.content_type {
        Encoding::Jose(ct.into_owned())
    } else {
        match h.encoding.as_deref() {
            Some("aes128gcm") => Encoding::Aes128gcm,
            Some("aesgcm") => Encoding::Aesgcm,
            Some(o) => Encoding::Other(format!("Content-Encoding: {o}")),
            None => Encoding::None,
        }
    };
    Incoming {
        id: n.version.clone().into_owned(),
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
        let m = tokio::select! {
            m = next(&mut ws) => m?,
            _ = ping.tick() => {
                send(&mut ws, &DeviceMessage::Ping).await?;
                continue;
            }
        };
        let Some(m) = m else {
            return Err(Error::Protocol("the service closed the connection".into()));
        };
        let ServerMessage::Notification(n) = m else {
            continue;
        };
        let message = incoming(&n);
        let payload = decrypt(&message, state);
        let code = if payload.is_ok() {
            ack_code::DELIVERED
        } else {
            ack_code::DECRYPT_FAILED
        };
        let delivery = Delivery { message, payload };
        let flow = on_message(&delivery);
        let update = [AckUpdate {
            channel_id: n.channel_id,
            version: n.version,
            code: Some(code),
        }];
        send(
            &mut ws,
            &DeviceMessage::Ack {
                updates: Cow::Borrowed(&update),
            },
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
    let channel = state.channel_id.as_deref().ok_or(Error::Usage(
        "this device state names no channelID to unregister",
    ))?;
    let mut ws = connect(&state.server).await?;
    hello(&mut ws, state).await?;
    let unregister = DeviceMessage::Unregister {
        channel_id: channel.into(),
        code: None,
    };
    send(&mut ws, &unregister).await?;
    let status = reply(&mut ws, "unregister", |m| match m {
        ServerMessage::Unregister { status, .. } => Some(status),
        _ => None,
    })
    .await?;
    check_status(status, "unregister")?;
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

    fn notification(text: &str) -> Notification<'static> {
        match ServerMessage::parse(text).unwrap() {
            ServerMessage::Notification(n) => n,
            m => panic!("not a notification: {m:?}"),
        }
    }

    #[test]
    fn notification_encodings() {
        let n = notification(
            r#"{"messageType":"notification","channelID":"c","version":"v","data":"AAEC","headers":{"encoding":"aes128gcm"}}"#,
        );
        assert_eq!(incoming(&n).encoding, Encoding::Aes128gcm);
        let n = notification(
            r#"{"messageType":"notification","channelID":"c","version":"v","data":"AAEC","headers":{"content_type":"application/jose+json"}}"#,
        );
        assert_eq!(
            incoming(&n).encoding,
            Encoding::Jose("application/jose+json".into())
        );
        let n = notification(r#"{"messageType":"notification","channelID":"c","version":"v"}"#);
        assert_eq!(incoming(&n).encoding, Encoding::None);
        assert_eq!(incoming(&n).id, "v");
    }
}
