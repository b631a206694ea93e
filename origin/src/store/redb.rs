//! The embedded store on redb: one file, ACID commits, fsync on commit.

use super::codec;
use super::{Message, Op, Store, StoreError, Subscription, UserAgent};
use crate::tokens::Token;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// push → subscription.
const SUBS: Table = TableDefinition::new("subscriptions");
/// subscription resource → push.
const SUB_RESOURCES: Table = TableDefinition::new("subscription_resources");
/// uaid ‖ channel → push.
const UA_SUBS: Table = TableDefinition::new("ua_subscriptions");
/// uaid → user agent.
const UAS: Table = TableDefinition::new("user_agents");
/// uaid ‖ seq → message.
const MSGS: Table = TableDefinition::new("messages");
/// message id → uaid ‖ seq.
const MSG_IDS: Table = TableDefinition::new("message_ids");
/// push ‖ topic → message id.
const TOPICS: Table = TableDefinition::new("topics");
/// expires ‖ uaid ‖ seq → message id.
const EXPIRY: Table = TableDefinition::new("expiry");
/// name → counter.
const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");

fn err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn cat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    for p in parts {
        out[i..i + p.len()].copy_from_slice(p);
        i += p.len();
    }
    debug_assert_eq!(i, N);
    out
}

fn msg_key(uaid: &Token, seq: u64) -> [u8; 24] {
    cat(&[uaid, &seq.to_be_bytes()])
}

fn topic_key(push: &Token, topic: &str) -> Vec<u8> {
    [&push[..], topic.as_bytes()].concat()
}

fn expiry_key(m: &Message) -> [u8; 32] {
    cat(&[&m.expires.to_be_bytes(), &m.uaid, &m.seq.to_be_bytes()])
}

/// Upper bound of keys that start with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.extend_from_slice(&[0xff; 33]);
    end
}

/// The redb-backed store.
pub struct RedbStore {
    db: Database,
    seq: AtomicU64,
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let db = Database::builder()
            .create(dir.join("push.redb"))
            .map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        let seq = {
            for t in [SUBS, SUB_RESOURCES, UA_SUBS, UAS, MSGS, MSG_IDS, TOPICS, EXPIRY] {
                txn.open_table(t).map_err(err)?;
            }
            let meta = txn.open_table(META).map_err(err)?;
            let v = meta.get("seq").map_err(err)?.map(|g| g.value());
            v.unwrap_or(0)
        };
        txn.commit().map_err(err)?;
        Ok(RedbStore {
            db,
            seq: AtomicU64::new(seq + 1),
        })
    }

    fn read<T>(
        &self,
        table: Table,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(table).map_err(err)?;
        let v = t.get(key).map_err(err)?;
        v.map(|g| decode(g.value())).transpose()
    }
}

/// The tables of one write transaction.
struct Tables<'t> {
    subs: redb::Table<'t, &'static [u8], &'static [u8]>,
    resources: redb::Table<'t, &'static [u8], &'static [u8]>,
    ua_subs: redb::Table<'t, &'static [u8], &'static [u8]>,
    uas: redb::Table<'t, &'static [u8], &'static [u8]>,
    msgs: redb::Table<'t, &'static [u8], &'static [u8]>,
    ids: redb::Table<'t, &'static [u8], &'static [u8]>,
    topics: redb::Table<'t, &'static [u8], &'static [u8]>,
    expiry: redb::Table<'t, &'static [u8], &'static [u8]>,
}

