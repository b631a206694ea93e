//! `pushbench floor`: what the kernel alone costs for a list push on this
//! machine, to hold the origin's figure against. A bare program writes one
//! frame of the copy's size to each of N loopback sockets from one thread per
//! core, while client processes read them with epoll and, like devices,
//! answer each with a small acknowledgement. No WebSocket, no JSON, no
//! store: the time from the first write to the last frame read is the floor.

use crate::ws::connect_tcp;
use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Options of `floor`.
#[derive(Debug, Clone, clap::Args)]
pub struct FloorArgs {
    /// Sockets written to (one per device).
    #[arg(long, default_value_t = 15_000)]
    pub sockets: usize,
    /// Bytes written to each: the WebSocket frame of a 2 KiB JWE's copy
    /// (2,910 bytes).
    #[arg(long, default_value_t = 2_910)]
    pub frame_bytes: usize,
    /// Bytes each client answers with (0: no answer): a device's `ack`.
    #[arg(long, default_value_t = 110)]
    pub ack_bytes: usize,
    /// Rounds (each writes every socket once).
    #[arg(long, default_value_t = 9)]
    pub rounds: usize,
    /// Client processes.
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// Writer threads.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// Client k connects from 127.0.0.<src-base + k>.
    #[arg(long, default_value_t = 220)]
    pub src_base: u8,
    /// Also watch the written sockets for input with an epoll set and a
    /// thread blocked on it, as an event-driven server does: each answer
    /// then wakes that thread.
    #[arg(long)]
    pub watcher: bool,
}

/// Options of the hidden `floor-client`.
#[derive(Debug, Clone, clap::Args)]
pub struct FloorClientArgs {
    /// The writer's address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Sockets this client opens.
    #[arg(long)]
    pub count: usize,
    /// Source address.
    #[arg(long)]
    pub src: IpAddr,
    /// Bytes expected on each socket per round.
    #[arg(long)]
    pub frame_bytes: usize,
    /// Bytes answered per frame (0: none).
    #[arg(long)]
    pub ack_bytes: usize,
    /// Rounds.
    #[arg(long)]
    pub rounds: usize,
}

