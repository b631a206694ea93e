//! Many origin nodes on one Redis store: which node holds each connected
//! user agent (route records), and the notices nodes send each other over
//! Redis pub/sub.
//!
//! A message for a user agent that another node holds is stored, as for a
//! device that is away, then announced to the node its route record names,
//! which has the connection fetch it. So a `201` means what it means on one
//! node, and a notice lost with a node or a Redis failover only delays the
//! message to the device's next `hello`, or to the nudge every connection
//! of a node gets when its subscription to Redis is restored. A list push is
//! announced to every node, and each fans out to the members it holds.
//!
//! A route record is `<node>/<connection id>`: a record of an older
//! connection is never removed by the end of a newer one, and one that
//! names a node that died is recognised by that node's liveness key, which
//! each node renews every second and which expires [`ALIVE`] after its last
//! renewal. (On a Redis Cluster, `PUBLISH` counts only the subscribers of
//! the server it reached, so its reply cannot tell.)
//! Route writes and notices are sent by one thread in pipelines, so that a
//! connect storm or a burst of pushes costs a few round trips per batch,
//! and none waits on a runtime thread.

use crate::registry::Presence;
use crate::store::redis::{Conn, RedisOptions, Target};
use crate::store::StoreError;
use crate::tokens::Token;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// What a node does with the notices it hears.
pub trait Inbox: Send + Sync + 'static {
    /// These user agents, connected here, have stored messages to fetch.
    fn nudge(&self, uaids: &[Token]);
    /// A list message was recorded: fan it out to the members held here.
    fn list_message(&self, id: Token);
    /// The subscription to notices was (re)established: notices may have
    /// been missed, and route records lost with a Redis failure.
    fn resubscribed(&self);
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
    /// The last Redis round trip, microseconds.
    pub redis_rtt_us: AtomicU64,
}

/// Told whether the notice went out.
type Sent = tokio::sync::oneshot::Sender<bool>;

enum Job {
    Arrived(Token, u64),
    Left(Token, u64),
    Notify(Token, Sent),
    Announce(Token, Sent),
}

/// This node's part in a cluster.
pub struct Cluster {
    node: String,
    prefix: String,
    jobs: mpsc::Sender<Job>,
    up: AtomicBool,
    stop: AtomicBool,
    /// Counters.
    pub metrics: ClusterMetrics,
}

