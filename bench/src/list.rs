//! `pushbench list` and `pushbench offline-list`: one push to a list of
//! every device (a compact JWE with an empty encrypted-key part, each member
//! getting its own 24-byte key), against single pushes to the same devices;
//! and a list of many offline subscriptions, of which some reconnect.

use crate::http::{self, Plan};
use crate::pool::{DeviceOpts, Pool};
use crate::push::{app_addr, path_of};
use crate::realtime_ns;
use crate::stats::{r3, CpuWindow};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Options both list commands share.
#[derive(Debug, Clone, clap::Args)]
pub struct ListOpts {
    /// The application API's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub app: String,
    /// Size of the compact JWE pushed to the list, in bytes.
    #[arg(long, default_value_t = 2048)]
    pub body_bytes: usize,
    /// Members per request when building the list (create, then PATCHes).
    #[arg(long, default_value_t = 50_000)]
    pub chunk: usize,
    /// The origin's process id, to report its CPU time.
    #[arg(long)]
    pub origin_pid: Option<u32>,
    /// How long to wait for deliveries, in seconds.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
}

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
    #[command(flatten)]
    #[allow(missing_docs)]
    pub dev: DeviceOpts,
}

/// Options of `offline-list`.
#[derive(Debug, Clone, clap::Args)]
pub struct OfflineArgs {
    /// Subscriptions made (each by a device that registers and disconnects).
    #[arg(long)]
    pub members: usize,
    /// Devices that reconnect after the push (hello with their uaid).
    #[arg(long, default_value_t = 15_000)]
    pub reconnect: usize,
    /// Worker processes making the subscriptions.
    #[arg(long, default_value_t = 4)]
    pub create_workers: usize,
    /// Crash test: right after the push's `201`, while its fan-out runs,
    /// kill the origin (`--origin-pid`) with SIGKILL, run this shell command
    /// to start it again on the same addresses and data, then reconnect
    /// every member, `--reconnect` at a time: each must get its copy.
    #[arg(long)]
    pub crash_restart: Option<String>,
    /// How long the restarted origin may take to be ready, in seconds.
    #[arg(long, default_value_t = 600)]
    pub restart_timeout_secs: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub list: ListOpts,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub dev: DeviceOpts,
}

/// Base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..=c.len() {
            s.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
        }
    }
    s
}

/// A compact JWE (`A128KW`/`A128GCM`) with an empty encrypted-key part, as
/// close to `len` bytes as the encoding allows (never more).
pub fn jwe_compact(len: usize) -> Result<String, String> {
    let head = format!(
        "{}..{}.",
        b64url(br#"{"alg":"A128KW","enc":"A128GCM"}"#),
        b64url(&[7; 12])
    );
    let tag = format!(".{}", b64url(&[9; 16]));
    let room = len
        .checked_sub(head.len() + tag.len())
        .filter(|r| *r >= 4)
        .ok_or_else(|| {
            format!(
                "--body-bytes must be at least {}",
                head.len() + tag.len() + 4
            )
        })?;
    let n = room * 3 / 4;
    let ct: Vec<u8> = (0..n).map(|i| (i * 31 + 5) as u8).collect();
    Ok(format!("{head}{}{tag}", b64url(&ct)))
}

/// A member's 24-byte encrypted key.
fn member_key(i: usize) -> String {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&(i as u64).to_be_bytes());
    k[8..]
        .iter_mut()
        .enumerate()
        .for_each(|(j, b)| *b = j as u8);
    b64url(&k)
}

/// A response: status, headers, body; when the request was written and
/// when the response was complete (realtime ns).
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    send_ns: u64,
    done_ns: u64,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The application API.
struct App {
    addr: SocketAddr,
    host: String,
}

