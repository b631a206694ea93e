//! The list document `application/push-aggregation+json` (the aggregate
//! draft §2.2) and JSON merge patches (RFC 7396) applied to it.
//!
//! A document is a JSON object whose keys are push resource URIs and whose
//! values hold a member's optional `expires`, `encrypted_key` and `header`.
//! Parsing streams the object (a million members are never held as a JSON
//! tree), checks each member on its own, and reports the bad ones by URI so
//! that a `PATCH` can apply the rest.

use crate::b64;
use crate::jwe;
use crate::problem::{errno, ProblemSource};
use crate::Limits;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::io::Read;

/// Media type of a list document.
pub const CONTENT_TYPE: &str = "application/push-aggregation+json";
/// Media type of a merge patch to a list.
pub const MERGE_PATCH_CONTENT_TYPE: &str = "application/merge-patch+json";

/// What is wrong with a list request as a whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// Wrong `Content-Type`.
    #[error("Content-Type must be {want}, not {got:?}")]
    ContentType {
        /// The type expected.
        want: &'static str,
        /// The type sent.
        got: String,
    },
    /// A content coding other than gzip.
    #[error("Content-Encoding {0:?} is not supported for list documents; use gzip or none")]
    Encoding(String),
    /// The gzip stream is corrupt.
    #[error("the gzip body could not be decoded")]
    Gzip,
    /// Over the size limit, sent or decoded.
    #[error("the list document is larger than {0} bytes")]
    TooLarge(usize),
    /// Not JSON, or not an object of members.
    #[error("the list document is not valid: {0}")]
    Json(String),
    /// More members than a list may hold.
    #[error("a list holds at most {0} members")]
    TooManyMembers(usize),
    /// Some members were refused; nothing was changed.
    #[error("{0} member(s) were refused; nothing was changed")]
    Rejected(usize),
}

impl ProblemSource for ListError {
    fn status(&self) -> u16 {
        match self {
            ListError::ContentType { .. } | ListError::Encoding(_) => 415,
            ListError::TooLarge(_) | ListError::TooManyMembers(_) => 413,
            ListError::Gzip | ListError::Json(_) => 400,
            ListError::Rejected(_) => 422,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            ListError::ContentType { .. } => "unsupported-media-type",
            ListError::Encoding(_) => "unsupported-encoding",
            ListError::Gzip => "invalid-gzip",
            ListError::TooLarge(_) => "list-too-large",
            ListError::Json(_) => "invalid-list-document",
            ListError::TooManyMembers(_) => "too-many-members",
            ListError::Rejected(_) => "members-rejected",
        }
    }
    fn title(&self) -> &'static str {
        match self {
            ListError::ContentType { .. } => "Unsupported media type",
            ListError::Encoding(_) => "Unsupported content coding",
            ListError::Gzip => "Corrupt gzip body",
            ListError::TooLarge(_) => "List document too large",
            ListError::Json(_) => "Invalid list document",
            ListError::TooManyMembers(_) => "Too many members",
            ListError::Rejected(_) => "Members rejected",
        }
    }
    fn errno(&self) -> Option<u16> {
        matches!(self, ListError::TooLarge(_)).then_some(errno::PAYLOAD_TOO_LARGE)
    }
}

