//! Key rotation: re-sealing every stored token under the primary key (and the current format),
//! in batches behind a cursor, skipping rows a request holds and reporting rows that do not open.
//! The revocation outbox's copies are not re-sealed (an adoption compares them byte for byte with
//! the row they came from) — but for parked ones, which wait for another holder of their
//! account's consent, perhaps for months, and which nothing adopts; a run counts those still under
//! an older key and is not complete while any wait, so that no key is retired under a grant still
//! to be revoked.

use sqlx::PgPool;

use super::*;

/// What a [`rotate_keys`] run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Connections re-encrypted under the primary key (and the current format).
    pub rotated: u64,
    /// Batches committed.
    pub batches: u64,
    /// Rows still to rotate when the run ended that it did not skip: locked by a request (run
    /// again).
    pub remaining: u64,
    /// Rows whose tokens could not be decrypted (a missing key, a tampered value), by id: left as
    /// they are, reported, and skipped again by the next run.
    pub skipped: Vec<ConnectionId>,
    /// Revocation intents waiting in the outbox with a token sealed under another key than the
    /// primary: retiring that key now would leave their grants live at the provider for good.
    pub outbox_under_older_keys: u64,
    /// Revocation intents whose sealed token is malformed (names no key): no key opens them, so
    /// waiting would never end; reported, not counted above.
    pub outbox_unreadable: u64,
    /// Parked revocation intents re-sealed under the primary key.
    pub outbox_resealed: u64,
}

impl RotationReport {
    /// Whether every stored token is now under the primary key and the current format, and no
    /// revocation waits under an older one (an older key may be retired).
    pub fn is_complete(&self) -> bool {
        self.remaining == 0 && self.skipped.is_empty() && self.outbox_under_older_keys == 0
    }
}

/// Why key rotation stopped.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The database failed; batches already committed stay committed (the run can resume).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

type RotationRow = (
    ConnectionId,
    TenantId,
    String,
    Option<uuid::Uuid>,
    bool,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

/// Rows to rotate: under an older key, or in the legacy format.
const NEEDS_ROTATION: &str =
    "token_key_id IS NOT NULL AND (token_key_id <> $1 OR get_byte(access_token, 0) <> 2)";

/// Re-encrypts every connection whose tokens are under an older key or in the legacy format,
/// `batch_size` rows per transaction, in id order behind a cursor. Needs a pool that can see every
/// tenant (the owner's, not the service's role). Rows being changed by a request are skipped
/// (`SKIP LOCKED`) and counted in `remaining`; rows that do not decrypt are skipped and listed in
/// `skipped` (the run goes on past them).
pub async fn rotate_keys(
    pool: &PgPool,
    ring: &KeyRing,
    batch_size: i64,
) -> Result<RotationReport, RotationError> {
    let mut report = RotationReport::default();
    let mut cursor = ConnectionId(uuid::Uuid::nil());
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<RotationRow> = sqlx::query_as(&format!(
            "SELECT id, tenant_id, provider, grant_id, legacy_tokens, access_token, refresh_token FROM connections \
             WHERE {NEEDS_ROTATION} AND id > $2 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED"
        ))
        .bind(ring.primary_key_id())
        .bind(cursor)
        .bind(batch_size)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last() else {
            tx.rollback().await?;
            break;
        };
        cursor = last.0;
        let mut rotated = 0;
        for (id, tenant_id, provider, grant_id, legacy, access, refresh) in &rows {
            let resealed = Provider::parse(provider)
                .map_err(|_| VaultError::Malformed)
                .and_then(|provider| {
                    let reseal =
                        |stored: &Option<Vec<u8>>, field| -> Result<Option<Vec<u8>>, VaultError> {
                            let Some(stored) = stored else {
                                return Ok(None);
                            };
                            let binding = TokenBinding {
                                tenant_id: *tenant_id,
                                connection_id: *id,
                                provider,
                                field,
                                grant_id: *grant_id,
                            };
                            // Format 1 only where it was found at the upgrade (`legacy_tokens`): one written
                            // into a row since is a replay, not a value to re-seal to the row's grant.
                            let plain = if *legacy {
                                ring.decrypt_any_format(stored, &binding)?
                            } else {
                                ring.decrypt(stored, &binding)?
                            };
                            ring.encrypt(&plain, &binding).map(Some)
                        };
                    Ok((
                        reseal(access, TokenField::Access)?,
                        reseal(refresh, TokenField::Refresh)?,
                    ))
                });
            let (access, refresh) = match resealed {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::error!(connection = %id.0, error = %e, "stored tokens do not decrypt; row skipped");
                    report.skipped.push(*id);
                    continue;
                }
            };
            sqlx::query("UPDATE connections SET access_token = $2, refresh_token = $3, token_key_id = $4, legacy_tokens = false WHERE id = $1")
                .bind(id)
                .bind(access)
                .bind(refresh)
                .bind(ring.primary_key_id())
                .execute(&mut *tx)
                .await?;
            rotated += 1;
        }
        tx.commit().await?;
        report.rotated += rotated;
        report.batches += 1;
    }
    let left = sqlx::query_scalar::<_, i64>(&format!(
        "SELECT count(*) FROM connections WHERE {NEEDS_ROTATION}"
    ))
    .bind(ring.primary_key_id())
    .fetch_one(pool)
    .await? as u64;
    report.remaining = left.saturating_sub(report.skipped.len() as u64);
    report.outbox_resealed = reseal_parked(pool, ring).await?;
    // The outbox holds few rows (intents the provider has not confirmed yet); each names its key.
    let sealed: Vec<Vec<u8>> = sqlx::query_scalar("SELECT sealed_token FROM revocation_outbox")
        .fetch_all(pool)
        .await?;
    for s in &sealed {
        match key_id_of(s) {
            Ok(id) if id == ring.primary_key_id() => {}
            Ok(_) => report.outbox_under_older_keys += 1,
            Err(_) => report.outbox_unreadable += 1,
        }
    }
    Ok(report)
}

