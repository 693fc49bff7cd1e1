//! The `harbor-certify` command line, in the mini-redis shape: [`Cli`] parses once, each
//! [`Command`] is one type applied in its own file, and `bin/harbor-certify.rs` only parses,
//! builds the command's runtime ([`Cli::runtime`]), calls [`main`] and returns its exit code.
//! Exit codes: 0 certified, [`NOT_CERTIFIED`] when a scenario failed or was flaky (or a check did
//! not prove what it should), [`CANNOT_RUN`] when the harness could not run at all (no backend,
//! bad arguments, bad scenario files).
//!
//! - [`run`]: the catalogue and the report. [`mutants`]: the kill matrix. [`replay`]: a recorded
//!   schedule again, exactly. [`proptest`]: the state machine. [`explore`]: schedule exploration, [`merge`] its shards.
//! - [`serve`]: the service for people and tools. [`servers`]: `doctor` and `infra`.
//! - [`keys`]: `verify`, `keygen`, `token`. [`list`]: the catalogue's ids.

pub mod db_cost;
pub mod explore;
pub mod keys;
pub mod list;
pub mod merge;
pub mod mutants;
pub mod proptest;
pub mod replay;
pub mod run;
pub mod serve;
pub mod servers;
pub mod specs;
pub mod target;
pub mod target_start;
pub mod verdicts;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::provision::{BackendChoice, Infra};
use crate::report;
use crate::scenario::load::{self, LoadedScenario};
use crate::scenario::logs::LogCapture;

/// Exit code when a scenario failed or was flaky.
pub const NOT_CERTIFIED: u8 = 1;
/// Exit code when the harness could not run at all (no backend, bad arguments, bad scenario files).
pub const CANNOT_RUN: u8 = 2;

/// The command line.
#[derive(Parser)]
#[command(
    name = "harbor-certify",
    version,
    about = "Certify a concurrent, multi-tenant service against real PostgreSQL and Redis"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, `harbor-certify` is `harbor-certify run`.
    #[command(flatten)]
    run: run::RunArgs,
}

/// Where the catalogue comes from, what it runs on, and where the results go.
#[derive(clap::Args, Clone, Debug)]
pub struct CatalogueArgs {
    /// Which backend to provision with.
    #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
    pub backend: BackendChoice,
    /// Where run folders are written (`<DIR>/<timestamp>/`, `<DIR>/latest`).
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Where the scenario files are.
    #[arg(long, default_value = "scenarios", env = "HARBOR_SCENARIOS")]
    pub scenarios_dir: PathBuf,
    /// An Ed25519 PKCS#8 key (`harbor-certify keygen`) to sign the report's manifest with.
    #[arg(long, env = "HARBOR_REPORT_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
}