/// Why one member was refused. The first five are found here; the rest by
/// the origin, which knows the subscriptions.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not an absolute http(s) URI, or too long.
    #[error("not a push resource URI: {0}")]
    MalformedUri(&'static str),
    /// `expires` is not RFC 3339, or has passed.
    #[error("expires: {0}")]
    BadExpires(String),
    /// `encrypted_key` is not base64url, or too long.
    #[error("encrypted_key: {0}")]
    BadEncryptedKey(String),
    /// `header` is not an acceptable JWE per-recipient header.
    #[error("header: {0}")]
    BadHeader(String),
    /// The member's value is not an object (or `null` in a patch).
    #[error("a member's value must be an object{0}")]
    NotAnObject(&'static str),
    /// The member's value is longer than [`Limits::max_member_value_bytes`].
    #[error("a member's value may be at most {0} bytes of JSON")]
    ValueTooLarge(usize),
    /// The same URI twice in one document.
    #[error("the URI appears more than once")]
    Duplicate,
    /// No such push resource here.
    #[error("no such push resource")]
    Unknown,
    /// The subscription has ended.
    #[error("the subscription has ended")]
    Gone,
    /// The subscription advertises another list registration service.
    #[error("the subscription belongs to another list registration service")]
    WrongPartition,
    /// The subscription is restricted to another VAPID key than the list's owner.
    #[error("the subscription is restricted to a VAPID key other than the list's")]
    KeyRestricted,
}

impl Rejection {
    /// A stable kebab-case name, for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::MalformedUri(_) => "malformed-uri",
            Rejection::BadExpires(_) => "bad-expires",
            Rejection::BadEncryptedKey(_) => "bad-encrypted-key",
            Rejection::BadHeader(_) => "bad-header",
            Rejection::NotAnObject(_) => "not-an-object",
            Rejection::ValueTooLarge(_) => "value-too-large",
            Rejection::Duplicate => "duplicate",
            Rejection::Unknown => "unknown",
            Rejection::Gone => "gone",
            Rejection::WrongPartition => "wrong-partition",
            Rejection::KeyRestricted => "key-restriction",
        }
    }
}

/// One refused member, by URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The member's key as sent (shortened if very long).
    pub uri: String,
    /// Why.
    pub reason: Rejection,
}

impl Rejected {
    /// The report entry: `{"uri", "reason", "detail"}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "uri": self.uri,
            "reason": self.reason.kind(),
            "detail": self.reason.to_string(),
        })
    }
}

/// Refused members a report lists one by one, at most: a document of many
/// small refused entries must not make an answer many times its size. The
/// count of all of them is given beside the report.
pub const MAX_REPORTED: usize = 1000;

/// The report of refused members (the first [`MAX_REPORTED`]), as a
/// problem's `members` value.
pub fn report(rejected: &[Rejected]) -> Value {
    Value::Array(
        rejected
            .iter()
            .take(MAX_REPORTED)
            .map(Rejected::to_json)
            .collect(),
    )
}

/// The problem answering a refused list document: the error, and the
/// refused members' report under `members` (with their number under
/// `refused`) when there are any. The edge and the origin answer with
/// exactly this.
pub fn problem(e: &ListError, rejected: &[Rejected]) -> crate::Problem {
    let p = crate::Problem::from_error(e);
    if rejected.is_empty() {
        p
    } else {
        p.with("members", report(rejected))
            .with("refused", rejected.len().into())
    }
}

/// A list member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The push resource URI.
    pub uri: String,
    /// When the member drops out, Unix seconds.
    pub expires: Option<i64>,
    /// The member's JWE Encrypted Key, base64url.
    pub encrypted_key: Option<String>,
    /// The member's per-recipient JWE header, as compact JSON text.
    pub header: Option<String>,
}

/// A change to one field in a merge patch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Field<T> {
    /// Absent: keep what the member has.
    #[default]
    Keep,
    /// `null`: remove the field.
    Clear,
    /// A new value.
    Set(T),
}

impl<T> Field<T> {
    fn apply(self, old: Option<T>) -> Option<T> {
        match self {
            Field::Keep => old,
            Field::Clear => None,
            Field::Set(v) => Some(v),
        }
    }
}

/// One entry of a merge patch to a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberPatch {
    /// `"uri": null`: the member leaves.
    Remove(String),
    /// `"uri": {…}`: the member joins, or its fields are merged (RFC 7396).
    Upsert {
        /// The push resource URI.
        uri: String,
        /// `expires` change.
        expires: Field<i64>,
        /// `encrypted_key` change.
        encrypted_key: Field<String>,
        /// `header` change: a merge patch (RFC 7396) to the member's header.
        header: Field<Value>,
    },
}

impl MemberPatch {
    /// The member's URI.
    pub fn uri(&self) -> &str {
        match self {
            MemberPatch::Remove(u) | MemberPatch::Upsert { uri: u, .. } => u,
        }
    }

