//! The connector client against each provider's dialect (issue #26), with the fake provider
//! speaking every dialect strictly: one test per point of the issue, each of which failed on the
//! code before it (the closing note says how).

use harbor_harness::fixtures::TenantWorkspace;
use harbor_harness::target::started::{ProviderOverride, ServiceOptions};
use harbor_service::domain::{Provider, WorkspaceId};
use harbor_service::lifecycle::ConnectionStatus;
use harbor_service::providers::ClientAuth;
use reqwest::{Method, StatusCode};

use crate::helpers::{spawn_app, spawn_app_with, Reply, TestApp};

async fn sync(app: &TestApp, t: &TenantWorkspace, p: Provider) -> Reply {
    app.call(
        Method::POST,
        format!("/v1/workspaces/{}/connections/{p}/sync", t.workspace),
    )
    .as_user(t.member.0)
    .send()
    .await
}

async fn disconnect(app: &TestApp, t: &TenantWorkspace, p: Provider) -> Reply {
    app.call(
        Method::POST,
        format!("/v1/workspaces/{}/connections/{p}/disconnect", t.workspace),
    )
    .as_user(t.owner.0)
    .send()
    .await
}

async fn status(app: &TestApp, w: WorkspaceId, p: Provider) -> String {
    sqlx::query_scalar("SELECT status FROM connections WHERE workspace_id = $1 AND provider = $2")
        .bind(w)
        .bind(p.as_str())
        .fetch_one(app.db())
        .await
        .unwrap()
}

/// The end the service stored for the connection's grant (`refresh_expires_at`).
async fn grant_end(
    app: &TestApp,
    w: WorkspaceId,
    p: Provider,
) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar(
        "SELECT refresh_expires_at FROM connections WHERE workspace_id = $1 AND provider = $2",
    )
    .bind(w)
    .bind(p.as_str())
    .fetch_one(app.db())
    .await
    .unwrap()
}

async fn scopes(app: &TestApp, w: WorkspaceId, p: Provider) -> Vec<String> {
    sqlx::query_scalar("SELECT scopes FROM connections WHERE workspace_id = $1 AND provider = $2")
        .bind(w)
        .bind(p.as_str())
        .fetch_one(app.db())
        .await
        .unwrap()
}

/// The outcome of the last callback's audit row.
async fn last_callback_outcome(app: &TestApp) -> String {
    sqlx::query_scalar(
        "SELECT outcome FROM audit_events WHERE action = 'oauth.callback' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(app.db())
    .await
    .unwrap()
}

/// The QuickBooks company the workspace's connection reads under (`provider_account`).
async fn company(app: &TestApp, w: WorkspaceId) -> Option<String> {
    sqlx::query_scalar(
        "SELECT provider_account FROM connections WHERE workspace_id = $1 AND provider = 'qbo'",
    )
    .bind(w)
    .fetch_one(app.db())
    .await
    .unwrap()
}

/// Authorizes, consents and delivers the callback as the owner: the callback's answer.
async fn connect_answer(app: &TestApp, t: &TenantWorkspace, p: Provider) -> Reply {
    let consent = app
        .authorize_and_consent(0, t.owner, t.workspace, p)
        .await
        .unwrap();
    callback_answer(app, t, p, &consent).await
}

/// Delivers the provider's answer `consent` to the callback as the owner: the callback's answer.
async fn callback_answer(
    app: &TestApp,
    t: &TenantWorkspace,
    p: Provider,
    consent: &harbor_harness::fake_provider::Consent,
) -> Reply {
    app.call(
        Method::GET,
        harbor_harness::operation::paths::callback(p, &consent.callback_query()),
    )
    .as_user(t.owner.0)
    .send()
    .await
}

/// How many revocation intents wait parked behind another holder of their account's consent.
async fn parked_intents(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM revocation_outbox WHERE parked_account IS NOT NULL")
        .fetch_one(app.db())
        .await
        .unwrap()
}

/// Connects `holder`'s workspace to `p`, then has `other`'s callback refused for a scope the user
/// unticked: a grant of the same account given back (`connect` applies `holder_switches` to the
/// fake first).
async fn hold_then_untick(
    app: &TestApp,
    (holder, other): (&TenantWorkspace, &TenantWorkspace),
    p: Provider,
    holder_switches: impl FnOnce(&mut harbor_harness::fake_provider::Switches),
) {
    app.sut.provider.configure(p, |s| {
        s.untick_first_scope = false;
        holder_switches(s);
    });
    app.connect(holder.owner, holder.workspace, p)
        .await
        .unwrap();
    app.sut.provider.configure(p, |s| {
        s.withhold_refresh_token = false;
        s.untick_first_scope = true;
    });
    connect_answer(app, other, p)
        .await
        .assert_error(StatusCode::FORBIDDEN, "OAUTH_SCOPE_NOT_GRANTED");
}

/// Each provider end to end in its own dialect: its client authentication, its callback's
/// extras, its token answers, its paged resource (one document per page here), its revocation.
#[tokio::test]
async fn every_provider_is_spoken_in_its_own_dialect() {
    let app = spawn_app().await;
    let t = app
        .tenant("dialects", true, ConnectionStatus::NotConnected)
        .await;
    let stored = |p: Provider| {
        sqlx::query_scalar::<_, String>(
            "SELECT title FROM documents WHERE provider = $1 ORDER BY external_id",
        )
        .bind(p.as_str())
        .fetch_all(app.db())
    };
    let mut titles = Vec::new();
    for p in Provider::ALL {
        // 1002 documents: more than one page at each provider's largest page size.
        app.sut.provider.configure(p, |s| s.extra_documents = 1000);
        app.connect(t.owner, t.workspace, p).await.unwrap();
        let r = sync(&app, &t, p).await;
        assert_eq!(r.status, StatusCode::OK, "{p}: {}", r.body);
        assert_eq!(r.body["documents_synced"], 1002, "{p}: {}", r.body);
        assert_eq!(r.body["complete"], true, "{p}: {}", r.body);
        let pages = match p {
            Provider::Qbo | Provider::Box => 2, // 1000 a page
            Provider::Gmail => 3,               // 500
            Provider::Slack => 6,               // 200
        };
        let c = app.sut.provider.counters(p);
        assert_eq!(
            c.resource_reads, pages,
            "{p}: pages of the provider's largest size"
        );
        titles.extend(stored(p).await.unwrap());
        let named: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM documents d JOIN connections c \
             ON c.workspace_id = d.workspace_id AND c.provider = d.provider \
             WHERE d.provider = $1 AND d.grant_id = c.grant_id",
        )
        .bind(p.as_str())
        .fetch_one(app.db())
        .await
        .unwrap();
        assert_eq!(
            named, 1002,
            "{p}: each document names the grant it was fetched under"
        );
        let oracle = harbor_harness::oracles::documents_under_live_grants;
        oracle(app.db(), Some(t.workspace)).await.unwrap();
        if p == Provider::Qbo {
            // The oracle fails on a document held as another grant's, under a CONNECTED row.
            sqlx::query(
                "UPDATE documents SET grant_id = gen_random_uuid() WHERE provider = 'qbo' \
                 AND external_id = (SELECT min(external_id) FROM documents WHERE provider = 'qbo')",
            )
            .execute(app.db())
            .await
            .unwrap();
            let found = oracle(app.db(), Some(t.workspace)).await.unwrap_err();
            assert!(found.starts_with("1 document(s)"), "{found}");
        }
        let r = disconnect(&app, &t, p).await;
        assert_eq!(r.status, StatusCode::OK, "{p}: {}", r.body);
        assert_eq!(
            r.body["provider_revocation"], "confirmed",
            "{p}: {}",
            r.body
        );
        let c = app.sut.provider.counters(p);
        assert_eq!(
            (c.revocations, c.client_auth_refused),
            (1, 0),
            "{p}: one revocation, and no request in the wrong dialect"
        );
        assert!(
            app.sut.provider.live_grants().iter().all(|(q, _)| *q != p),
            "{p}: the grant is over at the provider"
        );
        assert!(
            stored(p).await.unwrap().is_empty(),
            "{p}: the documents ended with the grant"
        );
    }
    assert_eq!(titles.len(), 4008, "1002 documents per provider");
    assert!(
        titles.contains(&"qbo quarterly report".to_owned()),
        "an attachable's FileName"
    );
    app.stop().await;
}

