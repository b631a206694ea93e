//! A worker process: holds a share of the devices, each on its own
//! WebSocket, and talks to the parent in lines.
//!
//! Parent → worker (stdin): `connect`, `dump`, `quit` (or end of input).
//! Worker → parent (stdout):
//! - `ready` once started;
//! - `done {json}` when every device has registered or failed;
//! - `E <device index> <push endpoint>` per device after `done`, if asked;
//! - `D <count>` every 50 ms while the count of notifications received changes;
//! - on `dump`: `R <version> <receive time, ns since the epoch>` per
//!   notification, then `end {json}` with the worker's counters.

use crate::ws::{self, op};
use crate::{emit, realtime_ns};
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use std::io::{self, BufRead, Write};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify, Semaphore};

/// How long one device may take to connect, say hello and register.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What one worker process does.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The origin's WebSocket listener.
    #[arg(long)]
    pub ws: SocketAddr,
    /// Devices this worker holds.
    #[arg(long)]
    pub devices: usize,
    /// Index of this worker's first device among all devices.
    #[arg(long, default_value_t = 0)]
    pub first_index: usize,
    /// Source address of the device connections.
    #[arg(long)]
    pub src: Option<IpAddr>,
    /// Devices setting up at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Expected body size of notifications (0: none), to check `data`.
    #[arg(long, default_value_t = 0)]
    pub body_bytes: usize,
    /// Report each device's push endpoint after `done`.
    #[arg(long)]
    pub endpoints: bool,
    /// Exits after this many seconds whatever happens.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

/// Everything the worker counts.
#[derive(Default)]
struct Tally {
    connected: usize,
    failed: usize,
    delivered: u64,
    bad_payload: u64,
    errors: u64,
    closed: u64,
    unexpected: u64,
    first_error: Option<String>,
    finished_ns: u64,
    records: Vec<(String, u64)>,
    endpoints: Vec<(usize, String)>,
}

impl Tally {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// Settings every device of the worker shares.
struct DevCfg {
    ws: SocketAddr,
    host: String,
    src: Option<IpAddr>,
    data_len: Option<usize>,
    endpoints: bool,
    total: usize,
}

/// Runs a worker to its end.
pub fn run(args: WorkerArgs) -> std::process::ExitCode {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, main(args));
    std::process::ExitCode::SUCCESS
}

async fn main(a: WorkerArgs) {
    let (tx, mut cmds) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                return;
            }
        }
        let _ = tx.send("quit".into());
    });
    let cfg = Rc::new(DevCfg {
        ws: a.ws,
        host: a.ws.to_string(),
        src: a.src,
        data_len: (a.body_bytes > 0).then(|| (a.body_bytes * 4).div_ceil(3)),
        endpoints: a.endpoints,
        total: a.devices,
    });
    let tally = Rc::new(RefCell::new(Tally::default()));
    let done = Rc::new(Notify::new());
    let sem = Rc::new(Semaphore::new(a.connect_concurrency.max(1)));
    let deadline = tokio::time::sleep(Duration::from_secs(a.timeout_secs));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = 0;
    let mut started = false;
    emit("ready");
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd.as_deref().map(str::trim) {
                Some("connect") if !started => {
                    started = true;
                    if a.devices == 0 {
                        done.notify_one();
                    }
                    for i in 0..a.devices {
                        let (cfg, tally, sem, done) = (cfg.clone(), tally.clone(), sem.clone(), done.clone());
                        tokio::task::spawn_local(device(a.first_index + i, cfg, tally, sem, done));
                    }
                }
                Some("dump") => dump(&tally.borrow()),
                Some("quit") | None => break,
                Some(other) => eprintln!("pushbench worker: unknown command {other:?}"),
            },
            _ = done.notified() => {
                let t = tally.borrow();
                emit(&format!(
                    "done {}",
                    json!({
                        "connected": t.connected,
                        "failed": t.failed,
                        "finished_ns": t.finished_ns,
                        "first_error": t.first_error,
                    })
                ));
                if cfg.endpoints {
                    let mut out = io::BufWriter::new(io::stdout().lock());
                    for (i, e) in &t.endpoints {
                        let _ = writeln!(out, "E {i} {e}");
                    }
                    let _ = writeln!(out, "endpoints-end");
                    let _ = out.flush();
                }
            }
            _ = tick.tick() => {
                let d = tally.borrow().delivered;
                if d != reported {
                    reported = d;
                    emit(&format!("D {d}"));
                }
            }
            _ = &mut deadline => {
                eprintln!("pushbench worker: timed out after {} s", a.timeout_secs);
                break;
            }
        }
    }
}

/// Writes every record and then the counters.
fn dump(t: &Tally) {
    let mut out = io::BufWriter::new(io::stdout().lock());
    for (v, ns) in &t.records {
        let _ = writeln!(out, "R {v} {ns}");
    }
    let _ = writeln!(
        out,
        "end {}",
        json!({
            "connected": t.connected,
            "failed": t.failed,
            "delivered": t.delivered,
            "bad_payload": t.bad_payload,
            "errors": t.errors,
            "closed": t.closed,
            "unexpected": t.unexpected,
            "first_error": t.first_error,
        })
    );
    if out.flush().is_err() {
        std::process::exit(1);
    }
}

