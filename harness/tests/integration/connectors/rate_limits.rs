//! Rate limits on callbacks: they engage and recover.

use super::*;

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
    app.advance_clock(Duration::from_secs(retry)).await;
    assert_eq!(
        authorize(0).await.status,
        StatusCode::OK,
        "recovered once Retry-After has passed"
    );

    // State guessing: unknown states are counted per user until the guesser is refused (with
    // the tenant's own budget full again, so it is the failed-state bucket that refuses).
    app.advance_clock(Duration::from_secs(60)).await;
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
