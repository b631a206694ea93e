//! `pushbench push`: N registered devices, P pushes round-robin over them
//! from C keep-alive connections; throughput and POST→delivery latency.

use crate::app_client::{app_addr, path_of, App};
use crate::bodies::aes128gcm_body;
use crate::http::{self, Plan};
use crate::pool::DeviceOpts;
use crate::settled::{self, per_copy, Whole};
use crate::stats::{percentile, r3, CpuWindow};
use crate::tally::{
    connect_with_endpoints, count, device_errors, dump_each, sum, tool_pids, wait_delivered, Record,
};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Options of `push`.
#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// Devices (one subscription each).
    #[arg(long)]
    pub devices: usize,
    /// Pushes in all.
    #[arg(long)]
    pub pushes: usize,
    /// HTTP/1.1 keep-alive connections to the application API.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Body size in bytes: 0 for none, else an aes128gcm body (at least 103).
    #[arg(long, default_value_t = 0)]
    pub body_bytes: usize,
    /// Pushes per second (open loop); as fast as possible without it.
    #[arg(long)]
    pub rate: Option<f64>,
    /// The application API's base URL, e.g. http://127.0.0.1:8080, or
    /// several nodes' URLs, comma-separated: the connections are spread
    /// over them in turn.
    #[arg(long)]
    pub app: String,
    /// The origin's process id, to report its CPU time.
    #[arg(long)]
    pub origin_pid: Option<u32>,
    /// The origin's operator URL (its `/metrics`), e.g.
    /// http://127.0.0.1:9464: without it the whole of the pushes is not
    /// measured.
    #[arg(long)]
    pub metrics: Option<String>,
    /// How long to wait for deliveries after the last response, in seconds.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub dev: DeviceOpts,
}

/// Runs the measurement; the result line's fields.
pub async fn run(a: PushArgs, timeout_secs: u64) -> Result<Value, String> {
    let apps = a
        .app
        .split(',')
        .map(app_addr)
        .collect::<Result<Vec<_>, _>>()?;
    let host = apps[0].0.clone();
    let addrs = apps.iter().map(|(_, addr)| *addr).collect();
    let body = aes128gcm_body(a.body_bytes)?;
    if a.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err("--rate must be positive".into());
    }
    let (mut pool, setup) =
        connect_with_endpoints(&a.dev, a.devices, a.body_bytes, timeout_secs).await?;
    let (connected, failed, endpoints) = (setup.connected, setup.failed, setup.endpoints);
    eprintln!(
        "pushbench: {connected} devices ready ({failed} failed); {} pushes over {} connections{}",
        a.pushes,
        a.concurrency,
        a.rate.map(|r| format!(" at {r}/s")).unwrap_or_default()
    );
    let plan = Arc::new(Plan {
        addrs,
        host,
        paths: endpoints.iter().map(|(_, url)| path_of(url)).collect(),
        body,
        pushes: a.pushes,
        concurrency: a.concurrency,
        rate: a.rate,
        app_side: None,
    });

    // The whole of the pushes, acknowledgements included, is measured
    // against one origin only.
    let metrics = a.metrics.as_deref().map(App::new).transpose()?;
    let base = match (a.origin_pid, apps.len(), &metrics) {
        (Some(_), 1, Some(m)) => Some(settled::acks(Some(m)).await?),
        _ => None,
    };
    let cpu = CpuWindow::start(a.origin_pid, tool_pids(&pool));
    let started = tokio::time::Instant::now();
    let pushers = tokio::spawn(http::run(plan));
    tokio::pin!(pushers);
    let mut delivered = vec![0u64; pool.len()];
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    let outcome = loop {
        tokio::select! {
            o = &mut pushers => break o.map_err(|e| format!("pushers: {e}"))?,
            l = pool.next() => {
                let (k, line) = l?;
                count(&mut delivered, k, &line);
            }
            _ = progress.tick() => eprintln!(
                "pushbench: {:.0} s, {} delivered",
                started.elapsed().as_secs_f64(),
                delivered.iter().sum::<u64>()
            ),
        }
    };
    let ok = outcome.sent.iter().filter(|s| s.status == 201).count() as u64;
    let drain_until = tokio::time::Instant::now() + Duration::from_secs(a.drain_secs);
    wait_delivered(&mut pool, &mut delivered, ok, drain_until).await?;
    let window = cpu.finish();
    let whole = match base {
        Some(base) => {
            let drain = Duration::from_secs(a.drain_secs);
            let w = Whole::wait(metrics.as_ref(), &a.dev, base, ok, drain, &cpu).await?;
            json!({
                "origin_cpu_us_per_push": w.per_copy(ok),
                "cpu": w.fig(ok),
            })
        }
        None => Value::Null,
    };
    let mut cpu = window;
    cpu.insert("origin_cpu_us_per_push".into(), json!(per_copy(&cpu, ok)));
    cpu.insert("whole".into(), whole);

    let mut records: Vec<Record> = Vec::with_capacity(ok as usize);
    let ends = dump_each(&mut pool, |_, v, ns| records.push((v.to_owned(), ns))).await?;
    drop(pool);
    Ok(report(&a, connected, failed, outcome, records, &ends, cpu))
}

