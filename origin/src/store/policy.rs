//! What each write means, on any backend: Topic replacement, the
//! per-subscription and receipt caps and their eviction, the indexes kept
//! beside each record, list member counts, and what a deletion takes along.

use super::codec;
use super::kv::{self, cat, prefix_end, Write};
use super::kv::{
    ACKS_PURGING, COPIES_DROPPED, COPIES_SETTLED, COPY_ACKS, ENDED, ENDED_EXPIRY, EXPIRY, FANOUTS,
    LISTS, LISTS_PURGING, LIST_MEMBERS, LIST_MSGS, LIST_MSG_EXPIRY, LIST_MSG_SEQ, MEMBERS_LEFT,
    MEMBER_EXPIRY, MSGS, MSG_IDS, OWNER_LISTS, PUSH_MSGS, RECEIPTS_HELD, RS_SEEN, SUBS, SUB_LISTS,
    SUB_RESOURCES, TOPICS, UAS, UA_SEEN, UA_SUBS,
};
use super::{DropReason, Dropped, Message, Op, StoreError};
use super::{UaKind, UserAgent};
use crate::tokens::Token;
use std::ops::Bound;

/// How long a list message's status outlives its TTL.
pub const LIST_MESSAGE_GRACE: u64 = 24 * 3600;

/// The caps a write keeps.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// Most messages kept for one subscription.
    pub per_subscription: usize,
    /// Most receipts kept for one receipt subscription.
    pub receipts: usize,
}

impl Caps {
    /// The caps of `limits` (at least one of each).
    pub fn of(limits: &shared::limits::Limits) -> Caps {
        Caps {
            per_subscription: limits.max_stored_per_subscription.max(1),
            receipts: limits.max_stored_receipts.max(1),
        }
    }
}

/// A user agent's message key: its messages in sequence order.
pub fn msg_key(uaid: &Token, seq: u64) -> [u8; 24] {
    cat(&[uaid, &seq.to_be_bytes()])
}

fn topic_key(push: &Token, topic: &str) -> Vec<u8> {
    [&push[..], topic.as_bytes()].concat()
}

fn expiry_key(m: &Message) -> [u8; 32] {
    cat(&[&m.expires.to_be_bytes(), &m.uaid, &m.seq.to_be_bytes()])
}

fn member_expiry_key(expires: i64, list: &Token, push: &Token) -> [u8; 40] {
    cat(&[&(expires.max(0) as u64).to_be_bytes(), list, push])
}

fn list_msg_expiry_key(expires: u64, id: &Token) -> [u8; 24] {
    cat(&[&(expires + LIST_MESSAGE_GRACE).to_be_bytes(), id])
}

fn token(b: &[u8], what: &'static str) -> Result<Token, StoreError> {
    b.try_into().map_err(|_| StoreError::Corrupt(what))
}

/// Keys of a table that start with `prefix`.
fn keys_with_prefix(
    w: &mut impl Write,
    t: kv::Table,
    prefix: &[u8],
) -> Result<Vec<Vec<u8>>, StoreError> {
    let end = prefix_end(prefix);
    let mut out = Vec::new();
    w.range(
        t,
        Bound::Included(prefix),
        Bound::Excluded(&end),
        false,
        &mut |k, _| {
            out.push(k.to_vec());
            Ok(true)
        },
    )?;
    Ok(out)
}

/// The first key of a table starting with `prefix` (the last, `rev`), or
/// of the whole table with no prefix.
fn first_key(
    w: &mut impl Write,
    t: kv::Table,
    prefix: Option<&[u8]>,
    rev: bool,
) -> Result<Option<Vec<u8>>, StoreError> {
    let end = prefix.map(prefix_end);
    let (lo, hi) = match (prefix, &end) {
        (Some(p), Some(e)) => (Bound::Included(p), Bound::Excluded(&e[..])),
        _ => (Bound::Unbounded, Bound::Unbounded),
    };
    let mut first = None;
    w.range(t, lo, hi, rev, &mut |k, _| {
        first = Some(k.to_vec());
        Ok(false)
    })?;
    Ok(first)
}

