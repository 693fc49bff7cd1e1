//! The threat model checklist's integration tests: users and tenants authorizing at once, state
//! bound to its tenant, expiry, membership judged on fresh reads, refused authorizes' rate-limit cost.

use super::*;

#[tokio::test]
async fn two_simultaneous_users_authenticate_without_collision() {
    let app = spawn_app_with(ServiceOptions {
        replicas: 2,
        ..ServiceOptions::default()
    })
    .await;
    let a = app
        .tenant("pair-a", true, ConnectionStatus::NotConnected)
        .await;
    let b = app
        .tenant("pair-b", true, ConnectionStatus::NotConnected)
        .await;
    let (ca, cb) = tokio::join!(
        app.authorize_and_consent(0, a.owner, a.workspace, Provider::Qbo),
        app.authorize_and_consent(1, b.owner, b.workspace, Provider::Qbo),
    );
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    let (ra, rb) = tokio::join!(
        app.callback(1, a.owner, Provider::Qbo, &ca),
        app.callback(0, b.owner, Provider::Qbo, &cb),
    );
    assert_eq!(ra.unwrap().0, StatusCode::OK);
    assert_eq!(rb.unwrap().0, StatusCode::OK);
    let ring = app.sut.key_ring();
    let ta = row(&app, a.workspace, Provider::Qbo).await;
    let tb = row(&app, b.workspace, Provider::Qbo).await;
    let at = decrypt(
        ring,
        &ta,
        Provider::Qbo,
        TokenField::Access,
        ta.access.as_ref().unwrap(),
    )
    .unwrap();
    let bt = decrypt(
        ring,
        &tb,
        Provider::Qbo,
        TokenField::Access,
        tb.access.as_ref().unwrap(),
    )
    .unwrap();
    assert_ne!(at, bt, "each tenant holds its own grant");
    app.stop().await;
}

