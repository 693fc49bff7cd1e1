//! The outbox's [`Worker`]: on every replica, it claims the intents whose lease ran out, adopts a
//! rotated refresh token whose store never committed ([`super::adopt`], the one adoption the
//! sync's token decision also makes), and revokes everything else at the provider, settling each
//! attempt. It holds no transaction while it calls a provider.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use sqlx::postgres::types::PgInterval;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use chrono::{DateTime, Utc};

use super::{adopt, held, settle, IntentId, Reason, Undelivered, UnstoredRotation, LEASE};
use crate::audit::{self, AuditEvent};
use crate::clock::Clock;
use crate::context::RequestContext;
use crate::db;
use crate::domain::{ConnectionId, Provider, TenantId, WorkspaceId};
use crate::flaws::{self, Flaw};
use crate::lifecycle::{self, ConnectionStatus};
use crate::locks;
use crate::providers::{ProviderClient, TokenKind};
use crate::vault::{KeyRing, TokenBinding, TokenField};

/// What became of an attempt to adopt a rotated token.
enum Adoption {
    /// Stored into its row (or found stored there already); the intent is gone.
    Adopted,
    /// Not a rotated token, or its row moved on: revoke it.
    NotAdoptable,
    /// Another worker took the intent while this one waited: leave it to that one.
    LeaseLost,
}

/// One claimed intent, as the worker reads it.
#[derive(sqlx::FromRow)]
pub struct Claimed {
    /// The intent's id.
    pub id: i64,
    tenant_id: TenantId,
    workspace_id: WorkspaceId,
    connection_id: ConnectionId,
    provider: String,
    grant_id: Option<uuid::Uuid>,
    field: String,
    reason: String,
    sealed_token: Vec<u8>,
    replaces_token: Option<Vec<u8>>,
    fresh_grant: bool,
    /// A rotation's grant's end, as its write-ahead kept it.
    refresh_expires_at: Option<DateTime<Utc>>,
    attempts: i32,
    /// The lease this claim holds it under.
    pub next_attempt_at: DateTime<Utc>,
}

/// Claims the oldest intent whose lease ran out by the time `now` reads (the service's clock),
/// leasing it for `lease`; `None` when none is due.
///
/// The snapshot comes first, the clock after it: the claim runs in a `REPEATABLE READ`
/// transaction whose snapshot is taken before `now` is read, so every intent it can see was
/// written — its lease computed — before that reading. Read the other way round, a clock that
/// steps back between the reading and the claim (an NTP step; FLT-CLOCK-JUMPS-BACK rewinds an
/// hour) would make a write-ahead leased after the step look an hour overdue, and the worker
/// would take the grant of a callback still running. A step back after the reading only delays
/// a claim. An intent another worker (or its writer) changed after the snapshot is a
/// serialization failure: the claim is tried again on a fresh snapshot, a few times.
pub async fn claim_due<F, Fut>(
    db: &PgPool,
    lease: PgInterval,
    mut now: F,
) -> Result<Option<Claimed>, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = DateTime<Utc>>,
{
    for _ in 0..3 {
        // A claim whose reply was lost leaves its intent leased until the lease runs out, as a
        // worker that dies does; trying again claims the next one.
        let attempt = db::retry_lost(db, || claim_once(db, lease, now())).await;
        match attempt {
            Err(e) if is_serialization_failure(&e) => continue,
            other => return other,
        }
    }
    Ok(None)
}

