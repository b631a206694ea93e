//! Registered devices, served by one loop over an epoll set of their own.
//!
//! After setup a device needs nothing but "read what arrived, acknowledge
//! it": one task per device would cost a tokio wake-up, poll and readiness
//! round per notification, CPU taken from the origin under test on a shared
//! machine. Here one task waits on the epoll descriptor (itself watched by
//! tokio) and serves every ready socket with plain system calls.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// Events taken per `epoll_wait`.
const EVENTS: usize = 1024;

/// What the loop does with the frames a device received: appends replies to
/// `out`; `Ok(true)` once the server closed.
pub trait Handler {
    /// Handles the complete frames at the start of `buf`: the bytes used,
    /// and whether the server closed.
    fn frames(&self, buf: &[u8], out: &mut Vec<u8>) -> io::Result<(usize, bool)>;
    /// Counts a device's end, with its error if it failed.
    fn ended(&self, error: Option<io::Error>);
}

/// One served device.
struct Device {
    stream: TcpStream,
    /// Bytes of an incomplete frame.
    pending: Vec<u8>,
    /// Replies the socket has not taken yet.
    out: Vec<u8>,
    /// The server closed: end once `out` is written.
    closing: bool,
    /// `EPOLLOUT` is watched: `out` waits for room.
    watch_out: bool,
}

/// The devices of a worker and their epoll set.
pub struct Served {
    ep: AsyncFd<OwnedFd>,
    devices: RefCell<Vec<Option<Device>>>,
    /// Replies held back by `--ack-delay-ms`: when, which device, what.
    delayed: RefCell<VecDeque<(Instant, usize, Vec<u8>)>>,
    ack_delay: Duration,
    /// Wakes [`Served::run`] when [`Served::add`] held a reply back, so that
    /// it waits for the right time.
    added_delayed: tokio::sync::Notify,
}