/// Applies one write.
/// Applies one write; messages it removes undelivered (evicted, or with
/// their subscription) are added to `dropped`.
pub fn apply(
    w: &mut impl Write,
    caps: Caps,
    op: &Op,
    dropped: &mut Vec<Dropped>,
) -> Result<(), StoreError> {
    match op {
        Op::PutList(l) => {
            w.put(LISTS, &l.token, &codec::list(l))?;
            let owner = l.owner.as_ref().unwrap_or(&super::NO_OWNER);
            let ok: [u8; 81] = cat(&[owner, &l.token]);
            w.put(OWNER_LISTS, &ok, &[])?;
        }
        Op::DeleteList(list) => delete_list(w, list)?,
        Op::PutMembers(list, members) => {
            let mut added = 0i64;
            for m in members {
                let mk: [u8; 32] = cat(&[list, &m.push]);
                match w.take(LIST_MEMBERS, &mk)? {
                    None => added += 1,
                    Some(o) => {
                        if let Some(e) = codec::read_member(&o)?.expires {
                            w.delete(MEMBER_EXPIRY, &member_expiry_key(e, list, &m.push))?;
                        }
                    }
                }
                w.put(LIST_MEMBERS, &mk, &codec::member(m))?;
                if let Some(e) = m.expires {
                    w.put(MEMBER_EXPIRY, &member_expiry_key(e, list, &m.push), &[])?;
                }
                let sk: [u8; 32] = cat(&[&m.push, list]);
                w.put(SUB_LISTS, &sk, &[])?;
            }
            count_members(w, list, added)?;
        }
        Op::RemoveMembers(list, pushes) => {
            let mut removed = 0i64;
            let newest = newest_list_message(w, list)?;
            for p in pushes {
                if remove_member(w, list, p, newest)? {
                    removed += 1;
                }
            }
            count_members(w, list, -removed)?;
        }
        Op::PutListMessage(m) => {
            w.put(LIST_MSGS, &m.id, &codec::list_message(m))?;
            w.put(LIST_MSG_SEQ, &msg_key(&m.list, m.seq), &m.id)?;
            w.put(LIST_MSG_EXPIRY, &list_msg_expiry_key(m.expires, &m.id), &[])?;
            if m.fanout_done {
                w.delete(FANOUTS, &m.id)?;
            } else {
                w.put(FANOUTS, &m.id, &[])?;
            }
        }
        Op::FinishListMessage { id, failed } => {
            let Some(mut m) = w.get(LIST_MSGS, id, codec::read_list_message)? else {
                return Ok(());
            };
            m.failed = *failed;
            m.fanout_done = true;
            w.put(LIST_MSGS, id, &codec::list_message(&m))?;
            w.delete(FANOUTS, id)?;
        }
        Op::DeleteListMessage(id) => delete_list_message(w, id)?,
        Op::Purge { budget } => purge(w, *budget)?,
        Op::SettleCopies {
            list,
            push,
            through,
        } => {
            let mk: [u8; 32] = cat(&[list, push]);
            let sk: [u8; 32] = cat(&[push, list]);
            let member = w.get(LIST_MEMBERS, &mk, |_| Ok(()))?.is_some();
            let before = w.get(COPIES_SETTLED, &sk, read_seq)?.unwrap_or(0);
            if member && *through > before {
                w.put(COPIES_SETTLED, &sk, &through.to_be_bytes())?;
            }
        }
        Op::AckCopy {
            list_message,
            push,
            outcome,
        } => {
            let k: [u8; 32] = cat(&[list_message, push]);
            w.put(COPY_ACKS, &k, outcome.encode())?;
        }
        Op::PutUa(u) => new_ua(w, u)?,
        Op::ReplaceUa(u) => put_ua(w, u)?,
        Op::SeenUa { uaid, day } => {
            let old = w.get(UAS, uaid, codec::read_user_agent)?;
            if let Some(ua) = old.filter(|ua| ua.seen < *day) {
                put_ua(w, &UserAgent { seen: *day, ..ua })?;
            }
        }
        Op::EndUa { uaid, forget_at } => end_ua(w, uaid, *forget_at, dropped)?,
        Op::ForgetSeen {
            receipts,
            day,
            uaid,
        } => {
            let t = if *receipts { RS_SEEN } else { UA_SEEN };
            w.delete(t, &cat::<24>(&[&day.to_be_bytes(), uaid]))?;
        }
        Op::ForgetEnded(pushes) => {
            for push in pushes {
                if let Some(at) = w.take(ENDED, push)? {
                    w.delete(ENDED_EXPIRY, &[&at[..], &push[..]].concat())?;
                }
            }
        }
        Op::DeleteUaIfEmpty(uaid) => delete_ua_if_empty(w, uaid)?,
        Op::PutSubscription(s) => {
            w.put(SUBS, &s.push, &codec::subscription(s))?;
            w.put(SUB_RESOURCES, &s.resource, &s.push)?;
            let uk: [u8; 32] = cat(&[&s.uaid, &s.channel]);
            w.put(UA_SUBS, &uk, &s.push)?;
        }
        Op::DeleteSubscription { push, forget_at } => {
            delete_subscription(w, push, *forget_at, dropped)?
        }
        Op::PutMessage(m) => put_message(w, caps, m, dropped)?,
        Op::DeleteMessage(id) => remove_message(w, id)?,
    }
    Ok(())
}

