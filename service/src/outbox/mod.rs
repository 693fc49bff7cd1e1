//! The revocation outbox: every grant the service gives up (revoke, disconnect) is written as an
//! intent in the same transaction as the status change that gives it up, and stays until the
//! provider confirmed its revocation (RFC 7009). A grant the callback has just received, or a
//! rotated refresh token, is written ahead the same way ([`write_ahead`]) and the store that
//! keeps it deletes the intent in its own transaction ([`discard`]): whatever fails in between,
//! the grant is stored or revoked. The request that wrote an intent delivers it at once where it
//! can (a sync that gives up a refused grant leaves it to the workers); if that fails, or the
//! replica dies first, every replica's [`Worker`] takes it up — at least
//! once, which a revocation makes harmless — with back-off, and never drops it.
//!
//! The intent holds the ciphertext the connection row held, copied as it was, so it stays bound to
//! that row and grant (`vault::TokenBinding`) and no plaintext is ever written. A grant whose
//! provider keeps one consent per account, given up while another connection still holds that
//! account's consent, is written parked and let go when the last holder ends ([`consent`]).
//!
//! Past 500 lines: writing, settling, adopting and reading intents share the one table's
//! statements and their invariants; the worker and the consent rules are split out.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::audit::{self, AuditEvent};
use crate::context::RequestContext;
use crate::db::Tx;
use crate::domain::{ConnectionId, Provider, TenantId, WorkspaceId};
use crate::lifecycle::{self, LifecycleError, LockedConnection};
use crate::locks::WorkspaceLock;
use crate::vault::{TokenBinding, TokenField};

mod consent;
mod worker;
pub use consent::{holder_ended, may_park, park_unstored, sweep};
pub use worker::{claim_due, Claimed, Worker, WorkerError};

/// How long the request that wrote an intent, or the worker that claimed it, has it to itself:
/// longer than a provider call may take.
pub const LEASE: Duration = Duration::from_secs(30);

/// Attempts after which an intent is reported as stuck at every further attempt (it is still
/// retried, at the longest back-off: an intent is never dropped).
pub const STUCK_AFTER: i32 = 10;

/// Why a grant is given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `POST …/revoke`.
    Revoke,
    /// `POST …/disconnect`.
    Disconnect,
    /// A fresh grant (a callback's, or a rotated refresh token), written ahead of its store:
    /// revoked unless the store commits — a callback's is dropped instead when its row is found
    /// holding it (the store committed, and only its request could not learn so).
    UnstoredGrant,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Revoke => "revoke",
            Reason::Disconnect => "disconnect",
            Reason::UnstoredGrant => "unstored_grant",
        }
    }
}

/// A written or claimed intent: its id and the lease its holder has it under. Settling names the
/// lease, so a holder whose lease ran out (and whose intent another worker took) changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntentId {
    /// The row.
    pub id: i64,
    /// Until when its holder has it (`next_attempt_at` as the holder wrote it).
    pub lease_until: DateTime<Utc>,
}

/// What [`record`] wrote for a grant given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The intent to revoke it.
    Intent(IntentId),
    /// Nothing: the row held no tokens.
    NoTokens,
    /// The intent, parked: the grant is one consent with a grant another `CONNECTED` connection
    /// holds alive (a refresh token not past its end: one whose revocation can still end the
    /// consent) — one provider account's, at a provider where revoking any of them ends them all
    /// — so revoking it now would end that one too. Not to be delivered: it is let go when the
    /// account's last holder ends ([`consent`]).
    ConsentHeldElsewhere,
}

impl Recorded {
    /// The intent, when one was written.
    pub fn intent(self) -> Option<IntentId> {
        match self {
            Recorded::Intent(intent) => Some(intent),
            Recorded::NoTokens | Recorded::ConsentHeldElsewhere => None,
        }
    }
}

