//! The append-only audit trail: who did what to which workspace, with what outcome. Audit rows are
//! written inside the request's transaction, so a rolled-back change leaves no audit row claiming
//! it happened. Never pass secrets in `detail`.

use serde_json::Value;

use crate::context::RequestContext;
use crate::db::Tx;
use crate::domain::{TenantId, UserId, WorkspaceId};

/// One audit event.
#[derive(Debug)]
pub struct AuditEvent<'a> {
    /// The tenant concerned.
    pub tenant_id: Option<TenantId>,
    /// The workspace concerned.
    pub workspace_id: Option<WorkspaceId>,
    /// Who acted (the verified user).
    pub actor_user_id: Option<UserId>,
    /// What was done, such as `activation` or `connection.disconnect`.
    pub action: &'a str,
    /// How it ended, such as `activated` or `csrf_suspected`.
    pub outcome: &'a str,
    /// Structured, non-secret detail.
    pub detail: Value,
}

/// Appends an event inside the request's transaction.
pub async fn record(
    tx: &mut Tx,
    ctx: &RequestContext,
    event: AuditEvent<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, workspace_id, actor_user_id, action, outcome, request_id, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event.tenant_id)
    .bind(event.workspace_id)
    .bind(event.actor_user_id)
    .bind(event.action)
    .bind(event.outcome)
    .bind(&ctx.request_id)
    .bind(event.detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
