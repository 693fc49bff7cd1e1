//! Connector sync and documents (threat model: "token expiry failure", tenant document isolation).
//!
//! `POST /v1/workspaces/{workspace_id}/connections/{provider}/sync` ([`sync`]) stands in for a
//! connector sync: it reads the provider's documents with the stored access token and stores them
//! for the workspace. If the access token expires within the refresh margin it is refreshed first,
//! **once across all replicas** however many syncs run at once: each takes the workspace lock and
//! the row lock, re-reads the row, and refreshes only if the token is still stale; the rotated
//! refresh token is stored in the same statement (compare-and-set on the version). A refused
//! refresh (`invalid_grant`) makes the connection `REVOKED` and answers 409 `RECONNECT_REQUIRED`.
//!
//! `GET /v1/workspaces/{workspace_id}/documents` ([`list`]) returns that workspace's documents only;
//! row-level security keeps other tenants' rows out even of a query that forgot its filter.
//!
//! Longer than 500 lines on purpose: the sync's token decision, its paged fetch, the refused-token
//! retry, the rotated token's write-ahead and the store are one protocol whose locks and re-reads
//! only make sense read together.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::json;

use crate::audit::{self, AuditEvent};
use crate::auth::{ProviderPath, WorkspaceMember};
use crate::context::RequestContext;
use crate::db;
use crate::domain::Provider;
use crate::error::ApiError;
use crate::flaws::{self, Flaw};
use crate::lifecycle::{self, ConnectionStatus};
use crate::locks::{self, LockFor};
use crate::outbox;
use crate::providers::ProviderError;
use crate::request_tx::{EnteredQuery, WorkspaceRequest};
use crate::state::AppState;
use crate::syncpoints::{self, SyncHooks};
use crate::tokens::{open_tokens, seal_token_set};
use std::sync::LazyLock;

/// What a sync did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"provider": "qbo", "documents_synced": 2, "refreshed": false, "complete": true}))]
pub struct SyncResponse {
    /// The provider synced.
    pub provider: Provider,
    /// Documents fetched and stored.
    pub documents_synced: usize,
    /// Whether this request refreshed the access token.
    pub refreshed: bool,
    /// Whether every page of the provider's listing was read (false when the sync's page or byte
    /// budget ran out first: the documents read are stored, the rest are not).
    pub complete: bool,
}

/// A stored document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentView {
    /// The provider it came from.
    pub provider: Provider,
    /// The provider's id for it.
    pub external_id: String,
    /// Its title.
    pub title: String,
    /// When it was last fetched.
    pub fetched_at: DateTime<Utc>,
}

/// The workspace's documents.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"documents": [{"provider": "qbo", "external_id": "qbo-doc-1", "title": "qbo quarterly report", "fetched_at": "2026-11-23T16:05:14Z"}]}))]
pub struct DocumentList {
    /// Every document, by provider and id.
    pub documents: Vec<DocumentView>,
}

enum Prepared {
    Ready {
        access: SecretString,
        refreshed: bool,
        grant: Option<uuid::Uuid>,
        account: Option<String>,
    },
    Rejected,
    /// A rotation an interrupted refresh wrote ahead is stored now (committed): decide again.
    Adopted,
}

/// What a token decision is asked for.
enum Need {
    /// A token that is not about to expire: refresh only if the stored one is.
    Fresh,
    /// The resource refused this access token of this grant: refresh, unless another request
    /// already replaced it (then use the stored one — still one refresh across all requests).
    Replace(SecretString, Option<uuid::Uuid>),
    /// The resource refused this access token although it was just refreshed: the grant is
    /// dead at the provider, so the connection is `REVOKED` (unless it was replaced meanwhile).
    GiveUp(SecretString, Option<uuid::Uuid>),
}