/// Writes the intent to revoke `connection`'s grant, in `tx` — the transaction that wipes the
/// tokens — or nothing when the row holds none. The refresh token is preferred: revoking it ends
/// the whole grant. Leased until `now + LEASE`, so the workers leave it to the request — or
/// parked, when another connection still holds the grant's one consent (a provider with one per
/// account, the account known: [`consent`]), and then the last holder's end lets it go.
pub async fn record(
    tx: &mut Tx,
    connection: &LockedConnection,
    workspace: WorkspaceId,
    reason: Reason,
    now: DateTime<Utc>,
) -> Result<Recorded, sqlx::Error> {
    let Some(sealed) = &connection.tokens else {
        return Ok(Recorded::NoTokens);
    };
    let parked = match consent::shared_account(connection) {
        Some(account) if consent::give_up(tx, connection, account, now).await? => Some(account),
        _ => None,
    };
    let (field, token) = match &sealed.refresh_token {
        Some(refresh) => ("refresh", refresh),
        None => ("access", &sealed.access_token),
    };
    let intent = Intent {
        tenant: connection.tenant_id,
        workspace,
        connection: connection.id,
        provider: connection.provider,
        grant: connection.grant_id,
        field,
        sealed: token,
        replaces: None,
        fresh_grant: false,
        parked_account: parked,
        ends: None,
    };
    let id = insert(tx, &intent, reason, now).await?;
    Ok(match parked {
        Some(_) => Recorded::ConsentHeldElsewhere,
        None => Recorded::Intent(id),
    })
}

/// What an intent holds: the grant and its sealed token, bound like the connection's own.
struct Intent<'a> {
    /// The connection's tenant.
    pub tenant: TenantId,
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// The connection row the token is sealed to.
    pub connection: ConnectionId,
    /// The provider to revoke at.
    pub provider: Provider,
    /// The grant the token is sealed to.
    pub grant: Option<uuid::Uuid>,
    /// `access` or `refresh`.
    pub field: &'static str,
    /// The sealed token.
    pub sealed: &'a [u8],
    /// For a rotated refresh token: the sealed token it replaces, as the row holds it (the
    /// worker stores the rotated one only into a row that still holds exactly that).
    pub replaces: Option<&'a [u8]>,
    /// A callback's fresh grant, whose id no other grant ever had: a row found holding it is
    /// proof that its store committed.
    pub fresh_grant: bool,
    /// The account whose consent another connection still holds: the intent is parked.
    pub parked_account: Option<&'a str>,
    /// For a rotated refresh token: the end its provider gave the grant, stored with the token
    /// if it is adopted (the answer that said it is gone by then).
    pub ends: Option<DateTime<Utc>>,
}

