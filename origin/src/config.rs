//! Configuration: command line, environment (`ORIGIN_*`) and an optional
//! TOML file, in that order of precedence, read by clap alone. Every limit of
//! the protocol crate is set in the file's `[limits]` table or by
//! `--limit name=value`. docs/configuration.md is generated from here (by
//! `tests/config_reference.rs`).

use clap::builder::RangedU64ValueParser;
use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, ValueEnum};
use shared::Limits;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Every setting, as flag, `ORIGIN_*` variable and TOML key, with its
/// default and its range: clap reads all three sources (the file's values
/// go through the same parsers), so a value out of range is refused with
/// the range named, whichever source gave it.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "origin",
    version,
    about = "A Web Push service (RFC 8030) with list push"
)]
pub struct Settings {
    /// A TOML file with any of these settings (keys as the flags, with
    /// underscores) and a [limits] table. The command line, then the
    /// environment, win over it.
    #[arg(long, env = "ORIGIN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Application API listener (push, messages, lists; /health /ready).
    #[arg(
        long,
        env = "ORIGIN_APP_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub app_listen: SocketAddr,
    /// Firefox's WebSocket push protocol listener.
    #[arg(
        long,
        env = "ORIGIN_WS_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub ws_listen: SocketAddr,
    /// RFC 8030 HTTP/2 (h2c) listener for user agents and receipt subscriptions.
    #[arg(
        long,
        env = "ORIGIN_H2_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8082"
    )]
    pub h2_listen: SocketAddr,
    /// Operator listener: /metrics (and /health, /ready). Keep it off the
    /// public network: the metrics tell how busy the service is and who
    /// uses it. Port 0 takes a free one (the "origin ready" line names it).
    #[arg(
        long,
        env = "ORIGIN_METRICS_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_listen: SocketAddr,
    /// Public base URL of the application API: push resources, lists, and
    /// the VAPID `aud` are named with it. Default http://<app-listen>;
    /// required when app-listen is an unspecified address (0.0.0.0, [::]).
    #[arg(long, env = "ORIGIN_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Public base URL of the HTTP/2 user agent API (subscriptions, receipt
    /// subscriptions). Default http://<h2-listen>; required when h2-listen
    /// is an unspecified address.
    #[arg(long, env = "ORIGIN_DEVICE_URL", value_name = "URL")]
    pub device_url: Option<String>,
    /// Folder of the embedded store.
    #[arg(
        long,
        env = "ORIGIN_DATA_DIR",
        value_name = "DIR",
        default_value = "data"
    )]
    pub data_dir: PathBuf,
    /// Where the service's state lives: unset for the embedded store in
    /// --data-dir (one process); `redis://host:port[/db]` for one Redis
    /// server, or `redis-cluster://host:port,host:port,…` (seed nodes) for a
    /// Redis Cluster, which any number of origin nodes share. Redis must
    /// keep an append-only file with `appendfsync always` for a 201 to mean
    /// durable.
    #[arg(long, env = "ORIGIN_STORE", value_name = "URL", value_parser = store_url)]
    pub store: Option<String>,
    /// Prefix of every Redis key, so that services can share one Redis.
    #[arg(long, env = "ORIGIN_REDIS_PREFIX", default_value = "wp", value_parser = name)]
    pub redis_prefix: String,
    /// Replicas of each master that must have a write (Redis `WAIT`) before
    /// the service answers for it; 0 relies on the masters' append-only file.
    #[arg(long, env = "ORIGIN_REDIS_WAIT_REPLICAS", default_value_t = 0, value_parser = u32_in(0, 16))]
    pub redis_wait_replicas: u32,
    /// Milliseconds a write waits for those replicas before it fails (503).
    #[arg(long, env = "ORIGIN_REDIS_WAIT_MS", default_value_t = 1000, value_parser = u64_in(1, 60_000))]
    pub redis_wait_ms: u64,
    /// Milliseconds a Redis command may take before it counts as failed.
    #[arg(long, env = "ORIGIN_REDIS_TIMEOUT_MS", default_value_t = 2000, value_parser = u64_in(10, 60_000))]
    pub redis_timeout_ms: u64,
    /// This node's name among the origin nodes that share a Redis store
    /// (route records, notices, logs): letters, digits, `-` and `_`, at
    /// most 64. Default: a new random name at each start.
    #[arg(long, env = "ORIGIN_NODE_ID", value_parser = name)]
    pub node_id: Option<String>,
    /// Messages queued for one connected device before further ones are stored.
    #[arg(long, env = "ORIGIN_QUEUE_DEPTH", default_value_t = 64, value_parser = usize_in(1, 65_536))]
    pub queue_depth: usize,
    /// Requests that share one store commit at most.
    #[arg(long, env = "ORIGIN_COMMIT_BATCH", default_value_t = 512, value_parser = usize_in(1, 65_536))]
    pub commit_batch: usize,
    /// Milliseconds an acknowledgement's write may wait to share a commit with others.
    #[arg(long, env = "ORIGIN_ACK_COMMIT_DELAY_MS", default_value_t = 100, value_parser = u64_in(0, 1000))]
    pub ack_commit_delay_ms: u64,
    /// Milliseconds what devices send may be left unread while fan-outs
    /// write copies, so that the copies go out first: how long a fan-out
    /// keeps the receive low-water mark of the WebSockets it wrote to
    /// raised, and how long connections leave their reads while queued
    /// copies wait (counted from the start of the burst, however many
    /// fan-outs join it). 0 turns it off.
    #[arg(long, env = "ORIGIN_FANOUT_READ_PAUSE_MS", default_value_t = 1000, value_parser = u64_in(0, 10_000))]
    pub fanout_read_pause_ms: u64,
    /// Milliseconds the acknowledgements of a fan-out's copies stay unread
    /// after it wrote its last copy, within the read pause, so that devices
    /// on the same cores read their copies first.
    #[arg(long, env = "ORIGIN_FANOUT_LINGER_MS", default_value_t = 50, value_parser = u64_in(0, 1000))]
    pub fanout_linger_ms: u64,
    /// Threads that write a fan-out's copies to their WebSocket connections
    /// (the fan-out's own and blocking-pool threads). Fewer leave more CPU
    /// to other work during a large fan-out; more take a larger share of
    /// cores shared with other processes. Default: one per core.
    #[arg(long, env = "ORIGIN_FANOUT_WRITERS", value_parser = usize_in(1, 64))]
    pub fanout_writers: Option<usize>,
    /// Memory the store may use to cache its file's pages, in MiB: the
    /// origin's resident memory grows by up to this much as the store grows.
    #[arg(long, env = "ORIGIN_STORE_CACHE_MB", default_value_t = 1024, value_parser = usize_in(1, 1 << 20))]
    pub store_cache_mb: usize,
    /// List copies whose acknowledgement the embedded store keeps in memory
    /// by member, the latest first, so that a `hello` finds its answers to
    /// the messages not yet settled (`--list-settle-secs`) there instead of
    /// one file lookup each: about 28 bytes each (450 MB at the cap). They
    /// are kept in two generations of half the cap: when the newer is full
    /// the older goes, and answers to list messages created before the
    /// newer began are looked up in the file (a node whose devices answer
    /// 100,000 copies a second keeps 80 to 160 seconds of them). 0 turns it
    /// off. The Redis store does not keep it: an answer may come through
    /// another node.
    #[arg(long, env = "ORIGIN_ANSWERS_KEPT", default_value_t = 16_000_000, value_parser = usize_in(0, 1 << 30))]
    pub answers_kept: usize,
    /// Streams one HTTP/2 device connection may have open at once (its
    /// monitors and requests).
    #[arg(long, env = "ORIGIN_H2_MAX_STREAMS", default_value_t = 100, value_parser = u32_in(1, 10_000))]
    pub h2_max_streams: u32,
    /// Seconds an HTTP/2 device connection may hold no stream (no
    /// monitoring request, nothing else) before it is closed (GOAWAY).
    /// 0 keeps idle connections.
    #[arg(long, env = "ORIGIN_H2_IDLE_SECS", default_value_t = 300, value_parser = u64_in(0, 86_400))]
    pub h2_idle_secs: u64,
    /// Largest header list of an HTTP/2 device request, bytes.
    #[arg(long, env = "ORIGIN_H2_MAX_HEADER_BYTES", default_value_t = 16384, value_parser = u32_in(1024, 1 << 20))]
    pub h2_max_header_bytes: u32,
    /// Seconds between sweeps of expired messages.
    #[arg(long, env = "ORIGIN_SWEEP_SECS", default_value_t = 60, value_parser = u64_in(1, 86_400))]
    pub sweep_secs: u64,
    /// How many connections at once may look through their lists for the
    /// copies waiting for them (at a WebSocket hello, an HTTP/2 monitoring
    /// request, and when acknowledgements make room): the work runs on
    /// blocking threads, so a reconnect storm of devices in many lists
    /// queues there instead of holding the async workers. Default: two per
    /// core.
    #[arg(long, env = "ORIGIN_HELLO_WORK_CONCURRENCY", value_parser = u32_in(1, 4096))]
    pub hello_work_concurrency: Option<u32>,
    /// Rows a deleted list (its members) or list message (its
    /// acknowledgements) has removed per commit: a list of a million
    /// members goes in many small commits, between which other writes pass.
    #[arg(long, env = "ORIGIN_PURGE_BATCH", default_value_t = 4096, value_parser = u64_in(1, 1_000_000))]
    pub purge_batch: u64,
    /// Milliseconds a list message's status (GET /lm/…) may answer counts
    /// read that long ago: counting a big list's acknowledgements reads
    /// every one, so polls share one count. 0 counts on every request.
    #[arg(long, env = "ORIGIN_LIST_STATUS_CACHE_MS", default_value_t = 1000, value_parser = u64_in(0, 60_000))]
    pub list_status_cache_ms: u64,
    /// Answer a push for a connected device as soon as it is written to
    /// the device's socket, and store it only if the connection ends before
    /// the device acknowledges it, as Mozilla's autopush does: a little
    /// faster, but a crash between the answer and the acknowledgement loses
    /// the message. Off: every message is committed to the store before
    /// its 201 (and deleted when acknowledged).
    #[arg(long, env = "ORIGIN_DELIVER_BEFORE_COMMIT")]
    pub deliver_before_commit: bool,
    /// Milliseconds a push to a connected device waits for the device's
    /// acknowledgement before it queues the message's store write. A push
    /// is answered once its message is committed or acknowledged: one
    /// acknowledged first is never written (nor deleted), which spares
    /// the store an fsync each way (and on Redis a replica's WAIT). It
    /// delays the 201 of a push whose device is slower by as much. 0
    /// queues the write at once (it is still skipped if the device
    /// acknowledges while it waits in the queue).
    #[arg(long, env = "ORIGIN_ACK_WAIT_MS", default_value_t = 20, value_parser = u64_in(0, 1000))]
    pub ack_wait_ms: u64,
    /// Days a user agent may stay away (no WebSocket hello, no HTTP/2
    /// monitoring request) before it ends with all its subscriptions: their
    /// push resources then answer 410 and they leave their lists. 0 keeps
    /// them for ever.
    #[arg(long, env = "ORIGIN_IDLE_EXPIRY_DAYS", default_value_t = 60, value_parser = u64_in(0, 36_500))]
    pub idle_expiry_days: u64,
    /// Days a receipt subscription may go unpolled before it ends with the
    /// receipts it holds (Push-Receipt naming it then gets 400). 0 keeps
    /// them for ever.
    #[arg(long, env = "ORIGIN_RECEIPT_IDLE_EXPIRY_DAYS", default_value_t = 30, value_parser = u64_in(0, 36_500))]
    pub receipt_idle_expiry_days: u64,
    /// Days an ended subscription's push resource answers 410 Gone (and a
    /// list member naming it is reported "gone"), so that senders learn to
    /// drop it; 404 after.
    #[arg(long, env = "ORIGIN_ENDED_KEPT_DAYS", default_value_t = 30, value_parser = u64_in(1, 36_500))]
    pub ended_kept_days: u64,
    /// Seconds to wait at start for the store's file lock, held by a
    /// previous process that is still exiting.
    #[arg(long, env = "ORIGIN_STORE_LOCK_WAIT_SECS", default_value_t = 30, value_parser = u64_in(0, 3600))]
    pub store_lock_wait_secs: u64,
    /// Messages a device connection may have written and not acknowledged;
    /// further ones wait, stored, until acknowledgements make room.
    #[arg(long, env = "ORIGIN_MAX_UNACKED", default_value_t = 256, value_parser = usize_in(1, 65_536))]
    pub max_unacked: usize,
    /// List documents and merge patches decoded and applied at once (each
    /// may take its inflated size in memory); more wait up to the body
    /// timeout, then get 503. Bodies are read before: as many bytes at once
    /// as this many documents of the largest size, so that a client that
    /// trickles its body blocks no other.
    #[arg(long, env = "ORIGIN_MAX_LIST_DOCUMENTS", default_value_t = 4, value_parser = usize_in(1, 1024))]
    pub max_list_documents: usize,
    /// A list's newest messages a member is offered when it comes back:
    /// older ones are not delivered to members that missed them (they stay
    /// counted as stored until they expire). Bounds the work and memory of
    /// each `hello`.
    #[arg(long, env = "ORIGIN_LIST_BACKLOG", default_value_t = 1000, value_parser = usize_in(1, 1_000_000))]
    pub list_backlog: usize,
    /// Seconds between the looks in the background that record, for a
    /// connected device, which list messages it has settled (acknowledged,
    /// or will never get: replaced by its Topic, expired), so that its
    /// later `hello`s read only newer messages. On a Redis store it is also
    /// the age a message must reach before it is recorded settled, and must
    /// exceed the time a list push may take to commit and the difference
    /// between the clocks of the nodes; the embedded store needs no such
    /// margin (it settles below the oldest list push still committing).
    #[arg(long, env = "ORIGIN_LIST_SETTLE_SECS", default_value_t = 60, value_parser = u64_in(0, 86_400))]
    pub list_settle_secs: u64,
    /// Largest WebSocket upgrade request, bytes (431 beyond).
    #[arg(long, env = "ORIGIN_WS_MAX_HANDSHAKE_BYTES", default_value_t = 8192, value_parser = usize_in(256, 1 << 20))]
    pub ws_max_handshake_bytes: usize,
    /// Most header fields in a WebSocket upgrade request (431 beyond).
    #[arg(long, env = "ORIGIN_WS_MAX_HANDSHAKE_HEADERS", default_value_t = 32, value_parser = usize_in(8, 256))]
    pub ws_max_handshake_headers: usize,
    /// Largest HTTP/2 subscribe request body, bytes (413 beyond).
    #[arg(long, env = "ORIGIN_H2_MAX_SUBSCRIBE_BYTES", default_value_t = 4096, value_parser = usize_in(256, 1 << 20))]
    pub h2_max_subscribe_bytes: usize,
    /// Seconds an application request's body may take to arrive (408 beyond).
    #[arg(long, env = "ORIGIN_BODY_READ_TIMEOUT_SECS", default_value_t = 60, value_parser = u64_in(1, 3600))]
    pub body_read_timeout_secs: u64,
    /// Push bodies (single and list pushes) read at once: a request that
    /// finds them all taken waits up to the body timeout for one, then gets
    /// 503 too-many-bodies with Retry-After, so that slow uploads hold a
    /// bounded share of memory and connections' work. List documents
    /// and patches count against --max-list-documents instead.
    #[arg(long, env = "ORIGIN_MAX_BODY_READS", default_value_t = 1024, value_parser = usize_in(1, 1 << 20))]
    pub max_body_reads: usize,
    /// Milliseconds a push refused for a rate (429: the subscription's, the
    /// list's, or the VAPID key's copy budget) waits before its answer,
    /// never past its Retry-After: a sender that floods over its budget,
    /// waiting for each answer, slows to a few requests a second and
    /// leaves the cores to everyone else. 0 answers at once.
    #[arg(long, env = "ORIGIN_REFUSAL_HOLD_MS", default_value_t = 1000, value_parser = u64_in(0, 60_000))]
    pub refusal_hold_ms: u64,
    /// Refusals held at once (--refusal-hold-ms); past them, refusals are
    /// answered at once, so that holding them stays bounded in memory. 0
    /// holds none.
    #[arg(long, env = "ORIGIN_REFUSAL_HOLDS", default_value_t = 1024, value_parser = usize_in(0, 1 << 20))]
    pub refusal_holds: usize,
    /// Seconds a push receipt waits for its application server (7 days).
    #[arg(long, env = "ORIGIN_RECEIPT_TTL_SECS", default_value_t = 604_800, value_parser = u64_in(1, 31_536_000))]
    pub receipt_ttl_secs: u64,
    /// Seconds a shutdown waits for device connections to close and the
    /// store's queued writes to commit.
    #[arg(long, env = "ORIGIN_SHUTDOWN_DRAIN_SECS", default_value_t = 10, value_parser = u64_in(1, 3600))]
    pub shutdown_drain_secs: u64,
    /// Largest WebSocket message a device may send, bytes.
    #[arg(long, env = "ORIGIN_WS_MAX_MESSAGE", default_value_t = 65_536, value_parser = usize_in(1024, 16 << 20))]
    pub ws_max_message: usize,
    /// Seconds a device has to send `hello` after connecting (an HTTP/2
    /// device, to finish its connection preface).
    #[arg(long, env = "ORIGIN_HELLO_TIMEOUT_SECS", default_value_t = 10, value_parser = u64_in(1, 3600))]
    pub hello_timeout_secs: u64,
    /// Fewest seconds between two pings (`{}`) of a WebSocket device: one
    /// that pings sooner is disconnected, as Mozilla's service does (it
    /// allows one per 45 s; Firefox pings after minutes of silence). 0
    /// allows any.
    #[arg(long, env = "ORIGIN_WS_MIN_PING_INTERVAL_SECS", default_value_t = 45, value_parser = u64_in(0, 3600))]
    pub ws_min_ping_interval_secs: u64,
    /// Seconds an HTTP/1.1 client of the application API has to send a
    /// request's headers, so that slow senders cannot hold connections
    /// open; on a kept-alive connection, counted from the previous response
    /// (so it is also its idle timeout).
    #[arg(long, env = "ORIGIN_HEADER_READ_TIMEOUT_SECS", default_value_t = 30, value_parser = u64_in(1, 3600))]
    pub header_read_timeout_secs: u64,
    /// Seconds a device connection may be silent before the kernel starts
    /// probing whether its peer is still there (TCP keep-alive; a peer gone
    /// without a word is dropped some 4 probes later). 0 turns it off; at
    /// most 32767, the kernel's bound.
    #[arg(long, env = "ORIGIN_TCP_KEEPALIVE_SECS", default_value_t = 300, value_parser = u64_in(0, 32_767))]
    pub tcp_keepalive_secs: u64,
    /// Most device connections (WebSocket and HTTP/2) held at once; one more
    /// is closed as soon as it is accepted. 0: the open-file limit (raised
    /// to its hard limit at start) less `--fd-reserve`.
    #[arg(long, env = "ORIGIN_MAX_DEVICE_CONNECTIONS", default_value_t = 0, value_parser = u64_in(0, 1 << 32))]
    pub max_device_connections: u64,
    /// File descriptors kept from device connections for everything else:
    /// application requests, `/health`, the store and Redis.
    #[arg(long, env = "ORIGIN_FD_RESERVE", default_value_t = 512, value_parser = u64_in(16, 1 << 20))]
    pub fd_reserve: u64,
    /// Subscriptions one device connection may make in a minute (WebSocket
    /// `register`, HTTP/2 `POST /subscribe` and `/receipts`); more are
    /// refused (429) until the minute ends.
    #[arg(long, env = "ORIGIN_SUBSCRIPTIONS_PER_CONNECTION_PER_MINUTE", default_value_t = 100, value_parser = u32_in(1, 1_000_000))]
    pub subscriptions_per_connection_per_minute: u32,
    /// Subscriptions all device connections from one client address (an
    /// IPv4 address, or an IPv6 /64) may make in a minute on this node: a
    /// thousand a second, enough for many devices behind one NAT. Behind a
    /// proxy or load balancer that hides the clients' addresses, every
    /// device shares its address: raise it.
    #[arg(long, env = "ORIGIN_SUBSCRIPTIONS_PER_ADDRESS_PER_MINUTE", default_value_t = 60_000, value_parser = u32_in(1, 1_000_000_000))]
    pub subscriptions_per_address_per_minute: u32,
    /// Lets lists be created without a VAPID key: such a list is managed by
    /// whoever holds its URL, and its creations are counted per client
    /// address. Off: creating a list needs a VAPID token (401 without).
    #[arg(long, env = "ORIGIN_KEYLESS_LISTS")]
    pub keyless_lists: bool,
    /// Lists one client address (an IPv4 address, or an IPv6 /64) may
    /// create without a VAPID key in a minute on this node (with
    /// --keyless-lists on). Behind the edge or a proxy that hides the clients'
    /// addresses, every client shares the proxy's: count there instead.
    #[arg(long, env = "ORIGIN_KEYLESS_LIST_CREATIONS_PER_ADDRESS_PER_MINUTE", default_value_t = 10, value_parser = u32_in(1, 1_000_000_000))]
    pub keyless_list_creations_per_address_per_minute: u32,
    /// Number of list registration service partitions (a subscription's
    /// is picked by the first byte of its push token).
    #[arg(long, env = "ORIGIN_PARTITIONS", default_value_t = 1, value_parser = u32_in(1, 256))]
    pub partitions: u32,
    /// The secret of the edge's HMAC mark (docs/protocol.md §5); with it,
    /// marked requests skip VAPID re-verification.
    #[arg(
        long,
        env = "ORIGIN_EDGE_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub edge_secret: Option<String>,
    /// Refuse application requests that carry no valid edge mark (needs edge-secret).
    #[arg(long, env = "ORIGIN_BEHIND_EDGE", value_name = "BOOL", default_value_t = false, action = ArgAction::Set)]
    pub behind_edge: bool,
    /// Listen backlog of each listener (pending connections the kernel queues).
    #[arg(long, env = "ORIGIN_LISTEN_BACKLOG", default_value_t = 4096, value_parser = u32_in(1, 65_535))]
    pub listen_backlog: u32,
    /// Log format on stderr (ORIGIN_LOG filters, e.g. `debug`).
    #[arg(long, env = "ORIGIN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// A protocol limit, `name=value` (the [limits] table of
    /// docs/configuration.md); repeatable, or comma-separated.
    #[arg(
        long = "limit",
        value_name = "NAME=VALUE",
        env = "ORIGIN_LIMITS",
        value_delimiter = ','
    )]
    pub limit: Vec<String>,
    /// Limits from the file's [limits] table.
    #[arg(skip)]
    pub limits: Option<Limits>,
    /// Instead of serving: ask `GET /health` of the application listener
    /// this configuration names, and exit 0 on `200`, 1 otherwise (a
    /// container health check).
    #[arg(long)]
    pub health_probe: bool,
}

