//! A replica that is a child process: started from a target profile's lifecycle command with an
//! environment the harness computed, killed with SIGKILL for a crash, stopped with SIGTERM, and
//! started again on the same port. Its output goes to a log file whose tail every start-up error
//! shows.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// How to start one replica process. Its `Debug` names the environment's variables, never their
/// values (database passwords, client secrets, token keys).
#[derive(Clone)]
pub struct ProcessCommand {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// The environment it is given (on top of a minimal inherited one: `PATH`, `HOME`, `LANG`).
    pub env: Vec<(String, String)>,
    /// Variables of the harness's environment it inherits besides those.
    pub inherit: Vec<String>,
    /// The directory it starts in.
    pub cwd: PathBuf,
    /// Where its standard output and error go (appended across restarts).
    pub log: PathBuf,
    /// Its base URL (`http://127.0.0.1:PORT`, the port the harness chose).
    pub base_url: String,
    /// The path answering 200 once it serves.
    pub ready_path: String,
    /// How long it may take to answer there.
    pub ready_timeout: Duration,
    /// Its port, held while any copy of the command lives and handed out again after (`None`:
    /// the caller holds it): a run of many scenarios would otherwise use up the range.
    pub lease: Option<std::sync::Arc<PortLease>>,
}

impl std::fmt::Debug for ProcessCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCommand")
            .field("argv", &self.argv)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("inherit", &self.inherit)
            .field("cwd", &self.cwd)
            .field("log", &self.log)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Variables a replica inherits from the harness, so interpreters and tool chains are found;
/// nothing else leaks in (the harness's own `HARBOR_*` and database URLs stay out).
const INHERITED: [&str; 5] = ["PATH", "HOME", "LANG", "VIRTUAL_ENV", "TMPDIR"];

impl ProcessCommand {
    /// Starts it and waits until it answers its readiness path.
    pub async fn start(&self) -> Result<Child, String> {
        let (program, args) = self
            .argv
            .split_first()
            .ok_or("the lifecycle command is empty")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("the replica's log {}: {e}", self.log.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("the replica's log: {e}"))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(&self.cwd)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own process group: a crash kills whatever the command started (a shell that
            // does not `exec`, a server's workers), not only the command itself.
            .process_group(0)
            .kill_on_drop(true);
        for name in INHERITED
            .iter()
            .copied()
            .chain(self.inherit.iter().map(String::as_str))
        {
            if let Ok(v) = std::env::var(name) {
                command.env(name, v);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn().map_err(|e| {
            format!(
                "starting {program} (in {}): {e}{}",
                self.cwd.display(),
                if e.kind() == std::io::ErrorKind::NotFound {
                    " — is it built / installed?"
                } else {
                    ""
                }
            )
        })?;
        // Taken now: once the command's exit is reaped (it may exit during start-up), its id is
        // gone while what it started may still run in its group.
        let pgid = child.id();
        if let Some(pid) = pgid {
            live_groups().insert(pid as i32);
        }
        match self.until_ready(&mut child).await {
            Ok(()) => Ok(child),
            Err(e) => {
                // The whole group: a start script that does not `exec`, or a server that forked
                // workers, would otherwise keep running (and holding the port) after the error.
                signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.kill().await;
                Err(format!("{e}\n{}", self.log_tail()))
            }
        }
    }

    /// Polls the readiness path; fails when the process exits or the bound passes.
    async fn until_ready(&self, child: &mut Child) -> Result<(), String> {
        let http = crate::client::http_builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("{}{}", self.base_url, self.ready_path);
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < self.ready_timeout {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the replica exited during start-up ({status}) before {} answered",
                    self.ready_path
                ));
            }
            match http.get(&url).send().await {
                Ok(a) if a.status().is_success() => return Ok(()),
                Ok(a) => last = format!("{} answered {}", self.ready_path, a.status()),
                Err(e) if e.is_connect() => last = "nothing listens on its port yet".into(),
                Err(e) => last = format!("{}: {e}", self.ready_path),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "the replica was not ready within {:?} (last: {last})",
            self.ready_timeout
        ))
    }