async fn insert(
    tx: &mut sqlx::PgConnection,
    intent: &Intent<'_>,
    reason: Reason,
    now: DateTime<Utc>,
) -> Result<IntentId, sqlx::Error> {
    let (id, lease_until): (i64, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO revocation_outbox \
           (tenant_id, workspace_id, connection_id, provider, grant_id, field, sealed_token, reason, next_attempt_at, replaces_token, parked_account, fresh_grant, refresh_expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id, next_attempt_at",
    )
    .bind(intent.tenant)
    .bind(intent.workspace)
    .bind(intent.connection)
    .bind(intent.provider.as_str())
    .bind(intent.grant)
    .bind(intent.field)
    .bind(intent.sealed)
    .bind(reason.as_str())
    .bind(match intent.parked_account {
        Some(_) => consent::parked_until(),
        None => now + lease(),
    })
    .bind(intent.replaces)
    .bind(intent.parked_account)
    .bind(intent.fresh_grant)
    .bind(intent.ends)
    .fetch_one(&mut *tx)
    .await?;
    Ok(IntentId { id, lease_until })
}

/// Writes ahead a token the provider has just issued (a callback's grant, a rotated refresh
/// token), sealed for `binding`, in `tx` — a transaction of its own, committed before the token is
/// stored — leased to the request for `LEASE`. A rotated refresh token names the sealed token it
/// `replaces`: if its store never commits, the worker stores it into the row that still holds
/// that one ([`Worker`]) rather than ending a grant the user still has.
pub async fn write_ahead(
    tx: &mut sqlx::PgConnection,
    binding: &TokenBinding,
    workspace: WorkspaceId,
    sealed: &[u8],
    ahead: Ahead<'_>,
    now: DateTime<Utc>,
) -> Result<IntentId, sqlx::Error> {
    let (replaces, fresh_grant, ends) = match ahead {
        Ahead::FreshGrant => (None, true, None),
        Ahead::Rotation { replaces, ends } => (replaces, false, ends),
    };
    let intent = Intent {
        tenant: binding.tenant_id,
        workspace,
        connection: binding.connection_id,
        provider: binding.provider,
        grant: binding.grant_id,
        field: match binding.field {
            TokenField::Refresh => "refresh",
            TokenField::Access => "access",
        },
        sealed,
        replaces,
        fresh_grant,
        parked_account: None,
        ends,
    };
    insert(tx, &intent, Reason::UnstoredGrant, now).await
}

/// What a write-ahead holds.
#[derive(Clone, Copy, Debug)]
pub enum Ahead<'a> {
    /// A callback's fresh grant.
    FreshGrant,
    /// A rotated refresh token.
    Rotation {
        /// The sealed token it replaces as the row holds it (`None`: a row from before grants
        /// were recorded, which only the store can give a grant id).
        replaces: Option<&'a [u8]>,
        /// The end the provider's answer gave the grant, if it gave one.
        ends: Option<DateTime<Utc>>,
    },
}

/// After a write-ahead whose outcome is unknown — its commit failed, perhaps only the reply was
/// lost — the intent it wrote, if that commit happened and no worker has claimed it since: read
/// on a fresh connection of `pool`, found by its sealed token (whose random nonce no other intent
/// shares) with no attempt made yet, so under the request's own lease. `None` when it did not
/// commit, a worker holds it (it is revoking the grant: the request must not store it), or the
/// database cannot say now.
pub async fn written_ahead(
    pool: &PgPool,
    actor: Option<&crate::domain::Actor>,
    tenant: TenantId,
    sealed: &[u8],
) -> Option<IntentId> {
    let mut tx = crate::db::begin(pool, actor, tenant).await.ok()?;
    let found: Option<(i64, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, next_attempt_at FROM revocation_outbox WHERE sealed_token = $1 AND attempts = 0")
            .bind(sealed)
            .fetch_optional(&mut *tx)
            .await
            .ok()?;
    let _ = tx.commit().await;
    found.map(|(id, lease_until)| IntentId { id, lease_until })
}

/// [`unstored_rotation`]'s statement: `$1` the connection, `$2` its grant, `$3` the sealed refresh
/// token its row holds. Migration 0013's partial index answers it (the harness's suite checks the
/// plan), so the look-up inside every refresh's critical section never scans the outbox.
pub const UNSTORED_ROTATION_LOOKUP: &str =
    "SELECT id, sealed_token, refresh_expires_at FROM revocation_outbox \
      WHERE connection_id = $1 AND grant_id = $2 AND reason = 'unstored_grant' \
        AND field = 'refresh' AND replaces_token = $3 \
      ORDER BY id LIMIT 1 FOR UPDATE";

/// A rotation of `connection`'s refresh token that an earlier refresh wrote ahead and never
/// stored (its replica died, or its link was cut, before its store committed), not yet adopted:
/// its id, sealed token and grant's end, locked until the caller's transaction ends. Read under the workspace
/// lock and the row lock the caller holds, so the request that wrote it is over; a worker that
/// claimed it meanwhile waits for those locks ([`Worker`]) and then finds it gone.
pub async fn unstored_rotation(
    tx: &mut Tx,
    connection: &LockedConnection,
) -> Result<Option<UnstoredRotation>, sqlx::Error> {
    let Some(spent) = connection
        .tokens
        .as_ref()
        .and_then(|t| t.refresh_token.as_deref())
    else {
        return Ok(None);
    };
    let found: Option<(i64, Vec<u8>, Option<DateTime<Utc>>)> =
        sqlx::query_as(UNSTORED_ROTATION_LOOKUP)
            .bind(connection.id)
            .bind(connection.grant_id)
            .bind(spent)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.map(|(id, sealed, ends)| UnstoredRotation { id, sealed, ends }))
}

