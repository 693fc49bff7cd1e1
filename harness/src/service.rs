//! [`ServiceUnderTest`]: the reference service's replicas, started in-process on one isolated
//! environment, sharing its PostgreSQL database and Redis prefix like replicas behind a load
//! balancer. Each replica has its own sync-point controller, which the harness drives, its own
//! fault proxies to Redis, PostgreSQL and the provider's back channel, and its own runtime, so a
//! `replica_crash` loses what a killed process loses.

use std::net::SocketAddr;
use std::time::Duration;

use harbor_service::clock::Clock;
use harbor_service::config::{Config, Profile};
use harbor_service::flaws::Flaws;
use harbor_service::ratelimit::{Quota, RateLimits};
use harbor_service::vault::{KeyRing, TokenKeysConfig};
use harbor_service::{Application, Hooks};
use harbor_syncpoint::SyncPoints;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::ApiClient;
use crate::fake_provider::FakeProvider;
use crate::faults::{Dependency, Fault, FaultDone, FaultKind, FaultProxy, ProxyAction};
use crate::provision::{Infra, IsolatedEnv, ProvisionError};
use crate::tokens::TokenMint;

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
    fn overridden(
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
        // Scenarios wait for the outbox to drain (`until outbox_empty`): look often.
        outbox_interval: Duration::from_millis(200),
    }
}

/// One replica: its address, its sync points, the proxies it reaches its dependencies through,
/// and — while it runs — its own runtime, so that crashing it loses exactly what a killed process
/// loses.
pub struct Replica {
    /// `http://127.0.0.1:<port>` (kept across a restart).
    pub base_url: String,
    /// The replica's sync-point controller.
    pub sync: SyncPoints,
    /// What it reaches Redis, PostgreSQL and the provider's back channel through (`None`: started
    /// without fault proxies, straight to the servers).
    pub links: Option<Links>,
    /// The `application_name` of its pooled connections.
    pub application_name: String,
    config: Config,
    hooks: Hooks,
    running: std::sync::Mutex<Option<Running>>,
}

/// The fault proxies of one replica.
pub struct Links {
    /// To Redis.
    pub redis: FaultProxy,
    /// To PostgreSQL (request connections; migrations go direct).
    pub postgres: FaultProxy,
    /// To the fake provider's token, revocation and resource endpoints (the browser goes direct).
    pub provider: FaultProxy,
}

/// A replica's process, as far as it matters: a runtime that owns every task, socket and pooled
/// connection of the replica.
struct Running {
    runtime: tokio::runtime::Runtime,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Builds the application on a runtime of its own and serves it.
    async fn start(config: Config, hooks: Hooks) -> Result<(Self, SocketAddr), ServiceError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("harbor-replica")
            .enable_all()
            .build()
            .map_err(|e| ServiceError::Task(format!("replica runtime: {e}")))?;
        let built = runtime
            .spawn(Application::build_with(config, hooks))
            .await
            .map_err(|e| ServiceError::Task(e.to_string()));
        let app = match built {
            Ok(Ok(app)) => app,
            Ok(Err(e)) => {
                runtime.shutdown_background();
                return Err(e.into());
            }
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let addr = app.local_addr();
        let (shutdown, rx) = oneshot::channel();
        let task = runtime.spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        Ok((
            Running {
                runtime,
                shutdown,
                task,
            },
            addr,
        ))
    }
}

impl Replica {
    /// Whether it runs (not crashed).
    pub fn is_running(&self) -> bool {
        self.running.lock().map(|r| r.is_some()).unwrap_or(false)
    }

    /// Kills it: every task of its runtime is dropped where it stands — parked requests, their
    /// open transactions, pooled connections — and the kernel closes its sockets.
    fn crash(&self) -> Result<(), String> {
        let running = self.take_running().ok_or("the replica is not running")?;
        running.runtime.shutdown_background();
        Ok(())
    }

