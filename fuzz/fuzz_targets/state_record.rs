//! An OAuth state record as read back from Redis: anything but a well-formed record is `Corrupt`,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = std::str::from_utf8(data) {
        let _ = harbor_service::oauth_state::decode_record(raw);
    }
});
