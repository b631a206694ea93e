//! The tables every storage backend holds, and what a backend implements:
//! read a table, write it within a batch. The service's rules live above,
//! in `policy` and `layered`; a backend only stores and fetches.
//!
//! Keys are bytes. A table's [`Shape`] says which leading bytes form a key's
//! *group*: range reads never leave one group, so a distributed backend can
//! keep each group in one place (a Redis hash slot) and read it in order.

use super::StoreError;
use std::ops::Bound;

/// How a table's keys are laid out and read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Looked up by the whole key only.
    Point,
    /// A `group`-byte group and a fixed `suffix`-byte rest; read in key
    /// order within a group.
    Grouped {
        /// Leading bytes naming the group.
        group: usize,
        /// Bytes after the group (every key has exactly these many).
        suffix: usize,
    },
    /// A `group`-byte group and a rest of any length; looked up only.
    Keyed {
        /// Leading bytes naming the group.
        group: usize,
    },
    /// One ordered index of `key`-byte keys, read from its start (expiry
    /// times and the like); a distributed backend may shard it.
    Index {
        /// Length of every key.
        key: usize,
    },
}

/// One table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    /// Its name (the redb table; the Redis key prefix).
    pub name: &'static str,
    /// Its place in [`TABLES`].
    pub id: usize,
    /// How its keys are read.
    pub shape: Shape,
}

impl Table {
    /// The bytes of `key` that name its group (the whole key for a
    /// [`Shape::Point`] table, nothing for an [`Shape::Index`]).
    pub fn group_of<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        match self.shape {
            Shape::Point => key,
            Shape::Grouped { group, .. } | Shape::Keyed { group } => &key[..group.min(key.len())],
            Shape::Index { .. } => &[],
        }
    }
}

const fn table(name: &'static str, id: usize, shape: Shape) -> Table {
    Table { name, id, shape }
}

const fn grouped(group: usize, suffix: usize) -> Shape {
    Shape::Grouped { group, suffix }
}

/// push → subscription.
pub const SUBS: Table = table("subscriptions", 0, Shape::Point);
/// subscription resource → push.
pub const SUB_RESOURCES: Table = table("subscription_resources", 1, Shape::Point);
/// uaid ‖ channel → push.
pub const UA_SUBS: Table = table("ua_subscriptions", 2, grouped(16, 16));
/// uaid → user agent.
pub const UAS: Table = table("user_agents", 3, Shape::Point);
/// uaid ‖ seq → message.
pub const MSGS: Table = table("messages", 4, grouped(16, 8));
/// message id → uaid ‖ seq.
pub const MSG_IDS: Table = table("message_ids", 5, Shape::Point);
/// push ‖ topic → message id.
pub const TOPICS: Table = table("topics", 6, Shape::Keyed { group: 16 });
/// expires ‖ uaid ‖ seq → message id.
pub const EXPIRY: Table = table("expiry", 7, Shape::Index { key: 32 });
/// list → list record.
pub const LISTS: Table = table("lists", 8, Shape::Point);
/// list ‖ push → member.
pub const LIST_MEMBERS: Table = table("list_members", 9, grouped(16, 16));
/// push ‖ list → (): the lists a subscription belongs to.
pub const SUB_LISTS: Table = table("subscription_lists", 10, grouped(16, 16));
/// owner key ‖ list → ().
pub const OWNER_LISTS: Table = table("owner_lists", 11, grouped(65, 16));
/// list message id → list message.
pub const LIST_MSGS: Table = table("list_messages", 12, Shape::Point);
/// list ‖ seq → list message id.
pub const LIST_MSG_SEQ: Table = table("list_message_seq", 13, grouped(16, 8));
/// list message ‖ push → (): acknowledged copies.
pub const COPY_ACKS: Table = table("copy_acks", 14, grouped(16, 16));
/// push ‖ seq → (): a subscription's stored messages, oldest first.
pub const PUSH_MSGS: Table = table("push_messages", 15, grouped(16, 8));
/// (expires + grace) ‖ list message id → (): when a list message's record goes.
pub const LIST_MSG_EXPIRY: Table = table("list_message_expiry", 16, Shape::Index { key: 24 });
/// expires ‖ list ‖ push → (): when a member drops out.
pub const MEMBER_EXPIRY: Table = table("member_expiry", 17, Shape::Index { key: 40 });
/// List messages whose fan-out has not finished: id → ().
pub const FANOUTS: Table = table("unfinished_fanouts", 18, Shape::Index { key: 16 });
/// Receipt subscription → how many receipts it holds (u64, big-endian).
pub const RECEIPTS_HELD: Table = table("receipts_held", 19, Shape::Point);

