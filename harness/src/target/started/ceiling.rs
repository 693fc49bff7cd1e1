//! The raw ceiling of the activation endpoint: the service's activation transaction, statement for
//! statement (tenant and tag settings, and in the same statement the advisory lock and the two
//! reads in one call, `harbor_lock_for_activation`, and after them the QuickBooks row `FOR
//! UPDATE`; `INSERT … ON CONFLICT` with its audit row in the same statement — or, for a
//! workspace already activated, the lock-and-reads call and the commit, as the service does), sent
//! through raw sqlx — prepared, logged in as the service's role. The criterion bench (`benches/`) and the macro bench (`harbor-load activation`)
//! both measure the service against this one copy.

use sqlx::PgPool;

use crate::fixtures::TenantWorkspace;

/// One activation of `t`'s workspace, as the service's transaction does it, without HTTP, JWT,
/// membership or the service's own code around it. Returns how long it held the workspace lock,
/// measured as the service measures its own (`Server-Timing: lock`): from the return of the
/// statement that took it to the return of the commit.
pub async fn raw_activation(
    pool: &PgPool,
    t: &TenantWorkspace,
) -> Result<std::time::Duration, sqlx::Error> {
    let key = harbor_service::locks::lock_key_for_workspace(t.workspace);
    let mut tx = pool.begin().await?;
    // The settings, the lock, the reads and the row lock in one statement, as the service's entry
    // makes its membership's, the lock, the reads and the row lock in one
    // (`request_tx::ENTER_AND_LOCK_FOR_ACTIVATION_WITH_ROW`).
    type Entered = (
        Option<chrono::DateTime<chrono::Utc>>,
        Option<bool>,
        Option<String>,
        Option<i64>,
    );
    let (existing, _entitled, _status, _version): Entered = sqlx::query_as(
        "SELECT a.activated_at, a.entitled, c.status, c.version \
             FROM (SELECT set_config('harbor.tenant_id', $4, true) AS tenant, \
               set_config('application_name', 'bench', true) AS tag) AS scoped \
             CROSS JOIN LATERAL (SELECT r.activated_at, r.entitled \
               FROM harbor_lock_for_activation($1, $2, $3) AS r \
               WHERE scoped.tenant IS NOT NULL OFFSET 0) AS a \
             LEFT JOIN LATERAL (SELECT status, version FROM connections \
               WHERE workspace_id = $3 AND provider = 'qbo' \
                 AND a.activated_at IS NULL AND a.entitled FOR UPDATE) AS c ON true",
    )
    .bind(key.classid)
    .bind(key.objid)
    .bind(t.workspace)
    .bind(t.tenant.to_string())
    .fetch_one(&mut *tx)
    .await?;
    let taken_at = std::time::Instant::now();
    if existing.is_some() {
        // As the service does: a repeated activation learns it is done, under the lock.
        tx.commit().await?;
        return Ok(taken_at.elapsed());
    }
    let _: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "WITH inserted AS (INSERT INTO workspace_activations (tenant_id, workspace_id, activated_by) \
         VALUES ($1, $2, $3) ON CONFLICT (workspace_id) DO NOTHING RETURNING activated_at), \
         audited AS (INSERT INTO audit_events (tenant_id, workspace_id, actor_user_id, action, outcome, request_id, detail) \
         SELECT $1, $2, $3, 'activation', 'activated', 'bench', '{}' FROM inserted) \
         SELECT activated_at FROM inserted",
    )
    .bind(t.tenant)
    .bind(t.workspace)
    .bind(t.owner)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(taken_at.elapsed())
}
