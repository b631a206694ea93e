//! Group commit: one thread applies the writes of many concurrent requests
//! in one transaction, so that each pays a share of one fsync.

use super::{Op, Store, StoreError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

type Request = (Vec<Op>, oneshot::Sender<Result<(), StoreError>>);

/// A handle to submit writes; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
}

impl Committer {
    /// Starts the commit thread. At most `max_batch` requests share a commit.
    pub fn start(store: Arc<dyn Store>, max_batch: usize) -> Committer {
        let (tx, mut rx) = mpsc::channel::<Request>(16 * 1024);
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
                    commit(&*store, &mut batch);
                }
            })
            .expect("spawn the committer thread");
        Committer { tx }
    }

    /// Applies `ops` durably; returns once they are committed.
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((ops, done))
            .await
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }
}

/// Commits a batch; if the batch fails, each request is retried alone so
/// that one bad request cannot fail the others.
fn commit(store: &dyn Store, batch: &mut Vec<Request>) {
    let all: Vec<&Op> = batch.iter().flat_map(|(ops, _)| ops.iter()).collect();
    match store.apply(&all) {
        Ok(()) => {
            for (_, done) in batch.drain(..) {
                let _ = done.send(Ok(()));
            }
        }
        Err(e) if batch.len() == 1 => {
            let (_, done) = batch.pop().expect("one request");
            let _ = done.send(Err(e));
        }
        Err(_) => {
            for (ops, done) in batch.drain(..) {
                let refs: Vec<&Op> = ops.iter().collect();
                let _ = done.send(store.apply(&refs));
            }
        }
    }
}
