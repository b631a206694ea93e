//! `pushbench list`: one push to a list of every connected device against single pushes to each.

use crate::app_client::{path_of, App};
use crate::bodies::{aes128gcm_body, copy_len, list_jwe};
use crate::http::{self, Plan};
use crate::list_api::{adds_up, build_list, delivered_to_all, poll_status, push_list, ListOpts};
use crate::pool::Pool;
use crate::settled::{self, per_copy, Whole};
use crate::stats::{percentile, r3, CpuWindow};
use crate::tally::{
    self, connect_with_endpoints, count, device_errors, dump, ms, records_after, seen, spread,
    tally, tool_pids, wait_delivered, wait_more,
};
use serde_json::{json, Value};
use shared::jwe::CompactTemplate;
use std::sync::Arc;
use std::time::Duration;

/// Options of `list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Devices, all connected, all in the list.
    #[arg(long)]
    pub devices: usize,
    /// Keep-alive connections of the single pushes compared with.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Size of the aes128gcm body of the single pushes, in bytes.
    #[arg(long, default_value_t = 2048)]
    pub single_body_bytes: usize,
    /// Only the list push (for profiling): no single pushes after it.
    #[arg(long)]
    pub list_only: bool,
    /// List pushes after the first, one after another to the same devices;
    /// the result gives the median, fastest and slowest of all of them
    /// (`list_repeats`), as one push is subject to this machine's noise.
    #[arg(long, default_value_t = 0)]
    pub list_repeats: usize,
    /// Milliseconds to wait after the list is built before the first push
    /// (the origin may still be settling the devices' setup).
    #[arg(long, default_value_t = 0)]
    pub settle_ms: u64,
    /// Before the first push, switch every device's socket to delayed ACKs
    /// (`TCP_QUICKACK` 0): the state a Linux device's socket is in once it
    /// has acknowledged a notification. A device that has just registered
    /// acknowledges the first copy's segment at once instead, and on
    /// loopback that ACK is built and taken in on the origin's thread; this
    /// shows how much of the first push that costs. A diagnosis, not the
    /// figure: the result's `devices_delay_acks` counts the sockets set.
    #[arg(long)]
    pub devices_delay_acks: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub list: ListOpts,
}

