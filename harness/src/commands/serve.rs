//! `harbor-certify serve`: the reference service (or a profile's target) with demo tenants and
//! tokens, held for people and tools.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use super::{parse_flaws, provision_or_explain};
use crate::provision::BackendChoice;

/// What `serve` starts.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Which backend to provision with.
    #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
    pub backend: BackendChoice,
    /// Replicas sharing the database and Redis.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Once the service is ready, write HARBOR_BASE_URL, HARBOR_WORKSPACE_ID, HARBOR_OWNER_TOKEN,
    /// HARBOR_MEMBER_TOKEN, HARBOR_OTHER_TENANT_TOKEN (and more) to this file.
    /// Without it the file goes to the temporary directory (mode 0600, removed at the stop) and
    /// its path is printed: the owner tokens are not printed unless `--print-env` asks.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Print the environment (owner tokens included) to standard output instead of writing it to
    /// a file: for a terminal, never for a CI log.
    #[arg(long, conflicts_with = "env_file")]
    pub print_env: bool,
    /// Honour the harness's sync points and actor tags (off: requests are never parked).
    #[arg(long)]
    pub sync_points: bool,
    /// Start the service with this seeded flaw on (repeatable; needs `--features flaws`).
    #[arg(long = "flaw")]
    pub flaws: Vec<String>,
    /// Also make tenants for a load generator in another process and write them (URLs, database
    /// URLs, workspaces, owner tokens) to this JSON file (`harbor-load --external FILE`).
    #[arg(long)]
    pub bench_file: Option<PathBuf>,
    /// With `--bench-file`: connected workspaces for the activation load.
    #[arg(long, default_value_t = 100)]
    pub bench_activation_tenants: usize,
    /// With `--bench-file`: unconnected workspaces for the OAuth flow load (one per goose user).
    #[arg(long, default_value_t = 200)]
    pub bench_flow_tenants: usize,
    /// Raise the per-tenant limit of the OAuth routes tenfold (600/min, burst 100), as
    /// `harbor-load` does: one user looping as fast as it can is load, not an attack.
    #[arg(long)]
    pub load_limits: bool,
    /// Most pooled PostgreSQL connections per replica.
    #[arg(long, default_value_t = 20)]
    pub database_max_connections: u32,
    /// Serve the target a profile starts (`docs/TARGET-PROFILE.md`) instead of the in-process
    /// reference: its replicas as child processes, the demo tenants made by its fixtures, the
    /// tokens with its claims (for a contract run or a look at it by hand).
    #[arg(long = "target", value_name = "PROFILE", conflicts_with = "bench_file")]
    pub profile: Option<PathBuf>,
    /// The mode to start the profile's target in.
    #[arg(long, requires = "profile")]
    pub target_mode: Option<String>,
}

