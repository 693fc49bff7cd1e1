//! Provisioning, for both the docker and the local backend: servers answer, scenario databases
//! and Redis prefixes are isolated, and cleanup leaves nothing behind (checked). Then `auto`'s
//! choice and its exit-2 message, through the real `harbor-certify doctor` binary.

use std::process::Command;

use harbor_harness::provision::{BackendChoice, BackendKind, Infra};
use sqlx::Connection;

async fn exercise(choice: BackendChoice, expected: BackendKind) {
    let mut infra = Infra::provision(choice)
        .await
        .unwrap_or_else(|e| panic!("the {choice:?} backend is required here and failed: {e}"));
    assert_eq!(infra.kind, expected);
    assert!(!infra.postgres_version.is_empty() && !infra.redis_version.is_empty());
    let footprint = infra.footprint();
    servers_are_reached_on_loopback(
        [&infra.admin_url, &infra.redis_url],
        &footprint.containers,
        // The local backend's servers are processes on this host's network too.
        expected == BackendKind::Local
            || (expected == BackendKind::Docker && host_network_expected()),
    );
    if expected == BackendKind::Docker {
        servers_are_scheduled_outside_the_engines_group(&footprint.containers);
    }
    // Servers on this host's network also listen on Unix sockets, in the run's directory. Strict
    // where they are expected: the backends fall back to TCP quietly, and the bench's transport
    // (`transport` in bench.json) would move with them unseen.
    let sockets_expected = expected == BackendKind::Local
        || (expected == BackendKind::Docker && host_network_expected());
    servers_answer_on_their_sockets(&infra, &footprint, sockets_expected).await;

    let one = infra.isolated_env().await.unwrap();
    let two = infra.isolated_env().await.unwrap();
    assert_ne!(one.database_name, two.database_name);
    let (p1, p2) = (one.pool(2).await.unwrap(), two.pool(2).await.unwrap());
    let answer: i32 = sqlx::query_scalar("SELECT 40 + 2")
        .fetch_one(&p1)
        .await
        .unwrap();
    assert_eq!(answer, 42);
    sqlx::query("INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 'only-in-one')")
        .execute(&p1)
        .await
        .unwrap();
    let in_two: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&p2)
        .await
        .unwrap();
    assert_eq!(
        in_two, 0,
        "the second database does not see the first one's rows"
    );
    let migrated: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&p2)
        .await
        .unwrap();
    assert!(
        migrated >= 1,
        "databases are cloned from the migrated template"
    );
    p1.close().await;
    p2.close().await;

    let client = redis::Client::open(infra.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    let _: () = redis::cmd("SET")
        .arg(format!("{}k", one.redis_key_prefix))
        .arg("one")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{}k", two.redis_key_prefix))
        .arg("two")
        .query_async(&mut conn)
        .await
        .unwrap();
    one.cleanup().await.unwrap();
    let theirs: Option<String> = redis::cmd("GET")
        .arg(format!("{}k", two.redis_key_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        theirs.as_deref(),
        Some("two"),
        "cleaning one prefix leaves the other alone"
    );
    let ours: Option<String> = redis::cmd("GET")
        .arg(format!("{}k", one.redis_key_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ours, None);
    let mut admin = sqlx::PgConnection::connect(&infra.admin_url).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&one.database_name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "the scenario database is dropped");
    admin.close().await.unwrap();
    two.cleanup().await.unwrap();
    drop(conn);

    infra.shutdown().await;
    containers_are_gone(&footprint.containers);
    for pid in &footprint.pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is gone"
        );
    }
    if let Some(dir) = &footprint.dir {
        assert!(!dir.exists(), "{} is removed", dir.display());
    }
    match expected {
        BackendKind::Docker => {
            assert_eq!(footprint.containers.len(), 2);
            assert_eq!(footprint.dir.is_some(), sockets_expected);
        }
        BackendKind::Local => assert!(footprint.pids.len() == 2 && footprint.dir.is_some()),
        BackendKind::External => {}
    }
}