impl App {
    /// One request on a new connection (`Connection: close`).
    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Resp, String> {
        self.try_request(method, path, headers, body)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))
    }

    async fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        let mut s = TcpStream::connect(self.addr).await?;
        s.set_nodelay(true)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let send_ns = realtime_ns();
        s.write_all(req.as_bytes()).await?;
        s.write_all(body).await?;
        let mut buf = Vec::with_capacity(8192);
        loop {
            buf.reserve(8192);
            let eof = s.read_buf(&mut buf).await? == 0;
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hs);
            let head = match r.parse(&buf).map_err(io::Error::other)? {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial if !eof => continue,
                httparse::Status::Partial => return Err(io::ErrorKind::UnexpectedEof.into()),
            };
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).trim().to_owned(),
                    )
                })
                .collect();
            let status = r.code.unwrap_or(0);
            let len: Option<usize> = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok());
            let chunked = headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
            });
            let complete = |b: &[u8]| match len {
                Some(n) => b.len() >= head + n,
                None if chunked => b[head..].windows(5).any(|w| w == b"0\r\n\r\n"),
                None => false,
            };
            let mut eof = eof;
            while !complete(&buf) && !eof {
                buf.reserve(8192);
                eof = s.read_buf(&mut buf).await? == 0;
            }
            let done_ns = realtime_ns();
            let mut body = buf[head..].to_vec();
            if chunked {
                body = dechunk(&body);
            } else if let Some(n) = len {
                body.truncate(n);
            }
            return Ok(Resp {
                status,
                headers,
                body,
                send_ns,
                done_ns,
            });
        }
    }

    /// A JSON document from a GET.
    async fn get_json(&self, path: &str) -> Result<Value, String> {
        let r = self.request("GET", path, &[], b"").await?;
        serde_json::from_slice(&r.body).map_err(|e| format!("GET {path}: status {}: {e}", r.status))
    }
}

/// The body of a chunked transfer coding.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(
            std::str::from_utf8(&b[..eol])
                .unwrap_or("0")
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if n == 0 || b.len() < eol + 2 + n {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[(eol + 4 + n).min(b.len())..];
    }
    out
}

