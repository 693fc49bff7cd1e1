//! One replica of a started target: in this process on its own runtime (so a crash loses what a
//! killed process loses), or a child process started from a profile's lifecycle command; its sync
//! points and its fault proxies.

use std::net::SocketAddr;
use std::time::Duration;

use harbor_service::config::Config;
use harbor_service::{Application, Hooks};
use harbor_syncpoint::SyncPoints;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::process::ProcessCommand;
use crate::faults::FaultProxy;
use crate::provision::ProvisionError;

/// One replica: its address, its sync points, the proxies it reaches its dependencies through,
/// and — while it runs — its own runtime, so that crashing it loses exactly what a killed process
/// loses.
pub struct Replica {
    /// `http://127.0.0.1:<port>` (kept across a restart).
    pub base_url: String,
    /// The replica's sync-point controller.
    pub sync: SyncPoints,
    /// What it reaches Redis, PostgreSQL and the provider's back channel through (`None`: started
    /// without fault proxies, straight to the servers).
    pub links: Option<Links>,
    /// The `application_name` of its pooled connections.
    pub application_name: String,
    pub(super) start: StartWith,
    pub(super) running: std::sync::Mutex<Option<Running>>,
}

/// How a replica is (re)started.
pub(super) enum StartWith {
    /// The reference service on a runtime of its own, in this process, and the port it keeps
    /// across a restart when the harness chose it.
    InProcess {
        config: Box<Config>,
        hooks: Hooks,
        /// Held, not read: the port is free for another replica only once this one is dropped.
        _port: Option<super::process::PortLease>,
    },
    /// A child process.
    Process(ProcessCommand),
    /// Nothing: a deployed target's replica runs where it was deployed.
    Deployed,
}

/// The fault proxies of one replica.
pub struct Links {
    /// To Redis.
    pub redis: FaultProxy,
    /// To PostgreSQL (request connections; migrations go direct).
    pub postgres: FaultProxy,
    /// To the fake provider's token, revocation and resource endpoints (the browser goes direct).
    pub provider: FaultProxy,
}

/// A running replica.
pub(super) enum Running {
    /// In this process.
    InProcess(InProcessRun),
    /// A child process.
    Process(tokio::process::Child),
    /// Stopping gracefully (it refuses new connections): what the stop comes to, and when it
    /// began.
    Stopping(JoinHandle<Result<(), String>>, std::time::Instant),
}

/// An in-process replica's process, as far as it matters: a runtime that owns every task, socket
/// and pooled connection of the replica.
pub(super) struct InProcessRun {
    pub(super) runtime: ReplicaRuntime,
    pub(super) shutdown: oneshot::Sender<()>,
    pub(super) task: JoinHandle<std::io::Result<()>>,
}

/// A replica's runtime, shut down without blocking however it goes: dropped with its replica, in
/// a stop that is cancelled, or on purpose (a runtime dropped the ordinary way inside async code
/// would block, and tokio refuses that with a panic).
pub(super) struct ReplicaRuntime(Option<tokio::runtime::Runtime>);

