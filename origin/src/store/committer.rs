//! Group commit: one thread applies the writes of many concurrent requests
//! in one transaction, so that each pays a share of one fsync.

use super::{Op, Store, StoreError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Writes, and who waits for their commit (nobody, for [`Committer::enqueue`]).
type Request = (Vec<Op>, Option<oneshot::Sender<Result<(), StoreError>>>);

/// A handle to submit writes; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
    /// Requests submitted and not yet committed.
    pending: Arc<AtomicUsize>,
}

impl Committer {
    /// Starts the commit thread. At most `max_batch` requests share a commit.
    pub fn start(store: Arc<dyn Store>, max_batch: usize) -> Committer {
        let (tx, mut rx) = mpsc::channel::<Request>(64 * 1024);
        let pending = Arc::new(AtomicUsize::new(0));
        let done_count = pending.clone();
        std::thread::Builder::new()
            .name("committer".into())
            .spawn(move || {
                let mut batch: Vec<Request> = Vec::with_capacity(max_batch);
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    while batch.len() < max_batch {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    let n = batch.len();
                    commit(&*store, &mut batch);
                    done_count.fetch_sub(n, Ordering::AcqRel);
                }
            })
            .expect("spawn the committer thread");
        Committer { tx, pending }
    }

    /// Applies `ops` durably; returns once they are committed.
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send((ops, Some(done))).await.is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::Closed);
        }
        wait.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues `ops` without waiting for the commit. Writes queued (or
    /// awaited) one after the other commit in that order.
    pub fn enqueue(&self, ops: Vec<Op>) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send((ops, None)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(req)) => {
                // Overloaded: wait for room off this task (order may slip).
                let tx = self.tx.clone();
                let pending = self.pending.clone();
                tokio::spawn(async move {
                    if tx.send(req).await.is_err() {
                        pending.fetch_sub(1, Ordering::AcqRel);
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                tracing::error!("store write dropped: the committer has stopped");
            }
        }
    }

    /// Requests submitted and not yet committed.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

/// Commits a batch; if the batch fails, each request is retried alone so
/// that one bad request cannot fail the others.
fn commit(store: &dyn Store, batch: &mut Vec<Request>) {
    let all: Vec<&Op> = batch.iter().flat_map(|(ops, _)| ops.iter()).collect();
    match store.apply(&all) {
        Ok(()) => {
            for (_, done) in batch.drain(..) {
                if let Some(d) = done {
                    let _ = d.send(Ok(()));
                }
            }
        }
        Err(e) if batch.len() == 1 => {
            let (_, done) = batch.pop().expect("one request");
            match done {
                Some(d) => {
                    let _ = d.send(Err(e));
                }
                None => tracing::error!("background store write failed: {e}"),
            }
        }
        Err(_) => {
            for (ops, done) in batch.drain(..) {
                let refs: Vec<&Op> = ops.iter().collect();
                let r = store.apply(&refs);
                match done {
                    Some(d) => {
                        let _ = d.send(r);
                    }
                    None => {
                        if let Err(e) = r {
                            tracing::error!("background store write failed: {e}");
                        }
                    }
                }
            }
        }
    }
}
