//! The WebSocket device endpoint: handshake, then one small task per
//! connection that reads frames, runs the [`Session`], and writes replies
//! and queued messages through the connection's [`Outlet`] (list copies are
//! written there by the fan-out itself). An idle connection holds no
//! buffer: reads go through a stack buffer and bytes are kept only while a
//! frame is incomplete.

use super::ws_frame::{self, Decoder, Incoming};
use super::ws_out::Outlet;
use super::ws_session::{self, Command, Session};
use crate::clock::now;
use crate::copy::{CopyOutlet, ListPush, Sent};
use crate::metrics::inc;
use crate::registration::{self, Owner, RegisterError};
use crate::registry::{ConnHandle, Outbound};
use crate::state::State;
use crate::store::{AckOutcome, ListMember, Message, Op, StoreError, UaKind};
use crate::tokens::{self, new_token, Token, TokenMap};
use shared::webpush_ws::ack_versions;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Stored messages read per store query while draining.
const DRAIN_PAGE: usize = 256;

/// Writes all of `buf` with `&TcpStream` (so reads can be awaited meanwhile).
async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads once into `buf`: `Ok(0)` at end of stream. A read that does not
/// fill `buf` clears the socket's readiness at once, sparing the second
/// read that would return `EAGAIN`: on Linux, data arriving later is a new
/// edge (and tokio keeps a later event's readiness).
fn read_once(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut got = None;
    let r = stream.try_io(tokio::io::Interest::READABLE, || {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        got = Some(n);
        if n > 0 && n < buf.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    match (got, r) {
        (Some(n), _) => Ok(n),
        (None, r) => Err(r.err().unwrap_or_else(|| io::ErrorKind::WouldBlock.into())),
    }
}

/// Answers a request that is not an upgrade this endpoint takes; `Ok(false)`.
async fn refuse(stream: &TcpStream, status: &str, body: &str) -> io::Result<bool> {
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    write_all(stream, resp.as_bytes()).await?;
    Ok(false)
}

/// Reads the upgrade request and answers it; `Ok(false)` if it was not one
/// (answered 400, or 431 past the configured size or header count).
async fn handshake(stream: &TcpStream, config: &crate::config::Config) -> io::Result<bool> {
    let (max_bytes, max_headers) = (
        config.ws_max_handshake_bytes,
        config.ws_max_handshake_headers,
    );
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let get = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                };
                let upgrade = get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
                let key = get("sec-websocket-key");
                let (true, Some(key)) = (upgrade && req.method == Some("GET"), key) else {
                    let body = "this is the push service's WebSocket endpoint";
                    return refuse(stream, "400 Bad Request", body).await;
                };
                let protocol = get("sec-websocket-protocol")
                    .filter(|p| p.split(',').any(|p| p.trim() == "push-notification"))
                    .map(|_| "Sec-WebSocket-Protocol: push-notification\r\n")
                    .unwrap_or("");
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{protocol}\r\n",
                    tungstenite::handshake::derive_accept_key(key.trim().as_bytes())
                );
                write_all(stream, resp.as_bytes()).await?;
                return Ok(true);
            }
            Ok(httparse::Status::Partial) if buf.len() < max_bytes => continue,
            Ok(httparse::Status::Partial) => {
                let body = format!("the upgrade request is longer than {max_bytes} bytes");
                return refuse(stream, "431 Request Header Fields Too Large", &body).await;
            }
            Err(httparse::Error::TooManyHeaders) => {
                let body = format!("the upgrade request has more than {max_headers} header fields");
                return refuse(stream, "431 Request Header Fields Too Large", &body).await;
            }
            Err(_) => return refuse(stream, "400 Bad Request", "malformed HTTP request").await,
        }
    }
}

/// The per-connection state the glue keeps beside the [`Session`].
struct Conn {
    state: Arc<State>,
    /// The sending side, shared with the fan-out.
    out: Arc<Outlet>,
    session: Session,
    /// Messages written and not yet acknowledged, by id (list copies in
    /// flight are the outlet's).
    inflight: TokenMap<Arc<Message>>,
    /// Taken at `hello`, just before the connection is registered: a list
    /// message recorded before it reaches the connection from its fan-out,
    /// one recorded after from the connection's own fetch.
    id: u64,
    /// The user agent was made by this connection's `hello` and has not
    /// registered yet: it holds no subscription.
    new_ua: bool,
    /// The client's address (if it could be read), for its subscription rate.
    peer: Option<std::net::IpAddr>,
    /// Subscriptions this connection made in the current minute.
    registered: shared::rate::Window,
    /// Stored messages acknowledged while the connection's queue held
    /// messages (see [`super::RecentAcks`]); emptied with the queue.
    acked_queued: super::RecentAcks,
    /// List copies were acknowledged since the last look for what is
    /// settled ([`crate::fanout::settle_later`]).
    copies_acked: bool,
    /// When the next such look may be, Unix seconds.
    settle_at: u32,
}

