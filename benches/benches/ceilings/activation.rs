//! The activation transaction: the service's endpoint, in-process (HTTP, JWT, membership, the
//! locked transaction, the audit row, the answer), beside the same statements sent through raw sqlx
//! on the same database, at 1, 10 and 50 concurrent activations of distinct workspaces. Each
//! iteration activates fresh workspaces (made untimed, connected and entitled), so both sides do the
//! whole path: advisory lock, the three reads, `FOR UPDATE`, `INSERT … ON CONFLICT`, the audit row.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use harbor_harness::fixtures::TenantWorkspace;
use harbor_harness::identity::TokenKind;
use harbor_harness::target::started::{ServiceOptions, Started};
use harbor_service::lifecycle::ConnectionStatus;
use sqlx::PgPool;

/// Concurrent activations per iteration.
pub const CONCURRENCY: [usize; 3] = [1, 10, 50];

/// Fresh connected, entitled workspaces (untimed set-up).
async fn fresh(db: &PgPool, n: usize) -> Vec<TenantWorkspace> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let name = format!("bench-{}", uuid::Uuid::new_v4().simple());
        out.push(
            TenantWorkspace::create(db, &name, true, ConnectionStatus::Connected)
                .await
                .expect("fixtures"),
        );
    }
    out
}

async fn raw_activation(pool: &PgPool, t: &TenantWorkspace) {
    harbor_harness::target::started::ceiling::raw_activation(pool, t)
        .await
        .expect("the raw activation transaction");
}

/// Runs the pair at every concurrency.
pub fn activation(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    infra: &harbor_harness::provision::Infra,
) {
    let options = ServiceOptions {
        // The raw side talks to the server directly; so does the service here.
        fault_proxies: false,
        replicas: 1,
        sync_points: false,
        database_max_connections: 60,
        ..ServiceOptions::default()
    };
    let sut = runtime
        .block_on(Started::start(infra, options))
        .expect("the service starts");
    // The raw side logs in as the service does (its role, row-level security on), with a pool of
    // the same size.
    let raw = runtime
        .block_on(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(60)
                .connect(&sut.env.request_database_url),
        )
        .expect("the request role connects");
    let mut group = c.benchmark_group("activation");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for n in CONCURRENCY {
        // `iter_custom`: each iteration makes its workspaces first, and only the activations are
        // timed.
        group.bench_with_input(BenchmarkId::new("service", n), &n, |b, &n| {
            b.to_async(runtime).iter_custom(|iters| {
                let sut = &sut;
                async move {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let workspaces = fresh(&sut.db, n).await;
                        let calls = workspaces.iter().map(|t| {
                            let bearer = sut.tokens.token(t.owner.0, TokenKind::Valid);
                            sut.client
                                .request(
                                    reqwest::Method::POST,
                                    harbor_harness::operation::paths::activation(t.workspace),
                                )
                                .bearer(Some(bearer))
                                .send()
                        });
                        let started = Instant::now();
                        for answer in futures::future::join_all(calls).await {
                            assert!(
                                answer.expect("answers").status.is_success(),
                                "activation failed"
                            );
                        }
                        timed += started.elapsed();
                    }
                    timed
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("raw_sqlx", n), &n, |b, &n| {
            b.to_async(runtime).iter_custom(|iters| {
                let (sut, raw) = (&sut, &raw);
                async move {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let workspaces = fresh(&sut.db, n).await;
                        let started = Instant::now();
                        futures::future::join_all(
                            workspaces.iter().map(|t| raw_activation(raw, t)),
                        )
                        .await;
                        timed += started.elapsed();
                    }
                    timed
                }
            })
        });
    }
    group.finish();
    runtime.block_on(raw.close());
    let _ = runtime.block_on(sut.stop());
}
