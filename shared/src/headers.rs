//! Push request header fields: `TTL`, `Urgency`, `Topic`, the content codings
//! and the key parameters of the older `aesgcm` coding.

use crate::problem::{errno, ProblemSource};
use std::fmt;

/// What is wrong with a push request's header fields.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// `TTL` is required on every push (RFC 8030 §5.2).
    #[error("the TTL header is required")]
    MissingTtl,
    /// `TTL` is not a number of seconds.
    #[error("TTL must be a whole number of seconds, not {0:?}")]
    InvalidTtl(String),
    /// `Urgency` is not one of the four values.
    #[error("Urgency must be very-low, low, normal or high, not {0:?}")]
    InvalidUrgency(String),
    /// `Topic` is empty, too long or outside the base64url alphabet.
    #[error("Topic must be 1 to 32 characters of the base64url alphabet, not {0:?}")]
    InvalidTopic(String),
    /// The body has a content coding this service does not know.
    #[error("Content-Encoding {0:?} is not supported; use aes128gcm (or JWE by Content-Type)")]
    UnsupportedEncoding(String),
    /// A body with no content coding and no JWE content type.
    #[error("a message body must be encrypted: send Content-Encoding: aes128gcm, or a JWE with Content-Type application/jose or application/jose+json")]
    MissingEncoding,
    /// `aesgcm` needs `Encryption: salt=…`.
    #[error("Content-Encoding aesgcm requires an Encryption header with a base64url salt")]
    MissingSalt,
    /// An `aesgcm` `Crypto-Key` needs `dh=…`.
    #[error("a Crypto-Key header with Content-Encoding aesgcm requires dh= (the sender's public key, base64url)")]
    MissingDh,
    /// A key parameter is malformed.
    #[error("{0}")]
    InvalidKeyParam(&'static str),
    /// An `aesgcm` key header is longer than `max_auth_header_bytes`: it is
    /// stored with every message, so it may not grow a message past its limit.
    #[error("the {0} header may be at most {1} bytes")]
    KeyHeaderTooLong(&'static str, usize),
    /// A field the service reads has bytes outside visible ASCII.
    #[error("the {0} header must be visible ASCII text")]
    NotText(&'static str),
}

pub mod name {
    //! The names of the header fields the service reads (and some it writes),
    //! in lower case, as HTTP/2 carries them; lookups are case-insensitive.

    /// `TTL` (RFC 8030 §5.2).
    pub const TTL: &str = "ttl";
    /// `Urgency` (RFC 8030 §5.3).
    pub const URGENCY: &str = "urgency";
    /// `Topic` (RFC 8030 §5.4).
    pub const TOPIC: &str = "topic";
    /// `Content-Encoding`.
    pub const CONTENT_ENCODING: &str = "content-encoding";
    /// `Content-Type`.
    pub const CONTENT_TYPE: &str = "content-type";
    /// `Encryption` (aesgcm).
    pub const ENCRYPTION: &str = "encryption";
    /// `Crypto-Key` (aesgcm, pre-RFC VAPID).
    pub const CRYPTO_KEY: &str = "crypto-key";
    /// `Authorization` (VAPID).
    pub const AUTHORIZATION: &str = "authorization";
    /// `Push-Receipt` (RFC 8030 §5.1).
    pub const PUSH_RECEIPT: &str = "push-receipt";
    /// `Prefer` (`respond-async`, RFC 8030 §5.1).
    pub const PREFER: &str = "prefer";
}

/// The request header fields the application API reads (see [`field_text`]).
pub const READ_FIELDS: [&str; 10] = [
    name::TTL,
    name::URGENCY,
    name::TOPIC,
    name::CONTENT_ENCODING,
    name::CONTENT_TYPE,
    name::ENCRYPTION,
    name::CRYPTO_KEY,
    name::AUTHORIZATION,
    name::PUSH_RECEIPT,
    name::PREFER,
];

impl ProblemSource for HeaderError {
    fn status(&self) -> u16 {
        match self {
            HeaderError::UnsupportedEncoding(_) => 415,
            _ => 400,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            HeaderError::MissingTtl => "missing-ttl",
            HeaderError::InvalidTtl(_) => "invalid-ttl",
            HeaderError::InvalidUrgency(_) => "invalid-urgency",
            HeaderError::InvalidTopic(_) => "invalid-topic",
            HeaderError::UnsupportedEncoding(_) => "unsupported-encoding",
            HeaderError::MissingEncoding => "missing-encoding",
            HeaderError::MissingSalt | HeaderError::MissingDh => "missing-crypto-key",
            HeaderError::InvalidKeyParam(_) | HeaderError::KeyHeaderTooLong(..) => {
                "invalid-crypto-key"
            }
            HeaderError::NotText(_) => "header-not-text",
        }
    }
    fn title(&self) -> &'static str {
        match self {
            HeaderError::MissingTtl => "Missing TTL",
            HeaderError::InvalidTtl(_) => "Invalid TTL",
            HeaderError::InvalidUrgency(_) => "Invalid Urgency",
            HeaderError::InvalidTopic(_) => "Invalid Topic",
            HeaderError::UnsupportedEncoding(_) => "Unsupported content coding",
            HeaderError::MissingEncoding => "Unencrypted message body",
            HeaderError::MissingSalt | HeaderError::MissingDh => "Missing encryption keys",
            HeaderError::InvalidKeyParam(_) | HeaderError::KeyHeaderTooLong(..) => {
                "Invalid encryption keys"
            }
            HeaderError::NotText(_) => "Header not ASCII text",
        }
    }
    fn errno(&self) -> Option<u16> {
        Some(match self {
            HeaderError::MissingTtl => errno::MISSING_HEADER,
            HeaderError::InvalidTtl(_) => errno::INVALID_TTL,
            HeaderError::InvalidTopic(_) => errno::INVALID_TOPIC,
            HeaderError::MissingSalt | HeaderError::MissingDh => errno::MISSING_CRYPTO_KEYS,
            HeaderError::InvalidUrgency(_) | HeaderError::NotText(_) => return None,
            _ => errno::INVALID_CRYPTO,
        })
    }
}

/// A field the service reads, as its rules read it, from its raw values:
/// `None` if absent; repeated values joined by ", " (RFC 9110 §5.3, as the
/// edge's platform joins them); visible ASCII text only (tab allowed), or
/// [`HeaderError::NotText`]. Borrowed unless values were joined.
pub fn field_text<'a>(
    name: &'static str,
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<std::borrow::Cow<'a, str>>, HeaderError> {
    let text = |v: &'a [u8]| {
        v.iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
            .then(|| std::str::from_utf8(v).ok())
            .flatten()
            .ok_or(HeaderError::NotText(name))
    };
    let mut values = values.into_iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let first = text(first)?;
    let Some(second) = values.next() else {
        return Ok(Some(first.into()));
    };
    let mut joined = String::from(first);
    for v in std::iter::once(second).chain(values) {
        joined.push_str(", ");
        joined.push_str(text(v)?);
    }
    Ok(Some(joined.into()))
}