/// Box's paging: a page may hold fewer entries than its limit, or none, before the end (items the
/// caller cannot see), so the listing follows the marker past an empty page and ends where Box
/// names no next one. And it reaches past the 9,999 that Box's offset paging stops at: 10,002
/// documents are read whole (the offset paging of the service before read 10,000 and answered
/// `complete: false`; the offset paging before that stopped at the first empty page).
#[tokio::test]
async fn a_box_listing_with_items_the_caller_cannot_see_is_read_to_its_end() {
    let app = spawn_app().await;
    let t = app
        .tenant("box-paging", true, ConnectionStatus::NotConnected)
        .await;
    let p = Provider::Box;
    // 1002 documents and 1000 positions hidden after the first page: the second page is empty.
    app.sut.provider.configure(p, |s| {
        s.extra_documents = 1000;
        s.hidden_positions = 1000;
    });
    app.connect(t.owner, t.workspace, p).await.unwrap();
    let r = sync(&app, &t, p).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (&r.body["documents_synced"], &r.body["complete"]),
        (&serde_json::json!(1002), &serde_json::json!(true)),
        "past the empty page: {}",
        r.body
    );
    assert_eq!(app.sut.provider.counters(p).resource_reads, 3);

    // 10,002 documents: eleven pages, the last past where an offset may start.
    app.sut.provider.configure(p, |s| {
        s.extra_documents = 10_000;
        s.hidden_positions = 0;
    });
    let reads = app.sut.provider.counters(p).resource_reads;
    let r = sync(&app, &t, p).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (&r.body["documents_synced"], &r.body["complete"]),
        (&serde_json::json!(10_002), &serde_json::json!(true)),
        "read past Box's last offset: {}",
        r.body
    );
    assert_eq!(app.sut.provider.counters(p).resource_reads - reads, 11);
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM documents WHERE workspace_id = $1 AND provider = 'box'",
    )
    .bind(t.workspace)
    .fetch_one(app.db())
    .await
    .unwrap();
    assert_eq!(stored, 10_002);
    app.stop().await;
}