/// A parked intent as [`reseal_parked`] reads it: id, tenant, connection, provider, grant, field,
/// sealed token.
type ParkedRow = (
    i64,
    TenantId,
    ConnectionId,
    String,
    Option<uuid::Uuid>,
    String,
    Vec<u8>,
);

/// Re-seals the parked intents under the primary key, each bound as it was; one that does not
/// open is left as it is (the count that follows reports it). Compare-and-set on the sealed
/// token, so an intent a worker took meanwhile keeps what that worker read.
async fn reseal_parked(pool: &PgPool, ring: &KeyRing) -> Result<u64, RotationError> {
    let rows: Vec<ParkedRow> = sqlx::query_as(
        "SELECT id, tenant_id, connection_id, provider, grant_id, field, sealed_token \
           FROM revocation_outbox WHERE parked_account IS NOT NULL AND replaces_token IS NULL",
    )
    .fetch_all(pool)
    .await?;
    let mut resealed = 0;
    for (id, tenant_id, connection_id, provider, grant_id, field, sealed) in rows {
        if key_id_of(&sealed).is_ok_and(|key| key == ring.primary_key_id()) {
            continue;
        }
        let Ok(provider) = Provider::parse(&provider) else {
            continue;
        };
        let binding = TokenBinding {
            tenant_id,
            connection_id,
            provider,
            field: if field == "refresh" {
                TokenField::Refresh
            } else {
                TokenField::Access
            },
            grant_id,
        };
        let Ok(fresh) = ring
            .decrypt(&sealed, &binding)
            .and_then(|plain| ring.encrypt(&plain, &binding))
        else {
            continue;
        };
        resealed += sqlx::query(
            "UPDATE revocation_outbox SET sealed_token = $2 WHERE id = $1 AND sealed_token = $3",
        )
        .bind(id)
        .bind(fresh)
        .bind(&sealed)
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(resealed)
}
