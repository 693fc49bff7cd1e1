//! The raw ceiling of the activation endpoint: the service's activation transaction, statement for
//! statement (tenant and tag settings, advisory lock, the three reads, `FOR UPDATE`,
//! `INSERT … ON CONFLICT`, the audit row — or, for a workspace already activated, the lock, the
//! first read and the commit, as the service does), sent through raw sqlx — prepared, logged in as
//! the service's role. The criterion bench (`benches/`) and the macro bench (`harbor-load activation`)
//! both measure the service against this one copy.

use sqlx::PgPool;

use crate::fixtures::TenantWorkspace;

/// One activation of `t`'s workspace, as the service's transaction does it, without HTTP, JWT,
/// membership or the service's own code around it.
pub async fn raw_activation(pool: &PgPool, t: &TenantWorkspace) -> Result<(), sqlx::Error> {
    let key = harbor_service::locks::lock_key_for_workspace(t.workspace);
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('harbor.tenant_id', $1, true), set_config('application_name', 'bench', true)")
        .bind(t.tenant.to_string())
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(key.classid)
        .bind(key.objid)
        .execute(&mut *tx)
        .await?;
    let existing: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT activated_at FROM workspace_activations WHERE workspace_id = $1",
    )
    .bind(t.workspace)
    .fetch_optional(&mut *tx)
    .await?;
    if existing.is_some() {
        // As the service does: a repeated activation learns it is done, under the lock.
        return tx.commit().await;
    }
    let _: Option<bool> =
        sqlx::query_scalar("SELECT active FROM entitlements WHERE workspace_id = $1")
            .bind(t.workspace)
            .fetch_optional(&mut *tx)
            .await?;
    let _: Option<(String, i64)> = sqlx::query_as("SELECT status, version FROM connections WHERE workspace_id = $1 AND provider = 'qbo' FOR UPDATE")
        .bind(t.workspace)
        .fetch_optional(&mut *tx)
        .await?;
    let _: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "INSERT INTO workspace_activations (tenant_id, workspace_id, activated_by) VALUES ($1, $2, $3) \
         ON CONFLICT (workspace_id) DO NOTHING RETURNING activated_at",
    )
    .bind(t.tenant)
    .bind(t.workspace)
    .bind(t.owner)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, workspace_id, actor_user_id, action, outcome, request_id, detail) \
         VALUES ($1, $2, $3, 'activation', 'activated', 'bench', '{}')",
    )
    .bind(t.tenant)
    .bind(t.workspace)
    .bind(t.owner)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
