//! The connection lifecycle: the only place where transitions are decided (audit finding 7.1,
//! recommendation 8.2). Every transition runs under the workspace lock ([`WorkspaceLock`]) and the
//! connection's row lock (`SELECT … FOR UPDATE`).
//!
//! ```text
//!  NOT_CONNECTED ─┐
//!  DISCONNECTED  ─┼─ start_authorization ─► PENDING ─ complete_authorization ─► CONNECTED
//!  REVOKED       ─┘                           │  ▲                               │
//!                    fail_authorization ◄─────┘  └── start_authorization         ├─ disconnect ─► DISCONNECTED
//!                    (back to the settled status)                                ├─ revoke ─────► REVOKED
//!                                                                                └─ refresh_rejected ► REVOKED
//!  PENDING, REVOKED ─ disconnect ─► DISCONNECTED
//! ```
//!
//! Past 500 lines on purpose: the state machine, the row's one locked read and its one write
//! (with the change's audit row and the view it returns) are kept where they can be read together.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::{self, AuditEvent};
use crate::context::RequestContext;
use crate::db::Tx;
use crate::domain::{ConnectionId, Provider, TenantId};
use crate::locks::WorkspaceLock;

/// The columns a connection's view is built from: metadata only, so no token can reach a
/// response by accident. `connections` selects them, and every stored change returns them.
pub const VIEW_COLUMNS: &str =
    "provider, status, refresh_token IS NOT NULL, scopes, token_expires_at, \
     last_refresh_at, last_refresh_outcome, updated_at, refresh_expires_at";

/// A row of [`VIEW_COLUMNS`].
pub type ViewRow = (
    String,
    String,
    bool,
    Vec<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionStatus {
    /// Never connected.
    NotConnected,
    /// An authorization is under way.
    Pending,
    /// Tokens are stored and usable.
    Connected,
    /// A member disconnected it; tokens are wiped.
    Disconnected,
    /// The grant was revoked (by Harbor or the provider); tokens are wiped; re-authorize.
    Revoked,
}

impl ConnectionStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::NotConnected => "NOT_CONNECTED",
            ConnectionStatus::Pending => "PENDING",
            ConnectionStatus::Connected => "CONNECTED",
            ConnectionStatus::Disconnected => "DISCONNECTED",
            ConnectionStatus::Revoked => "REVOKED",
        }
    }

    /// Parses a stored name; the database's CHECK constraint makes anything else impossible.
    pub fn parse(raw: &str) -> Result<Self, sqlx::Error> {
        Ok(match raw {
            "NOT_CONNECTED" => ConnectionStatus::NotConnected,
            "PENDING" => ConnectionStatus::Pending,
            "CONNECTED" => ConnectionStatus::Connected,
            "DISCONNECTED" => ConnectionStatus::Disconnected,
            "REVOKED" => ConnectionStatus::Revoked,
            other => {
                return Err(sqlx::Error::Decode(
                    format!("unknown connection status {other:?}").into(),
                ))
            }
        })
    }

    /// Whether the status is a resting one (every status but `PENDING`).
    pub fn is_settled(self) -> bool {
        self != ConnectionStatus::Pending
    }
}

impl fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happens to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A member starts an OAuth authorization.
    StartAuthorization,
    /// The OAuth callback stored tokens.
    CompleteAuthorization,
    /// The OAuth callback failed (provider error): back to the settled status.
    FailAuthorization,
    /// An admin disconnects: tokens wiped.
    Disconnect,
    /// An admin revokes the grant at the provider: tokens wiped.
    Revoke,
    /// The provider refused a refresh (`invalid_grant`): re-authorization needed.
    RefreshRejected,
}

impl Transition {
    /// The transition's name in errors and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::StartAuthorization => "start_authorization",
            Transition::CompleteAuthorization => "complete_authorization",
            Transition::FailAuthorization => "fail_authorization",
            Transition::Disconnect => "disconnect",
            Transition::Revoke => "revoke",
            Transition::RefreshRejected => "refresh_rejected",
        }
    }

    /// Whether the transition ends with the tokens wiped.
    pub fn wipes_tokens(self) -> bool {
        matches!(
            self,
            Transition::Disconnect | Transition::Revoke | Transition::RefreshRejected
        )
    }
}

