//! What a profile changes in a started target: tenants made by its SQL, connection statuses set
//! by its SQL, the workspace lock read by its SQL, and bearer tokens carrying its claims.

use std::collections::BTreeMap;

use harbor_service::domain::{Provider, TenantId, UserId, WorkspaceId};
use harbor_service::lifecycle::ConnectionStatus;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::template::sql_literal;
use super::Profile;
use crate::evidence::AdvisoryKey;
use crate::fixtures::TenantWorkspace;
use crate::identity::{ClaimTimes, TokenKind, TokenMint};
use crate::target::TenantSpec;

/// Makes `spec`'s tenant with the profile's `fixtures.create_tenant`, in one transaction, and
/// reads its workspace lock with `database.workspace_lock`.
pub async fn create_tenant(
    profile: &Profile,
    db: &PgPool,
    spec: &TenantSpec,
) -> Result<(TenantWorkspace, Option<AdvisoryKey>), String> {
    let made = TenantWorkspace {
        tenant: TenantId(Uuid::new_v4()),
        workspace: WorkspaceId(Uuid::new_v4()),
        owner: UserId(Uuid::new_v4()),
        admin: UserId(Uuid::new_v4()),
        member: UserId(Uuid::new_v4()),
    };
    let tag = &Uuid::new_v4().simple().to_string()[..12];
    let settled = settled(spec.qbo);
    let values: BTreeMap<String, String> = [
        ("tenant", made.tenant.0.to_string()),
        ("workspace", made.workspace.0.to_string()),
        ("owner", made.owner.0.to_string()),
        ("admin", made.admin.0.to_string()),
        ("member", made.member.0.to_string()),
        ("name", spec.name.clone()),
        ("workspace_name", format!("{} workspace", spec.name)),
        ("owner_email", format!("owner-{tag}@{}.test", spec.name)),
        ("admin_email", format!("admin-{tag}@{}.test", spec.name)),
        ("member_email", format!("member-{tag}@{}.test", spec.name)),
        ("entitled", spec.entitled.to_string()),
        ("qbo_status", profile.status_name(spec.qbo)),
        ("qbo_settled_status", profile.status_name(settled)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let sql = profile.create_tenant.render(&values, &sql_literal)?;
    run_sql(db, &sql, "fixtures.create_tenant").await?;
    let lock = workspace_lock(profile, db, made.workspace).await?;
    Ok((made, lock))
}

/// Puts `workspace`'s `provider` connection in `status` with `fixtures.set_connection_status`.
pub async fn set_connection_status(
    profile: &Profile,
    db: &PgPool,
    workspace: WorkspaceId,
    provider: Provider,
    status: ConnectionStatus,
) -> Result<(), String> {
    let values: BTreeMap<String, String> = [
        ("workspace", workspace.0.to_string()),
        ("provider", profile.provider_name(provider)),
        ("status", profile.status_name(status)),
        ("settled_status", profile.status_name(settled(status))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let sql = profile
        .set_connection_status
        .render(&values, &sql_literal)?;
    run_sql(db, &sql, "fixtures.set_connection_status").await
}

/// The status a connection settles in: itself when settled, `NOT_CONNECTED` while pending.
fn settled(status: ConnectionStatus) -> ConnectionStatus {
    if status.is_settled() {
        status
    } else {
        ConnectionStatus::NotConnected
    }
}

/// The workspace lock's key, from `database.workspace_lock` (`None`: the profile names none).
async fn workspace_lock(
    profile: &Profile,
    db: &PgPool,
    workspace: WorkspaceId,
) -> Result<Option<AdvisoryKey>, String> {
    let Some(template) = &profile.workspace_lock else {
        return Ok(None);
    };
    let sql = template.render(&workspace_values(profile, workspace), &sql_literal)?;
    let row = sqlx::query(&sql).fetch_one(db).await.map_err(|e| {
        format!(
            "database.workspace_lock: {e} (it must be one SELECT giving key, or classid and objid)"
        )
    })?;
    // The `bigint` form: one `key` column, split as pg_locks shows it.
    if let Ok(key) = row.try_get::<i64, _>("key") {
        return Ok(Some(AdvisoryKey {
            classid: (key >> 32) as u32,
            objid: key as u32,
            bigint: true,
        }));
    }
    let column = |name: &str| -> Result<u32, String> {
        row.try_get::<i64, _>(name)
            .or_else(|_| row.try_get::<i32, _>(name).map(i64::from))
            .map(|v| v as u32)
            .map_err(|e| format!("database.workspace_lock: its {name} column: {e}"))
    };
    Ok(Some(AdvisoryKey {
        classid: column("classid")?,
        objid: column("objid")?,
        bigint: false,
    }))
}

/// Runs a fixture's statements in one transaction.
async fn run_sql(db: &PgPool, sql: &str, place: &str) -> Result<(), String> {
    let mut tx = db.begin().await.map_err(|e| format!("{place}: {e}"))?;
    use sqlx::Executor as _;
    let conn: &mut sqlx::PgConnection = &mut tx;
    conn.execute(sqlx::raw_sql(sql))
        .await
        .map_err(|e| format!("{place}: {e}"))?;
    tx.commit().await.map_err(|e| format!("{place}: {e}"))
}

/// A bearer token of `kind` for `user`, carrying the profile's claims, signed by `mint`.
pub fn bearer(profile: &Profile, mint: &TokenMint, user: UserId, kind: TokenKind) -> String {
    let t = ClaimTimes::of(kind);
    let values: BTreeMap<String, String> = [
        ("user", user.0.to_string()),
        ("issuer", t.issuer.to_owned()),
        ("audience", t.audience.to_owned()),
        ("iat", t.iat.to_string()),
        ("nbf", t.nbf.to_string()),
        ("exp", t.exp.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut claims = serde_json::Map::new();
    for (name, template) in &profile.claims {
        let value = match template.sole_name() {
            // A claim that is exactly a time is a number, as RFC 7519 §2 NumericDate wants.
            Some(n @ ("iat" | "nbf" | "exp")) => {
                serde_json::json!(values[n].parse::<i64>().unwrap_or_default())
            }
            _ => serde_json::Value::String(
                template
                    .render(&values, &super::template::verbatim)
                    .unwrap_or_default(),
            ),
        };
        claims.insert(name.clone(), value);
    }
    mint.sign_claims_as(kind, &serde_json::Value::Object(claims))
}

/// State query `name` on `workspace` from `[database.queries]`; a profile without its own schema
/// answers with the reference's.
pub fn state_query(profile: &Profile, name: &str, workspace: WorkspaceId) -> Option<String> {
    match profile.queries.get(name) {
        Some(t) => t
            .render(&workspace_values(profile, workspace), &sql_literal)
            .ok(),
        None if profile.schema.is_none() => {
            crate::target::state_queries::reference(name, workspace)
        }
        None => None,
    }
}

/// The values of a template on one workspace: `{workspace}` and the target's `{mode}`.
fn workspace_values(profile: &Profile, workspace: WorkspaceId) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("workspace".to_owned(), workspace.0.to_string()),
        ("mode".to_owned(), profile.mode.clone().unwrap_or_default()),
    ])
}
