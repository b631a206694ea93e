//! Several origin nodes on one Redis store, each a full service in this
//! process with its own listeners: a push taken by any node reaches a
//! device on any other, a list push reaches every member once wherever it
//! is connected, and a node that loses Redis says so and recovers.

mod common;
use common::redis::{Cluster, Server};
use common::*;
use origin::server::Running;
use serde_json::{json, Value};
use std::time::Duration;

/// The one public URL every node answers for (as behind a load balancer).
const PUBLIC: &str = "http://push.test";
const DEVICES: &str = "http://devices.test";

async fn node(store: &str, prefix: &str, name: &str, wait: u32) -> Running {
    start_with(&temp_dir(name), &[], |s| {
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
    let prefix = format!(
        "c{}",
        &origin::tokens::to_hex(&origin::tokens::new_token())[..8]
    );
    let nodes = [
        node(store, &prefix, "a", wait).await,
        node(store, &prefix, "b", wait).await,
        node(store, &prefix, "c", wait).await,
    ];
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
    let [a, b, c] = three(store, wait).await;
    let mut d = Device::connect(&a, None).await;
    let (_, endpoint) = d.register(None).await;
    assert!(endpoint.starts_with(PUBLIC), "{endpoint}");
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Taken by B, delivered by A.
    let body = aes128gcm_body(64);
    let r = push(&b, &endpoint, "60", &body).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let n = d
        .recv_notification()
        .await
        .expect("a push through another node");
    assert_eq!(
        n.data.as_deref().map(|s| shared::b64::decode(s).unwrap()),
        Some(body.clone())
    );
    d.ack(&n).await;
    // And by C, once.
    let r = push(&c, &endpoint, "60", b"").await;
    assert_eq!(r.status, 201);
    let n = d
        .recv_notification()
        .await
        .expect("a push through a third node");
    d.ack(&n).await;
    d.expect_nothing().await;
    assert!(metric(&b, "push_cluster_routes_total{outcome=\"hit\"}").await >= 1);

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

    server.kill();
    until_ready(&a, 503).await;
    let r = push(&b, &endpoint, "600", b"").await;
    assert_eq!(r.status, 503, "{:?}", r.json());

    server.restart();
    until_ready(&a, 200).await;
    until_ready(&b, 200).await;
    assert_eq!(push(&b, &endpoint, "600", b"").await.status, 201);
    // Both messages answered 201 are there, on any node.
    let mut d = Device::connect(&b, Some(&uaid)).await;
    for _ in 0..2 {
        let n = d.recv_notification().await.expect("a message answered 201");
        d.ack(&n).await;
    }
    d.expect_nothing().await;
}
