//! The connector flow against the threat model's testing checklist (one named test per item), plus
//! the extra cases of the connector issue: key rotation, ciphertext swaps, provider mix-up, rate
//! limits, single-flight refresh, revocation at the provider.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use harbor_harness::evidence::{self, RedisEntry};
use harbor_harness::fake_provider::{Fault, CANARY_PREFIX};
use harbor_harness::fixtures::TenantWorkspace;
use harbor_harness::target::started::ServiceOptions;
use harbor_service::domain::{ConnectionId, Provider, TenantId, UserId, WorkspaceId};
use harbor_service::lifecycle::ConnectionStatus;
use harbor_service::ratelimit::{Quota, RateLimits};
use harbor_service::vault::{self, KeyRing, TokenBinding, TokenField};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};

use crate::helpers::{spawn_app, spawn_app_with, Reply, TestApp};

struct Row {
    id: ConnectionId,
    tenant: TenantId,
    grant: Option<uuid::Uuid>,
    status: String,
    access: Option<Vec<u8>>,
    refresh: Option<Vec<u8>>,
    key_id: Option<String>,
}

async fn row(app: &TestApp, w: WorkspaceId, p: Provider) -> Row {
    let (id, tenant, grant, status, access, refresh, key_id) = sqlx::query_as(
        "SELECT id, tenant_id, grant_id, status, access_token, refresh_token, token_key_id FROM connections \
         WHERE workspace_id = $1 AND provider = $2",
    )
    .bind(w)
    .bind(p.as_str())
    .fetch_one(app.db())
    .await
    .unwrap();
    Row {
        id,
        tenant,
        grant,
        status,
        access,
        refresh,
        key_id,
    }
}

fn decrypt(
    ring: &KeyRing,
    r: &Row,
    p: Provider,
    field: TokenField,
    sealed: &[u8],
) -> Result<String, vault::VaultError> {
    let binding = TokenBinding {
        tenant_id: r.tenant,
        connection_id: r.id,
        provider: p,
        field,
        grant_id: r.grant,
    };
    ring.decrypt(sealed, &binding)
        .map(|s| s.expose_secret().to_owned())
}

/// The harness's defaults with a tenant rate limit of `per_minute`, `burst` at once.
fn tenant_quota(per_minute: u32, burst: u32) -> ServiceOptions {
    let defaults = ServiceOptions::default();
    ServiceOptions {
        rate_limits: RateLimits {
            per_tenant: Quota { per_minute, burst },
            ..defaults.rate_limits
        },
        ..defaults
    }
}

async fn state_keys(app: &TestApp) -> Vec<RedisEntry> {
    evidence::redis_dump(&app.sut.env.redis_url, &app.sut.env.redis_key_prefix)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.key.contains("oauth:state:"))
        .collect()
}

async fn callback(
    app: &TestApp,
    user: uuid::Uuid,
    p: Provider,
    consent: &harbor_harness::fake_provider::Consent,
) -> Reply {
    app.call(
        Method::GET,
        format!("/v1/oauth/{p}/callback?{}", consent.callback_query()),
    )
    .as_user(user)
    .send()
    .await
}

async fn sync(app: &TestApp, t: &TenantWorkspace, p: Provider, replica: usize) -> Reply {
    app.call(
        Method::POST,
        format!("/v1/workspaces/{}/connections/{p}/sync", t.workspace),
    )
    .as_user(t.member.0)
    .on_replica(replica)
    .send()
    .await
}

