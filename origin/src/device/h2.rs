//! RFC 8030 over HTTP/2: subscribe, monitor a subscription or set by server
//! push, acknowledge with `DELETE`, and receipt subscriptions (§6.3).

use crate::clock::now;
use crate::metrics::inc;
use crate::registration::{self, Owner, RegisterError};
use crate::registry::{CloseReason, ConnHandle, Outbound};
use crate::state::State;
use crate::store::{AckOutcome, Encoding, Message, Op, UaKind, UserAgent};
use crate::tokens::{self, new_token, Token, TokenMap};
use crate::urls;
use bytes::Bytes;
use h2::server::SendResponse;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use shared::headers::name;
use shared::headers::Urgency;
use shared::links;
use shared::problem::{Problem, ProblemSource};
use shared::vapid::PublicKey;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Messages pushed on this connection and not yet acknowledged.
/// What one connection has pushed and not had acknowledged (at most
/// `max_unacked`, however many monitors share it), and the user agents its
/// monitoring requests watch.
#[derive(Default)]
struct Pushed {
    /// The client's address, if it could be read.
    peer: Option<std::net::IpAddr>,
    /// Subscriptions this connection made in the current minute.
    subscribed: Mutex<shared::rate::Window>,
    messages: Mutex<TokenMap<Arc<Message>>>,
    /// The stored messages acknowledged lately (see [`super::RecentAcks`]).
    acked: Mutex<super::RecentAcks>,
    monitors: Mutex<Vec<Token>>,
    /// Held by a monitor reading what is stored, and by an acknowledgement:
    /// a message acknowledged between the read and its push would be
    /// pushed again (the acknowledgements are on other streams).
    gate: tokio::sync::Mutex<()>,
}

impl Pushed {
    fn messages(&self) -> std::sync::MutexGuard<'_, TokenMap<Arc<Message>>> {
        self.messages.lock().expect("inflight lock")
    }

    fn acked(&self) -> std::sync::MutexGuard<'_, super::RecentAcks> {
        self.acked.lock().expect("acked lock")
    }
}

type Inflight = Arc<Pushed>;