/// A rotated refresh token an interrupted refresh wrote ahead and never stored (no `Debug`: the
/// sealed bytes are a token's ciphertext, kept out of every printout like the tokens'.)
pub struct UnstoredRotation {
    /// Its intent.
    pub id: i64,
    /// The token, sealed to the row and grant it was issued for.
    pub sealed: Vec<u8>,
    /// The end its provider gave the grant, as written ahead with it (`None`: none was given,
    /// or an intent from before migration 0023).
    pub ends: Option<DateTime<Utc>>,
}

/// Adopts `rotation` — stores it into `connection`, the row whose refresh token it replaced, with
/// the grant's end its write-ahead kept, marks the access token due for refresh at `now`, and
/// deletes its intent — in the caller's
/// transaction, which holds the workspace lock (`lock`) and the row lock, and has checked that the
/// row still holds the token the rotation replaced. The one adoption: a sync's token decision
/// makes it, and so does the outbox's [`Worker`] once the lease of the request that wrote the
/// rotation ran out.
///
/// `false`, with nothing written, when the rotation is sealed under another key than the row's
/// tokens (the primary key changed after the row was sealed, and `rotate-keys` has not re-sealed
/// the row yet): the row's two tokens would be under two keys. The worker then revokes it, and the
/// connection ends at its next refresh — the documented limit of a key change in that window
/// (ARCHITECTURE.md).
pub async fn adopt(
    tx: &mut Tx,
    lock: &WorkspaceLock,
    connection: &LockedConnection,
    rotation: &UnstoredRotation,
    now: DateTime<Utc>,
) -> Result<bool, LifecycleError> {
    let row_key = connection.tokens.as_ref().map(|t| t.key_id.as_str());
    if crate::vault::key_id_of(&rotation.sealed).ok() != row_key {
        return Ok(false);
    }
    // Seeded flaw: the end the write-ahead kept is dropped, as before migration 0023.
    let ends = rotation
        .ends
        .filter(|_| !crate::flaws::active(crate::flaws::Flaw::AdoptionForgetsEnd));
    lifecycle::store_adopted_refresh(tx, lock, connection, &rotation.sealed, ends, now).await?;
    sqlx::query("DELETE FROM revocation_outbox WHERE id = $1")
        .bind(rotation.id)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

/// Deletes a written-ahead intent in the transaction that stores its grant. `false` when the
/// request no longer holds it (its lease ran out and a worker took it to revoke the grant): the
/// grant must then not be stored.
pub async fn discard(tx: &mut Tx, id: IntentId) -> Result<bool, sqlx::Error> {
    let deleted =
        sqlx::query("DELETE FROM revocation_outbox WHERE id = $1 AND next_attempt_at = $2")
            .bind(id.id)
            .bind(id.lease_until)
            .execute(&mut **tx)
            .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Whether the intent is still there under the lease its writer holds — read `FOR UPDATE`, so a
/// transaction still deleting it (a store whose session was cut while its commit was being made
/// durable) is waited for, not read around; the lock is the caller's until its transaction ends.
pub async fn held(tx: &mut Tx, id: IntentId) -> Result<bool, sqlx::Error> {
    let row: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM revocation_outbox WHERE id = $1 AND next_attempt_at = $2 FOR UPDATE",
    )
    .bind(id.id)
    .bind(id.lease_until)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some())
}

