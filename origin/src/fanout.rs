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
//!
//! In a cluster, the node that took the push walks the list and sends the
//! members other nodes hold to them ([`crate::cluster::Cluster::spread`]),
//! which reach theirs ([`reach_members`]); a walk whose node died is taken
//! over from where it stood ([`take_over`]).

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
    run_from(state, push, mark, None).await;
}

/// [`run`], from the member after `after` on (a fan-out taken over from a
/// node that died). In a cluster, members other nodes hold are sent to
/// them ([`crate::cluster::Cluster::spread`]), which write their copies.
pub async fn run_from(state: Arc<State>, push: Arc<ListPush>, mark: u64, after: Option<Token>) {
    let mut pass = Pass::new(&state, &push, mark, true);
    let cluster = state.cluster.get().cloned();
    let mut spread = Vec::new();
    let list = push.msg.list;
    let t = now();
    // Each batch is read off the runtime while the one before is written:
    // the walk is bound by its reads' round trips on Redis.
    let mut next = Some(read_members(&state, list, after));
    while let Some(reading) = next.take() {
        #[cfg(debug_assertions)]
        debug_walk_delay().await;
        let batch = match reading.await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                // The rest fetch their copies at hello.
                tracing::error!("fan-out read: {e}");
                break;
            }
            Err(e) => {
                tracing::error!("fan-out read: {e}");
                break;
            }
        };
        let Some(last) = batch.last() else { break };
        let cursor = last.push;
        if batch.len() == BATCH {
            next = Some(read_members(&state, list, Some(cursor)));
        }
        let mut here = Vec::with_capacity(batch.len());
        let mut away = Vec::new();
        for m in batch {
            if !push.is_for(&m) || m.expires.is_some_and(|e| e <= t as i64) {
                continue;
            }
            if !push.key_fits(&m) || state.rate.check(&m.push).is_err() {
                pass.tally.failed += 1;
                continue;
            }
            match &cluster {
                Some(_) if state.registry.with(&m.uaid, |_| ()).is_none() => away.push(m),
                _ => here.push(m),
            }
        }
        if let Some(c) = &cluster {
            let n = away.len() as u64;
            spread.push((n, c.spread(push.msg.id, cursor, away)));
        }
        pass.reach(here).await;
    }
    for (n, s) in spread {
        // Members no live node holds fetch their copies at hello; if the
        // batch failed, every connection looks again once Redis is back.
        match s.await.ok().flatten() {
            Some(offline) => {
                pass.tally.queued += n - offline;
                pass.tally.offline += offline;
            }
            None => pass.tally.deferred += n,
        }
    }
    let failed = pass.tally.failed;
    pass.end();
    // Not a rewrite of the whole record: the list may have been deleted
    // meanwhile, and its messages with it.
    let done = Op::FinishListMessage {
        id: push.msg.id,
        failed,
    };
    if let Err(e) = state.committer.write(vec![done]).await {
        tracing::error!("fan-out record: {e}");
    }
    if let Some(to) = push.msg.receipt {
        state.send_list_receipt(push.msg.id, to).await;
    }
}

/// Reads the next [`BATCH`] members of `list` after `after`, on a
/// blocking thread.
fn read_members(
    state: &Arc<State>,
    list: Token,
    after: Option<Token>,
) -> tokio::task::JoinHandle<Result<Vec<ListMember>, StoreError>> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || state.store.list_members(&list, after.as_ref(), BATCH))
}

/// In debug builds, `ORIGIN_DEBUG_WALK_DELAY_MS` holds each batch of a
/// walk that long: the tests kill a node in the middle of its walk with it.
#[cfg(debug_assertions)]
async fn debug_walk_delay() {
    let ms = std::env::var("ORIGIN_DEBUG_WALK_DELAY_MS").ok();
    if let Some(ms) = ms.and_then(|v| v.parse().ok()) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// Writes the copies of `members`, sent by the node of a cluster that
/// walks the list message (which counted and checked them). `mark` is
/// taken when they arrived, after the message was durable.
pub async fn reach_members(
    state: Arc<State>,
    push: Arc<ListPush>,
    members: Vec<ListMember>,
    mark: u64,
) {
    // Each batch of a walk arrives as its own pass, whose raised marks
    // would be lowered 50 ms (`--fanout-linger-ms`) after its copies: two
    // system calls a copy that cost more than the early reads they put
    // off (docs/performance.md, scenario l).
    let mut pass = Pass::new(&state, &push, mark, false);
    pass.reach(members).await;
    pass.end();
}

/// One node's part of a fan-out: its copies written, and its tally.
struct Pass<'a> {
    state: &'a Arc<State>,
    push: &'a Arc<ListPush>,
    mark: u64,
    _running: metrics::Running<'a>,
    /// Reads pause from the first copy queued to the end (a fan-out that
    /// reaches no connection, like one finished after a restart, pauses none).
    hold: Option<crate::burst::Hold>,
    started: std::time::Instant,
    pause: std::time::Duration,
    raised: Raised,
    /// Whether the pass raises its sockets' low-water marks while reads
    /// pause.
    raise: bool,
    raised_since: std::time::Instant,
    tally: Tally,
}