/// Where `expected`, both servers answer through the socket URLs the run offers, and those
/// sockets lie in the run's directory (so its removal, checked after the shutdown, removes them);
/// elsewhere the run offers none.
async fn servers_answer_on_their_sockets(
    infra: &Infra,
    footprint: &harbor_harness::provision::Footprint,
    expected: bool,
) {
    let Some(sockets) = &infra.sockets else {
        assert!(!expected, "the servers offer no Unix sockets");
        return;
    };
    assert!(expected, "sockets offered where none were expected");
    let dir = footprint
        .dir
        .as_ref()
        .expect("the sockets' directory is in the footprint");
    let redis_path = sockets
        .redis_url
        .strip_prefix("redis+unix://")
        .expect("a redis+unix URL");
    let admin = url::Url::parse(&sockets.admin_url).unwrap();
    let (_, pg_dir) = admin
        .query_pairs()
        .find(|(k, _)| k == "host")
        .expect("the socket's directory as host");
    for path in [redis_path, pg_dir.as_ref()] {
        assert!(
            std::path::Path::new(path).starts_with(dir),
            "{path} lies outside the run's directory {}",
            dir.display()
        );
    }
    let mut pg = sqlx::PgConnection::connect(&sockets.admin_url)
        .await
        .unwrap();
    let over: Option<String> = sqlx::query_scalar("SELECT inet_server_addr()::text")
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert_eq!(over, None, "PostgreSQL answered over its socket, not TCP");
    pg.close().await.unwrap();
    let client = redis::Client::open(sockets.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

fn docker(args: &[&str]) -> String {
    try_docker(args).unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
}

/// The docker client's output, or what it said when it failed; on the engine the harness uses
/// (the `default` context: `DOCKER_HOST`, else the default socket), whatever context is current.
fn try_docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(["--context", "default"])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// Each of `containers` is removed, volumes and all.
fn containers_are_gone(containers: &[String]) {
    for id in containers {
        let left = docker(&[
            "ps",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("id={id}"),
        ]);
        assert!(left.is_empty(), "container {id} is gone");
    }
}

/// Whether the Docker backend should put the containers on the host's network here: a rootful
/// engine on this Linux host (by name and kernel) reached through a local socket, published
/// ports not asked for.
fn host_network_expected() -> bool {
    let engine = try_docker(&[
        "info",
        "--format",
        "{{.OperatingSystem}}|{{.SecurityOptions}}|{{.KernelVersion}}|{{.Name}}",
    ])
    .unwrap_or_default();
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let (this_host, this_kernel) = (
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/osrelease"),
    );
    let local_socket = std::env::var("DOCKER_HOST")
        .map_or(true, |host| host.is_empty() || host.starts_with("unix://"));
    cfg!(target_os = "linux")
        && local_socket
        && !engine.contains("userns")
        && engine.contains(&format!("|{}|", this_kernel.trim()))
        && !engine.contains("Docker Desktop")
        && !engine.contains("rootless")
        && engine.ends_with(&format!("|{}", this_host.trim()))
        && std::env::var_os("HARBOR_DOCKER_PUBLISHED_PORTS").is_none()
}

/// The harness sends to 127.0.0.1 only (this machine's rule for containers: never a container's
/// own address), and nothing is published or listened on beyond the loopback: a container either
/// shares the host's network, its server listening on 127.0.0.1 alone (read from the kernel's
/// socket tables), or has its one port published on 127.0.0.1 alone. `host_network`: the servers
/// listen on this host's network (the local backend's, or containers sharing it).
fn servers_are_reached_on_loopback(urls: [&str; 2], containers: &[String], host_network: bool) {
    let mut ports = Vec::new();
    for url in urls {
        let url = url::Url::parse(url).unwrap();
        assert_eq!(url.host_str(), Some("127.0.0.1"), "{url}");
        ports.push(url.port().expect("an explicit port"));
    }
    for id in containers {
        let mode = docker(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", id]);
        let published = docker(&[
            "inspect",
            "-f",
            "{{range $port, $bindings := .HostConfig.PortBindings}}{{range $bindings}}{{.HostIp}} {{end}}{{end}}",
            id,
        ]);
        assert_eq!(mode == "host", host_network, "{id}: {mode}");
        if host_network {
            assert_eq!(published, "", "{id} publishes nothing");
        } else {
            assert_eq!(
                published, "127.0.0.1",
                "{id} publishes on the loopback alone"
            );
        }
    }
    if host_network {
        for port in ports {
            assert_eq!(listening_addresses(port), ["127.0.0.1"], "port {port}");
        }
    }
}

/// The local addresses of the sockets listening on `port` in this network namespace, from the
/// kernel's tables: IPv4 dotted, IPv6 as the kernel prints it.
fn listening_addresses(port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(&state)) = (fields.get(1), fields.get(3)) else {
                continue;
            };
            let Some((address, at)) = local.split_once(':') else {
                continue;
            };
            if state != LISTEN || u16::from_str_radix(at, 16).ok() != Some(port) {
                continue;
            }
            // The kernel prints the address's bytes, in network order, as a host-order number.
            found.push(match u32::from_str_radix(address, 16) {
                Ok(v4) if address.len() == 8 => {
                    std::net::Ipv4Addr::from(v4.to_ne_bytes()).to_string()
                }
                _ => address.to_owned(),
            });
        }
    }
    found
}