    /// Stops it gracefully, as SIGTERM does: the service stops accepting, finishes its
    /// connections and the tasks its requests started (within its own shutdown bound), and then
    /// the process ends — whatever is still running on its runtime after that is dropped.
    async fn stop_gracefully(&self) -> Result<(), String> {
        let running = self.take_running().ok_or("the replica is not running")?;
        let _ = running.shutdown.send(());
        let served = tokio::time::timeout(
            harbor_service::app::SHUTDOWN_GRACE + Duration::from_secs(10),
            running.task,
        )
        .await;
        running.runtime.shutdown_background();
        match served {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("the replica's server failed: {e}")),
            Ok(Err(e)) => Err(format!("the replica's server task: {e}")),
            Err(_) => Err("the replica did not stop within its shutdown bound".into()),
        }
    }

    /// Starts it again on the address it had.
    async fn restart(&self) -> Result<(), String> {
        if self.is_running() {
            return Err("the replica is running".into());
        }
        let mut config = self.config.clone();
        config.listen_addr = self
            .base_url
            .trim_start_matches("http://")
            .parse()
            .map_err(|e| format!("replica address: {e}"))?;
        let (running, _) = Running::start(config, self.hooks.clone())
            .await
            .map_err(|e| e.to_string())?;
        *self.running.lock().map_err(|_| "replica state poisoned")? = Some(running);
        Ok(())
    }

    fn take_running(&self) -> Option<Running> {
        self.running.lock().ok().and_then(|mut r| r.take())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(running) = self.take_running() {
            // Dropping a runtime may block; this must not, since it runs in async code.
            running.runtime.shutdown_background();
        }
    }
}