/// Why a delivery attempt did not revoke the grant, and the least the provider asked Harbor to
/// wait before the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undelivered {
    /// What went wrong, for the intent's `last_error` and the logs (never a token).
    pub error: String,
    /// The provider's own delay (its `Retry-After`, or the default wait of a limit that named
    /// none): the next attempt comes no sooner, whatever the back-off says.
    pub not_before: Option<Duration>,
}

impl Undelivered {
    /// A failure that says nothing of when to try again.
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            not_before: None,
        }
    }
}

impl From<crate::providers::ProviderError> for Undelivered {
    fn from(e: crate::providers::ProviderError) -> Self {
        // Trying again sooner than a provider's limit allows only spends the next window's
        // budget: the same bound a client is given (`Retry-After`) holds the outbox.
        let not_before = e.limit_ends_in();
        let error = match not_before {
            Some(d) => format!("{e} (for {} s)", d.as_secs()),
            None => e.to_string(),
        };
        Self { error, not_before }
    }
}

impl std::fmt::Display for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

/// A delivery attempt's result.
pub type Delivered = Result<(), Undelivered>;

/// Settles an intent after a delivery attempt: gone (audited) once the provider confirmed, else
/// due again after the back-off for `attempts`, or the provider's own delay when longer.
pub async fn settle(
    pool: &PgPool,
    id: IntentId,
    delivered: Delivered,
    attempts: i32,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    // Repeatable: a second call finds the intent gone or held under a later lease, or changes
    // it to the same values.
    crate::db::retry_lost(pool, || {
        settlement(id, &delivered, attempts, now, Audit::None).execute(pool)
    })
    .await?;
    Ok(())
}

/// [`settle`] with the audit row of the provider's answer, in one statement run alone: a request
/// that delivered its own intent settles it in the statement that audits the answer, scoped to
/// `tenant` (row-level security checks the audit row against it) and tagged with the request's
/// actor ([`crate::db::scoped_to`]) — no transaction around it. If it does not commit, the intent
/// stays and a worker delivers it again — harmless for a revocation. The answer's row is written
/// only when the settlement found its intent (migration 0027), so the statement repeats
/// harmlessly: one whose reply was lost had committed, and sent again finds its intent settled
/// and writes nothing. It is therefore sent on an idle connection untested, and again on another
/// when that one turns out dead ([`crate::db::retry_lost`]), as a `BEGIN` is.
///
/// A first sending that finds nothing wrote nothing: the request's lease ran out before it (a
/// provider slow past [`LEASE`], a clock moved on) and a worker took the intent, to deliver it
/// again. The answer the request had is audited all the same, by an insert of its own sent once
/// (a repeat of it could write it twice); if that insert fails, it is logged here, since the
/// intent is the worker's now. A later sending that finds nothing may follow one that committed
/// (its reply lost), so it writes nothing more — also when the first never reached the server (a
/// connection dead before it was sent) and the lease had run out as well: two rare things at once
/// leave the answer unaudited, never audited twice.
pub async fn settle_audited(
    pool: &PgPool,
    tenant: TenantId,
    id: IntentId,
    delivered: &Delivered,
    now: DateTime<Utc>,
    (ctx, event): (&RequestContext, AuditEvent<'_>),
) -> Result<(), sqlx::Error> {
    let tag = crate::db::application_name(ctx.actor.as_ref());
    // Seeded flaw `settlement-sent-again`: the answer audited whether or not the intent was
    // found, and the statement sent again all the same.
    let audit = if crate::flaws::active(crate::flaws::Flaw::SettlementSentAgain) {
        Audit::Always
    } else {
        Audit::WhenFound
    };
    // Counted across the attempts `retry_lost` makes (the future must be `Send`: an atomic).
    let sendings = std::sync::atomic::AtomicU32::new(0);
    let settled = crate::db::retry_lost(pool, || {
        sendings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        audit::bind_event!(settlement(id, delivered, 0, now, audit), ctx, event.clone())
            .bind(tenant)
            .bind(tag.clone())
            .fetch_one(pool)
    })
    .await?;
    let found: bool = sqlx::Row::try_get(&settled, 0)?;
    let sent_once = sendings.into_inner() == 1;
    if !found && sent_once && audit == Audit::WhenFound {
        tracing::warn!(
            intent = id.id,
            "the request's lease on its revocation intent ran out before its settlement; a worker \
             has it, and the provider's answer to the request is audited on its own"
        );
        let alone = audit::bind_event!(sqlx::query(&ANSWER_ALONE), ctx, event)
            .bind(tenant)
            .bind(tag)
            .execute(pool)
            .await;
        if let Err(e) = alone {
            tracing::error!(intent = id.id, error = %e, "could not audit the provider's answer to the request on its own (the intent is a worker's now)");
        }
    }
    Ok(())
}

/// The provider's answer to a request audited alone, in the request's scope: for a settlement
/// that found its intent taken by a worker ([`settle_audited`]).
static ANSWER_ALONE: LazyLock<String> = LazyLock::new(|| {
    audit::insert_for_each(
        1,
        Some(&crate::db::scoped_to(audit::VALUES + 1, audit::VALUES + 2)),
    )
});

/// Whether and when a settlement statement writes the audit row of the provider's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Audit {
    /// It writes none (a worker's settlement: the intent's own row says it).
    None,
    /// One row, when the settlement found its intent: a repeat writes nothing.
    WhenFound,
    /// One row at every sending: the seeded flaw `settlement-sent-again` only.
    Always,
}

