//! The shared backend on Redis, one server or a Redis Cluster, so that many
//! origin nodes hold one service's state.
//!
//! Each table group of `kv` is one Redis key whose hash tag is the group
//! (`wp:messages:{<uaid>}`), so a group lives in one hash slot and the
//! tables of one user agent, subscription or list share it:
//! - a [`Shape::Point`] table is a string per key;
//! - a [`Shape::Grouped`] table is a sorted set per group whose members are
//!   the key's fixed-size rest followed by the value, all at score 0, so a
//!   range is one `ZRANGE … BYLEX` in key order, paged (a list of 1,000,000
//!   members is read 2,048 at a time, other ranges 512, never whole);
//! - a [`Shape::Keyed`] table is a hash per group;
//! - a [`Shape::Index`] (expiry times) is sharded over [`SHARDS`] sorted
//!   sets in different slots, read in order by merging them.
//!
//! A batch's writes are one pipeline (inside `MULTI`/`EXEC` on one server;
//! routed per slot on a cluster, where each write is idempotent and readers
//! skip an index entry whose record is gone). Reads within a batch see its
//! earlier writes through an overlay. A batch is durable when the pipeline
//! has answered (the servers run with `appendfsync always`) and, with
//! `wait_replicas` set, when `WAIT` says that many replicas of every master
//! have it. Sequence numbers come from each node's clock in microseconds,
//! kept rising: nodes with synchronized clocks order list messages and
//! member joins alike.

use super::kv::{
    self, Read, Shape, Visit, Write, ACKS_PURGING, COPIES_DROPPED, COPY_ACKS, ENDED_EXPIRY,
    FANOUTS, LISTS, LISTS_PURGING, LIST_MEMBERS, LIST_MSGS, LIST_MSG_EXPIRY, MEMBERS_LEFT,
    MEMBER_EXPIRY, MSGS, OWNER_LISTS, PUSH_MSGS, RS_SEEN, SUBS, SUB_LISTS, UA_SEEN,
};
use super::layered::{Backend, Layered};
use super::StoreError;
use base64::Engine;
use redis::{Cmd, ConnectionLike, Value};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Shards of an [`Shape::Index`] table.
pub const SHARDS: u8 = 16;
/// Entries read per round trip in a range.
const PAGE: usize = 512;
/// Entries read per round trip in a list's members: a fan-out's walk reads
/// them 2,048 at a time, in one round trip (the walk is bound by its round
/// trips: docs/performance.md, scenario l).
const MEMBERS_PAGE: usize = 2048;

/// The service's store on Redis.
pub type RedisStore = Layered<Redis>;

/// How to reach Redis and what a write waits for.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://host:port[/db]`, or `redis-cluster://host:port,host:port,…`.
    pub url: String,
    /// Prefix of every key (several services can share one Redis).
    pub prefix: String,
    /// Replicas that must have a batch before it counts as durable.
    pub wait_replicas: u32,
    /// How long a batch waits for them.
    pub wait_timeout: Duration,
    /// How long one command may take before the store reports an error.
    pub timeout: Duration,
}

/// Where Redis is: one server, or a cluster's seed nodes.
pub enum Target {
    /// One server.
    One(redis::Client),
    /// A Redis Cluster.
    Cluster(redis::cluster::ClusterClient, Vec<String>),
}

impl Target {
    /// The target `options.url` names.
    pub fn of(options: &RedisOptions) -> Result<Target, StoreError> {
        let bad =
            |e: redis::RedisError| StoreError::Engine(format!("redis URL {}: {e}", options.url));
        Ok(match options.url.strip_prefix("redis-cluster://") {
            Some(nodes) => {
                let nodes: Vec<String> = nodes
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(|n| format!("redis://{n}"))
                    .collect();
                let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(options.timeout)
                    .response_timeout(options.timeout)
                    .retries(2)
                    .build()
                    .map_err(bad)?;
                Target::Cluster(client, nodes)
            }
            None => Target::One(redis::Client::open(options.url.as_str()).map_err(bad)?),
        })
    }

    /// A new connection whose commands time out after `timeout`.
    pub fn open(&self, timeout: Duration) -> Result<Conn, StoreError> {
        Ok(match self {
            Target::One(client) => {
                let c = client.get_connection_with_timeout(timeout).map_err(err)?;
                c.set_read_timeout(Some(timeout)).map_err(err)?;
                c.set_write_timeout(Some(timeout)).map_err(err)?;
                Conn::new(Link::One(c))
            }
            Target::Cluster(client, _) => Conn::new(Link::Cluster(Box::new(
                client.get_connection().map_err(err)?,
            ))),
        })
    }

