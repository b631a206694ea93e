//! Firefox's WebSocket protocol end to end over real sockets: hello,
//! register, direct and stored delivery, acknowledgement, reconnects, key
//! restrictions, Topic replacement, TTL 0, unregister.

mod common;
use common::*;
use serde_json::json;
use shared::b64;
use shared::webpush_ws::{AckUpdate, DeviceMessage};
use std::time::Duration;

#[tokio::test]
async fn connected_device_gets_message_and_ack_clears_it() {
    let o = start_fresh("ws-direct").await;
    let mut d = Device::connect(&o, None).await;
    let (channel, endpoint) = d.register(None).await;
    assert!(endpoint.starts_with(&format!("{}/p/", o.state.config.public_url)));

    let body = aes128gcm_body(200);
    let r = request(
        "POST",
        &endpoint,
        &[("ttl", "60"), ("content-encoding", "aes128gcm")],
        &body,
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(r.header("ttl"), Some("60"));
    assert!(r.header("location").unwrap().contains("/m/"));
    assert!(r
        .header("link")
        .unwrap()
        .contains("urn:ietf:params:push:multi"));

    let n = d.recv_notification().await.expect("notification");
    assert_eq!(n.channel_id, channel.as_str());
    assert_eq!(b64::decode(n.data.as_deref().unwrap()).unwrap(), body);
    assert_eq!(
        n.headers.as_ref().and_then(|h| h.encoding.as_deref()),
        Some("aes128gcm")
    );
    d.ack(&n).await;

    // Reconnecting with the same uaid redelivers nothing once acknowledged.
    let uaid = d.uaid.clone();
    tokio::time::sleep(Duration::from_millis(100)).await;
    d.close().await;
    let mut again = Device::connect(&o, Some(&uaid)).await;
    assert_eq!(again.uaid, uaid);
    again.expect_nothing().await;
}

#[tokio::test]
async fn stored_while_away_then_delivered_and_unacked_redelivered() {
    let (o, d, endpoint) = one_device("ws-stored").await;
    let uaid = d.uaid.clone();
    d.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let r = request("POST", &endpoint, &[("ttl", "600")], b"").await;
    assert_eq!(r.status, 201);
    assert_eq!(metric(&o, "push_stored_messages").await, 1);

    // Delivered after hello; not acknowledged: delivered again next time.
    let mut d = Device::connect(&o, Some(&uaid)).await;
    let n1 = d
        .recv_notification()
        .await
        .expect("stored message after hello");
    assert!(n1.data.is_none() && n1.headers.is_none());
    d.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut d = Device::connect(&o, Some(&uaid)).await;
    let n2 = d.recv_notification().await.expect("redelivered");
    assert_eq!(n1.version, n2.version);
    d.ack(&n2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metric(&o, "push_stored_messages").await, 0);
}

#[tokio::test]
async fn unknown_uaid_gets_a_new_one() {
    let o = start_fresh("ws-uaid").await;
    let d = Device::connect(&o, Some("0123456789abcdef0123456789abcdef")).await;
    assert_ne!(d.uaid, "0123456789abcdef0123456789abcdef");
    assert_eq!(d.uaid.len(), 32);
}

#[tokio::test]
async fn key_restricted_subscription_refuses_other_keys() {
    let o = start_fresh("ws-vapid").await;
    let good = Vapid::new(1);
    let other = Vapid::new(2);
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(Some(&good.public())).await;
    let aud = o.state.config.public_url.clone();

    let none = request("POST", &endpoint, &[("ttl", "60")], b"").await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["errno"], 109);
    let wrong = request(
        "POST",
        &endpoint,
        &[("ttl", "60"), ("authorization", &other.header(&aud))],
        b"",
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["errno"], 109);
    assert_eq!(
        wrong.header("content-type"),
        Some("application/problem+json")
    );
    let bad_aud = request(
        "POST",
        &endpoint,
        &[
            ("ttl", "60"),
            ("authorization", &good.header("https://elsewhere.example")),
        ],
        b"",
    )
    .await;
    assert_eq!(bad_aud.status, 401);
    assert!(d.recv_within(Duration::from_millis(200)).await.is_none());

    let ok = request(
        "POST",
        &endpoint,
        &[("ttl", "60"), ("authorization", &good.header(&aud))],
        b"",
    )
    .await;
    assert_eq!(ok.status, 201);
    assert!(d.recv().await.is_some());
}

