//! Activation: happy path, not entitled, not ready for every non-CONNECTED status, idempotency
//! under concurrency, and the failure discipline (lock gone when the error arrives).

use harbor_service::lifecycle::ConnectionStatus;
use harbor_service::locks::lock_key_for_workspace;
use reqwest::StatusCode;

use crate::helpers::spawn_app;

#[tokio::test]
async fn activation_succeeds_once_then_reports_already_completed() {
    let app = spawn_app().await;
    let t = app.tenant("acme", true, ConnectionStatus::Connected).await;

    let first = app.activate(&t, None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["already_completed"], false);
    let second = app.activate(&t, None).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body["already_completed"], true);
    assert_eq!(first.body["activated_at"], second.body["activated_at"]);
    // A retry after the connection went away still learns that its activation happened.
    harbor_harness::fixtures::connection_status(
        app.db(),
        t.workspace,
        harbor_service::domain::Provider::Qbo,
        ConnectionStatus::Disconnected,
    )
    .await
    .unwrap();
    let retry = app.activate(&t, None).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert_eq!(retry.body["already_completed"], true);

    assert_eq!(app.activations_of(t.workspace).await, 1);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE workspace_id = $1 AND action = 'activation' AND outcome = 'activated' \
         AND actor_user_id = $2 AND request_id <> ''",
    )
    .bind(t.workspace)
    .bind(t.owner)
    .fetch_one(app.db())
    .await
    .unwrap();
    assert_eq!(
        audited, 1,
        "exactly one audit event for the activating call"
    );
    app.stop().await;
}

#[tokio::test]
async fn activation_refuses_a_workspace_that_is_not_entitled() {
    let app = spawn_app().await;
    let t = app
        .tenant("unpaid", false, ConnectionStatus::Connected)
        .await;
    app.activate(&t, None)
        .await
        .assert_error(StatusCode::CONFLICT, "ACTIVATION_NOT_ENTITLED");

    // No entitlement row at all is the same refusal.
    sqlx::query("DELETE FROM entitlements WHERE workspace_id = $1")
        .bind(t.workspace)
        .execute(app.db())
        .await
        .unwrap();
    app.activate(&t, None)
        .await
        .assert_error(StatusCode::CONFLICT, "ACTIVATION_NOT_ENTITLED");
    assert_eq!(
        app.count("SELECT count(*) FROM workspace_activations")
            .await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn activation_is_not_ready_for_every_status_but_connected() {
    let app = spawn_app().await;
    for status in [
        ConnectionStatus::NotConnected,
        ConnectionStatus::Pending,
        ConnectionStatus::Disconnected,
        ConnectionStatus::Revoked,
    ] {
        let t = app
            .tenant(
                &format!("t-{}", status.as_str().to_lowercase()),
                true,
                status,
            )
            .await;
        let reply = app.activate(&t, None).await;
        reply.assert_error(StatusCode::CONFLICT, "ACTIVATION_NOT_READY");
        assert!(reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(status.as_str()));
    }
    assert_eq!(
        app.count("SELECT count(*) FROM workspace_activations")
            .await,
        0,
        "no row for any refused workspace"
    );
    app.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_activations_create_one_row_and_one_first_caller() {
    let app = spawn_app().await;
    let t = app.tenant("rush", true, ConnectionStatus::Connected).await;
    let replies = futures::future::join_all((0..20).map(|_| app.activate(&t, None))).await;
    let mut firsts = 0;
    for r in &replies {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        if r.body["already_completed"] == false {
            firsts += 1;
        }
    }
    assert_eq!(
        firsts, 1,
        "exactly one call reports already_completed=false"
    );
    assert_eq!(app.activations_of(t.workspace).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn the_lock_is_gone_when_the_error_response_arrives() {
    let app = spawn_app().await;
    let t = app
        .tenant("fails", true, ConnectionStatus::NotConnected)
        .await;
    let key = lock_key_for_workspace(t.workspace);
    for round in 0..20 {
        let reply = app.activate(&t, Some("A")).await;
        reply.assert_error(StatusCode::CONFLICT, "ACTIVATION_NOT_READY");
        // Read the lock table the moment the response is in: nothing may still hold the key.
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = $1 AND objid::bigint = $2",
        )
        .bind(i64::from(key.classid as u32))
        .bind(i64::from(key.objid as u32))
        .fetch_one(app.db())
        .await
        .unwrap();
        assert_eq!(
            held, 0,
            "round {round}: the advisory lock outlived the error response"
        );
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'harbor:A' AND datname = current_database()",
        )
        .fetch_one(app.db())
        .await
        .unwrap();
        assert_eq!(
            open, 0,
            "round {round}: the failed transaction is still open"
        );
    }
    app.stop().await;
}

/// The lock-left oracle asks the lock manager first (a try of the lock) and reads `pg_locks` only
/// to name a holder: it must still fail on a lock held exclusively or shared, in either key form,
/// and pass once the holder lets go.
#[tokio::test]
async fn the_lock_left_oracle_fails_on_a_held_lock_and_names_its_holder() {
    use harbor_harness::evidence::AdvisoryKey;
    use harbor_harness::oracles::no_workspace_lock_held;
    let app = spawn_app().await;
    let t = app.tenant("held", true, ConnectionStatus::Connected).await;
    let key = lock_key_for_workspace(t.workspace);
    for bigint in [false, true] {
        let key = AdvisoryKey {
            classid: key.classid as u32,
            objid: key.objid as u32,
            bigint,
        };
        assert!(no_workspace_lock_held(app.db(), t.workspace, key)
            .await
            .is_ok());
        for mode in ["pg_advisory_lock", "pg_advisory_lock_shared"] {
            let mut holder = app.db().acquire().await.unwrap();
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut *holder)
                .await
                .unwrap();
            sqlx::query(&format!("SELECT {mode}({})", key.sql_arguments()))
                .execute(&mut *holder)
                .await
                .unwrap();
            let held = no_workspace_lock_held(app.db(), t.workspace, key)
                .await
                .expect_err("a held lock is left held");
            assert!(held.contains(&format!("pid: {pid}")), "{mode}: {held}");
            sqlx::query(&format!(
                "SELECT {}({})",
                mode.replace("lock", "unlock"),
                key.sql_arguments()
            ))
            .execute(&mut *holder)
            .await
            .unwrap();
            assert!(
                no_workspace_lock_held(app.db(), t.workspace, key)
                    .await
                    .is_ok(),
                "{mode}: let go"
            );
        }
    }
    app.stop().await;
}