/// With published ports asked for — in a process of its own, `harbor-certify infra`, since the
/// choice is read from the environment — each container publishes its one port on 127.0.0.1
/// alone (testcontainers alone would publish it on every address of the host).
#[tokio::test]
async fn docker_backend_publishes_on_the_loopback_alone_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("infra.env");
    let mut holder = Command::new(env!("CARGO_BIN_EXE_harbor-certify"))
        .args(["infra", "--backend", "docker", "--env-file"])
        .arg(&env_file)
        .env("HARBOR_DOCKER_PUBLISHED_PORTS", "1")
        .env_remove("HARBOR_DATABASE_URL")
        .env_remove("HARBOR_REDIS_URL")
        .env_remove("HARBOR_BACKEND")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("harbor-certify runs");
    // Polling for the file the holder writes once both servers answer: bounded, and a holder
    // that exits first fails the test at once.
    let started = std::time::Instant::now();
    while !env_file.exists() {
        assert!(holder.try_wait().unwrap().is_none(), "the holder exited");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "no servers in 90 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&env_file).unwrap();
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in {text}"))
            .to_owned()
    };
    let (pg, redis) = (value("HARBOR_DATABASE_URL="), value("HARBOR_REDIS_URL="));
    let listing = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=dev.harbor.owner-pid={}", holder.id()),
    ]);
    let containers: Vec<String> = listing.lines().map(str::to_owned).collect();
    assert_eq!(containers.len(), 2, "PostgreSQL and Redis: {containers:?}");
    servers_are_reached_on_loopback([&pg, &redis], &containers, false);
    drop(holder.stdin.take());
    assert!(
        holder.wait().unwrap().success(),
        "the holder stops at the end of its input"
    );
    containers_are_gone(&containers);
}

/// Under the `cgroupfs` driver each server container's processes sit at the root of the CPU
/// hierarchy with their own weight, read from the kernel's view of its first process.
fn servers_are_scheduled_outside_the_engines_group(containers: &[String]) {
    if docker(&["info", "--format", "{{.CgroupDriver}}"]) != "cgroupfs"
        || std::env::var_os("HARBOR_DOCKER_ENGINE_CGROUP").is_some()
    {
        return;
    }
    assert_eq!(containers.len(), 2, "PostgreSQL and Redis: {containers:?}");
    let cpu_group = |id: &str| {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", id]);
        let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let line = groups.lines().find(|l| {
            let controllers = l.split(':').nth(1).unwrap_or("");
            controllers.split(',').any(|c| c == "cpu")
                || (l.starts_with("0::") && !groups.contains(":cpu"))
        });
        line.and_then(|l| l.splitn(3, ':').nth(2))
            .unwrap_or("")
            .to_owned()
    };
    for id in containers {
        assert_eq!(cpu_group(id), format!("/{id}"));
        assert_eq!(
            docker(&["inspect", "-f", "{{.HostConfig.CpuShares}}", id]),
            harbor_harness::provision::SERVER_CPU_SHARES.to_string()
        );
    }
}