    /// Servers a pub/sub subscriber may connect to (a message published on
    /// any node of a cluster reaches subscribers on every node).
    pub fn servers(&self) -> Vec<redis::Client> {
        match self {
            Target::One(c) => vec![c.clone()],
            Target::Cluster(_, nodes) => nodes
                .iter()
                .filter_map(|n| redis::Client::open(n.as_str()).ok())
                .collect(),
        }
    }
}

/// The client of one server or of a cluster.
enum Link {
    One(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

/// A connection to one server or to a cluster.
pub struct Conn {
    link: Link,
    /// Set when it failed as a connection (reset, closed, timed out): it
    /// is not used again.
    broken: bool,
}

impl Conn {
    fn new(link: Link) -> Conn {
        Conn {
            link,
            broken: false,
        }
    }

    /// Whether it failed as a connection.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn link(&mut self) -> &mut dyn ConnectionLike {
        match &mut self.link {
            Link::One(c) => c,
            Link::Cluster(c) => &mut **c,
        }
    }

    fn check<T>(&mut self, r: redis::RedisResult<T>) -> Result<T, StoreError> {
        r.map_err(|e| {
            if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                self.broken = true;
            }
            err(e)
        })
    }

    /// Runs one command.
    pub fn query<T: redis::FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, StoreError> {
        let r = cmd.query(self.link());
        self.check(r)
    }

    /// Runs `cmds` as one pipeline (atomic on one server); their replies.
    pub fn pipeline(&mut self, cmds: Vec<Cmd>) -> Result<Vec<Value>, StoreError> {
        let batch = self.batch(cmds);
        self.send(&batch)
    }

    /// `cmds` made into the pipeline this kind of connection sends (atomic
    /// on one server), to send once or again.
    pub fn batch(&self, cmds: Vec<Cmd>) -> Batch {
        if cmds.is_empty() {
            return Batch::Empty;
        }
        match &self.link {
            Link::One(_) => {
                let mut p = redis::pipe();
                p.atomic();
                for cmd in cmds {
                    p.add_command(cmd);
                }
                Batch::One(p)
            }
            Link::Cluster(_) => {
                let mut p = redis::cluster::cluster_pipe();
                for cmd in cmds {
                    p.add_command(cmd);
                }
                Batch::Cluster(p)
            }
        }
    }

    /// Sends a batch made by [`Conn::batch`]; its replies.
    pub fn send(&mut self, batch: &Batch) -> Result<Vec<Value>, StoreError> {
        let r = match (&mut self.link, batch) {
            (_, Batch::Empty) => return Ok(Vec::new()),
            (Link::One(c), Batch::One(p)) => p.query(c),
            (Link::Cluster(c), Batch::Cluster(p)) => p.query(c),
            _ => {
                return Err(StoreError::Engine(
                    "a batch for another kind of Redis".into(),
                ))
            }
        };
        self.check(r)
    }
}

/// Commands made into one pipeline, once: sent again on a retry, no
/// command is copied.
pub enum Batch {
    Empty,
    One(redis::Pipeline),
    Cluster(redis::cluster::ClusterPipeline),
}

fn err(e: redis::RedisError) -> StoreError {
    StoreError::Engine(format!("redis: {e}"))
}

/// The Redis engine under a [`RedisStore`].
pub struct Redis {
    target: Target,
    options: RedisOptions,
    idle: Mutex<Vec<Conn>>,
    seq: AtomicU64,
    /// Changes to the tables' counts not yet written: they ride along with
    /// the next batch (one commit, one `fsync`, instead of two), or go when
    /// the counts are read.
    unsent: Mutex<[i64; kv::TABLES.len()]>,
}

impl Layered<Redis> {
    /// Connects to Redis (failing if it does not answer), keeping the caps
    /// of `limits`.
    pub fn connect(
        options: RedisOptions,
        limits: &shared::limits::Limits,
    ) -> Result<RedisStore, StoreError> {
        let target = Target::of(&options)?;
        let engine = Redis {
            target,
            options,
            idle: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            unsent: Mutex::new([0; kv::TABLES.len()]),
        };
        // Fail now, not at the first request, if Redis is not there.
        let mut c = engine.conn()?;
        c.query::<Value>(&redis::cmd("PING"))?;
        engine.give_back(c);
        Ok(Layered::new(engine, limits, 0))
    }
}

