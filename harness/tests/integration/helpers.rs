//! `spawn_app()` and friends: a service under test on its own database, and request helpers.

use std::time::Duration;

use harbor_harness::client::Call;
use harbor_harness::fake_provider::Consent;
use harbor_harness::fixtures::TenantWorkspace;
use harbor_harness::identity::TokenKind;
use harbor_harness::operation::paths;
use harbor_harness::provision::{BackendChoice, Infra};
use harbor_harness::target::started::{ServiceOptions, Started};
use harbor_service::domain::{Provider, UserId, WorkspaceId};
use harbor_service::lifecycle::ConnectionStatus;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

/// A running service plus the infrastructure it owns (when it provisioned its own).
pub struct TestApp {
    pub sut: Started,
    infra: Option<Infra>,
}

/// Shared servers when the run provides them, else a private `auto` provisioning.
pub async fn test_infra() -> Infra {
    let choice = if std::env::var("HARBOR_DATABASE_URL").is_ok()
        && std::env::var("HARBOR_REDIS_URL").is_ok()
    {
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
    match Started::start(&infra, options).await {
        Ok(sut) => TestApp {
            sut,
            infra: Some(infra),
        },
        Err(e) => {
            infra.shutdown().await;
            panic!("the service under test did not start: {e}")
        }
    }
}

/// A finished HTTP exchange (the harness's one client reads it).
pub type Reply = harbor_harness::client::Answer;

/// One request to build: the harness client's [`Call`], with the test's users.
pub struct TestCall<'a> {
    app: &'a TestApp,
    call: Call,
}

impl TestCall<'_> {
    pub fn bearer(mut self, token: impl Into<String>) -> Self {
        self.call = self.call.bearer(Some(token.into()));
        self
    }
    #[allow(clippy::wrong_self_convention)] // reads as "call as user …", not a conversion
    pub fn as_user(self, user: Uuid) -> Self {
        let token = self.app.sut.tokens.token(user, TokenKind::Valid);
        self.bearer(token)
    }
    pub fn on_replica(mut self, replica: usize) -> Self {
        self.call = self.call.on_replica(replica);
        self
    }
    pub fn actor(mut self, actor: &str) -> Self {
        self.call = self.call.actor(Some(actor));
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.call = self.call.header(name, value);
        self
    }
    pub async fn send(self) -> Reply {
        self.call.send().await.expect("the service answers")
    }
}