/// A delivered intent's settlement (its two parameters).
const DONE: &str = "SELECT harbor_outbox_done_found($1, $2, 'confirmed')";
/// A failed delivery's (its four).
const RETRY: &str = "SELECT harbor_outbox_retry_found($1, $2, $3, $4)";
/// The settlements of [`settle_audited`]: an audit row's values follow the settlement's own, then
/// the scope's tenant and the tag. The settlement runs in the scope ([`crate::db::scoped_to`]),
/// and the audit row is made from its result — so after the settings, and only when it found its
/// intent. (A `WITH` that calls a volatile function is evaluated once, whoever reads it.)
static DONE_AUDITED: LazyLock<String> = LazyLock::new(|| audited(DONE, 3, false));
static RETRY_AUDITED: LazyLock<String> = LazyLock::new(|| audited(RETRY, 5, false));
/// The seeded flaw's: the audit row made from the scope alone, whatever the settlement found. A
/// data-modifying `WITH` runs in no set order with the query around it, so both the row and the
/// settlement are produced from the scope, each waiting for the settings on its own.
static DONE_AUDITED_ALWAYS: LazyLock<String> = LazyLock::new(|| audited(DONE, 3, true));
static RETRY_AUDITED_ALWAYS: LazyLock<String> = LazyLock::new(|| audited(RETRY, 5, true));

/// `settle` (its `first` − 1 parameters) with the audit row's parameters after its own, then the
/// scope's tenant and tag; the row written at every sending when `always` (the flaw's).
fn audited(settle: &str, first: usize, always: bool) -> String {
    let scoped = crate::db::scoped_to(first + audit::VALUES, first + audit::VALUES + 1);
    if always {
        return format!(
            "WITH audited AS ({}) {settle} FROM {scoped}",
            audit::insert_for_each(first, Some(&scoped))
        );
    }
    format!(
        "WITH settled AS ({settle} AS found FROM {scoped}), audited AS ({}) \
         SELECT found FROM settled",
        audit::insert_for_each(first, Some("settled WHERE settled.found"))
    )
}