#[tokio::test]
async fn topic_replaces_and_ttl_zero_is_not_stored() {
    let (o, d, endpoint) = one_device("ws-topic").await;
    let uaid = d.uaid.clone();
    d.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let body1 = aes128gcm_body(120);
    let body2 = aes128gcm_body(140);
    for body in [&body1, &body2] {
        let r = request(
            "POST",
            &endpoint,
            &[
                ("ttl", "600"),
                ("topic", "score"),
                ("content-encoding", "aes128gcm"),
            ],
            body,
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let r = request("POST", &endpoint, &[("ttl", "0")], b"").await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("ttl"), Some("0"));
    assert_eq!(metric(&o, "push_stored_messages").await, 1);

    let mut d = Device::connect(&o, Some(&uaid)).await;
    let n = d.recv_notification().await.unwrap();
    assert_eq!(b64::decode(n.data.as_deref().unwrap()).unwrap(), body2);
    d.expect_nothing().await;
}

#[tokio::test]
async fn cancel_and_unregister() {
    let o = start_fresh("ws-cancel").await;
    let mut d = Device::connect(&o, None).await;
    let (channel, endpoint) = d.register(None).await;
    let uaid = d.uaid.clone();
    d.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let r = request("POST", &endpoint, &[("ttl", "600")], b"").await;
    let location = r.header("location").unwrap().to_owned();
    assert_eq!(request("DELETE", &location, &[], b"").await.status, 204);
    assert_eq!(request("DELETE", &location, &[], b"").await.status, 404);
    let mut d = Device::connect(&o, Some(&uaid)).await;
    d.expect_nothing().await;

    assert_eq!(d.unregister(&channel).await, 200);
    let gone = request("POST", &endpoint, &[("ttl", "60")], b"").await;
    assert_eq!(gone.status, 410);
    assert_eq!(gone.json()["errno"], 103);
}

#[tokio::test]
async fn protocol_violations_close_the_connection_and_service_lives_on() {
    let o = start_fresh("ws-bad").await;
    let url = format!("ws://{}/", o.state.config.ws_listen);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    let register = DeviceMessage::Register {
        channel_id: "x".into(),
        key: None,
    };
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        register.to_text(),
    ))
    .await
    .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(3), ws.next())
        .await
        .unwrap();
    assert!(!matches!(
        end,
        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))
    ));
    // A plain HTTP request gets a 400, not a hang.
    let r = request(
        "GET",
        &format!("http://{}/", o.state.config.ws_listen),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
    let d = Device::connect(&o, None).await;
    assert_eq!(d.uaid.len(), 32);
}

#[tokio::test]
async fn a_subscription_keeps_its_newest_messages_up_to_the_limit() {
    let o = start_in(&temp_dir("ws-cap"), &["max_stored_per_subscription=3"]).await;
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    let uaid = d.uaid.clone();
    d.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut bodies = Vec::new();
    for i in 0..5 {
        let body = aes128gcm_body(100 + i);
        let r = request(
            "POST",
            &endpoint,
            &[("ttl", "600"), ("content-encoding", "aes128gcm")],
            &body,
        )
        .await;
        assert_eq!(r.status, 201);
        bodies.push(body);
    }
    assert_eq!(metric(&o, "push_stored_messages").await, 3);
    let mut d = Device::connect(&o, Some(&uaid)).await;
    for want in &bodies[2..] {
        let n = d.recv_notification().await.unwrap();
        assert_eq!(&b64::decode(n.data.as_deref().unwrap()).unwrap(), want);
    }
    d.expect_nothing().await;
}

#[tokio::test]
async fn messages_that_overflow_the_queue_still_arrive_on_the_same_connection() {
    let o = start_with(&temp_dir("ws-overflow"), &[], |s| s.queue_depth = 1).await;
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    let mut sends = Vec::new();
    for _ in 0..60 {
        let e = endpoint.clone();
        sends.push(tokio::spawn(async move {
            request("POST", &e, &[("ttl", "600")], b"").await.status
        }));
    }
    let mut got = std::collections::HashSet::new();
    while got.len() < 60 {
        let Some(n) = d.recv_notification_within(Duration::from_secs(5)).await else {
            break;
        };
        got.insert(n.version.to_string());
        d.ack(&n).await;
    }
    for s in sends {
        assert_eq!(s.await.unwrap(), 201);
    }
    assert_eq!(got.len(), 60, "every message on the open connection");
}

