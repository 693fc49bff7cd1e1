//! A connection's tokens through the vault: sealed to their row and grant before they are
//! stored, opened again when they are used (sync, revoke). Shared by the OAuth callback, the
//! token refresh and the connection routes; under the seeded flaw `plaintext-tokens` the "sealed"
//! bytes are the tokens themselves.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::flaws::{self, Flaw};
use crate::lifecycle::{LockedConnection, SealedTokens};
use crate::providers::TokenSet;
use crate::vault::{KeyRing, TokenBinding, TokenField, VaultError};

/// Encrypts a provider's token set for `connection` and `grant`. When the provider sent no
/// refresh token, `previous_refresh` (the one in use) is kept, re-encrypted under the primary key.
/// When it sent no `scope`, the grant's scopes are `unnamed_scopes`: the ones asked for, after a
/// code exchange (RFC 6749 §5.1: omitted means as requested), or the grant's, after a refresh
/// (§6: a refresh keeps the grant's scope). Intuit and Box never send one.
pub fn seal_token_set(
    vault: &KeyRing,
    connection: &LockedConnection,
    grant: uuid::Uuid,
    tokens: &TokenSet,
    (previous_refresh, unnamed_scopes): (Option<&SecretString>, &[String]),
    now: DateTime<Utc>,
) -> Result<SealedTokens, VaultError> {
    let binding = |field| TokenBinding {
        tenant_id: connection.tenant_id,
        connection_id: connection.id,
        provider: connection.provider,
        field,
        grant_id: Some(grant),
    };
    let seal = |token: &SecretString, field| seal_one(vault, &binding(field), token);
    let access_token = seal(&tokens.access_token, TokenField::Access)?;
    let refresh_token = tokens
        .refresh_token
        .as_ref()
        .or(previous_refresh)
        .map(|r| seal(r, TokenField::Refresh))
        .transpose()?;
    Ok(SealedTokens {
        access_token,
        refresh_token,
        key_id: vault.primary_key_id().to_owned(),
        grant_id: Some(grant),
        expires_at: tokens.expires_at(now),
        // A refresh that keeps the refresh token (Google's) keeps its expiry too; a grant with
        // no refresh token at all ends with its access token.
        refresh_expires_at: match (&tokens.refresh_token, previous_refresh) {
            (None, Some(_)) => connection
                .tokens
                .as_ref()
                .and_then(|t| t.refresh_expires_at),
            _ => tokens.grant_ends_at(now),
        },
        scopes: match tokens.scope.as_deref() {
            Some(scope) => scope.split_whitespace().map(str::to_owned).collect(),
            None => unnamed_scopes.to_vec(),
        },
        // A refresh answer names no account: the grant's stays.
        account: tokens
            .account
            .clone()
            .or_else(|| connection.tokens.as_ref().and_then(|t| t.account.clone())),
    })
}

/// Encrypts one token for `binding` (the callback's write-ahead seals the fresh grant's token
/// this way before the grant is stored).
pub fn seal_one(
    vault: &KeyRing,
    binding: &TokenBinding,
    token: &SecretString,
) -> Result<Vec<u8>, VaultError> {
    if flaws::active(Flaw::PlaintextTokens) {
        return Ok(token.expose_secret().as_bytes().to_vec());
    }
    vault.encrypt(token, binding)
}

/// Decrypts a connection's stored tokens: (access, refresh).
pub fn open_tokens(
    vault: &KeyRing,
    connection: &LockedConnection,
) -> Result<Option<(SecretString, Option<SecretString>)>, VaultError> {
    open_tokens_with(vault, connection, KeyRing::decrypt)
}

/// Decrypts a connection's stored tokens to give them back to the provider (revoke): values from
/// before grants were bound (format 1) are accepted too — sending a token to the revocation
/// endpoint is safe whatever grant it belongs to, and refusing it would leave the grant live.
pub fn open_tokens_to_revoke(
    vault: &KeyRing,
    connection: &LockedConnection,
) -> Result<Option<(SecretString, Option<SecretString>)>, VaultError> {
    open_tokens_with(vault, connection, KeyRing::decrypt_any_format)
}

type Decrypt = fn(&KeyRing, &[u8], &TokenBinding) -> Result<SecretString, VaultError>;

fn open_tokens_with(
    vault: &KeyRing,
    connection: &LockedConnection,
    decrypt: Decrypt,
) -> Result<Option<(SecretString, Option<SecretString>)>, VaultError> {
    let Some(sealed) = &connection.tokens else {
        return Ok(None);
    };
    let binding = |field| TokenBinding {
        tenant_id: connection.tenant_id,
        connection_id: connection.id,
        provider: connection.provider,
        field,
        grant_id: connection.grant_id,
    };
    let open = |stored: &[u8], field| -> Result<SecretString, VaultError> {
        if flaws::active(Flaw::PlaintextTokens) {
            return Ok(SecretString::from(
                String::from_utf8_lossy(stored).into_owned(),
            ));
        }
        decrypt(vault, stored, &binding(field))
    };
    let access = open(&sealed.access_token, TokenField::Access)?;
    let refresh = sealed
        .refresh_token
        .as_ref()
        .map(|r| open(r, TokenField::Refresh))
        .transpose()?;
    Ok(Some((access, refresh)))
}