/// Serves one HTTP/2 connection (prior knowledge, h2c).
///
/// `_slot` is the connection's place among `--max-device-connections`,
/// given back when it ends.
pub async fn serve(stream: TcpStream, state: Arc<State>, _slot: crate::fd::Slot) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let c = &state.config;
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(c.h2_max_streams)
        .max_header_list_size(c.h2_max_header_bytes)
        .handshake(stream);
    // A client that never finishes its preface is let go, as a WebSocket
    // device that never says hello is.
    let wait = std::time::Duration::from_secs(c.hello_timeout_secs);
    let Ok(Ok(mut conn)) = tokio::time::timeout(wait, handshake).await else {
        return;
    };
    inc(&state.metrics.h2_connections);
    let inflight: Inflight = Arc::new(Pushed {
        peer,
        ..Pushed::default()
    });
    // Streams open now (a monitoring request is one for as long as it
    // lasts); a connection with none for `--h2-idle-secs` is closed.
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ended = Arc::new(tokio::sync::Notify::new());
    let idle = std::time::Duration::from_secs(c.h2_idle_secs);
    let mut closing = false;
    loop {
        let quiet =
            !closing && idle > std::time::Duration::ZERO && open.load(Ordering::Acquire) == 0;
        tokio::select! {
            next = conn.accept() => {
                let Some(Ok((req, respond))) = next else { break };
                open.fetch_add(1, Ordering::AcqRel);
                let (state, inflight) = (state.clone(), inflight.clone());
                let (open, ended) = (open.clone(), ended.clone());
                tokio::spawn(async move {
                    handle(state, req, respond, inflight).await;
                    open.fetch_sub(1, Ordering::AcqRel);
                    ended.notify_one();
                });
            }
            // A stream's end re-arms the idle timer.
            _ = ended.notified() => {}
            _ = tokio::time::sleep(idle), if quiet => {
                if open.load(Ordering::Acquire) == 0 {
                    // GOAWAY; `accept` then ends once the client has seen it.
                    conn.graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    let unacked: Vec<Arc<Message>> = inflight.messages().drain().map(|(_, m)| m).collect();
    state.store_unacked(unacked);
}

fn reply(respond: &mut SendResponse<Bytes>, resp: Response<()>, body: Option<Bytes>) {
    let end = body.as_ref().is_none_or(|b| b.is_empty());
    if let Ok(mut s) = respond.send_response(resp, end) {
        if let (false, Some(b)) = (end, body) {
            let _ = s.send_data(b, true);
        }
    }
}

fn status(code: StatusCode) -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = code;
    r
}

/// Errors of the device API.
#[derive(Debug, thiserror::Error)]
enum DeviceError {
    #[error("no resource at this path")]
    NotFound,
    #[error("the subscribe body must be JSON {{\"vapid\": \"<P-256 public key, base64url>\"}}")]
    BadSubscribe,
    #[error("the subscribe body is longer than {0} bytes")]
    SubscribeTooLarge(usize),
    #[error("storage is unavailable; retry later")]
    Store,
    #[error("this subscription set holds {0} subscriptions, as many as one may; delete one first")]
    TooManySubscriptions(usize),
    #[error("the Link rel=\"urn:ietf:params:push:set\" names no subscription set of this service (deleted, or never made); subscribe without it for a new set")]
    UnknownSet,
    #[error("too many subscriptions made from this connection or address in this minute; retry in {0} s")]
    TooManySubscribes(u64),
}

impl ProblemSource for DeviceError {
    fn status(&self) -> u16 {
        match self {
            DeviceError::NotFound => 404,
            DeviceError::BadSubscribe => 400,
            DeviceError::SubscribeTooLarge(_) => 413,
            DeviceError::Store => 503,
            DeviceError::TooManySubscriptions(_) => 429,
            DeviceError::UnknownSet => 400,
            DeviceError::TooManySubscribes(_) => 429,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            DeviceError::NotFound => "not-found",
            DeviceError::BadSubscribe => "bad-subscribe",
            DeviceError::SubscribeTooLarge(_) => "too-large",
            DeviceError::Store => "store-unavailable",
            DeviceError::TooManySubscriptions(_) => "too-many-subscriptions",
            DeviceError::UnknownSet => "unknown-set",
            DeviceError::TooManySubscribes(_) => "rate-limited",
        }
    }
    fn title(&self) -> &'static str {
        match self {
            DeviceError::NotFound => "Not found",
            DeviceError::BadSubscribe => "Bad subscribe request",
            DeviceError::SubscribeTooLarge(_) => "Subscribe request too large",
            DeviceError::Store => "Storage unavailable",
            DeviceError::TooManySubscriptions(_) => "Too many subscriptions",
            DeviceError::UnknownSet => "No such subscription set",
            DeviceError::TooManySubscribes(_) => "Too many requests",
        }
    }
    fn retry_after(&self) -> Option<u64> {
        match self {
            DeviceError::TooManySubscribes(secs) => Some(*secs),
            _ => None,
        }
    }
}

fn problem(respond: &mut SendResponse<Bytes>, e: DeviceError) {
    let p = Problem::from_error(&e);
    let mut r = status(StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(shared::problem::CONTENT_TYPE),
    );
    if let Some(secs) = p.retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    reply(respond, r, Some(Bytes::from(p.to_json())));
}

async fn handle(
    state: Arc<State>,
    req: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    inflight: Inflight,
) {
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let token = segs.get(1).and_then(|t| tokens::decode(t));
    let method = req.method().clone();
    match (segs.first().copied(), token, method) {
        (Some("subscribe"), None, Method::POST) if segs.len() == 1 => {
            if may_subscribe(&state, &inflight, &mut respond) {
                subscribe(&state, req, &mut respond).await
            }
        }
        (Some("s"), Some(resource), Method::GET) => {
            match state.store.subscription_by_resource(&resource) {
                Ok(Some(sub)) => {
                    // Monitoring keeps its set from the idle expiry.
                    if let Ok(Some(ua)) = state.store.user_agent(&sub.uaid) {
                        state.seen(&ua);
                    }
                    let filter = Filter::new(&req, Some(sub.push));
                    monitor(state, respond, sub.uaid, filter, inflight, false).await
                }
                Ok(None) => problem(&mut respond, DeviceError::NotFound),
                Err(_) => problem(&mut respond, DeviceError::Store),
            }
        }
        (Some("s"), Some(resource), Method::DELETE) => {
            match state.store.subscription_by_resource(&resource) {
                Ok(Some(sub)) => match state
                    .committer
                    .write(vec![Op::DeleteSubscription {
                        push: sub.push,
                        forget_at: state.forget_ended_at(),
                    }])
                    .await
                {
                    Ok(()) => {
                        state.registry.ended(&sub.uaid, Some(sub.push));
                        reply(&mut respond, status(StatusCode::NO_CONTENT), None)
                    }
                    Err(_) => problem(&mut respond, DeviceError::Store),
                },
                Ok(None) => problem(&mut respond, DeviceError::NotFound),
                Err(_) => problem(&mut respond, DeviceError::Store),
            }
        }
        (Some("set"), Some(uaid), Method::DELETE) => delete_set(&state, uaid, &mut respond).await,
        (Some("set"), Some(uaid), Method::GET) => match state.store.user_agent(&uaid) {
            Ok(Some(ua)) if ua.kind == UaKind::Http2 => {
                state.seen(&ua);
                let filter = Filter::new(&req, None);
                monitor(state, respond, uaid, filter, inflight, false).await
            }
            Ok(_) => problem(&mut respond, DeviceError::NotFound),
            Err(_) => problem(&mut respond, DeviceError::Store),
        },
        (Some("m"), Some(id), Method::DELETE) => {
            if acknowledge(&state, id, &inflight).await {
                reply(&mut respond, status(StatusCode::NO_CONTENT), None)
            } else {
                problem(&mut respond, DeviceError::NotFound)
            }
        }
        (Some("receipts"), None, Method::POST) if segs.len() == 1 => {
            if !may_subscribe(&state, &inflight, &mut respond) {
                return;
            }
            let ua = UserAgent {
                uaid: new_token(),
                kind: UaKind::Receipts,
                created: now(),
                seen: crate::store::day_of(now()),
            };
            match state.committer.write(vec![Op::PutUa(ua.clone())]).await {
                Ok(()) => {
                    let mut r = status(StatusCode::CREATED);
                    let url = urls::receipt_subscription(&state.config, &ua.uaid);
                    r.headers_mut().insert(
                        header::LOCATION,
                        HeaderValue::from_str(&url).expect("ascii"),
                    );
                    reply(&mut respond, r, None)
                }
                Err(_) => problem(&mut respond, DeviceError::Store),
            }
        }
        (Some("rs"), Some(uaid), Method::DELETE) => {
            delete_receipt_subscription(&state, uaid, &mut respond).await
        }
        (Some("rs"), Some(uaid), Method::GET) => match state.store.user_agent(&uaid) {
            Ok(Some(ua)) if ua.kind == UaKind::Receipts => {
                // Polling keeps it from its idle expiry.
                state.seen(&ua);
                let filter = Filter::new(&req, None);
                monitor(state, respond, uaid, filter, inflight, true).await
            }
            Ok(_) => problem(&mut respond, DeviceError::NotFound),
            Err(_) => problem(&mut respond, DeviceError::Store),
        },
        _ => problem(&mut respond, DeviceError::NotFound),
    }
}

/// Counts a subscription (or receipt subscription) this connection asks
/// for; `false`, with the `429` answered, past its connection's or its
/// client address's rate.
fn may_subscribe(state: &State, inflight: &Inflight, respond: &mut SendResponse<Bytes>) -> bool {
    let counted = {
        let mut window = inflight.subscribed.lock().expect("subscribed lock");
        state.count_subscription(&mut window, inflight.peer)
    };
    match counted {
        Ok(()) => true,
        Err(retry_after) => {
            problem(respond, DeviceError::TooManySubscribes(retry_after));
            false
        }
    }
}

/// `POST /subscribe`: a new subscription, in a new set or the one named by
/// a `Link: <…>; rel="urn:ietf:params:push:set"` header.
async fn subscribe(
    state: &Arc<State>,
    req: Request<h2::RecvStream>,
    respond: &mut SendResponse<Bytes>,
) {
    let set_link = req
        .headers()
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>();
    let set_url = links::find(set_link, links::REL_SET);
    let mut body = req.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else {
            return problem(respond, DeviceError::BadSubscribe);
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        let max = state.config.h2_max_subscribe_bytes;
        if data.len() > max {
            return problem(respond, DeviceError::SubscribeTooLarge(max));
        }
    }
    let vapid = if data.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        #[derive(serde::Deserialize)]
        struct Body {
            vapid: Option<String>,
        }
        match serde_json::from_slice::<Body>(&data) {
            Ok(Body { vapid: None }) => None,
            Ok(Body { vapid: Some(k) }) => match PublicKey::parse(&k) {
                Ok(k) => Some(k.0),
                Err(_) => return problem(respond, DeviceError::BadSubscribe),
            },
            Err(_) => return problem(respond, DeviceError::BadSubscribe),
        }
    };
    // A set named must be one of ours: a new set is made only when none is
    // named (RFC 8030 §6.1), never in place of one that is gone.
    let set = match set_url {
        None => None,
        Some(u) => {
            let prefix = urls::subscription_set_prefix(&state.config);
            let Some(t) = u.strip_prefix(&prefix).and_then(tokens::decode) else {
                return problem(respond, DeviceError::UnknownSet);
            };
            match state.store.user_agent(&t) {
                Ok(Some(ua)) if ua.kind == UaKind::Http2 => Some(t),
                Ok(_) => return problem(respond, DeviceError::UnknownSet),
                Err(_) => return problem(respond, DeviceError::Store),
            }
        }
    };
    let sub = match registration::register(state, Owner::Http2Set(set), vapid).await {
        Ok(s) => s,
        Err(RegisterError::TooMany(max)) => {
            return problem(respond, DeviceError::TooManySubscriptions(max))
        }
        Err(RegisterError::Conflict | RegisterError::Store(_)) => {
            return problem(respond, DeviceError::Store)
        }
    };
    let uaid = sub.uaid;
    let mut r = status(StatusCode::CREATED);
    let c = &state.config;
    let hs = r.headers_mut();
    let loc = urls::subscription(c, &sub.resource);
    hs.insert(
        header::LOCATION,
        HeaderValue::from_str(&loc).expect("ascii"),
    );
    for (url, rel) in [
        (urls::push_resource(c, &sub.push), links::REL_PUSH),
        (urls::receipts(c), links::REL_RECEIPT),
        (urls::subscription_set(c, &uaid), links::REL_SET),
        (urls::list_service(c, &sub.push), links::REL_MULTI),
    ] {
        hs.append(
            header::LINK,
            HeaderValue::from_str(&links::link(&url, rel)).expect("ascii"),
        );
    }
    reply(respond, r, None)
}

