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
//! that row and grant (`vault::TokenBinding`) and no plaintext is ever written.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::db::Tx;
use crate::domain::{ConnectionId, Provider, TenantId, WorkspaceId};
use crate::flaws::{self, Flaw};
use crate::lifecycle::LockedConnection;
use crate::providers::{ProviderClient, TokenKind};
use crate::vault::{KeyRing, TokenBinding, TokenField};

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
    /// A callback's fresh grant, written ahead of its store: revoked unless the store commits.
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

/// Writes the intent to revoke `connection`'s grant, in `tx` — the transaction that wipes the
/// tokens — or nothing when the row holds none. The refresh token is preferred: revoking it ends
/// the whole grant. Leased until `now + LEASE`, so the workers leave it to the request.
pub async fn record(
    tx: &mut Tx,
    connection: &LockedConnection,
    workspace: WorkspaceId,
    reason: Reason,
    now: DateTime<Utc>,
) -> Result<Option<IntentId>, sqlx::Error> {
    let Some(sealed) = &connection.tokens else {
        return Ok(None);
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
    };
    insert(tx, &intent, reason, now).await.map(Some)
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
}

async fn insert(
    tx: &mut sqlx::PgConnection,
    intent: &Intent<'_>,
    reason: Reason,
    now: DateTime<Utc>,
) -> Result<IntentId, sqlx::Error> {
    let (id, lease_until): (i64, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO revocation_outbox \
           (tenant_id, workspace_id, connection_id, provider, grant_id, field, sealed_token, reason, next_attempt_at, replaces_token) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id, next_attempt_at",
    )
    .bind(intent.tenant)
    .bind(intent.workspace)
    .bind(intent.connection)
    .bind(intent.provider.as_str())
    .bind(intent.grant)
    .bind(intent.field)
    .bind(intent.sealed)
    .bind(reason.as_str())
    .bind(now + lease())
    .bind(intent.replaces)
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
    replaces: Option<&[u8]>,
    now: DateTime<Utc>,
) -> Result<IntentId, sqlx::Error> {
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
    };
    insert(tx, &intent, Reason::UnstoredGrant, now).await
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

/// A rotation of `connection`'s refresh token that an earlier refresh wrote ahead and never
/// stored (its replica died, or its link was cut, before its store committed), not yet adopted:
/// its id and sealed token, locked until the caller's transaction ends. Read under the workspace
/// lock and the row lock the caller holds, so the request that wrote it is over; a worker that
/// claimed it meanwhile waits for that lock in `harbor_outbox_adopt` and then finds it gone.
pub async fn unstored_rotation(
    tx: &mut Tx,
    connection: &LockedConnection,
) -> Result<Option<(i64, Vec<u8>)>, sqlx::Error> {
    let Some(spent) = connection
        .tokens
        .as_ref()
        .and_then(|t| t.refresh_token.as_deref())
    else {
        return Ok(None);
    };
    sqlx::query_as(
        "SELECT id, sealed_token FROM revocation_outbox \
          WHERE connection_id = $1 AND grant_id = $2 AND reason = 'unstored_grant' \
            AND field = 'refresh' AND replaces_token = $3 \
          ORDER BY id LIMIT 1 FOR UPDATE",
    )
    .bind(connection.id)
    .bind(connection.grant_id)
    .bind(spent)
    .fetch_optional(&mut **tx)
    .await
}

