//! `POST /v1/workspaces/{workspace_id}/activation`: activates a workspace once it is entitled and
//! its QuickBooks Online connection is `CONNECTED`.
//!
//! One transaction: the caller's membership, the workspace advisory lock and, in the same round
//! trip, already activated? (then `already_completed`, whatever the connection's status is now)
//! → entitlement → QBO connection status `FOR UPDATE` →
//! `INSERT … ON CONFLICT (workspace_id) DO NOTHING RETURNING` → commit. Every query is scoped by
//! `workspace_id`. On any failure the transaction is rolled back, and the rollback has completed,
//! before the error response is written ([`crate::db::finish`]).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use crate::audit::{self, AuditEvent};
use crate::auth::WorkspaceMember;
use crate::context::RequestContext;
use crate::db::{self, Tx};
use crate::domain::Provider;
use crate::error::ApiError;
use crate::flaws::{self, Flaw};
use crate::lifecycle::{self, ConnectionStatus};
use crate::locks::{ActivationReads, WorkspaceLock};
use crate::request_tx::{ActivationRow, WorkspaceRequest};
use crate::state::AppState;
use crate::syncpoints::{self, SyncHooks};

/// The outcome of an activation request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"workspace_id": "6f1c2a9e-0b1d-4c3e-9a57-2f0d1e8b4c11", "activated_at": "2026-11-23T16:05:14Z", "already_completed": false}))]
pub struct ActivationResponse {
    /// The workspace.
    pub workspace_id: uuid::Uuid,
    /// When the workspace was first activated.
    pub activated_at: DateTime<Utc>,
    /// False for the call that activated the workspace, true for every call after it.
    pub already_completed: bool,
}

/// Activates the workspace (idempotent).
#[utoipa::path(
    post,
    path = "/v1/workspaces/{workspace_id}/activation",
    params(("workspace_id" = uuid::Uuid, Path, description = "The workspace to activate")),
    responses(
        (status = 200, description = "Activated now or before", body = ActivationResponse,
         headers(("Server-Timing" = String, description = "Only when the service runs with `HARBOR_SERVER_TIMING=true` (benchmarks): `lock;dur=<ms>`, how long this request held the workspace lock, from the statement that took it to its commit"))),
    ),
    security(("bearer" = [])),
    tag = "activation"
)]
pub async fn activate(
    State(state): State<AppState>,
    request: WorkspaceRequest,
) -> Result<(HeaderMap, Json<ActivationResponse>), ApiError> {
    let ctx = &request.ctx;
    // The entry, the lock and the two reads in one statement. Its errors (not a member, a wait
    // for the lock past `lock_timeout`) are answered there, rolled back, as every request's
    // entry's are: they never reach the activation's own error path (`activation.failing`).
    let hooks = state.sync_points.as_ref();
    let locked_at = (hooks, syncpoints::ACTIVATION_LOCKED);
    let (mut tx, member, lock, reads, qbo) = request.begin_for_activation(locked_at).await?;
    let error = match activate_in(&mut tx, &state, ctx, &member, (lock, reads, qbo)).await {
        Err(error) if flaws::active(Flaw::EarlyLockRelease) => error,
        Err(error) => {
            // The error path, still inside the transaction and the lock: the harness checks here
            // that nobody gets in before the rollback has completed. (A sync-point timeout changes
            // nothing: the request is failing anyway.)
            let _ = SyncHooks::reach(hooks, ctx, syncpoints::ACTIVATION_FAILING).await;
            return db::finish(tx, Err(error)).await;
        }
        Ok((response, taken_at)) => {
            let response = db::finish(tx, Ok::<_, ApiError>(response)).await?;
            let mut headers = HeaderMap::new();
            if state.server_timing {
                let held = taken_at.elapsed().as_secs_f64() * 1e3;
                if let Ok(value) = HeaderValue::from_str(&format!("lock;dur={held:.3}")) {
                    headers.insert("server-timing", value);
                }
            }
            return Ok((headers, Json(response)));
        }
    };
    // Seeded flaw `early-lock-release`: release the lock first (commit), then do the error
    // bookkeeping outside it.
    tx.commit().await?;
    let _ = SyncHooks::reach(hooks, ctx, syncpoints::ACTIVATION_FAILING).await;
    // Not `request.begin()`: this bookkeeping transaction was never tagged with the actor (the
    // request's own, tagged transaction is the one committed above).
    let mut late = db::begin(&state.db, None, member.tenant_id).await?;
    let event = AuditEvent {
        tenant_id: Some(member.tenant_id),
        workspace_id: Some(member.workspace_id),
        actor_user_id: Some(member.user_id),
        action: "activation",
        outcome: "failed",
        detail: json!({ "code": error.status_and_code().1 }),
    };
    audit::record(&mut late, ctx, event).await?;
    late.commit().await?;
    Err(error)
}

