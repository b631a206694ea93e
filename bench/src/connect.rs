//! `pushbench connect`: opens N devices (hello + one register each), and
//! measures the rate and the origin's memory per idle device.

use crate::pool::{DeviceOpts, Pool};
use crate::realtime_ns;
use crate::stats::{cpu_secs, cpu_secs_all, r3, rss_bytes};
use serde_json::{json, Value};
use std::time::Duration;

/// Options of `connect`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Devices to open.
    #[arg(long)]
    pub devices: usize,
    /// The origin's process id, to read its RSS before and after.
    #[arg(long)]
    pub origin_pid: Option<u32>,
    /// Quiet time after the last register before the RSS is read, in ms.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub dev: DeviceOpts,
}

/// Runs the measurement; the result line's fields.
pub async fn run(a: ConnectArgs, timeout_secs: u64) -> Result<Value, String> {
    let mut pool = Pool::spawn(&a.dev, a.devices, 0, false, timeout_secs)?;
    pool.gather("ready", |_, _| {}).await?;
    let mut tool_pids = pool.pids();
    tool_pids.push(std::process::id());
    let rss_before = a.origin_pid.and_then(rss_bytes);
    let origin_cpu0 = a.origin_pid.and_then(cpu_secs);
    let tool_cpu0 = cpu_secs_all(&tool_pids);
    eprintln!(
        "pushbench: connecting {} devices over {} workers",
        a.devices,
        pool.len()
    );
    let t0 = realtime_ns();
    pool.send_all("connect")?;
    let done = pool.gather_json("done", |_, _| {}).await?;
    let connected: u64 = done.iter().filter_map(|d| d["connected"].as_u64()).sum();
    let failed: u64 = done.iter().filter_map(|d| d["failed"].as_u64()).sum();
    let finished = done
        .iter()
        .filter_map(|d| d["finished_ns"].as_u64())
        .max()
        .unwrap_or(t0);
    let first_error = done
        .iter()
        .find_map(|d| d["first_error"].as_str().map(str::to_owned));
    let elapsed = finished.saturating_sub(t0) as f64 / 1e9;
    let origin_cpu = a
        .origin_pid
        .and_then(cpu_secs)
        .zip(origin_cpu0)
        .map(|(b, a)| b - a);
    let tool_cpu = cpu_secs_all(&tool_pids) - tool_cpu0;
    eprintln!("pushbench: {connected} connected, {failed} failed in {elapsed:.3} s; settling");
    tokio::time::sleep(Duration::from_millis(a.settle_ms)).await;
    let rss_after = a.origin_pid.and_then(rss_bytes);
    // Check that the devices were all still there when measured.
    pool.send_all("dump")?;
    let ends = pool.gather_json("end", |_, _| {}).await?;
    let closed: u64 = ends.iter().filter_map(|e| e["closed"].as_u64()).sum();
    let per_device = match (rss_before, rss_after) {
        (Some(b), Some(a)) if connected > 0 => Some((a as f64 - b as f64) / connected as f64),
        _ => None,
    };
    Ok(json!({
        "cmd": "connect",
        "devices": a.devices,
        "workers": pool.len(),
        "connected": connected,
        "failed": failed,
        "closed_before_measured": closed,
        "elapsed_s": r3(elapsed),
        "devices_per_s": r3(if elapsed > 0.0 { connected as f64 / elapsed } else { 0.0 }),
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "rss_per_device_bytes": per_device.map(|x| x.round()),
        "origin_cpu_s": origin_cpu.map(r3),
        "tool_cpu_s": r3(tool_cpu),
        "first_error": first_error,
    }))
}
