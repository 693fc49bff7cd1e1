//! Connection routes: list (metadata only), disconnect and revoke. Transitions are decided by
//! [`crate::lifecycle`] under the workspace lock and the row lock, and audited.
//!
//! Past 500 lines on purpose: disconnect and revoke share one ending (`end`: the transition, the
//! grant's revocation intent in the same transaction, the commit, then the provider's revocation
//! with the outbox as its fallback), and it reads as one piece with the view both answer with.

use std::sync::LazyLock;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::json;

use crate::audit::AuditEvent;
use crate::auth::{ProviderPath, WorkspaceMember};
use crate::context::RequestContext;
use crate::db::{self, Tx};
use crate::domain::{Provider, WorkspaceId};
use crate::error::ApiError;
use crate::lifecycle::{self, ConnectionStatus, LockedConnection, Transition};
use crate::locks::{self, LockFor};
use crate::outbox;
use crate::providers::TokenKind;
use crate::request_tx::WorkspaceRequest;
use crate::state::AppState;
use crate::syncpoints::{self, SyncHooks};
use crate::tokens;

/// What a client may know about a connection: metadata, never token material or ciphertext.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"provider": "qbo", "status": "CONNECTED", "connected": true, "has_refresh_token": true, "scopes": ["qbo.read", "offline_access"], "expires_at": "2026-11-23T17:05:14Z", "refresh_expires_at": "2027-03-03T16:05:14Z", "last_refresh_at": null, "last_refresh_outcome": null, "updated_at": "2026-11-23T16:05:14Z"}))]
pub struct ConnectionView {
    /// The provider.
    pub provider: Provider,
    /// The lifecycle status.
    pub status: ConnectionStatus,
    /// Shorthand for `status == CONNECTED`.
    pub connected: bool,
    /// Whether a refresh token is stored.
    pub has_refresh_token: bool,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// When the access token expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the grant ends unless it is refreshed before: its refresh token's expiry, where the
    /// provider says (QuickBooks) or documents one (Box), or, with no refresh token, its access
    /// token's. Past it the connection must be made again; `null` when unknown or never.
    pub refresh_expires_at: Option<DateTime<Utc>>,
    /// When the tokens were last refreshed.
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// How the last refresh ended (`ok`), or why the grant was found over: `invalid_grant` (the
    /// provider refused the refresh), `token_refused` (refused at the resource with nothing left
    /// to refresh), `grant_expired` (past `refresh_expires_at`), `write_ahead_failed`.
    pub last_refresh_outcome: Option<String>,
    /// When the connection last changed.
    pub updated_at: DateTime<Utc>,
}

/// The workspace's connections.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"connections": [{"provider": "qbo", "status": "CONNECTED", "connected": true, "has_refresh_token": true, "scopes": ["qbo.read", "offline_access"], "expires_at": "2026-11-23T17:05:14Z", "refresh_expires_at": "2027-03-03T16:05:14Z", "last_refresh_at": null, "last_refresh_outcome": null, "updated_at": "2026-11-23T16:05:14Z"}]}))]
pub struct ConnectionList {
    /// One entry per provider.
    pub connections: Vec<ConnectionView>,
}

/// The queries that build views: they select [`lifecycle::VIEW_COLUMNS`], metadata only. One
/// connection of a workspace ($1) by provider ($2):
static VIEW_OF_ONE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM connections WHERE workspace_id = $1 AND provider = $2",
        lifecycle::VIEW_COLUMNS
    )
});
/// Every connection of a workspace ($1), by provider.
static VIEW_OF_ALL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM connections WHERE workspace_id = $1 ORDER BY provider",
        lifecycle::VIEW_COLUMNS
    )
});

/// The view of a row of [`lifecycle::VIEW_COLUMNS`] (as a stored change returns it).
pub(crate) fn view(
    (
        provider,
        status,
        has_refresh_token,
        scopes,
        expires_at,
        last_refresh_at,
        last_refresh_outcome,
        updated_at,
        refresh_expires_at,
    ): lifecycle::ViewRow,
) -> Result<ConnectionView, ApiError> {
    let status = ConnectionStatus::parse(&status)?;
    Ok(ConnectionView {
        provider: Provider::parse(&provider).map_err(ApiError::stored)?,
        status,
        connected: status == ConnectionStatus::Connected,
        has_refresh_token,
        scopes,
        expires_at,
        refresh_expires_at,
        last_refresh_at,
        last_refresh_outcome,
        updated_at,
    })
}