/// A transition the state machine forbids from the connection's current status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a connection that is {from}", transition.as_str())]
pub struct TransitionError {
    /// The status the connection was in.
    pub from: ConnectionStatus,
    /// What was attempted.
    pub transition: Transition,
}

/// Why a lifecycle read or change failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The workspace has no connection to the provider.
    #[error("no such connection")]
    NotFound,
    /// The state machine forbids the transition.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The code broke the lifecycle's own rules (a completion without tokens, a row that changed
    /// under its row lock): a bug, never the client's doing.
    #[error("{0}")]
    Inconsistent(String),
    /// PostgreSQL failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The state machine: the status after `transition` from `from`, where `settled` is the status a
/// failed authorization returns to.
pub fn next_status(
    from: ConnectionStatus,
    settled: ConnectionStatus,
    transition: Transition,
) -> Result<ConnectionStatus, TransitionError> {
    use ConnectionStatus::*;
    use Transition::*;
    let to = match (transition, from) {
        (StartAuthorization, NotConnected | Disconnected | Revoked | Pending) => Pending,
        (CompleteAuthorization, Pending) => Connected,
        (FailAuthorization, Pending) => settled,
        (Disconnect, Connected | Pending | Revoked) => Disconnected,
        (Revoke | RefreshRejected, Connected) => Revoked,
        _ => return Err(TransitionError { from, transition }),
    };
    Ok(to)
}

/// A connection's tokens as stored: ciphertext only (see [`crate::vault`]).
#[derive(Clone)]
pub struct SealedTokens {
    /// The encrypted access token.
    pub access_token: Vec<u8>,
    /// The encrypted refresh token, if the provider issued one.
    pub refresh_token: Option<Vec<u8>>,
    /// The key both were encrypted with.
    pub key_id: String,
    /// The grant both are bound to (part of their associated data); stored as the row's grant.
    pub grant_id: Option<uuid::Uuid>,
    /// When the access token expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the refresh token expires, where the provider says (`None`: unknown, or none).
    pub refresh_expires_at: Option<DateTime<Utc>>,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// The provider account the grant is for (QuickBooks's `realmId`), when the provider names one.
    pub account: Option<String>,
}

impl fmt::Debug for SealedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Ciphertext is not secret without the key, but it has no business in logs either.
        f.debug_struct("SealedTokens")
            .field("key_id", &self.key_id)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("expires_at", &self.expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish_non_exhaustive()
    }
}

/// A connection row as read under its row lock (or, by a sync's optimistic read, under none:
/// [`crate::request_tx::WorkspaceRequest::read_connection_unlocked`]).
#[derive(Clone, Debug)]
pub struct LockedConnection {
    /// The row's id.
    pub id: ConnectionId,
    /// The tenant that owns it.
    pub tenant_id: TenantId,
    /// The provider.
    pub provider: Provider,
    /// Its status when read.
    pub status: ConnectionStatus,
    /// The settled status a failed authorization returns to.
    pub settled_status: ConnectionStatus,
    /// Compare-and-set version, bumped by every change.
    pub version: i64,
    /// Its tokens, present only when `CONNECTED`.
    pub tokens: Option<SealedTokens>,
    /// The OAuth flow a `PENDING` connection waits for.
    pub pending_flow: Option<uuid::Uuid>,
    /// The grant a `CONNECTED` connection holds (new with each completed authorization).
    pub grant_id: Option<uuid::Uuid>,
}

impl LockedConnection {
    /// Whether its grant is past the end its provider gave it (`refresh_expires_at`): over at
    /// the provider whatever the row's status says. Seeded flaw `ignore-refresh-expiry`: never.
    pub fn grant_ended(&self, now: DateTime<Utc>) -> bool {
        !crate::flaws::active(crate::flaws::Flaw::IgnoreRefreshExpiry)
            && self
                .tokens
                .as_ref()
                .and_then(|t| t.refresh_expires_at)
                .is_some_and(|at| at <= now)
    }
}

