//! Storage: subscriptions, user agents, undelivered messages and receipts.
//!
//! [`Store`] is what the service asks of storage. [`layered::Layered`]
//! implements it once, over any [`layered::Backend`]: the tables of [`kv`]
//! and the rules of [`policy`]; [`redb`] is the embedded backend, [`redis`]
//! the one that many origin nodes share. Reads are
//! direct; every write goes through [`Store::apply`] as a batch, so that the
//! [`committer`] can group many requests into one durable commit.

mod answers;
pub mod codec;
pub mod committer;
pub mod kv;
pub mod layered;
pub mod policy;
pub mod redb;
pub mod redis;

use crate::tokens::Token;
use bytes::Bytes;
use shared::headers::Urgency;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed.
    #[error("storage engine: {0}")]
    Engine(String),
    /// A stored record could not be decoded.
    #[error("corrupt record in {0}")]
    Corrupt(&'static str),
    /// The committer has stopped.
    #[error("the store is shutting down")]
    Closed,
    /// Another process holds the store open.
    #[error("the store is open in another process (its file lock is held)")]
    Locked,
}

/// How a device connects: the protocol its messages travel by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UaKind {
    /// Mozilla's WebSocket protocol.
    WebSocket = 1,
    /// RFC 8030 over HTTP/2.
    Http2 = 2,
    /// An application server's receipt subscription (receives receipts).
    Receipts = 3,
}

/// One subscription (a push resource and what it belongs to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The push resource token (the key).
    pub push: Token,
    /// The user agent (WebSocket uaid, or RFC 8030 subscription set).
    pub uaid: Token,
    /// The WebSocket channelID (for RFC 8030 subscriptions, a random id).
    pub channel: Token,
    /// The RFC 8030 subscription resource token.
    pub resource: Token,
    /// The VAPID key the subscription is restricted to.
    pub vapid: Option<[u8; 65]>,
    /// Creation time, Unix seconds.
    pub created: u64,
}

/// The start of the day of `t` (Unix seconds): what [`UserAgent::seen`]
/// holds, so that a user agent's record is rewritten at most once a day.
pub fn day_of(t: u64) -> u64 {
    t - t % 86_400
}

/// A user agent: a WebSocket device, an RFC 8030 subscription set, or a
/// receipt subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserAgent {
    /// The uaid / set / receipt subscription token.
    pub uaid: Token,
    /// Its protocol.
    pub kind: UaKind,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// The start (Unix seconds) of the day it last connected (a receipt
    /// subscription: was last polled), for the idle expiry.
    pub seen: u64,
}

/// How a message body is encoded, as the device must be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// No body.
    None,
    /// `aes128gcm`.
    Aes128gcm,
    /// `aesgcm` with its `Encryption` and `Crypto-Key` values.
    Aesgcm {
        /// `Encryption` header value.
        encryption: String,
        /// `Crypto-Key` header value.
        crypto_key: String,
    },
    /// A JWE with this `Content-Type`.
    Jose(String),
    /// A receipt: no body; `Message::push` names the acknowledged message.
    Receipt,
    /// A list push's receipt: `Message::push` names the list message, and
    /// the body is its status document when its fan-out finished.
    ListReceipt,
}

impl Encoding {
    /// Whether a message of this encoding is a receipt (of a single push
    /// or of a list push), held by a receipt subscription.
    pub fn is_receipt(&self) -> bool {
        matches!(self, Encoding::Receipt | Encoding::ListReceipt)
    }
}

/// A message on its way to a user agent (stored or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The message token: its resource URL and the WebSocket `version`.
    pub id: Token,
    /// The user agent it is for.
    pub uaid: Token,
    /// The subscription's push token (for a receipt: the acknowledged message's id).
    pub push: Token,
    /// The subscription's channelID.
    pub channel: Token,
    /// Order within the user agent's queue; 0 until stored.
    pub seq: u64,
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// Urgency.
    pub urgency: Urgency,
    /// Topic, if any.
    pub topic: Option<String>,
    /// The receipt subscription to notify on acknowledgement.
    pub receipt: Option<Token>,
    /// Body encoding.
    pub encoding: Encoding,
    /// Body.
    pub body: Bytes,
    /// For a list member's copy: the list message it is a copy of.
    pub list_message: Option<Token>,
}

