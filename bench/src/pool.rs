//! The parent's side of the workers: spawns `pushbench worker` processes,
//! each with its share of the devices and its own source address, and
//! exchanges lines with them (see [`crate::worker`]).

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How devices are spread over workers.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceOpts {
    /// The origin's WebSocket listener, `host:port` (a `ws://` prefix is
    /// allowed); several origin nodes' separated by commas, worker k
    /// connecting to the k-th (round robin).
    #[arg(long)]
    pub ws: String,
    /// Most devices one worker process holds (one socket each).
    #[arg(long, default_value_t = 8000)]
    pub per_worker: usize,
    /// Fewest worker processes (more when `--per-worker` requires).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Worker k connects from 127.0.0.<src-base + k>.
    #[arg(long, default_value_t = 2)]
    pub src_base: u8,
    /// TCP + WebSocket handshakes in flight at once, over all workers. Keep it
    /// under the origin's listen backlog, or SYNs are dropped and retried 1 s later.
    #[arg(long, default_value_t = 96)]
    pub connect_concurrency: usize,
    /// Devices setting up (handshake, hello, register) at once, over all workers.
    #[arg(long, default_value_t = 1024)]
    pub setup_concurrency: usize,
    /// Devices acknowledge a notification this many ms after it arrived
    /// (0: at once). On one machine, devices that acknowledge at once take
    /// CPU from the service while it still delivers; a delay keeps the
    /// acknowledgements out of that window, as devices of their own would.
    #[arg(long, default_value_t = 0)]
    pub ack_delay_ms: u64,
    /// Devices never acknowledge (to measure what acknowledgements cost
    /// the service, against devices that do).
    #[arg(long)]
    pub no_acks: bool,
    /// Devices are served as a plain WebSocket client library serves them:
    /// a task per device, frames read by `tokio-tungstenite`, messages by
    /// `serde_json` (rather than by the workers' one epoll loop and scanner).
    #[arg(long)]
    pub plain: bool,
}

impl DeviceOpts {
    /// The WebSocket addresses.
    pub fn ws_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        self.ws
            .split(',')
            .map(|s| {
                let s = s.trim().trim_start_matches("ws://").trim_end_matches('/');
                s.parse().map_err(|e| format!("--ws {:?}: {e}", self.ws))
            })
            .collect()
    }
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// What the workers report once their devices are set up.
#[derive(Debug, Default)]
pub struct Setup {
    /// Devices registered.
    pub connected: u64,
    /// Devices that failed.
    pub failed: u64,
    /// When the last device finished (realtime ns).
    pub finished_ns: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Per device, ms: TCP + WebSocket handshake, hello, register.
    pub phases_ms: [Vec<f64>; 3],
    /// Push endpoints by device index (if asked for).
    pub endpoints: Vec<(usize, String)>,
    /// Uaids by device index (ephemeral workers).
    pub uaids: Vec<(usize, String)>,
}

impl Setup {
    /// p50/p99/max of each phase, for the result line.
    pub fn phase_figures(&mut self) -> Value {
        let mut m = serde_json::Map::new();
        for (name, v) in ["connect", "hello", "register"]
            .iter()
            .zip(&mut self.phases_ms)
        {
            v.sort_by(f64::total_cmp);
            let p = |x| crate::stats::percentile(v, x).map(crate::stats::r3);
            m.insert(
                (*name).into(),
                serde_json::json!({"p50_ms": p(50.0), "p99_ms": p(99.0), "max_ms": v.last().copied().map(crate::stats::r3)}),
            );
        }
        Value::Object(m)
    }
}

/// Running workers.
pub struct Pool {
    procs: Vec<Proc>,
    lines: mpsc::UnboundedReceiver<(usize, Option<String>)>,
}

/// Splits `total` into `parts` shares that differ by at most one.
pub fn shares(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|k| total / parts + usize::from(k < total % parts))
        .collect()
}

impl Pool {
    /// Starts the workers for `devices` devices.
    pub fn spawn(
        o: &DeviceOpts,
        devices: usize,
        body_bytes: usize,
        endpoints: bool,
        timeout_secs: u64,
    ) -> Result<Pool, String> {
        Self::spawn_with(o, devices, body_bytes, endpoints, timeout_secs, |_| {
            Vec::new()
        })
    }