#[tokio::test]
async fn a_push_acknowledged_within_the_ack_wait_is_never_stored() {
    // A long wait, so that the device's acknowledgement surely comes first.
    let dir = temp_dir("ws-ack-wait");
    let o = start_with(&dir, &[], |s| s.ack_wait_ms = 1000).await;
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    let started = std::time::Instant::now();
    let post = tokio::spawn({
        let endpoint = endpoint.clone();
        async move { request("POST", &endpoint, &[("ttl", "600")], b"").await }
    });
    let n = d.recv_notification().await.expect("notification");
    d.ack(&n).await;
    let r = post.await.unwrap();
    assert_eq!(r.status, 201);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "answered at the acknowledgement, not after the wait"
    );
    // Counted only when the committer skipped the message's write.
    assert_eq!(metric(&o, "push_pushes_unstored_total").await, 1);
    let uaid = d.uaid.clone();
    d.close().await;
    let mut again = Device::connect(&o, Some(&uaid)).await;
    again.expect_nothing().await;

    // One the device does not acknowledge in time is stored before its
    // 201, and deleted when acknowledged after.
    let started = std::time::Instant::now();
    let r = request("POST", &endpoint, &[("ttl", "600")], b"").await;
    assert_eq!(r.status, 201);
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(metric(&o, "push_pushes_unstored_total").await, 1);
    let n = again.recv_notification().await.expect("notification");
    let id = n.version.to_string();
    assert!(o.state.store.message(&tokens_of(&id)).unwrap().is_some());
    again.ack(&n).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        o.state.settle().await.unwrap();
        if o.state.store.message(&tokens_of(&id)).unwrap().is_none() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "deleted at its ack");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tokens_of(version: &str) -> [u8; 16] {
    origin::tokens::decode(version).expect("a version is a token")
}

#[tokio::test]
async fn an_acknowledged_message_is_not_sent_again_on_a_quick_reconnect() {
    // Acknowledgements are committed lazily (they wait to share a commit);
    // a device that acknowledges and reconnects at once must still not get
    // the message again, stored or list copy.
    let (o, d, endpoint) = one_device("ws-quick-reconnect").await;
    let uaid = d.uaid.clone();
    d.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = request("POST", &endpoint, &[("ttl", "600")], b"").await;
    assert_eq!(r.status, 201);
    let doc = serde_json::json!({ endpoint.as_str(): {} });
    let url = format!("{}/lists/0", o.state.config.public_url);
    let r = request(
        "POST",
        &url,
        &[("content-type", "application/push-aggregation+json")],
        doc.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201);
    let list = r.header("location").unwrap().to_owned();
    assert_eq!(
        request("POST", &list, &[("ttl", "600")], b"").await.status,
        201
    );

    let mut d = Device::connect(&o, Some(&uaid)).await;
    for _ in 0..2 {
        let n = d
            .recv_notification()
            .await
            .expect("the stored message and the list copy");
        d.ack(&n).await;
    }
    d.close().await;
    let mut again = Device::connect(&o, Some(&uaid)).await;
    again.expect_nothing().await;
}

