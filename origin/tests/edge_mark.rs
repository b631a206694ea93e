//! "Behind edge" mode: unmarked or forged application requests are refused;
//! a valid mark is accepted and vouches for the VAPID key the edge checked.

mod common;
use common::*;
use shared::mark;

const SECRET: &str = "test-edge-secret";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn marks_are_required_and_verified() {
    let o = start_with(&temp_dir("edge"), &[], |s| {
        s.edge_secret = Some(SECRET.into());
        s.behind_edge = true;
    })
    .await;
    let vapid = Vapid::new(21);
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(Some(&vapid.public())).await;
    let path = http::Uri::try_from(endpoint.as_str())
        .unwrap()
        .path()
        .to_owned();
    let auth = vapid.header(&o.state.config.public_url);

    // No mark: refused, whatever else is right.
    let r = request(
        "POST",
        &endpoint,
        &[("ttl", "60"), ("authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["type"], "/problems/edge-mark");
    // A mark under another secret, or for another path: refused.
    let forged = mark::sign(b"wrong", "POST", &path, now(), Some(&vapid.public()), b"");
    let r = request(
        "POST",
        &endpoint,
        &[
            ("ttl", "60"),
            ("authorization", &auth),
            (mark::HEADER, &forged),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    let elsewhere = mark::sign(
        SECRET.as_bytes(),
        "POST",
        "/p/other",
        now(),
        Some(&vapid.public()),
        b"",
    );
    let r = request(
        "POST",
        &endpoint,
        &[
            ("ttl", "60"),
            ("authorization", &auth),
            (mark::HEADER, &elsewhere),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(metric(&o, "push_edge_refused_total").await, 3);

    // A valid mark: accepted. It vouches for the key, so a token the origin
    // would otherwise verify itself is taken as the edge checked it.
    let good = mark::sign(
        SECRET.as_bytes(),
        "POST",
        &path,
        now(),
        Some(&vapid.public()),
        b"",
    );
    let r = request(
        "POST",
        &endpoint,
        &[
            ("ttl", "60"),
            ("authorization", &auth),
            (mark::HEADER, &good),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert!(d.recv().await.is_some());
    // A mark vouching for no key does not excuse a bad signature.
    let broken = auth.replace("vapid t=", "vapid t=x");
    let unvouched = mark::sign(SECRET.as_bytes(), "POST", &path, now(), None, b"");
    let r = request(
        "POST",
        &endpoint,
        &[
            ("ttl", "60"),
            ("authorization", &broken),
            (mark::HEADER, &unvouched),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    // Health stays open.
    let r = request(
        "GET",
        &format!("{}/health", o.state.config.public_url),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
}