    /// Applies an upsert to the member as it is (`None` if new); `Ok(None)`
    /// for a removal. The header is merged as RFC 7396 says, then checked.
    pub fn apply(self, old: Option<Member>, limits: &Limits) -> Result<Option<Member>, Rejection> {
        let MemberPatch::Upsert {
            uri,
            expires,
            encrypted_key,
            header,
        } = self
        else {
            return Ok(None);
        };
        let old = old.unwrap_or(Member {
            uri: String::new(),
            expires: None,
            encrypted_key: None,
            header: None,
        });
        let header = match header {
            Field::Keep => old.header,
            Field::Clear => None,
            Field::Set(patch) => {
                let mut target = old
                    .header
                    .as_deref()
                    .and_then(|h| serde_json::from_str(h).ok())
                    .unwrap_or(Value::Object(Default::default()));
                merge_patch(&mut target, &patch);
                match &target {
                    Value::Object(o) if o.is_empty() => None,
                    _ => Some(parse_header(&target, limits)?),
                }
            }
        };
        Ok(Some(Member {
            uri,
            expires: expires.apply(old.expires),
            encrypted_key: encrypted_key.apply(old.encrypted_key),
            header,
        }))
    }
}

/// Applies a JSON merge patch (RFC 7396 §2) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let t = target.as_object_mut().expect("an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The outcome of parsing a document or patch: accepted entries sorted by
/// URI, and the refused ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed<T> {
    /// Entries that passed every check, sorted by URI, no URI twice.
    pub accepted: Vec<T>,
    /// Entries that did not.
    pub rejected: Vec<Rejected>,
}

/// Checks the `Content-Type` of a list request (parameters ignored).
pub fn check_content_type(value: Option<&str>, want: &'static str) -> Result<(), ListError> {
    let got = value.unwrap_or("");
    let media = got.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(ListError::ContentType {
            want,
            got: got.chars().take(64).collect(),
        })
    }
}

/// Undoes the request's content coding (none or gzip) within the size limits.
pub fn decode_body<'a>(
    content_encoding: Option<&str>,
    body: &'a [u8],
    limits: &Limits,
) -> Result<Cow<'a, [u8]>, ListError> {
    if body.len() > limits.max_list_body_bytes {
        return Err(ListError::TooLarge(limits.max_list_body_bytes));
    }
    let coding = content_encoding.map(str::trim).unwrap_or("");
    if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
        if body.len() > limits.max_list_document_bytes {
            return Err(ListError::TooLarge(limits.max_list_document_bytes));
        }
        return Ok(Cow::Borrowed(body));
    }
    if !coding.eq_ignore_ascii_case("gzip") && !coding.eq_ignore_ascii_case("x-gzip") {
        return Err(ListError::Encoding(coding.chars().take(32).collect()));
    }
    let max = limits.max_list_document_bytes;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max));
    flate2::read::MultiGzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| ListError::Gzip)?;
    if out.len() > max {
        return Err(ListError::TooLarge(max));
    }
    Ok(Cow::Owned(out))
}

/// Checks that `uri` is an absolute `https:` or `http:` URI with a host and
/// a path, printable ASCII, within the length limit.
pub fn check_uri(uri: &str, limits: &Limits) -> Result<(), Rejection> {
    if uri.len() > limits.max_member_uri_bytes {
        return Err(Rejection::MalformedUri("too long"));
    }
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .ok_or(Rejection::MalformedUri(
            "it must start with https:// or http://",
        ))?;
    if !uri.bytes().all(|b| b.is_ascii_graphic()) || uri.contains(['#', '<', '>', '"', '\\']) {
        return Err(Rejection::MalformedUri(
            "it has characters a URI cannot hold",
        ));
    }
    let slash = rest
        .find('/')
        .ok_or(Rejection::MalformedUri("it has no path"))?;
    if slash == 0 || rest[..slash].contains(['@', '?']) {
        return Err(Rejection::MalformedUri("it has no host"));
    }
    Ok(())
}

/// Parses an RFC 3339 time into Unix seconds; it must lie after `now`.
fn parse_expires(text: &str, now: i64) -> Result<i64, Rejection> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| Rejection::BadExpires(format!("{text:?} is not an RFC 3339 date-time")))?
        .unix_timestamp();
    if t <= now {
        return Err(Rejection::BadExpires(format!("{text} has passed")));
    }
    Ok(t)
}