/// A list of subscriptions (docs/protocol.md §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List {
    /// The list's capability token.
    pub token: Token,
    /// The VAPID key that owns it.
    pub owner: Option<[u8; 65]>,
    /// The list registration service partition.
    pub partition: u32,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Current member count.
    pub members: u64,
}

/// The key under which lists without a VAPID key are counted, as if the
/// service owned them: no P-256 public key (those start with 4) is all zeros.
pub const NO_OWNER: [u8; 65] = [0; 65];

/// One member of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListMember {
    /// The member's push token.
    pub push: Token,
    /// Its user agent.
    pub uaid: Token,
    /// Its channelID.
    pub channel: Token,
    /// The message sequence when it joined: older list messages are not its.
    pub joined: u64,
    /// When it drops out, Unix seconds.
    pub expires: Option<i64>,
    /// Its JWE Encrypted Key, base64url.
    pub encrypted_key: Option<String>,
    /// Its per-recipient JWE header, JSON text.
    pub header: Option<String>,
    /// Keys it had before (oldest first), for list messages sent before a
    /// change: a copy is always assembled with the key of its time.
    pub previous: Vec<KeyVersion>,
}

/// A member's key and header as they were until a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    /// The message sequence at which it was replaced.
    pub until: u64,
    /// The JWE Encrypted Key, base64url.
    pub encrypted_key: Option<String>,
    /// The per-recipient header, JSON text.
    pub header: Option<String>,
}

impl ListMember {
    /// How many earlier keys a member keeps.
    pub const KEY_HISTORY: usize = 8;

    /// The key and header to use for a list message of sequence `seq`.
    pub fn key_for(&self, seq: u64) -> (Option<&str>, Option<&str>) {
        match self.previous.iter().find(|v| seq < v.until) {
            Some(v) => (v.encrypted_key.as_deref(), v.header.as_deref()),
            None => (self.encrypted_key.as_deref(), self.header.as_deref()),
        }
    }
}

/// The body of a list push, stored once for all members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListBody {
    /// No body.
    Empty,
    /// Compact JWE with an empty key part.
    Compact(String),
    /// The shared text of a JSON JWE (see `shared::jwe::JsonTemplate`).
    Json(String),
}

/// A message pushed to a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListMessage {
    /// Its token (status resource; copies' versions derive from it).
    pub id: Token,
    /// The list.
    pub list: Token,
    /// Its place in the message sequence.
    pub seq: u64,
    /// Push time, Unix seconds.
    pub created: u64,
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// Urgency of every copy.
    pub urgency: Urgency,
    /// Topic of every copy.
    pub topic: Option<String>,
    /// The shared body.
    pub body: ListBody,
    /// Members when it was pushed.
    pub members: u64,
    /// Copies that could not be made (a member's key unfit for the JWE).
    pub failed: u64,
    /// Whether the fan-out to connected members has finished.
    pub fanout_done: bool,
    /// The receipt subscription told when the fan-out has finished.
    pub receipt: Option<Token>,
}

