//! [`TokenMint`]: the harness's stand-in for the identity gateway. It holds an Ed25519 key pair,
//! hands the service the matching JWK set, and signs tokens — valid ones, and the deliberately bad
//! ones the auth scenarios need (expired, wrong key, wrong audience, wrong issuer).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use harbor_service::config::JwtConfig;
use jsonwebtoken::{Algorithm, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Serialize;
use uuid::Uuid;

/// The issuer every good token carries.
pub const ISSUER: &str = "https://gateway.harbor.test";
/// The audience every good token carries.
pub const AUDIENCE: &str = "harbor-service";
const KEY_ID: &str = "harbor-gateway-1";

/// Signs tokens for the service under test.
pub struct TokenMint {
    key: EncodingKey,
    /// A second key, unknown to the service, presented under the real key id.
    impostor: EncodingKey,
    public_x: String,
}

impl std::fmt::Debug for TokenMint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMint")
            .field("kid", &KEY_ID)
            .finish_non_exhaustive()
    }
}

/// Which kind of token to sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Valid for an hour.
    Valid,
    /// Valid for a day (the tokens `harbor-certify serve` hands out).
    LongLived,
    /// Expired an hour ago.
    Expired,
    /// Not valid for another hour.
    NotYetValid,
    /// Signed by a key the service does not know, under the real key id.
    WrongKey,
    /// For another audience.
    WrongAudience,
    /// From another issuer.
    WrongIssuer,
    /// Valid and well signed, but its header lists a `crit` extension nobody understands
    /// (RFC 7515 §4.1.11: must be refused).
    UnknownCriticalHeader,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: String,
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
}

fn generate() -> (EncodingKey, Vec<u8>) {
    let (key, public, _) = generate_keeping();
    (key, public)
}

fn generate_keeping() -> (EncodingKey, Vec<u8>, Vec<u8>) {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system RNG works");
    let (key, public) = from_pkcs8(pkcs8.as_ref()).expect("ring parses its own PKCS#8");
    (key, public, pkcs8.as_ref().to_vec())
}

fn from_pkcs8(pkcs8: &[u8]) -> Result<(EncodingKey, Vec<u8>), String> {
    let pair =
        Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
    Ok((
        EncodingKey::from_ed_der(pkcs8),
        pair.public_key().as_ref().to_vec(),
    ))
}

impl Default for TokenMint {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenMint {
    /// A mint with fresh keys.
    pub fn new() -> Self {
        let (key, public) = generate();
        let (impostor, _) = generate();
        Self {
            key,
            impostor,
            public_x: URL_SAFE_NO_PAD.encode(public),
        }
    }

    /// A mint from a gateway key written by [`write_service_keys`] (base64 PKCS#8).
    pub fn from_key_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let pkcs8 = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let (key, public) = from_pkcs8(&pkcs8)?;
        let (impostor, _) = generate();
        Ok(Self {
            key,
            impostor,
            public_x: URL_SAFE_NO_PAD.encode(public),
        })
    }

    /// The JWK set the service verifies with.
    pub fn jwks_json(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": KEY_ID, "x": self.public_x,
        }]})
    }

    /// The service's JWT configuration for this mint.
    pub fn jwt_config(&self) -> JwtConfig {
        JwtConfig {
            jwks: serde_json::from_value(self.jwks_json()).expect("a well-formed JWK set"),
            issuer: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
        }
    }

    /// Signs `claims` — any bytes, base64url-encoded as the payload — with the gateway's key and a
    /// well-formed header: a token whose signature is good whatever its claims say (fuzzing of the
    /// claims handling).
    pub fn sign_raw_claims(&self, claims: &[u8]) -> String {
        let header = serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": KEY_ID });
        self.sign_with_raw_header(header.to_string().as_bytes(), claims)
    }

    /// Signs a header and claims given as bytes (each base64url-encoded as it is) with the
    /// gateway's key: a good signature over whatever they say (the verifier's header handling).
    pub fn sign_with_raw_header(&self, header: &[u8], claims: &[u8]) -> String {
        sign_parts(&self.key, header, claims)
    }

    /// Signs a token of `kind` for `user`.
    pub fn token(&self, user: Uuid, kind: TokenKind) -> String {
        let t = ClaimTimes::of(kind);
        let claims = Claims {
            sub: user.to_string(),
            iss: t.issuer,
            aud: t.audience,
            iat: t.iat,
            nbf: t.nbf,
            exp: t.exp,
        };
        self.sign_claims_as(kind, &serde_json::to_value(&claims).expect("claims"))
    }

    /// Signs `claims` the way a token of `kind` is signed: with the impostor key for
    /// [`TokenKind::WrongKey`], under a header with an unknown `crit` extension for
    /// [`TokenKind::UnknownCriticalHeader`], and as the gateway otherwise. (What `kind` changes in
    /// the claims themselves is [`ClaimTimes`]'.)
    pub fn sign_claims_as(&self, kind: TokenKind, claims: &serde_json::Value) -> String {
        let key = if kind == TokenKind::WrongKey {
            &self.impostor
        } else {
            &self.key
        };
        let header = if kind == TokenKind::UnknownCriticalHeader {
            // jsonwebtoken's `Header` has no `crit`: the token is assembled and signed by hand.
            serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": KEY_ID, "crit": ["harbor-ext"], "harbor-ext": true })
        } else {
            serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": KEY_ID })
        };
        sign_parts(
            key,
            header.to_string().as_bytes(),
            claims.to_string().as_bytes(),
        )
    }
}

