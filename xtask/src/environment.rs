//! Making the machine able to serve: Docker answering, the images there, the local backend's
//! binaries, the packages installed when we may (else the exact command, and exit 2).

use super::*;

pub(crate) fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub(crate) fn have(binary: &str) -> bool {
    quiet(Command::new("sh").args(["-c", &format!("command -v {binary}")]))
}

pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Installs Debian packages when we may; otherwise says exactly what to run.
pub(crate) fn install(packages: &[&str]) -> Result<()> {
    let command = format!(
        "apt-get update && apt-get install -y {}",
        packages.join(" ")
    );
    if !(is_root() && have("apt-get")) {
        bail!("missing {}; run as root: {command}", packages.join(", "));
    }
    eprintln!("xtask:   installing {}", packages.join(" "));
    let ok = Command::new("sh")
        .args(["-c", &format!("apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q {} >/dev/null", packages.join(" "))])
        .status()
        .context("running apt-get")?
        .success();
    if !ok {
        bail!("`{command}` failed");
    }
    Ok(())
}

/// Whether the engine the harness uses answers: the `default` context (`DOCKER_HOST`, else the
/// default socket) is where testcontainers looks, whatever context the client has selected.
pub(crate) fn docker_answers() -> bool {
    quiet(Command::new("docker").args([
        "--context",
        "default",
        "version",
        "--format",
        "{{.Server.Version}}",
    ]))
}

/// Where dockerd and the containerd it starts record their process ids, each with the daemon's
/// name as `/proc/PID/comm` shows it. Both files outlive a machine's processes on a reused
/// machine, and dockerd trusts them: if the recorded id now belongs to some other process, it
/// waits for a containerd that is not there and gives up.
const DOCKER_PID_FILES: [(&str, &str); 2] = [
    ("/var/run/docker.pid", "dockerd"),
    ("/var/run/docker/containerd/containerd.pid", "containerd"),
];

/// How long a starting dockerd may take to answer. It answers in seconds; containerd's own start
/// gives up after about 15.
const DOCKERD_START: Duration = Duration::from_secs(90);

pub(crate) fn ensure_docker() -> Result<()> {
    if docker_answers() {
        return Ok(());
    }
    if !have("dockerd") {
        install(&["docker.io"])?;
    }
    remove_stale_pid_files();
    let log_path = Path::new("/var/log/harbor-dockerd.log");
    let (log, log_path) = match std::fs::File::create(log_path) {
        Ok(file) => (file, log_path.to_path_buf()),
        Err(_) => {
            let path = std::env::temp_dir().join("harbor-dockerd.log");
            (
                std::fs::File::create(&path).context("creating the dockerd log")?,
                path,
            )
        }
    };
    eprintln!("xtask:   starting dockerd (log: {})", log_path.display());
    let mut dockerd = Command::new("dockerd")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting dockerd")?;
    let started = Instant::now();
    while started.elapsed() < DOCKERD_START {
        if docker_answers() {
            return Ok(());
        }
        if let Some(status) = dockerd.try_wait()? {
            bail!(
                "dockerd exited ({status}) before answering; the end of {}:\n{}",
                log_path.display(),
                log_tail(&log_path)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "dockerd did not answer within {} s; the end of {}:\n{}",
        DOCKERD_START.as_secs(),
        log_path.display(),
        log_tail(&log_path)
    )
}

/// Removes a pid file whose process is gone or is not the daemon that wrote it, saying which.
fn remove_stale_pid_files() {
    for (file, daemon) in DOCKER_PID_FILES {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let pid = text.trim();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        // Only a process that is gone or is another program makes the file stale: a `comm` we
        // may not read (a `hidepid` mount) says nothing, and the file stays.
        let command = match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            Ok(c) => Some(c.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(_) => continue,
        };
        if command.as_deref() == Some(daemon) {
            continue;
        }
        let now = match &command {
            Some(other) => format!("now `{other}`"),
            None => "gone".to_owned(),
        };
        match std::fs::remove_file(file) {
            Ok(()) => eprintln!("xtask:   removed the stale {file} (process {pid} is {now})"),
            Err(e) => eprintln!("xtask:   could not remove the stale {file}: {e}"),
        }
    }
}

/// The last lines of a log, indented, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(15);
    lines[start..].iter().map(|l| format!("  {l}\n")).collect()
}

pub(crate) fn ensure_images() -> Result<()> {
    let run = || -> Result<bool> {
        Ok(Command::new("bash")
            .arg(root().join("scripts/offline-images.sh"))
            .status()
            .context("running offline-images.sh")?
            .success())
    };
    if run()? {
        return Ok(());
    }
    // The script exits 2 when it has to build and debootstrap is missing: install it, once.
    if !have("debootstrap") {
        install(&["debootstrap"])?;
        if run()? {
            return Ok(());
        }
    }
    bail!("scripts/offline-images.sh failed")
}

pub(crate) fn ensure_local_binaries() -> Result<()> {
    let postgres = have("initdb") || Path::new("/usr/lib/postgresql").exists();
    let mut missing = Vec::new();
    if !postgres {
        missing.push("postgresql");
    }
    if !have("redis-server") {
        missing.push("redis-server");
    }
    // The report tests open report.html in a real headless browser.
    if !have("chromium") {
        missing.push("chromium");
    }
    if missing.is_empty() {
        return Ok(());
    }
    install(&missing)
}

/// Makes the machine able to serve both backends the suite exercises.
pub(crate) fn ensure_environment() -> Result<()> {
    phase("docker engine", ensure_docker)?;
    phase("container images", ensure_images)?;
    phase("local backend binaries and chromium", ensure_local_binaries)?;
    phase(
        "node-oidc-provider for the interop test (npm, pinned)",
        interop::ensure_oidc_provider,
    )?;
    Ok(())
}