async fn activate_in(
    tx: &mut Tx,
    state: &AppState,
    ctx: &RequestContext,
    member: &WorkspaceMember,
    (lock, reads, qbo): (WorkspaceLock, ActivationReads, ActivationRow),
) -> Result<(ActivationResponse, std::time::Instant), ApiError> {
    let hooks = state.sync_points.as_ref();
    let workspace_id = member.workspace_id;
    // Reached only by an activation whose entry left the row to it: the harness parks it here,
    // between the workspace lock and the row lock (`WorkspaceRequest::begin_for_activation`).
    if matches!(qbo, ActivationRow::NotRead) {
        SyncHooks::reach(hooks, ctx, syncpoints::ACTIVATION_LOCKED).await?;
    }

    // A retry of a call that succeeded (its response lost) must learn that it succeeded, even if
    // the connection or entitlement has changed since.
    if let (Some(activated_at), false) =
        (reads.activated_at, flaws::active(Flaw::NoUniqueActivation))
    {
        let done = ActivationResponse {
            workspace_id: workspace_id.0,
            activated_at,
            already_completed: true,
        };
        return Ok((done, lock.taken_at));
    }

    if reads.entitled != Some(true) {
        return Err(ApiError::ActivationNotEntitled);
    }

    let qbo = match qbo {
        ActivationRow::NotRead => lifecycle::lock_connection(tx, &lock, Provider::Qbo).await?,
        ActivationRow::Locked(Some(row)) => *row,
        ActivationRow::Locked(None) => return Err(lifecycle::LifecycleError::NotFound.into()),
    };
    SyncHooks::reach(hooks, ctx, syncpoints::ACTIVATION_STATUS_READ).await?;
    if qbo.status != ConnectionStatus::Connected {
        return Err(ApiError::ActivationNotReady(qbo.status.as_str()));
    }
    // A grant whose refresh token has expired is over at Intuit whatever the row says (a sync
    // would end the connection): an activation does not rest on it.
    if qbo.grant_ended(state.clock.now()) {
        return Err(ApiError::ActivationNotReady(
            "CONNECTED, but its grant expired (reconnect QuickBooks)",
        ));
    }

    // Seeded flaw `no-unique-activation`: a plain INSERT, no earlier-activation check, and (see
    // `Application::build`) no UNIQUE constraint — every call activates again.
    let on_conflict = if flaws::active(Flaw::NoUniqueActivation) {
        ""
    } else {
        "ON CONFLICT (workspace_id) DO NOTHING "
    };
    // The row and its audit in one statement: the audit row only when the row went in.
    let sql = format!(
        "WITH inserted AS (INSERT INTO workspace_activations (tenant_id, workspace_id, activated_by) \
         VALUES ($1, $2, $3) {on_conflict}RETURNING activated_at), audited AS ({}) \
         SELECT activated_at FROM inserted",
        audit::insert_for_each(4, Some("inserted"))
    );
    let insert = sqlx::query_scalar(&sql)
        .bind(member.tenant_id)
        .bind(workspace_id)
        .bind(member.user_id);
    let event = AuditEvent {
        tenant_id: Some(member.tenant_id),
        workspace_id: Some(workspace_id),
        actor_user_id: Some(member.user_id),
        action: "activation",
        outcome: "activated",
        detail: json!({}),
    };
    let inserted: Option<DateTime<Utc>> = audit::bind_event!(insert, ctx, event)
        .fetch_optional(&mut **tx)
        .await?;
    let (activated_at, already_completed) = match inserted {
        Some(at) => (at, false),
        None => {
            let at = sqlx::query_scalar(
                "SELECT activated_at FROM workspace_activations WHERE workspace_id = $1",
            )
            .bind(workspace_id)
            .fetch_one(&mut **tx)
            .await?;
            (at, true)
        }
    };
    SyncHooks::reach(hooks, ctx, syncpoints::ACTIVATION_BEFORE_COMMIT).await?;
    let done = ActivationResponse {
        workspace_id: workspace_id.0,
        activated_at,
        already_completed,
    };
    Ok((done, lock.taken_at))
}
