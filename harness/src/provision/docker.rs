//! The Docker backend: PostgreSQL and Redis containers through testcontainers.
//!
//! Images come from `HARBOR_POSTGRES_IMAGE` / `HARBOR_REDIS_IMAGE`; without them, the pinned
//! official tags when present locally, else the images `scripts/offline-images.sh` builds, else the
//! official tags again (testcontainers then tries to pull them). Every container carries the label
//! [`DOCKER_LABEL`] and the owning process id; containers whose owner is gone are removed at the
//! next start, since the Rust testcontainers has no reaper.
//!
//! Where the engine keeps its containers' cgroups itself (the `cgroupfs` driver), both containers
//! are placed at the root of the CPU hierarchy with the weight of [`SERVER_CPU_SHARES`]: under the
//! engine's default, the whole database — every backend — and Redis competed for the host's cores
//! with the weight of one of the service's threads, and lost whenever the cores were busy
//! ([`servers_placed_at_root`]).

use std::time::Duration;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::process::Command;

use super::ProvisionError;

/// The label on every container Harbor starts.
pub const DOCKER_LABEL: &str = "dev.harbor.managed";
const OWNER_LABEL: &str = "dev.harbor.owner-pid";

const OFFICIAL_POSTGRES: &str = "postgres:16-alpine";
const OFFICIAL_REDIS: &str = "redis:7-alpine";
const OFFLINE_POSTGRES: &str = "harbor-offline/postgres:15-bookworm";
const OFFLINE_REDIS: &str = "harbor-offline/redis:7-bookworm";

/// Each server container's CPU weight (`--cpu-shares`; one thread of the host weighs 1,024).
/// Four threads' worth, chosen so that the servers are scheduled as they are outside a container
/// (this host's native servers, alternated with 50 activation clients): raw distinct activation
/// 9,475 a second at four against about 10,000 native, and 11,000 at sixteen threads' worth, which
/// put the database ahead of its clients (flows 3 % more, the activation ceilings 15 % higher).
/// Redis gets the same: with only the database placed (at sixteen), Redis — left alone in the
/// engine's group — served a flow of the 1,000-flow crash scenario a 503 UNAVAILABLE (a Redis call
/// that failed or passed the service's 2-second timeout) in one of the catalogue's two runs of a
/// fresh-clone CI.
pub const SERVER_CPU_SHARES: i64 = 4 * 1024;

/// The two images a Docker run uses.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DockerImages {
    /// The PostgreSQL image reference.
    pub postgres: String,
    /// The Redis image reference.
    pub redis: String,
}

impl DockerImages {
    /// Chooses the images as described in the module documentation. With `allow_pull` false (the
    /// `auto` backend's detection) only images already present count, so detection is quick.
    pub async fn resolve(allow_pull: bool) -> Result<Self, String> {
        let postgres = resolve_one(
            "HARBOR_POSTGRES_IMAGE",
            OFFICIAL_POSTGRES,
            OFFLINE_POSTGRES,
            allow_pull,
        )
        .await?;
        let redis = resolve_one(
            "HARBOR_REDIS_IMAGE",
            OFFICIAL_REDIS,
            OFFLINE_REDIS,
            allow_pull,
        )
        .await?;
        Ok(Self { postgres, redis })
    }
}

async fn resolve_one(
    var: &str,
    official: &str,
    offline: &str,
    allow_pull: bool,
) -> Result<String, String> {
    if let Ok(explicit) = std::env::var(var) {
        if !explicit.is_empty() {
            if allow_pull || image_present(&explicit).await {
                return Ok(explicit);
            }
            return Err(format!("{var}={explicit} is not present locally"));
        }
    }
    for candidate in [official, offline] {
        if image_present(candidate).await {
            return Ok(candidate.to_owned());
        }
    }
    if allow_pull && pull(official).await {
        return Ok(official.to_owned());
    }
    Err(format!(
        "neither {official} nor {offline} is present and {official} cannot be pulled; \
         run scripts/offline-images.sh or set {var}"
    ))
}

