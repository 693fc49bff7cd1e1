//! The append-only audit trail: who did what to which workspace, with what outcome. Audit rows are
//! written inside the request's transaction, so a rolled-back change leaves no audit row claiming
//! it happened. Never pass secrets in `detail`.
//!
//! A change that is audited every time it happens (a connection's transition or stored refresh, a
//! first activation, a delivered revocation's settlement) writes its row in the change's own
//! statement ([`insert_for_each`], a data-modifying `WITH`): one round trip for both, and no row
//! when the change matched nothing. Every other event is [`record`]ed on its own.

use std::sync::LazyLock;

use serde_json::Value;

use crate::context::RequestContext;
use crate::db::Tx;
use crate::domain::{TenantId, UserId, WorkspaceId};

/// One audit event.
#[derive(Clone, Debug)]
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

/// How many values an event binds ([`bind_event!`]).
pub(crate) const VALUES: usize = 7;

/// `INSERT INTO audit_events` of one row whose values are the statement's parameters from
/// `$first` on, bound by [`bind_event!`]; one row for each row of `source` when it is given.
pub(crate) fn insert_for_each(first: usize, source: Option<&str>) -> String {
    let values: Vec<String> = (first..first + VALUES).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO audit_events (tenant_id, workspace_id, actor_user_id, action, outcome, request_id, detail) \
         SELECT {}{}",
        values.join(", "),
        source.map(|s| format!(" FROM {s}")).unwrap_or_default()
    )
}

/// Binds an event's values, in [`insert_for_each`]'s column order, as the next parameters of any
/// of sqlx's query builders.
macro_rules! bind_event {
    ($query:expr, $ctx:expr, $event:expr) => {{
        let event: $crate::audit::AuditEvent<'_> = $event;
        $query
            .bind(event.tenant_id)
            .bind(event.workspace_id)
            .bind(event.actor_user_id)
            .bind(event.action)
            .bind(event.outcome)
            .bind(&$ctx.request_id)
            .bind(event.detail)
    }};
}
pub(crate) use bind_event;

/// Appends an event inside the request's transaction.
pub async fn record(
    tx: &mut Tx,
    ctx: &RequestContext,
    event: AuditEvent<'_>,
) -> Result<(), sqlx::Error> {
    static INSERT: LazyLock<String> = LazyLock::new(|| insert_for_each(1, None));
    bind_event!(sqlx::query(&INSERT), ctx, event)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
