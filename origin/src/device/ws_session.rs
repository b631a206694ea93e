//! Mozilla's WebSocket push protocol as a plain state machine: text in,
//! commands and replies out. No socket, no store: the glue in `ws.rs`
//! performs each [`Command`] and reports back.

use crate::store::Encoding;
use crate::tokens::{self, Token};
use shared::b64;
use shared::vapid::PublicKey;
use shared::webpush_ws::{DeviceMessage, ServerMessage, STATUS_OK};
use std::time::{Duration, Instant};

/// A protocol violation that ends the connection.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Not JSON, or not a known message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Anything but `hello` (or a ping) before `hello`.
    #[error("{0} before hello")]
    NotHelloFirst(&'static str),
    /// A second `hello`.
    #[error("hello sent twice")]
    HelloTwice,
    /// A ping sooner than `--ws-min-ping-interval-secs` after the last one.
    #[error("pinged again within {0} s")]
    PingTooSoon(u64),
}

/// What the glue must do for a client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Find or create the user agent (`None`, or unknown: a new one), then call
    /// [`Session::hello_done`] and send [`hello_reply`].
    Hello {
        /// The uaid the device asked to resume.
        requested: Option<Token>,
    },
    /// Create (or return) the subscription for this channel.
    Register {
        /// The channelID.
        channel: Token,
        /// The VAPID key restriction.
        key: Option<PublicKey>,
    },
    /// End the subscription of this channel.
    Unregister {
        /// The channelID.
        channel: Token,
    },
    /// The device acknowledged these message versions, each with its
    /// update's `code` if it had one.
    Ack(Vec<(Token, Option<u16>)>),
    /// The device could not process this message version.
    Nack(Token),
    /// The device pinged: answer [`shared::webpush_ws::PING`] once
    /// [`Session::pinged`] allows.
    Ping,
    /// Send this reply and do nothing else.
    Reply(String),
    /// Nothing to do.
    Nothing,
}

/// The protocol state of one connection.
#[derive(Debug, Default)]
pub struct Session {
    uaid: Option<Token>,
    hello_seen: bool,
    /// Pings closer together than this end the connection (zero: any).
    min_ping_interval: Duration,
    last_ping: Option<Instant>,
}

impl Session {
    /// A session awaiting `hello`, whose device may ping at most once per
    /// `min_ping_interval` (as Mozilla's service allows once per 45 s: a
    /// device that pings in a loop would keep a core busy answering).
    pub fn new(min_ping_interval: Duration) -> Session {
        Session {
            min_ping_interval,
            ..Session::default()
        }
    }

    /// Records a ping received at `now`; an error if it came too soon
    /// after the last one.
    pub fn pinged(&mut self, now: Instant) -> Result<(), SessionError> {
        if let Some(last) = self.last_ping {
            if now.saturating_duration_since(last) < self.min_ping_interval {
                return Err(SessionError::PingTooSoon(self.min_ping_interval.as_secs()));
            }
        }
        self.last_ping = Some(now);
        Ok(())
    }

    /// The user agent, once `hello` is done.
    pub fn uaid(&self) -> Option<Token> {
        self.uaid
    }

    /// Reads one text message from the device.
    pub fn receive(&mut self, text: &str) -> Result<Command, SessionError> {
        let msg = DeviceMessage::parse(text).map_err(|e| SessionError::Malformed(e.to_string()))?;
        if !self.hello_seen && !matches!(msg, DeviceMessage::Hello { .. } | DeviceMessage::Ping) {
            return Err(SessionError::NotHelloFirst("a message"));
        }
        Ok(match msg {
            DeviceMessage::Hello { uaid, .. } => {
                if self.hello_seen {
                    return Err(SessionError::HelloTwice);
                }
                self.hello_seen = true;
                // This service speaks Web Push only: `use_webpush` is not read.
                Command::Hello {
                    requested: uaid.as_deref().and_then(tokens::from_uuid),
                }
            }
            DeviceMessage::Register { channel_id, key } => {
                let Some(channel) = tokens::from_uuid(&channel_id) else {
                    return Ok(Command::Reply(register_error(&channel_id, 400)));
                };
                let key = match key.as_deref().map(PublicKey::parse).transpose() {
                    Ok(k) => k,
                    Err(_) => return Ok(Command::Reply(register_error(&channel_id, 400))),
                };
                Command::Register { channel, key }
            }
            DeviceMessage::Unregister { channel_id, .. } => match tokens::from_uuid(&channel_id) {
                Some(channel) => Command::Unregister { channel },
                None => Command::Reply(unregister_reply(&channel_id, 400)),
            },
            DeviceMessage::Ack { updates } => Command::Ack(
                updates
                    .iter()
                    .filter_map(|u| Some((tokens::decode(&u.version)?, u.code)))
                    .collect(),
            ),
            DeviceMessage::Nack { version, .. } => match tokens::decode(&version) {
                Some(v) => Command::Nack(v),
                None => Command::Nothing,
            },
            DeviceMessage::Ping => Command::Ping,
            DeviceMessage::BroadcastSubscribe => Command::Nothing,
        })
    }

