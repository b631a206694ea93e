//! Which user agents are connected now, and the bounded queue of each.

use crate::store::Message;
use crate::tokens::{Token, TokenMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Something for a connection to do.
#[derive(Debug)]
pub enum Outbound {
    /// Send a message; signal `written` once it is on the socket.
    Message {
        /// The message.
        msg: Arc<Message>,
        /// Told when the frame has been written; dropped unwritten, it has
        /// the sender store the message instead.
        written: oneshot::Sender<()>,
    },
    /// Send a list member's copy of a list message, assembled on the way out.
    Copy(Box<crate::copy::QueuedCopy>),
    /// Fetch what is pending (stored messages, list copies): sent after
    /// setting `pending`, in case the queue drained in between.
    Nudge,
    /// Close the connection.
    Close(CloseReason),
}

impl ConnHandle {
    /// Marks that something did not fit the queue, and nudges the connection.
    pub fn mark_pending(&self) {
        self.pending
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = self.tx.try_send(Outbound::Nudge);
    }
}

/// Why the service closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// A newer connection took over this user agent.
    Replaced,
    /// The service is shutting down: reconnect (WebSocket close 1001, Going Away).
    ShuttingDown,
    /// The subscription (`Some`) or the user agent (`None`) was deleted: a
    /// monitoring request on it ends with `404`.
    Ended(Option<crate::tokens::Token>),
}

impl CloseReason {
    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Replaced | CloseReason::Ended(_) => 1000,
            CloseReason::ShuttingDown => 1001,
        }
    }
}

/// The sending side of a connection's queue.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    /// The queue.
    pub tx: mpsc::Sender<Outbound>,
    /// Distinguishes connections of the same user agent over time.
    pub id: u64,
    /// Set when a message or list copy did not fit the queue: the connection
    /// fetches its stored messages and pending list copies once its queue is empty.
    pub pending: Arc<std::sync::atomic::AtomicBool>,
    /// The device protocol of the connection.
    pub protocol: Protocol,
    /// A WebSocket connection's sending side, which the fan-out writes
    /// list copies to directly.
    pub outlet: Option<Arc<dyn crate::copy::CopyOutlet>>,
}

/// The device protocol a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The Firefox (autopush) WebSocket protocol.
    WebSocket = 0,
    /// RFC 8030 over HTTP/2.
    Http2 = 1,
}

impl Protocol {
    /// Every protocol, in metric order.
    pub const ALL: [Protocol; 2] = [Protocol::WebSocket, Protocol::Http2];

    /// The `protocol` label of its metrics.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::WebSocket => "websocket",
            Protocol::Http2 => "http2",
        }
    }
}

const SHARDS: usize = 64;

/// Told of every connection that comes and goes (the cluster's route
/// records); called outside the registry's locks, and must not block.
pub trait Presence: Send + Sync {
    /// `uaid` connected here, as connection `id`.
    fn arrived(&self, uaid: &Token, id: u64);
    /// Connection `id` of `uaid` ended (and no newer one replaced it).
    fn left(&self, uaid: &Token, id: u64);
}

/// Connected user agents by uaid.
pub struct Registry {
    shards: Box<[Mutex<TokenMap<ConnHandle>>]>,
    next_id: AtomicU64,
    count: [AtomicUsize; 2],
    presence: std::sync::OnceLock<Arc<dyn Presence>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(TokenMap::default()))
                .collect(),
            next_id: AtomicU64::new(1),
            count: Default::default(),
            presence: Default::default(),
        }
    }
}

impl Registry {
    fn shard(&self, uaid: &Token) -> &Mutex<TokenMap<ConnHandle>> {
        &self.shards[uaid[0] as usize % SHARDS]
    }

    /// A fresh connection id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The id the next connection will get: connections from now on have
    /// this id or a larger one.
    pub fn id_mark(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
    }

    /// Sets who is told of connections (once, before the first).
    pub fn set_presence(&self, p: Arc<dyn Presence>) {
        let _ = self.presence.set(p);
    }

    /// Every connected user agent and its handle (a snapshot).
    pub fn handles(&self) -> Vec<(Token, ConnHandle)> {
        let mut out = Vec::with_capacity(self.len());
        for s in self.shards.iter() {
            let s = s.lock().expect("registry lock");
            out.extend(s.iter().map(|(u, h)| (*u, h.clone())));
        }
        out
    }

    /// Registers a connection; a previous one of the same user agent is told to close.
    pub fn insert(&self, uaid: Token, handle: ConnHandle) {
        if let Some(p) = self.presence.get() {
            p.arrived(&uaid, handle.id);
        }
        self.count[handle.protocol as usize].fetch_add(1, Ordering::Relaxed);
        let old = self
            .shard(&uaid)
            .lock()
            .expect("registry lock")
            .insert(uaid, handle);
        if let Some(old) = old {
            self.count[old.protocol as usize].fetch_sub(1, Ordering::Relaxed);
            let _ = old.tx.try_send(Outbound::Close(CloseReason::Replaced));
        }
    }

    /// Unregisters a connection, unless a newer one has replaced it.
    pub fn remove(&self, uaid: &Token, id: u64) {
        let removed = {
            let mut shard = self.shard(uaid).lock().expect("registry lock");
            if shard.get(uaid).is_some_and(|h| h.id == id) {
                shard.remove(uaid)
            } else {
                None
            }
        };
        if let Some(h) = removed {
            self.count[h.protocol as usize].fetch_sub(1, Ordering::Relaxed);
            if let Some(p) = self.presence.get() {
                p.left(uaid, id);
            }
        }
    }

    /// The queue of a connected user agent.
    pub fn get(&self, uaid: &Token) -> Option<mpsc::Sender<Outbound>> {
        self.shard(uaid)
            .lock()
            .expect("registry lock")
            .get(uaid)
            .map(|h| h.tx.clone())
    }

    /// Runs `f` on a connected user agent's handle, without cloning it;
    /// `f` runs under a lock, so it must not block.
    pub fn with<R>(&self, uaid: &Token, f: impl FnOnce(&ConnHandle) -> R) -> Option<R> {
        self.shard(uaid)
            .lock()
            .expect("registry lock")
            .get(uaid)
            .map(f)
    }

    /// The handle of a connected user agent.
    pub fn handle(&self, uaid: &Token) -> Option<ConnHandle> {
        self.shard(uaid)
            .lock()
            .expect("registry lock")
            .get(uaid)
            .cloned()
    }

    /// How many user agents are connected.
    pub fn len(&self) -> usize {
        Protocol::ALL.iter().map(|&p| self.connected(p)).sum()
    }

    /// How many user agents are connected over `protocol`.
    pub fn connected(&self, protocol: Protocol) -> usize {
        self.count[protocol as usize].load(Ordering::Relaxed)
    }

    /// Whether none is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells the connection of `uaid`, if here, that its subscription
    /// `which` (or, `None`, all of it) was deleted.
    pub fn ended(&self, uaid: &Token, which: Option<Token>) {
        if let Some(tx) = self.get(uaid) {
            let _ = tx.try_send(Outbound::Close(CloseReason::Ended(which)));
        }
    }

    /// Closes every connection (at shutdown).
    pub fn close_all(&self) {
        for s in self.shards.iter() {
            for h in s.lock().expect("registry lock").values() {
                let _ = h.tx.try_send(Outbound::Close(CloseReason::ShuttingDown));
            }
        }
    }
}