impl<'a> Pass<'a> {
    fn new(state: &'a Arc<State>, push: &'a Arc<ListPush>, mark: u64, raise: bool) -> Self {
        let started = std::time::Instant::now();
        Pass {
            state,
            push,
            mark,
            _running: metrics::Running::start(&state.metrics),
            hold: None,
            started,
            pause: std::time::Duration::from_millis(state.config.fanout_read_pause_ms),
            raised: Raised::default(),
            raise,
            raised_since: started,
            tally: Tally::default(),
        }
    }

    /// Writes (or queues) the copies of `members` connected here.
    async fn reach(&mut self, members: Vec<ListMember>) {
        let (state, push) = (self.state, self.push);
        let mut direct = Vec::with_capacity(members.len());
        for m in members {
            let uaid = m.uaid;
            let sent = state.registry.with(&uaid, |h| {
                if h.id >= self.mark {
                    return Reach::Offline;
                }
                self.hold.get_or_insert_with(|| state.burst.hold());
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
                Reach::Queued(true) => self.tally.queued += 1,
                Reach::Queued(false) => self.tally.deferred += 1,
                Reach::Offline => self.tally.offline += 1,
            }
        }
        if !direct.is_empty() {
            // Marks are raised only while the burst pauses reads, so that
            // reads still get their share under a stream of fan-outs.
            let raise = self.raise && state.burst.reads_paused();
            let (written, mut now_raised) = write_direct(state, push, direct, raise).await;
            self.tally.add(&written);
            self.raised.0.append(&mut now_raised.0);
            if self.raised_since.elapsed() >= self.pause {
                // The longest a fan-out leaves acknowledgements unread.
                self.raised.lower();
                self.raised_since = std::time::Instant::now();
            }
        }
        self.tally.flush(&state.metrics);
        tokio::task::yield_now().await;
    }

    /// Ends the pass: acknowledgements are read a little after the last
    /// copy was written (within the pause), once the devices read their copies.
    fn end(mut self) {
        self.tally.flush(&self.state.metrics);
        let raised = std::mem::take(&mut self.raised);
        if !raised.0.is_empty() {
            let linger = std::time::Duration::from_millis(self.state.config.fanout_linger_ms)
                .min(self.pause.saturating_sub(self.raised_since.elapsed()));
            tokio::spawn(async move {
                tokio::time::sleep(linger).await;
                drop(raised);
            });
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        self.state.metrics.fanout_last_rate.store(
            (self.tally.members() as f64 / secs) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Finishes the fan-outs a crash interrupted. `mark` is taken before the
/// service accepts its first connection, so every member fetches its copy
/// at `hello` (with the same version as any copy sent before the crash) and
/// none is sent from here; this pass counts the failed members again and
/// records that the fan-out finished. (In a cluster, unfinished fan-outs
/// are claimed instead: see [`take_over`].)
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

/// How old an unfinished fan-out must be before a node of a cluster
/// looks whether its walker is gone, seconds.
const CLAIM_AFTER_SECS: u64 = 3;

/// Takes over the unfinished fan-outs of a cluster whose node died or
/// restarted, from where each stood; members connected since it was
/// recorded fetched their copies at `hello`, and a copy a connection
/// already has is not written twice.
pub async fn take_over(state: Arc<State>, cluster: &crate::cluster::Cluster) {
    let unfinished = match state.store.unfinished_fanouts() {
        Ok(u) => u,
        Err(e) => return tracing::error!("unfinished fan-outs: {e}"),
    };
    let t = now();
    let old: Vec<_> = unfinished
        .into_iter()
        .filter(|m| m.created + CLAIM_AFTER_SECS <= t)
        .collect();
    if old.is_empty() {
        return;
    }
    let claimed = cluster.claim(old.iter().map(|m| m.id).collect()).await;
    for (id, cursor) in claimed {
        let Some(msg) = old.iter().find(|m| m.id == id) else {
            continue;
        };
        tracing::info!(list_message = %crate::tokens::encode(&id), "taking over fan-out");
        match ListPush::new(msg.clone()) {
            Ok(p) => {
                let mark = state.registry.id_mark();
                tokio::spawn(run_from(state.clone(), Arc::new(p), mark, cursor));
            }
            Err(e) => tracing::error!("unfinished fan-out: {e}"),
        }
    }
}

/// [`pending_copies`] on a blocking thread, by at most
/// `--hello-work-concurrency` connections at once, so that a reconnect
/// storm of devices in many lists leaves the async workers (and `/health`)
/// free; what it found settled is recorded without waiting.
pub async fn waiting_copies(
    state: &Arc<State>,
    uaid: Token,
    limit: usize,
    accept: impl Fn(&Message) -> bool + Send + 'static,
) -> Result<(Vec<Message>, bool), StoreError> {
    let _permit = state
        .hello_work
        .acquire()
        .await
        .map_err(|_| StoreError::Closed)?;
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let (copies, more, settled) = pending_copies(&state, &uaid, limit, &accept)?;
        if !settled.is_empty() {
            state.write_later(settled);
        }
        Ok((copies, more))
    })
    .await
    .map_err(|e| StoreError::Engine(e.to_string()))?
}

/// Asks for a look in the background at what a connected user agent's
/// lists have settled for it ([`settle_in_background`]); skipped if
/// [`crate::state::SETTLE_QUEUE`] are waiting (it is asked again after the
/// device's next acknowledgements).
pub fn settle_later(state: &State, uaid: Token) {
    let _ = state.settle_queue.try_send(uaid);
}

/// Looks, one user agent at a time and off the async workers, at what the
/// lists of those [`settle_later`] names have settled for them, and
/// records it: so that the `hello` of a device that was connected while
/// its lists sent reads only what came since. (Acknowledgements not yet
/// committed leave their messages to the next look.)
pub async fn settle_in_background(state: std::sync::Weak<State>) {
    let Some(mut queue) = state.upgrade().and_then(|s| s.take_settle_queue()) else {
        return;
    };
    while let Some(uaid) = queue.recv().await {
        let Some(state) = state.upgrade() else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || {
            let read = &state.metrics.settle_list_messages_read;
            let mut settled = Vec::new();
            let horizon = Horizon::now(&state);
            let looked = each_membership(&state, &uaid, |push, list, member| {
                settled.extend(look_at_list(&state, &horizon, push, list, member, read)?.1);
                Ok(std::ops::ControlFlow::Continue(()))
            });
            match looked {
                Ok(()) if !settled.is_empty() => state.write_later(settled),
                Ok(()) => {}
                Err(e) => tracing::debug!("looking for settled copies: {e}"),
            }
        })
        .await;
    }
}

/// Calls `f` with each list membership of a user agent's subscriptions
/// (push token, list, member) until it breaks.
fn each_membership(
    state: &State,
    uaid: &Token,
    mut f: impl FnMut(&Token, &Token, &ListMember) -> Result<std::ops::ControlFlow<()>, StoreError>,
) -> Result<(), StoreError> {
    for sub in state.store.subscriptions_of(uaid)? {
        for list in state.store.lists_of(&sub.push)? {
            if let Some(member) = state.store.list_member(&list, &sub.push)? {
                if f(&sub.push, &list, &member)?.is_break() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// What a look may settle: messages below the lowest list push still
/// committing here (read before what is committed), and in a cluster,
/// whose other nodes' pushes are not seen in flight here, older than
/// `--list-settle-secs`.
struct Horizon {
    /// Unix seconds, now.
    t: u64,
    floor: u64,
    settle_secs: u64,
}

impl Horizon {
    fn now(state: &State) -> Horizon {
        let (floor, settle_secs) = match state.cluster.get() {
            Some(_) => (u64::MAX, state.config.list_settle_secs),
            None => (state.list_seqs.floor(&*state.store), 0),
        };
        Horizon {
            t: now(),
            floor,
            settle_secs,
        }
    }

    /// Whether a message answered (or never owed) may be recorded settled.
    fn passed(&self, seq: u64, created: u64) -> bool {
        seq < self.floor && created.saturating_add(self.settle_secs) <= self.t
    }
}

/// A member's look at one list (among its newest `--list-backlog`
/// messages, those after the member's settled record): the copies it is
/// owed, oldest first, skipping answered ones and older ones replaced by
/// the same Topic; and the [`Op::SettleCopies`] record that the settled
/// oldest ones allow (answered, replaced, expired or not the member's, and
/// past the [`Horizon`]). The messages come from the
/// parsed-message cache, and the member's answers in one question to the
/// store (in memory on the embedded store); `read` counts the messages
/// looked at.
fn look_at_list(
    state: &State,
    horizon: &Horizon,
    push: &Token,
    list: &Token,
    member: &ListMember,
    read: &std::sync::atomic::AtomicU64,
) -> Result<(Vec<Arc<ListPush>>, Option<Op>), StoreError> {
    let t = horizon.t;
    let after = member.joined.max(state.store.copies_settled(list, push)?);
    let ids = state
        .store
        .list_message_ids_since(list, after, state.config.list_backlog)?;
    // Newest first, so that a topic's newest copy wins; each with its copy
    // if one is owed (`None`: settled).
    let mut topics = std::collections::HashSet::new();
    let mut looked = Vec::with_capacity(ids.len());
    let mut ask = Vec::new();
    for (seq, id) in ids {
        let Some(lp) = state.list_cache.by_id(&id, &*state.store)? else {
            looked.push((seq, id, 0, None));
            continue;
        };
        let owed = lp.msg.expires > t
            && lp
                .msg
                .topic
                .as_ref()
                .is_none_or(|topic| topics.insert(topic.clone()))
            && lp.is_for(member)
            && lp.key_fits(member);
        if owed {
            ask.push((id, lp.msg.created));
        }
        looked.push((seq, id, lp.msg.created, owed.then_some(lp)));
    }
    // Unless it was answered.
    if !ask.is_empty() {
        let of = state.store.copies_answered(push, &ask)?;
        for (_, id, _, owed) in looked.iter_mut() {
            if owed.is_some() && of.contains(id) {
                *owed = None;
            }
        }
    }
    metrics::add(read, looked.len() as u64);
    // Oldest first: settled up to the first copy owed, or not past the
    // horizon.
    let through = looked
        .iter()
        .rev()
        .take_while(|(seq, _, created, owed)| owed.is_none() && horizon.passed(*seq, *created))
        .last()
        .map(|(seq, _, _, _)| *seq);
    let settle = through.map(|through| Op::SettleCopies {
        list: *list,
        push: *push,
        through,
    });
    let owed = looked
        .into_iter()
        .rev()
        .filter_map(|(_, _, _, owed)| owed)
        .collect();
    Ok((owed, settle))
}

/// The copies a user agent's subscriptions have waiting from their lists
/// ([`look_at_list`]): at most `limit` of those `accept` takes (a
/// connection takes no more than it may leave unacknowledged), whether
/// some were left out, and the [`Op::SettleCopies`] records of what needs
/// no further look. Each copy is assembled only if it is taken.
pub fn pending_copies(
    state: &State,
    uaid: &Token,
    limit: usize,
    accept: &dyn Fn(&Message) -> bool,
) -> Result<(Vec<Message>, bool, Vec<Op>), StoreError> {
    use std::ops::ControlFlow::{Break, Continue};
    let read = &state.metrics.hello_list_messages_read;
    let (mut out, mut more, mut settled) = (Vec::new(), false, Vec::new());
    let horizon = Horizon::now(state);
    each_membership(state, uaid, |push, list, member| {
        let (owed, settle) = look_at_list(state, &horizon, push, list, member, read)?;
        settled.extend(settle);
        for lp in owed {
            let copy = lp.copy_for(member);
            if !accept(&copy) {
                continue;
            }
            if out.len() == limit {
                more = true;
                return Ok(Break(()));
            }
            out.push(copy);
        }
        Ok(Continue(()))
    })?;
    Ok((out, more, settled))
}
