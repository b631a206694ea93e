//! JWE framing (RFC 7516), checked without decrypting, and the per-member
//! transforms of a list push (docs/protocol.md §4).
//!
//! A list push carries one ciphertext for every member; only the wrapped
//! content key differs. [`CompactTemplate`] and [`JsonTemplate`] hold the
//! shared parts once and write a member's copy in one pass.

use crate::b64;
use crate::problem::{errno, ProblemSource};
use serde_json::{Map, Value};
use std::fmt;

/// `Content-Type` of a compact-serialized JWE.
pub const CONTENT_TYPE_COMPACT: &str = "application/jose";
/// `Content-Type` of a JSON-serialized JWE.
pub const CONTENT_TYPE_JSON: &str = "application/jose+json";

/// What is wrong with a JWE body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JweError {
    /// The body is not UTF-8 text.
    #[error("a JWE must be ASCII text")]
    NotText,
    /// Compact serialization has five dot-separated parts.
    #[error("a compact JWE has 5 parts separated by '.', this one has {0}")]
    PartCount(usize),
    /// A part or member is not base64url.
    #[error("JWE {0} is not base64url")]
    Base64(&'static str),
    /// The JSON serialization is not a JSON object of the right members.
    #[error("JWE JSON serialization: {0}")]
    Json(String),
    /// A header is not a JSON object.
    #[error("JWE {0} header is not a JSON object")]
    HeaderNotObject(&'static str),
    /// No `alg` for a recipient.
    #[error("JWE header has no \"alg\"")]
    MissingAlg,
    /// No `enc`.
    #[error("JWE header has no \"enc\"")]
    MissingEnc,
    /// `alg` outside the allow-list.
    #[error("JWE alg {0:?} is not allowed")]
    AlgNotAllowed(String),
    /// `enc` outside the allow-list.
    #[error("JWE enc {0:?} is not allowed")]
    EncNotAllowed(String),
    /// `zip` other than `DEF`.
    #[error("JWE zip {0:?} is not supported")]
    ZipNotAllowed(String),
    /// A parameter appears in more than one header of a recipient (RFC 7516 §7.2.1).
    #[error("JWE header parameter {0:?} appears in more than one header")]
    DuplicateParam(String),
    /// ECDH-ES needs an ephemeral public key.
    #[error("JWE alg {0} needs an \"epk\" header parameter")]
    MissingEpk(Alg),
    /// IV length does not match `enc`.
    #[error("JWE iv is {len} bytes; {enc} needs {want}")]
    IvLength {
        /// The content encryption algorithm.
        enc: Enc,
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        want: usize,
    },
    /// Tag length does not match `enc`.
    #[error("JWE tag is {len} bytes; {enc} needs {want}")]
    TagLength {
        /// The content encryption algorithm.
        enc: Enc,
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        want: usize,
    },
    /// Encrypted key length does not fit `alg` and `enc`.
    #[error("JWE encrypted key is {len} bytes, which does not fit {alg} with {enc}")]
    KeyLength {
        /// The key management algorithm.
        alg: Alg,
        /// The content encryption algorithm.
        enc: Enc,
        /// Bytes present.
        len: usize,
    },
    /// A list push in compact form must leave the encrypted key empty.
    #[error("a compact JWE pushed to a list must have an empty encrypted key part (header..iv.ciphertext.tag); the service puts each member's key there")]
    KeyNotEmpty,
}

impl ProblemSource for JweError {
    fn status(&self) -> u16 {
        400
    }
    fn kind(&self) -> &'static str {
        "invalid-jwe"
    }
    fn title(&self) -> &'static str {
        "Malformed JWE"
    }
    fn errno(&self) -> Option<u16> {
        Some(errno::INVALID_CRYPTO)
    }
}

macro_rules! names {
    ($(#[$m:meta])* $t:ident { $($(#[$vm:meta])* $v:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $t { $($(#[$vm])* $v),* }
        impl $t {
            /// Looks up an allowed name.
            pub fn from_name(s: &str) -> Option<$t> {
                match s { $($s => Some($t::$v),)* _ => None }
            }
            /// The registered name.
            pub fn name(self) -> &'static str {
                match self { $($t::$v => $s),* }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.name()) }
        }
    };
}

