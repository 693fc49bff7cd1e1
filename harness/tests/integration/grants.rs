//! Every grant accounted for (issue #25): the cases that need the harness to reach inside a run —
//! a graceful stop that must wait for a request's own task. The rest are scenario files
//! (`scenarios/GRT-*.toml`, `scenarios/FLT-REPLICA-CRASH-AFTER-REVOKE-COMMIT.toml`).

use std::time::Duration;

use harbor_harness::identity::TokenKind;
use harbor_harness::operation::paths;
use harbor_harness::target::started::ServiceOptions;
use harbor_service::domain::Provider;
use harbor_service::lifecycle::ConnectionStatus;
use harbor_syncpoint::{SlotKey, SlotState};
use reqwest::Method;

use crate::helpers::{spawn_app_with, within};

/// A graceful stop (a rolling deploy's SIGTERM) waits for the work a request handed to its own
/// task: a callback whose client hung up while it sat between the code exchange and the store is
/// stored once it goes on, instead of being dropped with the process and its grant orphaned.
#[tokio::test]
async fn a_graceful_stop_finishes_a_callback_whose_client_hung_up() {
    let app = spawn_app_with(ServiceOptions {
        replicas: 2,
        ..ServiceOptions::default()
    })
    .await;
    let t = app
        .tenant("deploy", true, ConnectionStatus::NotConnected)
        .await;
    let consent = app
        .authorize_and_consent(1, t.owner, t.workspace, Provider::Qbo)
        .await
        .unwrap();
    let sync = app.sut.replicas[0].sync.clone();
    let slot = SlotKey::new("D", "oauth.callback.exchanged");
    sync.arm(slot.clone()).unwrap();
    let call = app
        .sut
        .client
        .request(
            Method::GET,
            paths::callback(Provider::Qbo, &consent.callback_query()),
        )
        .on_replica(0)
        .bearer(Some(app.sut.tokens.token(t.owner.0, TokenKind::Valid)))
        .actor(Some("D"));
    let client = tokio::spawn(call.send());
    within(
        "the callback to park after its exchange",
        sync.until(slot.clone(), SlotState::Parked),
    )
    .await;
    client.abort(); // the client hangs up: its connection closes, the handler is dropped
    let address = app.sut.replicas[0]
        .base_url
        .trim_start_matches("http://")
        .to_owned();
    let release_once_stopping = async {
        // The stop has begun once the replica refuses connections (its listener is gone).
        within("replica 0 to stop listening", async {
            while tokio::net::TcpStream::connect(&address).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        sync.release(&slot).unwrap();
    };
    let (stopped, ()) = tokio::join!(app.sut.stop_replica(0), release_once_stopping);
    stopped.unwrap();
    let status: String = sqlx::query_scalar(
        "SELECT status || ':' || (refresh_token IS NOT NULL)::text FROM connections WHERE workspace_id = $1 AND provider = 'qbo'",
    )
    .bind(t.workspace)
    .fetch_one(app.db())
    .await
    .unwrap();
    assert_eq!(
        status, "CONNECTED:true",
        "the callback's store finished before the process ended"
    );
    app.assert_grants_accounted().await;
    app.stop().await;
}

/// The look-up every refresh makes inside its critical section for a rotation written ahead
/// (`outbox::unstored_rotation`) is one migration 0013's partial index answers: with sequential
/// scans priced out, its plan scans that index. The same statement asking for a field the index
/// does not cover gets no use of it — so the check fails the day the statement and the index's
/// predicate part.
#[tokio::test]
async fn the_unstored_rotation_lookup_is_answered_by_its_partial_index() {
    use harbor_service::outbox::UNSTORED_ROTATION_LOOKUP;
    let infra = crate::helpers::test_infra().await;
    let env = infra.isolated_env().await.unwrap();
    let pool = env.pool(1).await.unwrap();
    let plan_of = |sql: String| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *conn)
                .await
                .unwrap();
            let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {sql}"))
                .bind(uuid::Uuid::new_v4())
                .bind(uuid::Uuid::new_v4())
                .bind(vec![1u8, 2, 3])
                .fetch_all(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"));
            lines.join("\n")
        }
    };
    let plan = plan_of(UNSTORED_ROTATION_LOOKUP.to_owned()).await;
    assert!(
        plan.contains("revocation_outbox_unstored_rotation"),
        "the look-up does not use its index:\n{plan}"
    );
    let uncovered = UNSTORED_ROTATION_LOOKUP.replace("field = 'refresh'", "field = 'access'");
    assert_ne!(uncovered, UNSTORED_ROTATION_LOOKUP);
    let plan = plan_of(uncovered).await;
    assert!(
        !plan.contains("revocation_outbox_unstored_rotation"),
        "a statement outside the index's predicate cannot use it:\n{plan}"
    );
    pool.close().await;
    env.cleanup().await.unwrap();
}

