//! The threat model checklist's security tests: no plaintext token in a dump, a log, Redis or a
//! response; the state's key and TTL; replays; one exchange per state; provider mix-up.

use super::*;

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
    app.advance_clock(Duration::from_secs(58 * 60)).await;
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