/// A user of `tenant` with no membership, written straight into the database.
async fn insert_user(app: &TestApp, id: uuid::Uuid, tenant: TenantId) {
    sqlx::query("INSERT INTO users (id, tenant_id, email) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(tenant)
        .bind(format!("{id}@example.test"))
        .execute(app.db())
        .await
        .unwrap();
}

/// The user's memberships and row deleted, straight in the database (a deprovisioned user).
async fn delete_user(app: &TestApp, user: UserId) {
    for sql in [
        "DELETE FROM memberships WHERE user_id = $1",
        "DELETE FROM users WHERE id = $1",
    ] {
        sqlx::query(sql).bind(user).execute(app.db()).await.unwrap();
    }
}

async fn audit_outcomes(app: &TestApp, action: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT outcome FROM audit_events WHERE action = $1 ORDER BY id")
        .bind(action)
        .fetch_all(app.db())
        .await
        .unwrap()
}

// ---- Unit tests of the checklist (against real Redis and PostgreSQL) ----

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
    app.sut.clock.advance(Duration::from_secs(601));
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

// ---- Integration tests of the checklist ----

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
    app.sut.clock.advance(Duration::from_secs(599));
    // Still valid one second before the deadline: the check is against created-at, not arbitrary.
    let ok = callback(&app, t.owner.0, Provider::Slack, &consent).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let again = app
        .authorize_and_consent(0, t.admin, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    app.sut.clock.advance(Duration::from_secs(601));
    let r = callback(&app, t.admin.0, Provider::Gmail, &again).await;
    r.assert_error(StatusCode::BAD_REQUEST, "OAUTH_STATE_INVALID");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    app.stop().await;
}

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
    app.sut.clock.advance(Duration::from_secs(58 * 60));
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
    app.sut.clock.advance(Duration::from_secs(58 * 60));
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

// ---- Security tests of the checklist ----

/// Collects every log line the service writes (the canary search reads them).
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn database_dump_logs_redis_and_responses_show_no_plaintext_tokens() {
    let logs = LogCapture::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let app = spawn_app().await;
    let t = app
        .tenant("canary", true, ConnectionStatus::NotConnected)
        .await;
    let mut responses = Vec::new();
    for p in Provider::ALL {
        let consent = app
            .authorize_and_consent(0, t.owner, t.workspace, p)
            .await
            .unwrap();
        responses.push(
            callback(&app, t.owner.0, p, &consent)
                .await
                .body
                .to_string(),
        );
    }
    app.sut.clock.advance(Duration::from_secs(58 * 60));
    responses.push(sync(&app, &t, Provider::Gmail, 0).await.body.to_string());
    responses.push(sync(&app, &t, Provider::Slack, 0).await.body.to_string());
    let replay = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Qbo)
        .await;
    responses.push(format!("{replay:?}"));
    for path in ["connections", "documents"] {
        let r = app
            .call(
                Method::GET,
                format!("/v1/workspaces/{}/{path}", t.workspace),
            )
            .as_user(t.owner.0)
            .send()
            .await;
        responses.push(r.body.to_string());
    }
    // A failing flow too: errors must not echo the code.
    let t2 = app
        .tenant("canary-2", true, ConnectionStatus::NotConnected)
        .await;
    let c = app
        .authorize_and_consent(0, t2.admin, t2.workspace, Provider::Qbo)
        .await
        .unwrap();
    app.sut
        .provider
        .configure(Provider::Qbo, |s| s.token_fault = Some(Fault::ServerError));
    responses.push(
        callback(&app, t2.admin.0, Provider::Qbo, &c)
            .await
            .body
            .to_string(),
    );
    responses.push(
        callback(&app, t2.admin.0, Provider::Qbo, &c)
            .await
            .body
            .to_string(),
    );
    let canaries = app.sut.provider.issued();
    assert!(
        canaries.len() >= 12,
        "codes, access and refresh tokens were issued: {}",
        canaries.len()
    );

    let dump = evidence::pg_dump(&app.sut.env.database_url)
        .await
        .expect("pg_dump of the scenario database");
    assert!(dump.contains("COPY public.connections"), "a real dump");
    let redis = evidence::redis_dump(&app.sut.env.redis_url, &app.sut.env.redis_key_prefix)
        .await
        .unwrap();
    let redis_text = serde_json::to_string(&redis).unwrap();
    let log_text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        log_text.contains("request finished"),
        "the service's logs were captured"
    );
    for canary in &canaries {
        assert!(!dump.contains(canary.as_str()), "pg_dump contains {canary}");
        assert!(
            !redis_text.contains(canary.as_str()),
            "Redis contains {canary}"
        );
        assert!(
            !log_text.contains(canary.as_str()),
            "the logs contain {canary}"
        );
        for r in &responses {
            assert!(
                !r.contains(canary.as_str()),
                "a response contains {canary}: {r}"
            );
        }
    }
    assert!(!dump.contains(CANARY_PREFIX) && !log_text.contains(CANARY_PREFIX));
    app.stop().await;
}

