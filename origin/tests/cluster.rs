//! Several origin nodes on one Redis store, each a full service in this
//! process with its own listeners: a push taken by any node reaches a
//! device on any other, a list push reaches every member once wherever it
//! is connected, and a node that loses Redis says so and recovers.

mod common;
use common::redis::{command, Cluster, Server};
use common::*;
use origin::server::Running;
use serde_json::{json, Value};
use std::time::Duration;

/// The one public URL every node answers for (as behind a load balancer).
const PUBLIC: &str = "http://push.test";
const DEVICES: &str = "http://devices.test";

async fn node_with(store: &str, prefix: &str, name: &str, wait: u32, limits: &[&str]) -> Running {
    node_acking(store, prefix, name, wait, limits, 20).await
}

/// A node whose pushes wait `ack_wait_ms` for the device's acknowledgement
/// before their store write.
async fn node_acking(
    store: &str,
    prefix: &str,
    name: &str,
    wait: u32,
    limits: &[&str],
    ack_wait_ms: u64,
) -> Running {
    start_with(&temp_dir(name), limits, |s| {
        s.ack_wait_ms = ack_wait_ms;
        s.store = Some(store.to_owned());
        s.redis_wait_replicas = wait;
        s.redis_prefix = prefix.to_owned();
        s.node_id = Some(name.to_owned());
        s.public_url = Some(PUBLIC.to_owned());
        s.device_url = Some(DEVICES.to_owned());
    })
    .await
}

/// Three nodes on `store`, with keys of their own, whose writes wait for
/// `wait` replicas; once every one is ready.
async fn three(store: &str, wait: u32) -> [Running; 3] {
    three_acking(store, wait, 20).await
}

/// [`three`] whose pushes wait `ack_wait_ms` for acknowledgements.
async fn three_acking(store: &str, wait: u32, ack_wait_ms: u64) -> [Running; 3] {
    let prefix = format!(
        "c{}",
        &origin::tokens::to_hex(&origin::tokens::new_token())[..8]
    );
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(node_acking(store, &prefix, name, wait, &[], ack_wait_ms).await);
    }
    let nodes: [Running; 3] = nodes.try_into().ok().expect("three nodes");
    for n in &nodes {
        until_ready(n, 200).await;
    }
    nodes
}

/// `url` (named by the public URL) as sent to node `n`.
fn at(n: &Running, url: &str) -> String {
    let path = url.strip_prefix(PUBLIC).expect("a URL of the service");
    format!("http://{}{path}", n.state.config.app_listen)
}

async fn push(n: &Running, endpoint: &str, ttl: &str, body: &[u8]) -> Resp {
    let mut hs = vec![("ttl", ttl)];
    if !body.is_empty() {
        hs.push(("content-encoding", "aes128gcm"));
    }
    request("POST", &at(n, endpoint), &hs, body).await
}

async fn ready(n: &Running) -> u16 {
    let url = format!("http://{}/ready", n.state.config.app_listen);
    request("GET", &url, &[], b"").await.status
}

