//! Mozilla's WebSocket push protocol messages (docs/protocol.md §2.2), both directions, as serde types.
//!
//! Every message is a JSON object tagged by `messageType`, except the ping:
//! `{}` either way. [`DeviceMessage::parse`] and [`ServerMessage::parse`]
//! read a text message, ping included; [`DeviceMessage::to_text`] and
//! [`ServerMessage::to_text`] write one. Unknown fields are ignored, as
//! Firefox and autopush add their own.
//!
//! What a device sends borrows from the text it was read from where no
//! JSON escape forbids it (the service reads one `ack` per delivery); what
//! the service sends is read into owned strings, so a
//! `ServerMessage<'static>` reads from any text.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// A ping, in either direction: an empty object.
pub const PING: &str = "{}";

/// The `status` of a reply that succeeded.
pub const STATUS_OK: u16 = 200;

/// The `code` of an acknowledged update (Firefox's values).
pub mod ack_code {
    /// Delivered to the application.
    pub const DELIVERED: u16 = 100;
    /// The message did not decrypt.
    pub const DECRYPT_FAILED: u16 = 101;
    /// Not delivered for another reason.
    pub const NOT_DELIVERED: u16 = 102;
}

/// A message from a device (user agent) to the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "messageType", rename_all = "snake_case")]
pub enum DeviceMessage<'a> {
    /// Opens the session, first; with a `uaid`, resumes that user agent.
    Hello {
        /// The user agent to resume (hex, or a UUID), if any.
        #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
        uaid: Option<Cow<'a, str>>,
        /// The channels the device holds for that user agent.
        #[serde(
            rename = "channelIDs",
            default,
            borrow,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "lenient"
        )]
        channel_ids: Option<Vec<Cow<'a, str>>>,
        /// Whether the device speaks Web Push (encrypted bodies).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        use_webpush: Option<bool>,
    },
    /// Subscribes a new channel.
    Register {
        /// The channel: a UUID the device chose.
        #[serde(rename = "channelID", borrow)]
        channel_id: Cow<'a, str>,
        /// The VAPID public key (base64url) the subscription is restricted to.
        #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
        key: Option<Cow<'a, str>>,
    },
    /// Ends a channel's subscription.
    Unregister {
        /// The channel.
        #[serde(rename = "channelID", borrow)]
        channel_id: Cow<'a, str>,
        /// Why (Firefox's reason code).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "lenient"
        )]
        code: Option<u16>,
    },
    /// Acknowledges notifications.
    Ack {
        /// One entry per notification (borrowed when written from a slice:
        /// no allocation per ack).
        #[serde(default, borrow)]
        updates: Cow<'a, [AckUpdate<'a>]>,
    },
    /// Says a notification could not be processed.
    Nack {
        /// The notification's `version`.
        #[serde(borrow)]
        version: Cow<'a, str>,
        /// Why (Firefox's reason code).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "lenient"
        )]
        code: Option<u16>,
    },
    /// Subscribes to broadcasts (its `broadcasts` are not read: the service
    /// has none).
    BroadcastSubscribe,
    /// A ping: `{}` on the wire (`{"messageType":"ping"}` is read as one too).
    #[serde(skip_serializing)]
    Ping,
}

/// One notification acknowledged in an `ack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckUpdate<'a> {
    /// The notification's channel.
    #[serde(rename = "channelID", borrow)]
    pub channel_id: Cow<'a, str>,
    /// The notification's `version`.
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    /// How it went (see [`ack_code`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub code: Option<u16>,
}

/// A message from the service to a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "messageType", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// The reply to `hello`.
    Hello {
        /// The user agent, new or resumed.
        uaid: Cow<'a, str>,
        /// 200.
        status: u16,
        /// Whether the service speaks Web Push.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        use_webpush: Option<bool>,
        /// Broadcast versions (none here).
        #[serde(default)]
        broadcasts: Map<String, Value>,
    },
    /// The reply to `register`.
    Register {
        /// The channel.
        #[serde(rename = "channelID")]
        channel_id: Cow<'a, str>,
        /// 200; else 400, 409 or 429 (docs/protocol.md §2.2).
        status: u16,
        /// The push resource, when `status` is 200.
        #[serde(
            rename = "pushEndpoint",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        push_endpoint: Option<Cow<'a, str>>,
    },
    /// The reply to `unregister`.
    Unregister {
        /// The channel.
        #[serde(rename = "channelID")]
        channel_id: Cow<'a, str>,
        /// 200, or 400 for a malformed channel.
        status: u16,
    },
    /// A push message.
    Notification(Notification<'a>),
    /// A ping: `{}` on the wire.
    #[serde(skip_serializing)]
    Ping,
    /// A message type this crate does not know (autopush's `broadcast`, say).
    #[serde(other, skip_serializing)]
    Other,
}

