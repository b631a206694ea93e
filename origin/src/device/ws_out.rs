//! A WebSocket connection's sending side, shared by its task and the
//! fan-out. A list push's copies are written straight to the socket by the
//! fan-out's threads, with no queue and no wake-up of the connection's task;
//! everything else the task writes itself. One lock per connection keeps
//! whole frames in order, and holds the list copies written and not yet
//! acknowledged, so that a copy is written once whoever writes it.

use super::ws_frame;
use super::ws_session::{self, Data};
use crate::copy::{CopyOutlet, ListPush, Sent};
use crate::registry::Outbound;
use crate::store::{Encoding, ListMember};
use crate::tokens::{Token, TokenMap};
use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A frame being built, and the two small buffers a list copy's body needs.
type Scratch = (Vec<u8>, (Vec<u8>, Vec<u8>));

thread_local! {
    /// Reused by every connection on this thread, so that a delivery
    /// allocates no buffer.
    static SCRATCH: RefCell<Scratch> = const { RefCell::new((Vec::new(), (Vec::new(), Vec::new()))) };
}

/// Scratch buffers larger than this are given back after use.
const SCRATCH_KEEP: usize = 256 * 1024;

/// The receive low-water mark of a socket while a fan-out writes: below it
/// the kernel does not report the socket readable, so the acknowledgements
/// that arrive during a list push wake no thread blocked in `epoll_wait` (a
/// measured 3–10% of a 15k-member list push). Small enough to leave the
/// receive buffer and window alone; lowering it again signals what came.
const RAISED_RCVLOWAT: libc::c_int = 4096;

/// List copies remembered by [`Outlet::message_done`].
const RECENT_ACKED: usize = 16;

/// The last [`RECENT_ACKED`] versions, oldest overwritten first.
#[derive(Default)]
struct Recent {
    ids: [Token; RECENT_ACKED],
    next: usize,
    len: usize,
}

impl Recent {
    fn push(&mut self, id: Token) {
        self.ids[self.next] = id;
        self.next = (self.next + 1) % RECENT_ACKED;
        self.len = (self.len + 1).min(RECENT_ACKED);
    }

    fn contains(&self, id: &Token) -> bool {
        self.ids[..self.len].contains(id)
    }
}

/// The body of a notification.
pub enum Body<'a> {
    /// A message's own body.
    Raw(&'a [u8]),
    /// A list member's copy, assembled as it is written.
    Copy(&'a ListPush, &'a ListMember),
}

/// The ids of a list copy written and not yet acknowledged.
#[derive(Clone, Copy, Debug)]
pub struct CopyIds {
    /// The list message.
    pub list_message: Token,
    /// The member's subscription.
    pub push: Token,
}

/// What the lock guards.
#[derive(Default)]
struct Inner {
    /// The unwritten rest of the frames written so far; while it is not
    /// empty, frames are appended to it and the task flushes it.
    rest: Vec<u8>,
    /// What is written and not yet acknowledged, by version: list copies
    /// with their ids, and the task's own messages (`None`).
    inflight: TokenMap<Option<CopyIds>>,
    /// List copies the task fetched itself and the device acknowledged,
    /// the last [`RECENT_ACKED`]: a fan-out still running for their list
    /// must not write them again (kept only once there is one).
    acked_copies: Option<Box<Recent>>,
    /// The receive low-water mark is raised.
    raised: bool,
    closed: bool,
}

impl std::fmt::Debug for Outlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outlet").finish_non_exhaustive()
    }
}

/// The sending side of one WebSocket connection.
pub struct Outlet {
    stream: TcpStream,
    inner: Mutex<Inner>,
    /// The connection's queue, to nudge its task.
    tx: mpsc::Sender<Outbound>,
    /// Set when something was left for the connection to fetch.
    pending: Arc<AtomicBool>,
}

