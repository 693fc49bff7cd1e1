//! Provisioning of real PostgreSQL and Redis servers, behind one small interface used by the
//! scenario runner, the integration tests, the benches and the load tests.
//!
//! - [`Infra::provision`] starts (or finds) one PostgreSQL and one Redis for a whole run, with the
//!   backend chosen by [`BackendChoice`]: `docker` (testcontainers), `local` (throwaway server
//!   processes), `external` (URLs given by the user) or `auto`.
//! - [`Infra::isolated_env`] gives each scenario or test its own database, cloned from a migrated
//!   template (`CREATE DATABASE … TEMPLATE …`), and its own Redis key prefix. Dropping it with
//!   [`IsolatedEnv::cleanup`] removes both.
//! - [`Infra::shutdown`] removes every container, process and directory the run created.
//!
//! Past 500 lines on purpose: the three backends share the template cloning, the readiness waits
//! and the clean-up; each backend's own part is in its own file.

mod docker;
mod external;
mod local;
mod template;

use std::fmt;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

pub use docker::{DockerImages, DOCKER_LABEL, SERVER_CPU_SHARES};
pub use local::LocalBinaries;

/// Which backend to provision with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// External if both URLs are set, else Docker if an engine answers, else local binaries.
    Auto,
    /// Containers through testcontainers.
    Docker,
    /// Throwaway `postgres` and `redis-server` processes on free ports.
    Local,
    /// `HARBOR_DATABASE_URL` and `HARBOR_REDIS_URL`, provided by the user.
    External,
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Docker => "docker",
            BackendChoice::Local => "local",
            BackendChoice::External => "external",
        })
    }
}

/// The backend actually used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Containers through testcontainers.
    Docker,
    /// Throwaway local server processes.
    Local,
    /// Servers given by the user.
    External,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Docker => "docker",
            BackendKind::Local => "local",
            BackendKind::External => "external",
        })
    }
}

/// Why provisioning failed. Its `Display` says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// `auto` found no way to get PostgreSQL and Redis.
    #[error(
        "no PostgreSQL/Redis available. Fix one of:\n  \
         1. external: export HARBOR_DATABASE_URL=postgres://… and HARBOR_REDIS_URL=redis://…\n  \
         2. docker:   start a Docker engine (e.g. `dockerd &`); without a registry, run scripts/offline-images.sh\n  \
         3. local:    install the server binaries (e.g. `apt-get install -y postgresql redis-server`)\n\
         (docker: {docker}; local: {local})"
    )]
    NothingAvailable {
        /// Why Docker could not be used.
        docker: String,
        /// Why local binaries could not be used.
        local: String,
    },
    /// The Docker backend failed.
    #[error("docker backend: {0}")]
    Docker(String),
    /// The local backend failed.
    #[error("local backend: {0}")]
    Local(String),
    /// The external backend is misconfigured.
    #[error("external backend: {0}")]
    External(String),
    /// A server never answered its readiness probe.
    #[error("{what} at {at} did not answer within {} s: {last_error}", waited.as_secs())]
    NotReady {
        /// Which server.
        what: &'static str,
        /// Its address, without a password.
        at: String,
        /// How long we waited.
        waited: Duration,
        /// The last probe's error.
        last_error: String,
    },
    /// A PostgreSQL operation on the provisioned server failed.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// Migrating the template failed.
    #[error("migrating the template database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A Redis operation on the provisioned server failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The servers a run uses, and what must be removed when it ends.
