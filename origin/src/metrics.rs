//! Counters and gauges, exposed in Prometheus text format on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The service's counters.
#[derive(Default)]
pub struct Metrics {
    /// Pushes accepted and delivered to a connected device at once.
    pub pushes_delivered: AtomicU64,
    /// Pushes accepted and stored for later.
    pub pushes_stored: AtomicU64,
    /// TTL 0 pushes to a device that was not connected.
    pub pushes_discarded: AtomicU64,
    /// Pushes refused (4xx).
    pub pushes_refused: AtomicU64,
    /// Application requests seen (any route).
    pub app_requests: AtomicU64,
    /// Messages written to devices (direct, stored, redelivered).
    pub messages_sent: AtomicU64,
    /// Messages acknowledged by devices.
    pub messages_acked: AtomicU64,
    /// Expired messages swept from the store.
    pub messages_expired: AtomicU64,
    /// WebSocket connections accepted.
    pub ws_connections: AtomicU64,
    /// RFC 8030 HTTP/2 connections accepted.
    pub h2_connections: AtomicU64,
    /// Application requests refused for a missing or bad edge mark.
    pub edge_refused: AtomicU64,
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Renders the counters plus the given gauges.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 11] = [
            (
                "push_pushes_delivered_total",
                "Pushes delivered at once to a connected device",
                &self.pushes_delivered,
            ),
            (
                "push_pushes_stored_total",
                "Pushes stored for a device that was away or busy",
                &self.pushes_stored,
            ),
            (
                "push_pushes_discarded_total",
                "TTL 0 pushes to a device that was away",
                &self.pushes_discarded,
            ),
            (
                "push_pushes_refused_total",
                "Pushes refused with a 4xx",
                &self.pushes_refused,
            ),
            (
                "push_app_requests_total",
                "Requests on the application API",
                &self.app_requests,
            ),
            (
                "push_messages_sent_total",
                "Messages written to devices",
                &self.messages_sent,
            ),
            (
                "push_messages_acked_total",
                "Messages acknowledged by devices",
                &self.messages_acked,
            ),
            (
                "push_messages_expired_total",
                "Stored messages that expired undelivered",
                &self.messages_expired,
            ),
            (
                "push_ws_connections_total",
                "WebSocket device connections accepted",
                &self.ws_connections,
            ),
            (
                "push_h2_connections_total",
                "HTTP/2 device connections accepted",
                &self.h2_connections,
            ),
            (
                "push_edge_refused_total",
                "Application requests refused for their edge mark",
                &self.edge_refused,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}