/// The columns of a connection's one read, in the order [`connection_from_row`] takes them.
pub const CONNECTION_COLUMNS: &str = "id, tenant_id, status, settled_status, version, access_token, \
    refresh_token, token_key_id, token_expires_at, scopes, pending_flow, grant_id, provider_account, \
    refresh_expires_at";

/// Reads the workspace's connection to `provider` with `FOR UPDATE`, under the workspace lock.
pub async fn lock_connection(
    tx: &mut Tx,
    lock: &WorkspaceLock,
    provider: Provider,
) -> Result<LockedConnection, LifecycleError> {
    read_connection(
        tx,
        lock,
        provider,
        !crate::flaws::active(crate::flaws::Flaw::NoRowLock),
    )
    .await
}

/// [`lock_connection`] for a request that must not wait: `None` when another transaction holds
/// the row's lock now (`SKIP LOCKED`), or there is no row.
pub async fn try_lock_connection(
    tx: &mut Tx,
    lock: &WorkspaceLock,
    provider: Provider,
) -> Result<Option<LockedConnection>, LifecycleError> {
    match select_connection(tx, lock, provider, " FOR UPDATE SKIP LOCKED").await {
        Ok(connection) => Ok(Some(connection)),
        Err(LifecycleError::NotFound) => Ok(None),
        Err(other) => Err(other),
    }
}

/// Reads the connection, with its row lock unless `row_lock` is false — which only seeded flaws
/// ask for.
pub(crate) async fn read_connection(
    tx: &mut Tx,
    lock: &WorkspaceLock,
    provider: Provider,
    row_lock: bool,
) -> Result<LockedConnection, LifecycleError> {
    let row_lock = if row_lock { " FOR UPDATE" } else { "" };
    select_connection(tx, lock, provider, row_lock).await
}

/// The connection's one read, `row_lock` its locking clause.
async fn select_connection(
    tx: &mut Tx,
    lock: &WorkspaceLock,
    provider: Provider,
    row_lock: &str,
) -> Result<LockedConnection, LifecycleError> {
    let row = sqlx::query(&format!(
        "SELECT {CONNECTION_COLUMNS} FROM connections WHERE workspace_id = $1 AND provider = $2{row_lock}",
    ))
    .bind(lock.workspace_id)
    .bind(provider.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    connection_from_row(&row.ok_or(LifecycleError::NotFound)?, 0, provider)
}

/// [`connection_from_row`] for columns that may all be null (the outer join of an entry that
/// reads the row only when it may): `None` when the row's id is.
pub(crate) fn connection_if_read(
    row: &sqlx::postgres::PgRow,
    at: usize,
    provider: Provider,
) -> Result<Option<LockedConnection>, LifecycleError> {
    use sqlx::Row;
    let id: Option<ConnectionId> = row.try_get(at)?;
    id.map(|_| connection_from_row(row, at, provider))
        .transpose()
}

/// The connection whose [`CONNECTION_COLUMNS`] start at column `at` of `row`.
pub(crate) fn connection_from_row(
    row: &sqlx::postgres::PgRow,
    at: usize,
    provider: Provider,
) -> Result<LockedConnection, LifecycleError> {
    use sqlx::Row;
    let id: ConnectionId = row.try_get(at)?;
    let tenant_id: TenantId = row.try_get(at + 1)?;
    let status: String = row.try_get(at + 2)?;
    let settled: String = row.try_get(at + 3)?;
    let version: i64 = row.try_get(at + 4)?;
    let access: Option<Vec<u8>> = row.try_get(at + 5)?;
    let refresh: Option<Vec<u8>> = row.try_get(at + 6)?;
    let key_id: Option<String> = row.try_get(at + 7)?;
    let expires_at: Option<DateTime<Utc>> = row.try_get(at + 8)?;
    let scopes: Vec<String> = row.try_get(at + 9)?;
    let pending_flow: Option<uuid::Uuid> = row.try_get(at + 10)?;
    let grant_id: Option<uuid::Uuid> = row.try_get(at + 11)?;
    let account: Option<String> = row.try_get(at + 12)?;
    let refresh_expires_at: Option<DateTime<Utc>> = row.try_get(at + 13)?;
    let tokens = match (access, key_id) {
        (Some(access_token), Some(key_id)) => Some(SealedTokens {
            access_token,
            refresh_token: refresh,
            key_id,
            grant_id,
            expires_at,
            refresh_expires_at,
            scopes,
            account,
        }),
        _ => None,
    };
    Ok(LockedConnection {
        id,
        tenant_id,
        provider,
        status: ConnectionStatus::parse(&status)?,
        settled_status: ConnectionStatus::parse(&settled)?,
        version,
        tokens,
        pending_flow,
        grant_id,
    })
}

/// Starts an authorization: the connection becomes `PENDING` and records the OAuth flow it now
/// waits for (a new authorize supersedes any earlier flow), in the transition's one UPDATE.
/// Returns the new status and the connection's view.
pub async fn begin_flow<'a>(
    tx: &mut Tx,
    lock: &WorkspaceLock,
    connection: &LockedConnection,
    flow: uuid::Uuid,
    audit: Audit<'a, impl FnOnce(ConnectionStatus) -> AuditEvent<'a>>,
) -> Result<(ConnectionStatus, ViewRow), LifecycleError> {
    transition_to(
        tx,
        lock,
        connection,
        Transition::StartAuthorization,
        (None, Some(flow), None),
        audit,
    )
    .await
}