names! {
    /// Key management algorithms allowed (RFC 7518 §4). Refused: `RSA1_5`
    /// (padding oracles), `PBES2-*` (unbounded work for devices), `none`.
    Alg {
        /// Direct use of a shared key.
        Dir = "dir",
        /// AES Key Wrap, 128-bit key.
        A128kw = "A128KW",
        /// AES Key Wrap, 192-bit key.
        A192kw = "A192KW",
        /// AES Key Wrap, 256-bit key.
        A256kw = "A256KW",
        /// AES-GCM key wrap, 128-bit key.
        A128gcmkw = "A128GCMKW",
        /// AES-GCM key wrap, 192-bit key.
        A192gcmkw = "A192GCMKW",
        /// AES-GCM key wrap, 256-bit key.
        A256gcmkw = "A256GCMKW",
        /// ECDH-ES direct key agreement.
        EcdhEs = "ECDH-ES",
        /// ECDH-ES then AES Key Wrap, 128-bit.
        EcdhEsA128kw = "ECDH-ES+A128KW",
        /// ECDH-ES then AES Key Wrap, 192-bit.
        EcdhEsA192kw = "ECDH-ES+A192KW",
        /// ECDH-ES then AES Key Wrap, 256-bit.
        EcdhEsA256kw = "ECDH-ES+A256KW",
        /// RSAES OAEP with SHA-1.
        RsaOaep = "RSA-OAEP",
        /// RSAES OAEP with SHA-256.
        RsaOaep256 = "RSA-OAEP-256",
    }
}

names! {
    /// Content encryption algorithms allowed (RFC 7518 §5).
    Enc {
        /// AES-GCM, 128-bit key.
        A128gcm = "A128GCM",
        /// AES-GCM, 192-bit key.
        A192gcm = "A192GCM",
        /// AES-GCM, 256-bit key.
        A256gcm = "A256GCM",
        /// AES-CBC with HMAC-SHA-256.
        A128cbcHs256 = "A128CBC-HS256",
        /// AES-CBC with HMAC-SHA-384.
        A192cbcHs384 = "A192CBC-HS384",
        /// AES-CBC with HMAC-SHA-512.
        A256cbcHs512 = "A256CBC-HS512",
    }
}

impl Enc {
    /// IV length in bytes.
    pub fn iv_len(self) -> usize {
        match self {
            Enc::A128gcm | Enc::A192gcm | Enc::A256gcm => 12,
            _ => 16,
        }
    }
    /// Authentication tag length in bytes.
    pub fn tag_len(self) -> usize {
        match self {
            Enc::A128gcm | Enc::A192gcm | Enc::A256gcm | Enc::A128cbcHs256 => 16,
            Enc::A192cbcHs384 => 24,
            Enc::A256cbcHs512 => 32,
        }
    }
    /// Content encryption key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Enc::A128gcm => 16,
            Enc::A192gcm => 24,
            Enc::A256gcm | Enc::A128cbcHs256 => 32,
            Enc::A192cbcHs384 => 48,
            Enc::A256cbcHs512 => 64,
        }
    }
}

impl Alg {
    /// Whether the JWE Encrypted Key is empty for this algorithm.
    pub fn key_is_empty(self) -> bool {
        matches!(self, Alg::Dir | Alg::EcdhEs)
    }
    /// Whether the algorithm needs an `epk` header parameter.
    pub fn needs_epk(self) -> bool {
        matches!(
            self,
            Alg::EcdhEs | Alg::EcdhEsA128kw | Alg::EcdhEsA192kw | Alg::EcdhEsA256kw
        )
    }
    /// Whether an encrypted key of `len` bytes fits this algorithm with `enc`.
    pub fn key_len_fits(self, enc: Enc, len: usize) -> bool {
        match self {
            Alg::Dir | Alg::EcdhEs => len == 0,
            // RFC 3394 adds one 8-byte block.
            Alg::A128kw
            | Alg::A192kw
            | Alg::A256kw
            | Alg::EcdhEsA128kw
            | Alg::EcdhEsA192kw
            | Alg::EcdhEsA256kw => len == enc.key_len() + 8,
            Alg::A128gcmkw | Alg::A192gcmkw | Alg::A256gcmkw => len == enc.key_len(),
            // The modulus length: 2048 to 8192 bits.
            Alg::RsaOaep | Alg::RsaOaep256 => (256..=1024).contains(&len),
        }
    }
}

/// The parameters of one JOSE header that the framing rules read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Params {
    alg: Option<Alg>,
    enc: Option<Enc>,
    epk: bool,
}