/// Point 1: the client authenticates the way the provider is configured for, and the fake
/// refuses any other way: QuickBooks takes only HTTP Basic, Box only the body.
#[tokio::test]
async fn a_provider_refuses_the_client_authentication_it_does_not_take() {
    let app = spawn_app_with(ServiceOptions {
        provider_overrides: vec![
            (
                Provider::Qbo,
                ProviderOverride::ClientAuth(ClientAuth::ClientSecretPost),
            ),
            (
                Provider::Box,
                ProviderOverride::ClientAuth(ClientAuth::ClientSecretBasic),
            ),
        ],
        ..ServiceOptions::default()
    })
    .await;
    let t = app
        .tenant("clientauth", true, ConnectionStatus::NotConnected)
        .await;
    for p in [Provider::Qbo, Provider::Box] {
        connect_answer(&app, &t, p)
            .await
            .assert_error(StatusCode::BAD_GATEWAY, "PROVIDER_ERROR");
        let c = app.sut.provider.counters(p);
        assert_eq!((c.client_auth_refused, c.code_exchanges_ok), (1, 0), "{p}");
        assert_eq!(status(&app, t.workspace, p).await, "NOT_CONNECTED", "{p}");
    }
    // Gmail takes either.
    app.connect(t.owner, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    app.stop().await;
}

/// Point 2: a resource answer that is not in the provider's documented shape is a protocol
/// error (502 `PROVIDER_PROTOCOL_ERROR`), not "the provider is unavailable".
#[tokio::test]
async fn a_resource_answer_outside_its_shape_is_a_protocol_error() {
    let app = spawn_app().await;
    let t = app
        .tenant("shape", true, ConnectionStatus::NotConnected)
        .await;
    for p in Provider::ALL {
        app.connect(t.owner, t.workspace, p).await.unwrap();
        app.sut
            .provider
            .configure(p, |s| s.malformed_resource = true);
        sync(&app, &t, p)
            .await
            .assert_error(StatusCode::BAD_GATEWAY, "PROVIDER_PROTOCOL_ERROR");
        assert_eq!(
            status(&app, t.workspace, p).await,
            "CONNECTED",
            "{p}: nothing to reconnect"
        );
    }
    app.stop().await;
}

/// Point 3: an `iss` that is present must be the provider's, and where the provider always
/// sends it (Google publishes RFC 9207 support) a callback without one is refused — with its own
/// code and audit outcome, and the connection settles back instead of staying `PENDING`.
#[tokio::test]
async fn a_callback_without_the_issuer_the_provider_always_sends_is_refused() {
    let app = spawn_app().await;
    let t = app
        .tenant("iss", true, ConnectionStatus::NotConnected)
        .await;
    // Something between the provider and Harbor stripped the `iss`.
    app.sut
        .provider
        .configure(Provider::Gmail, |s| s.send_iss = false);
    connect_answer(&app, &t, Provider::Gmail)
        .await
        .assert_error(StatusCode::FORBIDDEN, "OAUTH_ISSUER_MISMATCH");
    assert_eq!(
        status(&app, t.workspace, Provider::Gmail).await,
        "NOT_CONNECTED"
    );
    assert_eq!(
        app.sut.provider.counters(Provider::Gmail).code_exchanges,
        0,
        "the code went nowhere"
    );
    assert_eq!(last_callback_outcome(&app).await, "issuer_mismatch");
    app.sut
        .provider
        .configure(Provider::Gmail, |s| s.send_iss = true);
    app.connect(t.owner, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    app.stop().await;
}

/// Point 4: a resource that refuses the access token (expired early, or the grant revoked at
/// the provider) gets one refresh; a refused refresh ends in `RECONNECT_REQUIRED`. Slack says it
/// with HTTP 200 `invalid_auth`, the others with 401.
#[tokio::test]
async fn a_refused_access_token_is_refreshed_once_then_the_connection_needs_reconnecting() {
    let app = spawn_app().await;
    let t = app
        .tenant("refused", true, ConnectionStatus::NotConnected)
        .await;
    for p in [Provider::Qbo, Provider::Slack] {
        app.connect(t.owner, t.workspace, p).await.unwrap();
        app.sut.provider.expire_access_tokens(p);
        let r = sync(&app, &t, p).await;
        assert_eq!(r.status, StatusCode::OK, "{p}: {}", r.body);
        assert_eq!(r.body["refreshed"], true, "{p}: {}", r.body);
        let c = app.sut.provider.counters(p);
        assert_eq!((c.refreshes, c.resource_unauthorized), (1, 1), "{p}");
        app.sut.provider.revoke_grants(p);
        sync(&app, &t, p)
            .await
            .assert_error(StatusCode::CONFLICT, "RECONNECT_REQUIRED");
        assert_eq!(status(&app, t.workspace, p).await, "REVOKED", "{p}");
        assert_eq!(
            app.sut.provider.counters(p).refreshes,
            2,
            "{p}: one refresh per refusal"
        );
    }
    app.stop().await;
}

/// QuickBooks's callback names the company (`realmId`) the accounting API needs: a callback
/// without it is refused before the code is exchanged.
#[tokio::test]
async fn a_quickbooks_callback_without_its_company_is_refused() {
    let app = spawn_app().await;
    let t = app
        .tenant("realm", true, ConnectionStatus::NotConnected)
        .await;
    let consent = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Qbo)
        .await
        .unwrap();
    let without = harbor_harness::fake_provider::Consent {
        realm_id: None,
        ..consent
    };
    app.call(
        Method::GET,
        harbor_harness::operation::paths::callback(Provider::Qbo, &without.callback_query()),
    )
    .as_user(t.owner.0)
    .send()
    .await
    .assert_error(StatusCode::BAD_GATEWAY, "PROVIDER_PROTOCOL_ERROR");
    assert_eq!(app.sut.provider.counters(Provider::Qbo).code_exchanges, 0);
    assert_eq!(
        status(&app, t.workspace, Provider::Qbo).await,
        "NOT_CONNECTED"
    );
    app.stop().await;
}

/// Each provider's grant outlives its first access token, with the scopes it was granted: Google
/// issues a refresh token only to an authorization request that asks for offline access, Slack
/// spells its scopes with commas, and QuickBooks and Box name none in their token answers (the
/// grant keeps what was asked for, through the refresh too).
#[tokio::test]
async fn every_provider_grant_is_refreshed_and_keeps_its_scopes() {
    let app = spawn_app().await;
    let t = app
        .tenant("scopes", true, ConnectionStatus::NotConnected)
        .await;
    for p in Provider::ALL {
        app.connect(t.owner, t.workspace, p).await.unwrap();
        let asked = asked_scopes(&app, p);
        assert_eq!(
            scopes(&app, t.workspace, p).await,
            asked,
            "{p}: the scopes granted"
        );
    }
    // Slack's access tokens last 12 hours, the others' one: 11 h 58 min later every one is
    // inside the refresh margin.
    app.advance_clock(std::time::Duration::from_secs((11 * 60 + 58) * 60))
        .await;
    for p in Provider::ALL {
        let r = sync(&app, &t, p).await;
        assert_eq!(
            (r.status, r.body["refreshed"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{p}: {}",
            r.body
        );
        let asked = asked_scopes(&app, p);
        assert_eq!(
            scopes(&app, t.workspace, p).await,
            asked,
            "{p}: the scopes kept by the refresh"
        );
    }
    app.stop().await;
}

/// The scopes the fake's providers file asks `p` for (Gmail's with `openid`).
fn asked_scopes(app: &TestApp, p: Provider) -> Vec<String> {
    app.sut
        .provider
        .providers_config(std::time::Duration::from_secs(1))
        .providers[&p]
        .scopes
        .clone()
}

/// Slack without token rotation (its default until an app opts in): the access token never
/// expires and no refresh token comes with it. The connection syncs with it, its disconnect
/// revokes it (`auth.revoke` takes the access token itself), and a grant the user ends in Slack
/// leaves nothing to refresh with: the next sync asks for a reconnect at once.
#[tokio::test]
async fn slack_without_token_rotation_connects_syncs_and_ends_on_its_access_token() {
    let app = spawn_app().await;
    let t = app
        .tenant("unrotated", true, ConnectionStatus::NotConnected)
        .await;
    let p = Provider::Slack;
    app.sut
        .provider
        .configure(p, |s| s.rotate_refresh_tokens = false);
    let has_refresh = |app: &TestApp| {
        let db = app.db().clone();
        let w = t.workspace;
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT refresh_token IS NOT NULL FROM connections WHERE workspace_id = $1 AND provider = 'slack'",
            )
            .bind(w)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    app.connect(t.owner, t.workspace, p).await.unwrap();
    assert!(!has_refresh(&app).await, "Slack gave no refresh token");
    let r = sync(&app, &t, p).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["refreshed"], false, "{}", r.body);
    let r = disconnect(&app, &t, p).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["provider_revocation"], "confirmed", "{}", r.body);
    assert!(
        app.sut.provider.live_grants().iter().all(|(q, _)| *q != p)
            && app.sut.provider.counters(p).revocations == 1,
        "the access token, the grant's only key, was revoked"
    );
    // Connected again, then ended in Slack's own settings: nothing to refresh with.
    app.connect(t.owner, t.workspace, p).await.unwrap();
    app.sut.provider.revoke_grants(p);
    sync(&app, &t, p)
        .await
        .assert_error(StatusCode::CONFLICT, "RECONNECT_REQUIRED");
    assert_eq!(status(&app, t.workspace, p).await, "REVOKED");
    assert_eq!(
        app.sut.provider.counters(p).refreshes,
        0,
        "no refresh token to try"
    );
    app.stop().await;
}

/// A resource that refuses the grant access (QuickBooks's 403 for a company the grant does not
/// reach) is 409 `PROVIDER_ACCESS_DENIED` — a reconnect helps, a retry does not — and the
/// connection stays connected with no refresh tried.
#[tokio::test]
async fn a_resource_that_refuses_the_grant_access_asks_for_a_reconnect() {
    let app = spawn_app().await;
    let t = app
        .tenant("denied", true, ConnectionStatus::NotConnected)
        .await;
    let p = Provider::Qbo;
    app.connect(t.owner, t.workspace, p).await.unwrap();
    // The stored company is one the grant does not reach.
    sqlx::query("UPDATE connections SET provider_account = '4620816365999999999' WHERE workspace_id = $1 AND provider = 'qbo'")
        .bind(t.workspace)
        .execute(app.db())
        .await
        .unwrap();
    sync(&app, &t, p)
        .await
        .assert_error(StatusCode::CONFLICT, "PROVIDER_ACCESS_DENIED");
    assert_eq!(status(&app, t.workspace, p).await, "CONNECTED");
    assert_eq!(
        app.sut.provider.counters(p).refreshes,
        0,
        "a refresh would not help"
    );
    app.stop().await;
}

/// A QuickBooks grant opens the company its callback names and no other: two workspaces' grants
/// are for companies of their own, each read under its own, and a callback whose `realmId` was
/// changed on its way through the browser to another grant's company reads nothing of it —
/// refused at the callback, or (the reference) stored and refused by the provider at the first
/// read. On a fake where every grant was for one company, the changed callback named the grant's
/// own company, and its sync was answered 200.
#[tokio::test]
async fn a_quickbooks_token_opens_only_the_company_its_grant_is_for() {
    let app = spawn_app().await;
    let p = Provider::Qbo;
    let a = app
        .tenant("realm-a", true, ConnectionStatus::NotConnected)
        .await;
    let b = app
        .tenant("realm-b", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(a.owner, a.workspace, p).await.unwrap();
    let realm_a = company(&app, a.workspace)
        .await
        .expect("the company of A's grant");
    assert_eq!(sync(&app, &a, p).await.status, StatusCode::OK);

    // B's consent is for a company of its own; its callback comes back naming A's.
    let consent = app
        .authorize_and_consent(0, b.owner, b.workspace, p)
        .await
        .unwrap();
    let realm_b = consent.realm_id.clone().expect("Intuit names the company");
    assert_ne!(realm_b, realm_a, "each consent is for a company of its own");
    let changed = harbor_harness::fake_provider::Consent {
        realm_id: Some(realm_a.clone()),
        ..consent
    };
    let r = callback_answer(&app, &b, p, &changed).await;
    if r.status == StatusCode::OK {
        assert_eq!(
            company(&app, b.workspace).await.as_deref(),
            Some(realm_a.as_str())
        );
        sync(&app, &b, p)
            .await
            .assert_error(StatusCode::CONFLICT, "PROVIDER_ACCESS_DENIED");
    } else {
        assert_ne!(
            status(&app, b.workspace, p).await,
            "CONNECTED",
            "{}",
            r.body
        );
        assert_ne!(sync(&app, &b, p).await.status, StatusCode::OK);
    }
    let documents = |w: WorkspaceId| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM documents WHERE workspace_id = $1")
            .bind(w)
            .fetch_one(app.db())
    };
    assert_eq!(
        documents(b.workspace).await.unwrap(),
        0,
        "nothing of A's company read"
    );
    assert_eq!(documents(a.workspace).await.unwrap(), 2);
    // A's grant still reads its own company.
    assert_eq!(sync(&app, &a, p).await.status, StatusCode::OK);
    app.stop().await;
}

/// A provider that limits Harbor's calls answers 429 with `Retry-After`: the sync passes the
/// provider's delay on (503 `PROVIDER_RATE_LIMITED`), and the connection keeps its grant. The
/// scenario FLT-PROVIDER-RATE-LIMITED holds the same without reading the header.
#[tokio::test]
async fn a_provider_rate_limit_is_answered_with_its_retry_after() {
    let app = spawn_app().await;
    let t = app
        .tenant("limited", true, ConnectionStatus::NotConnected)
        .await;
    for p in [Provider::Box, Provider::Slack] {
        app.connect(t.owner, t.workspace, p).await.unwrap();
        app.sut.provider.configure(p, |s| s.rate_limited = true);
        let r = sync(&app, &t, p).await;
        r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "PROVIDER_RATE_LIMITED");
        assert_eq!(
            r.retry_after.as_deref(),
            Some(
                harbor_harness::fake_provider::RATE_LIMIT_RETRY_AFTER
                    .to_string()
                    .as_str()
            ),
            "{p}: the provider's own delay"
        );
        assert_eq!(status(&app, t.workspace, p).await, "CONNECTED", "{p}");
        app.sut.provider.configure(p, |s| s.rate_limited = false);
        let r = sync(&app, &t, p).await;
        assert_eq!(r.status, StatusCode::OK, "{p}: {}", r.body);
    }
    app.stop().await;
}

