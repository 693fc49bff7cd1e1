//! `harbor-certify`: the certification harness's command line. Thin: parsing and exit codes here,
//! the work in the `harbor_harness` library.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use harbor_harness::provision::{BackendChoice, Infra};

/// Exit code when the harness could not run at all (no backend, bad arguments).
const CANNOT_RUN: u8 = 2;

#[derive(Parser)]
#[command(name = "harbor-certify", version, about = "Certify a concurrent, multi-tenant service against real PostgreSQL and Redis")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provision PostgreSQL and Redis, print their versions and how long they took, clean up.
    Doctor {
        /// Which backend to provision with.
        #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
        backend: BackendChoice,
    },
    /// Provision once and hold the servers for other processes (the test suite) until SIGINT,
    /// SIGTERM or the end of standard input; writes `HARBOR_DATABASE_URL=…` and
    /// `HARBOR_REDIS_URL=…` lines to the env file.
    Infra {
        /// Which backend to provision with.
        #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
        backend: BackendChoice,
        /// Where to write the environment lines.
        #[arg(long)]
        env_file: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Doctor { backend } => doctor(backend).await,
        Command::Infra { backend, env_file } => infra(backend, env_file).await,
    }
}

async fn provision_or_explain(backend: BackendChoice) -> Result<Infra, ExitCode> {
    Infra::provision(backend).await.map_err(|e| {
        eprintln!("harbor-certify: cannot provision ({backend:?}): {e}");
        ExitCode::from(CANNOT_RUN)
    })
}

async fn doctor(backend: BackendChoice) -> ExitCode {
    let started = Instant::now();
    let mut infra = match provision_or_explain(backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    println!("backend:    {}", infra.kind);
    if let Some(images) = &infra.images {
        println!("images:     {} {}", images.postgres, images.redis);
    }
    println!("postgres:   {}", infra.postgres_version);
    println!("redis:      {}", infra.redis_version);
    println!("ready in:   {} ms", infra.ready_in.as_millis());
    let checked = scenario_database_round_trips(&infra).await;
    infra.shutdown().await;
    println!("total:      {} ms (cleaned up)", started.elapsed().as_millis());
    match checked {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harbor-certify: the servers answered but a scenario database could not be made: {e}");
            ExitCode::from(CANNOT_RUN)
        }
    }
}

/// Creates and drops scenario databases: the first also migrates the template, the rest show the
/// per-scenario cost the catalogue pays.
async fn scenario_database_round_trips(infra: &Infra) -> Result<(), String> {
    let mut timings = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        let env = infra.isolated_env().await.map_err(|e| e.to_string())?;
        let created = started.elapsed();
        let dropping = Instant::now();
        env.cleanup().await.map_err(|e| e.to_string())?;
        timings.push((created.as_millis(), dropping.elapsed().as_millis()));
    }
    let (first, rest) = timings.split_first().expect("four rounds");
    println!("template:   first scenario database {} ms (includes migrating the template)", first.0);
    let creates: Vec<String> = rest.iter().map(|t| t.0.to_string()).collect();
    let drops: Vec<String> = rest.iter().map(|t| t.1.to_string()).collect();
    println!("scenario db: create {} ms, drop {} ms", creates.join("/"), drops.join("/"));
    Ok(())
}

async fn infra(backend: BackendChoice, env_file: std::path::PathBuf) -> ExitCode {
    let mut infra = match provision_or_explain(backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    let lines = format!(
        "HARBOR_DATABASE_URL={}\nHARBOR_REDIS_URL={}\nHARBOR_INFRA_BACKEND={}\nHARBOR_INFRA_READY_MS={}\n",
        infra.admin_url,
        infra.redis_url,
        infra.kind,
        infra.ready_in.as_millis()
    );
    // Written to a temporary name and renamed, so a reader never sees half a file.
    let tmp = env_file.with_extension("partial");
    if let Err(e) = std::fs::write(&tmp, lines).and_then(|()| std::fs::rename(&tmp, &env_file)) {
        eprintln!("harbor-certify: cannot write {}: {e}", env_file.display());
        infra.shutdown().await;
        return ExitCode::from(CANNOT_RUN);
    }
    eprintln!(
        "harbor-certify: {} servers ready in {} ms; holding until SIGINT/SIGTERM or end of standard input",
        infra.kind,
        infra.ready_in.as_millis()
    );
    // A parent that dies without signalling (killed by a CI timeout) closes our standard input:
    // that ends the hold too, so the servers never outlive the run that asked for them.
    let stdin_closed = async {
        use tokio::io::AsyncReadExt;
        let mut sink = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        _ = harbor_service::telemetry::shutdown_signal() => {}
        _ = stdin_closed => {}
    }
    infra.shutdown().await;
    let _ = std::fs::remove_file(&env_file);
    ExitCode::SUCCESS
}
