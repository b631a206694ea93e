//! The embedded store on redb: one file, ACID commits, fsync on commit.

use super::codec;
use super::{
    Encoding, ExpiredListItems, List, ListMember, ListMessage, Message, Op, Store, StoreCounts,
    StoreError, Subscription, UserAgent,
};
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
/// list → list record.
const LISTS: Table = TableDefinition::new("lists");
/// list ‖ push → member.
const LIST_MEMBERS: Table = TableDefinition::new("list_members");
/// push ‖ list → (): the lists a subscription belongs to.
const SUB_LISTS: Table = TableDefinition::new("subscription_lists");
/// owner key ‖ list → ().
const OWNER_LISTS: Table = TableDefinition::new("owner_lists");
/// list message id → list message.
const LIST_MSGS: Table = TableDefinition::new("list_messages");
/// list ‖ seq → list message id.
const LIST_MSG_SEQ: Table = TableDefinition::new("list_message_seq");
/// list message ‖ push → (): acknowledged copies.
const COPY_ACKS: Table = TableDefinition::new("copy_acks");
/// push ‖ seq → (): a subscription's stored messages, oldest first.
const PUSH_MSGS: Table = TableDefinition::new("push_messages");
/// (expires + grace) ‖ list message id → (): when a list message's record goes.
const LIST_MSG_EXPIRY: Table = TableDefinition::new("list_message_expiry");
/// expires ‖ list ‖ push → (): when a member drops out.
const MEMBER_EXPIRY: Table = TableDefinition::new("member_expiry");
/// List messages whose fan-out has not finished: id → ().
const FANOUTS: Table = TableDefinition::new("unfinished_fanouts");
/// Receipt subscription → how many receipts it holds (u64, big-endian).
const RECEIPTS_HELD: Table = TableDefinition::new("receipts_held");
/// The `META` key set once `RECEIPTS_HELD` counts every stored receipt.
const RECEIPTS_COUNTED: &str = "receipts_counted";
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
    max_per_subscription: usize,
    max_receipts: usize,
    path: std::path::PathBuf,
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`, keeping at most
    /// `max_stored_per_subscription` undelivered messages for one
    /// subscription, `max_stored_receipts` receipts for one receipt
    /// subscription, and at most `cache_bytes` of the file's pages in memory.
    pub fn open(
        dir: &Path,
        limits: &shared::limits::Limits,
        cache_bytes: usize,
    ) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let path = dir.join("push.redb");
        let mut builder = Database::builder();
        builder.set_cache_size(cache_bytes);
        let db = builder.create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked,
            e => err(e),
        })?;
        let txn = db.begin_write().map_err(err)?;
        let seq = {
            for t in [
                SUBS,
                SUB_RESOURCES,
                UA_SUBS,
                UAS,
                MSGS,
                MSG_IDS,
                TOPICS,
                EXPIRY,
                LISTS,
                LIST_MEMBERS,
                SUB_LISTS,
                OWNER_LISTS,
                LIST_MSGS,
                LIST_MSG_SEQ,
                COPY_ACKS,
                LIST_MSG_EXPIRY,
                MEMBER_EXPIRY,
                PUSH_MSGS,
                FANOUTS,
                RECEIPTS_HELD,
            ] {
                txn.open_table(t).map_err(err)?;
            }
            let mut meta = txn.open_table(META).map_err(err)?;
            // Stores from before receipts were counted: count them once.
            if meta.get(RECEIPTS_COUNTED).map_err(err)?.is_none() {
                count_receipts(&txn)?;
                meta.insert(RECEIPTS_COUNTED, 1).map_err(err)?;
            }
            let v = meta.get("seq").map_err(err)?.map(|g| g.value());
            v.unwrap_or(0)
        };
        txn.commit().map_err(err)?;
        Ok(RedbStore {
            db,
            seq: AtomicU64::new(seq + 1),
            max_per_subscription: limits.max_stored_per_subscription.max(1),
            max_receipts: limits.max_stored_receipts.max(1),
            path,
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
    lists: redb::Table<'t, &'static [u8], &'static [u8]>,
    members: redb::Table<'t, &'static [u8], &'static [u8]>,
    sub_lists: redb::Table<'t, &'static [u8], &'static [u8]>,
    owner_lists: redb::Table<'t, &'static [u8], &'static [u8]>,
    list_msgs: redb::Table<'t, &'static [u8], &'static [u8]>,
    list_msg_seq: redb::Table<'t, &'static [u8], &'static [u8]>,
    copy_acks: redb::Table<'t, &'static [u8], &'static [u8]>,
    list_msg_expiry: redb::Table<'t, &'static [u8], &'static [u8]>,
    member_expiry: redb::Table<'t, &'static [u8], &'static [u8]>,
    push_msgs: redb::Table<'t, &'static [u8], &'static [u8]>,
    fanouts: redb::Table<'t, &'static [u8], &'static [u8]>,
    receipts_held: redb::Table<'t, &'static [u8], &'static [u8]>,
    /// Most messages kept for one subscription.
    max_per_push: usize,
    /// Most receipts kept for one receipt subscription.
    max_receipts: usize,
}

/// How long a list message's status outlives its TTL.
pub const LIST_MESSAGE_GRACE: u64 = 24 * 3600;

fn member_expiry_key(expires: i64, list: &Token, push: &Token) -> [u8; 40] {
    cat(&[&(expires.max(0) as u64).to_be_bytes(), list, push])
}

/// Fills `RECEIPTS_HELD` from the stored messages of every receipt
/// subscription (done once, for a store written before it was kept).
fn count_receipts(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let uas = txn.open_table(UAS).map_err(err)?;
    let msgs = txn.open_table(MSGS).map_err(err)?;
    let mut held = txn.open_table(RECEIPTS_HELD).map_err(err)?;
    for kv in uas.iter().map_err(err)? {
        let (_, v) = kv.map_err(err)?;
        let ua = codec::read_user_agent(v.value())?;
        if ua.kind != super::UaKind::Receipts {
            continue;
        }
        let end = prefix_end(&ua.uaid);
        let n = msgs.range(&ua.uaid[..]..&end[..]).map_err(err)?.count() as u64;
        if n > 0 {
            held.insert(&ua.uaid[..], &n.to_be_bytes()[..])
                .map_err(err)?;
        }
    }
    Ok(())
}

/// Keys of a table in `[prefix, prefix‖ff…)`.
fn keys_with_prefix(
    t: &redb::Table<'_, &'static [u8], &'static [u8]>,
    prefix: &[u8],
) -> Result<Vec<Vec<u8>>, StoreError> {
    let end = prefix_end(prefix);
    let mut out = Vec::new();
    for kv in t.range(prefix..&end[..]).map_err(err)? {
        out.push(kv.map_err(err)?.0.value().to_vec());
    }
    Ok(out)
}

impl Tables<'_> {
    fn remove_message_at(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let Some(raw) = self.msgs.remove(key).map_err(err)? else {
            return Ok(());
        };
        let m = codec::read_message(raw.value())?;
        drop(raw);
        if m.encoding == Encoding::Receipt {
            self.count_receipt(&m.uaid, -1)?;
        }
        self.ids.remove(&m.id[..]).map_err(err)?;
        self.expiry.remove(&expiry_key(&m)[..]).map_err(err)?;
        self.push_msgs
            .remove(&msg_key(&m.push, m.seq)[..])
            .map_err(err)?;
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

    /// Adds `by` to the receipts a receipt subscription holds; the count
    /// after (a store from before the count was kept is counted at `open`).
    fn count_receipt(&mut self, to: &Token, by: i64) -> Result<u64, StoreError> {
        let old = self.receipts_held.get(&to[..]).map_err(err)?.map(|g| {
            let v = g.value();
            v.try_into().map(u64::from_be_bytes).unwrap_or(0)
        });
        let n = old.unwrap_or(0).saturating_add_signed(by);
        if n == 0 {
            self.receipts_held.remove(&to[..]).map_err(err)?;
        } else {
            self.receipts_held
                .insert(&to[..], &n.to_be_bytes()[..])
                .map_err(err)?;
        }
        Ok(n)
    }

    fn remove_message(&mut self, id: &Token) -> Result<(), StoreError> {
        let key = self
            .ids
            .get(&id[..])
            .map_err(err)?
            .map(|g| g.value().to_vec());
        match key {
            Some(k) => self.remove_message_at(&k),
            None => Ok(()),
        }
    }

    fn put_message(&mut self, m: &Message) -> Result<(), StoreError> {
        if let Some(t) = &m.topic {
            let tk = topic_key(&m.push, t);
            let old = self
                .topics
                .get(&tk[..])
                .map_err(err)?
                .map(|g| g.value().to_vec());
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
        self.push_msgs
            .insert(&msg_key(&m.push, m.seq)[..], &[][..])
            .map_err(err)?;
        if m.encoding == Encoding::Receipt {
            // A receipt's `push` names the acknowledged message: receipts
            // are counted per receipt subscription instead, whose messages
            // are all receipts, oldest first under its token. Over the limit
            // (by more than one if it was lowered), the oldest go first.
            let held = self.count_receipt(&m.uaid, 1)?;
            for _ in self.max_receipts as u64..held {
                let end = prefix_end(&m.uaid);
                let oldest = match self.msgs.range(&m.uaid[..]..&end[..]).map_err(err)?.next() {
                    Some(kv) => kv.map_err(err)?.0.value().to_vec(),
                    None => break,
                };
                self.remove_message_at(&oldest)?;
            }
            return Ok(());
        }
        // Over the subscription's limit: the oldest go first.
        let held = keys_with_prefix(&self.push_msgs, &m.push)?;
        for k in held
            .iter()
            .take(held.len().saturating_sub(self.max_per_push))
        {
            let seq = u64::from_be_bytes(k[16..24].try_into().expect("8 bytes"));
            self.remove_message_at(&msg_key(&m.uaid, seq))?;
        }
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
        // The subscription leaves every list it was in.
        for k in keys_with_prefix(&self.sub_lists, push)? {
            let list: Token = k[16..32].try_into().expect("16 bytes");
            if self.remove_member(&list, push)? {
                self.count_members(&list, -1)?;
            }
        }
        self.remove_messages_of(&s.uaid, |m| m.push == s.push)
    }

    fn delete_ua_if_empty(&mut self, uaid: &Token) -> Result<(), StoreError> {
        let end = prefix_end(uaid);
        if self
            .ua_subs
            .range(&uaid[..]..&end[..])
            .map_err(err)?
            .next()
            .is_none()
        {
            self.uas.remove(&uaid[..]).map_err(err)?;
        }
        Ok(())
    }

    /// Adds `delta` to a list's member count.
    fn count_members(&mut self, list: &Token, delta: i64) -> Result<(), StoreError> {
        if delta == 0 {
            return Ok(());
        }
        let raw = self
            .lists
            .get(&list[..])
            .map_err(err)?
            .map(|g| g.value().to_vec());
        if let Some(raw) = raw {
            let mut l = codec::read_list(&raw)?;
            l.members = (l.members as i64 + delta).max(0) as u64;
            self.lists
                .insert(&list[..], &codec::list(&l)[..])
                .map_err(err)?;
        }
        Ok(())
    }

    fn remove_member(&mut self, list: &Token, push: &Token) -> Result<bool, StoreError> {
        let mk: [u8; 32] = cat(&[list, push]);
        let old = self
            .members
            .remove(&mk[..])
            .map_err(err)?
            .map(|g| g.value().to_vec());
        let existed = old.is_some();
        if let Some(e) = old
            .map(|o| codec::read_member(&o))
            .transpose()?
            .and_then(|m| m.expires)
        {
            self.member_expiry
                .remove(&member_expiry_key(e, list, push)[..])
                .map_err(err)?;
        }
        let sk: [u8; 32] = cat(&[push, list]);
        self.sub_lists.remove(&sk[..]).map_err(err)?;
        Ok(existed)
    }

    fn delete_list_message(&mut self, id: &Token) -> Result<(), StoreError> {
        let Some(raw) = self.list_msgs.remove(&id[..]).map_err(err)? else {
            return Ok(());
        };
        let m = codec::read_list_message(raw.value())?;
        drop(raw);
        self.list_msg_seq
            .remove(&msg_key(&m.list, m.seq)[..])
            .map_err(err)?;
        let ek: [u8; 24] = cat(&[&(m.expires + LIST_MESSAGE_GRACE).to_be_bytes(), id]);
        self.list_msg_expiry.remove(&ek[..]).map_err(err)?;
        self.fanouts.remove(&id[..]).map_err(err)?;
        for a in keys_with_prefix(&self.copy_acks, id)? {
            self.copy_acks.remove(&a[..]).map_err(err)?;
        }
        Ok(())
    }

    fn delete_list(&mut self, list: &Token) -> Result<(), StoreError> {
        let Some(raw) = self.lists.remove(&list[..]).map_err(err)? else {
            return Ok(());
        };
        let l = codec::read_list(raw.value())?;
        drop(raw);
        let owner = l.owner.as_ref().unwrap_or(&super::NO_OWNER);
        let ok: [u8; 81] = cat(&[owner, list]);
        self.owner_lists.remove(&ok[..]).map_err(err)?;
        for k in keys_with_prefix(&self.members, list)? {
            let push: Token = k[16..32].try_into().expect("16 bytes");
            self.remove_member(list, &push)?;
        }
        for k in keys_with_prefix(&self.list_msg_seq, list)? {
            let id: Option<Token> = self
                .list_msg_seq
                .get(&k[..])
                .map_err(err)?
                .and_then(|g| g.value().try_into().ok());
            if let Some(id) = id {
                // Its row, sequence and expiry keys, acks, unfinished mark.
                self.delete_list_message(&id)?;
            }
            // A row already gone leaves its sequence key behind: drop it.
            self.list_msg_seq.remove(&k[..]).map_err(err)?;
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), StoreError> {
        match op {
            Op::PutList(l) => {
                self.lists
                    .insert(&l.token[..], &codec::list(l)[..])
                    .map_err(err)?;
                let owner = l.owner.as_ref().unwrap_or(&super::NO_OWNER);
                let ok: [u8; 81] = cat(&[owner, &l.token]);
                self.owner_lists.insert(&ok[..], &[][..]).map_err(err)?;
            }
            Op::DeleteList(list) => self.delete_list(list)?,
            Op::PutMembers(list, members) => {
                let mut added = 0i64;
                for m in members {
                    let mk: [u8; 32] = cat(&[list, &m.push]);
                    let old = self
                        .members
                        .insert(&mk[..], &codec::member(m)[..])
                        .map_err(err)?
                        .map(|g| g.value().to_vec());
                    match old {
                        None => added += 1,
                        Some(o) => {
                            if let Some(e) = codec::read_member(&o)?.expires {
                                self.member_expiry
                                    .remove(&member_expiry_key(e, list, &m.push)[..])
                                    .map_err(err)?;
                            }
                        }
                    }
                    if let Some(e) = m.expires {
                        self.member_expiry
                            .insert(&member_expiry_key(e, list, &m.push)[..], &[][..])
                            .map_err(err)?;
                    }
                    let sk: [u8; 32] = cat(&[&m.push, list]);
                    self.sub_lists.insert(&sk[..], &[][..]).map_err(err)?;
                }
                self.count_members(list, added)?;
            }
            Op::RemoveMembers(list, pushes) => {
                let mut removed = 0i64;
                for p in pushes {
                    if self.remove_member(list, p)? {
                        removed += 1;
                    }
                }
                self.count_members(list, -removed)?;
            }
            Op::PutListMessage(m) => {
                self.list_msgs
                    .insert(&m.id[..], &codec::list_message(m)[..])
                    .map_err(err)?;
                let sk = msg_key(&m.list, m.seq);
                self.list_msg_seq.insert(&sk[..], &m.id[..]).map_err(err)?;
                let ek: [u8; 24] = cat(&[&(m.expires + LIST_MESSAGE_GRACE).to_be_bytes(), &m.id]);
                self.list_msg_expiry.insert(&ek[..], &[][..]).map_err(err)?;
                if m.fanout_done {
                    self.fanouts.remove(&m.id[..]).map_err(err)?;
                } else {
                    self.fanouts.insert(&m.id[..], &[][..]).map_err(err)?;
                }
            }
            Op::FinishListMessage { id, failed } => {
                let old = self.list_msgs.get(&id[..]).map_err(err)?;
                let Some(mut m) = old
                    .map(|g| codec::read_list_message(g.value()))
                    .transpose()?
                else {
                    return Ok(());
                };
                m.failed = *failed;
                m.fanout_done = true;
                self.list_msgs
                    .insert(&id[..], &codec::list_message(&m)[..])
                    .map_err(err)?;
                self.fanouts.remove(&id[..]).map_err(err)?;
            }
            Op::DeleteListMessage(id) => self.delete_list_message(id)?,
            Op::AckCopy { list_message, push } => {
                let k: [u8; 32] = cat(&[list_message, push]);
                self.copy_acks.insert(&k[..], &[][..]).map_err(err)?;
            }
            Op::PutUa(u) => {
                self.uas
                    .insert(&u.uaid[..], &codec::user_agent(u)[..])
                    .map_err(err)?;
            }
            Op::DeleteUaIfEmpty(uaid) => self.delete_ua_if_empty(uaid)?,
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
                lists: txn.open_table(LISTS).map_err(err)?,
                members: txn.open_table(LIST_MEMBERS).map_err(err)?,
                sub_lists: txn.open_table(SUB_LISTS).map_err(err)?,
                owner_lists: txn.open_table(OWNER_LISTS).map_err(err)?,
                list_msgs: txn.open_table(LIST_MSGS).map_err(err)?,
                list_msg_seq: txn.open_table(LIST_MSG_SEQ).map_err(err)?,
                copy_acks: txn.open_table(COPY_ACKS).map_err(err)?,
                list_msg_expiry: txn.open_table(LIST_MSG_EXPIRY).map_err(err)?,
                member_expiry: txn.open_table(MEMBER_EXPIRY).map_err(err)?,
                push_msgs: txn.open_table(PUSH_MSGS).map_err(err)?,
                fanouts: txn.open_table(FANOUTS).map_err(err)?,
                receipts_held: txn.open_table(RECEIPTS_HELD).map_err(err)?,
                max_per_push: self.max_per_subscription,
                max_receipts: self.max_receipts,
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

    fn subscription_count(&self, uaid: &Token, at_most: usize) -> Result<usize, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let ua_subs = txn.open_table(UA_SUBS).map_err(err)?;
        let end = prefix_end(uaid);
        Ok(ua_subs
            .range(&uaid[..]..&end[..])
            .map_err(err)?
            .take(at_most)
            .count())
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
            out.push(
                v.value()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("expiry"))?,
            );
        }
        Ok(out)
    }

    fn counts(&self) -> Result<StoreCounts, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        Ok(StoreCounts {
            messages: txn.open_table(MSGS).map_err(err)?.len().map_err(err)?,
            list_messages: txn.open_table(LIST_MSGS).map_err(err)?.len().map_err(err)?,
            lists: txn.open_table(LISTS).map_err(err)?.len().map_err(err)?,
            subscriptions: txn.open_table(SUBS).map_err(err)?.len().map_err(err)?,
            bytes: std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
        })
    }

    fn list(&self, token: &Token) -> Result<Option<List>, StoreError> {
        self.read(LISTS, token, codec::read_list)
    }

    fn list_members(
        &self,
        list: &Token,
        after: Option<&Token>,
        limit: usize,
    ) -> Result<Vec<ListMember>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(LIST_MEMBERS).map_err(err)?;
        use std::ops::Bound;
        let from: [u8; 32] = cat(&[list, after.unwrap_or(&[0; 16])]);
        let to: [u8; 32] = cat(&[list, &[0xff; 16]]);
        let lower = match after {
            Some(_) => Bound::Excluded(&from[..]),
            None => Bound::Included(&from[..]),
        };
        let mut out = Vec::new();
        for kv in t
            .range::<&[u8]>((lower, Bound::Included(&to[..])))
            .map_err(err)?
            .take(limit)
        {
            out.push(codec::read_member(kv.map_err(err)?.1.value())?);
        }
        Ok(out)
    }

    fn list_member(&self, list: &Token, push: &Token) -> Result<Option<ListMember>, StoreError> {
        let k: [u8; 32] = cat(&[list, push]);
        self.read(LIST_MEMBERS, &k, codec::read_member)
    }

    fn lists_of(&self, push: &Token) -> Result<Vec<Token>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(SUB_LISTS).map_err(err)?;
        let end = prefix_end(push);
        let mut out = Vec::new();
        for kv in t.range(&push[..]..&end[..]).map_err(err)? {
            let (k, _) = kv.map_err(err)?;
            out.push(k.value()[16..32].try_into().expect("16 bytes"));
        }
        Ok(out)
    }

    fn owned_lists(&self, owner: &[u8; 65]) -> Result<usize, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(OWNER_LISTS).map_err(err)?;
        let end = prefix_end(owner);
        Ok(t.range(&owner[..]..&end[..]).map_err(err)?.count())
    }

    fn list_message(&self, id: &Token) -> Result<Option<ListMessage>, StoreError> {
        self.read(LIST_MSGS, id, codec::read_list_message)
    }

    fn unfinished_fanouts(&self) -> Result<Vec<ListMessage>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let ids = txn.open_table(FANOUTS).map_err(err)?;
        let msgs = txn.open_table(LIST_MSGS).map_err(err)?;
        let mut out = Vec::new();
        for row in ids.iter().map_err(err)? {
            let (id, _) = row.map_err(err)?;
            if let Some(raw) = msgs.get(id.value()).map_err(err)? {
                out.push(codec::read_list_message(raw.value())?);
            }
        }
        Ok(out)
    }

    fn list_messages_since(
        &self,
        list: &Token,
        after_seq: u64,
        now: u64,
        newest: usize,
    ) -> Result<Vec<ListMessage>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let seqs = txn.open_table(LIST_MSG_SEQ).map_err(err)?;
        let msgs = txn.open_table(LIST_MSGS).map_err(err)?;
        let start = msg_key(list, after_seq.saturating_add(1));
        let end = msg_key(list, u64::MAX);
        let mut out = Vec::new();
        let range = seqs.range(&start[..]..=&end[..]).map_err(err)?;
        for kv in range.rev().take(newest) {
            let (_, id) = kv.map_err(err)?;
            if let Some(raw) = msgs.get(id.value()).map_err(err)? {
                let m = codec::read_list_message(raw.value())?;
                if m.expires > now {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    fn copy_acked(&self, list_message: &Token, push: &Token) -> Result<bool, StoreError> {
        let k: [u8; 32] = cat(&[list_message, push]);
        Ok(self.read(COPY_ACKS, &k, |_| Ok(()))?.is_some())
    }

    fn copies_acked(&self, list_message: &Token) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(COPY_ACKS).map_err(err)?;
        let end = prefix_end(list_message);
        Ok(t.range(&list_message[..]..&end[..]).map_err(err)?.count() as u64)
    }

    fn expired_list_items(&self, now: u64, limit: usize) -> Result<ExpiredListItems, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let end = (now + 1).to_be_bytes();
        let mut msgs = Vec::new();
        let t = txn.open_table(LIST_MSG_EXPIRY).map_err(err)?;
        for kv in t.range(&[][..]..&end[..]).map_err(err)?.take(limit) {
            let (k, _) = kv.map_err(err)?;
            msgs.push(k.value()[8..24].try_into().expect("16 bytes"));
        }
        let mut members = Vec::new();
        let t = txn.open_table(MEMBER_EXPIRY).map_err(err)?;
        for kv in t.range(&[][..]..&end[..]).map_err(err)?.take(limit) {
            let (k, _) = kv.map_err(err)?;
            let k = k.value();
            members.push((
                k[8..24].try_into().expect("16 bytes"),
                k[24..40].try_into().expect("16 bytes"),
            ));
        }
        Ok((msgs, members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_subscription: usize, receipts: usize) -> shared::limits::Limits {
        shared::limits::Limits {
            max_stored_per_subscription: per_subscription,
            max_stored_receipts: receipts,
            ..Default::default()
        }
    }

    fn receipt(s: &RedbStore, to: Token) -> Message {
        Message {
            id: crate::tokens::new_token(),
            uaid: to,
            push: crate::tokens::new_token(),
            channel: [0; 16],
            seq: s.next_seq(),
            expires: u64::MAX / 2,
            urgency: Default::default(),
            topic: None,
            receipt: None,
            encoding: Encoding::Receipt,
            body: bytes::Bytes::from_static(b"204"),
            list_message: None,
        }
    }

    #[test]
    fn a_receipt_subscription_keeps_its_newest_receipts_up_to_the_limit() {
        let dir = std::env::temp_dir().join(format!(
            "redb-receipts-{}",
            crate::tokens::to_hex(&crate::tokens::new_token())
        ));
        let s = RedbStore::open(&dir, &limits(10, 3), 1 << 20).unwrap();
        let (a, b) = ([7u8; 16], [8u8; 16]);
        for uaid in [a, b] {
            let kind = crate::store::UaKind::Receipts;
            let ua = UserAgent {
                uaid,
                kind,
                created: 1,
            };
            s.apply(&[&Op::PutUa(ua)]).unwrap();
        }
        let ids = |to: &Token| -> Vec<Token> {
            let held = s.messages(to, 0, 0, 100).unwrap();
            held.iter().map(|m| m.id).collect()
        };
        let sent: Vec<Message> = (0..5).map(|_| receipt(&s, a)).collect();
        for m in &sent {
            s.apply(&[&Op::PutMessage(Box::new(m.clone()))]).unwrap();
        }
        s.apply(&[&Op::PutMessage(Box::new(receipt(&s, b)))])
            .unwrap();
        let newest: Vec<Token> = sent[2..].iter().map(|m| m.id).collect();
        assert_eq!(ids(&a), newest, "the oldest went first");
        assert_eq!(ids(&b).len(), 1, "another subscription counts apart");
        // A fetched receipt makes room: the next one takes its place, and
        // no other goes.
        s.apply(&[&Op::DeleteMessage(sent[2].id)]).unwrap();
        let next = receipt(&s, a);
        s.apply(&[&Op::PutMessage(Box::new(next.clone()))]).unwrap();
        assert_eq!(ids(&a), vec![sent[3].id, sent[4].id, next.id]);
        drop(s);
        // A store written before receipts were counted: its receipts are
        // counted when it is opened, and a lowered limit holds at the next.
        {
            let db = Database::create(dir.join("push.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(RECEIPTS_HELD).unwrap();
            txn.open_table(META)
                .unwrap()
                .remove(RECEIPTS_COUNTED)
                .unwrap();
            txn.commit().unwrap();
        }
        let s = RedbStore::open(&dir, &limits(10, 2), 1 << 20).unwrap();
        let ids = |to: &Token| -> Vec<Token> {
            let held = s.messages(to, 0, 0, 100).unwrap();
            held.iter().map(|m| m.id).collect()
        };
        let last = receipt(&s, a);
        s.apply(&[&Op::PutMessage(Box::new(last.clone()))]).unwrap();
        assert_eq!(ids(&a), vec![next.id, last.id]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_fresh_store_answers_every_read() {
        let dir = std::env::temp_dir().join(format!(
            "redb-fresh-{}",
            crate::tokens::to_hex(&crate::tokens::new_token())
        ));
        let s = RedbStore::open(&dir, &limits(10, 10), 1 << 20).unwrap();
        let t = [1u8; 16];
        assert!(s.subscription(&t).unwrap().is_none());
        assert!(s.messages(&t, 0, 0, 10).unwrap().is_empty());
        assert!(s.expired(0, 10).unwrap().is_empty());
        assert_eq!(
            s.expired_list_items(u64::MAX / 2, 10).unwrap(),
            (vec![], vec![])
        );
        assert!(s.list_members(&t, None, 10).unwrap().is_empty());
        assert!(s.lists_of(&t).unwrap().is_empty());
        assert_eq!(s.owned_lists(&[4; 65]).unwrap(), 0);
        assert_eq!(s.copies_acked(&t).unwrap(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_user_agent_record_goes_only_without_subscriptions() {
        use crate::store::UaKind;
        let dir = std::env::temp_dir().join(format!(
            "redb-ua-{}",
            crate::tokens::to_hex(&crate::tokens::new_token())
        ));
        let s = RedbStore::open(&dir, &limits(10, 10), 1 << 20).unwrap();
        let uaid = [3u8; 16];
        let ua = UserAgent {
            uaid,
            kind: UaKind::WebSocket,
            created: 1,
        };
        let sub = Subscription {
            push: [4; 16],
            uaid,
            channel: [5; 16],
            resource: [6; 16],
            vapid: None,
            created: 1,
        };
        s.apply(&[&Op::PutUa(ua), &Op::PutSubscription(sub)])
            .unwrap();
        s.apply(&[&Op::DeleteUaIfEmpty(uaid)]).unwrap();
        assert!(
            s.user_agent(&uaid).unwrap().is_some(),
            "a subscription is left"
        );
        s.apply(&[&Op::DeleteSubscription([4; 16]), &Op::DeleteUaIfEmpty(uaid)])
            .unwrap();
        assert!(s.user_agent(&uaid).unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
