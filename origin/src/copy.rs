//! A list message's copies: the list push parsed once, its shared parts
//! encoded once ([`ListPush`]); a member's copy queued for its connection
//! ([`QueuedCopy`]); a copy's version ([`copy_id`]); and the sending side of
//! a connection that the fan-out writes copies to ([`CopyOutlet`]), which the
//! device protocols implement.

use crate::store::{Encoding, ListBody, ListMember, ListMessage, Message, StoreError};
use crate::tokens::Token;
use bytes::Bytes;
use shared::b64::Spliced;
use shared::jwe::{Alg, CompactTemplate, JsonTemplate, CONTENT_TYPE_COMPACT, CONTENT_TYPE_JSON};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What became of a copy handed to [`CopyOutlet::write_copy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Written (or its rest left for the connection to flush).
    Written,
    /// Written before and not acknowledged yet: not written again.
    Duplicate,
    /// Left for the connection to fetch: an earlier frame is still being
    /// written.
    Busy,
    /// Left for the connection to fetch: as many messages as allowed wait
    /// for their acknowledgement.
    Full,
    /// The connection has ended.
    Closed,
}

/// A connection's sending side, which the fan-out's writer threads write
/// members' copies to directly (docs/architecture.md, "writer threads").
pub trait CopyOutlet: Send + Sync + std::fmt::Debug {
    /// Writes a member's copy unless it is in flight already, an earlier
    /// frame is still being written, the connection is full or gone. With
    /// `raise`, the socket's receive low-water mark is raised first, so
    /// that acknowledgements wake no thread until [`CopyOutlet::lower`].
    fn write_copy(
        &self,
        push: &ListPush,
        member: &ListMember,
        max_unacked: usize,
        raise: bool,
    ) -> std::io::Result<Sent>;
    /// Wakes the connection to fetch what was left for it.
    fn nudge(&self);
    /// Lowers a raised receive low-water mark, which makes the kernel
    /// report what the device sent meanwhile.
    fn lower(&self);
    /// The connection's socket, for its options.
    fn socket(&self) -> std::os::fd::BorrowedFd<'_>;
}

/// The shared part of a list push, parsed once.
#[derive(Debug)]
pub struct ListPush {
    /// The stored record.
    pub msg: ListMessage,
    template: Template,
    /// The shared parts of the body, base64url-encoded once.
    encoded: Option<Spliced>,
    /// Every copy's encoding.
    encoding: Encoding,
}

#[derive(Debug)]
enum Template {
    Empty,
    Compact(CompactTemplate),
    Json(JsonTemplate),
}

/// A member's copy in its connection's queue. While any is queued, reads
/// are paused ([`crate::burst`]).
#[derive(Debug)]
pub struct QueuedCopy {
    /// The list message with its shared body.
    pub push: Arc<ListPush>,
    /// The member.
    pub member: ListMember,
    _queued: crate::burst::Queued,
}

impl QueuedCopy {
    /// A member's copy, counted as queued (reads pause while it waits).
    pub fn new(push: Arc<ListPush>, member: ListMember, queued: crate::burst::Queued) -> Self {
        QueuedCopy {
            push,
            member,
            _queued: queued,
        }
    }
}

/// The version of a member's copy: the same every time it is sent.
pub fn copy_id(list_message: &Token, push: &Token) -> Token {
    let mut id = *list_message;
    for (a, b) in id.iter_mut().zip(push) {
        *a ^= b;
    }
    id
}

impl ListPush {
    /// Rebuilds the templates of a stored list message.
    pub fn new(msg: ListMessage) -> Result<ListPush, StoreError> {
        let template = match &msg.body {
            ListBody::Empty => Template::Empty,
            ListBody::Compact(t) => Template::Compact(
                CompactTemplate::from_stored(t).map_err(|_| StoreError::Corrupt("list message"))?,
            ),
            ListBody::Json(t) => Template::Json(
                JsonTemplate::from_stored(t).map_err(|_| StoreError::Corrupt("list message"))?,
            ),
        };
        let encoded = match &template {
            Template::Empty => None,
            Template::Compact(t) => {
                let [head, _, tail] = t.member_parts("");
                Some(Spliced::new(head, tail))
            }
            Template::Json(t) => Some(Spliced::new(
                t.as_str().as_bytes(),
                JsonTemplate::SUFFIX.as_bytes(),
            )),
        };
        let encoding = match &template {
            Template::Empty => Encoding::None,
            Template::Compact(_) => Encoding::Jose(CONTENT_TYPE_COMPACT.into()),
            Template::Json(_) => Encoding::Jose(CONTENT_TYPE_JSON.into()),
        };
        Ok(ListPush {
            msg,
            template,
            encoded,
            encoding,
        })
    }

    /// Whether a member's key fits this message's algorithms (when known),
    /// and its header the message's shared headers. A member with no key
    /// gets the JWE with an empty key (docs/protocol.md §4).
    pub fn key_fits(&self, m: &ListMember) -> bool {
        let (key, header) = m.key_for(self.msg.seq);
        // A JSON JWE member's header is read once: a header that repeats a
        // shared parameter makes no valid JWE; its `alg` may size the key.
        let header_alg = match (&self.template, header) {
            (Template::Json(t), Some(h)) => match t.member_header_alg(h) {
                Some(alg) => alg,
                None => return false,
            },
            _ => None,
        };
        let Some(key) = key else {
            return true;
        };
        let key_len = shared::b64::decoded_len(key);
        let (alg, enc): (Option<Alg>, _) = match &self.template {
            Template::Empty => return true,
            Template::Compact(t) => (Some(t.alg), t.enc),
            Template::Json(t) => (t.shared_alg.or(header_alg), t.enc),
        };
        alg.is_none_or(|a| a.key_len_fits(enc, key_len))
    }

    /// A member's copy as a message, its body assembled now.
    pub fn copy_for(&self, m: &ListMember) -> Message {
        let mut body = Vec::new();
        self.write_body(m, &mut body);
        Message {
            body: Bytes::from(body),
            ..self.copy_head(m)
        }
    }

    /// Appends a member's copy's body to `out`: the shared parts with the
    /// key the member had when the message was pushed.
    fn write_body(&self, m: &ListMember, out: &mut Vec<u8>) {
        let (key, header) = m.key_for(self.msg.seq);
        match &self.template {
            Template::Empty => {}
            Template::Compact(t) => t.write_member(key.unwrap_or(""), out),
            Template::Json(t) => t.write_member(key, header, out),
        }
    }

    /// Appends the base64url encoding of a member's copy's body to `out`
    /// (nothing for a message without a body): the shared parts were encoded
    /// once; only the member's part is encoded now, in `scratch`.
    pub fn write_body_b64(
        &self,
        m: &ListMember,
        scratch: &mut (Vec<u8>, Vec<u8>),
        out: &mut Vec<u8>,
    ) {
        let Some(enc) = &self.encoded else { return };
        let (key, header) = m.key_for(self.msg.seq);
        let (middle, chunk) = scratch;
        middle.clear();
        match &self.template {
            Template::Empty => return,
            Template::Compact(_) => middle.extend_from_slice(key.unwrap_or("").as_bytes()),
            Template::Json(t) => t.write_recipient(key, header, middle),
        }
        enc.encode_into(middle, chunk, out);
    }

    /// Whether copies have a body.
    pub fn has_body(&self) -> bool {
        self.encoded.is_some()
    }

    /// Every copy's encoding.
    pub fn encoding(&self) -> &Encoding {
        &self.encoding
    }

    /// The version of `m`'s copy.
    pub fn copy_id(&self, m: &ListMember) -> Token {
        copy_id(&self.msg.id, &m.push)
    }

    /// A member's copy without its body ([`ListPush::write_body`] writes it).
    fn copy_head(&self, m: &ListMember) -> Message {
        Message {
            id: self.copy_id(m),
            uaid: m.uaid,
            push: m.push,
            channel: m.channel,
            seq: 0,
            expires: self.msg.expires,
            urgency: self.msg.urgency,
            topic: self.msg.topic.clone(),
            receipt: None,
            encoding: self.encoding.clone(),
            body: Bytes::new(),
            list_message: Some(self.msg.id),
        }
    }

    /// Whether this message is for `m`: it joined before, and had not dropped out.
    pub fn is_for(&self, m: &ListMember) -> bool {
        m.joined < self.msg.seq && m.expires.is_none_or(|e| e > self.msg.created as i64)
    }
}

/// List pushes the cache holds at most (emptied when full): a storm of
/// devices in many lists with long backlogs finds each message parsed.
const CACHED: usize = 4096;

/// Recently used list pushes, so that reconnecting devices share one parse.
#[derive(Default)]
pub struct Cache(Mutex<HashMap<Token, Arc<ListPush>>>);

impl Cache {
    /// The parsed list push for a stored list message.
    pub fn get(&self, msg: ListMessage) -> Result<Arc<ListPush>, StoreError> {
        let mut map = self.0.lock().expect("cache lock");
        if let Some(p) = map.get(&msg.id) {
            return Ok(p.clone());
        }
        if map.len() >= CACHED {
            map.clear();
        }
        let p = Arc::new(ListPush::new(msg)?);
        map.insert(p.msg.id, p.clone());
        Ok(p)
    }

    /// The parsed list push of list message `id`, read from `store` if it
    /// is not held (`None`: there is none).
    pub fn by_id(
        &self,
        id: &Token,
        store: &dyn crate::store::Store,
    ) -> Result<Option<Arc<ListPush>>, StoreError> {
        if let Some(p) = self.0.lock().expect("cache lock").get(id) {
            return Ok(Some(p.clone()));
        }
        match store.list_message(id)? {
            Some(m) => self.get(m).map(Some),
            None => Ok(None),
        }
    }
}