/// Removes the message under `key` with its indexes: the message, if any.
fn remove_message_at(w: &mut impl Write, key: &[u8]) -> Result<Option<Message>, StoreError> {
    let Some(raw) = w.take(MSGS, key)? else {
        return Ok(None);
    };
    let m = codec::read_message(&raw)?;
    if m.encoding.is_receipt() {
        count_receipt(w, &m.uaid, -1)?;
    }
    w.delete(MSG_IDS, &m.id)?;
    w.delete(EXPIRY, &expiry_key(&m))?;
    w.delete(PUSH_MSGS, &msg_key(&m.push, m.seq))?;
    if let Some(t) = &m.topic {
        let tk = topic_key(&m.push, t);
        if w.get(TOPICS, &tk, |v| Ok(v == m.id))? == Some(true) {
            w.delete(TOPICS, &tk)?;
        }
    }
    Ok(Some(m))
}

/// Adds `by` to the receipts a receipt subscription holds; the count after.
fn count_receipt(w: &mut impl Write, to: &Token, by: i64) -> Result<u64, StoreError> {
    let old = w.get(RECEIPTS_HELD, to, |v| {
        Ok(v.try_into().map(u64::from_be_bytes).unwrap_or(0))
    })?;
    let n = old.unwrap_or(0).saturating_add_signed(by);
    if n == 0 {
        w.delete(RECEIPTS_HELD, to)?;
    } else {
        w.put(RECEIPTS_HELD, to, &n.to_be_bytes())?;
    }
    Ok(n)
}

fn remove_message(w: &mut impl Write, id: &Token) -> Result<(), StoreError> {
    match w.get(MSG_IDS, id, |v| Ok(v.to_vec()))? {
        Some(k) => remove_message_at(w, &k).map(drop),
        None => Ok(()),
    }
}

fn put_message(
    w: &mut impl Write,
    caps: Caps,
    m: &Message,
    dropped: &mut Vec<Dropped>,
) -> Result<(), StoreError> {
    if let Some(t) = &m.topic {
        // A message with the Topic of one still held replaces it.
        let tk = topic_key(&m.push, t);
        if let Some(old) = w.get(TOPICS, &tk, |v| token(v, "topic"))? {
            remove_message(w, &old)?;
        }
        w.put(TOPICS, &tk, &m.id)?;
    }
    let key = msg_key(&m.uaid, m.seq);
    w.put(MSGS, &key, &codec::message(m))?;
    w.put(MSG_IDS, &m.id, &key)?;
    w.put(EXPIRY, &expiry_key(m), &m.id)?;
    w.put(PUSH_MSGS, &msg_key(&m.push, m.seq), &[])?;
    if m.encoding.is_receipt() {
        // A receipt's `push` names the acknowledged message: receipts are
        // counted per receipt subscription instead, whose messages are all
        // receipts, oldest first under its token. Over the limit (by more
        // than one if it was lowered), the oldest go first.
        let held = count_receipt(w, &m.uaid, 1)?;
        for _ in caps.receipts as u64..held {
            match first_key(w, MSGS, Some(&m.uaid), false)? {
                Some(k) => drop(remove_message_at(w, &k)?),
                None => break,
            }
        }
        return Ok(());
    }
    // Over the subscription's limit: the oldest go first.
    let held = keys_with_prefix(w, PUSH_MSGS, &m.push)?;
    for k in held
        .iter()
        .take(held.len().saturating_sub(caps.per_subscription))
    {
        let seq = seq_of_key(k)?;
        if let Some(old) = remove_message_at(w, &msg_key(&m.uaid, seq))? {
            dropped.push(Dropped::of(&old, DropReason::Evicted));
        }
    }
    Ok(())
}