impl Redis {
    fn open(&self) -> Result<Conn, StoreError> {
        self.target.open(self.options.timeout)
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        let idle = self.idle.lock().expect("pool").pop();
        match idle {
            Some(c) => Ok(c),
            None => self.open(),
        }
    }

    fn give_back(&self, c: Conn) {
        let mut idle = self.idle.lock().expect("pool");
        if idle.len() < 64 {
            idle.push(c);
        }
    }

    /// The Redis key of `key`'s group in table `t`.
    fn redis_key(&self, t: kv::Table, key: &[u8]) -> Vec<u8> {
        let tag = match t.shape {
            Shape::Index { .. } => format!("x{:02}", shard(key)),
            _ => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t.group_of(key)),
        };
        format!("{}:{}:{{{tag}}}", self.options.prefix, t.name).into_bytes()
    }

    fn shard_key(&self, t: kv::Table, shard: u8) -> Vec<u8> {
        format!("{}:{}:{{x{shard:02}}}", self.options.prefix, t.name).into_bytes()
    }

    fn counts_key(&self) -> String {
        format!("{}:counts", self.options.prefix)
    }

    /// The counts' changes not yet written, taken out.
    fn take_counts(&self) -> [i64; kv::TABLES.len()] {
        std::mem::replace(
            &mut *self.unsent.lock().expect("counts"),
            [0; kv::TABLES.len()],
        )
    }

    /// Puts back (or adds) changes to write later.
    fn keep_counts(&self, delta: &[i64; kv::TABLES.len()]) {
        let mut unsent = self.unsent.lock().expect("counts");
        for (u, d) in unsent.iter_mut().zip(delta) {
            *u += d;
        }
    }

    /// The commands that write `delta`.
    fn bumps(&self, delta: &[i64; kv::TABLES.len()]) -> Vec<Cmd> {
        let mut bumps = Vec::new();
        for (t, d) in delta.iter().enumerate() {
            if *d != 0 {
                let mut c = redis::cmd("HINCRBY");
                c.arg(self.counts_key()).arg(kv::TABLES[t].name).arg(*d);
                bumps.push(c);
            }
        }
        bumps
    }
}

/// The shard of an index key.
fn shard(key: &[u8]) -> u8 {
    // FNV-1a: stable across processes and versions.
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    (h % u32::from(SHARDS)) as u8
}

/// The fixed length of the part of a key kept in a sorted set's member.
fn member_len(t: kv::Table) -> Option<(usize, usize)> {
    match t.shape {
        Shape::Grouped { group, suffix } => Some((group, suffix)),
        Shape::Index { key } => Some((0, key)),
        _ => None,
    }
}

/// The next byte string of the same length, if any.
fn successor(s: &[u8]) -> Option<Vec<u8>> {
    let mut v = s.to_vec();
    for i in (0..v.len()).rev() {
        if v[i] < 0xff {
            v[i] += 1;
            v.truncate(i + 1);
            return Some(v);
        }
    }
    None
}

fn lex(prefix: u8, s: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.push(prefix);
    v.extend_from_slice(s);
    v
}

/// `ZRANGE … BYLEX` bounds for keys between `lo` and `hi` (members are a
/// fixed-size key rest followed by the value); `None` if nothing can match.
fn lex_bounds(
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
    skip: usize,
    suffix: usize,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let rest = |k: &[u8]| k[skip.min(k.len())..].to_vec();
    let lo = match lo {
        Bound::Unbounded => b"-".to_vec(),
        Bound::Included(k) => lex(b'[', &rest(k)),
        // Members extend the key: everything from the next key on.
        Bound::Excluded(k) if k.len() - skip.min(k.len()) >= suffix => {
            lex(b'[', &successor(&rest(k)[..suffix])?)
        }
        Bound::Excluded(k) => lex(b'(', &rest(k)),
    };
    let hi = match hi {
        Bound::Unbounded => b"+".to_vec(),
        Bound::Included(k) if k.len() - skip.min(k.len()) >= suffix => {
            match successor(&rest(k)[..suffix]) {
                Some(s) => lex(b'(', &s),
                None => b"+".to_vec(),
            }
        }
        Bound::Included(k) => lex(b'[', &rest(k)),
        Bound::Excluded(k) => lex(b'(', &rest(k)),
    };
    Some((lo, hi))
}

