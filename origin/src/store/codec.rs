//! The binary layout of stored records: fixed fields first, then
//! length-prefixed ones. A leading version byte leaves room to evolve.

use super::{
    Encoding, KeyVersion, List, ListBody, ListMember, ListMessage, Message, StoreError,
    Subscription, UaKind, UserAgent,
};
use crate::tokens::Token;
use bytes::Bytes;
use shared::headers::Urgency;

const VERSION: u8 = 1;

/// Appends fields to a record.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    fn new(cap: usize) -> Writer {
        let mut v = Vec::with_capacity(cap + 1);
        v.push(VERSION);
        Writer(v)
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn token(&mut self, t: &Token) -> &mut Self {
        self.0.extend_from_slice(t);
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn opt_bytes(&mut self, b: Option<&[u8]>) -> &mut Self {
        match b {
            None => self.u8(0),
            Some(b) => self.u8(1).bytes(b),
        }
    }
}

/// Reads fields back, failing on a short or malformed record.
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Result<Reader<'a>, StoreError> {
        match buf.split_first() {
            Some((&VERSION, rest)) => Ok(Reader { buf: rest, what }),
            _ => Err(StoreError::Corrupt(what)),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(StoreError::Corrupt(self.what));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn token(&mut self) -> Result<Token, StoreError> {
        Ok(self.take(16)?.try_into().expect("16 bytes"))
    }
    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let n = u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        self.take(n)
    }
    fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, StoreError> {
        match self.u8()? {
            0 => Ok(None),
            _ => Ok(Some(self.bytes()?)),
        }
    }
    fn opt_token(&mut self) -> Result<Option<Token>, StoreError> {
        match self.opt_bytes()? {
            None => Ok(None),
            Some(t) => Ok(Some(
                t.try_into().map_err(|_| StoreError::Corrupt(self.what))?,
            )),
        }
    }
    fn opt_string(&mut self) -> Result<Option<String>, StoreError> {
        match self.opt_bytes()? {
            None => Ok(None),
            Some(b) => Ok(Some(
                String::from_utf8(b.to_vec()).map_err(|_| StoreError::Corrupt(self.what))?,
            )),
        }
    }
    fn string(&mut self) -> Result<String, StoreError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| StoreError::Corrupt(self.what))
    }
}

/// Encodes a subscription.
pub fn subscription(s: &Subscription) -> Vec<u8> {
    let mut w = Writer::new(140);
    w.token(&s.push)
        .token(&s.uaid)
        .token(&s.channel)
        .token(&s.resource)
        .u64(s.created)
        .opt_bytes(s.vapid.as_ref().map(|k| &k[..]));
    w.0
}

/// Decodes a subscription.
pub fn read_subscription(b: &[u8]) -> Result<Subscription, StoreError> {
    let mut r = Reader::new(b, "subscription")?;
    Ok(Subscription {
        push: r.token()?,
        uaid: r.token()?,
        channel: r.token()?,
        resource: r.token()?,
        created: r.u64()?,
        vapid: match r.opt_bytes()? {
            None => None,
            Some(k) => Some(
                k.try_into()
                    .map_err(|_| StoreError::Corrupt("subscription"))?,
            ),
        },
    })
}

/// Encodes a user agent.
pub fn user_agent(u: &UserAgent) -> Vec<u8> {
    let mut w = Writer::new(34);
    w.token(&u.uaid).u8(u.kind as u8).u64(u.created).u64(u.seen);
    w.0
}

/// Decodes a user agent.
pub fn read_user_agent(b: &[u8]) -> Result<UserAgent, StoreError> {
    let mut r = Reader::new(b, "user agent")?;
    let uaid = r.token()?;
    let kind = match r.u8()? {
        1 => UaKind::WebSocket,
        2 => UaKind::Http2,
        3 => UaKind::Receipts,
        _ => return Err(StoreError::Corrupt("user agent")),
    };
    let created = r.u64()?;
    // A record written before the idle expiry: seen when created.
    let seen = match r.buf.is_empty() {
        true => super::day_of(created),
        false => r.u64()?,
    };
    Ok(UserAgent {
        uaid,
        kind,
        created,
        seen,
    })
}

fn urgency_byte(u: Urgency) -> u8 {
    u as u8
}

fn urgency_from(b: u8) -> Result<Urgency, StoreError> {
    Ok(match b {
        0 => Urgency::VeryLow,
        1 => Urgency::Low,
        2 => Urgency::Normal,
        3 => Urgency::High,
        _ => return Err(StoreError::Corrupt("message")),
    })
}

