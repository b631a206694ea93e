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
    /// The origin's WebSocket listener, `host:port` (a `ws://` prefix is allowed).
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
    /// Devices setting up at once in each worker.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
}

impl DeviceOpts {
    /// The WebSocket address.
    pub fn ws_addr(&self) -> Result<SocketAddr, String> {
        let s = self.ws.trim_start_matches("ws://").trim_end_matches('/');
        s.parse().map_err(|e| format!("--ws {:?}: {e}", self.ws))
    }
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
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
        let ws = o.ws_addr()?;
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
                .arg(format!("--ws={ws}"))
                .arg(format!("--devices={share}"))
                .arg(format!("--first-index={first}"))
                .arg(format!("--src={src}"))
                .arg(format!("--connect-concurrency={}", o.connect_concurrency))
                .arg(format!("--body-bytes={body_bytes}"))
                .arg(format!("--timeout-secs={}", timeout_secs + 10))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if endpoints {
                cmd.arg("--endpoints");
            }
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