/// Syncs a connection's documents, refreshing its token first if needed.
#[utoipa::path(
    post,
    path = "/v1/workspaces/{workspace_id}/connections/{provider}/sync",
    params(
        ("workspace_id" = uuid::Uuid, Path, description = "The workspace"),
        ("provider" = Provider, Path, description = "qbo, gmail, slack or box"),
    ),
    responses(
        (status = 200, description = "Synced", body = SyncResponse),
    ),
    security(("bearer" = [])),
    tag = "connections"
)]
pub async fn sync(
    State(state): State<AppState>,
    request: WorkspaceRequest,
    ProviderPath(provider): ProviderPath,
) -> Result<Json<SyncResponse>, ApiError> {
    let ctx = &request.ctx;
    let hooks = state.sync_points.as_ref();
    // A resource that refuses the access token (revoked or expired early at the provider) gets
    // one refresh and one more try; refused again, the connection needs a new authorization.
    let mut refused: Option<(SecretString, Option<uuid::Uuid>)> = None;
    let mut attempt = 0;
    let mut refreshed = false;
    let (listing, grant) = loop {
        // (Cloned, not taken: a decision that adopted a rotation is made again with the same need.)
        let need = match refused.clone() {
            None => Need::Fresh,
            Some((token, grant)) if attempt == 1 => Need::Replace(token, grant),
            Some((token, grant)) => Need::GiveUp(token, grant),
        };
        // The token decision runs in its own task: a client that disconnects mid-refresh (the
        // handler's future is then dropped) must not lose a rotated refresh token between the
        // provider's answer and the commit.
        let flaws_of_request = state.flaws.clone();
        let first = attempt == 0;
        let task = {
            let decision = decide_token(state.clone(), request.clone(), provider, need);
            state
                .tasks
                .spawn(crate::context::within_request(async move {
                    flaws::scope(&flaws_of_request, decision).await
                }))
        };
        let prepared = task.await.map_err(|e| ApiError::task_failed("token", e))?;
        let (access, grant, account, refreshed_now) = match prepared? {
            Prepared::Ready {
                access,
                refreshed: now,
                grant,
                account,
            } => {
                refreshed |= now;
                (access, grant, account, now)
            }
            // The REVOKED status is committed; only now is the error answered.
            Prepared::Rejected => return Err(ApiError::ReconnectRequired),
            Prepared::Adopted => continue,
        };
        if first {
            SyncHooks::reach(hooks, ctx, syncpoints::SYNC_BEFORE_FETCH).await?;
        }
        // No lock is held while the resource is read: only the token decision needs serialising.
        // A token the provider refuses may have been revoked by a revoke or disconnect that
        // committed meanwhile: the next decision re-reads the row and says so (409) instead of
        // blaming the provider. Found by `harbor-certify explore` (revoke + sync, stale token).
        match state
            .providers
            .fetch_documents(provider, &access, account.as_deref())
            .await
        {
            Ok(listing) => break (listing, grant),
            Err(ProviderError::TokenRefused) if attempt < 2 => {
                // A token this pass has just been given is not refreshed again: the grant is over.
                attempt = if refreshed_now { 2 } else { attempt + 1 };
                refused = Some((access, grant));
            }
            Err(other) => return Err(other.into()),
        }
    };
    let complete = listing.complete;
    let mut documents = listing.documents;
    // Written in one order whatever order the provider listed them in: two syncs of the same
    // documents then queue on the first row instead of locking rows crosswise (a deadlock).
    documents.sort_by(|a, b| a.id.cmp(&b.id));
    documents.dedup_by(|a, b| a.id == b.id);
    // A revoke or disconnect may have committed while the resource was read: what the old grant
    // fetched is not stored. The row is read FOR SHARE (a concurrent change waits for this
    // insert) and the documents are written only if it still holds this grant, in the order
    // sorted above — in one statement with the request's entry, run alone ([`STORE`]).
    let (ids, titles): (Vec<&str>, Vec<&str>) = documents
        .iter()
        .map(|d| (d.id.as_str(), d.title.as_str()))
        .unzip();
    let unchecked = flaws::active(Flaw::DocumentsStoredUnchecked);
    let row = if flaws::active(Flaw::NoMembershipCheck) {
        // Seeded flaw `no-membership-check`: the flaw's transaction (the caller's tenant set,
        // no membership asked for) and the store entered by no check ([`STORE_UNENTERED`]).
        let (mut tx, _) = request.begin().await?;
        let statement: &str = if unchecked {
            &STORE_UNENTERED_UNCHECKED
        } else {
            &STORE_UNENTERED
        };
        let row = bind_store(
            request.entered_query(statement),
            provider,
            grant,
            (&ids, &titles),
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(ApiError::from);
        db::finish(tx, row).await?
    } else {
        let statement: &str = if unchecked { &STORE_UNCHECKED } else { &STORE };
        request
            .write_alone(statement, |query| {
                bind_store(query, provider, grant, (&ids, &titles))
            })
            .await?
            .map(|(_, row)| row)
    };
    let stored: Option<(String, Option<uuid::Uuid>)> = match row {
        Some(row) => {
            use sqlx::Row;
            let status: Option<String> = row.try_get(2).map_err(db::DbError::from)?;
            let grant: Option<uuid::Uuid> = row.try_get(3).map_err(db::DbError::from)?;
            status.map(|status| (status, grant))
        }
        None => None,
    };
    // Not a member, or no such connection.
    let Some((status, current_grant)) = stored else {
        return Err(ApiError::NotFound);
    };
    match ConnectionStatus::parse(&status)? {
        _ if unchecked => {}
        ConnectionStatus::Connected if current_grant == grant => {}
        // Reconnected meanwhile: what the old grant fetched is not this connection's.
        ConnectionStatus::Connected => return Err(ApiError::AuthorizationSuperseded),
        other => return Err(ApiError::NotConnected(other.as_str())),
    }
    let documents_synced = documents.len();
    Ok(Json(SyncResponse {
        provider,
        documents_synced,
        refreshed,
        complete,
    }))
}

/// A sync's documents stored with the grant they were fetched under (`$5`) and only while the
/// connection to the provider `$4` still holds it, in the order given (`$6`, `$7`), in one
/// statement with the request's entry (`harbor_enter_workspace($1, $2, $3)`), run alone
/// ([`WorkspaceRequest::write_alone`]): what was a transaction of four round trips (`BEGIN`, the
/// entry, the store, `COMMIT`) is one. Answers the entry's tenant and role, and the row's status
/// and grant as they are now (null when the workspace has no such connection).
///
/// The entry is the outer side of the connection's read (which names its tenant), so the tag is
/// set, the membership held and read and the tenant set before row-level security looks at a
/// row (a subquery with a locking clause is never folded into its parent, so the read stays the
/// inner side); a caller who is not a member
/// yields no row, reads nothing and writes nothing. The statement's snapshot is taken before the
/// entry waits for anything, but the row is read `FOR SHARE`, which under READ COMMITTED locks and
/// answers the newest committed version of a row changed since (a revoke or disconnect that
/// committed meanwhile is seen, as a statement of its own after the entry would see it); the
/// documents' upsert, likewise, meets the newest version of a document it conflicts with.
pub static STORE: LazyLock<String> =
    LazyLock::new(|| store("harbor_enter_workspace($1, $2, $3)", true));

/// Seeded flaw `documents-stored-unchecked`: [`STORE`] without its condition on the row. A text of
/// its own, not a flag bound into [`STORE`]: a condition a parameter could fold away would have
/// the planner plan the correct statement again at every sync (`benches/README.md`, "A statement
/// that plans every time").
static STORE_UNCHECKED: LazyLock<String> =
    LazyLock::new(|| store("harbor_enter_workspace($1, $2, $3)", false));

/// Seeded flaw `no-membership-check`: [`STORE`] entered by no membership, inside the flaw's
/// transaction, whose tenant is already set (the caller's own: row-level security still holds);
/// the caller is taken for the owner. `$2` and `$3` are named only to keep the parameters those
/// of [`STORE`].
static STORE_UNENTERED: LazyLock<String> = LazyLock::new(|| store(UNENTERED, true));

/// Both seeded flaws at once: [`STORE_UNENTERED`] without the condition on the row.
static STORE_UNENTERED_UNCHECKED: LazyLock<String> = LazyLock::new(|| store(UNENTERED, false));

/// The entry of the seeded flaw `no-membership-check`'s store: the tenant the transaction already
/// has, and the owner's role.
const UNENTERED: &str = "(SELECT harbor_current_tenant() AS tenant_id, 'owner'::text AS role \
    WHERE $2::uuid IS NOT NULL AND $3::text IS NOT NULL) AS unentered";

/// [`STORE`]'s parameters after the entry's: the provider, the grant the documents were fetched
/// under, their ids and titles.
fn bind_store<'q>(
    query: EnteredQuery<'q>,
    provider: Provider,
    grant: Option<uuid::Uuid>,
    (ids, titles): (&'q [&'q str], &'q [&'q str]),
) -> EnteredQuery<'q> {
    query
        .bind(provider.as_str())
        .bind(grant)
        .bind(ids)
        .bind(titles)
}

