//! Liveness (`/healthz`) and readiness (`/readyz`: PostgreSQL and Redis both answer).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use crate::state::AppState;

/// The readiness report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Whether `SELECT 1` succeeded.
    pub postgres: bool,
    /// Whether `PING` succeeded.
    pub redis: bool,
    /// Whether the harness's sync points are enabled (never in production).
    pub sync_points: bool,
    /// Seeded flaws this instance runs with: empty unless it is a flawed build under test.
    pub flaws: Vec<&'static str>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")), tag = "operations")]
pub async fn healthz() -> &'static str {
    "ok"
}

/// How long `/readyz` waits for each dependency before calling it not ready.
const READINESS_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

/// Readiness: PostgreSQL and Redis answer.
#[utoipa::path(
    get,
    path = "/readyz",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)),
    tag = "operations"
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    // A readiness probe answers within its own bound, whatever the dependencies do: a Redis that
    // refuses connections keeps the connection manager reconnecting for longer than a probe waits.
    let postgres = matches!(
        tokio::time::timeout(READINESS_BOUND, sqlx::query("SELECT 1").execute(&state.db)).await,
        Ok(Ok(_))
    );
    let mut redis = state.redis.clone();
    let redis_ok = matches!(
        tokio::time::timeout(
            READINESS_BOUND,
            redis::cmd("PING").query_async::<String>(&mut redis)
        )
        .await,
        Ok(Ok(_))
    );
    let ready = postgres && redis_ok;
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        postgres,
        redis: redis_ok,
        sync_points: state.sync_points.is_some(),
        flaws: state.flaws.names(),
    };
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}
