//! Configuration: command line, environment (`ORIGIN_*`) and an optional
//! TOML file, in that order of precedence. Every limit of the protocol crate
//! is set in the file's `[limits]` table or by `--limit name=value`.

use clap::Parser;
use serde::Deserialize;
use shared::Limits;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Settings as given; `None` falls through to the next source, then the default.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(
    name = "origin",
    version,
    about = "A Web Push service (RFC 8030) with list push"
)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A TOML file with any of these settings (names with underscores) and a [limits] table.
    #[arg(long, env = "ORIGIN_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Application API listener (push, messages, lists): HTTP/1.1 and h2c. Default 127.0.0.1:8080.
    #[arg(long, env = "ORIGIN_APP_LISTEN")]
    pub app_listen: Option<SocketAddr>,
    /// Firefox's WebSocket push protocol listener. Default 127.0.0.1:8081.
    #[arg(long, env = "ORIGIN_WS_LISTEN")]
    pub ws_listen: Option<SocketAddr>,
    /// RFC 8030 HTTP/2 listener for user agents and receipt subscriptions. Default 127.0.0.1:8082.
    #[arg(long, env = "ORIGIN_H2_LISTEN")]
    pub h2_listen: Option<SocketAddr>,
    /// Public base URL of the application API (push resources; VAPID `aud`). Default http://<app_listen>.
    #[arg(long, env = "ORIGIN_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Public base URL of the HTTP/2 user agent API. Default http://<h2_listen>.
    #[arg(long, env = "ORIGIN_DEVICE_URL")]
    pub device_url: Option<String>,
    /// Folder of the embedded store. Default ./data.
    #[arg(long, env = "ORIGIN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Messages queued for one connected device before further ones are stored. Default 64.
    #[arg(long, env = "ORIGIN_QUEUE_DEPTH")]
    pub queue_depth: Option<usize>,
    /// Requests that share one store commit at most. Default 512.
    #[arg(long, env = "ORIGIN_COMMIT_BATCH")]
    pub commit_batch: Option<usize>,
    /// Milliseconds an acknowledgement's write may wait to share a commit
    /// with others. Default 100, at most 1000.
    #[arg(long, env = "ORIGIN_ACK_COMMIT_DELAY_MS")]
    pub ack_commit_delay_ms: Option<u64>,
    /// Milliseconds what devices send may be left unread while fan-outs
    /// write copies, so that the copies go out first: how long a fan-out
    /// keeps the receive low-water mark of the WebSockets it wrote to
    /// raised, and how long connections leave their reads while queued
    /// copies wait (counted from the start of the burst, however many
    /// fan-outs join it). Default 1000, at most 10000; 0 turns it off.
    #[arg(long, env = "ORIGIN_FANOUT_READ_PAUSE_MS")]
    pub fanout_read_pause_ms: Option<u64>,
    /// Milliseconds the acknowledgements of a fan-out's copies stay unread
    /// after it wrote its last copy, within the read pause, so that devices
    /// on the same cores read their copies first. Default 50, at most 1000.
    #[arg(long, env = "ORIGIN_FANOUT_LINGER_MS")]
    pub fanout_linger_ms: Option<u64>,
    /// Threads that write a fan-out's copies to their WebSocket connections
    /// (the fan-out's own and blocking-pool threads). Fewer leave more CPU
    /// to other work during a large fan-out; more take a larger share of
    /// cores shared with other processes. Default: one per core; 1 to 64.
    #[arg(long, env = "ORIGIN_FANOUT_WRITERS")]
    pub fanout_writers: Option<usize>,
    /// Memory the store may use to cache its file's pages, in MiB: the
    /// origin's resident memory grows by up to this much as the store grows.
    /// Default 1024, at least 1.
    #[arg(long, env = "ORIGIN_STORE_CACHE_MB")]
    pub store_cache_mb: Option<usize>,
    /// Streams one HTTP/2 device connection may have open at once (its
    /// monitors and requests). Default 100, at least 1.
    #[arg(long, env = "ORIGIN_H2_MAX_STREAMS")]
    pub h2_max_streams: Option<u32>,
    /// Largest header list of an HTTP/2 device request, bytes. Default
    /// 16384, at least 1024.
    #[arg(long, env = "ORIGIN_H2_MAX_HEADER_BYTES")]
    pub h2_max_header_bytes: Option<u32>,
    /// Seconds between sweeps of expired messages. Default 60.
    #[arg(long, env = "ORIGIN_SWEEP_SECS")]
    pub sweep_secs: Option<u64>,
    /// Seconds to wait at start for the store's file lock, held by a
    /// previous process that is still exiting. Default 30.
    #[arg(long, env = "ORIGIN_STORE_LOCK_WAIT_SECS")]
    pub store_lock_wait_secs: Option<u64>,
    /// Messages a device connection may have written and not acknowledged;
    /// further ones wait, stored, until acknowledgements make room. Default 256.
    #[arg(long, env = "ORIGIN_MAX_UNACKED")]
    pub max_unacked: Option<usize>,
    /// List documents and merge patches read and applied at once (each may
    /// take up to the body limit and its inflated size in memory); more wait
    /// up to the body timeout, then get 503. Default 4, 1 to 1024.
    #[arg(long, env = "ORIGIN_MAX_LIST_DOCUMENTS")]
    pub max_list_documents: Option<usize>,
    /// A list's newest messages a member is offered when it comes back:
    /// older ones are not delivered to members that missed them (they stay
    /// counted as stored until they expire). Bounds the work and memory of
    /// each `hello`. Default 1000, 1 to 1,000,000.
    #[arg(long, env = "ORIGIN_LIST_BACKLOG")]
    pub list_backlog: Option<usize>,
    /// Largest WebSocket upgrade request, in bytes (431 beyond). Default 8192; 256 to 1 MiB.
    #[arg(long, env = "ORIGIN_WS_MAX_HANDSHAKE_BYTES")]
    pub ws_max_handshake_bytes: Option<usize>,
    /// Most header fields in a WebSocket upgrade request (431 beyond). Default 32; 8 to 256.
    #[arg(long, env = "ORIGIN_WS_MAX_HANDSHAKE_HEADERS")]
    pub ws_max_handshake_headers: Option<usize>,
    /// Largest HTTP/2 subscribe request body, in bytes (413 beyond). Default 4096; 256 to 1 MiB.
    #[arg(long, env = "ORIGIN_H2_MAX_SUBSCRIBE_BYTES")]
    pub h2_max_subscribe_bytes: Option<usize>,
    /// How long an application request's body may take to arrive, seconds
    /// (408 beyond). Default 60; 1 to 3600.
    #[arg(long, env = "ORIGIN_BODY_READ_TIMEOUT_SECS")]
    pub body_read_timeout_secs: Option<u64>,
    /// How long a push receipt waits for its application server, seconds.
    /// Default 604800 (7 days); 1 s to 365 days.
    #[arg(long, env = "ORIGIN_RECEIPT_TTL_SECS")]
    pub receipt_ttl_secs: Option<u64>,
    /// How long a shutdown waits for device connections to close and the
    /// store's queued writes to commit, seconds. Default 10; 1 to 3600.
    #[arg(long, env = "ORIGIN_SHUTDOWN_DRAIN_SECS")]
    pub shutdown_drain_secs: Option<u64>,
    /// Largest WebSocket message a device may send, in bytes. Default 65536.
    #[arg(long, env = "ORIGIN_WS_MAX_MESSAGE")]
    pub ws_max_message: Option<usize>,
    /// Seconds a device has to send `hello` after connecting. Default 10.
    #[arg(long, env = "ORIGIN_HELLO_TIMEOUT_SECS")]
    pub hello_timeout_secs: Option<u64>,
    /// Seconds an HTTP/1.1 client of the application API has to send a
    /// request's headers, so that slow senders cannot hold connections
    /// open; on a kept-alive connection, counted from the previous response
    /// (so it is also its idle timeout). Default 30, at least 1.
    #[arg(long, env = "ORIGIN_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a device connection may be silent before the kernel starts
    /// probing whether its peer is still there (TCP keep-alive; a peer gone
    /// without a word is dropped some 4 probes later). Default 300; 0 turns
    /// it off.
    #[arg(long, env = "ORIGIN_TCP_KEEPALIVE_SECS")]
    pub tcp_keepalive_secs: Option<u64>,
    /// Number of list registration service partitions. Default 1.
    #[arg(long, env = "ORIGIN_PARTITIONS")]
    pub partitions: Option<u32>,
    /// The secret of the edge's HMAC mark (PROTOCOL §5); with it, marked requests skip VAPID re-verification.
    #[arg(long, env = "ORIGIN_EDGE_SECRET", hide_env_values = true)]
    pub edge_secret: Option<String>,
    /// Refuse application requests that carry no valid edge mark (`true`/`false`). Default false.
    #[arg(long, env = "ORIGIN_BEHIND_EDGE")]
    pub behind_edge: Option<bool>,
    /// Listen backlog of each listener (pending connections the kernel queues). Default 4096.
    #[arg(long, env = "ORIGIN_LISTEN_BACKLOG")]
    pub listen_backlog: Option<u32>,
    /// Log format: `text` or `json`. Default text.
    #[arg(long, env = "ORIGIN_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Limit overrides, `name=value` (see shared::Limits); repeatable.
    #[arg(
        long = "limit",
        value_name = "NAME=VALUE",
        env = "ORIGIN_LIMITS",
        value_delimiter = ','
    )]
    #[serde(skip)]
    pub limit: Vec<String>,
    /// Limits from the file.
    #[arg(skip)]
    pub limits: Option<Limits>,
    /// Instead of serving: ask `GET /health` of the application listener
    /// this configuration names, and exit 0 on `200`, 1 otherwise (a
    /// container health check).
    #[arg(long)]
    #[serde(skip)]
    pub health_probe: bool,
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
    /// Base URL of push resources, without trailing slash.
    pub public_url: String,
    /// Base URL of the HTTP/2 device API, without trailing slash.
    pub device_url: String,
    /// Store folder.
    pub data_dir: PathBuf,
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
    /// Concurrent streams per HTTP/2 device connection.
    pub h2_max_streams: u32,
    /// Largest HTTP/2 device request header list, bytes.
    pub h2_max_header_bytes: u32,
    /// Sweep interval, seconds.
    pub sweep_secs: u64,
    /// Wait for the store's file lock at start, seconds.
    pub store_lock_wait_secs: u64,
    /// Messages written to a device connection and not yet acknowledged, at most.
    pub max_unacked: usize,
    /// List documents read and applied at once.
    pub max_list_documents: usize,
    /// A list's newest messages offered to a member that comes back.
    pub list_backlog: usize,
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
    /// Shutdown's wait for connections and writes, seconds.
    pub shutdown_drain_secs: u64,
    /// Hello timeout, seconds.
    pub hello_timeout_secs: u64,
    /// HTTP/1.1 header read timeout of the application API, seconds.
    pub header_read_timeout_secs: u64,
    /// Idle time before TCP keep-alive probes on device connections, seconds (0: off).
    pub tcp_keepalive_secs: u64,
    /// List registration service partitions.
    pub partitions: u32,
    /// The edge's HMAC secret.
    pub edge_secret: Option<Vec<u8>>,
    /// Whether unmarked application requests are refused.
    pub behind_edge: bool,
    /// Listen backlog.
    pub listen_backlog: u32,
    /// `text` or `json`.
    pub log_format: String,
    /// Protocol limits.
    pub limits: Limits,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The file is not valid TOML of known settings.
    #[error("parsing {0}: {1}")]
    Parse(PathBuf, String),
    /// `behind_edge` without `edge_secret`.
    #[error("behind_edge needs edge_secret")]
    NoEdgeSecret,
    /// A `--limit` override is malformed or names no limit.
    #[error("limit override {0:?}: {1}")]
    Limit(String, String),
}

