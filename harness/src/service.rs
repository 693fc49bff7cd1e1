//! [`ServiceUnderTest`]: the reference service's replicas, started in-process on one isolated
//! environment, sharing its PostgreSQL database and Redis prefix like replicas behind a load
//! balancer. Each replica has its own sync-point controller, which the harness drives.

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
use crate::faults::FaultProxy;
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
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            replicas: 1,
            sync_points: true,
            sync_point_timeout: Duration::from_secs(10),
            rate_limits: RateLimits {
                per_address: Quota { per_minute: 60_000, burst: 10_000 },
                ..RateLimits::default()
            },
            flaws: Flaws::none(),
            lock_timeout: None,
            database_max_connections: 20,
            database_acquire_timeout: Duration::from_secs(10),
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
pub fn service_config(env: &IsolatedEnv, deps: &ServiceDeps<'_>, options: ServiceOptions) -> Config {
    Config {
        profile: Profile::Test,
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: SecretString::from(env.request_database_url.clone()),
        migration_database_url: Some(SecretString::from(env.database_url.clone())),
        database_max_connections: options.database_max_connections,
        database_acquire_timeout: options.database_acquire_timeout,
        lock_timeout: options.lock_timeout.unwrap_or(options.sync_point_timeout * 2 + Duration::from_secs(10)),
        redis_url: SecretString::from(env.redis_url.clone()),
        redis_key_prefix: env.redis_key_prefix.clone(),
        redis_timeout: Duration::from_secs(2),
        jwt: deps.tokens.jwt_config(),
        token_keys: deps.token_keys.clone(),
        providers: deps.provider.providers_config(Duration::from_secs(5)),
        rate_limits: options.rate_limits,
        refresh_margin: Duration::from_secs(300),
        sync_points: options.sync_points,
        sync_point_timeout: options.sync_point_timeout,
        json_logs: false,
        flaws: options.flaws,
    }
}

/// One running replica.
pub struct Replica {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// The replica's sync-point controller.
    pub sync: SyncPoints,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
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
    /// The replicas reach Redis through this proxy, so a scenario can stall or cut their Redis
    /// without touching the server (the harness's own Redis client goes direct).
    pub redis_proxy: FaultProxy,
    /// The replicas' request connections to PostgreSQL go through this proxy (migrations at start
    /// and the harness's own pool go direct).
    pub postgres_proxy: FaultProxy,
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
        let provider = FakeProvider::start().await.map_err(|e| ServiceError::Task(format!("fake provider: {e}")))?;
        let clock = Clock::system();
        let db = env.pool(10).await?;
        let redis_proxy = FaultProxy::start(server_address(&env.redis_url, 6379)?)
            .await
            .map_err(|e| ServiceError::Task(format!("redis proxy: {e}")))?;
        let proxied_redis_url = through_proxy(&env.redis_url, redis_proxy.local_addr());
        let postgres_proxy = FaultProxy::start(server_address(&env.request_database_url, 5432)?)
            .await
            .map_err(|e| ServiceError::Task(format!("postgres proxy: {e}")))?;
        let proxied_database_url = through_proxy(&env.request_database_url, postgres_proxy.local_addr());
        let mut replicas = Vec::with_capacity(options.replicas.max(1));
        for _ in 0..options.replicas.max(1) {
            let deps = ServiceDeps { tokens: &tokens, token_keys: &token_keys, provider: &provider };
            let mut config = service_config(&env, &deps, options.clone());
            config.redis_url = SecretString::from(proxied_redis_url.clone());
            config.database_url = SecretString::from(proxied_database_url.clone());
            let sync = SyncPoints::new();
            let hooks = Hooks { sync_points: Some(sync.clone()), clock: Some(clock.clone()) };
            let app = Application::build_with(config, hooks).await?;
            let base_url = format!("http://{}", app.local_addr());
            let (tx, rx) = oneshot::channel();
            let task = tokio::spawn(app.run_until_stopped(async {
                let _ = rx.await;
            }));
            replicas.push(Replica { base_url, sync, shutdown: Some(tx), task: Some(task) });
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
                let listed: Vec<&str> = ready["flaws"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
                if listed != options.flaws.names() {
                    return Err(ServiceError::Task(format!("a replica runs with flaws {:?} but /readyz says {listed:?}", options.flaws.names())));
                }
            }
        }
        Ok(Self { env, replicas, db, tokens, client, provider, clock, token_keys, redis_proxy, postgres_proxy })
    }

    /// The key ring the replicas use (to check stored ciphertext from the outside).
    pub fn key_ring(&self) -> KeyRing {
        KeyRing::from_config(&self.token_keys).expect("the harness's keys are valid")
    }

    /// Does `fault` to the dependency it names.
    pub fn apply_fault(&self, fault: crate::faults::FaultKind) {
        match fault.dependency() {
            crate::faults::Dependency::Redis => self.redis_proxy.apply(fault),
            crate::faults::Dependency::Postgres => self.postgres_proxy.apply(fault),
        }
    }

    /// Releases every parked request, stops the replicas, and removes the environment.
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        for r in &mut self.replicas {
            r.sync.release_all();
            if let Some(tx) = r.shutdown.take() {
                let _ = tx.send(());
            }
        }
        for r in &mut self.replicas {
            if let Some(task) = r.task.take() {
                task.await.map_err(|e| ServiceError::Task(e.to_string()))?.map_err(|e| ServiceError::Task(e.to_string()))?;
            }
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