/// One write, applied with others in one transaction.
#[derive(Clone, Debug)]
pub enum Op {
    /// Create a user agent's record: a new one, written without reading
    /// (one that exists is rewritten by [`Op::ReplaceUa`]).
    PutUa(UserAgent),
    /// Rewrite a user agent's record, moving it in its seen index.
    ReplaceUa(UserAgent),
    /// Remove a user agent's record if no subscription of it is left (a
    /// no-op otherwise: decided when the write is applied, so that a
    /// subscription committed meanwhile keeps it).
    DeleteUaIfEmpty(Token),
    /// Create or replace a subscription.
    PutSubscription(Subscription),
    /// Remove a subscription and its messages; its push resource answers
    /// `410 Gone` until `forget_at` (Unix seconds).
    DeleteSubscription {
        /// The subscription's push token.
        push: Token,
        /// When to forget that it ended.
        forget_at: u64,
    },
    /// Record that a user agent connected (or a receipt subscription was
    /// polled) on the day starting at `day`; a no-op if its record is gone
    /// or already says so.
    SeenUa {
        /// The user agent.
        uaid: Token,
        /// [`day_of`] now.
        day: u64,
    },
    /// End a user agent that has not been seen for its idle expiry: its
    /// subscriptions (remembered as ended until `forget_at`), its stored
    /// messages and its record.
    EndUa {
        /// The user agent.
        uaid: Token,
        /// When to forget its ended subscriptions.
        forget_at: u64,
    },
    /// Remove one entry of a seen index (as [`Store::idle_user_agents`]
    /// gave it), whatever the user agent's record says: an entry left by a
    /// record written over cannot hold the idle sweep up.
    ForgetSeen {
        /// The receipt subscriptions' index, or the user agents'.
        receipts: bool,
        /// The day of the entry.
        day: u64,
        /// The user agent.
        uaid: Token,
    },
    /// Forget ended subscriptions (their push resources then answer `404`).
    ForgetEnded(Vec<Token>),
    /// Remove up to `budget` of what deleted lists and list messages left
    /// behind (members, acknowledgements): big ones go in many small
    /// commits instead of one that would hold every other write up.
    Purge {
        /// Rows to remove at most.
        budget: usize,
    },
    /// Store a message (its `seq` set); replaces one of the same topic and subscription.
    PutMessage(Box<Message>),
    /// Remove a message by id.
    DeleteMessage(Token),
    /// Create or replace a list record (not its members).
    PutList(List),
    /// Remove a list, its members and its messages.
    DeleteList(Token),
    /// Add or replace members of a list.
    PutMembers(Token, Vec<ListMember>),
    /// Remove members (by push token) from a list.
    RemoveMembers(Token, Vec<Token>),
    /// Store a list message (or update its counters).
    PutListMessage(Box<ListMessage>),
    /// Record that a list message's fan-out finished, with its failed
    /// count; a no-op if the message is gone (its list was deleted
    /// meanwhile): decided when the write is applied.
    FinishListMessage {
        /// The list message.
        id: Token,
        /// Members whose copy could not be made.
        failed: u64,
    },
    /// Remove a list message's record and acknowledgements (after its grace period).
    DeleteListMessage(Token),
    /// A member's copies of a list's messages up to sequence `through`
    /// are settled ([`Store::copies_settled`]); a no-op if it is no longer
    /// a member, or an earlier record says as much already.
    SettleCopies {
        /// The list.
        list: Token,
        /// The member's push token.
        push: Token,
        /// The newest sequence settled.
        through: u64,
    },
    /// A member acknowledged its copy of a list message.
    AckCopy {
        /// The list message.
        list_message: Token,
        /// The member's push token.
        push: Token,
        /// What the device said of it.
        outcome: AckOutcome,
    },
}

/// A message a write removed undelivered, so that its sender can be told
/// (a `410` receipt) and it is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The message.
    pub id: Token,
    /// The receipt subscription its sender named, if any.
    pub receipt: Option<Token>,
    /// Why it went.
    pub why: DropReason,
}

impl Dropped {
    /// `m`, dropped for `why`.
    pub fn of(m: &Message, why: DropReason) -> Dropped {
        Dropped {
            id: m.id,
            receipt: m.receipt,
            why,
        }
    }
}

/// Why a message was dropped undelivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Its subscription held `max_stored_per_subscription` newer ones.
    Evicted,
    /// Its subscription ended.
    Ended,
}

