//! Every rule of docs/protocol.md §3, broken one at a time: the status, the
//! problem+json body (with autopush's errno where one exists), and proof
//! that nothing was stored or delivered.

mod common;
use common::*;
use std::time::Duration;

#[tokio::test]
async fn each_rule_refused_with_problem_json_and_nothing_stored() {
    let o = start_in(&temp_dir("bad"), &["max_message_bytes=4096"]).await;
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    let aud = o.state.config.public_url.clone();
    let vapid = Vapid::new(5);
    let good = aes128gcm_body(300);
    let mut short_keyid = good.clone();
    short_keyid[20] = 10;
    let mut two_records = aes128gcm_body(300);
    two_records[16..20].copy_from_slice(&100u32.to_be_bytes());
    let expired_auth = {
        // A valid signature over claims that expired long ago.
        let h = vapid.header(&aud);
        h.replace("vapid t=", "vapid t=x")
    };
    let unknown = format!("{}/p/AAAAAAAAAAAAAAAAAAAAAA", aud);

    /// One broken rule: the request, and the answer it must get.
    struct Case<'a> {
        name: &'a str,
        url: &'a str,
        headers: Vec<(&'a str, String)>,
        body: Vec<u8>,
        status: u16,
        /// autopush's errno, where one exists.
        errno: Option<u64>,
    }
    let cases = vec![
        Case {
            name: "missing TTL",
            url: &endpoint,
            headers: vec![],
            body: vec![],
            status: 400,
            errno: Some(111),
        },
        Case {
            name: "TTL not a number",
            url: &endpoint,
            headers: vec![("ttl", "soon".into())],
            body: vec![],
            status: 400,
            errno: Some(112),
        },
        Case {
            name: "negative TTL",
            url: &endpoint,
            headers: vec![("ttl", "-5".into())],
            body: vec![],
            status: 400,
            errno: Some(112),
        },
        Case {
            name: "bad Urgency",
            url: &endpoint,
            headers: vec![("ttl", "60".into()), ("urgency", "asap".into())],
            body: vec![],
            status: 400,
            errno: None,
        },
        Case {
            name: "Topic too long",
            url: &endpoint,
            headers: vec![("ttl", "60".into()), ("topic", "a".repeat(33))],
            body: vec![],
            status: 400,
            errno: Some(113),
        },
        Case {
            name: "Topic outside base64url",
            url: &endpoint,
            headers: vec![("ttl", "60".into()), ("topic", "a b".into())],
            body: vec![],
            status: 400,
            errno: Some(113),
        },
        Case {
            name: "body without content coding",
            url: &endpoint,
            headers: vec![("ttl", "60".into())],
            body: b"plain text".to_vec(),
            status: 400,
            errno: Some(110),
        },
        Case {
            name: "unknown content coding",
            url: &endpoint,
            headers: vec![("ttl", "60".into()), ("content-encoding", "gzip".into())],
            body: good.clone(),
            status: 415,
            errno: Some(110),
        },
        Case {
            name: "aes128gcm key id not 65 bytes",
            url: &endpoint,
            headers: vec![
                ("ttl", "60".into()),
                ("content-encoding", "aes128gcm".into()),
            ],
            body: short_keyid,
            status: 400,
            errno: Some(110),
        },
        Case {
            name: "aes128gcm over one record",
            url: &endpoint,
            headers: vec![
                ("ttl", "60".into()),
                ("content-encoding", "aes128gcm".into()),
            ],
            body: two_records,
            status: 400,
            errno: Some(110),
        },
        Case {
            name: "aes128gcm truncated header",
            url: &endpoint,
            headers: vec![
                ("ttl", "60".into()),
                ("content-encoding", "aes128gcm".into()),
            ],
            body: vec![1; 30],
            status: 400,
            errno: Some(110),
        },
        Case {
            name: "aesgcm without salt",
            url: &endpoint,
            headers: vec![("ttl", "60".into()), ("content-encoding", "aesgcm".into())],
            body: vec![1; 30],
            status: 400,
            errno: Some(101),
        },
        Case {
            name: "JWE with 3 parts",
            url: &endpoint,
            headers: vec![
                ("ttl", "60".into()),
                ("content-type", "application/jose".into()),
            ],
            body: b"a.b.c".to_vec(),
            status: 400,
            errno: Some(110),
        },
        Case {
            name: "body over the limit",
            url: &endpoint,
            headers: vec![
                ("ttl", "60".into()),
                ("content-encoding", "aes128gcm".into()),
            ],
            body: aes128gcm_body(5000),
            status: 413,
            errno: Some(104),
        },
        Case {
            name: "unknown Authorization scheme",
            url: &endpoint,
            headers: vec![("ttl", "60".into()), ("authorization", "Basic abc".into())],
            body: vec![],
            status: 401,
            errno: Some(109),
        },
        Case {
            name: "VAPID signature broken",
            url: &endpoint,
            headers: vec![("ttl", "60".into()), ("authorization", expired_auth)],
            body: vec![],
            status: 401,
            errno: Some(109),
        },
        Case {
            name: "VAPID for another audience",
            url: &endpoint,
            headers: vec![
                ("ttl", "60".into()),
                ("authorization", vapid.header("https://other.example")),
            ],
            body: vec![],
            status: 401,
            errno: Some(109),
        },
        Case {
            name: "unknown push resource",
            url: &unknown,
            headers: vec![("ttl", "60".into())],
            body: vec![],
            status: 404,
            errno: Some(102),
        },
        Case {
            name: "Push-Receipt of no receipt subscription",
            url: &endpoint,
            headers: vec![
                ("ttl", "60".into()),
                ("push-receipt", format!("{aud}/rs/nope")),
            ],
            body: vec![],
            status: 400,
            errno: None,
        },
    ];
    for Case {
        name: what,
        url,
        headers,
        body,
        status,
        errno,
    } in cases
    {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = request("POST", url, &hs, &body).await;
        assert_eq!(r.status, status, "{what}: {:?}", r.json());
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{what}"
        );
        let p = r.json();
        assert_eq!(p["status"], status, "{what}");
        assert!(
            p["type"].as_str().unwrap().starts_with("/problems/"),
            "{what}"
        );
        assert!(!p["title"].as_str().unwrap().is_empty(), "{what}");
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{what}");
        assert_eq!(p["errno"].as_u64(), errno, "{what}: {p}");
    }
    // Nothing stored, nothing delivered, and the service still serves.
    assert_eq!(metric(&o, "push_stored_messages").await, 0);
    d.expect_nothing().await;
    let ok = request("POST", &endpoint, &[("ttl", "60")], b"").await;
    assert_eq!(ok.status, 201);
    assert!(d.recv().await.is_some());
    // Unknown routes and methods are problems too.
    let r = request("GET", &format!("{aud}/nothing"), &[], b"").await;
    assert_eq!(
        (r.status, r.header("content-type")),
        (404, Some("application/problem+json"))
    );
    let r = request("GET", &endpoint, &[], b"").await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let o = start_in(&temp_dir("rate"), &["subscription_messages_per_minute=3"]).await;
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    early_in_a_minute().await;
    for _ in 0..3 {
        assert_eq!(
            request("POST", &endpoint, &[("ttl", "60")], b"")
                .await
                .status,
            201
        );
    }
    let r = request("POST", &endpoint, &[("ttl", "60")], b"").await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(r.json()["status"], 429);
    for _ in 0..3 {
        assert!(d.recv().await.is_some());
    }
    assert!(d.recv_within(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn ttl_is_lowered_to_the_maximum() {
    let o = start_in(&temp_dir("ttl"), &["max_ttl_secs=100"]).await;
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    let r = request("POST", &endpoint, &[("ttl", "999999")], b"").await;
    assert_eq!((r.status, r.header("ttl")), (201, Some("100")));
}

/// Connects to the application API, sends `bytes`, and returns how long
/// the service took to close the connection (at most 5 s).
async fn closed_after(o: &origin::server::Running, bytes: &[u8]) -> Duration {
    closed_after_at(o.state.config.app_listen, bytes).await
}

/// Like [`closed_after`], on the listener at `addr`.
async fn closed_after_at(addr: std::net::SocketAddr, bytes: &[u8]) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(bytes).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was still open after 5 s");
    started.elapsed()
}

#[tokio::test]
async fn clients_too_slow_to_send_their_headers_are_let_go() {
    let o = start_with(&temp_dir("slow-headers"), &[], |s| {
        s.header_read_timeout_secs = 1;
    })
    .await;
    // Part of a request's headers, then nothing.
    let partial = closed_after(&o, b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
    assert!(partial >= Duration::from_millis(900));
    // Nothing at all.
    let silent = closed_after(&o, b"").await;
    assert!(silent >= Duration::from_millis(900));
    // The start of an HTTP/2 preface, then nothing (HTTP/1.1 only: no h2c
    // sniffing that waits for the rest).
    let preface = closed_after(&o, b"PRI * HT").await;
    assert!(preface >= Duration::from_millis(900));
    // A whole request on a new connection is served as ever.
    let r = request(
        "GET",
        &format!("{}/health", o.state.config.public_url),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
}

/// Sends `bytes` to the application API on a new connection; returns the
/// first answer read (within 5 s).
async fn app_answer(o: &origin::server::Running, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(o.state.config.app_listen)
        .await
        .unwrap();
    c.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("answered within 5 s")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Sends `bytes` to the WebSocket listener; returns the answer's status line.
async fn ws_answer(o: &origin::server::Running, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(o.state.config.ws_listen)
        .await
        .unwrap();
    c.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was still open after 5 s");
    let text = String::from_utf8_lossy(&buf);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn bad_websocket_upgrades_are_answered() {
    let o = start_with(&temp_dir("ws-handshake"), &[], |s| {
        s.ws_max_handshake_bytes = 1024;
        s.ws_max_handshake_headers = 10;
    })
    .await;
    let upgrade = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let many: String = (0..12).map(|i| format!("X-{i}: y\r\n")).collect();
    let status = ws_answer(&o, format!("{upgrade}{many}\r\n").as_bytes()).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    let long = format!("{upgrade}X-Long: {}\r\n\r\n", "y".repeat(2000));
    let status = ws_answer(&o, long.as_bytes()).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    let status = ws_answer(&o, b"\x01\x02 not http\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    let status = ws_answer(&o, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    // A proper device still connects.
    let d = Device::connect(&o, None).await;
    assert_eq!(d.uaid.len(), 32);
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408() {
    let o = start_with(&temp_dir("slow-body"), &[], |s| {
        s.body_read_timeout_secs = 1;
    })
    .await;
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    let path = endpoint.split_once("/p/").unwrap().1;
    // 20 bytes of the 200 announced, then nothing.
    let mut request = format!(
        "POST /p/{path} HTTP/1.1\r\nHost: x\r\nTTL: 60\r\nContent-Encoding: aes128gcm\r\nContent-Length: 200\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(&[7u8; 20]);
    let started = std::time::Instant::now();
    let text = app_answer(&o, &request).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body-timeout"), "{text}");
    // Nothing was delivered.
    assert!(d.recv_within(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn repeated_and_non_ascii_fields_are_read_as_the_edge_reads_them() {
    let (o, mut d, endpoint) = one_device("header-fields").await;
    let path = endpoint.split_once("/p/").unwrap().1.to_owned();
    let send = |head: Vec<u8>| {
        let o = &o;
        async move { app_answer(o, &head).await }
    };
    // TTL given twice counts as "60, 60": not a number of seconds.
    let twice = format!(
        "POST /p/{path} HTTP/1.1\r\nHost: x\r\nTTL: 60\r\nTTL: 60\r\nContent-Length: 0\r\n\r\n"
    );
    let answer = send(twice.into_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("invalid-ttl"), "{answer}");
    // A Topic that is not ASCII is refused, not dropped.
    let mut topic =
        format!("POST /p/{path} HTTP/1.1\r\nHost: x\r\nTTL: 60\r\nTopic: t").into_bytes();
    topic.extend_from_slice("é".as_bytes());
    topic.extend_from_slice(b"st\r\nContent-Length: 0\r\n\r\n");
    let answer = send(topic).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("header-not-text"), "{answer}");
    d.expect_nothing().await;
    // One proper field of each is as before.
    let once =
        format!("POST /p/{path} HTTP/1.1\r\nHost: x\r\nTTL: 60\r\nContent-Length: 0\r\n\r\n");
    assert!(send(once.into_bytes()).await.starts_with("HTTP/1.1 201"));
    assert!(d.recv().await.is_some());
}

#[tokio::test]
async fn an_http2_device_that_never_finishes_its_preface_is_let_go() {
    let o = start_with(&temp_dir("h2-silent"), &[], |s| s.hello_timeout_secs = 1).await;
    let h2 = o.state.config.h2_listen;
    let silent = closed_after_at(h2, b"").await;
    assert!(silent >= Duration::from_millis(900), "{silent:?}");
    let partial = closed_after_at(h2, b"PRI * HTTP/2.0\r\n").await;
    assert!(partial >= Duration::from_millis(900), "{partial:?}");
}

#[tokio::test]
async fn devices_beyond_the_cap_are_turned_away_and_the_api_serves_on() {
    let o = start_with(&temp_dir("device-cap"), &[], |s| {
        s.max_device_connections = 2
    })
    .await;
    let a = Device::connect(&o, None).await;
    let _b = Device::connect(&o, None).await;
    // The third is closed as soon as it is accepted.
    let url = format!("ws://{}/", o.state.config.ws_listen);
    assert!(tokio_tungstenite::connect_async(&url).await.is_err());
    assert_eq!(metric(&o, "push_device_connections_refused_total").await, 1);
    let r = request(
        "GET",
        &format!("{}/health", o.state.config.public_url),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    // A place given back is taken again.
    a.close().await;
    let mut c = None;
    for _ in 0..50 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await {
            c = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(c.is_some(), "a closed device's place is free again");
}

#[tokio::test]
async fn slow_uploads_take_at_most_the_configured_body_reads() {
    use tokio::io::AsyncWriteExt;
    let o = start_with(&temp_dir("body-reads"), &[], |s| {
        s.max_body_reads = 1;
        s.body_read_timeout_secs = 1;
    })
    .await;
    let mut d = Device::connect(&o, None).await;
    let (_, endpoint) = d.register(None).await;
    let path = endpoint
        .strip_prefix(&o.state.config.public_url)
        .expect("an endpoint of the service");
    // Pushes whose bodies trickle: the first holds the one body read until
    // its timeout, the second takes it then.
    let slow = || async {
        let mut c = tokio::net::TcpStream::connect(o.state.config.app_listen)
            .await
            .unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nTTL: 60\r\nContent-Encoding: aes128gcm\r\nContent-Length: 200\r\n\r\n"
        );
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(&[0x42; 10]).await.unwrap();
        c
    };
    let first = slow().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = slow().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A third waits the body timeout for one, and is told to come back.
    let started = std::time::Instant::now();
    let r = request("POST", &endpoint, &[("ttl", "60")], b"").await;
    assert_eq!(r.status, 503, "{:?}", r.json());
    assert_eq!(r.json()["type"], "/problems/too-many-bodies");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Once the slow ones are gone, pushes go through.
    drop((first, second));
    let r = request("POST", &endpoint, &[("ttl", "60")], b"").await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert!(d.recv_notification().await.is_some());
}