/// Removes every message of `uaid` for which `pred` holds.
/// Removes every message of `uaid` for which `pred` holds, as dropped
/// because their subscription ended (receipts are not counted).
fn remove_messages_of(
    w: &mut impl Write,
    uaid: &Token,
    pred: impl Fn(&Message) -> bool,
    dropped: &mut Vec<Dropped>,
) -> Result<(), StoreError> {
    let end = prefix_end(uaid);
    let mut doomed = Vec::new();
    w.range(
        MSGS,
        Bound::Included(&uaid[..]),
        Bound::Excluded(&end),
        false,
        &mut |k, v| {
            if pred(&codec::read_message(v)?) {
                doomed.push(k.to_vec());
            }
            Ok(true)
        },
    )?;
    for k in doomed {
        match remove_message_at(w, &k)? {
            Some(m) if !m.encoding.is_receipt() => dropped.push(Dropped::of(&m, DropReason::Ended)),
            _ => {}
        }
    }
    Ok(())
}

/// A user agent's key in its seen index: the day, then its id.
fn seen_key(u: &UserAgent) -> (kv::Table, [u8; 24]) {
    let t = match u.kind {
        UaKind::Receipts => RS_SEEN,
        _ => UA_SEEN,
    };
    (t, cat(&[&u.seen.to_be_bytes(), &u.uaid]))
}

/// Writes a new user agent's record and its seen index entry, reading
/// nothing (on Redis, a read inside a write is a round trip each).
fn new_ua(w: &mut impl Write, u: &UserAgent) -> Result<(), StoreError> {
    w.put(UAS, &u.uaid, &codec::user_agent(u))?;
    let (t, k) = seen_key(u);
    w.put(t, &k, &[])
}

/// Writes a user agent's record, and moves it in its seen index.
fn put_ua(w: &mut impl Write, u: &UserAgent) -> Result<(), StoreError> {
    if let Some(old) = w.get(UAS, &u.uaid, codec::read_user_agent)? {
        let (t, k) = seen_key(&old);
        w.delete(t, &k)?;
    }
    w.put(UAS, &u.uaid, &codec::user_agent(u))?;
    let (t, k) = seen_key(u);
    w.put(t, &k, &[])
}

/// Removes a user agent's record, its seen index entry and receipt count.
fn delete_ua_record(w: &mut impl Write, uaid: &Token) -> Result<(), StoreError> {
    if let Some(raw) = w.take(UAS, uaid)? {
        let (t, k) = seen_key(&codec::read_user_agent(&raw)?);
        w.delete(t, &k)?;
    }
    w.delete(RECEIPTS_HELD, uaid)
}

/// Ends a user agent: its subscriptions (remembered as ended until
/// `forget_at`), every message stored for it, and its record.
fn end_ua(
    w: &mut impl Write,
    uaid: &Token,
    forget_at: u64,
    dropped: &mut Vec<Dropped>,
) -> Result<(), StoreError> {
    let end = prefix_end(uaid);
    let mut pushes = Vec::new();
    w.range(
        UA_SUBS,
        Bound::Included(&uaid[..]),
        Bound::Excluded(&end),
        false,
        &mut |_, v| {
            pushes.push(token(v, "user agent subscription")?);
            Ok(true)
        },
    )?;
    for push in &pushes {
        delete_subscription(w, push, forget_at, dropped)?;
    }
    remove_messages_of(w, uaid, |_| true, dropped)?;
    delete_ua_record(w, uaid)
}

/// Removes a subscription with what hangs on it, and remembers until
/// `forget_at` that it ended.
fn delete_subscription(
    w: &mut impl Write,
    push: &Token,
    forget_at: u64,
    dropped: &mut Vec<Dropped>,
) -> Result<(), StoreError> {
    let Some(raw) = w.take(SUBS, push)? else {
        return Ok(());
    };
    let at = forget_at.to_be_bytes();
    w.put(ENDED, push, &at)?;
    w.put(ENDED_EXPIRY, &cat::<24>(&[&at, push]), &[])?;
    let s = codec::read_subscription(&raw)?;
    w.delete(SUB_RESOURCES, &s.resource)?;
    let uk: [u8; 32] = cat(&[&s.uaid, &s.channel]);
    w.delete(UA_SUBS, &uk)?;
    // The subscription leaves every list it was in.
    for k in keys_with_prefix(w, SUB_LISTS, push)? {
        let list: Token = k[16..32].try_into().expect("16 bytes");
        let newest = newest_list_message(w, &list)?;
        if remove_member(w, &list, push, newest)? {
            count_members(w, &list, -1)?;
        }
    }
    remove_messages_of(w, &s.uaid, |m| m.push == s.push, dropped)
}