/// A change's audit row: the request it is made for, and its event given the status the
/// connection moves to. The change's own UPDATE appends it (`audit::insert_for_each`), so a
/// transition is never stored without its row, and costs no round trip more for it.
pub struct Audit<'a, F> {
    /// The request making the change.
    pub ctx: &'a RequestContext,
    /// The event, given the status the connection moves to.
    pub event: F,
}

/// What a stored change does to the connection's tokens.
#[derive(Debug)]
pub enum TokenChange {
    /// Leave them as they are.
    Keep,
    /// Remove them.
    Wipe,
    /// Replace them.
    Store(SealedTokens),
}

/// Applies a transition to a locked connection and stores the result with its audit row.
/// Transitions that end a grant wipe the tokens; `CompleteAuthorization` stores `tokens` (and
/// needs them). Returns the new status and the connection's view.
pub async fn apply<'a>(
    tx: &mut Tx,
    lock: &WorkspaceLock,
    connection: &LockedConnection,
    transition: Transition,
    tokens: Option<SealedTokens>,
    audit: Audit<'a, impl FnOnce(ConnectionStatus) -> AuditEvent<'a>>,
) -> Result<(ConnectionStatus, ViewRow), LifecycleError> {
    transition_to(
        tx,
        lock,
        connection,
        transition,
        (tokens, None, None),
        audit,
    )
    .await
}

/// Ends a `CONNECTED` connection whose grant the provider will not honour any more
/// ([`Transition::RefreshRejected`]), recording why as its last refresh's outcome
/// (`invalid_grant`, `token_refused`, `grant_expired`, `write_ahead_failed`) for the view.
pub async fn end_grant<'a>(
    tx: &mut Tx,
    lock: &WorkspaceLock,
    connection: &LockedConnection,
    why: &'static str,
    audit: Audit<'a, impl FnOnce(ConnectionStatus) -> AuditEvent<'a>>,
) -> Result<(ConnectionStatus, ViewRow), LifecycleError> {
    transition_to(
        tx,
        lock,
        connection,
        Transition::RefreshRejected,
        (None, None, Some(why)),
        audit,
    )
    .await
}

/// [`apply`], and with `flow` the OAuth flow a connection that becomes `PENDING` waits for, and
/// with `why` the outcome a rejected refresh records.
async fn transition_to<'a>(
    tx: &mut Tx,
    lock: &WorkspaceLock,
    connection: &LockedConnection,
    transition: Transition,
    (tokens, flow, why): (
        Option<SealedTokens>,
        Option<uuid::Uuid>,
        Option<&'static str>,
    ),
    audit: Audit<'a, impl FnOnce(ConnectionStatus) -> AuditEvent<'a>>,
) -> Result<(ConnectionStatus, ViewRow), LifecycleError> {
    let to = next_status(connection.status, connection.settled_status, transition)?;
    let settled = if to.is_settled() {
        to
    } else {
        connection.settled_status
    };
    let change = match (transition, tokens) {
        (Transition::CompleteAuthorization, Some(t)) => TokenChange::Store(t),
        (Transition::CompleteAuthorization, None) => {
            return Err(LifecycleError::Inconsistent(
                "completing an authorization needs tokens".into(),
            ))
        }
        (t, _) if t.wipes_tokens() => TokenChange::Wipe,
        _ => TokenChange::Keep,
    };
    let refresh_outcome =
        (transition == Transition::RefreshRejected).then_some(why.unwrap_or("invalid_grant"));
    let view = store(
        tx,
        lock,
        connection,
        Change {
            status: to,
            settled,
            tokens: change,
            refresh_outcome,
            flow,
            audit: (audit.ctx, (audit.event)(to)),
        },
    )
    .await?;
    Ok((to, view))
}

