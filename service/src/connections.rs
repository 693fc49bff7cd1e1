//! Connection routes: list (metadata only), disconnect and revoke. Transitions are decided by
//! [`crate::lifecycle`] under the workspace lock and the row lock, and audited.

use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use crate::app::AppState;
use crate::audit::{self, AuditEvent};
use crate::auth::{ProviderPath, WorkspaceMember};
use crate::context::RequestContext;
use crate::db;
use crate::domain::Provider;
use crate::error::{ApiError, ErrorBody};
use crate::lifecycle::{self, ConnectionStatus, Transition};
use crate::locks;
use crate::syncpoints::{self, SyncHooks};

/// What a client may know about a connection: metadata, never token material.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    /// The provider.
    pub provider: Provider,
    /// The lifecycle status.
    pub status: ConnectionStatus,
    /// Shorthand for `status == CONNECTED`.
    pub connected: bool,
    /// When the status last changed.
    pub updated_at: DateTime<Utc>,
}

/// The workspace's connections.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionList {
    /// One entry per provider.
    pub connections: Vec<ConnectionView>,
}

impl ConnectionView {
    /// The view of a connection in `status`; `connected` is derived from it.
    pub fn new(provider: Provider, status: ConnectionStatus, updated_at: DateTime<Utc>) -> Self {
        Self { provider, status, connected: status == ConnectionStatus::Connected, updated_at }
    }
}

fn view(provider: &str, status: &str, updated_at: DateTime<Utc>) -> Result<ConnectionView, ApiError> {
    Ok(ConnectionView::new(Provider::parse(provider)?, ConnectionStatus::parse(status)?, updated_at))
}

/// Lists the workspace's connections (status and metadata only).
#[utoipa::path(
    get,
    path = "/v1/workspaces/{workspace_id}/connections",
    params(("workspace_id" = uuid::Uuid, Path, description = "The workspace")),
    responses(
        (status = 200, description = "The connections", body = ConnectionList),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such workspace for this caller", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "connections"
)]
pub async fn list(State(state): State<AppState>, member: WorkspaceMember) -> Result<Json<ConnectionList>, ApiError> {
    let rows: Vec<(String, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT provider, status, updated_at FROM connections WHERE workspace_id = $1 ORDER BY provider")
            .bind(member.workspace_id)
            .fetch_all(&state.db)
            .await?;
    let connections = rows.iter().map(|(p, s, at)| view(p, s, *at)).collect::<Result<_, _>>()?;
    Ok(Json(ConnectionList { connections }))
}

/// Disconnects a connection: `DISCONNECTED`, tokens wiped. Owner or admin only.
#[utoipa::path(
    post,
    path = "/v1/workspaces/{workspace_id}/connections/{provider}/disconnect",
    params(
        ("workspace_id" = uuid::Uuid, Path, description = "The workspace"),
        ("provider" = Provider, Path, description = "qbo, gmail, slack or box"),
    ),
    responses(
        (status = 200, description = "Disconnected", body = ConnectionView),
        (status = 403, description = "Caller is not an owner or admin", body = ErrorBody),
        (status = 404, description = "No such workspace for this caller", body = ErrorBody),
        (status = 409, description = "INVALID_TRANSITION", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "connections"
)]
pub async fn disconnect(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    member: WorkspaceMember,
    ProviderPath(provider): ProviderPath,
) -> Result<Json<ConnectionView>, ApiError> {
    transition(&state, &ctx, &member, provider, Transition::Disconnect).await.map(Json)
}

/// Revokes a connection's grant: `REVOKED`, tokens wiped. Owner or admin only.
#[utoipa::path(
    post,
    path = "/v1/workspaces/{workspace_id}/connections/{provider}/revoke",
    params(
        ("workspace_id" = uuid::Uuid, Path, description = "The workspace"),
        ("provider" = Provider, Path, description = "qbo, gmail, slack or box"),
    ),
    responses(
        (status = 200, description = "Revoked", body = ConnectionView),
        (status = 403, description = "Caller is not an owner or admin", body = ErrorBody),
        (status = 404, description = "No such workspace for this caller", body = ErrorBody),
        (status = 409, description = "INVALID_TRANSITION", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "connections"
)]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    member: WorkspaceMember,
    ProviderPath(provider): ProviderPath,
) -> Result<Json<ConnectionView>, ApiError> {
    transition(&state, &ctx, &member, provider, Transition::Revoke).await.map(Json)
}

async fn transition(
    state: &AppState,
    ctx: &RequestContext,
    member: &WorkspaceMember,
    provider: Provider,
    transition: Transition,
) -> Result<ConnectionView, ApiError> {
    member.require_admin()?;
    let hooks = state.sync_points.as_ref();
    let mut tx = db::begin(&state.db, ctx.actor.as_ref()).await?;
    let result = async {
        let lock = locks::lock_workspace(&mut tx, member.workspace_id).await?;
        let connection = lifecycle::lock_connection(&mut tx, &lock, provider).await?;
        SyncHooks::reach(hooks, ctx, syncpoints::LIFECYCLE_LOCKED).await?;
        let (to, updated_at) = lifecycle::apply(&mut tx, &lock, &connection, transition).await?;
        audit::record(
            &mut tx,
            ctx,
            AuditEvent {
                tenant_id: Some(member.tenant_id),
                workspace_id: Some(member.workspace_id),
                actor_user_id: Some(member.user_id),
                action: transition.as_str(),
                outcome: to.as_str(),
                detail: json!({ "provider": provider.as_str(), "from": connection.status.as_str() }),
            },
        )
        .await?;
        SyncHooks::reach(hooks, ctx, syncpoints::LIFECYCLE_BEFORE_COMMIT).await?;
        Ok(ConnectionView::new(provider, to, updated_at))
    }
    .await;
    db::finish(tx, result).await
}
