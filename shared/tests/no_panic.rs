//! Property tests: no parser panics on arbitrary input, and none allocates
//! far beyond what its input implies (a counting allocator measures the
//! peak heap growth of each call on this thread).

use proptest::prelude::*;
use shared::headers::{AesgcmParams, ContentEncoding, Topic, Ttl, Urgency};
use shared::jwe::{CompactJwe, CompactTemplate, JsonJwe, JsonTemplate};
use shared::push::{validate_list_push, validate_push, PushHeaders};
use shared::vapid::Credentials;
use shared::{b64, ece, links, list, Limits};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|c| {
            let now = c.get() + l.size() as isize;
            c.set(now);
            let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        });
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let _ = LIVE.try_with(|c| c.set(c.get() - l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Runs `f` and asserts its peak heap growth stays within `budget` bytes.
fn bounded<T>(budget: usize, f: impl FnOnce() -> T) -> T {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let grew = PEAK.with(Cell::get) - base;
    assert!(
        grew <= budget as isize,
        "allocated {grew} bytes, budget {budget}"
    );
    out
}

/// What a parser may hold per input byte, plus a constant.
fn budget(input: usize) -> usize {
    64 * 1024 + 24 * input
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_=., ;-]{0,200}",
        "[a-z0-9-]{0,40}",
    ]
}

/// Near-valid compact JWEs: five base64url-ish parts, one of them mangled.
fn compact_jwe() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        Just(b64::encode(br#"{"alg":"A128KW","enc":"A128GCM"}"#)),
        Just(b64::encode(
            br#"{"alg":"ECDH-ES+A128KW","enc":"A256GCM","epk":{}}"#
        )),
        "[A-Za-z0-9_-]{0,60}",
    ];
    (
        header,
        "[A-Za-z0-9_-]{0,40}",
        "[A-Za-z0-9_-]{0,20}",
        "[A-Za-z0-9_-]{0,80}",
        "[A-Za-z0-9_-]{0,30}",
    )
        .prop_map(|(h, k, iv, c, t)| format!("{h}.{k}.{iv}.{c}.{t}"))
}

/// Near-valid JSON JWEs and list documents: JSON objects of plausible keys.
fn json_object() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[A-Za-z0-9_:./-]{0,40}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("alg".to_string()),
                    Just("enc".to_string()),
                    Just("expires".to_string()),
                    Just("encrypted_key".to_string()),
                    Just("header".to_string()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    let key = prop_oneof![
        Just("protected".to_string()),
        Just("recipients".to_string()),
        Just("iv".to_string()),
        Just("ciphertext".to_string()),
        Just("tag".to_string()),
        "https://[a-z]{1,8}/p/[a-z0-9]{0,12}",
        "[a-z:/]{0,20}",
    ];
    prop::collection::btree_map(key, value, 0..8)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()).to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn header_fields(v in text()) {
        bounded(budget(v.len()), || {
            let _ = Ttl::parse(Some(&v), 100);
            let _ = Urgency::parse(Some(&v));
            let _ = Topic::parse(Some(&v));
            let _ = ContentEncoding::parse(Some(&v));
            let _ = AesgcmParams::parse(Some(&v), Some(&v), 4096);
            let _ = links::parse(&v);
            let _ = b64::decode(&v);
            let _ = b64::is_canonical(&v);
        });
    }

    #[test]
    fn aes128gcm(body in prop::collection::vec(any::<u8>(), 0..400)) {
        bounded(budget(body.len()), || {
            let _ = ece::Aes128gcmHeader::parse(&body);
            let _ = ece::Aes128gcmHeader::parse_webpush(&body);
        });
    }

    #[test]
    fn jwe_compact(s in prop_oneof![compact_jwe(), any::<String>()]) {
        bounded(budget(s.len()), || {
            let _ = CompactJwe::parse(s.as_bytes(), false);
            let _ = CompactJwe::parse(s.as_bytes(), true);
            let _ = CompactTemplate::parse(s.as_bytes());
        });
    }

    #[test]
    fn jwe_json(s in prop_oneof![json_object(), any::<String>()]) {
        bounded(budget(s.len()), || {
            let _ = JsonJwe::parse(s.as_bytes(), false);
            let _ = JsonTemplate::parse(s.as_bytes());
        });
    }

    #[test]
    fn list_documents(s in prop_oneof![json_object(), any::<String>()]) {
        let l = Limits::default();
        bounded(budget(s.len()), || {
            let _ = list::parse_document(s.as_bytes(), 1_700_000_000, &l);
            let _ = list::parse_patch(s.as_bytes(), 1_700_000_000, &l);
        });
    }

    #[test]
    fn gzip_bodies(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let l = Limits { max_list_document_bytes: 4096, ..Limits::default() };
        let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        gz.extend_from_slice(&body);
        // The inflater's state and window are a fixed ~76 KiB; output stops at the limit.
        bounded(128 * 1024 + 2 * 4096 + 24 * gz.len(), || {
            let _ = list::decode_body(Some("gzip"), &gz, &l);
            let _ = list::decode_body(Some("gzip"), &body, &l);
        });
    }

    #[test]
    fn vapid(a in text(), k in text(), jwt in compact_jwe()) {
        let l = Limits::default();
        bounded(budget(a.len() + k.len() + jwt.len()), || {
            let _ = Credentials::parse(Some(&a), Some(&k), &l);
            let with_jwt = format!("vapid t={jwt}, k=BA1Hxzyi1RUM1b5wjxsn7nGxAszw2u61m164i3MrAIxHF6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs");
            if let Ok(Some(c)) = Credentials::parse(Some(&with_jwt), None, &l) {
                let _ = c.verify("https://push.example.net", 1_700_000_000, &l);
            }
        });
    }

    #[test]
    fn whole_push(ttl in text(), enc in text(), ct in text(), body in prop::collection::vec(any::<u8>(), 0..300)) {
        let l = Limits::default();
        let h = PushHeaders {
            ttl: Some(&ttl), content_encoding: Some(&enc), content_type: Some(&ct),
            ..Default::default()
        };
        bounded(budget(body.len() + ttl.len() + enc.len() + ct.len()), || {
            let _ = validate_push(&h, &body, &l);
            let _ = validate_list_push(&h, &body, &l);
        });
    }
}

/// A very large declared size in a header cannot make the parser allocate it.
#[test]
fn declared_sizes_are_not_trusted() {
    let mut body = vec![0u8; 16];
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    body.push(255);
    bounded(1024, || {
        assert!(ece::Aes128gcmHeader::parse(&body).is_err());
    });
    let l = Limits::default();
    let huge_array = format!("{{\"https://a/p\": {{\"header\": {}}}}}", "[".repeat(200));
    bounded(budget(huge_array.len()), || {
        assert!(list::parse_document(huge_array.as_bytes(), 0, &l).is_err());
    });
}
