//! [`WorkspaceRequest`]: a member's request to a workspace route, and the one way its handler
//! opens a transaction — scoped to the member's tenant for row-level security and tagged with the
//! request's actor, so the harness can find its backend in the lock tables.
//!
//! The extractor opens nothing itself: a handler calls [`WorkspaceRequest::begin`] where its
//! transaction starts. Several handlers talk to Redis or a provider first, and nothing may wait on
//! either while the workspace lock (taken inside the transaction) is held; some open a second
//! transaction after the first is committed.
//!
//! Transactions that are not a member's request to a workspace route (the OAuth callback, whose
//! tenant is the caller's and whose workspace comes from the consumed state; the untagged
//! bookkeeping of a seeded flaw) call [`crate::db::begin`] directly, and say why where they do.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use sqlx::PgPool;

use crate::auth::WorkspaceMember;
use crate::context::RequestContext;
use crate::db::{self, Tx};
use crate::error::ApiError;
use crate::state::AppState;

/// A verified member's request to a workspace route: the request's context, the membership, and
/// the pool its transactions come from. Extract it in place of `Extension<RequestContext>` and
/// [`WorkspaceMember`]; it runs the same checks in the same order.
#[derive(Clone, Debug)]
pub struct WorkspaceRequest {
    /// The request id and the harness's actor tag.
    pub ctx: RequestContext,
    /// The caller, the workspace from the path, its tenant and the caller's role.
    pub member: WorkspaceMember,
    pool: PgPool,
}

impl WorkspaceRequest {
    /// Begins a transaction of this request: scoped to the member's tenant, tagged with the
    /// request's actor, and still the caller's membership — read again inside it, the row locked
    /// `FOR SHARE` ([`crate::auth::membership_in`]), so a removal that committed since the
    /// extractor read it answers 404, and one that comes later waits for this transaction. Finish
    /// it with [`crate::db::finish`].
    pub async fn begin(&self) -> Result<Tx, ApiError> {
        self.begin_needing(false).await
    }

    /// [`WorkspaceRequest::begin`] for an operation that needs the owner or admin role: the role
    /// is checked inside the transaction too, so a demotion that committed while the request
    /// waited (for a pooled connection, a lock) is not ignored: 403 `FORBIDDEN`.
    pub async fn begin_as_admin(&self) -> Result<Tx, ApiError> {
        self.begin_needing(true).await
    }

    async fn begin_needing(&self, admin: bool) -> Result<Tx, ApiError> {
        let member = &self.member;
        let mut tx = db::begin(&self.pool, self.ctx.actor.as_ref(), member.tenant_id).await?;
        // Seeded flaw: the membership was never checked; checking it here would hide the flaw.
        if crate::flaws::active(crate::flaws::Flaw::NoMembershipCheck) {
            return Ok(tx);
        }
        let refused =
            match crate::auth::membership_in(&mut tx, member.workspace_id, member.user_id).await {
                Ok(Some(role)) if admin && !role.can_administer() => Some(ApiError::Forbidden(
                    "this operation needs the owner or admin role",
                )),
                Ok(Some(_)) => None,
                Ok(None) => Some(ApiError::NotFound),
                Err(e) => Some(e),
            };
        match refused {
            None => Ok(tx),
            Some(error) => db::finish(tx, Err(error)).await,
        }
    }
}

impl FromRequestParts<AppState> for WorkspaceRequest {
    /// Whatever the context's or the membership's extractor answers, unchanged.
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Extension(ctx) = Extension::<RequestContext>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let member = WorkspaceMember::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(WorkspaceRequest {
            ctx,
            member,
            pool: state.db.clone(),
        })
    }
}
