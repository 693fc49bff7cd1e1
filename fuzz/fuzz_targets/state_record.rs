//! An OAuth state record as read back from Redis: anything but a well-formed record is `Corrupt`,
//! never a panic.
//! The body is `harbor_harness::fuzzing::state_record`, shared with the bounded pass CI runs on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harbor_harness::fuzzing::state_record(data));