impl Params {
    /// Reads `alg`, `enc`, `zip`, `epk` from a header object.
    fn read(h: &Map<String, Value>) -> Result<Params, JweError> {
        let text = |name: &str| match h.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(JweError::Json(format!("\"{name}\" must be a string"))),
        };
        let alg = match text("alg")? {
            None => None,
            Some(a) => Some(Alg::from_name(a).ok_or_else(|| JweError::AlgNotAllowed(a.into()))?),
        };
        let enc = match text("enc")? {
            None => None,
            Some(e) => Some(Enc::from_name(e).ok_or_else(|| JweError::EncNotAllowed(e.into()))?),
        };
        if let Some(z) = text("zip")? {
            if z != "DEF" {
                return Err(JweError::ZipNotAllowed(z.into()));
            }
        }
        let epk = match h.get("epk") {
            None => false,
            Some(Value::Object(_)) => true,
            Some(_) => return Err(JweError::Json("\"epk\" must be a JWK object".into())),
        };
        Ok(Params { alg, enc, epk })
    }

    /// Combines the parameters of disjoint headers.
    fn merge(self, other: Params) -> Params {
        Params {
            alg: self.alg.or(other.alg),
            enc: self.enc.or(other.enc),
            epk: self.epk || other.epk,
        }
    }
}

/// Decodes a base64url header into a JSON object.
fn decode_header(b64_text: &str, what: &'static str) -> Result<Map<String, Value>, JweError> {
    let bytes = b64::decode(b64_text).ok_or(JweError::Base64(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JweError::HeaderNotObject(what)),
    }
}

/// Checks that headers share no parameter name (RFC 7516 §7.2.1).
fn check_disjoint(headers: &[&Map<String, Value>]) -> Result<(), JweError> {
    for (i, a) in headers.iter().enumerate() {
        for b in &headers[i + 1..] {
            if let Some(k) = a.keys().find(|k| b.contains_key(*k)) {
                return Err(JweError::DuplicateParam(k.clone()));
            }
        }
    }
    Ok(())
}

/// Checks the IV and tag lengths against `enc`.
fn check_iv_tag(enc: Enc, iv: &str, tag: &str) -> Result<(), JweError> {
    let iv_len = canonical_len(iv, "iv")?;
    if iv_len != enc.iv_len() {
        return Err(JweError::IvLength {
            enc,
            len: iv_len,
            want: enc.iv_len(),
        });
    }
    let tag_len = canonical_len(tag, "tag")?;
    if tag_len != enc.tag_len() {
        return Err(JweError::TagLength {
            enc,
            len: tag_len,
            want: enc.tag_len(),
        });
    }
    Ok(())
}

/// Length of a base64url part, checked without decoding it.
fn canonical_len(part: &str, what: &'static str) -> Result<usize, JweError> {
    if b64::is_canonical(part) {
        Ok(b64::decoded_len(part))
    } else {
        Err(JweError::Base64(what))
    }
}

/// Checks one recipient: an allowed `alg`, its `epk`, and its key's length.
fn check_recipient(p: &Params, enc: Enc, encrypted_key: &str) -> Result<Alg, JweError> {
    let alg = p.alg.ok_or(JweError::MissingAlg)?;
    if alg.needs_epk() && !p.epk {
        return Err(JweError::MissingEpk(alg));
    }
    let len = canonical_len(encrypted_key, "encrypted_key")?;
    if !alg.key_len_fits(enc, len) {
        return Err(JweError::KeyLength { alg, enc, len });
    }
    Ok(alg)
}

/// A compact-serialized JWE whose framing has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactJwe<'a> {
    /// The five parts: protected header, encrypted key, iv, ciphertext, tag.
    pub parts: [&'a str; 5],
    /// The key management algorithm.
    pub alg: Alg,
    /// The content encryption algorithm.
    pub enc: Enc,
}

impl<'a> CompactJwe<'a> {
    /// Splits and checks a compact JWE. With `for_list`, the encrypted key
    /// must be empty (the service puts each member's there), and its length
    /// is not checked against `alg`.
    pub fn parse(body: &'a [u8], for_list: bool) -> Result<CompactJwe<'a>, JweError> {
        let text = std::str::from_utf8(body).map_err(|_| JweError::NotText)?;
        let text = text.trim_end_matches(['\r', '\n']);
        let mut parts = [""; 5];
        let mut n = 0;
        for p in text.split('.') {
            if n < 5 {
                parts[n] = p;
            }
            n += 1;
        }
        if n != 5 {
            return Err(JweError::PartCount(n));
        }
        let header = decode_header(parts[0], "protected")?;
        let p = Params::read(&header)?;
        let enc = p.enc.ok_or(JweError::MissingEnc)?;
        check_iv_tag(enc, parts[2], parts[4])?;
        canonical_len(parts[3], "ciphertext")?;
        let alg = if for_list {
            if !parts[1].is_empty() {
                return Err(JweError::KeyNotEmpty);
            }
            let alg = p.alg.ok_or(JweError::MissingAlg)?;
            if alg.needs_epk() && !p.epk {
                return Err(JweError::MissingEpk(alg));
            }
            alg
        } else {
            check_recipient(&p, enc, parts[1])?
        };
        Ok(CompactJwe { parts, alg, enc })
    }

    /// The JOSE header: the protected header, decoded.
    pub fn header(&self) -> Result<Map<String, Value>, JweError> {
        decode_header(self.parts[0], "protected")
    }
}

/// The shared parts of a compact JWE pushed to a list: `header.` and
/// `.iv.ciphertext.tag`, between which each member's key is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactTemplate {
    text: String,
    split: usize,
    /// The key management algorithm, for checking members' key lengths.
    pub alg: Alg,
    /// The content encryption algorithm.
    pub enc: Enc,
}

