//! A push request as a whole: the one validation both the edge and the
//! origin run on a push to a subscription (docs/protocol.md §3) or to a list (§4).

use crate::ece::{Aes128gcmHeader, EceError};
use crate::headers::{name, AesgcmParams, ContentEncoding, HeaderError, Topic, Ttl, Urgency};
use crate::jwe::{self, CompactJwe, CompactTemplate, JsonJwe, JsonTemplate, JweError};
use crate::problem::{errno, ProblemSource};
use crate::vapid::{Claims, Credentials, VapidError};
use crate::Limits;

/// The header fields of a push request that the rules read, as values of
/// type `T`; absent is `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushFields<T> {
    /// `TTL`.
    pub ttl: Option<T>,
    /// `Urgency`.
    pub urgency: Option<T>,
    /// `Topic`.
    pub topic: Option<T>,
    /// `Content-Encoding`.
    pub content_encoding: Option<T>,
    /// `Content-Type`.
    pub content_type: Option<T>,
    /// `Encryption` (aesgcm).
    pub encryption: Option<T>,
    /// `Crypto-Key` (aesgcm `dh=`, pre-RFC VAPID `p256ecdsa=`).
    pub crypto_key: Option<T>,
    /// `Authorization`.
    pub authorization: Option<T>,
}

/// The header fields as the push rules take them, borrowed from a request.
pub type PushHeaders<'a> = PushFields<&'a str>;

impl<T> PushFields<T> {
    /// Reads each field through `get`, which looks a field up by its
    /// lower-case name (from [`crate::headers::name`]).
    pub fn read(mut get: impl FnMut(&'static str) -> Option<T>) -> PushFields<T> {
        match Self::try_read(|n| Ok::<_, std::convert::Infallible>(get(n))) {
            Ok(f) => f,
            Err(never) => match never {},
        }
    }

    /// [`PushFields::read`] through a lookup that may fail; the first error.
    pub fn try_read<E>(
        mut get: impl FnMut(&'static str) -> Result<Option<T>, E>,
    ) -> Result<PushFields<T>, E> {
        Ok(PushFields {
            ttl: get(name::TTL)?,
            urgency: get(name::URGENCY)?,
            topic: get(name::TOPIC)?,
            content_encoding: get(name::CONTENT_ENCODING)?,
            content_type: get(name::CONTENT_TYPE)?,
            encryption: get(name::ENCRYPTION)?,
            crypto_key: get(name::CRYPTO_KEY)?,
            authorization: get(name::AUTHORIZATION)?,
        })
    }
}

impl PushFields<String> {
    /// Reads owned fields through a lookup that joins a field's repeated
    /// values (as the edge's platform does), each checked by
    /// [`crate::headers::field_text`]'s rule for their text.
    pub fn read_text(header: impl Fn(&str) -> Option<String>) -> Result<Self, HeaderError> {
        Self::try_read(|name| {
            let value = header(name);
            if let Some(v) = &value {
                crate::headers::field_text(name, [v.as_bytes()])?;
            }
            Ok(value)
        })
    }

    /// The fields borrowed, as the push rules take them.
    pub fn as_headers(&self) -> PushHeaders<'_> {
        fn f(v: &Option<String>) -> Option<&str> {
            v.as_deref()
        }
        PushFields {
            ttl: f(&self.ttl),
            urgency: f(&self.urgency),
            topic: f(&self.topic),
            content_encoding: f(&self.content_encoding),
            content_type: f(&self.content_type),
            encryption: f(&self.encryption),
            crypto_key: f(&self.crypto_key),
            authorization: f(&self.authorization),
        }
    }
}

/// What is wrong with a push request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// A header field.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The aes128gcm body.
    #[error(transparent)]
    Ece(#[from] EceError),
    /// The JWE body.
    #[error(transparent)]
    Jwe(#[from] JweError),
    /// VAPID.
    #[error(transparent)]
    Vapid(#[from] VapidError),
    /// The body is over the limit.
    #[error("the message body is {len} bytes; at most {max} are accepted")]
    TooLarge {
        /// Body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list push body that is neither empty nor a JWE.
    #[error("a list push carries no body or a JWE (Content-Type application/jose or application/jose+json): one ciphertext cannot be read by devices that share no key")]
    NotJwe,
}

impl ProblemSource for PushError {
    fn status(&self) -> u16 {
        match self {
            PushError::Header(e) => e.status(),
            PushError::Ece(e) => e.status(),
            PushError::Jwe(e) => e.status(),
            PushError::Vapid(e) => e.status(),
            PushError::TooLarge { .. } => 413,
            PushError::NotJwe => 415,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            PushError::Header(e) => e.kind(),
            PushError::Ece(e) => e.kind(),
            PushError::Jwe(e) => e.kind(),
            PushError::Vapid(e) => e.kind(),
            PushError::TooLarge { .. } => "payload-too-large",
            PushError::NotJwe => "list-push-not-jwe",
        }
    }
    fn title(&self) -> &'static str {
        match self {
            PushError::Header(e) => e.title(),
            PushError::Ece(e) => e.title(),
            PushError::Jwe(e) => e.title(),
            PushError::Vapid(e) => e.title(),
            PushError::TooLarge { .. } => "Payload too large",
            PushError::NotJwe => "List push body must be a JWE",
        }
    }
    fn errno(&self) -> Option<u16> {
        match self {
            PushError::Header(e) => e.errno(),
            PushError::Ece(e) => e.errno(),
            PushError::Jwe(e) => e.errno(),
            PushError::Vapid(e) => e.errno(),
            PushError::TooLarge { .. } => Some(errno::PAYLOAD_TOO_LARGE),
            PushError::NotJwe => Some(errno::INVALID_CRYPTO),
        }
    }
}

/// How a single push's body is encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// No body.
    Empty,
    /// `Content-Encoding: aes128gcm`.
    Aes128gcm,
    /// `Content-Encoding: aesgcm`, with its key parameters for the device.
    Aesgcm(AesgcmParams),
    /// A compact JWE (`application/jose`).
    JweCompact,
    /// A JSON JWE (`application/jose+json`).
    JweJson,
}

/// A list push's body, as the shared parts of every member's copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListPayload {
    /// No body: every member gets an empty message.
    Empty,
    /// Compact JWE with an empty key part.
    Compact(CompactTemplate),
    /// JSON JWE whose recipients each member's copy replaces.
    Json(JsonTemplate),
}

/// The checked metadata of a push request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushMeta {
    /// Time to live, clamped.
    pub ttl: Ttl,
    /// Urgency.
    pub urgency: Urgency,
    /// Topic.
    pub topic: Option<Topic>,
    /// VAPID credentials, parsed but not verified (see [`PushMeta::verify_vapid`]).
    pub vapid: Option<Credentials>,
}

