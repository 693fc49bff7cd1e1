//! Bearer-token verification: the gateway's JWTs, checked against its public keys (audit finding
//! 7.2). The request extractors that use it are in [`crate::auth`].

use std::collections::HashMap;

use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::JwtConfig;
use crate::domain::UserId;

/// A bearer token that does not verify; the reason is safe to show (it never echoes the token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenRejected(pub &'static str);

/// Verifies the gateway's bearer tokens.
pub struct JwtVerifier {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    issuer: String,
    audience: String,
    /// Tokens that verified, by the SHA-256 of their text, with their subject and `exp`. Every
    /// request of a session carries the same token, and the signature check is the largest part
    /// of a request's CPU in the service (perf, `cargo xtask bench`: Ed25519 verification was
    /// about 40 % of the replicas' user time). Only successes are kept, each only until its
    /// `exp` (with the check's leeway); the map is emptied when it reaches [`VERIFIED_LIMIT`].
    verified: std::sync::Mutex<HashMap<[u8; 32], (UserId, i64)>>,
}

/// Most verified tokens remembered at once.
const VERIFIED_LIMIT: usize = 10_000;

/// Seconds of clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 5;

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// A key in the configured set that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("JWK {kid:?}: {message}")]
pub struct KeyError {
    kid: Option<String>,
    message: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
}

impl JwtVerifier {
    /// Builds a verifier from the configured key set. Only EdDSA (Ed25519) and RS256 keys with a
    /// `kid` are accepted; anything else is a configuration error, not a silently ignored key.
    pub fn new(config: &JwtConfig) -> Result<Self, KeyError> {
        let mut keys = HashMap::new();
        for jwk in &config.jwks.keys {
            let kid = jwk.common.key_id.clone();
            let err = |message: &str| KeyError {
                kid: kid.clone(),
                message: message.to_owned(),
            };
            let id = kid.clone().ok_or_else(|| err("every key needs a kid"))?;
            let alg = match &jwk.algorithm {
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                _ => return Err(err("only Ed25519 (OKP) and RSA keys are accepted")),
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| err(&e.to_string()))?;
            keys.insert(id, (key, alg));
        }
        Ok(Self {
            verified: std::sync::Mutex::new(HashMap::new()),
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    /// Verifies a compact JWT and returns its subject. The error says why without echoing the token.
    pub fn verify(&self, token: &str) -> Result<UserId, TokenRejected> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = jsonwebtoken::get_current_timestamp() as i64;
        if let Ok(mut verified) = self.verified.lock() {
            match verified.get(&digest) {
                // Saturating: a signed `exp` may be any i64 (i64::MAX overflowed here).
                Some((user, exp)) if now <= exp.saturating_add(LEEWAY_SECONDS as i64) => {
                    return Ok(*user)
                }
                Some(_) => {
                    // Expired since: forget it, and let the full check say so.
                    verified.remove(&digest);
                }
                None => {}
            }
        }
        let (user, exp) = self.verify_signed(token)?;
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_LIMIT {
                verified.clear();
            }
            verified.insert(digest, (user, exp));
        }
        Ok(user)
    }

    /// The whole check: header, key, signature, claims.
    fn verify_signed(&self, token: &str) -> Result<(UserId, i64), TokenRejected> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| TokenRejected("malformed token"))?;
        if has_critical_extensions(token) {
            // RFC 7515 §4.1.11: a `crit` extension the recipient does not understand makes the
            // token invalid, and this service understands none.
            return Err(TokenRejected("token has critical header extensions"));
        }
        let kid = header.kid.ok_or(TokenRejected("token has no key id"))?;
        let (key, alg) = self
            .keys
            .get(&kid)
            .ok_or(TokenRejected("unknown signing key"))?;
        if header.alg != *alg {
            return Err(TokenRejected("token algorithm does not match its key"));
        }
        let mut validation = Validation::new(*alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            TokenRejected(match e.kind() {
                ErrorKind::ExpiredSignature => "token expired",
                ErrorKind::ImmatureSignature => "token not yet valid",
                ErrorKind::InvalidAudience => "token audience mismatch",
                ErrorKind::InvalidIssuer => "token issuer mismatch",
                ErrorKind::InvalidSignature => "token signature invalid",
                _ => "token invalid",
            })
        })?;
        // RFC 7519 §7.2 (10): the claims are UTF-8 JSON. serde skips members it does not know
        // without reading their text, so a signed payload with invalid UTF-8 in such a member got
        // through (found by fuzzing signed claims: fuzz/regressions/jwt/).
        if !payload_is_utf8(token) {
            return Err(TokenRejected("token claims are not UTF-8"));
        }
        let user = UserId::parse(&data.claims.sub)
            .map_err(|_| TokenRejected("token subject is not a user id"))?;
        Ok((user, data.claims.exp))
    }
}

/// Whether the token's payload segment decodes to UTF-8 text.
fn payload_is_utf8(token: &str) -> bool {
    use base64::Engine;
    token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .is_some_and(|raw| std::str::from_utf8(&raw).is_ok())
}

/// Whether the JOSE header carries `crit` (jsonwebtoken's `Header` drops unknown members, so the
/// header is read again as JSON).
fn has_critical_extensions(token: &str) -> bool {
    use base64::Engine;
    let Some(encoded) = token.split('.').next() else {
        return false;
    };
    let Ok(raw) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('='))
    else {
        return true;
    };
    match serde_json::from_slice::<serde_json::Value>(&raw) {
        Ok(serde_json::Value::Object(members)) => members.contains_key("crit"),
        _ => true,
    }
}
