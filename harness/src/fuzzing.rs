//! The fuzz targets' bodies — one function per parser that takes outside input — shared by the
//! libFuzzer binaries in `fuzz/` (nightly, instrumented, `cargo xtask fuzz`) and by the bounded
//! pass on stable that the test suite runs on every CI build ([`bounded_pass`]: each committed
//! seed, then seeded mutations of them). A panic in either is a crash: the bounded pass writes the
//! input to `fuzz/artifacts/<target>/` and fails, and `harbor-certify`'s tests replay that folder.
//!
//! Each body states what must hold beyond "no panic": the JWT verifier never accepts a token the
//! process did not sign, the key ring never opens a value it did not seal — including genuine
//! ciphertext with any bit changed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use harbor_service::auth::JwtVerifier;
use harbor_service::domain::{ConnectionId, Provider, TenantId};
use harbor_service::vault::{KeyRing, TokenBinding, TokenField};
use rand::{Rng, SeedableRng};
use secrecy::{ExposeSecret, SecretString};

use crate::identity::TokenMint;

/// A fuzz target: its name (the folder of its corpus) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order of `fuzz/README.md`.
pub const TARGETS: [Target; 6] = [
    ("callback_query", callback_query),
    ("jwt", jwt),
    ("sealed_token", sealed_token),
    ("state_record", state_record),
    ("providers_file", providers_file),
    ("scenario_toml", scenario_toml),
];

/// The OAuth callback's query string: a value or a 400, never a panic.
pub fn callback_query(data: &[u8]) {
    if let Ok(query) = std::str::from_utf8(data) {
        let _ = harbor_service::oauth::callback_params(Some(query));
    }
}

fn mint() -> &'static (TokenMint, JwtVerifier) {
    static MINT: OnceLock<(TokenMint, JwtVerifier)> = OnceLock::new();
    MINT.get_or_init(|| {
        let mint = TokenMint::new();
        let verifier = JwtVerifier::new(&mint.jwt_config()).expect("a valid JWK set");
        (mint, verifier)
    })
}

/// Bearer tokens. First byte even: the rest is a token as a client sends it, which must be
/// refused (no input can carry a signature by this process's key). Odd: the rest is a claims
/// payload the gateway's key really signs, so the claims handling (types, `exp`, `nbf`, `iss`,
/// `aud`, `sub`) is reached; whatever it decides, an accepted token has a string subject, and verifying it again (from the
/// verified-token cache) gives the same identity.
pub fn jwt(data: &[u8]) {
    let (mint, verifier) = mint();
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 1 => {
            let token = mint.sign_raw_claims(rest);
            if let Ok(identity) = verifier.verify(&token) {
                // The second look is answered from the verified-token cache: it must agree (and
                // its arithmetic on `exp` must hold at any value the first look accepted).
                assert_eq!(
                    verifier.verify(&token).ok(),
                    Some(identity),
                    "a cached verification disagreed with the first"
                );
                // Read as RFC 8259 allows (a number beyond f64 is still JSON): only the subject
                // is asked for.
                #[derive(serde::Deserialize)]
                struct Subject {
                    #[allow(dead_code)] // read to prove it is there
                    sub: String,
                }
                assert!(
                    serde_json::from_slice::<Subject>(rest).is_ok(),
                    "accepted claims without a string subject: {identity:?}"
                );
            }
        }
        _ => {
            if let Ok(token) = std::str::from_utf8(data.get(1..).unwrap_or_default()) {
                assert!(
                    verifier.verify(token).is_err(),
                    "accepted a token nobody signed: {token:?}"
                );
            }
        }
    }
}

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| KeyRing::generate("fuzz-k1").0)
}

fn binding(field: TokenField) -> TokenBinding {
    TokenBinding {
        tenant_id: TenantId(uuid::Uuid::nil()),
        connection_id: ConnectionId(uuid::Uuid::nil()),
        provider: Provider::Qbo,
        field,
        grant_id: None,
    }
}

/// Stored token ciphertext. First byte even: the rest is stored bytes, which must not open. Odd:
/// a genuine ciphertext of a fixed token is sealed and the rest is XORed over it (and may cut it
/// short): it opens only when nothing changed, and then to the very token sealed.
pub fn sealed_token(data: &[u8]) {
    let access = binding(TokenField::Access);
    match data.split_first() {
        Some((mode, mask)) if mode % 2 == 1 => {
            let plain = SecretString::from("hbfuzz-access-token");
            let mut sealed = ring().encrypt(&plain, &access).expect("sealing");
            let untouched = mask.iter().all(|b| *b == 0) && mask.len() <= sealed.len();
            for (b, m) in sealed.iter_mut().zip(mask) {
                *b ^= m;
            }
            if mask.len() > sealed.len() {
                // A longer mask says "and append these bytes".
                sealed.extend_from_slice(&mask[sealed.len()..]);
            }
            match ring().decrypt(&sealed, &access) {
                Ok(opened) => {
                    assert!(untouched, "opened a changed ciphertext");
                    assert_eq!(opened.expose_secret(), plain.expose_secret());
                }
                Err(_) => assert!(!untouched, "refused its own ciphertext"),
            }
            assert!(
                ring()
                    .decrypt(&sealed, &binding(TokenField::Refresh))
                    .is_err(),
                "opened a ciphertext for another field"
            );
        }
        _ => {
            let stored = data.get(1..).unwrap_or_default();
            assert!(
                ring().decrypt(stored, &access).is_err(),
                "decrypted bytes nobody sealed"
            );
            assert!(
                ring().decrypt_any_format(stored, &access).is_err(),
                "decrypted bytes nobody sealed (legacy format)"
            );
        }
    }
}