impl CatalogueArgs {
    /// The signing key, read before anything runs: a wrong path stops the command at once
    /// (printed), not after the run it would sign.
    pub fn signing_key(&self) -> Result<Option<crate::report::sign::SigningKey>, ExitCode> {
        self.signing_key
            .as_deref()
            .map(crate::report::sign::SigningKey::from_pkcs8_file)
            .transpose()
            .map_err(|e| {
                eprintln!("harbor-certify: signing key: {e}");
                ExitCode::from(CANNOT_RUN)
            })
    }
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the scenario catalogue (the default command).
    Run(Box<run::RunArgs>),
    /// Run the catalogue against the correct service and against each seeded flaw, and print the
    /// kill matrix (needs a build with `--features flaws`). Exit 0 only if the correct build passes
    /// and every flaw is caught by a scenario that names it in `catches`.
    Mutants(mutants::MutantsArgs),
    /// Explore schedules nobody wrote down: every interleaving of a workspace's operations (or
    /// PCT-random ones) on the real service, checked against invariants and the reference model.
    /// Exit 0 no violation, 1 a violation, 2 could not run.
    Explore(explore::ExploreArgs),
    /// Join the explore.json files of an exploration's shards (`explore --shard K/N`) into one.
    Merge(merge::MergeArgs),
    /// Run a recorded schedule again exactly (`reports/latest/traces/<ID>.json`, or a scenario
    /// file in its own order) and check that the trace's signature is the same.
    Replay(replay::ReplayArgs),
    /// Check a report folder: every file against SHA256SUMS, and the signature if there is one.
    Verify(keys::VerifyArgs),
    /// Write a new Ed25519 report-signing key (PKCS#8, base64) and print its public key; or, with
    /// `--service DIR`, the keys a hand-started harbor-service needs (a stand-in gateway's key and
    /// JWK set, a token encryption key, and `DIR/service.env` naming them).
    Keygen(keys::KeygenArgs),
    /// Print a bearer token (valid 24 h) for user `--sub`, signed with a gateway key from
    /// `keygen --service`.
    Token(keys::TokenArgs),
    /// Print the id and title of every scenario and spec, after checking the files.
    List(list::ListArgs),
    /// What a target offering some capabilities would get of the catalogue (`target check`).
    #[command(subcommand)]
    Target(target::TargetCommand),
    /// Provision PostgreSQL and Redis, print their versions and how long they took, clean up.
    Doctor(servers::DoctorArgs),
    /// Run the reference service for people and tools: provision PostgreSQL and Redis, start the
    /// replicas with the fake OAuth provider, seed a demo tenant (owner, member) and another
    /// tenant, print URLs, tokens and curl lines, and hold until Ctrl-C or the end of standard input.
    Serve(serve::ServeArgs),
    /// Model-based testing: proptest sequences of operations against the real service (fresh
    /// replicas per case), compared with the reference model after every step. Exit 0 when every
    /// case passed (with --kill-matrix: and every flaw the state machine can see made it fail).
    Proptest(proptest::ProptestArgs),
    /// What each kind of request costs the database — round trips, statements, transactions,
    /// connections opened — counted on the wire of one reference replica. Exit 0 once measured.
    DbCost(db_cost::DbCostArgs),
    /// Provision once and hold the servers for other processes (the test suite) until SIGINT,
    /// SIGTERM or the end of standard input; writes `HARBOR_DATABASE_URL=…` and
    /// `HARBOR_REDIS_URL=…` lines to the env file (and `HARBOR_DATABASE_SOCKET_URL=…`,
    /// `HARBOR_REDIS_SOCKET_URL=…` where the servers also listen on Unix sockets).
    Infra(servers::InfraArgs),
}

impl Cli {
    /// The runtime the command runs on. `explore` runs on this one thread: its engine, the fault
    /// proxies and the fake provider it drives wake each other many times a schedule, and on the
    /// multi-threaded runtime every such wake crossed threads (the engine on the main thread, the
    /// tasks on the workers) — 11 % of the wall time and 12 % of the host's CPU a schedule
    /// (benches/README). An in-process replica keeps its own multi-threaded runtime whatever the
    /// command's. Every other command runs on the multi-threaded runtime: the state machine blocks
    /// a worker in place while proptest drives it, and the catalogue's scenarios run side by side.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self.command {
            Some(Command::Explore(_)) => tokio::runtime::Builder::new_current_thread(),
            _ => tokio::runtime::Builder::new_multi_thread(),
        };
        builder.enable_all().build()
    }
}

/// Sets up logging and runs the command.
pub async fn main(cli: Cli) -> ExitCode {
    let command = cli.command.unwrap_or(Command::Run(Box::new(cli.run)));
    if matches!(
        command,
        Command::Run(_) | Command::Mutants(_) | Command::Replay(_)
    ) {
        // The run searches the service's logs for leaked secrets: capture them.
        if let Some(capture) = LogCapture::install() {
            LOGS.set(capture).ok();
        }
    } else {
        // The service's own warnings (sync points enabled, a test-mode key) are its operator's
        // business; only `serve` runs it for someone to operate. Colour only on a terminal.
        let default = if matches!(command, Command::Serve(_)) {
            "warn"
        } else {
            "harbor_harness=warn"
        };
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| default.into()),
            )
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init();
    }
    match command {
        Command::Run(args) => run::run(*args).await,
        Command::Mutants(args) => mutants::mutants(args).await,
        Command::Replay(args) => replay::replay(args).await,
        Command::Explore(args) => explore::explore(args).await,
        Command::Merge(args) => merge::merge(args),
        Command::List(args) => list::list(args),
        Command::Target(command) => target::target(command).await,
        Command::Verify(args) => keys::verify(args),
        Command::Keygen(args) => keys::keygen(args),
        Command::Token(args) => keys::token(args),
        Command::Doctor(args) => servers::doctor(args.backend).await,
        Command::Infra(args) => servers::infra(args.backend, args.env_file).await,
        Command::Serve(args) => serve::serve(args).await,
        Command::Proptest(args) => proptest::proptest(args).await,
        Command::DbCost(args) => db_cost::db_cost(args).await,
    }
}

