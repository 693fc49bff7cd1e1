//! One consent per provider account (Google's; `Dialect::one_consent_per_account`): all of one
//! account's grants to the client are one consent, and revoking any token of any of them ends
//! them all. A grant given up while another connection still holds one of the same account is
//! therefore not revoked yet: its intent is written *parked* (`parked_account` names the account,
//! and no worker's clock reaches its `next_attempt_at`), and is let go — due at once — when the
//! account's last holder ends, whether by its own revocation or by any other end. Both questions
//! cross tenants and are asked under the account's advisory lock, in one definer function
//! (`harbor_consent_give_up`, migration 0021).

use chrono::{DateTime, TimeZone, Utc};
use sqlx::PgPool;

use super::IntentId;
use crate::db::Tx;
use crate::domain::{ConnectionId, Provider, TenantId};
use crate::flaws::{self, Flaw};
use crate::lifecycle::LockedConnection;

/// Where a parked intent's `next_attempt_at` stands until it is let go: past any clock a worker
/// reads (a finite date, so every reader of the column can decode it).
pub(super) fn parked_until() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The account whose one consent `connection`'s grant is part of: where its provider keeps one
/// per account and the grant's account is known. Seeded flaw `revoke-shared-consent`: none, so
/// every grant given up is revoked at once, whoever shares its consent.
pub(super) fn shared_account(connection: &LockedConnection) -> Option<&str> {
    if !one_per_account(connection.provider) {
        return None;
    }
    connection.tokens.as_ref()?.account.as_deref()
}

/// Whether a fresh grant of `account` at `provider` may have to be parked when given back: the
/// provider keeps one consent per account and the grant's account is known. A callback writes an
/// intent for a grant it gives back without one only then; any other goes back at once.
pub fn may_park(provider: Provider, account: Option<&str>) -> bool {
    account.is_some() && one_per_account(provider)
}

/// Whether `provider` keeps one consent per account — a fact of the provider (Google's), whatever
/// dialect a providers file names for it. Seeded flaw `revoke-shared-consent`: never.
fn one_per_account(provider: Provider) -> bool {
    crate::providers::DialectName::of(provider)
        .get()
        .one_consent_per_account()
        && !flaws::active(Flaw::RevokeSharedConsent)
}

/// Gives up `connection`'s hold on `account`'s consent, under the account's lock: `true` when
/// another holder keeps the consent alive (the caller parks its intent); `false` when none does,
/// and then the account's parked intents are due at `now`.
pub(super) async fn give_up(
    tx: &mut Tx,
    connection: &LockedConnection,
    account: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    give_up_for(tx, connection.provider, account, connection.id, now).await
}

/// [`give_up`] for the grant of `connection` at `provider`, however the caller knows them.
async fn give_up_for(
    tx: &mut Tx,
    provider: Provider,
    account: &str,
    connection: ConnectionId,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT harbor_consent_give_up($1, $2, $3, $4)")
        .bind(provider.as_str())
        .bind(account)
        .bind(connection)
        .bind(now)
        .fetch_one(&mut **tx)
        .await
}

/// A fresh grant a callback gives back (it lacked a required scope, or its store failed or was
/// superseded), written ahead as `intent` and still leased to the request: parked instead of
/// revoked when a connection holds its account's consent alive, since revoking it would end that
/// connection's grant too — the row it was meant for included, which an overlapping flow of the
/// same account may have filled meanwhile. `true` when parked — the caller must not revoke it;
/// `false` (no shared consent, the lease lost to a worker, the database unreachable) and the
/// caller revokes it as any other. The account's lock is the only lock this transaction takes.
pub async fn park_unstored(
    db: &PgPool,
    (tenant, provider): (TenantId, Provider),
    account: Option<&str>,
    intent: IntentId,
    now: DateTime<Utc>,
) -> bool {
    // No row is left out: the grant given back is stored in none.
    let connection = ConnectionId(uuid::Uuid::nil());
    let Some(account) = account.filter(|_| one_per_account(provider)) else {
        return false;
    };
    let parked = async {
        let mut tx = crate::db::begin(db, None, tenant)
            .await
            .map_err(|e| e.to_string())?;
        let parked = if give_up_for(&mut tx, provider, account, connection, now)
            .await
            .map_err(|e| e.to_string())?
        {
            sqlx::query(
                "UPDATE revocation_outbox SET parked_account = $2, next_attempt_at = $3 \
                  WHERE id = $1 AND next_attempt_at = $4",
            )
            .bind(intent.id)
            .bind(account)
            .bind(parked_until())
            .bind(intent.lease_until)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?
            .rows_affected()
                == 1
        } else {
            false
        };
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok::<bool, String>(parked)
    }
    .await;
    parked.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not ask whether an unstored grant's consent is held elsewhere; revoking it");
        false
    })
}

/// Lets go the parked intents of every account no live holder keeps any more — one whose last
/// holder's grant passed its end with nobody looking, which no request ends — each under its
/// account's lock (`harbor_consent_sweep`, in account order). The outbox's worker calls it every
/// pass; `Ok` is for how many accounts it let intents go. Seeded flaw `parked-grant-kept`: it
/// lets none go, like [`holder_ended`].
pub async fn sweep(db: &PgPool, now: DateTime<Utc>) -> Result<i64, sqlx::Error> {
    if flaws::active(Flaw::ParkedGrantKept) {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT harbor_consent_sweep($1)")
        .bind(now)
        .fetch_one(db)
        .await
}

/// `connection`'s grant ended without an intent of its own — its refresh refused, or its tokens
/// no longer decrypt — in `tx`, under its locks: if it was its account's last live holder, the
/// grants parked behind it are let go. Seeded flaw `parked-grant-kept`: nothing is, and they stay
/// live at the provider with no row holding them.
pub async fn holder_ended(
    tx: &mut Tx,
    connection: &LockedConnection,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if flaws::active(Flaw::ParkedGrantKept) {
        return Ok(());
    }
    if let Some(account) = shared_account(connection) {
        give_up(tx, connection, account, now).await?;
    }
    Ok(())
}