/// Ended subscription → when to forget it (u64, big-endian): its push
/// resource answers `410 Gone` meanwhile.
pub const ENDED: Table = table("ended_subscriptions", 20, Shape::Point);
/// forget time ‖ push → (): when an ended subscription is forgotten.
pub const ENDED_EXPIRY: Table = table("ended_expiry", 21, Shape::Index { key: 24 });
/// day last seen ‖ uaid → (): device user agents (WebSocket, HTTP/2 sets)
/// by the day one last connected, for the idle expiry.
pub const UA_SEEN: Table = table("ua_seen", 22, Shape::Index { key: 24 });
/// day last polled ‖ receipt subscription → (): the same for receipt
/// subscriptions, with their own expiry.
pub const RS_SEEN: Table = table("rs_seen", 23, Shape::Index { key: 24 });

/// Lists deleted whose members are still being removed: list → ().
pub const LISTS_PURGING: Table = table("lists_purging", 24, Shape::Index { key: 16 });
/// List messages deleted whose acknowledgements are still being removed:
/// id → ().
pub const ACKS_PURGING: Table = table("acks_purging", 25, Shape::Index { key: 16 });

/// list ‖ push ‖ joined seq ‖ last list message seq → (): members that
/// left a list, whose unanswered copies (of the list messages up to the
/// last) are yet to be marked dropped.
pub const MEMBERS_LEFT: Table = table("members_left", 26, Shape::Index { key: 48 });
/// list message ‖ push → (): copies of members that left the list before
/// answering, which they can no longer get (an answer that came anyway
/// counts instead).
pub const COPIES_DROPPED: Table = table("copies_dropped", 27, grouped(16, 16));
/// push ‖ list → sequence (u64, big-endian): the member's copies of the
/// list's messages up to it are settled (acknowledged, replaced by a newer
/// one of their Topic, expired or not its), so a `hello` reads only what
/// came after.
pub const COPIES_SETTLED: Table = table("copies_settled", 28, Shape::Point);

/// Every table, in `id` order.
pub const TABLES: [Table; 29] = [
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
    PUSH_MSGS,
    LIST_MSG_EXPIRY,
    MEMBER_EXPIRY,
    FANOUTS,
    RECEIPTS_HELD,
    ENDED,
    ENDED_EXPIRY,
    UA_SEEN,
    RS_SEEN,
    LISTS_PURGING,
    ACKS_PURGING,
    MEMBERS_LEFT,
    COPIES_DROPPED,
    COPIES_SETTLED,
];

/// Reads, given each entry's key and value; returns `false` to stop.
pub type Visit<'f> = dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError> + 'f;

/// Reading tables (a snapshot, or the writes of a batch so far).
pub trait Read {
    /// The value under `key`, passed to `f`.
    fn get<T>(
        &mut self,
        t: Table,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError>;

    /// The values under each of `keys` of one table, in their order: a
    /// backend that pays a round trip per read sends them together.
    fn get_many(&mut self, t: Table, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter()
            .map(|k| self.get(t, k, |v| Ok(v.to_vec())))
            .collect()
    }

    /// Entries with keys between `lo` and `hi`, in key order (descending if
    /// `rev`), passed to `visit` until it returns `false`. Both bounds lie
    /// within one group (of a [`Shape::Grouped`] table) or in an
    /// [`Shape::Index`].
    fn range(
        &mut self,
        t: Table,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        rev: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError>;

    /// How many entries a table holds (for [`SUBS`], [`MSGS`], [`LISTS`]
    /// and [`LIST_MSGS`]: what `/metrics` shows).
    fn len(&mut self, t: Table) -> Result<u64, StoreError>;
}

/// Writing tables within one batch; reads see the batch's writes.
pub trait Write: Read {
    /// Sets `key` to `value`.
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`, returning its value.
    fn take(&mut self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes `key`.
    fn delete(&mut self, t: Table, key: &[u8]) -> Result<(), StoreError>;
}

/// Upper bound of keys that start with `prefix` (keys are at most 33
/// bytes longer than any prefix the service ranges over).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.extend_from_slice(&[0xff; 33]);
    end
}

/// Entries read whole: (key, value).
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Every key (with value) that starts with `prefix`, in order.
pub fn with_prefix(r: &mut impl Read, t: Table, prefix: &[u8]) -> Result<Entries, StoreError> {
    let end = prefix_end(prefix);
    let mut out = Vec::new();
    r.range(
        t,
        Bound::Included(prefix),
        Bound::Excluded(&end),
        false,
        &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(true)
        },
    )?;
    Ok(out)
}

/// Concatenates `parts` into an `N`-byte key.
pub fn cat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    for p in parts {
        out[i..i + p.len()].copy_from_slice(p);
        i += p.len();
    }
    debug_assert_eq!(i, N);
    out
}
