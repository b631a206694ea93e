//! Listeners: the application API (HTTP/1.1), WebSocket devices, RFC 8030
//! HTTP/2 devices and the operator's `/metrics`; and the expiry sweeper.

use crate::app;
use crate::clock::now;
use crate::cluster::{Cluster, Inbox};
use crate::config::Config;
use crate::device;
use crate::fd::{device_connections_max, DeviceSlots};
use crate::metrics::inc;
use crate::state::State;
use crate::store::redb::RedbStore;
use crate::store::redis::{RedisOptions, RedisStore};
use crate::store::{Op, Store, StoreError};
use crate::tokens::Token;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The bound listeners, before serving.
pub struct Listeners {
    /// Application API.
    pub app: TcpListener,
    /// WebSocket devices.
    pub ws: TcpListener,
    /// HTTP/2 devices.
    pub h2: TcpListener,
    /// The operator's `/metrics`.
    pub metrics: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses; a port of 0 takes a free one, and the
    /// configuration is updated to the addresses bound (and default URLs to match).
    pub async fn bind(c: &mut Config) -> std::io::Result<Listeners> {
        let l = Listeners {
            app: listen(c.app_listen, c.listen_backlog)?,
            ws: listen(c.ws_listen, c.listen_backlog)?,
            h2: listen(c.h2_listen, c.listen_backlog)?,
            metrics: listen(c.metrics_listen, 64).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("metrics-listen {}: {e}", c.metrics_listen),
                )
            })?,
        };
        // Set once on the device listeners: accepted sockets inherit it.
        keep_alive(&l.ws, c.tcp_keepalive_secs)?;
        keep_alive(&l.h2, c.tcp_keepalive_secs)?;
        let (app, h2) = (l.app.local_addr()?, l.h2.local_addr()?);
        if c.public_url == format!("http://{}", c.app_listen) {
            c.public_url = format!("http://{app}");
        }
        if c.device_url == format!("http://{}", c.h2_listen) {
            c.device_url = format!("http://{h2}");
        }
        c.app_listen = app;
        c.ws_listen = l.ws.local_addr()?;
        c.h2_listen = h2;
        c.metrics_listen = l.metrics.local_addr()?;
        Ok(l)
    }
}

/// Binds a listener with a backlog that holds a reconnect storm.
fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// A running service.
pub struct Running {
    /// Its state (configuration with the bound addresses, store, registry).
    pub state: Arc<State>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, closes connections, and waits for the end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// A service dropped without [`Running::stop`] begins the same shutdown,
/// without waiting for its end.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The Redis store's options in `config`, if it names one.
pub fn redis_options(config: &Config) -> Option<RedisOptions> {
    Some(RedisOptions {
        url: config.store.clone()?,
        prefix: config.redis_prefix.clone(),
        wait_replicas: config.redis_wait_replicas,
        wait_timeout: Duration::from_millis(config.redis_wait_ms),
        timeout: Duration::from_millis(config.redis_timeout_ms),
    })
}

/// Opens the store `config` names: Redis, or the embedded store in its
/// folder (waiting up to `store_lock_wait_secs` for a previous process that
/// still holds its file lock).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(options) = redis_options(config) {
        let limits = config.limits.clone();
        let opened = tokio::task::spawn_blocking(move || RedisStore::connect(options, &limits))
            .await
            .map_err(|e| StoreError::Engine(e.to_string()))??;
        return Ok(Arc::new(opened));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(config.store_lock_wait_secs);
    loop {
        match RedbStore::open(
            &config.data_dir,
            &config.limits,
            config.store_cache_bytes,
            config.answers_kept,
        ) {
            Err(StoreError::Locked) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => return Ok(Arc::new(r?)),
        }
    }
}

/// What this node does with the notices of other nodes.
struct Peers {
    state: std::sync::Weak<State>,
    runtime: tokio::runtime::Handle,
}

