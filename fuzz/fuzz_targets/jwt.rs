//! Bearer tokens: header (alg, kid, crit), claims (iss, aud, exp, nbf, sub) and signature, from
//! whatever a client sends. A refusal, never a panic — and never an acceptance of a token the
//! gateway did not sign.
#![no_main]

use std::sync::OnceLock;

use harbor_harness::tokens::TokenMint;
use harbor_service::auth::JwtVerifier;
use libfuzzer_sys::fuzz_target;

fn verifier() -> &'static JwtVerifier {
    static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| JwtVerifier::new(&TokenMint::new().jwt_config()).expect("a valid JWK set"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        // The key pair is made in this process: no input can carry a valid signature by it.
        assert!(verifier().verify(token).is_err(), "accepted a token nobody signed: {token:?}");
    }
});
