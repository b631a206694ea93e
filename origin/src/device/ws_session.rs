//! Mozilla's WebSocket push protocol as a plain state machine: text in,
//! commands and replies out. No socket, no store: the glue in `ws.rs`
//! performs each [`Command`] and reports back.

use crate::store::Encoding;
use crate::tokens::{self, Token};
use serde::Deserialize;
use serde_json::json;
#[cfg(test)]
use serde_json::Value;
use shared::b64;
use shared::vapid::PublicKey;

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
}

#[derive(Deserialize)]
#[serde(tag = "messageType", rename_all = "lowercase")]
enum Incoming {
    Hello {
        #[serde(default)]
        uaid: Option<String>,
        #[serde(default)]
        use_webpush: Option<bool>,
    },
    Register {
        #[serde(rename = "channelID")]
        channel_id: String,
        #[serde(default)]
        key: Option<String>,
    },
    Unregister {
        #[serde(rename = "channelID")]
        channel_id: String,
    },
    Ack {
        #[serde(default)]
        updates: Vec<AckUpdate>,
    },
    Nack {
        version: String,
    },
    Ping {},
    #[serde(rename = "broadcast_subscribe")]
    BroadcastSubscribe {},
}

#[derive(Deserialize)]
struct AckUpdate {
    #[serde(rename = "channelID")]
    channel_id: String,
    version: String,
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
    /// The device acknowledged these message versions.
    Ack(Vec<Token>),
    /// The device could not process this message version.
    Nack(Token),
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
}

impl Session {
    /// A session awaiting `hello`.
    pub fn new() -> Session {
        Session::default()
    }

    /// The user agent, once `hello` is done.
    pub fn uaid(&self) -> Option<Token> {
        self.uaid
    }

    /// Reads one text message from the device.
    pub fn receive(&mut self, text: &str) -> Result<Command, SessionError> {
        let text = text.trim();
        if text == "{}" {
            return Ok(Command::Reply("{}".into()));
        }
        let msg: Incoming =
            serde_json::from_str(text).map_err(|e| SessionError::Malformed(e.to_string()))?;
        if !self.hello_seen && !matches!(msg, Incoming::Hello { .. } | Incoming::Ping {}) {
            return Err(SessionError::NotHelloFirst("a message"));
        }
        Ok(match msg {
            Incoming::Hello { uaid, use_webpush } => {
                if self.hello_seen {
                    return Err(SessionError::HelloTwice);
                }
                self.hello_seen = true;
                let _ = use_webpush; // this service speaks Web Push only
                Command::Hello {
                    requested: uaid.as_deref().and_then(tokens::from_uuid),
                }
            }
            Incoming::Register { channel_id, key } => {
                let Some(channel) = tokens::from_uuid(&channel_id) else {
                    return Ok(Command::Reply(register_error(&channel_id, 400)));
                };
                let key = match key.as_deref().map(PublicKey::parse).transpose() {
                    Ok(k) => k,
                    Err(_) => return Ok(Command::Reply(register_error(&channel_id, 400))),
                };
                Command::Register { channel, key }
            }
            Incoming::Unregister { channel_id } => match tokens::from_uuid(&channel_id) {
                Some(channel) => Command::Unregister { channel },
                None => Command::Reply(unregister_reply(&channel_id, 400)),
            },
            Incoming::Ack { updates } => Command::Ack(
                updates
                    .iter()
                    .filter_map(|u| {
                        let _ = &u.channel_id;
                        tokens::decode(&u.version)
                    })
                    .collect(),
            ),
            Incoming::Nack { version } => match tokens::decode(&version) {
                Some(v) => Command::Nack(v),
                None => Command::Nothing,
            },
            Incoming::Ping {} => Command::Reply("{}".into()),
            Incoming::BroadcastSubscribe {} => Command::Nothing,
        })
    }

    /// Records the user agent the `hello` resolved to.
    pub fn hello_done(&mut self, uaid: Token) {
        self.uaid = Some(uaid);
    }
}

/// The reply to `hello`.
pub fn hello_reply(uaid: &Token) -> String {
    json!({
        "messageType": "hello",
        "uaid": tokens::to_hex(uaid),
        "status": 200,
        "use_webpush": true,
        "broadcasts": {},
    })
    .to_string()
}

/// The reply to a successful `register`.
pub fn register_reply(channel: &Token, endpoint: &str) -> String {
    json!({
        "messageType": "register",
        "channelID": tokens::to_uuid(channel),
        "status": 200,
        "pushEndpoint": endpoint,
    })
    .to_string()
}

/// The reply to a refused `register`.
pub fn register_error(channel_id: &str, status: u16) -> String {
    json!({
        "messageType": "register",
        "channelID": channel_id.chars().take(64).collect::<String>(),
        "status": status,
    })
    .to_string()
}

/// The reply to `unregister`.
pub fn unregister_reply(channel_id: &str, status: u16) -> String {
    json!({
        "messageType": "unregister",
        "channelID": channel_id.chars().take(64).collect::<String>(),
        "status": status,
    })
    .to_string()
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
                out.extend_from_slice(br#","crypto_key":"#);
                json(crypto_key, out);
                out.push(b'}');
            }
            Encoding::Jose(ct) => {
                out.extend_from_slice(br#"{"content_type":"#);
                json(ct, out);
                out.push(b'}');
            }
            Encoding::None | Encoding::Receipt => out.extend_from_slice(b"{}"),
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Message;

    /// A `notification` for a message, as a string.
    pub fn notification(m: &Message) -> String {
        let mut out = Vec::with_capacity(160 + m.body.len() / 3 * 4);
        notification_into(&m.channel, &m.id, &m.encoding, Data::Raw(&m.body), &mut out);
        String::from_utf8(out).expect("the notification is JSON text")
    }

    #[test]
    fn hello_first() {
        let mut s = Session::new();
        assert_eq!(s.receive("{}").unwrap(), Command::Reply("{}".into()));
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
    fn register_and_ack() {
        let mut s = Session::new();
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
            Command::Ack(vec![[7; 16]])
        );
        assert!(s.receive("not json").is_err());
    }

    #[test]
    fn notification_shape() {
        let m = Message {
            id: [1; 16],
            uaid: [2; 16],
            push: [3; 16],
            channel: [4; 16],
            seq: 0,
            expires: 10,
            urgency: Default::default(),
            topic: None,
            receipt: None,
            encoding: Encoding::Aes128gcm,
            body: bytes::Bytes::from_static(b"hi"),
            list_message: None,
        };
        let v: Value = serde_json::from_str(&notification(&m)).unwrap();
        assert_eq!(v["data"], "aGk");
        assert_eq!(v["headers"]["encoding"], "aes128gcm");
        assert_eq!(v["version"], tokens::encode(&[1; 16]));
    }
}
