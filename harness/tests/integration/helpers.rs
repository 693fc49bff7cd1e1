//! `spawn_app()` and friends: a service under test on its own database, and request helpers.

use std::time::Duration;

use harbor_harness::fixtures::TenantWorkspace;
use harbor_harness::provision::{BackendChoice, Infra};
use harbor_harness::service::{ServiceOptions, ServiceUnderTest};
use harbor_harness::tokens::TokenKind;
use harbor_service::lifecycle::ConnectionStatus;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

/// A running service plus the infrastructure it owns (when it provisioned its own).
pub struct TestApp {
    pub sut: ServiceUnderTest,
    infra: Option<Infra>,
}

/// Shared servers when the run provides them, else a private `auto` provisioning.
pub async fn test_infra() -> Infra {
    let choice = if std::env::var("HARBOR_DATABASE_URL").is_ok() && std::env::var("HARBOR_REDIS_URL").is_ok() {
        BackendChoice::External
    } else {
        BackendChoice::Auto
    };
    match Infra::provision(choice).await {
        Ok(infra) => infra,
        Err(e) => panic!("this test needs PostgreSQL and Redis and could not get them: {e}"),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(ServiceOptions::default()).await
}

pub async fn spawn_app_with(options: ServiceOptions) -> TestApp {
    let mut infra = test_infra().await;
    match ServiceUnderTest::start(&infra, options).await {
        Ok(sut) => TestApp { sut, infra: Some(infra) },
        Err(e) => {
            infra.shutdown().await;
            panic!("the service under test did not start: {e}")
        }
    }
}

/// A finished HTTP exchange.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub request_id: Option<String>,
    pub retry_after: Option<String>,
    pub content_type: Option<String>,
}

impl Reply {
    /// The stable error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no error code>")
    }

    /// Asserts an error reply: status, code, and a request id in the body equal to the header's.
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.code(), code, "body: {}", self.body);
        let in_body = self.body["error"]["request_id"].as_str().expect("error bodies carry request_id");
        assert_eq!(Some(in_body), self.request_id.as_deref(), "x-request-id matches the body");
    }
}

/// One request to build.
pub struct Call<'a> {
    app: &'a TestApp,
    method: Method,
    path: String,
    replica: usize,
    bearer: Option<String>,
    actor: Option<String>,
    headers: Vec<(String, String)>,
}

impl<'a> Call<'a> {
    pub fn bearer(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }
    #[allow(clippy::wrong_self_convention)] // reads as "call as user …", not a conversion
    pub fn as_user(self, user: Uuid) -> Self {
        let token = self.app.sut.tokens.token(user, TokenKind::Valid);
        self.bearer(token)
    }
    pub fn on_replica(mut self, replica: usize) -> Self {
        self.replica = replica;
        self
    }
    pub fn actor(mut self, actor: &str) -> Self {
        self.actor = Some(actor.to_owned());
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub async fn send(self) -> Reply {
        let mut req = self.app.sut.http.request(self.method, self.app.sut.url(self.replica, &self.path));
        if let Some(b) = self.bearer {
            req = req.bearer_auth(b);
        }
        if let Some(a) = self.actor {
            req = req.header("x-harbor-actor", a);
        }
        for (k, v) in self.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("the service answers");
        let status = resp.status();
        let request_id = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = resp.text().await.expect("a readable body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body, request_id, retry_after, content_type }
    }
}

impl TestApp {
    pub fn call(&self, method: Method, path: impl Into<String>) -> Call<'_> {
        Call { app: self, method, path: path.into(), replica: 0, bearer: None, actor: None, headers: Vec::new() }
    }

    pub fn db(&self) -> &sqlx::PgPool {
        &self.sut.db
    }

    /// Runs a `SELECT count(*) …` on the test's database.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(self.db()).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The workspace's activation rows.
    pub async fn activations_of(&self, workspace: harbor_service::domain::WorkspaceId) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM workspace_activations WHERE workspace_id = $1")
            .bind(workspace)
            .fetch_one(self.db())
            .await
            .expect("counting activations")
    }

    pub async fn tenant(&self, name: &str, entitled: bool, qbo: ConnectionStatus) -> TenantWorkspace {
        TenantWorkspace::create(self.db(), name, entitled, qbo).await.expect("fixtures")
    }

    /// `count` tenants `<prefix>0…`, each with `provider` connected through the real OAuth flow.
    pub async fn connected_tenants(&self, prefix: &str, count: usize, provider: harbor_service::domain::Provider) -> Vec<TenantWorkspace> {
        let mut tenants = Vec::with_capacity(count);
        for i in 0..count {
            let t = self.tenant(&format!("{prefix}{i}"), true, ConnectionStatus::NotConnected).await;
            self.sut.connect(t.owner, t.workspace, provider).await.expect("connects");
            tenants.push(t);
        }
        tenants
    }

    /// The service's key ring plus a fresh key `id` as the new primary (a key rotation's ring).
    pub fn key_ring_rotated_to(&self, id: &str) -> harbor_service::vault::KeyRing {
        use harbor_service::vault::{KeyRing, TokenKeysConfig};
        use secrecy::{ExposeSecret, SecretString};
        let (_, fresh) = KeyRing::generate(id);
        let both = TokenKeysConfig {
            keys: SecretString::from(format!("{},{}", self.sut.token_keys.keys.expose_secret(), fresh.keys.expose_secret())),
            primary: Some(id.to_owned()),
        };
        KeyRing::from_config(&both).expect("two valid keys")
    }

    pub async fn activate(&self, t: &TenantWorkspace, actor: Option<&str>) -> Reply {
        let mut call = self.call(Method::POST, format!("/v1/workspaces/{}/activation", t.workspace)).as_user(t.owner.0);
        if let Some(a) = actor {
            call = call.actor(a);
        }
        call.send().await
    }

    pub async fn stop(self) {
        self.sut.stop().await.expect("the service stops and its database is dropped");
        if let Some(mut infra) = self.infra {
            infra.shutdown().await;
        }
    }
}

/// Generous bound for probes that wait on the server: exceeding it is a failure, never a pass.
pub const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// Awaits `fut` or fails the test with `what`.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PROBE_LIMIT, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}