/// [`STORE`]'s text, entered by the `FROM` item `entry` (which yields `tenant_id` and `role`), with
/// the condition on the row or (`checked` false) without it.
fn store(entry: &str, checked: bool) -> String {
    let condition = if checked {
        "WHERE c.status = 'CONNECTED' AND c.grant_id IS NOT DISTINCT FROM $5 "
    } else {
        ""
    };
    format!(
        "WITH e AS MATERIALIZED (SELECT tenant_id, role FROM {entry}), \
         current AS (SELECT e.tenant_id, c.status, c.grant_id FROM e CROSS JOIN LATERAL \
           (SELECT status, grant_id FROM connections \
             WHERE workspace_id = $1 AND provider = $4 AND tenant_id = e.tenant_id FOR SHARE) AS c), \
         stored AS (INSERT INTO documents (tenant_id, workspace_id, provider, external_id, title, grant_id) \
           SELECT c.tenant_id, $1, $4, d.external_id, d.title, $5 \
           FROM current AS c, unnest($6::text[], $7::text[]) WITH ORDINALITY AS d(external_id, title, n) \
           {condition}ORDER BY d.n \
           ON CONFLICT (workspace_id, provider, external_id) \
           DO UPDATE SET title = EXCLUDED.title, grant_id = EXCLUDED.grant_id, fetched_at = now()) \
         SELECT e.tenant_id, e.role, c.status, c.grant_id FROM e LEFT JOIN current AS c ON true"
    )
}

