//! `pushbench connect`: opens N devices (hello + one register each), and
//! measures the rate and the origin's memory per idle device.

use crate::pool::{DeviceOpts, Pool};
use crate::stats::{r3, rss_bytes, CpuWindow};
use crate::tally::{connect, ready, tool_pids};
use serde_json::{json, Value};
use std::time::Duration;

/// Options of `connect`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Devices to open.
    #[arg(long)]
    pub devices: usize,
    /// The origin's process id, to read its RSS before and after; several
    /// nodes' separated by commas (their CPU is not reported then).
    #[arg(long, value_delimiter = ',')]
    pub origin_pid: Vec<u32>,
    /// Quiet time after the last register before the RSS is read, in ms.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub dev: DeviceOpts,
}

/// Runs the measurement; the result line's fields.
pub async fn run(a: ConnectArgs, timeout_secs: u64) -> Result<Value, String> {
    let mut pool = ready(Pool::spawn(&a.dev, a.devices, 0, false, timeout_secs)?).await?;
    let rss = |pids: &[u32]| {
        pids.iter()
            .map(|p| rss_bytes(*p))
            .collect::<Option<Vec<u64>>>()
    };
    let rss_before = rss(&a.origin_pid);
    let one = match a.origin_pid[..] {
        [pid] => Some(pid),
        _ => None,
    };
    let cpu = CpuWindow::start(one, tool_pids(&pool));
    let (t0, mut setup) = connect(&mut pool, &format!("connecting {} devices", a.devices)).await?;
    let (connected, failed) = (setup.connected, setup.failed);
    let elapsed = setup.finished_ns.saturating_sub(t0) as f64 / 1e9;
    let cpu = cpu.finish();
    eprintln!("pushbench: {connected} connected, {failed} failed in {elapsed:.3} s; settling");
    tokio::time::sleep(Duration::from_millis(a.settle_ms)).await;
    let rss_after = rss(&a.origin_pid);
    // Check that the devices were all still there when measured.
    pool.send_all("dump")?;
    let ends = pool.gather_json("end", |_, _| {}).await?;
    let closed: u64 = ends.iter().filter_map(|e| e["closed"].as_u64()).sum();
    // Each node holds an equal share of the devices (workers go round robin).
    let per_node: Vec<f64> = match (&rss_before, &rss_after) {
        (Some(b), Some(a)) if connected > 0 => {
            let share = connected as f64 / a.len() as f64;
            b.iter()
                .zip(a)
                .map(|(b, a)| ((*a as f64 - *b as f64) / share).round())
                .collect()
        }
        _ => Vec::new(),
    };
    let per_device =
        (!per_node.is_empty()).then(|| per_node.iter().sum::<f64>() / per_node.len() as f64);
    let (rss_before, rss_after) = (
        rss_before.map(|v| v.iter().sum::<u64>()),
        rss_after.map(|v| v.iter().sum::<u64>()),
    );
    let mut line = json!({
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
        "rss_per_device_bytes_by_node": per_node,
        "phases": setup.phase_figures(),
        "first_error": setup.first_error,
    });
    line.as_object_mut().expect("object").extend(cpu);
    Ok(line)
}