impl PushMeta {
    /// Checks the header fields common to single and list pushes, and the body size.
    fn parse(h: &PushHeaders, body_len: usize, limits: &Limits) -> Result<PushMeta, PushError> {
        if body_len > limits.max_message_bytes {
            return Err(PushError::TooLarge {
                len: body_len,
                max: limits.max_message_bytes,
            });
        }
        Ok(PushMeta {
            ttl: Ttl::parse(h.ttl, limits.max_ttl_secs)?,
            urgency: Urgency::parse(h.urgency)?,
            topic: Topic::parse(h.topic)?,
            vapid: Credentials::parse(h.authorization, h.crypto_key, limits)?,
        })
    }

    /// Verifies the VAPID token, if any, for a resource of origin `audience`.
    pub fn verify_vapid(
        &self,
        audience: &str,
        now: u64,
        limits: &Limits,
    ) -> Result<Option<Claims>, VapidError> {
        self.vapid
            .as_ref()
            .map(|c| c.verify(audience, now, limits))
            .transpose()
    }
}

/// The JOSE serialization a `Content-Type` names, if any.
fn jose_form(content_type: Option<&str>) -> Option<bool> {
    let media = content_type?.split(';').next()?.trim();
    if media.eq_ignore_ascii_case(jwe::CONTENT_TYPE_COMPACT) {
        Some(false)
    } else if media.eq_ignore_ascii_case(jwe::CONTENT_TYPE_JSON) {
        Some(true)
    } else {
        None
    }
}

/// Validates a push to one subscription: headers, body size and framing, and
/// the form of the VAPID credentials. The token itself is verified by
/// [`PushMeta::verify_vapid`].
pub fn validate_push(
    h: &PushHeaders,
    body: &[u8],
    limits: &Limits,
) -> Result<(PushMeta, Payload), PushError> {
    let meta = PushMeta::parse(h, body.len(), limits)?;
    let payload = if body.is_empty() {
        Payload::Empty
    } else {
        match ContentEncoding::parse(h.content_encoding)? {
            Some(ContentEncoding::Aes128gcm) => {
                Aes128gcmHeader::parse_webpush(body)?;
                Payload::Aes128gcm
            }
            Some(ContentEncoding::Aesgcm) => Payload::Aesgcm(AesgcmParams::parse(
                h.encryption,
                h.crypto_key,
                limits.max_auth_header_bytes,
            )?),
            None => match jose_form(h.content_type) {
                Some(false) => {
                    CompactJwe::parse(body, false)?;
                    Payload::JweCompact
                }
                Some(true) => {
                    JsonJwe::parse(body, false)?;
                    Payload::JweJson
                }
                None => return Err(HeaderError::MissingEncoding.into()),
            },
        }
    };
    Ok((meta, payload))
}