/// What a device said of a message it was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckOutcome {
    /// Acknowledged: delivered to the application.
    #[default]
    Delivered,
    /// Acknowledged as not decrypting (Firefox's code 101).
    Undecryptable,
    /// Refused: acknowledged as not delivered (code 102), or a `nack`.
    Rejected,
}

impl AckOutcome {
    /// What an `ack` update's `code` says (`shared::webpush_ws::ack_code`):
    /// none, 100 or an unknown code is a delivery.
    pub fn of_ack(code: Option<u16>) -> AckOutcome {
        use shared::webpush_ws::ack_code;
        match code {
            Some(ack_code::DECRYPT_FAILED) => AckOutcome::Undecryptable,
            Some(ack_code::NOT_DELIVERED) => AckOutcome::Rejected,
            _ => AckOutcome::Delivered,
        }
    }

    /// As stored beside an acknowledged copy (a delivery as nothing).
    pub fn encode(self) -> &'static [u8] {
        match self {
            AckOutcome::Delivered => &[],
            AckOutcome::Undecryptable => &[1],
            AckOutcome::Rejected => &[2],
        }
    }

    /// Read back from [`AckOutcome::encode`].
    pub fn decode(v: &[u8]) -> AckOutcome {
        match v {
            [1] => AckOutcome::Undecryptable,
            [2] => AckOutcome::Rejected,
            _ => AckOutcome::Delivered,
        }
    }
}

/// A list message's copies that devices answered, by what they said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckCounts {
    /// Delivered to the application.
    pub delivered: u64,
    /// Did not decrypt on the device.
    pub undecryptable: u64,
    /// Refused by the device.
    pub rejected: u64,
    /// Never to be answered: the member left the list first.
    pub dropped: u64,
}

impl AckCounts {
    /// Every copy answered, or that never will be.
    pub fn answered(&self) -> u64 {
        self.delivered + self.undecryptable + self.rejected + self.dropped
    }
}

/// List messages past their grace period, and (list, push) members past their `expires`.
pub type ExpiredListItems = (Vec<Token>, Vec<(Token, Token)>);

/// How much the store holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Messages stored for single subscriptions.
    pub messages: u64,
    /// List messages (each one body for all its members).
    pub list_messages: u64,
    /// Lists.
    pub lists: u64,
    /// Subscriptions.
    pub subscriptions: u64,
    /// Size of the store on disk, in bytes.
    pub bytes: u64,
}