pub struct Infra {
    /// The backend that provided them.
    pub kind: BackendKind,
    /// A superuser URL to the `postgres` database.
    pub admin_url: String,
    /// The Redis URL.
    pub redis_url: String,
    /// `SHOW server_version`.
    pub postgres_version: String,
    /// `redis_version` from `INFO server`.
    pub redis_version: String,
    /// The images used (docker backend only).
    pub images: Option<DockerImages>,
    /// The same servers through their Unix sockets, where the backend offers them and they
    /// answered: the local backend, and the docker backend on the host's network. `None` for
    /// servers the user runs (`external`).
    pub sockets: Option<SocketUrls>,
    /// Time from the start of provisioning until both servers answered.
    pub ready_in: Duration,
    resources: Resources,
    template: tokio::sync::OnceCell<String>,
    /// Templates of targets' own schemas, by the schema's SQL.
    schema_templates: tokio::sync::Mutex<std::collections::BTreeMap<String, String>>,
    /// Every environment made, for [`Infra::clean_every_environment`].
    made: std::sync::Mutex<Vec<IsolatedEnv>>,
}

enum Resources {
    Docker(Box<docker::Containers>),
    Local(local::LocalServers),
    External,
}

impl fmt::Debug for Infra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Infra")
            .field("kind", &self.kind)
            .field("postgres_version", &self.postgres_version)
            .field("redis_version", &self.redis_version)
            .finish_non_exhaustive()
    }
}

/// The file in a run's directory that names the run's process, for [`orphaned_directories`].
const OWNER_FILE: &str = "harbor-owner.pid";

/// Marks `dir` as the directory of this process's run.
fn claim_directory(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::write(dir.join(OWNER_FILE), std::process::id().to_string())
}

/// The directories under `base` named `prefix…` whose run is gone: the process their owner file
/// names has ended, or they have had no owner file for ten minutes (a run between making one and
/// claiming it has not).
fn orphaned_directories(base: &std::path::Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .filter(|path| {
            let owner = std::fs::read_to_string(path.join(OWNER_FILE))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            match owner {
                Some(pid) => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                None => std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(600)),
            }
        })
        .collect()
}

/// The servers' URLs through their Unix sockets. A process on the same host reaches them for
/// less CPU than over loopback TCP (no TCP stack, no connection tracking): `pgbench -M prepared`
/// on this 2-core host ran 54,000–55,600 `SELECT 1` a second over TCP and 90,200–94,400 over the
/// socket (benches/README.md). The bench's service uses them; the fault proxies need TCP, so
/// nothing else does.
#[derive(Clone, Debug)]
pub struct SocketUrls {
    /// A superuser URL to the `postgres` database, its `host` the socket's directory.
    pub admin_url: String,
    /// The Redis URL (`redis+unix://`).
    pub redis_url: String,
}

impl SocketUrls {
    /// The URLs of a PostgreSQL whose socket directory is `pg_dir` (the socket's name carries
    /// `pg_port`) and a Redis listening on the socket file `redis_socket`.
    fn new(pg_dir: &std::path::Path, pg_port: u16, redis_socket: &std::path::Path) -> Self {
        let mut admin =
            url::Url::parse(&format!("postgres://postgres@localhost:{pg_port}/postgres"))
                .expect("a valid URL");
        admin
            .query_pairs_mut()
            .append_pair("host", &pg_dir.to_string_lossy());
        SocketUrls {
            admin_url: admin.to_string(),
            redis_url: format!("redis+unix://{}", redis_socket.display()),
        }
    }
}

/// What a run has started on this machine, so that its removal can be checked, not assumed.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Footprint {
    /// Container ids (docker backend).
    pub containers: Vec<String>,
    /// Server process ids (local backend).
    pub pids: Vec<u32>,
    /// The run's directory on this host: the local backend's servers' (data, logs, sockets), or
    /// the docker backend's socket directory where its servers listen on sockets.
    pub dir: Option<std::path::PathBuf>,
}

/// One scenario's or test's own database and Redis key prefix.
#[derive(Clone, Debug)]
pub struct IsolatedEnv {
    /// The database's name.
    pub database_name: String,
    /// A URL to the database (same credentials as the admin URL: the schema owner's).
    pub database_url: String,
    /// A URL to the database logged in as the service's request role (`harbor_app`), for the
    /// service's request pool.
    pub request_database_url: String,
    /// The Redis URL (shared server).
    pub redis_url: String,
    /// The prefix every key of this environment must carry.
    pub redis_key_prefix: String,
    admin_url: String,
}