/// `header` and `claims`, each base64url-encoded as it is, signed with `key`: a compact JWS.
fn sign_parts(key: &EncodingKey, header: &[u8], claims: &[u8]) -> String {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let signing_input = format!("{}.{}", b64(header), b64(claims));
    let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), key, Algorithm::EdDSA)
        .expect("signing with a valid Ed25519 key");
    format!("{signing_input}.{signature}")
}

/// What a token of some [`TokenKind`] says besides its subject: issuer, audience and times.
#[derive(Clone, Copy, Debug)]
pub struct ClaimTimes {
    /// `iss`: the gateway's, or another for [`TokenKind::WrongIssuer`].
    pub issuer: &'static str,
    /// `aud`: the service's, or another for [`TokenKind::WrongAudience`].
    pub audience: &'static str,
    /// `iat`.
    pub iat: i64,
    /// `nbf`.
    pub nbf: i64,
    /// `exp`.
    pub exp: i64,
}

impl ClaimTimes {
    /// The claims of a token of `kind` signed now.
    pub fn of(kind: TokenKind) -> Self {
        let now = chrono::Utc::now().timestamp();
        let hour = 3600;
        let (nbf, exp) = match kind {
            TokenKind::Expired => (now - 2 * hour, now - hour),
            TokenKind::NotYetValid => (now + hour, now + 2 * hour),
            TokenKind::LongLived => (now - 1, now + 24 * hour),
            _ => (now - 1, now + hour),
        };
        Self {
            issuer: if kind == TokenKind::WrongIssuer {
                "https://evil.example"
            } else {
                ISSUER
            },
            audience: if kind == TokenKind::WrongAudience {
                "another-service"
            } else {
                AUDIENCE
            },
            iat: now,
            nbf,
            exp,
        }
    }
}

/// Writes what a hand-started `harbor-service` needs to verify the tokens of a stand-in gateway
/// and to seal provider tokens, into `dir`: `gateway.key` (the gateway's Ed25519 key, base64
/// PKCS#8, private: `harbor-certify token` signs with it), `jwks.json` (its public JWK set) and
/// `service.env` (`HARBOR_JWT_JWKS_FILE`, `HARBOR_JWT_ISSUER`, `HARBOR_JWT_AUDIENCE`, and
/// `HARBOR_TOKEN_KEYS` with one fresh random key). Returns the path of `service.env`.
pub fn write_service_keys(dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let (key, public, pkcs8) = generate_keeping();
    let (impostor, _) = generate();
    let mint = TokenMint {
        key,
        impostor,
        public_x: URL_SAFE_NO_PAD.encode(public),
    };
    let private = |name: &str, text: String| -> std::io::Result<()> {
        crate::secret_file::write_secret_file(&dir.join(name), text.as_bytes())
    };
    private(
        "gateway.key",
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(&pkcs8)
        ),
    )?;
    std::fs::write(dir.join("jwks.json"), format!("{:#}\n", mint.jwks_json()))?;
    let mut token_key = [0u8; 32];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut token_key)
        .expect("the system RNG works");
    let env = format!(
        "HARBOR_JWT_JWKS_FILE={}\nHARBOR_JWT_ISSUER={ISSUER}\nHARBOR_JWT_AUDIENCE={AUDIENCE}\nHARBOR_TOKEN_KEYS=k1:{}\n",
        dir.join("jwks.json").display(),
        base64::engine::general_purpose::STANDARD.encode(token_key)
    );
    private("service.env", env)?;
    Ok(dir.join("service.env"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `keygen --service` then `token`: the service, configured from `service.env`, accepts the
    /// token; and the written token key makes a usable key ring.
    #[test]
    fn written_service_keys_verify_minted_tokens() {
        let dir = std::env::temp_dir().join(format!("harbor-keys-{}", Uuid::new_v4()));
        let env = write_service_keys(&dir).unwrap();
        let vars: std::collections::HashMap<String, String> = std::fs::read_to_string(&env)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let jwks = std::fs::read_to_string(&vars["HARBOR_JWT_JWKS_FILE"]).unwrap();
        let config = JwtConfig {
            jwks: serde_json::from_str(&jwks).unwrap(),
            issuer: vars["HARBOR_JWT_ISSUER"].clone(),
            audience: vars["HARBOR_JWT_AUDIENCE"].clone(),
        };
        let verifier = harbor_service::auth::JwtVerifier::new(&config).unwrap();
        let mint = TokenMint::from_key_file(&dir.join("gateway.key")).unwrap();
        let user = Uuid::new_v4();
        assert_eq!(
            verifier
                .verify(&mint.token(user, TokenKind::LongLived))
                .unwrap()
                .0,
            user
        );
        let keys = harbor_service::vault::TokenKeysConfig {
            keys: secrecy::SecretString::from(vars["HARBOR_TOKEN_KEYS"].clone()),
            primary: None,
        };
        assert!(harbor_service::vault::KeyRing::from_config(&keys).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