/// Why the service under test could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The isolated environment could not be made or removed.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The service refused to start.
    #[error("service start-up: {0}")]
    Startup(#[from] harbor_service::app::StartupError),
    /// The harness's own pool failed.
    #[error("harness pool: {0}")]
    Pool(#[from] sqlx::Error),
    /// A replica's server task failed.
    #[error("replica task: {0}")]
    Task(String),
}

/// The service's replicas and everything the harness needs to talk to them.
pub struct ServiceUnderTest {
    /// The isolated database and Redis prefix.
    pub env: IsolatedEnv,
    /// The replicas, in start order.
    pub replicas: Vec<Replica>,
    /// The harness's own pool on the scenario database (fixtures, probes, assertions).
    pub db: PgPool,
    /// Signs tokens the service accepts (and some it must refuse).
    pub tokens: TokenMint,
    /// The client of the replicas' API (and the browser at the fake provider).
    pub client: ApiClient,
    /// The fake OAuth provider every replica is configured with.
    pub provider: FakeProvider,
    /// The clock every replica shares; moving it moves them all.
    pub clock: Clock,
    /// The token encryption keys the replicas were started with.
    pub token_keys: TokenKeysConfig,
}

impl ServiceUnderTest {
    /// Creates an isolated environment on `infra` and starts the replicas on it.
    pub async fn start(infra: &Infra, options: ServiceOptions) -> Result<Self, ServiceError> {
        let env = infra.isolated_env().await?;
        match Self::start_on(env.clone(), options).await {
            Ok(sut) => Ok(sut),
            Err(e) => {
                let _ = env.cleanup().await;
                Err(e)
            }
        }
    }

    async fn start_on(env: IsolatedEnv, options: ServiceOptions) -> Result<Self, ServiceError> {
        let tokens = TokenMint::new();
        let (_, token_keys) = KeyRing::generate("harness-k1");
        let provider = FakeProvider::start()
            .await
            .map_err(|e| ServiceError::Task(format!("fake provider: {e}")))?;
        let clock = Clock::system();
        let db = env.pool(10).await?;
        let redis_server = server_address(&env.redis_url, 6379)?;
        let postgres_server = server_address(&env.request_database_url, 5432)?;
        let provider_server = server_address(provider.base_url(), 80)?;
        let mut replicas = Vec::with_capacity(options.replicas.max(1));
        for n in 0..options.replicas.max(1) {
            let proxy = |to: SocketAddr, what: &'static str| async move {
                FaultProxy::start(to)
                    .await
                    .map_err(|e| ServiceError::Task(format!("{what} proxy: {e}")))
            };
            let links = if options.fault_proxies {
                Some(Links {
                    redis: proxy(redis_server, "redis").await?,
                    postgres: proxy(postgres_server, "postgres").await?,
                    provider: proxy(provider_server, "provider").await?,
                })
            } else {
                None
            };
            // Each replica names its connections, so the harness can tell whose backends they are.
            let application_name = format!(
                "harbor-replica-{n}-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let deps = ServiceDeps {
                tokens: &tokens,
                token_keys: &token_keys,
                provider: &provider,
            };
            let mut config = service_config(&env, &deps, options.clone());
            let mut database_url = env.request_database_url.clone();
            if let Some(links) = &links {
                config.redis_url =
                    SecretString::from(through_proxy(&env.redis_url, links.redis.local_addr()));
                database_url = through_proxy(&database_url, links.postgres.local_addr());
                config.providers =
                    options.overridden(provider.providers_config_via(
                        options.provider_timeout,
                        links.provider.local_addr(),
                    ));
            }
            config.database_url =
                SecretString::from(with_application_name(&database_url, &application_name));
            let sync = SyncPoints::new();
            let hooks = Hooks {
                sync_points: Some(sync.clone()),
                clock: Some(clock.clone()),
            };
            let (running, addr) = Running::start(config.clone(), hooks.clone()).await?;
            replicas.push(Replica {
                base_url: format!("http://{addr}"),
                sync,
                links,
                application_name,
                config,
                hooks,
                running: std::sync::Mutex::new(Some(running)),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ServiceError::Task(e.to_string()))?;
        let client = ApiClient::new(http, replicas.iter().map(|r| r.base_url.clone()).collect());
        // A flawed service must say so: every replica's /readyz lists its seeded flaws.
        if !options.flaws.is_empty() {
            for replica in 0..replicas.len() {
                let ready = client
                    .request(reqwest::Method::GET, "/readyz")
                    .on_replica(replica)
                    .send()
                    .await
                    .map_err(|e| ServiceError::Task(e.to_string()))?
                    .body;
                let listed: Vec<&str> = ready["flaws"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                    .collect();
                if listed != options.flaws.names() {
                    return Err(ServiceError::Task(format!(
                        "a replica runs with flaws {:?} but /readyz says {listed:?}",
                        options.flaws.names()
                    )));
                }
            }
        }
        Ok(Self {
            env,
            replicas,
            db,
            tokens,
            client,
            provider,
            clock,
            token_keys,
        })
    }

    /// The key ring the replicas use (to check stored ciphertext from the outside).
    pub fn key_ring(&self) -> KeyRing {
        KeyRing::from_config(&self.token_keys).expect("the harness's keys are valid")
    }

    /// The fault proxies of `replica`, or of every replica.
    pub fn links(&self, replica: Option<usize>) -> impl Iterator<Item = &Links> {
        self.replicas
            .iter()
            .enumerate()
            .filter(move |(n, _)| replica.is_none_or(|r| r == *n))
            .filter_map(|(_, r)| r.links.as_ref())
    }

    /// Whether the replicas reach their dependencies through fault proxies.
    pub fn has_fault_proxies(&self) -> bool {
        self.replicas.iter().all(|r| r.links.is_some())
    }

    /// Does `fault`; returns what it did, for the trace.
    pub async fn apply_fault(&self, fault: &Fault) -> Result<FaultDone, String> {
        let limit = Duration::from_secs(5);
        let kind = fault.kind;
        let through_proxies = kind.proxy_action().is_some() || kind.takes_duration();
        if through_proxies && !self.has_fault_proxies() {
            return Err(format!(
                "{} needs fault proxies; these replicas were started without them",
                kind.as_str()
            ));
        }
        if let Some(action) = kind.proxy_action() {
            // A cut database link ends its backends, but the server notices the closed socket on
            // its own schedule: the step returns once they are gone, so what follows (a lock
            // check, a retry) sees the effect, not a race with it.
            let cut = kind.dependency() == Dependency::Postgres
                && matches!(action, ProxyAction::Drop | ProxyAction::Down);
            let backends = if cut {
                self.backends_of(fault.replica).await?
            } else {
                Vec::new()
            };
            let started = std::time::Instant::now();
            let mut n = 0;
            for links in self.links(fault.replica) {
                let proxy = match kind.dependency() {
                    Dependency::Redis => &links.redis,
                    Dependency::Postgres => &links.postgres,
                    Dependency::Provider => &links.provider,
                    Dependency::Replica => {
                        return Err(format!("{} is not a proxy fault", kind.as_str()))
                    }
                };
                proxy.apply(action).await;
                n += 1;
            }
            if !cut {
                return Ok(FaultDone::effect(format!("done on {n} replica link(s)")));
            }
            crate::evidence::until_backends_gone(&self.db, &backends, limit).await?;
            return Ok(FaultDone::measured(
                format!("done on {n} replica link(s); their backends ended"),
                format!(
                    "{} backend(s) ended within {} ms",
                    backends.len(),
                    started.elapsed().as_millis()
                ),
            ));
        }
        match kind {
            FaultKind::RedisRestart => {
                self.proxies_apply(fault.replica, Dependency::Redis, ProxyAction::Down)
                    .await;
                let lost = self.flush_redis().await?;
                tokio::time::sleep(fault.down_for).await;
                self.proxies_apply(fault.replica, Dependency::Redis, ProxyAction::Up)
                    .await;
                Ok(FaultDone::measured(
                    format!(
                        "Redis down for {} ms; its keys lost; up again",
                        fault.down_for.as_millis()
                    ),
                    format!("{lost} keys lost"),
                ))
            }
            FaultKind::RedisFlush => Ok(FaultDone::measured(
                "every key under the service's prefix deleted",
                format!("{} keys deleted", self.flush_redis().await?),
            )),
            FaultKind::PostgresRestart => {
                let backends = self.backends_of(fault.replica).await?;
                self.proxies_apply(fault.replica, Dependency::Postgres, ProxyAction::Down)
                    .await;
                crate::evidence::until_backends_gone(&self.db, &backends, limit).await?;
                tokio::time::sleep(fault.down_for).await;
                self.proxies_apply(fault.replica, Dependency::Postgres, ProxyAction::Up)
                    .await;
                Ok(FaultDone::measured(
                    format!(
                        "PostgreSQL down for {} ms (its backends ended); up again",
                        fault.down_for.as_millis()
                    ),
                    format!("{} backend(s) ended", backends.len()),
                ))
            }
            FaultKind::PostgresTerminateActor => {
                let actor = fault
                    .actor
                    .as_deref()
                    .ok_or("postgres_terminate_actor needs an actor")?;
                let names = [crate::evidence::application_name(actor)];
                match crate::evidence::terminate_backends(&self.db, Some(&names), limit).await? {
                    0 => Err(format!("no backend runs a transaction of {actor}")),
                    n => Ok(FaultDone::measured(
                        format!("terminated the backend(s) of {actor}; gone"),
                        format!("{n} backend(s)"),
                    )),
                }
            }
            FaultKind::PostgresTerminateAll => {
                let n = crate::evidence::terminate_backends(&self.db, None, limit).await?;
                Ok(FaultDone::measured(
                    "terminated every service backend; gone",
                    format!("{n} backend(s)"),
                ))
            }
            FaultKind::ReplicaCrash => {
                self.crash_replica(fault.replica.ok_or("replica_crash needs a replica")?)
                    .await
            }
            FaultKind::ReplicaStop => {
                let replica = fault.replica.ok_or("replica_stop needs a replica")?;
                self.stop_replica(replica).await?;
                Ok(FaultDone::effect(format!(
                    "replica {replica} stopped gracefully (its connections and request tasks finished)"
                )))
            }
            FaultKind::ReplicaRestart => {
                let replica = fault.replica.ok_or("replica_restart needs a replica")?;
                let r = self
                    .replicas
                    .get(replica)
                    .ok_or_else(|| format!("there is no replica {replica}"))?;
                r.restart().await?;
                Ok(FaultDone::measured(
                    format!("replica {replica} restarted on its address"),
                    format!("at {}", r.base_url),
                ))
            }
            _ => Err(format!("{} has no effect here", kind.as_str())),
        }
    }

    async fn proxies_apply(
        &self,
        replica: Option<usize>,
        dependency: Dependency,
        action: ProxyAction,
    ) {
        for links in self.links(replica) {
            match dependency {
                Dependency::Redis => links.redis.apply(action).await,
                Dependency::Postgres => links.postgres.apply(action).await,
                Dependency::Provider => links.provider.apply(action).await,
                Dependency::Replica => {}
            }
        }
    }

    /// Deletes every key under the environment's prefix; returns how many there were.
    async fn flush_redis(&self) -> Result<usize, String> {
        let client = redis::Client::open(self.env.redis_url.as_str()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let keys = crate::provision::keys_with_prefix(&mut conn, &self.env.redis_key_prefix)
            .await
            .map_err(|e| e.to_string())?;
        for chunk in keys.chunks(500) {
            redis::cmd("UNLINK")
                .arg(chunk)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(keys.len())
    }

    /// The backends of `replica` (or of every replica): its pool's, and those of requests parked
    /// on it, whose transactions carry their actor's tag instead of the pool's name.
    async fn backends_of(&self, replica: Option<usize>) -> Result<Vec<i32>, String> {
        if let Some(n) = replica {
            if n >= self.replicas.len() {
                return Err(format!("there is no replica {n}"));
            }
        }
        let mut names = Vec::new();
        for (_, r) in self
            .replicas
            .iter()
            .enumerate()
            .filter(|(n, _)| replica.is_none_or(|r| r == *n))
        {
            names.push(r.application_name.clone());
            names.extend(
                r.sync
                    .history()
                    .into_iter()
                    .filter(|k| r.sync.state(k) == Some(harbor_syncpoint::SlotState::Parked))
                    .map(|k| crate::evidence::application_name(&k.actor)),
            );
        }
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = ANY($1)")
            .bind(&names)
            .fetch_all(&self.db)
            .await
            .map_err(|e| format!("reading the replicas' backends: {e}"))
    }

    /// Stops `replica` gracefully (SIGTERM semantics) and returns once its process would have
    /// exited.
    pub async fn stop_replica(&self, replica: usize) -> Result<(), String> {
        self.replicas
            .get(replica)
            .ok_or_else(|| format!("there is no replica {replica}"))?
            .stop_gracefully()
            .await
    }

    /// Crashes `replica` and returns once the database has ended every backend it had (its
    /// pool's, and those of requests parked on it): the evidence that its transactions and locks
    /// died with it.
    async fn crash_replica(&self, replica: usize) -> Result<FaultDone, String> {
        let r = self
            .replicas
            .get(replica)
            .ok_or_else(|| format!("there is no replica {replica}"))?;
        let pids = self.backends_of(Some(replica)).await?;
        let started = std::time::Instant::now();
        r.crash()?;
        crate::evidence::until_backends_gone(&self.db, &pids, Duration::from_secs(5)).await?;
        Ok(FaultDone::measured(
            format!("replica {replica} crashed; its backends ended"),
            format!(
                "{} backend(s) ended within {} ms",
                pids.len(),
                started.elapsed().as_millis()
            ),
        ))
    }

    /// Releases every parked request, stops the replicas, and removes the environment.
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        let mut stopping = Vec::new();
        for r in &mut self.replicas {
            r.sync.release_all();
            if let Some(running) = r.take_running() {
                let _ = running.shutdown.send(());
                stopping.push((running.runtime, running.task));
            }
        }
        for (runtime, task) in stopping {
            let served = task.await;
            runtime.shutdown_background();
            served
                .map_err(|e| ServiceError::Task(e.to_string()))?
                .map_err(|e| ServiceError::Task(e.to_string()))?;
        }
        self.provider.stop();
        self.db.close().await;
        self.env.cleanup().await?;
        Ok(())
    }
}

/// The socket address of the server in `url` (`default_port` when it names none).
fn server_address(url: &str, default_port: u16) -> Result<SocketAddr, ServiceError> {
    let url = url::Url::parse(url).map_err(|e| ServiceError::Task(format!("server url: {e}")))?;
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port().unwrap_or(default_port);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ServiceError::Task(format!("server url: cannot resolve {host}:{port}")))
}

/// `url` with `application_name` set in its query.
fn with_application_name(url: &str, name: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut url) => {
            url.query_pairs_mut().append_pair("application_name", name);
            url.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

/// `redis_url` pointed at `proxy` instead of the server (credentials and database kept).
fn through_proxy(redis_url: &str, proxy: SocketAddr) -> String {
    match url::Url::parse(redis_url) {
        Ok(mut url) => {
            let _ = url.set_host(Some(&proxy.ip().to_string()));
            let _ = url.set_port(Some(proxy.port()));
            url.to_string()
        }
        Err(_) => redis_url.to_owned(),
    }
}
