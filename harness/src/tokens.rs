//! [`TokenMint`]: the harness's stand-in for the identity gateway. It holds an Ed25519 key pair,
//! hands the service the matching JWK set, and signs tokens — valid ones, and the deliberately bad
//! ones the auth scenarios need (expired, wrong key, wrong audience, wrong issuer).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use harbor_service::config::JwtConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
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
        f.debug_struct("TokenMint").field("kid", &KEY_ID).finish_non_exhaustive()
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
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system RNG works");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ring parses its own PKCS#8");
    (EncodingKey::from_ed_der(pkcs8.as_ref()), pair.public_key().as_ref().to_vec())
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
        Self { key, impostor, public_x: URL_SAFE_NO_PAD.encode(public) }
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

    /// Signs a token of `kind` for `user`.
    pub fn token(&self, user: Uuid, kind: TokenKind) -> String {
        let now = chrono::Utc::now().timestamp();
        let hour = 3600;
        let (nbf, exp) = match kind {
            TokenKind::Expired => (now - 2 * hour, now - hour),
            TokenKind::NotYetValid => (now + hour, now + 2 * hour),
            TokenKind::LongLived => (now - 1, now + 24 * hour),
            _ => (now - 1, now + hour),
        };
        let claims = Claims {
            sub: user.to_string(),
            iss: if kind == TokenKind::WrongIssuer { "https://evil.example" } else { ISSUER },
            aud: if kind == TokenKind::WrongAudience { "another-service" } else { AUDIENCE },
            iat: now,
            nbf,
            exp,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(KEY_ID.to_owned());
        let key = if kind == TokenKind::WrongKey { &self.impostor } else { &self.key };
        if kind == TokenKind::UnknownCriticalHeader {
            // jsonwebtoken's `Header` has no `crit`: the token is assembled and signed by hand.
            use base64::Engine;
            let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            let header = serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": KEY_ID, "crit": ["harbor-ext"], "harbor-ext": true });
            let signing_input = format!("{}.{}", b64(&header), b64(&serde_json::to_value(&claims).expect("claims")));
            let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), key, Algorithm::EdDSA).expect("signing");
            return format!("{signing_input}.{signature}");
        }
        jsonwebtoken::encode(&header, &claims, key).expect("signing with a valid Ed25519 key")
    }
}