impl Infra {
    /// Provisions PostgreSQL and Redis with the chosen backend.
    pub async fn provision(choice: BackendChoice) -> Result<Self, ProvisionError> {
        let started = Instant::now();
        let (kind, detected_images) = match choice {
            BackendChoice::Docker => (BackendKind::Docker, None),
            BackendChoice::Local => (BackendKind::Local, None),
            BackendChoice::External => (BackendKind::External, None),
            BackendChoice::Auto => resolve_auto().await?,
        };
        let (admin_url, redis_url, images, sockets, resources) = match kind {
            BackendKind::External => {
                let (pg, redis) = external::urls()?;
                (pg, redis, None, None, Resources::External)
            }
            BackendKind::Docker => {
                let c = docker::start(detected_images).await?;
                (
                    c.admin_url.clone(),
                    c.redis_url.clone(),
                    Some(c.images.clone()),
                    c.sockets.clone(),
                    Resources::Docker(Box::new(c)),
                )
            }
            BackendKind::Local => {
                let l = local::start().await?;
                (
                    l.admin_url.clone(),
                    l.redis_url.clone(),
                    None,
                    l.sockets.clone(),
                    Resources::Local(l),
                )
            }
        };
        let mut infra = Infra {
            kind,
            admin_url,
            redis_url,
            postgres_version: String::new(),
            redis_version: String::new(),
            images,
            sockets,
            ready_in: Duration::ZERO,
            resources,
            template: tokio::sync::OnceCell::new(),
            schema_templates: Default::default(),
            made: Default::default(),
        };
        // Servers the harness starts may take a while; servers the user runs are up or not.
        let (pg_limit, redis_limit) = match kind {
            BackendKind::External => (Duration::from_secs(10), Duration::from_secs(10)),
            _ => (Duration::from_secs(60), Duration::from_secs(30)),
        };
        let probe = async {
            let pg = wait_for_postgres(&infra.admin_url, pg_limit).await?;
            let redis = wait_for_redis(&infra.redis_url, redis_limit).await?;
            Ok::<_, ProvisionError>((pg, redis))
        };
        match probe.await {
            Ok((pg, redis)) => {
                infra.postgres_version = pg;
                infra.redis_version = redis;
                infra.ready_in = started.elapsed();
                // The sockets are an offer, not a requirement: ones that do not answer (a
                // directory the engine could not share) are not offered.
                if let Some(s) = infra.sockets.clone() {
                    let short = Duration::from_secs(5);
                    let answered = wait_for_postgres(&s.admin_url, short).await.is_ok()
                        && wait_for_redis(&s.redis_url, short).await.is_ok();
                    if !answered {
                        tracing::warn!(
                            "the servers' Unix sockets do not answer; only TCP is offered"
                        );
                        infra.sockets = None;
                    }
                }
                Ok(infra)
            }
            Err(e) => {
                infra.shutdown().await;
                Err(e)
            }
        }
    }

    /// Creates a fresh database from the migrated template and a fresh Redis key prefix.
    pub async fn isolated_env(&self) -> Result<IsolatedEnv, ProvisionError> {
        self.isolated_env_with(None).await
    }

