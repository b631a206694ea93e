//! RFC 8030 over HTTP/2 with a client written on the `h2` crate: subscribe,
//! receive by server push, acknowledge with DELETE, and get the receipt back
//! on the application side (§5.1, §6.3).

mod common;
use bytes::Bytes;
use common::*;
use h2::client::SendRequest;
use http::Request;
use shared::links;
use std::time::Duration;

async fn connect(addr: std::net::SocketAddr) -> SendRequest<Bytes> {
    h2_connect(addr).await
}

/// Sends a request with an optional body; returns the response head and body.
async fn send(
    c: &mut SendRequest<Bytes>,
    req: Request<()>,
    body: Option<&[u8]>,
) -> (http::response::Parts, Bytes) {
    let (fut, mut stream) = c.send_request(req, body.is_none()).unwrap();
    if let Some(b) = body {
        stream.send_data(Bytes::copy_from_slice(b), true).unwrap();
    }
    let resp = fut.await.unwrap();
    let (parts, mut body) = resp.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        data.extend_from_slice(&chunk.unwrap());
    }
    (parts, Bytes::from(data))
}

fn links_of(parts: &http::response::Parts) -> Vec<(String, String)> {
    parts
        .headers
        .get_all("link")
        .iter()
        .flat_map(|v| links::parse(v.to_str().unwrap()))
        .map(|(u, r)| (u.to_owned(), r.to_owned()))
        .collect()
}

/// Subscribes in a set of its own; returns the `201`'s head.
async fn subscribe(c: &mut SendRequest<Bytes>, device_url: &str) -> http::response::Parts {
    let req = Request::post(format!("{device_url}/subscribe"))
        .body(())
        .unwrap();
    let (parts, _) = send(c, req, None).await;
    assert_eq!(parts.status, 201);
    parts
}

/// Subscribes in a set of its own; returns the subscription's URL and its
/// push resource.
async fn subscribe_urls(c: &mut SendRequest<Bytes>, device_url: &str) -> (String, String) {
    let parts = subscribe(c, device_url).await;
    let sub_url = parts.headers["location"].to_str().unwrap().to_owned();
    let (push_url, _) = links_of(&parts)
        .into_iter()
        .find(|(_, r)| r == links::REL_PUSH)
        .unwrap();
    (sub_url, push_url)
}

