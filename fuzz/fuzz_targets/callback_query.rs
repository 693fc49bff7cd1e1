//! The OAuth callback's query string: whatever a browser (or an attacker) sends, the parser answers
//! a value or a 400, never a panic.
//! The body is `harbor_harness::fuzzing::callback_query`, shared with the bounded pass CI runs on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harbor_harness::fuzzing::callback_query(data));