    /// The last lines of its log, for an error.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(20)..];
        format!(
            "last lines of {}:\n{}",
            self.log.display(),
            if tail.is_empty() {
                "  (empty)".to_owned()
            } else {
                tail.iter()
                    .map(|l| format!("  | {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        )
    }
}

/// Sends `signal` to the process group `pgid` (a replica's pid: each leads its own group). Taken
/// from the child before anything waits for it: once its exit is reaped, `Child::id` is `None`,
/// while what the command started may still run in the group.
pub(super) fn signal_group(pgid: Option<u32>, signal: nix::sys::signal::Signal) {
    if let Some(pid) = pgid {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal);
        if signal == nix::sys::signal::Signal::SIGKILL {
            live_groups().remove(&(pid as i32));
        }
    }
}

/// Kills the child's whole process group without waiting: a replica dropped without a stop (an
/// error after it started). `kill_on_drop` alone would kill only the command itself.
pub fn kill_group_now(child: &Child) {
    signal_group(child.id(), nix::sys::signal::Signal::SIGKILL);
}

/// The process groups of the replicas started and not yet killed: each replica has its own
/// group (so a crash takes everything it started), which also keeps it out of the terminal's
/// Ctrl-C — [`kill_replicas_on_interrupt`] forwards it.
fn live_groups() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<i32>> {
    static LIVE: std::sync::Mutex<std::collections::BTreeSet<i32>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Kills the process group of every replica started and not yet killed, without waiting: what an
/// interrupt leaves behind otherwise.
pub fn kill_live_groups() {
    for pgid in std::mem::take(&mut *live_groups()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// On SIGINT or SIGTERM, kills every replica's process group and exits (130): a run stopped
/// from the terminal or by a CI timeout leaves no replica behind. Installed once per process.
pub fn kill_replicas_on_interrupt() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        tokio::spawn(async {
            harbor_service::telemetry::shutdown_signal().await;
            kill_live_groups();
            eprintln!("harbor-certify: interrupted; the target's replicas were killed");
            std::process::exit(130);
        });
    });
}

/// Kills the child's whole process group with SIGKILL and reaps the child: a crash.
pub async fn kill(mut child: Child) -> Result<(), String> {
    signal_group(child.id(), nix::sys::signal::Signal::SIGKILL);
    child
        .kill()
        .await
        .map_err(|e| format!("killing the replica: {e}"))
}

/// Sends SIGTERM to the child's process group and waits for the exit within `grace`; SIGKILL
/// to the group after it. A replica that had already exited by itself is a failure, with its
/// exit status and the tail of `command`'s log: whatever it answered before it died, the run
/// did not go as it appeared to.
pub async fn terminate(
    mut child: Child,
    grace: Duration,
    command: &ProcessCommand,
) -> Result<(), String> {
    let pgid = child.id();
    if let Ok(Some(status)) = child.try_wait() {
        signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        return Err(format!(
            "the replica had exited by itself ({status}) before it was told to stop\n{}",
            command.log_tail()
        ));
    }
    signal_group(pgid, nix::sys::signal::Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(_)) => {
            // Whatever else the group still runs goes with it.
            signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
            Ok(())
        }
        Ok(Err(e)) => Err(format!("waiting for the replica to exit: {e}")),
        Err(_) => {
            let _ = kill(child).await;
            Err(format!(
                "the replica did not exit within {grace:?} of SIGTERM (killed)"
            ))
        }
    }
}

/// The ports this process has handed out and not taken back: two replicas starting at once
/// (parallel scenarios) cannot both find one port free.
static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A free TCP port on the loopback interface, for a replica to listen on: below Linux's
/// ephemeral range (32768 and up), so the outgoing connections of this machine — which take
/// ephemeral ports — cannot take it between this check and the replica's bind, nor while the
/// replica is stopped and about to start again on it. Not handed out again while a [`PortLease`]
/// holds it (for ever, for a port taken without one).
pub fn free_port() -> Result<u16, String> {
    let mut given = GIVEN.lock().map_err(|_| "the port table is poisoned")?;
    for _ in 0..200 {
        let port = 20_000 + (rand::random::<u16>() % 12_000);
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    Err("finding a free port: none of 200 tried below 32000 was free".into())
}

/// A [`free_port`] held for as long as a replica lives — in-process, or a process through every
/// copy of its command —, and handed out again once it is dropped: a run that starts a fresh
/// service for every case (the state machine, a long catalogue) would otherwise use up the
/// range.
#[derive(Debug)]
pub struct PortLease(u16);

impl PortLease {
    /// Takes a free port.
    pub fn take() -> Result<Self, String> {
        free_port().map(Self)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.0
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut given) = GIVEN.lock() {
            given.remove(&self.0);
        }
    }
}

/// The command that starts replica `replica` of `profile`'s target, configured as `config` (its
/// URLs already through its fault proxies) on `env`: its port chosen, its files written under
/// `dir`, its environment rendered.
pub fn command_for(
    profile: &crate::target::profile::Profile,
    replica: usize,
    config: &harbor_service::config::Config,
    env: &crate::provision::IsolatedEnv,
    dir: &std::path::Path,
) -> Result<ProcessCommand, String> {
    use crate::target::profile::{template, values, FileTemplate};
    let lifecycle = &profile.lifecycle;
    let lease = PortLease::take()?;
    let port = lease.port();
    let own = dir.join(format!("replica-{replica}"));
    std::fs::create_dir_all(&own).map_err(|e| format!("{}: {e}", own.display()))?;
    let files: std::collections::BTreeMap<String, PathBuf> = lifecycle
        .files
        .iter()
        .map(|(name, _)| (name.clone(), own.join(name)))
        .collect();
    let values = values::of_replica(
        replica,
        port,
        config,
        &env.database_url,
        profile.mode.as_deref(),
        &files,
    );
    for (name, file) in &lifecycle.files {
        let text = match file {
            FileTemplate::Text(t) => t.render(&values, &template::verbatim)?,
            FileTemplate::Json(v) => {
                let rendered = render_json(v, &values)?;
                serde_json::to_string_pretty(&rendered).map_err(|e| e.to_string())?
            }
        };
        // The files can hold secrets (client secrets, keys): readable by this user only.
        crate::secret_file::write_secret_file(&files[name], text.as_bytes())
            .map_err(|e| format!("lifecycle.files.{name}: {e}"))?;
    }
    let mut rendered = Vec::new();
    for (name, t) in &lifecycle.env {
        rendered.push((name.clone(), t.render(&values, &template::verbatim)?));
    }
    let cwd = lifecycle
        .cwd
        .canonicalize()
        .map_err(|e| format!("the profile's directory {}: {e}", lifecycle.cwd.display()))?;
    let mut argv = lifecycle.command.clone();
    // A relative program path is the profile directory's (std leaves it platform-defined).
    if argv[0].contains('/') && !std::path::Path::new(&argv[0]).is_absolute() {
        argv[0] = cwd.join(&argv[0]).display().to_string();
    }
    Ok(ProcessCommand {
        argv,
        env: rendered,
        inherit: lifecycle.inherit.clone(),
        cwd,
        log: own.join("output.log"),
        base_url: format!("http://127.0.0.1:{port}"),
        ready_path: profile.readiness.clone(),
        ready_timeout: lifecycle.ready_timeout,
        lease: Some(std::sync::Arc::new(lease)),
    })
}

/// `v` with every string leaf rendered.
fn render_json(
    v: &serde_json::Value,
    values: &std::collections::BTreeMap<String, String>,
) -> Result<serde_json::Value, String> {
    use crate::target::profile::template::{verbatim, Template};
    use serde_json::Value;
    Ok(match v {
        Value::String(s) => Value::String(Template::parse(s)?.render(values, &verbatim)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_json(x, values))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), render_json(x, values)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
