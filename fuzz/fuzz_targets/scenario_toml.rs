//! The scenario loader: an auditor's file, however wrong, is refused with its place and reason,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = harbor_harness::scenario::load::load_str(std::path::Path::new("fuzz.toml"), text);
    }
});
