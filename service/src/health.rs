//! Liveness (`/healthz`) and readiness (`/readyz`: PostgreSQL and Redis both answer).

use axum::extract::{RawQuery, State};
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
    /// Whether the harness's sync points are enabled. Present only on a test instance (sync
    /// points on, or seeded flaws): a production instance tells nobody about its test hooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_points: Option<bool>,
    /// Seeded flaws this instance runs with; present only on a test instance, like `sync_points`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flaws: Option<Vec<&'static str>>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")), tag = "operations")]
pub async fn healthz() -> &'static str {
    "ok"
}

/// What `/readyz` may be asked (documented for the contract; read from the raw query).
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadinessQuery {
    /// `true`: on a test instance (sync points or seeded flaws on), check the dependencies now
    /// instead of answering the last check. Ignored elsewhere, so probes cannot bypass the cache;
    /// any other value is ignored too (a probe is never refused for its query).
    pub fresh: Option<String>,
}

/// How long `/readyz` waits for each dependency before calling it not ready.
const READINESS_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

/// How long one readiness check answers every probe: `/readyz` is open and unthrottled, so a
/// flood of probes costs one query and one `PING` a second, not one each.
pub const READINESS_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Readiness: PostgreSQL and Redis answer.
#[utoipa::path(
    get,
    path = "/readyz",
    params(ReadinessQuery),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)),
    tag = "operations"
)]
pub async fn readyz(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> (StatusCode, Json<Readiness>) {
    let test_instance = state.sync_points.is_some() || !state.flaws.is_empty();
    // A harness that has just given a dependency back needs today's answer, not the cached one.
    // Read from the raw query, so that no query string can make a probe fail.
    let fresh = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|pair| pair == "fresh=true"));
    let ttl = if fresh && test_instance {
        std::time::Duration::ZERO
    } else {
        READINESS_TTL
    };
    let (postgres, redis_ok) = state.readiness.get_or_check(ttl, || check(&state)).await;
    let ready = postgres && redis_ok;
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        postgres,
        redis: redis_ok,
        sync_points: test_instance.then_some(state.sync_points.is_some()),
        flaws: test_instance.then(|| state.flaws.names()),
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

/// Asks both dependencies, each within its own bound, whatever they do: a Redis that refuses
/// connections keeps the connection manager reconnecting for longer than a probe waits.
async fn check(state: &AppState) -> (bool, bool) {
    let postgres = matches!(
        tokio::time::timeout(
            READINESS_BOUND,
            crate::db::retry_lost(&state.db, || sqlx::query("SELECT 1").execute(&state.db))
        )
        .await,
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
    (postgres, redis_ok)
}