/// A push message delivered to a device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification<'a> {
    /// The subscription's channel.
    #[serde(rename = "channelID")]
    pub channel_id: Cow<'a, str>,
    /// The message's id, which the device acknowledges.
    pub version: Cow<'a, str>,
    /// The body, base64url; absent when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Cow<'a, str>>,
    /// How the body is coded; absent when it is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<NotificationHeaders<'a>>,
}

/// The coding of a notification's body: `encoding` (`aes128gcm`, or
/// `aesgcm` with `encryption` and `crypto_key`), or `content_type` for a JWE.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationHeaders<'a> {
    /// The `Content-Encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Cow<'a, str>>,
    /// The `Encryption` header of `aesgcm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Cow<'a, str>>,
    /// The `Crypto-Key` header of `aesgcm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crypto_key: Option<Cow<'a, str>>,
    /// The `Content-Type` of a JWE (`application/jose`, `application/jose+json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<Cow<'a, str>>,
}

impl<'a> DeviceMessage<'a> {
    /// Reads one text message; `{}` (around white space) is a ping.
    pub fn parse(text: &'a str) -> Result<DeviceMessage<'a>, serde_json::Error> {
        read(text, DeviceMessage::Ping)
    }

    /// The message as text.
    pub fn to_text(&self) -> String {
        write(self, matches!(self, DeviceMessage::Ping))
    }
}

impl ServerMessage<'_> {
    /// Reads one text message; `{}` (around white space) is a ping.
    pub fn parse(text: &str) -> Result<ServerMessage<'static>, serde_json::Error> {
        read(text, ServerMessage::Ping)
    }

    /// The message as text (an unknown type as `{}`, which devices skip).
    pub fn to_text(&self) -> String {
        write(
            self,
            matches!(self, ServerMessage::Ping | ServerMessage::Other),
        )
    }
}

/// The versions of an `ack` written in the shape devices write it
/// (Firefox's: `{"messageType":"ack","updates":[{"channelID":"…",
/// "version":"…","code":100}]}`, `code` optional, no white space inside, no
/// escapes), read in place with no JSON tree and no allocation: a service
/// reads one per delivered notification. `None` for any other text, which
/// [`DeviceMessage::parse`] reads (and may refuse); where this reads an
/// `ack`, `parse` reads the same one.
pub fn ack_versions(text: &str) -> Option<AckVersions<'_>> {
    let body = text
        .trim()
        .strip_prefix(r#"{"messageType":"ack","updates":["#)?
        .strip_suffix("]}")?;
    let mut rest = body.as_bytes();
    while !rest.is_empty() {
        let (_, _, after) = ack_update(rest)?;
        rest = match after {
            [] => after,
            [b',', more @ ..] if !more.is_empty() => more,
            _ => return None,
        };
    }
    Some(AckVersions {
        rest: body.as_bytes(),
    })
}

/// The versions of an `ack` read by [`ack_versions`], in order.
#[derive(Clone, Debug)]
pub struct AckVersions<'a> {
    /// The updates not yet read (checked whole by [`ack_versions`]).
    rest: &'a [u8],
}

