//! A device's `ack` read in place against the same text read by serde:
//! whatever `ack_versions` reads, `DeviceMessage::parse` reads alike.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::webpush_ws::{ack_versions, DeviceMessage};

fuzz_target!(|text: &str| {
    let parsed = DeviceMessage::parse(text);
    if let Some(versions) = ack_versions(text) {
        let Ok(DeviceMessage::Ack { updates }) = parsed else {
            panic!("read in place as an ack, not by parse: {text:?}");
        };
        let scanned: Vec<(&str, Option<u16>)> = versions.collect();
        let read: Vec<(&str, Option<u16>)> =
            updates.iter().map(|u| (&*u.version, u.code)).collect();
        assert_eq!(scanned, read, "{text:?}");
    }
});