/// Starts the service and holds it.
pub async fn serve(args: ServeArgs) -> ExitCode {
    use crate::target::started::ServiceOptions;
    let flaws = match parse_flaws(&args.flaws) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let profile = match super::load_profile(
        args.profile.as_deref(),
        args.target_mode.as_deref(),
        &flaws,
        super::Oracles::Any,
    ) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if args.replicas == 0 || args.replicas > 8 {
        eprintln!("harbor-certify: --replicas is 1 to 8");
        return ExitCode::from(super::CANNOT_RUN);
    }
    let started = Instant::now();
    let mut infra = match provision_or_explain(args.backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    let mut options = ServiceOptions {
        replicas: args.replicas,
        sync_points: args.sync_points,
        flaws,
        database_max_connections: args.database_max_connections,
        // Straight to the servers: nothing injects faults into a served instance.
        fault_proxies: false,
        // A bench reads how long each activation held the workspace lock.
        server_timing: args.bench_file.is_some(),
        ..ServiceOptions::default()
    };
    if args.load_limits {
        options.rate_limits.per_tenant = harbor_service::ratelimit::Quota {
            per_minute: 600,
            burst: 100,
        };
    }
    // Start-up is where an interrupt would leave replicas behind (their own process groups) and
    // the servers up: it is raced against SIGINT/SIGTERM here, and the installed handler that
    // `run` uses (which exits at once) would also cut the graceful stop below.
    let written = std::cell::RefCell::new(Vec::new());
    let up = tokio::select! {
        up = start_up(&args, &infra, options, profile.as_ref(), started, &written) => Some(up),
        _ = harbor_service::telemetry::shutdown_signal() => None,
    };
    let (sut, env_file) = match up {
        Some(Ok(up)) => up,
        Some(Err(code)) => {
            infra.shutdown().await;
            return code;
        }
        None => {
            // The start-up's futures are dropped: whatever replica they had started is killed
            // with its whole group here, its database and Redis keys dropped (servers that
            // outlive the run keep them otherwise), the servers shut down, and only the files it
            // wrote removed.
            crate::target::started::process::kill_live_groups();
            infra.clean_every_environment().await;
            infra.shutdown().await;
            for path in written.take() {
                let _ = std::fs::remove_file(path);
            }
            eprintln!("harbor-certify: interrupted during start-up; what had started was stopped");
            return ExitCode::from(130);
        }
    };
    crate::target::started::serve::hold_until_stopped().await;
    eprintln!("harbor-certify: stopping…");
    let infra_kind = infra.kind;
    let stopped = sut.stop().await;
    infra.shutdown().await;
    for path in env_file.iter().chain(&args.bench_file) {
        let _ = std::fs::remove_file(path);
    }
    match stopped {
        Ok(()) => {
            eprintln!(
                "harbor-certify: stopped; the replicas, the demo's database and Redis keys{}{} are gone",
                match infra_kind {
                    crate::provision::BackendKind::External => "",
                    _ => ", the servers",
                },
                if env_file.is_some() || args.bench_file.is_some() {
                    " and the env file"
                } else {
                    ""
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harbor-certify: clean-up failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the service, seeds the demo (and the bench's tenants), writes the env file and prints
/// how to reach it; on an error, stops what it started (the caller shuts the servers down).
async fn start_up(
    args: &ServeArgs,
    infra: &crate::provision::Infra,
    options: crate::target::started::ServiceOptions,
    profile: Option<&std::sync::Arc<crate::target::profile::Profile>>,
    started: Instant,
    written: &std::cell::RefCell<Vec<PathBuf>>,
) -> Result<(crate::target::started::Started, Option<PathBuf>), ExitCode> {
    use crate::target::started::serve::Demo;
    use crate::target::started::Started;
    let how = match profile {
        Some(p) if p.deployed.is_some() => crate::target::started::How::Deployed(p),
        Some(p) => crate::target::started::How::Process(p),
        None => crate::target::started::How::InProcess,
    };
    let sut = match Started::start_as(infra, options, None, how).await {
        Ok(sut) => sut,
        Err(e) => {
            eprintln!("harbor-certify: the service did not start: {e}");
            return Err(ExitCode::from(super::CANNOT_RUN));
        }
    };
    let demo = match Demo::seed(&sut).await {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("harbor-certify: seeding the demo tenants failed: {e}");
            let _ = sut.stop().await;
            return Err(ExitCode::from(super::CANNOT_RUN));
        }
    };
    if let Some(path) = &args.bench_file {
        let written = match crate::target::started::serve::BenchTenants::seed(
            &sut,
            args.bench_activation_tenants,
            args.bench_flow_tenants,
        )
        .await
        {
            Ok(bench) => bench
                .write(path)
                .map(|()| written.borrow_mut().push(path.clone()))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = written {
            eprintln!(
                "harbor-certify: the bench tenants could not be made or written to {}: {e}",
                path.display()
            );
            let _ = sut.stop().await;
            return Err(ExitCode::from(super::CANNOT_RUN));
        }
    }
    let env_file = args.env_file.clone().or_else(|| {
        (!args.print_env)
            .then(|| std::env::temp_dir().join(format!("harbor-serve-{}.env", std::process::id())))
    });
    if let Some(path) = &env_file {
        if let Err(e) = demo.write_env_file(path) {
            eprintln!("harbor-certify: cannot write {}: {e}", path.display());
            let _ = sut.stop().await;
            return Err(ExitCode::from(super::CANNOT_RUN));
        }
        written.borrow_mut().push(path.clone());
    }
    println!("{}", demo.instructions(env_file.as_deref()));
    eprintln!(
        "harbor-certify: ready in {} ms on {}",
        started.elapsed().as_millis(),
        infra.kind
    );
    Ok((sut, env_file))
}
