//! The Docker backend: PostgreSQL and Redis containers through testcontainers.
//!
//! Images come from `HARBOR_POSTGRES_IMAGE` / `HARBOR_REDIS_IMAGE`; without them, the pinned
//! official tags when present locally, else the images `scripts/offline-images.sh` builds, else the
//! official tags pulled (`docker/images.rs`). Everything but the containers themselves is asked of
//! the engine through testcontainers' own client (`docker/engine.rs`). Every container carries the label
//! [`DOCKER_LABEL`] and the owning process id; containers whose owner is gone are removed at the
//! next start, since the Rust testcontainers has no reaper.
//!
//! The harness sends traffic to the servers at 127.0.0.1 only, never at a container's own
//! address, and nothing is published beyond it. With a rootful engine on this Linux host the
//! containers share the host's network and listen on its loopback alone, at ports chosen as the
//! local backend chooses its own; elsewhere (an engine in a VM, a remote or rootless one,
//! `HARBOR_DOCKER_PUBLISHED_PORTS`) the engine publishes each one's port on 127.0.0.1 alone,
//! through its `docker-proxy`, a copy loop that took 27 % of both cores under the flow bench.
//! On the host's network the servers also listen on Unix sockets, in a directory of the run's
//! (0700) shared with both containers (`Infra::sockets`); an engine that cannot share it starts
//! them without.
//!
//! Where the engine keeps its containers' cgroups itself (the `cgroupfs` driver), both containers
//! are placed at the root of the CPU hierarchy with the weight of [`SERVER_CPU_SHARES`]: under the
//! engine's default, the whole database — every backend — and Redis competed for the host's cores
//! with the weight of one of the service's threads, and lost whenever the cores were busy
//! ([`Placement`]).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::ProvisionError;
use testcontainers::bollard::models::{HostConfig, PortBinding};
use testcontainers::core::error::{TestcontainersError, WaitContainerError};
use testcontainers::core::logs::WaitLogError;
use testcontainers::core::{IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

mod engine;
mod images;

pub(super) use engine::version as engine_version;

pub use images::DockerImages;

/// The label on every container Harbor starts.
pub const DOCKER_LABEL: &str = "dev.harbor.managed";
const OWNER_LABEL: &str = "dev.harbor.owner-pid";

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

/// Where the server containers run: which network, which CPU group.
#[derive(Clone, Copy, Debug)]
struct Placement {
    /// Both containers at the root of the cgroup hierarchy with [`SERVER_CPU_SHARES`]: only under
    /// the `cgroupfs` driver, where the engine names cgroups by path (`/` then means the root).
    /// Under it the engine's own parent group (`/docker`) weighs what one thread of the host
    /// weighs, whatever its containers hold: 100 goose users' flows measured 264–291 a second
    /// there against 318–340 with PostgreSQL at the root (alternated, three runs each,
    /// 2026-12-05), PostgreSQL's share of the busy cores 47 % against 54 % — what it takes
    /// outside a container. Elsewhere (the `systemd` driver, Docker Desktop's VM) the engine's
    /// placement stands; `HARBOR_DOCKER_ENGINE_CGROUP` keeps it too.
    at_root: bool,
    /// The containers share the host's network and listen on 127.0.0.1 themselves: a rootful
    /// engine on this Linux host, as testcontainers' own client reports it (the engine the
    /// containers start on, whatever `docker context` says), reached through a local socket
    /// (`DOCKER_HOST` unset or `unix://`), on this host by name and kernel. Not Docker Desktop
    /// or any other engine in a VM (Colima, Lima, …), not a remote engine however its host is
    /// named, not a rootless engine (its host network is its own namespace) nor one that remaps
    /// users (it refuses the host's network). Otherwise the engine publishes their ports on
    /// 127.0.0.1 alone. (A harness in a container of its own has a host name of its own; one
    /// that shared the host's name but not its network would find no server at 127.0.0.1 and
    /// fail to provision, loudly.)
    host_network: bool,
}

impl Placement {
    async fn for_engine() -> Self {
        let facts = engine::facts().await;
        let this_host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let this_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        // testcontainers' rule (built without its properties file): `DOCKER_HOST`, else a socket.
        let local_socket = std::env::var("DOCKER_HOST")
            .map_or(true, |host| host.is_empty() || host.starts_with("unix://"));
        let option = |name: &str| facts.security_options.iter().any(|o| o.contains(name));
        Placement {
            at_root: facts.cgroup_driver == "cgroupfs"
                && std::env::var_os("HARBOR_DOCKER_ENGINE_CGROUP").is_none(),
            host_network: cfg!(target_os = "linux")
                && facts.os_type == "linux"
                && !facts.operating_system.contains("Docker Desktop")
                && !option("name=rootless")
                && !option("name=userns")
                && local_socket
                && !facts.host_name.is_empty()
                && facts.host_name == this_host.trim()
                && facts.kernel_version == this_kernel.trim()
                && std::env::var_os("HARBOR_DOCKER_PUBLISHED_PORTS").is_none(),
        }
    }

    /// Sets the container's CPU group and network; `port` is the one its server listens on
    /// inside the container when the engine publishes it.
    fn apply(self, host: &mut HostConfig, port: u16) {
        if self.at_root {
            host.cgroup_parent = Some("/".to_owned());
            host.cpu_shares = Some(SERVER_CPU_SHARES);
        }
        // testcontainers publishes every exposed port on all of the host's addresses: a database
        // that trusts every login would be open to the network. Nothing is published on the
        // host's network (the servers listen on its loopback themselves), and elsewhere the one
        // port on 127.0.0.1 alone, at a port the engine picks.
        host.publish_all_ports = Some(false);
        if self.host_network {
            host.network_mode = Some("host".to_owned());
            host.port_bindings = None;
        } else {
            let loopback_only = PortBinding {
                host_ip: Some(Ipv4Addr::LOCALHOST.to_string()),
                host_port: None,
            };
            host.port_bindings = Some(HashMap::from([(
                format!("{port}/tcp"),
                Some(vec![loopback_only]),
            )]));
        }
    }
}

/// The running containers of one run.
pub(super) struct Containers {
    pub(super) admin_url: String,
    pub(super) redis_url: String,
    pub(super) images: DockerImages,
    /// The servers through their sockets, in `socket_dir` (on the host's network only).
    pub(super) sockets: Option<super::SocketUrls>,
    /// The host's directory both servers put their sockets in, shared with the containers.
    socket_dir: Option<tempfile::TempDir>,
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
    let reaped = engine::reap_orphans().await;
    if reaped > 0 {
        tracing::info!(reaped, "removed containers left behind by killed runs");
    }
    let reaped = reap_socket_directories();
    if reaped > 0 {
        tracing::info!(
            reaped,
            "removed socket directories left behind by killed runs"
        );
    }
    let images = match detected {
        Some(images) => images,
        None => DockerImages::resolve(true)
            .await
            .map_err(ProvisionError::Docker)?,
    };
    let placement = Placement::for_engine().await;
    // On the host's network a port is only free until someone else takes it, as for the local
    // backend: a server that exits at start (its port taken) is retried on new ones.
    let attempts = if placement.host_network { 3 } else { 1 };
    // The sockets are an offer: an engine that cannot share the directory (a private /tmp, a
    // security module refusing the writes) fails the start, and the start goes on without them.
    let mut sockets = placement.host_network;
    let mut last = None;
    let mut attempt = 0;
    while attempt < attempts {
        match start_servers(&images, placement, sockets).await {
            Ok(containers) => return Ok(containers),
            Err(StartFailure::ExitedAtStart(e) | StartFailure::Other(e)) if sockets => {
                tracing::warn!(error = %e, "the servers did not start with Unix sockets; TCP only");
                sockets = false;
                last = Some(e);
                continue;
            }
            Err(StartFailure::ExitedAtStart(e)) => {
                tracing::warn!(error = %e, "a server container stopped at start; new ports");
                last = Some(e);
            }
            Err(StartFailure::Other(e)) => return Err(e),
        }
        attempt += 1;
    }
    Err(last.expect("at least one attempt was made"))
}

/// Why an attempt to start the two containers failed.
enum StartFailure {
    /// A server's log ended before it said it listened (its port taken): new ports may do.
    ExitedAtStart(ProvisionError),
    /// Anything else (the engine, an image, a timeout): another attempt would fail alike.
    Other(ProvisionError),
}

impl StartFailure {
    fn starting(image: &str, error: TestcontainersError) -> Self {
        let exited = matches!(
            error,
            TestcontainersError::WaitContainer(WaitContainerError::WaitLog(
                WaitLogError::EndOfStream(_)
            ))
        );
        let error = ProvisionError::Docker(format!("starting {image}: {error}"));
        if exited {
            StartFailure::ExitedAtStart(error)
        } else {
            StartFailure::Other(error)
        }
    }
}

async fn start_servers(
    images: &DockerImages,
    placement: Placement,
    sockets: bool,
) -> Result<Containers, StartFailure> {
    let owner = std::process::id().to_string();
    // The ports the servers listen on, on the host's network; else the engine picks them, later.
    let chosen = if placement.host_network {
        let ports = super::free_ports::<2>()
            .map_err(|e| StartFailure::Other(ProvisionError::Docker(e.to_string())))?;
        Some(ports)
    } else {
        None
    };
    let mut pg_args = vec![
        "-c".to_owned(),
        "fsync=off".to_owned(),
        "-c".to_owned(),
        "synchronous_commit=off".to_owned(),
        "-c".to_owned(),
        "full_page_writes=off".to_owned(),
        "-c".to_owned(),
        "max_connections=500".to_owned(),
    ];
    let mut redis_args = Vec::new();
    // On the host's network (so a local engine, without user remapping) the servers also listen
    // on Unix sockets in a directory shared with the host; elsewhere the host may not see it.
    let socket_dir = if sockets {
        socket_directory().map_err(StartFailure::Other)?
    } else {
        None
    };
    if socket_dir.is_some() {
        pg_args.extend([
            "-c".to_owned(),
            format!("unix_socket_directories=/var/run/postgresql,{CONTAINER_SOCKETS}"),
        ]);
        redis_args.extend([
            "--unixsocket".to_owned(),
            format!("{CONTAINER_SOCKETS}/redis.sock"),
            "--unixsocketperm".to_owned(),
            "777".to_owned(),
        ]);
    }
    // On the host's network, a server is taken as started once its own log says it listens: a
    // connection accepted on its port could be another process's that took the port first (this
    // server then exits, ending its log, and the attempt fails). Elsewhere the readiness probe
    // that follows (`Infra::provision`) is the only wait.
    let (pg_ready, redis_ready) = if let Some([pg_port, redis_port]) = chosen {
        // Later settings win over the images' own (`listen_addresses='*'`, `--bind 0.0.0.0`);
        // the log in English, where the line waited for below is looked for.
        pg_args.extend(
            [
                "listen_addresses=127.0.0.1".to_owned(),
                format!("port={pg_port}"),
                "lc_messages=C".to_owned(),
            ]
            .into_iter()
            .flat_map(|setting| ["-c".to_owned(), setting]),
        );
        redis_args.extend([
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            redis_port.to_string(),
        ]);
        (
            WaitFor::message_on_either_std(format!(
                "listening on IPv4 address \"127.0.0.1\", port {pg_port}"
            )),
            WaitFor::message_on_either_std("Ready to accept connections"),
        )
    } else {
        (WaitFor::Nothing, WaitFor::Nothing)
    };
    let server = |image: &str, port: u16, ready: WaitFor, cmd: Vec<String>| {
        let (name, tag) = split_image(image);
        let mut server = GenericImage::new(name, tag).with_wait_for(ready);
        if !placement.host_network {
            server = server.with_exposed_port(port.tcp());
        }
        let server = match &socket_dir {
            Some(dir) => server.with_mount(Mount::bind_mount(
                shared_sockets(dir).to_string_lossy().into_owned(),
                CONTAINER_SOCKETS,
            )),
            None => server.into(),
        };
        server
            .with_cmd(cmd)
            .with_label(DOCKER_LABEL, "true")
            .with_label(OWNER_LABEL, owner.clone())
            .with_host_config_modifier(move |host| placement.apply(host, port))
            .with_startup_timeout(Duration::from_secs(60))
    };
    let postgres = server(&images.postgres, 5432, pg_ready, pg_args)
        .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
        .with_env_var("POSTGRES_USER", "postgres")
        .start()
        .await
        .map_err(|e| StartFailure::starting(&images.postgres, e))?;
    let redis = server(&images.redis, 6379, redis_ready, redis_args)
        .start()
        .await;
    let mut containers = Containers {
        admin_url: String::new(),
        redis_url: String::new(),
        images: images.clone(),
        sockets: None,
        socket_dir: None,
        postgres: Some(postgres),
        redis: None,
    };
    match redis {
        Ok(redis) => containers.redis = Some(redis),
        Err(e) => {
            containers.remove().await;
            return Err(StartFailure::starting(&images.redis, e));
        }
    }
    let (pg_port, redis_port) = match chosen {
        Some([pg_port, redis_port]) => (pg_port, redis_port),
        None => match containers.published_ports().await {
            Ok(ports) => ports,
            Err(e) => {
                containers.remove().await;
                return Err(StartFailure::Other(e));
            }
        },
    };
    let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    containers.admin_url = format!("postgres://postgres@{}/postgres", loopback(pg_port));
    containers.redis_url = format!("redis://{}/", loopback(redis_port));
    if let Some(dir) = socket_dir {
        let shared = shared_sockets(&dir);
        containers.sockets = Some(super::SocketUrls::new(
            &shared,
            pg_port,
            &shared.join("redis.sock"),
        ));
        containers.socket_dir = Some(dir);
    }
    Ok(containers)
}

impl Containers {
    /// The ports the engine published for PostgreSQL and Redis on 127.0.0.1.
    async fn published_ports(&self) -> Result<(u16, u16), ProvisionError> {
        let mut ports = [0; 2];
        for (slot, (container, port)) in ports
            .iter_mut()
            .zip([(&self.postgres, 5432), (&self.redis, 6379)])
        {
            let container = container.as_ref().expect("both containers are started");
            *slot = container
                .get_host_port_ipv4(port.tcp())
                .await
                .map_err(|e| ProvisionError::Docker(e.to_string()))?;
        }
        Ok((ports[0], ports[1]))
    }

    /// The run's socket directory on this host, where the servers listen on sockets.
    pub(super) fn socket_directory(&self) -> Option<std::path::PathBuf> {
        self.socket_dir.as_ref().map(|d| d.path().to_path_buf())
    }

    /// The containers' ids.
    pub(super) fn ids(&self) -> Vec<String> {
        [&self.postgres, &self.redis]
            .into_iter()
            .flatten()
            .map(|c| c.id().to_owned())
            .collect()
    }

    /// Removes both containers and their volumes, waiting for the engine to confirm (and then
    /// the sockets' directory, with its `TempDir`).
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

/// Where the containers put their Unix sockets: the host's socket directory is mounted there.
const CONTAINER_SOCKETS: &str = "/harbor-sockets";

/// A fresh host directory for the servers' sockets: the run's own (mode 0700, so no other user
/// of the host reaches, or squats, a path under it), holding the directory the containers share
/// ([`shared_sockets`]), which their servers' users (not the host's) must be able to write to:
/// sticky and open to all, as `/tmp` is — reachable from inside the containers, which see it
/// mounted, not through its 0700 parent. `None` where it cannot be made.
fn socket_directory() -> Result<Option<tempfile::TempDir>, ProvisionError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match tempfile::Builder::new().prefix(SOCKETS_PREFIX).tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            tracing::warn!(error = %e, "no directory for the servers' sockets; TCP only");
            return Ok(None);
        }
    };
    let shared = shared_sockets(&dir);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .and_then(|()| super::claim_directory(dir.path()))
        .and_then(|()| std::fs::create_dir(&shared))
        .and_then(|()| std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)))
        .map_err(|e| ProvisionError::Docker(format!("the sockets' directory: {e}")))?;
    Ok(Some(dir))
}