#[tokio::test]
async fn docker_backend_provisions_isolates_and_cleans_up() {
    exercise(BackendChoice::Docker, BackendKind::Docker).await;
}

#[tokio::test]
async fn local_backend_provisions_isolates_and_cleans_up() {
    exercise(BackendChoice::Local, BackendKind::Local).await;
}

/// A container a killed run left behind (labelled Harbor's, its owner gone) is removed when the
/// next run starts — on the engine testcontainers starts containers on, whatever the docker
/// client's own context names (testcontainers ignores `docker context`; the harness asked the
/// client, and with a context of its own would have checked, reaped and judged another engine or
/// none). Another test's run starting meanwhile may reap the orphan first: either way it is gone
/// from that engine, and `doctor` must still have chosen it.
#[tokio::test]
async fn docker_orphans_are_reaped_on_the_engine_the_containers_run_on() {
    let images = harbor_harness::provision::DockerImages::resolve(false)
        .await
        .expect("the Docker backend's images are required here");
    // An owner that cannot be alive: above the kernel's largest process id (2^22).
    let dead_pid = 4_194_305;
    let orphan = docker(&[
        "create",
        "--label",
        &format!("{}=true", harbor_harness::provision::DOCKER_LABEL),
        "--label",
        &format!("dev.harbor.owner-pid={dead_pid}"),
        &images.redis,
    ]);
    // A context that names no engine, as the docker client would take it from the environment.
    // (`DOCKER_HOST` outranks that variable for the client: with it set, client and harness
    // agree whatever the context, and `doctor` is asked without it only where it names the
    // default socket, which testcontainers finds alone.)
    let elsewhere = [("DOCKER_CONTEXT", "harbor-no-such-context")];
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let removed: &[&str] = if host.is_empty() || host == "unix:///var/run/docker.sock" {
        &["DOCKER_HOST"]
    } else {
        &[]
    };
    let mut client = Command::new("docker");
    client.arg("version").env(elsewhere[0].0, elsewhere[0].1);
    for var in removed {
        client.env_remove(var);
    }
    if removed.is_empty() {
        eprintln!("DOCKER_HOST={host}: the client's context cannot name another engine here");
    } else {
        assert!(
            !client.output().unwrap().status.success(),
            "the docker client itself cannot use that context"
        );
    }
    let (code, out) = doctor(&elsewhere, removed);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("backend:    docker"), "{out}");
    containers_are_gone(&[orphan]);
}

fn doctor(envs: &[(&str, &str)], removed: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harbor-certify"));
    cmd.arg("doctor");
    for v in ["HARBOR_DATABASE_URL", "HARBOR_REDIS_URL", "HARBOR_BACKEND"]
        .iter()
        .chain(removed)
    {
        cmd.env_remove(v);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("harbor-certify runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn auto_picks_external_then_docker_then_local_and_explains_when_nothing_works() {
    // With both URLs set, auto is external: point them at a local backend's servers.
    let mut local = Infra::provision(BackendChoice::Local)
        .await
        .expect("the local backend is required here");
    let (code, out) = doctor(
        &[
            ("HARBOR_DATABASE_URL", &local.admin_url),
            ("HARBOR_REDIS_URL", &local.redis_url),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("backend:    external"), "{out}");
    local.shutdown().await;

    // No URLs, an engine that answers: docker.
    let (code, out) = doctor(&[], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("backend:    docker"), "{out}");

    // No engine: local.
    let no_engine = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    let (code, out) = doctor(&no_engine, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("backend:    local"), "{out}");

    // No engine and no binaries: exit 2 naming all three fixes.
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_str().unwrap();
    let (code, out) = doctor(&[no_engine[0], ("HARBOR_LOCAL_BIN_PATHS", dir)], &[]);
    assert_eq!(code, 2, "{out}");
    for fix in [
        "HARBOR_DATABASE_URL",
        "Docker engine",
        "offline-images.sh",
        "redis-server",
    ] {
        assert!(out.contains(fix), "the message names {fix}: {out}");
    }
}
