//! Counters and gauges, exposed in Prometheus text format on `/metrics`.

use crate::store::StoreCounts;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The service's counters, and the gauges it keeps itself.
#[derive(Default)]
pub struct Metrics {
    /// Pushes accepted and delivered to a connected device at once.
    pub pushes_delivered: AtomicU64,
    /// Pushes accepted and stored for later.
    pub pushes_stored: AtomicU64,
    /// Delivered pushes that their device acknowledged before their store
    /// write committed, which was skipped.
    pub pushes_acked_unstored: AtomicU64,
    /// TTL 0 pushes to a device that was not connected.
    pub pushes_discarded: AtomicU64,
    /// Pushes refused (4xx).
    pub pushes_refused: AtomicU64,
    /// List pushes accepted (`201`).
    pub list_pushes_accepted: AtomicU64,
    /// List pushes refused (4xx, including `429`).
    pub list_pushes_refused: AtomicU64,
    /// Rate refusals (`429`) held before their answer (`--refusal-hold-ms`).
    pub refusals_held: AtomicU64,
    /// Fan-out copies handed to a connected member's queue.
    pub fanout_queued: AtomicU64,
    /// Fan-out copies for a connected member whose queue was full (fetched
    /// once it drains).
    pub fanout_deferred: AtomicU64,
    /// Fan-out members not connected (they fetch their copy at `hello`).
    pub fanout_offline: AtomicU64,
    /// Fan-out members whose copy failed (key unfit, rate limit).
    pub fanout_failed: AtomicU64,
    /// Fan-outs running now (a gauge).
    pub fanouts_running: AtomicU64,
    /// Members per second of the last finished fan-out (a gauge).
    pub fanout_last_rate: AtomicU64,
    /// Application requests seen (any route).
    pub app_requests: AtomicU64,
    /// Messages written to devices (direct, stored, redelivered, list copies).
    pub messages_sent: AtomicU64,
    /// Messages acknowledged by devices.
    pub messages_acked: AtomicU64,
    /// Messages a device acknowledged as not decrypting (code 101).
    pub messages_undecryptable: AtomicU64,
    /// Messages a device refused (code 102, or a `nack`).
    pub messages_rejected: AtomicU64,
    /// Times a message was left stored (or with its list) because its
    /// connection had `max_unacked` messages waiting for acknowledgement
    /// (one message can be held back more than once).
    pub messages_deferred_unacked: AtomicU64,
    /// List messages a `hello` (or an HTTP/2 monitoring request) looked at
    /// for the copies waiting for its device.
    pub hello_list_messages_read: AtomicU64,
    /// List messages looked at in the background for what connected
    /// devices' lists have settled.
    pub settle_list_messages_read: AtomicU64,
    /// Expired messages swept from the store.
    pub messages_expired: AtomicU64,
    /// Stored messages evicted by newer ones (`max_stored_per_subscription`).
    pub messages_evicted: AtomicU64,
    /// Stored messages dropped with their subscription.
    pub messages_dropped_ended: AtomicU64,
    /// User agents (with their subscriptions) ended by the idle expiry.
    pub user_agents_idle_expired: AtomicU64,
    /// Receipt subscriptions ended by their idle expiry.
    pub receipt_subscriptions_idle_expired: AtomicU64,
    /// WebSocket connections accepted.
    pub ws_connections: AtomicU64,
    /// RFC 8030 HTTP/2 connections accepted.
    pub h2_connections: AtomicU64,
    /// Device connections closed at once: `--max-device-connections` held.
    pub device_connections_refused: AtomicU64,
    /// Application requests refused for a missing or bad edge mark.
    pub edge_refused: AtomicU64,
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Counts a running fan-out for as long as it lives.
pub struct Running<'a>(&'a AtomicU64);

impl<'a> Running<'a> {
    /// Counts one more fan-out running.
    pub fn start(m: &'a Metrics) -> Running<'a> {
        inc(&m.fanouts_running);
        Running(&m.fanouts_running)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What `/metrics` shows besides the counters: read when scraped.
pub struct Gauges<'a> {
    /// Connected user agents by `protocol` label.
    pub connected: &'a [(&'static str, u64)],
    /// What the store holds.
    pub store: StoreCounts,
    /// Store writes queued and not yet committed.
    pub writes_pending: u64,
    /// Store write requests committed so far (many share a commit).
    pub writes_committed: u64,
    /// This node's part in a cluster, if it is in one.
    pub cluster: Option<ClusterGauges>,
}

