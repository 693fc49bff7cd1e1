//! The threat model checklist's unit tests, against real Redis and PostgreSQL: the OAuth state's
//! lifetime and single use, token encryption, tenant filtering.

use super::*;

#[tokio::test]
async fn state_expires_after_ten_minutes() {
    let app = spawn_app().await;
    let t = app
        .tenant("expiry", true, ConnectionStatus::NotConnected)
        .await;
    let consent = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    app.advance_clock(Duration::from_secs(601)).await;
    callback(&app, t.owner.0, Provider::Gmail, &consent)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "OAUTH_STATE_INVALID");
    assert_eq!(
        app.sut.provider.counters(Provider::Gmail).code_exchanges,
        0,
        "an expired state reaches no provider"
    );
    assert!(
        state_keys(&app).await.is_empty(),
        "the expired state is gone"
    );
    assert_ne!(
        row(&app, t.workspace, Provider::Gmail).await.status,
        "CONNECTED"
    );
    app.stop().await;
}

#[tokio::test]
async fn state_is_one_time_use() {
    let app = spawn_app().await;
    let t = app
        .tenant("once", true, ConnectionStatus::NotConnected)
        .await;
    let consent = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    assert_eq!(state_keys(&app).await.len(), 1);
    let ok = callback(&app, t.owner.0, Provider::Gmail, &consent).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["status"], "CONNECTED");
    assert!(state_keys(&app).await.is_empty(), "deleted by the callback");
    callback(&app, t.owner.0, Provider::Gmail, &consent)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "OAUTH_STATE_INVALID");
    assert_eq!(app.sut.provider.counters(Provider::Gmail).code_exchanges, 1);
    app.stop().await;
}

#[tokio::test]
async fn token_encryption_and_decryption_work() {
    let app = spawn_app().await;
    let t = app
        .tenant("crypto", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(t.owner, t.workspace, Provider::Box)
        .await
        .unwrap();
    let r = row(&app, t.workspace, Provider::Box).await;
    let ring = app.sut.key_ring();
    let access = decrypt(
        ring,
        &r,
        Provider::Box,
        TokenField::Access,
        r.access.as_ref().unwrap(),
    )
    .unwrap();
    let refresh = decrypt(
        ring,
        &r,
        Provider::Box,
        TokenField::Refresh,
        r.refresh.as_ref().unwrap(),
    )
    .unwrap();
    assert!(
        app.sut.provider.is_live(&access) && app.sut.provider.is_live(&refresh),
        "the stored tokens are the issued ones"
    );
    assert_eq!(r.key_id.as_deref(), Some(ring.primary_key_id()));
    let sealed = r.access.unwrap();
    assert_eq!(vault::key_id_of(&sealed).unwrap(), ring.primary_key_id());
    assert!(
        !String::from_utf8_lossy(&sealed).contains(CANARY_PREFIX),
        "ciphertext, not plaintext"
    );
    app.stop().await;
}

#[tokio::test]
async fn tenant_filtering_prevents_cross_tenant_access() {
    let app = spawn_app().await;
    let a = app
        .tenant("rls-a", true, ConnectionStatus::NotConnected)
        .await;
    let b = app
        .tenant("rls-b", true, ConnectionStatus::NotConnected)
        .await;
    for t in [&a, &b] {
        app.connect(t.owner, t.workspace, Provider::Gmail)
            .await
            .unwrap();
        let r = sync(&app, t, Provider::Gmail, 0).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    // Through the API: each workspace sees its own two documents, and B's workspace is a 404 for A.
    let docs = app
        .call(
            Method::GET,
            format!("/v1/workspaces/{}/documents", a.workspace),
        )
        .as_user(a.member.0)
        .send()
        .await;
    assert_eq!(
        docs.body["documents"].as_array().unwrap().len(),
        2,
        "{}",
        docs.body
    );
    app.call(
        Method::GET,
        format!("/v1/workspaces/{}/documents", b.workspace),
    )
    .as_user(a.member.0)
    .send()
    .await
    .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    // A query that forgot its tenant filter, run as the service's role with tenant A set: row-level
    // security returns A's rows only.
    let mut tx = app.db().begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE harbor_app")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT set_config('harbor.tenant_id', $1, true)")
        .bind(a.tenant.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let tenants: Vec<TenantId> = sqlx::query_scalar("SELECT tenant_id FROM documents")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        tenants,
        vec![a.tenant, a.tenant],
        "no foreign row, even without WHERE tenant_id"
    );
    let foreign: i64 = sqlx::query_scalar("SELECT count(*) FROM connections WHERE tenant_id <> $1")
        .bind(a.tenant)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(foreign, 0);
    // And with no tenant set, nothing at all.
    sqlx::query("SELECT set_config('harbor.tenant_id', '', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM documents")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(all, 0);
    tx.rollback().await.unwrap();
    assert_eq!(
        app.count("SELECT count(*) FROM documents").await,
        4,
        "the owner sees both tenants' rows"
    );
    // A user's tenant never changes (replicas remember it, migration 0014) — not even for a user
    // with no membership, whom no foreign key holds, and not even for the tables' owner.
    let loner = uuid::Uuid::new_v4();
    insert_user(&app, loner, a.tenant).await;
    let moved = sqlx::query("UPDATE users SET tenant_id = $1 WHERE id = $2")
        .bind(b.tenant)
        .bind(loner)
        .execute(app.db())
        .await
        .expect_err("a user's tenant changed");
    assert!(moved.to_string().contains("never changes"), "{moved}");
    app.stop().await;
}