/// Formats Unix seconds as RFC 3339 (UTC).
pub fn format_expires(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn parse_key(v: &Value, limits: &Limits) -> Result<Option<String>, Rejection> {
    let Value::String(k) = v else {
        return Err(Rejection::BadEncryptedKey("must be a string".into()));
    };
    if k.len() > limits.max_encrypted_key_chars {
        return Err(Rejection::BadEncryptedKey(format!(
            "longer than {} characters",
            limits.max_encrypted_key_chars
        )));
    }
    if !b64::is_canonical(k) {
        return Err(Rejection::BadEncryptedKey("not unpadded base64url".into()));
    }
    Ok((!k.is_empty()).then(|| k.clone()))
}

fn parse_header(v: &Value, limits: &Limits) -> Result<String, Rejection> {
    jwe::member_header(v, limits.max_member_header_bytes)
        .map_err(|e| Rejection::BadHeader(e.to_string()))
}

/// Reads one field of a member object: absent, `null`, or a checked value.
fn field<T>(
    obj: &serde_json::Map<String, Value>,
    name: &str,
    parse: impl FnOnce(&Value) -> Result<T, Rejection>,
) -> Result<Field<T>, Rejection> {
    match obj.get(name) {
        None => Ok(Field::Keep),
        Some(Value::Null) => Ok(Field::Clear),
        Some(v) => parse(v).map(Field::Set),
    }
}

/// Checks one entry of a document (`patch = false`) or a patch.
fn parse_entry(
    uri: String,
    value: Value,
    patch: bool,
    now: i64,
    limits: &Limits,
) -> Result<MemberPatch, Rejected> {
    let reject = |uri: &str, reason| Rejected {
        uri: uri.chars().take(256).collect(),
        reason,
    };
    if let Err(r) = check_uri(&uri, limits) {
        return Err(reject(&uri, r));
    }
    let obj = match value {
        Value::Null if patch => return Ok(MemberPatch::Remove(uri)),
        Value::Object(o) => o,
        _ => {
            let hint = if patch { " or null" } else { "" };
            return Err(reject(&uri, Rejection::NotAnObject(hint)));
        }
    };
    let parsed = (|| {
        let expires = field(&obj, "expires", |v| match v {
            Value::String(s) => parse_expires(s, now),
            _ => Err(Rejection::BadExpires("must be an RFC 3339 string".into())),
        })?;
        let encrypted_key = match field(&obj, "encrypted_key", |v| parse_key(v, limits))? {
            Field::Set(None) => Field::Clear,
            Field::Set(Some(k)) => Field::Set(k),
            Field::Keep => Field::Keep,
            Field::Clear => Field::Clear,
        };
        let header = field(&obj, "header", |v| match v {
            Value::Object(_) => Ok(v.clone()),
            _ => Err(Rejection::BadHeader("must be a JSON object".into())),
        })?;
        Ok((expires, encrypted_key, header))
    })();
    match parsed {
        Ok((expires, encrypted_key, header)) => Ok(MemberPatch::Upsert {
            uri,
            expires,
            encrypted_key,
            header,
        }),
        Err(r) => Err(reject(&uri, r)),
    }
}

/// Streams the members of a top-level JSON object through `parse_entry`.
struct Entries<'l> {
    /// Set when the member limit stopped parsing.
    overflow: &'l std::cell::Cell<bool>,
    patch: bool,
    now: i64,
    limits: &'l Limits,
}

