//! [`Started`]: a target the harness started on one isolated environment — the reference
//! service's replicas in this process, or any service's replicas as child processes from a target
//! profile's lifecycle command — sharing its PostgreSQL database and Redis prefix like replicas
//! behind a load balancer. Each replica has its own fault proxies to Redis, PostgreSQL and the
//! provider's back channel; an in-process replica has its own sync-point controller, which the
//! harness drives, and its own runtime, so a `replica_crash` loses what a killed process loses; a
//! process replica is killed with SIGKILL and speaks the sync-point protocol over HTTP.
//!
//! Past 500 lines on purpose: starting a target (`Started::start_as`: the environment, the fault
//! proxies, each replica, the checks that it serves) is one sequence whose steps use each other's
//! results; the replicas, the proxies, the process replicas and the `Target` methods are in the
//! files below.

mod boundary;
pub mod ceiling;
mod faults;
mod launch;
mod options;
pub mod process;
mod replica;
pub mod serve;

use std::net::SocketAddr;
use std::time::Duration;

use harbor_service::clock::Clock;
use harbor_service::domain::WorkspaceId;
use harbor_service::vault::{KeyRing, TokenKeysConfig};
use harbor_service::Hooks;
use harbor_syncpoint::SyncPoints;
use secrecy::SecretString;
use sqlx::PgPool;

use crate::client::ApiClient;
use crate::fake_provider::FakeProvider;
use crate::faults::FaultProxy;
use crate::identity::TokenMint;
use crate::provision::{Infra, IsolatedEnv};

pub use launch::{InProcessLauncher, ProfileLauncher};
pub use options::{service_config, ProviderOverride, ServiceDeps, ServiceOptions};
use replica::{InProcessRun, Running, StartWith};
pub use replica::{Links, Replica, ServiceError};

/// The service's replicas and everything the harness needs to talk to them.
pub struct Started {
    /// The isolated database and Redis prefix.
    pub env: IsolatedEnv,
    /// The replicas, in start order.
    pub replicas: Vec<Replica>,
    /// The harness's own pool on the scenario database (fixtures, probes, assertions).
    pub db: PgPool,
    /// That database's URL (the isolated environment's, or a deployed target's own).
    database_url: String,
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
    /// The contract the replicas publish (`/openapi.json`; a profile's `openapi`), read once
    /// they are up (`None`: the target publishes none).
    contract: Option<std::sync::Arc<crate::target::Contract>>,
    /// The key ring built from `token_keys`, opening tokens for the oracles.
    ring: boundary::RingInspector,
    /// Drive the replicas' sync points through their HTTP protocol (as for a target started
    /// elsewhere) rather than through the shared controller.
    pub sync_over_http: bool,
    /// The profile the replicas were started from (`None`: the reference, in-process).
    pub profile: Option<std::sync::Arc<crate::target::profile::Profile>>,
    /// What it offers (read once: the evidence pollers ask for the database at every look).
    offered: std::collections::BTreeSet<crate::target::Capability>,
    /// The sync points a process target lists (`None`: every point of the reference's).
    points: Option<std::collections::BTreeSet<String>>,
    /// The workspace locks a profile's SQL gave, by workspace.
    profile_locks:
        std::sync::Mutex<std::collections::BTreeMap<WorkspaceId, crate::evidence::AdvisoryKey>>,
    /// The version the target says it is (a profile's `target.version`).
    pub version: Option<String>,
    /// The files written for process replicas (removed with it).
    _files: Option<tempfile::TempDir>,
}

