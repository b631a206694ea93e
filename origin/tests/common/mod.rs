//! Helpers for the origin's integration tests: a service on free ports with
//! a fresh store, a small HTTP/1.1 client, a WebSocket device, VAPID tokens.
#![allow(dead_code)]

pub mod redis;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use origin::config::{Config, Settings};
use origin::server::{start, Running};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::b64;
use shared::webpush_ws::{AckUpdate, DeviceMessage, Notification, ServerMessage, STATUS_OK};
use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A fresh folder under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let mut r = [0u8; 8];
    getrandom_fill(&mut r);
    let d = std::env::temp_dir().join(format!("origin-test-{name}-{}", hex(&r)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn getrandom_fill(b: &mut [u8]) {
    let t = origin::tokens::new_token();
    for (i, x) in b.iter_mut().enumerate() {
        *x = t[i % 16];
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Starts a service on free loopback ports over a store in `dir`; dropping
/// it (at the end of a test) begins its shutdown.
pub async fn start_in(dir: &std::path::Path, limits: &[&str]) -> Running {
    start_with(dir, limits, |_| {}).await
}

/// Starts a service with settings adjusted by `adjust`.
pub async fn start_with(
    dir: &std::path::Path,
    limits: &[&str],
    adjust: impl FnOnce(&mut Settings),
) -> Running {
    let mut settings = Settings::load_from([
        "origin",
        "--app-listen=127.0.0.1:0",
        "--ws-listen=127.0.0.1:0",
        "--h2-listen=127.0.0.1:0",
        "--metrics-listen=127.0.0.1:0",
        // Most tests make lists without a VAPID key, as an operator who
        // allows them (the default refuses them: see lists.rs).
        "--keyless-lists",
        "--keyless-list-creations-per-address-per-minute=1000000",
        // Counts read fresh on every status request (lists.rs tests the reuse).
        "--list-status-cache-ms=0",
        // Rate refusals answered at once (lists.rs tests the hold).
        "--refusal-hold-ms=0",
    ])
    .unwrap();
    settings.data_dir = dir.to_owned();
    settings.limit = limits.iter().map(|s| s.to_string()).collect();
    if let Some((url, prefix)) = test_store(dir) {
        settings.store = Some(url);
        settings.redis_prefix = prefix;
    }
    adjust(&mut settings);
    let config = Config::from_settings(settings).unwrap();
    // A service stopped in this process may still be letting go of the same
    // store (its last tasks end asynchronously): `open_store` waits for the
    // file lock.
    let store = origin::server::open_store(&config)
        .await
        .expect("opening the store");
    start(config, store).await.unwrap()
}

/// With `ORIGIN_TEST_STORE=redis` (or `redis-cluster`), every service the
/// tests start keeps its state in one redis-server (or a Redis Cluster of
/// 3 masters and 3 replicas) started for the test process, under a key
/// prefix named after its data folder (a service started again on the same
/// folder finds its state), so that a suite runs on the Redis store as it
/// does on redb.
fn test_store(dir: &std::path::Path) -> Option<(String, String)> {
    let cluster = match std::env::var("ORIGIN_TEST_STORE").ok().as_deref() {
        Some("redis") => false,
        Some("redis-cluster") => true,
        _ => return None,
    };
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let url = URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The servers live as long as this thread, which lives as long as
        // the process (they are told to die with it).
        std::thread::spawn(move || {
            let (url, _kept): (String, Box<dyn std::any::Any>) = if cluster {
                let c = redis::Cluster::start(3, 1);
                (c.url(), Box::new(c))
            } else {
                let s = redis::Server::start(&[]);
                (s.url(), Box::new(s))
            };
            tx.send(url).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().unwrap()
    });
    let name = dir.to_string_lossy();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Some((url.clone(), format!("t{h:016x}")))
}

/// A service with a fresh store and one WebSocket device registered to a
/// channel: the service, the device and its push resource.
pub async fn one_device(name: &str) -> (Running, Device, String) {
    let o = start_fresh(name).await;
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    (o, d, endpoint)
}

/// Starts a service with a fresh store.
pub async fn start_fresh(name: &str) -> Running {
    start_in(&temp_dir(name), &[]).await
}

/// An HTTP response, read whole.
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP/1.1 request on a new connection.
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let uri: http::Uri = url.parse().unwrap();
    let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", uri.authority().unwrap().as_str());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let resp = send.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A VAPID signer.
pub struct Vapid {
    key: SigningKey,
}

impl Vapid {
    pub fn new(seed: u8) -> Vapid {
        Vapid {
            key: SigningKey::from_slice(&[seed; 32]).unwrap(),
        }
    }
    pub fn public(&self) -> String {
        b64::encode(self.key.verifying_key().to_encoded_point(false).as_bytes())
    }
    /// `Authorization: vapid t=…, k=…` for an audience, valid an hour.
    pub fn header(&self, aud: &str) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let input = format!(
            "{}.{}",
            b64::encode(br#"{"typ":"JWT","alg":"ES256"}"#),
            b64::encode(
                json!({"aud": aud, "exp": exp, "sub": "mailto:test@example.com"})
                    .to_string()
                    .as_bytes()
            )
        );
        let sig: Signature = self.key.sign(input.as_bytes());
        format!(
            "vapid t={input}.{}, k={}",
            b64::encode(&sig.to_bytes()),
            self.public()
        )
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// What a device acknowledges: a notification, read as shared's type or as
/// any JSON.
pub trait Acked {
    /// The notification.
    fn notification(&self) -> Notification<'_>;
}

impl Acked for Notification<'_> {
    fn notification(&self) -> Notification<'_> {
        self.clone()
    }
}

impl Acked for Value {
    fn notification(&self) -> Notification<'_> {
        Notification::deserialize(self)
            .unwrap_or_else(|e| panic!("not a notification: {e}: {self}"))
    }
}

/// A device speaking Firefox's WebSocket protocol.
pub struct Device {
    ws: Ws,
    pub uaid: String,
    /// The channelIDs registered, in order.
    pub channels: Vec<String>,
}

impl Device {
    /// Connects and says hello (resuming `uaid` if given).
    pub async fn connect(running: &Running, uaid: Option<&str>) -> Device {
        Self::connect_to(&running.state.config.ws_listen.to_string(), uaid).await
    }

    /// Connects to a WebSocket listener by address and says hello.
    pub async fn connect_to(addr: &str, uaid: Option<&str>) -> Device {
        let url = format!("ws://{addr}/");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut d = Device {
            ws,
            uaid: String::new(),
            channels: Vec::new(),
        };
        d.send(&DeviceMessage::Hello {
            uaid: uaid.map(Cow::Borrowed),
            channel_ids: None,
            use_webpush: Some(true),
        })
        .await;
        match d.recv_message().await.expect("hello reply") {
            ServerMessage::Hello {
                uaid,
                status: STATUS_OK,
                use_webpush: Some(true),
                ..
            } => d.uaid = uaid.into_owned(),
            m => panic!("not a hello reply: {m:?}"),
        }
        d
    }

    pub async fn send(&mut self, m: &DeviceMessage<'_>) {
        self.send_text(&m.to_text()).await;
    }

    /// Sends a text message as it is.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(WsMessage::text(text)).await.unwrap();
    }

    /// The next message's text, or None after `d`.
    async fn recv_text(&mut self, d: Duration) -> Option<String> {
        loop {
            match tokio::time::timeout(d, self.ws.next()).await {
                Ok(Some(Ok(WsMessage::Text(t)))) => return Some(t.as_str().to_owned()),
                Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
                _ => return None,
            }
        }
    }

    /// The next message, or None after 3 s.
    pub async fn recv_message(&mut self) -> Option<ServerMessage<'static>> {
        self.recv_message_within(Duration::from_secs(3)).await
    }

    pub async fn recv_message_within(&mut self, d: Duration) -> Option<ServerMessage<'static>> {
        let text = self.recv_text(d).await?;
        Some(ServerMessage::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}")))
    }

    /// The next message, which must be a notification, or None after 3 s.
    pub async fn recv_notification(&mut self) -> Option<Notification<'static>> {
        self.recv_notification_within(Duration::from_secs(3)).await
    }

    pub async fn recv_notification_within(&mut self, d: Duration) -> Option<Notification<'static>> {
        match self.recv_message_within(d).await? {
            ServerMessage::Notification(n) => Some(n),
            m => panic!("not a notification: {m:?}"),
        }
    }

    /// The next message as JSON (checked to read as a [`ServerMessage`]),
    /// or None after 3 s.
    pub async fn recv(&mut self) -> Option<Value> {
        self.recv_within(Duration::from_secs(3)).await
    }

    pub async fn recv_within(&mut self, d: Duration) -> Option<Value> {
        let text = self.recv_text(d).await?;
        if let Err(e) = ServerMessage::parse(&text) {
            panic!("{text}: {e}");
        }
        Some(serde_json::from_str(&text).unwrap())
    }

    /// Whether the service ended the connection within 3 s (anything it
    /// sends before that is skipped).
    pub async fn ended(&mut self) -> bool {
        let end = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(3), end)
            .await
            .is_ok()
    }

    /// Asserts that nothing more arrives (within 300 ms).
    pub async fn expect_nothing(&mut self) {
        if let Some(m) = self.recv_within(Duration::from_millis(300)).await {
            panic!("expected nothing more, got {m}");
        }
    }

    /// Registers a channel; returns (channelID, endpoint).
    pub async fn register(&mut self, key: Option<&str>) -> (String, String) {
        let channel = hex(&origin::tokens::new_token());
        let channel = format!(
            "{}-{}-{}-{}-{}",
            &channel[..8],
            &channel[8..12],
            &channel[12..16],
            &channel[16..20],
            &channel[20..]
        );
        let (status, endpoint) = self.register_channel(&channel, key).await;
        assert_eq!(status, STATUS_OK);
        self.channels.push(channel.clone());
        (channel, endpoint.expect("a pushEndpoint"))
    }

    /// Sends `register` for a channel: the reply's status and pushEndpoint.
    pub async fn register_channel(
        &mut self,
        channel: &str,
        key: Option<&str>,
    ) -> (u16, Option<String>) {
        self.register_channel_within(channel, key, Duration::from_secs(3))
            .await
    }

    /// [`Device::register_channel`], waiting up to `wait` for the reply.
    pub async fn register_channel_within(
        &mut self,
        channel: &str,
        key: Option<&str>,
        wait: Duration,
    ) -> (u16, Option<String>) {
        self.send(&DeviceMessage::Register {
            channel_id: channel.into(),
            key: key.map(Cow::Borrowed),
        })
        .await;
        match self
            .recv_message_within(wait)
            .await
            .expect("register reply")
        {
            ServerMessage::Register {
                channel_id,
                status,
                push_endpoint,
            } => {
                assert_eq!(channel_id, channel);
                (status, push_endpoint.map(Cow::into_owned))
            }
            m => panic!("not a register reply: {m:?}"),
        }
    }

    /// Sends `unregister` for a channel: the reply's status.
    pub async fn unregister(&mut self, channel: &str) -> u16 {
        self.send(&DeviceMessage::Unregister {
            channel_id: channel.into(),
            code: None,
        })
        .await;
        match self.recv_message().await.expect("unregister reply") {
            ServerMessage::Unregister { channel_id, status } => {
                assert_eq!(channel_id, channel);
                status
            }
            m => panic!("not an unregister reply: {m:?}"),
        }
    }

    /// Acknowledges a notification.
    pub async fn ack(&mut self, n: &impl Acked) {
        self.ack_all(&[n.notification()]).await;
    }

    /// Acknowledges notifications in one `ack`.
    pub async fn ack_all(&mut self, ns: &[Notification<'_>]) {
        let updates: Vec<AckUpdate> = ns
            .iter()
            .map(|n| AckUpdate {
                channel_id: n.channel_id.as_ref().into(),
                version: n.version.as_ref().into(),
                code: None,
            })
            .collect();
        self.send(&DeviceMessage::Ack {
            updates: updates.into(),
        })
        .await;
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A syntactically valid aes128gcm body of `len` bytes.
pub fn aes128gcm_body(len: usize) -> Vec<u8> {
    let mut b = vec![7u8; 16];
    b.extend_from_slice(&4096u32.to_be_bytes());
    b.push(65);
    b.push(4);
    b.extend_from_slice(&[9u8; 64]);
    b.resize(len.max(86 + 17), 0x42);
    b
}

/// The origin's `/metrics` value of one sample or family (see [`metric_in`]).
pub async fn metric(running: &Running, name: &str) -> u64 {
    let r = request(
        "GET",
        &format!("http://{}/metrics", running.state.config.metrics_listen),
        &[],
        b"",
    )
    .await;
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    metric_in(&text, name).unwrap_or_else(|| panic!("{name} not in metrics:\n{text}"))
}

/// A sample of a Prometheus text page: `name` exactly (`family{label="v"}`),
/// or the sum of a family's samples.
pub fn metric_in(text: &str, name: &str) -> Option<u64> {
    let mut found = None;
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = l.rsplit_once(' ')?;
        let family = series.split('{').next().unwrap_or(series);
        if series == name || family == name {
            *found.get_or_insert(0) += value.parse::<u64>().ok()?;
        }
    }
    found
}

/// An HTTP/2 (h2c) client connection with server push enabled.
pub async fn h2_connect(addr: std::net::SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .enable_push(true)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client.ready().await.unwrap()
}

/// Waits, if need be, until a clock minute has at least five seconds left,
/// so that a test's rate window cannot end halfway.
pub async fn early_in_a_minute() {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if secs % 60 >= 55 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - secs % 60)).await;
    }
}