/// Encodes a message.
pub fn message(m: &Message) -> Vec<u8> {
    let mut w = Writer::new(120 + m.body.len());
    w.token(&m.id)
        .token(&m.uaid)
        .token(&m.push)
        .token(&m.channel)
        .u64(m.seq)
        .u64(m.expires)
        .u8(urgency_byte(m.urgency))
        .opt_bytes(m.topic.as_deref().map(str::as_bytes))
        .opt_bytes(m.receipt.as_ref().map(|t| &t[..]));
    match &m.encoding {
        Encoding::None => w.u8(0),
        Encoding::Aes128gcm => w.u8(1),
        Encoding::Aesgcm {
            encryption,
            crypto_key,
        } => w
            .u8(2)
            .bytes(encryption.as_bytes())
            .bytes(crypto_key.as_bytes()),
        Encoding::Jose(ct) => w.u8(3).bytes(ct.as_bytes()),
        Encoding::Receipt => w.u8(4),
        Encoding::ListReceipt => w.u8(5),
    };
    w.bytes(&m.body)
        .opt_bytes(m.list_message.as_ref().map(|t| &t[..]));
    w.0
}

/// Decodes a message.
pub fn read_message(b: &[u8]) -> Result<Message, StoreError> {
    let mut r = Reader::new(b, "message")?;
    let id = r.token()?;
    let uaid = r.token()?;
    let push = r.token()?;
    let channel = r.token()?;
    let seq = r.u64()?;
    let expires = r.u64()?;
    let urgency = urgency_from(r.u8()?)?;
    let topic = match r.opt_bytes()? {
        None => None,
        Some(t) => Some(String::from_utf8(t.to_vec()).map_err(|_| StoreError::Corrupt("message"))?),
    };
    let receipt = match r.opt_bytes()? {
        None => None,
        Some(t) => Some(t.try_into().map_err(|_| StoreError::Corrupt("message"))?),
    };
    let encoding = match r.u8()? {
        0 => Encoding::None,
        1 => Encoding::Aes128gcm,
        2 => Encoding::Aesgcm {
            encryption: r.string()?,
            crypto_key: r.string()?,
        },
        3 => Encoding::Jose(r.string()?),
        4 => Encoding::Receipt,
        5 => Encoding::ListReceipt,
        _ => return Err(StoreError::Corrupt("message")),
    };
    let body = Bytes::copy_from_slice(r.bytes()?);
    let list_message = r.opt_token()?;
    Ok(Message {
        id,
        uaid,
        push,
        channel,
        seq,
        expires,
        urgency,
        topic,
        receipt,
        encoding,
        body,
        list_message,
    })
}

/// Encodes a list.
pub fn list(l: &List) -> Vec<u8> {
    let mut w = Writer::new(110);
    w.token(&l.token)
        .u64(u64::from(l.partition))
        .u64(l.created)
        .u64(l.members)
        .opt_bytes(l.owner.as_ref().map(|k| &k[..]));
    w.0
}

/// Decodes a list.
pub fn read_list(b: &[u8]) -> Result<List, StoreError> {
    let mut r = Reader::new(b, "list")?;
    Ok(List {
        token: r.token()?,
        partition: r.u64()? as u32,
        created: r.u64()?,
        members: r.u64()?,
        owner: match r.opt_bytes()? {
            None => None,
            Some(k) => Some(k.try_into().map_err(|_| StoreError::Corrupt("list"))?),
        },
    })
}

/// Encodes a list member.
pub fn member(m: &ListMember) -> Vec<u8> {
    let mut w = Writer::new(100);
    w.token(&m.push)
        .token(&m.uaid)
        .token(&m.channel)
        .u64(m.joined)
        .opt_bytes(m.expires.map(|e| e.to_be_bytes()).as_ref().map(|b| &b[..]))
        .opt_bytes(m.encrypted_key.as_deref().map(str::as_bytes))
        .opt_bytes(m.header.as_deref().map(str::as_bytes))
        .u8(m.previous.len() as u8);
    for v in &m.previous {
        w.u64(v.until)
            .opt_bytes(v.encrypted_key.as_deref().map(str::as_bytes))
            .opt_bytes(v.header.as_deref().map(str::as_bytes));
    }
    w.0
}

/// Decodes a list member.
pub fn read_member(b: &[u8]) -> Result<ListMember, StoreError> {
    let mut r = Reader::new(b, "list member")?;
    Ok(ListMember {
        push: r.token()?,
        uaid: r.token()?,
        channel: r.token()?,
        joined: r.u64()?,
        expires: match r.opt_bytes()? {
            None => None,
            Some(e) => Some(i64::from_be_bytes(
                e.try_into()
                    .map_err(|_| StoreError::Corrupt("list member"))?,
            )),
        },
        encrypted_key: r.opt_string()?,
        header: r.opt_string()?,
        previous: {
            let n = r.u8()?;
            let mut v = Vec::with_capacity(n as usize);
            for _ in 0..n {
                v.push(KeyVersion {
                    until: r.u64()?,
                    encrypted_key: r.opt_string()?,
                    header: r.opt_string()?,
                });
            }
            v
        },
    })
}

