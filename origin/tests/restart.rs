//! Durability across a crash: the origin binary is killed with SIGKILL while
//! pushes are being accepted, or after pushes to a connected device were
//! answered and written but not acknowledged; after a restart on the same
//! store, every message that was answered 201 is delivered.

mod common;
use common::*;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Origin {
    child: Child,
    app: String,
    ws: String,
}

impl Drop for Origin {
    /// A failing test must not leave its origin running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the origin binary on `dir` with every listener on a port the
/// kernel picks (a port chosen before the start could be taken meanwhile by
/// another test's socket); the addresses come from its "origin ready" line.
fn spawn(dir: &std::path::Path) -> Origin {
    let mut child = Command::new(env!("CARGO_BIN_EXE_origin"))
        .args(["--data-dir", dir.to_str().unwrap()])
        .args(["--app-listen", "127.0.0.1:0"])
        .args(["--ws-listen", "127.0.0.1:0"])
        .args(["--h2-listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        // More than the 170 messages the crash test stores for one subscription.
        .args(["--limit", "max_stored_per_subscription=1000"])
        .env("ORIGIN_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("origin ready"), "{line}");
    let addr = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {line}"))
            .to_owned()
    };
    Origin {
        app: format!("http://{}", addr("app=")),
        ws: addr("ws="),
        child,
    }
}

/// A `Running`-like view for the WebSocket helper: only the address is used.
async fn device(o: &Origin, uaid: Option<&str>) -> Device {
    Device::connect_to(&o.ws, uaid).await
}

#[tokio::test]
async fn messages_answered_201_survive_kill_9() {
    let dir = temp_dir("restart");
    let mut o = spawn(&dir);

    let mut d = device(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    let uaid = d.uaid.clone();
    d.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Stored while the device is away.
    let accepted: Arc<Mutex<HashSet<String>>> = Arc::default();
    for _ in 0..20 {
        let r = request("POST", &endpoint, &[("ttl", "3600")], b"").await;
        assert_eq!(r.status, 201);
        accepted.lock().unwrap().insert(version_of(&r));
    }
    // Many concurrent pushes; SIGKILL once 60 more have been answered 201.
    let answered = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = Vec::new();
    for _ in 0..150 {
        let (endpoint, accepted, answered) = (endpoint.clone(), accepted.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            if let Some(r) = try_request(&endpoint).await {
                if r.status == 201 {
                    accepted.lock().unwrap().insert(version_of(&r));
                    answered.add_permits(1);
                }
            }
        }));
    }
    let _ = answered.acquire_many(60).await.unwrap();
    o.child.kill().unwrap(); // SIGKILL
    o.child.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 80, "{} accepted", accepted.len());

    // Restart on the same store: every accepted message is delivered.
    let o = spawn(&dir);
    let mut d = device(&o, Some(&uaid)).await;
    assert_eq!(d.uaid, uaid);
    let mut got = HashSet::new();
    while let Some(n) = d.recv_within(Duration::from_secs(2)).await {
        got.insert(n["version"].as_str().unwrap().to_owned());
        d.ack(&n).await;
    }
    let missing: Vec<_> = accepted.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted messages lost",
        missing.len(),
        accepted.len()
    );
    let mut o = o;
    o.child.kill().unwrap();
    o.child.wait().unwrap();
}

/// A message answered 201 because it was written to its connected device
/// is stored too: the device that had not acknowledged it when the origin
/// died gets it again after the restart.
#[tokio::test]
async fn messages_written_to_a_connected_device_survive_kill_9() {
    let dir = temp_dir("restart-connected");
    let mut o = spawn(&dir);
    let mut d = device(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    let uaid = d.uaid.clone();
    let mut sent = HashSet::new();
    for _ in 0..5 {
        let r = request("POST", &endpoint, &[("ttl", "3600")], b"").await;
        assert_eq!(r.status, 201);
        sent.insert(version_of(&r));
        // On the device's socket: the 201 came after it was written.
        let n = d
            .recv_within(Duration::from_secs(2))
            .await
            .expect("delivered");
        assert!(sent.contains(n["version"].as_str().unwrap()));
    }
    o.child.kill().unwrap(); // SIGKILL, none acknowledged
    o.child.wait().unwrap();
    drop(d);

    let mut o2 = spawn(&dir);
    let mut d = device(&o2, Some(&uaid)).await;
    let mut got = HashSet::new();
    while let Some(n) = d.recv_within(Duration::from_secs(2)).await {
        got.insert(n["version"].as_str().unwrap().to_owned());
        d.ack(&n).await;
    }
    assert_eq!(got, sent, "every message answered 201 comes again");
    // Acknowledged: gone for good.
    d.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut d = device(&o2, Some(&uaid)).await;
    assert!(d.recv_within(Duration::from_millis(500)).await.is_none());
    o2.child.kill().unwrap();
    o2.child.wait().unwrap();
    let _ = &mut o;
}

fn version_of(r: &Resp) -> String {
    r.header("location")
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

/// A push that may fail because the server died mid-request.
async fn try_request(endpoint: &str) -> Option<Resp> {
    let uri: http::Uri = endpoint.parse().unwrap();
    let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(conn);
    let req = http::Request::post(uri.path())
        .header("host", uri.authority().unwrap().as_str())
        .header("ttl", "3600")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.ok()?;
    Some(Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: bytes::Bytes::new(),
    })
}

/// SIGTERM: the service stops accepting, closes devices with a reconnect
/// hint (1001), stores what was written but not acknowledged, and exits 0.
#[tokio::test]
async fn graceful_shutdown_keeps_unacknowledged_messages() {
    let dir = temp_dir("sigterm");
    let mut o = spawn(&dir);
    let mut d = device(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    let uaid = d.uaid.clone();
    let r = request("POST", &endpoint, &[("ttl", "3600")], b"").await;
    assert_eq!(r.status, 201);
    let n = d
        .recv()
        .await
        .expect("delivered directly, not acknowledged");
    let pid = o.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = o.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        d.recv_within(Duration::from_secs(1)).await.is_none(),
        "closed"
    );

    let mut o = spawn(&dir);
    let mut d = device(&o, Some(&uaid)).await;
    let again = d
        .recv()
        .await
        .expect("stored at shutdown, delivered after restart");
    assert_eq!(again["version"], n["version"]);
    o.child.kill().unwrap();
    o.child.wait().unwrap();
}

#[tokio::test]
async fn health_probe_reports_the_service_at_its_configured_address() {
    let probe = |app: &str| {
        Command::new(env!("CARGO_BIN_EXE_origin"))
            .args(["--health-probe"])
            .env("ORIGIN_APP_LISTEN", app)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .code()
    };
    let dir = temp_dir("probe");
    assert_eq!(
        probe(&format!("127.0.0.1:{}", free_port())),
        Some(1),
        "nothing listens"
    );
    let o = spawn(&dir);
    let app = o.app.strip_prefix("http://").unwrap();
    assert_eq!(probe(app), Some(0));
    // A wildcard listen address is probed on loopback.
    let port = app.rsplit(':').next().unwrap();
    assert_eq!(probe(&format!("0.0.0.0:{port}")), Some(0));
}