/// The capture of the service's logs, installed by the commands that search them.
pub static LOGS: std::sync::OnceLock<LogCapture> = std::sync::OnceLock::new();

/// Loads and checks every scenario file under `dir`, or explains why not.
pub fn load(dir: &Path) -> Result<Vec<LoadedScenario>, ExitCode> {
    let files = load::scenario_files(dir).map_err(|e| {
        eprintln!(
            "harbor-certify: cannot read the scenario directory {}: {e}",
            dir.display()
        );
        ExitCode::from(CANNOT_RUN)
    })?;
    if files.is_empty() {
        eprintln!("harbor-certify: no *.toml scenario in {}", dir.display());
        return Err(ExitCode::from(CANNOT_RUN));
    }
    load::load_all(&files).map_err(|errors| {
        for e in &errors {
            eprintln!("harbor-certify: {e}");
        }
        eprintln!(
            "harbor-certify: {} scenario file(s) rejected; nothing was run",
            errors.len()
        );
        ExitCode::from(CANNOT_RUN)
    })
}

/// The seeded flaws named on the command line, or why they cannot be had.
pub fn parse_flaws(names: &[String]) -> Result<harbor_service::flaws::Flaws, ExitCode> {
    use harbor_service::flaws::{Flaw, Flaws};
    let mut wanted = Vec::new();
    for name in names {
        let Some(f) = Flaw::parse(name) else {
            let all: Vec<&str> = Flaw::ALL.iter().map(|f| f.name()).collect();
            eprintln!(
                "harbor-certify: unknown flaw {name:?}; the flaws are {}",
                all.join(", ")
            );
            return Err(ExitCode::from(CANNOT_RUN));
        };
        wanted.push(f);
    }
    Flaws::enable(wanted).map_err(|e| {
        eprintln!("harbor-certify: {e}; rebuild with `--features flaws`");
        ExitCode::from(CANNOT_RUN)
    })
}

/// The report's environment section.
pub fn environment_of(infra: &Infra, flaws: &[&str]) -> report::Environment {
    let mut environment = report::host_environment();
    environment.backend = infra.kind.to_string();
    environment.postgres_version = infra.postgres_version.clone();
    environment.redis_version = infra.redis_version.clone();
    environment.images = infra
        .images
        .as_ref()
        .map(|i| vec![i.postgres.to_string(), i.redis.to_string()]);
    environment.flaws = flaws.iter().map(|f| f.to_string()).collect();
    environment
}

/// A progress bar on a terminal; hidden otherwise (the per-scenario lines are printed either way).
pub fn progress_bar(len: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
            .expect("a valid template"),
    );
    bar
}

/// Provisions the servers, or explains why not.
pub async fn provision_or_explain(backend: BackendChoice) -> Result<Infra, ExitCode> {
    Infra::provision(backend).await.map_err(|e| {
        eprintln!("harbor-certify: cannot provision PostgreSQL and Redis (backend {backend}): {e}");
        ExitCode::from(CANNOT_RUN)
    })
}

/// Which target a technique certifies: the in-process reference service (the default), or the
/// service a target profile starts.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TargetArgs {
    /// A target profile (`docs/TARGET-PROFILE.md`): certify the service it starts, replica by
    /// replica, as child processes — instead of the in-process reference service.
    #[arg(long = "target", env = "HARBOR_TARGET", value_name = "PROFILE")]
    pub profile: Option<PathBuf>,
    /// The mode to start the profile's target in (one of its `target.modes`; default: the
    /// first).
    #[arg(long, requires = "profile")]
    pub target_mode: Option<String>,
    /// Drive the in-process replicas' sync points through their HTTP protocol
    /// (`docs/SYNC-POINTS-PROTOCOL.md`) instead of in memory, as for a service started elsewhere
    /// (a profile's target is always driven so).
    #[arg(long)]
    pub sync_points_over_http: bool,
}

/// What a technique needs of a profile's target before anything is provisioned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Oracles {
    /// It judges each scenario by what the target offers (the runner SKIPs what a target cannot
    /// serve, one scenario at a time).
    Any,
    /// Its oracles read the reference schema (exploration, the state machine): a target without
    /// it is refused, since they would judge tables it does not have.
    ReferenceSchema,
}