/// A key and its value.
type Entry = (Vec<u8>, Vec<u8>);

/// One sorted set read in pages, in order.
struct Pages {
    key: Vec<u8>,
    lo: Vec<u8>,
    hi: Vec<u8>,
    rev: bool,
    buf: std::collections::VecDeque<Vec<u8>>,
    done: bool,
    /// Entries per round trip.
    page: usize,
}

impl Pages {
    fn new(key: Vec<u8>, (lo, hi): (Vec<u8>, Vec<u8>), rev: bool, page: usize) -> Pages {
        Pages {
            key,
            lo,
            hi,
            rev,
            page,
            buf: Default::default(),
            done: false,
        }
    }

    /// The `ZRANGE … BYLEX` of the next page.
    fn command(&self) -> Cmd {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(&self.key[..]);
        if self.rev {
            cmd.arg(&self.hi[..])
                .arg(&self.lo[..])
                .arg("BYLEX")
                .arg("REV");
        } else {
            cmd.arg(&self.lo[..]).arg(&self.hi[..]).arg("BYLEX");
        }
        cmd.arg("LIMIT").arg(0).arg(self.page);
        cmd
    }

    /// The next member, fetching a page when the last is used up.
    fn peek(&mut self, c: &mut Conn) -> Result<Option<&Vec<u8>>, StoreError> {
        if self.buf.is_empty() && !self.done {
            let page: Vec<Vec<u8>> = c.query(&self.command())?;
            self.done = page.len() < self.page;
            if let Some(last) = page.last() {
                // The next page starts after the last member read.
                if self.rev {
                    self.hi = lex(b'(', last);
                } else {
                    self.lo = lex(b'(', last);
                }
            }
            self.buf.extend(page);
        }
        Ok(self.buf.front())
    }
}

/// Entries of a table between two bounds, from Redis, in order: one sorted
/// set of a group, or the merge of an index's shards.
struct Ranged {
    sets: Vec<Pages>,
    /// Bytes of the key before the member (the group).
    group: Vec<u8>,
    /// Length of the key's part in a member.
    suffix: usize,
    rev: bool,
}

impl Ranged {
    fn new(
        r: &Redis,
        t: kv::Table,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        rev: bool,
    ) -> Result<Ranged, StoreError> {
        let (skip, suffix) = member_len(t).ok_or(StoreError::Engine(format!(
            "table {} is not read in ranges",
            t.name
        )))?;
        let group = match lo {
            Bound::Included(k) | Bound::Excluded(k) => k[..skip.min(k.len())].to_vec(),
            Bound::Unbounded => match hi {
                Bound::Included(k) | Bound::Excluded(k) => k[..skip.min(k.len())].to_vec(),
                Bound::Unbounded => Vec::new(),
            },
        };
        let mut sets = Vec::new();
        let page = if t.id == LIST_MEMBERS.id {
            MEMBERS_PAGE
        } else {
            PAGE
        };
        if let Some(bounds) = lex_bounds(lo, hi, skip, suffix) {
            match t.shape {
                Shape::Index { .. } => {
                    for s in 0..SHARDS {
                        sets.push(Pages::new(r.shard_key(t, s), bounds.clone(), rev, page));
                    }
                }
                _ => sets.push(Pages::new(r.redis_key(t, &group), bounds, rev, page)),
            }
        }
        Ok(Ranged {
            sets,
            group,
            suffix,
            rev,
        })
    }

    /// The next entry (key, value).
    fn next(&mut self, c: &mut Conn) -> Result<Option<Entry>, StoreError> {
        let mut best: Option<(usize, Vec<u8>)> = None;
        for i in 0..self.sets.len() {
            if let Some(m) = self.sets[i].peek(c)? {
                let better = match &best {
                    None => true,
                    Some((_, b)) => {
                        (m[..self.suffix.min(m.len())] < b[..self.suffix.min(b.len())]) != self.rev
                    }
                };
                if better {
                    best = Some((i, m.clone()));
                }
            }
        }
        let Some((i, m)) = best else { return Ok(None) };
        self.sets[i].buf.pop_front();
        if m.len() < self.suffix {
            return Err(StoreError::Corrupt("redis sorted set member"));
        }
        let mut key = self.group.clone();
        key.extend_from_slice(&m[..self.suffix]);
        Ok(Some((key, m[self.suffix..].to_vec())))
    }
}

