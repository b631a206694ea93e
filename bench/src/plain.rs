//! A device served the way a plain WebSocket client library serves one: a
//! task of its own, frames read by `tokio-tungstenite`, each message parsed
//! by `serde_json`, each acknowledgement written as it is made. Real devices
//! cost a service what such clients cost it, not what the workers' one
//! epoll loop ([`crate::served`]) costs it.

use futures_util::{SinkExt, StreamExt};
use shared::webpush_ws::{AckUpdate, DeviceMessage, Notification, ServerMessage};
use std::borrow::Cow;
use std::io;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// What the device does with each notification: `true` to acknowledge it.
pub trait OnNote {
    /// Records a notification that arrived at `now` (ns since the epoch).
    fn note(&self, n: &Notification, now: u64) -> bool;
    /// Counts a message that is not a notification, or not the protocol's.
    fn other(&self, error: Option<String>);
}

/// The `ack` of `n`, as Firefox writes it.
fn ack_text(n: &Notification) -> String {
    let update = [AckUpdate {
        channel_id: Cow::Borrowed(&n.channel_id),
        version: Cow::Borrowed(&n.version),
        code: None,
    }];
    DeviceMessage::Ack {
        updates: Cow::Borrowed(&update),
    }
    .to_text()
}

/// What a frame asks of the device: go on, acknowledge, or stop.
enum Next {
    On,
    Ack(String),
    Closed,
}

fn handle(m: Message, on: &impl OnNote) -> Next {
    let text = match m {
        Message::Text(t) => t,
        Message::Close(_) => return Next::Closed,
        _ => return Next::On,
    };
    match ServerMessage::parse(&text) {
        Ok(ServerMessage::Notification(n)) => {
            if on.note(&n, crate::realtime_ns()) {
                return Next::Ack(ack_text(&n));
            }
        }
        Ok(ServerMessage::Ping) => {}
        Ok(_) => on.other(None),
        Err(e) => on.other(Some(format!("bad message: {e}"))),
    }
    Next::On
}

/// Serves a set-up device until the service closes: `stream` with the
/// bytes `read` already read from it; acknowledgements wait `ack_delay`.
pub async fn serve(
    stream: TcpStream,
    read: Vec<u8>,
    ack_delay: Duration,
    on: &impl OnNote,
) -> io::Result<()> {
    let mut ws = WebSocketStream::from_partially_read(stream, read, Role::Client, None).await;
    if ack_delay.is_zero() {
        while let Some(m) = ws.next().await {
            match handle(m.map_err(io::Error::other)?, on) {
                Next::On => {}
                Next::Ack(a) => ws.send(Message::text(a)).await.map_err(io::Error::other)?,
                Next::Closed => break,
            }
        }
        return Ok(());
    }
    // Delayed acknowledgements go through a writer of their own.
    let (mut sink, mut frames) = ws.split();
    let (delayed, mut due) = mpsc::unbounded_channel::<(Instant, String)>();
    let writer = async {
        while let Some((at, text)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        while let Some(m) = frames.next().await {
            match handle(m.map_err(io::Error::other)?, on) {
                Next::On => {}
                Next::Ack(a) => {
                    let _ = delayed.send((Instant::now() + ack_delay, a));
                }
                Next::Closed => break,
            }
        }
        drop(delayed);
        Ok::<(), io::Error>(())
    };
    let (read, ()) = tokio::join!(reader, writer);
    read
}