impl CompactTemplate {
    /// Checks a compact JWE with an empty key part and keeps it as a template.
    pub fn parse(body: &[u8]) -> Result<CompactTemplate, JweError> {
        let jwe = CompactJwe::parse(body, true)?;
        let split = jwe.parts[0].len() + 1;
        let text = jwe.parts.join(".");
        Ok(CompactTemplate {
            text,
            split,
            alg: jwe.alg,
            enc: jwe.enc,
        })
    }

    /// Rebuilds a template from its stored text (as [`Self::as_str`] gave it).
    pub fn from_stored(text: &str) -> Result<CompactTemplate, JweError> {
        Self::parse(text.as_bytes())
    }

    /// The template text, with an empty key part.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A member's copy as three slices, for vectored writes: no copy at all.
    pub fn member_parts<'a>(&'a self, encrypted_key: &'a str) -> [&'a [u8]; 3] {
        let (head, tail) = self.text.as_bytes().split_at(self.split);
        [head, encrypted_key.as_bytes(), tail]
    }

    /// Length of a member's copy.
    pub fn member_len(&self, encrypted_key: &str) -> usize {
        self.text.len() + encrypted_key.len()
    }

    /// Appends a member's copy to `out`.
    pub fn write_member(&self, encrypted_key: &str, out: &mut Vec<u8>) {
        out.reserve(self.member_len(encrypted_key));
        for part in self.member_parts(encrypted_key) {
            out.extend_from_slice(part);
        }
    }
}

/// Members of the JSON serialization that are per recipient.
const RECIPIENT_MEMBERS: [&str; 3] = ["recipients", "header", "encrypted_key"];

/// The recipient objects of a JSON JWE: each of `recipients`, or the JWE
/// itself when flattened (its `header` and `encrypted_key` members).
fn recipient_objects(object: &Map<String, Value>) -> Result<Vec<&Map<String, Value>>, JweError> {
    match object.get("recipients") {
        Some(Value::Array(rs)) if !rs.is_empty() => {
            if object.contains_key("header") || object.contains_key("encrypted_key") {
                return Err(JweError::Json(
                    "\"recipients\" and a flattened \"header\"/\"encrypted_key\" together".into(),
                ));
            }
            rs.iter()
                .map(|r| match r {
                    Value::Object(m) => Ok(m),
                    _ => Err(JweError::Json("a recipient must be an object".into())),
                })
                .collect()
        }
        Some(_) => Err(JweError::Json(
            "\"recipients\" must be a non-empty array".into(),
        )),
        None => Ok(vec![object]),
    }
}

/// A recipient object's own members, checked.
struct RecipientMembers<'a> {
    /// The per-recipient header, if any.
    header: Option<&'a Map<String, Value>>,
    /// The encrypted key (empty when absent).
    encrypted_key: &'a str,
    /// The `alg` of its whole JOSE header.
    alg: Alg,
}

/// Checks one recipient object against the shared (protected, unprotected)
/// headers: its header disjoint from them, an allowed `alg`, its `epk`, its
/// key's length.
fn check_json_recipient<'a>(
    r: &'a Map<String, Value>,
    shared: [&Map<String, Value>; 2],
    shared_params: &Params,
    enc: Enc,
) -> Result<RecipientMembers<'a>, JweError> {
    let header = match r.get("header") {
        None => None,
        Some(Value::Object(h)) => Some(h),
        Some(_) => return Err(JweError::HeaderNotObject("recipient")),
    };
    let key = match r.get("encrypted_key") {
        None => "",
        Some(Value::String(k)) => k,
        Some(_) => return Err(JweError::Json("\"encrypted_key\" must be a string".into())),
    };
    let empty = Map::new();
    check_disjoint(&[shared[0], shared[1], header.unwrap_or(&empty)])?;
    let p = shared_params
        .clone()
        .merge(Params::read(header.unwrap_or(&empty))?);
    let alg = check_recipient(&p, enc, key)?;
    Ok(RecipientMembers {
        header,
        encrypted_key: key,
        alg,
    })
}

