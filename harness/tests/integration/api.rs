//! Operability: bad input gets 400 with the field named and a request id, unknown routes get JSON
//! 404s, health and readiness answer, the OpenAPI document is served, and production refuses the
//! test hooks.

use harbor_harness::fake_provider::FakeProvider;
use harbor_harness::identity::TokenMint;
use harbor_harness::target::started::{service_config, ServiceDeps, ServiceOptions};
use harbor_service::config::{Config, Profile};
use harbor_service::vault::{KeyRing, TokenKeysConfig};
use reqwest::{Method, StatusCode};
use secrecy::SecretString;

use crate::helpers::{spawn_app, test_infra};

#[tokio::test]
async fn malformed_input_is_a_400_naming_the_field() {
    let app = spawn_app().await;
    let t = app
        .tenant(
            "inputs",
            true,
            harbor_service::lifecycle::ConnectionStatus::Connected,
        )
        .await;

    let r = app
        .call(Method::POST, "/v1/workspaces/not-a-uuid/activation")
        .as_user(t.owner.0)
        .send()
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("workspace_id:"),
        "{}",
        r.body
    );

    let r = app
        .call(
            Method::POST,
            format!(
                "/v1/workspaces/{}/connections/dropbox/disconnect",
                t.workspace
            ),
        )
        .as_user(t.owner.0)
        .send()
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("provider:"),
        "{}",
        r.body
    );

    let r = app
        .call(
            Method::POST,
            format!("/v1/workspaces/{}/activation", t.workspace),
        )
        .as_user(t.owner.0)
        .actor("bad actor!")
        .send()
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("x-harbor-actor:"),
        "{}",
        r.body
    );

    app.call(Method::GET, "/v1/nothing-here")
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = app
        .call(
            Method::DELETE,
            format!("/v1/workspaces/{}/activation", t.workspace),
        )
        .send()
        .await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    // One spelling per id: the other spellings a UUID parser would take are refused.
    let w = t.workspace.to_string();
    for other in [
        w.to_uppercase(),
        w.replace('-', ""),
        format!("{{{w}}}"),
        format!("urn:uuid:{w}"),
    ] {
        let r = app
            .call(Method::GET, format!("/v1/workspaces/{other}/connections"))
            .as_user(t.owner.0)
            .send()
            .await;
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    // Nothing was lost or half-written by any of it.
    assert_eq!(
        app.count("SELECT count(*) FROM workspace_activations")
            .await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_and_openapi_are_served() {
    let app = spawn_app().await;
    let r = app.call(Method::GET, "/healthz").send().await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.call(Method::GET, "/readyz").send().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["postgres"], true);
    assert_eq!(r.body["redis"], true);
    assert_eq!(
        r.body["sync_points"], true,
        "readiness says the test hook is on"
    );
    let r = app.call(Method::GET, "/openapi.json").send().await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["paths"]["/v1/workspaces/{workspace_id}/activation"]["post"].is_object());
    assert!(r.body["components"]["securitySchemes"]["bearer"].is_object());
    app.stop().await;
}

