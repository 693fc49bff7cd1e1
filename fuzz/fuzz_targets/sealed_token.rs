//! Stored token ciphertext (a restored backup, a tampered row): decrypting it is a refusal, never a
//! panic — and never plaintext for a value the key ring did not seal.
//! The body is `harbor_harness::fuzzing::sealed_token`, shared with the bounded pass CI runs on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harbor_harness::fuzzing::sealed_token(data));
