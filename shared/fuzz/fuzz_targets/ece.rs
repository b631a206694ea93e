//! The aes128gcm header (RFC 8188) and its push rules (RFC 8291).
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::ece::Aes128gcmHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Aes128gcmHeader::parse_webpush(data) {
        assert!(h.len <= data.len() && data.len() - h.len <= h.rs as usize);
    }
    let _ = Aes128gcmHeader::parse(data);
});