#[tokio::test]
async fn state_in_redis_has_correct_ttl_and_a_hashed_key() {
    let app = spawn_app().await;
    let t = app
        .tenant("ttl", true, ConnectionStatus::NotConnected)
        .await;
    let consent = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    let keys = state_keys(&app).await;
    assert_eq!(keys.len(), 1);
    let entry = &keys[0];
    assert!((590..=600).contains(&entry.ttl), "TTL {}", entry.ttl);
    assert!(
        !entry.key.contains(&consent.state),
        "the key is a hash of the state, not the state"
    );
    assert!(
        !entry.value.contains(&consent.state),
        "the record does not hold the state either"
    );
    let record: serde_json::Value = serde_json::from_str(&entry.value).unwrap();
    assert_eq!(record["tenant_id"], t.tenant.to_string());
    assert_eq!(record["user_id"], t.owner.to_string());
    assert_eq!(record["provider"], "gmail");
    assert_eq!(
        record["redirect_uri"],
        harbor_harness::fake_provider::redirect_uri(Provider::Gmail)
    );
    // PKCE: the authorization URL carried the S256 challenge of the stored verifier.
    let verifier = SecretString::from(record["verifier"].as_str().unwrap().to_owned());
    assert_eq!(verifier.expose_secret().len(), 43, "32 random bytes");
    app.stop().await;
}

#[tokio::test]
async fn replay_attack_with_old_state_fails() {
    let app = spawn_app().await;
    let t = app
        .tenant("replay", true, ConnectionStatus::NotConnected)
        .await;
    let consent = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Qbo)
        .await
        .unwrap();
    app.sut
        .provider
        .configure(Provider::Qbo, |s| s.token_fault = Some(Fault::ServerError));
    callback(&app, t.owner.0, Provider::Qbo, &consent)
        .await
        .assert_error(StatusCode::BAD_GATEWAY, "PROVIDER_ERROR");
    assert_eq!(
        row(&app, t.workspace, Provider::Qbo).await.status,
        "NOT_CONNECTED",
        "back to its settled status"
    );
    app.sut
        .provider
        .configure(Provider::Qbo, |s| s.token_fault = None);
    // The provider is healthy again, but the state died with the failed callback.
    callback(&app, t.owner.0, Provider::Qbo, &consent)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "OAUTH_STATE_INVALID");
    assert_eq!(app.sut.provider.counters(Provider::Qbo).code_exchanges, 1);
    assert_eq!(
        audit_outcomes(&app, "oauth.callback").await,
        ["provider_error"]
    );
    app.stop().await;
}