/// Which messages a monitoring request takes.
#[derive(Clone)]
struct Filter {
    push: Option<Token>,
    urgency: Urgency,
    wait: bool,
}

impl Filter {
    fn new<B>(req: &Request<B>, push: Option<Token>) -> Filter {
        let get = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
        Filter {
            push,
            urgency: Urgency::parse(get(name::URGENCY)).unwrap_or(Urgency::VeryLow),
            wait: shared::headers::preference(get(name::PREFER), "wait") != Some("0"),
        }
    }
    fn accepts(&self, m: &Message) -> bool {
        self.push.is_none_or(|p| p == m.push) && m.urgency >= self.urgency
    }
}

/// Holds a monitoring `GET` open and pushes each message as a server push.
async fn monitor(
    state: Arc<State>,
    mut respond: SendResponse<Bytes>,
    uaid: Token,
    filter: Filter,
    inflight: Inflight,
    receipts: bool,
) {
    let (tx, mut rx) = mpsc::channel(state.config.queue_depth);
    let id = state.registry.next_id();
    let pending: Arc<AtomicBool> = Arc::default();
    if filter.wait {
        inflight.monitors.lock().expect("monitors lock").push(uaid);
        state.registry.insert(
            uaid,
            ConnHandle {
                outlet: None,
                tx: tx.clone(),
                id,
                pending: pending.clone(),
                protocol: crate::registry::Protocol::Http2,
            },
        );
    }
    if let (true, Some(c)) = (filter.wait, state.cluster.get()) {
        // See `Cluster::routed`.
        c.routed().await;
    }
    let mut out = Monitor {
        state: &state,
        respond: &mut respond,
        uaid,
        filter: &filter,
        inflight: &inflight,
        receipts,
    };
    let pushed = out.push_stored().await;
    if !filter.wait {
        let code = if pushed == 0 {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::OK
        };
        return reply(&mut respond, status(code), None);
    }
    let mut ended = false;
    loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some(Outbound::Message { msg, written }) => {
                    if out.push(msg) {
                        let _ = written.send(());
                    }
                    // A refused message's sender stores it (its `written` is dropped).
                }
                Some(Outbound::Copy(c)) => {
                    out.push(Arc::new(c.push.copy_for(&c.member)));
                }
                Some(Outbound::Nudge) => {}
                Some(Outbound::Close(CloseReason::Ended(which))) => {
                    // Its subscription (or its set) was deleted: 404. A set's
                    // monitor outlives one of its subscriptions.
                    if which.is_none() || which == filter.push {
                        ended = true;
                        break;
                    }
                }
                Some(Outbound::Close(_)) | None => break,
            },
            _ = std::future::poll_fn(|cx| out.respond.poll_reset(cx)) => break,
        }
        // What did not fit the queue, or waited for acknowledgements, is
        // stored (or with its list): pushed once the queue is empty.
        if rx.is_empty() && pending.swap(false, Ordering::AcqRel) {
            out.push_stored().await;
        }
    }
    state.registry.remove(&uaid, id);
    {
        let mut watched = inflight.monitors.lock().expect("monitors lock");
        if let Some(i) = watched.iter().position(|u| *u == uaid) {
            watched.swap_remove(i);
        }
    }
    if ended {
        return problem(&mut respond, DeviceError::NotFound);
    }
    reply(&mut respond, status(StatusCode::OK), None);
}