impl Tables<'_> {
    fn remove_message_at(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let Some(raw) = self.msgs.remove(key).map_err(err)? else {
            return Ok(());
        };
        let m = codec::read_message(raw.value())?;
        drop(raw);
        self.ids.remove(&m.id[..]).map_err(err)?;
        self.expiry.remove(&expiry_key(&m)[..]).map_err(err)?;
        if let Some(t) = &m.topic {
            let tk = topic_key(&m.push, t);
            let same = self
                .topics
                .get(&tk[..])
                .map_err(err)?
                .is_some_and(|g| g.value() == m.id);
            if same {
                self.topics.remove(&tk[..]).map_err(err)?;
            }
        }
        Ok(())
    }

    fn remove_message(&mut self, id: &Token) -> Result<(), StoreError> {
        let key = self.ids.get(&id[..]).map_err(err)?.map(|g| g.value().to_vec());
        match key {
            Some(k) => self.remove_message_at(&k),
            None => Ok(()),
        }
    }

    fn put_message(&mut self, m: &Message) -> Result<(), StoreError> {
        if let Some(t) = &m.topic {
            let tk = topic_key(&m.push, t);
            let old = self.topics.get(&tk[..]).map_err(err)?.map(|g| g.value().to_vec());
            if let Some(old) = old {
                let old: Token = old.try_into().map_err(|_| StoreError::Corrupt("topic"))?;
                self.remove_message(&old)?;
            }
            self.topics.insert(&tk[..], &m.id[..]).map_err(err)?;
        }
        let key = msg_key(&m.uaid, m.seq);
        self.msgs
            .insert(&key[..], &codec::message(m)[..])
            .map_err(err)?;
        self.ids.insert(&m.id[..], &key[..]).map_err(err)?;
        self.expiry
            .insert(&expiry_key(m)[..], &m.id[..])
            .map_err(err)?;
        Ok(())
    }

    /// Removes every message of `uaid` for which `pred` holds.
    fn remove_messages_of(
        &mut self,
        uaid: &Token,
        pred: impl Fn(&Message) -> bool,
    ) -> Result<(), StoreError> {
        let end = prefix_end(uaid);
        let mut doomed = Vec::new();
        for kv in self.msgs.range(&uaid[..]..&end[..]).map_err(err)? {
            let (k, v) = kv.map_err(err)?;
            if pred(&codec::read_message(v.value())?) {
                doomed.push(k.value().to_vec());
            }
        }
        for k in doomed {
            self.remove_message_at(&k)?;
        }
        Ok(())
    }

    fn delete_subscription(&mut self, push: &Token) -> Result<(), StoreError> {
        let Some(raw) = self.subs.remove(&push[..]).map_err(err)? else {
            return Ok(());
        };
        let s = codec::read_subscription(raw.value())?;
        drop(raw);
        self.resources.remove(&s.resource[..]).map_err(err)?;
        let uk: [u8; 32] = cat(&[&s.uaid, &s.channel]);
        self.ua_subs.remove(&uk[..]).map_err(err)?;
        self.remove_messages_of(&s.uaid, |m| m.push == s.push)
    }

    fn delete_ua(&mut self, uaid: &Token) -> Result<(), StoreError> {
        self.uas.remove(&uaid[..]).map_err(err)?;
        let end = prefix_end(uaid);
        let mut pushes = Vec::new();
        for kv in self.ua_subs.range(&uaid[..]..&end[..]).map_err(err)? {
            let (_, v) = kv.map_err(err)?;
            pushes.push(v.value().to_vec());
        }
        for p in pushes {
            let p: Token = p.try_into().map_err(|_| StoreError::Corrupt("ua subscription"))?;
            self.delete_subscription(&p)?;
        }
        self.remove_messages_of(uaid, |_| true)
    }

    fn apply(&mut self, op: &Op) -> Result<(), StoreError> {
        match op {
            Op::PutUa(u) => {
                self.uas
                    .insert(&u.uaid[..], &codec::user_agent(u)[..])
                    .map_err(err)?;
            }
            Op::DeleteUa(uaid) => self.delete_ua(uaid)?,
            Op::PutSubscription(s) => {
                self.subs
                    .insert(&s.push[..], &codec::subscription(s)[..])
                    .map_err(err)?;
                self.resources
                    .insert(&s.resource[..], &s.push[..])
                    .map_err(err)?;
                let uk: [u8; 32] = cat(&[&s.uaid, &s.channel]);
                self.ua_subs.insert(&uk[..], &s.push[..]).map_err(err)?;
            }
            Op::DeleteSubscription(push) => self.delete_subscription(push)?,
            Op::PutMessage(m) => self.put_message(m)?,
            Op::DeleteMessage(id) => self.remove_message(id)?,
        }
        Ok(())
    }
}

