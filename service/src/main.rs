//! `harbor-service`: serves until SIGINT/SIGTERM (`serve`, the default), applies the schema
//! migrations (`migrate`), re-encrypts stored tokens under the primary key (`rotate-keys`), or
//! says what the revocation outbox holds (`outbox`). Configuration comes from the environment;
//! `migrate`, `rotate-keys` and `outbox` need the owner's credential
//! (`HARBOR_MIGRATION_DATABASE_URL`).

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
    /// Apply the schema migrations as the owner (HARBOR_MIGRATION_DATABASE_URL), then exit.
    Migrate,
    /// Re-encrypt every stored token under the primary key (HARBOR_TOKEN_PRIMARY_KEY), in batches.
    /// Safe to interrupt and run again: it only selects rows still under an older key.
    RotateKeys {
        /// Connections per transaction.
        #[arg(long, default_value_t = 500)]
        batch_size: i64,
    },
    /// Print what the revocation outbox holds as JSON (pending intents by reason, the oldest,
    /// the stuck ones and their last errors); exit 1 when an intent is stuck, for a monitor.
    Outbox,
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
        Command::Migrate => migrate(config).await,
        Command::RotateKeys { batch_size } => rotate_keys(config, batch_size).await,
        Command::Outbox => outbox(config).await,
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
    match app
        .run_until_stopped(harbor_service::telemetry::shutdown_signal())
        .await
    {
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
    let Some(pool) = owner_pool(&config).await else {
        return std::process::ExitCode::from(2);
    };
    match vault::rotate_keys(&pool, &ring, batch_size.max(1)).await {
        Ok(report) => {
            let skipped: Vec<String> = report.skipped.iter().map(|id| id.0.to_string()).collect();
            tracing::info!(rotated = report.rotated, batches = report.batches, remaining = report.remaining, skipped = %skipped.join(","), outbox_under_older_keys = report.outbox_under_older_keys, outbox_unreadable = report.outbox_unreadable, outbox_resealed = report.outbox_resealed, primary = ring.primary_key_id(), "key rotation finished");
            if report.is_complete() {
                std::process::ExitCode::SUCCESS
            } else {
                // Rows in use (`remaining`): run again. Rows that do not decrypt (`skipped`): each
                // needs a key restored or a reconnect; a rerun skips them again and goes on.
                // Revocations waiting under an older key (`outbox_under_older_keys`): keep that key
                // until the outbox has delivered them (`harbor-service outbox`), then run again.
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "key rotation stopped; run again to resume");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn outbox(config: Config) -> std::process::ExitCode {
    let Some(pool) = owner_pool(&config).await else {
        return std::process::ExitCode::from(2);
    };
    match harbor_service::outbox::status(&pool).await {
        Ok(status) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&status).unwrap_or_default()
            );
            if status.stuck > 0 {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "reading the outbox");
            std::process::ExitCode::from(2)
        }
    }
}

async fn owner_pool(config: &Config) -> Option<sqlx::PgPool> {
    match db::connect_owner(config, 2).await {
        Ok(Some(pool)) => Some(pool),
        Ok(None) => {
            tracing::error!(
                "HARBOR_MIGRATION_DATABASE_URL (the schema owner's credential) is not set"
            );
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "database");
            None
        }
    }
}

async fn migrate(config: Config) -> std::process::ExitCode {
    let Some(pool) = owner_pool(&config).await else {
        return std::process::ExitCode::from(2);
    };
    match db::MIGRATOR.run(&pool).await {
        Ok(()) => {
            tracing::info!("migrations applied");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "migrations failed");
            std::process::ExitCode::FAILURE
        }
    }
}
