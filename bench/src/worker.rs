//! A worker process: holds a share of the devices, each on its own
//! WebSocket, and talks to the parent in lines.
//!
//! Parent → worker (stdin): `connect`, `dump`, `clear` (forget the
//! notifications received so far), `count`, `expect <bytes>` (the decoded
//! size of notification data from now on, 0 for none), `delay-acks`, `quit`
//! (or end of input).
//! Worker → parent (stdout):
//! - `ready` once started;
//! - `done {json}` when every device has registered or failed, then
//!   `T <connect µs> <hello µs> <register µs>` per device (the phases of its
//!   setup: TCP + WebSocket handshake, hello round trip, register round trip),
//!   `E <device index> <push endpoint>[ <uaid>]` per device if asked (the
//!   uaid with `--ephemeral` or `--with-uaids`), and `setup-end`;
//! - `P <connected> <failed>` every second until then;
//! - `D <count>` every 50 ms while the count of notifications received changes;
//! - on `count`: `D <count>` at once, changed or not;
//! - on `clear`: `cleared` once forgotten;
//! - on `delay-acks`: switches every device's socket to delayed ACKs
//!   (`TCP_QUICKACK` 0), then `delayed <sockets>`;
//! - on `expect`: `expecting` once notifications are checked against it;
//! - on `dump`: `R <version> <receive time, ns since the epoch>` per
//!   notification, then `end {json}` with the worker's counters.

use crate::served::{Handler, Served};
use crate::ws::{self, op};
use crate::{emit, realtime_ns};
use serde_json::json;
use shared::webpush_ws::{AckUpdate, DeviceMessage, ServerMessage, STATUS_OK};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
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
    /// TCP + WebSocket handshakes in flight at once.
    #[arg(long, default_value_t = 48)]
    pub connect_concurrency: usize,
    /// Devices setting up (handshake, hello, register) at once.
    #[arg(long, default_value_t = 512)]
    pub setup_concurrency: usize,
    /// Acknowledge notifications this many ms after they arrived (0: at once).
    #[arg(long, default_value_t = 0)]
    pub ack_delay_ms: u64,
    /// Expected body size of notifications (0: none), to check `data`.
    #[arg(long, default_value_t = 0)]
    pub body_bytes: usize,
    /// Report each device's push endpoint after `done`.
    #[arg(long)]
    pub endpoints: bool,
    /// Exits after this many seconds whatever happens.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Each device disconnects once registered (subscriptions made cheaply);
    /// its uaid is reported with its endpoint.
    #[arg(long)]
    pub ephemeral: bool,
    /// Report each device's uaid with its endpoint (as `--ephemeral`
    /// does), so that it can come back later with `--uaids`.
    #[arg(long)]
    pub with_uaids: bool,
    /// Count each device's notifications of the expected size by their
    /// channel; `end` then gives how many devices got how many
    /// (`copies_per_device`, e.g. `{"0": 2, "10": 7498}`).
    #[arg(long)]
    pub copies_per_device: bool,
    /// Resume devices instead of making new ones: a file of lines
    /// `<device index> <uaid>`; each device says hello with its uaid and does
    /// not register (`--devices` is ignored).
    #[arg(long)]
    pub uaids: Option<std::path::PathBuf>,
    /// Devices never acknowledge.
    #[arg(long)]
    pub no_acks: bool,
    /// Devices are served as a plain client library serves them
    /// ([`crate::plain`]), not by the worker's epoll loop.
    #[arg(long)]
    pub plain: bool,
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
    /// Received versions, one after another (see `records`).
    versions: String,
    /// Per notification received: where its version ends in `versions`,
    /// and when it arrived (realtime ns).
    records: Vec<(usize, u64)>,
    endpoints: Vec<(usize, String, Option<String>)>,
    phases: Vec<[u32; 3]>,
    /// Notifications of the expected size by channel (`--copies-per-device`).
    per_device: Option<HashMap<String, u32>>,
}

