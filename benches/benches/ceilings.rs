//! Each hot function of the service beside its raw ceiling, measured in the same run:
//! token seal/open vs raw AES-256-GCM on the same sizes; OAuth state issue + consume vs raw
//! `SET NX EX` + `GETDEL` on the same Redis; JWT verification vs a raw Ed25519 verify of the same
//! token; lock-key derivation. Ratios are printed and written next to criterion's output
//! (`harbor-ratios.json`). PostgreSQL and Redis come from `HARBOR_DATABASE_URL`/`HARBOR_REDIS_URL`
//! (as `cargo xtask bench` provides) or the harness's `auto` provisioning.

#[path = "ceilings/activation.rs"]
mod activation;

use std::path::PathBuf;
use std::time::Duration;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::Aes256Gcm;
use base64::Engine;
use criterion::{BenchmarkId, Criterion, Throughput};
use harbor_benches::{ratios, Pair};
use harbor_service::domain::{ConnectionId, Provider, TenantId, UserId, WorkspaceId};
use harbor_service::oauth_state::{OAuthStateRecord, OAuthStateStore};
use harbor_service::vault::{KeyRing, TokenBinding, TokenField};
use secrecy::{ExposeSecret, SecretString};

const SIZES: [usize; 3] = [64, 512, 2048];

fn binding() -> TokenBinding {
    TokenBinding {
        tenant_id: TenantId(uuid::Uuid::new_v4()),
        connection_id: ConnectionId(uuid::Uuid::new_v4()),
        provider: Provider::Gmail,
        field: TokenField::Access,
        grant_id: Some(uuid::Uuid::new_v4()),
    }
}

/// The associated data of the same length as the service's (tenant, connection, provider, field,
/// grant), so the raw ceiling authenticates as many bytes.
fn same_length_aad() -> Vec<u8> {
    format!(
        "harbor.token.v2\0{}\0{}\0gmail\0access_token\0{}",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    )
    .into_bytes()
}

/// Seal and open beside raw AES-256-GCM: criterion measures each size, and the ratios in
/// `bench.json` for 64 and 2,048 bytes are measured interleaved, as the JWT's are (a cipher call
/// of 250 ns moved by 0.1 between criterion's one-after-the-other runs on unchanged code).
fn seal_and_open(c: &mut Criterion) -> serde_json::Map<String, serde_json::Value> {
    let mut interleaved = serde_json::Map::new();
    let (ring, _) = KeyRing::generate("k1");
    let b = binding();
    let raw = Aes256Gcm::new(&Aes256Gcm::generate_key(OsRng));
    let aad = same_length_aad();
    for size in SIZES {
        let token = SecretString::from("t".repeat(size));
        let mut seal = c.benchmark_group("seal");
        seal.throughput(Throughput::Bytes(size as u64));
        seal.bench_with_input(BenchmarkId::new("service", size), &token, |bench, t| {
            bench.iter(|| ring.encrypt(t, &b).unwrap())
        });
        seal.bench_with_input(BenchmarkId::new("raw_aes_gcm", size), &token, |bench, t| {
            bench.iter(|| {
                let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
                raw.encrypt(
                    &nonce,
                    Payload {
                        msg: t.expose_secret().as_bytes(),
                        aad: &aad,
                    },
                )
                .unwrap()
            })
        });
        seal.finish();
        let sealed = ring.encrypt(&token, &b).unwrap();
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let raw_sealed = raw
            .encrypt(
                &nonce,
                Payload {
                    msg: token.expose_secret().as_bytes(),
                    aad: &aad,
                },
            )
            .unwrap();
        let mut open = c.benchmark_group("open");
        open.throughput(Throughput::Bytes(size as u64));
        open.bench_with_input(BenchmarkId::new("service", size), &sealed, |bench, s| {
            bench.iter(|| ring.decrypt(s, &b).unwrap())
        });
        open.bench_with_input(
            BenchmarkId::new("raw_aes_gcm", size),
            &raw_sealed,
            |bench, s| bench.iter(|| raw.decrypt(&nonce, Payload { msg: s, aad: &aad }).unwrap()),
        );
        open.finish();
        if size == 64 || size == 2048 {
            let seal = harbor_benches::interleaved(
                || drop(std::hint::black_box(ring.encrypt(&token, &b).unwrap())),
                || {
                    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
                    let msg = token.expose_secret().as_bytes();
                    let sealed = raw.encrypt(&nonce, Payload { msg, aad: &aad });
                    drop(std::hint::black_box(sealed.unwrap()));
                },
            );
            let open = harbor_benches::interleaved(
                || drop(std::hint::black_box(ring.decrypt(&sealed, &b).unwrap())),
                || {
                    let opened = raw.decrypt(
                        &nonce,
                        Payload {
                            msg: &raw_sealed,
                            aad: &aad,
                        },
                    );
                    drop(std::hint::black_box(opened.unwrap()));
                },
            );
            interleaved.insert(format!("seal_{size}"), seal.json(0.9));
            interleaved.insert(format!("open_{size}"), open.json(0.9));
        }
    }
    interleaved
}