async fn docker_cli(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run the docker client: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

async fn image_present(image: &str) -> bool {
    docker_cli(&["image", "inspect", "--format", "{{.Id}}", image])
        .await
        .is_ok()
}

async fn pull(image: &str) -> bool {
    tokio::time::timeout(Duration::from_secs(60), docker_cli(&["pull", "-q", image]))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false)
}

/// The Docker engine's version, or why it does not answer.
pub(super) async fn engine_version() -> Result<String, String> {
    let probe = docker_cli(&["version", "--format", "{{.Server.Version}}"]);
    match tokio::time::timeout(Duration::from_secs(10), probe).await {
        Ok(Ok(v)) if !v.is_empty() => Ok(v),
        Ok(Ok(_)) => Err("the Docker engine did not report a version".into()),
        Ok(Err(e)) => Err(format!(
            "no Docker engine answers ({})",
            e.lines().last().unwrap_or("no detail")
        )),
        Err(_) => Err("the Docker engine did not answer within 10 s".into()),
    }
}

/// Whether the server containers can be given their own CPU weight at the root of the cgroup
/// hierarchy: only under the `cgroupfs` driver, where the engine names cgroups by path (`/`
/// then means the root). Under it the engine's own parent group (`/docker`) weighs what one
/// thread of the host weighs, whatever its containers hold: 100 goose users' flows measured
/// 264–291 a second there against 318–340 with PostgreSQL at the root (alternated, three runs
/// each, 2026-12-05), PostgreSQL's share of the busy cores 47 % against 54 % — what it takes
/// outside a container. Elsewhere (the `systemd` driver, Docker Desktop's VM) the engine's
/// placement stands.
async fn servers_placed_at_root() -> bool {
    matches!(
        docker_cli(&["info", "--format", "{{.CgroupDriver}}"])
            .await
            .as_deref(),
        Ok("cgroupfs")
    ) && std::env::var_os("HARBOR_DOCKER_ENGINE_CGROUP").is_none()
}

/// Removes containers left by Harbor runs whose process is gone (a killed run).
pub(super) async fn reap_orphans() -> usize {
    let listing = docker_cli(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={DOCKER_LABEL}=true"),
        "--format",
        &format!("{{{{.ID}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}"),
    ])
    .await
    .unwrap_or_default();
    let mut removed = 0;
    for line in listing.lines() {
        let mut parts = line.split_whitespace();
        let (Some(id), owner) = (parts.next(), parts.next()) else {
            continue;
        };
        let alive = owner
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive && docker_cli(&["rm", "-f", "-v", id]).await.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The running containers of one run.
pub(super) struct Containers {
    pub(super) admin_url: String,
    pub(super) redis_url: String,
    pub(super) images: DockerImages,
    postgres: Option<ContainerAsync<GenericImage>>,
    redis: Option<ContainerAsync<GenericImage>>,
}

fn split_image(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (reference, "latest"),
    }
}

