//! `harbor-service`: reads its configuration from the environment and serves until SIGINT/SIGTERM.

use harbor_service::{Application, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("harbor-service: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    harbor_service::telemetry::init(config.json_logs);
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