/// A QuickBooks grant the user already ended in QuickBooks (or that expired unused): Intuit
/// answers its revocation with an empty 400, as it would a request it cannot read. The refresh
/// that tells the two apart is refused, so the disconnect's revocation counts as done — not an
/// intent retried for ever — and a live grant whose revocation Intuit refused the same way would
/// have been refreshed and revoked instead.
#[tokio::test]
async fn a_quickbooks_grant_already_ended_counts_as_revoked() {
    let app = spawn_app().await;
    let t = app
        .tenant("ended", true, ConnectionStatus::NotConnected)
        .await;
    let p = Provider::Qbo;
    app.connect(t.owner, t.workspace, p).await.unwrap();
    app.sut.provider.revoke_grants(p);
    let r = disconnect(&app, &t, p).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["provider_revocation"], "confirmed", "{}", r.body);
    let c = app.sut.provider.counters(p);
    assert_eq!(
        (c.revocations, c.refreshes_invalid_grant),
        (1, 1),
        "one revocation (an empty 400), one refresh that tells a dead grant from a bad request"
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM revocation_outbox")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(pending, 0, "nothing left to retry");
    app.stop().await;
}

/// A user who unticks a scope at the consent screen (Google's granular consent) gets no
/// connection that would fail every sync: the callback answers 403 `OAUTH_SCOPE_NOT_GRANTED`,
/// the grant is given back at the provider, and the connection settles back.
#[tokio::test]
async fn a_grant_without_a_required_scope_is_given_back() {
    let app = spawn_app().await;
    let t = app
        .tenant("unticked", true, ConnectionStatus::NotConnected)
        .await;
    for p in [Provider::Gmail, Provider::Slack] {
        app.sut
            .provider
            .configure(p, |s| s.untick_first_scope = true);
        connect_answer(&app, &t, p)
            .await
            .assert_error(StatusCode::FORBIDDEN, "OAUTH_SCOPE_NOT_GRANTED");
        assert_eq!(status(&app, t.workspace, p).await, "NOT_CONNECTED", "{p}");
        let c = app.sut.provider.counters(p);
        assert_eq!((c.code_exchanges_ok, c.revocations), (1, 1), "{p}");
        assert!(
            app.sut.provider.live_grants().iter().all(|(q, _)| *q != p),
            "{p}: the grant is over at the provider"
        );
        assert_eq!(
            last_callback_outcome(&app).await,
            "scope_not_granted",
            "{p}"
        );
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM revocation_outbox")
            .fetch_one(app.db())
            .await
            .unwrap();
        assert_eq!(pending, 0, "{p}: the write-ahead is settled");
        // With every scope granted, the same user connects.
        app.sut
            .provider
            .configure(p, |s| s.untick_first_scope = false);
        app.connect(t.owner, t.workspace, p).await.unwrap();
    }
    app.stop().await;
}