impl<'a> Iterator for AckVersions<'a> {
    /// A version, and the update's `code` (see [`ack_code`]) if it has one.
    type Item = (&'a str, Option<u16>);

    fn next(&mut self) -> Option<(&'a str, Option<u16>)> {
        let (version, code, after) = ack_update(self.rest)?;
        self.rest = after.strip_prefix(b",").unwrap_or(after);
        Some((version, code))
    }
}

/// One update `{"channelID":"…","version":"…"[,"code":N]}` at the start of
/// `b`: its version, its code, and the bytes after it.
fn ack_update(b: &[u8]) -> Option<(&str, Option<u16>, &[u8])> {
    let b = b.strip_prefix(br#"{"channelID":""#)?;
    let (_, b) = plain_string(b)?;
    let b = b.strip_prefix(br#","version":""#)?;
    let (version, b) = plain_string(b)?;
    let (code, b) = match b.strip_prefix(br#","code":"#) {
        Some(code) => {
            let digits = code.iter().take_while(|c| c.is_ascii_digit()).count();
            if !(1..=5).contains(&digits) || (digits > 1 && code[0] == b'0') {
                return None;
            }
            let n: u32 = std::str::from_utf8(&code[..digits]).ok()?.parse().ok()?;
            (Some(u16::try_from(n).ok()?), &code[digits..])
        }
        None => (None, b),
    };
    Some((version, code, b.strip_prefix(b"}")?))
}

/// A JSON string's text up to its closing quote (already past the opening
/// one), if it needs no unescaping and holds no control character.
fn plain_string(b: &[u8]) -> Option<(&str, &[u8])> {
    let end = b
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    if b[end] != b'"' {
        return None;
    }
    Some((std::str::from_utf8(&b[..end]).ok()?, &b[end + 1..]))
}

/// One text message of either direction: `ping` for `{}`, else its JSON.
fn read<'a, T: Deserialize<'a>>(text: &'a str, ping: T) -> Result<T, serde_json::Error> {
    let text = text.trim();
    if text == PING {
        return Ok(ping);
    }
    serde_json::from_str(text)
}

/// A message as text: `{}` for a ping, else its JSON.
fn write<T: Serialize>(message: &T, ping: bool) -> String {
    match ping {
        true => PING.to_owned(),
        false => serde_json::to_string(message).expect("a push message serializes"),
    }
}

/// Reads a field the service does not act on: a value of another type reads
/// as absent, as an unknown field would.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Typed(T),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Either::deserialize(d)? {
        Either::Typed(v) => Some(v),
        Either::Other(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(text: &str) -> DeviceMessage<'_> {
        DeviceMessage::parse(text).unwrap()
    }

    #[test]
    fn reads_what_firefox_sends() {
        assert_eq!(device(" {} "), DeviceMessage::Ping);
        assert_eq!(device(r#"{"messageType":"ping"}"#), DeviceMessage::Ping);
        assert_eq!(
            device(r#"{"messageType":"ping","x":1}"#),
            DeviceMessage::Ping
        );
        assert_eq!(
            device(
                r#"{"messageType":"hello","broadcasts":{"remote-settings/monitor_changes":"\"1\""},"use_webpush":true,"uaid":"0123456789abcdef0123456789abcdef"}"#
            ),
            DeviceMessage::Hello {
                uaid: Some("0123456789abcdef0123456789abcdef".into()),
                channel_ids: None,
                use_webpush: Some(true),
            }
        );
        assert_eq!(
            device(r#"{"messageType":"register","channelID":"c-1","key":"BKey"}"#),
            DeviceMessage::Register {
                channel_id: "c-1".into(),
                key: Some("BKey".into()),
            }
        );
        assert_eq!(
            device(r#"{"messageType":"unregister","channelID":"c-1","code":200}"#),
            DeviceMessage::Unregister {
                channel_id: "c-1".into(),
                code: Some(200),
            }
        );
        assert_eq!(
            device(
                r#"{"messageType":"ack","updates":[{"channelID":"c-1","version":"v1","code":100}]}"#
            ),
            DeviceMessage::Ack {
                updates: vec![AckUpdate {
                    channel_id: "c-1".into(),
                    version: "v1".into(),
                    code: Some(ack_code::DELIVERED),
                }]
                .into(),
            }
        );
        assert_eq!(
            device(r#"{"messageType":"nack","version":"v1","code":302}"#),
            DeviceMessage::Nack {
                version: "v1".into(),
                code: Some(302),
            }
        );
        assert_eq!(
            device(r#"{"messageType":"broadcast_subscribe","broadcasts":{"a":"v1"}}"#),
            DeviceMessage::BroadcastSubscribe
        );
    }

    #[test]
    fn fields_the_service_ignores_read_as_absent_when_mistyped() {
        assert!(matches!(
            device(r#"{"messageType":"hello","channelIDs":7,"x":[1]}"#),
            DeviceMessage::Hello {
                channel_ids: None,
                ..
            }
        ));
        assert_eq!(
            device(
                r#"{"messageType":"ack","updates":[{"channelID":"c","version":"v","code":"x"}]}"#
            ),
            DeviceMessage::Ack {
                updates: vec![AckUpdate {
                    channel_id: "c".into(),
                    version: "v".into(),
                    code: None,
                }]
                .into(),
            }
        );
        assert!(matches!(
            device(r#"{"messageType":"nack","version":"v","code":null}"#),
            DeviceMessage::Nack { code: None, .. }
        ));
        assert!(matches!(
            device(r#"{"messageType":"unregister","channelID":"c","code":{"a":1}}"#),
            DeviceMessage::Unregister { code: None, .. }
        ));
        // What the service does read keeps its type.
        for bad in [
            r#"{"messageType":"hello","uaid":5}"#,
            r#"{"messageType":"hello","use_webpush":"yes"}"#,
            r#"{"messageType":"register"}"#,
            r#"{"messageType":"ack","updates":null}"#,
            r#"{"messageType":"ack","updates":[{"channelID":"c"}]}"#,
            r#"{"messageType":"Hello"}"#,
            r#"{"messageType":"notification","channelID":"c","version":"v"}"#,
            r#"{ }"#,
            "not json",
        ] {
            assert!(DeviceMessage::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ack_fields_borrow_from_the_text_unless_escaped() {
        let text = r#"{"messageType":"ack","updates":[{"channelID":"c","version":"v\u0031"}]}"#;
        let DeviceMessage::Ack { updates } = device(text) else {
            panic!("an ack");
        };
        assert!(matches!(updates[0].channel_id, Cow::Borrowed("c")));
        assert!(matches!(&updates[0].version, Cow::Owned(v) if v == "v1"));
        assert!(
            matches!(device(r#"{"messageType":"ack"}"#), DeviceMessage::Ack { updates } if updates.is_empty())
        );
    }

    /// What `parse` reads as an ack's versions, if it reads an ack.
    fn parsed_versions(text: &str) -> Option<Vec<String>> {
        match DeviceMessage::parse(text) {
            Ok(DeviceMessage::Ack { updates }) => {
                Some(updates.iter().map(|u| u.version.to_string()).collect())
            }
            _ => None,
        }
    }

    #[test]
    fn ack_codes_read_in_place_as_parse_reads_them() {
        let text = r#"{"messageType":"ack","updates":[{"channelID":"c","version":"a","code":101},{"channelID":"c","version":"b"}]}"#;
        let read: Vec<_> = ack_versions(text).unwrap().collect();
        assert_eq!(read, [("a", Some(101)), ("b", None)]);
        let Ok(DeviceMessage::Ack { updates }) = DeviceMessage::parse(text) else {
            panic!("an ack");
        };
        assert_eq!((updates[0].code, updates[1].code), (Some(101), None));
    }

    #[test]
    fn acks_read_in_place_as_parse_reads_them() {
        let read = [
            (
                r#"{"messageType":"ack","updates":[{"channelID":"c-1","version":"v1"}]}"#,
                vec!["v1"],
            ),
            (
                r#"{"messageType":"ack","updates":[{"channelID":"c","version":"v1","code":100}]}"#,
                vec!["v1"],
            ),
            (
                r#" {"messageType":"ack","updates":[{"channelID":"c","version":"a","code":0},{"channelID":"d","version":"b"}]} "#,
                vec!["a", "b"],
            ),
            (r#"{"messageType":"ack","updates":[]}"#, vec![]),
            (
                r#"{"messageType":"ack","updates":[{"channelID":"","version":"é"}]}"#,
                vec!["é"],
            ),
        ];
        for (text, want) in read {
            let got: Vec<&str> = ack_versions(text).expect(text).map(|(v, _)| v).collect();
            assert_eq!(got, want, "{text}");
            let parsed = parsed_versions(text).expect(text);
            assert_eq!(parsed, want, "{text}");
        }
        // Anything else is left to `parse`, which reads it (or refuses it).
        for text in [
            r#"{"messageType":"ack"}"#,
            r#"{"messageType": "ack","updates":[{"channelID":"c","version":"v"}]}"#,
            r#"{"updates":[{"channelID":"c","version":"v"}],"messageType":"ack"}"#,
            r#"{"messageType":"ack","updates":[{"version":"v","channelID":"c"}]}"#,
            r#"{"messageType":"ack","updates":[{"channelID":"c","version":"v\u0031"}]}"#,
            r#"{"messageType":"ack","updates":[{"channelID":"c","version":"v","code":"100"}]}"#,
            r#"{"messageType":"ack","updates":[{"channelID":"c","version":"v","code":070}]}"#,
            r#"{"messageType":"ack","updates":[{"channelID":"c","version":"v","code":65536}]}"#,
            r#"{"messageType":"ack","updates":[{"channelID":"c","version":"v"},]}"#,
            r#"{"messageType":"ack","updates":[{"channelID":"c","version":"v"}{"channelID":"c","version":"w"}]}"#,
            "{\"messageType\":\"ack\",\"updates\":[{\"channelID\":\"c\u{1}\",\"version\":\"v\"}]}",
            r#"{"messageType":"ack","updates":[{"channelID":"c","version":"v"}]}x"#,
            r#"{"messageType":"ack","updates":[{"channelID":"c","version":"v"}]"#,
            r#"{"messageType":"nack","version":"v"}"#,
        ] {
            assert!(ack_versions(text).is_none(), "{text}");
        }
        assert!(parsed_versions(
            "{\"messageType\":\"ack\",\"updates\":[{\"channelID\":\"c\u{1}\",\"version\":\"v\"}]}"
        )
        .is_none());
    }

    #[test]
    fn device_messages_write_the_wire_names() {
        let hello = DeviceMessage::Hello {
            uaid: Some("u".into()),
            channel_ids: Some(vec!["c".into()]),
            use_webpush: Some(true),
        };
        assert_eq!(
            hello.to_text(),
            r#"{"messageType":"hello","uaid":"u","channelIDs":["c"],"use_webpush":true}"#
        );
        let update = [AckUpdate {
            channel_id: "c".into(),
            version: "v".into(),
            code: None,
        }];
        let ack = DeviceMessage::Ack {
            updates: Cow::Borrowed(&update),
        };
        assert_eq!(
            ack.to_text(),
            r#"{"messageType":"ack","updates":[{"channelID":"c","version":"v"}]}"#
        );
        assert_eq!(DeviceMessage::Ping.to_text(), "{}");
        for m in [
            hello,
            ack,
            DeviceMessage::Register {
                channel_id: "c".into(),
                key: None,
            },
            DeviceMessage::Unregister {
                channel_id: "c".into(),
                code: Some(200),
            },
            DeviceMessage::Nack {
                version: "v".into(),
                code: None,
            },
            DeviceMessage::BroadcastSubscribe,
            DeviceMessage::Ping,
        ] {
            // (`DeviceMessage` is invariant in its lifetime: compare texts.)
            let text = m.to_text();
            assert_eq!(DeviceMessage::parse(&text).unwrap().to_text(), text);
        }
    }

    #[test]
    fn server_messages() {
        let hello = ServerMessage::parse(
            r#"{"broadcasts":{},"messageType":"hello","status":200,"uaid":"u","use_webpush":true}"#,
        )
        .unwrap();
        assert_eq!(
            hello,
            ServerMessage::Hello {
                uaid: "u".into(),
                status: STATUS_OK,
                use_webpush: Some(true),
                broadcasts: Map::new(),
            }
        );
        assert_eq!(
            hello.to_text(),
            r#"{"messageType":"hello","uaid":"u","status":200,"use_webpush":true,"broadcasts":{}}"#
        );
        let refused =
            ServerMessage::parse(r#"{"messageType":"register","channelID":"c","status":429}"#)
                .unwrap();
        assert!(matches!(
            refused,
            ServerMessage::Register {
                status: 429,
                push_endpoint: None,
                ..
            }
        ));
        let n = Notification {
            channel_id: "c".into(),
            version: "v".into(),
            data: Some("QUJD".into()),
            headers: Some(NotificationHeaders {
                encoding: Some("aesgcm".into()),
                encryption: Some("salt=x".into()),
                crypto_key: Some("dh=y".into()),
                content_type: None,
            }),
        };
        let text = ServerMessage::Notification(n.clone()).to_text();
        assert_eq!(
            text,
            r#"{"messageType":"notification","channelID":"c","version":"v","data":"QUJD","headers":{"encoding":"aesgcm","encryption":"salt=x","crypto_key":"dh=y"}}"#
        );
        assert_eq!(
            ServerMessage::parse(&text).unwrap(),
            ServerMessage::Notification(n)
        );
        assert_eq!(ServerMessage::parse("{}").unwrap(), ServerMessage::Ping);
        assert_eq!(
            ServerMessage::parse(r#"{"messageType":"broadcast","broadcasts":{}}"#).unwrap(),
            ServerMessage::Other
        );
        assert_eq!(ServerMessage::Ping.to_text(), "{}");
        assert!(ServerMessage::parse(r#"{"messageType":"notification","version":"v"}"#).is_err());
    }
}