/// A monitoring request's pushing side.
struct Monitor<'a> {
    state: &'a Arc<State>,
    respond: &'a mut SendResponse<Bytes>,
    uaid: Token,
    filter: &'a Filter,
    inflight: &'a Inflight,
    receipts: bool,
}

impl Monitor<'_> {
    /// Pushes a message the request's filter accepts; false if not pushed.
    fn push(&mut self, m: Arc<Message>) -> bool {
        self.filter.accepts(&m)
            && push_one(self.state, self.respond, m, self.inflight, self.receipts)
    }

    /// Pushes the stored messages and waiting list copies (once the
    /// acknowledgements queued for commit are in); how many were pushed.
    async fn push_stored(&mut self) -> usize {
        let inflight = self.inflight.clone();
        let _gate = inflight.gate.lock().await;
        let _ = self.state.settle().await;
        let mut pushed = 0usize;
        let mut after = 0;
        loop {
            let Ok(page) = self.state.store.messages(&self.uaid, after, now(), 256) else {
                break;
            };
            let done = page.len() < 256;
            for m in page {
                after = m.seq;
                if self.full() {
                    // The rest once a DELETE makes room.
                    inc(&self.state.metrics.messages_deferred_unacked);
                    return pushed;
                }
                pushed += usize::from(self.push(Arc::new(m)));
            }
            if done {
                break;
            }
        }
        if !self.receipts && !self.full() {
            let limit = self.state.config.max_unacked;
            let filter = self.filter.clone();
            let accept = move |m: &Message| filter.accepts(m);
            let waiting = crate::fanout::waiting_copies(self.state, self.uaid, limit, accept).await;
            if let Ok((copies, _)) = waiting {
                for m in copies {
                    pushed += usize::from(self.push(Arc::new(m)));
                }
            }
        }
        pushed
    }

    /// Whether the connection has as many unacknowledged as it may.
    fn full(&self) -> bool {
        !self.receipts && self.inflight.messages().len() >= self.state.config.max_unacked
    }
}