/// Under the workspace lock and the row lock: re-read the connection, refresh if the access
/// token is still stale, store the rotated tokens (compare-and-set), commit.
async fn decide_token(
    state: AppState,
    request: WorkspaceRequest,
    provider: Provider,
    need: Need,
) -> Result<Prepared, ApiError> {
    let ctx = &request.ctx;
    let hooks = state.sync_points.as_ref();
    let single_flight = !flaws::active(Flaw::NoRefreshSingleFlight);
    if matches!(need, Need::Fresh) && single_flight && may_read_unlocked(hooks, ctx) {
        SyncHooks::reach(hooks, ctx, syncpoints::SYNC_READ).await?;
        if let Some(ready) = fresh_unlocked(&state, &request, provider).await? {
            return Ok(ready);
        }
    }
    let (mut tx, member, lock) = if single_flight {
        request.begin_locked(false, LockFor::OAuth).await?
    } else {
        // Seeded flaw: decide and refresh without any lock; concurrent syncs all refresh.
        let (tx, member) = request.begin().await?;
        (tx, member, locks::unlocked(request.workspace_id))
    };
    let member = &member;
    let result = async {
        // Before the row lock, as every path's `locked` point: the schedule, not PostgreSQL, then
        // decides who takes the row next when this request and a writer waiting for the row are
        // let go together.
        SyncHooks::reach(hooks, ctx, syncpoints::SYNC_LOCKED).await?;
        let connection = lifecycle::read_connection(
            &mut tx,
            &lock,
            provider,
            single_flight && !flaws::active(Flaw::NoRowLock),
        )
        .await?;
        if connection.status != ConnectionStatus::Connected {
            return Err(ApiError::NotConnected(connection.status.as_str()));
        }
        let (access, refresh) =
            open_tokens(&state.vault, &connection)?.ok_or(ApiError::ReconnectRequired)?;
        let now = state.clock.now();
        let stale = about_to_expire(&state, &connection, now);
        let account = connection.tokens.as_ref().and_then(|t| t.account.clone());
        let still = |refused: &SecretString| refused.expose_secret() == access.expose_secret();
        // Whether the resource refused the stored access token, and whether that token was the
        // one it refused right after a refresh (the grant is then over).
        let (refused, given_up) = match &need {
            Need::Fresh => (false, false),
            // A reconnect replaced the grant the refused token belonged to: this request's
            // sync no longer applies (what it would fetch now is another grant's).
            // (A row from before grants were recorded has none to compare.)
            Need::Replace(_, grant) | Need::GiveUp(_, grant)
                if grant.is_some() && *grant != connection.grant_id =>
            {
                return Err(ApiError::AuthorizationSuperseded);
            }
            Need::Replace(r, _) => (still(r), false),
            Need::GiveUp(r, _) => (false, still(r)),
        };
        // Refused for good, or refused with nothing to refresh it with: the grant is over.
        if given_up || (refused && refresh.is_none()) {
            return reject(
                &mut tx,
                &lock,
                &connection,
                (ctx, member),
                provider,
                "token_refused",
                state.clock.now(),
            )
            .await;
        }
        if !stale && !refused {
            return Ok(Prepared::Ready {
                access,
                refreshed: false,
                grant: connection.grant_id,
                account,
            });
        }
        // An earlier refresh may have spent this very refresh token and been interrupted before
        // its store (a cut link, a dead replica): its rotation waits in the outbox, for a worker
        // to adopt once its lease runs out. Refreshing with the spent token would end the grant
        // (`invalid_grant`; some providers end the whole grant on reuse), so the rotation is
        // stored first, committed, and the decision made again on it. Found by `harbor-certify
        // explore --depth 3` (sync + sync + db_cut, stale token).
        if refresh.is_some()
            && !flaws::active(Flaw::RevokeUnstoredRotation)
            && adopt_unstored_rotation(&mut tx, &lock, &connection, (ctx, member), now).await?
        {
            return Ok(Prepared::Adopted);
        }
        // Past the end its provider gave the grant (a refresh token's expiry: Intuit's rolling
        // 100 days, Box's 60; or, with no refresh token, its access token's): the provider would
        // refuse it, so it is not asked (nor its budget spent), and the connection ends as a
        // refused refresh ends it. After the adoption above: a waiting rotation brings a new
        // token, with the end its write-ahead kept.
        if connection.grant_ended(now) {
            return reject(
                &mut tx,
                &lock,
                &connection,
                (ctx, member),
                provider,
                "grant_expired",
                now,
            )
            .await;
        }
        let Some(refresh) = refresh else {
            return Err(ApiError::ReconnectRequired);
        };
        // The rotated token's write-ahead connection is taken before the refresh (from its own
        // pool), as the callback's is before its exchange: once the provider has rotated the
        // grant, nothing may wait for a connection before the new token is durable.
        let ahead = if flaws::active(Flaw::KeepUnstoredGrant) {
            // Seeded flaw: nothing durable holds a rotated grant until it is stored.
            None
        } else {
            Some(
                db::tested_connection(&state.write_ahead_db)
                    .await
                    .map_err(|e| ApiError::from(db::DbError::from(e)))?,
            )
        };
        let mut refreshed = state.providers.refresh(provider, &refresh).await;
        if flaws::active(Flaw::RetryFailedRefresh)
            && matches!(refreshed, Err(ref e) if !matches!(e, ProviderError::InvalidGrant))
        {
            // Seeded flaw: "try again" with a refresh token the failed attempt may have spent.
            refreshed = state.providers.refresh(provider, &refresh).await;
        }
        match refreshed {
            Ok(tokens) => {
                // Same grant, new tokens (a row from before grants were recorded gets one now).
                let grant = connection.grant_id.unwrap_or_else(uuid::Uuid::new_v4);
                // A rotated refresh token is the grant's only key from now on: written ahead, so
                // that if this store never commits (the replica dies, the database goes away)
                // the outbox ends the grant instead of leaving it live with no copy anywhere.
                let intent = match (&tokens.refresh_token, ahead) {
                    (Some(rotated), Some(conn)) => {
                        let ends = tokens.grant_ends_at(state.clock.now());
                        match write_ahead_rotated(
                            &state,
                            conn,
                            &request,
                            &connection,
                            (grant, ends),
                            rotated,
                        )
                        .await
                        {
                            Ok(intent) => Some(intent),
                            Err(_) => {
                                // The rotated grant is durable nowhere (or its intent committed
                                // and the reply was lost): end it now — a second revocation is
                                // harmless — and the connection with it.
                                let _ = state
                                    .providers
                                    .revoke(provider, rotated, crate::providers::TokenKind::Refresh)
                                    .await;
                                return reject(
                                    &mut tx,
                                    &lock,
                                    &connection,
                                    (ctx, member),
                                    provider,
                                    "write_ahead_failed",
                                    state.clock.now(),
                                )
                                .await;
                            }
                        }
                    }
                    _ => None,
                };
                // The provider has rotated the grant: from here on only storing it matters, so a
                // sync-point timeout is ignored rather than allowed to throw the new tokens away.
                let _ = SyncHooks::reach(hooks, ctx, syncpoints::SYNC_REFRESHED).await;
                let kept = connection
                    .tokens
                    .as_ref()
                    .map(|t| t.scopes.as_slice())
                    .unwrap_or_default();
                let sealed = seal_token_set(
                    &state.vault,
                    &connection,
                    grant,
                    &tokens,
                    (Some(&refresh), kept),
                    state.clock.now(),
                )?;
                let audit = lifecycle::Audit {
                    ctx,
                    event: |_| refresh_event(member, provider, "ok"),
                };
                lifecycle::store_refreshed(&mut tx, &lock, &connection, sealed, audit).await?;
                if let Some(intent) = intent {
                    if !outbox::discard(&mut tx, intent).await? {
                        // A worker took the intent (this request outlived its lease) and is
                        // ending the grant: storing the tokens would keep a dead grant.
                        tracing::warn!(
                            request_id = %crate::context::current_request_id(),
                            lease_until = %intent.lease_until,
                            "a worker took this refresh's write-ahead intent (its lease ran out, by the clock the worker read): the rotated token is not stored"
                        );
                        return Err(ApiError::AuthorizationInterrupted);
                    }
                }
                Ok(Prepared::Ready {
                    access: tokens.access_token,
                    refreshed: true,
                    grant: Some(grant),
                    account,
                })
            }
            Err(ProviderError::InvalidGrant) => {
                reject(
                    &mut tx,
                    &lock,
                    &connection,
                    (ctx, member),
                    provider,
                    "invalid_grant",
                    state.clock.now(),
                )
                .await
            }
            Err(other) => Err(ApiError::Provider(other)),
        }
    }
    .await;
    db::finish(tx, result).await
}

