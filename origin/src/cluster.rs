//! Many origin nodes on one Redis store: which node holds each connected
//! user agent (route records), the messages and notices nodes send each
//! other over Redis sharded pub/sub, and the rate counters they share.
//!
//! A message for a user agent that another node holds is forwarded to that
//! node (the node its route record names), which writes it to the
//! device's connection and answers; the `201` follows that answer, as it
//! follows the write on one node. When the device is not connected to a
//! live node, or its node does not answer in time, the message is stored,
//! as for a device that is away, and announced to the node the record
//! names, which has the connection fetch it; a notice lost with a node or
//! a Redis failover only delays the message to the device's next `hello`,
//! or to the nudge every connection of a node gets when its subscription
//! to Redis is restored.
//!
//! A list push is walked once, by the node that took it: it reaches the
//! members connected to it, and sends every other live node the members
//! that node holds (looked up in their route records), which it reaches
//! in turn; each node so reads only the members it holds, once. The walk
//! records how far it got (a fan-out record, `<node>/<epoch>/<cursor>`);
//! a fan-out whose node died, or restarted, is taken over by another node
//! from there (see [`Cluster::claim`]), and the copies a member already
//! has are not written to its connection twice.
//!
//! A route record is `<node>/<connection id>`, a field of one of 256
//! hashes (by the user agent's first byte), so that a batch of lookups
//! or writes costs Redis one command per hash, not one per user agent: a
//! list push's walk looks up a route per member. A record of an older
//! connection is never removed by the end of a newer one, and one that
//! names a node that died is recognised by that node's liveness key, which
//! each node renews every second and which expires [`ALIVE`] after its last
//! renewal. (A publish's reply cannot tell: on a Redis Cluster it counts
//! only the subscribers of the server it reached.)
//! Route writes and notices are sent by one thread in pipelines, so that a
//! connect storm or a burst of pushes costs a few round trips per batch,
//! and none waits on a runtime thread.

use crate::registry::Presence;
use crate::store::redis::{Conn, RedisOptions, Target};
use crate::store::{ListMember, StoreError};
use crate::tokens::Token;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// What a node does with the notices it hears.
pub trait Inbox: Send + Sync + 'static {
    /// These user agents, connected here, have stored messages to fetch.
    fn nudge(&self, uaids: &[Token]);
    /// Members of list message `id` connected here, sent by the node
    /// that walks it: write each its copy.
    fn list_members(&self, id: Token, members: Vec<ListMember>);
    /// The subscription to notices was (re)established: notices may have
    /// been missed, and route records lost with a Redis failure.
    fn resubscribed(&self);
    /// Node `from` forwards a message for a device connected here: write
    /// it to the connection, then call `written` with whether it was (if
    /// not, the other node stores it). Its acknowledgement goes back to
    /// `from` ([`Cluster::acked`]).
    fn deliver(
        &self,
        msg: crate::store::Message,
        from: Arc<str>,
        written: Box<dyn FnOnce(bool) + Send>,
    );
    /// A message this node forwarded was acknowledged by its device.
    fn acked(&self, id: Token);
}

/// Counters of the cluster, for `/metrics`.
#[derive(Default)]
pub struct ClusterMetrics {
    /// Messages for user agents on other nodes whose node was found.
    pub route_hits: AtomicU64,
    /// Messages for user agents no node holds (or whose node is gone).
    pub route_misses: AtomicU64,
    /// Notices sent to other nodes (one per node per batch).
    pub notices_sent: AtomicU64,
    /// Notices heard from other nodes.
    pub notices_heard: AtomicU64,
    /// Messages written to a device connected to another node, forwarded
    /// there without being stored.
    pub forwarded: AtomicU64,
    /// The last Redis round trip, microseconds.
    pub redis_rtt_us: AtomicU64,
    /// List members sent to the node that holds them.
    pub members_sent: AtomicU64,
    /// Fan-outs of a node that died or restarted, taken over here.
    pub fanouts_taken_over: AtomicU64,
}

/// Told whether the notice went out.
type Sent = tokio::sync::oneshot::Sender<bool>;

/// Claimed fan-outs, each with the member its walk reached.
type Claimed = Vec<(Token, Option<Token>)>;