impl Store for RedbStore {
    fn apply(&self, ops: &[&Op]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut t = Tables {
                subs: txn.open_table(SUBS).map_err(err)?,
                resources: txn.open_table(SUB_RESOURCES).map_err(err)?,
                ua_subs: txn.open_table(UA_SUBS).map_err(err)?,
                uas: txn.open_table(UAS).map_err(err)?,
                msgs: txn.open_table(MSGS).map_err(err)?,
                ids: txn.open_table(MSG_IDS).map_err(err)?,
                topics: txn.open_table(TOPICS).map_err(err)?,
                expiry: txn.open_table(EXPIRY).map_err(err)?,
            };
            for op in ops {
                t.apply(op)?;
            }
            let mut meta = txn.open_table(META).map_err(err)?;
            meta.insert("seq", self.seq.load(Ordering::SeqCst))
                .map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst)
    }

    fn subscription(&self, push: &Token) -> Result<Option<Subscription>, StoreError> {
        self.read(SUBS, push, codec::read_subscription)
    }

    fn subscription_by_resource(
        &self,
        resource: &Token,
    ) -> Result<Option<Subscription>, StoreError> {
        let push = self.read(SUB_RESOURCES, resource, |v| Ok(v.to_vec()))?;
        match push {
            Some(p) => self.read(SUBS, &p, codec::read_subscription),
            None => Ok(None),
        }
    }

    fn subscription_by_channel(
        &self,
        uaid: &Token,
        channel: &Token,
    ) -> Result<Option<Subscription>, StoreError> {
        let uk: [u8; 32] = cat(&[uaid, channel]);
        let push = self.read(UA_SUBS, &uk, |v| Ok(v.to_vec()))?;
        match push {
            Some(p) => self.read(SUBS, &p, codec::read_subscription),
            None => Ok(None),
        }
    }

    fn subscriptions_of(&self, uaid: &Token) -> Result<Vec<Subscription>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let ua_subs = txn.open_table(UA_SUBS).map_err(err)?;
        let subs = txn.open_table(SUBS).map_err(err)?;
        let end = prefix_end(uaid);
        let mut out = Vec::new();
        for kv in ua_subs.range(&uaid[..]..&end[..]).map_err(err)? {
            let (_, push) = kv.map_err(err)?;
            if let Some(s) = subs.get(push.value()).map_err(err)? {
                out.push(codec::read_subscription(s.value())?);
            }
        }
        Ok(out)
    }

    fn user_agent(&self, uaid: &Token) -> Result<Option<UserAgent>, StoreError> {
        self.read(UAS, uaid, codec::read_user_agent)
    }

    fn messages(
        &self,
        uaid: &Token,
        after_seq: u64,
        now: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let msgs = txn.open_table(MSGS).map_err(err)?;
        let start = msg_key(uaid, after_seq.saturating_add(1));
        let end = msg_key(uaid, u64::MAX);
        let mut out = Vec::new();
        for kv in msgs.range(&start[..]..=&end[..]).map_err(err)? {
            let (_, v) = kv.map_err(err)?;
            let m = codec::read_message(v.value())?;
            if m.expires > now {
                out.push(m);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn message(&self, id: &Token) -> Result<Option<Message>, StoreError> {
        let key = self.read(MSG_IDS, id, |v| Ok(v.to_vec()))?;
        match key {
            Some(k) => self.read(MSGS, &k, codec::read_message),
            None => Ok(None),
        }
    }

    fn expired(&self, now: u64, limit: usize) -> Result<Vec<Token>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(EXPIRY).map_err(err)?;
        let end = (now + 1).to_be_bytes();
        let mut out = Vec::new();
        for kv in t.range(&[][..]..&end[..]).map_err(err)?.take(limit) {
            let (_, v) = kv.map_err(err)?;
            out.push(v.value().try_into().map_err(|_| StoreError::Corrupt("expiry"))?);
        }
        Ok(out)
    }

    fn message_count(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(MSGS).map_err(err)?;
        t.len().map_err(err)
    }
}