/// One recipient of a JSON-serialized JWE, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipient<'a> {
    /// Its JOSE header: the union of the protected, unprotected and
    /// per-recipient headers, which share no parameter (RFC 7516 §7.2.1).
    pub header: Map<String, Value>,
    /// Its key management algorithm.
    pub alg: Alg,
    /// Its JWE Encrypted Key, base64url (empty when absent).
    pub encrypted_key: &'a str,
}

/// A JSON-serialized JWE (flattened or general) whose framing has been checked.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonJwe {
    /// The top-level members.
    pub object: Map<String, Value>,
    /// The content encryption algorithm.
    pub enc: Enc,
    /// The shared `alg`, when the protected or unprotected header names it.
    pub shared_alg: Option<Alg>,
    /// The parameter names of the protected and unprotected headers, which
    /// no recipient's header may repeat.
    pub shared_names: Vec<String>,
}

impl JsonJwe {
    /// Parses and checks a JSON-serialized JWE. With `for_list`, its recipients
    /// are ignored (the service replaces them), and `alg` may be left to the
    /// members' own headers.
    pub fn parse(body: &[u8], for_list: bool) -> Result<JsonJwe, JweError> {
        let object = match serde_json::from_slice(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(JweError::Json("not a JSON object".into())),
            Err(e) => return Err(JweError::Json(e.to_string())),
        };
        let string = |name: &'static str| -> Result<Option<&str>, JweError> {
            match object.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(JweError::Json(format!("\"{name}\" must be a string"))),
            }
        };
        let required = |name: &'static str| {
            string(name)?.ok_or_else(|| JweError::Json(format!("\"{name}\" is missing")))
        };
        let object_member = |name: &'static str| -> Result<Option<&Map<String, Value>>, JweError> {
            match object.get(name) {
                None => Ok(None),
                Some(Value::Object(m)) => Ok(Some(m)),
                Some(_) => Err(JweError::HeaderNotObject(name)),
            }
        };
        let protected = match string("protected")? {
            Some(p) => Some(decode_header(p, "protected")?),
            None => None,
        };
        let unprotected = object_member("unprotected")?;
        let (iv, ciphertext, tag) = (required("iv")?, required("ciphertext")?, required("tag")?);
        canonical_len(ciphertext, "ciphertext")?;
        if let Some(aad) = string("aad")? {
            canonical_len(aad, "aad")?;
        }
        let empty = Map::new();
        let shared = [
            protected.as_ref().unwrap_or(&empty),
            unprotected.unwrap_or(&empty),
        ];
        check_disjoint(&shared)?;
        let shared_params = Params::read(shared[0])?.merge(Params::read(shared[1])?);
        let shared_names = shared.iter().flat_map(|h| h.keys().cloned()).collect();
        let enc = shared_params.enc.ok_or(JweError::MissingEnc)?;
        check_iv_tag(enc, iv, tag)?;

        if !for_list {
            // Every recipient: disjoint headers, an allowed alg, a fitting key.
            for r in recipient_objects(&object)? {
                check_json_recipient(r, shared, &shared_params, enc)?;
            }
        } else if let Some(alg) = shared_params.alg {
            if alg.needs_epk() && !shared_params.epk {
                return Err(JweError::MissingEpk(alg));
            }
        }
        Ok(JsonJwe {
            shared_alg: shared_params.alg,
            shared_names,
            object,
            enc,
        })
    }

    /// A string member: `protected`, `iv`, `ciphertext`, `tag`, `aad`.
    pub fn member(&self, name: &str) -> Option<&str> {
        self.object.get(name).and_then(Value::as_str)
    }

    /// Each recipient with its JOSE header (a flattened serialization has
    /// one), checked as [`Self::parse`] checks a JWE not for a list.
    pub fn recipients(&self) -> Result<Vec<Recipient<'_>>, JweError> {
        let protected = match self.object.get("protected") {
            None => Map::new(),
            Some(Value::String(p)) => decode_header(p, "protected")?,
            Some(_) => return Err(JweError::Json("\"protected\" must be a string".into())),
        };
        let empty = Map::new();
        let unprotected = match self.object.get("unprotected") {
            None => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => return Err(JweError::HeaderNotObject("unprotected")),
        };
        let shared = [&protected, unprotected];
        check_disjoint(&shared)?;
        let shared_params = Params::read(shared[0])?.merge(Params::read(shared[1])?);
        recipient_objects(&self.object)?
            .into_iter()
            .map(|r| {
                let own = check_json_recipient(r, shared, &shared_params, self.enc)?;
                let mut header = protected.clone();
                header.extend(unprotected.clone());
                header.extend(own.header.cloned().unwrap_or_default());
                Ok(Recipient {
                    header,
                    alg: own.alg,
                    encrypted_key: own.encrypted_key,
                })
            })
            .collect()
    }
}