    /// Records the user agent the `hello` resolved to.
    pub fn hello_done(&mut self, uaid: Token) {
        self.uaid = Some(uaid);
    }
}

/// The reply to `hello`.
pub fn hello_reply(uaid: &Token) -> String {
    ServerMessage::Hello {
        uaid: tokens::to_hex(uaid).into(),
        status: STATUS_OK,
        use_webpush: Some(true),
        broadcasts: Default::default(),
    }
    .to_text()
}

/// The reply to a successful `register`.
pub fn register_reply(channel: &Token, endpoint: &str) -> String {
    ServerMessage::Register {
        channel_id: tokens::to_uuid(channel).into(),
        status: STATUS_OK,
        push_endpoint: Some(endpoint.into()),
    }
    .to_text()
}

/// A channel as a device sent it, cut to 64 characters for the reply.
fn echoed(channel_id: &str) -> std::borrow::Cow<'_, str> {
    match channel_id.char_indices().nth(64) {
        Some((end, _)) => channel_id[..end].into(),
        None => channel_id.into(),
    }
}

/// The reply to a refused `register`.
pub fn register_error(channel_id: &str, status: u16) -> String {
    ServerMessage::Register {
        channel_id: echoed(channel_id),
        status,
        push_endpoint: None,
    }
    .to_text()
}

/// The reply to `unregister`.
pub fn unregister_reply(channel_id: &str, status: u16) -> String {
    ServerMessage::Unregister {
        channel_id: echoed(channel_id),
        status,
    }
    .to_text()
}

