//! List documents and merge patches.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::{list, Limits};

fuzz_target!(|data: &[u8]| {
    let l = Limits { max_list_members: 1000, ..Limits::default() };
    if let Ok(p) = list::parse_document(data, 1_700_000_000, &l) {
        // What was accepted writes back to a document that parses the same.
        let mut out = String::new();
        list::write_document(&p.accepted, &mut out);
        let again = list::parse_document(out.as_bytes(), 1_700_000_000, &l).unwrap();
        assert_eq!(again.accepted, p.accepted);
    }
    let _ = list::parse_patch(data, 1_700_000_000, &l);
});