/// At Google, all of one account's grants to the client are one consent. A grant a callback
/// gives back (here: a required scope unticked) while another workspace holds a grant of the same
/// account is not revoked — that would end the other one too — but parked in the outbox behind
/// it; the other workspace's disconnect lets it go, and nothing of the account is left live.
/// A holder whose grant has no refresh token cannot end the consent, so it holds nothing back.
#[tokio::test]
async fn a_google_grant_given_back_is_parked_behind_another_holder_of_its_account() {
    let app = spawn_app().await;
    let holder = app
        .tenant("holder", true, ConnectionStatus::NotConnected)
        .await;
    let other = app
        .tenant("unticked-again", true, ConnectionStatus::NotConnected)
        .await;
    let p = Provider::Gmail;
    let account = "110169484474386276334";
    app.sut
        .provider
        .configure(p, |s| s.signed_in_account = Some(account.to_owned()));
    hold_then_untick(&app, (&holder, &other), p, |_| {}).await;
    assert_eq!(
        app.sut.provider.counters(p).revocations,
        0,
        "nothing revoked"
    );
    assert_eq!(
        parked_intents(&app).await,
        1,
        "the unused grant waits behind the holder"
    );
    let r = sync(&app, &holder, p).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the holder's grant lives: {}",
        r.body
    );
    let r = disconnect(&app, &holder, p).await;
    assert_eq!(r.body["provider_revocation"], "confirmed", "{}", r.body);
    harbor_harness::oracles::until_outbox_empty(app.db(), None, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        parked_intents(&app).await,
        0,
        "let go by the last holder's end"
    );
    assert!(
        app.sut.provider.live_grants().iter().all(|(q, _)| *q != p),
        "nothing of the account is live at Google"
    );
    // A holder whose refresh token passes its end with nobody looking stops holding: the
    // worker's sweep lets go what was parked behind it.
    hold_then_untick(&app, (&holder, &other), p, |_| {}).await;
    assert_eq!(
        parked_intents(&app).await,
        1,
        "parked behind the new holder"
    );
    sqlx::query(
        "UPDATE connections SET refresh_expires_at = now() - interval '1 minute' \
          WHERE workspace_id = $1 AND provider = 'gmail'",
    )
    .bind(holder.workspace)
    .execute(app.db())
    .await
    .unwrap();
    let swept = std::time::Instant::now();
    while parked_intents(&app).await > 0 {
        assert!(
            swept.elapsed() < std::time::Duration::from_secs(20),
            "never swept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    harbor_harness::oracles::until_outbox_empty(app.db(), None, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(app.sut.provider.counters(p).revocations, 3);
    let r = disconnect(&app, &holder, p).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A holder without a refresh token ends with its access token: nothing waits behind it.
    hold_then_untick(&app, (&holder, &other), p, |s| {
        s.withhold_refresh_token = true
    })
    .await;
    assert_eq!(
        parked_intents(&app).await,
        0,
        "revoked at once: the holder cannot end the consent"
    );
    assert_eq!(app.sut.provider.counters(p).revocations, 5);
    app.stop().await;
}

/// Google issues a refresh token at an account's first consent to the client and, after that,
/// only to a request that says `prompt=consent` — which the Gmail dialect sends, so a second
/// workspace connected by the same account still gets one. The same request without it (an
/// operator's authorization URL that dropped it) gets a grant that ends with its access token.
#[tokio::test]
async fn google_gives_a_returning_account_a_refresh_token_only_when_asked_again() {
    let app = spawn_app().await;
    let p = Provider::Gmail;
    let mut workspaces = Vec::new();
    for name in ["consent-first", "consent-again", "consent-dropped"] {
        workspaces.push(app.tenant(name, true, ConnectionStatus::NotConnected).await);
    }
    app.sut.provider.configure(p, |s| {
        s.signed_in_account = Some("110169484474386276335".to_owned())
    });
    let holds_refresh = |t: &TenantWorkspace| {
        let (db, workspace) = (app.db().clone(), t.workspace);
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT refresh_token IS NOT NULL FROM connections WHERE workspace_id = $1 AND provider = 'gmail'",
            )
            .bind(workspace)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    for t in &workspaces[..2] {
        app.connect(t.owner, t.workspace, p).await.unwrap();
        assert!(holds_refresh(t).await, "prompt=consent asks again");
    }
    let t = &workspaces[2];
    let bearer = app
        .sut
        .tokens
        .token(t.owner.0, harbor_harness::identity::TokenKind::Valid);
    let answer = app
        .sut
        .client
        .operation(
            harbor_harness::operation::WorkspaceOp::Authorize,
            t.workspace,
            p,
            "",
        )
        .bearer(Some(&bearer))
        .send()
        .await
        .unwrap();
    let url = answer.authorization_url.expect("an authorization URL");
    assert!(url.contains("prompt=consent"), "{url}");
    let dropped = url
        .replace("&prompt=consent", "")
        .replace("prompt=consent&", "");
    let consent = app.sut.client.consent(&dropped).await.unwrap();
    let r = callback_answer(&app, t, p, &consent).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        !holds_refresh(t).await,
        "an account that consented before, asked without prompt=consent: no refresh token"
    );
    app.stop().await;
}

