//! Group commit: one thread applies the writes of many concurrent requests
//! in one transaction, so that each pays a share of one fsync.
//!
//! Writes nobody waits for ([`Committer::enqueue`]: acknowledgements,
//! clean-ups) may wait up to a delay for company: a burst of them (the acks
//! of a fan-out) then shares a few large commits instead of many small ones,
//! and leaves the CPU to the deliveries meanwhile. A write somebody waits for
//! ends the delay at once.

use super::{Dropped, Op, Store, StoreError};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Writes, and who waits for their commit (nobody, for [`Committer::enqueue`]).
type Request = (Vec<Op>, Option<oneshot::Sender<Result<(), StoreError>>>);

/// Asked on the commit thread just before a request's writes join a
/// commit: whether they still should (`false`: they are skipped, and the
/// request answered as committed). See [`Committer::submit_unless`].
pub type Wanted = Box<dyn FnOnce() -> bool + Send>;

/// Told, on the commit thread, of the messages each commit dropped
/// undelivered.
pub type OnDropped = Box<dyn Fn(Vec<Dropped>) + Send>;

/// A handle to submit writes; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<(Request, Option<Wanted>)>,
    /// Requests submitted and not yet committed.
    pending: Arc<AtomicUsize>,
    /// Requests that found the queue full and wait for room off their
    /// caller's task (their order is no longer guaranteed).
    overflowing: Arc<AtomicUsize>,
    /// Requests committed so far.
    committed: Arc<AtomicU64>,
}

impl Committer {
    /// Starts the commit thread. At most `max_batch` requests share a
    /// commit; writes nobody waits for may wait `lazy_delay` to share one
    /// (up to 4 × `max_batch` of them). `on_dropped` hears of the messages
    /// commits removed undelivered.
    pub fn start(
        store: Arc<dyn Store>,
        max_batch: usize,
        lazy_delay: Duration,
        on_dropped: OnDropped,
    ) -> Committer {
        let (tx, mut rx) = mpsc::channel::<(Request, Option<Wanted>)>(64 * 1024);
        let pending = Arc::new(AtomicUsize::new(0));
        let done_count = pending.clone();
        let committed = Arc::new(AtomicU64::new(0));
        let committed_count = committed.clone();
        std::thread::Builder::new()
            .name("committer".into())
            .spawn(move || {
                let mut batch: Vec<Request> = Vec::with_capacity(max_batch);
                let max_lazy = max_batch.saturating_mul(4);
                let mut skipped = 0;
                while let Some(first) = rx.blocking_recv() {
                    let deadline = Instant::now() + lazy_delay;
                    let mut waited_for = first.0 .1.is_some();
                    skipped += usize::from(!take(first, &mut batch));
                    loop {
                        let limit = if waited_for { max_batch } else { max_lazy };
                        if batch.len() >= limit {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(r) => {
                                waited_for |= r.0 .1.is_some();
                                skipped += usize::from(!take(r, &mut batch));
                            }
                            Err(mpsc::error::TryRecvError::Empty)
                                if !waited_for && Instant::now() < deadline =>
                            {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            Err(_) => break,
                        }
                    }
                    let n = batch.len() + std::mem::take(&mut skipped);
                    if !batch.is_empty() {
                        committed_count.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        commit(&*store, &mut batch, &on_dropped);
                    }
                    done_count.fetch_sub(n, Ordering::AcqRel);
                }
            })
            .expect("spawn the committer thread");
        Committer {
            tx,
            pending,
            overflowing: Arc::default(),
            committed,
        }
    }

    /// Applies `ops` durably; returns once they are committed.
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.submit(ops).await?.await
    }

    /// Queues `ops` for commit, in order with every write queued before and
    /// after; the future it returns ends once they are committed.
    pub async fn submit(
        &self,
        ops: Vec<Op>,
    ) -> Result<impl std::future::Future<Output = Result<(), StoreError>>, StoreError> {
        self.send(ops, None).await
    }

    /// [`Committer::submit`], but the commit thread first asks `wanted`
    /// whether to write `ops` at all.
    pub async fn submit_unless(
        &self,
        ops: Vec<Op>,
        wanted: Wanted,
    ) -> Result<impl std::future::Future<Output = Result<(), StoreError>>, StoreError> {
        self.send(ops, Some(wanted)).await
    }

    async fn send(
        &self,
        ops: Vec<Op>,
        wanted: Option<Wanted>,
    ) -> Result<impl std::future::Future<Output = Result<(), StoreError>>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(((ops, Some(done)), wanted)).await.is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::Closed);
        }
        Ok(async move { wait.await.map_err(|_| StoreError::Closed)? })
    }

    /// Queues `ops` without waiting for the commit. Writes queued (or
    /// awaited) one after the other commit in that order.
    pub fn enqueue(&self, ops: Vec<Op>) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(((ops, None), None)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(req)) => {
                // Overloaded: wait for room off this task (order may slip).
                let tx = self.tx.clone();
                let pending = self.pending.clone();
                let overflowing = self.overflowing.clone();
                overflowing.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    if tx.send(req).await.is_err() {
                        pending.fetch_sub(1, Ordering::AcqRel);
                    }
                    overflowing.fetch_sub(1, Ordering::AcqRel);
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                tracing::error!("store write dropped: the committer has stopped");
            }
        }
    }

    /// Requests committed (or failed) so far; skipped ones are not counted.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Requests submitted and not yet committed.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Returns once every write queued before the call is committed.
    pub async fn settle(&self) -> Result<(), StoreError> {
        if self.pending() == 0 {
            return Ok(());
        }
        // Writes that overflowed the queue must be in it before the marker.
        while self.overflowing.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.write(Vec::new()).await
    }
}

/// Adds a request to the batch unless it is no longer wanted (then it is
/// answered at once); whether it was added.
fn take((r, wanted): (Request, Option<Wanted>), batch: &mut Vec<Request>) -> bool {
    if wanted.is_some_and(|w| !w()) {
        if let Some(done) = r.1 {
            let _ = done.send(Ok(()));
        }
        return false;
    }
    batch.push(r);
    true
}

/// Commits a batch; if the batch fails, each request is retried alone so
/// that one bad request cannot fail the others.
fn commit(store: &dyn Store, batch: &mut Vec<Request>, on_dropped: &OnDropped) {
    let all: Vec<&Op> = batch.iter().flat_map(|(ops, _)| ops.iter()).collect();
    let tell = |dropped: Vec<Dropped>| {
        if !dropped.is_empty() {
            on_dropped(dropped);
        }
    };
    match store.apply(&all) {
        Ok(dropped) => {
            tell(dropped);
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
                let r = store.apply(&refs).map(tell);
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