/// The settings a TOML file may not hold (they choose the file, or are
/// the command line's own).
pub const NOT_IN_FILE: [&str; 3] = ["config", "limit", "health_probe"];

/// How the origin writes its logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

/// A Redis store URL.
fn store_url(s: &str) -> Result<String, String> {
    match s.split_once("://") {
        Some(("redis" | "redis-cluster", rest)) if !rest.is_empty() => Ok(s.to_owned()),
        _ => Err("expected redis://host:port[/db] or redis-cluster://host:port,…".into()),
    }
}

/// A name of letters, digits, `-` and `_` (1 to 64 of them).
fn name(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("1 to 64 letters, digits, '-' or '_'".into())
    }
}

fn u64_in(min: u64, max: u64) -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::new().range(min..=max)
}

fn usize_in(min: u64, max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(min..=max)
}

fn u32_in(min: u64, max: u64) -> RangedU64ValueParser<u32> {
    RangedU64ValueParser::new().range(min..=max)
}

impl Settings {
    /// Reads the process's arguments, environment and `--config` file.
    pub fn load() -> Result<Settings, ConfigError> {
        Self::load_from(std::env::args_os())
    }

    /// Reads `args` (the program name first), the environment and the
    /// `--config` file they name. A file's key takes effect where neither
    /// the command line nor the environment set it; it is parsed by the
    /// same rule as the flag, and a key that names no setting is refused.
    pub fn load_from<I, T>(args: I) -> Result<Settings, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let command = Settings::command();
        let matches = command.clone().try_get_matches_from(&args)?;
        let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
            return Ok(Settings::from_arg_matches(&matches)?);
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| ConfigError::Read(path.clone(), e))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| ConfigError::Parse(path.clone(), e.to_string()))?;
        let mut limits = None;
        for (key, value) in table {
            if key == "limits" {
                let l: Limits = value
                    .try_into()
                    .map_err(|e| ConfigError::Parse(path.clone(), format!("[limits]: {e}")))?;
                limits = Some(l);
                continue;
            }
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == key.as_str() && !NOT_IN_FILE.contains(&key.as_str()))
                .and_then(|a| a.get_long())
                .ok_or_else(|| ConfigError::Parse(path.clone(), format!("no setting `{key}`")))?;
            if matches!(
                matches.value_source(&key),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError::Parse(
                        path.clone(),
                        format!(
                            "`{key}` must be a string, a whole number or a boolean, not {}",
                            other.type_str()
                        ),
                    ))
                }
            };
            args.push(format!("--{arg}={text}").into());
        }
        let matches = command
            .try_get_matches_from(&args)
            .map_err(|e| ConfigError::File(path.clone(), e.to_string()))?;
        let mut settings = Settings::from_arg_matches(&matches)?;
        settings.limits = limits;
        Ok(settings)
    }
}

/// Resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Application API address.
    pub app_listen: SocketAddr,
    /// WebSocket device address.
    pub ws_listen: SocketAddr,
    /// HTTP/2 device address.
    pub h2_listen: SocketAddr,
    /// Operator (metrics) address.
    pub metrics_listen: SocketAddr,
    /// Base URL of push resources, without trailing slash.
    pub public_url: String,
    /// Base URL of the HTTP/2 device API, without trailing slash.
    pub device_url: String,
    /// Store folder.
    pub data_dir: PathBuf,
    /// The Redis store's URL (`None`: the embedded store).
    pub store: Option<String>,
    /// Prefix of Redis keys.
    pub redis_prefix: String,
    /// Replicas a Redis write waits for.
    pub redis_wait_replicas: u32,
    /// How long a Redis write waits for them, ms.
    pub redis_wait_ms: u64,
    /// Redis command timeout, ms.
    pub redis_timeout_ms: u64,
    /// This node's name.
    pub node_id: String,
    /// Per-connection queue depth.
    pub queue_depth: usize,
    /// Commit batch size.
    pub commit_batch: usize,
    /// How long an acknowledgement's write may wait for company, ms.
    pub ack_commit_delay_ms: u64,
    /// Longest read pause during a fan-out, ms (0: none).
    pub fanout_read_pause_ms: u64,
    /// How long reads stay paused after a fan-out's last copy, ms.
    pub fanout_linger_ms: u64,
    /// Threads writing a fan-out's copies.
    pub fanout_writers: usize,
    /// The store's page cache, bytes.
    pub store_cache_bytes: usize,
    /// Acknowledged list copies the embedded store indexes by member.
    pub answers_kept: usize,
    /// Concurrent streams per HTTP/2 device connection.
    pub h2_max_streams: u32,
    /// Idle HTTP/2 device connections are closed after this many seconds (0: never).
    pub h2_idle_secs: u64,
    /// Largest HTTP/2 device request header list, bytes.
    pub h2_max_header_bytes: u32,
    /// Sweep interval, seconds.
    pub sweep_secs: u64,
    /// Connections that may look for their waiting list copies at once.
    pub hello_work_concurrency: usize,
    /// Rows purged per commit.
    pub purge_batch: u64,
    /// How long a list message's counts are reused, ms.
    pub list_status_cache_ms: u64,
    /// Whether a push to a connected device is answered before its commit.
    pub deliver_before_commit: bool,
    /// How long a push's store write waits for the device's acknowledgement, ms.
    pub ack_wait_ms: u64,
    /// Days a user agent may stay away (0: for ever).
    pub idle_expiry_days: u64,
    /// Days a receipt subscription may go unpolled (0: for ever).
    pub receipt_idle_expiry_days: u64,
    /// Days an ended subscription answers 410.
    pub ended_kept_days: u64,
    /// Wait for the store's file lock at start, seconds.
    pub store_lock_wait_secs: u64,
    /// Messages written to a device connection and not yet acknowledged, at most.
    pub max_unacked: usize,
    /// List documents read and applied at once.
    pub max_list_documents: usize,
    /// A list's newest messages offered to a member that comes back.
    pub list_backlog: usize,
    /// Age after which a member's handled list messages are recorded settled, seconds.
    pub list_settle_secs: u64,
    /// Largest WebSocket message from a device.
    pub ws_max_message: usize,
    /// Largest WebSocket upgrade request, bytes.
    pub ws_max_handshake_bytes: usize,
    /// Most header fields in a WebSocket upgrade request.
    pub ws_max_handshake_headers: usize,
    /// Largest HTTP/2 subscribe body, bytes.
    pub h2_max_subscribe_bytes: usize,
    /// Lifetime of a push receipt, seconds.
    pub receipt_ttl_secs: u64,
    /// How long an application request's body may take, seconds.
    pub body_read_timeout_secs: u64,
    /// Push bodies read at once.
    pub max_body_reads: usize,
    /// How long a rate refusal waits before its answer.
    pub refusal_hold: std::time::Duration,
    /// Rate refusals held at once.
    pub refusal_holds: usize,
    /// Shutdown's wait for connections and writes, seconds.
    pub shutdown_drain_secs: u64,
    /// Hello timeout, seconds.
    pub hello_timeout_secs: u64,
    /// Fewest seconds between a device's pings (0: any).
    pub ws_min_ping_interval_secs: u64,
    /// HTTP/1.1 header read timeout of the application API, seconds.
    pub header_read_timeout_secs: u64,
    /// Idle time before TCP keep-alive probes on device connections, seconds (0: off).
    pub tcp_keepalive_secs: u64,
    /// Most device connections at once (0: the open-file limit less `fd_reserve`).
    pub max_device_connections: u64,
    /// Descriptors kept from device connections.
    pub fd_reserve: u64,
    /// Subscriptions per device connection per minute.
    pub subscriptions_per_connection_per_minute: u32,
    /// Subscriptions per client address per minute, on this node.
    pub subscriptions_per_address_per_minute: u32,
    /// Whether lists may be created without a VAPID key.
    pub keyless_lists: bool,
    /// Keyless list creations per client address per minute.
    pub keyless_list_creations_per_address_per_minute: u32,
    /// List registration service partitions.
    pub partitions: u32,
    /// The edge's HMAC secret.
    pub edge_secret: Option<Vec<u8>>,
    /// Whether unmarked application requests are refused.
    pub behind_edge: bool,
    /// Listen backlog.
    pub listen_backlog: u32,
    /// How logs are written.
    pub log_format: LogFormat,
    /// Protocol limits.
    pub limits: Limits,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag or variable is malformed or out of range (or help was asked for).
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// The file could not be read.
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The file is not TOML of known settings.
    #[error("parsing {0}: {1}")]
    Parse(PathBuf, String),
    /// A value in the file is malformed or out of range.
    #[error("in {0}: {1}")]
    File(PathBuf, String),
    /// `behind_edge` without `edge_secret`.
    #[error("behind_edge needs edge_secret")]
    NoEdgeSecret,
    /// A listener on an unspecified address without the public URL clients reach it by.
    #[error("{listener} listens on {addr}: set {setting} to the URL clients reach it by")]
    NoPublicUrl {
        /// The listener's setting.
        listener: &'static str,
        /// Its address.
        addr: SocketAddr,
        /// The URL setting that must be given.
        setting: &'static str,
    },
    /// A `--limit` override is malformed or names no limit.
    #[error("limit override {0:?}: {1}")]
    Limit(String, String),
}

