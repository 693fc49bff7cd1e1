//! [`OAuthStateStore`]: OAuth `state` values in Redis (threat model S1/S3/S4; RFC 9700 §4.7).
//!
//! A state is 256 bits from the OS CSPRNG. Redis holds it under the SHA-256 of the state, so a dump
//! of Redis yields no usable state, with `SET … NX EX 600`. The record binds it to the tenant,
//! workspace, user and provider that started the flow, and carries the issuer, the exact redirect
//! URI, the PKCE verifier and the creation time. [`OAuthStateStore::consume`] is a single `GETDEL`:
//! of any number of concurrent callbacks with the same state exactly one gets the record, and the
//! state is gone whatever happens to that callback afterwards.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use redis::AsyncCommands;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{Provider, TenantId, UserId, WorkspaceId};
use crate::flaws::{self, Flaw};

/// How long a state lives, in seconds (the threat model's ten minutes).
pub const STATE_TTL_SECONDS: i64 = 600;

/// What a state is bound to.
#[derive(Debug)]
pub struct OAuthStateRecord {
    /// The tenant that started the flow.
    pub tenant_id: TenantId,
    /// The workspace being connected.
    pub workspace_id: WorkspaceId,
    /// The user who started it; only they may finish it.
    pub user_id: UserId,
    /// The provider it was started for.
    pub provider: Provider,
    /// The provider's issuer identifier.
    pub issuer: String,
    /// The exact redirect URI sent to the provider, to be sent again with the code.
    pub redirect_uri: String,
    /// The PKCE code verifier.
    pub verifier: SecretString,
    /// When the flow started, by the service's clock.
    pub created_at: DateTime<Utc>,
    /// The flow's id, recorded on the `PENDING` connection; only this flow may complete it.
    /// `None` for a state issued before flows existed (it matches a connection without one).
    pub flow_id: Option<uuid::Uuid>,
}

#[derive(Serialize, Deserialize)]
struct WireRecord {
    tenant_id: TenantId,
    workspace_id: WorkspaceId,
    user_id: UserId,
    provider: Provider,
    issuer: String,
    redirect_uri: String,
    verifier: String,
    created_at: DateTime<Utc>,
    #[serde(default)]
    flow_id: Option<uuid::Uuid>,
}

impl From<&OAuthStateRecord> for WireRecord {
    fn from(record: &OAuthStateRecord) -> Self {
        WireRecord {
            tenant_id: record.tenant_id,
            workspace_id: record.workspace_id,
            user_id: record.user_id,
            provider: record.provider,
            issuer: record.issuer.clone(),
            redirect_uri: record.redirect_uri.clone(),
            verifier: record.verifier.expose_secret().to_owned(),
            created_at: record.created_at,
            flow_id: record.flow_id,
        }
    }
}

impl WireRecord {
    fn to_json(&self) -> Result<String, StateStoreError> {
        serde_json::to_string(self).map_err(|_| StateStoreError::Corrupt)
    }
}

/// 32 bytes from the OS CSPRNG, base64url without padding (43 characters).
pub fn random_token() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SecretString::from(URL_SAFE_NO_PAD.encode(bytes))
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &SecretString) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose_secret().as_bytes()))
}

/// Why a state could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum StateStoreError {
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// A stored record is unreadable.
    #[error("stored OAuth state is unreadable")]
    Corrupt,
    /// Two fresh 256-bit states collided with live ones (practically impossible; refused, not
    /// overwritten).
    #[error("could not allocate a unique OAuth state")]
    Collision,
}

impl StateStoreError {
    /// Whether Redis may have run the command anyway. A refused connection sent nothing, and an
    /// error reply ran nothing; any other failure of the link (a timeout, a reset, an end of
    /// stream, a broken pipe) cannot say whether the command left before it — redis-rs reports a
    /// request to a link already dead the same way as one whose reply was lost — so it counts as
    /// the worse case.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            StateStoreError::Redis(e) => e.is_io_error() && !e.is_connection_refusal(),
            _ => false,
        }
    }
}

/// OAuth states in Redis, under the deployment's key prefix.
#[derive(Clone)]
pub struct OAuthStateStore {
    redis: redis::aio::ConnectionManager,
    prefix: std::sync::Arc<str>,
    /// Seeded flaw `memory-state-store`: this replica's own map, no TTL. `None` in a correct build.
    memory: Option<std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>>,
}

impl OAuthStateStore {
    /// A store on `redis`, keys under `prefix`. `in_memory` is the seeded flaw
    /// `memory-state-store` and is false in every correct configuration.
    pub fn new(
        redis: redis::aio::ConnectionManager,
        prefix: std::sync::Arc<str>,
        in_memory: bool,
    ) -> Self {
        Self {
            redis,
            prefix,
            memory: in_memory.then(Default::default),
        }
    }