/// Matches deliveries to pushes and computes the figures.
fn report(
    a: &PushArgs,
    connected: u64,
    failed: u64,
    outcome: http::Outcome,
    records: Vec<Record>,
    ends: &[Value],
    cpu: Map<String, Value>,
) -> Value {
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent_at: HashMap<&str, u64> = HashMap::with_capacity(outcome.sent.len());
    for s in &outcome.sent {
        *statuses.entry(s.status.to_string()).or_default() += 1;
        if let (201, Some(v)) = (s.status, &s.version) {
            sent_at.insert(v, s.send_ns);
        }
    }
    let ok = statuses.get("201").copied().unwrap_or(0);
    let first_send = outcome.sent.iter().map(|s| s.send_ns).min().unwrap_or(0);
    let last_done = outcome.sent.iter().map(|s| s.done_ns).max().unwrap_or(0);
    let mut lat = Vec::with_capacity(records.len());
    let (mut unmatched, mut duplicates, mut last_delivery) = (0u64, 0u64, 0u64);
    let mut seen: HashMap<&str, ()> = HashMap::with_capacity(records.len());
    for (v, ns) in &records {
        if seen.insert(v.as_str(), ()).is_some() {
            duplicates += 1;
            continue;
        }
        match sent_at.get(v.as_str()) {
            Some(&t) => {
                lat.push(ns.saturating_sub(t) as f64 / 1e6);
                last_delivery = last_delivery.max(*ns);
            }
            None => unmatched += 1,
        }
    }
    lat.sort_by(f64::total_cmp);
    let matched = lat.len() as u64;
    let span = last_delivery.saturating_sub(first_send) as f64 / 1e9;
    let post_span = last_done.saturating_sub(first_send) as f64 / 1e9;
    let mut lags: Vec<f64> = outcome.sent.iter().map(|s| s.lag_ns as f64 / 1e6).collect();
    lags.sort_by(f64::total_cmp);
    let non_201: u64 = statuses
        .iter()
        .filter(|(k, _)| k.as_str() != "201")
        .map(|(_, n)| n)
        .sum();
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("cmd", "push".into());
    put("devices", a.devices.into());
    put("devices_connected", connected.into());
    put("devices_failed", failed.into());
    put("pushes", a.pushes.into());
    put("concurrency", a.concurrency.into());
    put("body_bytes", a.body_bytes.into());
    put("rate", json!(a.rate));
    put("status_201", ok.into());
    put("statuses", json!(statuses));
    put("errors", (non_201).into());
    put("io_errors", outcome.io_errors.into());
    put("delivered", matched.into());
    put("missing", ok.saturating_sub(matched).into());
    put("duplicates", duplicates.into());
    put("unmatched", unmatched.into());
    put("bad_payload", sum(ends, "bad_payload").into());
    put("device_errors", device_errors(ends).into());
    put("devices_closed", sum(ends, "closed").into());
    put("elapsed_s", r3(span).into());
    put(
        "deliveries_per_s",
        r3(if span > 0.0 {
            matched as f64 / span
        } else {
            0.0
        })
        .into(),
    );
    put(
        "posts_per_s",
        r3(if post_span > 0.0 {
            outcome.sent.len() as f64 / post_span
        } else {
            0.0
        })
        .into(),
    );
    let p = |x: f64| json!(percentile(&lat, x).map(r3));
    put("p50_ms", p(50.0));
    put("p99_ms", p(99.0));
    put("max_ms", json!(lat.last().copied().map(r3)));
    if a.rate.is_some() {
        put("p99_send_lag_ms", json!(percentile(&lags, 99.0).map(r3)));
        put("max_send_lag_ms", json!(lags.last().copied().map(r3)));
    }
    let first_error = outcome.first_error.clone().or_else(|| {
        ends.iter()
            .find_map(|e| e["first_error"].as_str().map(str::to_owned))
    });
    put("first_error", json!(first_error));
    m.extend(cpu);
    Value::Object(m)
}