impl Inbox for Peers {
    fn nudge(&self, uaids: &[Token]) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        for u in uaids {
            if let Some(h) = state.registry.handle(u) {
                h.mark_pending();
            }
        }
    }

    fn list_members(&self, id: Token, members: Vec<crate::store::ListMember>) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        // The message is durable: connections from now on fetch it at hello.
        let mark = state.registry.id_mark();
        self.runtime.spawn(async move {
            match state.list_cache.by_id(&id, &*state.store) {
                Ok(Some(lp)) => crate::fanout::reach_members(state, lp, members, mark).await,
                // Deleted with its list meanwhile.
                Ok(None) => {}
                // They fetch their copies at hello.
                Err(e) => tracing::error!("cluster: list message: {e}"),
            }
        });
    }

    fn deliver(
        &self,
        msg: crate::store::Message,
        from: Arc<str>,
        written: Box<dyn FnOnce(bool) + Send>,
    ) {
        let Some(state) = self.state.upgrade() else {
            return written(false);
        };
        self.runtime.spawn(async move {
            let msg = Arc::new(msg);
            // Its acknowledgement goes to the node that took the push.
            state.awaiting.remote(msg.id, from);
            let done = state
                .write_here(&msg, crate::state::FORWARDED_WRITE_WAIT)
                .await;
            if !done {
                state.awaiting.not_remote(&msg.id);
            }
            written(done);
        });
    }

    fn acked(&self, id: Token) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        // Its write is skipped, or it is deleted after it.
        state.delivered(&id);
    }

    fn resubscribed(&self) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        let Some(cluster) = state.cluster.get() else {
            return;
        };
        // Routes written while Redis was away are written again, and every
        // connection looks for what notices it may have missed.
        for (uaid, h) in state.registry.handles() {
            crate::registry::Presence::arrived(&**cluster, &uaid, h.id);
            h.mark_pending();
        }
    }
}

/// Binds the listeners and serves in the background; on a Redis store,
/// joins the other nodes.
pub async fn start(mut config: Config, store: Arc<dyn Store>) -> std::io::Result<Running> {
    let listeners = Listeners::bind(&mut config).await?;
    let options = redis_options(&config);
    let state = Arc::new(State::new(config, store));
    if let Some(options) = options {
        let peers = Arc::new(Peers {
            state: Arc::downgrade(&state),
            runtime: tokio::runtime::Handle::current(),
        });
        let cluster = Cluster::start(state.config.node_id.clone(), &options, peers)
            .map_err(std::io::Error::other)?;
        state.registry.set_presence(cluster.clone());
        let _ = state.cluster.set(cluster);
    }
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(serve(state.clone(), listeners, stopped));
    Ok(Running {
        state,
        stop,
        task: Some(task),
    })
}

