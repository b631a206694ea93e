//! Content-Encoding: gzip of list documents, within the size limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::{list, Limits};

fuzz_target!(|data: &[u8]| {
    let l = Limits { max_list_document_bytes: 1 << 16, ..Limits::default() };
    if let Ok(doc) = list::decode_body(Some("gzip"), data, &l) {
        assert!(doc.len() <= 1 << 16);
    }
});