    /// The Redis key of a state: a hash, so keys and dumps reveal no state.
    pub fn key_for_state(&self, state: &str) -> String {
        format!(
            "{}oauth:state:{}",
            self.prefix,
            hex::encode(Sha256::digest(state.as_bytes()))
        )
    }

    /// Stores a new state bound to `record` and returns it.
    pub async fn issue(&self, record: &OAuthStateRecord) -> Result<SecretString, StateStoreError> {
        let value = WireRecord::from(record).to_json()?;
        if let Some(memory) = &self.memory {
            let state = random_token();
            memory
                .lock()
                .expect("state map")
                .insert(self.key_for_state(state.expose_secret()), value);
            return Ok(state);
        }
        let mut redis = self.redis.clone();
        for _ in 0..2 {
            let state = random_token();
            let stored: Option<String> = redis::cmd("SET")
                .arg(self.key_for_state(state.expose_secret()))
                .arg(&value)
                .arg("NX")
                .arg("EX")
                .arg(STATE_TTL_SECONDS)
                .query_async(&mut redis)
                .await?;
            if stored.is_some() {
                return Ok(state);
            }
        }
        Err(StateStoreError::Collision)
    }

    /// Takes the state's record out of Redis in one atomic step; `None` if it is unknown, expired
    /// or already used. The state is gone after this call whatever the caller does next.
    pub async fn consume(&self, state: &str) -> Result<Option<OAuthStateRecord>, StateStoreError> {
        let key = self.key_for_state(state);
        let raw: Option<String> = if let Some(memory) = &self.memory {
            memory.lock().expect("state map").remove(&key)
        } else if flaws::active(Flaw::NonAtomicStateConsume) {
            // Seeded flaw: read now, delete later (in `finish`), leaving a window for a second reader.
            self.redis.clone().get(&key).await?
        } else {
            self.redis.clone().get_del(&key).await?
        };
        raw.map(|raw| decode_record(&raw)).transpose()
    }
}

/// Decodes a state record as stored in Redis (outside input as far as the service is concerned:
/// anyone with access to Redis can write one). Anything but a well-formed record is `Corrupt`.
pub fn decode_record(raw: &str) -> Result<OAuthStateRecord, StateStoreError> {
    let w: WireRecord = serde_json::from_str(raw).map_err(|_| StateStoreError::Corrupt)?;
    Ok(OAuthStateRecord {
        tenant_id: w.tenant_id,
        workspace_id: w.workspace_id,
        user_id: w.user_id,
        provider: w.provider,
        issuer: w.issuer,
        redirect_uri: w.redirect_uri,
        verifier: SecretString::from(w.verifier),
        created_at: w.created_at,
        flow_id: w.flow_id,
    })
}

impl OAuthStateStore {
    /// Removes a state that was issued but leads nowhere (its authorization was not committed).
    pub async fn discard(&self, state: &str) -> Result<(), StateStoreError> {
        let key = self.key_for_state(state);
        if let Some(memory) = &self.memory {
            memory.lock().expect("state map").remove(&key);
            return Ok(());
        }
        let _: i64 = self.redis.clone().del(key).await?;
        Ok(())
    }

    /// Called once the callback's code exchange is over. A no-op in a correct build: the state
    /// was already deleted by [`OAuthStateStore::consume`].
    pub async fn finish(&self, state: &str) -> Result<(), StateStoreError> {
        if flaws::active(Flaw::NonAtomicStateConsume) && self.memory.is_none() {
            let _: i64 = self.redis.clone().del(self.key_for_state(state)).await?;
        }
        Ok(())
    }

    /// Called when a callback failed. A no-op in a correct build (the state stays dead); under
    /// the seeded flaw `state-kept-on-failure` the state is put back for another try.
    pub async fn after_failure(
        &self,
        state: &str,
        record: &OAuthStateRecord,
    ) -> Result<(), StateStoreError> {
        if !flaws::active(Flaw::StateKeptOnFailure) {
            return Ok(());
        }
        let value = WireRecord::from(record).to_json()?;
        let _: () = self
            .redis
            .clone()
            .set_ex(self.key_for_state(state), value, STATE_TTL_SECONDS as u64)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        let verifier = SecretString::from("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            pkce_challenge(&verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn random_tokens_are_256_bits_and_distinct() {
        let a = random_token();
        assert_eq!(a.expose_secret().len(), 43);
        assert_ne!(a.expose_secret(), random_token().expose_secret());
    }
}
