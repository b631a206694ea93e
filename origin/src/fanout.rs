//! List push → copies. The body and the shared JWE parts are held once
//! ([`ListPush`]); a member's copy is assembled as its connection writes it.
//!
//! Connected members are reached at once, streamed in batches: a WebSocket
//! connection's copy is written straight to its socket by the fan-out's
//! threads, one per core ([`write_direct`]); an HTTP/2 connection's goes
//! through its queue. Offline members need no write at all: the list message and the
//! membership are durable, and a device that says `hello` fetches what its
//! subscriptions' lists sent since each joined ([`pending_copies`]). The same
//! holds after a crash: every device reconnects and fetches, and a repeated
//! copy carries the same version ([`copy_id`]).

use crate::clock::now;
use crate::copy::{CopyOutlet, ListPush, QueuedCopy, Sent};
use crate::metrics;
use crate::registry::Outbound;
use crate::state::State;
use crate::store::{ListMember, Message, Op, StoreError};
use crate::tokens::Token;
use std::sync::Arc;

/// Members read from the store per batch.
const BATCH: usize = 2048;

/// How a member's copy reaches its connection.
enum Reach {
    /// Written by the fan-out.
    Direct(Arc<dyn CopyOutlet>, ListMember),
    /// Queued (`false`: the queue was full; the connection fetches it).
    Queued(bool),
    /// Not connected, or connected since the list message was recorded
    /// (and so fetched it at `hello`).
    Offline,
}

/// The sockets whose receive low-water mark a fan-out raised, so that the
/// acknowledgements of its copies wake no thread while it writes; lowered
/// when dropped (after the fan-out, or a writer thread that panicked).
#[derive(Default)]
struct Raised(Vec<Arc<dyn CopyOutlet>>);

impl Raised {
    fn lower(&mut self) {
        for o in self.0.drain(..) {
            o.lower();
        }
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        self.lower();
    }
}

/// Writes a batch's copies to their WebSocket connections, split over
/// `--fanout-writers` threads (one per core by default: the current one and
/// blocking-pool threads), as the kernel's send path is most of a copy's
/// cost. Returns the tally, and the sockets whose low-water mark was raised
/// (with `raise`).
async fn write_direct(
    state: &Arc<State>,
    push: &Arc<ListPush>,
    mut targets: Vec<(Arc<dyn CopyOutlet>, ListMember)>,
    raise: bool,
) -> (Tally, Raised) {
    let stripes = state
        .config
        .fanout_writers
        .min(targets.len().div_ceil(MIN_STRIPE))
        .max(1);
    let per = targets.len().div_ceil(stripes);
    let mut others = Vec::with_capacity(stripes - 1);
    while targets.len() > per {
        let part = targets.split_off(targets.len() - per);
        let (state, push) = (state.clone(), push.clone());
        others.push(tokio::task::spawn_blocking(move || {
            write_stripe(&state, &push, part, raise)
        }));
    }
    let (mut tally, mut raised) = write_stripe(state, push, targets, raise);
    for o in others {
        match o.await {
            Ok((t, mut r)) => {
                tally.add(&t);
                raised.0.append(&mut r.0);
            }
            // Its members fetch their copies from the list at their next hello.
            Err(e) => tracing::error!("fan-out writer: {e}"),
        }
    }
    (tally, raised)
}

/// Fewest copies a writer thread is given.
const MIN_STRIPE: usize = 256;

/// Writes one stripe's copies.
fn write_stripe(
    state: &State,
    push: &ListPush,
    targets: Vec<(Arc<dyn CopyOutlet>, ListMember)>,
    raise: bool,
) -> (Tally, Raised) {
    let max = state.config.max_unacked;
    let mut tally = Tally::default();
    let mut raised = Raised(Vec::with_capacity(if raise { targets.len() } else { 0 }));
    let mut written = 0;
    for (outlet, m) in targets {
        let sent = outlet.write_copy(push, &m, max, raise);
        match sent {
            Ok(Sent::Written) => {
                tally.queued += 1;
                written += 1;
            }
            Ok(Sent::Duplicate) => tally.queued += 1,
            // Fetched from its list once the connection has room.
            Ok(Sent::Full) => {
                tally.deferred += 1;
                metrics::inc(&state.metrics.messages_deferred_unacked);
                outlet.nudge();
            }
            Ok(Sent::Busy) | Err(_) => {
                tally.deferred += 1;
                outlet.nudge();
            }
            Ok(Sent::Closed) => tally.offline += 1,
        }
        if raise && matches!(sent, Ok(Sent::Written) | Err(_)) {
            raised.0.push(outlet);
        }
    }
    metrics::add(&state.metrics.messages_sent, written);
    (tally, raised)
}

