//! Fixtures written straight into a scenario's database: tenants, workspaces (whose four
//! connection rows the schema creates), users, memberships, entitlements and connection states.

use harbor_service::domain::{Provider, TenantId, UserId, WorkspaceId};
use harbor_service::lifecycle::ConnectionStatus;
use sqlx::PgPool;
use uuid::Uuid;

/// Forces a connection's status (a fixture, not a lifecycle transition).
pub async fn connection_status(
    pool: &PgPool,
    workspace: WorkspaceId,
    provider: Provider,
    status: ConnectionStatus,
) -> Result<(), sqlx::Error> {
    let settled = if status.is_settled() {
        status
    } else {
        ConnectionStatus::NotConnected
    };
    sqlx::query("UPDATE connections SET status = $3, settled_status = $4 WHERE workspace_id = $1 AND provider = $2")
        .bind(workspace)
        .bind(provider.as_str())
        .bind(status.as_str())
        .bind(settled.as_str())
        .execute(pool)
        .await?;
    Ok(())
}

/// A ready-made tenant with one workspace, an owner, an admin and a plain member.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct TenantWorkspace {
    /// The tenant.
    pub tenant: TenantId,
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// A member with the owner role.
    pub owner: UserId,
    /// A member with the admin role.
    pub admin: UserId,
    /// A member with the member role.
    pub member: UserId,
}

impl TenantWorkspace {
    /// Creates the tenant, workspace, owner, admin and member; sets entitlement and the QBO status.
    pub async fn create(
        pool: &PgPool,
        name: &str,
        entitled: bool,
        qbo: ConnectionStatus,
    ) -> Result<Self, sqlx::Error> {
        let tenant = TenantId(Uuid::new_v4());
        let workspace = WorkspaceId(Uuid::new_v4());
        let (owner, admin, plain) = (
            UserId(Uuid::new_v4()),
            UserId(Uuid::new_v4()),
            UserId(Uuid::new_v4()),
        );
        let tag = Uuid::new_v4().simple().to_string();
        // One statement, one round trip and one commit rather than ten: exploration makes a
        // workspace for every schedule. The foreign keys are checked at the statement's end, when
        // every row of it is there. The workspace's connections come from its trigger, which also
        // fires only then — so a QuickBooks status other than the default is a second statement.
        sqlx::query(
            "WITH t AS (INSERT INTO tenants (id, name) VALUES ($1, $2)), \
             w AS (INSERT INTO workspaces (id, tenant_id, name) VALUES ($3, $1, $2 || ' workspace')), \
             u AS (INSERT INTO users (id, tenant_id, email) VALUES \
                 ($4, $1, 'owner-' || $7 || '@' || $2 || '.test'), \
                 ($5, $1, 'admin-' || $7 || '@' || $2 || '.test'), \
                 ($6, $1, 'member-' || $7 || '@' || $2 || '.test')), \
             m AS (INSERT INTO memberships (tenant_id, workspace_id, user_id, role) VALUES \
                 ($1, $3, $4, 'owner'), ($1, $3, $5, 'admin'), ($1, $3, $6, 'member')) \
             INSERT INTO entitlements (tenant_id, workspace_id, plan, active) \
             VALUES ($1, $3, 'standard', $8)",
        )
        .bind(tenant)
        .bind(name)
        .bind(workspace)
        .bind(owner)
        .bind(admin)
        .bind(plain)
        .bind(&tag)
        .bind(entitled)
        .execute(pool)
        .await?;
        if qbo != ConnectionStatus::NotConnected {
            connection_status(pool, workspace, Provider::Qbo, qbo).await?;
        }
        Ok(Self {
            tenant,
            workspace,
            owner,
            admin,
            member: plain,
        })
    }
}