/// A reader: one pooled connection.
pub struct RedisRead<'a> {
    redis: &'a Redis,
    conn: Option<Conn>,
}

impl Drop for RedisRead<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.redis.give_back(c);
        }
    }
}

impl RedisRead<'_> {
    /// Runs `f` on the connection; one that failed is dropped, not reused.
    /// A pooled connection that fails as a connection (Redis restarted
    /// since it was used) empties the pool, and `f` runs once more on a new
    /// one: stale connections cost no request an error.
    fn with<T>(
        &mut self,
        mut f: impl FnMut(&Redis, &mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let redis = self.redis;
        let mut retried = false;
        loop {
            let pooled = self.conn.is_some();
            let conn = match &mut self.conn {
                Some(c) => c,
                empty => empty.insert(redis.open()?),
            };
            let r = f(redis, conn);
            let Err(e) = r else { return r };
            let broken = conn.is_broken();
            self.conn = None;
            if broken {
                redis.idle.lock().expect("pool").clear();
            }
            if !(broken && pooled) || retried {
                return Err(e);
            }
            retried = true;
        }
    }
}

fn get_raw(
    r: &Redis,
    c: &mut Conn,
    t: kv::Table,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    let rk = r.redis_key(t, key);
    match t.shape {
        Shape::Point => c.query(redis::cmd("GET").arg(rk)),
        Shape::Keyed { group } => c.query(redis::cmd("HGET").arg(rk).arg(&key[group..])),
        Shape::Grouped { .. } | Shape::Index { .. } => {
            let mut range = Ranged::new(r, t, Bound::Included(key), Bound::Included(key), false)?;
            Ok(range.next(c)?.map(|(_, v)| v))
        }
    }
}

fn len_raw(r: &Redis, c: &mut Conn, t: kv::Table) -> Result<u64, StoreError> {
    let bumps = r.take_counts();
    if let Err(e) = c.pipeline(r.bumps(&bumps)) {
        r.keep_counts(&bumps);
        return Err(e);
    }
    let n: Option<i64> = c.query(redis::cmd("HGET").arg(r.counts_key()).arg(t.name))?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

impl Read for RedisRead<'_> {
    fn get<T>(
        &mut self,
        t: kv::Table,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let v = self.with(|r, c| get_raw(r, c, t, key))?;
        v.map(|v| f(&v)).transpose()
    }

    /// Entries of a sorted-set table in one pipeline (a `hello` looks up
    /// the acknowledgements of a list's backlog at once); others one by one.
    fn get_many(
        &mut self,
        t: kv::Table,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let Some((skip, suffix)) =
            member_len(t).filter(|_| matches!(t.shape, Shape::Grouped { .. }))
        else {
            return keys
                .iter()
                .map(|k| self.get(t, k, |v| Ok(v.to_vec())))
                .collect();
        };
        if keys.iter().any(|k| k.len() != skip + suffix) {
            return Err(StoreError::Engine(format!(
                "a key of another size for table {}",
                t.name
            )));
        }
        // Each key's first page of one entry.
        let cmds: Vec<Cmd> = keys
            .iter()
            .map(|k| {
                let bounds = lex_bounds(Bound::Included(k), Bound::Included(k), skip, suffix)
                    .expect("bounds of a key");
                Pages::new(self.redis.redis_key(t, &k[..skip]), bounds, false, 1).command()
            })
            .collect();
        let replies = self.with(|_, c| c.pipeline(cmds.clone()))?;
        replies
            .into_iter()
            .map(|v| {
                let found: Vec<Vec<u8>> =
                    redis::from_redis_value(v).map_err(|e| StoreError::Engine(e.to_string()))?;
                Ok(found
                    .into_iter()
                    .next()
                    .map(|m| m.get(suffix..).unwrap_or_default().to_vec()))
            })
            .collect()
    }

    fn range(
        &mut self,
        t: kv::Table,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        rev: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        // A retry on a fresh connection goes on after the last entry
        // visited: none is visited twice.
        let mut last: Option<Vec<u8>> = None;
        self.with(|r, c| {
            let resume = last.clone();
            let (lo, hi) = match (&resume, rev) {
                (Some(k), false) => (Bound::Excluded(&k[..]), hi),
                (Some(k), true) => (lo, Bound::Excluded(&k[..])),
                (None, _) => (lo, hi),
            };
            let mut range = Ranged::new(r, t, lo, hi, rev)?;
            while let Some((k, v)) = range.next(c)? {
                let more = visit(&k, &v)?;
                last = Some(k);
                if !more {
                    break;
                }
            }
            Ok(())
        })
    }

    fn len(&mut self, t: kv::Table) -> Result<u64, StoreError> {
        self.with(|r, c| len_raw(r, c, t))
    }
}

