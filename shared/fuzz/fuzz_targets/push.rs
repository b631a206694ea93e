//! A whole push request, single and list, with fuzzed headers and body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::push::{validate_list_push, validate_push, PushHeaders};
use shared::Limits;

fuzz_target!(|input: (&str, &str, &str, &str, &[u8])| {
    let (ttl, topic, encoding, content_type, body) = input;
    let h = PushHeaders {
        ttl: Some(ttl),
        topic: Some(topic),
        content_encoding: (!encoding.is_empty()).then_some(encoding),
        content_type: Some(content_type),
        ..Default::default()
    };
    let l = Limits::default();
    let _ = validate_push(&h, body, &l);
    let _ = validate_list_push(&h, body, &l);
});
