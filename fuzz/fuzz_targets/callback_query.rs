//! The OAuth callback's query string: whatever a browser (or an attacker) sends, the parser answers
//! a value or a 400, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = std::str::from_utf8(data) {
        let _ = harbor_service::oauth::callback_params(Some(query));
    }
});
