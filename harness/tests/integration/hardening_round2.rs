//! The second hostile review's findings that are not interleavings (issue #24), one test each;
//! each failed on the reviewed code (the closing note quotes how). The interleavings are scenario
//! files (`scenarios/HRD-*.toml`).

use std::time::Duration;

use harbor_harness::operation::{paths, WorkspaceOp};
use harbor_harness::target::started::ServiceOptions;
use harbor_service::domain::Provider;
use harbor_service::lifecycle::ConnectionStatus;
use harbor_service::ratelimit::{Quota, RateLimits, TrustedProxies};
use reqwest::{Method, StatusCode};

use crate::helpers::{spawn_app, spawn_app_with, within, PROBE_LIMIT};

/// Item 2: replicas with different quotas (a rolling deploy that changes the
/// burst) share one bucket without resetting each other: a refused request on the replica with
/// the smaller burst must not lower the arrival time the larger one stored.
#[tokio::test]
async fn replicas_with_different_quotas_do_not_reset_each_other() {
    use harbor_service::clock::Clock;
    use harbor_service::ratelimit::{Quota, RateLimiter, RateLimits};
    let app = spawn_app().await;
    let client = redis::Client::open(app.sut.env.redis_url.as_str()).unwrap();
    let redis = redis::aio::ConnectionManager::new(client).await.unwrap();
    let prefix: std::sync::Arc<str> = std::sync::Arc::from(app.sut.env.redis_key_prefix.as_str());
    let with_burst = |burst| RateLimits {
        per_tenant: Quota {
            per_minute: 60,
            burst,
        },
        ..RateLimits::default()
    };
    let a = RateLimiter::new(
        redis.clone(),
        prefix.clone(),
        Clock::system(),
        with_burst(20),
    );
    let b = RateLimiter::new(redis, prefix, Clock::system(), with_burst(10));
    for i in 0..20 {
        assert!(
            a.charge_tenant("authorize", "t").await.unwrap().is_ok(),
            "request {i} is within A's burst of 20"
        );
    }
    for round in 0..3 {
        assert!(
            b.charge_tenant("authorize", "t").await.unwrap().is_err(),
            "round {round}: B (burst 10) finds the shared bucket empty"
        );
        let passed = {
            let mut n = 0;
            for _ in 0..10 {
                n += usize::from(a.charge_tenant("authorize", "t").await.unwrap().is_ok());
            }
            n
        };
        assert!(
            passed <= 1,
            "round {round}: after B's refusal A let {passed} of 10 more through (at 60/min at most one can have refilled)"
        );
    }
    app.stop().await;
}

/// Item 3: behind a trusted load balancer each client gets its own per-address bucket (the
/// right-most forwarded hop that is not the balancer), and a client's own `X-Forwarded-For` is
/// believed from no one else.
#[tokio::test]
async fn forwarded_clients_have_their_own_address_bucket_behind_a_trusted_proxy() {
    let app = spawn_app_with(ServiceOptions {
        trusted_proxies: TrustedProxies::parse("127.0.0.0/8").unwrap(),
        rate_limits: RateLimits {
            per_address: Quota {
                per_minute: 60,
                burst: 2,
            },
            ..RateLimits::default()
        },
        ..ServiceOptions::default()
    })
    .await;
    let t = app.tenant("lb", true, ConnectionStatus::NotConnected).await;
    let authorize = |forwarded_for: &'static str| {
        app.call(
            Method::POST,
            WorkspaceOp::Authorize
                .request(t.workspace, Provider::Gmail, "")
                .1,
        )
        .as_user(t.owner.0)
        .header("x-forwarded-for", forwarded_for)
        .send()
    };
    // The first client prepends an address of its choice: only the hop the balancer appended counts.
    for _ in 0..2 {
        assert_eq!(
            authorize("198.51.100.77, 203.0.113.1").await.status,
            StatusCode::OK
        );
    }
    authorize("192.0.2.1, 203.0.113.1")
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert_eq!(
        authorize("203.0.113.2").await.status,
        StatusCode::OK,
        "another client behind the same balancer has its own bucket"
    );
    app.stop().await;
}