/// Replaces a `CONNECTED` connection's tokens after a refresh (no status change), recording the
/// refresh outcome, with its audit row. Compare-and-set on the version read under the row lock.
pub async fn store_refreshed<'a>(
    tx: &mut Tx,
    lock: &WorkspaceLock,
    connection: &LockedConnection,
    tokens: SealedTokens,
    audit: Audit<'a, impl FnOnce(ConnectionStatus) -> AuditEvent<'a>>,
) -> Result<ViewRow, LifecycleError> {
    store(
        tx,
        lock,
        connection,
        Change {
            status: connection.status,
            settled: connection.settled_status,
            tokens: TokenChange::Store(tokens),
            refresh_outcome: Some("ok"),
            flow: None,
            audit: (audit.ctx, (audit.event)(connection.status)),
        },
    )
    .await
}

/// Stores a rotated refresh token that an earlier refresh wrote ahead and never stored
/// (`outbox::unstored_rotation`), in place of the spent one the row holds, and marks the access
/// token due for refresh at `now` (the rotation's access token was never written anywhere). The
/// grant's end becomes `ends`, the one the rotation's answer gave and its write-ahead kept
/// (`None`: unknown, rather than the spent token's, which could call a live grant over).
/// Compare-and-set on the version read under the row lock, like every other change.
pub async fn store_adopted_refresh(
    tx: &mut Tx,
    _lock: &WorkspaceLock,
    connection: &LockedConnection,
    sealed_refresh: &[u8],
    ends: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), LifecycleError> {
    let updated = sqlx::query(
        "UPDATE connections SET refresh_token = $3, token_expires_at = $4, refresh_expires_at = $5, \
           version = version + 1, updated_at = now() WHERE id = $1 AND version = $2",
    )
    .bind(connection.id)
    .bind(connection.version)
    .bind(sealed_refresh)
    .bind(now)
    .bind(ends)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(changed_under_row_lock(connection));
    }
    Ok(())
}

/// Under the row lock the version cannot move; if it did, some writer skipped the lock
/// discipline, and claiming success would audit a change that never happened.
fn changed_under_row_lock(connection: &LockedConnection) -> LifecycleError {
    LifecycleError::Inconsistent(format!(
        "connection {} changed under its row lock (version {})",
        connection.id, connection.version
    ))
}

/// What one UPDATE of a locked connection writes.
struct Change<'a> {
    /// The status it moves to.
    status: ConnectionStatus,
    /// The last settled status (the new status when that is settled).
    settled: ConnectionStatus,
    /// What happens to its tokens.
    tokens: TokenChange,
    /// A refresh's outcome to record, if the change is one.
    refresh_outcome: Option<&'a str>,
    /// The OAuth flow a connection that becomes `PENDING` now waits for; `None` keeps the one
    /// it waits for (a connection in any other status waits for none).
    flow: Option<uuid::Uuid>,
    /// The audit row written with it, and the request it is written for.
    audit: (&'a RequestContext, AuditEvent<'a>),
}