/// The storage backend.
pub trait Store: Send + Sync + 'static {
    /// Applies a batch of writes in one durable transaction; returns the
    /// messages it removed undelivered.
    fn apply(&self, ops: &[&Op]) -> Result<Vec<Dropped>, StoreError>;
    /// The next message sequence number (monotonic across restarts).
    fn next_seq(&self) -> u64;
    /// A subscription by push token.
    fn subscription(&self, push: &Token) -> Result<Option<Subscription>, StoreError>;
    /// A subscription by its RFC 8030 subscription resource token.
    fn subscription_by_resource(
        &self,
        resource: &Token,
    ) -> Result<Option<Subscription>, StoreError>;
    /// A subscription by user agent and channelID.
    fn subscription_by_channel(
        &self,
        uaid: &Token,
        channel: &Token,
    ) -> Result<Option<Subscription>, StoreError>;
    /// Every subscription of a user agent.
    fn subscriptions_of(&self, uaid: &Token) -> Result<Vec<Subscription>, StoreError>;
    /// What registering `channel` needs, in one read of the user agent's
    /// subscriptions: the one on `channel`, if any, and how many it holds,
    /// counted up to `at_most` (when `channel` has none).
    fn channel_and_count(
        &self,
        uaid: &Token,
        channel: &Token,
        at_most: usize,
    ) -> Result<(Option<Subscription>, usize), StoreError>;
    /// A user agent.
    fn user_agent(&self, uaid: &Token) -> Result<Option<UserAgent>, StoreError>;
    /// Up to `limit` unexpired messages of a user agent after `after_seq`, in order.
    fn messages(
        &self,
        uaid: &Token,
        after_seq: u64,
        now: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;
    /// A stored message by id.
    fn message(&self, id: &Token) -> Result<Option<Message>, StoreError>;
    /// Ids of up to `limit` messages that expired at or before `now`.
    fn expired(&self, now: u64, limit: usize) -> Result<Vec<Token>, StoreError>;
    /// Whether deleted lists or list messages still leave rows to purge.
    fn purge_pending(&self) -> Result<bool, StoreError>;
    /// Whether a subscription ended (and is not yet forgotten).
    fn ended(&self, push: &Token) -> Result<bool, StoreError>;
    /// Up to `limit` ended subscriptions to forget at or before `now`.
    fn ended_to_forget(&self, now: u64, limit: usize) -> Result<Vec<Token>, StoreError>;
    /// Up to `limit` user agents (receipt subscriptions if `receipts`) last
    /// seen on a day before `day`, oldest first, each with the day its
    /// index entry names.
    fn idle_user_agents(
        &self,
        receipts: bool,
        day: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Token)>, StoreError>;
    /// How much the store holds (for `/metrics`).
    fn counts(&self) -> Result<StoreCounts, StoreError>;
    /// A list.
    fn list(&self, token: &Token) -> Result<Option<List>, StoreError>;
    /// Up to `limit` members of a list after push token `after`, in token order.
    fn list_members(
        &self,
        list: &Token,
        after: Option<&Token>,
        limit: usize,
    ) -> Result<Vec<ListMember>, StoreError>;
    /// One member of a list.
    fn list_member(&self, list: &Token, push: &Token) -> Result<Option<ListMember>, StoreError>;
    /// The lists a subscription belongs to.
    fn lists_of(&self, push: &Token) -> Result<Vec<Token>, StoreError>;
    /// How many lists a VAPID key owns ([`NO_OWNER`]: how many have none).
    fn owned_lists(&self, owner: &[u8; 65]) -> Result<usize, StoreError>;
    /// A list message.
    fn list_message(&self, id: &Token) -> Result<Option<ListMessage>, StoreError>;
    /// List messages whose fan-out had not finished (after a crash).
    fn unfinished_fanouts(&self) -> Result<Vec<ListMessage>, StoreError>;
    /// The sequences and ids of the newest `newest` messages of a list with
    /// a sequence above `after_seq`, newest first (their records are read
    /// apart, through the parsed-message cache).
    fn list_message_ids_since(
        &self,
        list: &Token,
        after_seq: u64,
        newest: usize,
    ) -> Result<Vec<(u64, Token)>, StoreError>;
    /// The sequence up to which a member's copies of a list's messages are
    /// settled ([`Op::SettleCopies`]; 0: none recorded).
    fn copies_settled(&self, list: &Token, push: &Token) -> Result<u64, StoreError>;
    /// How many messages of a list came after sequence `seq`, counted up
    /// to `at_most`.
    fn newer_list_messages(
        &self,
        list: &Token,
        seq: u64,
        at_most: usize,
    ) -> Result<usize, StoreError>;
    /// Which of `owed` (list message, created) a member answered (one read
    /// for all: a `hello` asks about a list's unsettled messages). For a
    /// list message that is gone the answer may be either.
    fn copies_answered(
        &self,
        push: &Token,
        owed: &[(Token, u64)],
    ) -> Result<std::collections::HashSet<Token>, StoreError>;
    /// How many members acknowledged their copy of a list message.
    fn copies_acked(&self, list_message: &Token) -> Result<AckCounts, StoreError>;
    /// Up to `limit` list messages past their grace period, and members
    /// (list, push) past their `expires`.
    fn expired_list_items(&self, now: u64, limit: usize) -> Result<ExpiredListItems, StoreError>;
}