/// A notification's body.
pub enum Data<'a> {
    /// The bytes, to be encoded.
    Raw(&'a [u8]),
    /// A writer of the base64url encoding (of a body that is not empty).
    Encoded(&'a mut dyn FnMut(&mut Vec<u8>)),
}

/// Appends the `notification` of version `version` on `channel` with body
/// `data` in `encoding` to `out` (a list copy has no
/// [`crate::store::Message`] of its own). It is on the path of every
/// delivery, so it is written straight into the buffer.
pub fn notification_into(
    channel: &Token,
    version: &Token,
    encoding: &Encoding,
    data: Data,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(br#"{"messageType":"notification","channelID":""#);
    tokens::push_uuid(channel, out);
    out.extend_from_slice(br#"","version":""#);
    b64::encode_into_bytes(version, out);
    out.push(b'"');
    let has_body = match &data {
        Data::Raw(body) => !body.is_empty(),
        Data::Encoded(_) => true,
    };
    if has_body {
        out.extend_from_slice(br#","data":""#);
        match data {
            Data::Raw(body) => b64::encode_into_bytes(body, out),
            Data::Encoded(write) => write(out),
        }
        out.extend_from_slice(br#"","headers":"#);
        let json = |s: &str, out: &mut Vec<u8>| {
            serde_json::to_writer(out, s).expect("a string serializes")
        };
        match encoding {
            Encoding::Aes128gcm => out.extend_from_slice(br#"{"encoding":"aes128gcm"}"#),
            Encoding::Aesgcm {
                encryption,
                crypto_key,
            } => {
                out.extend_from_slice(br#"{"encoding":"aesgcm","encryption":"#);
                json(encryption, out);
                // A sender may leave `Crypto-Key` out (the device then
                // cannot decrypt, and says so): nothing is passed on.
                if !crypto_key.is_empty() {
                    out.extend_from_slice(br#","crypto_key":"#);
                    json(crypto_key, out);
                }
                out.push(b'}');
            }
            Encoding::Jose(ct) => {
                out.extend_from_slice(br#"{"content_type":"#);
                json(ct, out);
                out.push(b'}');
            }
            Encoding::None | Encoding::Receipt | Encoding::ListReceipt => {
                out.extend_from_slice(b"{}")
            }
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::webpush_ws::{Notification, NotificationHeaders, ServerMessage, STATUS_OK};

    #[test]
    fn hello_first() {
        let mut s = Session::new(Duration::ZERO);
        assert_eq!(s.receive("{}").unwrap(), Command::Ping);
        assert!(matches!(
            s.receive(r#"{"messageType":"register","channelID":"x"}"#),
            Err(SessionError::NotHelloFirst(_))
        ));
        let uaid = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            s.receive(&format!(
                r#"{{"messageType":"hello","uaid":"{uaid}","use_webpush":true}}"#
            ))
            .unwrap(),
            Command::Hello {
                requested: tokens::from_uuid(uaid)
            }
        );
        assert_eq!(
            s.receive(r#"{"messageType":"hello"}"#),
            Err(SessionError::HelloTwice)
        );
    }

    #[test]
    fn pings_at_most_once_per_interval() {
        let mut s = Session::new(Duration::from_secs(45));
        let t0 = Instant::now();
        assert_eq!(s.receive("{}").unwrap(), Command::Ping);
        assert_eq!(s.pinged(t0), Ok(()));
        assert_eq!(
            s.pinged(t0 + Duration::from_secs(44)),
            Err(SessionError::PingTooSoon(45))
        );
        assert_eq!(s.pinged(t0 + Duration::from_secs(45)), Ok(()));
        let mut any = Session::new(Duration::ZERO);
        assert!((0..3).all(|_| any.pinged(t0).is_ok()));
    }

    #[test]
    fn register_and_ack() {
        let mut s = Session::new(Duration::ZERO);
        s.receive(r#"{"messageType":"hello","uaid":""}"#).unwrap();
        s.hello_done([1; 16]);
        let ch = "d9b74644-4f97-46aa-b8fa-9393985cd6cd";
        assert_eq!(
            s.receive(&format!(
                r#"{{"messageType":"register","channelID":"{ch}"}}"#
            ))
            .unwrap(),
            Command::Register {
                channel: tokens::from_uuid(ch).unwrap(),
                key: None
            }
        );
        let bad = s
            .receive(r#"{"messageType":"register","channelID":"nope"}"#)
            .unwrap();
        assert!(matches!(bad, Command::Reply(r) if r.contains("400")));
        let v = tokens::encode(&[7; 16]);
        assert_eq!(
            s.receive(&format!(
                r#"{{"messageType":"ack","updates":[{{"channelID":"{ch}","version":"{v}"}}]}}"#
            ))
            .unwrap(),
            Command::Ack(vec![([7; 16], None)])
        );
        assert!(s.receive("not json").is_err());
    }

    #[test]
    fn accepts_what_firefox_sends() {
        let mut s = Session::new(Duration::ZERO);
        let hello = r#"{"messageType":"hello","broadcasts":{"remote-settings/monitor_changes":"\"0\""},"use_webpush":true}"#;
        assert_eq!(
            s.receive(hello).unwrap(),
            Command::Hello { requested: None }
        );
        s.hello_done([1; 16]);
        let ch = "d9b74644-4f97-46aa-b8fa-9393985cd6cd";
        let v = tokens::encode(&[7; 16]);
        // Escapes, unknown fields and reason codes of any type are read past.
        let escaped_v = format!("\\u{:04x}{}", v.as_bytes()[0], &v[1..]);
        for (text, want) in [
            (
                format!(
                    r#"{{"messageType":"ack","updates":[{{"channelID":"{ch}","version":"{v}","code":100}}]}}"#
                ),
                Command::Ack(vec![([7; 16], Some(100))]),
            ),
            (
                format!(
                    r#"{{"messageType":"ack","updates":[{{"channelID":"{ch}","version":"{escaped_v}","code":"x"}}],"extra":1}}"#
                ),
                Command::Ack(vec![([7; 16], None)]),
            ),
            (
                format!(r#"{{"messageType":"nack","version":"{v}","code":302}}"#),
                Command::Nack([7; 16]),
            ),
            (
                format!(r#"{{"messageType":"unregister","channelID":"{ch}","code":200}}"#),
                Command::Unregister {
                    channel: tokens::from_uuid(ch).unwrap(),
                },
            ),
            (
                r#"{"messageType":"broadcast_subscribe","broadcasts":{"a":"v1"}}"#.into(),
                Command::Nothing,
            ),
            (r#"{"messageType":"ack"}"#.into(), Command::Ack(vec![])),
            (" {} \n".into(), Command::Ping),
        ] {
            assert_eq!(s.receive(&text).unwrap(), want, "{text}");
        }
        assert!(matches!(
            s.receive(r#"{"messageType":"unknown"}"#),
            Err(SessionError::Malformed(_))
        ));
    }

    /// A reply as a device reads it, with shared's type.
    fn read(text: &str) -> ServerMessage<'static> {
        ServerMessage::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn replies_read_as_server_messages() {
        let uaid = [5; 16];
        assert_eq!(
            read(&hello_reply(&uaid)),
            ServerMessage::Hello {
                uaid: tokens::to_hex(&uaid).into(),
                status: STATUS_OK,
                use_webpush: Some(true),
                broadcasts: Default::default(),
            }
        );
        let ch = [4; 16];
        assert_eq!(
            read(&register_reply(&ch, "http://push.example/p/x")),
            ServerMessage::Register {
                channel_id: tokens::to_uuid(&ch).into(),
                status: STATUS_OK,
                push_endpoint: Some("http://push.example/p/x".into()),
            }
        );
        let long = format!("{}\"", "x".repeat(70));
        for status in [400, 409, 429] {
            assert_eq!(
                read(&register_error(&long, status)),
                ServerMessage::Register {
                    channel_id: "x".repeat(64).into(),
                    status,
                    push_endpoint: None,
                }
            );
        }
        for status in [200, 400] {
            assert_eq!(
                read(&unregister_reply("a\"b", status)),
                ServerMessage::Unregister {
                    channel_id: "a\"b".into(),
                    status,
                }
            );
        }
        let mut s = Session::new(Duration::ZERO);
        for ping in ["{}", r#"{"messageType":"ping"}"#] {
            assert_eq!(s.receive(ping), Ok(Command::Ping), "{ping}");
        }
        assert_eq!(read(shared::webpush_ws::PING), ServerMessage::Ping);
    }

    #[test]
    fn notifications_read_as_server_messages() {
        let (channel, version) = ([4; 16], [1; 16]);
        let headers = |encoding: Option<&str>, content_type: Option<&str>| {
            Some(NotificationHeaders {
                encoding: encoding.map(|e| e.to_owned().into()),
                content_type: content_type.map(|c| c.to_owned().into()),
                ..Default::default()
            })
        };
        let aesgcm = Encoding::Aesgcm {
            encryption: "salt=\"q\"".into(),
            crypto_key: "dh=k;p256ecdsa=\\v".into(),
        };
        let cases = [
            (
                Encoding::Aes128gcm,
                &b"hi"[..],
                headers(Some("aes128gcm"), None),
            ),
            (
                aesgcm,
                b"hi",
                Some(NotificationHeaders {
                    encoding: Some("aesgcm".into()),
                    encryption: Some("salt=\"q\"".into()),
                    crypto_key: Some("dh=k;p256ecdsa=\\v".into()),
                    content_type: None,
                }),
            ),
            (
                Encoding::Jose("application/jose+json".into()),
                b"hi",
                headers(None, Some("application/jose+json")),
            ),
            (Encoding::None, b"hi", headers(None, None)),
            (Encoding::Receipt, b"hi", headers(None, None)),
            (Encoding::Aes128gcm, b"", None),
            (Encoding::None, b"", None),
        ];
        for (encoding, body, headers) in cases {
            let mut out = Vec::new();
            notification_into(&channel, &version, &encoding, Data::Raw(body), &mut out);
            let want = ServerMessage::Notification(Notification {
                channel_id: tokens::to_uuid(&channel).into(),
                version: tokens::encode(&version).into(),
                data: (!body.is_empty()).then(|| b64::encode(body).into()),
                headers,
            });
            assert_eq!(
                read(std::str::from_utf8(&out).unwrap()),
                want,
                "{encoding:?}"
            );
            if !body.is_empty() {
                // The pre-encoded form writes the same bytes.
                let mut encoded = Vec::new();
                let mut write = |o: &mut Vec<u8>| b64::encode_into_bytes(body, o);
                notification_into(
                    &channel,
                    &version,
                    &encoding,
                    Data::Encoded(&mut write),
                    &mut encoded,
                );
                assert_eq!(encoded, out);
            }
        }
    }
}