/// Serves until `shutdown` turns true.
pub async fn serve(state: Arc<State>, l: Listeners, mut shutdown: watch::Receiver<bool>) {
    let sweeper = tokio::spawn(sweep(state.clone()));
    tokio::spawn(State::tell_dropped(Arc::downgrade(&state)));
    tokio::spawn(crate::fanout::settle_in_background(Arc::downgrade(&state)));
    let claimer = state.cluster.get().map(|c| {
        let (state, c) = (state.clone(), c.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                crate::fanout::take_over(state.clone(), &c).await;
            }
        })
    });
    let counter = state.cluster.get().map(|c| {
        state.rate.shared();
        tokio::spawn(share_rates(state.clone(), c.clone()))
    });
    if claimer.is_none() {
        // Before any connection is accepted: see `fanout::resume`.
        let mark = state.registry.id_mark();
        tokio::spawn(crate::fanout::resume(state.clone(), mark));
    }
    let app_loop = {
        let state = state.clone();
        http_loop(l.app, state.clone(), "app", move |req| {
            let state = state.clone();
            async move { app::route(state, req).await }
        })
    };
    let metrics_loop = {
        let state = state.clone();
        http_loop(l.metrics, state.clone(), "metrics", move |req| {
            let r = app::operator(&state, &req);
            async move { r }
        })
    };
    let slots = DeviceSlots::new(device_connections_max(
        state.config.max_device_connections,
        state.config.fd_reserve,
    ));
    tracing::info!(
        open_files = ?crate::fd::nofile(),
        "device connections at most {}",
        slots_max_text(&slots)
    );
    let take_slot = {
        let (slots, state) = (slots.clone(), state.clone());
        move || {
            let slot = slots.take();
            if slot.is_none() {
                inc(&state.metrics.device_connections_refused);
            }
            slot
        }
    };
    let ws_loop = {
        let (state, take_slot) = (state.clone(), take_slot.clone());
        async move {
            loop {
                match l.ws.accept().await {
                    Ok((stream, _)) => {
                        // Full: closed at once, leaving descriptors to the rest.
                        let Some(slot) = take_slot() else { continue };
                        // The slot goes with the connection's own future: a
                        // future wrapped in another is stored twice over.
                        tokio::spawn(device::ws::serve(stream, state.clone(), slot));
                    }
                    Err(e) => {
                        tracing::warn!("ws accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    };
    let h2_loop = {
        let (state, take_slot) = (state.clone(), take_slot);
        async move {
            loop {
                match l.h2.accept().await {
                    Ok((stream, _)) => {
                        let Some(slot) = take_slot() else { continue };
                        tokio::spawn(device::h2::serve(stream, state.clone(), slot));
                    }
                    Err(e) => {
                        tracing::warn!("h2 accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = app_loop => {}
        _ = metrics_loop => {}
        _ = ws_loop => {}
        _ = h2_loop => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
    // Stop accepting (the accept loops and their listeners are gone now),
    // close every device connection with a reconnect hint, let each store
    // what it held, and wait for those writes to commit.
    state.shutting_down.store(true, Ordering::Release);
    sweeper.abort();
    for task in [claimer, counter].into_iter().flatten() {
        task.abort();
    }
    state.registry.close_all();
    let drain = Duration::from_secs(state.config.shutdown_drain_secs);
    let deadline = tokio::time::Instant::now() + drain;
    while (!state.registry.is_empty() || state.committer.pending() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(c) = state.cluster.get() {
        c.stop();
    }
}

/// Serves HTTP/1.1 on `listener` with `handle` until dropped.
async fn http_loop<F, R>(listener: TcpListener, state: Arc<State>, name: &'static str, handle: F)
where
    F: Fn(Request<Incoming>) -> R + Clone + Send + Sync + 'static,
    R: std::future::Future<Output = Response<app::response::Body>> + Send + 'static,
{
    // HTTP/1.1 only: TLS and HTTP/2 toward application servers are the
    // edge's or a front proxy's (an h2c connection could sit idle, or
    // halfway through its preface, for ever).
    let mut builder = hyper::server::conn::http1::Builder::new();
    let header_wait = Duration::from_secs(state.config.header_read_timeout_secs);
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_wait);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors (EMFILE) or the like: not a loop that
                // spins a core until one is free.
                tracing::warn!("{name} accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (handle, builder) = (handle.clone(), builder.clone());
        tokio::spawn(async move {
            // A client that sends nothing at all is let go here.
            let first = tokio::time::timeout(header_wait, stream.peek(&mut [0u8; 1])).await;
            if !matches!(first, Ok(Ok(1))) {
                return;
            }
            let svc = service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(app::ClientAddr(peer.ip()));
                let r = handle(req);
                async move { Ok::<_, Infallible>(r.await) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// How often a node of a cluster tells the others its per-subscription
/// message counts (those past a sixteenth of their limit), and hears theirs.
const RATE_EXCHANGE: Duration = Duration::from_millis(100);

/// Exchanges per-subscription message counts with the other nodes of a
/// cluster, through Redis, so that the limit holds across nodes.
async fn share_rates(state: Arc<State>, cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(RATE_EXCHANGE);
    loop {
        tick.tick().await;
        let counts = state.rate.take_unshared();
        if counts.is_empty() {
            continue;
        }
        let (s, c) = (state.clone(), cluster.clone());
        let done = tokio::task::spawn_blocking(move || {
            let keys: Vec<_> = counts
                .iter()
                .map(|u| (&u.key[..], u.start / 60, u.events))
                .collect();
            match c.add_counts("subscription_messages", &keys) {
                Ok(totals) => {
                    for (u, total) in counts.iter().zip(totals) {
                        s.rate.heard(&u.key, u.start, total);
                    }
                }
                // Counted alone meanwhile; told again with the next events.
                Err(e) => tracing::warn!("cluster: sharing message counts: {e}"),
            }
        });
        let _ = done.await;
    }
}

/// Removes expired messages (sending 410 receipts for them) and old rate windows.
async fn sweep(state: Arc<State>) {
    let mut tick = tokio::time::interval(Duration::from_secs(state.config.sweep_secs));
    let mut refreshed_day = 0;
    loop {
        tick.tick().await;
        // Once a day, the user agents connected here are seen: one that
        // stays connected for months is not idle.
        let today = crate::store::day_of(now());
        if today != refreshed_day {
            refreshed_day = today;
            let uaids: Vec<Token> = state
                .registry
                .handles()
                .into_iter()
                .map(|(u, _)| u)
                .collect();
            for chunk in uaids.chunks(1000) {
                let ops = chunk
                    .iter()
                    .map(|&uaid| Op::SeenUa { uaid, day: today })
                    .collect();
                state.write_later(ops);
            }
        }
        state.rate.prune();
        state.list_rate.prune();
        state.create_rate.prune();
        state.owner_copies.prune();
        state.address_rate.prune();
        state.keyless_rate.prune();
        if let Some(c) = state.cluster.get() {
            // One node sweeps at a time, so that each expired message's
            // 410 receipt is sent once.
            let (c, lease) = (c.clone(), Duration::from_secs(3 * state.config.sweep_secs));
            match tokio::task::spawn_blocking(move || c.lead("sweeper", lease)).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => continue,
                Ok(Err(e)) => {
                    tracing::warn!("cluster: sweeper lease: {e}");
                    continue;
                }
                Err(_) => continue,
            }
        }
        sweep_lists(&state).await;
        state.purge().await;
        sweep_ended(&state).await;
        for receipts in [false, true] {
            sweep_idle(&state, receipts).await;
        }
        loop {
            let ids = match state.store.expired(now(), 1000) {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!("sweep: {e}");
                    break;
                }
            };
            if ids.is_empty() {
                break;
            }
            let n = ids.len();
            for id in &ids {
                if let Ok(Some(m)) = state.store.message(id) {
                    if let Some(r) = m.receipt {
                        state.send_receipt(m.id, r, 410);
                    }
                }
                inc(&state.metrics.messages_expired);
            }
            let ops = ids.into_iter().map(Op::DeleteMessage).collect();
            if let Err(e) = state.committer.write(ops).await {
                tracing::error!("sweep: {e}");
                break;
            }
            if n < 1000 {
                break;
            }
        }
    }
}

/// Forgets ended subscriptions past `--ended-kept-days`.
async fn sweep_ended(state: &State) {
    loop {
        let ended = match state.store.ended_to_forget(now(), 1000) {
            Ok(e) => e,
            Err(e) => return tracing::error!("ended sweep: {e}"),
        };
        let n = ended.len();
        if n > 0 {
            if let Err(e) = state.committer.write(vec![Op::ForgetEnded(ended)]).await {
                return tracing::error!("ended sweep: {e}");
            }
        }
        if n < 1000 {
            return;
        }
    }
}

/// Ends the user agents (receipt subscriptions if `receipts`) not seen for
/// their idle expiry, a thousand at a time; one connected here meanwhile
/// is marked seen instead.
async fn sweep_idle(state: &State, receipts: bool) {
    let days = match receipts {
        false => state.config.idle_expiry_days,
        true => state.config.receipt_idle_expiry_days,
    };
    if days == 0 {
        return;
    }
    let today = crate::store::day_of(now());
    let before = today.saturating_sub(days * 86_400);
    loop {
        let idle = match state.store.idle_user_agents(receipts, before, 1000) {
            Ok(i) => i,
            Err(e) => return tracing::error!("idle sweep: {e}"),
        };
        let n = idle.len();
        let forget_at = state.forget_ended_at();
        let mut ended = 0;
        let mut ops = Vec::with_capacity(2 * n);
        for (day, uaid) in idle {
            ops.push(match state.registry.get(&uaid).is_some() {
                true => Op::SeenUa { uaid, day: today },
                false => {
                    ended += 1;
                    Op::EndUa { uaid, forget_at }
                }
            });
            // The entry found goes whatever the record says, so that the
            // sweep moves on.
            ops.push(Op::ForgetSeen {
                receipts,
                day,
                uaid,
            });
        }
        if !ops.is_empty() {
            if let Err(e) = state.committer.write(ops).await {
                return tracing::error!("idle sweep: {e}");
            }
        }
        let counter = match receipts {
            false => &state.metrics.user_agents_idle_expired,
            true => &state.metrics.receipt_subscriptions_idle_expired,
        };
        crate::metrics::add(counter, ended);
        if n < 1000 {
            return;
        }
    }
}

/// Drops list members past their `expires`, and list messages past their grace.
async fn sweep_lists(state: &State) {
    loop {
        let (msgs, members) = match state.store.expired_list_items(now(), 1000) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("list sweep: {e}");
                return;
            }
        };
        if msgs.is_empty() && members.is_empty() {
            return;
        }
        let full = msgs.len() == 1000 || members.len() == 1000;
        let mut ops: Vec<Op> = msgs.into_iter().map(Op::DeleteListMessage).collect();
        ops.extend(
            members
                .into_iter()
                .map(|(list, push)| Op::RemoveMembers(list, vec![push])),
        );
        if let Err(e) = state.committer.write(ops).await {
            tracing::error!("list sweep: {e}");
            return;
        }
        if !full {
            return;
        }
    }
}

/// Has the kernel probe a connection silent for `secs` (0: never), so that
/// one whose peer vanished without a word (a phone gone off the network)
/// is closed instead of held for ever. Set on a listener, it holds for the
/// sockets it accepts.
fn keep_alive(socket: &impl std::os::fd::AsFd, secs: u64) -> std::io::Result<()> {
    if secs == 0 {
        return Ok(());
    }
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(secs))
        .with_interval(Duration::from_secs((secs / 5).clamp(1, 75)))
        .with_retries(4);
    socket2::SockRef::from(socket).set_tcp_keepalive(&probes)
}

/// The device connection cap for the log: a number, or "unbounded".
fn slots_max_text(slots: &DeviceSlots) -> String {
    match slots.max() {
        usize::MAX => "unbounded".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn device_sockets_get_keep_alive_probes() {
        let accept = |l: TcpListener| async move {
            let addr = l.local_addr().unwrap();
            let (client, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
            (client.unwrap(), accepted.unwrap().0)
        };
        let off = TcpListener::bind("127.0.0.1:0").await.unwrap();
        keep_alive(&off, 0).unwrap();
        let (_client, server) = accept(off).await;
        assert!(!socket2::SockRef::from(&server).keepalive().unwrap());
        // Set on the listener, inherited by the socket it accepts.
        let on = TcpListener::bind("127.0.0.1:0").await.unwrap();
        keep_alive(&on, 300).unwrap();
        let (_client, server) = accept(on).await;
        let sock = socket2::SockRef::from(&server);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(300));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
    }
}