#[tokio::test]
async fn an_ack_of_many_unknown_and_repeated_versions_counts_each_message_once() {
    let (o, mut d, endpoint) = one_device("ws-many-acks").await;
    let r = request("POST", &endpoint, &[("ttl", "600")], b"").await;
    assert_eq!(r.status, 201);
    let n = d.recv_notification().await.expect("delivered");
    let mut updates: Vec<AckUpdate> = (0..300u32)
        .map(|i| AckUpdate {
            channel_id: n.channel_id.clone(),
            version: b64::encode(&[&i.to_be_bytes()[..], &[9; 12]].concat()).into(),
            code: None,
        })
        .collect();
    let mine = AckUpdate {
        channel_id: n.channel_id.clone(),
        version: n.version.clone(),
        code: None,
    };
    updates.insert(150, mine.clone());
    updates.push(mine);
    d.send(&DeviceMessage::Ack {
        updates: updates.into(),
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metric(&o, "push_messages_acked_total").await, 1);
    // The connection still answers.
    let r = request("POST", &endpoint, &[("ttl", "600")], b"").await;
    assert_eq!(r.status, 201);
    assert!(d.recv().await.is_some());
}

#[tokio::test]
async fn acks_in_any_json_shape_clear_their_messages() {
    // Acks written as devices write them are read in place; any other
    // shape is read as JSON, and both settle alike.
    let (o, mut d, endpoint) = one_device("ws-ack-shapes").await;
    for (k, shape) in [
        r#"{"messageType":"ack","updates":[{"channelID":"C","version":"V","code":100}]}"#,
        r#"{ "updates": [ { "version": "V", "channelID": "C" } ], "messageType": "ack" }"#,
        r#"{"messageType":"ack","updates":[{"channelID":"C","version":"V"},{"channelID":"C","version":"V"}]}"#,
    ]
    .into_iter()
    .enumerate()
    {
        let r = request("POST", &endpoint, &[("ttl", "600")], b"").await;
        assert_eq!(r.status, 201);
        let n = d.recv_notification().await.expect("delivered");
        let text = shape
            .replace('C', &n.channel_id)
            .replace('V', &n.version);
        d.send_text(&text).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            metric(&o, "push_messages_acked_total").await,
            k as u64 + 1,
            "{shape}"
        );
    }
    // None of them comes back.
    let uaid = d.uaid.clone();
    d.close().await;
    let mut again = Device::connect(&o, Some(&uaid)).await;
    again.expect_nothing().await;
}

#[tokio::test]
async fn a_device_that_does_not_acknowledge_gets_no_more_than_max_unacked() {
    let o = start_with(&temp_dir("ws-unacked"), &[], |s| s.max_unacked = 3).await;
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    for _ in 0..5 {
        let r = request("POST", &endpoint, &[("ttl", "600")], b"").await;
        assert_eq!(r.status, 201);
    }
    // List copies wait like the rest (more of them than fit at once).
    let doc = json!({ endpoint.clone(): {} });
    let hs = [("content-type", "application/push-aggregation+json")];
    let lists = format!("{}/lists/0", o.state.config.public_url);
    let r = request("POST", &lists, &hs, doc.to_string().as_bytes()).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();
    for _ in 0..4 {
        let r = request("POST", &list, &[("ttl", "600")], b"").await;
        assert_eq!(r.status, 201);
    }

    let mut held = Vec::new();
    while let Some(n) = d.recv_notification_within(Duration::from_millis(500)).await {
        held.push(n);
    }
    assert_eq!(held.len(), 3, "only max_unacked written: {held:?}");
    assert!(metric(&o, "push_messages_deferred_unacked_total").await >= 3);

    // Each acknowledgement makes room for one more, until all nine came.
    let mut versions: std::collections::HashSet<String> =
        held.iter().map(|n| n.version.to_string()).collect();
    let mut next = held.remove(0);
    loop {
        d.ack(&next).await;
        let Some(n) = d.recv_notification_within(Duration::from_secs(2)).await else {
            break;
        };
        assert!(versions.insert(n.version.to_string()), "{n:?}");
        held.push(n);
        next = held.remove(0);
    }
    assert_eq!(versions.len(), 9, "five messages and four list copies");
}

#[tokio::test]
async fn a_user_agent_is_recorded_with_its_first_subscription_and_goes_with_its_last() {
    let o = start_fresh("ws-ua-record").await;
    let recorded = |uaid: &str| {
        let t = origin::tokens::from_uuid(uaid).unwrap();
        o.state.store.user_agent(&t).unwrap().is_some()
    };
    // Hello alone leaves nothing: a reconnect with that uaid gets a new one.
    let d = Device::connect(&o, None).await;
    let first = d.uaid.clone();
    d.close().await;
    assert!(!recorded(&first));
    let mut d = Device::connect(&o, Some(&first)).await;
    assert_ne!(d.uaid, first);

    // Registered, the user agent is kept across reconnects.
    let (channel, _) = d.register(None).await;
    let (second_channel, _) = d.register(None).await;
    let uaid = d.uaid.clone();
    assert!(recorded(&uaid));
    d.close().await;
    let mut d = Device::connect(&o, Some(&uaid)).await;
    assert_eq!(d.uaid, uaid);

    // Unregistering one of two keeps it; the last takes it away.
    for (c, kept) in [(channel, true), (second_channel, false)] {
        assert_eq!(d.unregister(&c).await, 200);
        assert_eq!(recorded(&uaid), kept);
    }
    // Registering again on the same connection records it again.
    d.register(None).await;
    assert!(recorded(&uaid));
    d.close().await;
    assert_eq!(Device::connect(&o, Some(&uaid)).await.uaid, uaid);
}

