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

/// Readiness: PostgreSQL and Redis answer.
#[utoipa::path(
    get,
    path = "/readyz",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)),
    tag = "operations"
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let postgres = sqlx::query("SELECT 1").execute(&state.db).await.is_ok();
    let mut redis = state.redis.clone();
    let redis_ok = redis::cmd("PING").query_async::<String>(&mut redis).await.is_ok();
    let ready = postgres && redis_ok;
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        postgres,
        redis: redis_ok,
        sync_points: state.sync_points.is_some(),
        flaws: state.flaws.names(),
    };
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}
