//! The service's shared state, and the one path every message takes to a
//! user agent: straight into its connection's queue, or into the store.

use crate::awaiting::Acked;
use crate::clock::now;
use crate::config::Config;
use crate::metrics::{inc, Metrics};
use crate::rate::RateLimiter;
use crate::registry::{Outbound, Registry};
use crate::store::committer::Committer;
use crate::store::{AckCounts, AckOutcome, DropReason, Dropped, Message, Op, Store, StoreError};
use crate::tokens::Token;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a push waits for a connected device's socket before storing instead.
pub const WRITE_WAIT: Duration = Duration::from_secs(2);

/// How long a node writes a message another node forwarded: less than the
/// other node waits, so that its answer arrives before that node stores it.
pub const FORWARDED_WRITE_WAIT: Duration = Duration::from_millis(1500);

/// Looks in the background for settled copies waiting their turn, at most
/// ([`crate::fanout::settle_later`]).
pub const SETTLE_QUEUE: usize = 20_000;

/// Everything the handlers share.
pub struct State {
    /// Configuration.
    pub config: Config,
    /// The store (reads).
    pub store: Arc<dyn Store>,
    /// The store (writes, group-committed).
    pub committer: Committer,
    /// Connected user agents.
    pub registry: Registry,
    /// Counters.
    pub metrics: Metrics,
    /// Per-subscription message rate.
    pub rate: RateLimiter,
    /// Per-list push rate.
    pub list_rate: RateLimiter,
    /// Per-owner list creation rate, keyed by the client's VAPID key (so
    /// hashed with a per-process secret).
    pub create_rate: RateLimiter<std::hash::RandomState>,
    /// Copies caused by each list owner's pushes (`owner_copies_per_minute`).
    pub owner_copies: RateLimiter<std::hash::RandomState>,
    /// Subscriptions made from each client address
    /// (`--subscriptions-per-address-per-minute`).
    pub address_rate: RateLimiter<std::hash::RandomState>,
    /// Keyless list creations per client address (`--keyless-lists`).
    pub keyless_rate: RateLimiter<std::hash::RandomState>,
    /// Queued list copies, which pause connections' reads.
    pub burst: Arc<crate::burst::Burst>,
    /// Parsed list pushes.
    pub list_cache: crate::copy::Cache,
    /// VAPID tokens (with their key) whose signature was verified lately:
    /// an application that sends one token many times has it verified
    /// once (see `app::vapid`).
    pub vapid_verified: std::sync::Mutex<std::collections::HashSet<Box<[u8]>>>,
    /// Serialize list amendments per list, and creations per owner.
    pub list_locks: crate::stripes::Stripes,
    /// Serialize new subscriptions per user agent, so that its count and
    /// the commit are one step (`max_subscriptions_per_user_agent`).
    pub ua_locks: crate::stripes::Stripes,
    /// Permits to decode and apply a list document (`max_list_documents`).
    pub documents: tokio::sync::Semaphore,
    /// Bytes of list documents being read, one permit a byte: as much as
    /// `max_list_documents` documents of the largest size. A client that
    /// trickles its body holds only what it has sent, not a document's place.
    pub document_bytes: tokio::sync::Semaphore,
    /// Set once shutdown has begun (`/ready` answers 503).
    pub shutting_down: std::sync::atomic::AtomicBool,
    /// This node's part in a cluster (on a Redis store).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// Messages handed to their device whose write may yet be skipped.
    pub awaiting: Arc<crate::awaiting::Awaiting>,
    /// Push bodies being read (`--max-body-reads`).
    pub body_reads: tokio::sync::Semaphore,
    /// Rate refusals being held (`--refusal-holds`).
    pub refusal_holds: tokio::sync::Semaphore,
    /// List message sequences taken and not yet committed here.
    pub list_seqs: crate::in_flight::InFlight,
    /// Permits to look through a user agent's lists for its waiting copies
    /// (`--hello-work-concurrency`): see [`crate::fanout::waiting_copies`].
    pub hello_work: tokio::sync::Semaphore,
    /// User agents whose lists' settled copies are to be looked for in
    /// the background: see [`crate::fanout::settle_later`].
    pub settle_queue: mpsc::Sender<Token>,
    /// Its receiving end, for [`crate::fanout::settle_in_background`].
    settle_queue_rx: std::sync::Mutex<Option<mpsc::Receiver<Token>>>,
    /// Set while this node purges what deleted lists left behind.
    purging: std::sync::atomic::AtomicBool,
    /// A list message's acknowledgement counts lately read, and when.
    ack_counts: std::sync::Mutex<std::collections::HashMap<Token, (std::time::Instant, AckCounts)>>,
    /// Messages commits dropped undelivered, for [`State::tell_dropped`].
    dropped: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Vec<Dropped>>>>,
}

