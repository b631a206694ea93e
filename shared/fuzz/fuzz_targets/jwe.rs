//! JWE framing, both serializations, and the per-member templates.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::jwe::{CompactJwe, CompactTemplate, JsonJwe, JsonTemplate};

fuzz_target!(|data: &[u8]| {
    let _ = CompactJwe::parse(data, false);
    let _ = JsonJwe::parse(data, false);
    if let Ok(t) = CompactTemplate::parse(data) {
        // A member's copy of a valid template is a valid compact JWE.
        let mut out = Vec::new();
        t.write_member("", &mut out);
        assert!(CompactJwe::parse(&out, true).is_ok());
    }
    if let Ok(t) = JsonTemplate::parse(data) {
        let mut out = Vec::new();
        t.write_member(Some("AAAA"), Some("{\"kid\":\"x\"}"), &mut out);
        assert!(JsonJwe::parse(&out, true).is_ok());
    }
});
