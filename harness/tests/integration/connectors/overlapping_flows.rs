//! Flows and grants that overlap: an older flow cannot complete or reset a newer one, a sync whose
//! grant was replaced stores nothing, the provider counts each grant apart.

use super::*;

#[tokio::test]
async fn an_older_flow_cannot_complete_or_reset_a_newer_one() {
    let app = spawn_app().await;
    let t = app
        .tenant("flows", true, ConnectionStatus::NotConnected)
        .await;
    // An admin starts connecting QuickBooks to their own account; the owner then starts the
    // real flow.
    let member = app
        .authorize_and_consent(0, t.admin, t.workspace, Provider::Qbo)
        .await
        .unwrap();
    let owner = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Qbo)
        .await
        .unwrap();
    // The admin's error redirect must not reset the owner's flow…
    let query = member.denied_query();
    app.call(Method::GET, format!("/v1/oauth/qbo/callback?{query}"))
        .as_user(t.admin.0)
        .send()
        .await
        .assert_error(StatusCode::FORBIDDEN, "CONSENT_DENIED");
    assert_eq!(
        row(&app, t.workspace, Provider::Qbo).await.status,
        "PENDING",
        "the newer flow is still waited for"
    );
    // …and a second older state cannot complete over it.
    let again = app
        .authorize_and_consent(0, t.admin, t.workspace, Provider::Qbo)
        .await
        .unwrap();
    let owner_again = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Qbo)
        .await
        .unwrap();
    callback(&app, t.admin.0, Provider::Qbo, &again)
        .await
        .assert_error(StatusCode::CONFLICT, "AUTHORIZATION_SUPERSEDED");
    assert_eq!(
        app.sut.provider.counters(Provider::Qbo).revocations,
        1,
        "the useless grant is given back"
    );
    // The owner's first flow was superseded by their second; the second completes.
    callback(&app, t.owner.0, Provider::Qbo, &owner)
        .await
        .assert_error(StatusCode::CONFLICT, "AUTHORIZATION_SUPERSEDED");
    let ok = callback(&app, t.owner.0, Provider::Qbo, &owner_again).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    app.stop().await;
}

#[tokio::test]
async fn a_sync_whose_grant_was_replaced_meanwhile_stores_nothing() {
    let app = spawn_app().await;
    let t = app
        .tenant("aba", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(t.owner, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    let sync_points = app.sut.replicas[0].sync.clone();
    let slot = harbor_syncpoint::SlotKey::new("S", "sync.before_fetch");
    sync_points.arm(slot.clone()).unwrap();
    let parked_sync = app
        .call(
            Method::POST,
            format!("/v1/workspaces/{}/connections/gmail/sync", t.workspace),
        )
        .as_user(t.member.0)
        .actor("S")
        .send();
    let reconnect = async {
        crate::helpers::within(
            "the sync to park",
            sync_points.until(slot.clone(), harbor_syncpoint::SlotState::Parked),
        )
        .await;
        // While the sync holds the old grant's access token: disconnect and connect again.
        let r = app
            .call(
                Method::POST,
                format!(
                    "/v1/workspaces/{}/connections/gmail/disconnect",
                    t.workspace
                ),
            )
            .as_user(t.owner.0)
            .send()
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        app.connect(t.owner, t.workspace, Provider::Gmail)
            .await
            .unwrap();
        sync_points.release(&slot).unwrap();
    };
    let (r, ()) = tokio::join!(parked_sync, reconnect);
    r.assert_error(StatusCode::CONFLICT, "AUTHORIZATION_SUPERSEDED");
    assert_eq!(
        app.count("SELECT count(*) FROM documents").await,
        0,
        "nothing fetched with the old grant is stored"
    );
    app.stop().await;
}

/// The provider counts each grant's calls apart (what lets exploration run sets side by side):
/// one workspace's refresh and another's revocation land on their own grants, and the provider's
/// totals are their sums.
#[tokio::test]
async fn the_provider_counts_each_grant_apart() {
    let app = spawn_app().await;
    let mut grants = Vec::new();
    for name in ["grant-a", "grant-b"] {
        let t = app.tenant(name, true, ConnectionStatus::NotConnected).await;
        let consent = app
            .authorize_and_consent(0, t.owner, t.workspace, Provider::Qbo)
            .await
            .unwrap();
        let (status, body) = app
            .callback(0, t.owner, Provider::Qbo, &consent)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        grants.push((t, consent.code));
    }
    // A's token goes stale and its sync refreshes; B is revoked.
    app.advance_clock(Duration::from_secs(58 * 60)).await;
    let r = sync(&app, &grants[0].0, Provider::Qbo, 0).await;
    assert_eq!(
        (r.status, &r.body["refreshed"]),
        (StatusCode::OK, &serde_json::json!(true)),
        "{}",
        r.body
    );
    let r = app.revoke(&grants[1].0, Provider::Qbo).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let a = app.sut.provider.grant_counters(&grants[0].1);
    let b = app.sut.provider.grant_counters(&grants[1].1);
    let seen = |c: harbor_harness::fake_provider::Counters| {
        (c.code_exchanges_ok, c.refreshes_ok, c.revocations)
    };
    assert_eq!(seen(a), (1, 1, 0), "A: its exchange and its refresh");
    assert_eq!(seen(b), (1, 0, 1), "B: its exchange and its revocation");
    assert!(
        a.resource_reads >= 1 && b.resource_reads == 0,
        "only A read documents"
    );
    let all = app.sut.provider.counters(Provider::Qbo);
    assert_eq!(
        seen(all),
        (2, 1, 1),
        "the provider's totals are the grants' sums"
    );
    assert_eq!(
        app.sut.provider.grant_counters("no-such-code"),
        Default::default(),
        "a code the provider never issued has no calls"
    );
    app.stop().await;
}
