//! Bearer-token verification: the gateway's JWTs, checked against its public keys (audit finding
//! 7.2). The request extractors that use it are in [`crate::auth`].

use std::collections::HashMap;

use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::{Algorithm, DecodingKey};
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

/// The registered claims the check reads, each kept as sent so that its type is judged here (a
/// repeated one makes the claims invalid; other members are skipped, their text already checked
/// to be UTF-8).
#[derive(Deserialize)]
struct RawClaims {
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
    sub: Option<serde_json::Value>,
    iss: Option<serde_json::Value>,
    aud: Option<serde_json::Value>,
}

/// The header as jsonwebtoken's `Header` reads it — the same members, of the same types, a
/// repeated one refused — plus whether it has `crit`, which `Header` does not keep, and every
/// other member read as JSON (not skipped: serde's skipping does not refuse a lone surrogate, a
/// number out of range or nesting too deep, which a JSON reading does). One read, so the header
/// is parsed once rather than once as `Header` and again as a JSON object.
#[derive(Deserialize)]
#[allow(dead_code)] // Members read only to be type-checked, as `Header` checks them.
struct RawHeader {
    alg: Algorithm,
    kid: Option<String>,
    /// Present at all, even as `null`.
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    typ: Option<String>,
    cty: Option<String>,
    jku: Option<String>,
    jwk: Option<jsonwebtoken::jwk::Jwk>,
    x5u: Option<String>,
    x5c: Option<Vec<String>>,
    x5t: Option<String>,
    #[serde(rename = "x5t#S256")]
    x5t_s256: Option<String>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// A member that is there, whatever its value.
fn present<'de, D: serde::Deserializer<'de>>(value: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(value).map(|_| true)
}

/// A JSON object's text: serde would also take a struct from an array, members in order.
fn is_object(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
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

    /// The whole check: header, key, signature, claims. Each of the token's three parts is split
    /// off and base64-decoded once; the header and the claims are each read once, as text
    /// already checked to be UTF-8. The claim rules are jsonwebtoken's `Validation` rules,
    /// kept here because its `decode` would decode every part again.
    fn verify_signed(&self, token: &str) -> Result<(UserId, i64), TokenRejected> {
        use base64::Engine;
        const MALFORMED: TokenRejected = TokenRejected("malformed token");
        const INVALID: TokenRejected = TokenRejected("token invalid");
        let b64 = |part: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part);
        let mut parts = token.split('.');
        let (Some(head), Some(body), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MALFORMED);
        };
        // All of it UTF-8 (checked on the text, since serde does not look inside the members it
        // skips), an object, and read once.
        let header_raw = b64(head).map_err(|_| MALFORMED)?;
        let header_text = std::str::from_utf8(&header_raw).map_err(|_| MALFORMED)?;
        if !is_object(header_text) {
            return Err(MALFORMED);
        }
        let header: RawHeader = serde_json::from_str(header_text).map_err(|_| MALFORMED)?;
        if header.crit {
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
        let signed = &token[..head.len() + 1 + body.len()];
        if !jsonwebtoken::crypto::verify(signature, signed.as_bytes(), key, *alg).unwrap_or(false) {
            return Err(TokenRejected("token signature invalid"));
        }
        // RFC 7519 §7.2 (10): the claims are UTF-8 JSON — all of them, not only the members read.
        let raw = b64(body).map_err(|_| INVALID)?;
        let text =
            std::str::from_utf8(&raw).map_err(|_| TokenRejected("token claims are not UTF-8"))?;
        if !is_object(text) {
            return Err(INVALID);
        }
        let claims: RawClaims = serde_json::from_str(text).map_err(|_| INVALID)?;
        // Present means present with the right type (an `exp` that is not a whole number of
        // seconds is no `exp`), as jsonwebtoken's required claims are.
        let exp = claims
            .exp
            .as_ref()
            .and_then(serde_json::Value::as_u64)
            .ok_or(INVALID)?;
        let sub = claims
            .sub
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .ok_or(INVALID)?;
        let iss = claims.iss.as_ref().and_then(names).ok_or(INVALID)?;
        let aud = claims.aud.as_ref().and_then(names).ok_or(INVALID)?;
        let now = jsonwebtoken::get_current_timestamp();
        if exp < now.saturating_sub(LEEWAY_SECONDS) {
            return Err(TokenRejected("token expired"));
        }
        if not_before(claims.nbf.as_ref())?
            .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECONDS))
        {
            return Err(TokenRejected("token not yet valid"));
        }
        if !iss.contains(&self.issuer.as_str()) {
            return Err(TokenRejected("token issuer mismatch"));
        }
        if !aud.contains(&self.audience.as_str()) {
            return Err(TokenRejected("token audience mismatch"));
        }
        let exp = i64::try_from(exp).map_err(|_| INVALID)?;
        let user =
            UserId::parse(sub).map_err(|_| TokenRejected("token subject is not a user id"))?;
        Ok((user, exp))
    }
}