/// Shortens a header value quoted back in an error message.
fn quote(v: &str) -> String {
    v.chars().take(64).collect()
}

/// A message's time to live in seconds, after clamping to the configured maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ttl(pub u32);

impl Ttl {
    /// Parses a `TTL` field (RFC 8030 §5.2): required, delta-seconds, lowered to `max`.
    pub fn parse(value: Option<&str>, max: u32) -> Result<Ttl, HeaderError> {
        let v = value.ok_or(HeaderError::MissingTtl)?.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HeaderError::InvalidTtl(quote(v)));
        }
        // delta-seconds too large for u32 saturates (RFC 9111 §1.2.2), then clamps.
        let secs = v.parse::<u32>().unwrap_or(u32::MAX);
        Ok(Ttl(secs.min(max)))
    }
}

/// How urgent a message is (RFC 8030 §5.3); ordered from least to most urgent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Urgency {
    /// On power and Wi-Fi.
    VeryLow,
    /// On either power or Wi-Fi.
    Low,
    /// Neither power nor Wi-Fi needed (the default).
    #[default]
    Normal,
    /// Even on low battery.
    High,
}

impl Urgency {
    /// Parses an `Urgency` field; absent means `normal`.
    pub fn parse(value: Option<&str>) -> Result<Urgency, HeaderError> {
        let Some(v) = value else {
            return Ok(Urgency::Normal);
        };
        let v = v.trim();
        [
            Urgency::VeryLow,
            Urgency::Low,
            Urgency::Normal,
            Urgency::High,
        ]
        .into_iter()
        .find(|u| u.as_str().eq_ignore_ascii_case(v))
        .ok_or_else(|| HeaderError::InvalidUrgency(quote(v)))
    }