/// Reads the view of one connection inside the request's transaction.
pub async fn read_view(
    tx: &mut Tx,
    workspace_id: WorkspaceId,
    provider: Provider,
) -> Result<ConnectionView, ApiError> {
    let row: lifecycle::ViewRow = sqlx::query_as(&VIEW_OF_ONE)
        .bind(workspace_id)
        .bind(provider.as_str())
        .fetch_one(&mut **tx)
        .await?;
    view(row)
}

/// Lists the workspace's connections (status and metadata only).
#[utoipa::path(
    get,
    path = "/v1/workspaces/{workspace_id}/connections",
    params(("workspace_id" = uuid::Uuid, Path, description = "The workspace")),
    responses(
        (status = 200, description = "The connections", body = ConnectionList),
    ),
    security(("bearer" = [])),
    tag = "connections"
)]
pub async fn list(
    State(state): State<AppState>,
    request: WorkspaceRequest,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if crate::flaws::active(crate::flaws::Flaw::TokenExposure) {
        return list_exposing_tokens(&state, &request)
            .await
            .map(IntoResponse::into_response);
    }
    let (mut tx, _) = request.begin().await?;
    let result = async {
        let rows: Vec<lifecycle::ViewRow> = sqlx::query_as(&VIEW_OF_ALL)
            .bind(request.workspace_id)
            .fetch_all(&mut *tx)
            .await?;
        rows.into_iter().map(view).collect::<Result<Vec<_>, _>>()
    }
    .await;
    let connections = db::finish(tx, result).await?;
    Ok(Json(ConnectionList { connections }).into_response())
}

/// Seeded flaw `token-exposure`: the "settings info leakage" of the threat model — the list
/// carries each connection's decrypted access token.
async fn list_exposing_tokens(
    state: &AppState,
    request: &WorkspaceRequest,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (mut tx, member) = request.begin().await?;
    let result: Result<Vec<serde_json::Value>, ApiError> = async {
        let rows: Vec<lifecycle::ViewRow> = sqlx::query_as(&VIEW_OF_ALL)
            .bind(member.workspace_id)
            .fetch_all(&mut *tx)
            .await?;
        let lock = locks::lock_workspace(&mut tx, member.workspace_id).await?;
        let mut out = Vec::new();
        for row in rows {
            let v = view(row)?;
            let provider = v.provider;
            let mut json = serde_json::to_value(&v).unwrap_or_default();
            let connection = lifecycle::lock_connection(&mut tx, &lock, provider).await?;
            if let Some((access, _)) = tokens::open_tokens(&state.vault, &connection)? {
                json["access_token"] = secrecy::ExposeSecret::expose_secret(&access).into();
            }
            out.push(json);
        }
        Ok(out)
    }
    .await;
    let connections = db::finish(tx, result).await?;
    Ok(Json(json!({ "connections": connections })))
}

/// Disconnects a connection: `DISCONNECTED`, tokens wiped, the documents its grant fetched
/// deleted in the same transaction (migration 0024), and its grant revoked at the provider
/// (through the revocation outbox, as revoke does: an account switch leaves no grant live).
/// Owner or admin only.
#[utoipa::path(
    post,
    path = "/v1/workspaces/{workspace_id}/connections/{provider}/disconnect",
    params(
        ("workspace_id" = uuid::Uuid, Path, description = "The workspace"),
        ("provider" = Provider, Path, description = "qbo, gmail, slack or box"),
    ),
    responses(
        (status = 200, description = "Disconnected; `provider_revocation` says whether the provider confirmed the grant's revocation (`pending`: the outbox is still trying)", body = EndedConnection),
    ),
    security(("bearer" = [])),
    tag = "connections"
)]
pub async fn disconnect(
    State(state): State<AppState>,
    request: WorkspaceRequest,
    ProviderPath(provider): ProviderPath,
) -> Result<Json<EndedConnection>, ApiError> {
    end(state, request, provider, Transition::Disconnect).await
}