/// The `nbf` claim as jsonwebtoken reads it: a whole number, or a number of seconds rounded to
/// one (finite, not negative, within `u64`); anything else scalar is no `nbf` and not checked; an
/// array or an object makes the claims invalid (jsonwebtoken's reading fails there).
fn not_before(value: Option<&serde_json::Value>) -> Result<Option<u64>, TokenRejected> {
    match value {
        Some(serde_json::Value::Number(n)) => Ok(n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f.round() as u64)
        })),
        Some(serde_json::Value::Array(_) | serde_json::Value::Object(_)) => {
            Err(TokenRejected("token invalid"))
        }
        _ => Ok(None),
    }
}

/// A `iss` or `aud` claim: one name or a list of names (`None`: neither).
fn names(value: &serde_json::Value) -> Option<Vec<&str>> {
    match value {
        serde_json::Value::String(one) => Some(vec![one.as_str()]),
        serde_json::Value::Array(many) => many.iter().map(serde_json::Value::as_str).collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn verifier() -> JwtVerifier {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
        let jwks = serde_json::from_value(serde_json::json!({
            "keys": [{ "kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": x }]
        }))
        .expect("a JWK set");
        JwtVerifier::new(&JwtConfig {
            jwks,
            issuer: "i".into(),
            audience: "a".into(),
        })
        .expect("a usable key")
    }

    /// A token with `header` (bytes, base64-encoded here) and a signature nobody made: only a
    /// header the check accepts gets as far as the signature.
    fn with_header(header: &[u8]) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        format!("{}.{}.{}", b64(header), b64(b"{}"), b64(&[0u8; 64]))
    }

    #[test]
    fn the_header_is_read_once_as_strictly_as_jsonwebtoken_reads_it() {
        let v = verifier();
        let verdict = |h: &[u8]| v.verify(&with_header(h)).unwrap_err().0;
        assert_eq!(
            verdict(br#"{"alg":"EdDSA","kid":"k1","typ":"JWT","x":"\u00e9"}"#),
            "token signature invalid",
            "a well-formed header reaches the signature"
        );
        for (header, why) in [
            // Every member in `RawHeader`'s order: serde would take a struct from it.
            (
                &br#"["EdDSA","k1",null,null,null,null,null,null,null,null,null]"#[..],
                "an array, not an object",
            ),
            (
                br#"{"alg":"EdDSA","kid":"k1","kid":"k1"}"#,
                "a repeated member",
            ),
            (
                br#"{"alg":"EdDSA","kid":"k1","typ":7}"#,
                "a mistyped member",
            ),
            (
                br#"{"alg":"none","kid":"k1"}"#,
                "an algorithm it does not know",
            ),
            (
                b"{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"x\":\"\xff\"}",
                "a member that is not UTF-8",
            ),
            (br#"{"alg":"EdDSA","kid":"k1""#, "not JSON"),
            (
                br#"{"alg":"EdDSA","kid":"k1","x":"\ud800"}"#,
                "a lone surrogate",
            ),
            (
                br#"{"alg":"EdDSA","kid":"k1","x":1e400}"#,
                "a number out of range",
            ),
        ] {
            assert_eq!(verdict(header), "malformed token", "{why}");
        }
        for crit in [r#""crit":["exp"]"#, r#""crit":null"#] {
            let header = format!(r#"{{"alg":"EdDSA","kid":"k1",{crit}}}"#);
            assert_eq!(
                verdict(header.as_bytes()),
                "token has critical header extensions",
                "{crit}"
            );
        }
        assert_eq!(verdict(br#"{"alg":"EdDSA"}"#), "token has no key id");
        assert_eq!(
            verdict(br#"{"alg":"RS256","kid":"k1"}"#),
            "token algorithm does not match its key"
        );
    }
}
