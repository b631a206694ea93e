//! The [`Store`] of any [`Backend`]: the service's reads over the tables of
//! `kv`, and its writes through `policy`, so every backend behaves alike.

use super::answers::Answers;
use super::codec;
use super::kv::{self, cat, prefix_end, Read, Write};
use super::kv::{
    ACKS_PURGING, COPIES_DROPPED, COPIES_SETTLED, COPY_ACKS, ENDED, ENDED_EXPIRY, EXPIRY, FANOUTS,
    LISTS, LISTS_PURGING, LIST_MEMBERS, LIST_MSGS, LIST_MSG_EXPIRY, LIST_MSG_SEQ, MEMBERS_LEFT,
    MEMBER_EXPIRY, MSGS, MSG_IDS, OWNER_LISTS, RS_SEEN, SUBS, SUB_LISTS, SUB_RESOURCES, UAS,
    UA_SEEN, UA_SUBS,
};
use super::policy::{self, msg_key, Caps};
use super::{
    AckCounts, AckOutcome, Dropped, ExpiredListItems, List, ListMember, ListMessage, Message, Op,
    Store, StoreCounts, StoreError, Subscription, UserAgent,
};
use crate::tokens::Token;
use std::ops::Bound;

/// What a storage engine provides: snapshots to read, batches to write.
pub trait Backend: Send + Sync + 'static {
    /// A reader of a consistent view (as consistent as the engine offers).
    type Reader<'a>: Read
    where
        Self: 'a;
    /// The writes of one batch.
    type Writer<'a>: Write
    where
        Self: 'a;

    /// A reader.
    fn reader(&self) -> Result<Self::Reader<'_>, StoreError>;
    /// Runs `f` over one batch and makes its writes durable before returning.
    fn write(
        &self,
        f: &mut dyn FnMut(&mut Self::Writer<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// The next message sequence number (monotonic across restarts).
    fn next_seq(&self) -> u64;
    /// Bytes the engine holds (file size, or memory).
    fn bytes(&self) -> u64;
}

/// A [`Store`] over a backend.
pub struct Layered<B> {
    backend: B,
    caps: Caps,
    /// Answers indexed by member in memory (a store one process owns).
    answers: Option<Answers>,
}

impl<B: Backend> Layered<B> {
    /// The store of `backend`, keeping the caps of `limits` and up to
    /// `answers_kept` answers indexed in memory (0: none; only for a store
    /// no other process writes).
    pub fn new(backend: B, limits: &shared::limits::Limits, answers_kept: usize) -> Layered<B> {
        Layered {
            backend,
            caps: Caps::of(limits),
            answers: (answers_kept > 0).then(|| Answers::new(answers_kept)),
        }
    }

    fn get<T>(
        &self,
        t: kv::Table,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.backend.reader()?.get(t, key, f)
    }
}

fn token(b: &[u8], what: &'static str) -> Result<Token, StoreError> {
    b.try_into().map_err(|_| StoreError::Corrupt(what))
}

/// Keys in `[prefix, prefix‖ff…)`, passed to `visit`.
fn scan(
    r: &mut impl Read,
    t: kv::Table,
    prefix: &[u8],
    visit: &mut kv::Visit<'_>,
) -> Result<(), StoreError> {
    let end = prefix_end(prefix);
    r.range(
        t,
        Bound::Included(prefix),
        Bound::Excluded(&end),
        false,
        visit,
    )
}

/// Up to `limit` entries of an index with keys before `end`.
fn index_before(
    r: &mut impl Read,
    t: kv::Table,
    end: &[u8],
    limit: usize,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut n = 0;
    if limit == 0 {
        return Ok(());
    }
    r.range(
        t,
        Bound::Unbounded,
        Bound::Excluded(end),
        false,
        &mut |k, v| {
            visit(k, v)?;
            n += 1;
            Ok(n < limit)
        },
    )
}

impl<B: Backend> Store for Layered<B> {
    fn apply(&self, ops: &[&Op]) -> Result<Vec<Dropped>, StoreError> {
        let caps = self.caps;
        if let Some(a) = &self.answers {
            a.answered(ops.iter().filter_map(|op| match op {
                Op::AckCopy {
                    list_message, push, ..
                } => Some((push, list_message)),
                _ => None,
            }));
        }
        let mut dropped = Vec::new();
        self.backend.write(&mut |w| {
            // A write tried again starts over.
            dropped.clear();
            for op in ops {
                policy::apply(w, caps, op, &mut dropped)?;
            }
            Ok(())
        })?;
        Ok(dropped)
    }

    fn next_seq(&self) -> u64 {
        self.backend.next_seq()
    }

    fn subscription(&self, push: &Token) -> Result<Option<Subscription>, StoreError> {
        self.get(SUBS, push, codec::read_subscription)
    }

    fn subscription_by_resource(
        &self,
        resource: &Token,
    ) -> Result<Option<Subscription>, StoreError> {
        let mut r = self.backend.reader()?;
        match r.get(SUB_RESOURCES, resource, |v| Ok(v.to_vec()))? {
            Some(p) => r.get(SUBS, &p, codec::read_subscription),
            None => Ok(None),
        }
    }

    fn subscription_by_channel(
        &self,
        uaid: &Token,
        channel: &Token,
    ) -> Result<Option<Subscription>, StoreError> {
        let mut r = self.backend.reader()?;
        let uk: [u8; 32] = cat(&[uaid, channel]);
        match r.get(UA_SUBS, &uk, |v| Ok(v.to_vec()))? {
            Some(p) => r.get(SUBS, &p, codec::read_subscription),
            None => Ok(None),
        }
    }

    fn subscriptions_of(&self, uaid: &Token) -> Result<Vec<Subscription>, StoreError> {
        let mut r = self.backend.reader()?;
        let mut pushes = Vec::new();
        scan(&mut r, UA_SUBS, uaid, &mut |_, push| {
            pushes.push(push.to_vec());
            Ok(true)
        })?;
        let mut out = Vec::with_capacity(pushes.len());
        for p in pushes {
            if let Some(s) = r.get(SUBS, &p, codec::read_subscription)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    fn channel_and_count(
        &self,
        uaid: &Token,
        channel: &Token,
        at_most: usize,
    ) -> Result<(Option<Subscription>, usize), StoreError> {
        let mut r = self.backend.reader()?;
        let uk: [u8; 32] = cat(&[uaid, channel]);
        let (mut n, mut push) = (0, None);
        // In key order: once past `channel`'s place, only the count is wanted.
        scan(&mut r, UA_SUBS, uaid, &mut |k, p| {
            if k == uk {
                push = Some(p.to_vec());
                return Ok(false);
            }
            n += 1;
            Ok(n < at_most || k < &uk[..])
        })?;
        match push {
            Some(p) => Ok((r.get(SUBS, &p, codec::read_subscription)?, n)),
            None => Ok((None, n.min(at_most))),
        }
    }

    fn user_agent(&self, uaid: &Token) -> Result<Option<UserAgent>, StoreError> {
        self.get(UAS, uaid, codec::read_user_agent)
    }

    fn messages(
        &self,
        uaid: &Token,
        after_seq: u64,
        now: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 || after_seq == u64::MAX {
            return Ok(out);
        }
        let start = msg_key(uaid, after_seq + 1);
        let end = msg_key(uaid, u64::MAX);
        self.backend.reader()?.range(
            MSGS,
            Bound::Included(&start),
            Bound::Included(&end),
            false,
            &mut |_, v| {
                let m = codec::read_message(v)?;
                if m.expires > now {
                    out.push(m);
                }
                Ok(out.len() < limit)
            },
        )?;
        Ok(out)
    }

    fn message(&self, id: &Token) -> Result<Option<Message>, StoreError> {
        let mut r = self.backend.reader()?;
        match r.get(MSG_IDS, id, |v| Ok(v.to_vec()))? {
            Some(k) => r.get(MSGS, &k, codec::read_message),
            None => Ok(None),
        }
    }

    fn expired(&self, now: u64, limit: usize) -> Result<Vec<Token>, StoreError> {
        let mut out = Vec::new();
        let end = (now + 1).to_be_bytes();
        index_before(&mut self.backend.reader()?, EXPIRY, &end, limit, |_, v| {
            out.push(token(v, "expiry")?);
            Ok(())
        })?;
        Ok(out)
    }

    fn counts(&self) -> Result<StoreCounts, StoreError> {
        let mut r = self.backend.reader()?;
        Ok(StoreCounts {
            messages: r.len(MSGS)?,
            list_messages: r.len(LIST_MSGS)?,
            lists: r.len(LISTS)?,
            subscriptions: r.len(SUBS)?,
            bytes: self.backend.bytes(),
        })
    }

    fn list(&self, token: &Token) -> Result<Option<List>, StoreError> {
        self.get(LISTS, token, codec::read_list)
    }

    fn list_members(
        &self,
        list: &Token,
        after: Option<&Token>,
        limit: usize,
    ) -> Result<Vec<ListMember>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let from: [u8; 32] = cat(&[list, after.unwrap_or(&[0; 16])]);
        let to: [u8; 32] = cat(&[list, &[0xff; 16]]);
        let lower = match after {
            Some(_) => Bound::Excluded(&from[..]),
            None => Bound::Included(&from[..]),
        };
        self.backend.reader()?.range(
            LIST_MEMBERS,
            lower,
            Bound::Included(&to),
            false,
            &mut |_, v| {
                out.push(codec::read_member(v)?);
                Ok(out.len() < limit)
            },
        )?;
        Ok(out)
    }

    fn list_member(&self, list: &Token, push: &Token) -> Result<Option<ListMember>, StoreError> {
        let k: [u8; 32] = cat(&[list, push]);
        self.get(LIST_MEMBERS, &k, codec::read_member)
    }

    fn lists_of(&self, push: &Token) -> Result<Vec<Token>, StoreError> {
        let mut out = Vec::new();
        scan(&mut self.backend.reader()?, SUB_LISTS, push, &mut |k, _| {
            out.push(token(&k[16..32], "subscription lists")?);
            Ok(true)
        })?;
        Ok(out)
    }

    fn owned_lists(&self, owner: &[u8; 65]) -> Result<usize, StoreError> {
        let mut n = 0;
        scan(
            &mut self.backend.reader()?,
            OWNER_LISTS,
            owner,
            &mut |_, _| {
                n += 1;
                Ok(true)
            },
        )?;
        Ok(n)
    }

    fn list_message(&self, id: &Token) -> Result<Option<ListMessage>, StoreError> {
        self.get(LIST_MSGS, id, codec::read_list_message)
    }

    fn unfinished_fanouts(&self) -> Result<Vec<ListMessage>, StoreError> {
        let mut r = self.backend.reader()?;
        let mut ids = Vec::new();
        r.range(
            FANOUTS,
            Bound::Unbounded,
            Bound::Unbounded,
            false,
            &mut |k, _| {
                ids.push(k.to_vec());
                Ok(true)
            },
        )?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(m) = r.get(LIST_MSGS, &id, codec::read_list_message)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    fn list_message_ids_since(
        &self,
        list: &Token,
        after_seq: u64,
        newest: usize,
    ) -> Result<Vec<(u64, Token)>, StoreError> {
        let mut out = Vec::new();
        if newest == 0 || after_seq == u64::MAX {
            return Ok(out);
        }
        let start = msg_key(list, after_seq + 1);
        let end = msg_key(list, u64::MAX);
        self.backend.reader()?.range(
            LIST_MSG_SEQ,
            Bound::Included(&start),
            Bound::Included(&end),
            true,
            &mut |k, id| {
                out.push((policy::seq_of_key(k)?, token(id, "list message sequence")?));
                Ok(out.len() < newest)
            },
        )?;
        Ok(out)
    }

    fn copies_settled(&self, list: &Token, push: &Token) -> Result<u64, StoreError> {
        let k: [u8; 32] = cat(&[push, list]);
        Ok(self.get(COPIES_SETTLED, &k, policy::read_seq)?.unwrap_or(0))
    }

    fn newer_list_messages(
        &self,
        list: &Token,
        seq: u64,
        at_most: usize,
    ) -> Result<usize, StoreError> {
        if at_most == 0 || seq == u64::MAX {
            return Ok(0);
        }
        let (start, end) = (msg_key(list, seq + 1), msg_key(list, u64::MAX));
        let mut n = 0;
        self.backend.reader()?.range(
            LIST_MSG_SEQ,
            Bound::Included(&start),
            Bound::Included(&end),
            false,
            &mut |_, _| {
                n += 1;
                Ok(n < at_most)
            },
        )?;
        Ok(n)
    }

    fn copies_answered(
        &self,
        push: &Token,
        owed: &[(Token, u64)],
    ) -> Result<std::collections::HashSet<Token>, StoreError> {
        let (mut answered, ask) = match &self.answers {
            Some(a) => a.of(push, owed),
            None => (Default::default(), owed.iter().map(|(id, _)| *id).collect()),
        };
        if !ask.is_empty() {
            let keys: Vec<[u8; 32]> = ask.iter().map(|m| cat(&[m, push])).collect();
            let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            let found = self.backend.reader()?.get_many(COPY_ACKS, &keys)?;
            answered.extend(ask.iter().zip(found).filter_map(|(m, v)| v.map(|_| *m)));
        }
        Ok(answered)
    }

    fn copies_acked(&self, list_message: &Token) -> Result<AckCounts, StoreError> {
        let mut n = AckCounts::default();
        let mut r = self.backend.reader()?;
        // Copies of members that left unanswered (few), less those answered
        // after all.
        let mut dropped = std::collections::BTreeSet::new();
        scan(&mut r, COPIES_DROPPED, list_message, &mut |k, _| {
            dropped.insert(k.to_vec());
            Ok(true)
        })?;
        scan(&mut r, COPY_ACKS, list_message, &mut |k, v| {
            dropped.remove(k);
            match AckOutcome::decode(v) {
                AckOutcome::Delivered => n.delivered += 1,
                AckOutcome::Undecryptable => n.undecryptable += 1,
                AckOutcome::Rejected => n.rejected += 1,
            }
            Ok(true)
        })?;
        n.dropped = dropped.len() as u64;
        Ok(n)
    }

    fn purge_pending(&self) -> Result<bool, StoreError> {
        let mut r = self.backend.reader()?;
        let mut any = false;
        for t in [ACKS_PURGING, LISTS_PURGING, MEMBERS_LEFT] {
            r.range(t, Bound::Unbounded, Bound::Unbounded, false, &mut |_, _| {
                any = true;
                Ok(false)
            })?;
            if any {
                break;
            }
        }
        Ok(any)
    }

    fn ended(&self, push: &Token) -> Result<bool, StoreError> {
        Ok(self.get(ENDED, push, |_| Ok(()))?.is_some())
    }

    fn ended_to_forget(&self, now: u64, limit: usize) -> Result<Vec<Token>, StoreError> {
        let mut out = Vec::new();
        let end = (now + 1).to_be_bytes();
        index_before(
            &mut self.backend.reader()?,
            ENDED_EXPIRY,
            &end,
            limit,
            |k, _| {
                out.push(token(&k[8..24], "ended expiry")?);
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn idle_user_agents(
        &self,
        receipts: bool,
        day: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Token)>, StoreError> {
        let t = if receipts { RS_SEEN } else { UA_SEEN };
        let mut out = Vec::new();
        index_before(
            &mut self.backend.reader()?,
            t,
            &day.to_be_bytes(),
            limit,
            |k, _| {
                let seen = u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
                out.push((seen, token(&k[8..24], "seen index")?));
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn expired_list_items(&self, now: u64, limit: usize) -> Result<ExpiredListItems, StoreError> {
        let mut r = self.backend.reader()?;
        let end = (now + 1).to_be_bytes();
        let mut msgs = Vec::new();
        index_before(&mut r, LIST_MSG_EXPIRY, &end, limit, |k, _| {
            msgs.push(token(&k[8..24], "list message expiry")?);
            Ok(())
        })?;
        let mut members = Vec::new();
        index_before(&mut r, MEMBER_EXPIRY, &end, limit, |k, _| {
            let list = token(&k[8..24], "member expiry")?;
            members.push((list, token(&k[24..40], "member expiry")?));
            Ok(())
        })?;
        Ok((msgs, members))
    }
}