/// The outbox worker's claim fixes its snapshot before it reads the service's clock
/// (`outbox::worker::claim_due`): an intent written while the clock is being read — leased by a
/// clock an hour behind that reading, as after a step back (FLT-CLOCK-JUMPS-BACK) — is not
/// taken, so no worker takes the grant of a callback still running. The same intent, written
/// before the claim, is due and taken: the check can fail.
#[tokio::test]
async fn the_outbox_claim_reads_the_clock_after_its_snapshot() {
    use chrono::{DateTime, Utc};
    use harbor_service::outbox::claim_due;
    let infra = crate::helpers::test_infra().await;
    let env = infra.isolated_env().await.unwrap();
    let pool = env.pool(2).await.unwrap();
    let tenant = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'clock')")
        .bind(tenant)
        .execute(&pool)
        .await
        .unwrap();
    let write_intent = |next_attempt_at: DateTime<Utc>| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO revocation_outbox (tenant_id, workspace_id, connection_id, provider, field, sealed_token, reason, next_attempt_at) \
                 VALUES ($1, $2, $3, 'gmail', 'refresh', '\\x00', 'unstored_grant', $4)",
            )
            .bind(tenant)
            .bind(uuid::Uuid::new_v4())
            .bind(uuid::Uuid::new_v4())
            .bind(next_attempt_at)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    let lease = sqlx::postgres::types::PgInterval::try_from(Duration::from_secs(30)).unwrap();
    let reading = Utc::now();
    let behind = reading - chrono::Duration::hours(1);
    let claimed = claim_due(&pool, lease, || {
        let written = write_intent(behind);
        async move {
            written.await;
            reading
        }
    })
    .await
    .unwrap();
    assert!(
        claimed.is_none(),
        "an intent written while the claim read its clock was taken"
    );
    let claimed = claim_due(&pool, lease, || async { reading })
        .await
        .unwrap()
        .expect("the intent, written before the claim and an hour overdue, is taken");
    assert_eq!(
        claimed.next_attempt_at.timestamp_micros(),
        (reading + chrono::Duration::seconds(30)).timestamp_micros()
    );
}