macro_rules! merge {
    ($a:ident, $b:ident, $($f:ident),*) => { $( if $a.$f.is_none() { $a.$f = $b.$f.take(); } )* };
}

impl Config {
    /// Loads from the process's arguments and environment.
    pub fn load() -> Result<Config, ConfigError> {
        Self::from_settings(Settings::parse())
    }

    /// Resolves settings (command line first, then the file, then defaults).
    pub fn from_settings(mut s: Settings) -> Result<Config, ConfigError> {
        if let Some(path) = s.config.clone() {
            let text =
                std::fs::read_to_string(&path).map_err(|e| ConfigError::Read(path.clone(), e))?;
            let mut f: Settings = toml::from_str(&text)
                .map_err(|e| ConfigError::Parse(path.clone(), e.to_string()))?;
            merge!(
                s,
                f,
                app_listen,
                ws_listen,
                h2_listen,
                public_url,
                device_url,
                data_dir,
                queue_depth,
                commit_batch,
                ack_commit_delay_ms,
                fanout_read_pause_ms,
                fanout_linger_ms,
                fanout_writers,
                store_cache_mb,
                h2_max_streams,
                h2_max_header_bytes,
                sweep_secs,
                store_lock_wait_secs,
                max_unacked,
                max_list_documents,
                list_backlog,
                ws_max_message,
                ws_max_handshake_bytes,
                ws_max_handshake_headers,
                h2_max_subscribe_bytes,
                receipt_ttl_secs,
                body_read_timeout_secs,
                shutdown_drain_secs,
                hello_timeout_secs,
                header_read_timeout_secs,
                tcp_keepalive_secs,
                partitions,
                log_format,
                limits,
                edge_secret,
                behind_edge,
                listen_backlog
            );
        }
        let limits = apply_overrides(s.limits.unwrap_or_default(), &s.limit)?;
        let app_listen = s
            .app_listen
            .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("addr"));
        let h2_listen = s
            .h2_listen
            .unwrap_or_else(|| "127.0.0.1:8082".parse().expect("addr"));
        let trim = |u: String| u.trim_end_matches('/').to_owned();
        let behind_edge = s.behind_edge.unwrap_or(false);
        let edge_secret = s
            .edge_secret
            .filter(|s| !s.is_empty())
            .map(String::into_bytes);
        if behind_edge && edge_secret.is_none() {
            return Err(ConfigError::NoEdgeSecret);
        }
        Ok(Config {
            app_listen,
            ws_listen: s
                .ws_listen
                .unwrap_or_else(|| "127.0.0.1:8081".parse().expect("addr")),
            h2_listen,
            public_url: trim(
                s.public_url
                    .unwrap_or_else(|| format!("http://{app_listen}")),
            ),
            device_url: trim(
                s.device_url
                    .unwrap_or_else(|| format!("http://{h2_listen}")),
            ),
            data_dir: s.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            queue_depth: s.queue_depth.unwrap_or(64).max(1),
            commit_batch: s.commit_batch.unwrap_or(512).max(1),
            ack_commit_delay_ms: s.ack_commit_delay_ms.unwrap_or(100).min(1000),
            fanout_read_pause_ms: s.fanout_read_pause_ms.unwrap_or(1000).min(10_000),
            fanout_linger_ms: s.fanout_linger_ms.unwrap_or(50).min(1000),
            fanout_writers: s
                .fanout_writers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .clamp(1, 64),
            store_cache_bytes: s
                .store_cache_mb
                .unwrap_or(1024)
                .max(1)
                .saturating_mul(1 << 20),
            h2_max_streams: s.h2_max_streams.unwrap_or(100).max(1),
            h2_max_header_bytes: s.h2_max_header_bytes.unwrap_or(16 << 10).max(1024),
            sweep_secs: s.sweep_secs.unwrap_or(60).max(1),
            store_lock_wait_secs: s.store_lock_wait_secs.unwrap_or(30),
            max_unacked: s.max_unacked.unwrap_or(256).max(1),
            max_list_documents: s.max_list_documents.unwrap_or(4).clamp(1, 1024),
            list_backlog: s.list_backlog.unwrap_or(1000).clamp(1, 1_000_000),
            ws_max_message: s.ws_max_message.unwrap_or(64 * 1024),
            ws_max_handshake_bytes: s.ws_max_handshake_bytes.unwrap_or(8192).clamp(256, 1 << 20),
            ws_max_handshake_headers: s.ws_max_handshake_headers.unwrap_or(32).clamp(8, 256),
            h2_max_subscribe_bytes: s.h2_max_subscribe_bytes.unwrap_or(4096).clamp(256, 1 << 20),
            receipt_ttl_secs: s
                .receipt_ttl_secs
                .unwrap_or(7 * 24 * 3600)
                .clamp(1, 365 * 24 * 3600),
            shutdown_drain_secs: s.shutdown_drain_secs.unwrap_or(10).clamp(1, 3600),
            body_read_timeout_secs: s.body_read_timeout_secs.unwrap_or(60).clamp(1, 3600),
            hello_timeout_secs: s.hello_timeout_secs.unwrap_or(10),
            header_read_timeout_secs: s.header_read_timeout_secs.unwrap_or(30).max(1),
            tcp_keepalive_secs: s.tcp_keepalive_secs.unwrap_or(300),
            partitions: s.partitions.unwrap_or(1).max(1),
            log_format: s.log_format.unwrap_or_else(|| "text".into()),
            edge_secret,
            behind_edge,
            listen_backlog: s.listen_backlog.unwrap_or(4096).max(1),
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

    #[test]
    fn settings_out_of_range_are_brought_into_it() {
        let c = Config::from_settings(Settings {
            max_unacked: Some(0),
            max_list_documents: Some(0),
            list_backlog: Some(0),
            fanout_writers: Some(0),
            ws_max_handshake_headers: Some(100_000),
            ws_max_handshake_bytes: Some(1),
            receipt_ttl_secs: Some(u64::MAX),
            shutdown_drain_secs: Some(0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.max_unacked, 1);
        assert_eq!(c.max_list_documents, 1);
        assert_eq!(c.list_backlog, 1);
        assert_eq!(c.fanout_writers, 1);
        assert_eq!(c.ws_max_handshake_headers, 256);
        assert_eq!(c.ws_max_handshake_bytes, 256);
        assert_eq!(c.receipt_ttl_secs, 365 * 24 * 3600);
        assert_eq!(c.shutdown_drain_secs, 1);
    }

    #[test]
    fn file_then_overrides() {
        let dir = std::env::temp_dir().join(format!("origin-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "queue_depth = 7\npublic_url = \"https://push.example/\"\nedge_secret = \"s\"\nlisten_backlog = 9\n[limits]\nmax_message_bytes = 8192\n",
        )
        .unwrap();
        let s = Settings {
            config: Some(f),
            queue_depth: Some(9),
            limit: vec!["max_ttl_secs=60".into()],
            ..Default::default()
        };
        let c = Config::from_settings(s).unwrap();
        assert_eq!(c.queue_depth, 9);
        assert_eq!(c.public_url, "https://push.example");
        assert_eq!(c.limits.max_message_bytes, 8192);
        assert_eq!(c.limits.max_ttl_secs, 60);
        assert_eq!(c.edge_secret.as_deref(), Some(&b"s"[..]));
        assert_eq!(c.listen_backlog, 9);
        let bad = Settings {
            limit: vec!["nope=1".into()],
            ..Default::default()
        };
        assert!(Config::from_settings(bad).is_err());
    }

    #[test]
    fn delays_have_defaults_and_caps() {
        let c = Config::from_settings(Settings::default()).unwrap();
        let delays = |c: &Config| {
            (
                c.ack_commit_delay_ms,
                c.fanout_read_pause_ms,
                c.fanout_linger_ms,
            )
        };
        assert_eq!(delays(&c), (100, 1000, 50));
        let s = Settings {
            ack_commit_delay_ms: Some(5_000),
            fanout_read_pause_ms: Some(99_999),
            fanout_linger_ms: Some(5_000),
            ..Default::default()
        };
        let c = Config::from_settings(s).unwrap();
        assert_eq!(delays(&c), (1000, 10_000, 1000));
        let off = Settings {
            fanout_read_pause_ms: Some(0),
            ..Default::default()
        };
        assert_eq!(Config::from_settings(off).unwrap().fanout_read_pause_ms, 0);
    }

    #[test]
    fn store_cache_in_mib() {
        let c = Config::from_settings(Settings::default()).unwrap();
        assert_eq!(c.store_cache_bytes, 1 << 30);
        let s = Settings {
            store_cache_mb: Some(0),
            ..Default::default()
        };
        assert_eq!(Config::from_settings(s).unwrap().store_cache_bytes, 1 << 20);
    }

    #[test]
    fn h2_device_limits() {
        let c = Config::from_settings(Settings::default()).unwrap();
        assert_eq!((c.h2_max_streams, c.h2_max_header_bytes), (100, 16384));
        let s = Settings {
            h2_max_streams: Some(0),
            h2_max_header_bytes: Some(10),
            ..Default::default()
        };
        let c = Config::from_settings(s).unwrap();
        assert_eq!((c.h2_max_streams, c.h2_max_header_bytes), (1, 1024));
    }

    #[test]
    fn header_read_timeout() {
        let c = Config::from_settings(Settings::default()).unwrap();
        assert_eq!(c.header_read_timeout_secs, 30);
        assert_eq!(c.tcp_keepalive_secs, 300);
        let s = Settings {
            header_read_timeout_secs: Some(0),
            ..Default::default()
        };
        assert_eq!(
            Config::from_settings(s).unwrap().header_read_timeout_secs,
            1
        );
    }
}