#[tokio::test]
async fn concurrent_callbacks_with_one_state_exchange_once() {
    let app = spawn_app_with(ServiceOptions {
        replicas: 2,
        ..ServiceOptions::default()
    })
    .await;
    let t = app
        .tenant("race", true, ConnectionStatus::NotConnected)
        .await;
    let consent = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Slack)
        .await
        .unwrap();
    let (one, two) = tokio::join!(
        app.callback(0, t.owner, Provider::Slack, &consent),
        app.callback(1, t.owner, Provider::Slack, &consent),
    );
    let mut statuses = vec![one.unwrap().0, two.unwrap().0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_REQUEST]);
    assert_eq!(
        app.sut.provider.counters(Provider::Slack).code_exchanges,
        1,
        "exactly one token exchange"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM connections WHERE access_token IS NOT NULL")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn provider_mix_up_is_refused() {
    let app = spawn_app().await;
    let t = app
        .tenant("mixup", true, ConnectionStatus::NotConnected)
        .await;
    let slack = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Slack)
        .await
        .unwrap();
    // A Slack state delivered to the Gmail callback.
    callback(&app, t.owner.0, Provider::Gmail, &slack)
        .await
        .assert_error(StatusCode::FORBIDDEN, "OAUTH_STATE_MISMATCH");
    // A right-provider state whose iss names another issuer (RFC 9207).
    let gmail = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    let forged = harbor_harness::fake_provider::Consent {
        iss: Some(app.sut.provider.issuer(Provider::Slack)),
        ..gmail
    };
    callback(&app, t.owner.0, Provider::Gmail, &forged)
        .await
        .assert_error(StatusCode::FORBIDDEN, "OAUTH_ISSUER_MISMATCH");
    assert_eq!(
        audit_outcomes(&app, "oauth.callback").await,
        ["csrf_suspected", "issuer_mismatch"],
        "a mix-up is audited as what it is, not as a state problem"
    );
    assert_eq!(
        row(&app, t.workspace, Provider::Gmail).await.status,
        "NOT_CONNECTED",
        "the connection settles back: no authorization is left waiting"
    );
    for p in [Provider::Slack, Provider::Gmail] {
        assert_eq!(app.sut.provider.counters(p).code_exchanges, 0);
    }
    app.stop().await;
}

#[tokio::test]
async fn callback_needs_a_verified_user() {
    let app = spawn_app().await;
    let t = app
        .tenant("anon", true, ConnectionStatus::NotConnected)
        .await;
    let consent = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    app.call(
        Method::GET,
        format!("/v1/oauth/gmail/callback?{}", consent.callback_query()),
    )
    .header("x-user-id", &t.owner.to_string())
    .send()
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    // The anonymous attempt did not burn the state: it never reached the store.
    let ok = callback(&app, t.owner.0, Provider::Gmail, &consent).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    app.call(Method::GET, "/v1/oauth/gmail/callback?code=x")
        .as_user(t.owner.0)
        .send()
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    app.stop().await;
}

// ---- Token storage ----

