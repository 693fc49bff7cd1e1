//! Token encryption at rest (threat model: "plaintext token storage", "DB breach → token leak").
//!
//! AES-256-GCM with a random 96-bit nonce per encryption. A stored value is
//! `version (1 byte) ‖ key id length (1 byte) ‖ key id ‖ nonce (12 bytes) ‖ ciphertext+tag`.
//! The associated data binds the value to its tenant, connection row, provider, field and grant
//! ([`TokenBinding`]), so a ciphertext copied to another row, tenant or column fails to decrypt —
//! and so does one of an earlier grant of the same row (a restored backup, a copied dump).
//!
//! Version 2 binds the grant; version 1 (before grants were bound) is refused everywhere but in
//! [`rotate_keys`], which re-seals it as version 2 on the rows flagged `legacy_tokens` when the
//! upgrade was installed (and nowhere else: a version-1 value written into a row later is a
//! replay), and in a revoke, which gives it back to the provider: run `harbor-service rotate-keys`
//! once after upgrading.
//!
//! Keys come from configuration, never the database: a [`KeyRing`] has one primary key for new
//! writes and older keys that only decrypt. [`rotate_keys`] re-encrypts rows under the primary key
//! in batches, in id order behind a cursor: a row it cannot decrypt is skipped and reported by id,
//! and a run resumes because it only ever selects rows still under an older key or format.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

use crate::domain::{ConnectionId, Provider, TenantId};

mod rotation;

pub use rotation::{rotate_keys, RotationError, RotationReport};

/// The format written: its associated data binds the grant.
const FORMAT_VERSION: u8 = 2;
/// The format before grants were bound; only [`rotate_keys`] reads it.
const LEGACY_FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// Why a token could not be encrypted or decrypted, or the key ring could not be built. Never
/// carries key or token material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No key is configured: the service refuses to start.
    #[error("no token encryption key is configured (HARBOR_TOKEN_KEYS)")]
    NoKeys,
    /// A configured key is malformed.
    #[error("token key {0:?}: {1}")]
    BadKey(String, &'static str),
    /// The primary key id names no configured key.
    #[error("the primary token key {0:?} is not in HARBOR_TOKEN_KEYS")]
    UnknownPrimary(String),
    /// The stored value is not in the expected format.
    #[error("stored token is malformed")]
    Malformed,
    /// The stored value is in the format from before grants were bound (run `rotate-keys`).
    #[error("stored token is in the legacy format without grant binding; run rotate-keys")]
    Legacy,
    /// The stored value names a key the ring does not have.
    #[error("stored token is under key {0:?}, which is not configured")]
    UnknownKey(String),
    /// Authentication failed: wrong key, tampered value, or a value bound to another row.
    #[error("stored token does not decrypt for this connection")]
    Undecryptable,
}

/// Which token a value holds; part of the associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenField {
    /// The access token.
    Access,
    /// The refresh token.
    Refresh,
}

impl TokenField {
    /// Both fields.
    pub const ALL: [TokenField; 2] = [TokenField::Access, TokenField::Refresh];

    const fn as_str(self) -> &'static str {
        match self {
            TokenField::Access => "access_token",
            TokenField::Refresh => "refresh_token",
        }
    }
}

/// What a ciphertext is bound to: it decrypts only for this tenant, row, provider, field and
/// grant.
#[derive(Clone, Copy, Debug)]
pub struct TokenBinding {
    /// The tenant owning the connection.
    pub tenant_id: TenantId,
    /// The connection row.
    pub connection_id: ConnectionId,
    /// The provider.
    pub provider: Provider,
    /// The column.
    pub field: TokenField,
    /// The grant (completed authorization) the token belongs to; `None` only for rows that
    /// became `CONNECTED` before grants were recorded.
    pub grant_id: Option<uuid::Uuid>,
}

/// Room for the longest associated data (146 bytes, see [`TokenBinding::write_aad`]); the padded
/// provider-and-field segment written after the two leading ids ends at byte 121.
const AAD_CAPACITY: usize = 160;

/// Associated data, on the stack: it is built for every seal and open.
struct Aad {
    bytes: [u8; AAD_CAPACITY],
    len: usize,
}

impl Aad {
    fn empty() -> Self {
        Aad {
            bytes: [0; AAD_CAPACITY],
            len: 0,
        }
    }