    /// The same, the database made from `schema` (a target's own SQL) instead of the reference's
    /// migrations when given.
    pub async fn isolated_env_with(
        &self,
        schema: Option<&str>,
    ) -> Result<IsolatedEnv, ProvisionError> {
        let template = match schema {
            None => self.template_database().await?,
            Some(sql) => {
                let mut known = self.schema_templates.lock().await;
                match known.get(sql) {
                    Some(name) => name.clone(),
                    None => {
                        let name = template::ensure_schema(&self.admin_url, sql).await?;
                        known.insert(sql.to_owned(), name.clone());
                        name
                    }
                }
            }
        };
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let database_name = format!("harbor_t_{}", &suffix[..16]);
        let env = IsolatedEnv {
            database_url: template::database_url(&self.admin_url, &database_name),
            request_database_url: template::request_database_url(&self.admin_url, &database_name),
            database_name,
            redis_url: self.redis_url.clone(),
            redis_key_prefix: format!("harbor:t:{}:", &suffix[..16]),
            admin_url: self.admin_url.clone(),
        };
        // Remembered before the database exists: a caller dropped while it is made (an
        // interrupt) leaves nothing the sweep below does not know of.
        self.made
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(env.clone());
        create_database(&self.admin_url, &env.database_name, &template).await?;
        Ok(env)
    }

    /// Cleans every environment this infrastructure made, whether or not its owner cleaned it
    /// (dropping a database that is gone, or keys that are, changes nothing): for a start-up
    /// interrupted on servers that outlive the run (`--backend external`), whose future was
    /// dropped before it could clean its own.
    pub async fn clean_every_environment(&self) {
        let made = std::mem::take(
            &mut *self
                .made
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for env in made {
            if let Err(e) = env.cleanup().await {
                eprintln!(
                    "harbor-certify: could not remove {} and its Redis keys: {e}",
                    env.database_name
                );
            }
        }
    }

    /// The migrated template's name (made on first use): what [`FreshDatabase`] copies for a
    /// reference-schema isolation spec.
    pub async fn template_database(&self) -> Result<String, ProvisionError> {
        Ok(self
            .template
            .get_or_try_init(|| template::ensure(&self.admin_url))
            .await?
            .clone())
    }

    /// What this run has started: containers, processes, directories.
    pub fn footprint(&self) -> Footprint {
        match &self.resources {
            Resources::Docker(c) => Footprint {
                containers: c.ids(),
                dir: c.socket_directory(),
                ..Footprint::default()
            },
            Resources::Local(l) => l.footprint(),
            Resources::External => Footprint::default(),
        }
    }

    /// Removes every container, process and directory this run created. Idempotent.
    pub async fn shutdown(&mut self) {
        match std::mem::replace(&mut self.resources, Resources::External) {
            Resources::Docker(c) => c.remove().await,
            Resources::Local(l) => l.stop(),
            Resources::External => {}
        }
    }
}

impl IsolatedEnv {
    /// A pool on this environment's database.
    pub async fn pool(&self, max_connections: u32) -> Result<PgPool, sqlx::Error> {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(&self.database_url)
            .await
    }