fn delete_ua_if_empty(w: &mut impl Write, uaid: &Token) -> Result<(), StoreError> {
    if first_key(w, UA_SUBS, Some(uaid), false)?.is_none() {
        delete_ua_record(w, uaid)?;
    }
    Ok(())
}

/// Adds `delta` to a list's member count.
fn count_members(w: &mut impl Write, list: &Token, delta: i64) -> Result<(), StoreError> {
    if delta == 0 {
        return Ok(());
    }
    if let Some(mut l) = w.get(LISTS, list, codec::read_list)? {
        l.members = (l.members as i64 + delta).max(0) as u64;
        w.put(LISTS, list, &codec::list(&l))?;
    }
    Ok(())
}

/// Removes a member from a list. With `newest`, the sequence of the
/// list's newest message, the copies it was owed and has not answered are
/// to be marked dropped (see [`settle_left`]); a whole list's members go
/// without.
fn remove_member(
    w: &mut impl Write,
    list: &Token,
    push: &Token,
    newest: Option<u64>,
) -> Result<bool, StoreError> {
    let mk: [u8; 32] = cat(&[list, push]);
    let old = w.take(LIST_MEMBERS, &mk)?;
    let existed = old.is_some();
    let member = old.map(|o| codec::read_member(&o)).transpose()?;
    if let Some(e) = member.as_ref().and_then(|m| m.expires) {
        w.delete(MEMBER_EXPIRY, &member_expiry_key(e, list, push))?;
    }
    if let (Some(m), Some(newest)) = (&member, newest) {
        if newest > m.joined {
            let k: [u8; 48] = cat(&[list, push, &m.joined.to_be_bytes(), &newest.to_be_bytes()]);
            w.put(MEMBERS_LEFT, &k, &[])?;
        }
    }
    let sk: [u8; 32] = cat(&[push, list]);
    w.delete(SUB_LISTS, &sk)?;
    w.delete(COPIES_SETTLED, &sk)?;
    Ok(existed)
}

/// Removes a list message's record and indexes; its acknowledgements (as
/// many as its list had members) are left to [`purge`].
fn delete_list_message(w: &mut impl Write, id: &Token) -> Result<(), StoreError> {
    let Some(raw) = w.take(LIST_MSGS, id)? else {
        return Ok(());
    };
    let m = codec::read_list_message(&raw)?;
    w.delete(LIST_MSG_SEQ, &msg_key(&m.list, m.seq))?;
    w.delete(LIST_MSG_EXPIRY, &list_msg_expiry_key(m.expires, id))?;
    w.delete(FANOUTS, id)?;
    w.put(ACKS_PURGING, id, &[])
}

/// Removes up to `budget` rows that deleted list messages (their
/// acknowledgements) and deleted lists (their members) left behind.
fn purge(w: &mut impl Write, budget: usize) -> Result<(), StoreError> {
    let mut left = budget.max(1);
    let phases: [(kv::Table, &[kv::Table]); 2] = [
        (ACKS_PURGING, &[COPY_ACKS, COPIES_DROPPED]),
        (LISTS_PURGING, &[LIST_MEMBERS]),
    ];
    for (t, row_tables) in phases {
        while left > 0 {
            let Some(id) = first_key(w, t, None, false)? else {
                break;
            };
            let id = token(&id, "purge")?;
            let end = prefix_end(&id);
            for &rows in row_tables {
                let mut keys = Vec::new();
                w.range(
                    rows,
                    Bound::Included(&id[..]),
                    Bound::Excluded(&end),
                    false,
                    &mut |k, _| {
                        keys.push(k.to_vec());
                        Ok(keys.len() < left)
                    },
                )?;
                let done = keys.len() < left;
                left -= keys.len();
                for k in keys {
                    if rows == LIST_MEMBERS {
                        let push: Token = k[16..32].try_into().expect("16 bytes");
                        remove_member(w, &id, &push, None)?;
                    } else {
                        w.delete(rows, &k)?;
                    }
                }
                if !done {
                    return Ok(());
                }
            }
            w.delete(t, &id)?;
        }
    }
    settle_left(w, left)
}