/// JWT verification of unseen tokens beside raw Ed25519, measured interleaved (see
/// [`harbor_benches::interleaved`]): criterion measures one benchmark after the other, and on a
/// shared 2-core host the seconds between them moved this ratio by 0.1 or more from run to run.
fn jwt(c: &mut Criterion) -> serde_json::Value {
    let mint = harbor_harness::identity::TokenMint::new();
    let verifier = harbor_service::auth::JwtVerifier::new(&mint.jwt_config()).unwrap();
    let token = mint.token(
        uuid::Uuid::new_v4(),
        harbor_harness::identity::TokenKind::Valid,
    );
    let x = mint.jwks_json()["keys"][0]["x"]
        .as_str()
        .unwrap()
        .to_owned();
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(x)
        .unwrap();
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public);
    // A token's signing input and its decoded signature: what a raw verify is given.
    let split = |token: &str| {
        let (signing_input, signature) = token.rsplit_once('.').unwrap();
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .unwrap();
        (signing_input.to_owned(), signature)
    };
    let (signing_input, signature) = split(&token);
    // Tokens the verifier has not seen: the full check (it remembers the tokens that verified,
    // and more distinct tokens than it keeps are cycled through, so nearly every one is a miss).
    let fresh: Vec<String> = (0..25_000)
        .map(|_| {
            mint.token(
                uuid::Uuid::new_v4(),
                harbor_harness::identity::TokenKind::Valid,
            )
        })
        .collect();
    // The raw ceiling verifies the same tokens, cycled the same way: the same inputs in and out
    // of the CPU's caches, not one token's bytes kept hot.
    let fresh_raw: Vec<(String, Vec<u8>)> = fresh.iter().map(|t| split(t)).collect();
    let mut next = 0;
    let mut group = c.benchmark_group("jwt");
    group.bench_function("service_verify", |b| {
        b.iter(|| {
            next = (next + 1) % fresh.len();
            verifier.verify(&fresh[next]).unwrap()
        })
    });
    group.bench_function("service_verify_repeated", |b| {
        b.iter(|| verifier.verify(&token).unwrap())
    });
    group.bench_function("raw_ed25519_verify", |b| {
        b.iter(|| key.verify(signing_input.as_bytes(), &signature).unwrap())
    });
    group.finish();
    let (mut s, mut r) = (0, 0);
    let paired = harbor_benches::interleaved(
        || {
            s = (s + 1) % fresh.len();
            verifier.verify(&fresh[s]).unwrap();
        },
        || {
            r = (r + 1) % fresh_raw.len();
            let (input, signature) = &fresh_raw[r];
            key.verify(input.as_bytes(), signature).unwrap();
        },
    );
    paired.json(0.9)
}

fn lock_key(c: &mut Criterion) {
    let ws = WorkspaceId(uuid::Uuid::new_v4());
    c.bench_function("lock_key_for_workspace", |b| {
        b.iter(|| harbor_service::locks::lock_key_for_workspace(std::hint::black_box(ws)))
    });
}