/// `pushbench floor`.
pub fn run(a: FloorArgs) -> Result<Value, String> {
    fn e(what: &'static str) -> impl Fn(io::Error) -> String {
        move |err| format!("{what}: {err}")
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(e("listen"))?;
    let addr = listener.local_addr().map_err(e("listen"))?;
    let exe = std::env::current_exe().map_err(e("own executable"))?;
    let mut clients = Vec::new();
    for k in 0..a.clients {
        let count = a.sockets / a.clients + usize::from(k < a.sockets % a.clients);
        let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, a.src_base.wrapping_add(k as u8)));
        let mut child = Command::new(&exe)
            .args([
                "floor-client",
                "--addr",
                &addr.to_string(),
                "--src",
                &src.to_string(),
            ])
            .args([
                "--count",
                &count.to_string(),
                "--rounds",
                &a.rounds.to_string(),
            ])
            .args(["--frame-bytes", &a.frame_bytes.to_string()])
            .args(["--ack-bytes", &a.ack_bytes.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(e("spawning a client"))?;
        let out = BufReader::new(child.stdout.take().expect("piped"));
        clients.push((child, out.lines()));
    }
    let mut socks = Vec::with_capacity(a.sockets);
    for _ in 0..a.sockets {
        let (mut s, _) = listener.accept().map_err(e("accept"))?;
        s.set_nodelay(true).map_err(e("nodelay"))?;
        let mut hello = [0u8; 5];
        s.read_exact(&mut hello).map_err(e("hello"))?;
        s.write_all(b"ok").map_err(e("hello reply"))?;
        socks.push(s);
    }
    for (_, lines) in &mut clients {
        expect_line(lines, "ready")?;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if a.watcher {
        watch(&socks, stop.clone()).map_err(e("epoll"))?;
    }
    let frame = vec![b'x'; a.frame_bytes];
    let mut rounds = Vec::new();
    for _ in 0..a.rounds {
        std::thread::sleep(Duration::from_millis(300));
        let t0 = crate::realtime_ns();
        std::thread::scope(|scope| {
            for w in 0..a.writers {
                let (socks, frame) = (&socks, &frame);
                scope.spawn(move || {
                    for s in socks.iter().skip(w).step_by(a.writers) {
                        let _ = (&*s).write_all(frame);
                    }
                });
            }
        });
        let mut last = 0u64;
        for (_, lines) in &mut clients {
            let line = expect_line(lines, "round ")?;
            last = last.max(line.parse().map_err(|_| format!("bad line {line:?}"))?);
        }
        rounds.push(crate::stats::r3((last.saturating_sub(t0)) as f64 / 1e6));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(socks);
    for (mut child, _) in clients {
        let _ = child.wait();
    }
    let mut sorted = rounds.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(json!({
        "cmd": "floor",
        "sockets": a.sockets,
        "frame_bytes": a.frame_bytes,
        "ack_bytes": a.ack_bytes,
        "watcher": a.watcher,
        "first_write_to_last_read_ms": rounds,
        "median_ms": crate::stats::percentile(&sorted, 50.0).map(crate::stats::r3),
        "min_ms": sorted.first(),
        "max_ms": sorted.last(),
    }))
}

/// Puts `socks` in an epoll set (edge-triggered, input and output, as tokio
/// registers a socket) and starts a thread that waits on it until `stop`.
fn watch(
    socks: &[TcpStream],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: epoll_create1 has no preconditions.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ep` was just created and is owned by nothing else.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for (i, s) in socks.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: i as u64,
        };
        // SAFETY: both descriptors are open; `ev` is a valid event.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) }
            < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    std::thread::spawn(move || {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: `events` is valid for its length.
            unsafe {
                libc::epoll_wait(
                    ep.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    100,
                )
            };
        }
    });
    Ok(())
}

/// The rest of the next line from a client, which must start with `prefix`.
fn expect_line(
    lines: &mut std::io::Lines<BufReader<std::process::ChildStdout>>,
    prefix: &str,
) -> Result<String, String> {
    match lines.next() {
        Some(Ok(l)) if l.starts_with(prefix) => Ok(l[prefix.len()..].to_owned()),
        Some(Ok(l)) => Err(format!("client said {l:?}, not {prefix:?}")),
        _ => Err("a client ended".into()),
    }
}

/// The hidden `floor-client`: opens its sockets, then each round reads a
/// frame from every one (answering each), and prints when the last arrived.
pub fn client(a: FloorClientArgs) -> std::process::ExitCode {
    match client_rounds(&a) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushbench floor-client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn client_rounds(a: &FloorClientArgs) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut socks: Vec<TcpStream> = Vec::with_capacity(a.count);
    for _ in 0..a.count {
        let s = rt.block_on(connect_tcp(a.addr, Some(a.src)))?.into_std()?;
        s.set_nonblocking(false)?;
        (&s).write_all(b"hello")?;
        let mut ok = [0u8; 2];
        (&s).read_exact(&mut ok)?;
        s.set_nonblocking(true)?;
        socks.push(s);
    }
    drop(rt);
    // SAFETY: plain epoll calls on descriptors this process owns.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    for (i, s) in socks.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: as above.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    crate::emit("ready");
    let ack = vec![b'a'; a.ack_bytes];
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    for _ in 0..a.rounds {
        let mut have = vec![0usize; socks.len()];
        let (mut left, mut last) = (socks.len(), 0u64);
        while left > 0 {
            // SAFETY: `events` is valid for its length.
            let n =
                unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 10_000) };
            if n <= 0 {
                return Err(io::Error::other(format!("{left} sockets got nothing")));
            }
            for ev in &events[..n as usize] {
                let i = ev.u64 as usize;
                let r = match (&socks[i]).read(&mut buf) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                };
                have[i] += r;
                if have[i] >= a.frame_bytes && have[i] - r < a.frame_bytes {
                    left -= 1;
                    last = crate::realtime_ns();
                    if !ack.is_empty() {
                        (&socks[i]).write_all(&ack)?;
                    }
                }
            }
        }
        crate::emit(&format!("round {last}"));
    }
    Ok(())
}
