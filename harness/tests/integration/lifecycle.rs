//! Connection lifecycle (finding 7.1): disconnect and revoke exist, are admin-only, audited, and
//! refuse invalid transitions with 409 INVALID_TRANSITION.

use harbor_service::lifecycle::ConnectionStatus;
use reqwest::{Method, StatusCode};

use crate::helpers::spawn_app;

async fn status_of(
    app: &crate::helpers::TestApp,
    w: harbor_service::domain::WorkspaceId,
    p: &str,
) -> String {
    sqlx::query_scalar("SELECT status FROM connections WHERE workspace_id = $1 AND provider = $2")
        .bind(w)
        .bind(p)
        .fetch_one(app.db())
        .await
        .unwrap()
}

#[tokio::test]
async fn disconnect_and_revoke_follow_the_state_machine() {
    let app = spawn_app().await;
    let t = app.tenant("life", true, ConnectionStatus::Connected).await;
    let base = format!("/v1/workspaces/{}/connections", t.workspace);

    let r = app
        .call(Method::POST, format!("{base}/qbo/disconnect"))
        .as_user(t.owner.0)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "DISCONNECTED");
    assert_eq!(status_of(&app, t.workspace, "qbo").await, "DISCONNECTED");

    app.call(Method::POST, format!("{base}/qbo/disconnect"))
        .as_user(t.owner.0)
        .send()
        .await
        .assert_error(StatusCode::CONFLICT, "INVALID_TRANSITION");
    app.call(Method::POST, format!("{base}/qbo/revoke"))
        .as_user(t.owner.0)
        .send()
        .await
        .assert_error(StatusCode::CONFLICT, "INVALID_TRANSITION");
    app.call(Method::POST, format!("{base}/gmail/disconnect"))
        .as_user(t.owner.0)
        .send()
        .await
        .assert_error(StatusCode::CONFLICT, "INVALID_TRANSITION");

    // Revoke from CONNECTED.
    harbor_harness::fixtures::connection_status(
        app.db(),
        t.workspace,
        harbor_service::domain::Provider::Slack,
        ConnectionStatus::Connected,
    )
    .await
    .unwrap();
    let r = app
        .call(Method::POST, format!("{base}/slack/revoke"))
        .as_user(t.owner.0)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(status_of(&app, t.workspace, "slack").await, "REVOKED");
    // REVOKED can still be disconnected.
    let r = app
        .call(Method::POST, format!("{base}/slack/disconnect"))
        .as_user(t.owner.0)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let audit: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, outcome FROM audit_events WHERE workspace_id = $1 ORDER BY id",
    )
    .bind(t.workspace)
    .fetch_all(app.db())
    .await
    .unwrap();
    assert_eq!(
        audit,
        vec![
            ("disconnect".to_owned(), "DISCONNECTED".to_owned()),
            ("revoke".to_owned(), "REVOKED".to_owned()),
            ("disconnect".to_owned(), "DISCONNECTED".to_owned()),
        ],
        "every transition audited, refused ones not"
    );

    let list = app
        .call(Method::GET, &base)
        .as_user(t.member.0)
        .send()
        .await;
    assert_eq!(list.status, StatusCode::OK);
    let items = list.body["connections"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    for item in items {
        let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "connected",
                "expires_at",
                "has_refresh_token",
                "last_refresh_at",
                "last_refresh_outcome",
                "provider",
                "refresh_expires_at",
                "scopes",
                "status",
                "updated_at"
            ],
            "metadata only"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn plain_members_cannot_disconnect_or_revoke() {
    let app = spawn_app().await;
    let t = app.tenant("roles", true, ConnectionStatus::Connected).await;
    for op in ["disconnect", "revoke"] {
        app.call(
            Method::POST,
            format!("/v1/workspaces/{}/connections/qbo/{op}", t.workspace),
        )
        .as_user(t.member.0)
        .send()
        .await
        .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    assert_eq!(status_of(&app, t.workspace, "qbo").await, "CONNECTED");
    app.stop().await;
}

/// A member's request takes the workspace lock in the statement that enters the workspace
/// (`WorkspaceRequest::begin_locked`), but only for a caller it lets through: a plain member's
/// disconnect is refused while another session holds the lock, and an owner's waits for it.
#[tokio::test]
async fn a_refused_caller_does_not_wait_for_the_workspace_lock() {
    use harbor_harness::evidence::{self, BlockedBy};
    let app = spawn_app().await;
    let t = app
        .tenant("refused", true, ConnectionStatus::Connected)
        .await;
    let disconnect = format!("/v1/workspaces/{}/connections/qbo/disconnect", t.workspace);
    let key = harbor_service::locks::lock_key_for_workspace(t.workspace);
    let mut holder = app.db().begin().await.unwrap();
    sqlx::query(
        "SELECT set_config('application_name', 'harbor:H', true), pg_advisory_xact_lock($1, $2)",
    )
    .bind(key.classid)
    .bind(key.objid)
    .execute(&mut *holder)
    .await
    .unwrap();

    crate::helpers::within(
        "a plain member's disconnect, which must be refused without waiting for the lock",
        app.call(Method::POST, disconnect.clone())
            .as_user(t.member.0)
            .send(),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");

    // The owner's request, which takes the lock, borrows the app until it is answered.
    {
        let owner = app
            .call(Method::POST, disconnect)
            .as_user(t.owner.0)
            .actor("O")
            .send();
        tokio::pin!(owner);
        let probe = evidence::until_blocked(
            app.db(),
            "O",
            Some("H"),
            BlockedBy::Holder,
            crate::helpers::PROBE_LIMIT,
            || false,
        );
        let seen = tokio::select! {
            r = &mut owner => panic!("the owner's disconnect must wait for the holder; it answered {} {}", r.status, r.body),
            seen = probe => seen.unwrap_or_else(|e| panic!("the owner's disconnect must wait for the holder: {e:?}")),
        };
        assert_eq!(seen.awaited.locktype, "advisory", "{:?}", seen.awaited);
        holder.commit().await.unwrap();
        let r = crate::helpers::within("the owner's disconnect once the lock is free", owner).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    app.stop().await;
}

/// The callback's store checks the caller's role again, in the statement that takes the
/// workspace lock (`auth::admin_membership_then_lock`): an admin demoted between the authorize
/// and the callback is refused there (403) without waiting for the lock another session holds,
/// the connection is not stored, and the fresh grant is given back at the provider.
#[tokio::test]
async fn an_admin_demoted_before_the_callback_is_refused_at_the_store() {
    use harbor_service::domain::Provider;
    let app = spawn_app().await;
    let t = app
        .tenant("demoted", true, ConnectionStatus::NotConnected)
        .await;
    let consent = app
        .authorize_and_consent(0, t.admin, t.workspace, Provider::Qbo)
        .await
        .unwrap();
    sqlx::query("UPDATE memberships SET role = 'member' WHERE workspace_id = $1 AND user_id = $2")
        .bind(t.workspace)
        .bind(t.admin)
        .execute(app.db())
        .await
        .unwrap();
    // Another session holds the workspace lock: a caller the store refuses must not queue for it.
    let key = harbor_service::locks::lock_key_for_workspace(t.workspace);
    let mut holder = app.db().begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(key.classid)
        .bind(key.objid)
        .execute(&mut *holder)
        .await
        .unwrap();
    let (status, body) = crate::helpers::within(
        "the demoted admin's callback, which must be refused without waiting for the lock",
        app.callback(0, t.admin, Provider::Qbo, &consent),
    )
    .await
    .unwrap();
    holder.commit().await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "FORBIDDEN", "{body}");
    assert_ne!(status_of(&app, t.workspace, "qbo").await, "CONNECTED");
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM connections WHERE workspace_id = $1 AND access_token IS NOT NULL",
    )
    .bind(t.workspace)
    .fetch_one(app.db())
    .await
    .unwrap();
    assert_eq!(stored, 0, "no token stored for a refused store");
    // Every grant the provider issued is live in a row or given back (the outbox drained).
    harbor_harness::oracles::until_outbox_empty(app.db(), None, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    app.assert_grants_accounted().await;
    app.stop().await;
}
