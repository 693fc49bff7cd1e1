//! Stored token ciphertext (a restored backup, a tampered row): decrypting it is a refusal, never a
//! panic — and never plaintext for a value the key ring did not seal.
#![no_main]

use std::sync::OnceLock;

use harbor_service::domain::{ConnectionId, Provider, TenantId};
use harbor_service::vault::{KeyRing, TokenBinding, TokenField};
use libfuzzer_sys::fuzz_target;

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| KeyRing::generate("fuzz-k1").0)
}

fuzz_target!(|data: &[u8]| {
    let binding = TokenBinding {
        tenant_id: TenantId(uuid::Uuid::nil()),
        connection_id: ConnectionId(uuid::Uuid::nil()),
        provider: Provider::Qbo,
        field: TokenField::Access,
        grant_id: None,
    };
    // The key is made in this process: no input can be a value it sealed.
    assert!(ring().decrypt(data, &binding).is_err(), "decrypted bytes nobody sealed");
    assert!(ring().decrypt_any_format(data, &binding).is_err(), "decrypted bytes nobody sealed (legacy format)");
});