impl Config {
    /// Loads from the process's arguments, environment and file.
    pub fn load() -> Result<Config, ConfigError> {
        Self::from_settings(Settings::load()?)
    }

    /// Resolves settings: the URLs derived from the listeners, the limits
    /// with their overrides, and the checks that span settings.
    pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        let limits = apply_overrides(s.limits.unwrap_or_default(), &s.limit)?;
        limits
            .check()
            .map_err(|e| ConfigError::Limit(s.limit.join(","), e))?;
        let url = |given: Option<String>,
                   addr: SocketAddr,
                   listener: &'static str,
                   setting: &'static str| {
            match given {
                Some(u) => Ok(u.trim_end_matches('/').to_owned()),
                None if addr.ip().is_unspecified() => Err(ConfigError::NoPublicUrl {
                    listener,
                    addr,
                    setting,
                }),
                None => Ok(format!("http://{addr}")),
            }
        };
        let public_url = url(
            s.public_url,
            s.app_listen,
            "app-listen",
            "public-url (ORIGIN_PUBLIC_URL)",
        )?;
        let device_url = url(
            s.device_url,
            s.h2_listen,
            "h2-listen",
            "device-url (ORIGIN_DEVICE_URL)",
        )?;
        let edge_secret = s
            .edge_secret
            .filter(|s| !s.is_empty())
            .map(String::into_bytes);
        if s.behind_edge && edge_secret.is_none() {
            return Err(ConfigError::NoEdgeSecret);
        }
        Ok(Config {
            app_listen: s.app_listen,
            ws_listen: s.ws_listen,
            h2_listen: s.h2_listen,
            metrics_listen: s.metrics_listen,
            public_url,
            device_url,
            data_dir: s.data_dir,
            store: s.store,
            redis_prefix: s.redis_prefix,
            redis_wait_replicas: s.redis_wait_replicas,
            redis_wait_ms: s.redis_wait_ms,
            redis_timeout_ms: s.redis_timeout_ms,
            node_id: s.node_id.unwrap_or_else(|| {
                crate::tokens::to_hex(&crate::tokens::new_token())[..16].to_owned()
            }),
            queue_depth: s.queue_depth,
            commit_batch: s.commit_batch,
            ack_commit_delay_ms: s.ack_commit_delay_ms,
            fanout_read_pause_ms: s.fanout_read_pause_ms,
            fanout_linger_ms: s.fanout_linger_ms,
            fanout_writers: s.fanout_writers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, |n| n.get().min(64))
            }),
            store_cache_bytes: s.store_cache_mb.saturating_mul(1 << 20),
            answers_kept: s.answers_kept,
            h2_max_streams: s.h2_max_streams,
            h2_idle_secs: s.h2_idle_secs,
            h2_max_header_bytes: s.h2_max_header_bytes,
            sweep_secs: s.sweep_secs,
            hello_work_concurrency: s.hello_work_concurrency.map_or_else(
                || 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
                |n| n as usize,
            ),
            purge_batch: s.purge_batch,
            list_status_cache_ms: s.list_status_cache_ms,
            deliver_before_commit: s.deliver_before_commit,
            ack_wait_ms: s.ack_wait_ms,
            idle_expiry_days: s.idle_expiry_days,
            receipt_idle_expiry_days: s.receipt_idle_expiry_days,
            ended_kept_days: s.ended_kept_days,
            store_lock_wait_secs: s.store_lock_wait_secs,
            max_unacked: s.max_unacked,
            max_list_documents: s.max_list_documents,
            list_backlog: s.list_backlog,
            list_settle_secs: s.list_settle_secs,
            ws_max_message: s.ws_max_message,
            ws_max_handshake_bytes: s.ws_max_handshake_bytes,
            ws_max_handshake_headers: s.ws_max_handshake_headers,
            h2_max_subscribe_bytes: s.h2_max_subscribe_bytes,
            receipt_ttl_secs: s.receipt_ttl_secs,
            shutdown_drain_secs: s.shutdown_drain_secs,
            body_read_timeout_secs: s.body_read_timeout_secs,
            max_body_reads: s.max_body_reads,
            refusal_hold: std::time::Duration::from_millis(s.refusal_hold_ms),
            refusal_holds: s.refusal_holds,
            hello_timeout_secs: s.hello_timeout_secs,
            ws_min_ping_interval_secs: s.ws_min_ping_interval_secs,
            header_read_timeout_secs: s.header_read_timeout_secs,
            tcp_keepalive_secs: s.tcp_keepalive_secs,
            max_device_connections: s.max_device_connections,
            fd_reserve: s.fd_reserve,
            subscriptions_per_connection_per_minute: s.subscriptions_per_connection_per_minute,
            subscriptions_per_address_per_minute: s.subscriptions_per_address_per_minute,
            keyless_lists: s.keyless_lists,
            keyless_list_creations_per_address_per_minute: s
                .keyless_list_creations_per_address_per_minute,
            partitions: s.partitions,
            log_format: s.log_format,
            edge_secret,
            behind_edge: s.behind_edge,
            listen_backlog: s.listen_backlog,
            limits,
        })
    }

    /// How long an application request's body may take to arrive.
    pub fn body_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.body_read_timeout_secs)
    }

    /// The origin of push resources (`scheme://host[:port]`), the VAPID `aud`.
    pub fn push_origin(&self) -> &str {
        shared::vapid::origin_of(&self.public_url)
    }
}