#[tokio::test]
async fn a_user_provisioned_again_in_another_tenant_is_judged_on_a_fresh_read() {
    // A replica remembers each user's tenant (`UserTenants`). A user's row cannot change tenant
    // (migration 0014), but its id can be deleted and provisioned again elsewhere; a replica that
    // still remembers the old tenant must read again before it refuses the user's own state.
    let app = spawn_app_with(ServiceOptions {
        replicas: 2,
        ..ServiceOptions::default()
    })
    .await;
    let a = app
        .tenant("before", true, ConnectionStatus::NotConnected)
        .await;
    let b = app
        .tenant("after", true, ConnectionStatus::NotConnected)
        .await;
    let user = a.member;
    // Replica 0 learns the user's tenant (A) from a workspace request.
    let listed = app
        .call(
            Method::GET,
            format!("/v1/workspaces/{}/connections", a.workspace),
        )
        .as_user(user.0)
        .on_replica(0)
        .send()
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    // The same id, provisioned again as an admin of tenant B.
    delete_user(&app, user).await;
    insert_user(&app, user.0, b.tenant).await;
    sqlx::query(
        "INSERT INTO memberships (tenant_id, workspace_id, user_id, role) VALUES ($1, $2, $3, 'admin')",
    )
    .bind(b.tenant)
    .bind(b.workspace)
    .bind(user)
    .execute(app.db())
    .await
    .unwrap();
    // Authorized on replica 1; the callback on replica 0, which still remembers tenant A.
    let consent = app
        .authorize_and_consent(1, user, b.workspace, Provider::Qbo)
        .await
        .unwrap();
    let (status, body) = app
        .callback(0, user, Provider::Qbo, &consent)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "CONNECTED", "{body}");
    assert_eq!(
        app.count("SELECT count(*) FROM audit_events WHERE outcome = 'csrf_suspected'")
            .await,
        0,
        "nothing audited on the stale tenant"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_admin_the_replica_remembers_but_removed_since_is_refused_once_on_the_fast_path() {
    // Authorize charges the rate limit and stores its state before its transaction for a caller
    // the replica last read as the workspace's admin. Here that caller's id was deleted and
    // provisioned again, as an admin of another tenant: the transaction refuses (404), the state
    // is discarded, and the replica forgets, so a second try is refused before anything is
    // charged; the caller's own workspace is authorized on its own tenant. (A tenant quota that
    // refills once a minute: the bucket's key lives that long, and is read twice below.)
    let app = spawn_app_with(tenant_quota(1, 20)).await;
    let a = app
        .tenant("was", true, ConnectionStatus::NotConnected)
        .await;
    let b = app
        .tenant("now", true, ConnectionStatus::NotConnected)
        .await;
    let user = a.owner;
    let listed = app
        .call(
            Method::GET,
            format!("/v1/workspaces/{}/connections", a.workspace),
        )
        .as_user(user.0)
        .send()
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    delete_user(&app, user).await;
    insert_user(&app, user.0, b.tenant).await;
    sqlx::query(
        "INSERT INTO memberships (tenant_id, workspace_id, user_id, role) VALUES ($1, $2, $3, 'admin')",
    )
    .bind(b.tenant)
    .bind(b.workspace)
    .bind(user)
    .execute(app.db())
    .await
    .unwrap();
    let authorize_a = || {
        app.call(
            Method::POST,
            format!("/v1/workspaces/{}/connections/qbo/authorize", a.workspace),
        )
        .as_user(user.0)
        .send()
    };
    let refused = authorize_a().await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);
    assert!(
        state_keys(&app).await.is_empty(),
        "the refused request's state was discarded"
    );
    let bucket = format!("authorize:tenant:{}", a.tenant);
    let charged = || async {
        evidence::redis_dump(&app.sut.env.redis_url, &app.sut.env.redis_key_prefix)
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.key.ends_with(&bucket))
            .map(|e| e.value)
    };
    let before = charged().await;
    assert!(
        before.is_some(),
        "the fast path charged the tenant it remembered"
    );
    let refused = authorize_a().await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);
    assert_eq!(
        charged().await,
        before,
        "forgotten: the second try is read first and charges nothing"
    );
    let consent = app
        .authorize_and_consent(0, user, b.workspace, Provider::Qbo)
        .await
        .unwrap();
    let (status, body) = app
        .callback(0, user, Provider::Qbo, &consent)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "CONNECTED", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_demoted_admin_spends_one_charge_however_many_authorizes_they_send_at_once() {
    // The replica read the admin as one, then the admin was demoted. Ten authorizes at once: the
    // first takes the replica's memory of the admin role and charges the tenant once; the others
    // read the membership first and are refused before anything is charged. The owner finds two
    // of the tenant's three left (a quota that refills once a minute).
    let app = spawn_app_with(tenant_quota(1, 3)).await;
    let t = app
        .tenant("demoted", true, ConnectionStatus::NotConnected)
        .await;
    let listed = app
        .call(
            Method::GET,
            format!("/v1/workspaces/{}/connections", t.workspace),
        )
        .as_user(t.admin.0)
        .send()
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    sqlx::query("UPDATE memberships SET role = 'member' WHERE user_id = $1")
        .bind(t.admin)
        .execute(app.db())
        .await
        .unwrap();
    let authorize = |user: UserId, provider: &'static str| {
        app.call(
            Method::POST,
            format!(
                "/v1/workspaces/{}/connections/{provider}/authorize",
                t.workspace
            ),
        )
        .as_user(user.0)
        .send()
    };
    let tries = futures::future::join_all((0..10).map(|_| authorize(t.admin, "qbo"))).await;
    for refused in &tries {
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    }
    assert!(
        state_keys(&app).await.is_empty(),
        "no state outlives a refused authorize"
    );
    for provider in ["qbo", "gmail"] {
        let owner = authorize(t.owner, provider).await;
        assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    }
    let third = authorize(t.owner, "slack").await;
    assert_eq!(
        third.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        third.body
    );
    app.stop().await;
}

#[tokio::test]
async fn refused_authorizes_spend_none_of_the_tenants_rate_limit() {
    // A plain member and an outsider, both known to the replica from a request of their own,
    // send authorize after authorize: each is refused before the rate limit is charged or a state
    // stored, so the tenant's admins keep their whole budget (three at once here).
    let app = spawn_app_with(tenant_quota(3, 3)).await;
    let t = app
        .tenant("guarded", true, ConnectionStatus::NotConnected)
        .await;
    let other = app
        .tenant("outside", true, ConnectionStatus::NotConnected)
        .await;
    for (user, workspace) in [(other.owner, other.workspace), (t.member, t.workspace)] {
        let listed = app
            .call(
                Method::GET,
                format!("/v1/workspaces/{workspace}/connections"),
            )
            .as_user(user.0)
            .send()
            .await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    }
    let authorize = |user: UserId, provider: &'static str| {
        app.call(
            Method::POST,
            format!(
                "/v1/workspaces/{}/connections/{provider}/authorize",
                t.workspace
            ),
        )
        .as_user(user.0)
        .send()
    };
    for _ in 0..5 {
        let outsider = authorize(other.owner, "qbo").await;
        assert_eq!(outsider.status, StatusCode::NOT_FOUND, "{}", outsider.body);
        let member = authorize(t.member, "qbo").await;
        assert_eq!(member.status, StatusCode::FORBIDDEN, "{}", member.body);
    }
    assert!(
        state_keys(&app).await.is_empty(),
        "no state stored for a refused caller"
    );
    for provider in ["qbo", "gmail", "slack"] {
        let admin = authorize(t.owner, provider).await;
        assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
    }
    assert_eq!(
        app.count("SELECT count(*) FROM connections WHERE status = 'PENDING'")
            .await,
        3
    );
    app.stop().await;
}