/// Encodes a list message.
pub fn list_message(m: &ListMessage) -> Vec<u8> {
    let mut w = Writer::new(120);
    w.token(&m.id)
        .token(&m.list)
        .u64(m.seq)
        .u64(m.created)
        .u64(m.expires)
        .u8(urgency_byte(m.urgency))
        .opt_bytes(m.topic.as_deref().map(str::as_bytes))
        .u64(m.members)
        .u64(m.failed)
        .u8(u8::from(m.fanout_done));
    match &m.body {
        ListBody::Empty => w.u8(0),
        ListBody::Compact(t) => w.u8(1).bytes(t.as_bytes()),
        ListBody::Json(t) => w.u8(2).bytes(t.as_bytes()),
    };
    w.opt_bytes(m.receipt.as_ref().map(|t| &t[..]));
    w.0
}

/// Decodes a list message.
pub fn read_list_message(b: &[u8]) -> Result<ListMessage, StoreError> {
    let mut r = Reader::new(b, "list message")?;
    let mut m = ListMessage {
        id: r.token()?,
        list: r.token()?,
        seq: r.u64()?,
        created: r.u64()?,
        expires: r.u64()?,
        urgency: urgency_from(r.u8()?)?,
        topic: r.opt_string()?,
        members: r.u64()?,
        failed: r.u64()?,
        fanout_done: r.u8()? != 0,
        body: match r.u8()? {
            0 => ListBody::Empty,
            1 => ListBody::Compact(r.string()?),
            2 => ListBody::Json(r.string()?),
            _ => return Err(StoreError::Corrupt("list message")),
        },
        receipt: None,
    };
    // Records written before list receipts end here.
    if !r.buf.is_empty() {
        m.receipt = r.opt_token()?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let s = Subscription {
            push: [1; 16],
            uaid: [2; 16],
            channel: [3; 16],
            resource: [4; 16],
            vapid: Some([4; 65]),
            created: 7,
        };
        assert_eq!(read_subscription(&subscription(&s)).unwrap(), s);
        let u = UserAgent {
            uaid: [9; 16],
            kind: UaKind::Http2,
            created: 3,
            seen: 86_400,
        };
        assert_eq!(read_user_agent(&user_agent(&u)).unwrap(), u);
        let m = Message {
            id: [5; 16],
            uaid: [2; 16],
            push: [1; 16],
            channel: [3; 16],
            seq: 42,
            expires: 99,
            urgency: Urgency::High,
            topic: Some("t".into()),
            receipt: Some([8; 16]),
            encoding: Encoding::Aesgcm {
                encryption: "salt=x".into(),
                crypto_key: "dh=y".into(),
            },
            body: Bytes::from_static(b"body"),
            list_message: Some([6; 16]),
        };
        let enc = message(&m);
        assert_eq!(read_message(&enc).unwrap(), m);
        assert!(read_message(&enc[..enc.len() - 1]).is_err());
        assert!(read_message(&[]).is_err());
        let l = List {
            token: [1; 16],
            owner: Some([4; 65]),
            partition: 3,
            created: 9,
            members: 2,
        };
        assert_eq!(read_list(&list(&l)).unwrap(), l);
        let mb = ListMember {
            push: [1; 16],
            uaid: [2; 16],
            channel: [3; 16],
            joined: 5,
            expires: Some(-1),
            encrypted_key: Some("k".into()),
            header: None,
            previous: vec![KeyVersion {
                until: 4,
                encrypted_key: None,
                header: Some("{}".into()),
            }],
        };
        assert_eq!(read_member(&member(&mb)).unwrap(), mb);
        let lm = ListMessage {
            id: [1; 16],
            list: [2; 16],
            seq: 3,
            created: 4,
            expires: 5,
            urgency: Urgency::Low,
            topic: None,
            body: ListBody::Compact("a..b.c.d".into()),
            members: 7,
            failed: 1,
            fanout_done: true,
            receipt: Some([8; 16]),
        };
        assert_eq!(read_list_message(&list_message(&lm)).unwrap(), lm);
        // A record written before list receipts reads with none.
        let mut old = list_message(&lm);
        old.truncate(old.len() - 1 - 4 - 16);
        let read = read_list_message(&old).unwrap();
        assert_eq!((read.receipt, read.fanout_done), (None, true));
    }
}