/// `pushbench list`.
pub async fn run_list(a: ListArgs, timeout_secs: u64) -> Result<Value, String> {
    let app = App::new(&a.list.app)?;
    let metrics = a.list.metrics.as_deref().map(App::new).transpose()?;
    let jwe = list_jwe(a.list.body_bytes)?;
    let single_body = aes128gcm_body(a.single_body_bytes)?;
    let (mut pool, setup) =
        connect_with_endpoints(&a.list.dev, a.devices, copy_len(&jwe), timeout_secs).await?;
    let (connected, failed, endpoints) = (setup.connected, setup.failed, setup.endpoints);
    eprintln!("pushbench: {connected} devices ready ({failed} failed); building the list");
    let (list, build) = build_list(&app, &endpoints, a.list.chunk).await?;
    tokio::time::sleep(Duration::from_millis(a.settle_ms)).await;
    let mut delayed_sockets = None;
    if a.devices_delay_acks {
        pool.send_all("delay-acks")?;
        let counts = pool.gather("delayed", |_, _| {}).await?;
        let n: u64 = counts.iter().filter_map(|c| c.parse::<u64>().ok()).sum();
        if n < connected {
            eprintln!("pushbench: delayed ACKs set on {n} of {connected} device sockets");
        }
        delayed_sockets = Some(n);
    }

    // 1. One push to the list.
    let tool_pids = tool_pids(&pool);
    let mut delivered = vec![0u64; pool.len()];
    eprintln!("pushbench: list built; pushing");
    let drain = Duration::from_secs(a.list.drain_secs);
    let base = settled::acks(metrics.as_ref()).await?;
    let cpu = CpuWindow::start(a.list.origin_pid, tool_pids.clone());
    let (resp, status_path) = push_list(&app, &list, &jwe).await?;
    wait_delivered(
        &mut pool,
        &mut delivered,
        connected,
        tokio::time::Instant::now() + drain,
    )
    .await?;
    let list_cpu = cpu.finish();
    let whole = Whole::wait(metrics.as_ref(), &a.list.dev, base, connected, drain, &cpu).await?;
    let (status, _) =
        poll_status(&app, &status_path, 5.0, |s| delivered_to_all(s, connected)).await?;
    let (records, ends1) = dump(&mut pool).await?;
    let (copies, distinct, dups, last) = tally(records.iter().flatten());
    let bad1 = tally::sum(&ends1, "bad_payload");
    let list_from_post_ms = ms(resp.send_ns, last);
    let list_from_201_ms = ms(resp.done_ns, last);
    let mut list_fig = json!({
        "members": build["members"],
        "push_201_ms": ms(resp.send_ns, resp.done_ns),
        "post_to_last_delivery_ms": list_from_post_ms,
        "created_to_last_delivery_ms": list_from_201_ms,
        "deliveries_per_s": r3(distinct as f64 / (list_from_post_ms / 1e3).max(1e-9)),
        "copies": copies,
        "devices_with_copy": distinct,
        "duplicates": dups,
        "missing": connected.saturating_sub(distinct),
        "arrivals_after_post": spread(resp.send_ns, records.iter().flatten()),
        "bad_payload": bad1,
        "status": status,
        "status_adds_up": adds_up(&status),
        "devices_delay_acks": delayed_sockets,
        "origin_cpu_us_per_copy": per_copy(&list_cpu, connected),
        "whole": whole.fig(connected),
    });
    list_fig.as_object_mut().expect("object").extend(list_cpu);

    // 1b. More pushes to the list, for the spread of the figure.
    let mut after = Round {
        seen: seen(&records),
        bad_total: bad1,
    };
    let mut rounds = vec![list_from_201_ms];
    let mut answered = vec![ms(resp.send_ns, resp.done_ns)];
    let mut window_us = vec![list_fig["origin_cpu_us_per_copy"].as_f64()];
    let mut whole_us = vec![whole.per_copy(connected)];
    let mut round_problems = Vec::new();
    for k in 0..a.list_repeats {
        let r = list_round(
            &app,
            &list,
            &jwe,
            &mut pool,
            &mut delivered,
            &after,
            connected,
            drain,
            (&a.list, &tool_pids, metrics.as_ref()),
        )
        .await?;
        window_us.push(r.window_us);
        whole_us.push(r.whole_us);
        eprintln!(
            "pushbench: list push {}: last copy {} ms after the 201",
            k + 2,
            r.from_201_ms
        );
        rounds.push(r.from_201_ms);
        answered.push(r.push_201_ms);
        round_problems.extend(r.problem);
        after = r.after;
    }
    if a.list_repeats > 0 {
        let mut sorted = rounds.clone();
        sorted.sort_by(f64::total_cmp);
        list_fig.as_object_mut().expect("object").insert(
            "list_repeats".into(),
            json!({
                "pushes": rounds.len(),
                "created_to_last_delivery_ms": rounds,
                "push_201_ms": answered,
                "push_201_max_ms": answered.iter().copied().fold(0.0, f64::max),
                "median_ms": percentile(&sorted, 50.0).map(r3),
                "min_ms": sorted.first(),
                "max_ms": sorted.last(),
                "origin_cpu_us_per_copy": window_us,
                "origin_cpu_us_per_copy_median": median(&window_us),
                "whole_origin_cpu_us_per_copy": whole_us,
                "whole_origin_cpu_us_per_copy_median": median(&whole_us),
                "problems": round_problems,
            }),
        );
    }

    // Correctness of the list pushes, apart from speed: each device one
    // copy of each, every count right.
    let mut problems = Vec::new();
    if connected != a.devices as u64 || failed > 0 {
        problems.push(format!("{connected} of {} devices connected", a.devices));
    }
    if distinct != connected || dups > 0 || bad1 > 0 || !adds_up(&status) {
        problems.push(format!(
            "list push: {distinct} of {connected} devices got it, {dups} duplicates, {bad1} bad, status {status}"
        ));
    }
    problems.extend(round_problems);

    if a.list_only {
        // Connections close after a pause, apart from the push (for profiling).
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(pool);
        return Ok(json!({
            "cmd": "list",
            "correct": problems.is_empty(),
            "problems": problems,
            "devices": a.devices,
            "ack_delay_ms": a.list.dev.ack_delay_ms,
            "acks": !a.list.dev.no_acks,
            "plain_devices": a.list.dev.plain,
            "list": list_fig,
            "list_ms": list_from_post_ms,
        }));
    }

    // 2. The same devices by single pushes: first bodies made once (the
    // service's own cost), then as an application server does it with a Web
    // Push library (RFC 8291 encryption and a VAPID JWT for every push).
    pool.send_all(&format!("expect {}", single_body.len()))?;
    // Not one single push before every worker checks against the new size:
    // a notification read first would be counted bad.
    pool.gather("expecting", |k, line| count(&mut delivered, k, line))
        .await?;
    eprintln!(
        "pushbench: list push delivered in {list_from_post_ms} ms; now {} single pushes",
        endpoints.len()
    );
    let paths: Vec<String> = endpoints.iter().map(|(_, url)| path_of(url)).collect();
    let mut singles = Vec::new();
    for as_apps in [false, true] {
        let app_side = as_apps
            .then(|| http::AppSide::new(&a.list.app, a.single_body_bytes))
            .transpose()?;
        let plan = Arc::new(Plan {
            addrs: vec![app.addr],
            host: app.host.clone(),
            paths: paths.clone(),
            body: single_body.clone(),
            pushes: endpoints.len(),
            concurrency: a.concurrency,
            rate: None,
            app_side,
        });
        let phase = single_phase(
            &mut pool,
            plan,
            &mut delivered,
            &after,
            drain,
            (&a.list, metrics.as_ref()),
            &tool_pids,
        )
        .await?;
        if as_apps {
            eprintln!(
                "pushbench: singles as applications send them: {} ms",
                phase.ms
            );
        } else {
            eprintln!(
                "pushbench: singles with ready bodies: {} ms; now as applications send them",
                phase.ms
            );
        }
        after = phase.after.clone();
        singles.push(phase);
    }
    drop(pool);
    let (ready, as_apps) = (&singles[0], &singles[1]);
    let ratio = ready.ms / list_from_post_ms.max(1e-3);
    let ratio_apps = as_apps.ms / list_from_post_ms.max(1e-3);
    for p in &singles {
        problems.extend(p.problem.clone());
    }
    Ok(json!({
        "cmd": "list",
        "correct": problems.is_empty(),
        "problems": problems,
        "devices": a.devices,
        "devices_connected": connected,
        "devices_failed": failed,
        "jwe_bytes": jwe.as_str().len(),
        "build": build,
        "list": list_fig,
        "single": ready.fig,
        "single_as_apps": as_apps.fig,
        "list_ms": list_from_post_ms,
        "single_ms": ready.ms,
        "single_as_apps_ms": as_apps.ms,
        "ratio": r3(ratio),
        "ratio_ok": ratio >= 20.0,
        "ratio_as_apps": r3(ratio_apps),
        "ratio_as_apps_ok": ratio_apps >= 20.0,
        "first_error": setup.first_error,
    }))
}