/// Loads the profile at `path` (if any) in `mode`, and checks it can be started with `flaws` and
/// judged by `oracles`; a bad one is reported naming its place (exit 2).
pub fn load_profile(
    path: Option<&Path>,
    mode: Option<&str>,
    flaws: &harbor_service::flaws::Flaws,
    oracles: Oracles,
) -> Result<Option<std::sync::Arc<crate::target::profile::Profile>>, ExitCode> {
    use crate::target::Capability;
    let Some(path) = path else {
        return Ok(None);
    };
    let refuse = |message: String| {
        eprintln!("harbor-certify: {message}");
        ExitCode::from(CANNOT_RUN)
    };
    let profile = crate::target::profile::Profile::load(path)
        .and_then(|p| match mode {
            Some(m) => p.in_mode(m),
            None => Ok(p),
        })
        .map_err(|e| refuse(format!("target profile {e}")))?;
    crate::target::started::ProfileLauncher::can_seed(&profile, flaws).map_err(refuse)?;
    if let (Oracles::ReferenceSchema, Err(why)) = (
        oracles,
        &profile.capabilities()[&Capability::ReferenceSchema],
    ) {
        return Err(refuse(format!(
            "{}: this technique's oracles read the reference schema, which the target lacks ({why})",
            profile.path.display()
        )));
    }
    Ok(Some(std::sync::Arc::new(profile)))
}

impl TargetArgs {
    /// Loads the chosen profile, if any ([`load_profile`]).
    pub fn load(
        &self,
        flaws: &harbor_service::flaws::Flaws,
        oracles: Oracles,
    ) -> Result<Option<std::sync::Arc<crate::target::profile::Profile>>, ExitCode> {
        load_profile(
            self.profile.as_deref(),
            self.target_mode.as_deref(),
            flaws,
            oracles,
        )
    }

    /// The launcher of the chosen target on `infra`, with `flaws` seeded.
    pub fn launcher<'a>(
        &self,
        infra: &'a crate::provision::Infra,
        profile: Option<&std::sync::Arc<crate::target::profile::Profile>>,
        flaws: harbor_service::flaws::Flaws,
    ) -> Box<dyn crate::target::Launcher + 'a> {
        use crate::target::started::{InProcessLauncher, ProfileLauncher};
        match profile {
            None => Box::new(
                InProcessLauncher::new(infra)
                    .with_flaws(flaws)
                    .with_sync_points_over_http(self.sync_points_over_http),
            ),
            Some(p) => Box::new(ProfileLauncher::new(infra, p.clone()).with_flaws(flaws)),
        }
    }
}

/// The target a technique certifies, chosen on the command line, on the run's servers: it makes
/// one launcher per build (the correct one, or one with seeded flaws).
pub struct ChosenTarget<'a> {
    /// The servers.
    pub infra: &'a crate::provision::Infra,
    args: TargetArgs,
    profile: Option<std::sync::Arc<crate::target::profile::Profile>>,
}

/// The target a report names, the same way in `explore.json` and in a certification run: its
/// profile's title with the profile's digest, or the in-process reference. A certificate rests only
/// on an exploration of the target it certifies.
pub fn target_identity(profile: Option<&crate::target::profile::Profile>) -> String {
    profile.map_or_else(
        || "the Harbor reference service, in-process".to_owned(),
        |p| format!("{} (profile sha256 {})", p.title(), p.digest),
    )
}

impl<'a> ChosenTarget<'a> {
    /// What reports name this target ([`target_identity`]).
    pub fn identity(&self) -> String {
        target_identity(self.profile.as_deref())
    }

    /// The target `args` chose (its profile loaded), on `infra`.
    pub fn new(
        infra: &'a crate::provision::Infra,
        args: TargetArgs,
        profile: Option<std::sync::Arc<crate::target::profile::Profile>>,
    ) -> Self {
        Self {
            infra,
            args,
            profile,
        }
    }

    /// A launcher of the target with `flaws` seeded.
    pub fn launcher(
        &self,
        flaws: harbor_service::flaws::Flaws,
    ) -> Box<dyn crate::target::Launcher + 'a> {
        self.args.launcher(self.infra, self.profile.as_ref(), flaws)
    }
}