/// Deletes an intent whose token the caller's transaction has just stored into its row.
pub async fn adopted(tx: &mut Tx, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM revocation_outbox WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
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

/// Settles an intent after a delivery attempt: gone (audited) once the provider confirmed, else
/// due again after the back-off for `attempts`.
pub async fn settle(
    pool: &PgPool,
    id: IntentId,
    delivered: Result<(), String>,
    attempts: i32,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    // Repeatable: a second call finds the intent gone or held under a later lease, or changes
    // it to the same values.
    crate::db::retry_lost(pool, || {
        settlement(id, &delivered, attempts, now).execute(pool)
    })
    .await?;
    Ok(())
}

/// [`settle`], in `tx`: a request that delivered its own intent settles it in the transaction
/// that audits the provider's answer (one transaction, not two). If that transaction does not
/// commit, the intent stays and a worker delivers it again — harmless for a revocation.
pub async fn settle_in(
    tx: &mut Tx,
    id: IntentId,
    delivered: &Result<(), String>,
    attempts: i32,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    settlement(id, delivered, attempts, now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The statement that settles an intent after a delivery attempt (and the error log of one that
/// is stuck).
fn settlement<'q>(
    id: IntentId,
    delivered: &'q Result<(), String>,
    attempts: i32,
    now: DateTime<Utc>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    match delivered {
        Ok(()) => sqlx::query("SELECT harbor_outbox_done($1, $2, 'confirmed')")
            .bind(id.id)
            .bind(id.lease_until),
        Err(error) => {
            if attempts >= STUCK_AFTER {
                tracing::error!(intent = id.id, attempts, %error, "a revocation is stuck: the provider keeps refusing it; it stays in the outbox and is retried");
            }
            sqlx::query("SELECT harbor_outbox_retry($1, $2, $3, $4)")
                .bind(id.id)
                .bind(id.lease_until)
                .bind(error)
                .bind(now + backoff(attempts))
        }
    }
}

/// What the outbox holds, for an operator (`harbor-service outbox`): no token, no tenant data.
#[derive(Debug, Default, serde::Serialize)]
pub struct Status {
    /// Intents not yet settled.
    pub pending: i64,
    /// Of those, by why the grant is given up (`revoke`, `disconnect`, `unstored_grant`).
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
        "SELECT reason, count(*), max(attempts), min(created_at) FROM revocation_outbox GROUP BY reason",
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

/// What became of an attempt to adopt a rotated token.
enum Adoption {
    /// Stored into its row; the intent is gone.
    Adopted,
    /// Not a rotated token, or its row moved on: revoke it.
    NotAdoptable,
    /// Another worker took the intent while this one waited: leave it to that one.
    LeaseLost,
}

/// One claimed intent, as the worker reads it.
#[derive(sqlx::FromRow)]
struct Claimed {
    id: i64,
    tenant_id: TenantId,
    connection_id: ConnectionId,
    provider: String,
    grant_id: Option<uuid::Uuid>,
    field: String,
    reason: String,
    sealed_token: Vec<u8>,
    replaces_token: Option<Vec<u8>>,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
}

/// Drains the outbox on one replica: every `interval`, it claims the due intents one at a time
/// (each leased for `LEASE`, longer than one provider call, so replicas never deliver the same one
/// at once) and delivers each. It holds no transaction while it calls a provider.
#[derive(Clone)]
pub struct Worker {
    /// The request role's pool (the claims go through the owner's functions).
    pub db: PgPool,
    /// Opens the intents' ciphertexts.
    pub vault: std::sync::Arc<KeyRing>,
    /// Calls the providers' revocation endpoints.
    pub providers: ProviderClient,
    /// The service's clock (the harness moves it to make a lease expire).
    pub clock: Clock,
    /// How often it looks.
    pub interval: Duration,
}

impl Worker {
    /// Runs until `stop` is cancelled: the intent it is delivering then is finished and settled
    /// (a graceful shutdown waits for that), and no other is claimed.
    pub async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            if let Err(e) = self.drain_until(&stop).await {
                tracing::warn!(error = %e, "the revocation outbox could not be read; trying again");
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Claims and delivers the intents due now, one at a time (at most 16 a pass); returns how
    /// many it delivered.
    pub async fn drain_once(&self) -> Result<usize, sqlx::Error> {
        self.drain_until(&CancellationToken::new()).await
    }

    /// [`Self::drain_once`], claiming nothing more once `stop` is cancelled.
    async fn drain_until(&self, stop: &CancellationToken) -> Result<usize, sqlx::Error> {
        let lease = sqlx::postgres::types::PgInterval::try_from(LEASE)
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let mut delivered = 0;
        for _ in 0..16 {
            if stop.is_cancelled() {
                break;
            }
            // A claim whose reply was lost leaves its intent leased until the lease runs out, as
            // a worker that dies does; trying again claims the next one.
            let now = self.clock.now();
            let claimed: Option<Claimed> = crate::db::retry_lost(&self.db, || {
                sqlx::query_as("SELECT * FROM harbor_outbox_claim($1, $2, 1)")
                    .bind(now)
                    .bind(lease)
                    .fetch_optional(&self.db)
            })
            .await?;
            let Some(intent) = claimed else { break };
            match self.adopt(&intent).await? {
                Adoption::Adopted => {
                    delivered += 1;
                    continue;
                }
                // Another worker holds it now: delivering it too could revoke what that one
                // just adopted.
                Adoption::LeaseLost => continue,
                Adoption::NotAdoptable => {}
            }
            let outcome = self.deliver(&intent).await;
            delivered += usize::from(outcome.is_ok());
            let held = IntentId {
                id: intent.id,
                lease_until: intent.next_attempt_at,
            };
            settle(&self.db, held, outcome, intent.attempts, self.clock.now()).await?;
        }
        Ok(delivered)
    }

    /// A rotated refresh token whose store never committed is stored into its row, if the row
    /// still holds the spent token it replaced (`harbor_outbox_adopt`): the grant stays the
    /// user's. Anything else is [`Adoption::NotAdoptable`] and revoked.
    async fn adopt(&self, intent: &Claimed) -> Result<Adoption, sqlx::Error> {
        let rotated = intent.reason == Reason::UnstoredGrant.as_str()
            && intent.field == "refresh"
            && intent.replaces_token.is_some();
        if !rotated || flaws::active(Flaw::RevokeUnstoredRotation) {
            return Ok(Adoption::NotAdoptable);
        }
        let Ok(key) = crate::vault::key_id_of(&intent.sealed_token) else {
            return Ok(Adoption::NotAdoptable);
        };
        let answer: String = sqlx::query_scalar("SELECT harbor_outbox_adopt($1, $2, $3, $4)")
            .bind(intent.id)
            .bind(intent.next_attempt_at)
            .bind(self.clock.now())
            .bind(key)
            .fetch_one(&self.db)
            .await?;
        Ok(match answer.as_str() {
            "adopted" => Adoption::Adopted,
            "lease_lost" => Adoption::LeaseLost,
            _ => Adoption::NotAdoptable,
        })
    }

    async fn deliver(&self, intent: &Claimed) -> Result<(), String> {
        let provider = Provider::parse(&intent.provider).map_err(|e| e.to_string())?;
        let (field, kind) = match intent.field.as_str() {
            "refresh" => (TokenField::Refresh, TokenKind::Refresh),
            _ => (TokenField::Access, TokenKind::Access),
        };
        let binding = TokenBinding {
            tenant_id: intent.tenant_id,
            connection_id: intent.connection_id,
            provider,
            field,
            grant_id: intent.grant_id,
        };
        let token: SecretString = self
            .vault
            .decrypt_any_format(&intent.sealed_token, &binding)
            .map_err(|e| format!("the intent does not decrypt: {e}"))?;
        self.providers
            .revoke(provider, &token, kind)
            .await
            .map_err(|e| e.to_string())
    }
}