/// Starts both containers (after reaping orphans). `detected` are the images `auto` already
/// resolved, with the engine known to answer; `None` checks the engine and resolves them here.
pub(super) async fn start(detected: Option<DockerImages>) -> Result<Containers, ProvisionError> {
    if detected.is_none() {
        engine_version().await.map_err(ProvisionError::Docker)?;
    }
    let reaped = reap_orphans().await;
    if reaped > 0 {
        tracing::info!(reaped, "removed containers left behind by killed runs");
    }
    let images = match detected {
        Some(images) => images,
        None => DockerImages::resolve(true)
            .await
            .map_err(ProvisionError::Docker)?,
    };
    let owner = std::process::id().to_string();

    let (pg_name, pg_tag) = split_image(&images.postgres);
    let placed = servers_placed_at_root().await;
    // The engine's cgroup parent `/` is the root under the cgroupfs driver.
    let at_root = move |host: &mut testcontainers::bollard::models::HostConfig| {
        if placed {
            host.cgroup_parent = Some("/".to_owned());
            host.cpu_shares = Some(SERVER_CPU_SHARES);
        }
    };
    let postgres = GenericImage::new(pg_name, pg_tag)
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::Nothing)
        .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
        .with_env_var("POSTGRES_USER", "postgres")
        .with_cmd([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=500",
        ])
        .with_label(DOCKER_LABEL, "true")
        .with_label(OWNER_LABEL, owner.clone())
        .with_host_config_modifier(at_root)
        .with_startup_timeout(Duration::from_secs(60))
        .start()
        .await
        .map_err(|e| ProvisionError::Docker(format!("starting {}: {e}", images.postgres)))?;

    let (redis_name, redis_tag) = split_image(&images.redis);
    let redis = GenericImage::new(redis_name, redis_tag)
        .with_exposed_port(6379.tcp())
        .with_wait_for(WaitFor::Nothing)
        .with_label(DOCKER_LABEL, "true")
        .with_label(OWNER_LABEL, owner)
        .with_host_config_modifier(at_root)
        .with_startup_timeout(Duration::from_secs(60))
        .start()
        .await;
    let redis = match redis {
        Ok(r) => r,
        Err(e) => {
            let _ = postgres.rm().await;
            return Err(ProvisionError::Docker(format!(
                "starting {}: {e}",
                images.redis
            )));
        }
    };
    let pg_port = postgres
        .get_host_port_ipv4(5432.tcp())
        .await
        .map_err(|e| ProvisionError::Docker(e.to_string()))?;
    let redis_port = redis
        .get_host_port_ipv4(6379.tcp())
        .await
        .map_err(|e| ProvisionError::Docker(e.to_string()))?;
    // Docker publishes a port through `docker-proxy`, a userland copy loop that took 27 % of all
    // CPU under the flow bench (perf, 2 cores). Where the host routes to the bridge network (a
    // Linux engine), the servers are reached at their container addresses instead; elsewhere
    // (Docker Desktop, a remote engine) through the published ports.
    let (pg_addr, redis_addr) = match (
        routable(&postgres, 5432).await,
        routable(&redis, 6379).await,
    ) {
        (Some(pg), Some(redis)) => (pg, redis),
        _ => (
            std::net::SocketAddr::from(([127, 0, 0, 1], pg_port)),
            std::net::SocketAddr::from(([127, 0, 0, 1], redis_port)),
        ),
    };
    Ok(Containers {
        admin_url: format!("postgres://postgres@{pg_addr}/postgres"),
        redis_url: format!("redis://{redis_addr}/"),
        images,
        postgres: Some(postgres),
        redis: Some(redis),
    })
}

/// The container's own address on the bridge network, when the host routes to it: a connection
/// there is accepted, or refused by the container itself (the server may still be starting).
/// `None` when it times out or the network is unreachable.
async fn routable(
    container: &ContainerAsync<GenericImage>,
    port: u16,
) -> Option<std::net::SocketAddr> {
    if std::env::var_os("HARBOR_DOCKER_PUBLISHED_PORTS").is_some() {
        return None;
    }
    // testcontainers' `get_bridge_ip_address` looks the network up by the container's network
    // mode, which is `default` (not `bridge`) on current engines: ask the engine directly.
    let ip: std::net::IpAddr = docker_cli(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        container.id(),
    ])
    .await
    .ok()?
    .split_whitespace()
    .next()?
    .parse()
    .ok()?;
    let addr = std::net::SocketAddr::new(ip, port);
    match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Some(addr),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(addr),
        _ => None,
    }
}

impl Containers {
    /// The containers' ids.
    pub(super) fn ids(&self) -> Vec<String> {
        [&self.postgres, &self.redis]
            .into_iter()
            .flatten()
            .map(|c| c.id().to_owned())
            .collect()
    }

    /// Removes both containers and their volumes, waiting for the engine to confirm.
    pub(super) async fn remove(mut self) {
        for container in [self.postgres.take(), self.redis.take()]
            .into_iter()
            .flatten()
        {
            if let Err(e) = container.rm().await {
                tracing::warn!(error = %e, "could not remove a container; the next run will reap it");
            }
        }
    }
}
