//! Subscriptions that end, over real sockets: an ended push resource
//! answers 410 (and a list naming it reports it "gone"); user agents away
//! past the idle expiry, and receipt subscriptions nobody polls, are ended
//! by the sweeper, while connected ones are kept.

mod common;
use common::*;
use origin::store::{day_of, Op, UaKind, UserAgent};
use origin::tokens::{from_uuid, Token};
use serde_json::json;
use std::time::Duration;

const AGG: &str = "application/push-aggregation+json";
const PATCH: &str = "application/merge-patch+json";

fn service_url(o: &origin::server::Running) -> String {
    format!("{}/lists/0", o.state.config.public_url)
}

#[tokio::test]
async fn an_ended_subscription_answers_410_and_is_gone_from_lists() {
    let o = start_fresh("ended-410").await;
    let mut d = Device::connect(&o, None).await;
    let (channel, ended) = d.register(None).await;
    let (_, live) = d.register(None).await;
    assert_eq!(d.unregister(&channel).await, 200);

    let r = request("POST", &ended, &[("ttl", "60")], b"").await;
    assert_eq!(r.status, 410, "{:?}", r.json());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["type"], "/problems/subscription-gone");
    assert_eq!(r.json()["errno"], 103);
    // A push resource that never was is still 404.
    let never = format!(
        "{}AAAAAAAAAAAAAAAAAAAAAA",
        &ended[..ended.rfind('/').unwrap() + 1]
    );
    assert_eq!(
        request("POST", &never, &[("ttl", "60")], b"").await.status,
        404
    );

    // A list naming it reports it gone, on creation and on amendment.
    let r = request(
        "POST",
        &service_url(&o),
        &[("content-type", AGG)],
        json!({ ended.clone(): {}, live.clone(): {} })
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 422, "{:?}", r.json());
    assert_eq!(r.json()["members"][0]["uri"], ended.as_str());
    assert_eq!(r.json()["members"][0]["reason"], "gone");
    let r = request(
        "POST",
        &service_url(&o),
        &[("content-type", AGG)],
        json!({ live.clone(): {} }).to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();
    let r = request(
        "PATCH",
        &list,
        &[("content-type", PATCH)],
        json!({ ended.clone(): {} }).to_string().as_bytes(),
    )
    .await;
    let rejected = &r.json()["rejected"];
    assert_eq!(rejected[0]["reason"], "gone", "{:?}", r.json());
    o.stop().await;
}

/// Makes the store say `uaid` was last seen `days` ago.
fn backdate(o: &origin::server::Running, uaid: Token, days: u64) {
    let ua = o.state.store.user_agent(&uaid).unwrap().unwrap();
    let seen = day_of(origin::clock::now()) - days * 86_400;
    o.state
        .store
        .apply(&[&Op::ReplaceUa(UserAgent { seen, ..ua })])
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_agents_away_past_the_idle_expiry_end_and_connected_ones_stay() {
    let o = start_with(&temp_dir("idle-expiry"), &[], |s| {
        s.sweep_secs = 1;
        s.idle_expiry_days = 60;
        s.receipt_idle_expiry_days = 30;
    })
    .await;
    // Away for 61 days, with a subscription in a list.
    let mut away = Device::connect(&o, None).await;
    let (_, away_push) = away.register(None).await;
    let away_uaid = from_uuid(&away.uaid).unwrap();
    let away_uuid = away.uaid.clone();
    let r = request(
        "POST",
        &service_url(&o),
        &[("content-type", AGG)],
        json!({ away_push.clone(): {} }).to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let list = r.header("location").unwrap().to_owned();
    // A message waits for it (it goes with it).
    away.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        request("POST", &away_push, &[("ttl", "600")], b"")
            .await
            .status,
        201
    );
    // Connected all along, last hello 61 days ago.
    let mut here = Device::connect(&o, None).await;
    let (_, here_push) = here.register(None).await;
    let here_uaid = from_uuid(&here.uaid).unwrap();
    // Away for 59 days: not yet.
    let mut recent = Device::connect(&o, None).await;
    let (_, recent_push) = recent.register(None).await;
    let recent_uaid = from_uuid(&recent.uaid).unwrap();
    recent.close().await;
    // A receipt subscription unpolled for 31 days.
    let mut app = h2_connect(o.state.config.h2_listen).await;
    let req = http::Request::post(format!("{}/receipts", o.state.config.device_url))
        .body(())
        .unwrap();
    let (resp, _) = app.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 201);
    let receipt_sub = resp.headers()["location"].to_str().unwrap().to_owned();
    let rs: Token = o.state.store.idle_user_agents(true, u64::MAX, 10).unwrap()[0].1;
    assert_eq!(
        o.state.store.user_agent(&rs).unwrap().unwrap().kind,
        UaKind::Receipts
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    backdate(&o, away_uaid, 61);
    backdate(&o, here_uaid, 61);
    backdate(&o, recent_uaid, 59);
    backdate(&o, rs, 31);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&o, "push_idle_expired_total").await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no idle sweep");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&o, "push_idle_expired_total{kind=\"user_agent\"}").await,
        1
    );
    assert_eq!(
        metric(&o, "push_idle_expired_total{kind=\"receipt_subscription\"}").await,
        1
    );
    // The one away has ended: 410, out of its list, its message gone.
    let r = request("POST", &away_push, &[("ttl", "60")], b"").await;
    assert_eq!(r.status, 410, "{:?}", r.json());
    assert!(o.state.store.user_agent(&away_uaid).unwrap().is_none());
    let r = request("GET", &list, &[], b"").await;
    assert_eq!(r.header("member-count"), Some("0"), "{:?}", r.json());
    assert_eq!(metric(&o, "push_stored_messages").await, 0);
    // A hello with its old uaid gets a new one.
    let back = Device::connect(&o, Some(&away_uuid)).await;
    assert_ne!(back.uaid, away_uuid);
    // The connected one was marked seen today instead; the recent one waits.
    let ua = o.state.store.user_agent(&here_uaid).unwrap().unwrap();
    assert_eq!(ua.seen, day_of(origin::clock::now()));
    assert_eq!(
        request("POST", &here_push, &[("ttl", "60")], b"")
            .await
            .status,
        201
    );
    assert!(here.recv_notification().await.is_some());
    assert_eq!(
        request("POST", &recent_push, &[("ttl", "60")], b"")
            .await
            .status,
        201
    );
    // The receipt subscription has ended: a push cannot name it.
    let r = request(
        "POST",
        &here_push,
        &[("ttl", "60"), ("push-receipt", &receipt_sub)],
        b"",
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.json());
    o.stop().await;
}