/// A state record read back from Redis: a record or `Corrupt`, never a panic.
pub fn state_record(data: &[u8]) {
    if let Ok(raw) = std::str::from_utf8(data) {
        let _ = harbor_service::oauth_state::decode_record(raw);
    }
}

/// The providers file: refused with a reason, never a panic.
pub fn providers_file(data: &[u8]) {
    if let Ok(raw) = std::str::from_utf8(data) {
        let _ = harbor_service::providers::ProvidersConfig::from_json(raw, Duration::from_secs(1));
    }
}

/// A scenario file: refused with its place and reason, never a panic.
pub fn scenario_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::scenario::load::load_str(Path::new("fuzz.toml"), text);
    }
}

/// What the bounded pass did with one target.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PassResult {
    /// The target.
    pub target: &'static str,
    /// Seed inputs run as they are.
    pub seeds: usize,
    /// Inputs run in all (seeds and mutations).
    pub executions: u64,
    /// The input that crashed, where it was written (or why it could not be), if one crashed.
    pub crash: Option<Crash>,
}

/// An input that made a target panic.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Crash {
    /// The input, as hex: the record of it whatever became of the file.
    pub input_hex: String,
    /// Where it was written, or why it could not be.
    pub saved: Result<PathBuf, String>,
}

/// Runs every target over its committed seeds (`fuzz/corpus/<target>/`) and the committed inputs
/// of crashes found and fixed (`fuzz/regressions/<target>/`), then over mutations of them drawn
/// from `seed`, until `executions` per target or `budget` per target, whichever comes first (the
/// caller judges a pass the budget cut short). Only committed inputs: what long local runs kept
/// (`fuzz/run-corpus/`, not in git) would make the same seed mutate other inputs on another
/// machine. A panic is caught, its input written to `fuzz/artifacts/<target>/crash-<sha256>`,
/// and reported with the input itself.
pub fn bounded_pass(
    fuzz_dir: &Path,
    executions: u64,
    budget: Duration,
    seed: u64,
) -> Vec<PassResult> {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let results = TARGETS
        .iter()
        .map(|&(name, body)| run_target(fuzz_dir, name, body, executions, budget, seed))
        .collect();
    std::panic::set_hook(quiet);
    results
}

fn run_target(
    fuzz_dir: &Path,
    name: &'static str,
    body: fn(&[u8]),
    executions: u64,
    budget: Duration,
    seed: u64,
) -> PassResult {
    let mut corpus: Vec<Vec<u8>> = ["corpus", "regressions"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(fuzz_dir.join(d).join(name))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    corpus.sort();
    let seeds = corpus.len();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ fnv(name));
    let started = Instant::now();
    let mut done = 0;
    let mut next = 0;
    while done < executions && (done < seeds as u64 || started.elapsed() < budget) {
        let input = if next < seeds {
            next += 1;
            corpus[next - 1].clone()
        } else {
            mutate(&mut rng, &corpus)
        };
        done += 1;
        if std::panic::catch_unwind(|| body(&input)).is_err() {
            let crash = save_crash(fuzz_dir, name, &input);
            return PassResult {
                target: name,
                seeds,
                executions: done,
                crash: Some(crash),
            };
        }
    }
    PassResult {
        target: name,
        seeds,
        executions: done,
        crash: None,
    }
}

fn save_crash(fuzz_dir: &Path, name: &str, input: &[u8]) -> Crash {
    use sha2::Digest;
    let dir = fuzz_dir.join("artifacts").join(name);
    let path = dir.join(format!(
        "crash-{}",
        hex::encode(sha2::Sha256::digest(input))
    ));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, input))
        .map(|()| path.clone())
        .map_err(|e| format!("{}: {e}", path.display()));
    Crash {
        input_hex: hex::encode(input),
        saved,
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Tokens a parser cares about, spliced in by the mutator.
const DICTIONARY: &[&[u8]] = &[
    b"=",
    b"&",
    b"%",
    b"%00",
    b"%ff",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b".",
    b"\n",
    b"[[steps]]\n",
    b"do = ",
    b"actor = ",
    b"\"expires_at\"",
    b"\"sub\"",
    b"\"exp\"",
    b"null",
    b"-1",
    b"18446744073709551616",
    b"1e309",
    b"\xff\xfe",
    b"state=",
    b"code=",
];

/// One mutation of an input drawn from `corpus`: bit flips, random bytes, insertions, deletions,
/// duplications, dictionary tokens, or a splice with another input.
pub fn mutate(rng: &mut impl Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = corpus[rng.gen_range(0..corpus.len())].clone();
    for _ in 0..rng.gen_range(1..=4) {
        let len = out.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] = rng.gen();
            }
            2 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                out.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 16));
                out.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 32));
                let copy = out[a..b].to_vec();
                let at = rng.gen_range(0..=out.len());
                out.splice(at..at, copy);
            }
            5 => {
                let token = DICTIONARY[rng.gen_range(0..DICTIONARY.len())];
                let i = rng.gen_range(0..=len);
                out.splice(i..i, token.iter().copied());
            }
            _ => {
                let other = &corpus[rng.gen_range(0..corpus.len())];
                let cut = rng.gen_range(0..=len);
                let from = rng.gen_range(0..=other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
        }
    }
    out.truncate(64 * 1024);
    out
}
