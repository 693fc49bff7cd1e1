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

pub(crate) fn docker_answers() -> bool {
    quiet(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]))
}

pub(crate) fn ensure_docker() -> Result<()> {
    if docker_answers() {
        return Ok(());
    }
    if !have("dockerd") {
        install(&["docker.io"])?;
    }
    eprintln!("xtask:   starting dockerd (log: /var/log/harbor-dockerd.log)");
    let log = std::fs::File::create("/var/log/harbor-dockerd.log")
        .or_else(|_| std::fs::File::create(std::env::temp_dir().join("harbor-dockerd.log")))
        .context("creating the dockerd log")?;
    Command::new("dockerd")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting dockerd")?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if docker_answers() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("dockerd did not answer within 60 s; see /var/log/harbor-dockerd.log")
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
