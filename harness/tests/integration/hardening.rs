//! The hostile review's findings that are not interleavings (issue #17): each test failed on the
//! reviewed code. The interleavings are scenario files (`scenarios/HRD-*.toml`).

use harbor_harness::target::started::{service_config, ServiceDeps, ServiceOptions};
use harbor_service::config::Config;
use harbor_service::domain::Provider;
use harbor_service::lifecycle::ConnectionStatus;
use harbor_service::vault;

use crate::helpers::{spawn_app, TestApp};

fn config_of(app: &TestApp) -> Config {
    let deps = ServiceDeps {
        tokens: &app.sut.tokens,
        token_keys: &app.sut.token_keys,
        provider: &app.sut.provider,
    };
    service_config(&app.sut.env, &deps, ServiceOptions::default())
}

/// Item 6: a request session that runs `RESET ROLE` (injected SQL, compromised code) still sees
/// no tenant's rows, and cannot become the schema owner.
#[tokio::test]
async fn reset_role_cannot_widen_a_request_session() {
    let app = spawn_app().await;
    let t = app
        .tenant("widen", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(t.owner, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    let pool = harbor_service::db::connect(&config_of(&app))
        .await
        .expect("the service's request pool");
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM connections")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        seen, 0,
        "after RESET ROLE a request session must still see no tenant's connections"
    );
    let tokens: i64 =
        sqlx::query_scalar("SELECT count(*) FROM connections WHERE access_token IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(tokens, 0);
    let owner: String = sqlx::query_scalar(
        "SELECT tableowner::text FROM pg_tables WHERE tablename = 'connections'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let become_owner = sqlx::query(&format!("SET ROLE \"{owner}\""))
        .execute(&mut *conn)
        .await;
    assert!(
        become_owner.is_err(),
        "a request session must not be able to become the owner {owner:?}"
    );
    drop(conn);
    pool.close().await;
    app.stop().await;
}

/// Item 5: one undecryptable row no longer stops key rotation: the rows after it are rotated, it
/// is reported by id, and the next run goes past it again.
#[tokio::test]
async fn key_rotation_skips_an_undecryptable_row_and_goes_on() {
    let app = spawn_app().await;
    app.connected_tenants("skip", 3, Provider::Gmail).await;
    // Corrupt the first row in id order, so that a rotation in id order meets it first. The last
    // byte (of the tag) is flipped, not overwritten: a byte set to a fixed value is already that
    // value one time in 256, and the row would then decrypt.
    let bad: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM connections WHERE access_token IS NOT NULL ORDER BY id LIMIT 1",
    )
    .fetch_one(app.db())
    .await
    .unwrap();
    sqlx::query("UPDATE connections SET access_token = set_byte(access_token, length(access_token) - 1, get_byte(access_token, length(access_token) - 1) # 255) WHERE id = $1")
        .bind(bad)
        .execute(app.db())
        .await
        .unwrap();
    let ring = app.key_ring_rotated_to("k2");
    for run in 0..2 {
        let report = vault::rotate_keys(app.db(), &ring, 1)
            .await
            .expect("rotation reports bad rows, it does not stop at them");
        let old: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM connections WHERE token_key_id = 'harness-k1'")
                .fetch_all(app.db())
                .await
                .unwrap();
        assert_eq!(
            old,
            vec![bad],
            "run {run}: every row but the undecryptable one is under the new key"
        );
        assert_eq!(
            report.skipped.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![bad],
            "run {run}: the bad row is reported by id"
        );
        assert_eq!(report.rotated, if run == 0 { 2 } else { 0 });
        assert!(
            !report.is_complete(),
            "a run that skipped rows is not complete (the command exits non-zero)"
        );
    }
    app.stop().await;
}

/// A revocation waiting in the outbox under the key being retired keeps the rotation from being
/// complete: its copy is not re-sealed, and a key retired under it would leave the grant live.
#[tokio::test]
async fn key_rotation_is_not_complete_while_a_revocation_waits_under_an_older_key() {
    let app = spawn_app().await;
    app.connected_tenants("waiting", 1, Provider::Gmail).await;
    // An intent the provider has not confirmed yet, leased an hour ahead so no worker takes it
    // while the test runs: the connection's own ciphertext, as disconnect writes it.
    sqlx::query(
        "INSERT INTO revocation_outbox (tenant_id, workspace_id, connection_id, provider, grant_id,          field, sealed_token, reason, next_attempt_at)          SELECT tenant_id, workspace_id, id, provider, grant_id, 'access', access_token,          'disconnect', now() + interval '1 hour' FROM connections WHERE access_token IS NOT NULL",
    )
    .execute(app.db())
    .await
    .unwrap();
    let ring = app.key_ring_rotated_to("k2");
    let report = vault::rotate_keys(app.db(), &ring, 10).await.unwrap();
    assert_eq!((report.rotated, report.remaining), (1, 0));
    assert_eq!(report.outbox_under_older_keys, 1);
    assert!(
        !report.is_complete(),
        "the old key still seals a revocation"
    );
    // Delivered (the intent settled): the old key may go.
    sqlx::query("DELETE FROM revocation_outbox")
        .execute(app.db())
        .await
        .unwrap();
    let report = vault::rotate_keys(app.db(), &ring, 10).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    app.stop().await;
}

/// Item 9: replicas whose hosts' clocks disagree (here by 18 s) still share one rate limit: the
/// one running ahead cannot make the others refuse a tenant.
#[tokio::test]
async fn rate_limits_agree_across_replicas_whose_clocks_disagree() {
    use harbor_service::clock::Clock;
    use harbor_service::ratelimit::{Quota, RateLimiter, RateLimits};
    let app = spawn_app().await;
    let client = redis::Client::open(app.sut.env.redis_url.as_str()).unwrap();
    let redis = redis::aio::ConnectionManager::new(client).await.unwrap();
    let prefix: std::sync::Arc<str> = std::sync::Arc::from(app.sut.env.redis_key_prefix.as_str());
    let limits = RateLimits {
        per_tenant: Quota {
            per_minute: 60,
            burst: 2,
        },
        ..RateLimits::default()
    };
    let ahead = RateLimiter::new(
        redis.clone(),
        prefix.clone(),
        Clock::with_skew(chrono::Duration::seconds(18)),
        limits,
    );
    let right = RateLimiter::new(redis, prefix, Clock::system(), limits);
    assert!(ahead.charge_tenant("authorize", "t").await.unwrap().is_ok());
    let second = right.charge_tenant("authorize", "t").await.unwrap();
    assert!(
        second.is_ok(),
        "the replica with the right clock must still have the burst's second request: {second:?}"
    );
    assert!(
        right
            .charge_tenant("authorize", "t")
            .await
            .unwrap()
            .is_err(),
        "and not a third: the burst is two"
    );
    app.stop().await;
}