/// A moved clock wakes the outbox workers at once. With an interval of an hour, a revocation the
/// provider refused is delivered as soon as the clock passes its retry time; a worker that only
/// slept out its interval would still hold it when the bound below runs out.
#[tokio::test]
async fn a_moved_clock_wakes_the_outbox_worker() {
    let app = spawn_app_with(ServiceOptions {
        outbox_interval: Duration::from_secs(3600),
        ..ServiceOptions::default()
    })
    .await;
    let t = app
        .tenant("wake", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(t.owner, t.workspace, Provider::Box)
        .await
        .unwrap();
    app.sut
        .provider
        .configure(Provider::Box, |s| s.revoke_fails = true);
    let r = app.revoke(&t, Provider::Box).await;
    assert_eq!(r.status, reqwest::StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["provider_revocation"], "pending", "{}", r.body);
    let db = app.db();
    assert_eq!(
        harbor_harness::oracles::outbox_intents(db, Some(t.workspace))
            .await
            .unwrap(),
        1,
        "the refused revocation waits in the outbox"
    );
    app.sut
        .provider
        .configure(Provider::Box, |s| s.revoke_fails = false);
    // Past any retry time the outbox sets, and past every lease.
    app.advance_clock(Duration::from_secs(24 * 3600)).await;
    harbor_harness::oracles::until_outbox_empty(db, Some(t.workspace), Duration::from_secs(30))
        .await
        .expect("the worker delivered the revocation after the clock moved, not an hour later");
    app.stop().await;
}

/// A provider that limits the revocation itself (429 with `Retry-After`): the intent is due again
/// no sooner than the provider's delay — not after the outbox's first back-off of one second,
/// which would only spend the next window's budget. The worker then calls the provider once for
/// all the intents it holds while the limit lasts (the others are put off without a call), and
/// delivers them all once it has passed.
#[tokio::test]
async fn a_rate_limited_revocation_waits_out_the_providers_retry_after() {
    let app = spawn_app_with(ServiceOptions {
        replicas: 1,
        outbox_interval: Duration::from_secs(3600),
        ..ServiceOptions::default()
    })
    .await;
    let p = Provider::Box;
    let mut tenants = Vec::new();
    for name in ["limited-a", "limited-b"] {
        let t = app.tenant(name, true, ConnectionStatus::NotConnected).await;
        app.connect(t.owner, t.workspace, p).await.unwrap();
        tenants.push(t);
    }
    app.sut.provider.configure(p, |s| s.rate_limited = true);
    let db = app.db();
    let delay =
        chrono::Duration::seconds(harbor_harness::fake_provider::RATE_LIMIT_RETRY_AFTER as i64);
    for t in &tenants {
        let asked = app.sut.clock.now();
        let r = app.revoke(t, p).await;
        assert_eq!(r.status, reqwest::StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["provider_revocation"], "pending", "{}", r.body);
        let due: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
            "SELECT next_attempt_at FROM revocation_outbox WHERE workspace_id = $1",
        )
        .bind(t.workspace)
        .fetch_one(db)
        .await
        .unwrap();
        assert!(
            due >= asked + delay,
            "due at {due}, asked at {asked}: sooner than the provider's Retry-After of {delay}"
        );
    }
    // Both due, the provider still limiting: the worker's pass tries one and puts the other off.
    let before = app.sut.provider.counters(p).revocations;
    app.advance_clock(Duration::from_secs(8)).await;
    within("the worker's pass over both intents", async {
        loop {
            let tried: i64 =
                sqlx::query_scalar("SELECT count(*) FROM revocation_outbox WHERE attempts >= 1")
                    .fetch_one(db)
                    .await
                    .unwrap();
            if tried == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        app.sut.provider.counters(p).revocations - before,
        1,
        "one call while the provider's limit lasts, not one per intent"
    );
    app.sut.provider.configure(p, |s| s.rate_limited = false);
    app.advance_clock(Duration::from_secs(24 * 3600)).await;
    for t in &tenants {
        harbor_harness::oracles::until_outbox_empty(db, Some(t.workspace), Duration::from_secs(30))
            .await
            .expect("delivered once the provider's delay had passed");
    }
    app.stop().await;
}

/// A callback whose store, made at once, lost its commit's reply and could not learn what became
/// of the transaction leaves the grant to the outbox through an intent written then
/// (`oauth::grant::after_failed_commit`). Its worker drops a fresh grant's intent whose row holds
/// that grant — the store committed — instead of revoking a stored grant. An intent of the same
/// shape that is not marked a callback's fresh grant (a rotated refresh token written ahead by a
/// release before migration 0010: its grant id is its row's) is revoked, as every unstored grant
/// is.
#[tokio::test]
async fn the_outbox_drops_a_fresh_grants_intent_whose_row_holds_it() {
    let app = spawn_app_with(ServiceOptions::default()).await;
    let t = app
        .tenant("stored", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(t.owner, t.workspace, Provider::Qbo)
        .await
        .unwrap();
    let db = app.db();
    // The intent such a request writes: the row's grant and its sealed refresh token, its lease
    // long over.
    let write_intent = "INSERT INTO revocation_outbox (tenant_id, workspace_id, connection_id, \
           provider, grant_id, field, sealed_token, reason, next_attempt_at, fresh_grant) \
         SELECT tenant_id, workspace_id, id, provider, $2, 'refresh', $3, 'unstored_grant', \
           '2000-01-01', $4 FROM connections WHERE workspace_id = $1 AND provider = 'qbo'";
    let (grant, sealed): (uuid::Uuid, Vec<u8>) = sqlx::query_as(
        "SELECT grant_id, refresh_token FROM connections WHERE workspace_id = $1 AND provider = 'qbo'",
    )
    .bind(t.workspace.0)
    .fetch_one(db)
    .await
    .unwrap();
    // Marked a callback's: dropped, nothing revoked. Then the same intent unmarked: revoked.
    for (fresh_grant, revocations) in [(true, 0), (false, 1)] {
        sqlx::query(write_intent)
            .bind(t.workspace.0)
            .bind(grant)
            .bind(&sealed)
            .bind(fresh_grant)
            .execute(db)
            .await
            .unwrap();
        harbor_harness::oracles::until_outbox_empty(db, Some(t.workspace), Duration::from_secs(30))
            .await
            .expect("the worker took the intent");
        assert_eq!(
            app.sut.provider.counters(Provider::Qbo).revocations,
            revocations,
            "fresh_grant = {fresh_grant}"
        );
    }
    let found: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'revocation.outbox' AND outcome = 'found_stored'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(found, 1, "the worker says why it revoked nothing");
    app.stop().await;
}