/// Where the devices' reports stood after a round of pushes, so that the
/// next round counts only its own.
#[derive(Clone)]
struct Round {
    /// Records per worker.
    seen: Vec<usize>,
    /// Bad payloads over all workers.
    bad_total: u64,
}

/// A list push after the first.
struct ListRound {
    from_201_ms: f64,
    /// From the POST to its `201`.
    push_201_ms: f64,
    /// The origin's CPU per copy, µs: until the last copy arrived, and
    /// until every acknowledgement was settled.
    window_us: Option<f64>,
    whole_us: Option<f64>,
    after: Round,
    problem: Option<String>,
}

/// Pushes to the list once more and checks that every device got exactly
/// one copy of this push and that its status adds up.
#[allow(clippy::too_many_arguments)]
async fn list_round(
    app: &App,
    list: &str,
    jwe: &CompactTemplate,
    pool: &mut Pool,
    delivered: &mut [u64],
    before: &Round,
    connected: u64,
    drain: Duration,
    (opts, tool_pids, metrics): (&ListOpts, &[u32], Option<&App>),
) -> Result<ListRound, String> {
    let base = settled::acks(metrics).await?;
    let cpu = CpuWindow::start(opts.origin_pid, tool_pids.to_vec());
    let (resp, status_path) = push_list(app, list, jwe).await?;
    wait_more(pool, delivered, &before.seen, connected, drain).await?;
    let window = cpu.finish();
    let whole = Whole::wait(metrics, &opts.dev, base, connected, drain, &cpu).await?;
    let (status, _) =
        poll_status(app, &status_path, 5.0, |s| delivered_to_all(s, connected)).await?;
    let (records, ends) = dump(pool).await?;
    let (_, distinct, dups, last) = tally(records_after(&records, &before.seen));
    let bad_total = tally::sum(&ends, "bad_payload");
    let bad = bad_total - before.bad_total;
    let problem = (distinct != connected || dups > 0 || bad > 0 || !adds_up(&status))
        .then(|| format!("a repeated list push: {distinct} of {connected} devices got it, {dups} duplicates, {bad} bad, status {status}"));
    Ok(ListRound {
        from_201_ms: ms(resp.done_ns, last),
        push_201_ms: ms(resp.send_ns, resp.done_ns),
        window_us: per_copy(&window, connected),
        whole_us: whole.per_copy(connected),
        after: Round {
            seen: seen(&records),
            bad_total,
        },
        problem,
    })
}