#[tokio::test]
async fn ciphertext_swapped_between_rows_or_tenants_does_not_decrypt() {
    let app = spawn_app().await;
    let a = app
        .tenant("swap-a", true, ConnectionStatus::NotConnected)
        .await;
    let b = app
        .tenant("swap-b", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(a.owner, a.workspace, Provider::Gmail)
        .await
        .unwrap();
    app.connect(a.owner, a.workspace, Provider::Slack)
        .await
        .unwrap();
    app.connect(b.owner, b.workspace, Provider::Gmail)
        .await
        .unwrap();
    // An attacker with write access copies A's Gmail ciphertext into B's Gmail row and into A's
    // Slack row.
    for (workspace, provider) in [(b.workspace, "gmail"), (a.workspace, "slack")] {
        sqlx::query(
            "UPDATE connections SET access_token = src.access_token, refresh_token = src.refresh_token \
             FROM (SELECT access_token, refresh_token FROM connections WHERE workspace_id = $1 AND provider = 'gmail') src \
             WHERE workspace_id = $2 AND provider = $3",
        )
        .bind(a.workspace)
        .bind(workspace)
        .bind(provider)
        .execute(app.db())
        .await
        .unwrap();
    }
    sync(&app, &b, Provider::Gmail, 0)
        .await
        .assert_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL");
    sync(&app, &a, Provider::Slack, 0)
        .await
        .assert_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL");
    // A's own row still works; the provider saw no read with a stolen token.
    let ok = sync(&app, &a, Provider::Gmail, 0).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(app.sut.provider.counters(Provider::Gmail).resource_reads, 1);
    app.stop().await;
}

#[tokio::test]
async fn key_rotation_re_encrypts_in_batches_and_resumes() {
    let app = spawn_app().await;
    let tenants = app.connected_tenants("rot", 3, Provider::Gmail).await;
    let old = app.sut.key_ring();
    let ring = app.key_ring_rotated_to("k2");
    // A row locked by a "request" is skipped and reported, not waited for.
    let mut held = app.db().begin().await.unwrap();
    sqlx::query(
        "SELECT 1 FROM connections WHERE workspace_id = $1 AND provider = 'gmail' FOR UPDATE",
    )
    .bind(tenants[0].workspace)
    .execute(&mut *held)
    .await
    .unwrap();
    let first = vault::rotate_keys(app.db(), &ring, 1).await.unwrap();
    assert_eq!((first.rotated, first.batches, first.remaining), (2, 2, 1));
    held.rollback().await.unwrap();
    let second = vault::rotate_keys(app.db(), &ring, 1).await.unwrap();
    assert_eq!(
        (second.rotated, second.remaining),
        (1, 0),
        "the run resumes where it stopped"
    );
    for t in &tenants {
        let r = row(&app, t.workspace, Provider::Gmail).await;
        assert_eq!(r.key_id.as_deref(), Some("k2"));
        assert!(decrypt(
            &ring,
            &r,
            Provider::Gmail,
            TokenField::Access,
            r.access.as_ref().unwrap()
        )
        .is_ok());
        assert!(
            decrypt(
                old,
                &r,
                Provider::Gmail,
                TokenField::Access,
                r.access.as_ref().unwrap()
            )
            .is_err(),
            "the old key alone cannot read it"
        );
    }
    app.stop().await;
}

// ---- Refresh ----

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
    app.sut.clock.advance(Duration::from_secs(58 * 60));
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
    app.sut.clock.advance(Duration::from_secs(12 * 3600 - 120));
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

// ---- Rate limits ----

#[tokio::test]
async fn rate_limit_engages_and_recovers() {
    let limits = RateLimits {
        per_tenant: Quota {
            per_minute: 6,
            burst: 3,
        },
        per_address: Quota {
            per_minute: 60_000,
            burst: 10_000,
        },
        failed_states_per_user: Quota {
            per_minute: 6,
            burst: 2,
        },
    };
    let app = spawn_app_with(ServiceOptions {
        rate_limits: limits,
        replicas: 2,
        ..ServiceOptions::default()
    })
    .await;
    let t = app
        .tenant("flood", true, ConnectionStatus::NotConnected)
        .await;
    let authorize = |replica: usize| {
        app.call(
            Method::POST,
            format!("/v1/workspaces/{}/connections/gmail/authorize", t.workspace),
        )
        .as_user(t.owner.0)
        .on_replica(replica)
        .send()
    };
    for i in 0..3 {
        assert_eq!(authorize(i % 2).await.status, StatusCode::OK);
    }
    let limited = authorize(1).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    let retry: u64 = limited
        .retry_after
        .as_deref()
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    // Another tenant is not affected.
    let other = app
        .tenant("calm", true, ConnectionStatus::NotConnected)
        .await;
    assert!(app
        .authorize_and_consent(0, other.owner, other.workspace, Provider::Gmail)
        .await
        .is_ok());
    app.sut.clock.advance(Duration::from_secs(retry));
    assert_eq!(
        authorize(0).await.status,
        StatusCode::OK,
        "recovered once Retry-After has passed"
    );

    // State guessing: unknown states are counted per user until the guesser is refused (with
    // the tenant's own budget full again, so it is the failed-state bucket that refuses).
    app.sut.clock.advance(Duration::from_secs(60));
    let guess = |n: usize| {
        app.call(
            Method::GET,
            format!("/v1/oauth/slack/callback?state=guess{n}&code=x"),
        )
        .as_user(other.member.0)
        .send()
    };
    for n in 0..2 {
        guess(n)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "OAUTH_STATE_INVALID");
    }
    guess(2)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    app.stop().await;
}

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
    app.sut.clock.advance(Duration::from_secs(58 * 60));
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
