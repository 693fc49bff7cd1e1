//! Bearer tokens: header (alg, kid, crit), claims (iss, aud, exp, nbf, sub) and signature, from
//! whatever a client sends. A refusal, never a panic — and never an acceptance of a token the
//! gateway did not sign.
//! The body is `harbor_harness::fuzzing::jwt`, shared with the bounded pass CI runs on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harbor_harness::fuzzing::jwt(data));
