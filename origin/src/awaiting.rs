//! Messages handed to their device whose write to the store is queued
//! and may yet be skipped; and those this node wrote for a push another
//! node took, whose acknowledgement that node must hear.
//!
//! A push to a connected device is answered `201` once the message is
//! durable: committed to the store, or acknowledged by the device (then
//! nothing is left to keep), whichever comes first. Its write is queued
//! at once, beside the hand-over to the device, and the committer skips
//! it if the acknowledgement came first: an idle store commits every
//! message as it comes, and a busy one, whose queue is longer than a
//! device's round trip, stops paying a write and a deletion (each an
//! fsync, and on Redis a replica's `WAIT`) for messages already
//! acknowledged. The goal is the cluster's single-push throughput
//! (docs/performance.md, scenario l), which the store's writes bound.
//!
//! Every transition happens under one lock, so an acknowledgement that
//! arrives while its message is committing is not lost: its deletion is
//! queued after the write (see [`Acked::Deferred`]).

use crate::tokens::Token;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a record of a message written for another node's push is
/// kept: past it, the other node has committed the message (or answered
/// the push with an error), and an acknowledgement deletes it here.
const REMOTE_KEPT: Duration = Duration::from_secs(30);

/// What an acknowledgement found.
#[derive(Debug, PartialEq, Eq)]
pub enum Acked {
    /// Its write was not committed yet: it is skipped, and the push answered.
    Taken,
    /// Its write is committing: its push queues the deletion after it.
    Deferred,
    /// The push was taken by this node: its acknowledgement goes there.
    Remote(Arc<str>),
    /// Nobody waits: the message is stored (or gone); delete it.
    NotWaiting,
}

enum Entry {
    Waiting(oneshot::Sender<()>),
    Storing { acked: bool },
    Remote { node: Arc<str>, at: Instant },
}

/// The messages written and not yet stored, by id.
#[derive(Default)]
pub struct Awaiting {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Token, Entry>,
    /// Remote records, oldest first, to forget them after [`REMOTE_KEPT`].
    remote: VecDeque<(Instant, Token)>,
}

impl Awaiting {
    /// Waits for message `id`'s acknowledgement: the guard's receiver ends
    /// when it arrives.
    pub fn wait(self: &Arc<Self>, id: Token) -> (Guard, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        self.lock().map.insert(id, Entry::Waiting(tx));
        let guard = Guard {
            awaiting: self.clone(),
            id,
        };
        (guard, rx)
    }

    /// Message `id` was acknowledged (or refused) by its device.
    pub fn acked(&self, id: &Token) -> Acked {
        let mut inner = self.lock();
        match inner.map.get_mut(id) {
            None => Acked::NotWaiting,
            Some(Entry::Storing { acked }) => {
                *acked = true;
                Acked::Deferred
            }
            Some(Entry::Waiting(_)) => {
                if let Some(Entry::Waiting(tx)) = inner.map.remove(id) {
                    let _ = tx.send(());
                }
                Acked::Taken
            }
            Some(Entry::Remote { .. }) => match inner.map.remove(id) {
                Some(Entry::Remote { node, .. }) => Acked::Remote(node),
                _ => unreachable!("matched a remote record"),
            },
        }
    }

    /// The committer is about to write message `id`: whether it still
    /// should (`false`: its device acknowledged it, or its push is gone).
    /// An acknowledgement from now on is [`Acked::Deferred`].
    pub fn begin_commit(&self, id: &Token) -> bool {
        let mut inner = self.lock();
        match inner.map.get_mut(id) {
            Some(e @ Entry::Waiting(_)) => {
                *e = Entry::Storing { acked: false };
                true
            }
            Some(Entry::Storing { .. }) => true,
            _ => false,
        }
    }

    /// Message `id`, written here for a push node `node` took, will be
    /// acknowledged here.
    pub fn remote(&self, id: Token, node: Arc<str>) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.map.insert(id, Entry::Remote { node, at: now });
        inner.remote.push_back((now, id));
        while let Some(&(at, old)) = inner.remote.front() {
            if now.duration_since(at) < REMOTE_KEPT {
                break;
            }
            inner.remote.pop_front();
            if matches!(inner.map.get(&old), Some(Entry::Remote { at: a, .. }) if *a == at) {
                inner.map.remove(&old);
            }
        }
    }

    /// Message `id`, for another node's push, was not written here.
    pub fn not_remote(&self, id: &Token) {
        let mut inner = self.lock();
        if matches!(inner.map.get(id), Some(Entry::Remote { .. })) {
            inner.map.remove(id);
        }
    }

    /// Whether no message is waited for or written for another node.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.lock().map.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("awaiting lock")
    }
}

/// A push's wait for its message's acknowledgement; forgotten on drop.
pub struct Guard {
    awaiting: Arc<Awaiting>,
    id: Token,
}

impl Guard {
    /// The message's write was committed (or skipped): whether it was
    /// acknowledged while committing (then the caller queues its deletion
    /// after the write). Later acknowledgements find nobody waiting and
    /// delete it themselves.
    pub fn committed(self) -> bool {
        let mut inner = self.awaiting.lock();
        matches!(
            inner.map.remove(&self.id),
            Some(Entry::Storing { acked: true })
        )
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut inner = self.awaiting.lock();
        if matches!(
            inner.map.get(&self.id),
            Some(Entry::Waiting(_) | Entry::Storing { .. })
        ) {
            inner.map.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_while_waiting_is_taken() {
        let a = Arc::new(Awaiting::default());
        let (g, mut rx) = a.wait([1; 16]);
        assert_eq!(a.acked(&[1; 16]), Acked::Taken);
        assert!(rx.try_recv().is_ok());
        assert!(!a.begin_commit(&[1; 16]), "nothing to commit");
        assert!(!g.committed());
        assert!(a.is_empty());
    }

    #[test]
    fn an_ack_while_committing_is_deferred_to_the_push() {
        let a = Arc::new(Awaiting::default());
        let (g, _rx) = a.wait([2; 16]);
        assert!(a.begin_commit(&[2; 16]));
        assert_eq!(a.acked(&[2; 16]), Acked::Deferred);
        assert!(g.committed(), "the push queues the deletion");
        assert_eq!(a.acked(&[2; 16]), Acked::NotWaiting);
        assert!(a.is_empty());
    }

    #[test]
    fn an_ack_after_the_commit_deletes() {
        let a = Arc::new(Awaiting::default());
        let (g, _rx) = a.wait([3; 16]);
        assert!(a.begin_commit(&[3; 16]));
        assert!(!g.committed());
        assert_eq!(a.acked(&[3; 16]), Acked::NotWaiting);
    }

    #[test]
    fn a_dropped_wait_is_forgotten() {
        let a = Arc::new(Awaiting::default());
        let (g, _rx) = a.wait([4; 16]);
        drop(g);
        assert!(a.is_empty());
        assert!(!a.begin_commit(&[4; 16]), "its push is gone");
        assert_eq!(a.acked(&[4; 16]), Acked::NotWaiting);
    }

    #[test]
    fn a_remote_ack_names_the_node_once() {
        let a = Arc::new(Awaiting::default());
        a.remote([5; 16], "n1".into());
        assert_eq!(a.acked(&[5; 16]), Acked::Remote("n1".into()));
        assert_eq!(a.acked(&[5; 16]), Acked::NotWaiting);
        a.remote([6; 16], "n1".into());
        a.not_remote(&[6; 16]);
        assert!(a.is_empty());
    }
}