/// Members of one fan-out by outcome; [`Tally::flush`] adds them to the
/// service's counters after each batch, so that `/metrics` moves while it runs.
#[derive(Default)]
struct Tally {
    queued: u64,
    deferred: u64,
    offline: u64,
    failed: u64,
    flushed: [u64; 4],
}

impl Tally {
    fn flush(&mut self, m: &metrics::Metrics) {
        let now = [self.queued, self.deferred, self.offline, self.failed];
        let counters = [
            &m.fanout_queued,
            &m.fanout_deferred,
            &m.fanout_offline,
            &m.fanout_failed,
        ];
        for ((c, n), f) in counters.into_iter().zip(now).zip(&mut self.flushed) {
            metrics::add(c, n - *f);
            *f = n;
        }
    }

    fn add(&mut self, o: &Tally) {
        self.queued += o.queued;
        self.deferred += o.deferred;
        self.offline += o.offline;
        self.failed += o.failed;
    }

    fn members(&self) -> u64 {
        self.queued + self.deferred + self.offline + self.failed
    }
}

/// Sends a list push to every connected member, in batches; offline and
/// slow members fetch it later. Records the failed count and the end.
///
/// `mark` is [`crate::registry::Registry::id_mark`] taken once the list
/// message was durable: a connection with that id or a larger one said
/// `hello` after it, and so fetched its copy there; it gets none from here.
pub async fn run(state: Arc<State>, push: Arc<ListPush>, mark: u64) {
    let failed = run_here(state.clone(), push.clone(), mark, false).await;
    // Not a rewrite of the whole record: the list may have been deleted
    // meanwhile, and its messages with it.
    let done = Op::FinishListMessage {
        id: push.msg.id,
        failed,
    };
    if let Err(e) = state.committer.write(vec![done]).await {
        tracing::error!("fan-out record: {e}");
    }
}

/// Sends a list push to the members connected to this node; returns how
/// many copies failed. With `connected_only` (another node of a cluster
/// took the push, and counts and records it), members not connected here
/// are passed over unchecked and uncounted.
pub async fn run_here(
    state: Arc<State>,
    push: Arc<ListPush>,
    mark: u64,
    connected_only: bool,
) -> u64 {
    let _running = metrics::Running::start(&state.metrics);
    // Reads pause from the first copy queued to the end (a fan-out that
    // reaches no connection, like one finished after a restart, pauses none).
    let mut hold = None;
    let started = std::time::Instant::now();
    let pause = std::time::Duration::from_millis(state.config.fanout_read_pause_ms);
    let mut raised = Raised::default();
    let mut raised_since = started;
    let list = push.msg.list;
    let mut after: Option<Token> = None;
    let mut tally = Tally::default();
    let t = now();
    loop {
        let batch = match state.store.list_members(&list, after.as_ref(), BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("fan-out read: {e}");
                return tally.failed;
            }
        };
        let Some(last) = batch.last() else { break };
        after = Some(last.push);
        let mut direct = Vec::with_capacity(batch.len());
        for m in batch {
            if connected_only && state.registry.with(&m.uaid, |_| ()).is_none() {
                continue;
            }
            if !push.is_for(&m) || m.expires.is_some_and(|e| e <= t as i64) {
                continue;
            }
            if !push.key_fits(&m) || state.rate.check(&m.push).is_err() {
                tally.failed += 1;
                continue;
            }
            let uaid = m.uaid;
            let sent = state.registry.with(&uaid, |h| {
                if h.id >= mark {
                    return Reach::Offline;
                }
                hold.get_or_insert_with(|| state.burst.hold());
                if let Some(outlet) = &h.outlet {
                    return Reach::Direct(outlet.clone(), m);
                }
                let copy = QueuedCopy::new(push.clone(), m, state.burst.queued());
                let out = Outbound::Copy(Box::new(copy));
                let queued = h.tx.try_send(out).is_ok();
                if !queued {
                    h.mark_pending();
                }
                Reach::Queued(queued)
            });
            match sent.unwrap_or(Reach::Offline) {
                Reach::Direct(outlet, m) => direct.push((outlet, m)),
                Reach::Queued(true) => tally.queued += 1,
                Reach::Queued(false) => tally.deferred += 1,
                Reach::Offline => tally.offline += 1,
            }
        }
        if !direct.is_empty() {
            // Marks are raised only while the burst pauses reads, so that
            // reads still get their share under a stream of fan-outs.
            let raise = state.burst.reads_paused();
            let (written, mut now_raised) = write_direct(&state, &push, direct, raise).await;
            tally.add(&written);
            raised.0.append(&mut now_raised.0);
            if raised_since.elapsed() >= pause {
                // The longest a fan-out leaves acknowledgements unread.
                raised.lower();
                raised_since = std::time::Instant::now();
            }
        }
        tally.flush(&state.metrics);
        tokio::task::yield_now().await;
    }
    // Acknowledgements are read a little after the last copy was written
    // (within the pause), once the devices have read their copies.
    if !raised.0.is_empty() {
        let linger = std::time::Duration::from_millis(state.config.fanout_linger_ms)
            .min(pause.saturating_sub(raised_since.elapsed()));
        tokio::spawn(async move {
            tokio::time::sleep(linger).await;
            drop(raised);
        });
    }
    drop(hold);
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    state.metrics.fanout_last_rate.store(
        (tally.members() as f64 / secs) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    tally.failed
}