/// What the provider said about a revoked grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderRevocation {
    /// The provider confirmed the revocation (RFC 7009).
    Confirmed,
    /// The connection held no tokens, so there was nothing to revoke.
    NoTokens,
    /// The stored tokens could not be decrypted, so the provider could not be told.
    Undecryptable,
    /// The provider did not confirm yet; the revocation stays in the outbox and every replica
    /// retries it until it does.
    Pending,
    /// Not revoked yet: another connection holds a live grant of the same provider account, and
    /// the provider keeps one consent per account (Google), so revoking this grant now would end
    /// that one too. The tokens are wiped here; the revocation waits in the outbox, parked, until
    /// the account's last holder ends.
    ConsentHeldElsewhere,
}

impl ProviderRevocation {
    /// The name in responses and audit rows.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderRevocation::Confirmed => "confirmed",
            ProviderRevocation::NoTokens => "no_tokens",
            ProviderRevocation::Undecryptable => "undecryptable",
            ProviderRevocation::Pending => "pending",
            ProviderRevocation::ConsentHeldElsewhere => "consent_held_elsewhere",
        }
    }
}

/// A revoked or disconnected connection, and whether the provider confirmed its grant's
/// revocation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"provider": "qbo", "status": "REVOKED", "connected": false, "has_refresh_token": false, "scopes": [], "expires_at": null, "refresh_expires_at": null, "last_refresh_at": null, "last_refresh_outcome": null, "updated_at": "2026-11-23T16:05:14Z", "provider_revocation": "confirmed"}))]
pub struct EndedConnection {
    /// The connection, now `REVOKED` or `DISCONNECTED`.
    #[serde(flatten)]
    pub connection: ConnectionView,
    /// What the provider said; `pending` means the outbox is still trying, `no_tokens` that there
    /// was no grant to give back, `consent_held_elsewhere` that another connection's grant is one
    /// consent with it (Google's, per account), so its revocation is parked until the account's
    /// last holder ends.
    pub provider_revocation: ProviderRevocation,
}

/// Revokes a connection's grant. Owner or admin only. Under the locks the stored grant is
/// decrypted, the connection becomes `REVOKED` with its tokens wiped and the documents its grant
/// fetched deleted, and that is committed; only
/// then is the provider's revocation endpoint called (from a task a disconnecting client cannot
/// cancel), and its answer audited and returned in `provider_revocation`. Nothing waits on the
/// provider while the workspace is locked.
#[utoipa::path(
    post,
    path = "/v1/workspaces/{workspace_id}/connections/{provider}/revoke",
    params(
        ("workspace_id" = uuid::Uuid, Path, description = "The workspace"),
        ("provider" = Provider, Path, description = "qbo, gmail, slack or box"),
    ),
    responses(
        (status = 200, description = "Revoked; `provider_revocation` says whether the provider confirmed", body = EndedConnection),
    ),
    security(("bearer" = [])),
    tag = "connections"
)]
pub async fn revoke(
    State(state): State<AppState>,
    request: WorkspaceRequest,
    ProviderPath(provider): ProviderPath,
) -> Result<Json<EndedConnection>, ApiError> {
    end(state, request, provider, Transition::Revoke).await
}

/// Disconnect or revoke: the transition and the grant's revocation intent in one transaction, then
/// the provider told at once, from a task a disconnecting client cannot cancel (the outbox's
/// workers retry what this could not deliver).
async fn end(
    state: AppState,
    request: WorkspaceRequest,
    provider: Provider,
    transition: Transition,
) -> Result<Json<EndedConnection>, ApiError> {
    let (member, (connection, grant, mut intent, deferred)) =
        self::transition(&state, &request, provider, transition).await?;
    SyncHooks::reach(
        state.sync_points.as_ref(),
        &request.ctx,
        syncpoints::LIFECYCLE_COMMITTED,
    )
    .await?;
    if let Some((ended, reason)) = deferred {
        // Seeded flaw: the intent only now, in a transaction of its own.
        let (mut tx, _) = request.begin_as_admin().await?;
        let written = outbox::record(
            &mut tx,
            &ended,
            request.workspace_id,
            reason,
            state.clock.now(),
        )
        .await
        .map(outbox::Recorded::intent)
        .map_err(ApiError::from);
        intent = db::finish(tx, written).await?;
    }
    let provider_revocation = match (grant, intent) {
        (GrantToRevoke::Token(token, kind), Some(intent)) => {
            let flaws_of_request = state.flaws.clone();
            let action = match transition {
                Transition::Revoke => "revoke.provider",
                _ => "disconnect.provider",
            };
            let told = tell_provider(
                state.clone(),
                request.ctx.clone(),
                member,
                provider,
                (token, kind),
                intent,
                action,
            );
            let task = state
                .tasks
                .spawn(crate::context::within_request(async move {
                    crate::flaws::scope(&flaws_of_request, told).await
                }));
            task.await
                .map_err(|e| ApiError::task_failed("revocation", e))?
        }
        (GrantToRevoke::Undecryptable, _) => ProviderRevocation::Undecryptable,
        (GrantToRevoke::ConsentHeldElsewhere, _) => ProviderRevocation::ConsentHeldElsewhere,
        // An intent is written whenever the row held tokens; without one there was nothing to
        // give back (or, under the seeded flaw, nothing was asked).
        (GrantToRevoke::Token(..) | GrantToRevoke::NoTokens | GrantToRevoke::NotRequested, _) => {
            ProviderRevocation::NoTokens
        }
    };
    Ok(Json(EndedConnection {
        connection,
        provider_revocation,
    }))
}