/// Two overlapping connect flows of one Google account in one workspace (two tabs): the second
/// stores its grant, and the first's, which can no longer be stored, is parked behind it — not
/// revoked, which would end the stored one too (at Google, one consent).
#[tokio::test]
async fn overlapping_google_flows_keep_the_grant_that_was_stored() {
    let app = spawn_app().await;
    let t = app
        .tenant("two-tabs", true, ConnectionStatus::NotConnected)
        .await;
    let p = Provider::Gmail;
    app.sut.provider.configure(p, |s| {
        s.signed_in_account = Some("110169484474386276334".to_owned())
    });
    let first = app
        .authorize_and_consent(0, t.owner, t.workspace, p)
        .await
        .unwrap();
    let second = app
        .authorize_and_consent(0, t.owner, t.workspace, p)
        .await
        .unwrap();
    let stored = callback_answer(&app, &t, p, &second).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.body);
    let late = callback_answer(&app, &t, p, &first).await;
    assert_ne!(late.status, StatusCode::OK, "{}", late.body);
    assert_eq!(
        app.sut.provider.counters(p).revocations,
        0,
        "nothing revoked"
    );
    let r = sync(&app, &t, p).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the stored grant lives: {}",
        r.body
    );
    assert_eq!(
        parked_intents(&app).await,
        1,
        "the late flow's grant waits behind the stored one"
    );
    app.stop().await;
}