/// The UPDATE of a [`Change`] and its audit row, returning the connection's view: the audit's
/// values are the parameters from `$16` on.
static STORE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH changed AS (\
           UPDATE connections SET status = $2, settled_status = $3, version = version + 1, updated_at = now(), \
           pending_flow     = CASE WHEN $2 = 'PENDING' THEN COALESCE($14, pending_flow) ELSE NULL END, \
           grant_id         = CASE WHEN $5 THEN $12 ELSE grant_id END, \
           access_token     = CASE WHEN $5 THEN $6 ELSE access_token END, \
           legacy_tokens    = CASE WHEN $5 THEN false ELSE legacy_tokens END, \
           refresh_token    = CASE WHEN $5 THEN $7 ELSE refresh_token END, \
           token_key_id     = CASE WHEN $5 THEN $8 ELSE token_key_id END, \
           token_expires_at = CASE WHEN $5 THEN $9 ELSE token_expires_at END, \
           refresh_expires_at = CASE WHEN $5 THEN $15 ELSE refresh_expires_at END, \
           scopes           = CASE WHEN $5 THEN $10 ELSE scopes END, \
           provider_account = CASE WHEN $5 THEN $13 ELSE provider_account END, \
           last_refresh_at  = CASE WHEN $11::text IS NULL THEN last_refresh_at ELSE now() END, \
           last_refresh_outcome = COALESCE($11, last_refresh_outcome) \
         WHERE id = $1 AND version = $4 RETURNING {VIEW_COLUMNS}), \
         audited AS ({}) \
         SELECT * FROM changed",
        audit::insert_for_each(16, Some("changed"))
    )
});

/// Writes `change` to the connection, compare-and-set on the version read under the row lock.
async fn store(
    tx: &mut Tx,
    _lock: &WorkspaceLock,
    connection: &LockedConnection,
    change: Change<'_>,
) -> Result<ViewRow, LifecycleError> {
    let Change {
        status: to,
        settled,
        tokens,
        refresh_outcome,
        flow,
        audit: (ctx, event),
    } = change;
    let (write, t) = match tokens {
        TokenChange::Keep => (false, None),
        TokenChange::Wipe => (true, None),
        TokenChange::Store(t) => (true, Some(t)),
    };
    let query = sqlx::query_as(&STORE)
        .bind(connection.id)
        .bind(to.as_str())
        .bind(settled.as_str())
        .bind(connection.version)
        .bind(write)
        .bind(t.as_ref().map(|t| t.access_token.clone()))
        .bind(t.as_ref().and_then(|t| t.refresh_token.clone()))
        .bind(t.as_ref().map(|t| t.key_id.clone()))
        .bind(t.as_ref().and_then(|t| t.expires_at))
        .bind(t.as_ref().map(|t| t.scopes.clone()).unwrap_or_default())
        .bind(refresh_outcome)
        // The grant the new tokens are sealed to (a new one per completed authorization, the same
        // one across refreshes); none once the tokens are wiped.
        .bind(t.as_ref().and_then(|t| t.grant_id))
        .bind(t.as_ref().and_then(|t| t.account.clone()))
        .bind(flow)
        .bind(t.and_then(|t| t.refresh_expires_at));
    let view: Option<ViewRow> = audit::bind_event!(query, ctx, event)
        .fetch_optional(&mut **tx)
        .await?;
    view.ok_or_else(|| changed_under_row_lock(connection))
}

#[cfg(test)]
mod tests {
    use super::ConnectionStatus::*;
    use super::Transition::*;
    use super::*;

    #[test]
    fn authorization_round_trip() {
        assert_eq!(
            next_status(NotConnected, NotConnected, StartAuthorization),
            Ok(Pending)
        );
        assert_eq!(
            next_status(Pending, NotConnected, CompleteAuthorization),
            Ok(Connected)
        );
        assert_eq!(
            next_status(Pending, Revoked, FailAuthorization),
            Ok(Revoked)
        );
    }

    #[test]
    fn forbidden_transitions_are_refused() {
        for (from, t) in [
            (NotConnected, Disconnect),
            (NotConnected, Revoke),
            (Disconnected, Revoke),
            (Connected, StartAuthorization),
            (Connected, CompleteAuthorization),
            (Disconnected, CompleteAuthorization),
            (Revoked, RefreshRejected),
        ] {
            assert_eq!(
                next_status(from, from, t),
                Err(TransitionError {
                    from,
                    transition: t
                })
            );
        }
    }

    #[test]
    fn only_settled_statuses_are_remembered() {
        assert!(!Pending.is_settled());
        for s in [NotConnected, Connected, Disconnected, Revoked] {
            assert!(s.is_settled());
        }
    }
}
