//! `harbor-certify doctor` and `harbor-certify infra`: provisioning PostgreSQL and Redis on their
//! own — to check the machine, or to hold them for other processes.

use std::process::ExitCode;
use std::time::Instant;

use super::provision_or_explain;
use crate::provision::{BackendChoice, Infra};

/// What `doctor` provisions.
#[derive(clap::Args, Clone, Debug)]
pub struct DoctorArgs {
    /// Which backend to provision with.
    #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
    pub backend: BackendChoice,
}

/// What `infra` provisions and where it says so.
#[derive(clap::Args, Clone, Debug)]
pub struct InfraArgs {
    /// Which backend to provision with.
    #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
    pub backend: BackendChoice,
    /// Where to write the environment lines.
    #[arg(long)]
    pub env_file: std::path::PathBuf,
}

/// Provisions, prints versions and timings, cleans up.
pub async fn doctor(backend: BackendChoice) -> ExitCode {
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
    println!(
        "total:      {} ms (cleaned up)",
        started.elapsed().as_millis()
    );
    match checked {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harbor-certify: the servers answered but a scenario database could not be made: {e}");
            ExitCode::from(super::CANNOT_RUN)
        }
    }
}

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
    println!(
        "template:   first scenario database {} ms (includes migrating the template)",
        first.0
    );
    let creates: Vec<String> = rest.iter().map(|t| t.0.to_string()).collect();
    let drops: Vec<String> = rest.iter().map(|t| t.1.to_string()).collect();
    println!(
        "scenario db: create {} ms, drop {} ms",
        creates.join("/"),
        drops.join("/")
    );
    Ok(())
}

/// Provisions and holds the servers, writing their URLs to `env_file`.
pub async fn infra(backend: BackendChoice, env_file: std::path::PathBuf) -> ExitCode {
    let mut infra = match provision_or_explain(backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    let mut lines = format!(
        "HARBOR_DATABASE_URL={}\nHARBOR_REDIS_URL={}\nHARBOR_INFRA_BACKEND={}\nHARBOR_INFRA_READY_MS={}\n",
        infra.admin_url,
        infra.redis_url,
        infra.kind,
        infra.ready_in.as_millis()
    );
    // The same servers through their Unix sockets, where offered: for a process on this host
    // that needs no fault proxy (the bench's service).
    if let Some(s) = &infra.sockets {
        lines.push_str(&format!(
            "HARBOR_DATABASE_SOCKET_URL={}\nHARBOR_REDIS_SOCKET_URL={}\n",
            s.admin_url, s.redis_url
        ));
    }
    // Written to a temporary name and renamed, so a reader never sees half a file.
    // The URLs carry the admin credential: a secret file.
    if let Err(e) = crate::secret_file::write_secret_file(&env_file, lines.as_bytes()) {
        eprintln!("harbor-certify: cannot write {}: {e}", env_file.display());
        infra.shutdown().await;
        return ExitCode::from(super::CANNOT_RUN);
    }
    eprintln!(
        "harbor-certify: {} servers ready in {} ms; holding until SIGINT/SIGTERM or end of standard input",
        infra.kind,
        infra.ready_in.as_millis()
    );
    crate::target::started::serve::hold_until_stopped().await;
    infra.shutdown().await;
    let _ = std::fs::remove_file(&env_file);
    ExitCode::SUCCESS
}
