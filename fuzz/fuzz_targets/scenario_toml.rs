//! The scenario loader: an auditor's file, however wrong, is refused with its place and reason,
//! never a panic.
//! The body is `harbor_harness::fuzzing::scenario_toml`, shared with the bounded pass CI runs on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harbor_harness::fuzzing::scenario_toml(data));
