//! Verified identity and workspace membership (audit finding 7.2, recommendation 8.1).
//!
//! Identity comes only from `Authorization: Bearer <JWT>` verified against the gateway's public
//! keys; headers such as `X-User-Id` are never read. Every workspace route takes a
//! [`crate::request_tx::WorkspaceRequest`], whose transaction checks membership in the database
//! before anything else runs in it ([`WorkspaceMember`] is what it finds). A caller who is not a
//! member gets 404, not 403, so workspace ids cannot be probed for existence.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::domain::{ParseError, Provider, Role, TenantId, UserId, WorkspaceId};
use crate::error::ApiError;
use crate::state::AppState;

// The verifier lives in `jwt`, below the state that holds it; its old path stays valid.
pub use crate::jwt::{JwtVerifier, KeyError};

/// The verified caller of a request.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    /// The user, from the token's `sub`.
    pub user_id: UserId,
}

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if crate::flaws::active(crate::flaws::Flaw::TrustUserHeader) {
            // Seeded flaw: the v1 "identity from a header" defect of the audit's finding R3.
            if let Some(user) = parts.headers.get("x-user-id").and_then(|v| v.to_str().ok()) {
                return Ok(Identity {
                    user_id: UserId::parse(user)?,
                });
            }
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthenticated("missing bearer token"))?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::Unauthenticated("malformed authorization header"))?;
        // The scheme is case-insensitive (RFC 7235 §2.1): `Bearer`, `bearer`, `BEARER`.
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or(ApiError::Unauthenticated(
                "authorization is not a bearer token",
            ))?;
        let user_id = state.jwt.verify(token.trim())?;
        Ok(Identity { user_id })
    }
}

/// A verified caller who is a member of the workspace named in the path, as a request's
/// transaction found it ([`crate::request_tx::WorkspaceRequest::begin`]).
#[derive(Clone, Copy, Debug)]
pub struct WorkspaceMember {
    /// The caller.
    pub user_id: UserId,
    /// The workspace from the path.
    pub workspace_id: WorkspaceId,
    /// The workspace's tenant.
    pub tenant_id: TenantId,
    /// The caller's role in it.
    pub role: Role,
}

impl WorkspaceMember {
    /// Refuses callers whose role may not administer the workspace.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role.can_administer() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this operation needs the owner or admin role",
            ))
        }
    }
}

/// Looks up the caller's membership; `None` when they are not a member (or the workspace does not
/// exist — the two are deliberately indistinguishable).
pub async fn membership(
    pool: &sqlx::PgPool,
    workspace_id: WorkspaceId,
    user_id: UserId,
) -> Result<Option<(TenantId, Role)>, ApiError> {
    // Through the owner's look-up function: row-level security hides `memberships` from a
    // session that has no tenant yet (migration 0006).
    let row: Option<(TenantId, String)> = crate::db::retry_lost(pool, || {
        sqlx::query_as("SELECT tenant_id, role FROM harbor_membership($1, $2)")
            .bind(workspace_id)
            .bind(user_id)
            .fetch_optional(pool)
    })
    .await?;
    match row {
        None => Ok(None),
        Some((tenant, role)) => Ok(Some((
            tenant,
            Role::parse(&role).map_err(ApiError::stored)?,
        ))),
    }
}

/// The caller's role in a workspace (`$1`, `$2`), read under a shared lock on the membership
/// (`harbor_membership_held`, migration 0016), and then the workspace lock (`$3`, `$4`), taken only
/// when the role is one of `$5`, in one statement. The function runs to completion before its row
/// is projected (PL/pgSQL, never inlined), so the lock is asked for only once the membership is
/// held and read, and a caller refused for their role never waits for it.
pub const MEMBERSHIP_HELD_AND_LOCK: &str = "SELECT h.role, \
    CASE WHEN h.role = ANY($5) THEN pg_advisory_xact_lock($3, $4)::text END IS NOT NULL \
    FROM harbor_membership_held($1, $2) AS h(role)";

/// What [`admin_membership_then_lock`] found.
pub enum AdminEntry {
    /// Not (or no longer) a member of the workspace.
    NotMember,
    /// A member whose role may not administer the workspace: no lock was taken.
    NotAdmin,
    /// An owner or admin, and the workspace lock taken.
    Locked(crate::locks::WorkspaceLock),
}

