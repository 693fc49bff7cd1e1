//! `harbor-certify` built for the run, and the servers it holds for the run (`infra`, `serve`),
//! stopped on drop.

use super::*;

pub(crate) fn build_certify() -> Result<PathBuf> {
    let ok = cargo()
        .current_dir(root())
        .args([
            "build",
            "--quiet",
            "-p",
            "harbor-harness",
            "--bin",
            "harbor-certify",
            // The reference service as a process: what targets/reference/target.toml starts.
            "-p",
            "harbor-service",
            "--bin",
            "harbor-service",
        ])
        .status()
        .context("running cargo build")?
        .success();
    if !ok {
        bail!("building harbor-certify and harbor-service failed");
    }
    Ok(target_dir().join("debug/harbor-certify"))
}

/// The servers held for the run by `harbor-certify infra`; stopped on drop.
pub(crate) struct HeldInfra {
    /// The `harbor-certify` process.
    pub(crate) child: Child,
    /// Held open for the run: if xtask dies, the pipe closes and `infra` stops by itself.
    stdin: Option<std::process::ChildStdin>,
    /// What its env file says (the servers' addresses).
    pub(crate) env: Vec<(String, String)>,
}

impl Drop for HeldInfra {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

pub(crate) fn hold_infra(certify: &Path) -> Result<HeldInfra> {
    hold(certify, &["infra"], &[])
}

/// Starts `harbor-certify ARGS --env-file F` (`infra` or `serve`), holding its standard input, and
/// waits for the env file it writes once ready.
pub(crate) fn hold(certify: &Path, args: &[&str], env: &[(String, String)]) -> Result<HeldInfra> {
    let env_file = target_dir().join(format!("harbor-{}-{}.env", args[0], std::process::id()));
    let _ = std::fs::remove_file(&env_file);
    let mut child = Command::new(certify)
        .current_dir(root())
        .args(args)
        .arg("--env-file")
        .arg(&env_file)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting harbor-certify {}", args[0]))?;
    let stdin = child.stdin.take();
    let mut held = HeldInfra {
        child,
        stdin,
        env: Vec::new(),
    };
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&env_file) {
            held.env = text
                .lines()
                .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                .collect();
            return Ok(held);
        }
        if let Some(status) = held.child.try_wait()? {
            bail!(
                "harbor-certify {} exited with {status} before it was ready",
                args[0]
            );
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!("the servers were not ready within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