/// Item 7: a request that declares a body over the limit is refused before anything reads it,
/// with the documented error (413 `PAYLOAD_TOO_LARGE`, request id).
#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused() {
    let app = spawn_app().await;
    let t = app.tenant("big", true, ConnectionStatus::Connected).await;
    let url = app.sut.client.url(0, &paths::activation(t.workspace));
    let token = app
        .sut
        .tokens
        .token(t.owner.0, harbor_harness::identity::TokenKind::Valid);
    let answer = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .body(vec![b'x'; 200 * 1024])
        .send()
        .await
        .expect("the service answers");
    assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert!(body["error"]["request_id"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    assert_eq!(app.activations_of(t.workspace).await, 0, "nothing ran");
    app.stop().await;
}

/// Item 7: a client that never finishes its request headers is disconnected after the
/// header-read timeout, instead of holding a connection and a task for as long as it likes.
#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(ServiceOptions {
        header_read_timeout: Duration::from_millis(300),
        ..ServiceOptions::default()
    })
    .await;
    let address = app
        .sut
        .client
        .url(0, "")
        .trim_start_matches("http://")
        .to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: harbor.test\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    // Whatever the server says on the way out (an error status, or nothing), it closes.
    let closed = within(
        "the server to close a connection whose headers never end",
        slow.read_to_end(&mut rest),
    )
    .await;
    assert!(
        closed.is_ok() || closed.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the connection ends"
    );
    app.stop().await;
}

/// Item 7: a request that runs past the request timeout is answered instead of holding its
/// client — a callback 503 `AUTHORIZATION_INTERRUPTED` without `Retry-After` (its state is spent:
/// a retry could only be refused), any other request 503 `REQUEST_TIMEOUT` with it; the
/// callback's own task still stores the grant.
#[tokio::test]
async fn a_request_past_the_request_timeout_is_answered_503() {
    let app = spawn_app_with(ServiceOptions {
        sync_points: false,
        request_timeout: Some(Duration::from_millis(1000)),
        provider_timeout: Duration::from_secs(10),
        ..ServiceOptions::default()
    })
    .await;
    let t = app
        .tenant("slow", true, ConnectionStatus::NotConnected)
        .await;
    let consent = app
        .authorize_and_consent(0, t.owner, t.workspace, Provider::Qbo)
        .await
        .unwrap();
    let t2 = app
        .tenant("slow-sync", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(t2.owner, t2.workspace, Provider::Qbo)
        .await
        .unwrap();
    app.sut.provider.configure(Provider::Qbo, |s| {
        s.token_delay = Duration::from_millis(2500);
    });
    let reply = app
        .call(
            Method::GET,
            paths::callback(Provider::Qbo, &consent.callback_query()),
        )
        .as_user(t.owner.0)
        .send()
        .await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "AUTHORIZATION_INTERRUPTED");
    assert_eq!(
        reply.retry_after, None,
        "a retry of a spent state cannot succeed"
    );
    // Any other request: retry. A sync whose refresh takes as long.
    app.sut.provider.expire_access_tokens(Provider::Qbo);
    let (method, path) = WorkspaceOp::Sync.request(t2.workspace, Provider::Qbo, "");
    let reply = app.call(method, path).as_user(t2.owner.0).send().await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "REQUEST_TIMEOUT");
    assert_eq!(reply.retry_after.as_deref(), Some("1"));
    app.stop().await;
}