    /// Copies all `N` bytes of `block` (a copy of a size known when compiling, so a few moves
    /// rather than a call to `memcpy`) but keeps only the first `used`: the rest is padding the
    /// next part overwrites.
    fn push_padded<const N: usize>(&mut self, block: &[u8; N], used: usize) {
        self.bytes[self.len..self.len + N].copy_from_slice(block);
        self.len += used;
    }

    /// Writes `id` hyphenated in lower case, as `Uuid::hyphenated` spells it, straight into the
    /// buffer: two characters a byte from a table, where the uuid crate's encoder goes nibble by
    /// nibble into its own buffer that is then copied (a third of the binding's cost on a 64-byte
    /// token, where the binding is most of what open adds to the cipher).
    fn push_uuid(&mut self, id: &uuid::Uuid) {
        /// Where each byte's two digits go: after the hyphens before it, each at a place known
        /// when compiling, so the loop unrolls into moves with no branch.
        const DIGITS_AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        let out = self.bytes[self.len..]
            .first_chunk_mut::<{ uuid::fmt::Hyphenated::LENGTH }>()
            .expect("the buffer has room for an id");
        for (byte, at) in id.as_bytes().iter().zip(DIGITS_AT) {
            out[at..at + 2].copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
        }
        for hyphen in [8, 13, 18, 23] {
            out[hyphen] = b'-';
        }
        self.len += uuid::fmt::Hyphenated::LENGTH;
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// `\0provider\0field\0` for every provider and field, padded to a fixed size, with its
/// length: indexed by the provider's and the field's discriminants.
const SEGMENTS: [[([u8; 32], usize); 2]; Provider::ALL.len()] = {
    /// Writes `name` at `at` after the separator there (the block's zero); returns where the
    /// next separator goes.
    const fn put(block: &mut [u8; 32], at: usize, name: &str) -> usize {
        let name = name.as_bytes();
        let mut i = 0;
        while i < name.len() {
            block[at + 1 + i] = name[i];
            i += 1;
        }
        at + 1 + name.len()
    }
    let mut table = [[([0u8; 32], 0); 2]; Provider::ALL.len()];
    let mut p = 0;
    while p < Provider::ALL.len() {
        let mut f = 0;
        while f < TokenField::ALL.len() {
            let (provider, field) = (Provider::ALL[p], TokenField::ALL[f]);
            let mut block = [0u8; 32];
            let at = put(&mut block, 0, provider.as_str());
            let at = put(&mut block, at, field.as_str());
            table[provider as usize][field as usize] = (block, at + 1);
            f += 1;
        }
        p += 1;
    }
    table
};

/// Each byte's two lower-case hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
        i += 1;
    }
    pairs
};

impl TokenBinding {
    /// `harbor.token.v<version>\0tenant\0connection\0provider\0field[\0grant]` (at most 146
    /// bytes: "harbor.token.v2" 15, three ids of 36, five separators, `gmail` or `slack`,
    /// `refresh_token`). Written into the caller's buffer, each part with moves of a fixed size:
    /// open adds about 60 ns to a 64-byte token's 230 ns cipher call, and the binding was half of
    /// it (returning the buffer copied it with `memcpy`, as did each part of a variable size).
    fn write_aad(&self, version: u8, aad: &mut Aad) {
        let mut prefix = *b"harbor.token.v0\0";
        prefix[14] = b'0' + version;
        aad.push_padded(&prefix, prefix.len());
        aad.push_uuid(&self.tenant_id.0);
        aad.push_padded(b"\0", 1);
        aad.push_uuid(&self.connection_id.0);
        let (segment, len) = &SEGMENTS[self.provider as usize][self.field as usize];
        // Version 1 ends with the field: its segment without the separator a grant would follow.
        aad.push_padded(segment, if version >= 2 { *len } else { len - 1 });
        if version >= 2 {
            match self.grant_id {
                Some(g) => aad.push_uuid(&g),
                None => aad.push_padded(b"no-grant", 8),
            }
        }
    }

    #[cfg(test)]
    fn associated_data(&self, version: u8) -> Vec<u8> {
        let mut aad = Aad::empty();
        self.write_aad(version, &mut aad);
        aad.as_slice().to_vec()
    }
}

/// The configured keys: `id:base64(32 bytes)` entries and the id of the primary.
#[derive(Clone)]
pub struct TokenKeysConfig {
    /// The keys, as `id:base64key` entries separated by commas.
    pub keys: SecretString,
    /// The key new values are written with; the first key when unset.
    pub primary: Option<String>,
}

