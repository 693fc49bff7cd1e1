//! `harbor-certify serve`: the reference service with demo tenants and tokens, held for people and
//! tools.

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
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Honour the harness's sync points and actor tags (off: requests are never parked).
    #[arg(long)]
    pub sync_points: bool,
    /// Start the service with this seeded flaw on (repeatable; needs `--features flaws`).
    #[arg(long = "flaw")]
    pub flaws: Vec<String>,
}

/// Starts the service and holds it.
pub async fn serve(args: ServeArgs) -> ExitCode {
    use crate::serve::Demo;
    use crate::service::{ServiceOptions, ServiceUnderTest};
    let flaws = match parse_flaws(&args.flaws) {
        Ok(f) => f,
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
    let options = ServiceOptions {
        replicas: args.replicas,
        sync_points: args.sync_points,
        flaws,
        ..ServiceOptions::default()
    };
    let sut = match ServiceUnderTest::start(&infra, options).await {
        Ok(sut) => sut,
        Err(e) => {
            eprintln!("harbor-certify: the service did not start: {e}");
            infra.shutdown().await;
            return ExitCode::from(super::CANNOT_RUN);
        }
    };
    let demo = match Demo::seed(&sut).await {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("harbor-certify: seeding the demo tenants failed: {e}");
            let _ = sut.stop().await;
            infra.shutdown().await;
            return ExitCode::from(super::CANNOT_RUN);
        }
    };
    if let Some(path) = &args.env_file {
        if let Err(e) = demo.write_env_file(path) {
            eprintln!("harbor-certify: cannot write {}: {e}", path.display());
            let _ = sut.stop().await;
            infra.shutdown().await;
            return ExitCode::from(super::CANNOT_RUN);
        }
    }
    println!("{}", demo.instructions(args.env_file.as_deref()));
    eprintln!(
        "harbor-certify: ready in {} ms on {}",
        started.elapsed().as_millis(),
        infra.kind
    );
    crate::serve::hold_until_stopped().await;
    let stopped = sut.stop().await;
    infra.shutdown().await;
    if let Some(path) = &args.env_file {
        let _ = std::fs::remove_file(path);
    }
    match stopped {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harbor-certify: clean-up failed: {e}");
            ExitCode::FAILURE
        }
    }
}