/// Waits until `/ready` answers `status`.
async fn until_ready(n: &Running, status: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while ready(n).await != status {
        assert!(
            std::time::Instant::now() < deadline,
            "/ready never said {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pushes_cross_nodes(store: &str, wait: u32) {
    // Pushes wait long for acknowledgements: the first is surely
    // acknowledged in time, the second surely not.
    let [a, b, c] = three_acking(store, wait, 1000).await;
    let mut d = Device::connect(&a, None).await;
    let (_, endpoint) = d.register(None).await;
    assert!(endpoint.starts_with(PUBLIC), "{endpoint}");
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Taken by B, delivered by A, acknowledged there before B's store
    // write: B answers at the acknowledgement and never writes it.
    let body = aes128gcm_body(64);
    let post = tokio::spawn({
        let (url, body) = (at(&b, &endpoint), body.clone());
        async move {
            let hs = [("ttl", "60"), ("content-encoding", "aes128gcm")];
            request("POST", &url, &hs, &body).await
        }
    });
    let n = d
        .recv_notification()
        .await
        .expect("a push through another node");
    assert_eq!(
        n.data.as_deref().map(|s| shared::b64::decode(s).unwrap()),
        Some(body.clone())
    );
    d.ack(&n).await;
    let r = post.await.unwrap();
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(metric(&b, "push_pushes_unstored_total").await, 1);
    // By C, acknowledged after its 201: stored, then deleted by C when A
    // tells it of the acknowledgement (not redelivered below).
    let r = push(&c, &endpoint, "60", b"").await;
    assert_eq!(r.status, 201);
    let n = d
        .recv_notification()
        .await
        .expect("a push through a third node");
    d.ack(&n).await;
    d.expect_nothing().await;
    assert_eq!(metric(&c, "push_pushes_unstored_total").await, 0);
    assert!(metric(&b, "push_cluster_routes_total{outcome=\"hit\"}").await >= 1);
    // Written to A's connection, never stored as for a device away.
    assert!(metric(&b, "push_cluster_forwarded_total").await >= 1);
    assert_eq!(metric(&b, "push_pushes_total{outcome=\"stored\"}").await, 0);
    let uaid = d.uaid.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.close().await;
    let mut d = Device::connect(&b, Some(&uaid)).await;
    d.expect_nothing().await;

    // Away: stored; back on another node, it comes from there.
    let uaid = d.uaid.clone();
    d.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = push(&b, &endpoint, "60", &body).await;
    assert_eq!(r.status, 201);
    let mut d = Device::connect(&c, Some(&uaid)).await;
    let n = d
        .recv_notification()
        .await
        .expect("a stored push on another node");
    d.ack(&n).await;
    d.expect_nothing().await;
    // Acknowledged is gone for every node.
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.close().await;
    let mut d = Device::connect(&a, Some(&uaid)).await;
    d.expect_nothing().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_taken_by_any_node_reaches_a_device_on_another() {
    let server = Server::start(&[]);
    pushes_cross_nodes(&server.url(), 0).await;
    // Route hashes are hash tables (a lookup is one probe, not a search
    // of a compact hash), emptied or not.
    let keys = command(server.port, "KEYS *:routes:*").expect("KEYS");
    let keys: Vec<&str> = keys
        .lines()
        .filter(|l| !l.starts_with(['*', '$']))
        .collect();
    assert!(!keys.is_empty(), "no route hash");
    for k in keys {
        let encoding = command(server.port, &format!("OBJECT ENCODING {k}"));
        assert_eq!(encoding.as_deref(), Some("$9\r\nhashtable\r\n"), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_a_redis_cluster_whose_writes_wait_for_a_replica() {
    let cluster = Cluster::start(3, 1);
    pushes_cross_nodes(&cluster.url(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_push_reaches_members_on_every_node_once() {
    let server = Server::start(&[]);
    let nodes = three(&server.url(), 0).await;
    let mut devices = Vec::new();
    let mut endpoints = Vec::new();
    // Two members on each node.
    for n in nodes.iter().chain(nodes.iter()) {
        let mut d = Device::connect(n, None).await;
        let (_, e) = d.register(None).await;
        endpoints.push(e);
        devices.push(d);
    }
    let doc: Value = endpoints
        .iter()
        .map(|e| (e.clone(), json!({})))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let r = request(
        "POST",
        &at(&nodes[0], &format!("{PUBLIC}/lists/0")),
        &[("content-type", "application/push-aggregation+json")],
        doc.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();
    // The last member goes away before the push.
    let away = devices.pop().unwrap();
    let away_uaid = away.uaid.clone();
    away.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let r = request("POST", &at(&nodes[1], &list), &[("ttl", "600")], b"").await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let status = r.header("location").unwrap().to_owned();
    for d in devices.iter_mut() {
        let n = d.recv_notification().await.expect("a copy on its node");
        d.ack(&n).await;
    }
    for d in devices.iter_mut() {
        d.expect_nothing().await;
    }
    // Back, on another node than before: its copy, once.
    let mut d = Device::connect(&nodes[0], Some(&away_uaid)).await;
    let n = d
        .recv_notification()
        .await
        .expect("its copy after coming back");
    d.ack(&n).await;
    d.expect_nothing().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Every node tells the same status.
    for n in &nodes {
        let s = request("GET", &at(n, &status), &[], b"").await.json();
        assert_eq!(s["members"], 6, "{s}");
        assert_eq!(s["delivered"], 6, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_redis_says_so_and_recovers() {
    let mut server = Server::start(&[]);
    let [a, b, _c] = three(&server.url(), 0).await;
    let mut d = Device::connect(&a, None).await;
    let (_, endpoint) = d.register(None).await;
    let uaid = d.uaid.clone();
    d.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Answered 201: stored in Redis's append-only file.
    assert_eq!(push(&b, &endpoint, "600", b"").await.status, 201);

    // A device stays connected to A throughout.
    let mut stays = Device::connect(&a, None).await;
    server.kill();
    until_ready(&a, 503).await;
    let r = push(&b, &endpoint, "600", b"").await;
    assert_eq!(r.status, 503, "{:?}", r.json());
    // Its registration is refused with 500; the connection stays.
    let channel = "3f1c9d2e-8b7a-4c6d-9e5f-1a2b3c4d5e6f";
    let asked = std::time::Instant::now();
    let (status, _) = stays
        .register_channel_within(channel, None, Duration::from_secs(15))
        .await;
    assert_eq!(status, 500, "after {:?}", asked.elapsed());

    server.restart();
    until_ready(&a, 200).await;
    until_ready(&b, 200).await;
    assert_eq!(push(&b, &endpoint, "600", b"").await.status, 201);
    // The same connection registers once Redis is back.
    let (status, pushed) = stays.register_channel(channel, None).await;
    assert_eq!(status, 200);
    assert!(pushed.is_some());
    // Both messages answered 201 are there, on any node.
    let mut d = Device::connect(&b, Some(&uaid)).await;
    for _ in 0..2 {
        let n = d.recv_notification().await.expect("a message answered 201");
        d.ack(&n).await;
    }
    d.expect_nothing().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_master_killed_loses_nothing_answered() {
    let mut cluster = Cluster::start(3, 1);
    let [a, b, _c] = three(&cluster.url(), 1).await;
    // Devices on A, away; messages through B, each answered 201.
    let mut uaids = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..6 {
        let mut d = Device::connect(&a, None).await;
        let (_, e) = d.register(None).await;
        uaids.push(d.uaid.clone());
        endpoints.push(e);
        d.close().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for e in &endpoints {
        assert_eq!(push(&b, e, "600", b"").await.status, 201);
    }
    // A master goes, as with kill -9; its replica takes over, and the old
    // master, back, follows it (writes wait for a replica of every master).
    let master = cluster.masters()[0];
    cluster.servers[master].kill();
    let mut restarted = false;
    // Meanwhile requests are answered (201 or 503), none hangs.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut answered = 0;
    // A 503 promises nothing either way: the write may have landed.
    let mut unsure = vec![0usize; endpoints.len()];
    loop {
        let started = std::time::Instant::now();
        let i = answered % endpoints.len();
        let r = push(&b, &endpoints[i], "600", b"").await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a request hung for {:?}",
            started.elapsed()
        );
        assert!(
            matches!(r.status, 201 | 503),
            "{}: {:?}",
            r.status,
            r.json()
        );
        if r.status == 201 {
            answered += 1;
            if answered >= endpoints.len() {
                break;
            }
        } else {
            unsure[i] += 1;
        }
        assert!(std::time::Instant::now() < deadline, "no recovery in 30 s");
        if !restarted && cluster.masters().len() == 3 {
            cluster.servers[master].restart();
            restarted = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every message answered 201 reaches its device (two each).
    for (i, uaid) in uaids.iter().enumerate() {
        let mut d = Device::connect(&b, Some(uaid)).await;
        let mut got = 0;
        while let Some(n) = d.recv_notification_within(Duration::from_secs(2)).await {
            d.ack(&n).await;
            got += 1;
        }
        assert!(
            (2..=2 + unsure[i]).contains(&got),
            "device {i}: {got} messages, 2 answered 201 and {} answered 503",
            unsure[i]
        );
    }
}

/// An origin node in a process of its own, to be killed.
struct Process {
    child: std::process::Child,
    app: String,
    ws: String,
    metrics: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn process(store: &str, prefix: &str, name: &str) -> Process {
    process_with(store, prefix, name, &[])
}

/// [`process`], with more environment variables.
fn process_with(store: &str, prefix: &str, name: &str, env: &[(&str, &str)]) -> Process {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_origin"))
        .args([
            "--app-listen=127.0.0.1:0",
            "--ws-listen=127.0.0.1:0",
            "--h2-listen=127.0.0.1:0",
            "--metrics-listen=127.0.0.1:0",
            "--keyless-lists",
            "--keyless-list-creations-per-address-per-minute=1000000",
            "--list-status-cache-ms=0",
            &format!("--store={store}"),
            &format!("--redis-prefix={prefix}"),
            &format!("--node-id={name}"),
            &format!("--public-url={PUBLIC}"),
            &format!("--device-url={DEVICES}"),
        ])
        .arg("--data-dir")
        .arg(temp_dir(name))
        .env("ORIGIN_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let field = |k: &str| -> String {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in {line:?}"))
            .to_owned()
    };
    Process {
        app: field("app="),
        ws: field("ws="),
        metrics: field("metrics="),
        child,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_after_taking_a_list_push_loses_no_copy() {
    let server = Server::start(&[]);
    let prefix = "killed";
    // p1's walk waits before its first batch (a debug build's hook), so
    // the kill lands before any member went out: the others take it over.
    let mut nodes: Vec<Process> = vec![
        process_with(
            &server.url(),
            prefix,
            "p1",
            &[("ORIGIN_DEBUG_WALK_DELAY_MS", "60000")],
        ),
        process(&server.url(), prefix, "p2"),
        process(&server.url(), prefix, "p3"),
    ];
    let mut devices = Vec::new();
    let mut endpoints = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for _ in 0..5 {
            let mut d = Device::connect_to(&n.ws, None).await;
            let (_, e) = d.register(None).await;
            endpoints.push(e);
            devices.push((i, d));
        }
    }
    let doc: Value = endpoints
        .iter()
        .map(|e| (e.clone(), json!({})))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let app =
        |n: &Process, url: &str| format!("http://{}{}", n.app, url.strip_prefix(PUBLIC).unwrap());
    let r = request(
        "POST",
        &app(&nodes[0], &format!("{PUBLIC}/lists/0")),
        &[("content-type", "application/push-aggregation+json")],
        doc.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();
    let r = request("POST", &app(&nodes[0], &list), &[("ttl", "600")], b"").await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    // kill -9 right after the answer, in the middle of the walk.
    nodes[0].child.kill().unwrap();
    nodes[0].child.wait().unwrap();
    for (i, mut d) in devices {
        let mut versions = std::collections::HashSet::new();
        // Nothing arrives on p1; elsewhere, it arrives from the node that
        // takes the walk over once p1's liveness key has expired.
        let mut wait = if i == 0 { 700 } else { 12_000 };
        while let Some(m) = d.recv_message_within(Duration::from_millis(wait)).await {
            wait = 700;
            if let shared::webpush_ws::ServerMessage::Notification(n) = m {
                versions.insert(n.version.to_string());
                d.ack(&n).await;
            }
        }
        if i == 0 {
            // Its node is gone: it reconnects to another.
            let uaid = d.uaid.clone();
            let mut d = Device::connect_to(&nodes[1].ws, Some(&uaid)).await;
            while let Some(n) = d.recv_notification_within(Duration::from_millis(700)).await {
                versions.insert(n.version.to_string());
                d.ack(&n).await;
            }
        }
        assert_eq!(versions.len(), 1, "node p{}'s member: {versions:?}", i + 1);
    }
    let mut taken = 0;
    for n in &nodes[1..] {
        let r = request("GET", &format!("http://{}/metrics", n.metrics), &[], b"").await;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        taken += metric_in(&text, "push_cluster_fanouts_taken_over_total").unwrap_or(0);
    }
    // (A release build has no such hook: its walk may finish first.)
    if cfg!(debug_assertions) {
        assert_eq!(taken, 1, "one node took the walk over");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_rate_limits_hold_across_nodes() {
    let server = Server::start(&[]);
    let limits = ["list_pushes_per_minute=2", "list_creations_per_minute=2"];
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(node_with(&server.url(), "rates", name, 0, &limits).await);
    }
    for n in &nodes {
        until_ready(n, 200).await;
    }
    early_in_a_minute().await;
    let create = |n: &Running| {
        let url = at(n, &format!("{PUBLIC}/lists/0"));
        async move {
            request(
                "POST",
                &url,
                &[("content-type", "application/push-aggregation+json")],
                b"{}",
            )
            .await
        }
    };
    let first = create(&nodes[0]).await;
    assert_eq!(first.status, 201, "{:?}", first.json());
    assert_eq!(create(&nodes[1]).await.status, 201);
    // The third creation, on a third node, is one too many for all of them.
    let r = create(&nodes[2]).await;
    assert_eq!(r.status, 429, "{:?}", r.json());
    assert!(r.header("retry-after").is_some());
    let list = first.header("location").unwrap().to_owned();
    let push = |n: &Running| {
        let url = at(n, &list);
        async move { request("POST", &url, &[("ttl", "60")], b"").await }
    };
    assert_eq!(push(&nodes[0]).await.status, 201);
    assert_eq!(push(&nodes[1]).await.status, 201);
    let r = push(&nodes[2]).await;
    assert_eq!(r.status, 429, "{:?}", r.json());
}

/// Sends an HTTP/2 request without a body; the response head and body.
async fn h2_send(
    c: &mut h2::client::SendRequest<bytes::Bytes>,
    req: http::Request<()>,
) -> (http::response::Parts, Vec<u8>) {
    let (fut, _) = c.send_request(req, true).unwrap();
    let (parts, mut body) = fut.await.unwrap().into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        data.extend_from_slice(&chunk.unwrap());
    }
    (parts, data)
}

/// The link of relation `rel` in a response head.
fn link(parts: &http::response::Parts, rel: &str) -> String {
    let values = parts.headers.get_all("link").iter();
    let values: Vec<&str> = values.map(|v| v.to_str().unwrap()).collect();
    shared::links::find(values, rel).unwrap().to_owned()
}

/// An RFC 8030 subscription made over HTTP/2 on node `n`: the user
/// agent's connection and the subscription's `201` head.
async fn h2_subscribe(
    n: &Running,
) -> (h2::client::SendRequest<bytes::Bytes>, http::response::Parts) {
    let mut ua = h2_connect(n.state.config.h2_listen).await;
    let req = http::Request::post(format!("{DEVICES}/subscribe"))
        .body(())
        .unwrap();
    let (parts, _) = h2_send(&mut ua, req).await;
    assert_eq!(parts.status, 201);
    (ua, parts)
}

/// An application server's receipt subscription (from the link
/// `receipt_subscribe`), watched on node `n`: its URL and the receipts
/// pushed to it.
async fn watch_receipts(
    n: &Running,
    receipt_subscribe: String,
) -> (String, h2::client::PushPromises) {
    let mut app = h2_connect(n.state.config.h2_listen).await;
    let req = http::Request::post(receipt_subscribe).body(()).unwrap();
    let (rparts, _) = h2_send(&mut app, req).await;
    assert_eq!(rparts.status, 201);
    let receipt_sub = rparts.headers["location"].to_str().unwrap().to_owned();
    let (mut watch, _) = app
        .send_request(http::Request::get(&receipt_sub).body(()).unwrap(), true)
        .unwrap();
    (receipt_sub, watch.push_promises())
}

/// RFC 8030 over HTTP/2 across nodes of a Redis Cluster: a user agent on
/// node C gets a push sent through node A, and the receipt of its
/// acknowledgement reaches the application server watching on node B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_push_and_its_receipt_cross_three_nodes() {
    let cluster = Cluster::start(3, 1);
    let [a, b, c] = three(&cluster.url(), 1).await;
    let (mut ua, parts) = h2_subscribe(&c).await;
    let push_url = link(&parts, shared::links::REL_PUSH);
    let set_url = link(&parts, shared::links::REL_SET);

    // The application server subscribes to receipts, and watches, on B.
    let receipt_subscribe = link(&parts, shared::links::REL_RECEIPT);
    let (receipt_sub, mut receipts) = watch_receipts(&b, receipt_subscribe).await;

    // The user agent watches its set on C.
    let (mut set_fut, _) = ua
        .send_request(http::Request::get(&set_url).body(()).unwrap(), true)
        .unwrap();
    let mut pushes = set_fut.push_promises();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Pushed through A, with a receipt request.
    let body = aes128gcm_body(120);
    let r = request(
        "POST",
        &at(&a, &push_url),
        &[
            ("ttl", "60"),
            ("content-encoding", "aes128gcm"),
            ("push-receipt", &receipt_sub),
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let promise = tokio::time::timeout(Duration::from_secs(5), pushes.push_promise())
        .await
        .expect("a push on C")
        .unwrap()
        .unwrap();
    let (preq, presp) = promise.into_parts();
    let (presp_parts, mut pbody) = presp.await.unwrap().into_parts();
    assert_eq!(presp_parts.status, 200);
    let mut got = Vec::new();
    while let Some(chunk) = pbody.data().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, body);

    // Acknowledged on C: the receipt is pushed to the watcher on B.
    let ack = http::Request::delete(preq.uri().to_string())
        .body(())
        .unwrap();
    let (aparts, _) = h2_send(&mut ua, ack).await;
    assert_eq!(aparts.status, 204);
    let receipt = tokio::time::timeout(Duration::from_secs(5), receipts.push_promise())
        .await
        .expect("a receipt on B")
        .unwrap()
        .unwrap();
    let (rreq, rresp) = receipt.into_parts();
    assert_eq!(rreq.uri().path(), preq.uri().path());
    assert_eq!(rresp.await.unwrap().status(), 204);
    assert!(metric(&a, "push_cluster_forwarded_total").await >= 1);
}

/// Redis stopped (as by a crash) and restarted while pushes stream through
/// two nodes to devices on a third and to devices that are away: the
/// nodes recover by themselves, and every push answered `201` reaches its
/// device (live, or at its next `hello` on another node). (That a node
/// keeps its device connections through an outage is
/// `a_node_that_loses_redis_says_so_and_recovers`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_under_load_loses_nothing_answered() {
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut server = Server::start(&[]);
    let prefix = "restarted";
    let limits = ["subscription_messages_per_minute=100000"];
    let a = node_with(&server.url(), prefix, "ra", 0, &limits).await;
    let b = node_with(&server.url(), prefix, "rb", 0, &limits).await;
    let c = node_with(&server.url(), prefix, "rc", 0, &limits).await;
    for n in [&a, &b, &c] {
        until_ready(n, 200).await;
    }
    // Six devices stay on A; six are away.
    let done = Arc::new(AtomicBool::new(false));
    let mut endpoints = Vec::new();
    let mut receivers = Vec::new();
    let mut away = Vec::new();
    for i in 0..12 {
        let mut d = Device::connect(&a, None).await;
        let (_, e) = d.register(None).await;
        endpoints.push(e.clone());
        if i % 2 == 0 {
            let done = done.clone();
            let ws = a.state.config.ws_listen.to_string();
            receivers.push(tokio::spawn(async move {
                let mut got = HashSet::new();
                loop {
                    let asked = std::time::Instant::now();
                    match d.recv_notification_within(Duration::from_secs(2)).await {
                        Some(n) => {
                            got.insert(n.version.to_string());
                            d.ack(&n).await;
                        }
                        None if done.load(Ordering::Acquire) => break,
                        None if asked.elapsed() >= Duration::from_secs(1) => {}
                        // Closed: it reconnects, as a device does, and
                        // fetches what was stored meanwhile.
                        None => {
                            let uaid = d.uaid.clone();
                            d = Device::connect_to(&ws, Some(&uaid)).await;
                        }
                    }
                }
                (e, got)
            }));
        } else {
            away.push((e, d.uaid.clone()));
            d.close().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Pushes through B and C in turn, for 4 s; Redis is down from 1 s for
    // about a second.
    let load = {
        let endpoints = endpoints.clone();
        let (b_app, c_app) = (b.state.config.app_listen, c.state.config.app_listen);
        tokio::spawn(async move {
            let mut answered: HashMap<String, usize> = HashMap::new();
            let mut refused = 0;
            let started = std::time::Instant::now();
            let mut i = 0;
            while started.elapsed() < Duration::from_secs(4) {
                let e = &endpoints[i % endpoints.len()];
                let app = if i % 2 == 0 { b_app } else { c_app };
                let path = e.strip_prefix(PUBLIC).unwrap();
                let r = request(
                    "POST",
                    &format!("http://{app}{path}"),
                    &[("ttl", "600")],
                    b"",
                )
                .await;
                match r.status {
                    201 => *answered.entry(e.clone()).or_default() += 1,
                    _ => refused += 1,
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (answered, refused)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.kill();
    // The nodes see it down, and say so.
    until_ready(&b, 503).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    let (answered, refused) = load.await.unwrap();
    eprintln!("{refused} pushes refused while Redis was away");
    for n in [&a, &b, &c] {
        until_ready(n, 200).await;
    }
    done.store(true, Ordering::Release);
    for r in receivers {
        let (e, got) = r.await.unwrap();
        let want = answered.get(&e).copied().unwrap_or(0);
        assert!(want > 0);
        assert!(
            got.len() >= want,
            "{e}: {} of {want} answered 201",
            got.len()
        );
    }
    // Those away get theirs on another node.
    for (e, uaid) in away {
        let want = answered.get(&e).copied().unwrap_or(0);
        assert!(want > 0);
        let mut d = Device::connect(&c, Some(&uaid)).await;
        let mut got = HashSet::new();
        while let Some(n) = d.recv_notification_within(Duration::from_secs(2)).await {
            got.insert(n.version.to_string());
            d.ack(&n).await;
        }
        assert!(
            got.len() >= want,
            "{e}: {} of {want} answered 201",
            got.len()
        );
    }
}

/// A subscription's message limit holds across nodes: pushes to one
/// subscription through three nodes in turn are refused with `429` once
/// the nodes together took the limit (give or take the pushes of one
/// exchange of counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriptions_message_limit_holds_across_nodes() {
    let server = Server::start(&[]);
    let limits = ["subscription_messages_per_minute=20"];
    let mut nodes = Vec::new();
    for name in ["sa", "sb", "sc"] {
        nodes.push(node_with(&server.url(), "subrates", name, 0, &limits).await);
    }
    for n in &nodes {
        until_ready(n, 200).await;
    }
    let mut d = Device::connect(&nodes[0], None).await;
    let (_, endpoint) = d.register(None).await;
    early_in_a_minute().await;
    let (mut taken, mut refused) = (0, 0);
    for i in 0..60 {
        let r = push(&nodes[i % 3], &endpoint, "0", b"").await;
        match r.status {
            201 => taken += 1,
            429 => {
                assert!(r.header("retry-after").is_some());
                refused += 1;
            }
            s => panic!("{s}: {:?}", r.json()),
        }
        // Slower than the exchange of counts (every 100 ms) across three nodes.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(
        (20..=25).contains(&taken),
        "{taken} taken, {refused} refused"
    );
    // Each node alone would have taken 20.
    assert_eq!(taken + refused, 60);
}

/// Every node sweeps expired messages, but one at a time: a message that
/// expires unread has its `410` receipt sent once, whichever node holds
/// the sweeper's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_messages_receipt_is_sent_once_across_nodes() {
    let server = Server::start(&[]);
    let mut nodes = Vec::new();
    for name in ["ea", "eb", "ec"] {
        let n = start_with(&temp_dir(name), &[], |s| {
            s.store = Some(server.url());
            s.redis_prefix = "expiry".to_owned();
            s.node_id = Some(name.to_owned());
            s.public_url = Some(PUBLIC.to_owned());
            s.device_url = Some(DEVICES.to_owned());
            s.sweep_secs = 1;
        })
        .await;
        until_ready(&n, 200).await;
        nodes.push(n);
    }
    // A user agent's subscription over HTTP/2 on A, not watched.
    let (_ua, parts) = h2_subscribe(&nodes[0]).await;
    let push_url = link(&parts, shared::links::REL_PUSH);
    // The application server watches its receipts on B.
    let receipt_subscribe = link(&parts, shared::links::REL_RECEIPT);
    let (receipt_sub, mut receipts) = watch_receipts(&nodes[1], receipt_subscribe).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Stored (nobody watches the subscription) for a second, through C.
    let r = request(
        "POST",
        &at(&nodes[2], &push_url),
        &[("ttl", "1"), ("push-receipt", &receipt_sub)],
        b"",
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let mut statuses = Vec::new();
    while let Ok(Some(p)) =
        tokio::time::timeout(Duration::from_secs(6), receipts.push_promise()).await
    {
        let (_, resp) = p.unwrap().into_parts();
        statuses.push(resp.await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [410], "one receipt, for the expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_copy_budget_holds_across_nodes() {
    let server = Server::start(&[]);
    let limits = ["owner_copies_per_minute=5"];
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        nodes.push(node_with(&server.url(), "budget", name, 0, &limits).await);
    }
    for n in &nodes {
        until_ready(n, 200).await;
    }
    let mut d = Device::connect(&nodes[0], None).await;
    let mut members = serde_json::Map::new();
    for _ in 0..3 {
        members.insert(d.register(None).await.1, json!({}));
    }
    let mut lists = Vec::new();
    for take in [3, 2] {
        let doc: serde_json::Map<_, _> = members.clone().into_iter().take(take).collect();
        let r = request(
            "POST",
            &at(&nodes[0], &format!("{PUBLIC}/lists/0")),
            &[("content-type", "application/push-aggregation+json")],
            Value::Object(doc).to_string().as_bytes(),
        )
        .await;
        assert_eq!(r.status, 201, "{:?}", r.json());
        lists.push(r.header("location").unwrap().to_owned());
    }
    early_in_a_minute().await;
    let push = |n: &Running, list: &str| {
        let url = at(n, list);
        async move { request("POST", &url, &[("ttl", "60")], b"").await }
    };
    // Three copies through one node, then three more through the other:
    // past the five the owner may cause in a minute, wherever it pushes.
    assert_eq!(push(&nodes[0], &lists[0]).await.status, 201);
    let r = push(&nodes[1], &lists[0]).await;
    assert_eq!(r.status, 429, "{:?}", r.json());
    assert!(r.header("retry-after").is_some());
    // The refused copies were not counted: two more fit.
    assert_eq!(push(&nodes[1], &lists[1]).await.status, 201);
    assert_eq!(push(&nodes[0], &lists[1]).await.status, 429);
}
