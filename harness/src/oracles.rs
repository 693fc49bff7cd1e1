//! Checks of the stored state that hold after any schedule, shared by scenarios, the load test and
//! the state machine: one implementation each, so they cannot drift apart.

use harbor_service::domain::{ConnectionId, Provider, TenantId, WorkspaceId};
use harbor_service::vault::{KeyRing, TokenBinding, TokenField};
use secrecy::ExposeSecret;
use sqlx::PgPool;

/// Every stored token (access and refresh) decrypts for its own row — tenant, connection,
/// provider, field and grant — and no two connections share one. `Ok` describes what was checked;
/// `Err` names the first broken row.
pub async fn tokens_bound(db: &PgPool, ring: &KeyRing) -> Result<String, String> {
    type Row = (ConnectionId, TenantId, String, Option<uuid::Uuid>, Vec<u8>, Option<Vec<u8>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, tenant_id, provider, grant_id, access_token, refresh_token FROM connections WHERE access_token IS NOT NULL",
    )
    .fetch_all(db)
    .await
    .map_err(|e| e.to_string())?;
    let mut seen = std::collections::HashSet::new();
    for (id, tenant, provider, grant, access, refresh) in &rows {
        let provider = Provider::parse(provider).map_err(|e| e.to_string())?;
        for (field, sealed) in [(TokenField::Access, Some(access)), (TokenField::Refresh, refresh.as_ref())] {
            let Some(sealed) = sealed else { continue };
            let binding = TokenBinding { tenant_id: *tenant, connection_id: *id, provider, field, grant_id: *grant };
            let plain = ring.decrypt(sealed, &binding).map_err(|e| format!("connection {id}: {e}"))?;
            if !seen.insert(plain.expose_secret().to_owned()) {
                return Err(format!("connection {id} shares a token with another connection"));
            }
        }
    }
    Ok(format!("{} stored connections: every token decrypts only for its own row and grant, none shared", rows.len()))
}

/// No backend holds or awaits `workspace`'s advisory lock (its key as `locks::lock_key_for_workspace`
/// derives it, matched against `pg_locks`). `Ok` describes what was checked; `Err` lists the locks.
pub async fn no_workspace_lock_held(db: &PgPool, workspace: WorkspaceId) -> Result<String, String> {
    let key = harbor_service::locks::lock_key_for_workspace(workspace);
    let locks = crate::evidence::lock_snapshot(db).await.map_err(|e| e.to_string())?;
    let held: Vec<_> = locks
        .iter()
        .filter(|l| l.locktype == "advisory" && l.classid == Some(i64::from(key.classid as u32)) && l.objid == Some(i64::from(key.objid as u32)))
        .collect();
    if held.is_empty() {
        Ok(format!("no backend holds or awaits workspace {workspace}'s lock"))
    } else {
        Err(format!("workspace {workspace}'s lock is still held or awaited: {held:?}"))
    }
}