impl Served {
    /// An empty set; replies wait `ack_delay` before they are written.
    pub fn new(ack_delay: Duration) -> io::Result<Served> {
        // SAFETY: epoll_create1 has no preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Served {
            // SAFETY: the `OwnedFd` moves into the `AsyncFd`, so the
            // descriptor stays open and the same for as long as it.
            ep: unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?,
            devices: RefCell::new(Vec::new()),
            delayed: RefCell::new(VecDeque::new()),
            ack_delay,
            added_delayed: tokio::sync::Notify::new(),
        })
    }

    /// Adds a registered device: its socket and the bytes read past its
    /// setup, which are handled at once.
    pub fn add(&self, stream: TcpStream, pending: Vec<u8>, h: &impl Handler) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        let mut devices = self.devices.borrow_mut();
        let idx = devices.len();
        // Edge-triggered: each socket is read until a short read (see `read`).
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: idx as u64,
        };
        let fd = stream.as_raw_fd();
        // SAFETY: both descriptors are open; `ev` is a valid event.
        if unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let has_bytes = !pending.is_empty();
        devices.push(Some(Device {
            stream,
            pending,
            out: Vec::new(),
            closing: false,
            watch_out: false,
        }));
        if has_bytes {
            let d = devices[idx].as_mut().expect("just added");
            let start = d.out.len();
            let result = feed(d, &[], h).and_then(|()| self.answer(idx, d, start, false));
            conclude(&mut devices, idx, result, h);
            if !self.ack_delay.is_zero() {
                self.added_delayed.notify_one();
            }
        }
        Ok(())
    }

    /// Switches every device's socket to delayed ACKs (`TCP_QUICKACK` 0, as
    /// after it answered what it received); how many sockets took it.
    pub fn delay_acks(&self) -> usize {
        let devices = self.devices.borrow();
        let set = devices.iter().flatten().filter(|d| {
            let fd = d.stream.as_raw_fd();
            crate::ws::set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 0).is_ok()
        });
        set.count()
    }

    /// Serves the devices until the task is dropped.
    pub async fn run(&self, h: &impl Handler) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let due = self.delayed.borrow().front().map(|d| d.0);
            tokio::select! {
                guard = self.ep.readable() => {
                    let Ok(mut guard) = guard else { return };
                    // SAFETY: `events` is valid for `EVENTS` entries.
                    let n = unsafe {
                        libc::epoll_wait(self.ep.as_raw_fd(), events.as_mut_ptr(), EVENTS as i32, 0)
                    };
                    if n < EVENTS as i32 {
                        guard.clear_ready();
                    }
                    for ev in &events[..n.max(0) as usize] {
                        let (idx, bits) = (ev.u64 as usize, ev.events);
                        let writable = bits & libc::EPOLLOUT as u32 != 0;
                        self.serve(idx, &mut buf, writable, h);
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.release_delayed(h);
                }
                _ = self.added_delayed.notified() => {}
            }
        }
    }

    /// Reads what device `idx` has, handles it, and writes the replies.
    fn serve(&self, idx: usize, buf: &mut [u8], writable: bool, h: &impl Handler) {
        let mut devices = self.devices.borrow_mut();
        let Some(d) = devices.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let start = d.out.len();
        let result = (|| -> io::Result<bool> {
            while !d.closing {
                let Some(n) = read(&d.stream, buf)? else {
                    break;
                };
                if n == 0 {
                    return Ok(true);
                }
                feed(d, &buf[..n], h)?;
                if n < buf.len() {
                    break;
                }
            }
            self.answer(idx, d, start, writable)
        })();
        conclude(&mut devices, idx, result, h);
    }

    /// Writes the replies the handler appended to `d.out` from `start` (or
    /// holds them back by the delay); `Ok(true)` once the device is done.
    fn answer(&self, idx: usize, d: &mut Device, start: usize, writable: bool) -> io::Result<bool> {
        let replied = d.out.len() > start;
        if replied && !self.ack_delay.is_zero() && !d.closing {
            let due = Instant::now() + self.ack_delay;
            let replies = d.out.split_off(start);
            self.delayed.borrow_mut().push_back((due, idx, replies));
            return Ok(false);
        }
        if writable || replied {
            self.flush(idx, d)?;
        }
        Ok(d.closing && d.out.is_empty())
    }

    /// Writes the replies whose delay is over.
    fn release_delayed(&self, h: &impl Handler) {
        let now = Instant::now();
        loop {
            let next = {
                let mut delayed = self.delayed.borrow_mut();
                match delayed.front() {
                    Some(d) if d.0 <= now => delayed.pop_front(),
                    _ => None,
                }
            };
            let Some((_, idx, replies)) = next else {
                return;
            };
            let mut devices = self.devices.borrow_mut();
            let Some(d) = devices.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            d.out.extend_from_slice(&replies);
            let result = self.flush(idx, d).map(|()| false);
            conclude(&mut devices, idx, result, h);
        }
    }

    /// Writes what `d.out` holds; what the socket does not take waits for
    /// `EPOLLOUT`.
    fn flush(&self, idx: usize, d: &mut Device) -> io::Result<()> {
        use std::io::Write;
        while !d.out.is_empty() {
            match (&d.stream).write(&d.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    d.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Watch for room only while something waits for it.
        let want_out = !d.out.is_empty();
        if want_out != d.watch_out {
            d.watch_out = want_out;
            let mut bits = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;
            if want_out {
                bits |= libc::EPOLLOUT;
            }
            let mut ev = libc::epoll_event {
                events: bits as u32,
                u64: idx as u64,
            };
            let fd = d.stream.as_raw_fd();
            // SAFETY: both descriptors are open; `ev` is a valid event.
            if unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut ev) } < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Forgets device `idx` if it is done or failed.
fn conclude(
    devices: &mut [Option<Device>],
    idx: usize,
    result: io::Result<bool>,
    h: &impl Handler,
) {
    match result {
        Ok(false) => {}
        Ok(true) => {
            devices[idx] = None;
            h.ended(None);
        }
        Err(e) => {
            devices[idx] = None;
            h.ended(Some(e));
        }
    }
}

/// Hands the handler the frames of `new` after the bytes `d` kept, with its
/// replies going to `d.out`; keeps an incomplete frame's bytes.
fn feed(d: &mut Device, new: &[u8], h: &impl Handler) -> io::Result<()> {
    let close = if d.pending.is_empty() {
        let (used, close) = h.frames(new, &mut d.out)?;
        d.pending.extend_from_slice(&new[used..]);
        close
    } else {
        d.pending.extend_from_slice(new);
        let (used, close) = h.frames(&d.pending, &mut d.out)?;
        d.pending.drain(..used);
        close
    };
    d.closing |= close;
    Ok(())
}

/// One `recv` into `buf`: `Some(0)` at end of stream, `None` when there is
/// nothing to read now. A read shorter than `buf` drained the socket, so the
/// caller stops there, sparing the `recv` that would fail with `EAGAIN`.
fn read(s: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(Some(n));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::rc::Rc;

    /// Frames are lines; each is answered with `ack:<line>`; `close` closes.
    #[derive(Default)]
    struct Lines {
        ended: RefCell<Vec<Option<String>>>,
    }

    impl Handler for Lines {
        fn frames(&self, buf: &[u8], out: &mut Vec<u8>) -> io::Result<(usize, bool)> {
            let mut used = 0;
            while let Some(i) = buf[used..].iter().position(|&b| b == b'\n') {
                let line = &buf[used..used + i];
                used += i + 1;
                if line == b"close" {
                    out.extend_from_slice(b"bye\n");
                    return Ok((used, true));
                }
                out.extend_from_slice(b"ack:");
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            Ok((used, false))
        }

        fn ended(&self, error: Option<io::Error>) {
            self.ended.borrow_mut().push(error.map(|e| e.to_string()));
        }
    }

    /// A connected pair: (the device's end, the server's end).
    fn pair() -> (TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let device = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (device, server)
    }

    /// Reads from `s` until `want` bytes came.
    fn read_n(s: &mut TcpStream, want: usize) -> Vec<u8> {
        let mut got = vec![0u8; want];
        s.read_exact(&mut got).unwrap();
        got
    }

    async fn served_pair(delay: Duration) -> (Rc<Served>, Rc<Lines>, TcpStream) {
        let (served, h) = (
            Rc::new(Served::new(delay).unwrap()),
            Rc::new(Lines::default()),
        );
        tokio::task::spawn_local({
            let (served, h) = (served.clone(), h.clone());
            async move { served.run(&*h).await }
        });
        // The loop is waiting when the device comes.
        tokio::task::yield_now().await;
        let (device, server) = pair();
        served.add(device, b"early\npart".to_vec(), &*h).unwrap();
        (served, h, server)
    }

    /// Runs `f` as a worker does: one thread, local tasks.
    fn on_one_thread(f: impl std::future::Future<Output = ()>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f);
    }

    #[test]
    fn answers_each_frame_and_ends_when_closed() {
        on_one_thread(async {
            let (_served, h, mut server) = served_pair(Duration::ZERO).await;
            // Bytes read during setup are answered at once, a partial frame kept.
            assert_eq!(read_n(&mut server, 10), b"ack:early\n");
            server.write_all(b"ial\nb\n").unwrap();
            let got = tokio::task::spawn_blocking(move || {
                let got = read_n(&mut server, 18);
                server.write_all(b"close\n").unwrap();
                let mut rest = Vec::new();
                server.read_to_end(&mut rest).unwrap();
                (got, rest)
            })
            .await
            .unwrap();
            assert_eq!(got.0, b"ack:partial\nack:b\n");
            assert_eq!(got.1, b"bye\n", "the close answered, then the end");
            assert_eq!(*h.ended.borrow(), vec![None]);
        });
    }

    #[test]
    fn holds_answers_back_by_the_delay() {
        on_one_thread(async {
            let t0 = std::time::Instant::now();
            let (_served, _h, mut server) = served_pair(Duration::from_millis(200)).await;
            let got = tokio::task::spawn_blocking(move || read_n(&mut server, 10))
                .await
                .unwrap();
            assert_eq!(got, b"ack:early\n");
            assert!(
                t0.elapsed() >= Duration::from_millis(200),
                "{:?}",
                t0.elapsed()
            );
        });
    }
}