/// Marks dropped, up to `budget` list messages at a time, the copies that
/// members who left their list were owed and had not answered: the status
/// then counts them `dropped`, not `stored` (docs/protocol.md §4).
fn settle_left(w: &mut impl Write, budget: usize) -> Result<(), StoreError> {
    let mut left = budget;
    while left > 0 {
        let Some(k) = first_key(w, MEMBERS_LEFT, None, false)? else {
            break;
        };
        let (list, push): (Token, Token) = match (k.get(..16), k.get(16..32)) {
            (Some(l), Some(p)) => (token(l, "left")?, token(p, "left")?),
            _ => return Err(StoreError::Corrupt("left")),
        };
        let seq = |r: std::ops::Range<usize>| read_seq(k.get(r).unwrap_or_default());
        let (joined, newest) = (seq(32..40)?, seq(40..48)?);
        // Its list's messages after it joined, up to the newest then, newest first.
        let from = msg_key(&list, joined.saturating_add(1));
        let to = msg_key(&list, newest);
        let mut owed: Vec<(u64, Token)> = Vec::new();
        w.range(
            LIST_MSG_SEQ,
            Bound::Included(&from[..]),
            Bound::Included(&to[..]),
            true,
            &mut |k, v| {
                owed.push((seq_of_key(k)?, token(v, "list message sequence")?));
                Ok(owed.len() < left)
            },
        )?;
        let done = owed.len() < left;
        left -= owed.len();
        for (_, id) in &owed {
            let ak: [u8; 32] = cat(&[id, &push]);
            if w.get(COPY_ACKS, &ak, |_| Ok(()))?.is_none() {
                w.put(COPIES_DROPPED, &ak, &[])?;
            }
        }
        w.delete(MEMBERS_LEFT, &k)?;
        if !done {
            // The rest, older, next time.
            if let Some(&(oldest, _)) = owed.last() {
                if oldest > joined.saturating_add(1) {
                    let rest: [u8; 48] = cat(&[
                        &list,
                        &push,
                        &joined.to_be_bytes(),
                        &(oldest - 1).to_be_bytes(),
                    ]);
                    w.put(MEMBERS_LEFT, &rest, &[])?;
                }
            }
            return Ok(());
        }
    }
    Ok(())
}

/// The sequence of `list`'s newest message, if it has one.
fn newest_list_message(w: &mut impl Write, list: &Token) -> Result<Option<u64>, StoreError> {
    first_key(w, LIST_MSG_SEQ, Some(list), true)?
        .map(|k| seq_of_key(&k))
        .transpose()
}

fn delete_list(w: &mut impl Write, list: &Token) -> Result<(), StoreError> {
    let Some(raw) = w.take(LISTS, list)? else {
        return Ok(());
    };
    let l = codec::read_list(&raw)?;
    let owner = l.owner.as_ref().unwrap_or(&super::NO_OWNER);
    let ok: [u8; 81] = cat(&[owner, list]);
    w.delete(OWNER_LISTS, &ok)?;
    // Its members (up to a million) go in small commits: see `purge`.
    w.put(LISTS_PURGING, list, &[])?;
    for (k, id) in kv::with_prefix(w, LIST_MSG_SEQ, list)? {
        if let Ok(id) = token(&id, "list message sequence") {
            // Its row, sequence and expiry keys, acks, unfinished mark.
            delete_list_message(w, &id)?;
        }
        // A row already gone leaves its sequence key behind: drop it.
        w.delete(LIST_MSG_SEQ, &k)?;
    }
    Ok(())
}

/// A sequence stored as 8 big-endian bytes (a [`COPIES_SETTLED`] value, a
/// part of a key).
pub fn read_seq(v: &[u8]) -> Result<u64, StoreError> {
    v.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("sequence"))
}

/// The sequence of a [`msg_key`].
pub fn seq_of_key(k: &[u8]) -> Result<u64, StoreError> {
    read_seq(k.get(16..24).unwrap_or_default())
}
