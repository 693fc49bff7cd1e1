//! The local backend: throwaway `postgres` and `redis-server` processes on free ports, in a
//! temporary directory. As root, PostgreSQL runs as the unprivileged `postgres` user (it refuses
//! root). Everything is removed on drop; a directory whose owner process is gone (a killed run) is
//! removed at the next start, its servers stopped first.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ProvisionError;

const DIR_PREFIX: &str = "harbor-local-";

/// Where the server binaries are.
#[derive(Clone, Debug)]
pub struct LocalBinaries {
    /// Directory with `initdb` and `postgres`.
    pub postgres_bin: PathBuf,
    /// The `redis-server` binary.
    pub redis_server: PathBuf,
}

/// Directories to search: `HARBOR_LOCAL_BIN_PATHS` when set (and then nothing else), else PATH.
fn search_dirs() -> (Vec<PathBuf>, bool) {
    match std::env::var_os("HARBOR_LOCAL_BIN_PATHS") {
        Some(dirs) => (std::env::split_paths(&dirs).collect(), false),
        None => (
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
            true,
        ),
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    search_dirs()
        .0
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl LocalBinaries {
    /// Finds the binaries on PATH or in the usual install paths; with `HARBOR_LOCAL_BIN_PATHS`
    /// set, only in the directories it lists.
    pub fn find() -> Result<Self, String> {
        let usual_paths = search_dirs().1;
        let postgres_bin = on_path("initdb")
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|d| d.join("postgres").is_file())
            .or_else(|| {
                if !usual_paths {
                    return None;
                }
                let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .ok()?
                    .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
                    .collect();
                // Numerically: 9.6 < 13 < 16.
                let major = |d: &PathBuf| -> u32 {
                    d.parent()
                        .and_then(|v| v.file_name())
                        .and_then(|v| v.to_str())
                        .and_then(|v| v.split('.').next())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                versions.sort_by_key(major);
                versions.pop()
            })
            .ok_or("initdb/postgres not found on PATH or under /usr/lib/postgresql/*/bin")?;
        let redis_server = on_path("redis-server")
            .or_else(|| {
                if !usual_paths {
                    return None;
                }
                [
                    "/usr/bin/redis-server",
                    "/usr/local/bin/redis-server",
                    "/usr/sbin/redis-server",
                ]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
            })
            .ok_or("redis-server not found on PATH or in /usr/bin, /usr/local/bin, /usr/sbin")?;
        Ok(Self {
            postgres_bin,
            redis_server,
        })
    }
}

/// The running servers of one run.
pub(super) struct LocalServers {
    pub(super) admin_url: String,
    pub(super) redis_url: String,
    /// The same servers through their sockets, in the run's directory.
    pub(super) sockets: Option<super::SocketUrls>,
    dir: Option<tempfile::TempDir>,
    children: Vec<Child>,
}

fn free_port() -> Result<u16, ProvisionError> {
    super::free_ports::<1>()
        .map(|[port]| port)
        .map_err(|e| ProvisionError::Local(e.to_string()))
}

/// The uid and gid of the `postgres` user, when running as root.
fn postgres_user() -> Result<Option<(u32, u32)>, ProvisionError> {
    let me = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|r| r.split_whitespace().next().unwrap_or("").to_owned())
            })
        });
    if me.as_deref() != Some("0") {
        return Ok(None);
    }
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| ProvisionError::Local(e.to_string()))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres"))
                .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
        })
        .map(Some)
        .ok_or_else(|| {
            ProvisionError::Local(
                "running as root and there is no `postgres` user to run PostgreSQL as".into(),
            )
        })
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_recursive(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Where server directories go: memory-backed `/dev/shm` when there is one (the data is thrown
/// away anyway, and cloning a database there is several times faster than on disk), else the
/// temporary directory.
fn base_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let writable = shm.is_dir()
        && std::fs::metadata(shm)
            .map(|m| !m.permissions().readonly())
            .unwrap_or(false);
    if writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Stops the servers of directories whose owner process is gone, then removes the directories.
pub(super) fn reap_orphans() -> usize {
    let mut removed = 0;
    for path in super::orphaned_directories(&base_dir(), DIR_PREFIX) {
        for (pid_file, program) in [
            ("data/postmaster.pid", "postgres"),
            ("redis.pid", "redis-server"),
        ] {
            let pid = std::fs::read_to_string(path.join(pid_file))
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()));
            // Only a process that is still that server, not whatever reused its pid.
            let is_server = |pid: u32| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(program))
                    .unwrap_or(false)
            };
            if let Some(pid) = pid.filter(|p| is_server(*p)) {
                signal(pid, "-KILL");
            }
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Starts both servers.
pub(super) async fn start() -> Result<LocalServers, ProvisionError> {
    let bins = LocalBinaries::find().map_err(ProvisionError::Local)?;
    let reaped = reap_orphans();
    if reaped > 0 {
        tracing::info!(reaped, "removed local servers left behind by killed runs");
    }
    // A free port is only free until someone else takes it: the servers are started on ports
    // picked a moment earlier, so a server that exits at once (port taken) is retried on new ones.
    tokio::task::spawn_blocking(move || {
        let mut last = None;
        for _ in 0..3 {
            let mut servers = start_blocking(&bins)?;
            match servers.until_listening(Duration::from_secs(60)) {
                Ok(()) => return Ok(servers),
                Err(e) => {
                    servers.stop_in_place();
                    last = Some(e);
                }
            }
        }
        Err(last.expect("three attempts were made"))
    })
    .await
    .map_err(|e| ProvisionError::Local(e.to_string()))?
}

fn start_blocking(bins: &LocalBinaries) -> Result<LocalServers, ProvisionError> {
    let err = |what: &str, e: std::io::Error| ProvisionError::Local(format!("{what}: {e}"));
    let dir = tempfile::Builder::new()
        .prefix(DIR_PREFIX)
        .tempdir_in(base_dir())
        .map_err(|e| err("temporary directory", e))?;
    super::claim_directory(dir.path()).map_err(|e| err("owner file", e))?;
    let mut servers = LocalServers {
        admin_url: String::new(),
        redis_url: String::new(),
        sockets: None,
        dir: Some(dir),
        children: Vec::new(),
    };
    let root = servers
        .dir
        .as_ref()
        .map(|d| d.path().to_path_buf())
        .expect("set above");
    let data = root.join("data");
    let run_as = postgres_user()?;
    if let Some((uid, gid)) = run_as {
        chown_recursive(&root, uid, gid).map_err(|e| err("chown", e))?;
    }
    let as_postgres = |cmd: &mut Command| {
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid).gid(gid);
        }
    };

    let mut initdb = Command::new(bins.postgres_bin.join("initdb"));
    initdb
        .args([
            "-D",
            data.to_str().unwrap_or_default(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_postgres(&mut initdb);
    let out = initdb.output().map_err(|e| err("initdb", e))?;
    if !out.status.success() {
        return Err(ProvisionError::Local(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }

    let pg_port = free_port()?;
    let log = std::fs::File::create(root.join("postgres.log")).map_err(|e| err("log file", e))?;
    let mut postgres = Command::new(bins.postgres_bin.join("postgres"));
    postgres
        .args([
            "-D",
            data.to_str().unwrap_or_default(),
            "-p",
            &pg_port.to_string(),
            "-k",
            root.to_str().unwrap_or_default(),
        ])
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
        ])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=500"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    as_postgres(&mut postgres);
    servers
        .children
        .push(postgres.spawn().map_err(|e| err("postgres", e))?);
    servers.admin_url = format!("postgres://postgres@127.0.0.1:{pg_port}/postgres");

    let redis_port = free_port()?;
    let redis = Command::new(&bins.redis_server)
        .args([
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args([
            "--dir",
            root.to_str().unwrap_or_default(),
            "--pidfile",
            root.join("redis.pid").to_str().unwrap_or_default(),
            "--unixsocket",
            root.join("redis.sock").to_str().unwrap_or_default(),
            "--unixsocketperm",
            "700",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| err("redis-server", e))?;
    servers.children.push(redis);
    servers.redis_url = format!("redis://127.0.0.1:{redis_port}/");
    // PostgreSQL's socket is in the run's directory too (`-k`).
    servers.sockets = Some(super::SocketUrls::new(
        &root,
        pg_port,
        &root.join("redis.sock"),
    ));
    Ok(servers)
}

impl LocalServers {
    /// Polls until both servers accept TCP connections; fails at once if one of them exited (its
    /// port was taken, or it could not start), with the end of the PostgreSQL log.
    fn until_listening(&mut self, limit: Duration) -> Result<(), ProvisionError> {
        let ports: Vec<u16> = [&self.admin_url, &self.redis_url]
            .iter()
            .filter_map(|u| url::Url::parse(u).ok().and_then(|u| u.port()))
            .collect();
        let started = Instant::now();
        while started.elapsed() < limit {
            for child in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = self
                        .dir
                        .as_ref()
                        .and_then(|d| std::fs::read_to_string(d.path().join("postgres.log")).ok())
                        .unwrap_or_default();
                    let tail: String = log.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                    return Err(ProvisionError::Local(format!(
                        "a server exited at start ({status}): {tail}"
                    )));
                }
            }
            let listening = ports
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if listening {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(ProvisionError::Local(format!(
            "the servers did not listen within {limit:?}"
        )))
    }

    /// The server processes and the directory.
    pub(super) fn footprint(&self) -> super::Footprint {
        super::Footprint {
            containers: Vec::new(),
            pids: self.children.iter().map(Child::id).collect(),
            dir: self.dir.as_ref().map(|d| d.path().to_path_buf()),
        }
    }

    /// Stops both servers (fast shutdown, then kill) and removes the directory.
    pub(super) fn stop(mut self) {
        self.stop_in_place();
    }

    fn stop_in_place(&mut self) {
        for child in &mut self.children {
            // SIGINT is PostgreSQL's fast shutdown; Redis exits on it too.
            signal(child.id(), "-INT");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        self.children.clear();
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

impl Drop for LocalServers {
    fn drop(&mut self) {
        self.stop_in_place();
    }
}