/// A grant whose access token expires and that carries no refresh token (Google's answer to an
/// account that consented before, when the request lost `prompt=consent`) ends with that token:
/// it connects, with that end as its `refresh_expires_at`, and is not given back (at Google that
/// would end the account's whole consent, another connection's grant included); past its end a
/// sync ends the connection without a call and activation does not rest on it. Slack without
/// token rotation — an access token that does not expire — has no end.
#[tokio::test]
async fn a_grant_without_a_refresh_token_ends_with_its_access_token() {
    let app = spawn_app().await;
    let t = app
        .tenant("no-refresh", true, ConnectionStatus::NotConnected)
        .await;
    let p = Provider::Qbo;
    app.sut
        .provider
        .configure(p, |s| s.withhold_refresh_token = true);
    app.connect(t.owner, t.workspace, p).await.unwrap();
    app.connect(t.owner, t.workspace, Provider::Gmail)
        .await
        .unwrap();
    let expires: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT token_expires_at FROM connections WHERE workspace_id = $1 AND provider = 'qbo'",
    )
    .bind(t.workspace)
    .fetch_one(app.db())
    .await
    .unwrap();
    let ends = grant_end(&app, t.workspace, p).await;
    assert!(ends.is_some() && ends == expires, "{expires:?} {ends:?}");
    assert_eq!(
        app.sut.provider.counters(p).revocations,
        0,
        "not given back"
    );
    app.sut
        .provider
        .configure(Provider::Slack, |s| s.rotate_refresh_tokens = false);
    app.connect(t.owner, t.workspace, Provider::Slack)
        .await
        .unwrap();
    assert_eq!(
        grant_end(&app, t.workspace, Provider::Slack).await,
        None,
        "a token that does not expire"
    );

    app.advance_clock(std::time::Duration::from_secs(2 * 3600))
        .await;
    app.activate(&t, None)
        .await
        .assert_error(StatusCode::CONFLICT, "ACTIVATION_NOT_READY");
    let refreshes = app.sut.provider.counters(p).refreshes;
    sync(&app, &t, p)
        .await
        .assert_error(StatusCode::CONFLICT, "RECONNECT_REQUIRED");
    assert_eq!(status(&app, t.workspace, p).await, "REVOKED");
    assert_eq!(app.sut.provider.counters(p).refreshes, refreshes);
    // Google's grant has its refresh token: two hours on, it is refreshed as ever.
    let r = sync(&app, &t, Provider::Gmail).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    app.stop().await;
}

/// A code lives as long as its provider lets it (Box: 30 seconds): one exchanged later is
/// `invalid_grant`, the callback answers 502 `PROVIDER_ERROR`, nothing is stored and no grant is
/// live; a fresh authorization connects.
#[tokio::test]
async fn a_code_exchanged_after_its_lifetime_is_refused_and_nothing_is_stored() {
    use harbor_harness::fake_provider::Switches;
    assert_eq!(
        Switches::of(Provider::Box).code_lifetime,
        std::time::Duration::from_secs(30)
    );
    let app = spawn_app().await;
    let t = app
        .tenant("late-code", true, ConnectionStatus::NotConnected)
        .await;
    let p = Provider::Box;
    let default = Switches::of(p).code_lifetime;
    app.sut
        .provider
        .configure(p, |s| s.code_lifetime = std::time::Duration::ZERO);
    connect_answer(&app, &t, p)
        .await
        .assert_error(StatusCode::BAD_GATEWAY, "PROVIDER_ERROR");
    assert_eq!(status(&app, t.workspace, p).await, "NOT_CONNECTED");
    let c = app.sut.provider.counters(p);
    assert_eq!(
        (c.code_exchanges, c.code_expired, c.code_exchanges_ok),
        (1, 1, 0)
    );
    assert!(app.sut.provider.live_grants().iter().all(|(q, _)| *q != p));
    app.sut.provider.configure(p, |s| s.code_lifetime = default);
    app.connect(t.owner, t.workspace, p).await.unwrap();
    app.stop().await;
}