/// Where a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Written to the device's connection.
    Delivered,
    /// Durably stored for later delivery.
    Stored,
    /// TTL 0 and the device was not connected: dropped, as RFC 8030 §5.2 says.
    Discarded,
}

/// Where [`State::count_owner_copies`] counted a push's copies, and when
/// (Unix seconds): a refund goes to the same count.
#[derive(Clone, Copy, Debug)]
pub enum Counted {
    /// In the cluster's shared count.
    Across(u64),
    /// In this node's own.
    Here(u64),
}

impl State {
    /// Builds the state over an opened store.
    pub fn new(config: Config, store: Arc<dyn Store>) -> State {
        let (told, dropped) = mpsc::unbounded_channel();
        let (settle_queue, settle_queue_rx) = mpsc::channel(SETTLE_QUEUE);
        let committer = Committer::start(
            store.clone(),
            config.commit_batch,
            std::time::Duration::from_millis(config.ack_commit_delay_ms),
            Box::new(move |d| {
                let _ = told.send(d);
            }),
        );
        let rate = RateLimiter::new(config.limits.subscription_messages_per_minute);
        let list_rate = RateLimiter::new(config.limits.list_pushes_per_minute);
        let create_rate = RateLimiter::new(config.limits.list_creations_per_minute);
        let owner_copies = RateLimiter::new(config.limits.owner_copies_per_minute);
        let address_rate = RateLimiter::new(config.subscriptions_per_address_per_minute);
        let keyless_rate = RateLimiter::new(config.keyless_list_creations_per_address_per_minute);
        State {
            list_rate,
            create_rate,
            owner_copies,
            address_rate,
            keyless_rate,
            list_cache: Default::default(),
            vapid_verified: Default::default(),
            list_locks: Default::default(),
            // Many more than list stripes: every registration takes one.
            ua_locks: crate::stripes::Stripes::new(1024),
            documents: tokio::sync::Semaphore::new(config.max_list_documents),
            document_bytes: tokio::sync::Semaphore::new(
                config
                    .max_list_documents
                    .saturating_mul(config.limits.max_list_body_bytes + 1)
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            ),
            burst: crate::burst::Burst::new(Duration::from_millis(config.fanout_read_pause_ms)),
            shutting_down: Default::default(),
            cluster: Default::default(),
            awaiting: Default::default(),
            body_reads: tokio::sync::Semaphore::new(config.max_body_reads),
            refusal_holds: tokio::sync::Semaphore::new(config.refusal_holds),
            list_seqs: Default::default(),
            dropped: std::sync::Mutex::new(Some(dropped)),
            ack_counts: Default::default(),
            purging: Default::default(),
            hello_work: tokio::sync::Semaphore::new(config.hello_work_concurrency),
            settle_queue,
            settle_queue_rx: std::sync::Mutex::new(Some(settle_queue_rx)),
            config,
            store,
            committer,
            registry: Registry::default(),
            metrics: Metrics::default(),
            rate,
        }
    }