/// The shared parts of a JSON JWE pushed to a list: every member but the
/// per-recipient ones, serialized once; a member's copy adds a `recipients`
/// array of one object holding its `encrypted_key` and `header`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonTemplate {
    /// `{…shared members…,"recipients":[` — the text before the member's object.
    prefix: String,
    /// The content encryption algorithm.
    pub enc: Enc,
    /// The shared `alg`, if the shared headers name one.
    pub shared_alg: Option<Alg>,
    /// The shared headers' parameter names.
    shared_names: Vec<String>,
}

/// Closes the recipients array and the object.
const JSON_SUFFIX: &str = "]}";

impl JsonTemplate {
    /// Checks a JSON JWE for a list push and keeps its shared parts.
    pub fn parse(body: &[u8]) -> Result<JsonTemplate, JweError> {
        let jwe = JsonJwe::parse(body, true)?;
        let mut shared = jwe.object;
        for k in RECIPIENT_MEMBERS {
            shared.remove(k);
        }
        let mut prefix = serde_json::to_string(&Value::Object(shared)).expect("JSON serializes");
        prefix.pop(); // the closing '}'; "iv" and friends make the object non-empty
        prefix.push_str(",\"recipients\":[");
        Ok(JsonTemplate {
            prefix,
            enc: jwe.enc,
            shared_alg: jwe.shared_alg,
            shared_names: jwe.shared_names,
        })
    }

    /// Reads a member's header (as [`member_header`] gave it) against this
    /// message, in one parse: `None` if it cannot go with it (it repeats a
    /// parameter of the shared headers, RFC 7516 §7.2.1, so the copy would
    /// be no valid JWE), else the `alg` it names, if any.
    pub fn member_header_alg(&self, header: &str) -> Option<Option<Alg>> {
        let m = serde_json::from_str::<Map<String, Value>>(header).ok()?;
        if m.keys().any(|k| self.shared_names.contains(k)) {
            return None;
        }
        Some(
            m.get("alg")
                .and_then(Value::as_str)
                .and_then(Alg::from_name),
        )
    }

    /// Rebuilds a template from its stored text (as [`Self::as_str`] gave it).
    pub fn from_stored(text: &str) -> Result<JsonTemplate, JweError> {
        let mut body = String::with_capacity(text.len() + 2);
        body.push_str(text);
        body.push_str(JSON_SUFFIX);
        Self::parse(body.as_bytes())
    }

    /// The shared text, before any member's recipient object.
    pub fn as_str(&self) -> &str {
        &self.prefix
    }

    /// The text after every member's recipient object.
    pub const SUFFIX: &'static str = JSON_SUFFIX;

    /// Appends a member's recipient object alone (between [`Self::as_str`]
    /// and [`Self::SUFFIX`]) to `out`.
    pub fn write_recipient(
        &self,
        encrypted_key: Option<&str>,
        header: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        out.push(b'{');
        if let Some(k) = encrypted_key.filter(|k| !k.is_empty()) {
            // base64url text needs no JSON escaping.
            out.extend_from_slice(b"\"encrypted_key\":\"");
            out.extend_from_slice(k.as_bytes());
            out.push(b'"');
            if header.is_some() {
                out.push(b',');
            }
        }
        if let Some(h) = header {
            out.extend_from_slice(b"\"header\":");
            out.extend_from_slice(h.as_bytes());
        }
        out.push(b'}');
    }

    /// Appends a member's copy to `out`. `header` is the member's
    /// per-recipient header as JSON text (checked when the member joined).
    pub fn write_member(
        &self,
        encrypted_key: Option<&str>,
        header: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        out.reserve(
            self.prefix.len()
                + encrypted_key.map_or(0, |k| k.len() + 20)
                + header.map_or(0, |h| h.len() + 10)
                + 4,
        );
        out.extend_from_slice(self.prefix.as_bytes());
        self.write_recipient(encrypted_key, header, out);
        out.extend_from_slice(JSON_SUFFIX.as_bytes());
    }
}