/// Whether no key can lie between `lo` and `hi` (a `BTreeMap` range
/// would panic on it).
fn empty_range(lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
        _ => false,
    }
}

/// How a write's reply changes a table's count.
#[derive(Clone, Copy)]
enum Counted {
    /// `SET … GET`: one more if nothing was there.
    Set(usize),
    /// `DEL` / `ZREMRANGEBYLEX`: fewer by the reply.
    Removed(usize),
    /// `ZADD`: more by the reply.
    Added(usize),
}

fn counted(t: kv::Table) -> bool {
    [SUBS.id, MSGS.id, LISTS.id, LIST_MSGS.id].contains(&t.id)
}

/// Whether the entries of sorted-set table `t` never carry a value: an
/// entry written again is then the same member, and needs no removal
/// first (one command less for each acknowledged copy, for one).
fn valueless(t: kv::Table) -> bool {
    [
        COPY_ACKS.id,
        SUB_LISTS.id,
        OWNER_LISTS.id,
        PUSH_MSGS.id,
        LIST_MSG_EXPIRY.id,
        MEMBER_EXPIRY.id,
        FANOUTS.id,
        ENDED_EXPIRY.id,
        UA_SEEN.id,
        RS_SEEN.id,
        LISTS_PURGING.id,
        ACKS_PURGING.id,
        MEMBERS_LEFT.id,
        COPIES_DROPPED.id,
    ]
    .contains(&t.id)
}

/// The writes of one batch, sent as one pipeline at its end.
pub struct RedisWrite<'a> {
    read: RedisRead<'a>,
    /// Writes so far, per table: key → value (`None`: removed).
    overlay: Vec<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    cmds: Vec<Cmd>,
    counts: Vec<(usize, Counted)>,
    /// Sorted sets whose last command so far is a `ZADD` (its index), which
    /// takes the next members too: the acknowledgements of a fan-out then
    /// cost Redis one command, one AOF record and one replicated command
    /// per batch instead of one each.
    adding: std::collections::HashMap<Vec<u8>, usize>,
}