/// A refresh token lasts as long as its provider says (Intuit's `x_refresh_token_expires_in`,
/// 8,726,400 s in the fake as at Intuit) or documents (Box: 60 days); past it the grant is over:
/// a sync ends the connection without asking the provider, and an activation does not rest on
/// it. Intuit's expiry rolls with each refresh. A provider that says nothing (Google) is taken to
/// last until it refuses a refresh.
#[tokio::test]
async fn a_refresh_token_past_its_expiry_ends_the_grant_without_asking_the_provider() {
    let app = spawn_app().await;
    let day = std::time::Duration::from_secs(24 * 3600);
    let t = app
        .tenant("expiring", true, ConnectionStatus::NotConnected)
        .await;
    let [activates, refused] = [
        app.tenant("lasting", true, ConnectionStatus::NotConnected)
            .await,
        app.tenant("lapsed", true, ConnectionStatus::NotConnected)
            .await,
    ];
    let connected = app.sut.clock.now();
    for p in [Provider::Qbo, Provider::Box, Provider::Gmail] {
        app.connect(t.owner, t.workspace, p).await.unwrap();
    }
    for u in [&activates, &refused] {
        app.connect(u.owner, u.workspace, Provider::Qbo)
            .await
            .unwrap();
    }
    let expiry = |p: Provider| grant_end(&app, t.workspace, p);
    let near = |at: Option<chrono::DateTime<chrono::Utc>>, after: chrono::Duration| {
        at.is_some_and(|at| (at - (connected + after)).num_seconds().abs() < 60)
    };
    assert!(
        near(
            expiry(Provider::Qbo).await,
            chrono::Duration::seconds(8_726_400)
        ),
        "{:?}",
        expiry(Provider::Qbo).await
    );
    assert!(
        near(expiry(Provider::Box).await, chrono::Duration::days(60)),
        "{:?}",
        expiry(Provider::Box).await
    );
    assert_eq!(expiry(Provider::Gmail).await, None);

    // 61 days on: Box's grant is over, Intuit's is not — and rolls on with a refresh. Time
    // passed at the provider too: it no longer takes Box's refresh token.
    app.advance_clock(61 * day).await;
    assert!(
        app.sut
            .provider
            .live_grants()
            .iter()
            .all(|(q, _)| *q != Provider::Box),
        "Box's refresh token is past its 60 days at Box"
    );
    let refreshes = app.sut.provider.counters(Provider::Box).refreshes;
    sync(&app, &t, Provider::Box)
        .await
        .assert_error(StatusCode::CONFLICT, "RECONNECT_REQUIRED");
    assert_eq!(status(&app, t.workspace, Provider::Box).await, "REVOKED");
    assert_eq!(
        app.sut.provider.counters(Provider::Box).refreshes,
        refreshes,
        "the provider is not asked"
    );
    let outcome: String = sqlx::query_scalar(
        "SELECT outcome FROM audit_events WHERE workspace_id = $1 AND detail->>'provider' = 'box' ORDER BY id DESC LIMIT 1",
    )
    .bind(t.workspace)
    .fetch_one(app.db())
    .await
    .unwrap();
    assert_eq!(outcome, "grant_expired");
    let why: Option<String> = sqlx::query_scalar(
        "SELECT last_refresh_outcome FROM connections WHERE workspace_id = $1 AND provider = 'box'",
    )
    .bind(t.workspace)
    .fetch_one(app.db())
    .await
    .unwrap();
    assert_eq!(why.as_deref(), Some("grant_expired"), "the view says why");
    let refreshed_at = app.sut.clock.now();
    let r = sync(&app, &t, Provider::Qbo).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["refreshed"], true, "{}", r.body);
    // Intuit's expiry rolls: the refresh's answer gave the new token its own 101 days.
    let rolled = expiry(Provider::Qbo).await;
    assert!(
        rolled.is_some_and(
            |at| (at - (refreshed_at + chrono::Duration::seconds(8_726_400)))
                .num_seconds()
                .abs()
                < 60
        ),
        "{rolled:?}"
    );
    let r = app.activate(&activates, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // 102 days more: Intuit's refreshed grant is over too; the one never refreshed long since,
    // and activation does not rest on it. Google's lasts.
    app.advance_clock(102 * day).await;
    let refreshes = app.sut.provider.counters(Provider::Qbo).refreshes;
    sync(&app, &t, Provider::Qbo)
        .await
        .assert_error(StatusCode::CONFLICT, "RECONNECT_REQUIRED");
    assert_eq!(
        app.sut.provider.counters(Provider::Qbo).refreshes,
        refreshes
    );
    app.activate(&refused, None)
        .await
        .assert_error(StatusCode::CONFLICT, "ACTIVATION_NOT_READY");
    let r = sync(&app, &t, Provider::Gmail).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // The grants the syncs ended are given back; the two connections still CONNECTED past their
    // grants' end keep that end: every grant is accounted for.
    app.drain_outbox().await;
    app.assert_grants_accounted().await;
    app.stop().await;
}
