//! Authorization / Crypto-Key parsing and ES256 token verification.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::vapid::Credentials;
use shared::Limits;

const KEY: &str = "BA1Hxzyi1RUM1b5wjxsn7nGxAszw2u61m164i3MrAIxHF6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs";

fuzz_target!(|data: &str| {
    let l = Limits::default();
    let _ = Credentials::parse(Some(data), Some(data), &l);
    // The token itself, with a real key, reaches the verifier.
    let auth = format!("vapid t={data}, k={KEY}");
    if let Ok(Some(c)) = Credentials::parse(Some(&auth), None, &l) {
        let _ = c.verify("https://push.example.net", 1_453_520_000, &l);
    }
});