impl RedisWrite<'_> {
    fn push(&mut self, cmd: Cmd, count: Option<Counted>) {
        if let Some(c) = count {
            self.counts.push((self.cmds.len(), c));
        }
        self.cmds.push(cmd);
    }

    /// Queues the removal of `key` from Redis.
    fn remove(&mut self, t: kv::Table, key: &[u8]) {
        let rk = self.read.redis.redis_key(t, key);
        self.adding.remove(&rk);
        let n = counted(t).then_some(Counted::Removed(t.id));
        match t.shape {
            Shape::Point => {
                let mut c = redis::cmd("DEL");
                c.arg(rk);
                self.push(c, n);
            }
            Shape::Keyed { group } => {
                let mut c = redis::cmd("HDEL");
                c.arg(rk).arg(&key[group..]);
                self.push(c, n);
            }
            Shape::Grouped { group, suffix } => {
                let rest = &key[group..group + suffix];
                let mut c = redis::cmd("ZREMRANGEBYLEX");
                c.arg(rk).arg(lex(b'[', rest));
                match successor(rest) {
                    Some(s) => c.arg(lex(b'(', &s)),
                    None => c.arg("+"),
                };
                self.push(c, n);
            }
            Shape::Index { key: len } => {
                let rest = &key[..len];
                let mut c = redis::cmd("ZREMRANGEBYLEX");
                c.arg(rk).arg(lex(b'[', rest));
                match successor(rest) {
                    Some(s) => c.arg(lex(b'(', &s)),
                    None => c.arg("+"),
                };
                self.push(c, n);
            }
        }
    }

    /// Sends the batch; returns once it is durable.
    fn flush(&mut self) -> Result<(), StoreError> {
        let cmds = std::mem::take(&mut self.cmds);
        if cmds.is_empty() {
            return Ok(());
        }
        let counts = std::mem::take(&mut self.counts);
        let redis = self.read.redis;
        // The counts' earlier changes go in the same commit.
        let earlier = redis.take_counts();
        let mut cmds = cmds;
        cmds.extend(redis.bumps(&earlier));
        let mut batch = None;
        let replies = match self.read.with(|_, c| {
            let b = batch.get_or_insert_with(|| c.batch(std::mem::take(&mut cmds)));
            c.send(b)
        }) {
            Ok(r) => r,
            Err(e) => {
                redis.keep_counts(&earlier);
                return Err(e);
            }
        };
        let mut delta = [0i64; kv::TABLES.len()];
        for (i, how) in counts {
            let reply = replies.get(i);
            match how {
                Counted::Set(t) => delta[t] += i64::from(matches!(reply, Some(Value::Nil))),
                Counted::Removed(t) => {
                    if let Some(Value::Int(n)) = reply {
                        delta[t] -= n;
                    }
                }
                Counted::Added(t) => {
                    if let Some(Value::Int(n)) = reply {
                        delta[t] += n;
                    }
                }
            }
        }
        redis.keep_counts(&delta);
        if redis.options.wait_replicas > 0 {
            let mut w = redis::cmd("WAIT");
            w.arg(redis.options.wait_replicas)
                .arg(redis.options.wait_timeout.as_millis() as u64);
            let acked: i64 = self.read.with(|_, c| c.query(&w))?;
            if acked < i64::from(redis.options.wait_replicas) {
                return Err(StoreError::Engine(format!(
                    "redis: {acked} of {} replicas acknowledged the write in {:?}",
                    redis.options.wait_replicas, redis.options.wait_timeout
                )));
            }
        }
        Ok(())
    }
}

impl Read for RedisWrite<'_> {
    fn get<T>(
        &mut self,
        t: kv::Table,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        match self.overlay[t.id].get(key) {
            Some(Some(v)) => f(v).map(Some),
            Some(None) => Ok(None),
            None => self.read.get(t, key, f),
        }
    }

    fn range(
        &mut self,
        t: kv::Table,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        rev: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        // Entries from Redis merged with this batch's writes, in order.
        let mut mine: Vec<(Vec<u8>, Option<Vec<u8>>)> = if empty_range(lo, hi) {
            Vec::new()
        } else {
            self.overlay[t.id]
                .range::<[u8], _>((lo, hi))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        if rev {
            mine.reverse();
        }
        let mut mine = mine.into_iter().peekable();
        let read = &mut self.read;
        read.with(|r, c| {
            let mut theirs = Ranged::new(r, t, lo, hi, rev)?;
            let mut next_theirs = theirs.next(c)?;
            loop {
                let pick_mine = match (mine.peek(), &next_theirs) {
                    (None, None) => return Ok(()),
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (Some((a, _)), Some((b, _))) => {
                        if a == b {
                            // Overwritten or removed in this batch.
                            next_theirs = theirs.next(c)?;
                            true
                        } else {
                            (a < b) != rev
                        }
                    }
                };
                let go_on = if pick_mine {
                    let (k, v) = mine.next().expect("peeked");
                    match v {
                        Some(v) => visit(&k, &v)?,
                        None => true,
                    }
                } else {
                    let (k, v) = next_theirs.take().expect("checked");
                    next_theirs = theirs.next(c)?;
                    visit(&k, &v)?
                };
                if !go_on {
                    return Ok(());
                }
            }
        })
    }

    fn len(&mut self, t: kv::Table) -> Result<u64, StoreError> {
        self.read.len(t)
    }
}