/// Validates a push to a list: the same header rules and limits, and a body
/// that is empty or a JWE ready for the per-member transforms.
pub fn validate_list_push(
    h: &PushHeaders,
    body: &[u8],
    limits: &Limits,
) -> Result<(PushMeta, ListPayload), PushError> {
    let meta = PushMeta::parse(h, body.len(), limits)?;
    if body.is_empty() {
        return Ok((meta, ListPayload::Empty));
    }
    if h.content_encoding.is_some_and(|c| !c.trim().is_empty()) {
        return Err(PushError::NotJwe);
    }
    let payload = match jose_form(h.content_type) {
        Some(false) => ListPayload::Compact(CompactTemplate::parse(body)?),
        Some(true) => ListPayload::Json(JsonTemplate::parse(body)?),
        None => return Err(PushError::NotJwe),
    };
    Ok((meta, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::b64;

    fn aes128gcm_body(len: usize) -> Vec<u8> {
        let mut b = vec![1u8; 16];
        b.extend_from_slice(&4096u32.to_be_bytes());
        b.push(65);
        b.push(4);
        b.resize(len, 0);
        b
    }

    fn headers<'a>() -> PushHeaders<'a> {
        PushHeaders {
            ttl: Some("60"),
            content_encoding: Some("aes128gcm"),
            ..Default::default()
        }
    }

    #[test]
    fn single_push() {
        let l = Limits::default();
        let (meta, p) = validate_push(&headers(), &aes128gcm_body(200), &l).unwrap();
        assert_eq!((meta.ttl, p), (Ttl(60), Payload::Aes128gcm));
        let (_, p) = validate_push(
            &PushHeaders {
                ttl: Some("0"),
                ..Default::default()
            },
            b"",
            &l,
        )
        .unwrap();
        assert_eq!(p, Payload::Empty);
        let e =
            validate_push(&headers(), &aes128gcm_body(l.max_message_bytes + 1), &l).unwrap_err();
        assert_eq!((e.status(), e.errno()), (413, Some(104)));
        let plain = PushHeaders {
            ttl: Some("60"),
            ..Default::default()
        };
        let e = validate_push(&plain, b"hello", &l).unwrap_err();
        assert_eq!(e, PushError::Header(HeaderError::MissingEncoding));
        assert_eq!(e.status(), 400);
        let no_ttl = PushHeaders {
            ttl: None,
            ..headers()
        };
        assert_eq!(
            validate_push(&no_ttl, &aes128gcm_body(200), &l)
                .unwrap_err()
                .errno(),
            Some(111)
        );
    }

    #[test]
    fn fields_are_read_by_name() {
        let get = |n: &'static str| match n {
            name::TTL => Some("60"),
            name::CRYPTO_KEY => Some("dh=x"),
            _ => None,
        };
        let h = PushHeaders::read(get);
        assert_eq!(
            h,
            PushHeaders {
                ttl: Some("60"),
                crypto_key: Some("dh=x"),
                ..Default::default()
            }
        );
        let mut asked = Vec::new();
        let r: Result<PushFields<String>, &str> = PushFields::try_read(|n| {
            asked.push(n);
            if n == name::TOPIC {
                Err(n)
            } else {
                Ok(get(n).map(String::from))
            }
        });
        assert_eq!(r, Err(name::TOPIC));
        assert_eq!(
            asked,
            [name::TTL, name::URGENCY, name::TOPIC],
            "the first error ends the reading"
        );
        let all = PushFields::read(Some);
        let names = [
            all.ttl,
            all.urgency,
            all.topic,
            all.content_encoding,
            all.content_type,
            all.encryption,
            all.crypto_key,
            all.authorization,
        ];
        assert_eq!(names.map(Option::unwrap), crate::headers::READ_FIELDS[..8]);
    }

    #[test]
    fn list_push_needs_jwe() {
        let l = Limits::default();
        let e = validate_list_push(&headers(), &aes128gcm_body(200), &l).unwrap_err();
        assert_eq!(e.status(), 415);
        let h = PushHeaders {
            ttl: Some("60"),
            content_type: Some("application/jose"),
            ..Default::default()
        };
        let body = format!(
            "{}..{}.{}.{}",
            b64::encode(br#"{"alg":"A128KW","enc":"A128GCM"}"#),
            b64::encode(&[0; 12]),
            b64::encode(&[0; 64]),
            b64::encode(&[0; 16])
        );
        let (_, p) = validate_list_push(&h, body.as_bytes(), &l).unwrap();
        assert!(matches!(p, ListPayload::Compact(_)));
        let (_, p) = validate_list_push(&h, b"", &l).unwrap();
        assert_eq!(p, ListPayload::Empty);
    }
}