/// What a committed revoke or disconnect left to do: its view, the grant to give back, the intent
/// written with it — and, only under the seeded flaw `outbox-outside-transaction`, the intent
/// still to write.
type Ended = (
    ConnectionView,
    GrantToRevoke,
    Option<outbox::IntentId>,
    Option<(LockedConnection, outbox::Reason)>,
);

/// The grant a committed revoke still has to give back at the provider.
enum GrantToRevoke {
    /// The token to revoke (the refresh token if there is one: it ends the whole grant).
    Token(SecretString, TokenKind),
    /// There were no tokens.
    NoTokens,
    /// The tokens did not decrypt (a key gone, a tampered row): wiped without telling the provider.
    Undecryptable,
    /// Not asked for (seeded flaw `disconnect-without-revocation`).
    NotRequested,
    /// Parked: another connection holds a live grant of the same provider account, one consent
    /// with this one (`outbox::Recorded::ConsentHeldElsewhere`).
    ConsentHeldElsewhere,
}

impl GrantToRevoke {
    fn audit_name(&self) -> &'static str {
        match self {
            GrantToRevoke::Token(..) => "pending",
            GrantToRevoke::NoTokens => "no_tokens",
            GrantToRevoke::Undecryptable => "undecryptable",
            GrantToRevoke::NotRequested => "not_requested",
            GrantToRevoke::ConsentHeldElsewhere => {
                ProviderRevocation::ConsentHeldElsewhere.as_str()
            }
        }
    }
}

async fn transition(
    state: &AppState,
    request: &WorkspaceRequest,
    provider: Provider,
    transition: Transition,
) -> Result<(WorkspaceMember, Ended), ApiError> {
    let ctx = &request.ctx;
    let hooks = state.sync_points.as_ref();
    // The workspace lock and the row lock, with the `locked` point between them where the
    // harness parks the request: there the schedule, not PostgreSQL, decides who takes the row
    // next when this request and a writer waiting for the row are let go together
    // (`WorkspaceRequest::begin_locked_with_row`).
    let locked_at = (hooks, syncpoints::LIFECYCLE_LOCKED);
    let (mut tx, member, lock, connection) = request
        .begin_locked_with_row(true, LockFor::Workspace, provider, locked_at)
        .await?;
    let result = async {
        // Seeded flaw: disconnect wipes the tokens and never tells the provider (the grant stays
        // live with no copy anywhere).
        let mut grant = if transition == Transition::Disconnect
            && crate::flaws::active(crate::flaws::Flaw::DisconnectWithoutRevocation)
        {
            GrantToRevoke::NotRequested
        } else {
            grant_of(state, &connection)
        };
        // The intent to revoke is written with the wipe: committed together, or not at all.
        let reason = match transition {
            Transition::Revoke => outbox::Reason::Revoke,
            _ => outbox::Reason::Disconnect,
        };
        let outside = crate::flaws::active(crate::flaws::Flaw::OutboxOutsideTransaction);
        let deferred = match grant {
            GrantToRevoke::Token(..) if outside => Some((connection.clone(), reason)),
            _ => None,
        };
        let intent = match grant {
            GrantToRevoke::Undecryptable => {
                // No token to revoke; grants parked behind this one are let go if it was their
                // account's last holder.
                outbox::holder_ended(&mut tx, &connection, state.clock.now()).await?;
                None
            }
            GrantToRevoke::Token(..) if !outside => {
                let recorded = outbox::record(
                    &mut tx,
                    &connection,
                    member.workspace_id,
                    reason,
                    state.clock.now(),
                )
                .await?;
                if recorded == outbox::Recorded::ConsentHeldElsewhere {
                    grant = GrantToRevoke::ConsentHeldElsewhere;
                }
                recorded.intent()
            }
            _ => None,
        };
        let audit = lifecycle::Audit {
            ctx,
            event: |to: ConnectionStatus| AuditEvent {
                tenant_id: Some(member.tenant_id),
                workspace_id: Some(member.workspace_id),
                actor_user_id: Some(member.user_id),
                action: transition.as_str(),
                outcome: to.as_str(),
                detail: json!({
                    "provider": provider.as_str(),
                    "from": connection.status.as_str(),
                    "provider_revocation": grant.audit_name(),
                }),
            },
        };
        let (_, row) =
            lifecycle::apply(&mut tx, &lock, &connection, transition, None, audit).await?;
        SyncHooks::reach(hooks, ctx, syncpoints::LIFECYCLE_BEFORE_COMMIT).await?;
        Ok((view(row)?, grant, intent, deferred))
    }
    .await;
    db::finish(tx, result).await.map(|ended| (member, ended))
}