    /// Delivers a message to its user agent now if it is connected (here,
    /// or to another node of a cluster), and stores it (unless `ttl_zero`).
    /// Returns once it is durable, committed or acknowledged by the device,
    /// and written to the device's socket (or the write waited
    /// `WRITE_WAIT`): a crash after the answer cannot lose it. Its write is
    /// queued `--ack-wait-ms` after the hand-over starts (at once if it
    /// was not written), and skipped if the device acknowledges first (see
    /// [`crate::awaiting`]); a committed one is deleted when acknowledged.
    /// With `--deliver-before-commit` it is stored only if the device is
    /// not connected.
    pub async fn deliver(&self, msg: Message, ttl_zero: bool) -> Result<Outcome, StoreError> {
        if ttl_zero || self.config.deliver_before_commit {
            return self.deliver_before_commit(msg, ttl_zero).await;
        }
        let mut msg = msg;
        msg.seq = self.store.next_seq();
        let msg = Arc::new(msg);
        let (guard, mut acked) = self.awaiting.wait(msg.id);
        let unwritten = tokio::sync::Notify::new();
        let hand_over = async {
            let written = self.hand_over(&msg).await;
            if !written {
                unwritten.notify_one();
            }
            written
        };
        let durable = async {
            // A device that answers within --ack-wait-ms spares the write.
            let wait = Duration::from_millis(self.config.ack_wait_ms);
            if !wait.is_zero() {
                tokio::select! {
                    biased;
                    Ok(()) = &mut acked => return Ok(true),
                    () = unwritten.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
            let put = Op::PutMessage(Box::new((*msg).clone()));
            let (awaiting, id) = (self.awaiting.clone(), msg.id);
            let committed = self
                .committer
                .submit_unless(vec![put], Box::new(move || awaiting.begin_commit(&id)))
                .await?;
            tokio::select! {
                biased;
                Ok(()) = &mut acked => Ok(true),
                r = committed => r.map(|()| false),
            }
        };
        let (written, acked) = tokio::join!(hand_over, durable);
        if acked? {
            inc(&self.metrics.pushes_delivered);
            inc(&self.metrics.pushes_acked_unstored);
            return Ok(Outcome::Delivered);
        }
        if guard.committed() {
            // Acknowledged while it committed: deleted after its write.
            self.write_later(vec![Op::DeleteMessage(msg.id)]);
        }
        if written {
            inc(&self.metrics.pushes_delivered);
            return Ok(Outcome::Delivered);
        }
        inc(&self.metrics.pushes_stored);
        self.tell_stored(&msg.uaid).await;
        Ok(Outcome::Stored)
    }

    /// Writes a message to its device's connection, here or on the node that
    /// holds it; whether it was written within `WRITE_WAIT`.
    async fn hand_over(&self, msg: &Arc<Message>) -> bool {
        if self.write_here(msg, WRITE_WAIT).await {
            return true;
        }
        match self.cluster.get() {
            Some(c) => {
                self.registry.handle(&msg.uaid).is_none() && c.forward(msg, WRITE_WAIT).await
            }
            None => false,
        }
    }

    /// A message was stored for `uaid`: its connection, if one is open here
    /// or on another node, fetches it.
    async fn tell_stored(&self, uaid: &Token) {
        // The device may have connected while the commit ran, or its queue
        // or its room for unacknowledged messages was full: it fetches the
        // message from the store.
        if let Some(h) = self.registry.handle(uaid) {
            h.mark_pending();
        } else if let Some(c) = self.cluster.get() {
            // Another node may hold it: told before the answer, so that
            // this node's death after a 201 cannot lose the notice.
            c.notify(uaid).await;
        }
    }

    /// [`State::deliver`] as autopush does it: a message written to its
    /// device's socket is answered at once and stored only if its
    /// connection ends unacknowledged.
    async fn deliver_before_commit(
        &self,
        msg: Message,
        ttl_zero: bool,
    ) -> Result<Outcome, StoreError> {
        let msg = Arc::new(msg);
        if self.write_here(&msg, WRITE_WAIT).await {
            inc(&self.metrics.pushes_delivered);
            return Ok(Outcome::Delivered);
        }
        if let Some(c) = self.cluster.get() {
            if self.registry.handle(&msg.uaid).is_none() && c.forward(&msg, WRITE_WAIT).await {
                inc(&self.metrics.pushes_delivered);
                return Ok(Outcome::Delivered);
            }
        }
        if ttl_zero {
            inc(&self.metrics.pushes_discarded);
            return Ok(Outcome::Discarded);
        }
        let mut stored = Arc::unwrap_or_clone(msg);
        stored.seq = self.store.next_seq();
        let stored = Arc::new(stored);
        self.committer
            .write(vec![Op::PutMessage(Box::new((*stored).clone()))])
            .await?;
        inc(&self.metrics.pushes_stored);
        self.tell_stored(&stored.uaid).await;
        Ok(Outcome::Stored)
    }

    /// Counts a push to `list` against `list_pushes_per_minute`: across
    /// every node in a cluster, else here; `Err(seconds)` to wait if over.
    pub fn count_list_push(&self, list: &Token) -> Result<(), u64> {
        let per_minute = self.config.limits.list_pushes_per_minute;
        self.count_across("list_pushes", list, per_minute)
            .unwrap_or_else(|| self.list_rate.check(list))
    }

    /// Counts a list creation by the owner `key` (a VAPID key, or
    /// `NO_OWNER`) against `list_creations_per_minute`, as
    /// [`State::count_list_push`] counts pushes.
    pub fn count_list_creation(&self, key: &[u8; 65]) -> Result<(), u64> {
        let per_minute = self.config.limits.list_creations_per_minute;
        let key_id: Token = key[1..17].try_into().expect("16 bytes");
        self.count_across("list_creations", key, per_minute)
            .unwrap_or_else(|| self.create_rate.check(&key_id))
    }

    /// Counts the `copies` a push to a list of the owner `key` (a VAPID key,
    /// or `NO_OWNER`) causes against `owner_copies_per_minute`, summed over
    /// all the owner's lists, all or none: across every node in a cluster,
    /// else here. `Err(seconds)` to wait if over.
    pub fn count_owner_copies(&self, key: &[u8; 65], copies: u64) -> Result<Counted, u64> {
        let per_minute = self.config.limits.owner_copies_per_minute;
        let n = u32::try_from(copies).unwrap_or(u32::MAX);
        let key_id: Token = key[1..17].try_into().expect("16 bytes");
        let t = now();
        match self.count_across_n("owner_copies", key, n, per_minute, t) {
            Some(verdict) => verdict.map(|()| Counted::Across(t)),
            None => self
                .owner_copies
                .check_n(&key_id, n)
                .map(|()| Counted::Here(t)),
        }
    }

    /// Takes back copies [`State::count_owner_copies`] counted, where it
    /// counted them, for a push another limit then refused.
    pub fn refund_owner_copies(&self, key: &[u8; 65], copies: u64, counted: Counted) {
        let n = u32::try_from(copies).unwrap_or(u32::MAX);
        match counted {
            Counted::Across(t) => {
                if let Some(c) = self.cluster.get() {
                    if let Err(e) = c.uncount_minute_n("owner_copies", key, t, n) {
                        tracing::warn!("cluster: refunding owner copies: {e}");
                    }
                }
            }
            Counted::Here(t) => {
                let key_id: Token = key[1..17].try_into().expect("16 bytes");
                self.owner_copies.refund(&key_id, n, t);
            }
        }
    }

    /// Counts a subscription made by a device `conn` (its own window,
    /// `--subscriptions-per-connection-per-minute`) from `addr` (IPv4, or
    /// an IPv6 /64, `--subscriptions-per-address-per-minute`); `Err(seconds)`
    /// to wait if either is over.
    /// An address that could not be read counts as the unspecified one.
    pub fn count_subscription(
        &self,
        conn: &mut shared::rate::Window,
        addr: Option<std::net::IpAddr>,
    ) -> Result<(), u64> {
        let per_conn = self.config.subscriptions_per_connection_per_minute;
        conn.hit(now(), 60, per_conn)?;
        self.address_rate.check(&address_key(addr))
    }

    /// Counts a list created without a VAPID key from `addr` against
    /// `--keyless-list-creations-per-address-per-minute`, as
    /// [`State::count_subscription`] counts addresses.
    pub fn count_keyless_creation(&self, addr: Option<std::net::IpAddr>) -> Result<(), u64> {
        self.keyless_rate.check(&address_key(addr))
    }

    /// The verdict of a count kept in Redis; `None` off a cluster, or if
    /// Redis cannot count now (then this node counts alone).
    fn count_across(&self, name: &str, key: &[u8], per_minute: u32) -> Option<Result<(), u64>> {
        self.count_across_n(name, key, 1, per_minute, now())
    }

    /// [`State::count_across`] of `n` events at once, at `t`, all or none:
    /// refused events are taken back.
    fn count_across_n(
        &self,
        name: &str,
        key: &[u8],
        n: u32,
        per_minute: u32,
        t: u64,
    ) -> Option<Result<(), u64>> {
        let c = self.cluster.get()?;
        match c.count_minute_n(name, key, t, n) {
            Ok(total) if total > u64::from(per_minute) => {
                if let Err(e) = c.uncount_minute_n(name, key, t, n) {
                    tracing::warn!("cluster: taking back {name}: {e}");
                }
                Some(Err(60 - t % 60))
            }
            Ok(_) => Some(Ok(())),
            Err(e) => {
                tracing::warn!("cluster: counting {name}: {e}");
                None
            }
        }
    }

    /// Writes a message to its user agent's connection on this node, if it
    /// has one with room; whether it is on the socket within `wait`.
    pub async fn write_here(&self, msg: &Arc<Message>, wait: Duration) -> bool {
        let Some(tx) = self.registry.get(&msg.uaid) else {
            return false;
        };
        let (written, done) = oneshot::channel();
        let out = Outbound::Message {
            msg: msg.clone(),
            written,
        };
        tx.try_send(out).is_ok() && matches!(tokio::time::timeout(wait, done).await, Ok(Ok(())))
    }

    /// Stores messages that were written to a device but never acknowledged
    /// (the connection ended), so that they are delivered again.
    pub fn store_unacked(self: &Arc<Self>, msgs: Vec<Arc<Message>>) {
        let ops: Vec<Op> = msgs
            .into_iter()
            // List copies are fetched again from their list; others are
            // stored, unless their subscription has ended meanwhile.
            .filter(|m| m.seq == 0 && m.list_message.is_none() && m.expires > now())
            .filter(|m| !matches!(self.store.subscription(&m.push), Ok(None)))
            .map(|m| {
                let mut m = Arc::unwrap_or_clone(m);
                m.seq = self.store.next_seq();
                Op::PutMessage(Box::new(m))
            })
            .collect();
        if ops.is_empty() {
            return;
        }
        self.write_later(ops);
    }

    /// A device acknowledged `msg`, or refused it (`outcome`): the stored
    /// copy goes, a list copy is marked answered, and on delivery the
    /// application server's receipt is sent.
    pub fn acknowledged(self: &Arc<Self>, msg: &Message, outcome: AckOutcome) {
        let mut ops = Vec::new();
        self.acknowledged_into(msg, outcome, &mut ops);
        self.settled_acks(1, ops);
    }

    /// [`State::acknowledged`] with the store's writes appended to `ops`
    /// and the acknowledgement not counted, so that a connection settles
    /// many with one queued write and one count ([`State::settled_acks`]).
    /// A message that was not delivered is counted by its outcome here.
    pub fn acknowledged_into(
        self: &Arc<Self>,
        msg: &Message,
        outcome: AckOutcome,
        ops: &mut Vec<Op>,
    ) {
        if let Some(list_message) = msg.list_message {
            // A list copy is never stored on its own and has no receipt.
            return self.copy_acknowledged_into(list_message, msg.push, outcome, ops);
        }
        self.undelivered(outcome);
        if msg.seq != 0 {
            self.delivered_into(&msg.id, ops);
        }
        if let (Some(receipt), AckOutcome::Delivered) = (msg.receipt, outcome) {
            self.send_receipt(msg.id, receipt, 204);
        }
    }

    /// [`State::delivered_into`], its deletion (if any) queued.
    pub fn delivered(&self, id: &Token) {
        let mut ops = Vec::new();
        self.delivered_into(id, &mut ops);
        if !ops.is_empty() {
            self.write_later(ops);
        }
    }

    /// Message `id` (not a list copy) is done with: its store write is
    /// skipped if its push still holds it, or deleted after it (by the node
    /// that took the push, in a cluster), or its deletion appended to `ops`.
    pub fn delivered_into(&self, id: &Token, ops: &mut Vec<Op>) {
        match self.awaiting.acked(id) {
            Acked::NotWaiting => ops.push(Op::DeleteMessage(*id)),
            Acked::Taken | Acked::Deferred => {}
            Acked::Remote(node) => {
                if let Some(c) = self.cluster.get() {
                    c.acked(&node, id);
                }
            }
        }
    }

    /// How many members acknowledged their copy of list message `id`: read
    /// from the store (off the async workers: a big list's count reads
    /// every acknowledgement) at most once per `--list-status-cache-ms`;
    /// meanwhile the last count is answered.
    pub async fn ack_counts(self: &Arc<Self>, id: &Token) -> Result<AckCounts, StoreError> {
        let fresh = Duration::from_millis(self.config.list_status_cache_ms);
        if let Some((at, counts)) = self.ack_counts.lock().expect("ack counts").get(id) {
            if at.elapsed() < fresh {
                return Ok(*counts);
            }
        }
        let (state, key) = (self.clone(), *id);
        let counts = tokio::task::spawn_blocking(move || state.store.copies_acked(&key))
            .await
            .map_err(|e| StoreError::Engine(e.to_string()))??;
        if !fresh.is_zero() {
            let mut cache = self.ack_counts.lock().expect("ack counts");
            // Bounded: old entries go when it is full.
            if cache.len() >= 4096 {
                cache.retain(|_, (at, _)| at.elapsed() < fresh);
                if cache.len() >= 4096 {
                    cache.clear();
                }
            }
            cache.insert(*id, (std::time::Instant::now(), counts));
        }
        Ok(counts)
    }

    /// Removes what deleted lists and list messages left behind (members,
    /// acknowledgements), and marks dropped the copies members that left
    /// their lists were owed, `--purge-batch` rows a commit, until none is
    /// left; a no-op while this node already purges.
    pub async fn purge(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.purging.swap(true, Ordering::AcqRel) {
            return;
        }
        let budget = self.config.purge_batch as usize;
        loop {
            let state = self.clone();
            let pending = tokio::task::spawn_blocking(move || state.store.purge_pending()).await;
            match pending {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => break,
                Ok(Err(e)) => {
                    tracing::warn!("purge: {e}");
                    break;
                }
                Err(_) => break,
            }
            if let Err(e) = self.committer.write(vec![Op::Purge { budget }]).await {
                tracing::warn!("purge: {e}");
                break;
            }
        }
        self.purging.store(false, Ordering::Release);
    }

    /// When a subscription that ends now is forgotten (its push resource
    /// answers `410` until then).
    pub fn forget_ended_at(&self) -> u64 {
        now() + self.config.ended_kept_days * 86_400
    }

    /// Records, at most once a day, that the user agent `ua` connected (or
    /// that a receipt subscription was polled), for the idle expiry.
    pub fn seen(&self, ua: &crate::store::UserAgent) {
        let day = crate::store::day_of(now());
        if ua.seen < day {
            self.write_later(vec![Op::SeenUa { uaid: ua.uaid, day }]);
        }
    }

    /// The queue of [`crate::fanout::settle_later`], taken once.
    pub fn take_settle_queue(&self) -> Option<mpsc::Receiver<Token>> {
        self.settle_queue_rx.lock().expect("settle queue").take()
    }

    /// Counts the messages commits dropped undelivered (evicted by newer
    /// ones, or with their subscription) and sends a `410` receipt for
    /// each whose sender asked for one. Runs until the committer stops;
    /// the first call takes the queue, later ones return at once.
    /// It holds the state only while it handles a batch, so that the state
    /// (and the store under it) can go when the service stops.
    pub async fn tell_dropped(state: std::sync::Weak<State>) {
        let rx = state
            .upgrade()
            .and_then(|s| s.dropped.lock().expect("dropped").take());
        let Some(mut rx) = rx else {
            return;
        };
        while let Some(batch) = rx.recv().await {
            let Some(state) = state.upgrade() else {
                return;
            };
            for d in batch {
                let counter = match d.why {
                    DropReason::Evicted => &state.metrics.messages_evicted,
                    DropReason::Ended => &state.metrics.messages_dropped_ended,
                };
                inc(counter);
                if let Some(to) = d.receipt {
                    state.send_receipt(d.id, to, 410);
                }
            }
        }
    }

    /// Counts a message a device answered as not delivered.
    fn undelivered(&self, outcome: AckOutcome) {
        match outcome {
            AckOutcome::Delivered => {}
            AckOutcome::Undecryptable => inc(&self.metrics.messages_undecryptable),
            AckOutcome::Rejected => inc(&self.metrics.messages_rejected),
        }
    }

    /// Counts `count` acknowledgements and queues their store writes.
    pub fn settled_acks(&self, count: u64, ops: Vec<Op>) {
        crate::metrics::add(&self.metrics.messages_acked, count);
        if !ops.is_empty() {
            self.write_later(ops);
        }
    }

    /// A receipt for receipt subscription `to` about message (or list
    /// message) `about`, kept `--receipt-ttl-secs`.
    fn receipt(
        &self,
        to: Token,
        about: Token,
        encoding: crate::store::Encoding,
        body: String,
    ) -> Message {
        Message {
            id: crate::tokens::new_token(),
            uaid: to,
            push: about,
            channel: [0; 16],
            seq: 0,
            expires: now() + self.config.receipt_ttl_secs,
            urgency: Default::default(),
            topic: None,
            receipt: None,
            encoding,
            body: bytes::Bytes::from(body),
            list_message: None,
        }
    }

    /// Sends a receipt for `acked` to the receipt subscription `to`: status 204
    /// (acknowledged) or 410 (expired undelivered). Runs in the background.
    pub fn send_receipt(self: &Arc<Self>, acked: Token, to: Token, status: u16) {
        let receipt = self.receipt(
            to,
            acked,
            crate::store::Encoding::Receipt,
            status.to_string(),
        );
        let state = self.clone();
        tokio::spawn(async move {
            // A receipt subscription that was deleted gets nothing more.
            if let Ok(None) = state.store.user_agent(&to) {
                return;
            }
            if let Err(e) = state.deliver(receipt, false).await {
                tracing::error!("storing a receipt: {e}");
            }
        });
    }

    /// Sends the receipt subscription `to` the status of list message `id`
    /// as its fan-out has finished (a list push's `Push-Receipt`): counted
    /// afresh, pushed as the response to a `GET` on the list message.
    pub async fn send_list_receipt(self: &Arc<Self>, id: Token, to: Token) {
        let (state, key) = (self.clone(), id);
        let read = tokio::task::spawn_blocking(move || {
            let msg = state.store.list_message(&key)?;
            Ok::<_, StoreError>(match msg {
                Some(m) => {
                    let backlog = state.config.list_backlog;
                    let newer = state.store.newer_list_messages(&m.list, m.seq, backlog)?;
                    Some((state.store.copies_acked(&key)?, m, newer >= backlog))
                }
                None => None,
            })
        })
        .await;
        let (acks, msg, beyond) = match read {
            Ok(Ok(Some(x))) => x,
            // Its list was deleted meanwhile: nothing to tell.
            Ok(Ok(None)) => return,
            Ok(Err(e)) => return tracing::error!("list receipt: {e}"),
            Err(_) => return,
        };
        let doc = crate::status::document(&msg, &acks, beyond);
        let receipt = self.receipt(to, id, crate::store::Encoding::ListReceipt, doc.to_string());
        // A receipt subscription that was deleted gets nothing.
        if let Ok(None) = self.store.user_agent(&to) {
            return;
        }
        if let Err(e) = self.deliver(receipt, false).await {
            tracing::error!("storing a list receipt: {e}");
        }
    }

    /// A device acknowledged (or refused) its copy of `list_message`, sent
    /// to subscription `push`: its store write appended to `ops`, as
    /// [`State::acknowledged_into`].
    pub fn copy_acknowledged_into(
        &self,
        list_message: Token,
        push: Token,
        outcome: AckOutcome,
        ops: &mut Vec<Op>,
    ) {
        self.undelivered(outcome);
        ops.push(Op::AckCopy {
            list_message,
            push,
            outcome,
        });
    }

    /// Waits until writes queued without waiting (acknowledgements) are
    /// committed, so that a read of what a device still has to get does
    /// not see messages it already acknowledged.
    pub async fn settle(&self) -> Result<(), StoreError> {
        self.committer.settle().await
    }

    /// Writes without waiting for the commit (acknowledgements, clean-ups);
    /// shutdown waits until the committer has none pending.
    pub fn write_later(&self, ops: Vec<Op>) {
        self.committer.enqueue(ops);
    }
}

/// The rate key of a client address: an IPv4 address, or an IPv6 /64 (one
/// customer's block). An address that could not be read counts as the
/// unspecified one.
fn address_key(addr: Option<std::net::IpAddr>) -> Token {
    match addr {
        Some(std::net::IpAddr::V6(a)) => {
            let mut k = a.octets();
            k[8..].fill(0);
            k
        }
        Some(std::net::IpAddr::V4(a)) => a.to_ipv6_mapped().octets(),
        None => std::net::Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets(),
    }
}