/// One round of single pushes to every device, and what the devices saw.
struct SinglePhase {
    fig: Value,
    ms: f64,
    after: Round,
    problem: Option<String>,
}

async fn single_phase(
    pool: &mut Pool,
    plan: Arc<Plan>,
    delivered: &mut [u64],
    before: &Round,
    drain: Duration,
    (opts, metrics): (&ListOpts, Option<&App>),
    tool_pids: &[u32],
) -> Result<SinglePhase, String> {
    let as_apps = plan.app_side.is_some();
    let concurrency = plan.concurrency;
    let body_bytes = plan.body.len();
    let base = settled::acks(metrics).await?;
    let cpu = CpuWindow::start(opts.origin_pid, tool_pids.to_vec());
    let outcome = {
        let pushers = tokio::spawn(http::run(plan));
        tokio::pin!(pushers);
        loop {
            tokio::select! {
                o = &mut pushers => break o.map_err(|e| format!("pushers: {e}"))?,
                l = pool.next() => {
                    let (k, line) = l?;
                    count(delivered, k, &line);
                }
            }
        }
    };
    let ok = outcome.sent.iter().filter(|s| s.status == 201).count() as u64;
    wait_more(pool, delivered, &before.seen, ok, drain).await?;
    let window = cpu.finish();
    let whole = Whole::wait(metrics, &opts.dev, base, ok, drain, &cpu).await?;
    let cpu = window;
    let (records, ends) = dump(pool).await?;
    let new = || records_after(&records, &before.seen);
    let (copies, distinct, dups, last) = tally(new());
    let bad_total = tally::sum(&ends, "bad_payload");
    let bad = bad_total - before.bad_total;
    let errors = device_errors(&ends);
    let first_send = outcome.sent.iter().map(|s| s.send_ns).min().unwrap_or(0);
    let single_ms = ms(first_send, last);
    let mut fig = json!({
        "as_applications_do": as_apps,
        "pushes": outcome.sent.len(),
        "status_201": ok,
        "io_errors": outcome.io_errors,
        "concurrency": concurrency,
        "body_bytes": body_bytes,
        "first_post_to_last_delivery_ms": single_ms,
        "deliveries_per_s": r3(distinct as f64 / (single_ms / 1e3).max(1e-9)),
        "copies": copies,
        "distinct": distinct,
        "arrivals_after_first_post": spread(first_send, new()),
        "duplicates": dups,
        "missing": ok.saturating_sub(distinct),
        "bad_payload": bad,
        "device_errors": errors,
        "first_error": outcome.first_error,
        "origin_cpu_us_per_push": per_copy(&cpu, ok),
        "whole": whole.fig(ok),
    });
    fig.as_object_mut().expect("object").extend(cpu);
    let problem = (distinct != ok || ok != outcome.sent.len() as u64 || dups > 0 || bad > 0 || errors > 0)
        .then(|| format!(
            "single pushes{}: {distinct} of {ok} delivered ({} sent), {dups} duplicates, {bad} bad, {errors} device errors",
            if as_apps { " as applications" } else { "" },
            outcome.sent.len()
        ));
    Ok(SinglePhase {
        fig,
        ms: single_ms,
        after: Round {
            seen: seen(&records),
            bad_total,
        },
        problem,
    })
}

/// The median of the figures present.
fn median(v: &[Option<f64>]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().flatten().copied().collect();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0).map(r3)
}