/// The stored grant, decrypted under the row lock so that the token to revoke is the one the
/// committed `REVOKED` wiped.
fn grant_of(state: &AppState, connection: &LockedConnection) -> GrantToRevoke {
    match tokens::open_tokens_to_revoke(&state.vault, connection) {
        Ok(Some((_, Some(refresh)))) => GrantToRevoke::Token(refresh, TokenKind::Refresh),
        Ok(Some((access, None))) => GrantToRevoke::Token(access, TokenKind::Access),
        Ok(None) => GrantToRevoke::NoTokens,
        // A key gone or a tampered row must not stop an admin from killing the connection: the
        // tokens are wiped locally and the audit row says the provider could not be told.
        Err(e) => {
            // Logged as the API error it amounts to ("token storage error"), as it always was.
            let e = ApiError::from(e);
            tracing::error!(provider = connection.provider.as_str(), error = %e, "stored tokens unreadable; wiping without provider revocation");
            GrantToRevoke::Undecryptable
        }
    }
}

/// After the commit: calls the provider's revocation endpoint (RFC 7009) and audits its answer.
/// The revoke itself is committed whatever happens here, so a failed audit write is logged, not
/// turned into an error response that would claim the revoke failed.
async fn tell_provider(
    state: AppState,
    ctx: RequestContext,
    member: WorkspaceMember,
    provider: Provider,
    (token, kind): (SecretString, TokenKind),
    intent: outbox::IntentId,
    action: &'static str,
) -> ProviderRevocation {
    let delivered = state
        .providers
        .revoke(provider, &token, kind)
        .await
        .map_err(outbox::Undelivered::from);
    let outcome = match &delivered {
        Ok(()) => ProviderRevocation::Confirmed,
        Err(e) => {
            tracing::warn!(provider = provider.as_str(), error = %e, "provider revocation failed; tokens already wiped locally, the outbox retries it");
            ProviderRevocation::Pending
        }
    };
    let event = AuditEvent {
        tenant_id: Some(member.tenant_id),
        workspace_id: Some(member.workspace_id),
        actor_user_id: Some(member.user_id),
        action,
        outcome: outcome.as_str(),
        detail: json!({ "provider": provider.as_str(), "provider_revocation": outcome.as_str() }),
    };
    // Not `request.begin()`: the revoke committed, and its outcome is recorded even if the
    // caller's membership ended since (an audit row, nothing decided on it). The intent is
    // settled in the same statement: one commit, not two.
    let now = state.clock.now();
    let recorded = outbox::settle_audited(
        &state.db,
        member.tenant_id,
        intent,
        &delivered,
        now,
        (&ctx, event),
    );
    if let Err(e) = recorded.await {
        // The intent stays; a worker delivers it again (a repeated revocation is harmless).
        tracing::error!(provider = provider.as_str(), outcome = outcome.as_str(), error = %e, "could not audit the provider's answer to a committed revoke, nor settle its intent (a worker delivers it again)");
    }
    outcome
}