/// Whether `connection`'s access token expires within the refresh margin of `now`.
fn about_to_expire(
    state: &AppState,
    connection: &lifecycle::LockedConnection,
    now: DateTime<Utc>,
) -> bool {
    let margin = chrono::Duration::from_std(state.refresh_margin).unwrap_or_default();
    connection
        .tokens
        .as_ref()
        .and_then(|t| t.expires_at)
        .is_some_and(|at| at <= now + margin)
}

/// Whether a sync may look at its token without the locks first ([`fresh_unlocked`]): not when
/// the harness parks it at its locked point (the schedule then decides what it meets under the
/// locks) unless it parks it before the unlocked read too (the schedule then decides when the
/// read happens, and a sync the read sends on to the locked path still parks under the locks),
/// nor under a seeded flaw of the locked path, which must keep showing.
fn may_read_unlocked(hooks: Option<&SyncHooks>, ctx: &RequestContext) -> bool {
    (!SyncHooks::would_park(hooks, ctx, &[syncpoints::SYNC_LOCKED])
        || SyncHooks::would_park(hooks, ctx, &[syncpoints::SYNC_READ]))
        && !flaws::active(Flaw::NoRowLock)
        && !flaws::active(Flaw::NoMembershipCheck)
}

/// The token decision when nothing is to be decided: a `CONNECTED` row whose access token is not
/// about to expire is used as it is, read in one statement with the membership
/// (`read_connection_unlocked`) instead of a transaction that takes the workspace lock and the
/// row lock to find that out — three round trips, and the row lock's write, fewer. The locks
/// serialise refreshes; a token that needs none is only read. What this read found may be
/// overtaken at once, as the locked decision's may after its commit: a revoke, disconnect or
/// reconnect that commits meanwhile is met by the provider's refusal (then the locked decision
/// runs) or by the store's check of the grant. `None` for anything else — not a member, no row,
/// not connected, a token about to expire or that does not open — and the locked decision,
/// unchanged, answers it.
async fn fresh_unlocked(
    state: &AppState,
    request: &WorkspaceRequest,
    provider: Provider,
) -> Result<Option<Prepared>, ApiError> {
    let Some((_, connection)) = request.read_connection_unlocked(provider).await? else {
        return Ok(None);
    };
    if connection.status != ConnectionStatus::Connected
        || about_to_expire(state, &connection, state.clock.now())
    {
        return Ok(None);
    }
    let Ok(Some((access, _))) = open_tokens(&state.vault, &connection) else {
        return Ok(None);
    };
    Ok(Some(Prepared::Ready {
        access,
        refreshed: false,
        grant: connection.grant_id,
        account: connection.tokens.as_ref().and_then(|t| t.account.clone()),
    }))
}