impl<'de> Visitor<'de> for Entries<'_> {
    type Value = Parsed<MemberPatch>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object whose keys are push resource URIs")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        let max = self.limits.max_list_members;
        let value_max = self.limits.max_member_value_bytes();
        while let Some(uri) = map.next_key::<String>()? {
            // Read as text first: a value is made into JSON objects only once
            // its length is known to be a member's.
            let raw: &serde_json::value::RawValue = map.next_value()?;
            if accepted.len() + rejected.len() >= max {
                self.overflow.set(true);
                return Err(de::Error::custom("too many members"));
            }
            let entry = if raw.get().len() > value_max {
                Err(Rejected {
                    uri: uri.chars().take(256).collect(),
                    reason: Rejection::ValueTooLarge(value_max),
                })
            } else {
                let value: Value = serde_json::from_str(raw.get()).map_err(de::Error::custom)?;
                parse_entry(uri, value, self.patch, self.now, self.limits)
            };
            match entry {
                Ok(m) => accepted.push(m),
                Err(r) => rejected.push(r),
            }
        }
        accepted.sort_unstable_by(|a: &MemberPatch, b| a.uri().cmp(b.uri()));
        // A URI given twice is refused, every occurrence of it.
        let mut kept = Vec::with_capacity(accepted.len());
        let mut run = accepted.into_iter().peekable();
        while let Some(m) = run.next() {
            let mut dup = false;
            while run.peek().is_some_and(|n| n.uri() == m.uri()) {
                run.next();
                dup = true;
            }
            if dup {
                rejected.push(Rejected {
                    uri: m.uri().chars().take(256).collect(),
                    reason: Rejection::Duplicate,
                });
            } else {
                kept.push(m);
            }
        }
        Ok(Parsed {
            accepted: kept,
            rejected,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Entries<'_> {
    type Value = Parsed<MemberPatch>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

fn parse_entries(
    doc: &[u8],
    patch: bool,
    now: i64,
    limits: &Limits,
) -> Result<Parsed<MemberPatch>, ListError> {
    let mut de = serde_json::Deserializer::from_slice(doc);
    let overflow = std::cell::Cell::new(false);
    let parsed = Entries {
        overflow: &overflow,
        patch,
        now,
        limits,
    }
    .deserialize(&mut de)
    .and_then(|p| de.end().map(|_| p))
    .map_err(|e| {
        if overflow.get() {
            ListError::TooManyMembers(limits.max_list_members)
        } else {
            ListError::Json(e.to_string())
        }
    })?;
    Ok(parsed)
}

/// Parses a list document (the body of a create). `now` is Unix seconds.
pub fn parse_document(doc: &[u8], now: i64, limits: &Limits) -> Result<Parsed<Member>, ListError> {
    let p = parse_entries(doc, false, now, limits)?;
    let mut rejected = p.rejected;
    let mut accepted = Vec::with_capacity(p.accepted.len());
    for m in p.accepted {
        let uri = m.uri().to_owned();
        match m.apply(None, limits) {
            Ok(Some(member)) => accepted.push(member),
            Ok(None) => {}
            Err(reason) => rejected.push(Rejected {
                uri: uri.chars().take(256).collect(),
                reason,
            }),
        }
    }
    Ok(Parsed { accepted, rejected })
}

/// Parses a merge patch to a list. `now` is Unix seconds.
pub fn parse_patch(
    doc: &[u8],
    now: i64,
    limits: &Limits,
) -> Result<Parsed<MemberPatch>, ListError> {
    parse_entries(doc, true, now, limits)
}

/// Writes members as a list document (one page of a `GET`).
pub fn write_document<'a, I: IntoIterator<Item = &'a Member>>(members: I, out: &mut String) {
    out.push('{');
    for (i, m) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(&m.uri).expect("string serializes"));
        out.push_str(":{");
        let mut sep = "";
        if let Some(e) = m.expires {
            out.push_str(&format!("\"expires\":\"{}\"", format_expires(e)));
            sep = ",";
        }
        if let Some(k) = &m.encrypted_key {
            out.push_str(sep);
            out.push_str("\"encrypted_key\":\"");
            out.push_str(k);
            out.push('"');
            sep = ",";
        }
        if let Some(h) = &m.header {
            out.push_str(sep);
            out.push_str("\"header\":");
            out.push_str(h);
        }
        out.push('}');
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const NOW: i64 = 1_700_000_000;
    const U1: &str = "https://push.example.net/p/one";
    const U2: &str = "https://push.example.net/p/two";

    #[test]
    fn document_round_trip() {
        let key = b64::encode(&[1u8; 24]);
        let doc = serde_json::json!({
            U2: {"expires": "2030-01-01T00:00:00Z", "encrypted_key": key, "header": {"kid": "2"}},
            U1: {},
        })
        .to_string();
        let p = parse_document(doc.as_bytes(), NOW, &Limits::default()).unwrap();
        assert!(p.rejected.is_empty());
        assert_eq!(p.accepted[0].uri, U1);
        assert_eq!(p.accepted[1].expires, Some(1_893_456_000));
        assert_eq!(p.accepted[1].header.as_deref(), Some(r#"{"kid":"2"}"#));
        let mut out = String::new();
        write_document(&p.accepted, &mut out);
        let again = parse_document(out.as_bytes(), NOW, &Limits::default()).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn members_are_checked_one_by_one() {
        let doc = serde_json::json!({
            "ftp://x/p": {},
            "https://nohost": {},
            U1: {"expires": "yesterday"},
            U2: {"expires": "2001-01-01T00:00:00Z"},
            "https://a/p/3": {"encrypted_key": "a+b="},
            "https://a/p/4": {"header": {"alg": "RSA1_5"}},
            "https://a/p/5": 7,
            "https://a/p/ok": {"encrypted_key": ""},
        })
        .to_string();
        let p = parse_document(doc.as_bytes(), NOW, &Limits::default()).unwrap();
        assert_eq!(p.accepted.len(), 1);
        assert_eq!(p.accepted[0].encrypted_key, None);
        let kinds: Vec<_> = p.rejected.iter().map(|r| r.reason.kind()).collect();
        assert_eq!(kinds.len(), 7);
        for k in [
            "malformed-uri",
            "bad-expires",
            "bad-encrypted-key",
            "bad-header",
            "not-an-object",
        ] {
            assert!(kinds.contains(&k), "{k} in {kinds:?}");
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let doc = format!(r#"{{"{U1}":{{}},"{U2}":{{}},"{U1}":{{}}}}"#);
        let p = parse_document(doc.as_bytes(), NOW, &Limits::default()).unwrap();
        assert_eq!(p.accepted.len(), 1);
        assert_eq!(p.rejected[0].reason, Rejection::Duplicate);
    }

    #[test]
    fn document_errors() {
        let l = Limits {
            max_list_members: 2,
            ..Limits::default()
        };
        let doc = r#"{"https://a/1":{},"https://a/2":{},"https://a/3":{}}"#;
        assert_eq!(
            parse_document(doc.as_bytes(), NOW, &l),
            Err(ListError::TooManyMembers(2))
        );
        for bad in ["[]", "{", "null", "{} x", ""] {
            assert!(matches!(
                parse_document(bad.as_bytes(), NOW, &l),
                Err(ListError::Json(_))
            ));
        }
    }

    #[test]
    fn a_value_longer_than_a_member_can_be_is_refused_unread() {
        let l = Limits::default();
        let big = format!("[{}0]", "0,".repeat(l.max_member_value_bytes()));
        let doc =
            format!(r#"{{"https://a/1":{{}},"https://a/2":{big},"https://a/3":{{"x":{big}}}}}"#);
        let p = parse_document(doc.as_bytes(), NOW, &l).unwrap();
        assert_eq!(p.accepted.len(), 1);
        let kinds: Vec<_> = p
            .rejected
            .iter()
            .map(|r| (r.uri.as_str(), r.reason.kind()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("https://a/2", "value-too-large"),
                ("https://a/3", "value-too-large")
            ]
        );
        // Malformed JSON inside a value is still the document's error.
        let bad = r#"{"https://a/1":{"x":[1,}}"#;
        assert!(matches!(
            parse_document(bad.as_bytes(), NOW, &l),
            Err(ListError::Json(_))
        ));
    }

    #[test]
    fn a_report_lists_its_first_members_and_counts_all() {
        let rejected: Vec<Rejected> = (0..MAX_REPORTED + 500)
            .map(|i| Rejected {
                uri: format!("x{i}"),
                reason: Rejection::MalformedUri("bad"),
            })
            .collect();
        let p = problem(&ListError::Rejected(rejected.len()), &rejected).to_json();
        let v: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["members"].as_array().unwrap().len(), MAX_REPORTED);
        assert_eq!(v["members"][0]["uri"], "x0");
        assert_eq!(v["refused"], MAX_REPORTED + 500);
    }

    #[test]
    fn merge_patch() {
        let key = b64::encode(&[1u8; 24]);
        let doc = serde_json::json!({
            U1: null,
            U2: {"expires": null, "encrypted_key": key},
        })
        .to_string();
        let p = parse_patch(doc.as_bytes(), NOW, &Limits::default()).unwrap();
        assert_eq!(p.accepted[0], MemberPatch::Remove(U1.into()));
        let old = Member {
            uri: U2.into(),
            expires: Some(NOW + 10),
            encrypted_key: None,
            header: Some("{}".into()),
        };
        let new = p.accepted[1]
            .clone()
            .apply(Some(old), &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(new.expires, None);
        assert_eq!(new.encrypted_key.as_deref(), Some(key.as_str()));
        assert_eq!(new.header.as_deref(), Some("{}"));
        // null is a removal in a patch, not in a document.
        assert_eq!(
            parse_document(doc.as_bytes(), NOW, &Limits::default())
                .unwrap()
                .rejected
                .len(),
            1
        );
    }

    #[test]
    fn header_patches_merge_as_rfc7396_says() {
        let old = Member {
            uri: U1.into(),
            expires: None,
            encrypted_key: None,
            header: Some(r#"{"alg":"A256KW","kid":"old"}"#.into()),
        };
        let patch = |h: &str| {
            let doc = format!(r#"{{"{U1}": {{"header": {h}}}}}"#);
            parse_patch(doc.as_bytes(), NOW, &Limits::default())
                .unwrap()
                .accepted
                .remove(0)
        };
        let l = Limits::default();
        let m = patch(r#"{"kid":"new"}"#)
            .apply(Some(old.clone()), &l)
            .unwrap()
            .unwrap();
        assert_eq!(m.header.as_deref(), Some(r#"{"alg":"A256KW","kid":"new"}"#));
        let m = patch(r#"{"kid":null}"#)
            .apply(Some(old.clone()), &l)
            .unwrap()
            .unwrap();
        assert_eq!(m.header.as_deref(), Some(r#"{"alg":"A256KW"}"#));
        let m = patch("null").apply(Some(old.clone()), &l).unwrap().unwrap();
        assert_eq!(m.header, None);
        assert!(patch(r#"{"alg":"RSA1_5"}"#).apply(Some(old), &l).is_err());
        let mut v = serde_json::json!({"a": {"b": 1, "c": 2}, "d": 3});
        super::merge_patch(&mut v, &serde_json::json!({"a": {"b": null}, "d": [1]}));
        assert_eq!(v, serde_json::json!({"a": {"c": 2}, "d": [1]}));
    }

    #[test]
    fn gzip_bodies() {
        let doc = format!(r#"{{"{U1}":{{}}}}"#);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(doc.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let l = Limits::default();
        assert_eq!(
            decode_body(Some("gzip"), &gz, &l).unwrap().as_ref(),
            doc.as_bytes()
        );
        assert_eq!(
            decode_body(None, doc.as_bytes(), &l).unwrap().as_ref(),
            doc.as_bytes()
        );
        assert_eq!(decode_body(Some("gzip"), b"nope", &l), Err(ListError::Gzip));
        assert!(matches!(
            decode_body(Some("br"), b"x", &l),
            Err(ListError::Encoding(_))
        ));
        // A bomb stops at the limit.
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        bomb.write_all(&vec![b' '; 1 << 20]).unwrap();
        let bomb = bomb.finish().unwrap();
        let small = Limits {
            max_list_document_bytes: 1000,
            ..Limits::default()
        };
        assert_eq!(
            decode_body(Some("gzip"), &bomb, &small),
            Err(ListError::TooLarge(1000))
        );
    }

    #[test]
    fn content_types() {
        assert!(check_content_type(
            Some("application/push-aggregation+json; charset=utf-8"),
            CONTENT_TYPE
        )
        .is_ok());
        assert!(check_content_type(Some("application/json"), CONTENT_TYPE).is_err());
        assert!(check_content_type(None, MERGE_PATCH_CONTENT_TYPE).is_err());
    }
}