#[tokio::test]
async fn an_unacknowledged_message_of_an_ended_subscription_is_not_stored_again() {
    let o = start_fresh("ws-unacked-gone").await;
    let mut d = Device::connect(&o, None).await;
    let (channel, endpoint) = d.register(None).await;
    let (_, kept) = d.register(None).await;
    for e in [&endpoint, &kept] {
        assert_eq!(request("POST", e, &[("ttl", "600")], b"").await.status, 201);
        assert!(d.recv().await.is_some(), "written, not acknowledged");
    }
    assert_eq!(d.unregister(&channel).await, 200);
    let uaid = d.uaid.clone();
    d.close().await;
    // The connection's end stores what it held: only the live subscription's.
    let t = origin::tokens::from_uuid(&uaid).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let stored = loop {
        let _ = o.state.settle().await;
        let stored = o.state.store.messages(&t, 0, 0, 10).unwrap();
        if !stored.is_empty() || std::time::Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stored.len(), 1, "{stored:?}");
    let mut d = Device::connect(&o, Some(&uaid)).await;
    let n = d.recv_notification().await.unwrap();
    assert_ne!(n.channel_id, channel.as_str());
    d.expect_nothing().await;
}

#[tokio::test]
async fn after_answering_a_request_the_origin_acks_what_comes_next_at_once() {
    use std::os::fd::AsRawFd;
    let o = start_fresh("ws-quickack").await;
    let mut d = Device::connect(&o, None).await;
    let uaid = origin::tokens::from_uuid(&d.uaid).unwrap();
    let outlet = o.state.registry.handle(&uaid).unwrap().outlet.unwrap();
    let fd = outlet.socket().as_raw_fd();
    // `TCP_QUICKACK` reads 0 while the socket delays its ACKs ("ping-pong"
    // mode); setting it to 0 enters that mode, as a quick answer does.
    let quickack = |set: Option<libc::c_int>| {
        let mut v: libc::c_int = set.unwrap_or(0);
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let p = (&mut v as *mut libc::c_int).cast();
        // SAFETY: an open socket, and an int of the given size.
        let r = unsafe {
            match set {
                Some(_) => libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_QUICKACK, p, len),
                None => libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_QUICKACK, p, &mut len),
            }
        };
        assert_eq!(r, 0);
        v
    };
    quickack(Some(0));
    assert_eq!(quickack(None), 0);
    d.register(None).await;
    // The register reply is on its way before the option is set: wait.
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while quickack(None) == 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(quickack(None), 1, "delayed ACKs off after the answer");
}

#[tokio::test]
async fn a_user_agent_holds_at_most_the_configured_subscriptions() {
    let o = start_in(
        &temp_dir("ws-sub-cap"),
        &["max_subscriptions_per_user_agent=2"],
    )
    .await;
    let mut d = Device::connect(&o, None).await;
    d.register(None).await;
    d.register(None).await;
    let channel = "5a1b0e9c-0000-4000-8000-000000000003";
    assert_eq!(d.register_channel(channel, None).await, (429, None));
    // A channel it holds already is still answered with its endpoint.
    let held = d.channels[1].clone();
    let (status, endpoint) = d.register_channel(&held, None).await;
    assert_eq!(status, 200);
    assert!(endpoint.is_some());
    // An unregister makes room.
    let first = d.channels[0].clone();
    assert_eq!(d.unregister(&first).await, 200);
    d.register(None).await;
    // Another user agent has an allowance of its own.
    let mut other = Device::connect(&o, None).await;
    other.register(None).await;
}

