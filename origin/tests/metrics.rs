//! `/metrics` scraped from the operator listener while a known workload
//! runs: every counter and gauge the test can account for equals what the
//! test did. The public application listener does not serve it.

mod common;
use bytes::Bytes;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const AGG: &str = "application/push-aggregation+json";

async fn scrape(o: &origin::server::Running) -> String {
    let r = request(
        "GET",
        &format!("http://{}/metrics", o.state.config.metrics_listen),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    String::from_utf8(r.body.to_vec()).unwrap()
}

/// Every sample named in `want` has exactly its value.
fn check(text: &str, want: &[(&str, u64)]) {
    for (name, v) in want {
        assert_eq!(metric_in(text, name), Some(*v), "{name} in\n{text}");
    }
}

/// Polls until `name` reaches `v` (fan-out and acks run in the background).
async fn wait_for(o: &origin::server::Running, name: &str, v: u64) {
    for _ in 0..300 {
        if metric_in(&scrape(o).await, name) == Some(v) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never reached {v}:\n{}", scrape(o).await);
}

/// An RFC 8030 user agent on HTTP/2 that subscribes and monitors its subscription.
async fn h2_device(
    o: &origin::server::Running,
) -> (h2::client::SendRequest<Bytes>, h2::client::ResponseFuture) {
    let mut client = h2_connect(o.state.config.h2_listen).await;
    let url = format!("{}/subscribe", o.state.config.device_url);
    let (resp, _) = client
        .send_request(http::Request::post(url).body(()).unwrap(), true)
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 201);
    let sub = resp.headers()["location"].to_str().unwrap().to_owned();
    let (monitor, _) = client
        .send_request(http::Request::get(sub).body(()).unwrap(), true)
        .unwrap();
    (client, monitor)
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let o = start_fresh("metrics").await;
    let before = scrape(&o).await;
    check(
        &before,
        &[
            ("push_connected_devices", 0),
            ("push_pushes_total", 0),
            ("push_list_pushes_total", 0),
            ("push_fanout_members_total", 0),
            ("push_fanouts_in_progress", 0),
            ("push_stored_messages", 0),
            ("push_stored_list_messages", 0),
            ("push_lists", 0),
            ("push_subscriptions", 0),
            ("push_app_requests_total", 0),
        ],
    );
    assert!(metric_in(&before, "push_store_bytes").unwrap() > 0);

    // Three WebSocket devices and one HTTP/2 user agent.
    let mut ws = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        let mut d = Device::connect(&o, None).await;
        let (_, e) = d.register(None).await;
        endpoints.push(e);
        ws.push(d);
    }
    let (_h2, _monitor) = h2_device(&o).await;
    wait_for(&o, "push_connected_devices{protocol=\"http2\"}", 1).await;
    let text = scrape(&o).await;
    check(
        &text,
        &[
            ("push_connected_devices{protocol=\"websocket\"}", 3),
            ("push_connected_devices{protocol=\"http2\"}", 1),
            ("push_device_connections_total{protocol=\"websocket\"}", 3),
            ("push_device_connections_total{protocol=\"http2\"}", 1),
            ("push_subscriptions", 4),
        ],
    );

    // Two pushes delivered (and acknowledged), one refused, then device 2
    // leaves: one push stored for it, one TTL 0 push discarded.
    let body = aes128gcm_body(100);
    let push = |url: String, ttl: &'static str, body: Vec<u8>| async move {
        request(
            "POST",
            &url,
            &[("ttl", ttl), ("content-encoding", "aes128gcm")],
            &body,
        )
        .await
        .status
    };
    for _ in 0..2 {
        assert_eq!(push(endpoints[0].clone(), "60", body.clone()).await, 201);
        let n = ws[0].recv().await.unwrap();
        ws[0].ack(&n).await;
    }
    assert_eq!(
        push(endpoints[0].clone(), "60", b"not ece".to_vec()).await,
        400
    );
    let d = ws.pop().unwrap();
    let away = d.uaid.clone();
    d.close().await;
    wait_for(&o, "push_connected_devices{protocol=\"websocket\"}", 2).await;
    assert_eq!(push(endpoints[2].clone(), "60", body.clone()).await, 201);
    assert_eq!(push(endpoints[2].clone(), "0", body.clone()).await, 201);

    // A list of the three WebSocket subscriptions: one list push accepted
    // (two members connected, one away), one refused (not a JWE).
    let doc: Value = endpoints
        .iter()
        .map(|e| (e.clone(), json!({})))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let url = format!("{}/lists/0", o.state.config.public_url);
    let r = request(
        "POST",
        &url,
        &[("content-type", AGG)],
        doc.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();
    let r = request("POST", &list, &[("ttl", "60")], b"").await;
    assert_eq!(r.status, 201);
    for d in &mut ws {
        let n = d.recv().await.unwrap();
        d.ack(&n).await;
    }
    let r = request(
        "POST",
        &list,
        &[("ttl", "60"), ("content-encoding", "aes128gcm")],
        &body,
    )
    .await;
    assert_eq!(r.status, 415);
    wait_for(&o, "push_messages_acked_total", 4).await;
    wait_for(&o, "push_fanouts_in_progress", 0).await;
    let text = scrape(&o).await;
    check(
        &text,
        &[
            ("push_pushes_total{outcome=\"delivered\"}", 2),
            ("push_pushes_total{outcome=\"stored\"}", 1),
            ("push_pushes_total{outcome=\"discarded\"}", 1),
            ("push_pushes_total{outcome=\"refused\"}", 1),
            ("push_list_pushes_total{outcome=\"accepted\"}", 1),
            ("push_list_pushes_total{outcome=\"refused\"}", 1),
            ("push_fanout_members_total{outcome=\"queued\"}", 2),
            ("push_fanout_members_total{outcome=\"deferred\"}", 0),
            ("push_fanout_members_total{outcome=\"offline\"}", 1),
            ("push_fanout_members_total{outcome=\"failed\"}", 0),
            ("push_fanouts_in_progress", 0),
            ("push_messages_sent_total", 4),
            ("push_messages_acked_total", 4),
            ("push_stored_messages", 1),
            ("push_stored_list_messages", 1),
            ("push_lists", 1),
            ("push_subscriptions", 4),
            ("push_connected_devices", 3),
            ("push_edge_refused_total", 0),
            // 5 pushes, list create, 2 list pushes (scrapes are not counted).
            ("push_app_requests_total", 8),
        ],
    );
    assert!(metric_in(&text, "push_fanout_last_members_per_second").unwrap() > 0);

    // The device that was away comes back: its stored message and its list
    // copy arrive, and the stored message goes once it is acknowledged.
    let mut back = Device::connect(&o, Some(&away)).await;
    for _ in 0..2 {
        let n = back.recv().await.expect("a waiting message");
        back.ack(&n).await;
    }
    wait_for(&o, "push_messages_acked_total", 6).await;
    wait_for(&o, "push_stored_messages", 0).await;
    wait_for(&o, "push_store_writes_pending", 0).await;
    let text = scrape(&o).await;
    check(
        &text,
        &[
            ("push_store_writes_pending", 0),
            ("push_messages_sent_total", 6),
            ("push_connected_devices{protocol=\"websocket\"}", 3),
            ("push_device_connections_total{protocol=\"websocket\"}", 4),
        ],
    );
    for family in [
        "push_pushes_total",
        "push_fanout_members_total",
        "push_store_bytes",
        "push_store_writes_pending",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} has help"
        );
    }
    assert!(text.contains("# TYPE push_pushes_total counter"));
    assert!(text.contains("# TYPE push_connected_devices gauge"));
}

