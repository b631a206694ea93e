//! The List Registration Service over real sockets: create, read, amend,
//! delete; no-body and JWE (compact and JSON) list pushes with per-member
//! keys; offline members; ownership and key restriction; bad input.

mod common;
use common::*;
use serde_json::{json, Value};
use shared::b64;
use std::io::Write;
use std::time::Duration;

const AGG: &str = "application/push-aggregation+json";
const PATCH: &str = "application/merge-patch+json";

fn service_url(o: &origin::server::Running) -> String {
    format!("{}/lists/0", o.state.config.public_url)
}

async fn create(o: &origin::server::Running, doc: &Value, auth: Option<&str>) -> Resp {
    let mut hs = vec![("content-type", AGG)];
    if let Some(a) = auth {
        hs.push(("authorization", a));
    }
    request("POST", &service_url(o), &hs, doc.to_string().as_bytes()).await
}

fn jwe_compact_template() -> String {
    format!(
        "{}..{}.{}.{}",
        b64::encode(br#"{"alg":"A128KW","enc":"A128GCM"}"#),
        b64::encode(&[1; 12]),
        b64::encode(&[2; 100]),
        b64::encode(&[3; 16])
    )
}

#[tokio::test]
async fn list_push_reaches_connected_and_offline_members_once() {
    let o = start_fresh("list-basic").await;
    let mut devices = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        let mut d = Device::connect(&o, None).await;
        let (_, e) = d.register(None).await;
        endpoints.push(e);
        devices.push(d);
    }
    let keys: Vec<String> = (0..3).map(|i| b64::encode(&[i as u8 + 1; 24])).collect();
    let doc: Value = endpoints
        .iter()
        .zip(&keys)
        .map(|(e, k)| (e.clone(), json!({"encrypted_key": k})))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let r = create(&o, &doc, None).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(r.header("member-count"), Some("3"));
    let list = r.header("location").unwrap().to_owned();

    // Member 2 goes offline.
    let offline = devices.pop().unwrap();
    let offline_uaid = offline.uaid.clone();
    offline.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let template = jwe_compact_template();
    let r = request(
        "POST",
        &list,
        &[("ttl", "600"), ("content-type", "application/jose")],
        template.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let status_url = r.header("location").unwrap().to_owned();
    for (i, d) in devices.iter_mut().enumerate() {
        let n = d.recv_notification().await.expect("copy");
        assert_eq!(
            n.headers.as_ref().and_then(|h| h.content_type.as_deref()),
            Some("application/jose")
        );
        let copy = String::from_utf8(b64::decode(n.data.as_deref().unwrap()).unwrap()).unwrap();
        let parts: Vec<&str> = copy.split('.').collect();
        assert_eq!(parts[1], keys[i], "member {i} gets its own key");
        assert_eq!(copy.replace(&format!(".{}.", keys[i]), ".."), template);
        d.ack(&n).await;
        assert!(
            d.recv_within(Duration::from_millis(200)).await.is_none(),
            "exactly one copy"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = request("GET", &status_url, &[], b"").await.json();
    assert_eq!(s["members"], 3);
    assert_eq!(s["delivered"], 2);
    assert_eq!(s["stored"], 1);
    assert_eq!(s["failed"], 0);
    assert_eq!(s["fanout_finished"], true);

    // The offline member fetches its copy at hello, once.
    let mut d = Device::connect(&o, Some(&offline_uaid)).await;
    let n = d.recv_notification().await.expect("copy after reconnect");
    let copy = String::from_utf8(b64::decode(n.data.as_deref().unwrap()).unwrap()).unwrap();
    assert_eq!(copy.split('.').nth(1), Some(keys[2].as_str()));
    let version = n.version;
    // Unacknowledged: the same version again next time.
    d.close().await;
    let mut d = Device::connect(&o, Some(&offline_uaid)).await;
    let again = d.recv_notification().await.expect("again");
    assert_eq!(again.version, version);
    d.ack(&again).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    d.close().await;
    let mut d = Device::connect(&o, Some(&offline_uaid)).await;
    d.expect_nothing().await;
    let s = request("GET", &status_url, &[], b"").await.json();
    assert_eq!(
        (s["delivered"].as_u64(), s["stored"].as_u64()),
        (Some(3), Some(0))
    );
}

#[tokio::test]
async fn a_member_removed_before_answering_counts_dropped() {
    let o = start_fresh("list-left").await;
    let mut uaids = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..2 {
        let mut d = Device::connect(&o, None).await;
        let (_, e) = d.register(None).await;
        endpoints.push(e);
        uaids.push(d.uaid.clone());
        d.close().await;
    }
    let doc: Value = endpoints
        .iter()
        .map(|e| (e.clone(), json!({})))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let r = create(&o, &doc, None).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();
    let r = request("POST", &list, &[("ttl", "600")], b"").await;
    assert_eq!(r.status, 201);
    let status_url = r.header("location").unwrap().to_owned();
    let counts = || async {
        let s = request("GET", &status_url, &[], b"").await.json();
        (s["stored"].as_u64(), s["dropped"].as_u64())
    };
    assert_eq!(counts().await, (Some(2), Some(0)));

    // The first leaves before it came back for its copy.
    let patch = json!({ endpoints[0].clone(): null });
    let r = request(
        "PATCH",
        &list,
        &[("content-type", PATCH)],
        patch.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while counts().await != (Some(1), Some(1)) {
        assert!(
            std::time::Instant::now() < deadline,
            "dropped, not stored: {:?}",
            counts().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut gone = Device::connect(&o, Some(&uaids[0])).await;
    gone.expect_nothing().await;
    let mut kept = Device::connect(&o, Some(&uaids[1])).await;
    let n = kept.recv_notification().await.expect("its copy");
    kept.ack(&n).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = request("GET", &status_url, &[], b"").await.json();
        let got = (
            s["delivered"].as_u64(),
            s["stored"].as_u64(),
            s["dropped"].as_u64(),
        );
        if got == (Some(1), Some(0), Some(1)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn json_jwe_recipients_are_replaced_per_member() {
    let (o, mut d, e) = one_device("list-json").await;
    let key = b64::encode(&[9; 40]);
    // The second member's header repeats the message's shared `alg`: its
    // copy would be no valid JWE, so it counts as failed.
    let mut d2 = Device::connect(&o, None).await;
    let (_, e2) = d2.register(None).await;
    let doc = json!({
        e.clone(): {"encrypted_key": key, "header": {"kid": "member-1"}},
        e2.clone(): {"encrypted_key": key, "header": {"alg": "A256KW", "kid": "member-2"}},
    });
    let list = create(&o, &doc, None)
        .await
        .header("location")
        .unwrap()
        .to_owned();
    let body = json!({
        "protected": b64::encode(br#"{"enc":"A256GCM"}"#),
        "unprotected": {"alg": "A256KW"},
        "recipients": [{"encrypted_key": b64::encode(&[0; 40])}],
        "iv": b64::encode(&[1; 12]), "ciphertext": b64::encode(&[2; 64]), "tag": b64::encode(&[3; 16])
    });
    let r = request(
        "POST",
        &list,
        &[("ttl", "60"), ("content-type", "application/jose+json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let n = d.recv_notification().await.unwrap();
    let copy: Value =
        serde_json::from_slice(&b64::decode(n.data.as_deref().unwrap()).unwrap()).unwrap();
    assert_eq!(
        copy["recipients"],
        json!([{"encrypted_key": key, "header": {"kid": "member-1"}}])
    );
    assert_eq!(copy["ciphertext"], body["ciphertext"]);
    d2.expect_nothing().await;
    let status_url = r.header("location").unwrap().to_owned();
    let mut status = json!({});
    for _ in 0..50 {
        status = request("GET", &status_url, &[], b"").await.json();
        if status["fanout_finished"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status["failed"], 1, "{status}");
}

#[tokio::test]
async fn amend_read_delete_and_unsubscribe() {
    let o = start_in(&temp_dir("list-amend"), &["list_page_size=2"]).await;
    let mut ds = Vec::new();
    let mut es = Vec::new();
    for _ in 0..4 {
        let mut d = Device::connect(&o, None).await;
        let (_, e) = d.register(None).await;
        es.push(e);
        ds.push(d);
    }
    // gzip-encoded create of the first two.
    let doc = json!({ es[0].clone(): {}, es[1].clone(): {"expires": "2099-01-01T00:00:00Z"} })
        .to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(doc.as_bytes()).unwrap();
    let r = request(
        "POST",
        &service_url(&o),
        &[("content-type", AGG), ("content-encoding", "gzip")],
        &gz.finish().unwrap(),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();

    // Add two, remove one, and one unknown member is reported, the rest applied.
    let patch = json!({
        es[2].clone(): {}, es[3].clone(): {"encrypted_key": b64::encode(&[5; 24])},
        es[0].clone(): null,
        format!("{}/p/AAAAAAAAAAAAAAAAAAAAAA", o.state.config.public_url): {},
    });
    let r = request(
        "PATCH",
        &list,
        &[("content-type", PATCH)],
        patch.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let rep = r.json();
    assert_eq!(rep["members"], 3);
    assert_eq!(rep["rejected"][0]["reason"], "unknown");

    // Read, paged by 2.
    let page1 = request("GET", &list, &[], b"").await;
    assert_eq!(page1.header("member-count"), Some("3"));
    let next = shared::links::find([page1.header("link").unwrap()], "next").unwrap();
    let page2 = request("GET", &next, &[], b"").await;
    let mut merged = page1.json().as_object().unwrap().clone();
    merged.extend(page2.json().as_object().unwrap().clone());
    let mut all: Vec<String> = merged.keys().cloned().collect();
    all.sort();
    let mut want = vec![es[1].clone(), es[2].clone(), es[3].clone()];
    want.sort();
    assert_eq!(all, want);
    assert_eq!(merged[&es[1]]["expires"], "2099-01-01T00:00:00Z");
    assert!(page2.header("link").is_none());

    // The removed member gets nothing; the others one copy each.
    let r = request("POST", &list, &[("ttl", "60")], b"").await;
    assert_eq!(r.status, 201);
    assert!(ds[0]
        .recv_within(Duration::from_millis(300))
        .await
        .is_none());
    for d in &mut ds[1..] {
        assert!(d.recv().await.is_some());
    }

    // A member whose subscription ends leaves the list.
    let chan = ds[3].channels[0].clone();
    assert_eq!(ds[3].unregister(&chan).await, 200);
    let page = request("GET", &list, &[], b"").await;
    assert_eq!(page.header("member-count"), Some("2"));
    let r = request("DELETE", &list, &[], b"").await;
    assert_eq!(r.status, 204);
    assert_eq!(request("GET", &list, &[], b"").await.status, 404);
    assert_eq!(
        request("POST", &list, &[("ttl", "60")], b"").await.status,
        404
    );
}

#[tokio::test]
async fn ownership_key_restriction_and_bad_input() {
    let o = start_in(
        &temp_dir("list-bad"),
        &["max_list_members=3", "list_pushes_per_minute=2"],
    )
    .await;
    let aud = o.state.config.public_url.clone();
    let owner = Vapid::new(11);
    let stranger = Vapid::new(12);
    let mut d = Device::connect(&o, None).await;
    let (_, free) = d.register(None).await;
    let (_, restricted) = d.register(Some(&owner.public())).await;

    // A member restricted to a key joins only a list owned by that key.
    let r = create(&o, &json!({ restricted.clone(): {} }), None).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["members"][0]["reason"], "key-restriction");
    let r = create(
        &o,
        &json!({ restricted.clone(): {}, free.clone(): {} }),
        Some(&owner.header(&aud)),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();

    // Every request on an owned list needs the owner's VAPID.
    assert_eq!(request("GET", &list, &[], b"").await.status, 401);
    assert_eq!(
        request(
            "GET",
            &list,
            &[("authorization", &stranger.header(&aud))],
            b""
        )
        .await
        .status,
        401
    );
    let verified = owner.header(&aud);
    for _ in 0..2 {
        let r = request("GET", &list, &[("authorization", &verified)], b"").await;
        assert_eq!(r.status, 200);
    }
    // A token verified before is still refused with another key, or with
    // its signature changed.
    let (token, _) = verified.split_once(", k=").unwrap();
    let other_key = format!("{token}, k={}", stranger.public());
    let sig_at = token.rfind('.').unwrap() + 1;
    let mut forged = token.to_owned();
    let c = if &forged[sig_at..sig_at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    forged.replace_range(sig_at..sig_at + 1, c);
    let forged = format!("{forged}, k={}", owner.public());
    for auth in [other_key, forged] {
        let r = request("GET", &list, &[("authorization", &auth)], b"").await;
        assert_eq!(r.status, 401, "{auth}");
    }
    let push = |body: &'static [u8], ct: Option<&'static str>| {
        let (list, auth) = (list.clone(), owner.header(&aud));
        async move {
            let mut hs = vec![("ttl", "60"), ("authorization", auth.as_str())];
            if let Some(ct) = ct {
                hs.push(("content-type", ct));
            }
            request("POST", &list, &hs, body).await
        }
    };
    // Not a JWE: 415, nothing sent.
    let r = push(b"hello", None).await;
    assert_eq!(r.status, 415);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let r = push(b"a.b.c.d.e", Some("application/jose")).await;
    assert_eq!(r.status, 400);
    assert!(d.recv_within(Duration::from_millis(200)).await.is_none());
    // Two pushes a minute, then 429 with Retry-After.
    early_in_a_minute().await;
    assert_eq!(push(b"", None).await.status, 201);
    assert_eq!(push(b"", None).await.status, 201);
    let r = push(b"", None).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());

    // Malformed documents and media types; nothing created.
    let bad = [
        (AGG, b"[1,2]".to_vec(), 400),
        (AGG, b"{".to_vec(), 400),
        ("application/json", b"{}".to_vec(), 415),
        (AGG, json!({"ftp://x/y": {}}).to_string().into_bytes(), 422),
        (AGG, json!({ free.clone(): {"expires": "tomorrow"} }).to_string().into_bytes(), 422),
        (AGG, json!({"https://a/p/1": {}, "https://a/p/2": {}, "https://a/p/3": {}, "https://a/p/4": {}}).to_string().into_bytes(), 413),
    ];
    for (ct, body, status) in bad {
        let r = request("POST", &service_url(&o), &[("content-type", ct)], &body).await;
        assert_eq!(r.status, status, "{:?}", r.json());
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let r = request(
        "POST",
        &format!("{aud}/lists/7"),
        &[("content-type", AGG)],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 404);
}

/// A device that registers and goes away, and a list of its subscription
/// alone: its uaid and the list's URL.
async fn list_of_one_away(o: &origin::server::Running) -> (String, String) {
    let mut d = Device::connect(o, None).await;
    let (_, e) = d.register(None).await;
    let uaid = d.uaid.clone();
    d.close().await;
    let list = create(o, &json!({ e: {} }), None)
        .await
        .header("location")
        .unwrap()
        .to_owned();
    (uaid, list)
}

#[tokio::test]
async fn copies_survive_a_restart_with_the_same_version() {
    let dir = temp_dir("list-restart");
    let o = start_in(&dir, &[]).await;
    let (uaid, list) = list_of_one_away(&o).await;
    assert_eq!(
        request("POST", &list, &[("ttl", "600")], b"").await.status,
        201
    );
    o.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let o = start_in(&dir, &[]).await;
    let mut d = Device::connect(&o, Some(&uaid)).await;
    let n = d.recv_notification().await.expect("copy after restart");
    d.close().await;
    let mut d = Device::connect(&o, Some(&uaid)).await;
    assert_eq!(d.recv_notification().await.unwrap().version, n.version);
}

#[tokio::test]
async fn a_member_that_comes_back_is_offered_the_lists_newest_messages_only() {
    let o = start_with(&temp_dir("list-backlog"), &[], |s| s.list_backlog = 3).await;
    let (uaid, list) = list_of_one_away(&o).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = request("POST", &list, &[("ttl", "600")], b"").await;
        assert_eq!(r.status, 201, "{:?}", r.json());
        statuses.push(r.header("location").unwrap().to_owned());
    }
    let mut d = Device::connect(&o, Some(&uaid)).await;
    for _ in 0..3 {
        let n = d
            .recv_notification()
            .await
            .expect("one of the newest three");
        d.ack(&n).await;
    }
    assert!(
        d.recv_within(Duration::from_millis(300)).await.is_none(),
        "the two oldest are not offered"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The two it will never be offered are dropped, not stored.
    for (i, url) in statuses.iter().enumerate() {
        let s = request("GET", url, &[], b"").await.json();
        let want = if i < 2 { (0, 0, 1) } else { (1, 0, 0) };
        assert_eq!(
            (
                s["delivered"].as_u64(),
                s["stored"].as_u64(),
                s["dropped"].as_u64()
            ),
            (Some(want.0), Some(want.1), Some(want.2)),
            "list message {i}: {s}"
        );
    }
}

#[tokio::test]
async fn a_hello_reads_only_the_list_messages_after_the_settled_ones() {
    // Settled at once, so that the test need not wait a minute.
    let o = start_with(&temp_dir("list-settled"), &[], |s| s.list_settle_secs = 0).await;
    let (uaid, list) = list_of_one_away(&o).await;
    let push = |topic: Option<&'static str>| {
        let list = list.clone();
        async move {
            let mut h = vec![("ttl", "600")];
            h.extend(topic.map(|t| ("topic", t)));
            let r = request("POST", &list, &h, b"").await;
            assert_eq!(r.status, 201, "{:?}", r.json());
        }
    };
    // a, b, then c replaced by d (one Topic).
    for topic in [None, None, Some("t"), Some("t")] {
        push(topic).await;
    }
    let read = || metric(&o, "push_hello_list_messages_read_total");
    let committed = || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        while metric(&o, "push_store_writes_pending").await > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Each short visit: what its hello read, and the copies it got
    // (acknowledging those `ack` picks by their place).
    let visit = |ack: &'static [usize]| {
        let (o, uaid) = (&o, uaid.clone());
        async move {
            let before = read().await;
            let mut d = Device::connect(o, Some(&uaid)).await;
            let mut got = Vec::new();
            while let Some(n) = d.recv_notification_within(Duration::from_millis(300)).await {
                got.push(n);
            }
            for i in ack {
                d.ack(&got[*i]).await;
            }
            committed().await;
            d.close().await;
            let versions: Vec<String> = got.iter().map(|n| n.version.to_string()).collect();
            (read().await - before, versions)
        }
    };
    // All four read; a, b and d offered; a and d acknowledged.
    let (n, first) = visit(&[0, 2]).await;
    assert_eq!((n, first.len()), (4, 3));
    // Nothing settled yet at that hello: all four again; b offered again.
    let (n, got) = visit(&[0]).await;
    assert_eq!((n, got), (4, vec![first[1].clone()]));
    // a was settled: b, c and d read, nothing owed.
    let (n, got) = visit(&[]).await;
    assert_eq!((n, got.len()), (3, 0));
    // Everything settled: a reconnecting device reads nothing...
    let (n, got) = visit(&[]).await;
    assert_eq!((n, got.len()), (0, 0));
    // ...but what comes later.
    push(None).await;
    let (n, got) = visit(&[0]).await;
    assert_eq!((n, got.len()), (1, 1));

    // A device that stays connected is looked at in the background when
    // it acknowledges list copies a while after its first.
    push(None).await;
    push(None).await;
    let before = read().await;
    let looked = metric(&o, "push_settle_list_messages_read_total").await;
    let mut d = Device::connect(&o, Some(&uaid)).await;
    for _ in 0..2 {
        let n = d.recv_notification().await.expect("a copy");
        d.ack(&n).await;
    }
    // The one before (acknowledged since the last hello) and the two new.
    assert_eq!(read().await - before, 3);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    push(None).await;
    let n = d.recv_notification().await.expect("a copy while connected");
    d.ack(&n).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&o, "push_settle_list_messages_read_total").await == looked {
        assert!(
            std::time::Instant::now() < deadline,
            "no look in the background"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    committed().await;
    d.close().await;
    // Its next hello reads at most the newest (its acknowledgement may
    // have been committed after the look).
    let (n, got) = visit(&[]).await;
    assert!(n <= 1 && got.is_empty(), "read {n}, got {got:?}");

    // On a store shared by nodes, the settled record waits until a
    // message is old enough (another node's older one may still be on its
    // way); on one node's own store, only until none older is in flight.
    o.stop().await;
    let o = start_in(&temp_dir("list-settled-late"), &[]).await;
    let (uaid, list) = list_of_one_away(&o).await;
    let r = request("POST", &list, &[("ttl", "600")], b"").await;
    assert_eq!(r.status, 201);
    let shared = std::env::var("ORIGIN_TEST_STORE").is_ok_and(|s| s.starts_with("redis"));
    let third = if shared { (1, 0) } else { (0, 0) };
    for want in [(1, 1), (1, 0), third] {
        let before = metric(&o, "push_hello_list_messages_read_total").await;
        let mut d = Device::connect(&o, Some(&uaid)).await;
        let mut got = 0;
        while let Some(n) = d.recv_notification_within(Duration::from_millis(300)).await {
            d.ack(&n).await;
            got += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        d.close().await;
        let n = metric(&o, "push_hello_list_messages_read_total").await - before;
        assert_eq!(
            (n, got),
            want,
            "a message younger than --list-settle-secs is read again on a shared store"
        );
    }
}

/// A member's answers are kept by member in memory (`--answers-kept`):
/// they are found there, in the file when the index started afresh past
/// its cap, and in the file after a restart; no answered copy comes again.
#[tokio::test]
async fn answered_copies_stay_answered_whichever_index_holds_them() {
    let dir = temp_dir("list-answers");
    let o = start_with(&dir, &[], |s| s.answers_kept = 3).await;
    let (uaid, list) = list_of_one_away(&o).await;
    // Messages created after the index began (it counts whole seconds).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The list's path: the service's address changes with a restart.
    let path = list.parse::<http::Uri>().unwrap().path().to_owned();
    let push = |o: &origin::server::Running, n: usize| {
        let list = format!("http://{}{path}", o.state.config.app_listen);
        async move {
            for _ in 0..n {
                let r = request("POST", &list, &[("ttl", "600")], b"").await;
                assert_eq!(r.status, 201, "{:?}", r.json());
            }
        }
    };
    // A visit: the versions it got, all acknowledged.
    let visit = |o: &origin::server::Running| {
        let (addr, uaid) = (o.state.config.ws_listen.to_string(), uaid.clone());
        async move {
            let mut d = Device::connect_to(&addr, Some(&uaid)).await;
            let mut got = Vec::new();
            while let Some(n) = d.recv_notification_within(Duration::from_millis(300)).await {
                d.ack(&n).await;
                got.push(n.version.to_string());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            d.close().await;
            got
        }
    };
    push(&o, 2).await;
    assert_eq!(visit(&o).await.len(), 2);
    // In memory: nothing again.
    assert!(visit(&o).await.is_empty());
    // Two more answers: past the cap of 3 the index starts afresh, and
    // the first answers are found in the file.
    push(&o, 2).await;
    assert_eq!(visit(&o).await.len(), 2);
    assert!(visit(&o).await.is_empty());
    // After a restart, all in the file.
    o.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let o = start_with(&dir, &[], |s| s.answers_kept = 3).await;
    assert!(visit(&o).await.is_empty());
    push(&o, 1).await;
    assert_eq!(visit(&o).await.len(), 1);
    assert!(visit(&o).await.is_empty());
}

#[tokio::test]
async fn a_hello_whose_copies_wait_their_turn_past_the_hello_timeout_keeps_its_connection() {
    let o = start_with(&temp_dir("list-hello-wait"), &[], |s| {
        s.hello_timeout_secs = 1;
        s.hello_work_concurrency = Some(1);
    })
    .await;
    let (uaid, list) = list_of_one_away(&o).await;
    let r = request("POST", &list, &[("ttl", "600")], b"").await;
    assert_eq!(r.status, 201);
    // Every connection's turn to look for its copies is taken (as in a
    // reconnect storm) for longer than the hello timeout.
    let busy = o.state.hello_work.acquire().await.unwrap();
    let mut d = Device::connect(&o, Some(&uaid)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(busy);
    let n = d.recv_notification_within(Duration::from_secs(5)).await;
    assert!(
        n.is_some(),
        "the copy came once it was this connection's turn"
    );
}

#[tokio::test]
async fn members_drop_out_when_they_expire() {
    let o = start_with(&temp_dir("list-expiry"), &[], |s| s.sweep_secs = 1).await;
    let mut d = Device::connect(&o, None).await;
    let (_, e) = d.register(None).await;
    let (_, stays) = d.register(None).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let soon = shared::list::format_expires(now as i64 + 2);
    let r = create(&o, &json!({ e: {"expires": soon}, stays: {} }), None).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let page = request("GET", &list, &[], b"").await;
    assert_eq!(page.header("member-count"), Some("1"));
    assert_eq!(page.json().as_object().unwrap().len(), 1);
    assert_eq!(
        request("POST", &list, &[("ttl", "60")], b"").await.status,
        201
    );
    assert!(d.recv().await.is_some());
    assert!(
        d.recv_within(Duration::from_millis(300)).await.is_none(),
        "only the member that stays"
    );
}

#[tokio::test]
async fn keys_keep_their_time_and_keyless_members_get_an_empty_key() {
    let (o, mut d, e) = one_device("list-rotate").await;
    let (_, keyless) = d.register(None).await;
    let uaid = d.uaid.clone();
    d.close().await;
    let k1 = b64::encode(&[1; 24]);
    let k2 = b64::encode(&[2; 24]);
    let r = create(
        &o,
        &json!({ e.clone(): {"encrypted_key": k1}, keyless.clone(): {} }),
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();
    let template = jwe_compact_template();
    let push = || {
        request(
            "POST",
            &list,
            &[("ttl", "600"), ("content-type", "application/jose")],
            template.as_bytes(),
        )
    };
    let first = push().await;
    assert_eq!(first.status, 201);
    // Rotate the member's key; the first message keeps the key of its time.
    let patch = json!({ e.clone(): {"encrypted_key": k2} });
    let r = request(
        "PATCH",
        &list,
        &[("content-type", PATCH)],
        patch.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(push().await.status, 201);

    let mut d = Device::connect(&o, Some(&uaid)).await;
    let mut keys = Vec::new();
    for _ in 0..4 {
        let n = d
            .recv_notification()
            .await
            .expect("four copies: two messages, two subscriptions");
        let copy = String::from_utf8(b64::decode(n.data.as_deref().unwrap()).unwrap()).unwrap();
        keys.push((
            n.channel_id.to_string(),
            copy.split('.').nth(1).unwrap().to_owned(),
        ));
    }
    let keyed: Vec<&str> = keys
        .iter()
        .filter(|(_, k)| !k.is_empty())
        .map(|(_, k)| k.as_str())
        .collect();
    assert_eq!(
        keyed,
        vec![k1.as_str(), k2.as_str()],
        "old message, old key; new message, new key"
    );
    assert_eq!(
        keys.iter().filter(|(_, k)| k.is_empty()).count(),
        2,
        "the keyless member gets an empty key"
    );
    let s = request("GET", first.header("location").unwrap(), &[], b"")
        .await
        .json();
    assert_eq!(s["failed"], 0);
}

#[tokio::test]
async fn list_creations_are_limited_per_vapid_key() {
    let o = start_in(
        &temp_dir("list-create-rate"),
        &["list_creations_per_minute=2"],
    )
    .await;
    let aud = o.state.config.public_url.clone();
    let (first, second) = (Vapid::new(21), Vapid::new(22));
    let mut d = Device::connect(&o, None).await;
    let (_, member) = d.register(None).await;
    let doc = json!({ member.clone(): {} });
    early_in_a_minute().await;
    for _ in 0..2 {
        let r = create(&o, &doc, Some(&first.header(&aud))).await;
        assert_eq!(r.status, 201, "{:?}", r.json());
    }
    let r = create(&o, &doc, Some(&first.header(&aud))).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    // Another key counts on its own.
    let r = create(&o, &doc, Some(&second.header(&aud))).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
}

#[tokio::test]
async fn removing_non_members_makes_no_room() {
    let o = start_in(&temp_dir("list-room"), &["max_list_members=3"]).await;
    let mut d = Device::connect(&o, None).await;
    let mut subs = Vec::new();
    for _ in 0..4 {
        subs.push(d.register(None).await.1);
    }
    let r = create(
        &o,
        &json!({ subs[0].clone(): {}, subs[1].clone(): {} }),
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();
    let patch = |doc: Value| {
        let list = list.clone();
        async move {
            request(
                "PATCH",
                &list,
                &[("content-type", PATCH)],
                doc.to_string().as_bytes(),
            )
            .await
        }
    };
    // Two more members, and two removals of URIs that are not members: 4 > 3.
    let base = o.state.config.public_url.clone();
    let strangers = [
        format!("{base}/p/AAAAAAAAAAAAAAAAAAAAAA"),
        format!("{base}/p/BBBBBBBBBBBBBBBBBBBBBB"),
    ];
    let r = patch(json!({
        subs[2].clone(): {}, subs[3].clone(): {},
        strangers[0].clone(): null, strangers[1].clone(): null,
    }))
    .await;
    assert_eq!(r.status, 413, "{:?}", r.json());
    // Removing a member does make room.
    let r = patch(json!({ subs[0].clone(): null, subs[2].clone(): {}, subs[3].clone(): {} })).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["members"], 3);
}

#[tokio::test]
async fn lists_without_a_vapid_key_are_bounded_together() {
    let o = start_in(&temp_dir("list-unowned"), &["max_lists_per_key=2"]).await;
    let aud = o.state.config.public_url.clone();
    let mut d = Device::connect(&o, None).await;
    let (_, member) = d.register(None).await;
    let doc = json!({ member.clone(): {} });
    let mut lists = Vec::new();
    for _ in 0..2 {
        let r = create(&o, &doc, None).await;
        assert_eq!(r.status, 201, "{:?}", r.json());
        lists.push(r.header("location").unwrap().to_owned());
    }
    let r = create(&o, &doc, None).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("lists without a VAPID key"), "{detail}");
    // A key's own lists count apart.
    let owner = Vapid::new(31);
    let r = create(&o, &doc, Some(&owner.header(&aud))).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    // Deleting one makes room again.
    assert_eq!(request("DELETE", &lists[0], &[], b"").await.status, 204);
    let r = create(&o, &doc, None).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
}

#[tokio::test]
async fn concurrent_amendments_stay_within_the_member_limit() {
    let o = start_in(&temp_dir("list-race"), &["max_list_members=10"]).await;
    let mut d = Device::connect(&o, None).await;
    let mut subs = Vec::new();
    for _ in 0..17 {
        subs.push(d.register(None).await.1);
    }
    let r = create(&o, &json!({ subs[16].clone(): {} }), None).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();
    // Eight PATCHes at once, two new members each, room for four of them.
    let sends: Vec<_> = subs[..16]
        .chunks(2)
        .map(|pair| {
            let doc = json!({ pair[0].clone(): {}, pair[1].clone(): {} });
            let list = list.clone();
            tokio::spawn(async move {
                let hs = [("content-type", PATCH)];
                request("PATCH", &list, &hs, doc.to_string().as_bytes()).await
            })
        })
        .collect();
    let mut applied = 0;
    for s in sends {
        let r = s.await.unwrap();
        match r.status {
            200 => applied += 1,
            413 => assert_eq!(r.json()["type"], "/problems/too-many-members"),
            other => panic!("{other}: {:?}", r.json()),
        }
    }
    assert_eq!(applied, 4, "as many as fit");
    let r = request("GET", &list, &[], b"").await;
    assert_eq!(r.header("member-count"), Some("9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_amendments_of_one_member_all_merge() {
    let o = start_in(&temp_dir("list-merge-race"), &[]).await;
    let mut d = Device::connect(&o, None).await;
    let sub = d.register(None).await.1;
    let r = create(&o, &json!({ sub.clone(): {} }), None).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();
    // Rounds of eight PATCHes at once, each merging its own parameter into
    // the member's header: none may merge into a value another replaced.
    for round in 0..5 {
        let sends: Vec<_> = (0..8)
            .map(|k| {
                let doc = json!({ sub.clone(): {"header": {format!("p{round}-{k}"): "v"}} });
                let list = list.clone();
                tokio::spawn(async move {
                    let hs = [("content-type", PATCH)];
                    request("PATCH", &list, &hs, doc.to_string().as_bytes()).await
                })
            })
            .collect();
        for s in sends {
            let r = s.await.unwrap();
            assert_eq!(r.status, 200, "{:?}", r.json());
        }
        let page = request("GET", &list, &[], b"").await.json();
        let header = page[&sub]["header"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for k in 0..8 {
            for r in 0..=round {
                let name = format!("p{r}-{k}");
                assert!(header.contains_key(&name), "{name} lost: {header:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_push_racing_the_lists_deletion_leaves_no_message_behind() {
    let o = start_in(&temp_dir("list-push-delete"), &[]).await;
    let mut d = Device::connect(&o, None).await;
    let sub = d.register(None).await.1;
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..20 {
        let r = create(&o, &json!({ sub.clone(): {} }), None).await;
        assert_eq!(r.status, 201, "{:?}", r.json());
        let list = r.header("location").unwrap().to_owned();
        let pushes: Vec<_> = (0..6)
            .map(|_| {
                let list = list.clone();
                tokio::spawn(async move { request("POST", &list, &[("ttl", "60")], b"").await })
            })
            .collect();
        let r = request("DELETE", &list, &[], b"").await;
        assert_eq!(r.status, 204);
        for p in pushes {
            let r = p.await.unwrap();
            match r.status {
                201 => {
                    accepted += 1;
                    // Accepted before the deletion: the message went with its list.
                    let status = request("GET", r.header("location").unwrap(), &[], b"").await;
                    assert_eq!(status.status, 404, "a list message outlived its list");
                }
                404 => refused += 1,
                other => panic!("{other}: {:?}", r.json()),
            }
        }
    }
    assert!(accepted > 0, "{accepted} accepted, {refused} refused");
}

#[tokio::test]
async fn list_document_bytes_past_the_budget_wait_for_room() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Bodies being read may hold as many bytes as one document of the
    // largest size (1,024 here, plus one).
    let o = start_with(
        &temp_dir("list-documents"),
        &["max_list_body_bytes=1024"],
        |s| {
            s.max_list_documents = 1;
            s.body_read_timeout_secs = 1;
        },
    )
    .await;
    let mut d = Device::connect(&o, None).await;
    let sub = d.register(None).await.1;
    let addr = o
        .state
        .config
        .public_url
        .trim_start_matches("http://")
        .to_owned();
    // A creation whose body stops after 1,000 of its 1,024 bytes holds
    // them until its body timeout, then is answered 408.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /lists/0 HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {AGG}\r\ncontent-length: 1024\r\n\r\n{{{}",
        " ".repeat(999)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(o.state.document_bytes.available_permits(), 25);
    // Another creation's bytes wait for room: made once the stalled one
    // is let go, not before.
    let started = std::time::Instant::now();
    let r = create(&o, &json!({ sub.clone(): {} }), None).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer));
    let _ = read.await.expect("answered");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(o.state.document_bytes.available_permits(), 1025);
}

#[tokio::test]
async fn a_document_that_trickles_in_blocks_no_other() {
    // One document at a time may be applied; a client that sends the
    // start of its document and stalls holds only the bytes it sent.
    let o = start_with(&temp_dir("list-slow-upload"), &[], |s| {
        s.max_list_documents = 1;
        s.body_read_timeout_secs = 5;
    })
    .await;
    use tokio::io::AsyncWriteExt;
    let mut slow = tokio::net::TcpStream::connect(o.state.config.app_listen)
        .await
        .unwrap();
    let head = format!(
        "POST /lists/0 HTTP/1.1\r\nHost: x\r\nContent-Type: {AGG}\r\nContent-Length: 1000\r\n\r\n{{"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    let r = create(&o, &json!({ endpoint: {} }), None).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(slow);
}

#[tokio::test]
async fn a_keys_copies_are_budgeted_over_all_its_lists() {
    // Five copies a minute per key: a push to three members, then another
    // to three more through a second list of the same key, is one too many.
    // A refusal's answer waits a moment (--refusal-hold-ms).
    let o = start_with(
        &temp_dir("list-owner-budget"),
        &["owner_copies_per_minute=5", "list_pushes_per_minute=1"],
        |s| s.refusal_hold_ms = 300,
    )
    .await;
    let aud = o.state.config.public_url.clone();
    let (owner, other) = (Vapid::new(41), Vapid::new(42));
    let mut devices = Vec::new();
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut d = Device::connect(&o, None).await;
        subs.push(d.register(None).await.1);
        devices.push(d);
    }
    let doc = json!({ subs[0].clone(): {}, subs[1].clone(): {}, subs[2].clone(): {} });
    let mut lists = Vec::new();
    for key in [&owner, &owner, &other] {
        let r = create(&o, &doc, Some(&key.header(&aud))).await;
        assert_eq!(r.status, 201, "{:?}", r.json());
        lists.push(r.header("location").unwrap().to_owned());
    }
    let two = json!({ subs[0].clone(): {}, subs[1].clone(): {} });
    let r = create(&o, &two, Some(&other.header(&aud))).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let others_two = r.header("location").unwrap().to_owned();
    let push = |list: &str, key: &Vapid| {
        let (list, auth) = (list.to_owned(), key.header(&aud));
        async move {
            request(
                "POST",
                &list,
                &[("ttl", "60"), ("authorization", &auth)],
                b"",
            )
            .await
        }
    };
    early_in_a_minute().await;
    assert_eq!(push(&lists[0], &owner).await.status, 201);
    let t = std::time::Instant::now();
    let r = push(&lists[1], &owner).await;
    assert_eq!(r.status, 429, "{:?}", r.json());
    assert!(t.elapsed() >= Duration::from_millis(300), "held");
    assert!(r.header("retry-after").is_some());
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("owner_copies_per_minute"),
        "{:?}",
        r.json()
    );
    // The refused push did not use the list's one push a minute: once the
    // list is small enough for what is left of the budget, it goes.
    let r = request(
        "PATCH",
        &lists[1],
        &[
            ("content-type", PATCH),
            ("authorization", &owner.header(&aud)),
        ],
        json!({ subs[2].clone(): null }).to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(push(&lists[1], &owner).await.status, 201);
    // Another key's budget is its own. A push its list's own limit refuses
    // gives its copies back to the key's budget: 2, then 3 more, fit.
    assert_eq!(push(&others_two, &other).await.status, 201);
    let r = push(&others_two, &other).await;
    assert_eq!(r.status, 429, "{:?}", r.json());
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("pushes to this list"),
        "{:?}",
        r.json()
    );
    assert_eq!(push(&lists[2], &other).await.status, 201);
    assert_eq!(metric(&o, "push_refusals_held_total").await, 2);
    // Each device got one copy from each accepted push: two to all
    // three, and two more to the two in every list.
    for (i, d) in devices.iter_mut().enumerate() {
        for _ in 0..(if i < 2 { 4 } else { 2 }) {
            assert!(d.recv_notification().await.is_some());
        }
        d.expect_nothing().await;
    }
}

#[tokio::test]
async fn copies_a_device_could_not_decrypt_or_refused_are_counted_as_such() {
    let o = start_fresh("list-outcomes").await;
    let mut devices = Vec::new();
    let mut members = serde_json::Map::new();
    for _ in 0..4 {
        let mut d = Device::connect(&o, None).await;
        members.insert(d.register(None).await.1, json!({}));
        devices.push(d);
    }
    let r = create(&o, &Value::Object(members), None).await;
    assert_eq!(r.status, 201);
    let list = r.header("location").unwrap().to_owned();
    let r = request("POST", &list, &[("ttl", "600")], b"").await;
    assert_eq!(r.status, 201);
    let status_url = r.header("location").unwrap().to_owned();
    // Firefox's answers: delivered (code 100), did not decrypt (101), not
    // delivered (102, read as JSON: another field order), and a nack.
    let answers = [
        r#"{"messageType":"ack","updates":[{"channelID":"C","version":"V","code":100}]}"#,
        r#"{"messageType":"ack","updates":[{"channelID":"C","version":"V","code":101}]}"#,
        r#"{"messageType":"ack","updates":[{"code":102,"version":"V","channelID":"C"}]}"#,
        r#"{"messageType":"nack","version":"V","code":301}"#,
    ];
    for (d, answer) in devices.iter_mut().zip(answers) {
        let n = d.recv_notification().await.expect("copy");
        let text = answer.replace('C', &n.channel_id).replace('V', &n.version);
        d.send_text(&text).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = request("GET", &status_url, &[], b"").await.json();
    assert_eq!(
        (
            &s["delivered"],
            &s["undecryptable"],
            &s["rejected"],
            &s["stored"]
        ),
        (&json!(1), &json!(1), &json!(2), &json!(0)),
        "{s}"
    );
    let undecryptable = "push_messages_undelivered_total{reason=\"undecryptable\"}";
    assert_eq!(metric(&o, undecryptable).await, 1);
    let rejected = "push_messages_undelivered_total{reason=\"rejected\"}";
    assert_eq!(metric(&o, rejected).await, 2);
    assert_eq!(metric(&o, "push_messages_acked_total").await, 4);
    // None of them is sent again.
    for d in devices {
        let uaid = d.uaid.clone();
        d.close().await;
        let mut again = Device::connect(&o, Some(&uaid)).await;
        again.expect_nothing().await;
    }
}

/// By default a list needs a VAPID key to be created (an owner who alone
/// manages it); an operator may allow lists without one, and their
/// creations are then counted per client address.
#[tokio::test]
async fn lists_without_a_vapid_key_need_the_operator_s_consent() {
    let o = start_with(&temp_dir("list-keyless-off"), &[], |s| {
        s.keyless_lists = false
    })
    .await;
    let aud = o.state.config.public_url.clone();
    let mut d = Device::connect(&o, None).await;
    let (_, member) = d.register(None).await;
    let r = create(&o, &json!({ member.clone(): {} }), None).await;
    assert_eq!(r.status, 401, "{:?}", r.json());
    assert_eq!(r.json()["type"], "/problems/vapid-required");
    assert_eq!(
        o.state.store.owned_lists(&origin::store::NO_OWNER).unwrap(),
        0
    );
    let owner = Vapid::new(51);
    let r = create(
        &o,
        &json!({ member.clone(): {} }),
        Some(&owner.header(&aud)),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    o.stop().await;

    let o = start_with(&temp_dir("list-keyless-on"), &[], |s| {
        s.keyless_lists = true;
        s.keyless_list_creations_per_address_per_minute = 3;
    })
    .await;
    let mut d = Device::connect(&o, None).await;
    let (_, member) = d.register(None).await;
    for i in 0..3 {
        let r = create(&o, &json!({ member.clone(): {} }), None).await;
        assert_eq!(r.status, 201, "creation {i}: {:?}", r.json());
    }
    let r = create(&o, &json!({ member.clone(): {} }), None).await;
    assert_eq!(r.status, 429, "{:?}", r.json());
    assert!(r.json()["detail"]
        .as_str()
        .unwrap()
        .contains("without a VAPID key from this address"));
    assert!(r.header("retry-after").is_some());
    // A key's creations are its own, not the address's.
    let r = create(
        &o,
        &json!({ member.clone(): {} }),
        Some(&Vapid::new(52).header(&o.state.config.public_url)),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    o.stop().await;
}

/// A list message's status is its list owner's to read, and polls within
/// `--list-status-cache-ms` share one count of the acknowledgements.
#[tokio::test]
async fn a_list_message_status_is_the_owners_and_its_counts_are_shared() {
    let o = start_with(&temp_dir("list-status-owner"), &[], |s| {
        s.list_status_cache_ms = 60_000;
    })
    .await;
    let aud = o.state.config.public_url.clone();
    let (owner, stranger) = (Vapid::new(61), Vapid::new(62));
    let mut d = Device::connect(&o, None).await;
    let (_, member) = d.register(None).await;
    let r = create(
        &o,
        &json!({ member.clone(): {} }),
        Some(&owner.header(&aud)),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();
    let r = request(
        "POST",
        &list,
        &[("ttl", "60"), ("authorization", &owner.header(&aud))],
        b"",
    )
    .await;
    assert_eq!(r.status, 201);
    let status_url = r.header("location").unwrap().to_owned();
    // Nobody else reads it, with another key or none.
    assert_eq!(request("GET", &status_url, &[], b"").await.status, 401);
    let r = request(
        "GET",
        &status_url,
        &[("authorization", &stranger.header(&aud))],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "/problems/vapid-key-mismatch");
    let read = || async {
        let r = request(
            "GET",
            &status_url,
            &[("authorization", &owner.header(&aud))],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.json());
        r.json()["delivered"].as_u64().unwrap()
    };
    // Counted before the device acknowledges: later polls answer that count
    // until it is a minute old.
    assert_eq!(read().await, 0);
    let n = d.recv_notification().await.expect("the copy");
    d.ack(&n).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read().await, 0, "the count read a moment ago");
    // A list deleted takes its messages: their status is gone.
    let r = request(
        "DELETE",
        &list,
        &[("authorization", &owner.header(&aud))],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    let r = request(
        "GET",
        &status_url,
        &[("authorization", &owner.header(&aud))],
        b"",
    )
    .await;
    assert_eq!(r.status, 404);
    o.stop().await;
}