impl CopyOutlet for Outlet {
    /// A rest of the frame that the socket did not take is left for the
    /// connection's task, which is nudged to flush it.
    fn write_copy(
        &self,
        push: &ListPush,
        member: &ListMember,
        max_unacked: usize,
        raise: bool,
    ) -> io::Result<Sent> {
        let id = push.copy_id(member);
        let mut g = self.lock();
        if g.closed {
            return Ok(Sent::Closed);
        }
        let acked = |g: &Inner| g.acked_copies.as_ref().is_some_and(|r| r.contains(&id));
        if g.inflight.contains_key(&id) || acked(&g) {
            return Ok(Sent::Duplicate);
        }
        if g.inflight.len() >= max_unacked {
            return Ok(Sent::Full);
        }
        if !g.rest.is_empty() {
            return Ok(Sent::Busy);
        }
        if raise && !g.raised {
            set_rcvlowat(&self.stream, RAISED_RCVLOWAT);
            g.raised = true;
        }
        let body = Body::Copy(push, member);
        let left = build(&member.channel, &id, push.encoding(), body, |frame| {
            self.write_locked(&mut g, frame)
        })?;
        let ids = CopyIds {
            list_message: push.msg.id,
            push: member.push,
        };
        g.inflight.insert(id, Some(ids));
        drop(g);
        if left {
            let _ = self.tx.try_send(Outbound::Nudge);
        }
        Ok(Sent::Written)
    }

    /// Marks that something was left for the connection to fetch, and
    /// nudges its task.
    fn nudge(&self) {
        self.pending.store(true, Ordering::Release);
        let _ = self.tx.try_send(Outbound::Nudge);
    }

    /// Lowers the receive low-water mark a fan-out raised, which makes the
    /// kernel report what the device sent meanwhile.
    fn lower(&self) {
        let mut g = self.lock();
        if g.raised {
            set_rcvlowat(&self.stream, 1);
            g.raised = false;
        }
    }

    fn socket(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.stream)
    }
}

impl Outlet {
    /// The sending side of `stream`, whose task reads `tx`'s queue and
    /// fetches what is left for it when [`Outlet::pending`] is set.
    pub fn new(stream: TcpStream, tx: mpsc::Sender<Outbound>) -> Outlet {
        Outlet {
            stream,
            inner: Mutex::default(),
            tx,
            pending: Arc::default(),
        }
    }

    /// The connection's queue.
    pub fn queue(&self) -> &mpsc::Sender<Outbound> {
        &self.tx
    }

    /// Set when something was left for the connection to fetch.
    pub fn pending(&self) -> &Arc<AtomicBool> {
        &self.pending
    }

    /// The socket, for reading.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `frame` after what is still unwritten, as much as the socket
    /// takes now; `true` if a rest is left for [`Outlet::flush`].
    fn write_locked(&self, g: &mut Inner, frame: &[u8]) -> io::Result<bool> {
        if !g.rest.is_empty() {
            g.rest.extend_from_slice(frame);
            return Ok(true);
        }
        let n = match self.stream.try_write(frame) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        g.rest.extend_from_slice(&frame[n..]);
        Ok(n < frame.len())
    }