/// Removes a route record only if it is still the given connection's.
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

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
            prefix: options.prefix.clone(),
            jobs: tx,
            up: AtomicBool::new(false),
            stop: AtomicBool::new(false),
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

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
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

    /// Announces a recorded list message to every node; returns once the
    /// notice went out (`true`), or could not (`false`: members fetch
    /// their copies at their next `hello`).
    pub async fn announce(&self, list_message: &Token) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Announce(*list_message, tx));
        rx.await.unwrap_or(false)
    }

    fn route_key(&self, uaid: &Token) -> String {
        format!("{}:route:{{{}}}", self.prefix, crate::tokens::encode(uaid))
    }

    fn node_channel(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    fn alive_key(&self, node: &str) -> String {
        format!("{}:alive:{node}", self.prefix)
    }

    fn lists_channel(&self) -> String {
        format!("{}:lists", self.prefix)
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
                    Ok(c) => empty.insert(c),
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
            let done = done.and_then(|()| self.run(c, &jobs, &mut alive, inbox));
            if done.is_err() {
                self.missed(&jobs);
            }
            // Whoever waits for a notice learns whether it went out.
            for j in jobs.drain(..) {
                if let Job::Notify(_, sent) | Job::Announce(_, sent) = j {
                    let _ = sent.send(done.is_ok());
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

    /// One batch: route writes, then the notices.
    fn run(
        &self,
        c: &mut Conn,
        jobs: &[Job],
        alive: &mut HashMap<String, (Instant, bool)>,
        inbox: &dyn Inbox,
    ) -> Result<(), StoreError> {
        let mut writes = Vec::new();
        let mut wanted: Vec<Token> = Vec::new();
        let mut lists = Vec::new();
        for j in jobs {
            match j {
                Job::Arrived(u, id) => {
                    let mut cmd = redis::cmd("SET");
                    cmd.arg(self.route_key(u)).arg(self.record(*id));
                    writes.push(cmd);
                }
                Job::Left(u, id) => {
                    let mut cmd = redis::cmd("EVAL");
                    cmd.arg(RELEASE)
                        .arg(1)
                        .arg(self.route_key(u))
                        .arg(self.record(*id));
                    writes.push(cmd);
                }
                Job::Notify(u, _) => wanted.push(*u),
                Job::Announce(id, _) => lists.push(*id),
            }
        }
        c.pipeline(writes)?;
        if !wanted.is_empty() {
            wanted.sort_unstable();
            wanted.dedup();
            let gets = wanted
                .iter()
                .map(|u| {
                    let mut cmd = redis::cmd("GET");
                    cmd.arg(self.route_key(u));
                    cmd
                })
                .collect();
            let routes = c.pipeline(gets)?;
            let mut by_node: HashMap<String, Vec<u8>> = HashMap::new();
            let mut here = Vec::new();
            for (u, r) in wanted.iter().zip(routes) {
                let record: Option<String> = redis::from_redis_value(r).unwrap_or(None);
                let node = record
                    .as_deref()
                    .and_then(|r| r.rsplit_once('/'))
                    .map(|(n, _)| n);
                match node {
                    Some(n) if n == self.node => here.push(*u),
                    Some(n) => by_node
                        .entry(n.to_owned())
                        .or_default()
                        .extend_from_slice(u),
                    None => {
                        self.metrics.route_misses.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if !here.is_empty() {
                // It connected here after the message was stored.
                inbox.nudge(&here);
            }
            let unknown: Vec<String> = by_node
                .keys()
                .filter(|n| {
                    alive
                        .get(*n)
                        .is_none_or(|(at, _)| at.elapsed() >= ALIVE_READ)
                })
                .cloned()
                .collect();
            let checks = unknown
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
            for (node, payload) in by_node {
                let n = (payload.len() / 16) as u64;
                if !alive.get(&node).is_some_and(|(_, up)| *up) {
                    // The node is gone: the devices fetch at their next hello.
                    self.metrics.route_misses.fetch_add(n, Ordering::Relaxed);
                    continue;
                }
                let mut cmd = redis::cmd("PUBLISH");
                cmd.arg(self.node_channel(&node)).arg(payload);
                c.query::<i64>(&cmd)?;
                self.metrics.route_hits.fetch_add(n, Ordering::Relaxed);
                self.metrics.notices_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        for id in lists {
            let mut payload = id.to_vec();
            payload.extend_from_slice(self.node.as_bytes());
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(self.lists_channel()).arg(payload);
            c.query::<i64>(&cmd)?;
            self.metrics.notices_sent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn listen_loop(&self, servers: &[redis::Client], inbox: &dyn Inbox) {
        let mine = self.node_channel(&self.node);
        let lists = self.lists_channel();
        let mut i = 0;
        while !self.stop.load(Ordering::Acquire) {
            let Some(server) = servers.get(i % servers.len().max(1)) else {
                return;
            };
            i += 1;
            if let Err(e) = self.listen(server, &mine, &lists, inbox) {
                tracing::warn!(node = %self.node, "cluster: notices: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    fn listen(
        &self,
        server: &redis::Client,
        mine: &str,
        lists: &str,
        inbox: &dyn Inbox,
    ) -> redis::RedisResult<()> {
        let mut conn = server.get_connection_with_timeout(Duration::from_secs(2))?;
        let mut ps = conn.as_pubsub();
        ps.subscribe(mine)?;
        ps.subscribe(lists)?;
        ps.set_read_timeout(Some(Duration::from_millis(500)))?;
        inbox.resubscribed();
        while !self.stop.load(Ordering::Acquire) {
            let msg = match ps.get_message() {
                Ok(m) => m,
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Err(e),
            };
            self.metrics.notices_heard.fetch_add(1, Ordering::Relaxed);
            let payload = msg.get_payload_bytes();
            if msg.get_channel_name() == mine {
                let uaids: Vec<Token> = payload
                    .chunks_exact(16)
                    .map(|c| c.try_into().expect("16 bytes"))
                    .collect();
                inbox.nudge(&uaids);
            } else if payload.len() > 16 && &payload[16..] != self.node.as_bytes() {
                inbox.list_message(payload[..16].try_into().expect("16 bytes"));
            }
        }
        Ok(())
    }
}

impl Presence for Cluster {
    fn arrived(&self, uaid: &Token, id: u64) {
        self.send(Job::Arrived(*uaid, id));
    }

    fn left(&self, uaid: &Token, id: u64) {
        self.send(Job::Left(*uaid, id));
    }
}