/// One device: set up under the semaphore, then serve until the end.
async fn device(
    idx: usize,
    cfg: Rc<DevCfg>,
    tally: Rc<RefCell<Tally>>,
    sem: Rc<Semaphore>,
    done: Rc<Notify>,
) {
    let permit = sem.acquire().await.expect("semaphore open");
    let setup = tokio::time::timeout(SETUP_TIMEOUT, setup(&cfg, idx)).await;
    drop(permit);
    let ready = {
        let mut t = tally.borrow_mut();
        let r = match setup {
            Ok(Ok((stream, buf, endpoint))) => {
                t.connected += 1;
                if cfg.endpoints {
                    t.endpoints.push((idx, endpoint));
                }
                Some((stream, buf))
            }
            Ok(Err(e)) => {
                t.failed += 1;
                t.first_error.get_or_insert_with(|| format!("setup: {e}"));
                None
            }
            Err(_) => {
                t.failed += 1;
                t.first_error
                    .get_or_insert_with(|| "setup: timed out".into());
                None
            }
        };
        if t.connected + t.failed == cfg.total {
            t.finished_ns = realtime_ns();
            done.notify_one();
        }
        r
    };
    let Some((mut stream, mut buf)) = ready else {
        return;
    };
    if let Err(e) = serve(&mut stream, &mut buf, &cfg, &tally).await {
        tally.borrow_mut().error(e);
    }
    tally.borrow_mut().closed += 1;
}

/// A server message, as far as devices look at it.
#[derive(Deserialize)]
struct ServerMsg<'a> {
    #[serde(rename = "messageType")]
    message_type: Option<&'a str>,
    status: Option<u16>,
    #[serde(rename = "channelID")]
    channel_id: Option<&'a str>,
    version: Option<&'a str>,
    data: Option<&'a str>,
    #[serde(rename = "pushEndpoint")]
    push_endpoint: Option<String>,
}

/// Connects, says hello, registers one channel; returns the push endpoint.
async fn setup(cfg: &DevCfg, idx: usize) -> io::Result<(TcpStream, Vec<u8>, String)> {
    let mut s = ws::connect_tcp(cfg.ws, cfg.src).await?;
    let mut buf = Vec::with_capacity(1024);
    ws::handshake(&mut s, &cfg.host, &mut buf).await?;
    send_text(&mut s, br#"{"messageType":"hello","use_webpush":true}"#).await?;
    let reply = next_text(&mut s, &mut buf).await?;
    let m: ServerMsg = serde_json::from_slice(&reply).map_err(io::Error::other)?;
    if m.message_type != Some("hello") || m.status != Some(200) {
        return Err(io::Error::other(format!(
            "hello refused: {}",
            String::from_utf8_lossy(&reply)
        )));
    }
    let reg = format!(
        r#"{{"messageType":"register","channelID":"{}"}}"#,
        channel_id(idx)
    );
    send_text(&mut s, reg.as_bytes()).await?;
    let reply = next_text(&mut s, &mut buf).await?;
    let m: ServerMsg = serde_json::from_slice(&reply).map_err(io::Error::other)?;
    match (m.message_type, m.status, m.push_endpoint) {
        (Some("register"), Some(200), Some(e)) => Ok((s, buf, e)),
        _ => Err(io::Error::other(format!(
            "register refused: {}",
            String::from_utf8_lossy(&reply)
        ))),
    }
}

/// A random-looking UUID for a device's channel.
fn channel_id(idx: usize) -> String {
    let mut x = realtime_ns()
        ^ (u64::from(std::process::id()) << 32)
        ^ (idx as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut next = || {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let h = format!("{:016x}{:016x}", next(), next());
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..]
    )
}

async fn send_text(s: &mut TcpStream, text: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(text.len() + 14);
    ws::encode(op::TEXT, text, &mut out);
    s.write_all(&out).await
}

/// The next text message during setup (pings answered, the rest skipped).
async fn next_text(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    loop {
        while let Some(f) = ws::parse(buf).map_err(io::Error::other)? {
            let payload = buf[f.start..f.end].to_vec();
            buf.drain(..f.end);
            match f.opcode {
                op::TEXT => return Ok(payload),
                op::PING => {
                    let mut out = Vec::new();
                    ws::encode(op::PONG, &payload, &mut out);
                    s.write_all(&out).await?;
                }
                op::CLOSE => return Err(io::Error::other("closed by the server")),
                _ => {}
            }
        }
        buf.reserve(1024);
        if s.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Receives notifications and acknowledges each, until the connection ends.
async fn serve(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    cfg: &DevCfg,
    tally: &RefCell<Tally>,
) -> io::Result<()> {
    let mut out = Vec::new();
    loop {
        while let Some(f) = ws::parse(buf).map_err(io::Error::other)? {
            let now = realtime_ns();
            let payload = &buf[f.start..f.end];
            match f.opcode {
                op::TEXT => on_text(payload, now, cfg, tally, &mut out),
                op::PING => ws::encode(op::PONG, payload, &mut out),
                op::CLOSE => {
                    let mut close = Vec::new();
                    ws::encode(op::CLOSE, &[], &mut close);
                    let _ = s.write_all(&close).await;
                    return Ok(());
                }
                _ => {}
            }
            buf.drain(..f.end);
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if s.read_buf(buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Records a notification and queues its acknowledgement.
fn on_text(text: &[u8], now: u64, cfg: &DevCfg, tally: &RefCell<Tally>, out: &mut Vec<u8>) {
    let mut t = tally.borrow_mut();
    let m: ServerMsg = match serde_json::from_slice(text) {
        Ok(m) => m,
        Err(e) => return t.error(format!("bad message: {e}")),
    };
    match (m.message_type, m.channel_id, m.version) {
        (Some("notification"), Some(ch), Some(v)) => {
            t.delivered += 1;
            if m.data.map(str::len) != cfg.data_len {
                t.bad_payload += 1;
            }
            t.records.push((v.to_owned(), now));
            let ack = format!(
                r#"{{"messageType":"ack","updates":[{{"channelID":"{ch}","version":"{v}"}}]}}"#
            );
            ws::encode(op::TEXT, ack.as_bytes(), out);
        }
        (None, None, None) => {} // a ping, `{}`
        _ => t.unexpected += 1,
    }
}