impl Tally {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// How many devices may be in each setup stage at once.
struct Limits {
    /// Devices between start and registered.
    setup: Semaphore,
    /// Devices in the TCP + WebSocket handshake.
    connect: Semaphore,
}

/// Settings every device of the worker shares.
struct DevCfg {
    ws: SocketAddr,
    host: String,
    src: Option<IpAddr>,
    data_len: std::cell::Cell<Option<usize>>,
    endpoints: bool,
    total: usize,
    ephemeral: bool,
    with_uaids: bool,
    ack_delay: Duration,
    acks: bool,
    plain: bool,
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
    let resume: Option<Vec<(usize, String)>> = match &a.uaids {
        None => None,
        Some(path) => match read_uaids(path) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("pushbench worker: {}: {e}", path.display());
                return;
            }
        },
    };
    let devices = resume.as_ref().map_or(a.devices, Vec::len);
    let cfg = Rc::new(DevCfg {
        ws: a.ws,
        host: a.ws.to_string(),
        src: a.src,
        data_len: std::cell::Cell::new(data_len(a.body_bytes)),
        endpoints: a.endpoints,
        total: devices,
        ephemeral: a.ephemeral,
        with_uaids: a.with_uaids,
        ack_delay: Duration::from_millis(a.ack_delay_ms),
        acks: !a.no_acks,
        plain: a.plain,
    });
    let tally = Rc::new(RefCell::new(Tally {
        per_device: a.copies_per_device.then(HashMap::new),
        ..Tally::default()
    }));
    let served = match Served::new(cfg.ack_delay) {
        Ok(s) => Rc::new(s),
        Err(e) => {
            eprintln!("pushbench worker: epoll: {e}");
            return;
        }
    };
    tokio::task::spawn_local({
        let (served, h) = (served.clone(), Devices(cfg.clone(), tally.clone()));
        async move { served.run(&h).await }
    });
    let done = Rc::new(Notify::new());
    let sem = Rc::new(Limits {
        setup: Semaphore::new(a.setup_concurrency.max(1)),
        connect: Semaphore::new(a.connect_concurrency.max(1)),
    });
    let deadline = tokio::time::sleep(Duration::from_secs(a.timeout_secs));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = 0;
    let mut started = false;
    let mut setup_done = false;
    let mut ticks = 0u64;
    emit("ready");
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd.as_deref().map(str::trim) {
                Some("connect") if !started => {
                    started = true;
                    if devices == 0 {
                        done.notify_one();
                    }
                    for i in 0..devices {
                        let (cfg, tally, sem, done, served) =
                            (cfg.clone(), tally.clone(), sem.clone(), done.clone(), served.clone());
                        let (idx, uaid) = match &resume {
                            Some(r) => (r[i].0, Some(r[i].1.clone())),
                            None => (a.first_index + i, None),
                        };
                        tokio::task::spawn_local(device(idx, uaid, cfg, tally, sem, done, served));
                    }
                }
                Some("dump") => dump(&tally.borrow(), cfg.total),
                Some("count") => {
                    reported = tally.borrow().delivered;
                    emit(&format!("D {reported}"));
                }
                Some("delay-acks") => emit(&format!("delayed {}", served.delay_acks())),
                Some("clear") => {
                    let mut t = tally.borrow_mut();
                    t.records.clear();
                    t.versions.clear();
                    t.delivered = 0;
                    t.bad_payload = 0;
                    if let Some(m) = &mut t.per_device {
                        m.clear();
                    }
                    reported = 0;
                    emit("cleared");
                }
                Some(c) if c.starts_with("expect ") => {
                    cfg.data_len.set(data_len(c[7..].trim().parse().unwrap_or(0)));
                    emit("expecting");
                }
                Some("quit") | None => break,
                Some(other) => eprintln!("pushbench worker: unknown command {other:?}"),
            },
            _ = done.notified() => {
                setup_done = true;
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
                let mut out = io::BufWriter::new(io::stdout().lock());
                for [c, h, r] in &t.phases {
                    let _ = writeln!(out, "T {c} {h} {r}");
                }
                for (i, e, u) in &t.endpoints {
                    let _ = match u {
                        Some(u) => writeln!(out, "E {i} {e} {u}"),
                        None => writeln!(out, "E {i} {e}"),
                    };
                }
                let _ = writeln!(out, "setup-end");
                if out.flush().is_err() {
                    std::process::exit(1);
                }
            }
            _ = tick.tick() => {
                ticks += 1;
                let t = tally.borrow();
                if t.delivered != reported {
                    reported = t.delivered;
                    emit(&format!("D {reported}"));
                }
                if started && !setup_done && ticks.is_multiple_of(20) {
                    emit(&format!("P {} {}", t.connected, t.failed));
                }
            }
            _ = &mut deadline => {
                eprintln!("pushbench worker: timed out after {} s", a.timeout_secs);
                break;
            }
        }
    }
}