/// Finishes the fan-outs a crash interrupted. `mark` is taken before the
/// service accepts its first connection, so every member fetches its copy
/// at `hello` (with the same version as any copy sent before the crash) and
/// none is sent from here; this pass counts the failed members again and
/// records that the fan-out finished.
pub async fn resume(state: Arc<State>, mark: u64) {
    let unfinished = match state.store.unfinished_fanouts() {
        Ok(u) => u,
        Err(e) => {
            tracing::error!("unfinished fan-outs: {e}");
            return;
        }
    };
    for msg in unfinished {
        tracing::info!(list_message = %crate::tokens::encode(&msg.id), "resuming fan-out");
        match ListPush::new(msg) {
            Ok(p) => run(state.clone(), Arc::new(p), mark).await,
            Err(e) => tracing::error!("unfinished fan-out: {e}"),
        }
    }
}

/// The copies a user agent's subscriptions have waiting from their lists
/// (among each list's newest `--list-backlog` messages), skipping
/// acknowledged ones and older copies replaced by the same Topic:
/// at most `limit` of those `accept` takes (a connection takes no more than
/// it may leave unacknowledged), and whether some were left out.
pub fn pending_copies(
    state: &State,
    uaid: &Token,
    limit: usize,
    accept: &dyn Fn(&Message) -> bool,
) -> Result<(Vec<Message>, bool), StoreError> {
    let t = now();
    let backlog = state.config.list_backlog;
    let mut out = Vec::new();
    for sub in state.store.subscriptions_of(uaid)? {
        for list in state.store.lists_of(&sub.push)? {
            let Some(member) = state.store.list_member(&list, &sub.push)? else {
                continue;
            };
            // Newest first, so that a topic's newest copy wins.
            let msgs = state
                .store
                .list_messages_since(&list, member.joined, t, backlog)?;
            let mut topics = std::collections::HashSet::new();
            let mut copies = Vec::new();
            for lm in msgs {
                if let Some(topic) = &lm.topic {
                    if !topics.insert(topic.clone()) {
                        continue;
                    }
                }
                if state.store.copy_acked(&lm.id, &sub.push)? {
                    continue;
                }
                let lp = state.list_cache.get(lm)?;
                if lp.is_for(&member) && lp.key_fits(&member) {
                    copies.push(lp);
                }
            }
            // Oldest first; each copy is assembled only if it is taken.
            for lp in copies.into_iter().rev() {
                let copy = lp.copy_for(&member);
                if !accept(&copy) {
                    continue;
                }
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(copy);
            }
        }
    }
    Ok((out, false))
}