/// The name of a run's socket directory.
const SOCKETS_PREFIX: &str = "harbor-sockets-";

/// Removes the socket directories of runs whose process is gone (a killed run drops no
/// `TempDir`), as their containers are reaped.
fn reap_socket_directories() -> usize {
    super::orphaned_directories(&std::env::temp_dir(), SOCKETS_PREFIX)
        .into_iter()
        .filter(|path| std::fs::remove_dir_all(path).is_ok())
        .count()
}

/// The directory inside the run's socket directory that the containers see mounted.
fn shared_sockets(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("shared")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A killed run's socket directory goes at the next start; a live run's stays.
    #[test]
    fn a_socket_directory_whose_run_is_gone_is_removed() {
        let make = |owner: u32| {
            let dir = tempfile::Builder::new()
                .prefix(SOCKETS_PREFIX)
                .tempdir()
                .unwrap()
                .keep();
            std::fs::write(dir.join(super::super::OWNER_FILE), owner.to_string()).unwrap();
            dir
        };
        // Above any pid the kernel hands out (`pid_max` is at most 2^22).
        let gone = make(4_194_304 + 1);
        let live = make(std::process::id());
        reap_socket_directories();
        assert!(!gone.exists(), "the killed run's directory is removed");
        assert!(live.exists(), "a live run's directory stays");
        std::fs::remove_dir_all(live).unwrap();
    }
}
