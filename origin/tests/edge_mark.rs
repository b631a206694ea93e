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
    // A push with `authorization`, and `mark` when given.
    let push = |authorization: String, mark: Option<String>| {
        let endpoint = endpoint.clone();
        async move {
            let mut hs = vec![("ttl", "60".to_owned()), ("authorization", authorization)];
            hs.extend(mark.map(|m| (mark::HEADER, m)));
            let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            request("POST", &endpoint, &hs, b"").await
        }
    };
    // Over the fields sent: TTL and `authorization`.
    let signed = |secret: &[u8], path: &str, key: Option<&str>, authorization: &str| {
        let fields = mark::fields(|n| match n {
            "ttl" => Some("60"),
            "authorization" => Some(authorization),
            _ => None,
        });
        Some(mark::sign(secret, "POST", path, now(), key, &fields, b""))
    };
    let key = vapid.public();

    // No mark: refused, whatever else is right.
    let r = push(auth.clone(), None).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["type"], "/problems/edge-mark");
    // A mark under another secret, or for another path: refused.
    let forged = signed(b"wrong", &path, Some(&key), &auth);
    assert_eq!(push(auth.clone(), forged).await.status, 403);
    let elsewhere = signed(SECRET.as_bytes(), "/p/other", Some(&key), &auth);
    assert_eq!(push(auth.clone(), elsewhere).await.status, 403);
    assert_eq!(metric(&o, "push_edge_refused_total").await, 3);

    // A valid mark: accepted. It vouches for the key, so a token the origin
    // would otherwise verify itself is taken as the edge checked it.
    // Made over other fields than those sent: refused.
    let other_fields = signed(SECRET.as_bytes(), &path, Some(&key), "vapid t=x, k=y");
    assert_eq!(push(auth.clone(), other_fields).await.status, 403);
    let good = signed(SECRET.as_bytes(), &path, Some(&key), &auth);
    let r = push(auth.clone(), good).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert!(d.recv().await.is_some());
    // A mark vouching for no key does not excuse a bad signature.
    let broken = auth.replace("vapid t=", "vapid t=x");
    let unvouched = signed(SECRET.as_bytes(), &path, None, &broken);
    assert_eq!(push(broken, unvouched).await.status, 401);
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

#[tokio::test]
async fn a_request_without_a_valid_mark_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = start_with(&temp_dir("edge-unread"), &[], |s| {
        s.edge_secret = Some(SECRET.into());
        s.behind_edge = true;
        s.body_read_timeout_secs = 5;
    })
    .await;
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    let path = http::Uri::try_from(endpoint.as_str())
        .unwrap()
        .path()
        .to_owned();
    // No mark, then a mark under another secret: a body announced and
    // never sent is not waited for.
    let fields = mark::fields(|n| match n {
        "ttl" => Some("60"),
        "content-encoding" => Some("aes128gcm"),
        _ => None,
    });
    let forged = mark::sign(b"wrong", "POST", &path, now(), None, &fields, b"");
    for extra in [String::new(), format!("{}: {forged}\r\n", mark::HEADER)] {
        let mut s = tokio::net::TcpStream::connect(o.state.config.app_listen)
            .await
            .unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nttl: 60\r\ncontent-encoding: aes128gcm\r\ncontent-length: 1000\r\n{extra}\r\nsome"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut answer = [0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut answer))
            .await
            .expect("answered before the body timeout")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }
    // A valid mark made for another body: refused once the body is read.
    let other = mark::sign(SECRET.as_bytes(), "POST", &path, now(), None, &fields, b"");
    let r = request(
        "POST",
        &endpoint,
        &[
            ("ttl", "60"),
            ("content-encoding", "aes128gcm"),
            (mark::HEADER, &other),
        ],
        &aes128gcm_body(200),
    )
    .await;
    assert_eq!(r.status, 403);
    d.expect_nothing().await;
}
