//! The providers file (`HARBOR_PROVIDERS`): a malformed one is refused at start-up with a reason,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = std::str::from_utf8(data) {
        let _ = harbor_service::providers::ProvidersConfig::from_json(raw, std::time::Duration::from_secs(1));
    }
});