impl ReplicaRuntime {
    /// Drops every task, socket and pooled connection on it at once, as a killed process loses
    /// them.
    pub(super) fn shutdown(mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for ReplicaRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl InProcessRun {
    /// Builds the application on a runtime of its own and serves it.
    pub(super) async fn start(
        config: Config,
        hooks: Hooks,
    ) -> Result<(Self, SocketAddr), ServiceError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("harbor-replica")
            .enable_all()
            .build()
            .map_err(|e| ServiceError::Task(format!("replica runtime: {e}")))?;
        let built = runtime
            .spawn(Application::build_with(config, hooks))
            .await
            .map_err(|e| ServiceError::Task(e.to_string()));
        let app = match built {
            Ok(Ok(app)) => app,
            Ok(Err(e)) => {
                runtime.shutdown_background();
                return Err(e.into());
            }
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let addr = app.local_addr();
        let (shutdown, rx) = oneshot::channel();
        let task = runtime.spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        let runtime = ReplicaRuntime(Some(runtime));
        Ok((
            InProcessRun {
                runtime,
                shutdown,
                task,
            },
            addr,
        ))
    }
}

impl Replica {
    /// Whether it runs (not crashed, not stopping or stopped).
    pub fn is_running(&self) -> bool {
        self.running
            .lock()
            .map(|r| matches!(*r, Some(Running::InProcess(_) | Running::Process(_))))
            .unwrap_or(false)
    }

    /// Kills it: every task of its runtime is dropped where it stands — parked requests, their
    /// open transactions, pooled connections — and the kernel closes its sockets. Returns once
    /// its address refuses connections.
    pub(super) async fn crash(&self) -> Result<(), String> {
        match self.take_running().ok_or("the replica is not running")? {
            Running::InProcess(run) => run.runtime.shutdown(),
            // SIGKILL to its process group, and the exit reaped — unless it had already exited by
            // itself: a crash of a replica that was not running proves nothing, and its exit and
            // its log say what happened.
            Running::Process(mut child) => {
                // Its group's id, read before a wait reaps the child and forgets it: what the
                // command started (a daemonised server) may still run in the group.
                let pgid = child.id();
                if let Ok(Some(status)) = child.try_wait() {
                    super::process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
                    let tail = self
                        .process_command()
                        .map(|c| c.log_tail())
                        .unwrap_or_default();
                    return Err(format!(
                        "the replica had exited by itself ({status}) before it was crashed\n{tail}"
                    ));
                }
                super::process::kill(child).await?
            }
            stopping @ Running::Stopping(..) => {
                self.put_running(stopping)?;
                return Err("the replica is stopping".into());
            }
        }
        self.until_refused("killed").await
    }

    /// Begins a graceful stop, as SIGTERM does, and returns once the replica refuses new
    /// connections: the service then finishes its connections and the tasks its requests started
    /// (within its own shutdown bound) while the caller goes on — a request parked at a sync point
    /// can still be released into the stop — and the process ends; whatever still runs on its
    /// runtime after that is dropped. [`Self::finish_stop`] waits for the end.
    pub(super) async fn begin_stop(&self) -> Result<(), String> {
        let bound = harbor_service::app::SHUTDOWN_GRACE * 2 + Duration::from_secs(10);
        let began = std::time::Instant::now();
        // One hold of the slot from taking the running replica to putting its stop there: no
        // other step sees it empty in between.
        {
            let mut slot = self.running.lock().map_err(|_| "replica state poisoned")?;
            let stop = match slot.take() {
                None => return Err("the replica is not running".into()),
                Some(Running::InProcess(running)) => {
                    let _ = running.shutdown.send(());
                    tokio::spawn(async move {
                        let served = tokio::time::timeout(bound, running.task).await;
                        running.runtime.shutdown();
                        match served {
                            Ok(Ok(Ok(()))) => Ok(()),
                            Ok(Ok(Err(e))) => Err(format!("the replica's server failed: {e}")),
                            Ok(Err(e)) => Err(format!("the replica's server task: {e}")),
                            Err(_) => {
                                Err("the replica did not stop within its shutdown bound".into())
                            }
                        }
                    })
                }
                Some(Running::Process(child)) => {
                    let command = self.process_command()?.clone();
                    tokio::spawn(
                        async move { super::process::terminate(child, bound, &command).await },
                    )
                }
                Some(stopping @ Running::Stopping(..)) => {
                    *slot = Some(stopping);
                    return Err("the replica is already stopping".into());
                }
            };
            *slot = Some(Running::Stopping(stop, began));
        }
        // The stop has begun once nothing accepts on the address any more.
        self.until_refused("told to stop").await
    }

    /// Polls until nothing accepts a connection on the replica's address: from then on a request
    /// sent to it is refused, in every run (a crashed runtime's listener closes on the runtime's
    /// own time, a stopping server's as its accept loop ends).
    async fn until_refused(&self, what: &str) -> Result<(), String> {
        let address = self.base_url.trim_start_matches("http://").to_owned();
        let refused = async {
            while tokio::net::TcpStream::connect(&address).await.is_ok() {
                tokio::time::sleep(crate::evidence::POLL_INTERVAL).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), refused)
            .await
            .map_err(|_| format!("the replica still accepts connections 10 s after it was {what}"))
    }

    /// Waits for a stop [`Self::begin_stop`] began to end; how long the whole stop took (`None`:
    /// there was none to wait for).
    pub(super) async fn finish_stop(&self) -> Result<Option<Duration>, String> {
        let (stop, began) = {
            let mut running = self.running.lock().map_err(|_| "replica state poisoned")?;
            match running.take() {
                Some(Running::Stopping(stop, began)) => (stop, began),
                other => {
                    *running = other;
                    return Ok(None);
                }
            }
        };
        stop.await
            .map_err(|e| format!("the replica's stop: {e}"))??;
        Ok(Some(began.elapsed()))
    }

    /// Starts it again on the address it had.
    pub(super) async fn restart(&self) -> Result<(), String> {
        self.finish_stop().await?;
        if self.is_running() {
            return Err("the replica is running".into());
        }
        let running = match &self.start {
            StartWith::InProcess { config, hooks, .. } => {
                let mut config = (**config).clone();
                config.listen_addr = self
                    .base_url
                    .trim_start_matches("http://")
                    .parse()
                    .map_err(|e| format!("replica address: {e}"))?;
                let (run, _) = InProcessRun::start(config, hooks.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                Running::InProcess(run)
            }
            StartWith::Process(command) => Running::Process(command.start().await?),
            StartWith::Deployed => {
                return Err("a deployed replica is not the harness's to start".into())
            }
        };
        *self.running.lock().map_err(|_| "replica state poisoned")? = Some(running);
        Ok(())
    }

    pub(super) fn take_running(&self) -> Option<Running> {
        self.running.lock().ok().and_then(|mut r| r.take())
    }

    /// How a process replica is started (its log among the rest).
    pub(super) fn process_command(&self) -> Result<&ProcessCommand, String> {
        match &self.start {
            StartWith::Process(command) => Ok(command),
            _ => Err("the replica is not a process".into()),
        }
    }

    fn put_running(&self, running: Running) -> Result<(), String> {
        *self.running.lock().map_err(|_| "replica state poisoned")? = Some(running);
        Ok(())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        match self.take_running() {
            // Dropping a runtime may block; this must not, since it runs in async code.
            Some(Running::InProcess(run)) => run.runtime.shutdown(),
            // Its whole process group (`kill_on_drop` alone kills only the command).
            Some(Running::Process(child)) => super::process::kill_group_now(&child),
            // The stop goes on by itself, bounded; its runtime is shut down where it ends.
            Some(Running::Stopping(stop, _)) => drop(stop),
            None => {}
        }
    }
}

impl Replica {
    /// A deployed target's replica at `base_url`: nothing runs here, nothing is proxied.
    pub(super) fn deployed(base_url: &str) -> Self {
        Self {
            base_url: base_url.to_owned(),
            sync: SyncPoints::new(),
            links: None,
            application_name: String::new(),
            start: StartWith::Deployed,
            running: std::sync::Mutex::new(None),
        }
    }

    /// Whether it is a deployed target's (running where it was deployed, not here).
    pub(super) fn is_deployed(&self) -> bool {
        matches!(self.start, StartWith::Deployed)
    }

    /// What it wrote, when the harness's log capture does not hold it: a child process's output
    /// file, every start of it (`None`: in-process, its lines are in the capture; `Err`: deployed,
    /// its logs are where it runs).
    pub(super) fn own_logs(&self) -> Result<Option<String>, String> {
        match &self.start {
            StartWith::InProcess { .. } => Ok(None),
            StartWith::Process(command) => std::fs::read(&command.log)
                .map(|bytes| Some(String::from_utf8_lossy(&bytes).into_owned()))
                .map_err(|e| format!("the replica's log {}: {e}", command.log.display())),
            StartWith::Deployed => {
                Err("a deployed target's logs are where it runs, out of the harness's reach".into())
            }
        }
    }
}

/// Why the service under test could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The isolated environment could not be made or removed.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The service refused to start.
    #[error("service start-up: {0}")]
    Startup(#[from] harbor_service::app::StartupError),
    /// The harness's own pool failed.
    #[error("harness pool: {0}")]
    Pool(#[from] sqlx::Error),
    /// A replica's server task failed.
    #[error("replica task: {0}")]
    Task(String),
}