enum Job {
    Arrived(Token, u64),
    Left(Token, u64),
    Notify(Token, Sent),
    /// Answered once the route writes queued before it are done.
    Barrier(Sent),
    /// Members of list message `id` held elsewhere, for their nodes; the
    /// walk reached `cursor`. `reply` learns how many no live node holds
    /// (`None`: the batch failed).
    Spread {
        id: Token,
        cursor: Token,
        members: Vec<ListMember>,
        offline: u64,
        reply: Option<tokio::sync::oneshot::Sender<Option<u64>>>,
    },
    /// Claims the fan-outs among `ids` whose walker is gone; `reply`
    /// learns those claimed, and where each walk stood.
    Claim {
        ids: Vec<Token>,
        reply: Option<tokio::sync::oneshot::Sender<Claimed>>,
    },
    /// A message (encoded) for the node that holds `uaid`, to write to the
    /// device's connection; `reply` learns whether it was written.
    Forward {
        uaid: Token,
        message: Vec<u8>,
        reply: Option<Sent>,
    },
    /// The answer to another node's `Forward`.
    Reply {
        node: String,
        id: u64,
        delivered: bool,
    },
    /// A message `node` forwarded here was acknowledged.
    Acked {
        node: Arc<str>,
        id: Token,
    },
}

/// This node's part in a cluster.
pub struct Cluster {
    node: String,
    /// Tells this process's fan-out records from an earlier one's.
    epoch: u64,
    prefix: String,
    jobs: mpsc::Sender<Job>,
    up: AtomicBool,
    stop: AtomicBool,
    /// Forwarded messages whose answer is awaited, by request id.
    pending: std::sync::Mutex<HashMap<u64, Sent>>,
    /// Where rate counters are kept, and the connection that counts.
    counters: (Target, Duration),
    counter: std::sync::Mutex<Option<Conn>>,
    next_request: AtomicU64,
    /// Counters.
    pub metrics: ClusterMetrics,
}

/// Removes each route record of a hash (`ARGV`: user agent, record,
/// ...) only if it is still the given connection's.
const RELEASE: &str = "for i = 1, #ARGV, 2 do \
     if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then \
     redis.call('HDEL', KEYS[1], ARGV[i]) end end return 0";

/// How many hashes the route records are spread over (by a user agent's
/// first byte): a batch of lookups or writes is then one command per hash
/// it touches, not one per user agent, which is what a list push's walk
/// and a connect storm cost Redis (see the module doc).
const ROUTE_HASHES: usize = 256;

/// A field written into every route hash beside the records, whose value
/// is longer than Redis keeps in a compact hash (`hash-max-listpack-value`,
/// 64 by default): the hash is then a hash table from its first write on,
/// and a lookup costs one probe. A compact hash (up to
/// `hash-max-listpack-entries`, 512 in Debian's Redis, records) is searched
/// from its start: at 100,000 devices, about 400 records a hash, each
/// lookup cost Redis 8 µs and a list push's walk most of Redis's time
/// (docs/performance.md, scenario l). The field also keeps an emptied hash
/// from being deleted and made again compact, so a node writes it once per
/// hash on each connection to Redis.
const ROUTE_HASH_FIELD: &str = "~";
const _: () = assert!(ROUTE_HASH_NOTE.len() > 64);
const ROUTE_HASH_NOTE: &str =
    "route records of user agents, by uaid; this field keeps the hash a hash table";

/// Takes a lease that is free or already the caller's, for `ARGV[2]` ms.
const LEASE: &str = "local v = redis.call('GET', KEYS[1]) \
     if not v or v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end \
     return 0";

/// Sets a fan-out record only if it is still the one read.
const CLAIM: &str = "if (redis.call('GET', KEYS[1]) or '') == ARGV[1] then \
     redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1 end return 0";

/// How long a fan-out record outlives its last write, seconds.
const FANOUT_RECORD_SECS: u64 = 600;

/// The most jobs one pipeline carries.
const BATCH: usize = 4096;

/// How long a node's liveness key outlives its last renewal.
pub const ALIVE: Duration = Duration::from_secs(5);

/// How long a node's liveness, once read, is trusted.
const ALIVE_READ: Duration = Duration::from_secs(1);

impl Cluster {
    /// Joins the cluster of the Redis store `options` names as node `node`,
    /// handing what it hears to `inbox`. The threads stop with [`Cluster::stop`].
    pub fn start(
        node: String,
        options: &RedisOptions,
        inbox: Arc<dyn Inbox>,
    ) -> Result<Arc<Cluster>, StoreError> {
        let target = Target::of(options)?;
        let (tx, rx) = mpsc::channel();
        let cluster = Arc::new(Cluster {
            node,
            epoch: u64::from_le_bytes(crate::tokens::new_token()[..8].try_into().expect("8 bytes")),
            prefix: options.prefix.clone(),
            jobs: tx,
            up: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            pending: Default::default(),
            counters: (Target::of(options)?, options.timeout),
            counter: Default::default(),
            next_request: AtomicU64::new(1),
            metrics: ClusterMetrics::default(),
        });
        let servers = target.servers();
        let timeout = options.timeout;
        let c = cluster.clone();
        let inbox2 = inbox.clone();
        std::thread::Builder::new()
            .name("cluster-send".into())
            .spawn(move || c.send_loop(&target, timeout, rx, &*inbox2))
            .map_err(|e| StoreError::Engine(e.to_string()))?;
        let c = cluster.clone();
        std::thread::Builder::new()
            .name("cluster-listen".into())
            .spawn(move || c.listen_loop(&servers, &*inbox))
            .map_err(|e| StoreError::Engine(e.to_string()))?;
        Ok(cluster)
    }