/// The caller's role in `workspace_id`, read inside `tx` under a shared lock on the membership, and
/// `lock`'s workspace lock in the same round trip when that role may administer the workspace
/// ([`MEMBERSHIP_HELD_AND_LOCK`]). A removal or a role change either committed before and is seen
/// here, or waits until `tx` ends — so what the request decides under its locks rests on a
/// membership that still holds when it commits.
pub async fn admin_membership_then_lock(
    tx: &mut crate::db::Tx,
    workspace_id: WorkspaceId,
    user_id: UserId,
    lock: crate::locks::LockFor,
) -> Result<AdminEntry, ApiError> {
    let (role, locked): (Option<String>, bool) =
        admin_entry(MEMBERSHIP_HELD_AND_LOCK, workspace_id, user_id, lock)
            .fetch_one(&mut **tx)
            .await?;
    let Some(role) = role else {
        return Ok(AdminEntry::NotMember);
    };
    // The role decides, not whether the statement locked: a lock taken for a role that may not
    // administer would only be released at the transaction's end.
    match (
        Role::parse(&role)
            .map_err(ApiError::stored)?
            .can_administer(),
        locked,
    ) {
        (true, true) => Ok(AdminEntry::Locked(lock.taken_by_statement(workspace_id))),
        (false, _) => Ok(AdminEntry::NotAdmin),
        (true, false) => Err(ApiError::Database(sqlx::Error::Protocol(format!(
            "{MEMBERSHIP_HELD_AND_LOCK}: no lock for the role {role}"
        )))),
    }
}

/// [`MEMBERSHIP_HELD_AND_LOCK`] without a wait: the membership's hold and the workspace lock are
/// each tried (`harbor_membership_try_hold`, migration 0022; `pg_try_advisory_xact_lock`), the
/// lock only once the hold is taken and the role is one of `$5`. Its columns: whether both were
/// taken, and the transaction's id (assigned now: a commit whose reply is lost is then asked
/// about by that id, `pg_xact_status`).
pub const MEMBERSHIP_AND_LOCK_TRIED: &str = "SELECT \
    CASE WHEN h.held AND h.role = ANY($5) THEN pg_try_advisory_xact_lock($3, $4) END IS TRUE, \
    pg_current_xact_id()::text::bigint \
    FROM harbor_membership_try_hold($1, $2) AS h";

/// [`admin_membership_then_lock`] for a request that must not wait: the workspace lock when the
/// caller is an owner or admin and neither the membership's hold nor the lock is taken by
/// someone else now; `None` otherwise — held elsewhere, not a member, not an admin — and then
/// whatever was taken is the transaction's until it ends. With it, the transaction's id.
pub async fn admin_membership_try_lock(
    tx: &mut crate::db::Tx,
    workspace_id: WorkspaceId,
    user_id: UserId,
    lock: crate::locks::LockFor,
) -> Result<(Option<crate::locks::WorkspaceLock>, i64), ApiError> {
    let (locked, xid): (bool, i64) =
        admin_entry(MEMBERSHIP_AND_LOCK_TRIED, workspace_id, user_id, lock)
            .fetch_one(&mut **tx)
            .await?;
    Ok((locked.then(|| lock.taken_by_statement(workspace_id)), xid))
}

/// One of the two admin entry statements with its parameters bound: the workspace and the caller
/// (`$1`, `$2`), `lock`'s key (`$3`, `$4`) and the roles that may administer (`$5`).
pub fn admin_entry<O>(
    sql: &'static str,
    workspace_id: WorkspaceId,
    user_id: UserId,
    lock: crate::locks::LockFor,
) -> sqlx::query::QueryAs<'static, sqlx::Postgres, O, sqlx::postgres::PgArguments>
where
    O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    let key = lock.key(workspace_id);
    sqlx::query_as(sql)
        .bind(workspace_id)
        .bind(user_id)
        .bind(key.classid)
        .bind(key.objid)
        .bind(Role::names_let_through(true))
}

/// Reads a named path segment without axum's plain-text rejections.
async fn path_segment(
    parts: &mut Parts,
    state: &AppState,
    name: &'static str,
) -> Result<String, ApiError> {
    let Path(params): Path<HashMap<String, String>> = Path::from_request_parts(parts, state)
        .await
        .map_err(|_| ParseError::new(name, "malformed path"))?;
    params
        .get(name)
        .cloned()
        .ok_or_else(|| ParseError::new(name, "missing from the path").into())
}

/// The `{workspace_id}` path segment, parsed.
pub(crate) async fn workspace_path(
    parts: &mut Parts,
    state: &AppState,
) -> Result<WorkspaceId, ApiError> {
    Ok(WorkspaceId::parse(
        &path_segment(parts, state, "workspace_id").await?,
    )?)
}

/// The `{provider}` path segment, parsed.
#[derive(Clone, Copy, Debug)]
pub struct ProviderPath(pub Provider);

impl FromRequestParts<AppState> for ProviderPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ProviderPath(Provider::parse(
            &path_segment(parts, state, "provider").await?,
        )?))
    }
}