impl Write for RedisWrite<'_> {
    fn put(&mut self, t: kv::Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let rk = self.read.redis.redis_key(t, key);
        match t.shape {
            Shape::Point => {
                let mut c = redis::cmd("SET");
                c.arg(rk).arg(value);
                let n = counted(t).then(|| {
                    c.arg("GET");
                    Counted::Set(t.id)
                });
                self.push(c, n);
            }
            Shape::Keyed { group } => {
                let mut c = redis::cmd("HSET");
                c.arg(rk).arg(&key[group..]).arg(value);
                self.push(c, None);
            }
            Shape::Grouped { .. } | Shape::Index { .. } => {
                let (skip, suffix) = member_len(t).expect("a sorted set table");
                if key.len() != skip + suffix {
                    return Err(StoreError::Engine(format!(
                        "a key of {} bytes for table {}",
                        key.len(),
                        t.name
                    )));
                }
                // A value already there goes first, unless this batch has
                // just removed it.
                if !(value.is_empty() && valueless(t)) && self.overlay[t.id].get(key) != Some(&None)
                {
                    self.remove(t, key);
                }
                let mut member = key[skip..].to_vec();
                member.extend_from_slice(value);
                if let Some(&i) = self.adding.get(&rk) {
                    self.cmds[i].arg(0).arg(member);
                } else {
                    let mut c = redis::cmd("ZADD");
                    c.arg(&rk).arg(0).arg(member);
                    let n = counted(t).then_some(Counted::Added(t.id));
                    self.adding.insert(rk, self.cmds.len());
                    self.push(c, n);
                }
            }
        }
        self.overlay[t.id].insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn take(&mut self, t: kv::Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let old = self.get(t, key, |v| Ok(v.to_vec()))?;
        if old.is_some() {
            self.delete(t, key)?;
        }
        Ok(old)
    }

    fn delete(&mut self, t: kv::Table, key: &[u8]) -> Result<(), StoreError> {
        self.remove(t, key);
        self.overlay[t.id].insert(key.to_vec(), None);
        Ok(())
    }
}

impl Backend for Redis {
    type Reader<'a> = RedisRead<'a>;
    type Writer<'a> = RedisWrite<'a>;

    fn reader(&self) -> Result<RedisRead<'_>, StoreError> {
        Ok(RedisRead {
            redis: self,
            conn: Some(self.conn()?),
        })
    }

    fn write(
        &self,
        f: &mut dyn FnMut(&mut RedisWrite<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut w = RedisWrite {
            read: self.reader()?,
            overlay: vec![BTreeMap::new(); kv::TABLES.len()],
            cmds: Vec::new(),
            counts: Vec::new(),
            adding: Default::default(),
        };
        f(&mut w)?;
        w.flush()
    }

    fn next_seq(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut last = self.seq.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .seq
                .compare_exchange_weak(last, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    fn bytes(&self) -> u64 {
        let Ok(mut c) = self.conn() else { return 0 };
        let info = match &mut c {
            Conn {
                link: Link::One(one),
                ..
            } => redis::cmd("INFO").arg("memory").query::<Value>(one),
            Conn {
                link: Link::Cluster(cl),
                ..
            } => cl.route_command(
                redis::cmd("INFO").arg("memory"),
                redis::cluster_routing::RoutingInfo::MultiNode((
                    redis::cluster_routing::MultipleNodeRoutingInfo::AllMasters,
                    None,
                )),
            ),
        };
        let total = info.map(|v| used_memory(&v)).unwrap_or(0);
        self.give_back(c);
        total
    }
}

/// Sums the `used_memory:` lines of `INFO memory` replies (one per master).
fn used_memory(v: &Value) -> u64 {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).map(sum_used).unwrap_or(0),
        Value::VerbatimString { text, .. } => sum_used(text),
        Value::SimpleString(s) => sum_used(s),
        Value::Array(items) | Value::Set(items) => items.iter().map(used_memory).sum(),
        Value::Map(pairs) => pairs.iter().map(|(_, v)| used_memory(v)).sum(),
        _ => 0,
    }
}

fn sum_used(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("used_memory:"))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successors_and_bounds() {
        assert_eq!(successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(successor(&[0xff, 0xff]), None);
        let (lo, hi) = lex_bounds(
            Bound::Excluded(&[9, 1][..]),
            Bound::Included(&[9, 4][..]),
            1,
            1,
        )
        .unwrap();
        assert_eq!((lo, hi), (b"[\x02".to_vec(), b"(\x05".to_vec()));
        assert!(lex_bounds(Bound::Excluded(&[0xff][..]), Bound::Unbounded, 0, 1).is_none());
    }

    #[test]
    fn index_keys_spread_over_every_shard() {
        let mut seen = [false; SHARDS as usize];
        for i in 0u32..1000 {
            seen[shard(&i.to_be_bytes()) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
