//! `pushbench storm`: devices in many lists, with a long backlog they acknowledged, all reconnect at once.

use crate::app_client::App;
use crate::bodies::{copy_len, list_jwe};
use crate::list_api::{
    adds_up, build_list, delivered_to_all, poll_status, push_list_ttl, ListOpts,
};
use crate::offline::{write_uaid_files, Member};
use crate::pool::{DeviceOpts, Pool};
use crate::realtime_ns;
use crate::settled;
use crate::stats::{percentile, r3, rss_bytes, CpuWindow};
use crate::tally::{
    self, connect, device_errors, dump, ms, ready, spread, tally, tool_pids, wait_delivered,
};
use serde_json::{json, Value};
use shared::jwe::CompactTemplate;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The origin's gauge of connected WebSocket devices.
const WS_CONNECTED: &str = r#"push_connected_devices{protocol="websocket"}"#;

/// The origin's count of list messages read for connecting devices.
const HELLO_READS: &str = "push_hello_list_messages_read_total";

/// Bytes the pushes made while the devices are away are larger than the
/// backlog's: a backlog copy sent again then reads as one of the wrong size.
const LATE_EXTRA_BYTES: usize = 48;

/// A `/health` probe that takes longer than this counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of `storm`.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    /// Devices, each with one subscription, which every list holds.
    #[arg(long, default_value_t = 15_000)]
    pub devices: usize,
    /// Lists.
    #[arg(long, default_value_t = 10)]
    pub lists: usize,
    /// Pushes to each list while the devices are connected and acknowledge
    /// them: the backlog every device has seen before it goes.
    #[arg(long, default_value_t = 99)]
    pub backlog: usize,
    /// TTL of every push, seconds: the backlog must still be there (and
    /// looked through) when the devices come back.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u32,
    /// Times the devices go, miss one push to each list, and come back:
    /// the first time they read the whole backlog, later ones only what
    /// came after their settled record (`--list-settle-secs`).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// How long the devices that come back may take to get their copies,
    /// seconds.
    #[arg(long, default_value_t = 600)]
    pub reconnect_secs: u64,
    /// Milliseconds from the start of a probe of the origin's `/health`
    /// (on its operator listener, `--metrics`) to the next, while the
    /// devices come back.
    #[arg(long, default_value_t = 10)]
    pub probe_ms: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub list: ListOpts,
}