fn oauth_state(c: &mut Criterion, runtime: &tokio::runtime::Runtime, redis_url: &str) {
    let client = redis::Client::open(redis_url).unwrap();
    let manager = runtime
        .block_on(redis::aio::ConnectionManager::new(client))
        .unwrap();
    let prefix: std::sync::Arc<str> =
        std::sync::Arc::from(format!("harbor:bench:{}:", uuid::Uuid::new_v4().simple()).as_str());
    let store = OAuthStateStore::new(manager.clone(), prefix.clone(), false);
    let clock = harbor_service::clock::Clock::system();
    let record = || OAuthStateRecord {
        tenant_id: TenantId(uuid::Uuid::new_v4()),
        workspace_id: WorkspaceId(uuid::Uuid::new_v4()),
        user_id: UserId(uuid::Uuid::new_v4()),
        provider: Provider::Qbo,
        issuer: "https://appcenter.intuit.com".into(),
        redirect_uri: "https://harbor.example/v1/oauth/qbo/callback".into(),
        verifier: harbor_service::oauth_state::random_token(),
        created_at: clock.now(),
        flow_id: Some(uuid::Uuid::new_v4()),
    };
    // The raw ceiling stores a value of the same size under a key of the same shape.
    let value_len = {
        let r = record();
        let issued = runtime.block_on(store.issue(&r)).unwrap();
        let key = store.key_for_state(issued.expose_secret());
        let mut conn = manager.clone();
        let value: String = runtime
            .block_on(redis::cmd("GET").arg(&key).query_async(&mut conn))
            .unwrap();
        value.len()
    };
    let value = "v".repeat(value_len);
    let mut group = c.benchmark_group("state");
    group.bench_function("service_issue_consume", |b| {
        b.to_async(runtime).iter(|| {
            let store = store.clone();
            let r = record();
            async move {
                let state = store.issue(&r).await.unwrap();
                store.consume(state.expose_secret()).await.unwrap().unwrap();
            }
        })
    });
    group.bench_function("raw_set_nx_ex_getdel", |b| {
        b.to_async(runtime).iter(|| {
            let mut conn = manager.clone();
            let key = format!("{prefix}raw:{}", uuid::Uuid::new_v4().simple());
            let value = value.clone();
            async move {
                let _: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .arg("NX")
                    .arg("EX")
                    .arg(600)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let _: Option<String> = redis::cmd("GETDEL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        })
    });
    group.finish();
}

fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("criterion")
}

fn main() {
    let dir = criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let cipher_interleaved = seal_and_open(&mut c);
    let jwt_interleaved = jwt(&mut c);
    lock_key(&mut c);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // `auto` is the held servers when both URLs are set (`cargo xtask bench`), else its own.
    match runtime.block_on(harbor_harness::provision::Infra::provision(
        harbor_harness::provision::BackendChoice::Auto,
    )) {
        Ok(mut infra) => {
            oauth_state(&mut c, &runtime, &infra.redis_url.clone());
            activation::activation(&mut c, &runtime, &infra);
            runtime.block_on(infra.shutdown());
        }
        Err(e) => eprintln!(
            "benches: no PostgreSQL/Redis ({e}); the state and activation benchmarks are not run"
        ),
    }
    c.final_summary();
    let pairs = [
        Pair {
            name: "jwt_repeated",
            group: "jwt",
            service: "service_verify_repeated",
            raw: "raw_ed25519_verify",
            goal: 0.9,
        },
        Pair {
            name: "state",
            group: "state",
            service: "service_issue_consume",
            raw: "raw_set_nx_ex_getdel",
            goal: 0.8,
        },
        Pair {
            name: "activation_distinct_1",
            group: "activation",
            service: "service/1",
            raw: "raw_sqlx/1",
            goal: 0.6,
        },
        Pair {
            name: "activation_distinct_10",
            group: "activation",
            service: "service/10",
            raw: "raw_sqlx/10",
            goal: 0.6,
        },
        Pair {
            name: "activation_distinct_50",
            group: "activation",
            service: "service/50",
            raw: "raw_sqlx/50",
            goal: 0.6,
        },
    ];
    let (mut text, mut json) = ratios(&dir, &pairs);
    let mut interleaved = cipher_interleaved;
    interleaved.insert("jwt".to_owned(), jwt_interleaved);
    for (name, entry) in interleaved {
        text.push_str(&format!(
            "  {name:<24} {} (interleaved rounds, median)\n",
            entry["summary"].as_str().unwrap_or("-")
        ));
        json[name] = entry;
    }
    println!("\n{text}");
    let _ = std::fs::write(
        dir.join("harbor-ratios.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    );
}