/// Adopts the rotation of `connection`'s refresh token that an interrupted refresh wrote ahead
/// (`outbox::unstored_rotation`, `outbox::adopt`), if there is one sealed under the row's key,
/// and audits it. `false` when there is none (or it is under another key: the connection then
/// ends at the refresh, as `outbox::adopt` says).
async fn adopt_unstored_rotation(
    tx: &mut db::Tx,
    lock: &locks::WorkspaceLock,
    connection: &lifecycle::LockedConnection,
    (ctx, member): (&RequestContext, &WorkspaceMember),
    now: DateTime<Utc>,
) -> Result<bool, ApiError> {
    let Some(rotation) = outbox::unstored_rotation(tx, connection).await? else {
        return Ok(false);
    };
    if !outbox::adopt(tx, lock, connection, &rotation, now).await? {
        return Ok(false);
    }
    audit::record(
        tx,
        ctx,
        refresh_event(member, connection.provider, "adopted_unstored_rotation"),
    )
    .await?;
    Ok(true)
}

/// Writes a rotated refresh token ahead of its store, in a transaction of its own on the
/// write-ahead connection taken before the refresh, sealed to the connection row and grant like
/// the store will seal it.
async fn write_ahead_rotated(
    state: &AppState,
    mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    request: &WorkspaceRequest,
    connection: &lifecycle::LockedConnection,
    (grant, ends): (uuid::Uuid, Option<DateTime<Utc>>),
    rotated: &SecretString,
) -> Result<outbox::IntentId, ApiError> {
    let binding = crate::vault::TokenBinding {
        tenant_id: connection.tenant_id,
        connection_id: connection.id,
        provider: connection.provider,
        field: crate::vault::TokenField::Refresh,
        grant_id: Some(grant),
    };
    let sealed = crate::tokens::seal_one(&state.vault, &binding, rotated)?;
    let workspace = request.workspace_id;
    let actor = request.ctx.actor.as_ref();
    let written = async {
        let mut tx = db::begin_on(&mut conn, actor, connection.tenant_id).await?;
        // The spent token it replaces, as the row holds it: if this store never commits, the
        // outbox stores the rotated one into the row that still holds that one. Not for a row
        // from before grants were recorded: the rotated token is sealed to a grant id the row
        // does not hold yet, so only the store can give it one (the outbox revokes it instead).
        let replaces = connection
            .tokens
            .as_ref()
            .filter(|_| connection.grant_id.is_some())
            .and_then(|t| t.refresh_token.as_deref());
        let now = state.clock.now();
        let ahead = outbox::Ahead::Rotation { replaces, ends };
        let result = outbox::write_ahead(&mut tx, &binding, workspace, &sealed, ahead, now)
            .await
            .map_err(ApiError::from);
        db::finish(tx, result).await
    }
    .await;
    match written {
        Ok(intent) => Ok(intent),
        // The commit may have happened with its reply lost: then the intent is there, and the
        // rotated grant is durable after all. The broken connection goes back first, so the
        // look-up never waits for the pool while holding one of its connections.
        Err(e) => {
            drop(conn);
            outbox::written_ahead(&state.write_ahead_db, actor, connection.tenant_id, &sealed)
                .await
                .ok_or(e)
        }
    }
}

