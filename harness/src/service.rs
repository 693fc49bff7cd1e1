//! [`ServiceUnderTest`]: the reference service's replicas, started in-process on one isolated
//! environment, sharing its PostgreSQL database and Redis prefix like replicas behind a load
//! balancer. Each replica has its own sync-point controller, which the harness drives.

use std::net::SocketAddr;
use std::time::Duration;

use harbor_service::config::{Config, Profile};
use harbor_service::{Application, Hooks};
use harbor_syncpoint::SyncPoints;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::provision::{Infra, IsolatedEnv, ProvisionError};
use crate::tokens::TokenMint;

/// How to start the service.
#[derive(Clone, Copy, Debug)]
pub struct ServiceOptions {
    /// How many replicas (at least one).
    pub replicas: usize,
    /// Whether sync points and actor tags are honoured.
    pub sync_points: bool,
    /// How long a parked request waits for its release before failing loudly.
    pub sync_point_timeout: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self { replicas: 1, sync_points: true, sync_point_timeout: Duration::from_secs(10) }
    }
}

/// The configuration of a replica on `env`: test profile, port 0, keys from `tokens`.
pub fn service_config(env: &IsolatedEnv, tokens: &TokenMint, options: ServiceOptions) -> Config {
    Config {
        profile: Profile::Test,
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: SecretString::from(env.database_url.clone()),
        database_max_connections: 20,
        redis_url: SecretString::from(env.redis_url.clone()),
        redis_key_prefix: env.redis_key_prefix.clone(),
        jwt: tokens.jwt_config(),
        sync_points: options.sync_points,
        sync_point_timeout: options.sync_point_timeout,
        json_logs: false,
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
    /// An HTTP client for the replicas.
    pub http: reqwest::Client,
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
        let db = env.pool(10).await?;
        let mut replicas = Vec::with_capacity(options.replicas.max(1));
        for _ in 0..options.replicas.max(1) {
            let config = service_config(&env, &tokens, options);
            let sync = SyncPoints::new();
            let app = Application::build_with(config, Hooks { sync_points: Some(sync.clone()) }).await?;
            let base_url = format!("http://{}", app.local_addr());
            let (tx, rx) = oneshot::channel();
            let task = tokio::spawn(app.run_until_stopped(async {
                let _ = rx.await;
            }));
            replicas.push(Replica { base_url, sync, shutdown: Some(tx), task: Some(task) });
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ServiceError::Task(e.to_string()))?;
        Ok(Self { env, replicas, db, tokens, http })
    }

    /// The URL of `path` on replica `replica`.
    pub fn url(&self, replica: usize, path: &str) -> String {
        format!("{}{}", self.replicas[replica].base_url, path)
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
        self.db.close().await;
        self.env.cleanup().await?;
        Ok(())
    }
}