/// Base64url length of `bytes` bytes of data (None for none).
fn data_len(bytes: usize) -> Option<usize> {
    (bytes > 0).then(|| (bytes * 4).div_ceil(3))
}

/// Reads `<device index> <uaid>` lines.
fn read_uaids(path: &std::path::Path) -> io::Result<Vec<(usize, String)>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (i, u) = l
                .trim()
                .split_once(' ')
                .ok_or_else(|| io::Error::other(format!("bad line {l:?}")))?;
            let i = i.parse().map_err(io::Error::other)?;
            Ok((i, u.to_owned()))
        })
        .collect()
}

/// Writes every record and then the counters (of `devices` devices).
fn dump(t: &Tally, devices: usize) {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut start = 0;
    for &(end, ns) in &t.records {
        let _ = writeln!(out, "R {} {ns}", &t.versions[start..end]);
        start = end;
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
            "copies_per_device": t.per_device.as_ref().map(|m| per_device(m, devices)),
        })
    );
    if out.flush().is_err() {
        std::process::exit(1);
    }
}

/// How many of `devices` devices got how many notifications, from the
/// counts by channel (the devices that got none are in none).
fn per_device(by_channel: &HashMap<String, u32>, devices: usize) -> BTreeMap<u32, usize> {
    let mut h = BTreeMap::new();
    for &n in by_channel.values() {
        *h.entry(n).or_insert(0) += 1;
    }
    let none = devices.saturating_sub(by_channel.len());
    if none > 0 {
        h.insert(0, none);
    }
    h
}