/// The provider will not honour the grant any more: `REVOKED`, audited with `outcome`; the
/// request answers `RECONNECT_REQUIRED` once this commits.
async fn reject(
    tx: &mut db::Tx,
    lock: &locks::WorkspaceLock,
    connection: &lifecycle::LockedConnection,
    (ctx, member): (&RequestContext, &WorkspaceMember),
    provider: Provider,
    outcome: &'static str,
    now: DateTime<Utc>,
) -> Result<Prepared, ApiError> {
    let mut parked = false;
    if matches!(outcome, "token_refused" | "grant_expired") {
        // The resource refused the access token, but the refresh token may well be live (it may
        // have just been rotated); or the refresh token is past the expiry the provider gave it,
        // which only the provider's own clock decides: the tokens are wiped, so the grant goes to
        // the outbox first (a revocation of a grant already over counts as done).
        // A grant one consent with another connection's is parked, not revoked yet
        // (`outbox::record`); the audit row says so.
        let recorded = outbox::record(
            tx,
            connection,
            member.workspace_id,
            outbox::Reason::Revoke,
            now,
        )
        .await?;
        parked = recorded == outbox::Recorded::ConsentHeldElsewhere;
    } else {
        // Over at the provider already (a refused refresh): nothing to revoke, but grants parked
        // behind this one are let go if it was their account's last holder.
        outbox::holder_ended(tx, connection, now).await?;
    }
    let audit = lifecycle::Audit {
        ctx,
        event: |_| {
            let mut event = refresh_event(member, provider, outcome);
            if parked {
                let parked = crate::connections::ProviderRevocation::ConsentHeldElsewhere;
                event.detail["provider_revocation"] = json!(parked.as_str());
            }
            event
        },
    };
    lifecycle::end_grant(tx, lock, connection, outcome, audit).await?;
    Ok(Prepared::Rejected)
}