/// Shows the primary only when it could be a key id: key material set there by mistake is not
/// printed by a `{config:?}` (the keys themselves are a `SecretString`).
impl std::fmt::Debug for TokenKeysConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let primary = self.primary.as_deref().map(|p| {
            if valid_key_id(p) {
                p.to_owned()
            } else {
                format!("({} characters, not an id; not shown)", p.len())
            }
        });
        f.debug_struct("TokenKeysConfig")
            .field("keys", &self.keys)
            .field("primary", &primary)
            .finish()
    }
}

/// The token keys in memory.
pub struct KeyRing {
    /// Each id with its cipher, the primary first (a seal takes it without a lookup, and most
    /// stored values are under it), the others in id order.
    keys: Vec<(String, Aes256Gcm)>,
    /// False only under the seeded flaw `no-aad-binding`.
    bind: bool,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("primary", &self.primary_key_id())
            .field(
                "key_ids",
                &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl KeyRing {
    /// Builds the ring from configuration; refuses an empty or malformed configuration.
    pub fn from_config(config: &TokenKeysConfig) -> Result<Self, VaultError> {
        let mut keys = BTreeMap::new();
        let mut materials: BTreeMap<Vec<u8>, String> = BTreeMap::new();
        let mut first = None;
        for entry in config
            .keys
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (id, material) = entry
                .split_once(':')
                .ok_or_else(|| VaultError::BadKey(String::new(), "expected id:base64"))?;
            if !valid_key_id(id) {
                // Not echoed: an entry written the wrong way round (`base64:id`) puts the key
                // material where the id belongs, and this message goes to the start-up log.
                return Err(VaultError::BadKey(
                    format!("({} characters, not shown)", id.len()),
                    "ids are 1-32 characters of [A-Za-z0-9_-] (an entry is id:base64)",
                ));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(material)
                .map_err(|_| VaultError::BadKey(id.to_owned(), "not base64"))?;
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| VaultError::BadKey(id.to_owned(), "not 32 bytes"))?;
            // A placeholder key (all zeros, or any one byte repeated) is as good as none.
            if bytes.windows(2).all(|w| w[0] == w[1]) {
                return Err(VaultError::BadKey(
                    id.to_owned(),
                    "one byte repeated: not a random key",
                ));
            }
            // Two ids for one key would make a rotation between them a no-op that looks done.
            if let Some(other) = materials.insert(bytes, id.to_owned()) {
                return Err(VaultError::BadKey(
                    id.to_owned(),
                    if other == id {
                        "configured twice"
                    } else {
                        "the same key material as another id"
                    },
                ));
            }
            if keys.insert(id.to_owned(), cipher).is_some() {
                return Err(VaultError::BadKey(id.to_owned(), "configured twice"));
            }
            first.get_or_insert_with(|| id.to_owned());
        }
        let primary = config.primary.clone().or(first).ok_or(VaultError::NoKeys)?;
        let Some(primary_cipher) = keys.remove(&primary) else {
            // Echoed only when it could be an id: key material set as the primary is not.
            let named = if valid_key_id(&primary) {
                primary
            } else {
                format!("({} characters, not an id; not shown)", primary.len())
            };
            return Err(VaultError::UnknownPrimary(named));
        };
        Ok(Self {
            keys: std::iter::once((primary, primary_cipher))
                .chain(keys)
                .collect(),
            bind: true,
        })
    }

    /// Seeded flaw `no-aad-binding`: encrypt and decrypt without associated data, so ciphertext
    /// moves between rows and tenants. Called only when that flaw is enabled.
    pub fn drop_binding_for_flaw(&mut self) {
        self.bind = false;
    }

    fn write_aad(&self, binding: &TokenBinding, version: u8, aad: &mut Aad) {
        if self.bind {
            binding.write_aad(version, aad);
        }
    }

    /// A ring with one fresh random key (tests and the harness).
    pub fn generate(id: &str) -> (Self, TokenKeysConfig) {
        let key = Aes256Gcm::generate_key(OsRng);
        let config = TokenKeysConfig {
            keys: SecretString::from(format!(
                "{id}:{}",
                base64::engine::general_purpose::STANDARD.encode(key)
            )),
            primary: Some(id.to_owned()),
        };
        (
            Self::from_config(&config).expect("a generated key is valid"),
            config,
        )
    }

    /// The cipher of the key `key_id`, compared byte by byte: ids are short, and `==` on slices
    /// calls `memcmp`. The stored id is taken as bytes, unchecked as text: only one equal to a
    /// configured id (text by construction) finds a key.
    fn cipher(&self, key_id: &[u8]) -> Option<&Aes256Gcm> {
        self.keys
            .iter()
            .find(|(id, _)| {
                id.len() == key_id.len() && id.bytes().zip(key_id.iter()).all(|(a, b)| a == *b)
            })
            .map(|(_, cipher)| cipher)
    }

    /// The id of the key new values are written with.
    pub fn primary_key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Encrypts `plaintext` under the primary key, bound to `binding`.
    pub fn encrypt(
        &self,
        plaintext: &SecretString,
        binding: &TokenBinding,
    ) -> Result<Vec<u8>, VaultError> {
        let (primary, cipher) = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut aad = Aad::empty();
        self.write_aad(binding, FORMAT_VERSION, &mut aad);
        let message = plaintext.expose_secret().as_bytes();
        // One buffer, encrypted in place: header, then the ciphertext, then the tag.
        let header = 2 + primary.len() + NONCE_LEN;
        let mut out = Vec::with_capacity(header + message.len() + 16);
        out.push(FORMAT_VERSION);
        out.push(primary.len() as u8);
        out.extend_from_slice(primary.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(message);
        let tag = cipher
            .encrypt_in_place_detached(&nonce, aad.as_slice(), &mut out[header..])
            .map_err(|_| VaultError::Undecryptable)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Decrypts a stored value; fails unless it was encrypted for exactly `binding` (grant
    /// included). Legacy values are refused: they are not bound to a grant.
    pub fn decrypt(
        &self,
        stored: &[u8],
        binding: &TokenBinding,
    ) -> Result<SecretString, VaultError> {
        if stored.first() == Some(&LEGACY_FORMAT_VERSION) {
            return Err(VaultError::Legacy);
        }
        self.decrypt_any_format(stored, binding)
    }

    /// Decrypts a current or legacy value: key rotation re-seals legacy values as current ones, and
    /// a revoke gives them back to the provider. Nothing else may use it.
    pub fn decrypt_any_format(
        &self,
        stored: &[u8],
        binding: &TokenBinding,
    ) -> Result<SecretString, VaultError> {
        let (version, key_id, nonce, sealed) = split(stored)?;
        let cipher = self
            .cipher(key_id)
            .ok_or_else(|| match std::str::from_utf8(key_id) {
                Ok(id) => VaultError::UnknownKey(id.to_owned()),
                Err(_) => VaultError::Malformed,
            })?;
        let mut aad = Aad::empty();
        self.write_aad(binding, version, &mut aad);
        // Decrypted in place into a buffer of exactly the plaintext's size, so the secret string
        // takes it over without another allocation and copy.
        let (ciphertext, tag) = sealed.split_at(sealed.len() - 16);
        let mut plain = Vec::with_capacity(ciphertext.len());
        plain.extend_from_slice(ciphertext);
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                aad.as_slice(),
                &mut plain,
                aes_gcm::Tag::from_slice(tag),
            )
            .map_err(|_| VaultError::Undecryptable)?;
        let text = String::from_utf8(plain).map_err(|_| VaultError::Malformed)?;
        Ok(SecretString::from(text))
    }
}

/// The key id a stored value was written with.
pub fn key_id_of(stored: &[u8]) -> Result<&str, VaultError> {
    let (_, id, _, _) = split(stored)?;
    std::str::from_utf8(id).map_err(|_| VaultError::Malformed)
}

/// A stored value's parts: format version, key id (its bytes), nonce, ciphertext with its tag.
type Parts<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn split(stored: &[u8]) -> Result<Parts<'_>, VaultError> {
    let (&version, rest) = stored.split_first().ok_or(VaultError::Malformed)?;
    if version != FORMAT_VERSION && version != LEGACY_FORMAT_VERSION {
        return Err(VaultError::Malformed);
    }
    let (&id_len, rest) = rest.split_first().ok_or(VaultError::Malformed)?;
    let id_len = usize::from(id_len);
    if rest.len() < id_len + NONCE_LEN + 16 {
        return Err(VaultError::Malformed);
    }
    let (id, rest) = rest.split_at(id_len);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    Ok((version, id, nonce, sealed))
}

#[cfg(test)]
mod tests;