    /// Writes a frame of the task's own and waits until it is on the socket.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        let left = self.write_locked(&mut self.lock(), frame)?;
        if left {
            self.flush().await?;
        }
        Ok(())
    }

    /// Turns the socket's delayed ACKs off (`TCP_QUICKACK`, best effort),
    /// which a quick answer turned on: what the device sends next, most
    /// often a notification's acknowledgement that gets no answer, is then
    /// ACKed without a delayed-ACK timer (while the kernel grants quick
    /// ACKs, as after an idle spell). The connection's task calls it after
    /// answering. docs/performance.md, "The first push".
    pub fn ack_at_once(&self) {
        set_int_option(&self.stream, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1);
    }

    /// Writes a close frame with `code` after what is still unwritten, and
    /// waits until it is on the socket; nothing is written after it.
    pub async fn send_close(&self, code: u16) -> io::Result<()> {
        let mut frame = Vec::new();
        ws_frame::close(code, &mut frame);
        let left = {
            let mut g = self.lock();
            if g.closed {
                return Ok(());
            }
            g.closed = true;
            self.write_locked(&mut g, &frame)?
        };
        if left {
            self.flush().await?;
        }
        Ok(())
    }

    /// Waits until everything written is on the socket.
    pub async fn flush(&self) -> io::Result<()> {
        loop {
            {
                let mut g = self.lock();
                if g.rest.is_empty() {
                    return Ok(());
                }
                match self.stream.try_write(&g.rest) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        g.rest.drain(..n);
                        if g.rest.is_empty() {
                            g.rest = Vec::new();
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            self.stream.writable().await?;
        }
    }

    /// Writes a message of the task's own, version `version`, and waits
    /// until it is on the socket: not if it is in flight already (as a
    /// message or a list copy), nor once `max_unacked` wait for their
    /// acknowledgement ([`Sent::Full`]). It is in flight until
    /// [`Outlet::message_done`].
    pub async fn send_message(
        &self,
        channel: &Token,
        version: &Token,
        encoding: &Encoding,
        body: &[u8],
        max_unacked: usize,
    ) -> io::Result<Sent> {
        let left = {
            let mut g = self.lock();
            if g.closed {
                return Ok(Sent::Closed);
            }
            if g.inflight.contains_key(version) {
                return Ok(Sent::Duplicate);
            }
            if g.inflight.len() >= max_unacked {
                return Ok(Sent::Full);
            }
            let left = build(channel, version, encoding, Body::Raw(body), |frame| {
                self.write_locked(&mut g, frame)
            })?;
            g.inflight.insert(*version, None);
            left
        };
        if left {
            self.flush().await?;
        }
        Ok(Sent::Written)
    }

    /// A message written by [`Outlet::send_message`] was acknowledged;
    /// `list_copy`: it was a list member's copy the task fetched itself,
    /// which a fan-out still on its way to this member must not write again.
    pub fn message_done(&self, version: &Token, list_copy: bool) {
        let mut g = self.lock();
        g.inflight.remove(version);
        if list_copy {
            g.acked_copies
                .get_or_insert_with(Box::default)
                .push(*version);
        }
    }

    /// Takes an acknowledged list copy out of flight.
    pub fn copy_done(&self, id: &Token) -> Option<CopyIds> {
        use std::collections::hash_map::Entry;
        match self.lock().inflight.entry(*id) {
            Entry::Occupied(e) if e.get().is_some() => e.remove(),
            _ => None,
        }
    }

    /// Whether `max_unacked` messages and copies wait for acknowledgement.
    pub fn full(&self, max_unacked: usize) -> bool {
        let g = self.lock();
        g.inflight.len() >= max_unacked
    }

    /// Ends the sending side: nothing more is written, and the copies in
    /// flight are forgotten (the device fetches them from their lists at
    /// its next `hello`).
    pub fn close(&self) {
        use std::os::fd::AsRawFd;
        // The device sees the end now, though a fan-out may still hold
        // this outlet (and so the socket) a little longer.
        // SAFETY: a socket this outlet owns and keeps open.
        unsafe { libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_RDWR) };
        let mut g = self.lock();
        g.closed = true;
        g.inflight = TokenMap::default();
        g.rest = Vec::new();
    }
}

/// Builds a notification frame in this thread's scratch buffer and hands it
/// to `write`.
fn build<R>(
    channel: &Token,
    version: &Token,
    encoding: &Encoding,
    body: Body<'_>,
    write: impl FnOnce(&[u8]) -> R,
) -> R {
    SCRATCH.with(|scratch| {
        let (frame, parts) = &mut *scratch.borrow_mut();
        frame.clear();
        frame.resize(ws_frame::HEADER_ROOM, 0);
        match body {
            Body::Copy(push, member) if push.has_body() => {
                let mut body = |out: &mut Vec<u8>| push.write_body_b64(member, parts, out);
                let data = Data::Encoded(&mut body);
                ws_session::notification_into(channel, version, encoding, data, frame);
            }
            Body::Copy(..) => {
                let data = Data::Raw(&[]);
                ws_session::notification_into(channel, version, encoding, data, frame);
            }
            Body::Raw(b) => {
                ws_session::notification_into(channel, version, encoding, Data::Raw(b), frame);
            }
        }
        let start = ws_frame::finish_text(frame);
        let r = write(&frame[start..]);
        for b in [frame, &mut parts.0, &mut parts.1] {
            if b.capacity() > SCRATCH_KEEP {
                *b = Vec::new();
            }
        }
        r
    })
}