    /// Whether Redis answered the last time it was asked.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Stops the threads (at shutdown).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    fn send(&self, job: Job) {
        let _ = self.jobs.send(job);
    }

    /// Announces a stored message to the node that holds its user agent;
    /// returns once the notice went out (`true`), or could not (`false`:
    /// the device gets the message at its next `hello`).
    pub async fn notify(&self, uaid: &Token) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Notify(*uaid, tx));
        rx.await.unwrap_or(false)
    }

    /// Forwards `msg` to the node that holds its user agent, which writes
    /// it to the device's connection; whether it was written within `wait`
    /// (if not, the caller stores it: the device fetches it from there).
    pub async fn forward(&self, msg: &crate::store::Message, wait: Duration) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Forward {
            uaid: msg.uaid,
            message: crate::store::codec::message(msg),
            reply: Some(tx),
        });
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(true)) => {
                self.metrics.forwarded.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Tells `node`, which forwarded message `id` here, that its device
    /// acknowledged it: that node skips or deletes its write. (If the
    /// notice is lost, the message stays stored, and the device gets it
    /// again at its next `hello`.)
    pub fn acked(&self, node: &str, id: &Token) {
        self.send(Job::Acked {
            node: node.into(),
            id: *id,
        });
    }

    /// Counts one event of `name` for `key` in the current clock minute, on
    /// every node together; how many the minute holds with it.
    pub fn count_minute(&self, name: &str, key: &[u8], now: u64) -> Result<u64, StoreError> {
        self.count_minute_n(name, key, now, 1)
    }

    /// [`Cluster::count_minute`] of `n` events at once.
    pub fn count_minute_n(
        &self,
        name: &str,
        key: &[u8],
        now: u64,
        n: u32,
    ) -> Result<u64, StoreError> {
        let totals = self.add_counts(name, &[(key, now / 60, n)])?;
        Ok(totals.into_iter().next().unwrap_or(0))
    }

    /// Takes back `n` events of `count_minute_n` in the minute of `now`.
    pub fn uncount_minute_n(
        &self,
        name: &str,
        key: &[u8],
        now: u64,
        n: u32,
    ) -> Result<(), StoreError> {
        let mut decr = redis::cmd("DECRBY");
        decr.arg(self.rate_key(name, key, now / 60)).arg(n);
        self.on_counter(|c| c.query::<i64>(&decr)).map(|_| ())
    }

    /// Whether this process holds the lease on `what` (one node of the
    /// cluster at a time): taken when free, renewed while held, and free
    /// again `lease` after its holder's last renewal.
    pub fn lead(&self, what: &str, lease: Duration) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(LEASE)
            .arg(1)
            .arg(format!("{}:lease:{what}", self.prefix))
            .arg(format!("{}/{:x}", self.node, self.epoch))
            .arg(lease.as_millis() as u64);
        self.on_counter(|c| c.query::<i64>(&cmd)).map(|n| n == 1)
    }

    /// Runs `f` on the connection that counts (opened when there is none;
    /// dropped when `f` fails, for a fresh one next time).
    fn on_counter<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.counter.lock().expect("counter");
        let c = match &mut *conn {
            Some(c) => c,
            empty => empty.insert(self.counters.0.open(self.counters.1)?),
        };
        let r = f(c);
        if r.is_err() {
            *conn = None;
        }
        r
    }

    /// The Redis key of `key`'s count of `name` in clock minute `minute`.
    fn rate_key(&self, name: &str, key: &[u8], minute: u64) -> String {
        use base64::Engine;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
        format!("{}:rate:{name}:{{{tag}}}:{minute}", self.prefix)
    }

    /// Adds `events` to each key's count of `name` in clock minute
    /// `minute`, on every node together; the totals with them.
    pub fn add_counts(
        &self,
        name: &str,
        counts: &[(&[u8], u64, u32)],
    ) -> Result<Vec<u64>, StoreError> {
        let mut cmds = Vec::with_capacity(2 * counts.len());
        for (key, minute, events) in counts {
            let k = self.rate_key(name, key, *minute);
            let mut incr = redis::cmd("INCRBY");
            incr.arg(&k).arg(*events);
            let mut expire = redis::cmd("EXPIRE");
            expire.arg(&k).arg(120);
            cmds.extend([incr, expire]);
        }
        let replies = self.on_counter(|c| c.pipeline(cmds))?;
        Ok(replies
            .into_iter()
            .step_by(2)
            .map(|v| redis::from_redis_value::<u64>(v).unwrap_or(0))
            .collect())
    }

    /// Returns once the route records of the connections registered
    /// before the call are written (`true`), or could not be (`false`).
    /// A connection waits for its own before it fetches what is stored:
    /// then a sender that stores a message after the connection's fetch
    /// finds the route, and one that stored it before is seen by the fetch.
    pub async fn routed(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Barrier(tx));
        rx.await.unwrap_or(false)
    }

    /// Sends `members` of list message `id`, held by other nodes, to their
    /// nodes, and records that the walk reached `cursor`. The receiver
    /// learns how many no live node holds (they fetch their copies at
    /// `hello`), or `None` if the batch failed (then every connection of
    /// every node fetches what it may have missed once Redis is back).
    pub fn spread(
        &self,
        id: Token,
        cursor: Token,
        members: Vec<ListMember>,
    ) -> tokio::sync::oneshot::Receiver<Option<u64>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Spread {
            id,
            cursor,
            members,
            offline: 0,
            reply: Some(tx),
        });
        rx
    }

    /// Claims, among the unfinished fan-outs `ids`, those whose walker is
    /// gone: its node's liveness key expired, or it names this node from
    /// an earlier process, or there is none. Returns each claimed fan-out
    /// with the member its walk reached (`None`: from the start). Only
    /// one node claims a fan-out.
    pub async fn claim(&self, ids: Vec<Token>) -> Claimed {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Claim {
            ids,
            reply: Some(tx),
        });
        let claimed = rx.await.unwrap_or_default();
        self.metrics
            .fanouts_taken_over
            .fetch_add(claimed.len() as u64, Ordering::Relaxed);
        claimed
    }

    /// The hash that holds `uaid`'s route record (its field is the user
    /// agent's 16 bytes).
    fn routes_key(&self, uaid: &Token) -> String {
        format!("{}:routes:{{r{:02x}}}", self.prefix, uaid[0])
    }

    /// The route records of `uaids` (`None`: none), one `HMGET` per hash.
    fn routes_of(&self, c: &mut Conn, uaids: &[Token]) -> Result<Vec<Option<String>>, StoreError> {
        let mut by_hash: Vec<Vec<usize>> = vec![Vec::new(); ROUTE_HASHES];
        for (i, u) in uaids.iter().enumerate() {
            by_hash[usize::from(u[0])].push(i);
        }
        let mut asked = Vec::new();
        let mut cmds = Vec::new();
        for at in by_hash.into_iter().filter(|at| !at.is_empty()) {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(self.routes_key(&uaids[at[0]]));
            for &i in &at {
                cmd.arg(&uaids[i][..]);
            }
            cmds.push(cmd);
            asked.push(at);
        }
        let mut out = vec![None; uaids.len()];
        for (at, reply) in asked.into_iter().zip(c.pipeline(cmds)?) {
            let found: Vec<Option<String>> = redis::from_redis_value(reply).unwrap_or_default();
            for (i, r) in at.into_iter().zip(found) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    fn node_channel(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    fn alive_key(&self, node: &str) -> String {
        format!("{}:alive:{node}", self.prefix)
    }

    fn fanout_key(&self, id: &Token) -> String {
        format!("{}:fanout:{{{}}}", self.prefix, crate::tokens::encode(id))
    }

    /// A fan-out record of this process: the walk reached `cursor`.
    fn fanout_record(&self, cursor: Option<&Token>) -> String {
        let at = cursor.map(crate::tokens::encode).unwrap_or_default();
        format!("{}/{:x}/{at}", self.node, self.epoch)
    }

    fn record(&self, id: u64) -> String {
        format!("{}/{id}", self.node)
    }

    fn send_loop(
        &self,
        target: &Target,
        timeout: Duration,
        rx: mpsc::Receiver<Job>,
        inbox: &dyn Inbox,
    ) {
        let mut conn: Option<Conn> = None;
        let mut alive = HashMap::new();
        // Route hashes given their field on this connection.
        let mut marked = [false; ROUTE_HASHES];
        let mut renewed = Instant::now() - ALIVE;
        while !self.stop.load(Ordering::Acquire) {
            let first = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(j) => Some(j),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut jobs: Vec<Job> = first.into_iter().collect();
            while jobs.len() < BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let c = match &mut conn {
                Some(c) => c,
                empty => match target.open(timeout) {
                    Ok(c) => {
                        marked = [false; ROUTE_HASHES];
                        empty.insert(c)
                    }
                    Err(e) => {
                        self.down(&e);
                        self.missed(&jobs);
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                },
            };
            let started = Instant::now();
            let done = if renewed.elapsed() >= Duration::from_secs(1) {
                // Renewing the liveness key is the round trip measured.
                let mut cmd = redis::cmd("SET");
                cmd.arg(self.alive_key(&self.node))
                    .arg(1)
                    .arg("PX")
                    .arg(ALIVE.as_millis() as u64);
                c.query::<redis::Value>(&cmd)
                    .map(|_| renewed = Instant::now())
            } else {
                Ok(())
            };
            let done = done.and_then(|()| self.run(c, &mut jobs, &mut alive, &mut marked, inbox));
            if done.is_err() {
                self.missed(&jobs);
            }
            // Whoever waits for a notice learns whether it went out.
            for j in jobs.drain(..) {
                match j {
                    Job::Notify(_, sent) | Job::Barrier(sent) => {
                        let _ = sent.send(done.is_ok());
                    }
                    Job::Spread {
                        offline,
                        reply: Some(r),
                        ..
                    } => {
                        let _ = r.send(done.is_ok().then_some(offline));
                    }
                    Job::Claim { reply: Some(r), .. } => {
                        let _ = r.send(Vec::new());
                    }
                    // A forward that did not go out is stored by its sender.
                    Job::Forward {
                        reply: Some(sent), ..
                    } => {
                        let _ = sent.send(false);
                    }
                    _ => {}
                }
            }
            match done {
                Ok(()) => {
                    let rtt = started.elapsed().as_micros() as u64;
                    self.metrics.redis_rtt_us.store(rtt, Ordering::Relaxed);
                    if !self.up.swap(true, Ordering::AcqRel) {
                        tracing::info!(node = %self.node, "cluster: Redis reachable");
                    }
                }
                Err(e) => {
                    self.down(&e);
                    conn = None;
                }
            }
        }
    }

    fn down(&self, e: &StoreError) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::error!(node = %self.node, "cluster: Redis unreachable: {e}");
        }
    }

    /// Counts the notices a failed batch could not send (their messages
    /// are stored: the devices fetch them at their next `hello`, or at the
    /// nudge when this node's subscription is restored).
    fn missed(&self, jobs: &[Job]) {
        let n = jobs.iter().filter(|j| matches!(j, Job::Notify(..))).count();
        self.metrics
            .route_misses
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// One batch: route writes, then the notices, one `SPUBLISH` per node,
    /// then the fan-out records (after the members they account for went
    /// out), then the claims.
    fn run(
        &self,
        c: &mut Conn,
        jobs: &mut [Job],
        alive: &mut HashMap<String, (Instant, bool)>,
        marked: &mut [bool; ROUTE_HASHES],
        inbox: &dyn Inbox,
    ) -> Result<(), StoreError> {
        // Route writes, per hash: every arrival (in order, so the last
        // wins), then every conditional removal.
        let mut arrived: HashMap<u8, redis::Cmd> = HashMap::new();
        let mut left: HashMap<u8, redis::Cmd> = HashMap::new();
        let mut wanted: Vec<Token> = Vec::new();
        let mut frames: HashMap<String, Vec<u8>> = HashMap::new();
        let mut claims: Vec<Token> = Vec::new();
        for j in jobs.iter() {
            match j {
                Job::Arrived(u, id) => {
                    arrived
                        .entry(u[0])
                        .or_insert_with(|| {
                            let mut cmd = redis::cmd("HSET");
                            cmd.arg(self.routes_key(u));
                            if !marked[usize::from(u[0])] {
                                cmd.arg(ROUTE_HASH_FIELD).arg(ROUTE_HASH_NOTE);
                            }
                            cmd
                        })
                        .arg(&u[..])
                        .arg(self.record(*id));
                }
                Job::Left(u, id) => {
                    left.entry(u[0])
                        .or_insert_with(|| {
                            let mut cmd = redis::cmd("EVAL");
                            cmd.arg(RELEASE).arg(1).arg(self.routes_key(u));
                            cmd
                        })
                        .arg(&u[..])
                        .arg(self.record(*id));
                }
                Job::Notify(u, _) => wanted.push(*u),
                Job::Forward { uaid, .. } => wanted.push(*uaid),
                Job::Spread { members, .. } => wanted.extend(members.iter().map(|m| m.uaid)),
                Job::Claim { ids, .. } => claims.extend_from_slice(ids),
                Job::Barrier(_) => {}
                Job::Reply {
                    node,
                    id,
                    delivered,
                } => {
                    let mut body = id.to_be_bytes().to_vec();
                    body.push(u8::from(*delivered));
                    record(frames.entry(node.clone()).or_default(), REPLY, &body);
                }
                Job::Acked { node, id } => {
                    record(frames.entry(node.to_string()).or_default(), ACKED, id);
                }
            }
        }
        let written: Vec<u8> = arrived.keys().copied().collect();
        c.pipeline(arrived.into_values().chain(left.into_values()).collect())?;
        for h in written {
            marked[usize::from(h)] = true;
        }
        // Where each user agent is: a live node, this one, or none.
        wanted.sort_unstable();
        wanted.dedup();
        let records = self.routes_of(c, &wanted)?;
        let mut routes: HashMap<Token, String> = HashMap::with_capacity(wanted.len());
        for (u, record) in wanted.iter().zip(records) {
            if let Some((n, _)) = record.as_deref().and_then(|r| r.rsplit_once('/')) {
                routes.insert(*u, n.to_owned());
            }
        }
        // Fan-out records name the nodes whose liveness a claim depends on.
        let records = get_all(c, claims.iter().map(|id| self.fanout_key(id)))?;
        let walkers = records
            .iter()
            .flatten()
            .filter_map(|r| r.split('/').next().map(str::to_owned));
        self.check_alive(c, alive, routes.values().cloned().chain(walkers))?;
        let live = |n: &str| alive.get(n).is_some_and(|(_, up)| *up);
        let mut here = Vec::new();
        let mut progress = Vec::new();
        for j in jobs.iter_mut() {
            match j {
                Job::Notify(u, _) => match routes.get(u) {
                    // It connected here after the message was stored.
                    Some(n) if *n == self.node => here.push(*u),
                    Some(n) if live(n) => {
                        self.metrics.route_hits.fetch_add(1, Ordering::Relaxed);
                        record(frames.entry(n.clone()).or_default(), NUDGE, u);
                    }
                    // No live node holds it: it fetches at its next hello.
                    _ => {
                        self.metrics.route_misses.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Job::Forward {
                    uaid,
                    message,
                    reply,
                } => match routes.get(uaid) {
                    Some(n) if *n != self.node && live(n) => {
                        self.metrics.route_hits.fetch_add(1, Ordering::Relaxed);
                        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
                        if let Some(r) = reply.take() {
                            self.pending.lock().expect("pending").insert(id, r);
                        }
                        let mut body = id.to_be_bytes().to_vec();
                        body.push(self.node.len() as u8);
                        body.extend_from_slice(self.node.as_bytes());
                        body.extend_from_slice(message);
                        record(frames.entry(n.clone()).or_default(), DELIVER, &body);
                    }
                    // Not held by another live node: the sender stores it.
                    _ => {
                        if let Some(r) = reply.take() {
                            let _ = r.send(false);
                        }
                    }
                },
                Job::Spread {
                    id,
                    cursor,
                    members,
                    offline,
                    ..
                } => {
                    let mut by_node: HashMap<&str, Vec<u8>> = HashMap::new();
                    for m in members.iter() {
                        match routes.get(&m.uaid) {
                            Some(n) if *n != self.node && live(n) => {
                                let body = by_node.entry(n).or_insert_with(|| id.to_vec());
                                let member = crate::store::codec::member(m);
                                body.extend_from_slice(&(member.len() as u32).to_be_bytes());
                                body.extend_from_slice(&member);
                                self.metrics.members_sent.fetch_add(1, Ordering::Relaxed);
                            }
                            // It left this node, or no live node holds it:
                            // it fetches its copy at its next hello.
                            _ => *offline += 1,
                        }
                    }
                    for (n, body) in by_node {
                        record(frames.entry(n.to_owned()).or_default(), MEMBERS, &body);
                    }
                    progress.push((*id, *cursor));
                }
                _ => {}
            }
        }
        if !here.is_empty() {
            inbox.nudge(&here);
        }
        // One round trip for every node's notice (each goes to the master
        // of its channel's slot).
        let notices: Vec<redis::Cmd> = frames
            .into_iter()
            .map(|(node, payload)| {
                let mut cmd = redis::cmd("SPUBLISH");
                cmd.arg(self.node_channel(&node)).arg(payload);
                cmd
            })
            .collect();
        let sent = notices.len() as u64;
        c.pipeline(notices)?;
        self.metrics.notices_sent.fetch_add(sent, Ordering::Relaxed);
        // The last record of each fan-out in this batch is where it stands.
        let mut at: HashMap<Token, Token> = HashMap::new();
        at.extend(progress);
        let sets: Vec<_> = at
            .iter()
            .map(|(id, cursor)| {
                let mut cmd = redis::cmd("SET");
                cmd.arg(self.fanout_key(id))
                    .arg(self.fanout_record(Some(cursor)))
                    .arg("EX")
                    .arg(FANOUT_RECORD_SECS);
                cmd
            })
            .collect();
        c.pipeline(sets)?;
        self.claim_gone(c, jobs, &claims, &records, alive)
    }

    /// Learns (or recalls, for [`ALIVE_READ`]) whether each of `nodes` other
    /// than this one is alive.
    fn check_alive(
        &self,
        c: &mut Conn,
        alive: &mut HashMap<String, (Instant, bool)>,
        nodes: impl Iterator<Item = String>,
    ) -> Result<(), StoreError> {
        let unknown: Vec<String> = nodes
            .filter(|n| *n != self.node)
            .filter(|n| {
                alive
                    .get(n)
                    .is_none_or(|(at, _)| at.elapsed() >= ALIVE_READ)
            })
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .collect();
        let checks: Vec<_> = unknown
            .iter()
            .map(|n| {
                let mut cmd = redis::cmd("EXISTS");
                cmd.arg(self.alive_key(n));
                cmd
            })
            .collect();
        let now = Instant::now();
        for (n, found) in unknown.into_iter().zip(c.pipeline(checks)?) {
            alive.insert(n, (now, matches!(found, redis::Value::Int(1))));
        }
        Ok(())
    }

    /// Claims the fan-outs among `claims` (whose records are `records`)
    /// whose walker is gone, and answers the `Claim` jobs.
    fn claim_gone(
        &self,
        c: &mut Conn,
        jobs: &mut [Job],
        claims: &[Token],
        records: &[Option<String>],
        alive: &HashMap<String, (Instant, bool)>,
    ) -> Result<(), StoreError> {
        let mine = format!("{:x}", self.epoch);
        let mut tries = Vec::new();
        let mut cmds = Vec::new();
        for (id, record) in claims.iter().zip(records) {
            let old = record.as_deref().unwrap_or("");
            let mut parts = old.splitn(3, '/');
            let (node, epoch, cursor) = (parts.next(), parts.next(), parts.next());
            let gone = match (node, epoch) {
                (Some(n), Some(e)) if n == self.node => e != mine,
                (Some(n), Some(_)) => !alive.get(n).is_some_and(|(_, up)| *up),
                _ => true,
            };
            if !gone {
                continue;
            }
            let cursor = cursor.and_then(crate::tokens::decode);
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(CLAIM)
                .arg(1)
                .arg(self.fanout_key(id))
                .arg(old)
                .arg(self.fanout_record(cursor.as_ref()))
                .arg(FANOUT_RECORD_SECS);
            cmds.push(cmd);
            tries.push((*id, cursor));
        }
        let won: Vec<(Token, Option<Token>)> = tries
            .into_iter()
            .zip(c.pipeline(cmds)?)
            .filter(|(_, r)| matches!(r, redis::Value::Int(1)))
            .map(|(t, _)| t)
            .collect();
        for j in jobs.iter_mut() {
            if let Job::Claim { ids, reply } = j {
                if let Some(r) = reply.take() {
                    let _ = r.send(
                        won.iter()
                            .filter(|(id, _)| ids.contains(id))
                            .copied()
                            .collect(),
                    );
                }
            }
        }
        Ok(())
    }

    fn listen_loop(&self, servers: &[redis::Client], inbox: &dyn Inbox) {
        let mine = self.node_channel(&self.node);
        let mut i = 0;
        while !self.stop.load(Ordering::Acquire) {
            let Some(server) = servers.get(i % servers.len().max(1)) else {
                return;
            };
            i += 1;
            if let Err(e) = self.listen(server, &mine, inbox) {
                tracing::warn!(node = %self.node, "cluster: notices: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Hears this node's channel, a shard channel (`SSUBSCRIBE`): on a
    /// Redis Cluster only the master of its slot and that master's replicas
    /// carry its notices, where a `PUBLISH` would cross every server. The
    /// connection speaks RESP3, whose notices are pushes, not replies.
    fn listen(
        &self,
        server: &redis::Client,
        mine: &str,
        inbox: &dyn Inbox,
    ) -> redis::RedisResult<()> {
        let info = server.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let info = info.set_redis_settings(resp3);
        let mut subscribe = redis::cmd("SSUBSCRIBE");
        subscribe.arg(mine);
        let open = |info: redis::ConnectionInfo| -> redis::RedisResult<redis::Connection> {
            let mut conn =
                redis::Client::open(info)?.get_connection_with_timeout(Duration::from_secs(2))?;
            conn.set_read_timeout(Some(Duration::from_secs(2)))?;
            conn.send_packed_command(&subscribe.get_packed_command())?;
            conn.recv_response()?.extract_error()?;
            Ok(conn)
        };
        let mut conn = match open(info.clone()) {
            Ok(c) => c,
            Err(e) => {
                // Not the master of the channel's slot: go where it says.
                let Some((addr, _)) = e.redirect_node() else {
                    return Err(e);
                };
                let (host, port) = addr
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
                    .ok_or(e)?;
                open(info.set_addr(redis::ConnectionAddr::Tcp(host, port)))?
            }
        };
        conn.set_read_timeout(Some(Duration::from_millis(500)))?;
        inbox.resubscribed();
        while !self.stop.load(Ordering::Acquire) {
            let (kind, data) = match conn.recv_response() {
                Ok(redis::Value::Push { kind, data }) => (kind, data),
                Ok(_) => continue,
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Err(e),
            };
            match (kind, data.as_slice()) {
                (redis::PushKind::SMessage, [_, redis::Value::BulkString(payload)]) => {
                    self.metrics.notices_heard.fetch_add(1, Ordering::Relaxed);
                    self.heard(payload, inbox);
                }
                // The slot moved (a failover, a resharding): subscribe
                // again, where the slot is now.
                (redis::PushKind::SUnsubscribe, _) => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "the shard channel moved",
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The records of a notice on this node's channel.
    fn heard(&self, mut payload: &[u8], inbox: &dyn Inbox) {
        let mut nudges = Vec::new();
        while payload.len() >= 5 {
            let kind = payload[0];
            let len = u32::from_be_bytes(payload[1..5].try_into().expect("4 bytes")) as usize;
            let Some(body) = payload.get(5..5 + len) else {
                break;
            };
            payload = &payload[5 + len..];
            match kind {
                NUDGE if body.len() == 16 => nudges.push(body.try_into().expect("16 bytes")),
                DELIVER if body.len() > 9 => {
                    let id = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
                    let from_len = body[8] as usize;
                    let (Some(from), Some(message)) =
                        (body.get(9..9 + from_len), body.get(9 + from_len..))
                    else {
                        continue;
                    };
                    let from: Arc<str> = String::from_utf8_lossy(from).into();
                    let Ok(message) = crate::store::codec::read_message(message) else {
                        continue;
                    };
                    let jobs = self.jobs.clone();
                    let node = from.to_string();
                    inbox.deliver(
                        message,
                        from,
                        Box::new(move |delivered| {
                            let _ = jobs.send(Job::Reply {
                                node,
                                id,
                                delivered,
                            });
                        }),
                    );
                }
                MEMBERS if body.len() > 16 => {
                    let id: Token = body[..16].try_into().expect("16 bytes");
                    let mut rest = &body[16..];
                    let mut members = Vec::new();
                    while rest.len() >= 4 {
                        let n = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
                        let Some(m) = rest.get(4..4 + n) else { break };
                        if let Ok(m) = crate::store::codec::read_member(m) {
                            members.push(m);
                        }
                        rest = &rest[4 + n..];
                    }
                    inbox.list_members(id, members);
                }
                ACKED if body.len() == 16 => inbox.acked(body.try_into().expect("16 bytes")),
                REPLY if body.len() == 9 => {
                    let id = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
                    let waiting = self.pending.lock().expect("pending").remove(&id);
                    if let Some(w) = waiting {
                        let _ = w.send(body[8] == 1);
                    }
                }
                _ => {}
            }
        }
        if !nudges.is_empty() {
            inbox.nudge(&nudges);
        }
    }
}

/// Kinds of record on a node's channel.
const NUDGE: u8 = b'N';
const DELIVER: u8 = b'D';
const REPLY: u8 = b'R';
const ACKED: u8 = b'A';
const MEMBERS: u8 = b'L';

/// The string values of `keys` (`None`: no such key), in one pipeline.
fn get_all(
    c: &mut Conn,
    keys: impl Iterator<Item = String>,
) -> Result<Vec<Option<String>>, StoreError> {
    let gets: Vec<_> = keys
        .map(|k| {
            let mut cmd = redis::cmd("GET");
            cmd.arg(k);
            cmd
        })
        .collect();
    if gets.is_empty() {
        return Ok(Vec::new());
    }
    Ok(c.pipeline(gets)?
        .into_iter()
        .map(|v| redis::from_redis_value(v).unwrap_or(None))
        .collect())
}

/// Appends one record (kind, length, body) to a notice.
fn record(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

impl Presence for Cluster {
    fn arrived(&self, uaid: &Token, id: u64) {
        self.send(Job::Arrived(*uaid, id));
    }

    fn left(&self, uaid: &Token, id: u64) {
        self.send(Job::Left(*uaid, id));
    }
}