    /// Drops the database (forcing out any session) and every Redis key under the prefix.
    pub async fn cleanup(&self) -> Result<(), ProvisionError> {
        drop_database(&self.admin_url, &self.database_name).await?;
        let client = redis::Client::open(self.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let keys = keys_with_prefix(&mut conn, &self.redis_key_prefix).await?;
        for chunk in keys.chunks(500) {
            redis::cmd("UNLINK")
                .arg(chunk)
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(())
    }
}

/// A database of its own for one isolation spec, on any server the caller may create databases
/// on — the run's, or a black-box target's: a copy of a template (`template0`: empty; the
/// reference schema's template; or the target's own schema database, which must have no other
/// session while it is copied). Dropped, forcing out any session, by [`FreshDatabase::drop`].
#[derive(Clone, Debug)]
pub struct FreshDatabase {
    /// A URL to it, with the admin URL's credentials.
    pub url: String,
    /// Its name.
    pub name: String,
    admin_url: String,
}

impl FreshDatabase {
    /// Creates `harbor_s_<random>` on the server of `admin_url` as a copy of `template`.
    pub async fn create(admin_url: &str, template: &str) -> Result<Self, ProvisionError> {
        let name = format!(
            "harbor_s_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        create_database(admin_url, &name, template).await?;
        Ok(FreshDatabase {
            url: template::database_url(admin_url, &name),
            name,
            admin_url: admin_url.to_owned(),
        })
    }

    /// Drops it, forcing out any session still on it.
    pub async fn drop(self) -> Result<(), ProvisionError> {
        drop_database(&self.admin_url, &self.name).await
    }
}

/// `CREATE DATABASE name TEMPLATE template` on the server of `admin_url` (`name` is one the
/// harness made; the template's name is quoted).
async fn create_database(
    admin_url: &str,
    name: &str,
    template: &str,
) -> Result<(), ProvisionError> {
    let mut admin = template::admin_connection(admin_url).await?;
    let quoted = template.replace('"', "\"\"");
    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE \"{quoted}\""))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// Drops the database `name` the harness made, forcing out any session still on it.
async fn drop_database(admin_url: &str, name: &str) -> Result<(), ProvisionError> {
    let mut admin = template::admin_connection(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// `auto`'s choice; when it picks Docker, the engine has answered and the images it found are
/// handed on, so `docker::start` does not ask again.
async fn resolve_auto() -> Result<(BackendKind, Option<DockerImages>), ProvisionError> {
    if let Ok((pg, redis)) = external::urls() {
        eprintln!(
            "harbor-certify: backend auto → external, because HARBOR_DATABASE_URL ({}) and HARBOR_REDIS_URL ({}) are both set (--backend docker|local to choose another)",
            without_password(&pg),
            without_password(&redis)
        );
        return Ok((BackendKind::External, None));
    }
    let docker = match docker::engine_version().await {
        Ok(_) => match DockerImages::resolve(false).await {
            Ok(images) => return Ok((BackendKind::Docker, Some(images))),
            Err(e) => e,
        },
        Err(e) => e,
    };
    match LocalBinaries::find() {
        Ok(_) => Ok((BackendKind::Local, None)),
        Err(local) => Err(ProvisionError::NothingAvailable { docker, local }),
    }
}

/// A server URL as it may be printed: its password, if any, replaced by `***`.
pub fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(an unparsable URL)".to_owned(),
    }
}

/// Polls until PostgreSQL answers a query; returns its version.
/// Every Redis key that starts with `prefix` (SCAN, never KEYS), sorted.
pub(crate) async fn keys_with_prefix(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Result<Vec<String>, redis::RedisError> {
    let pattern = format!("{prefix}*");
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    Ok(keys)
}

/// `N` distinct ports on 127.0.0.1 nothing listens on now (the kernel's picks for port 0, each
/// held until all are picked). They are free only until someone takes them: the local backend and
/// the Docker backend on the host's network start their servers on them and retry on new ports
/// when a server exits at start.
fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let mut held = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        *port = listener.local_addr()?.port();
        held.push(listener);
    }
    Ok(ports)
}

async fn wait_for_postgres(url: &str, limit: Duration) -> Result<String, ProvisionError> {
    use sqlx::Connection;
    let started = Instant::now();
    loop {
        let attempt = async {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            let version: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&mut conn)
                .await?;
            conn.close().await?;
            Ok::<_, sqlx::Error>(version)
        };
        match attempt.await {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() >= limit => {
                return Err(ProvisionError::NotReady {
                    what: "PostgreSQL",
                    at: without_password(url),
                    waited: limit,
                    last_error: e.to_string(),
                })
            }
            // Polling a server that is starting: the only wait in provisioning, bounded above.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Polls until Redis answers PING; returns its version.
async fn wait_for_redis(url: &str, limit: Duration) -> Result<String, ProvisionError> {
    let started = Instant::now();
    loop {
        let attempt = async {
            let client = redis::Client::open(url)?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>(
                info.lines()
                    .find_map(|l| l.strip_prefix("redis_version:"))
                    .unwrap_or("unknown")
                    .trim()
                    .to_owned(),
            )
        };
        match attempt.await {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() >= limit => {
                return Err(ProvisionError::NotReady {
                    what: "Redis",
                    at: without_password(url),
                    waited: limit,
                    last_error: e.to_string(),
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