/// Sets the socket's `SO_RCVLOWAT` (best effort: without it, reads are
/// only reported sooner).
fn set_rcvlowat(stream: &TcpStream, v: libc::c_int) {
    set_int_option(stream, libc::SOL_SOCKET, libc::SO_RCVLOWAT, v);
}

/// `setsockopt` of an int, best effort.
fn set_int_option(stream: &TcpStream, level: libc::c_int, name: libc::c_int, v: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket, and a pointer to an int of the given size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ListBody, ListMessage};
    use tokio::io::AsyncReadExt;

    async fn outlet() -> (Outlet, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let device = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let (tx, rx) = mpsc::channel(4);
        std::mem::forget(rx);
        (Outlet::new(s, tx), device)
    }

    fn push() -> ListPush {
        ListPush::new(ListMessage {
            id: [1; 16],
            list: [2; 16],
            seq: 1,
            created: 0,
            expires: u64::MAX,
            urgency: Default::default(),
            topic: None,
            body: ListBody::Empty,
            members: 3,
            failed: 0,
            fanout_done: false,
            receipt: None,
        })
        .unwrap()
    }

    fn member(n: u8) -> ListMember {
        ListMember {
            push: [n; 16],
            uaid: [n; 16],
            channel: [n; 16],
            joined: 0,
            expires: None,
            encrypted_key: None,
            header: None,
            previous: Vec::new(),
        }
    }

    fn rcvlowat(o: &Outlet) -> libc::c_int {
        int_option(o, libc::SOL_SOCKET, libc::SO_RCVLOWAT)
    }

    fn int_option(o: &Outlet, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket, and an int of the given size.
        let r = unsafe {
            libc::getsockopt(
                o.stream().as_raw_fd(),
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0);
        v
    }

    /// Reads one unmasked text frame's payload (short or 16-bit length).
    async fn read_frame(device: &mut TcpStream) -> String {
        let mut head = [0u8; 2];
        device.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0], 0x81, "a final text frame");
        let len = match head[1] {
            126 => {
                let mut l = [0u8; 2];
                device.read_exact(&mut l).await.unwrap();
                usize::from(u16::from_be_bytes(l))
            }
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        device.read_exact(&mut payload).await.unwrap();
        String::from_utf8(payload).unwrap()
    }

    #[tokio::test]
    async fn a_copy_is_written_once_until_acknowledged() {
        let (o, mut device) = outlet().await;
        let (p, m) = (push(), member(3));
        assert_eq!(o.write_copy(&p, &m, 8, false).unwrap(), Sent::Written);
        assert_eq!(o.write_copy(&p, &m, 8, false).unwrap(), Sent::Duplicate);
        let id = p.copy_id(&m);
        let text = read_frame(&mut device).await;
        assert!(
            text.starts_with(r#"{"messageType":"notification""#),
            "{text}"
        );
        assert!(text.contains(&shared::b64::encode(&id)), "{text}");
        let version = o.send_message(&m.channel, &id, p.encoding(), b"", 8).await;
        assert_eq!(version.unwrap(), Sent::Duplicate, "nor as a message");
        let ids = o.copy_done(&id).expect("in flight");
        assert_eq!((ids.list_message, ids.push), (p.msg.id, m.push));
        assert_eq!(o.write_copy(&p, &m, 8, false).unwrap(), Sent::Written);
        let again = read_frame(&mut device).await;
        assert_eq!(again, text, "the same version again");
    }

    #[tokio::test]
    async fn at_most_max_unacked_then_closed() {
        let (o, _device) = outlet().await;
        let p = push();
        assert_eq!(
            o.write_copy(&p, &member(1), 2, false).unwrap(),
            Sent::Written
        );
        let sent = o.send_message(&[9; 16], &[8; 16], p.encoding(), b"hi", 2);
        assert_eq!(sent.await.unwrap(), Sent::Written);
        assert!(o.full(2));
        assert_eq!(o.write_copy(&p, &member(2), 2, false).unwrap(), Sent::Full);
        o.message_done(&[8; 16], false);
        assert!(!o.full(2));
        assert_eq!(
            o.write_copy(&p, &member(2), 2, false).unwrap(),
            Sent::Written
        );
        o.close();
        assert_eq!(
            o.write_copy(&p, &member(3), 9, false).unwrap(),
            Sent::Closed
        );
        let sent = o.send_message(&[9; 16], &[7; 16], p.encoding(), b"", 9);
        assert_eq!(sent.await.unwrap(), Sent::Closed);
    }

    #[tokio::test]
    async fn nothing_is_written_after_a_close_frame() {
        let (o, mut device) = outlet().await;
        o.send_close(1001).await.unwrap();
        assert_eq!(
            o.write_copy(&push(), &member(1), 8, false).unwrap(),
            Sent::Closed
        );
        drop(o);
        let mut got = Vec::new();
        device.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [0x88, 0x02, 0x03, 0xe9], "the close frame alone");
    }

    #[tokio::test]
    async fn a_copy_the_task_fetched_and_was_acknowledged_is_not_written_again() {
        let (o, _device) = outlet().await;
        let (p, m) = (push(), member(4));
        let id = p.copy_id(&m);
        let sent = o.send_message(&m.channel, &id, p.encoding(), b"", 8).await;
        assert_eq!(sent.unwrap(), Sent::Written);
        o.message_done(&id, true);
        assert_eq!(o.write_copy(&p, &m, 8, false).unwrap(), Sent::Duplicate);
        assert_eq!(
            o.write_copy(&p, &member(5), 8, false).unwrap(),
            Sent::Written
        );
    }

    #[tokio::test]
    async fn a_raised_low_water_mark_is_lowered() {
        let (o, _device) = outlet().await;
        let p = push();
        assert_eq!(rcvlowat(&o), 1);
        o.write_copy(&p, &member(1), 8, true).unwrap();
        assert_eq!(rcvlowat(&o), RAISED_RCVLOWAT);
        o.write_copy(&p, &member(2), 8, false).unwrap();
        assert_eq!(rcvlowat(&o), RAISED_RCVLOWAT, "kept until lowered");
        o.lower();
        assert_eq!(rcvlowat(&o), 1);
    }

    #[tokio::test]
    async fn ack_at_once_turns_delayed_acks_off() {
        let (o, _device) = outlet().await;
        // `TCP_QUICKACK` reads 0 while the socket delays its ACKs
        // ("ping-pong" mode), which setting it to 0 enters as a quick
        // answer would.
        let quick = |o: &Outlet| int_option(o, libc::IPPROTO_TCP, libc::TCP_QUICKACK);
        set_int_option(o.stream(), libc::IPPROTO_TCP, libc::TCP_QUICKACK, 0);
        assert_eq!(quick(&o), 0);
        o.ack_at_once();
        assert_eq!(quick(&o), 1);
    }

    #[tokio::test]
    async fn a_rest_goes_out_whole_before_anything_else() {
        let (o, mut device) = outlet().await;
        // More than the socket takes while the device reads nothing.
        let big = vec![b'x'; 16 << 20];
        assert!(
            o.write_locked(&mut o.lock(), &big).unwrap(),
            "a rest is left"
        );
        let p = push();
        assert_eq!(o.write_copy(&p, &member(1), 8, false).unwrap(), Sent::Busy);
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; big.len()];
            device.read_exact(&mut got).await.unwrap();
            assert!(got.iter().all(|&b| b == b'x'));
            (read_frame(&mut device).await, device)
        });
        o.send(b"\x81\x02ok").await.unwrap();
        o.flush().await.unwrap();
        let (frame, mut device) = reader.await.unwrap();
        assert_eq!(frame, "ok", "whole frames, in order");
        // Again, now that the socket's buffers grew with that read (so write
        // until a rest is left): the rest goes out when the device reads.
        let chunk = vec![b'y'; 1 << 20];
        let mut total = 0;
        loop {
            total += chunk.len();
            if o.write_locked(&mut o.lock(), &chunk).unwrap() {
                break;
            }
            assert!(total < 1 << 30, "a rest is left at last");
        }
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; total];
            device.read_exact(&mut got).await.unwrap();
            assert!(got.iter().all(|&b| b == b'y'));
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), o.flush())
            .await
            .expect("flushed once the device read")
            .unwrap();
        reader.await.unwrap();
    }
}