/// `pushbench storm`.
pub async fn run_storm(a: StormArgs, timeout_secs: u64) -> Result<Value, String> {
    let app = App::new(&a.list.app)?;
    let metrics_url = a
        .list
        .metrics
        .clone()
        .ok_or("storm needs --metrics (the origin's operator URL)")?;
    let metrics = App::new(&metrics_url)?;
    let jwe = list_jwe(a.list.body_bytes)?;
    let late_jwe = list_jwe(a.list.body_bytes + LATE_EXTRA_BYTES)?;
    if copy_len(&late_jwe) == copy_len(&jwe) {
        return Err("the late pushes' copies are the backlog's size".into());
    }
    let rss = || a.list.origin_pid.and_then(rss_bytes);
    let t_setup = Instant::now();
    let mut problems = Vec::new();

    // 1. Devices, each with one subscription; their uaids kept for later.
    let mut pool = ready(Pool::spawn_with(
        &a.list.dev,
        a.devices,
        copy_len(&jwe),
        true,
        timeout_secs,
        |_| vec!["--with-uaids".into()],
    )?)
    .await?;
    let (t0, setup) = connect(&mut pool, &format!("connecting {} devices", a.devices)).await?;
    let connected = setup.connected;
    if setup.endpoints.is_empty() || setup.uaids.len() != setup.endpoints.len() {
        return Err(format!(
            "devices: {} endpoints, {} uaids: {}",
            setup.endpoints.len(),
            setup.uaids.len(),
            setup.first_error.unwrap_or_default()
        ));
    }
    if connected != a.devices as u64 || setup.failed > 0 {
        problems.push(format!("{connected} of {} devices connected", a.devices));
    }
    let connect_s = secs(t0, setup.finished_ns);
    eprintln!(
        "pushbench: {connected} devices in {connect_s} s; building {} lists",
        a.lists
    );

    // 2. The lists, each of every subscription.
    let t1 = realtime_ns();
    let mut lists = Vec::new();
    let mut rejected = 0;
    for _ in 0..a.lists {
        let (list, build) = build_list(&app, &setup.endpoints, a.list.chunk).await?;
        rejected += build["rejected"].as_u64().unwrap_or(0);
        lists.push(list);
    }
    let build_s = secs(t1, realtime_ns());
    if rejected > 0 {
        problems.push(format!("{rejected} list members rejected"));
    }

    // 3. The backlog, every copy received and acknowledged.
    eprintln!(
        "pushbench: lists built in {build_s} s; backlog of {} pushes to each",
        a.backlog
    );
    let backlog = backlog(&a, &app, &metrics, &lists, &jwe, &mut pool, connected).await?;
    problems.extend(backlog["problem"].as_str().map(str::to_owned));
    let rss_after_backlog = rss();

    // 4. Every device goes.
    let t4 = realtime_ns();
    drop(pool);
    let until = Instant::now() + Duration::from_secs(30);
    let mut left = None;
    while Instant::now() < until {
        left = settled::read_series(&metrics, WS_CONNECTED).await?;
        if left == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if left != Some(0) {
        problems.push(format!(
            "{left:?} devices still connected 30 s after they left"
        ));
    }
    let gone_ms = ms(t4, realtime_ns());

    // 5 and 6, `--rounds` times: one push to each list while they are
    // away, then everyone comes back at once (and goes again).
    let mut rounds = Vec::new();
    let mut late_delivered = Vec::new();
    let mut statuses_add_up = true;
    for round in 1..=a.rounds {
        let t5 = realtime_ns();
        let mut push_201_ms = Vec::new();
        let mut late = Vec::new();
        for list in &lists {
            let (resp, path) = push_list_ttl(&app, list, &late_jwe, a.ttl_secs).await?;
            push_201_ms.push(ms(resp.send_ns, resp.done_ns));
            late.push(path);
        }
        let mut stored = 0;
        for path in &late {
            let (s, _) = poll_status(&app, path, 60.0, |s| s["fanout_finished"] == true).await?;
            if s["fanout_finished"] != true {
                problems.push(format!(
                    "round {round}: a push while the devices were away: {s}"
                ));
            }
            stored += s["stored"].as_u64().unwrap_or(0);
        }
        let late_fig = json!({
            "push_201_ms": push_201_ms,
            "fanout_finished_ms": ms(t5, realtime_ns()),
            "stored": stored,
        });
        eprintln!(
            "pushbench: round {round}: set up in {} s; {connected} devices come back",
            r3(t_setup.elapsed().as_secs_f64())
        );
        let mut dev = a.list.dev.clone();
        dev.src_base = dev
            .src_base
            .saturating_add(setup_workers(&a.list.dev, a.devices));
        let rss_before = rss();
        let read_before = settled::read_series(&metrics, HELLO_READS).await?;
        let (mut reconnect, health) = reconnect(
            &a,
            &dev,
            &metrics,
            &metrics_url,
            &setup.uaids,
            copy_len(&late_jwe),
            timeout_secs,
        )
        .await?;
        let read_after = settled::read_series(&metrics, HELLO_READS).await?;
        let rss_after = rss();
        problems.extend(
            reconnect["problem"]
                .as_str()
                .map(|p| format!("round {round}: {p}")),
        );
        if let Some(m) = reconnect.as_object_mut() {
            m.remove("problem");
        }
        let mut status_final = Vec::new();
        let back = reconnect["resumed"].as_u64().unwrap_or(0);
        for path in &late {
            let (s, _) = poll_status(&app, path, 5.0, |s| delivered_to_all(s, back)).await?;
            if !delivered_to_all(&s, back) {
                problems.push(format!(
                    "round {round}: a push while the devices were away, at the end: {s}"
                ));
            }
            status_final.push(s);
        }
        statuses_add_up &= status_final.iter().all(adds_up);
        late_delivered.push(
            status_final
                .iter()
                .map(|s| s["delivered"].clone())
                .collect::<Vec<Value>>(),
        );
        let list_messages_read = read_after
            .zip(read_before)
            .map(|(a, b)| a.saturating_sub(b));
        rounds.push(json!({
            "late_pushes": late_fig,
            "reconnect": reconnect,
            "health": health,
            "list_messages_read": list_messages_read,
            "list_messages_read_per_device": list_messages_read
                .map(|n| r3(n as f64 / connected.max(1) as f64)),
            "origin_rss_bytes": { "before": rss_before, "after": rss_after },
        }));
    }
    let setup_s = r3(t_setup.elapsed().as_secs_f64());
    Ok(json!({
        "cmd": "storm",
        "correct": problems.is_empty(),
        "problems": problems,
        "devices": a.devices,
        "devices_connected": connected,
        "lists": a.lists,
        "backlog": a.backlog,
        "jwe_bytes": jwe.as_str().len(),
        "late_jwe_bytes": late_jwe.as_str().len(),
        "setup_s": setup_s,
        "setup": {
            "connect_s": connect_s,
            "build_lists_s": build_s,
            "backlog_s": backlog["elapsed_s"],
            "devices_gone_ms": gone_ms,
        },
        "backlog_pushes": backlog,
        "rounds": rounds,
        "origin_rss_after_backlog": rss_after_backlog,
        "late_delivered": late_delivered,
        "statuses_add_up": statuses_add_up,
        "first_error": setup.first_error,
    }))
}

/// Seconds from realtime ns `a` to `b`, rounded.
fn secs(a: u64, b: u64) -> f64 {
    r3(b.saturating_sub(a) as f64 / 1e9)
}

/// The worker processes [`Pool::spawn`] starts for `devices` devices.
fn setup_workers(dev: &DeviceOpts, devices: usize) -> u8 {
    let n = devices
        .div_ceil(dev.per_worker.max(1))
        .max(dev.workers)
        .max(1);
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// Pushes `--backlog` times to each list, a push to every list at a time,
/// and waits for each copy of one round before the next (the devices
/// acknowledge them at once); then for the origin to commit every
/// acknowledgement. Its figures, with `problem` if something was amiss.
async fn backlog(
    a: &StormArgs,
    app: &App,
    metrics: &App,
    lists: &[String],
    jwe: &CompactTemplate,
    pool: &mut Pool,
    connected: u64,
) -> Result<Value, String> {
    let t0 = realtime_ns();
    let base = settled::acks(Some(metrics)).await?;
    let per_round = connected * lists.len() as u64;
    let drain = Duration::from_secs(a.list.drain_secs);
    let mut delivered = vec![0u64; pool.len()];
    let (mut round_ms, mut last, mut over) = (Vec::new(), Vec::new(), 0);
    for r in 0..a.backlog {
        let r0 = realtime_ns();
        last.clear();
        for list in lists {
            let (_, status) = push_list_ttl(app, list, jwe, a.ttl_secs).await?;
            last.push(status);
        }
        let until = tokio::time::Instant::now() + drain;
        wait_delivered(pool, &mut delivered, per_round, until).await?;
        let got: u64 = delivered.iter().sum();
        if got < per_round {
            return Err(format!(
                "backlog round {}: {got} of {per_round} copies after {} s",
                r + 1,
                drain.as_secs()
            ));
        }
        over += got - per_round;
        round_ms.push(ms(r0, realtime_ns()));
        // The workers forget this round's copies (their memory stays
        // small) before the next round's pushes.
        pool.send_all("clear")?;
        pool.gather("cleared", |_, _| {}).await?;
        delivered.fill(0);
        if (r + 1) % 10 == 0 || r + 1 == a.backlog {
            eprintln!(
                "pushbench: backlog: {} of {} pushes to each list, {} s",
                r + 1,
                a.backlog,
                secs(t0, realtime_ns())
            );
        }
    }
    let received_s = secs(t0, realtime_ns());
    let total = per_round * a.backlog as u64;
    let until = tokio::time::Instant::now() + drain;
    let settled = settled::wait(metrics, base.acked + total, until).await?;
    let acked = settled::acks(Some(metrics)).await?.acked - base.acked;
    let mut last_ok = true;
    for path in &last {
        let (s, _) = poll_status(app, path, 10.0, |s| delivered_to_all(s, connected)).await?;
        last_ok &= delivered_to_all(&s, connected);
    }
    let mut sorted = round_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let problem = (!settled || acked != total || over > 0 || !last_ok).then(|| {
        format!(
            "backlog: {acked} of {total} copies acknowledged (settled {settled}), \
             {over} copies over, last round's statuses right: {last_ok}"
        )
    });
    Ok(json!({
        "pushes": a.backlog * lists.len(),
        "copies": total,
        "acked": acked,
        "copies_over": over,
        "elapsed_s": secs(t0, realtime_ns()),
        "received_s": received_s,
        "copies_per_s": r3(total as f64 / received_s.max(1e-9)),
        "round_ms": {
            "p50": percentile(&sorted, 50.0),
            "p99": percentile(&sorted, 99.0),
            "max": sorted.last(),
        },
        "last_round_delivered_to_all": last_ok,
        "problem": problem,
    }))
}

/// Every device says `hello` again with its uaid at once, and takes the
/// copies waiting from each list, while `/health` is probed: the
/// reconnect's figures (with `problem` if something was amiss), and the
/// probes'.
async fn reconnect(
    a: &StormArgs,
    dev: &DeviceOpts,
    metrics: &App,
    metrics_url: &str,
    uaids: &[Member],
    copy_bytes: usize,
    timeout_secs: u64,
) -> Result<(Value, Value), String> {
    let n = uaids.len();
    let mut dev = dev.clone();
    dev.workers = setup_workers(&dev, n).into();
    let dir = std::env::temp_dir().join(format!("pushbench-storm-{}", std::process::id()));
    let back: Vec<&Member> = uaids.iter().collect();
    let files = write_uaid_files(&dir, &back, dev.workers)?;
    let mut pool = ready(Pool::spawn_with(
        &dev,
        n,
        copy_bytes,
        false,
        timeout_secs,
        |k| {
            vec![
                format!("--uaids={}", files[k].display()),
                "--copies-per-device".into(),
            ]
        },
    )?)
    .await?;
    let _ = std::fs::remove_dir_all(&dir);
    let expected = (n * a.lists) as u64;
    let base = settled::acks(Some(metrics)).await?;
    let probes = Prober::start(metrics_url, Duration::from_millis(a.probe_ms))?;
    let cpu = CpuWindow::start(a.list.origin_pid, tool_pids(&pool));
    let (r0, mut back_setup) = connect(&mut pool, &format!("reconnecting {n} devices")).await?;
    // Copies that came during the setup were in `D` lines no one read.
    pool.send_all("count")?;
    let mut delivered = vec![0u64; pool.len()];
    let until = tokio::time::Instant::now() + Duration::from_secs(a.reconnect_secs);
    wait_delivered(&mut pool, &mut delivered, expected, until).await?;
    let window = cpu.finish();
    let drain = tokio::time::Instant::now() + Duration::from_secs(a.list.drain_secs);
    let settled = settled::wait(metrics, base.acked + expected, drain).await?;
    let settled_ms = ms(r0, realtime_ns());
    let whole = cpu.finish();
    let health = probes.finish();
    let (records, ends) = dump(&mut pool).await?;
    drop(pool);
    let (copies, distinct, repeated, last) = tally(records.iter().flatten());
    // Devices that come back do not register.
    let mut phases = back_setup.phase_figures();
    if let Some(m) = phases.as_object_mut() {
        m.remove("register");
    }
    // Copies of the backlog's size: backlog copies sent again.
    let again = tally::sum(&ends, "bad_payload");
    let mut per_device = BTreeMap::<u64, u64>::new();
    for e in &ends {
        for (k, v) in e["copies_per_device"].as_object().into_iter().flatten() {
            let k = k.parse().map_err(|_| format!("worker end {e}"))?;
            *per_device.entry(k).or_insert(0) += v.as_u64().unwrap_or(0);
        }
    }
    let want = a.lists as u64;
    let missing: u64 = per_device.range(..want).map(|(_, d)| d).sum();
    let over: u64 = per_device.range(want + 1..).map(|(_, d)| d).sum();
    let errors = device_errors(&ends);
    let duplicates = repeated + again;
    let problem = (back_setup.connected != n as u64
        || duplicates > 0
        || missing > 0
        || over > 0
        || errors > 0
        || !settled)
        .then(|| {
            format!(
                "reconnect: {} of {n} resumed, {missing} devices missing copies, {over} with too \
                 many, {repeated} copies twice, {again} backlog copies again, {errors} device \
                 errors, acknowledgements settled {settled}",
                back_setup.connected
            )
        });
    let mut r = json!({
        "devices": n,
        "resumed": back_setup.connected,
        "failed": back_setup.failed,
        "all_connected_ms": ms(r0, back_setup.finished_ns),
        "phases": phases,
        "start_to_last_copy_ms": ms(r0, last),
        "copies": copies,
        "expected_copies": expected,
        "distinct": distinct,
        "duplicates": duplicates,
        "copies_twice": repeated,
        "backlog_copies_again": again,
        "missing_devices": missing,
        "devices_with_too_many": over,
        "copies_per_device": per_device,
        "arrivals_after_start": spread(r0, records.iter().flatten()),
        "device_errors": errors,
        "first_error": back_setup.first_error,
        "acks_settled": settled,
        "start_to_acks_settled_ms": settled_ms,
        "whole": whole,
        "problem": problem,
    });
    r.as_object_mut().expect("object").extend(window);
    Ok((r, health))
}

/// `GET /health` of the origin's operator listener, over and over from a
/// thread of its own (so that the load tool's work does not delay it),
/// each on a new connection, as a load balancer checks.
struct Prober {
    stop: Arc<AtomicBool>,
    /// Each probe's milliseconds, and whether it was answered `200`.
    thread: std::thread::JoinHandle<Vec<(f64, bool)>>,
}

impl Prober {
    /// Starts probing `url` every `every` (from one probe's start to the next's).
    fn start(url: &str, every: Duration) -> Result<Prober, String> {
        let app = App::new(url)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let mut probes = Vec::new();
                while !stopped.load(Ordering::Relaxed) {
                    let t = tokio::time::Instant::now();
                    let r = tokio::time::timeout(
                        PROBE_TIMEOUT,
                        app.request("GET", "/health", &[], b""),
                    )
                    .await;
                    let ok = matches!(r, Ok(Ok(ref r)) if r.status == 200);
                    probes.push((t.elapsed().as_secs_f64() * 1e3, ok));
                    tokio::time::sleep_until(t + every).await;
                }
                probes
            })
        });
        Ok(Prober { stop, thread })
    }

    /// Stops probing: how many probes, how many failed, and their latency.
    fn finish(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        let probes = self.thread.join().unwrap_or_default();
        let mut v: Vec<f64> = probes.iter().map(|p| p.0).collect();
        v.sort_by(f64::total_cmp);
        let p = |x| percentile(&v, x).map(r3);
        json!({
            "probes": probes.len(),
            "failed": probes.iter().filter(|p| !p.1).count(),
            "p50_ms": p(50.0),
            "p99_ms": p(99.0),
            "max_ms": v.last().copied().map(r3),
            "over_100_ms": v.iter().filter(|&&x| x > 100.0).count(),
        })
    }
}