/// Builds one list of `endpoints` (create, then PATCHes of `chunk`
/// members): its path, and figures.
async fn build_list(
    app: &App,
    endpoints: &[(usize, String)],
    chunk: usize,
) -> Result<(String, Value), String> {
    let t0 = realtime_ns();
    let doc = |part: &[(usize, String)]| {
        let mut s = String::with_capacity(part.len() * 160);
        s.push('{');
        for (n, (i, url)) in part.iter().enumerate() {
            if n > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                r#""{url}":{{"encrypted_key":"{}"}}"#,
                member_key(*i)
            ));
        }
        s.push('}');
        s
    };
    let mut chunks = endpoints.chunks(chunk.max(1));
    let first = chunks.next().unwrap_or(&[]);
    let r = app
        .request(
            "POST",
            "/lists/0",
            &[("Content-Type", "application/push-aggregation+json")],
            doc(first).as_bytes(),
        )
        .await?;
    let create_ms = (r.done_ns - r.send_ns) as f64 / 1e6;
    if r.status != 201 {
        return Err(format!(
            "list create: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let list = path_of(r.header("location").ok_or("list create: no Location")?);
    let mut patch_ms = Vec::new();
    let mut rejected = 0u64;
    for part in chunks {
        let r = app
            .request(
                "PATCH",
                &list,
                &[("Content-Type", "application/merge-patch+json")],
                doc(part).as_bytes(),
            )
            .await?;
        if r.status != 200 && r.status != 204 {
            return Err(format!(
                "list PATCH: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        if let Ok(v) = serde_json::from_slice::<Value>(&r.body) {
            rejected += count_rejected(&v);
        }
        patch_ms.push((r.done_ns - r.send_ns) as f64 / 1e6);
        eprintln!(
            "pushbench: list: {} members added",
            first.len() + patch_ms.len() * chunk
        );
    }
    let secs = (realtime_ns() - t0) as f64 / 1e9;
    let max_patch = patch_ms.iter().copied().fold(0.0, f64::max);
    let figures = json!({
        "members": endpoints.len(),
        "build_s": r3(secs),
        "members_per_s": r3(endpoints.len() as f64 / secs.max(1e-9)),
        "create_ms": r3(create_ms),
        "patches": patch_ms.len(),
        "max_patch_ms": r3(max_patch),
        "rejected": rejected,
    });
    Ok((list, figures))
}

/// Rejected members in a PATCH response (whatever its shape: the entries of
/// a `rejected` object or array).
fn count_rejected(v: &Value) -> u64 {
    match &v["rejected"] {
        Value::Object(m) => m.len() as u64,
        Value::Array(a) => a.len() as u64,
        _ => 0,
    }
}

/// Pushes the JWE to the list: (response, status path).
async fn push_list(app: &App, list: &str, jwe: &str) -> Result<(Resp, String), String> {
    let r = app
        .request(
            "POST",
            list,
            &[("TTL", "600"), ("Content-Type", "application/jose")],
            jwe.as_bytes(),
        )
        .await?;
    if r.status != 201 {
        return Err(format!(
            "list push: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let status = path_of(r.header("location").ok_or("list push: no Location")?);
    Ok((r, status))
}

/// Polls the list message's status until `done(status)` or `secs` pass.
async fn poll_status(
    app: &App,
    path: &str,
    secs: f64,
    done: impl Fn(&Value) -> bool,
) -> Result<(Value, u64), String> {
    let until = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    loop {
        let v = app.get_json(path).await?;
        let now = realtime_ns();
        if done(&v) || tokio::time::Instant::now() >= until {
            return Ok((v, now));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a list message's fan-out is finished, its counts add up, and
/// `connected` devices acknowledged it.
fn delivered_to_all(s: &Value, connected: u64) -> bool {
    s["fanout_finished"] == true && adds_up(s) && s["delivered"].as_u64() == Some(connected)
}

/// Whether the status counts add up to the members.
fn adds_up(s: &Value) -> bool {
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    n("delivered") + n("stored") + n("expired") + n("failed") == n("members")
}

/// Sums `D <count>` lines by worker.
fn count(delivered: &mut [u64], k: usize, line: &str) {
    if let Some(n) = line.strip_prefix("D ").and_then(|n| n.parse().ok()) {
        delivered[k] = n;
    }
}

/// Waits until the workers report `target` notifications or `until`.
async fn wait_delivered(
    pool: &mut Pool,
    delivered: &mut [u64],
    target: u64,
    until: tokio::time::Instant,
) -> Result<(), String> {
    while delivered.iter().sum::<u64>() < target {
        match tokio::time::timeout_at(until, pool.next()).await {
            Ok(l) => {
                let (k, line) = l?;
                count(delivered, k, &line);
            }
            Err(_) => break,
        }
    }
    Ok(())
}

/// Waits until the workers report `more` notifications beyond the first
/// `seen` of each, or `drain` passes.
async fn wait_more(
    pool: &mut Pool,
    delivered: &mut [u64],
    seen: &[usize],
    more: u64,
    drain: Duration,
) -> Result<(), String> {
    let before: u64 = seen.iter().map(|&n| n as u64).sum();
    let until = tokio::time::Instant::now() + drain;
    wait_delivered(pool, delivered, before + more, until).await
}

/// Every record (`R` lines) of every worker, by worker, and the counters.
async fn dump(pool: &mut Pool) -> Result<(Vec<Vec<(String, u64)>>, Vec<Value>), String> {
    pool.send_all("dump")?;
    let mut records = vec![Vec::new(); pool.len()];
    let ends = pool
        .gather_json("end", |k, line| {
            if let Some((v, ns)) = line.strip_prefix("R ").and_then(|r| r.split_once(' ')) {
                if let Ok(ns) = ns.parse() {
                    records[k].push((v.to_owned(), ns));
                }
            }
        })
        .await?;
    Ok((records, ends))
}

/// Copies received: (copies, distinct versions, duplicates, last receive ns).
fn tally<'a>(records: impl Iterator<Item = &'a (String, u64)>) -> (u64, u64, u64, u64) {
    let mut seen = HashSet::new();
    let (mut copies, mut dups, mut last) = (0, 0, 0);
    for (v, ns) in records {
        copies += 1;
        if !seen.insert(v.as_str()) {
            dups += 1;
        }
        last = last.max(*ns);
    }
    (copies, seen.len() as u64, dups, last)
}

/// When the first, median and 99th-percentile copies arrived, in ms after `t0`.
fn spread<'a>(t0: u64, records: impl Iterator<Item = &'a (String, u64)>) -> Value {
    let mut v: Vec<f64> = records.map(|(_, ns)| ms(t0, *ns)).collect();
    v.sort_by(f64::total_cmp);
    let p = |x| crate::stats::percentile(&v, x);
    json!({"first_ms": v.first(), "p50_ms": p(50.0), "p99_ms": p(99.0)})
}

fn ms(a: u64, b: u64) -> f64 {
    r3((b as f64 - a as f64) / 1e6)
}

/// `pushbench list`.
pub async fn run_list(a: ListArgs, timeout_secs: u64) -> Result<Value, String> {
    let (host, addr) = app_addr(&a.list.app)?;
    let app = App {
        addr,
        host: host.clone(),
    };
    let jwe = jwe_compact(a.list.body_bytes)?;
    let copy_bytes = jwe.len() + 32;
    let single_body = http::aes128gcm_body(a.single_body_bytes)?;
    let mut pool = Pool::spawn(&a.dev, a.devices, copy_bytes, true, timeout_secs)?;
    pool.gather("ready", |_, _| {}).await?;
    eprintln!(
        "pushbench: connecting {} devices over {} workers",
        a.devices,
        pool.len()
    );
    pool.send_all("connect")?;
    let setup = pool.setup().await?;
    let (connected, failed, endpoints) = (setup.connected, setup.failed, setup.endpoints);
    if endpoints.is_empty() {
        return Err(format!(
            "no device registered: {}",
            setup.first_error.unwrap_or_default()
        ));
    }
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
    let mut tool_pids = pool.pids();
    tool_pids.push(std::process::id());
    let cpu = CpuWindow::start(a.list.origin_pid, tool_pids.clone());
    let mut delivered = vec![0u64; pool.len()];
    eprintln!("pushbench: list built; pushing");
    let (resp, status_path) = push_list(&app, &list, &jwe).await?;
    let drain = Duration::from_secs(a.list.drain_secs);
    wait_delivered(
        &mut pool,
        &mut delivered,
        connected,
        tokio::time::Instant::now() + drain,
    )
    .await?;
    let list_cpu = cpu.finish();
    let (status, _) =
        poll_status(&app, &status_path, 5.0, |s| delivered_to_all(s, connected)).await?;
    let (records, ends1) = dump(&mut pool).await?;
    let seen1: Vec<usize> = records.iter().map(Vec::len).collect();
    let (copies, distinct, dups, last) = tally(records.iter().flatten());
    let bad1: u64 = ends1.iter().filter_map(|e| e["bad_payload"].as_u64()).sum();
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
    });
    list_fig.as_object_mut().expect("object").extend(list_cpu);

    // 1b. More pushes to the list, for the spread of the figure.
    let mut seen1 = seen1;
    let mut bad1_total = bad1;
    let mut rounds = vec![list_from_201_ms];
    let mut round_problems = Vec::new();
    for k in 0..a.list_repeats {
        let r = list_round(
            &app,
            &list,
            &jwe,
            &mut pool,
            &mut delivered,
            &seen1,
            bad1_total,
            connected,
            drain,
        )
        .await?;
        eprintln!(
            "pushbench: list push {}: last copy {} ms after the 201",
            k + 2,
            r.from_201_ms
        );
        rounds.push(r.from_201_ms);
        round_problems.extend(r.problem);
        seen1 = r.seen;
        bad1_total = r.bad_total;
    }
    if a.list_repeats > 0 {
        let mut sorted = rounds.clone();
        sorted.sort_by(f64::total_cmp);
        list_fig.as_object_mut().expect("object").insert(
            "list_repeats".into(),
            json!({
                "pushes": rounds.len(),
                "created_to_last_delivery_ms": rounds,
                "median_ms": crate::stats::percentile(&sorted, 50.0).map(r3),
                "min_ms": sorted.first(),
                "max_ms": sorted.last(),
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
            "ack_delay_ms": a.dev.ack_delay_ms,
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
    let mut seen = seen1;
    let mut bad_before = bad1_total;
    let mut singles = Vec::new();
    for as_apps in [false, true] {
        let app_side = as_apps
            .then(|| http::AppSide::new(&a.list.app, a.single_body_bytes))
            .transpose()?;
        let plan = Arc::new(Plan {
            addr,
            host: host.clone(),
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
            &seen,
            bad_before,
            drain,
            a.list.origin_pid,
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
        seen = phase.seen.clone();
        bad_before = phase.bad_total;
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
        "jwe_bytes": jwe.len(),
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

/// The records (per worker) after the first `seen` of each worker's.
fn records_after<'a>(
    records: &'a [Vec<(String, u64)>],
    seen: &'a [usize],
) -> impl Iterator<Item = &'a (String, u64)> {
    records
        .iter()
        .zip(seen)
        .flat_map(|(r, n)| r[(*n).min(r.len())..].iter())
}

/// A list push after the first.
struct ListRound {
    from_201_ms: f64,
    /// Records per worker after this round.
    seen: Vec<usize>,
    bad_total: u64,
    problem: Option<String>,
}

/// Pushes to the list once more and checks that every device got exactly
/// one copy of this push and that its status adds up.
#[allow(clippy::too_many_arguments)]
async fn list_round(
    app: &App,
    list: &str,
    jwe: &str,
    pool: &mut Pool,
    delivered: &mut [u64],
    seen_before: &[usize],
    bad_before: u64,
    connected: u64,
    drain: Duration,
) -> Result<ListRound, String> {
    let (resp, status_path) = push_list(app, list, jwe).await?;
    wait_more(pool, delivered, seen_before, connected, drain).await?;
    let (status, _) =
        poll_status(app, &status_path, 5.0, |s| delivered_to_all(s, connected)).await?;
    let (records, ends) = dump(pool).await?;
    let (_, distinct, dups, last) = tally(records_after(&records, seen_before));
    let bad_total: u64 = ends.iter().filter_map(|e| e["bad_payload"].as_u64()).sum();
    let bad = bad_total - bad_before;
    let problem = (distinct != connected || dups > 0 || bad > 0 || !adds_up(&status))
        .then(|| format!("a repeated list push: {distinct} of {connected} devices got it, {dups} duplicates, {bad} bad, status {status}"));
    Ok(ListRound {
        from_201_ms: ms(resp.done_ns, last),
        seen: records.iter().map(Vec::len).collect(),
        bad_total,
        problem,
    })
}

/// One round of single pushes to every device, and what the devices saw.
struct SinglePhase {
    fig: Value,
    ms: f64,
    /// Records per worker after this round.
    seen: Vec<usize>,
    bad_total: u64,
    problem: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn single_phase(
    pool: &mut Pool,
    plan: Arc<Plan>,
    delivered: &mut [u64],
    seen_before: &[usize],
    bad_before: u64,
    drain: Duration,
    origin_pid: Option<u32>,
    tool_pids: &[u32],
) -> Result<SinglePhase, String> {
    let as_apps = plan.app_side.is_some();
    let concurrency = plan.concurrency;
    let body_bytes = plan.body.len();
    let cpu = CpuWindow::start(origin_pid, tool_pids.to_vec());
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
    wait_more(pool, delivered, seen_before, ok, drain).await?;
    let cpu = cpu.finish();
    let (records, ends) = dump(pool).await?;
    let new = || records_after(&records, seen_before);
    let (copies, distinct, dups, last) = tally(new());
    let bad_total: u64 = ends.iter().filter_map(|e| e["bad_payload"].as_u64()).sum();
    let bad = bad_total - bad_before;
    let errors: u64 = ends
        .iter()
        .map(|e| e["errors"].as_u64().unwrap_or(0) + e["unexpected"].as_u64().unwrap_or(0))
        .sum();
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
        seen: records.iter().map(Vec::len).collect(),
        bad_total,
        problem,
    })
}

/// `pushbench offline-list`.
pub async fn run_offline(a: OfflineArgs, timeout_secs: u64) -> Result<Value, String> {
    let (host, addr) = app_addr(&a.list.app)?;
    let app = App { addr, host };
    let jwe = jwe_compact(a.list.body_bytes)?;
    let copy_bytes = jwe.len() + 32;

    // 1. Subscriptions: devices that register and disconnect.
    let mut create = a.dev.clone();
    create.workers = a.create_workers.max(1);
    create.per_worker = a.members.div_ceil(create.workers).max(1);
    let mut pool = Pool::spawn_with(&create, a.members, 0, true, timeout_secs, |_| {
        vec!["--ephemeral".into()]
    })?;
    pool.gather("ready", |_, _| {}).await?;
    let cpu = CpuWindow::start(a.list.origin_pid, pool.pids());
    eprintln!(
        "pushbench: making {} subscriptions over {} workers",
        a.members,
        pool.len()
    );
    let t0 = realtime_ns();
    pool.send_all("connect")?;
    let mut setup = pool.setup().await?;
    let create_s = setup.finished_ns.saturating_sub(t0) as f64 / 1e9;
    let create_cpu = cpu.finish();
    drop(pool);
    let made = setup.connected;
    let phases = setup.phase_figures();
    eprintln!("pushbench: {made} subscriptions in {create_s:.1} s; building the list");
    if setup.endpoints.is_empty() || setup.uaids.len() != setup.endpoints.len() {
        return Err(format!(
            "subscriptions: {} endpoints, {} uaids: {}",
            setup.endpoints.len(),
            setup.uaids.len(),
            setup.first_error.unwrap_or_default()
        ));
    }
    let mut creation = json!({
        "made": made,
        "failed": setup.failed,
        "elapsed_s": r3(create_s),
        "per_s": r3(made as f64 / create_s.max(1e-9)),
        "phases": phases,
        "first_error": setup.first_error,
    });
    creation.as_object_mut().expect("object").extend(create_cpu);

    // 2. The list.
    let (list, build) = build_list(&app, &setup.endpoints, a.list.chunk).await?;
    eprintln!("pushbench: list built: {build}");

    // 3. One push.
    let (resp, status_path) = push_list(&app, &list, &jwe).await?;
    let push_201_ms = ms(resp.send_ns, resp.done_ns);
    eprintln!("pushbench: list push answered in {push_201_ms} ms");

    // 4. A crash during the fan-out, and a restart.
    let mut crash = Value::Null;
    if let Some(cmd) = &a.crash_restart {
        let pid = a
            .list
            .origin_pid
            .ok_or("--crash-restart needs --origin-pid")?;
        let at_kill = app.get_json(&status_path).await?;
        // SAFETY: kill(2) with a pid and a signal number has no memory effects.
        let killed = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        let k0 = realtime_ns();
        if killed != 0 {
            return Err(format!("kill -KILL {pid}: {}", io::Error::last_os_error()));
        }
        // Its file lock goes only once the process is gone (or a zombie).
        let dead = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
                st.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        };
        while !dead() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!("pushbench: origin killed during fan-out: {at_kill}; restarting");
        let st = std::process::Command::new("sh")
            .args(["-c", cmd])
            .status()
            .map_err(|e| format!("{cmd}: {e}"))?;
        if !st.success() {
            return Err(format!("{cmd}: {st}"));
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(a.restart_timeout_secs);
        while !matches!(app.try_request("GET", "/ready", &[], b"").await, Ok(r) if r.status == 200)
        {
            if tokio::time::Instant::now() >= until {
                return Err("the origin did not come back after the kill".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        crash = json!({
            "status_at_kill": at_kill,
            "killed_during_fanout": at_kill["fanout_finished"] == false,
            "back_after_ms": ms(k0, realtime_ns()),
        });
    }
    let (after_push, fanout_ns) =
        poll_status(&app, &status_path, 60.0, |s| s["fanout_finished"] == true).await?;

    // 5. Devices come back: some of them, or after a crash all, in waves.
    let everyone: Vec<&(usize, String)> = setup.uaids.iter().collect();
    let waves: Vec<Vec<&(usize, String)>> = if a.crash_restart.is_some() {
        everyone
            .chunks(a.reconnect.max(1))
            .map(<[_]>::to_vec)
            .collect()
    } else {
        let n = a.reconnect.min(everyone.len());
        let step = everyone.len() as f64 / n.max(1) as f64;
        vec![(0..n)
            .map(|j| everyone[((j as f64 * step) as usize).min(everyone.len() - 1)])
            .collect()]
    };
    let origin_pid = a
        .crash_restart
        .is_none()
        .then_some(a.list.origin_pid)
        .flatten();
    let mut reconnect = Vec::new();
    let (mut total, mut total_distinct, mut total_dups, mut worst_ms) = (0u64, 0u64, 0u64, 0f64);
    for (w, back) in waves.iter().enumerate() {
        let r = reconnect_wave(&a, back, w, copy_bytes, origin_pid, timeout_secs).await?;
        total += back.len() as u64;
        total_distinct += r["devices_with_copy"].as_u64().unwrap_or(0);
        total_dups += r["duplicates"].as_u64().unwrap_or(0);
        worst_ms = worst_ms.max(r["start_to_last_copy_ms"].as_f64().unwrap_or(f64::MAX));
        if waves.len() > 1 {
            eprintln!("pushbench: wave {}/{}: {r}", w + 1, waves.len());
        }
        reconnect.push(r);
    }
    let n = total;
    let distinct = total_distinct;
    let reconnect_ms = worst_ms;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (final_status, _) = poll_status(&app, &status_path, 5.0, |s| {
        s["delivered"].as_u64() >= Some(distinct) && adds_up(s)
    })
    .await?;
    let reconnect = if reconnect.len() == 1 {
        reconnect.pop().expect("one wave")
    } else {
        json!({
            "devices": n,
            "waves": reconnect.len(),
            "devices_with_copy": distinct,
            "duplicates": total_dups,
            "missing": n.saturating_sub(distinct),
            "slowest_wave_ms": reconnect_ms,
            "per_wave": reconnect,
        })
    };
    let mut problems = Vec::new();
    if distinct != n || total_dups > 0 || !adds_up(&final_status) {
        problems.push(format!(
            "{distinct} of {n} reconnecting devices got their copy, {total_dups} duplicates, status {final_status}"
        ));
    }
    if !crash.is_null() {
        let everyone = distinct == setup.uaids.len() as u64;
        crash["every_member_got_it"] = everyone.into();
        // Only the restarted origin can have finished a fan-out killed midway.
        crash["fanout_finished_after_restart"] = after_push["fanout_finished"].clone();
        if !everyone
            || crash["killed_during_fanout"] != true
            || after_push["fanout_finished"] != true
        {
            problems.push(format!("crash: {crash}"));
        }
    }
    Ok(json!({
        "cmd": "offline-list",
        "correct": problems.is_empty(),
        "problems": problems,
        "members": a.members,
        "jwe_bytes": jwe.len(),
        "creation": creation,
        "build": build,
        "push_201_ms": push_201_ms,
        "push_201_ok": push_201_ms <= 50.0,
        "fanout_finished_after_ms": ms(resp.send_ns, fanout_ns),
        "status_after_push": after_push,
        "reconnect": reconnect,
        "reconnect_ok": reconnect_ms <= 3000.0 && distinct == n,
        "crash": crash,
        "status_final": final_status,
        "status_adds_up": adds_up(&final_status),
    }))
}

/// Devices that say `hello` again with their uaids and wait for their list
/// copy: when the last arrived, and whether each got exactly one.
async fn reconnect_wave(
    a: &OfflineArgs,
    back: &[&(usize, String)],
    wave: usize,
    copy_bytes: usize,
    origin_pid: Option<u32>,
    timeout_secs: u64,
) -> Result<Value, String> {
    let n = back.len();
    let mut dev = a.dev.clone();
    dev.src_base = a.dev.src_base.saturating_add(a.create_workers as u8);
    let workers = n.div_ceil(dev.per_worker.max(1)).max(dev.workers).max(1);
    let dir = std::env::temp_dir().join(format!("pushbench-uaids-{}-{wave}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let shares = crate::pool::shares(n, workers);
    let mut first = 0;
    let mut files = Vec::new();
    for (k, share) in shares.iter().enumerate() {
        let path = dir.join(format!("w{k}"));
        let text: String = back[first..first + share]
            .iter()
            .map(|(i, u)| format!("{i} {u}\n"))
            .collect();
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        files.push(path);
        first += share;
    }
    dev.workers = workers;
    let mut pool = Pool::spawn_with(&dev, n, copy_bytes, false, timeout_secs, |k| {
        vec![format!("--uaids={}", files[k].display())]
    })?;
    pool.gather("ready", |_, _| {}).await?;
    let mut tool_pids = pool.pids();
    tool_pids.push(std::process::id());
    let cpu = CpuWindow::start(origin_pid, tool_pids);
    eprintln!(
        "pushbench: reconnecting {n} devices over {} workers",
        pool.len()
    );
    let r0 = realtime_ns();
    pool.send_all("connect")?;
    let back_setup = pool.setup().await?;
    let until = tokio::time::Instant::now() + Duration::from_secs(a.list.drain_secs);
    let (records, ends) = loop {
        let (records, ends) = dump(&mut pool).await?;
        let got: usize = records.iter().map(Vec::len).sum();
        if got >= n || tokio::time::Instant::now() >= until {
            break (records, ends);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reconnect_cpu = cpu.finish();
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
    let (copies, distinct, dups, last) = tally(records.iter().flatten());
    let sum = |k: &str| ends.iter().filter_map(|e| e[k].as_u64()).sum::<u64>();
    let mut r = json!({
        "devices": n,
        "resumed": back_setup.connected,
        "failed": back_setup.failed,
        "all_connected_ms": ms(r0, back_setup.finished_ns),
        "start_to_last_copy_ms": ms(r0, last),
        "copies": copies,
        "devices_with_copy": distinct,
        "duplicates": dups,
        "missing": (n as u64).saturating_sub(distinct),
        "arrivals_after_start": spread(r0, records.iter().flatten()),
        "bad_payload": sum("bad_payload"),
        "device_errors": sum("errors") + sum("unexpected"),
        "first_error": back_setup.first_error,
    });
    r.as_object_mut().expect("object").extend(reconnect_cpu);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url() {
        assert_eq!(b64url(b""), "");
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(member_key(3).len(), 32);
    }

    #[test]
    fn jwe_shape() {
        let j = jwe_compact(2048).unwrap();
        assert!(j.len() <= 2048 && j.len() >= 2045, "{}", j.len());
        let p: Vec<&str> = j.split('.').collect();
        assert_eq!(p.len(), 5);
        assert!(p[1].is_empty());
        assert_eq!(p[2].len(), 16);
        assert_eq!(p[4].len(), 22);
        assert_ne!(p[3].len() % 4, 1);
        assert!(jwe_compact(10).is_err());
    }

    #[test]
    fn chunks_decode() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }
}