#[tokio::test]
async fn start_up_refuses_unsafe_configuration() {
    let mut infra = test_infra().await;
    let env = infra.isolated_env().await.unwrap();
    let tokens = TokenMint::new();
    let (_, token_keys) = KeyRing::generate("k1");
    let provider = FakeProvider::start().await.unwrap();
    let deps = ServiceDeps {
        tokens: &tokens,
        token_keys: &token_keys,
        provider: &provider,
    };
    let config = Config {
        profile: Profile::Production,
        ..service_config(
            &env,
            &deps,
            ServiceOptions {
                sync_points: true,
                ..ServiceOptions::default()
            },
        )
    };
    let refused = harbor_service::Application::build(config).await;
    let message = refused
        .err()
        .expect("production with sync points must not start")
        .to_string();
    assert!(message.contains("HARBOR_SYNC_POINTS"), "{message}");

    // No token key: the service refuses to start rather than store tokens it cannot protect.
    let config = Config {
        token_keys: TokenKeysConfig {
            keys: SecretString::from(String::new()),
            primary: None,
        },
        ..service_config(&env, &deps, ServiceOptions::default())
    };
    let refused = harbor_service::Application::build(config).await;
    let message = refused
        .err()
        .expect("a service without a token key must not start")
        .to_string();
    assert!(message.contains("HARBOR_TOKEN_KEYS"), "{message}");

    // Requests that would bypass row-level security (here: logged in as the superuser owner).
    let config = Config {
        database_url: SecretString::from(env.database_url.clone()),
        ..service_config(&env, &deps, ServiceOptions::default())
    };
    let refused = harbor_service::Application::build(config).await;
    let message = refused
        .err()
        .expect("a service that bypasses RLS must not start")
        .to_string();
    assert!(message.contains("bypasses row-level security"), "{message}");

    // A request role that may create objects in `public`, where the owner's settlement function
    // looks names up (migration 0019), is refused too.
    let owner = env.pool(1).await.unwrap();
    sqlx::query("GRANT CREATE ON SCHEMA public TO harbor_app")
        .execute(&owner)
        .await
        .unwrap();
    let refused =
        harbor_service::Application::build(service_config(&env, &deps, ServiceOptions::default()))
            .await;
    sqlx::query("REVOKE CREATE ON SCHEMA public FROM harbor_app")
        .execute(&owner)
        .await
        .unwrap();
    let message = refused
        .err()
        .expect("a request role that can create in public must not start")
        .to_string();
    assert!(
        message.contains("can create objects in schema public"),
        "{message}"
    );
    // So is one that could only `SET ROLE` to a role that may: a member that does not inherit.
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (login, creator) = (format!("request_{suffix}"), format!("creator_{suffix}"));
    for statement in [
        format!("CREATE ROLE {creator} NOLOGIN"),
        format!("GRANT CREATE ON SCHEMA public TO {creator}"),
        format!("CREATE ROLE {login} LOGIN NOINHERIT IN ROLE {creator}"),
    ] {
        sqlx::query(&statement).execute(&owner).await.unwrap();
    }
    let mut as_login = url::Url::parse(&env.database_url).unwrap();
    as_login.set_username(&login).unwrap();
    as_login.set_password(None).unwrap();
    let config = Config {
        database_url: SecretString::from(as_login.to_string()),
        ..service_config(&env, &deps, ServiceOptions::default())
    };
    let refused = harbor_service::Application::build(config).await;
    for statement in [
        format!("DROP ROLE {login}"),
        format!("REVOKE CREATE ON SCHEMA public FROM {creator}"),
        format!("DROP ROLE {creator}"),
    ] {
        sqlx::query(&statement).execute(&owner).await.unwrap();
    }
    let message = refused
        .err()
        .expect("a request role that can become one that creates in public must not start")
        .to_string();
    assert!(
        message.contains("can create objects in schema public"),
        "{message}"
    );

    // Provider endpoints over plain HTTP (the fake provider's) are refused in production.
    let config = Config {
        profile: Profile::Production,
        ..service_config(
            &env,
            &deps,
            ServiceOptions {
                sync_points: false,
                ..ServiceOptions::default()
            },
        )
    };
    let refused = harbor_service::Application::build(config).await;
    let message = refused
        .err()
        .expect("production with http:// provider endpoints must not start")
        .to_string();
    assert!(message.contains("https"), "{message}");
    env.cleanup().await.unwrap();
    infra.shutdown().await;
}

/// `harbor-certify serve`'s demo: the env file names everything a tool needs, the owner's token
/// works, and the other tenant's token learns nothing about the demo workspace.
#[tokio::test]
async fn serve_seeds_a_demo_with_working_tokens() {
    let app = crate::helpers::spawn_app().await;
    let demo = harbor_harness::target::started::serve::Demo::seed(&app.sut)
        .await
        .unwrap();
    let env = demo.env_lines();
    for name in [
        "HARBOR_BASE_URL=",
        "HARBOR_WORKSPACE_ID=",
        "HARBOR_OWNER_TOKEN=",
        "HARBOR_MEMBER_TOKEN=",
        "HARBOR_OTHER_TENANT_TOKEN=",
    ] {
        assert!(
            env.lines()
                .any(|l| l.starts_with(name) && l.len() > name.len()),
            "{name} missing from:\n{env}"
        );
    }
    let path = format!("/v1/workspaces/{}/connections", demo.workspace);
    for (token, expected) in [
        (&demo.owner_token, StatusCode::OK),
        (&demo.member_token, StatusCode::OK),
        (&demo.other_tenant_token, StatusCode::NOT_FOUND),
    ] {
        let r = app
            .call(Method::GET, &path)
            .bearer(token.clone())
            .send()
            .await;
        assert_eq!(r.status, expected, "{}", r.body);
    }
    assert!(demo.instructions(None).contains("/openapi.json"));
    app.stop().await;
}
