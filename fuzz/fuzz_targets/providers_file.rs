//! The providers file (`HARBOR_PROVIDERS`): a malformed one is refused at start-up with a reason,
//! never a panic.
//! The body is `harbor_harness::fuzzing::providers_file`, shared with the bounded pass CI runs on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harbor_harness::fuzzing::providers_file(data));