/// Checks a member's per-recipient header for a list and returns it as
/// compact JSON text, ready to be spliced into each copy.
pub fn member_header(value: &Value, max_bytes: usize) -> Result<String, JweError> {
    let Value::Object(m) = value else {
        return Err(JweError::HeaderNotObject("member"));
    };
    Params::read(m)?;
    let text = serde_json::to_string(value).expect("JSON serializes");
    if text.len() > max_bytes {
        return Err(JweError::Json(format!(
            "a member header of {} bytes is longer than the {max_bytes} allowed",
            text.len()
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(json: &str) -> String {
        b64::encode(json.as_bytes())
    }
    fn b(n: usize) -> String {
        b64::encode(&vec![7u8; n])
    }

    #[test]
    fn compact_single() {
        let h = hdr(r#"{"alg":"A128KW","enc":"A128GCM"}"#);
        let good = format!("{h}.{}.{}.{}.{}", b(24), b(12), b(40), b(16));
        let jwe = CompactJwe::parse(good.as_bytes(), false).unwrap();
        assert_eq!((jwe.alg, jwe.enc), (Alg::A128kw, Enc::A128gcm));

        let bad_key = format!("{h}.{}.{}.{}.{}", b(16), b(12), b(40), b(16));
        assert!(matches!(
            CompactJwe::parse(bad_key.as_bytes(), false),
            Err(JweError::KeyLength { len: 16, .. })
        ));
        let bad_iv = format!("{h}.{}.{}.{}.{}", b(24), b(16), b(40), b(16));
        assert!(matches!(
            CompactJwe::parse(bad_iv.as_bytes(), false),
            Err(JweError::IvLength {
                len: 16,
                want: 12,
                ..
            })
        ));
        assert_eq!(
            CompactJwe::parse(b"a.b.c", false),
            Err(JweError::PartCount(3))
        );
        let rsa15 = format!(
            "{}.{}.{}.{}.{}",
            hdr(r#"{"alg":"RSA1_5","enc":"A128GCM"}"#),
            b(256),
            b(12),
            b(4),
            b(16)
        );
        assert_eq!(
            CompactJwe::parse(rsa15.as_bytes(), false),
            Err(JweError::AlgNotAllowed("RSA1_5".into()))
        );
        let no_epk = format!(
            "{}..{}.{}.{}",
            hdr(r#"{"alg":"ECDH-ES+A128KW","enc":"A128GCM"}"#),
            b(12),
            b(4),
            b(16)
        );
        assert_eq!(
            CompactJwe::parse(no_epk.as_bytes(), true),
            Err(JweError::MissingEpk(Alg::EcdhEsA128kw))
        );
    }

    #[test]
    fn compact_template_splices_member_keys() {
        let h = hdr(r#"{"alg":"A256KW","enc":"A256GCM"}"#);
        let body = format!("{h}..{}.{}.{}", b(12), b(100), b(16));
        let t = CompactTemplate::parse(body.as_bytes()).unwrap();
        let key = b(40);
        let mut copy = Vec::new();
        t.write_member(&key, &mut copy);
        assert_eq!(copy.len(), t.member_len(&key));
        let jwe = CompactJwe::parse(&copy, false).unwrap();
        assert_eq!(jwe.parts[1], key);
        assert_eq!(jwe.parts[0], h);
        assert_eq!(CompactTemplate::from_stored(t.as_str()).unwrap(), t);

        let with_key = format!("{h}.{}.{}.{}.{}", b(40), b(12), b(100), b(16));
        assert_eq!(
            CompactTemplate::parse(with_key.as_bytes()),
            Err(JweError::KeyNotEmpty)
        );
    }

    #[test]
    fn json_template_replaces_recipients() {
        let body = serde_json::json!({
            "protected": hdr(r#"{"enc":"A128GCM"}"#),
            "unprotected": {"jku": "https://example.com/keys"},
            "recipients": [{"header": {"alg": "A128KW"}, "encrypted_key": b(24)}],
            "iv": b(12), "ciphertext": b(30), "tag": b(16)
        })
        .to_string();
        let t = JsonTemplate::parse(body.as_bytes()).unwrap();
        assert!(!t.as_str().contains("encrypted_key"));
        let member_h =
            member_header(&serde_json::json!({"alg":"A128KW","kid":"m1"}), 2048).unwrap();
        let key = b(24);
        let mut copy = Vec::new();
        t.write_member(Some(&key), Some(&member_h), &mut copy);
        let v: Value = serde_json::from_slice(&copy).unwrap();
        assert_eq!(v["recipients"].as_array().unwrap().len(), 1);
        assert_eq!(v["recipients"][0]["encrypted_key"], key.as_str());
        assert_eq!(v["recipients"][0]["header"]["kid"], "m1");
        // The copy is a valid JWE for that member.
        JsonJwe::parse(&copy, false).unwrap();

        let mut bare = Vec::new();
        t.write_member(None, None, &mut bare);
        let v: Value = serde_json::from_slice(&bare).unwrap();
        assert_eq!(v["recipients"][0], serde_json::json!({}));
        assert_eq!(JsonTemplate::from_stored(t.as_str()).unwrap(), t);
        // A member header may not repeat a shared parameter.
        assert!(t.member_header_alg(&member_h).is_some());
        assert!(t
            .member_header_alg(r#"{"jku":"https://example.com/other"}"#)
            .is_none());
        assert!(t
            .member_header_alg(r#"{"alg":"A128KW","enc":"A256GCM"}"#)
            .is_none());
        assert_eq!(t.member_header_alg(&member_h), Some(Some(Alg::A128kw)));
        let mut clash = Vec::new();
        t.write_member(
            Some(&key),
            Some(r#"{"alg":"A128KW","enc":"A128GCM"}"#),
            &mut clash,
        );
        assert!(
            JsonJwe::parse(&clash, false).is_err(),
            "what member_header_alg refuses"
        );
    }

    #[test]
    fn recipients_carry_their_whole_header() {
        let body = serde_json::json!({
            "protected": hdr(r#"{"enc":"A128GCM"}"#),
            "unprotected": {"jku": "https://example.com/keys"},
            "recipients": [
                {"header": {"alg": "A128KW", "kid": "1"}, "encrypted_key": b(24)},
                {"header": {"alg": "dir"}}
            ],
            "iv": b(12), "ciphertext": b(30), "tag": b(16), "aad": b(3)
        })
        .to_string();
        let jwe = JsonJwe::parse(body.as_bytes(), false).unwrap();
        assert_eq!(jwe.member("aad"), Some(b(3).as_str()));
        assert_eq!(jwe.member("recipients"), None);
        let rs = jwe.recipients().unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(
            (rs[0].alg, rs[0].encrypted_key),
            (Alg::A128kw, b(24).as_str())
        );
        let names: Vec<&str> = rs[0].header.keys().map(String::as_str).collect();
        assert_eq!(names, ["alg", "enc", "jku", "kid"]);
        assert_eq!((rs[1].alg, rs[1].encrypted_key), (Alg::Dir, ""));

        let flattened = serde_json::json!({
            "protected": hdr(r#"{"enc":"A128GCM","alg":"A128KW"}"#),
            "encrypted_key": b(24), "iv": b(12), "ciphertext": b(30), "tag": b(16)
        })
        .to_string();
        let jwe = JsonJwe::parse(flattened.as_bytes(), false).unwrap();
        let rs = jwe.recipients().unwrap();
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].header["alg"], "A128KW");

        // Read for a list, the recipients were not checked: they are now.
        let clash = serde_json::json!({
            "protected": hdr(r#"{"enc":"A128GCM"}"#),
            "header": {"alg": "A128KW", "enc": "A128GCM"}, "encrypted_key": b(24),
            "iv": b(12), "ciphertext": b(30), "tag": b(16)
        })
        .to_string();
        let jwe = JsonJwe::parse(clash.as_bytes(), true).unwrap();
        assert_eq!(
            jwe.recipients(),
            Err(JweError::DuplicateParam("enc".into()))
        );

        let h = hdr(r#"{"alg":"A128KW","enc":"A128GCM"}"#);
        let compact = format!("{h}.{}.{}.{}.{}", b(24), b(12), b(40), b(16));
        let jwe = CompactJwe::parse(compact.as_bytes(), false).unwrap();
        assert_eq!(jwe.header().unwrap()["alg"], "A128KW");
    }

    #[test]
    fn json_rules() {
        let dup = serde_json::json!({
            "protected": hdr(r#"{"enc":"A128GCM","alg":"A128KW"}"#),
            "header": {"alg": "A128KW"}, "encrypted_key": b(24),
            "iv": b(12), "ciphertext": b(30), "tag": b(16)
        })
        .to_string();
        assert_eq!(
            JsonJwe::parse(dup.as_bytes(), false),
            Err(JweError::DuplicateParam("alg".into()))
        );
        let no_iv = serde_json::json!({"protected": hdr(r#"{"enc":"A128GCM"}"#), "ciphertext": "", "tag": b(16)}).to_string();
        assert!(matches!(
            JsonJwe::parse(no_iv.as_bytes(), true),
            Err(JweError::Json(_))
        ));
        assert!(matches!(
            JsonJwe::parse(b"[]", true),
            Err(JweError::Json(_))
        ));
        assert!(member_header(&serde_json::json!({"alg":"none"}), 100).is_err());
        assert!(member_header(&serde_json::json!("x"), 100).is_err());
    }
}