/// Sends one message (or receipt) as a server push; false if the stream is
/// gone or the connection has `max_unacked` messages unacknowledged.
fn push_one(
    state: &Arc<State>,
    respond: &mut SendResponse<Bytes>,
    msg: Arc<Message>,
    inflight: &Inflight,
    receipts: bool,
) -> bool {
    if msg.seq != 0 && inflight.acked().contains(&msg.id) {
        return true;
    }
    {
        let held = inflight.messages();
        if held.contains_key(&msg.id) {
            return true;
        }
        // Too many unacknowledged: this one stays stored (or with its list)
        // for the user agent's next monitoring request.
        if !receipts && held.len() >= state.config.max_unacked {
            inc(&state.metrics.messages_deferred_unacked);
            return false;
        }
    }
    if receipts {
        return send_push(state, respond, &msg, true);
    }
    // Held before it is pushed: the user agent's DELETE may arrive before
    // this function returns.
    inflight.messages().insert(msg.id, msg.clone());
    let sent = send_push(state, respond, &msg, false);
    if !sent {
        inflight.messages().remove(&msg.id);
    }
    sent
}

/// Writes one message (or receipt) as a server push; false if the stream is gone.
fn send_push(
    state: &Arc<State>,
    respond: &mut SendResponse<Bytes>,
    msg: &Message,
    receipts: bool,
) -> bool {
    // A receipt's promised request is the acknowledged message's resource
    // (a list push's: its list message, whose status it carries).
    let url = match (receipts, &msg.encoding) {
        (true, Encoding::ListReceipt) => urls::list_message(&state.config, &msg.push),
        (true, _) => urls::message(&state.config, &msg.push),
        (false, _) => urls::device_message(&state.config, &msg.id),
    };
    let Ok(promise) = Request::get(url).body(()) else {
        return false;
    };
    let Ok(mut pushed) = respond.push_request(promise) else {
        return false;
    };
    let mut r = Response::new(());
    let mut body = msg.body.clone();
    match &msg.encoding {
        Encoding::Receipt => {
            let code = std::str::from_utf8(&msg.body)
                .ok()
                .and_then(|s| s.parse().ok());
            *r.status_mut() =
                StatusCode::from_u16(code.unwrap_or(204)).unwrap_or(StatusCode::NO_CONTENT);
            body = Bytes::new();
        }
        Encoding::ListReceipt => {
            // As a GET on the list message would answer.
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        enc => {
            let hs = r.headers_mut();
            let push_url = urls::push_resource(&state.config, &msg.push);
            hs.insert(
                header::LINK,
                HeaderValue::from_str(&links::link(&push_url, links::REL_PUSH)).expect("ascii"),
            );
            // No Urgency (nor Topic): RFC 8030 §5.3, §5.4 forbid forwarding them.
            match enc {
                Encoding::Aes128gcm => {
                    hs.insert(
                        header::CONTENT_ENCODING,
                        HeaderValue::from_static("aes128gcm"),
                    );
                }
                Encoding::Aesgcm {
                    encryption,
                    crypto_key,
                } => {
                    hs.insert(header::CONTENT_ENCODING, HeaderValue::from_static("aesgcm"));
                    if let Ok(v) = HeaderValue::from_str(encryption) {
                        hs.insert(name::ENCRYPTION, v);
                    }
                    if let (false, Ok(v)) =
                        (crypto_key.is_empty(), HeaderValue::from_str(crypto_key))
                    {
                        hs.insert(name::CRYPTO_KEY, v);
                    }
                }
                Encoding::Jose(ct) => {
                    if let Ok(v) = HeaderValue::from_str(ct) {
                        hs.insert(header::CONTENT_TYPE, v);
                    }
                }
                Encoding::None | Encoding::Receipt | Encoding::ListReceipt => {}
            }
        }
    }
    let end = body.is_empty();
    let Ok(mut s) = pushed.send_response(r, end) else {
        return false;
    };
    if !end && s.send_data(body, true).is_err() {
        return false;
    }
    inc(&state.metrics.messages_sent);
    // Receipts need no acknowledgement: gone once pushed.
    if receipts && msg.seq != 0 {
        state.delivered(&msg.id);
    }
    true
}

/// `DELETE` on a subscription set: it ends with every subscription in it
/// (each also leaves every list it is in).
async fn delete_set(state: &Arc<State>, uaid: Token, respond: &mut SendResponse<Bytes>) {
    // As a registration into the set holds it: none slips in meanwhile.
    let _locked = state.ua_locks.lock(&uaid).await;
    end_user_agent(state, uaid, UaKind::Http2, respond).await
}

/// Ends user agent `uaid` if it is of `kind` (`404` otherwise): its
/// subscriptions (remembered as ended), the messages it holds and its
/// record, in one write; its monitoring requests end with `404`.
async fn end_user_agent(
    state: &Arc<State>,
    uaid: Token,
    kind: UaKind,
    respond: &mut SendResponse<Bytes>,
) {
    match state.store.user_agent(&uaid) {
        Ok(Some(ua)) if ua.kind == kind => {}
        Ok(_) => return problem(respond, DeviceError::NotFound),
        Err(_) => return problem(respond, DeviceError::Store),
    }
    let end = Op::EndUa {
        uaid,
        forget_at: state.forget_ended_at(),
    };
    match state.committer.write(vec![end]).await {
        Ok(()) => {
            state.registry.ended(&uaid, None);
            reply(respond, status(StatusCode::NO_CONTENT), None)
        }
        Err(_) => problem(respond, DeviceError::Store),
    }
}

/// `DELETE` on a receipt subscription: it ends with the receipts it holds;
/// receipts for it sent later are dropped.
async fn delete_receipt_subscription(
    state: &Arc<State>,
    uaid: Token,
    respond: &mut SendResponse<Bytes>,
) {
    // Its record and receipts in one write: no receipt is stored for it
    // once it is gone.
    end_user_agent(state, uaid, UaKind::Receipts, respond).await
}

/// `DELETE` on a pushed message: the user agent acknowledges it. Only a
/// message pushed on this connection, or stored for a user agent that one
/// of its requests monitors, is acknowledged (`false` for any other: the
/// message's URL alone, which its sender was given, is not enough).
async fn acknowledge(state: &Arc<State>, id: Token, inflight: &Inflight) -> bool {
    let gate = inflight.gate.lock().await;
    let (freed_room, held) = {
        let mut map = inflight.messages();
        let was_full = map.len() >= state.config.max_unacked;
        let held = map.remove(&id);
        (held.is_some() && was_full, held)
    };
    let msg = match held {
        Some(m) => m,
        // Stored; not acknowledged already, with the deletion still queued.
        None => match state.settle().await.and_then(|()| state.store.message(&id)) {
            Ok(Some(m))
                if inflight
                    .monitors
                    .lock()
                    .expect("monitors lock")
                    .contains(&m.uaid) =>
            {
                Arc::new(m)
            }
            _ => return false,
        },
    };
    // Its deletion is queued first: a monitor that looks again settles the
    // queued writes before it reads, so it cannot push this one again.
    state.acknowledged(&msg, AckOutcome::Delivered);
    if msg.seq != 0 {
        inflight.acked().note(msg.id, &state.config);
    }
    drop(gate);
    if freed_room {
        // The connection's monitors may have left messages stored for want
        // of room: each looks again.
        let watched = inflight.monitors.lock().expect("monitors lock").clone();
        for uaid in watched {
            if let Some(h) = state.registry.handle(&uaid) {
                h.mark_pending();
            }
        }
    }
    true
}
