//! How the in-process service is started: [`ServiceOptions`] and each replica's configuration.

use std::net::SocketAddr;
use std::time::Duration;

use harbor_service::config::{Config, Profile};
use harbor_service::flaws::Flaws;
use harbor_service::ratelimit::{Quota, RateLimits};
use harbor_service::vault::TokenKeysConfig;
use secrecy::SecretString;

use crate::fake_provider::FakeProvider;
use crate::identity::TokenMint;
use crate::provision::IsolatedEnv;

/// How to start the service.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// How many replicas (at least one).
    pub replicas: usize,
    /// Whether sync points and actor tags are honoured.
    pub sync_points: bool,
    /// How long a parked request waits for its release before failing loudly.
    pub sync_point_timeout: Duration,
    /// Rate limits of the OAuth routes. The harness's default keeps the production per-tenant
    /// limit but lifts the per-address one, since every simulated user calls from 127.0.0.1.
    pub rate_limits: RateLimits,
    /// Seeded flaws to start the replicas with (empty: the correct service).
    pub flaws: Flaws,
    /// The service's `lock_timeout`; by default longer than any park a scenario can make, so a
    /// request queued behind a parked one waits for it instead of giving up.
    pub lock_timeout: Option<Duration>,
    /// Most pooled PostgreSQL connections per replica.
    pub database_max_connections: u32,
    /// How long a request waits for a pooled connection (then 503 `DATABASE_UNAVAILABLE`).
    pub database_acquire_timeout: Duration,
    /// How long the service waits for the provider's back channel.
    pub provider_timeout: Duration,
    /// Put a fault proxy between each replica and each dependency (scenarios' `fault` steps need
    /// them). Off for `serve` and the benches: a proxy adds a hop to every round trip.
    pub fault_proxies: bool,
    /// The service's request timeout (`None`: longer than any wait a scenario makes).
    pub request_timeout: Option<Duration>,
    /// How long a client may take to send its headers.
    pub header_read_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` the per-address limit believes.
    pub trusted_proxies: harbor_service::ratelimit::TrustedProxies,
    /// Per provider, what to configure differently from the dialect's defaults (a providers file
    /// that sets `token_endpoint_auth_method` or `requires_iss`).
    pub provider_overrides: Vec<(harbor_service::domain::Provider, ProviderOverride)>,
    /// How often each replica's outbox worker looks (scenarios wait for it to drain: often; a
    /// count of each request's database work: not at all while it is counted).
    pub outbox_interval: Duration,
    /// Whether activations answer `Server-Timing: lock;dur=<ms>` (the macro bench reads it).
    pub server_timing: bool,
}

/// A providers-file setting that overrides the dialect's default, or the whole entry.
#[derive(Clone, Debug)]
pub enum ProviderOverride {
    /// `token_endpoint_auth_method`.
    ClientAuth(harbor_service::providers::ClientAuth),
    /// `requires_iss`.
    RequiresIss(bool),
    /// Another authorization server altogether (the interop test's real one).
    Config(Box<harbor_service::providers::ProviderConfig>),
}

impl ServiceOptions {
    /// `providers` with the overrides applied.
    pub(super) fn overridden(
        &self,
        mut providers: harbor_service::providers::ProvidersConfig,
    ) -> harbor_service::providers::ProvidersConfig {
        for (provider, change) in &self.provider_overrides {
            if let Some(c) = providers.providers.get_mut(provider) {
                match change {
                    ProviderOverride::ClientAuth(method) => c.client_auth = *method,
                    ProviderOverride::RequiresIss(required) => c.requires_iss = *required,
                    ProviderOverride::Config(config) => *c = (**config).clone(),
                }
            }
        }
        providers
    }
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            replicas: 1,
            sync_points: true,
            sync_point_timeout: Duration::from_secs(10),
            rate_limits: RateLimits {
                per_address: Quota {
                    per_minute: 60_000,
                    burst: 10_000,
                },
                ..RateLimits::default()
            },
            flaws: Flaws::none(),
            lock_timeout: None,
            database_max_connections: 20,
            database_acquire_timeout: Duration::from_secs(10),
            provider_timeout: Duration::from_secs(5),
            fault_proxies: true,
            request_timeout: None,
            header_read_timeout: Duration::from_secs(10),
            trusted_proxies: Default::default(),
            provider_overrides: Vec::new(),
            // Scenarios wait for the outbox to drain (`until outbox_empty`): look often.
            outbox_interval: Duration::from_millis(200),
            server_timing: false,
        }
    }
}

/// What a replica needs besides the isolated environment: the identity keys, the token keys and
/// the fake provider's endpoints.
pub struct ServiceDeps<'a> {
    /// Signs bearer tokens; its public keys go into the configuration.
    pub tokens: &'a TokenMint,
    /// Token encryption keys.
    pub token_keys: &'a TokenKeysConfig,
    /// The fake OAuth provider.
    pub provider: &'a FakeProvider,
}

/// The configuration of a replica on `env`: test profile, port 0, keys from `tokens`.
pub fn service_config(
    env: &IsolatedEnv,
    deps: &ServiceDeps<'_>,
    options: ServiceOptions,
) -> Config {
    Config {
        profile: Profile::Test,
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: SecretString::from(env.request_database_url.clone()),
        migration_database_url: Some(SecretString::from(env.database_url.clone())),
        database_max_connections: options.database_max_connections,
        database_acquire_timeout: options.database_acquire_timeout,
        lock_timeout: options
            .lock_timeout
            .unwrap_or(options.sync_point_timeout * 2 + Duration::from_secs(10)),
        redis_url: SecretString::from(env.redis_url.clone()),
        redis_key_prefix: env.redis_key_prefix.clone(),
        redis_timeout: Duration::from_secs(2),
        jwt: deps.tokens.jwt_config(),
        token_keys: deps.token_keys.clone(),
        providers: options.overridden(deps.provider.providers_config(options.provider_timeout)),
        rate_limits: options.rate_limits,
        refresh_margin: Duration::from_secs(300),
        sync_points: options.sync_points,
        sync_point_timeout: options.sync_point_timeout,
        json_logs: false,
        flaws: options.flaws,
        // Longer than any wait a scenario can make a request do: parked at a sync point, then
        // queued for a lock, then calling the provider.
        request_timeout: options.request_timeout.unwrap_or(
            options.sync_point_timeout * 3 + options.provider_timeout + Duration::from_secs(10),
        ),
        header_read_timeout: options.header_read_timeout,
        trusted_proxies: options.trusted_proxies.clone(),
        outbox_interval: options.outbox_interval,
        server_timing: options.server_timing,
    }
}
