//! Cross-checks with independent implementations, run by Node 20 from
//! `tests/node/interop.mjs`: RFC 8291 messages both ways (node:crypto
//! decrypts ours; npm `web-push` encrypts, we decrypt) and list JWEs both
//! ways with npm `jose` (it decrypts ours for one member; we decrypt its
//! general, flattened and compact output).

use pushclient::{ece, jwe, keys};
use serde_json::{json, Value};
use shared::b64;
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs the interop script with one JSON input; returns its JSON output.
fn node(cmd: &str, input: Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/interop.mjs");
    let mut child = Command::new("node")
        .arg(script)
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (20+) on PATH, with the npm packages installed (scripts/setup.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "node {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

struct Member {
    secret: p256::SecretKey,
    public: String,
}

fn member() -> Member {
    let secret = keys::generate();
    let public = keys::public_b64(&secret.public_key());
    Member { secret, public }
}

const TEXT: &str = "Grüße aus Rust — to the whole group";

#[test]
fn our_aes128gcm_decrypts_with_node_crypto() {
    let ua = member();
    let auth = keys::random::<16>();
    let body = ece::encrypt(TEXT.as_bytes(), &ua.secret.public_key(), &auth).unwrap();
    let r = node(
        "ece-decrypt",
        json!({"body": b64::encode(&body), "private_key": keys::private_b64(&ua.secret), "auth": b64::encode(&auth)}),
    );
    assert_eq!(r["text"], TEXT);
}

#[test]
fn web_push_aes128gcm_decrypts_with_ours() {
    let ua = member();
    let auth = keys::random::<16>();
    let r = node(
        "webpush-encrypt",
        json!({"p256dh": ua.public, "auth": b64::encode(&auth), "text": TEXT}),
    );
    let body = b64::decode(r["body"].as_str().unwrap()).unwrap();
    shared::ece::Aes128gcmHeader::parse_webpush(&body).unwrap();
    assert_eq!(
        ece::decrypt(&body, &ua.secret, &auth).unwrap(),
        TEXT.as_bytes()
    );
}

#[test]
fn our_group_jwe_decrypts_with_jose() {
    let members: Vec<Member> = (0..3).map(|_| member()).collect();
    let key = jwe::GroupKey::generate();
    let shared_part = jwe::encrypt(&key, TEXT.as_bytes());
    let wrapped: Vec<jwe::WrappedKey> = members
        .iter()
        .map(|m| jwe::wrap(&key, &m.secret.public_key()))
        .collect();
    // Every recipient at once (general serialization): jose finds member 2's.
    let all = jwe::with_recipients(&shared_part, &wrapped);
    let m = &members[2];
    let r = node(
        "jose-decrypt",
        json!({"jwe": all, "public_key": m.public, "private_key": keys::private_b64(&m.secret)}),
    );
    assert_eq!(r["text"], TEXT);
    // A member's copy as the service writes it (shared::jwe::JsonTemplate).
    let template = shared::jwe::JsonTemplate::parse(shared_part.to_string().as_bytes()).unwrap();
    for (m, w) in members.iter().zip(&wrapped) {
        let mut copy = Vec::new();
        let header = shared::jwe::member_header(&w.header, 2048).unwrap();
        template.write_member(Some(&w.encrypted_key), Some(&header), &mut copy);
        let copy: Value = serde_json::from_slice(&copy).unwrap();
        let r = node(
            "jose-decrypt",
            json!({"jwe": copy, "public_key": m.public, "private_key": keys::private_b64(&m.secret)}),
        );
        assert_eq!(r["text"], TEXT);
    }
}

#[test]
fn jose_jwes_decrypt_with_ours() {
    let members: Vec<Member> = (0..2).map(|_| member()).collect();
    let publics: Vec<&str> = members.iter().map(|m| m.public.as_str()).collect();
    let r = node(
        "jose-encrypt",
        json!({"recipients": publics, "text": TEXT, "form": "general"}),
    );
    let general = r["jwe"].to_string();
    for m in &members {
        assert_eq!(
            jwe::decrypt(general.as_bytes(), &m.secret).unwrap(),
            TEXT.as_bytes()
        );
    }
    assert_eq!(
        jwe::decrypt(general.as_bytes(), &keys::generate()),
        Err(jwe::JweError::NoRecipient)
    );
    // jose's output is also an acceptable list push (recipients replaced per member).
    shared::jwe::JsonTemplate::parse(general.as_bytes()).unwrap();

    let m = &members[0];
    for form in ["flattened", "compact"] {
        let r = node(
            "jose-encrypt",
            json!({"recipients": [m.public], "text": TEXT, "form": form}),
        );
        let body = match &r["jwe"] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        assert_eq!(
            jwe::decrypt(body.as_bytes(), &m.secret).unwrap(),
            TEXT.as_bytes(),
            "{form}"
        );
    }
}
