//! When the origin is done with a push: every acknowledgement read and its
//! store write committed, as its `/metrics` tells.

use crate::app_client::App;
use crate::pool::DeviceOpts;
use crate::stats::{r3, CpuWindow};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

/// How often `/metrics` is read while waiting (each read costs the origin
/// a little CPU, inside the window measured).
const POLL: Duration = Duration::from_millis(10);

/// The origin's acknowledgement count and store writes pending.
#[derive(Debug, Clone, Copy, Default)]
pub struct Acks {
    /// `push_messages_acked_total`.
    pub acked: u64,
    /// `push_store_writes_pending`.
    pub pending: u64,
}

/// The value of an unlabelled series in a Prometheus text.
fn series(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(name)?.strip_prefix(' ')?;
        v.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// Reads the origin's counts now from its operator listener (`metrics`);
/// zeros without one.
pub async fn acks(metrics: Option<&App>) -> Result<Acks, String> {
    let Some(app) = metrics else {
        return Ok(Acks::default());
    };
    let r = app.request("GET", "/metrics", &[], b"").await?;
    let text = String::from_utf8_lossy(&r.body);
    let acked = series(&text, "push_messages_acked_total")
        .ok_or("/metrics has no push_messages_acked_total")?;
    // An origin without the gauge (an older build, measured for
    // comparison) is taken as having nothing pending.
    let pending = series(&text, "push_store_writes_pending").unwrap_or(0);
    Ok(Acks { acked, pending })
}

/// One series of the origin's `/metrics` now (its name with its labels,
/// e.g. `push_connected_devices{protocol="websocket"}`), if it has it.
pub async fn read_series(metrics: &App, name: &str) -> Result<Option<u64>, String> {
    let r = metrics.request("GET", "/metrics", &[], b"").await?;
    Ok(series(&String::from_utf8_lossy(&r.body), name))
}

/// Waits until the origin counts at least `acked` acknowledgements and has
/// no store write pending; `false` if `until` came first.
pub async fn wait(app: &App, acked: u64, until: Instant) -> Result<bool, String> {
    loop {
        let a = acks(Some(app)).await?;
        if a.acked >= acked && a.pending == 0 {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The origin's CPU per copy in µs, from a window's `origin_cpu_s`.
pub fn per_copy(cpu: &serde_json::Map<String, Value>, copies: u64) -> Option<f64> {
    let s = cpu.get("origin_cpu_s")?.as_f64()?;
    (copies > 0).then(|| r3(s * 1e6 / copies as f64))
}

/// A push measured whole: from the POST until the origin has read every
/// acknowledgement the devices send at once and committed what they
/// settle (with devices that acknowledge later, or never: until its
/// store writes are committed). Only with one origin: with devices on
/// several nodes it is not measured (`settled` false).
pub struct Whole {
    cpu: serde_json::Map<String, Value>,
    settled: bool,
}

impl Whole {
    /// Waits for the origin to settle `copies` acknowledgements counted from
    /// `base`, then ends `cpu`'s window. Not measured without the
    /// origin's operator listener (`metrics`).
    pub async fn wait(
        metrics: Option<&App>,
        dev: &DeviceOpts,
        base: Acks,
        copies: u64,
        drain: Duration,
        cpu: &CpuWindow,
    ) -> Result<Whole, String> {
        // Devices spread over several nodes acknowledge to each of them:
        // one node's counts do not tell when the push is done.
        let one_node = dev.ws_addrs().is_ok_and(|a| a.len() == 1);
        let (Some(app), true) = (metrics, one_node) else {
            return Ok(Whole {
                cpu: cpu.finish(),
                settled: false,
            });
        };
        let acks_now = !dev.no_acks && dev.ack_delay_ms == 0;
        let want = base.acked + if acks_now { copies } else { 0 };
        let settled = wait(app, want, Instant::now() + drain).await?;
        Ok(Whole {
            cpu: cpu.finish(),
            settled,
        })
    }

    /// The origin's CPU per copy over the whole push, µs, once settled.
    pub fn per_copy(&self, copies: u64) -> Option<f64> {
        self.settled.then(|| per_copy(&self.cpu, copies)).flatten()
    }

    /// The result line's `whole` object.
    pub fn fig(&self, copies: u64) -> Value {
        let mut m = self.cpu.clone();
        m.insert("settled".into(), self.settled.into());
        m.insert(
            "origin_cpu_us_per_copy".into(),
            json!(self.per_copy(copies)),
        );
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_series() {
        let text = "# HELP push_messages_acked_total x\n# TYPE push_messages_acked_total counter\npush_messages_acked_total 15000\npush_store_writes_pending 0\npush_connected_devices{protocol=\"websocket\"} 3\n";
        assert_eq!(series(text, "push_messages_acked_total"), Some(15000));
        assert_eq!(series(text, "push_store_writes_pending"), Some(0));
        assert_eq!(series(text, "push_connected_devices"), None);
        let ws = r#"push_connected_devices{protocol="websocket"}"#;
        assert_eq!(series(text, ws), Some(3));
        assert_eq!(series(text, "push_messages"), None);
    }
}