/// Serves one device connection to its end.
///
/// `_slot` is the connection's place among `--max-device-connections`,
/// given back when it ends.
pub async fn serve(stream: TcpStream, state: Arc<State>, _slot: crate::fd::Slot) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let hello_timeout = Duration::from_secs(state.config.hello_timeout_secs);
    match tokio::time::timeout(hello_timeout, Box::pin(handshake(&stream, &state.config))).await {
        Ok(Ok(true)) => {}
        _ => return,
    }
    inc(&state.metrics.ws_connections);
    let (tx, mut rx) = mpsc::channel(state.config.queue_depth);
    let min_ping = Duration::from_secs(state.config.ws_min_ping_interval_secs);
    let mut conn = Conn {
        state,
        out: Arc::new(Outlet::new(stream, tx)),
        session: Session::new(min_ping),
        inflight: TokenMap::default(),
        id: 0,
        new_ua: false,
        peer,
        registered: Default::default(),
        acked_queued: Default::default(),
        copies_acked: false,
        settle_at: 0,
    };
    let result = conn.run(&mut rx, hello_timeout).await;
    if let Err(e) = result {
        tracing::debug!("ws connection ended: {e}");
    }
    conn.finish(&mut rx);
}

/// What one read brought besides the acknowledgements settled on the way.
#[derive(Default)]
struct Read {
    /// Messages to handle in turn.
    incoming: Vec<Incoming>,
    /// Acknowledged versions this connection did not write: the store is
    /// asked about them ([`Conn::acknowledge`]).
    unsettled: Vec<(Token, AckOutcome)>,
}

/// Acknowledgements read in place during one read, settled together.
#[derive(Default)]
struct AckBatch {
    count: u64,
    ops: Vec<Op>,
}