/// A subscribe request into the set that the `201` head `parts` names.
fn subscribe_into_set_of(parts: &http::response::Parts, device_url: &str) -> Request<()> {
    let (set_url, _) = links_of(parts)
        .into_iter()
        .find(|(_, r)| r == links::REL_SET)
        .unwrap();
    Request::post(format!("{device_url}/subscribe"))
        .header("link", links::link(&set_url, links::REL_SET))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn subscribe_push_ack_receipt() {
    let o = start_fresh("h2").await;
    let device_url = o.state.config.device_url.clone();
    let mut ua = connect(o.state.config.h2_listen).await;

    // Subscribe.
    let parts = subscribe(&mut ua, &device_url).await;
    let sub_url = parts.headers["location"].to_str().unwrap().to_owned();
    let ls = links_of(&parts);
    let find = |rel: &str| {
        ls.iter()
            .find(|(_, r)| r == rel)
            .map(|(u, _)| u.clone())
            .unwrap()
    };
    let push_url = find(links::REL_PUSH);
    let receipt_subscribe = find(links::REL_RECEIPT);
    let set_url = find(links::REL_SET);
    assert!(find(links::REL_MULTI).contains("/lists/"));

    // A second subscription in the same set.
    let req = Request::post(format!("{device_url}/subscribe"))
        .header("link", links::link(&set_url, links::REL_SET))
        .body(())
        .unwrap();
    let (parts2, _) = send(&mut ua, req, None).await;
    assert_eq!(parts2.status, 201);
    let push_url2 = links_of(&parts2)
        .into_iter()
        .find(|(_, r)| r == links::REL_PUSH)
        .unwrap()
        .0;

    // The application server makes a receipt subscription and watches it.
    let mut app = connect(o.state.config.h2_listen).await;
    let req = Request::post(receipt_subscribe).body(()).unwrap();
    let (rparts, _) = send(&mut app, req, None).await;
    assert_eq!(rparts.status, 201);
    let receipt_sub = rparts.headers["location"].to_str().unwrap().to_owned();
    let (mut receipts_fut, _) = app
        .send_request(Request::get(&receipt_sub).body(()).unwrap(), true)
        .unwrap();
    let mut receipts = receipts_fut.push_promises();

    // The user agent monitors its set.
    let (mut set_fut, _) = ua
        .send_request(Request::get(&set_url).body(()).unwrap(), true)
        .unwrap();
    let mut pushes = set_fut.push_promises();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Push with a receipt request, asynchronously.
    let body = aes128gcm_body(150);
    let r = request(
        "POST",
        &push_url,
        &[
            ("ttl", "60"),
            ("content-encoding", "aes128gcm"),
            ("urgency", "high"),
            ("push-receipt", &receipt_sub),
            ("prefer", "respond-async"),
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 202);
    let message_url = r.header("location").unwrap().to_owned();

    let promise = tokio::time::timeout(Duration::from_secs(3), pushes.push_promise())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (preq, presp) = promise.into_parts();
    let msg_path = preq.uri().path().to_owned();
    assert_eq!(
        msg_path,
        http::Uri::try_from(message_url.as_str()).unwrap().path()
    );
    let presp = presp.await.unwrap();
    assert_eq!(presp.status(), 200);
    assert_eq!(presp.headers()["content-encoding"], "aes128gcm");
    let link = presp.headers()["link"].to_str().unwrap();
    assert_eq!(links::find([link], links::REL_PUSH).unwrap(), push_url);
    let mut pbody = presp.into_body();
    let mut got = Vec::new();
    while let Some(c) = pbody.data().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(got, body);

    // Acknowledge: the receipt reaches the application server as a 204 push.
    let ack = Request::delete(preq.uri().to_string()).body(()).unwrap();
    let (aparts, _) = send(&mut ua, ack, None).await;
    assert_eq!(aparts.status, 204);
    let rpromise = tokio::time::timeout(Duration::from_secs(3), receipts.push_promise())
        .await
        .expect("a receipt")
        .unwrap()
        .unwrap();
    let (rreq, rresp) = rpromise.into_parts();
    assert_eq!(rreq.uri().path(), msg_path);
    assert_eq!(rresp.await.unwrap().status(), 204);

    // The second subscription's messages arrive on the same set.
    assert_eq!(
        request("POST", &push_url2, &[("ttl", "60")], b"")
            .await
            .status,
        201
    );
    let p2 = tokio::time::timeout(Duration::from_secs(3), pushes.push_promise())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (_, r2) = p2.into_parts();
    let r2 = r2.await.unwrap();
    assert_eq!(
        links::find([r2.headers()["link"].to_str().unwrap()], links::REL_PUSH).unwrap(),
        push_url2
    );

    // Delete the first subscription: its push resource is gone (410).
    let (dparts, _) = send(&mut ua, Request::delete(&sub_url).body(()).unwrap(), None).await;
    assert_eq!(dparts.status, 204);
    assert_eq!(
        request("POST", &push_url, &[("ttl", "60")], b"")
            .await
            .status,
        410
    );
}

#[tokio::test]
async fn stored_messages_prefer_wait_zero_and_urgency_filter() {
    let o = start_fresh("h2-wait").await;
    let device_url = o.state.config.device_url.clone();
    let mut ua = connect(o.state.config.h2_listen).await;
    let vapid = Vapid::new(9);
    let req = Request::post(format!("{device_url}/subscribe"))
        .body(())
        .unwrap();
    let (fut, mut s) = ua.send_request(req, false).unwrap();
    s.send_data(
        Bytes::from(format!(r#"{{"vapid":"{}"}}"#, vapid.public())),
        true,
    )
    .unwrap();
    let parts = fut.await.unwrap().into_parts().0;
    assert_eq!(parts.status, 201);
    let sub_url = parts.headers["location"].to_str().unwrap().to_owned();
    let push_url = links_of(&parts)
        .into_iter()
        .find(|(_, r)| r == links::REL_PUSH)
        .unwrap()
        .0;
    let auth = vapid.header(&o.state.config.public_url);

    // Restricted to the key: unsigned pushes are refused.
    assert_eq!(
        request("POST", &push_url, &[("ttl", "60")], b"")
            .await
            .status,
        401
    );
    let mut locations = Vec::new();
    for urgency in ["low", "high"] {
        let r = request(
            "POST",
            &push_url,
            &[
                ("ttl", "60"),
                ("urgency", urgency),
                ("authorization", &auth),
            ],
            b"",
        )
        .await;
        assert_eq!(r.status, 201);
        locations.push(r.header("location").unwrap().to_owned());
    }
    // Only high-urgency ones for a GET with Urgency: high, then 200.
    let req = Request::get(&sub_url)
        .header("urgency", "high")
        .header("prefer", "wait=0")
        .body(())
        .unwrap();
    let (mut fut, _) = ua.send_request(req, true).unwrap();
    let mut pushes = fut.push_promises();
    let resp = fut.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut n = 0;
    while let Ok(Some(Ok(p))) =
        tokio::time::timeout(Duration::from_millis(300), pushes.push_promise()).await
    {
        let (promised, r) = p.into_parts();
        let id = promised.uri().path().rsplit('/').next().unwrap().to_owned();
        assert!(
            locations[1].ends_with(&format!("/{id}")),
            "{id}: not the high one"
        );
        // RFC 8030 §5.3: the Urgency header field is not forwarded.
        assert!(r.await.unwrap().headers().get("urgency").is_none());
        n += 1;
    }
    assert_eq!(n, 1);
    // A bad subscribe body is a 400 problem.
    let req = Request::post(format!("{device_url}/subscribe"))
        .body(())
        .unwrap();
    let (fut, mut s) = ua.send_request(req, false).unwrap();
    s.send_data(Bytes::from_static(br#"{"vapid":"not a key"}"#), true)
        .unwrap();
    assert_eq!(fut.await.unwrap().status(), 400);
    // So is an oversized one: 413.
    let req = Request::post(format!("{device_url}/subscribe"))
        .body(())
        .unwrap();
    let (fut, mut s) = ua.send_request(req, false).unwrap();
    s.send_data(Bytes::from(vec![b' '; 5000]), true).unwrap();
    let resp = fut.await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.headers()["content-type"],
        shared::problem::CONTENT_TYPE
    );
}

#[tokio::test]
async fn a_device_connection_is_told_the_configured_stream_limit() {
    let o = start_with(&temp_dir("h2-streams"), &[], |s| {
        s.h2_max_streams = 2;
    })
    .await;
    let device_url = o.state.config.device_url.clone();
    let mut ua = connect(o.state.config.h2_listen).await;
    subscribe(&mut ua, &device_url).await;
    // The server's SETTINGS carried the limit.
    assert_eq!(ua.current_max_send_streams(), 2);
}

/// Asks for stored messages (`Prefer: wait=0`); returns the promised paths.
async fn poll_stored(c: &mut SendRequest<Bytes>, sub_url: &str) -> Vec<String> {
    poll_receipts(c, sub_url)
        .await
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

#[tokio::test]
async fn a_user_agent_that_does_not_acknowledge_gets_no_more_than_max_unacked() {
    let o = start_with(&temp_dir("h2-unacked"), &[], |s| s.max_unacked = 2).await;
    let device_url = o.state.config.device_url.clone();
    let mut ua = connect(o.state.config.h2_listen).await;
    let (sub_url, push_url) = subscribe_urls(&mut ua, &device_url).await;
    for _ in 0..3 {
        let r = request("POST", &push_url, &[("ttl", "600")], b"").await;
        assert_eq!(r.status, 201);
    }
    let first = poll_stored(&mut ua, &sub_url).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(poll_stored(&mut ua, &sub_url).await, Vec::<String>::new());
    assert!(metric(&o, "push_messages_deferred_unacked_total").await >= 2);
    // Acknowledging one makes room for the third.
    let req = Request::delete(format!("{device_url}{}", first[0]))
        .body(())
        .unwrap();
    assert_eq!(send(&mut ua, req, None).await.0.status, 204);
    let rest = poll_stored(&mut ua, &sub_url).await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(!first.contains(&rest[0]));
}

#[tokio::test]
async fn a_held_monitor_gets_what_overflowed_or_waited_for_room() {
    let o = start_with(&temp_dir("h2-monitor-room"), &[], |s| {
        s.queue_depth = 1;
        s.max_unacked = 4;
    })
    .await;
    let device_url = o.state.config.device_url.clone();
    let mut ua = connect(o.state.config.h2_listen).await;
    let (sub_url, push_url) = subscribe_urls(&mut ua, &device_url).await;
    // A monitor held open, then ten pushes at once through a queue of one.
    let (mut fut, _) = ua
        .send_request(Request::get(&sub_url).body(()).unwrap(), true)
        .unwrap();
    let mut pushes = fut.push_promises();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sends: Vec<_> = (0..10)
        .map(|_| {
            let u = push_url.clone();
            tokio::spawn(async move { request("POST", &u, &[("ttl", "600")], b"").await.status })
        })
        .collect();
    for s in sends {
        assert_eq!(s.await.unwrap(), 201);
    }
    // Four at a time (max_unacked); each acknowledgement lets one more come,
    // on the same monitor, until all ten did.
    let mut seen = std::collections::HashSet::new();
    while let Ok(Some(Ok(p))) =
        tokio::time::timeout(Duration::from_secs(2), pushes.push_promise()).await
    {
        let (req, resp) = p.into_parts();
        resp.await.unwrap();
        let path = req.uri().path().to_owned();
        assert!(seen.insert(path.clone()), "{path} twice");
        let del = Request::delete(format!("{device_url}{path}"))
            .body(())
            .unwrap();
        assert_eq!(send(&mut ua, del, None).await.0.status, 204);
    }
    assert_eq!(seen.len(), 10);
    drop(fut);
}

#[tokio::test]
async fn room_made_by_one_monitor_reaches_another_on_the_same_connection() {
    let o = start_with(&temp_dir("h2-two-monitors"), &[], |s| s.max_unacked = 2).await;
    let device_url = o.state.config.device_url.clone();
    let mut ua = connect(o.state.config.h2_listen).await;
    // Two subscriptions in two sets, monitored over one connection.
    let mut monitors = Vec::new();
    let mut push_urls = Vec::new();
    for _ in 0..2 {
        let (sub_url, push_url) = subscribe_urls(&mut ua, &device_url).await;
        push_urls.push(push_url);
        let (mut fut, _) = ua
            .send_request(Request::get(&sub_url).body(()).unwrap(), true)
            .unwrap();
        monitors.push((fut.push_promises(), fut));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The first fills the connection's room; the second's message waits.
    for url in [&push_urls[0], &push_urls[0], &push_urls[1]] {
        let r = request("POST", url, &[("ttl", "600")], b"").await;
        assert_eq!(r.status, 201);
    }
    let mut first = Vec::new();
    for _ in 0..2 {
        let p = tokio::time::timeout(Duration::from_secs(2), monitors[0].0.push_promise())
            .await
            .expect("pushed")
            .unwrap()
            .unwrap();
        first.push(p.into_parts().0.uri().path().to_owned());
    }
    let nothing =
        tokio::time::timeout(Duration::from_millis(300), monitors[1].0.push_promise()).await;
    assert!(nothing.is_err(), "no room yet");
    // Acknowledging one of the first's makes room for the second's.
    let del = Request::delete(format!("{device_url}{}", first[0]))
        .body(())
        .unwrap();
    assert_eq!(send(&mut ua, del, None).await.0.status, 204);
    let p = tokio::time::timeout(Duration::from_secs(2), monitors[1].0.push_promise())
        .await
        .expect("the waiting message came")
        .unwrap()
        .unwrap();
    assert!(!first.contains(&p.into_parts().0.uri().path().to_owned()));
    drop(monitors);
}

#[tokio::test]
async fn a_subscription_set_holds_at_most_the_configured_subscriptions() {
    let o = start_in(
        &temp_dir("h2-sub-cap"),
        &["max_subscriptions_per_user_agent=2"],
    )
    .await;
    let device_url = o.state.config.device_url.clone();
    let mut ua = connect(o.state.config.h2_listen).await;
    let parts = subscribe(&mut ua, &device_url).await;
    let first = parts.headers["location"].to_str().unwrap().to_owned();
    let in_set = || subscribe_into_set_of(&parts, &device_url);
    assert_eq!(send(&mut ua, in_set(), None).await.0.status, 201);
    let (refused, body) = send(&mut ua, in_set(), None).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.headers["content-type"], "application/problem+json");
    let p: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(p["type"], "/problems/too-many-subscriptions", "{p}");
    // Deleting one makes room.
    let (deleted, _) = send(&mut ua, Request::delete(&first).body(()).unwrap(), None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(send(&mut ua, in_set(), None).await.0.status, 201);
    // A new set has an allowance of its own.
    subscribe(&mut ua, &device_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_subscribes_into_a_set_stay_within_the_limit() {
    let o = start_in(
        &temp_dir("h2-sub-race"),
        &["max_subscriptions_per_user_agent=3"],
    )
    .await;
    let device_url = o.state.config.device_url.clone();
    let mut ua = connect(o.state.config.h2_listen).await;
    let parts = subscribe(&mut ua, &device_url).await;
    // Eight at once into a set with room for two more.
    let sends: Vec<_> = (0..8)
        .map(|_| {
            let mut ua = ua.clone();
            let req = subscribe_into_set_of(&parts, &device_url);
            tokio::spawn(async move { send(&mut ua, req, None).await.0.status })
        })
        .collect();
    let mut made = 0;
    for s in sends {
        match s.await.unwrap().as_u16() {
            201 => made += 1,
            429 => {}
            other => panic!("{other}"),
        }
    }
    assert_eq!(made, 2, "as many as fit");
}

#[tokio::test]
async fn only_the_user_agent_acknowledges_its_message() {
    // The sender learns the message's URL from its 201; a DELETE of it on
    // a connection that neither got it pushed nor monitors its user agent
    // is 404 and leaves it for the user agent.
    let o = start_fresh("h2-ack-owner").await;
    let device_url = o.state.config.device_url.clone();
    let mut ua = connect(o.state.config.h2_listen).await;
    let (sub_url, push_url) = subscribe_urls(&mut ua, &device_url).await;
    let r = request("POST", &push_url, &[("ttl", "600")], b"").await;
    assert_eq!(r.status, 201);
    let location = r.header("location").unwrap().to_owned();
    let path = &location[location.find("/m/").unwrap()..];
    let mut stranger = connect(o.state.config.h2_listen).await;
    let del = Request::delete(format!("{device_url}{path}"))
        .body(())
        .unwrap();
    let (refused, _) = send(&mut stranger, del, None).await;
    assert_eq!(refused.status, 404);
    // The user agent still gets it, and acknowledges it.
    let pushed = poll_stored(&mut ua, &sub_url).await;
    assert_eq!(pushed, vec![path.to_owned()]);
    let del = Request::delete(format!("{device_url}{path}"))
        .body(())
        .unwrap();
    assert_eq!(send(&mut ua, del, None).await.0.status, 204);
    assert!(poll_stored(&mut ua, &sub_url).await.is_empty());
}

#[tokio::test]
async fn a_subscription_set_can_be_deleted_and_is_not_made_again_by_name() {
    let o = start_fresh("h2-set-delete").await;
    let device_url = o.state.config.device_url.clone();
    let mut ua = connect(o.state.config.h2_listen).await;
    let parts = subscribe(&mut ua, &device_url).await;
    let (second, _) = send(&mut ua, subscribe_into_set_of(&parts, &device_url), None).await;
    assert_eq!(second.status, 201);
    let pushes: Vec<String> = [&parts, &second]
        .iter()
        .map(|p| {
            links_of(p)
                .into_iter()
                .find(|(_, r)| r == links::REL_PUSH)
                .unwrap()
                .0
        })
        .collect();
    let (set_url, _) = links_of(&parts)
        .into_iter()
        .find(|(_, r)| r == links::REL_SET)
        .unwrap();
    // DELETE on the set ends it and both subscriptions (410 Gone).
    let del = Request::delete(&set_url).body(()).unwrap();
    assert_eq!(send(&mut ua, del, None).await.0.status, 204);
    for push in &pushes {
        let r = request("POST", push, &[("ttl", "60")], b"").await;
        assert_eq!(r.status, 410, "{push}");
    }
    let del = Request::delete(&set_url).body(()).unwrap();
    assert_eq!(send(&mut ua, del, None).await.0.status, 404);
    // A subscribe naming the deleted set, or no set of ours, is 400: no new
    // set is made in its place.
    let (refused, body) = send(&mut ua, subscribe_into_set_of(&parts, &device_url), None).await;
    assert_eq!(refused.status, 400);
    let p: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(p["type"], "/problems/unknown-set", "{p}");
    let garbage = Request::post(format!("{device_url}/subscribe"))
        .header(
            "link",
            links::link("http://elsewhere/set/x", links::REL_SET),
        )
        .body(())
        .unwrap();
    assert_eq!(send(&mut ua, garbage, None).await.0.status, 400);
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_a_monitored_one_kept() {
    let o = start_with(&temp_dir("h2-idle"), &[], |s| s.h2_idle_secs = 1).await;
    let device_url = o.state.config.device_url.clone();
    // A connection that subscribed and then holds no stream is closed.
    let mut idle = connect(o.state.config.h2_listen).await;
    subscribe(&mut idle, &device_url).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let req = Request::post(format!("{device_url}/subscribe"))
        .body(())
        .unwrap();
    let gone = match idle.clone().ready().await {
        Err(_) => true,
        Ok(mut c) => match c.send_request(req, true) {
            Err(_) => true,
            Ok((resp, _)) => resp.await.is_err(),
        },
    };
    assert!(gone, "an idle connection is closed");
    // One whose monitoring request stays open is kept.
    let mut watched = connect(o.state.config.h2_listen).await;
    let (sub_url, _) = subscribe_urls(&mut watched, &device_url).await;
    let (monitor, _) = watched
        .send_request(Request::get(&sub_url).body(()).unwrap(), true)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    subscribe(&mut watched, &device_url).await;
    drop(monitor);
}

#[tokio::test]
async fn a_receipt_subscription_can_be_deleted() {
    let o = start_fresh("h2-receipt-delete").await;
    let device_url = o.state.config.device_url.clone();
    let mut ua = connect(o.state.config.h2_listen).await;
    let (sub_url, push_url) = subscribe_urls(&mut ua, &device_url).await;
    let mut app = connect(o.state.config.h2_listen).await;
    let req = Request::post(format!("{device_url}/receipts"))
        .body(())
        .unwrap();
    let (rparts, _) = send(&mut app, req, None).await;
    assert_eq!(rparts.status, 201);
    let receipt_sub = rparts.headers["location"].to_str().unwrap().to_owned();
    // A delivered message leaves a receipt stored for it.
    let r = request(
        "POST",
        &push_url,
        &[("ttl", "60"), ("push-receipt", &receipt_sub)],
        b"",
    )
    .await;
    assert_eq!(r.status, 201);
    let pushed = poll_stored(&mut ua, &sub_url).await;
    assert_eq!(pushed.len(), 1);
    let del = Request::delete(format!("{device_url}{}", pushed[0]))
        .body(())
        .unwrap();
    assert_eq!(send(&mut ua, del, None).await.0.status, 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metric(&o, "push_stored_messages").await, 1, "the receipt");
    // Deleted: it answers 404, holds nothing, and a push cannot name it.
    let del = Request::delete(&receipt_sub).body(()).unwrap();
    assert_eq!(send(&mut app, del, None).await.0.status, 204);
    let del = Request::delete(&receipt_sub).body(()).unwrap();
    assert_eq!(send(&mut app, del, None).await.0.status, 404);
    let get = Request::get(&receipt_sub)
        .header("prefer", "wait=0")
        .body(())
        .unwrap();
    assert_eq!(send(&mut app, get, None).await.0.status, 404);
    assert_eq!(metric(&o, "push_stored_messages").await, 0);
    let r = request(
        "POST",
        &push_url,
        &[("ttl", "60"), ("push-receipt", &receipt_sub)],
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn subscriptions_over_http2_are_rated_per_connection() {
    let o = start_with(&temp_dir("h2-sub-rates"), &[], |s| {
        s.subscriptions_per_connection_per_minute = 2;
    })
    .await;
    early_in_a_minute().await;
    let device_url = o.state.config.device_url.clone();
    let mut ua = connect(o.state.config.h2_listen).await;
    subscribe(&mut ua, &device_url).await;
    let receipts = Request::post(format!("{device_url}/receipts"))
        .body(())
        .unwrap();
    assert_eq!(send(&mut ua, receipts, None).await.0.status, 201);
    let req = Request::post(format!("{device_url}/subscribe"))
        .body(())
        .unwrap();
    let (refused, body) = send(&mut ua, req, None).await;
    assert_eq!(refused.status, 429);
    assert!(refused.headers.get("retry-after").is_some());
    let p: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(p["type"], "/problems/rate-limited", "{p}");
    // A new connection has a minute of its own.
    let mut other = connect(o.state.config.h2_listen).await;
    subscribe(&mut other, &device_url).await;
}

/// A response pushed to a monitoring request.
struct Pushed {
    /// The promised request's URI.
    uri: String,
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// Polls a subscription (or a receipt subscription) once with `Prefer:
/// wait=0`: every response it pushes.
async fn poll_pushed(c: &mut SendRequest<Bytes>, url: &str) -> Vec<Pushed> {
    let req = Request::get(url)
        .header("prefer", "wait=0")
        .body(())
        .unwrap();
    let (mut fut, _) = c.send_request(req, true).unwrap();
    let mut pushes = fut.push_promises();
    fut.await.unwrap();
    let mut out = Vec::new();
    while let Ok(Some(Ok(p))) =
        tokio::time::timeout(Duration::from_millis(300), pushes.push_promise()).await
    {
        let (req, resp) = p.into_parts();
        let resp = resp.await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let mut body = resp.into_body();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            data.extend_from_slice(&chunk.unwrap());
        }
        out.push(Pushed {
            uri: req.uri().to_string(),
            status,
            content_type,
            body: data,
        });
    }
    out
}

/// Polls a subscription (or a receipt subscription) once: each pushed
/// response's status and its promised path (for a receipt: the message it
/// is about).
async fn poll_receipts(c: &mut SendRequest<Bytes>, rs_url: &str) -> Vec<(u16, String)> {
    poll_pushed(c, rs_url)
        .await
        .into_iter()
        .map(|p| {
            let path = p.uri.parse::<http::Uri>().unwrap().path().to_owned();
            (p.status, path)
        })
        .collect()
}

/// A message removed undelivered (evicted by newer ones, or with its
/// subscription) is counted and its sender's receipt says 410; a monitoring
/// request on a deleted subscription ends with 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_dropped_undelivered_get_410_receipts() {
    let o = start_in(
        &temp_dir("h2-dropped-receipts"),
        &["max_stored_per_subscription=2"],
    )
    .await;
    let device_url = o.state.config.device_url.clone();
    let mut ua = connect(o.state.config.h2_listen).await;
    let (sub_url, push_url) = subscribe_urls(&mut ua, &device_url).await;
    let mut app = connect(o.state.config.h2_listen).await;
    let req = Request::post(format!("{device_url}/receipts"))
        .body(())
        .unwrap();
    let (rparts, _) = send(&mut app, req, None).await;
    let rs = rparts.headers["location"].to_str().unwrap().to_owned();
    let mut sent = Vec::new();
    for _ in 0..3 {
        let r = request(
            "POST",
            &push_url,
            &[("ttl", "600"), ("push-receipt", &rs)],
            b"",
        )
        .await;
        assert_eq!(r.status, 201);
        let loc = r.header("location").unwrap().to_owned();
        sent.push(loc[loc.find("/m/").unwrap()..].to_owned());
    }
    // The oldest was evicted by the third.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metric(&o, "push_messages_dropped_total{reason=\"evicted\"}").await < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no eviction counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let receipts = poll_receipts(&mut app, &rs).await;
    assert_eq!(receipts, vec![(410, sent[0].clone())]);

    // A monitor on the subscription; then the subscription is deleted.
    let mut watcher = connect(o.state.config.h2_listen).await;
    let (mut watch, _) = watcher
        .send_request(Request::get(&sub_url).body(()).unwrap(), true)
        .unwrap();
    let mut watch_pushes = watch.push_promises();
    for _ in 0..2 {
        let p = tokio::time::timeout(Duration::from_secs(3), watch_pushes.push_promise())
            .await
            .expect("a stored message")
            .unwrap()
            .unwrap();
        let (_, resp) = p.into_parts();
        resp.await.unwrap();
    }
    let (dparts, _) = send(&mut ua, Request::delete(&sub_url).body(()).unwrap(), None).await;
    assert_eq!(dparts.status, 204);
    let ended = tokio::time::timeout(Duration::from_secs(3), watch)
        .await
        .expect("the monitor ends")
        .unwrap();
    assert_eq!(ended.status(), 404);
    // The two it still held (pushed, never acknowledged) go with it: 410.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metric(
        &o,
        "push_messages_dropped_total{reason=\"subscription_ended\"}",
    )
    .await
        < 2
    {
        assert!(tokio::time::Instant::now() < deadline, "no drop counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut receipts = poll_receipts(&mut app, &rs).await;
    receipts.sort();
    let mut want = vec![(410, sent[1].clone()), (410, sent[2].clone())];
    want.sort();
    assert_eq!(receipts, want);
    o.stop().await;
}

/// `Push-Receipt` on a list push: once its fan-out has finished, the
/// receipt subscription gets one receipt, pushed as the response to a GET
/// on the list message: its status document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_push_with_push_receipt_gets_its_status_once_the_fan_out_ends() {
    let o = start_fresh("h2-list-receipt").await;
    let device_url = o.state.config.device_url.clone();
    let mut app = connect(o.state.config.h2_listen).await;
    let req = Request::post(format!("{device_url}/receipts"))
        .body(())
        .unwrap();
    let (rparts, _) = send(&mut app, req, None).await;
    let rs = rparts.headers["location"].to_str().unwrap().to_owned();
    // Two members connected, one away.
    let mut here = Vec::new();
    let mut doc = serde_json::Map::new();
    for _ in 0..2 {
        let mut d = Device::connect(&o, None).await;
        let (_, push) = d.register(None).await;
        doc.insert(push, serde_json::json!({}));
        here.push(d);
    }
    let mut away = Device::connect(&o, None).await;
    let (_, push) = away.register(None).await;
    doc.insert(push, serde_json::json!({}));
    away.close().await;
    let r = request(
        "POST",
        &format!("{}/lists/0", o.state.config.public_url),
        &[("content-type", "application/push-aggregation+json")],
        serde_json::Value::Object(doc).to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201);
    let list = r.header("location").unwrap().to_owned();
    // A Push-Receipt naming no receipt subscription is refused.
    let r = request(
        "POST",
        &list,
        &[("ttl", "60"), ("push-receipt", "https://elsewhere/rs/x")],
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
    let r = request(
        "POST",
        &list,
        &[
            ("ttl", "60"),
            ("push-receipt", &rs),
            ("prefer", "respond-async"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 202, "respond-async with a receipt");
    let status_url = r.header("location").unwrap().to_owned();
    for d in &mut here {
        let n = d.recv_notification().await.expect("a copy");
        d.ack(&n).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let got = loop {
        let got = poll_pushed(&mut app, &rs).await;
        if !got.is_empty() || tokio::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.len(), 1, "one receipt");
    let r = &got[0];
    assert_eq!(r.uri, status_url, "promised: the list message");
    assert_eq!(
        (r.status, r.content_type.as_deref()),
        (200, Some("application/json"))
    );
    let s: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(s["members"], 3);
    assert_eq!(s["fanout_finished"], true);
    assert_eq!(s["failed"], 0);
    let answered = s["delivered"].as_u64().unwrap();
    assert_eq!(answered + s["stored"].as_u64().unwrap(), 3, "{s}");
    o.stop().await;
}
