//! Link header values.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    for (uri, rel) in shared::links::parse(data) {
        assert!(!rel.is_empty() && data.contains(uri));
    }
});