/// Applies `name=value` overrides to the limits through their serde form.
fn apply_overrides(limits: Limits, overrides: &[String]) -> Result<Limits, ConfigError> {
    if overrides.is_empty() {
        return Ok(limits);
    }
    let mut v = serde_json::to_value(&limits).expect("limits serialize");
    for o in overrides.iter().filter(|o| !o.trim().is_empty()) {
        let (name, value) = o
            .split_once('=')
            .ok_or_else(|| ConfigError::Limit(o.clone(), "expected name=value".into()))?;
        let n: u64 = value.trim().parse().map_err(|_| {
            ConfigError::Limit(o.clone(), "the value must be a whole number".into())
        })?;
        let slot = v
            .get_mut(name.trim())
            .ok_or_else(|| ConfigError::Limit(o.clone(), "no such limit".into()))?;
        *slot = n.into();
    }
    serde_json::from_value(v).map_err(|e| ConfigError::Limit(overrides.join(","), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("origin").chain(args.iter().copied());
        Config::from_settings(Settings::load_from(argv)?)
    }

    fn error(args: &[&str]) -> String {
        load(args).expect_err("refused").to_string()
    }

    #[test]
    fn defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.app_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert_eq!(c.device_url, "http://127.0.0.1:8082");
        assert_eq!(
            (c.queue_depth, c.max_unacked, c.list_backlog),
            (64, 256, 1000)
        );
        assert_eq!(
            (
                c.ack_commit_delay_ms,
                c.fanout_read_pause_ms,
                c.fanout_linger_ms
            ),
            (100, 1000, 50)
        );
        assert_eq!(c.store_cache_bytes, 1 << 30);
        assert_eq!((c.h2_max_streams, c.h2_max_header_bytes), (100, 16384));
        assert_eq!(
            (c.header_read_timeout_secs, c.tcp_keepalive_secs),
            (30, 300)
        );
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.fanout_writers >= 1);
    }

    #[test]
    fn out_of_range_is_refused_naming_the_range() {
        for (flag, value, range) in [
            ("--max-unacked", "0", "1..=65536"),
            ("--max-list-documents", "1025", "1..=1024"),
            ("--fanout-writers", "0", "1..=64"),
            ("--ws-max-handshake-headers", "100000", "8..=256"),
            ("--receipt-ttl-secs", "0", "1..=31536000"),
            ("--fanout-read-pause-ms", "99999", "0..=10000"),
        ] {
            let e = error(&[flag, value]);
            assert!(e.contains(range) && e.contains(flag), "{flag} {value}: {e}");
        }
        assert!(error(&["--queue-depth", "many"]).contains("--queue-depth"));
        let e = error(&["--log-format", "xml"]);
        assert!(e.contains("text") && e.contains("json"), "{e}");
        // At the bounds: taken as given.
        let c = load(&[
            "--fanout-read-pause-ms",
            "0",
            "--max-list-documents",
            "1024",
        ])
        .unwrap();
        assert_eq!((c.fanout_read_pause_ms, c.max_list_documents), (0, 1024));
    }

    #[test]
    fn unspecified_address_needs_a_public_url() {
        let e = error(&["--app-listen", "0.0.0.0:8080"]);
        assert!(e.contains("public-url"), "{e}");
        let e = error(&["--h2-listen", "0.0.0.0:8082"]);
        assert!(e.contains("device-url"), "{e}");
        let c = load(&[
            "--app-listen",
            "0.0.0.0:8080",
            "--public-url",
            "https://push.example",
        ]);
        assert_eq!(c.unwrap().device_url, "http://127.0.0.1:8082");
        let c = load(&[
            "--app-listen",
            "0.0.0.0:8080",
            "--h2-listen",
            "[::]:8082",
            "--public-url",
            "https://push.example/",
            "--device-url",
            "https://devices.push.example",
        ])
        .unwrap();
        assert_eq!(c.public_url, "https://push.example");
        assert_eq!(c.device_url, "https://devices.push.example");
    }

    fn file(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("origin-cfg-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_owned()
    }

    #[test]
    fn file_then_command_line_then_overrides() {
        let f = file(
            "layers",
            "queue_depth = 7\nsweep_secs = 5\npublic_url = \"https://push.example/\"\n\
             edge_secret = \"s\"\nbehind_edge = true\nlisten_backlog = 9\nlog_format = \"json\"\n\
             [limits]\nmax_message_bytes = 8192\n",
        );
        let c = load(&[
            "--config",
            &f,
            "--queue-depth",
            "9",
            "--limit",
            "max_ttl_secs=60",
        ])
        .unwrap();
        assert_eq!(c.queue_depth, 9, "the command line wins over the file");
        assert_eq!(c.sweep_secs, 5);
        assert_eq!(c.public_url, "https://push.example");
        assert_eq!(c.limits.max_message_bytes, 8192);
        assert_eq!(c.limits.max_ttl_secs, 60);
        assert_eq!(c.edge_secret.as_deref(), Some(&b"s"[..]));
        assert!(c.behind_edge);
        assert_eq!(c.listen_backlog, 9);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn file_mistakes_are_refused() {
        let unknown = file("unknown", "queue_dept = 7\n");
        let e = error(&["--config", &unknown]);
        assert!(e.contains("queue_dept"), "{e}");
        let range = file("range", "max_unacked = 0\n");
        let e = error(&["--config", &range]);
        assert!(e.contains("1..=65536") && e.contains(&range), "{e}");
        let kind = file("kind", "queue_depth = [1]\n");
        assert!(error(&["--config", &kind]).contains("queue_depth"));
        let flag_only = file("flag-only", "health_probe = true\n");
        assert!(error(&["--config", &flag_only]).contains("health_probe"));
        let limit = file("limit", "[limits]\nmax_mesage_bytes = 1\n");
        assert!(error(&["--config", &limit]).contains("max_mesage_bytes"));
        assert!(error(&["--limit", "nope=1"]).contains("no such limit"));
        assert!(error(&["--limit", "max_message_bytes=4095"]).contains("at least 4096"));
    }

    #[test]
    fn behind_edge_needs_a_secret() {
        assert!(matches!(
            load(&["--behind-edge", "true"]),
            Err(ConfigError::NoEdgeSecret)
        ));
    }
}