#[tokio::test]
async fn failed_callbacks_spend_the_guessers_budget_before_the_tenants() {
    // A plain member sends callback after callback with states that do not exist: each is charged
    // to their own failed-state budget first, and once that is spent they are refused before the
    // tenant's budget is charged. The tenant's admin still completes a flow (tenant burst 12, the
    // member's failed-state budget 5, thirty guesses).
    let app = spawn_app_with(ServiceOptions {
        rate_limits: RateLimits {
            failed_states_per_user: Quota {
                per_minute: 1,
                burst: 5,
            },
            ..tenant_quota(1, 12).rate_limits
        },
        ..ServiceOptions::default()
    })
    .await;
    let t = app
        .tenant("guessed", true, ConnectionStatus::NotConnected)
        .await;
    for n in 0..30 {
        let guess = app
            .call(
                Method::GET,
                format!("/v1/oauth/slack/callback?state=guess-{n}&code=x"),
            )
            .as_user(t.member.0)
            .send()
            .await;
        if n < 5 {
            guess.assert_error(StatusCode::BAD_REQUEST, "OAUTH_STATE_INVALID");
        } else {
            guess.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
            let said = guess.body.to_string();
            assert!(said.contains("failed-states limit"), "{said}");
        }
    }
    let consent = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    let (status, body) = app
        .callback(0, t.owner, Provider::Gmail, &consent)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_callback_answered_404_forgets_the_remembered_tenant() {
    // A user deleted after starting two flows: the first callback is judged on the remembered
    // tenant (404, its state spent); the second reads the tenant again, finds no user, and is
    // refused before it consumes its state (401).
    let app = spawn_app().await;
    let t = app
        .tenant("forgotten", true, ConnectionStatus::NotConnected)
        .await;
    let user = t.admin;
    let qbo = app
        .authorize_and_consent(0, user, t.workspace, Provider::Qbo)
        .await
        .unwrap();
    let gmail = app
        .authorize_and_consent(0, user, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    delete_user(&app, user).await;
    let (status, body) = app.callback(0, user, Provider::Qbo, &qbo).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .callback(0, user, Provider::Gmail, &gmail)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        state_keys(&app).await.len(),
        1,
        "the second flow's state was not consumed"
    );
    app.stop().await;
}

#[tokio::test]
async fn state_from_tenant_a_cannot_be_used_by_tenant_b_callback() {
    let app = spawn_app().await;
    let a = app
        .tenant("victim", true, ConnectionStatus::NotConnected)
        .await;
    let b = app
        .tenant("attacker", true, ConnectionStatus::NotConnected)
        .await;
    let consent = app
        .authorize_and_consent(0, a.owner, a.workspace, Provider::Qbo)
        .await
        .unwrap();
    // T2-T3: the attacker's user delivers A's state and code.
    callback(&app, b.owner.0, Provider::Qbo, &consent)
        .await
        .assert_error(StatusCode::FORBIDDEN, "OAUTH_STATE_MISMATCH");
    assert_eq!(
        audit_outcomes(&app, "oauth.callback").await,
        ["csrf_suspected", "csrf_suspected"],
        "one row per tenant"
    );
    // T4: the state is burned — not even its owner can use it now.
    callback(&app, a.owner.0, Provider::Qbo, &consent)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "OAUTH_STATE_INVALID");
    // T5: no connection for anyone, and the code never reached the token endpoint.
    assert_eq!(app.sut.provider.counters(Provider::Qbo).code_exchanges, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM connections WHERE status = 'CONNECTED'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM connections WHERE access_token IS NOT NULL")
            .await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn expired_state_is_rejected_with_a_proper_error() {
    let app = spawn_app().await;
    let t = app
        .tenant("late", true, ConnectionStatus::NotConnected)
        .await;
    let consent = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Slack)
        .await
        .unwrap();
    app.advance_clock(Duration::from_secs(599)).await;
    // Still valid one second before the deadline: the check is against created-at, not arbitrary.
    let ok = callback(&app, t.owner.0, Provider::Slack, &consent).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let again = app
        .authorize_and_consent(0, t.admin, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    app.advance_clock(Duration::from_secs(601)).await;
    let r = callback(&app, t.admin.0, Provider::Gmail, &again).await;
    r.assert_error(StatusCode::BAD_REQUEST, "OAUTH_STATE_INVALID");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    app.stop().await;
}