    /// The field value.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

impl fmt::Display for Urgency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest `Topic` (RFC 8030 §5.4).
pub const MAX_TOPIC_LEN: usize = 32;

/// A message's topic: a newer message replaces an undelivered one with the same topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Topic(String);

impl Topic {
    /// Parses an optional `Topic` field.
    pub fn parse(value: Option<&str>) -> Result<Option<Topic>, HeaderError> {
        let Some(v) = value else { return Ok(None) };
        let v = v.trim();
        let ok = !v.is_empty() && v.len() <= MAX_TOPIC_LEN && crate::b64::is_alphabet(v);
        if ok {
            Ok(Some(Topic(v.to_owned())))
        } else {
            Err(HeaderError::InvalidTopic(quote(v)))
        }
    }

    /// The topic text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `Content-Encoding` of a push message body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentEncoding {
    /// RFC 8188 / RFC 8291.
    Aes128gcm,
    /// The draft coding older application servers still send.
    Aesgcm,
}

impl ContentEncoding {
    /// Parses a `Content-Encoding` field; absent is `None`.
    pub fn parse(value: Option<&str>) -> Result<Option<ContentEncoding>, HeaderError> {
        let Some(v) = value else { return Ok(None) };
        let v = v.trim();
        if v.eq_ignore_ascii_case("aes128gcm") {
            Ok(Some(ContentEncoding::Aes128gcm))
        } else if v.eq_ignore_ascii_case("aesgcm") {
            Ok(Some(ContentEncoding::Aesgcm))
        } else {
            Err(HeaderError::UnsupportedEncoding(quote(v)))
        }
    }

    /// The field value.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentEncoding::Aes128gcm => "aes128gcm",
            ContentEncoding::Aesgcm => "aesgcm",
        }
    }
}

