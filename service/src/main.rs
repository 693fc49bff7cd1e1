//! `harbor-service`: serves until SIGINT/SIGTERM (`serve`, the default), or re-encrypts stored
//! tokens under the primary key (`rotate-keys`). Configuration comes from the environment.

use clap::{Parser, Subcommand};
use harbor_service::vault::{self, KeyRing};
use harbor_service::{db, Application, Config};

#[derive(Parser)]
#[command(name = "harbor-service", version, about = "Harbor's reference service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Re-encrypt every stored token under the primary key (HARBOR_TOKEN_PRIMARY_KEY), in batches.
    /// Safe to interrupt and run again: it only selects rows still under an older key.
    RotateKeys {
        /// Connections per transaction.
        #[arg(long, default_value_t = 500)]
        batch_size: i64,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("harbor-service: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    harbor_service::telemetry::init(config.json_logs);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::RotateKeys { batch_size } => rotate_keys(config, batch_size).await,
    }
}

async fn serve(config: Config) -> std::process::ExitCode {
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            return std::process::ExitCode::from(2);
        }
    };
    tracing::info!(addr = %app.local_addr(), "listening");
    match app.run_until_stopped(harbor_service::telemetry::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn rotate_keys(config: Config, batch_size: i64) -> std::process::ExitCode {
    let ring = match KeyRing::from_config(&config.token_keys) {
        Ok(ring) => ring,
        Err(e) => {
            tracing::error!(error = %e, "token keys");
            return std::process::ExitCode::from(2);
        }
    };
    let pool = match db::connect_owner(&config, 2).await {
        Ok(pool) => pool,
        Err(e) => {
            tracing::error!(error = %e, "database");
            return std::process::ExitCode::from(2);
        }
    };
    match vault::rotate_keys(&pool, &ring, batch_size.max(1)).await {
        Ok(report) => {
            tracing::info!(rotated = report.rotated, batches = report.batches, remaining = report.remaining, primary = ring.primary_key_id(), "key rotation finished");
            if report.remaining == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "key rotation stopped; run again to resume");
            std::process::ExitCode::FAILURE
        }
    }
}