/// One claim on one connection (see [`claim_due`]).
async fn claim_once(
    db: &PgPool,
    lease: PgInterval,
    now: impl std::future::Future<Output = DateTime<Utc>>,
) -> Result<Option<Claimed>, sqlx::Error> {
    use sqlx::Connection;
    let mut held = ClosedIfAbandoned {
        conn: db.acquire().await?,
        finished: false,
    };
    let claimed = async {
        // One round trip: the transaction and its snapshot (taken by its first statement).
        let mut tx = held
            .conn
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
            .await?;
        let claimed: Option<Claimed> =
            sqlx::query_as("SELECT * FROM harbor_outbox_claim($1, $2, 1)")
                .bind(now.await)
                .bind(lease)
                .fetch_optional(&mut *tx)
                .await?;
        // Nothing claimed, nothing to keep: rolled back, not committed, so an idle pass sends
        // no `COMMIT` (a lost-commit-reply fault armed on the link is meant for a request's).
        if claimed.is_some() {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(claimed)
    }
    .await;
    held.finished = true;
    claimed
}

/// A pooled connection that is closed instead of given back if the claim using it is abandoned
/// mid-way (`retry_lost` gives up on a server that stopped answering): a `BEGIN` whose reply had
/// not arrived would otherwise go back to the pool inside its transaction, and its frozen
/// `REPEATABLE READ` snapshot with it.
struct ClosedIfAbandoned {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    finished: bool,
}

impl Drop for ClosedIfAbandoned {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

/// SQLSTATE 40001: a row the claim would take changed after its snapshot.
fn is_serialization_failure(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).as_deref() == Some("40001")
}

/// Why a pass over the outbox stopped: it is tried again at the next interval.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A statement failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// An adoption's transaction could not begin or commit.
    #[error(transparent)]
    Transaction(#[from] db::DbError),
    /// An adoption failed under its locks.
    #[error(transparent)]
    Adoption(#[from] lifecycle::LifecycleError),
}

/// Drains the outbox on one replica: every `interval` (and at once when a test moves the clock),
/// it claims the due intents one at a time (each leased for `LEASE`, longer than one provider
/// call, so replicas never deliver the same one at once) and delivers each. It holds no
/// transaction while it calls a provider.
#[derive(Clone)]
pub struct Worker {
    /// The request role's pool (the claims go through the owner's functions; an adoption runs in
    /// a transaction scoped to its intent's tenant).
    pub db: PgPool,
    /// Opens the intents' ciphertexts.
    pub vault: std::sync::Arc<KeyRing>,
    /// Calls the providers' revocation endpoints.
    pub providers: ProviderClient,
    /// The service's clock (the harness moves it to make a lease expire).
    pub clock: Clock,
    /// How often it looks.
    pub interval: Duration,
    /// Until when each provider (by name) limited this replica's last revocation: its other
    /// intents are put off until then without a call, which would only be refused and spend the
    /// next window's budget.
    pub limited: std::sync::Arc<std::sync::Mutex<HashMap<String, DateTime<Utc>>>>,
}

impl Worker {
    /// Runs until `stop` is cancelled: the intent it is delivering then is finished and settled
    /// (a graceful shutdown waits for that), and no other is claimed.
    pub async fn run(self, stop: CancellationToken) {
        // A moved clock may have made intents due (a lease run out): look at once rather than
        // at the next interval. Only a test moves it; a deployed service waits the interval.
        let mut moves = self.clock.moves();
        while !stop.is_cancelled() {
            if let Err(e) = self.drain_until(&stop).await {
                tracing::warn!(error = %e, "the revocation outbox could not be read; trying again");
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.interval) => {}
                Ok(()) = moves.changed() => {}
            }
        }
    }

    /// Claims and delivers the intents due now, one at a time (at most 16 a pass); returns how
    /// many it delivered.
    pub async fn drain_once(&self) -> Result<usize, WorkerError> {
        self.drain_until(&CancellationToken::new()).await
    }

    /// [`Self::drain_once`], claiming nothing more once `stop` is cancelled.
    async fn drain_until(&self, stop: &CancellationToken) -> Result<usize, WorkerError> {
        let lease =
            PgInterval::try_from(LEASE).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        // Parked intents whose account no live holder keeps any more become due first.
        if let Err(e) = super::consent::sweep(&self.db, self.clock.now()).await {
            tracing::warn!(error = %e, "could not let go the parked intents of accounts no one holds");
        }
        let mut delivered = 0;
        for _ in 0..16 {
            if stop.is_cancelled() {
                break;
            }
            // A claim whose reply was lost leaves its intent leased until the lease runs out, as
            // a worker that dies does; trying again claims the next one.
            let claimed = claim_due(&self.db, lease, || async { self.clock.now() }).await?;
            let Some(intent) = claimed else { break };
            match self.adopt(&intent).await {
                Ok(Adoption::Adopted) => {
                    delivered += 1;
                    continue;
                }
                // Another worker holds it now: delivering it too could revoke what that one
                // just adopted.
                Ok(Adoption::LeaseLost) => continue,
                Ok(Adoption::NotAdoptable) => {}
                // Its workspace is busy for longer than the wait allows (a sync refreshing under
                // the lock), or the database failed under it: the intent stays leased to this
                // pass and is tried again once the lease runs out; the other intents go on.
                Err(e) => {
                    tracing::warn!(error = %e, "an adoption failed; its intent is tried again after its lease");
                    continue;
                }
            }
            let outcome = match self.limited_for(&intent.provider) {
                Some(wait) => Err(Undelivered {
                    error: format!(
                        "not tried: the provider limited this replica's last revocation (for {} s more)",
                        wait.as_secs().max(1)
                    ),
                    not_before: Some(wait),
                }),
                None => self.deliver(&intent).await,
            };
            if let Err(Undelivered {
                not_before: Some(wait),
                ..
            }) = &outcome
            {
                self.hold_off(&intent.provider, *wait);
            }
            delivered += usize::from(outcome.is_ok());
            let held = IntentId {
                id: intent.id,
                lease_until: intent.next_attempt_at,
            };
            settle(&self.db, held, outcome, intent.attempts, self.clock.now()).await?;
        }
        Ok(delivered)
    }

    /// A rotated refresh token whose store never committed is adopted into its row ([`adopt`]),
    /// if the row still holds exactly the token it replaced (same grant, `CONNECTED`, the spent
    /// ciphertext unchanged): the grant stays the user's. A row that moved on (disconnected,
    /// reconnected, rotated again, re-sealed by `rotate-keys`), and anything that is not a
    /// rotation, is [`Adoption::NotAdoptable`] and revoked. A callback's fresh grant's intent
    /// (`fresh_grant`: its grant id no other grant ever had) whose row holds that grant,
    /// `CONNECTED`, was stored after all — by a store whose commit's fate its request could not
    /// learn — and is dropped, not revoked. Under the workspace lock and then the
    /// row lock, the order of every writer of the connection, in a transaction scoped to the
    /// intent's tenant; the lease is checked again under them, since another worker may have
    /// taken the intent while this one waited.
    async fn adopt(&self, intent: &Claimed) -> Result<Adoption, WorkerError> {
        let unstored = intent.reason == Reason::UnstoredGrant.as_str();
        let rotated = unstored && intent.field == "refresh";
        let replaced = intent.replaces_token.as_deref().filter(|_| rotated);
        let fresh = unstored && intent.fresh_grant && intent.grant_id.is_some();
        if replaced.is_none() && !fresh {
            return Ok(Adoption::NotAdoptable);
        }
        let Ok(provider) = Provider::parse(&intent.provider) else {
            return Ok(Adoption::NotAdoptable);
        };
        if replaced.is_some() && flaws::active(Flaw::RevokeUnstoredRotation) {
            return Ok(Adoption::NotAdoptable);
        }
        let mut tx = db::begin(&self.db, None, intent.tenant_id).await?;
        let decided: Result<Adoption, WorkerError> = async {
            // The wait for the locks is bounded well below the lease, whatever the pool's
            // `lock_timeout`: one long-held workspace lock (a sync refreshing under it) must not
            // keep this worker past the lease it holds the intent under.
            sqlx::query("SELECT set_config('lock_timeout', '10s', true)")
                .execute(&mut *tx)
                .await?;
            let lock = locks::lock_for_oauth(&mut tx, intent.workspace_id).await?;
            let connection = lifecycle::lock_connection(&mut tx, &lock, provider).await;
            if let Err(lifecycle::LifecycleError::Database(e)) = connection {
                return Err(e.into());
            }
            let lease = IntentId {
                id: intent.id,
                lease_until: intent.next_attempt_at,
            };
            if !held(&mut tx, lease).await? {
                return Ok(Adoption::LeaseLost);
            }
            let connection = match connection {
                Ok(connection) => connection,
                Err(lifecycle::LifecycleError::NotFound) => return Ok(Adoption::NotAdoptable),
                Err(e) => return Err(e.into()),
            };
            let holds_grant = connection.id == intent.connection_id
                && connection.status == ConnectionStatus::Connected
                && connection.grant_id == intent.grant_id;
            let outcome = match replaced {
                // A fresh grant found in its row: the intent goes, nothing is revoked.
                None => {
                    if !holds_grant || !super::discard(&mut tx, lease).await? {
                        return Ok(Adoption::NotAdoptable);
                    }
                    "found_stored"
                }
                Some(replaced) => {
                    let spent = connection
                        .tokens
                        .as_ref()
                        .and_then(|t| t.refresh_token.as_deref());
                    let rotation = UnstoredRotation {
                        id: intent.id,
                        sealed: intent.sealed_token.clone(),
                        ends: intent.refresh_expires_at,
                    };
                    if !holds_grant
                        || spent != Some(replaced)
                        || !adopt(&mut tx, &lock, &connection, &rotation, self.clock.now()).await?
                    {
                        return Ok(Adoption::NotAdoptable);
                    }
                    "adopted"
                }
            };
            let ctx = RequestContext {
                request_id: "outbox-worker".to_owned(),
                actor: None,
            };
            let event = AuditEvent {
                tenant_id: Some(intent.tenant_id),
                workspace_id: Some(intent.workspace_id),
                actor_user_id: None,
                action: "revocation.outbox",
                outcome,
                detail: json!({
                    "provider": intent.provider,
                    "reason": intent.reason,
                    "attempts": intent.attempts,
                }),
            };
            audit::record(&mut tx, &ctx, event).await?;
            Ok(Adoption::Adopted)
        }
        .await;
        // Only an adoption is committed; the other answers wrote nothing, and end the locks now.
        match decided {
            Ok(Adoption::Adopted) => db::finish(tx, Ok(Adoption::Adopted)).await,
            Ok(other) => {
                tx.rollback().await?;
                Ok(other)
            }
            Err(e) => db::finish(tx, Err(e)).await,
        }
    }

    /// How long `provider`'s limit still holds, if it does.
    fn limited_for(&self, provider: &str) -> Option<Duration> {
        let now = self.clock.now();
        let limited = self
            .limited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let until = *limited.get(provider)?;
        (until > now).then(|| (until - now).to_std().unwrap_or_default())
    }

    /// Remembers that `provider` asked to be left alone for `wait`.
    fn hold_off(&self, provider: &str, wait: Duration) {
        let until = self.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default();
        let mut limited = self
            .limited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = limited.entry(provider.to_owned()).or_insert(until);
        *held = (*held).max(until);
    }

    async fn deliver(&self, intent: &Claimed) -> super::Delivered {
        let provider =
            Provider::parse(&intent.provider).map_err(|e| Undelivered::new(e.to_string()))?;
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
            .map_err(|e| Undelivered::new(format!("the intent does not decrypt: {e}")))?;
        self.providers
            .revoke(provider, &token, kind)
            .await
            .map_err(Undelivered::from)
    }
}