    /// Like [`Pool::spawn`], with more arguments for worker k: `extra(k)`.
    pub fn spawn_with(
        o: &DeviceOpts,
        devices: usize,
        body_bytes: usize,
        endpoints: bool,
        timeout_secs: u64,
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Result<Pool, String> {
        let ws = o.ws_addrs()?;
        let n = devices.div_ceil(o.per_worker.max(1)).max(o.workers).max(1);
        if usize::from(o.src_base) + n > 255 || o.src_base == 0 {
            return Err(format!(
                "{n} workers from 127.0.0.{} do not fit in 127.0.0.0/24",
                o.src_base
            ));
        }
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let (tx, lines) = mpsc::unbounded_channel();
        let mut pool = Pool {
            procs: Vec::new(),
            lines,
        };
        let mut first = 0;
        for (k, share) in shares(devices, n).into_iter().enumerate() {
            let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, o.src_base + k as u8));
            let mut cmd = Command::new(&exe);
            cmd.arg("worker")
                .arg(format!("--ws={}", ws[k % ws.len()]))
                .arg(format!("--devices={share}"))
                .arg(format!("--first-index={first}"))
                .arg(format!("--src={src}"))
                .arg(format!(
                    "--connect-concurrency={}",
                    o.connect_concurrency.div_ceil(n)
                ))
                .arg(format!(
                    "--setup-concurrency={}",
                    o.setup_concurrency.div_ceil(n)
                ))
                .arg(format!("--body-bytes={body_bytes}"))
                .arg(format!("--ack-delay-ms={}", o.ack_delay_ms))
                .args(o.no_acks.then_some("--no-acks"))
                .args(o.plain.then_some("--plain"))
                .arg(format!("--timeout-secs={}", timeout_secs + 10))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if endpoints {
                cmd.arg("--endpoints");
            }
            cmd.args(extra(k));
            let mut child = cmd.spawn().map_err(|e| format!("spawning a worker: {e}"))?;
            let stdout = child.stdout.take().expect("piped");
            let stdin = child.stdin.take();
            pool.procs.push(Proc { child, stdin });
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((k, Some(line))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((k, None));
            });
            first += share;
        }
        Ok(pool)
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Process ids of the workers.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }

    /// The next line from any worker; an error if a worker ended.
    pub async fn next(&mut self) -> Result<(usize, String), String> {
        match self.lines.recv().await {
            Some((k, Some(line))) => Ok((k, line)),
            Some((k, None)) => Err(format!("worker {k} ended unexpectedly")),
            None => Err("all workers ended".into()),
        }
    }

    /// Sends a command line to every worker.
    pub fn send_all(&mut self, cmd: &str) -> Result<(), String> {
        for (k, p) in self.procs.iter_mut().enumerate() {
            let stdin = p.stdin.as_mut().ok_or("worker input closed")?;
            writeln!(stdin, "{cmd}")
                .and_then(|_| stdin.flush())
                .map_err(|e| format!("writing to worker {k}: {e}"))?;
        }
        Ok(())
    }

    /// Waits for one line starting with `prefix` from every worker, handing
    /// other lines to `other`; returns the rest of each such line by worker.
    /// Use it only for a reply each worker sends last (lines after it from a
    /// quicker worker would be handed to `other`).
    pub async fn gather(
        &mut self,
        prefix: &str,
        mut other: impl FnMut(usize, &str),
    ) -> Result<Vec<String>, String> {
        let mut got: Vec<Option<String>> = vec![None; self.len()];
        while got.iter().any(Option::is_none) {
            let (k, line) = self.next().await?;
            match line.strip_prefix(prefix) {
                Some(rest) if got[k].is_none() => got[k] = Some(rest.trim().to_owned()),
                _ => other(k, &line),
            }
        }
        Ok(got.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Waits until every worker has set up its devices, showing progress.
    pub async fn setup(&mut self) -> Result<Setup, String> {
        let mut r = Setup::default();
        let mut finished = vec![false; self.len()];
        let mut progress = vec![(0u64, 0u64); self.len()];
        let mut last = Instant::now();
        while finished.iter().any(|f| !f) {
            let (k, line) = self.next().await?;
            let bad = || format!("worker {k}: unexpected line {line:?}");
            if let Some(rest) = line.strip_prefix("done ") {
                let v: Value = serde_json::from_str(rest).map_err(|_| bad())?;
                r.connected += v["connected"].as_u64().unwrap_or(0);
                r.failed += v["failed"].as_u64().unwrap_or(0);
                r.finished_ns = r.finished_ns.max(v["finished_ns"].as_u64().unwrap_or(0));
                if r.first_error.is_none() {
                    r.first_error = v["first_error"].as_str().map(str::to_owned);
                }
            } else if line == "setup-end" {
                finished[k] = true;
            } else if let Some(rest) = line.strip_prefix("T ") {
                let mut f = rest
                    .split(' ')
                    .map(|x| x.parse::<f64>().map(|us| us / 1000.0));
                for phase in &mut r.phases_ms {
                    phase.push(f.next().and_then(Result::ok).ok_or_else(bad)?);
                }
            } else if let Some((i, url)) = line.strip_prefix("E ").and_then(|r| r.split_once(' ')) {
                let i = i.parse().map_err(|_| bad())?;
                let url = match url.split_once(' ') {
                    Some((url, uaid)) => {
                        r.uaids.push((i, uaid.to_owned()));
                        url
                    }
                    None => url,
                };
                r.endpoints.push((i, url.to_owned()));
            } else if let Some(rest) = line.strip_prefix("P ") {
                let mut f = rest.split(' ').map(|x| x.parse().unwrap_or(0));
                progress[k] = (f.next().unwrap_or(0), f.next().unwrap_or(0));
                if last.elapsed() >= Duration::from_millis(900) {
                    last = Instant::now();
                    let (c, e) = progress.iter().fold((0, 0), |(c, e), p| (c + p.0, e + p.1));
                    eprintln!("pushbench: {c} devices registered, {e} failed");
                }
            }
        }
        r.endpoints.sort();
        r.uaids.sort();
        Ok(r)
    }

    /// Like [`Pool::gather`] for lines of the form `prefix {json}`.
    pub async fn gather_json(
        &mut self,
        prefix: &str,
        other: impl FnMut(usize, &str),
    ) -> Result<Vec<Value>, String> {
        let raw = self.gather(prefix, other).await?;
        raw.iter()
            .map(|s| serde_json::from_str(s).map_err(|e| format!("worker line {s:?}: {e}")))
            .collect()
    }
}

impl Drop for Pool {
    /// Closes the workers' input (they exit), then kills what is left after 3 s.
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.stdin = None;
        }
        let until = Instant::now() + Duration::from_secs(3);
        for p in &mut self.procs {
            while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(p.child.try_wait(), Ok(None)) {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}
