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
    servers_are_reached_on_loopback(&infra, &footprint.containers);
    if expected == BackendKind::Docker {
        servers_are_scheduled_outside_the_engines_group(&footprint.containers);
    }

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
    for id in &footprint.containers {
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
        BackendKind::Docker => assert_eq!(footprint.containers.len(), 2),
        BackendKind::Local => assert!(footprint.pids.len() == 2 && footprint.dir.is_some()),
        BackendKind::External => {}
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The harness sends to 127.0.0.1 only (this machine's rule for containers: never a container's
/// own address), and no server is reachable from beyond the host: a container either shares the
/// host's network (its server listens on the loopback) or has its one port published on
/// 127.0.0.1 alone. With a rootful engine on this Linux host, unless published ports are asked
/// for, the first.
fn servers_are_reached_on_loopback(infra: &Infra, containers: &[String]) {
    for url in [&infra.admin_url, &infra.redis_url] {
        let host = url::Url::parse(url).unwrap().host_str().map(str::to_owned);
        assert_eq!(host.as_deref(), Some("127.0.0.1"), "{url}");
    }
    if containers.is_empty() {
        return;
    }
    let engine = docker(&[
        "info",
        "--format",
        "{{.OperatingSystem}}|{{.SecurityOptions}}",
    ]);
    let endpoint = docker(&[
        "context",
        "inspect",
        "--format",
        "{{.Endpoints.docker.Host}}",
    ]);
    let host_network_expected = cfg!(target_os = "linux")
        && endpoint.starts_with("unix://")
        && !engine.contains("Docker Desktop")
        && !engine.contains("rootless")
        && std::env::var_os("HARBOR_DOCKER_PUBLISHED_PORTS").is_none();
    for id in containers {
        let mode = docker(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", id]);
        let published = docker(&[
            "inspect",
            "-f",
            "{{range $port, $bindings := .HostConfig.PortBindings}}{{range $bindings}}{{.HostIp}} {{end}}{{end}}",
            id,
        ]);
        assert_eq!(mode == "host", host_network_expected, "{id}: {mode}");
        if mode == "host" {
            assert_eq!(published, "", "{id} publishes nothing");
        } else {
            assert_eq!(
                published, "127.0.0.1",
                "{id} publishes on the loopback alone"
            );
        }
    }
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