impl Conn {
    /// Waits for the socket, then reads what it has; `None` at end of stream.
    async fn read_some(&mut self, decoder: &mut Decoder) -> io::Result<Option<Read>> {
        loop {
            self.out.stream().readable().await?;
            match self.read_ready(decoder) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// Reads once and decodes the frames completed: `None` at end of
    /// stream, `WouldBlock` if there was nothing to read after all. The
    /// acknowledgements it holds are settled here, with one queued store
    /// write and one count for all of them.
    fn read_ready(&mut self, decoder: &mut Decoder) -> io::Result<Option<Read>> {
        let mut buf = [0u8; 4096];
        let n = read_once(self.out.stream(), &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        let mut read = Read::default();
        let mut acks = AckBatch::default();
        let max = self.state.config.ws_max_message;
        decoder
            .feed(
                &mut buf[..n],
                max,
                &mut |text| self.take_ack(text, &mut acks, &mut read.unsettled),
                &mut read.incoming,
            )
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if acks.count > 0 {
            self.state.settled_acks(acks.count, acks.ops);
        }
        Ok(Some(read))
    }

    /// Settles an `ack` read in place (see [`ack_versions`]); `false` for
    /// any other text, or an `ack` before `hello`, which the [`Session`]
    /// reads. A version this connection did not write goes to `unsettled`.
    fn take_ack(
        &mut self,
        text: &str,
        acks: &mut AckBatch,
        unsettled: &mut Vec<(Token, AckOutcome)>,
    ) -> bool {
        if self.session.uaid().is_none() {
            return false;
        }
        let Some(versions) = ack_versions(text) else {
            return false;
        };
        for (v, code) in versions {
            let Some(id) = tokens::decode(v) else {
                continue;
            };
            let outcome = AckOutcome::of_ack(code);
            if self.settle_written(id, outcome, &mut acks.ops) {
                acks.count += 1;
            } else {
                unsettled.push((id, outcome));
            }
        }
        true
    }

    /// Settles `id` if this connection wrote it (a message of its own, or a
    /// list copy), its store write appended to `ops`; `false` if it did not.
    fn settle_written(&mut self, id: Token, outcome: AckOutcome, ops: &mut Vec<Op>) -> bool {
        if let Some(m) = self.inflight.remove(&id) {
            let queue = self.out.queue();
            if m.seq != 0 && queue.capacity() < queue.max_capacity() {
                self.acked_queued.note(id, &self.state.config);
            }
            self.out.message_done(&id, m.list_message.is_some());
            self.copies_acked |= m.list_message.is_some();
            self.state.acknowledged_into(&m, outcome, ops);
        } else if let Some(c) = self.out.copy_done(&id) {
            self.copies_acked = true;
            self.state
                .copy_acknowledged_into(c.list_message, c.push, outcome, ops);
        } else {
            return false;
        }
        true
    }

    /// Handles what the device sent; `false` once it closed. After
    /// answering, turns the socket's delayed ACKs off again
    /// ([`Outlet::ack_at_once`]), once per batch.
    async fn handle_incoming(&mut self, read: Read) -> io::Result<bool> {
        if !read.unsettled.is_empty() {
            self.acknowledge_all(read.unsettled).await;
        }
        self.settle_now_and_then();
        let mut answered = false;
        for msg in read.incoming {
            match msg {
                Incoming::Text(t) => answered |= self.handle_text(&t).await?,
                Incoming::Ping(p) => {
                    let mut out = Vec::new();
                    ws_frame::pong(&p, &mut out);
                    self.out.send(&out).await?;
                    answered = true;
                }
                Incoming::Close => {
                    let _ = self.out.send_close(1000).await;
                    return Ok(false);
                }
            }
        }
        if answered {
            self.out.ack_at_once();
        }
        Ok(true)
    }

    /// After acknowledged list copies, at most once per
    /// `--list-settle-secs` (2 s at least, the first that long after the
    /// connection's first acknowledged copy), records in the background what
    /// the device's lists have settled for it: a device that stays
    /// connected while its lists send keeps its next `hello` short.
    fn settle_now_and_then(&mut self) {
        if !self.copies_acked {
            return;
        }
        let Some(uaid) = self.session.uaid() else {
            return;
        };
        let now = u32::try_from(crate::clock::now()).unwrap_or(u32::MAX);
        let every = u32::try_from(self.state.config.list_settle_secs.max(2)).unwrap_or(u32::MAX);
        if self.settle_at == 0 {
            // The hello looked: nothing it left is settled sooner.
            self.settle_at = now.saturating_add(every);
            self.copies_acked = false;
        }
        if now < self.settle_at {
            return;
        }
        self.copies_acked = false;
        self.settle_at = now.saturating_add(every);
        crate::fanout::settle_later(&self.state, uaid);
    }

    /// Until `hello` is done; `false` if the device went away first.
    async fn until_hello(&mut self, decoder: &mut Decoder) -> io::Result<bool> {
        while self.session.uaid().is_none() {
            match self.read_some(decoder).await? {
                None => return Ok(false),
                Some(incoming) => {
                    if !self.handle_incoming(incoming).await? {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    async fn run(
        &mut self,
        rx: &mut mpsc::Receiver<Outbound>,
        hello_timeout: Duration,
    ) -> io::Result<()> {
        let mut decoder = Decoder::default();
        // The rarely used paths are boxed, so that an idle connection's task
        // is only as large as this loop's waiting state.
        match tokio::time::timeout(hello_timeout, Box::pin(self.until_hello(&mut decoder))).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "no hello")),
        }
        self.pull_if_pending(rx).await?;
        loop {
            let paused = self.state.burst.reads_paused();
            tokio::select! {
                biased;
                out = rx.recv() => match out {
                    Some(Outbound::Message { msg, written }) => {
                        if self.acked_queued.contains(&msg.id) {
                            // Fetched, written and acknowledged meanwhile.
                            let _ = written.send(());
                        } else if Box::pin(self.send_message(msg)).await? {
                            // Not written (too many unacknowledged): a
                            // dropped `written` has its sender store it.
                            let _ = written.send(());
                        }
                        if rx.is_empty() {
                            self.acked_queued.clear();
                        }
                        self.pull_if_pending(rx).await?;
                    }
                    Some(Outbound::Copy(c)) => {
                        Box::pin(self.send_copy(&c.push, &c.member)).await?;
                        drop(c);
                        self.pull_if_pending(rx).await?;
                    }
                    Some(Outbound::Nudge) => {
                        // A fan-out's copy may have left a rest: it goes first.
                        self.out.flush().await?;
                        self.pull_if_pending(rx).await?;
                    }
                    Some(Outbound::Close(reason)) => {
                        let _ = self.out.send_close(reason.code()).await;
                        return Ok(());
                    }
                    None => {
                        let _ = self.out.send_close(1000).await;
                        return Ok(());
                    }
                },
                _ = self.state.burst.resumed(), if paused => {}
                r = self.out.stream().readable(), if !paused => {
                    r?;
                    let incoming = match self.read_ready(&mut decoder) {
                        Ok(Some(incoming)) => incoming,
                        Ok(None) => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    };
                    if !Box::pin(self.handle_incoming(incoming)).await? {
                        return Ok(());
                    }
                    // Acknowledgements may have made room for what waited.
                    self.pull_if_pending(rx).await?;
                },
            }
        }
    }

    /// Once the queue is empty, fetches what did not fit it: stored
    /// messages and pending list copies.
    async fn pull_if_pending(&mut self, rx: &mpsc::Receiver<Outbound>) -> io::Result<()> {
        // The flag first: it is this connection's own, while the queue's
        // state is shared with its senders.
        if self.out.pending().load(Ordering::Acquire)
            && !self.full()
            && rx.is_empty()
            && self.out.pending().swap(false, Ordering::AcqRel)
        {
            if let Some(uaid) = self.session.uaid() {
                Box::pin(self.fetch_waiting(uaid)).await?;
            }
        }
        Ok(())
    }

    /// Sends the stored messages, then the list copies, waiting for this
    /// user agent. If the store cannot be read (Redis away), the connection
    /// stays, marked to fetch them again at its next nudge (every
    /// connection of a node is nudged when its Redis comes back).
    async fn fetch_waiting(&mut self, uaid: Token) -> io::Result<()> {
        let fetched = match self.drain(uaid).await? {
            Ok(()) => self.send_pending_copies(uaid).await?,
            Err(e) => Err(e),
        };
        if let Err(e) = fetched {
            tracing::warn!("fetching what waits for a device: {e}");
            self.out.pending().store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Sends the list copies waiting for this user agent (the outer error:
    /// the socket's; the inner: the store's).
    /// (Called right after [`Conn::drain`], which settled pending writes.)
    async fn send_pending_copies(&mut self, uaid: Token) -> io::Result<Result<(), StoreError>> {
        if self.full() {
            // Fetched once acknowledgements make room.
            self.out.pending().store(true, Ordering::Release);
            return Ok(Ok(()));
        }
        let limit = self.state.config.max_unacked;
        let (copies, more) =
            match crate::fanout::waiting_copies(&self.state, uaid, limit, |_| true).await {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
        for m in copies {
            if !self.send_message(Arc::new(m)).await? {
                return Ok(Ok(()));
            }
        }
        if more {
            // Fetched again once acknowledgements make room.
            self.out.pending().store(true, Ordering::Release);
        }
        Ok(Ok(()))
    }

    /// Whether as many messages as allowed wait for their acknowledgement:
    /// further ones stay stored (or with their list) until some are
    /// acknowledged, so a device that never acknowledges holds bounded memory.
    fn full(&self) -> bool {
        self.out.full(self.state.config.max_unacked)
    }

    /// Notes that something was left for later because the connection is
    /// [`full`](Conn::full); fetched once acknowledgements make room.
    fn defer(&self) {
        self.out.pending().store(true, Ordering::Release);
        inc(&self.state.metrics.messages_deferred_unacked);
    }

    async fn reply(&self, text: &str) -> io::Result<()> {
        let mut out = Vec::new();
        ws_frame::text(text, &mut out);
        self.out.send(&out).await
    }

    /// Writes a message unless it is written already or expired; `false`
    /// if it was left for later because the connection is [`full`](Conn::full).
    async fn send_message(&mut self, msg: Arc<Message>) -> io::Result<bool> {
        if self.inflight.contains_key(&msg.id) || msg.expires < now() && msg.seq != 0 {
            return Ok(true);
        }
        let max = self.state.config.max_unacked;
        let sent = self
            .out
            .send_message(&msg.channel, &msg.id, &msg.encoding, &msg.body, max)
            .await?;
        match sent {
            Sent::Written => {
                inc(&self.state.metrics.messages_sent);
                self.inflight.insert(msg.id, msg);
                Ok(true)
            }
            Sent::Full | Sent::Busy => {
                self.defer();
                Ok(false)
            }
            Sent::Duplicate => Ok(true),
            // Only after the close frame: its sender stores it.
            Sent::Closed => Ok(false),
        }
    }

    /// Sends a list member's copy (one its queue held); the outlet keeps
    /// only the copy's ids until it is acknowledged.
    async fn send_copy(&mut self, push: &ListPush, member: &ListMember) -> io::Result<()> {
        let max = self.state.config.max_unacked;
        self.out.flush().await?;
        match self.out.write_copy(push, member, max, false)? {
            Sent::Written => inc(&self.state.metrics.messages_sent),
            // Fetched from its list once acknowledgements make room.
            Sent::Full => self.defer(),
            // A fan-out's copy went first: fetched from its list later.
            Sent::Busy => self.out.pending().store(true, Ordering::Release),
            Sent::Duplicate | Sent::Closed => {}
        }
        self.out.flush().await
    }

    /// Handles one text message; whether it was answered (a reply, and
    /// after `hello` the stored messages).
    async fn handle_text(&mut self, text: &str) -> io::Result<bool> {
        let cmd = self
            .session
            .receive(text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let store_err = |e| io::Error::other(e);
        match cmd {
            Command::Reply(r) => self.reply(&r).await?,
            Command::Ping => {
                self.session
                    .pinged(std::time::Instant::now())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                self.reply(shared::webpush_ws::PING).await?;
            }
            Command::Hello { requested } => {
                let st = &self.state;
                if requested.is_some() {
                    // Its record may still be queued for commit (a quick reconnect).
                    st.settle().await.map_err(store_err)?;
                }
                let known = match requested {
                    Some(u) => st
                        .store
                        .user_agent(&u)
                        .map_err(store_err)?
                        .filter(|ua| ua.kind == UaKind::WebSocket)
                        .map(|ua| {
                            // Connecting keeps it from its idle expiry.
                            st.seen(&ua);
                            ua.uaid
                        }),
                    None => None,
                };
                // A new user agent is recorded with its first subscription,
                // so that devices that only say `hello` leave nothing behind.
                let uaid = known.unwrap_or_else(new_token);
                self.new_ua = known.is_none();
                self.session.hello_done(uaid);
                self.reply(&ws_session::hello_reply(&uaid)).await?;
                self.id = st.registry.next_id();
                st.registry.insert(
                    uaid,
                    ConnHandle {
                        outlet: Some(self.out.clone()),
                        tx: self.out.queue().clone(),
                        id: self.id,
                        pending: self.out.pending().clone(),
                        protocol: crate::registry::Protocol::WebSocket,
                    },
                );
                if known.is_some() {
                    if let Some(c) = st.cluster.get() {
                        // See `Cluster::routed`; if Redis is away, every
                        // connection looks again once it is back.
                        c.routed().await;
                    }
                    // Fetched once the hello is done, outside its timeout:
                    // in a reconnect storm the fetch may wait its turn
                    // (`--hello-work-concurrency`) longer than that.
                    self.out.pending().store(true, Ordering::Release);
                }
            }
            Command::Register { channel, key } => {
                let uaid = self.session.uaid().expect("after hello");
                let st = &self.state;
                if st
                    .count_subscription(&mut self.registered, self.peer)
                    .is_err()
                {
                    let refused = ws_session::register_error(&tokens::to_uuid(&channel), 429);
                    self.reply(&refused).await?;
                    return Ok(true);
                }
                let owner = Owner::WebSocket {
                    uaid,
                    channel,
                    new: std::mem::take(&mut self.new_ua),
                };
                let reply = match registration::register(st, owner, key.map(|k| k.0)).await {
                    Ok(s) => ws_session::register_reply(
                        &channel,
                        &crate::urls::push_resource(&st.config, &s.push),
                    ),
                    Err(RegisterError::Conflict) => {
                        ws_session::register_error(&tokens::to_uuid(&channel), 409)
                    }
                    Err(RegisterError::TooMany(_)) => {
                        ws_session::register_error(&tokens::to_uuid(&channel), 429)
                    }
                    Err(RegisterError::Store(e)) => {
                        // The store cannot take it now (Redis away, a
                        // replica late): the device may try again; its
                        // connection stays.
                        tracing::warn!("register: {e}");
                        ws_session::register_error(&tokens::to_uuid(&channel), 500)
                    }
                };
                self.reply(&reply).await?;
            }
            Command::Unregister { channel } => {
                let uaid = self.session.uaid().expect("after hello");
                let st = &self.state;
                if let Some(s) = st
                    .store
                    .subscription_by_channel(&uaid, &channel)
                    .map_err(store_err)?
                {
                    // The last subscription takes the user agent's record
                    // with it: a reconnect with this uaid then gets a new one.
                    let end = Op::DeleteSubscription {
                        push: s.push,
                        forget_at: st.forget_ended_at(),
                    };
                    let ops = vec![end, Op::DeleteUaIfEmpty(uaid)];
                    st.committer.write(ops).await.map_err(store_err)?;
                }
                self.reply(&ws_session::unregister_reply(
                    &tokens::to_uuid(&channel),
                    200,
                ))
                .await?;
            }
            Command::Ack(versions) => {
                let versions = versions
                    .into_iter()
                    .map(|(v, code)| (v, AckOutcome::of_ack(code)))
                    .collect();
                self.acknowledge_all(versions).await;
                return Ok(false);
            }
            Command::Nack(v) => {
                self.acknowledge(v, AckOutcome::Rejected, &mut false).await;
                return Ok(false);
            }
            Command::Nothing => return Ok(false),
        }
        Ok(true)
    }

    /// Acknowledges `versions` (see [`Conn::acknowledge`]).
    async fn acknowledge_all(&mut self, mut versions: Vec<(Token, AckOutcome)>) {
        // A version given twice counts once: the store is settled once per
        // call, so a repeat could find its message still there.
        versions.sort_unstable_by_key(|(v, _)| *v);
        versions.dedup_by_key(|(v, _)| *v);
        let mut settled = false;
        for (v, outcome) in versions {
            self.acknowledge(v, outcome, &mut settled).await;
        }
    }

    /// Forgets an acknowledged message, deletes it from the store, and sends
    /// its receipt. `settled` is shared by the versions of one `ack`, so that
    /// however many of them this connection did not write, the store's
    /// queued writes are waited for once.
    async fn acknowledge(&mut self, id: Token, outcome: AckOutcome, settled: &mut bool) {
        let mut ops = Vec::new();
        if self.settle_written(id, outcome, &mut ops) {
            return self.state.settled_acks(1, ops);
        }
        // Written by an earlier connection: it must be stored and ours (and
        // not acknowledged already, with the deletion still queued).
        if !*settled {
            if self.state.settle().await.is_err() {
                return;
            }
            *settled = true;
        }
        let uaid = self.session.uaid().expect("after hello");
        match self.state.store.message(&id) {
            Ok(Some(m)) if m.uaid == uaid => self.state.acknowledged(&m, outcome),
            _ => {}
        }
    }

    /// Sends the user agent's stored messages, oldest first (the outer
    /// error: the socket's; the inner: the store's).
    async fn drain(&mut self, uaid: Token) -> io::Result<Result<(), StoreError>> {
        if let Err(e) = self.state.settle().await {
            return Ok(Err(e));
        }
        let mut after = 0;
        loop {
            let page = match self.state.store.messages(&uaid, after, now(), DRAIN_PAGE) {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            let done = page.len() < DRAIN_PAGE;
            for m in page {
                after = m.seq;
                if !self.send_message(Arc::new(m)).await? {
                    return Ok(Ok(()));
                }
            }
            if done {
                return Ok(Ok(()));
            }
        }
    }

    /// Unregisters, and stores what was written but not acknowledged.
    fn finish(mut self, rx: &mut mpsc::Receiver<Outbound>) {
        rx.close();
        // List copies are fetched again from their list at the next hello.
        self.out.close();
        // Queued messages whose sender waits will be stored by that sender.
        let unacked: Vec<Arc<Message>> = self.inflight.drain().map(|(_, m)| m).collect();
        // Queued for commit before the connection leaves the registry, so
        // that shutdown (which waits for both) cannot miss them.
        self.state.store_unacked(unacked);
        if let Some(uaid) = self.session.uaid() {
            self.state.registry.remove(&uaid, self.id);
        }
    }
}