/// How the replicas are started.
#[derive(Clone, Copy)]
pub enum How<'a> {
    /// The reference service, in this process.
    InProcess,
    /// Child processes, from a profile's lifecycle.
    Process(&'a std::sync::Arc<crate::target::profile::Profile>),
    /// Nothing started: a profile's deployed target, reached at its URLs.
    Deployed(&'a std::sync::Arc<crate::target::profile::Profile>),
}

impl Started {
    /// Creates an isolated environment on `infra` and starts the reference's replicas on it,
    /// in-process.
    pub async fn start(infra: &Infra, options: ServiceOptions) -> Result<Self, ServiceError> {
        Self::start_as(infra, options, None, How::InProcess).await
    }

    /// Creates an isolated environment on `infra` and starts the replicas `how` says on it,
    /// taking the contract as already read (`known`: what an earlier start of the same build
    /// published), or reading it from what the target publishes when not.
    pub async fn start_as(
        infra: &Infra,
        options: ServiceOptions,
        known: Option<std::sync::Arc<crate::target::Contract>>,
        how: How<'_>,
    ) -> Result<Self, ServiceError> {
        let schema = match how {
            How::Process(p) => p.schema.as_deref(),
            How::InProcess | How::Deployed(_) => None,
        };
        let env = infra.isolated_env_with(schema).await?;
        match Self::start_on(env.clone(), options, known, how).await {
            Ok(sut) => Ok(sut),
            Err(e) => {
                let _ = env.cleanup().await;
                Err(e)
            }
        }
    }

    async fn start_on(
        env: IsolatedEnv,
        options: ServiceOptions,
        known: Option<std::sync::Arc<crate::target::Contract>>,
        how: How<'_>,
    ) -> Result<Self, ServiceError> {
        let files = match how {
            How::InProcess | How::Deployed(_) => None,
            How::Process(_) => Some(
                tempfile::Builder::new()
                    .prefix("harbor-target-")
                    .tempdir()
                    .map_err(|e| ServiceError::Task(format!("the replicas' files: {e}")))?,
            ),
        };
        let deployed = match how {
            How::Deployed(p) => Some(
                p.deployed
                    .as_ref()
                    .ok_or_else(|| ServiceError::Task("the profile names no [deployed]".into()))?,
            ),
            _ => None,
        };
        // A deployed target trusts one key already: its tokens are signed with it.
        let tokens = match deployed {
            Some(d) => TokenMint::from_key_file(&d.signing_key).map_err(ServiceError::Task)?,
            None => TokenMint::new(),
        };
        let (_, token_keys) = KeyRing::generate("harness-k1");
        let provider = FakeProvider::start()
            .await
            .map_err(|e| ServiceError::Task(format!("fake provider: {e}")))?;
        let clock = Clock::system();
        let (db, database_url) = match deployed.and_then(|d| d.database_url.as_ref()) {
            Some(url) => {
                use secrecy::ExposeSecret;
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(10)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url.expose_secret())
                    .await?;
                (pool, url.expose_secret().to_owned())
            }
            None => (env.pool(10).await?, env.database_url.clone()),
        };
        // The fault proxies sit on a TCP path: servers named by their Unix sockets have none.
        let servers = if options.fault_proxies && deployed.is_none() {
            Some((
                server_address(&env.redis_url, 6379)?,
                server_address(&env.request_database_url, 5432)?,
                server_address(provider.base_url(), 80)?,
            ))
        } else {
            None
        };
        let mut replicas = Vec::with_capacity(options.replicas.max(1));
        let to_start = if deployed.is_some() {
            0
        } else {
            options.replicas.max(1)
        };
        if let Some(d) = deployed {
            for url in d.urls.iter().take(options.replicas.max(1)) {
                replicas.push(Replica::deployed(url));
            }
        }
        for n in 0..to_start {
            let proxy = |to: SocketAddr, what: &'static str| async move {
                FaultProxy::start(to)
                    .await
                    .map_err(|e| ServiceError::Task(format!("{what} proxy: {e}")))
            };
            let links = if let Some((redis_server, postgres_server, provider_server)) = servers {
                Some(Links {
                    redis: proxy(redis_server, "redis").await?,
                    postgres: FaultProxy::start_postgres(postgres_server)
                        .await
                        .map_err(|e| ServiceError::Task(format!("postgres proxy: {e}")))?,
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
            let (base_url, start, running) = match (how, &files) {
                (How::Process(profile), Some(dir)) => {
                    // Another process may take the chosen port before the replica binds it: a
                    // replica that exits during start-up is tried again on another port.
                    let mut attempt = 0;
                    let (command, child) = loop {
                        let command = process::command_for(profile, n, &config, &env, dir.path())
                            .map_err(ServiceError::Task)?;
                        match command.start().await {
                            Ok(child) => break (command, child),
                            Err(e) if attempt < 2 && e.contains("exited during start-up") => {
                                attempt += 1;
                            }
                            Err(e) => return Err(ServiceError::Task(e)),
                        }
                    };
                    (
                        command.base_url.clone(),
                        StartWith::Process(command),
                        Running::Process(child),
                    )
                }
                _ => {
                    let hooks = Hooks {
                        sync_points: Some(sync.clone()),
                        clock: Some(clock.clone()),
                    };
                    // A port below the ephemeral range, as a process replica's: a restart binds
                    // the same address, and an outgoing connection given the port while the
                    // replica was stopped would refuse it (`process::free_port`).
                    let mut config = config;
                    let mut attempt = 0;
                    let (running, addr, port) = loop {
                        let port = match config.listen_addr.port() {
                            0 => Some(process::PortLease::take().map_err(ServiceError::Task)?),
                            _ => None,
                        };
                        let mut chosen = config.clone();
                        if let Some(p) = &port {
                            chosen.listen_addr.set_port(p.port());
                        }
                        match InProcessRun::start(chosen.clone(), hooks.clone()).await {
                            Ok((running, addr)) => {
                                config = chosen;
                                break (running, addr, port);
                            }
                            // Another process took the port between the check and the bind.
                            Err(e)
                                if port.is_some()
                                    && attempt < 2
                                    && e.to_string().contains("Address already in use") =>
                            {
                                attempt += 1;
                            }
                            Err(e) => return Err(e),
                        }
                    };
                    // An in-process replica's restart finds the schema this start migrated:
                    // without the owner's credential it skips the migration table's re-read, and
                    // the backend a schema-owner connection would start and end on every crash
                    // or stop. (A process replica's command is the profile's, and unchanged.)
                    let mut restart = config;
                    restart.migration_database_url = None;
                    (
                        format!("http://{addr}"),
                        StartWith::InProcess {
                            config: Box::new(restart),
                            hooks,
                            _port: port,
                        },
                        Running::InProcess(running),
                    )
                }
            };
            replicas.push(Replica {
                base_url,
                sync,
                links,
                application_name,
                start,
                running: std::sync::Mutex::new(Some(running)),
            });
        }
        let http = crate::client::http_builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ServiceError::Task(e.to_string()))?;
        let mut client =
            ApiClient::new(http, replicas.iter().map(|r| r.base_url.clone()).collect());
        let profile = match how {
            How::Process(profile) | How::Deployed(profile) => {
                client = client.with_routes(profile.routes.clone());
                Some(profile.clone())
            }
            How::InProcess => None,
        };
        if deployed.is_some() {
            // Nothing was started, so nothing waited for it: each replica must be ready now.
            let readiness = profile
                .as_ref()
                .map_or("/readyz".to_owned(), |p| p.readiness.clone());
            for (n, replica) in replicas.iter().enumerate() {
                let answer = client
                    .request(reqwest::Method::GET, readiness.clone())
                    .on_replica(n)
                    .send()
                    .await
                    .map_err(|e| {
                        ServiceError::Task(format!(
                            "the deployed replica {} ({readiness}): {e}",
                            replica.base_url
                        ))
                    })?;
                if !answer.status.is_success() {
                    return Err(ServiceError::Task(format!(
                        "the deployed replica {} answered {} at {readiness}",
                        replica.base_url, answer.status
                    )));
                }
            }
        }
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
        // The contract is read the way a client of any target reads it: from what it publishes
        // (once per build: a launcher passes on what its first start read).
        let openapi = match &profile {
            Some(p) => p.openapi.clone(),
            None => Some("/openapi.json".to_owned()),
        };
        let contract = match (known, openapi) {
            (Some(contract), _) => Some(contract),
            (None, None) => None,
            (None, Some(path)) => {
                let published = client
                    .request(reqwest::Method::GET, path.clone())
                    .send()
                    .await
                    .map_err(|e| ServiceError::Task(e.to_string()))?;
                let names = profile
                    .as_ref()
                    .map(|p| p.routes.code_names.clone())
                    .unwrap_or_default();
                Some(std::sync::Arc::new(
                    crate::target::Contract::from_openapi_named(&published.body, &names).map_err(
                        |e| ServiceError::Task(format!("the published contract ({path}): {e}")),
                    )?,
                ))
            }
        };
        let version = match profile.as_ref().and_then(|p| p.version.clone()) {
            Some((path, pointer)) => client
                .request(reqwest::Method::GET, path)
                .send()
                .await
                .ok()
                .and_then(|a| {
                    a.body.pointer(&pointer).map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                }),
            None => None,
        };
        let ring = boundary::RingInspector(
            KeyRing::from_config(&token_keys)
                .map_err(|e| ServiceError::Task(format!("token keys: {e}")))?,
        );
        let mut offered: std::collections::BTreeSet<_> = match &profile {
            Some(p) => p.offered(),
            None => crate::target::Capability::ALL.into(),
        };
        if replicas.iter().any(|r| r.links.is_none()) {
            offered.remove(&crate::target::Capability::Faults);
        }
        // The points a process target implements, as its protocol lists them (the reference
        // in-process has all of them).
        let points = match &profile {
            Some(_)
                if options.sync_points
                    && offered.contains(&crate::target::Capability::SyncPoints) =>
            {
                Some(
                    crate::target::sync_protocol::SyncPointsOverHttp::new(client.clone(), 0)
                        .points()
                        .await
                        .map_err(ServiceError::Task)?
                        .into_iter()
                        .collect(),
                )
            }
            _ => None,
        };
        let started = Self {
            env,
            replicas,
            db,
            database_url,
            tokens,
            client,
            provider,
            clock,
            token_keys,
            contract,
            ring,
            sync_over_http: profile.is_some(),
            offered,
            points,
            profile,
            profile_locks: Default::default(),
            version,
            _files: files,
        };
        // A deployed service keeps its clock between runs: an earlier scenario (or run) that
        // moved it and stopped before putting it back must not start this one hours ahead.
        if deployed.is_some() {
            started.push_clock().await.map_err(ServiceError::Task)?;
        }
        Ok(started)
    }

    /// The key ring the replicas use (to check stored ciphertext from the outside).
    pub fn key_ring(&self) -> &KeyRing {
        &self.ring.0
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

    /// Releases every parked request, stops the replicas, and removes the environment.
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        // A deployed service outlives the run: its clock offset is put back to zero.
        let clock_back = if self.replicas.iter().any(Replica::is_deployed)
            && self.clock.offset() != chrono::Duration::zero()
        {
            self.clock.set_offset(0);
            self.push_clock().await.err()
        } else {
            None
        };
        let mut stopping = Vec::new();
        let mut children = Vec::new();
        let mut stops = Vec::new();
        for r in &mut self.replicas {
            r.sync.release_all();
            match r.take_running() {
                Some(Running::InProcess(running)) => {
                    let _ = running.shutdown.send(());
                    stopping.push((running.runtime, running.task));
                }
                Some(Running::Process(child)) => {
                    children.push((child, r.process_command().cloned()));
                }
                Some(Running::Stopping(stop, _)) => stops.push(stop),
                None => {}
            }
        }
        // Everything is stopped and removed whatever fails on the way; the first failure is
        // reported at the end.
        let mut first: Option<ServiceError> = clock_back.map(|e| {
            ServiceError::Task(format!(
                "the deployed service's clock could not be put back: {e}"
            ))
        });
        for (child, command) in children {
            let stopped = match command {
                Ok(command) => process::terminate(child, Duration::from_secs(10), &command).await,
                Err(e) => Err(e),
            };
            if let Err(e) = stopped {
                first.get_or_insert(ServiceError::Task(e));
            }
        }
        for stop in stops {
            let failed = match stop.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = failed {
                first.get_or_insert(ServiceError::Task(e));
            }
        }
        for (runtime, task) in stopping {
            let served = task.await;
            runtime.shutdown();
            let failed = match served {
                Err(e) => Some(e.to_string()),
                Ok(Err(e)) => Some(e.to_string()),
                Ok(Ok(())) => None,
            };
            if let Some(e) = failed {
                first.get_or_insert(ServiceError::Task(e));
            }
        }
        self.provider.stop();
        self.db.close().await;
        if let Err(e) = self.env.cleanup().await {
            first.get_or_insert(e.into());
        }
        first.map_or(Ok(()), Err)
    }
}

/// The socket address of the server in `url` (`default_port` when it names none).
fn server_address(url: &str, default_port: u16) -> Result<SocketAddr, ServiceError> {
    let url = url::Url::parse(url).map_err(|e| ServiceError::Task(format!("server url: {e}")))?;
    // A Unix socket (`redis+unix://`, or PostgreSQL's `host=/dir`): no address a proxy could
    // stand in for. Refused rather than taken as 127.0.0.1, which would route around the proxy.
    let socket_dir = url
        .query_pairs()
        .any(|(k, v)| k == "host" && v.starts_with('/'));
    if url.scheme().ends_with("unix") || socket_dir {
        return Err(ServiceError::Task(
            "the fault proxies need the servers' TCP URLs, and this one names a Unix socket \
             (HARBOR_DATABASE_URL / HARBOR_REDIS_URL)"
                .into(),
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fault proxy stands in for a TCP address: a server named by its Unix socket has none,
    /// and taking it as 127.0.0.1 would route the service around the proxy.
    #[test]
    fn a_server_on_a_unix_socket_has_no_address_for_a_proxy() {
        assert!(server_address("redis+unix:///tmp/run/redis.sock", 6379).is_err());
        assert!(server_address("postgres://u@localhost:5432/db?host=%2Ftmp%2Frun", 5432).is_err());
        assert_eq!(
            server_address("postgres://u@127.0.0.1:5433/db?sslmode=disable", 5432).unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 5433))
        );
        assert_eq!(
            server_address("redis://127.0.0.1/", 6379).unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 6379))
        );
    }
}