/// Migration 0016: a request holds its caller's membership by a shared advisory lock. A change to
/// the membership waits for the requests holding it (proven from the lock tables: the change's
/// backend awaits the very lock the holder has), holders do not wait for each other, and a request
/// that comes after the change queues behind it and reads the changed role — where `FOR SHARE`
/// let it past the waiting change. The later request is tagged by the call itself (migration
/// 0017), so the lock tables name it only if the tag comes before the lock.
#[tokio::test]
async fn a_membership_change_waits_for_its_holders_and_later_requests_queue_behind_it() {
    use harbor_harness::evidence::{self, BlockedBy};
    let app = spawn_app().await;
    let t = app.tenant("held", true, ConnectionStatus::Connected).await;
    let (workspace, admin) = (t.workspace, t.admin);
    // A transaction of the owner's pool, named as the harness names an actor's backend.
    let tagged = |actor: &'static str| {
        let pool = app.db().clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SELECT set_config('application_name', $1, true)")
                .bind(format!("harbor:{actor}"))
                .execute(&mut *tx)
                .await
                .unwrap();
            tx
        }
    };
    const ENTER: &str = "SELECT role FROM harbor_enter_workspace($1, $2)";
    const ENTER_TAGGED: &str = "SELECT role FROM harbor_enter_workspace($1, $2, $3)";

    let mut holder = tagged("H").await;
    let role: String = sqlx::query_scalar(ENTER)
        .bind(workspace)
        .bind(admin)
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    assert_eq!(role, "admin");
    let mut second = tagged("H2").await;
    let role: String = within(
        "a second holder, which must not wait for the first",
        sqlx::query_scalar(ENTER)
            .bind(workspace)
            .bind(admin)
            .fetch_one(&mut *second),
    )
    .await
    .unwrap();
    assert_eq!(role, "admin");
    second.commit().await.unwrap();

    let mut change = tagged("C").await;
    let demotion = tokio::spawn(async move {
        sqlx::query(
            "UPDATE memberships SET role = 'member' WHERE workspace_id = $1 AND user_id = $2",
        )
        .bind(workspace)
        .bind(admin)
        .execute(&mut *change)
        .await
        .unwrap();
        change.commit().await.unwrap();
    });
    let seen = evidence::until_blocked(
        app.db(),
        "C",
        Some("H"),
        BlockedBy::Holder,
        PROBE_LIMIT,
        || demotion.is_finished(),
    )
    .await
    .unwrap_or_else(|e| panic!("the demotion must wait for the holder: {e:?}"));
    assert_eq!(seen.awaited.locktype, "advisory", "{:?}", seen.awaited);

    // The service's form (migration 0017): a bare transaction, tagged by the call itself. The
    // lock tables can name its backend only if the tag is set before the lock is asked for.
    let mut after = app.db().begin().await.unwrap();
    let later = tokio::spawn(async move {
        let role: Option<String> = sqlx::query_scalar(ENTER_TAGGED)
            .bind(workspace)
            .bind(admin)
            .bind("harbor:L")
            .fetch_optional(&mut *after)
            .await
            .unwrap();
        // The tag outlives the call: the function's `SET` clause restores `search_path` only.
        let tag: String = sqlx::query_scalar("SELECT current_setting('application_name')")
            .fetch_one(&mut *after)
            .await
            .unwrap();
        after.commit().await.unwrap();
        (role, tag)
    });
    evidence::until_blocked(
        app.db(),
        "L",
        Some("C"),
        BlockedBy::QueuedAhead,
        PROBE_LIMIT,
        || later.is_finished(),
    )
    .await
    .unwrap_or_else(|e| panic!("a request after the demotion must queue behind it: {e:?}"));

    holder.commit().await.unwrap();
    within("the demotion", demotion).await.unwrap();
    let (role, tag) = within("the later request", later).await.unwrap();
    assert_eq!(
        role.as_deref(),
        Some("member"),
        "the request that came after the demotion reads it"
    );
    assert_eq!(tag, "harbor:L", "the tag lasts until the transaction ends");

    // The callback's store holds the membership too (its statement, `harbor_membership_held` in
    // its tenant's scope; a plain member takes no workspace lock), and a removal waits for it.
    let member = t.member;
    let mut store = tagged("S").await;
    sqlx::query("SELECT set_config('harbor.tenant_id', $1, true)")
        .bind(t.tenant.0.to_string())
        .execute(&mut *store)
        .await
        .unwrap();
    let key = harbor_service::locks::lock_key_for_workspace(workspace);
    let (role, locked): (Option<String>, bool) =
        sqlx::query_as(harbor_service::auth::MEMBERSHIP_HELD_AND_LOCK)
            .bind(workspace)
            .bind(member)
            .bind(key.classid)
            .bind(key.objid)
            .bind(harbor_service::domain::Role::names_let_through(true))
            .fetch_one(&mut *store)
            .await
            .unwrap();
    assert_eq!((role.as_deref(), locked), (Some("member"), false));
    let mut removing = tagged("R").await;
    let removal = tokio::spawn(async move {
        sqlx::query("DELETE FROM memberships WHERE workspace_id = $1 AND user_id = $2")
            .bind(workspace)
            .bind(member)
            .execute(&mut *removing)
            .await
            .unwrap();
        removing.commit().await.unwrap();
    });
    let seen = evidence::until_blocked(
        app.db(),
        "R",
        Some("S"),
        BlockedBy::Holder,
        PROBE_LIMIT,
        || removal.is_finished(),
    )
    .await
    .unwrap_or_else(|e| panic!("the removal must wait for the store: {e:?}"));
    assert_eq!(seen.awaited.locktype, "advisory", "{:?}", seen.awaited);
    store.commit().await.unwrap();
    within("the removal", removal).await.unwrap();

    // The read after the lock needs a snapshot of its own: any level but READ COMMITTED is
    // refused, by both forms of the function.
    for tagged in [false, true] {
        let mut repeatable = app.db().begin().await.unwrap();
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *repeatable)
            .await
            .unwrap();
        let enter = sqlx::query_scalar::<_, String>(if tagged { ENTER_TAGGED } else { ENTER })
            .bind(workspace)
            .bind(admin);
        let enter = if tagged {
            enter.bind("harbor:RR")
        } else {
            enter
        };
        let refused = enter.fetch_one(&mut *repeatable).await;
        match refused {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("0A000") => {}
            other => panic!("REPEATABLE READ must be refused (tagged: {tagged}): {other:?}"),
        }
        repeatable.rollback().await.unwrap();
    }
    app.stop().await;
}