/// Finds parameter `name` in a field of `name=value` pairs separated by `;` or `,`
/// (`Encryption`, `Crypto-Key`); quotes around the value are removed.
pub fn param<'a>(field: &'a str, name: &str) -> Option<&'a str> {
    field.split([';', ',']).find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The value of preference `name` in a `Prefer` field (RFC 7240: comma-
/// separated preferences, each `token[=value]` with `;` parameters), case
/// insensitive: `Some("")` if it is given without a value, `None` if absent.
pub fn preference<'a>(field: Option<&'a str>, name: &str) -> Option<&'a str> {
    field?.split(',').find_map(|p| {
        let pref = p.split(';').next().unwrap_or("").trim();
        let (k, v) = pref.split_once('=').unwrap_or((pref, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The key parameters of an `aesgcm` message, checked, as the device needs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AesgcmParams {
    /// The `Encryption` field value, passed to the device unchanged.
    pub encryption: String,
    /// The `Crypto-Key` field value, passed to the device unchanged.
    pub crypto_key: String,
}

/// Whether `v` is base64url, padding tolerated: what Mozilla's push service
/// asks of `aesgcm`'s key parameters (their lengths are the device's concern).
fn base64url_padded(v: &str) -> bool {
    let data = v.trim_end_matches('=');
    !data.is_empty() && crate::b64::is_alphabet(data)
}

impl AesgcmParams {
    /// Checks what Mozilla's push service checks of the legacy coding, no
    /// more: `Encryption` has a `salt`, and `Crypto-Key`, if present, a
    /// `dh`, each base64url (padding tolerated); each header at most `max`
    /// bytes. Whether they decrypt is for the device to find out (it says
    /// so in its acknowledgement). Without `Crypto-Key`, `crypto_key` is
    /// empty and is not passed on.
    pub fn parse(
        encryption: Option<&str>,
        crypto_key: Option<&str>,
        max: usize,
    ) -> Result<AesgcmParams, HeaderError> {
        for (name, v) in [("Encryption", encryption), ("Crypto-Key", crypto_key)] {
            if v.is_some_and(|v| v.len() > max) {
                return Err(HeaderError::KeyHeaderTooLong(name, max));
            }
        }
        let encryption = encryption.ok_or(HeaderError::MissingSalt)?;
        let salt = param(encryption, "salt").ok_or(HeaderError::MissingSalt)?;
        if !base64url_padded(salt) {
            return Err(HeaderError::InvalidKeyParam(
                "the Encryption header's salt must be base64url",
            ));
        }
        if let Some(crypto_key) = crypto_key {
            let dh = param(crypto_key, "dh").ok_or(HeaderError::MissingDh)?;
            if !base64url_padded(dh) {
                return Err(HeaderError::InvalidKeyParam(
                    "the Crypto-Key header's dh must be base64url",
                ));
            }
        }
        Ok(AesgcmParams {
            encryption: encryption.trim().to_owned(),
            crypto_key: crypto_key.unwrap_or_default().trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences() {
        let f = Some("Respond-Async, wait=0; x=1");
        assert_eq!(preference(f, "respond-async"), Some(""));
        assert_eq!(preference(f, "wait"), Some("0"));
        assert_eq!(preference(Some("wait = \"10\""), "wait"), Some("10"));
        assert_eq!(preference(Some("respond-asyncx"), "respond-async"), None);
        assert_eq!(preference(Some("handling=lenient"), "wait"), None);
        assert_eq!(preference(None, "wait"), None);
    }

    #[test]
    fn fields_are_joined_text() {
        use std::borrow::Cow;
        assert_eq!(field_text("ttl", []), Ok(None));
        let one = field_text("ttl", [&b"60"[..]]).unwrap().unwrap();
        assert!(matches!(one, Cow::Borrowed("60")));
        let two = field_text("ttl", [&b"60"[..], b"60"]).unwrap().unwrap();
        assert_eq!(two, "60, 60");
        assert_eq!(
            field_text("topic", ["t\u{e9}st".as_bytes()]),
            Err(HeaderError::NotText("topic"))
        );
        assert_eq!(
            field_text("ttl", [&b"60"[..], b"6\x7f"]),
            Err(HeaderError::NotText("ttl"))
        );
    }

    #[test]
    fn ttl() {
        assert_eq!(Ttl::parse(Some("60"), 100), Ok(Ttl(60)));
        assert_eq!(Ttl::parse(Some(" 0 "), 100), Ok(Ttl(0)));
        assert_eq!(Ttl::parse(Some("1000"), 100), Ok(Ttl(100)));
        assert_eq!(Ttl::parse(Some("99999999999999999999"), 100), Ok(Ttl(100)));
        assert_eq!(Ttl::parse(None, 100), Err(HeaderError::MissingTtl));
        for bad in ["", "-1", "1.5", "abc", "+3", "0x10"] {
            assert!(matches!(
                Ttl::parse(Some(bad), 100),
                Err(HeaderError::InvalidTtl(_))
            ));
        }
    }

    #[test]
    fn urgency() {
        assert_eq!(Urgency::parse(None), Ok(Urgency::Normal));
        assert_eq!(Urgency::parse(Some("very-low")), Ok(Urgency::VeryLow));
        assert_eq!(Urgency::parse(Some("HIGH")), Ok(Urgency::High));
        assert!(Urgency::parse(Some("urgent")).is_err());
        assert!(Urgency::VeryLow < Urgency::Low && Urgency::Normal < Urgency::High);
    }

    #[test]
    fn topic() {
        assert_eq!(Topic::parse(None), Ok(None));
        assert_eq!(
            Topic::parse(Some("upd-ate_1")).unwrap().unwrap().as_str(),
            "upd-ate_1"
        );
        assert!(Topic::parse(Some(&"a".repeat(32))).is_ok());
        assert!(Topic::parse(Some(&"a".repeat(33))).is_err());
        assert!(Topic::parse(Some("")).is_err());
        assert!(Topic::parse(Some("a b")).is_err());
        assert!(Topic::parse(Some("a=")).is_err());
    }

    #[test]
    fn encodings() {
        assert_eq!(
            ContentEncoding::parse(Some("AES128GCM")),
            Ok(Some(ContentEncoding::Aes128gcm))
        );
        assert_eq!(ContentEncoding::parse(None), Ok(None));
        let e = ContentEncoding::parse(Some("gzip")).unwrap_err();
        assert_eq!(e.status(), 415);
    }

    #[test]
    fn aesgcm_params() {
        let dh = crate::b64::encode(&[4u8; 65]);
        let salt = crate::b64::encode(&[7u8; 16]);
        let ck = format!("dh={dh};p256ecdsa=abc");
        let enc = format!("salt={salt}");
        let p = AesgcmParams::parse(Some(&enc), Some(&ck), 4096).unwrap();
        assert_eq!(p.crypto_key, ck);
        assert_eq!(
            AesgcmParams::parse(None, Some(&ck), 4096),
            Err(HeaderError::MissingSalt)
        );
        assert_eq!(
            AesgcmParams::parse(Some(&enc), Some("p256ecdsa=abc"), 4096),
            Err(HeaderError::MissingDh)
        );
        // What Mozilla's service takes: any length, padding, quotes, a
        // dh that is not a point, rs unchecked, no Crypto-Key at all.
        for (enc, ck) in [
            ("salt=AAAA", Some(ck.as_str())),
            ("salt=\"AAAA==\"; rs=1", Some("dh=BBBB=")),
            (enc.as_str(), Some("keyid=p256dh;dh=BQUF,p256ecdsa=x")),
            (enc.as_str(), None),
        ] {
            let p = AesgcmParams::parse(Some(enc), ck, 4096).unwrap();
            assert_eq!(p.crypto_key, ck.unwrap_or_default());
        }
        // What it refuses: no salt value, or characters outside base64url.
        for (enc, ck) in [
            ("salt=", Some(ck.as_str())),
            ("salt=a+b/", Some(ck.as_str())),
            ("salt==", Some(ck.as_str())),
            (enc.as_str(), Some("dh=a b")),
            (enc.as_str(), Some("dh=")),
        ] {
            assert!(
                matches!(
                    AesgcmParams::parse(Some(enc), ck, 4096),
                    Err(HeaderError::InvalidKeyParam(_))
                ),
                "{enc} {ck:?}"
            );
        }
        let long = format!("{enc};x={}", "a".repeat(100));
        assert_eq!(
            AesgcmParams::parse(Some(&long), Some(&ck), 100),
            Err(HeaderError::KeyHeaderTooLong("Encryption", 100))
        );
        assert_eq!(
            AesgcmParams::parse(Some(&enc), Some(&ck), ck.len() - 1),
            Err(HeaderError::KeyHeaderTooLong("Crypto-Key", ck.len() - 1))
        );
        assert_eq!(param("a=1, b=\"2\"", "B"), Some("2"));
    }
}