impl TestApp {
    pub fn call(&self, method: Method, path: impl Into<String>) -> TestCall<'_> {
        TestCall {
            app: self,
            call: self.sut.client.request(method, path),
        }
    }

    /// Authorize on `replica` as `user` and consent at the provider: what it redirected back with.
    pub async fn authorize_and_consent(
        &self,
        replica: usize,
        user: UserId,
        workspace: WorkspaceId,
        provider: Provider,
    ) -> Result<Consent, String> {
        let bearer = self.sut.tokens.token(user.0, TokenKind::Valid);
        let (answer, consent) = self
            .sut
            .client
            .authorize_and_consent(replica, Some(&bearer), None, workspace, provider)
            .await
            .map_err(|e| e.to_string())?;
        consent.ok_or_else(|| format!("authorize answered {}: {}", answer.status, answer.body))?
    }

    /// Delivers a consent to the callback on `replica`, as `user`: the status and body.
    pub async fn callback(
        &self,
        replica: usize,
        user: UserId,
        provider: Provider,
        consent: &Consent,
    ) -> Result<(StatusCode, Value), String> {
        let reply = self
            .call(
                Method::GET,
                paths::callback(provider, &consent.callback_query()),
            )
            .as_user(user.0)
            .on_replica(replica)
            .send()
            .await;
        Ok((reply.status, reply.body))
    }

    /// The whole OAuth flow for `user` on `workspace` (a fixture: it must succeed).
    pub async fn connect(
        &self,
        user: UserId,
        workspace: WorkspaceId,
        provider: Provider,
    ) -> Result<(), String> {
        harbor_harness::target::connect(&self.sut, user, workspace, provider).await
    }

    /// `POST …/connections/{p}/revoke` as the workspace's owner.
    pub async fn revoke(&self, t: &TenantWorkspace, p: Provider) -> Reply {
        self.call(
            Method::POST,
            format!("/v1/workspaces/{}/connections/{p}/revoke", t.workspace),
        )
        .as_user(t.owner.0)
        .send()
        .await
    }

    pub fn db(&self) -> &sqlx::PgPool {
        &self.sut.db
    }

    /// Moves time forward for the service and the provider alike, as a scenario's
    /// `advance_clock` does (the target's own way: every replica's clock and the fake's).
    pub async fn advance_clock(&self, by: Duration) {
        harbor_harness::target::Target::advance_clock(&self.sut, by)
            .await
            .expect("moving the clock");
    }

    /// Lets every revocation intent's lease run out and waits until the outbox worker has
    /// delivered them all (the table empty).
    pub async fn drain_outbox(&self) {
        self.advance_clock(harbor_service::outbox::LEASE + Duration::from_secs(1))
            .await;
        within("the outbox to empty", async {
            while self.count("SELECT count(*) FROM revocation_outbox").await > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// The harness's oracle: every grant the fake provider issued is live in exactly one row or
    /// was given back (none lost).
    pub async fn assert_grants_accounted(&self) {
        let accounted = harbor_harness::oracles::grants_accounted(
            self.db(),
            harbor_harness::target::Target::tokens(&self.sut).expect("in-process keys"),
            &self.sut.provider,
            0,
        )
        .await;
        assert!(accounted.is_ok(), "{accounted:?}");
    }

    /// Runs a `SELECT count(*) …` on the test's database.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.db())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The workspace's activation rows.
    pub async fn activations_of(&self, workspace: harbor_service::domain::WorkspaceId) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM workspace_activations WHERE workspace_id = $1")
            .bind(workspace)
            .fetch_one(self.db())
            .await
            .expect("counting activations")
    }

    pub async fn tenant(
        &self,
        name: &str,
        entitled: bool,
        qbo: ConnectionStatus,
    ) -> TenantWorkspace {
        TenantWorkspace::create(self.db(), name, entitled, qbo)
            .await
            .expect("fixtures")
    }

    /// `count` tenants `<prefix>0…`, each with `provider` connected through the real OAuth flow.
    pub async fn connected_tenants(
        &self,
        prefix: &str,
        count: usize,
        provider: harbor_service::domain::Provider,
    ) -> Vec<TenantWorkspace> {
        let mut tenants = Vec::with_capacity(count);
        for i in 0..count {
            let t = self
                .tenant(
                    &format!("{prefix}{i}"),
                    true,
                    ConnectionStatus::NotConnected,
                )
                .await;
            self.connect(t.owner, t.workspace, provider)
                .await
                .expect("connects");
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
            keys: SecretString::from(format!(
                "{},{}",
                self.sut.token_keys.keys.expose_secret(),
                fresh.keys.expose_secret()
            )),
            primary: Some(id.to_owned()),
        };
        KeyRing::from_config(&both).expect("two valid keys")
    }

    pub async fn activate(&self, t: &TenantWorkspace, actor: Option<&str>) -> Reply {
        let mut call = self
            .call(
                Method::POST,
                format!("/v1/workspaces/{}/activation", t.workspace),
            )
            .as_user(t.owner.0);
        if let Some(a) = actor {
            call = call.actor(a);
        }
        call.send().await
    }

    pub async fn stop(self) {
        self.sut
            .stop()
            .await
            .expect("the service stops and its database is dropped");
        if let Some(mut infra) = self.infra {
            infra.shutdown().await;
        }
    }
}

/// Generous bound for probes that wait on the server: exceeding it is a failure, never a pass.
pub const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// Awaits `fut` or fails the test with `what`.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PROBE_LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}