/// What a node of a cluster shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterGauges {
    /// 1 while Redis answers.
    pub redis_up: u64,
    /// The last Redis round trip, microseconds.
    pub redis_rtt_us: u64,
    /// Messages for user agents held by other nodes.
    pub route_hits: u64,
    /// Messages for user agents no live node holds.
    pub route_misses: u64,
    /// Notices sent to other nodes.
    pub notices_sent: u64,
    /// Notices heard from other nodes.
    pub notices_heard: u64,
    /// Messages written to devices on other nodes without being stored.
    pub forwarded: u64,
    /// List members sent to the nodes that hold them.
    pub members_sent: u64,
    /// Fan-outs of nodes that died or restarted, taken over here.
    pub fanouts_taken_over: u64,
}

/// One metric family: name, help, type, and its samples by label value.
#[derive(Clone)]
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'a str,
    label: Option<&'a str>,
    samples: Vec<(&'a str, u64)>,
}

impl Metrics {
    /// Renders every family in Prometheus text format (version 0.0.4).
    pub fn render(&self, gauges: &Gauges) -> String {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let one = |name, help, kind, value| Family {
            name,
            help,
            kind,
            label: None,
            samples: vec![("", value)],
        };
        let families = [
            Family {
                name: "push_connected_devices",
                help: "User agents connected now, by device protocol",
                kind: "gauge",
                label: Some("protocol"),
                samples: gauges.connected.to_vec(),
            },
            Family {
                name: "push_pushes_total",
                help: "Pushes to one subscription, by outcome",
                kind: "counter",
                label: Some("outcome"),
                samples: vec![
                    ("delivered", v(&self.pushes_delivered)),
                    ("stored", v(&self.pushes_stored)),
                    ("discarded", v(&self.pushes_discarded)),
                    ("refused", v(&self.pushes_refused)),
                ],
            },
            Family {
                name: "push_pushes_unstored_total",
                help: "Delivered pushes acknowledged by their device before their store write, which was skipped",
                kind: "counter",
                label: None,
                samples: vec![("", v(&self.pushes_acked_unstored))],
            },
            Family {
                name: "push_list_pushes_total",
                help: "Pushes to a list, by outcome",
                kind: "counter",
                label: Some("outcome"),
                samples: vec![
                    ("accepted", v(&self.list_pushes_accepted)),
                    ("refused", v(&self.list_pushes_refused)),
                ],
            },
            one(
                "push_refusals_held_total",
                "Pushes refused for a rate (429) whose answer waited --refusal-hold-ms",
                "counter",
                v(&self.refusals_held),
            ),
            Family {
                name: "push_fanout_members_total",
                help: "List members reached by fan-out, by outcome (offline ones fetch at hello)",
                kind: "counter",
                label: Some("outcome"),
                samples: vec![
                    ("queued", v(&self.fanout_queued)),
                    ("deferred", v(&self.fanout_deferred)),
                    ("offline", v(&self.fanout_offline)),
                    ("failed", v(&self.fanout_failed)),
                ],
            },
            one(
                "push_fanouts_in_progress",
                "List pushes whose fan-out is running",
                "gauge",
                v(&self.fanouts_running),
            ),
            one(
                "push_fanout_last_members_per_second",
                "Members per second of the last finished fan-out",
                "gauge",
                v(&self.fanout_last_rate),
            ),
            one(
                "push_stored_messages",
                "Messages stored for single subscriptions",
                "gauge",
                gauges.store.messages,
            ),
            one(
                "push_stored_list_messages",
                "List messages stored (one body for all members)",
                "gauge",
                gauges.store.list_messages,
            ),
            one("push_lists", "Lists", "gauge", gauges.store.lists),
            one(
                "push_subscriptions",
                "Subscriptions",
                "gauge",
                gauges.store.subscriptions,
            ),
            one(
                "push_store_bytes",
                "Size of the store on disk",
                "gauge",
                gauges.store.bytes,
            ),
            one(
                "push_store_writes_pending",
                "Store writes queued and not yet committed (acknowledgements, clean-ups, requests)",
                "gauge",
                gauges.writes_pending,
            ),
            one(
                "push_store_writes_total",
                "Store write requests committed (many share a commit; skipped ones are not counted)",
                "counter",
                gauges.writes_committed,
            ),
            one(
                "push_app_requests_total",
                "Requests on the application API",
                "counter",
                v(&self.app_requests),
            ),
            one(
                "push_messages_sent_total",
                "Messages written to devices",
                "counter",
                v(&self.messages_sent),
            ),
            one(
                "push_messages_deferred_unacked_total",
                "Times a message was held back because its connection had too many unacknowledged",
                "counter",
                v(&self.messages_deferred_unacked),
            ),
            one(
                "push_hello_list_messages_read_total",
                "List messages looked at for the copies waiting for connecting devices",
                "counter",
                v(&self.hello_list_messages_read),
            ),
            one(
                "push_settle_list_messages_read_total",
                "List messages looked at in the background for what connected devices have settled",
                "counter",
                v(&self.settle_list_messages_read),
            ),
            one(
                "push_messages_acked_total",
                "Messages acknowledged (or refused) by devices",
                "counter",
                v(&self.messages_acked),
            ),
            Family {
                name: "push_messages_undelivered_total",
                help: "Messages devices answered as not delivered: did not decrypt (ack code 101), or refused (code 102, nack)",
                kind: "counter",
                label: Some("reason"),
                samples: vec![
                    ("undecryptable", v(&self.messages_undecryptable)),
                    ("rejected", v(&self.messages_rejected)),
                ],
            },
            one(
                "push_messages_expired_total",
                "Stored messages that expired undelivered",
                "counter",
                v(&self.messages_expired),
            ),
            Family {
                name: "push_messages_dropped_total",
                help: "Stored messages removed undelivered: evicted by newer ones (max_stored_per_subscription), or with their subscription when it ended; a 410 receipt goes to each whose sender asked for one",
                kind: "counter",
                label: Some("reason"),
                samples: vec![
                    ("evicted", v(&self.messages_evicted)),
                    ("subscription_ended", v(&self.messages_dropped_ended)),
                ],
            },
            Family {
                name: "push_idle_expired_total",
                help: "User agents ended, with their subscriptions, after --idle-expiry-days away; receipt subscriptions after --receipt-idle-expiry-days unpolled",
                kind: "counter",
                label: Some("kind"),
                samples: vec![
                    ("user_agent", v(&self.user_agents_idle_expired)),
                    ("receipt_subscription", v(&self.receipt_subscriptions_idle_expired)),
                ],
            },
            Family {
                name: "push_device_connections_total",
                help: "Device connections accepted, by protocol",
                kind: "counter",
                label: Some("protocol"),
                samples: vec![
                    ("websocket", v(&self.ws_connections)),
                    ("http2", v(&self.h2_connections)),
                ],
            },
            one(
                "push_device_connections_refused_total",
                "Device connections closed as accepted: as many as --max-device-connections were open",
                "counter",
                v(&self.device_connections_refused),
            ),
            one(
                "push_edge_refused_total",
                "Application requests refused for their edge mark",
                "counter",
                v(&self.edge_refused),
            ),
        ];
        let mut families = families.to_vec();
        if let Some(c) = gauges.cluster {
            families.extend([
                one(
                    "push_cluster_redis_up",
                    "1 while this node reaches Redis",
                    "gauge",
                    c.redis_up,
                ),
                one(
                    "push_cluster_redis_rtt_microseconds",
                    "The last Redis round trip of this node",
                    "gauge",
                    c.redis_rtt_us,
                ),
                Family {
                    name: "push_cluster_routes_total",
                    help: "Messages for user agents not connected here, by whether a live node held them",
                    kind: "counter",
                    label: Some("outcome"),
                    samples: vec![("hit", c.route_hits), ("miss", c.route_misses)],
                },
                one(
                    "push_cluster_forwarded_total",
                    "Messages written to devices connected to other nodes, without being stored",
                    "counter",
                    c.forwarded,
                ),
                Family {
                    name: "push_cluster_notices_total",
                    help: "Notices between nodes (stored messages, forwarded messages, list members), by direction",
                    kind: "counter",
                    label: Some("direction"),
                    samples: vec![("sent", c.notices_sent), ("heard", c.notices_heard)],
                },
                one(
                    "push_cluster_list_members_sent_total",
                    "List members this node's fan-outs sent to the nodes that hold them",
                    "counter",
                    c.members_sent,
                ),
                one(
                    "push_cluster_fanouts_taken_over_total",
                    "Fan-outs of nodes that died or restarted, finished by this node",
                    "counter",
                    c.fanouts_taken_over,
                ),
            ]);
        }
        let mut out = String::with_capacity(4096);
        for f in families {
            let (name, help, kind) = (f.name, f.help, f.kind);
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (value, n) in f.samples {
                match f.label {
                    Some(label) => {
                        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
                    }
                    None => {
                        let _ = writeln!(out, "{name} {n}");
                    }
                }
            }
        }
        out
    }
}
