//! Refresh: before a sync, keeping the old refresh token, single-flight across replicas, an
//! `invalid_grant` that asks for a reconnect, revocation at the provider.

use super::*;

#[tokio::test]
async fn token_refresh_before_sync_works() {
    // QuickBooks rotates its refresh tokens (Google does not: see the dialect table).
    let app = spawn_app().await;
    let t = app
        .tenant("refresh", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(t.owner, t.workspace, Provider::Qbo)
        .await
        .unwrap();
    let ring = app.sut.key_ring();
    let before = row(&app, t.workspace, Provider::Qbo).await;
    let old_refresh = decrypt(
        ring,
        &before,
        Provider::Qbo,
        TokenField::Refresh,
        before.refresh.as_ref().unwrap(),
    )
    .unwrap();
    // Fresh token: no refresh.
    let r = sync(&app, &t, Provider::Qbo, 0).await;
    assert_eq!(
        (r.status, r.body["refreshed"].as_bool()),
        (StatusCode::OK, Some(false)),
        "{}",
        r.body
    );
    // 58 minutes later the one-hour token is inside the 5-minute margin.
    app.advance_clock(Duration::from_secs(58 * 60)).await;
    let r = sync(&app, &t, Provider::Qbo, 0).await;
    assert_eq!(
        (r.status, r.body["refreshed"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{}",
        r.body
    );
    assert_eq!(r.body["documents_synced"], 2);
    let after = row(&app, t.workspace, Provider::Qbo).await;
    let new_refresh = decrypt(
        ring,
        &after,
        Provider::Qbo,
        TokenField::Refresh,
        after.refresh.as_ref().unwrap(),
    )
    .unwrap();
    assert_ne!(
        old_refresh, new_refresh,
        "the rotated refresh token is stored"
    );
    assert!(!app.sut.provider.is_live(&old_refresh) && app.sut.provider.is_live(&new_refresh));
    let c = app.sut.provider.counters(Provider::Qbo);
    assert_eq!((c.refreshes_ok, c.refreshes_invalid_grant), (1, 0));
    let view = app
        .call(
            Method::GET,
            format!("/v1/workspaces/{}/connections", t.workspace),
        )
        .as_user(t.member.0)
        .send()
        .await;
    let qbo = view.body["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "qbo")
        .unwrap()
        .clone();
    assert_eq!(qbo["last_refresh_outcome"], "ok");
    assert_eq!(qbo["has_refresh_token"], true);
    app.stop().await;
}

#[tokio::test]
async fn refresh_keeps_the_old_refresh_token_when_the_provider_sends_none() {
    let app = spawn_app().await;
    let t = app
        .tenant("norotate", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(t.owner, t.workspace, Provider::Box)
        .await
        .unwrap();
    app.sut
        .provider
        .configure(Provider::Box, |s| s.rotate_refresh_tokens = false);
    let ring = app.sut.key_ring();
    let before = row(&app, t.workspace, Provider::Box).await;
    let old = decrypt(
        ring,
        &before,
        Provider::Box,
        TokenField::Refresh,
        before.refresh.as_ref().unwrap(),
    )
    .unwrap();
    app.advance_clock(Duration::from_secs(58 * 60)).await;
    assert_eq!(
        sync(&app, &t, Provider::Box, 0).await.body["refreshed"],
        true
    );
    let after = row(&app, t.workspace, Provider::Box).await;
    let kept = decrypt(
        ring,
        &after,
        Provider::Box,
        TokenField::Refresh,
        after.refresh.as_ref().unwrap(),
    )
    .unwrap();
    assert_eq!(old, kept);
    app.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_syncs_on_two_replicas_refresh_once() {
    let app = spawn_app_with(ServiceOptions {
        replicas: 2,
        ..ServiceOptions::default()
    })
    .await;
    let t = app
        .tenant("herd", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(t.owner, t.workspace, Provider::Qbo)
        .await
        .unwrap();
    app.advance_clock(Duration::from_secs(58 * 60)).await;
    let replies =
        futures::future::join_all((0..50).map(|i| sync(&app, &t, Provider::Qbo, i % 2))).await;
    for r in &replies {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let refreshed = replies
        .iter()
        .filter(|r| r.body["refreshed"] == true)
        .count();
    assert_eq!(refreshed, 1, "exactly one sync refreshed");
    let c = app.sut.provider.counters(Provider::Qbo);
    assert_eq!(
        (c.refreshes, c.refreshes_invalid_grant),
        (1, 0),
        "one refresh at the provider, none refused"
    );
    assert_eq!(c.resource_unauthorized, 0);
    app.stop().await;
}

#[tokio::test]
async fn invalid_grant_on_refresh_requires_reconnect() {
    let app = spawn_app().await;
    let t = app
        .tenant("dead", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(t.owner, t.workspace, Provider::Slack)
        .await
        .unwrap();
    app.sut.provider.configure(Provider::Slack, |s| {
        s.token_fault = Some(Fault::InvalidGrant)
    });
    // Slack's rotating access tokens last 12 hours: 11 h 58 min later it is inside the margin.
    app.advance_clock(Duration::from_secs(12 * 3600 - 120))
        .await;
    sync(&app, &t, Provider::Slack, 0)
        .await
        .assert_error(StatusCode::CONFLICT, "RECONNECT_REQUIRED");
    let r = row(&app, t.workspace, Provider::Slack).await;
    assert_eq!(r.status, "REVOKED");
    assert!(r.access.is_none() && r.refresh.is_none(), "tokens wiped");
    sync(&app, &t, Provider::Slack, 0)
        .await
        .assert_error(StatusCode::CONFLICT, "CONNECTION_NOT_CONNECTED");
    assert_eq!(
        audit_outcomes(&app, "connection.refresh").await,
        ["invalid_grant"]
    );
    app.stop().await;
}

#[tokio::test]
async fn revoke_calls_the_provider_and_wipes_tokens() {
    let app = spawn_app().await;
    let t = app
        .tenant("revoke", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(t.owner, t.workspace, Provider::Box)
        .await
        .unwrap();
    let ring = app.sut.key_ring();
    let before = row(&app, t.workspace, Provider::Box).await;
    let refresh = decrypt(
        ring,
        &before,
        Provider::Box,
        TokenField::Refresh,
        before.refresh.as_ref().unwrap(),
    )
    .unwrap();
    let r = app.revoke(&t, Provider::Box).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "REVOKED");
    assert_eq!(app.sut.provider.counters(Provider::Box).revocations, 1);
    assert!(
        !app.sut.provider.is_live(&refresh),
        "the grant is dead at the provider"
    );
    let after = row(&app, t.workspace, Provider::Box).await;
    assert!(after.access.is_none() && after.refresh.is_none() && after.key_id.is_none());
    assert_eq!(r.body["provider_revocation"], "confirmed");
    let revocations: Vec<String> =
        sqlx::query_scalar("SELECT detail->>'provider_revocation' FROM audit_events WHERE action LIKE 'revoke%' ORDER BY id")
            .fetch_all(app.db())
            .await
            .unwrap();
    assert_eq!(
        revocations,
        ["pending", "confirmed"],
        "committed as pending, then the provider's answer"
    );
    // Revocation at a provider that is down still wipes locally, and says so.
    let t2 = app
        .tenant("revoke-down", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(t2.owner, t2.workspace, Provider::Box)
        .await
        .unwrap();
    app.sut
        .provider
        .configure(Provider::Box, |s| s.revoke_fails = true);
    let r = app.revoke(&t2, Provider::Box).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["provider_revocation"], "pending",
        "the caller learns the grant may still be live, and that the outbox keeps trying"
    );
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM revocation_outbox WHERE provider = 'box'")
            .fetch_one(app.db())
            .await
            .unwrap();
    assert_eq!(kept, 1, "the refused revocation stays in the outbox");
    // And an operator can see it (`harbor-service outbox`): pending, not yet stuck.
    let status = harbor_service::outbox::status(app.db()).await.unwrap();
    assert_eq!(status.by_reason.get("revoke"), Some(&1), "{status:?}");
    assert_eq!(status.stuck, 0, "{status:?}");
    assert!(status.oldest.is_some(), "{status:?}");
    assert!(row(&app, t2.workspace, Provider::Box)
        .await
        .access
        .is_none());
    app.stop().await;
}