/// The statement that settles an intent after a delivery attempt (and the error log of one that
/// is stuck); with an [`Audit`] other than `None`, the one with an audit row's parameters after
/// its own.
fn settlement<'q>(
    id: IntentId,
    delivered: &'q Delivered,
    attempts: i32,
    now: DateTime<Utc>,
    audit: Audit,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    match delivered {
        Ok(()) => sqlx::query(match audit {
            Audit::None => DONE,
            Audit::WhenFound => DONE_AUDITED.as_str(),
            Audit::Always => DONE_AUDITED_ALWAYS.as_str(),
        })
        .bind(id.id)
        .bind(id.lease_until),
        Err(Undelivered { error, not_before }) => {
            if attempts >= STUCK_AFTER {
                tracing::error!(intent = id.id, attempts, %error, "a revocation is stuck: the provider keeps refusing it; it stays in the outbox and is retried");
            }
            let wait = not_before
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map_or(backoff(attempts), |d| d.max(backoff(attempts)));
            sqlx::query(match audit {
                Audit::None => RETRY,
                Audit::WhenFound => RETRY_AUDITED.as_str(),
                Audit::Always => RETRY_AUDITED_ALWAYS.as_str(),
            })
            .bind(id.id)
            .bind(id.lease_until)
            .bind(error)
            .bind(now + wait)
        }
    }
}

/// What the outbox holds, for an operator (`harbor-service outbox`): no token, no tenant data.
#[derive(Debug, Default, serde::Serialize)]
pub struct Status {
    /// Intents not yet settled, parked ones aside.
    pub pending: i64,
    /// Intents parked: grants of a provider account whose consent another connection still
    /// holds, to be revoked when the account's last holder ends (not counted in the figures
    /// above or below: they may rightly wait for months).
    pub parked: i64,
    /// The intents in `pending`, by why the grant is given up (`revoke`, `disconnect`,
    /// `unstored_grant`).
    pub by_reason: std::collections::BTreeMap<String, i64>,
    /// Intents tried at least [`STUCK_AFTER`] times: the provider keeps refusing them.
    pub stuck: i64,
    /// The most attempts any intent has had.
    pub max_attempts: i32,
    /// When the oldest pending intent was written.
    pub oldest: Option<DateTime<Utc>>,
    /// The last error of each stuck intent (at most ten), as the worker recorded it.
    pub stuck_errors: Vec<String>,
}

/// Reads the outbox's state. Needs a role that sees every tenant's intents (the schema owner's:
/// the table has row-level security per tenant).
pub async fn status(pool: &PgPool) -> Result<Status, sqlx::Error> {
    let rows: Vec<(String, i64, i32, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT reason, count(*), max(attempts), min(created_at) FROM revocation_outbox \
          WHERE parked_account IS NULL GROUP BY reason",
    )
    .fetch_all(pool)
    .await?;
    let mut status = Status::default();
    for (reason, count, attempts, oldest) in rows {
        status.pending += count;
        status.max_attempts = status.max_attempts.max(attempts);
        status.oldest = match (status.oldest, oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        status.by_reason.insert(reason, count);
    }
    let stuck: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT last_error FROM revocation_outbox WHERE attempts >= $1 ORDER BY id",
    )
    .bind(STUCK_AFTER)
    .fetch_all(pool)
    .await?;
    status.parked = sqlx::query_scalar(
        "SELECT count(*) FROM revocation_outbox WHERE parked_account IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    status.stuck = stuck.len() as i64;
    status.stuck_errors = stuck.into_iter().flatten().take(10).collect();
    Ok(status)
}

/// The wait before attempt `attempts + 1`: 2^attempts seconds, at most five minutes.
pub fn backoff(attempts: i32) -> chrono::Duration {
    chrono::Duration::seconds((1i64 << attempts.clamp(0, 9)).min(300))
}

fn lease() -> chrono::Duration {
    chrono::Duration::from_std(LEASE).expect("a small lease")
}