fn refresh_event<'a>(
    member: &WorkspaceMember,
    provider: Provider,
    outcome: &'a str,
) -> AuditEvent<'a> {
    AuditEvent {
        tenant_id: Some(member.tenant_id),
        workspace_id: Some(member.workspace_id),
        actor_user_id: Some(member.user_id),
        action: "connection.refresh",
        outcome,
        detail: json!({ "provider": provider.as_str() }),
    }
}

/// Lists the workspace's documents: those its connected providers' grants fetched (a grant's end
/// takes its documents with it).
#[utoipa::path(
    get,
    path = "/v1/workspaces/{workspace_id}/documents",
    params(("workspace_id" = uuid::Uuid, Path, description = "The workspace")),
    responses(
        (status = 200, description = "The documents", body = DocumentList),
    ),
    security(("bearer" = [])),
    tag = "documents"
)]
pub async fn list(request: WorkspaceRequest) -> Result<Json<DocumentList>, ApiError> {
    let (mut tx, member) = request.begin().await?;
    let result = async {
        let rows: Vec<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT provider, external_id, title, fetched_at FROM documents WHERE workspace_id = $1 \
             ORDER BY provider, external_id",
        )
        .bind(member.workspace_id)
        .fetch_all(&mut *tx)
        .await?;
        rows.into_iter()
            .map(|(p, external_id, title, fetched_at)| {
                Ok(DocumentView {
                    provider: Provider::parse(&p).map_err(ApiError::stored)?,
                    external_id,
                    title,
                    fetched_at,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()
    }
    .await;
    let documents = db::finish(tx, result).await?;
    Ok(Json(DocumentList { documents }))
}