#[tokio::test]
async fn legacy_aesgcm_takes_what_mozillas_service_takes() {
    // Mozilla's push service checks that `Encryption` has a salt and
    // `Crypto-Key` (if sent) a dh, each base64url, and relays them: the
    // device finds out whether they decrypt. So does this one.
    let (_o, mut d, endpoint) = one_device("ws-aesgcm").await;
    let body = vec![7u8; 5630];
    for (encryption, crypto_key) in [
        ("salt=\"AAAA==\"", Some("keyid=p256dh;dh=BBBB=")),
        ("salt=c2FsdA; rs=1", None),
    ] {
        let mut headers = vec![
            ("ttl", "60"),
            ("content-encoding", "aesgcm"),
            ("encryption", encryption),
        ];
        headers.extend(crypto_key.map(|c| ("crypto-key", c)));
        let r = request("POST", &endpoint, &headers, &body).await;
        assert_eq!(r.status, 201, "{encryption} {crypto_key:?}: {:?}", r.json());
        let n = d.recv_notification().await.expect("delivered");
        let h = n.headers.as_ref().expect("headers");
        assert_eq!(h.encoding.as_deref(), Some("aesgcm"));
        assert_eq!(h.encryption.as_deref(), Some(encryption));
        assert_eq!(h.crypto_key.as_deref(), crypto_key);
        // The 5,630 bytes older libraries make of a 4,096-byte payload.
        assert_eq!(b64::decode(n.data.as_deref().unwrap()).unwrap(), body);
        d.ack(&n).await;
    }
    for (encryption, crypto_key) in [("salt=a+b/", "dh=BBBB"), ("salt=AAAA", "dh=a b")] {
        let headers = [
            ("ttl", "60"),
            ("content-encoding", "aesgcm"),
            ("encryption", encryption),
            ("crypto-key", crypto_key),
        ];
        let r = request("POST", &endpoint, &headers, &body).await;
        assert_eq!(r.status, 400, "{encryption} {crypto_key}");
        assert_eq!(r.json()["errno"], 110);
    }
}

#[tokio::test]
async fn a_device_that_pings_in_a_loop_is_disconnected() {
    // As Mozilla's service does: one ping per 45 s (by default) is answered,
    // a second sooner ends the connection; the service serves on.
    let (o, mut d, _) = one_device("ws-ping-flood").await;
    d.send_text("{}").await;
    assert_eq!(d.recv().await, Some(json!({})));
    d.send_text("{}").await;
    assert!(d.ended().await, "a second ping at once ends the connection");
    let mut other = Device::connect(&o, None).await;
    other.send_text("{}").await;
    assert_eq!(other.recv().await, Some(json!({})));
    // With the limit off, pings are answered however often they come.
    let o = start_with(&temp_dir("ws-ping-any"), &[], |s| {
        s.ws_min_ping_interval_secs = 0
    })
    .await;
    let mut d = Device::connect(&o, None).await;
    for _ in 0..5 {
        d.send_text("{}").await;
        assert_eq!(d.recv().await, Some(json!({})));
    }
}

#[tokio::test]
async fn subscriptions_are_rated_per_connection_and_per_address() {
    let o = start_with(&temp_dir("ws-sub-rates"), &[], |s| {
        s.subscriptions_per_connection_per_minute = 3;
        s.subscriptions_per_address_per_minute = 5;
    })
    .await;
    early_in_a_minute().await;
    let channel = |i: u8| format!("d9b74644-4f97-46aa-b8fa-9393985cd6{i:02x}");
    let mut a = Device::connect(&o, None).await;
    for i in 0..3 {
        assert_eq!(a.register_channel(&channel(i), None).await.0, 200);
    }
    // The connection's fourth in a minute is refused; it stays connected.
    assert_eq!(a.register_channel(&channel(3), None).await.0, 429);
    a.send_text("{}").await;
    assert_eq!(a.recv().await, Some(json!({})));
    // Another connection from the same address has the address's two left.
    let mut b = Device::connect(&o, None).await;
    for i in 4..6 {
        assert_eq!(b.register_channel(&channel(i), None).await.0, 200);
    }
    assert_eq!(b.register_channel(&channel(6), None).await.0, 429);
}
