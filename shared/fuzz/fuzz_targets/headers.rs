//! TTL, Urgency, Topic, Content-Encoding and the aesgcm key parameters.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::headers::{AesgcmParams, ContentEncoding, Topic, Ttl, Urgency};

fuzz_target!(|data: &str| {
    let (a, b) = data.split_at(data.char_indices().nth(data.chars().count() / 2).map_or(0, |(i, _)| i));
    let _ = Ttl::parse(Some(data), 2_592_000);
    let _ = Urgency::parse(Some(data));
    let _ = Topic::parse(Some(data));
    let _ = ContentEncoding::parse(Some(data));
    let _ = AesgcmParams::parse(Some(a), Some(b), 4096);
});