/// One device: set up under the semaphore, then handed to [`Served`].
async fn device(
    idx: usize,
    resume: Option<String>,
    cfg: Rc<DevCfg>,
    tally: Rc<RefCell<Tally>>,
    sem: Rc<Limits>,
    done: Rc<Notify>,
    served: Rc<Served>,
) {
    let permit = sem.setup.acquire().await.expect("semaphore open");
    let setup = tokio::time::timeout(
        SETUP_TIMEOUT,
        setup(&cfg, &sem.connect, idx, resume.as_deref()),
    )
    .await;
    drop(permit);
    let ready = {
        let mut t = tally.borrow_mut();
        let r = match setup {
            Ok(Ok((stream, buf, endpoint, uaid, phases))) => {
                t.connected += 1;
                t.phases.push(phases);
                if cfg.endpoints {
                    let uaid = (cfg.ephemeral || cfg.with_uaids).then_some(uaid);
                    t.endpoints.push((idx, endpoint, uaid));
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
    let Some((mut stream, buf)) = ready else {
        return;
    };
    if cfg.ephemeral {
        let mut close = Vec::new();
        ws::encode(op::CLOSE, &[], &mut close);
        let _ = stream.write_all(&close).await;
        return;
    }
    let h = Devices(cfg, tally);
    if h.0.plain {
        let r = crate::plain::serve(stream, buf, h.0.ack_delay, &h).await;
        return h.ended(r.err());
    }
    if let Err(e) = stream.into_std().and_then(|s| served.add(s, buf, &h)) {
        h.ended(Some(e));
    }
}

/// What served devices do with what they receive: record notifications and
/// acknowledge them (see [`frames`]).
struct Devices(Rc<DevCfg>, Rc<RefCell<Tally>>);

impl Handler for Devices {
    fn frames(&self, buf: &[u8], out: &mut Vec<u8>) -> io::Result<(usize, bool)> {
        frames(buf, &self.0, &self.1, out)
    }

    fn ended(&self, error: Option<io::Error>) {
        let mut t = self.1.borrow_mut();
        if let Some(e) = error {
            t.error(e);
        }
        t.closed += 1;
    }
}

/// A connected, registered device: its socket, unread bytes, push endpoint,
/// uaid, and how long each setup phase took (µs).
type Ready = (TcpStream, Vec<u8>, String, String, [u32; 3]);

/// Connects (holding a `connect` permit until the handshake is done), says
/// hello, registers one channel; or, resuming `uaid`, says hello with it and
/// does not register.
async fn setup(
    cfg: &DevCfg,
    connect: &Semaphore,
    idx: usize,
    resume: Option<&str>,
) -> io::Result<Ready> {
    let us = |since: std::time::Instant| since.elapsed().as_micros().min(u32::MAX as u128) as u32;
    let permit = connect.acquire().await.expect("semaphore open");
    let t0 = std::time::Instant::now();
    let mut s = ws::connect_tcp(cfg.ws, cfg.src).await?;
    let mut buf = Vec::with_capacity(1024);
    ws::handshake(&mut s, &cfg.host, &mut buf).await?;
    drop(permit);
    let connected = us(t0);
    let t1 = std::time::Instant::now();
    let hello_msg = DeviceMessage::Hello {
        uaid: resume.map(Cow::Borrowed),
        channel_ids: None,
        use_webpush: Some(true),
    };
    send_text(&mut s, hello_msg.to_text().as_bytes()).await?;
    let reply = next_text(&mut s, &mut buf).await?;
    let uaid = match server_message(&reply)? {
        ServerMessage::Hello {
            uaid,
            status: STATUS_OK,
            ..
        } => uaid.into_owned(),
        _ => {
            return Err(io::Error::other(format!(
                "hello refused: {}",
                String::from_utf8_lossy(&reply)
            )))
        }
    };
    let hello = us(t1);
    if let Some(u) = resume {
        if uaid != u {
            return Err(io::Error::other(format!(
                "uaid {u} not resumed: got {uaid}"
            )));
        }
        return Ok((s, buf, String::new(), uaid, [connected, hello, 0]));
    }
    let t2 = std::time::Instant::now();
    let reg = DeviceMessage::Register {
        channel_id: channel_id(idx).into(),
        key: None,
    };
    send_text(&mut s, reg.to_text().as_bytes()).await?;
    let reply = next_text(&mut s, &mut buf).await?;
    match server_message(&reply)? {
        ServerMessage::Register {
            status: STATUS_OK,
            push_endpoint: Some(e),
            ..
        } => Ok((s, buf, e.into_owned(), uaid, [connected, hello, us(t2)])),
        _ => Err(io::Error::other(format!(
            "register refused: {}",
            String::from_utf8_lossy(&reply)
        ))),
    }
}

/// Reads a message from the service.
fn server_message(text: &[u8]) -> io::Result<ServerMessage<'static>> {
    let text = std::str::from_utf8(text).map_err(io::Error::other)?;
    ServerMessage::parse(text).map_err(io::Error::other)
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

impl crate::plain::OnNote for Devices {
    fn note(&self, n: &shared::webpush_ws::Notification, now: u64) -> bool {
        let note = Note {
            channel: &n.channel_id,
            version: &n.version,
            data_len: n.data.as_deref().map(str::len),
        };
        record(&mut self.1.borrow_mut(), &self.0, &note, now);
        self.0.acks
    }

    fn other(&self, error: Option<String>) {
        let mut t = self.1.borrow_mut();
        match error {
            Some(e) => t.error(e),
            None => t.unexpected += 1,
        }
    }
}

/// Handles the complete frames at the start of `buf`, queueing replies in
/// `out`: the bytes used, and whether the server closed.
fn frames(
    buf: &[u8],
    cfg: &DevCfg,
    tally: &RefCell<Tally>,
    out: &mut Vec<u8>,
) -> io::Result<(usize, bool)> {
    let mut at = 0;
    while let Some(f) = ws::parse(&buf[at..]).map_err(io::Error::other)? {
        let payload = &buf[at + f.start..at + f.end];
        at += f.end;
        match f.opcode {
            op::TEXT => on_text(payload, realtime_ns(), cfg, tally, out),
            op::PING => ws::encode(op::PONG, payload, out),
            op::CLOSE => {
                ws::encode(op::CLOSE, &[], out);
                return Ok((at, true));
            }
            _ => {}
        }
    }
    Ok((at, false))
}

/// What a device reads from a `notification`.
#[derive(Debug, PartialEq, Eq)]
struct Note<'a> {
    channel: &'a str,
    version: &'a str,
    data_len: Option<usize>,
}

/// Reads a `notification` written in the origin's field order with one
/// pass over its bytes (no copy of, and no UTF-8 check over, the data);
/// `None` for anything else, which [`on_text`] reads as a
/// [`ServerMessage`].
fn scan_notification(text: &[u8]) -> Option<Note<'_>> {
    /// The bytes of the string that starts `b` (its opening quote already
    /// read, no escapes in it), and the rest after its closing quote.
    fn until_quote(b: &[u8]) -> Option<(&[u8], &[u8])> {
        let i = memchr::memchr2(b'"', b'\\', b)?;
        (b[i] == b'"').then_some((&b[..i], &b[i + 1..]))
    }
    fn string(b: &[u8]) -> Option<(&str, &[u8])> {
        let (s, rest) = until_quote(b)?;
        Some((std::str::from_utf8(s).ok()?, rest))
    }
    let rest = text.strip_prefix(br#"{"messageType":"notification","channelID":""#)?;
    let (channel, rest) = string(rest)?;
    let rest = rest.strip_prefix(br#","version":""#)?;
    let (version, rest) = string(rest)?;
    let data_len = match rest.strip_prefix(br#","data":""#) {
        Some(rest) => {
            let (data, tail) = until_quote(rest)?;
            (tail.starts_with(br#","headers":{"#) && tail.ends_with(b"}}")).then_some(())?;
            Some(data.len())
        }
        None => (rest == b"}").then_some(None)?,
    };
    Some(Note {
        channel,
        version,
        data_len,
    })
}

/// Records a notification and queues its acknowledgement.
fn on_text(text: &[u8], now: u64, cfg: &DevCfg, tally: &RefCell<Tally>, out: &mut Vec<u8>) {
    let mut t = tally.borrow_mut();
    let read;
    let note = match scan_notification(text) {
        Some(n) => n,
        None => match server_message(text) {
            Ok(ServerMessage::Notification(n)) => {
                read = n;
                Note {
                    channel: &read.channel_id,
                    version: &read.version,
                    data_len: read.data.as_deref().map(str::len),
                }
            }
            Ok(ServerMessage::Ping) => return,
            Ok(_) => {
                t.unexpected += 1;
                return;
            }
            Err(e) => return t.error(format!("bad message: {e}")),
        },
    };
    record(&mut t, cfg, &note, now);
    if !cfg.acks {
        return;
    }
    let mut ack = [0u8; 256];
    let len = match write_ack(&note, &mut ack) {
        Some(len) => len,
        None => return t.error("version or channel too long"),
    };
    ws::encode(op::TEXT, &ack[..len], out);
}

/// Counts a notification and records its version and arrival.
fn record(t: &mut Tally, cfg: &DevCfg, note: &Note, now: u64) {
    t.delivered += 1;
    if note.data_len != cfg.data_len.get() {
        t.bad_payload += 1;
    } else if let Some(m) = &mut t.per_device {
        match m.get_mut(note.channel) {
            Some(n) => *n += 1,
            None => {
                m.insert(note.channel.to_owned(), 1);
            }
        }
    }
    t.versions.push_str(note.version);
    let end = t.versions.len();
    t.records.push((end, now));
}

/// Writes the `ack` of a notification into `buf` (no allocation): its
/// length, or `None` if it does not fit.
fn write_ack(note: &Note, buf: &mut [u8]) -> Option<usize> {
    let update = [AckUpdate {
        channel_id: Cow::Borrowed(note.channel),
        version: Cow::Borrowed(note.version),
        code: None,
    }];
    let ack = DeviceMessage::Ack {
        updates: Cow::Borrowed(&update),
    };
    let room = buf.len();
    let mut w = buf;
    serde_json::to_writer(&mut w, &ack).ok()?;
    Some(room - w.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_the_origins_notifications() {
        let with_data = br#"{"messageType":"notification","channelID":"c-1","version":"v1","data":"QUJD","headers":{"content_type":"application/jose"}}"#;
        assert_eq!(
            scan_notification(with_data),
            Some(Note {
                channel: "c-1",
                version: "v1",
                data_len: Some(4)
            })
        );
        let without = br#"{"messageType":"notification","channelID":"c-1","version":"v1"}"#;
        assert_eq!(scan_notification(without).unwrap().data_len, None);
    }

    #[test]
    fn the_scan_reads_what_shared_reads() {
        use shared::webpush_ws::Notification;
        for n in [
            Notification {
                channel_id: "c-1".into(),
                version: "v1".into(),
                data: Some("QUJD".into()),
                headers: Some(Default::default()),
            },
            Notification {
                channel_id: "c-1".into(),
                version: "v1".into(),
                data: None,
                headers: None,
            },
        ] {
            let text = ServerMessage::Notification(n.clone()).to_text();
            assert_eq!(
                scan_notification(text.as_bytes()),
                Some(Note {
                    channel: &n.channel_id,
                    version: &n.version,
                    data_len: n.data.as_deref().map(str::len),
                })
            );
        }
    }

    #[test]
    fn acks_read_as_shared_device_messages() {
        let note = Note {
            channel: "c-1",
            version: "v1",
            data_len: None,
        };
        let mut buf = [0u8; 256];
        let len = write_ack(&note, &mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert_eq!(
            text,
            r#"{"messageType":"ack","updates":[{"channelID":"c-1","version":"v1"}]}"#
        );
        let DeviceMessage::Ack { updates } = DeviceMessage::parse(text).unwrap() else {
            panic!("an ack: {text}");
        };
        assert_eq!(
            (&*updates[0].channel_id, &*updates[0].version),
            ("c-1", "v1")
        );
        let long = "v".repeat(300);
        let note = Note {
            version: &long,
            ..note
        };
        assert_eq!(write_ack(&note, &mut buf), None);
    }

    #[test]
    fn copies_per_device_counted() {
        let by_channel: HashMap<String, u32> = [("a", 10), ("b", 10), ("c", 11)]
            .map(|(c, n)| (c.to_owned(), n))
            .into();
        let h = per_device(&by_channel, 5);
        assert_eq!(h, BTreeMap::from([(0, 2), (10, 2), (11, 1)]));
        assert_eq!(per_device(&HashMap::new(), 0), BTreeMap::new());
    }

    #[test]
    fn leaves_anything_else_to_serde() {
        for text in [
            &br#"{}"#[..],
            br#"{"messageType":"hello","uaid":"u","status":200}"#,
            br#"{"messageType":"notification","version":"v1","channelID":"c"}"#,
            br#"{"messageType":"notification","channelID":"c\"d","version":"v1"}"#,
            br#"{"messageType":"notification","channelID":"c","version":"v1","data":"A\"B","headers":{}}"#,
            br#"{"messageType":"notification","channelID":"c","version":"v1","data":"AB""#,
            br#"{"messageType":"notification","channelID":"c","version":"v1"} trailing"#,
        ] {
            assert_eq!(scan_notification(text), None, "{}", String::from_utf8_lossy(text));
        }
    }
}