/// The public application listener does not serve `/metrics` (how busy the
/// service is, and who uses it); the operator listener serves it, and
/// `/health` and `/ready` on both.
#[tokio::test]
async fn metrics_are_served_to_the_operator_only() {
    let o = start_fresh("metrics-operator").await;
    let public = request(
        "GET",
        &format!("{}/metrics", o.state.config.public_url),
        &[],
        b"",
    )
    .await;
    assert_eq!(public.status, 404);
    assert_eq!(
        public.header("content-type"),
        Some("application/problem+json")
    );
    let operator = format!("http://{}", o.state.config.metrics_listen);
    assert_ne!(o.state.config.metrics_listen, o.state.config.app_listen);
    // On a Redis store, a node is ready once it has reached Redis.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while request("GET", &format!("{operator}/ready"), &[], b"")
        .await
        .status
        != 200
    {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for path in ["/metrics", "/health", "/ready"] {
        let r = request("GET", &format!("{operator}{path}"), &[], b"").await;
        assert_eq!(r.status, 200, "{path}");
    }
    for path in ["/health", "/ready"] {
        let r = request(
            "GET",
            &format!("{}{path}", o.state.config.public_url),
            &[],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{path}");
    }
    // Nothing of the application's is served to the operator.
    let push = request(
        "POST",
        &format!("{operator}/wpush/abc"),
        &[("ttl", "60")],
        b"x",
    )
    .await;
    assert_eq!(push.status, 404);
    let put = request("PUT", &format!("{operator}/metrics"), &[], b"").await;
    assert_eq!(put.status, 405);
    o.stop().await;
}
