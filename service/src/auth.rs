//! Verified identity and workspace membership (audit finding 7.2, recommendation 8.1).
//!
//! Identity comes only from `Authorization: Bearer <JWT>` verified against the gateway's public
//! keys; headers such as `X-User-Id` are never read. Every workspace route takes a
//! [`WorkspaceMember`], which checks membership in the database before the handler runs. A caller
//! who is not a member gets 404, not 403, so workspace ids cannot be probed for existence.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::app::AppState;
use crate::config::JwtConfig;
use crate::domain::{ParseError, Provider, Role, TenantId, UserId, WorkspaceId};
use crate::error::ApiError;

/// Verifies the gateway's bearer tokens.
pub struct JwtVerifier {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    issuer: String,
    audience: String,
}

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
}

impl JwtVerifier {
    /// Builds a verifier from the configured key set. Only EdDSA (Ed25519) and RS256 keys with a
    /// `kid` are accepted; anything else is a configuration error, not a silently ignored key.
    pub fn new(config: &JwtConfig) -> Result<Self, KeyError> {
        let mut keys = HashMap::new();
        for jwk in &config.jwks.keys {
            let kid = jwk.common.key_id.clone();
            let err = |message: &str| KeyError { kid: kid.clone(), message: message.to_owned() };
            let id = kid.clone().ok_or_else(|| err("every key needs a kid"))?;
            let alg = match &jwk.algorithm {
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                _ => return Err(err("only Ed25519 (OKP) and RSA keys are accepted")),
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| err(&e.to_string()))?;
            keys.insert(id, (key, alg));
        }
        Ok(Self { keys, issuer: config.issuer.clone(), audience: config.audience.clone() })
    }

    /// Verifies a compact JWT and returns its subject. The error says why without echoing the token.
    pub fn verify(&self, token: &str) -> Result<UserId, ApiError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| ApiError::Unauthenticated("malformed token"))?;
        if has_critical_extensions(token) {
            // RFC 7515 §4.1.11: a `crit` extension the recipient does not understand makes the
            // token invalid, and this service understands none.
            return Err(ApiError::Unauthenticated("token has critical header extensions"));
        }
        let kid = header.kid.ok_or(ApiError::Unauthenticated("token has no key id"))?;
        let (key, alg) = self.keys.get(&kid).ok_or(ApiError::Unauthenticated("unknown signing key"))?;
        if header.alg != *alg {
            return Err(ApiError::Unauthenticated("token algorithm does not match its key"));
        }
        let mut validation = Validation::new(*alg);
        validation.leeway = 5;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            ApiError::Unauthenticated(match e.kind() {
                ErrorKind::ExpiredSignature => "token expired",
                ErrorKind::ImmatureSignature => "token not yet valid",
                ErrorKind::InvalidAudience => "token audience mismatch",
                ErrorKind::InvalidIssuer => "token issuer mismatch",
                ErrorKind::InvalidSignature => "token signature invalid",
                _ => "token invalid",
            })
        })?;
        UserId::parse(&data.claims.sub).map_err(|_| ApiError::Unauthenticated("token subject is not a user id"))
    }
}

/// Whether the JOSE header carries `crit` (jsonwebtoken's `Header` drops unknown members, so the
/// header is read again as JSON).
fn has_critical_extensions(token: &str) -> bool {
    use base64::Engine;
    let Some(encoded) = token.split('.').next() else { return false };
    let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')) else { return true };
    match serde_json::from_slice::<serde_json::Value>(&raw) {
        Ok(serde_json::Value::Object(members)) => members.contains_key("crit"),
        _ => true,
    }
}

/// The verified caller of a request.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    /// The user, from the token's `sub`.
    pub user_id: UserId,
}

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if crate::flaws::active(crate::flaws::Flaw::TrustUserHeader) {
            // Seeded flaw: the v1 "identity from a header" defect of the audit's finding R3.
            if let Some(user) = parts.headers.get("x-user-id").and_then(|v| v.to_str().ok()) {
                return Ok(Identity { user_id: UserId::parse(user)? });
            }
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthenticated("missing bearer token"))?;
        let value = header.to_str().map_err(|_| ApiError::Unauthenticated("malformed authorization header"))?;
        // The scheme is case-insensitive (RFC 7235 §2.1): `Bearer`, `bearer`, `BEARER`.
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or(ApiError::Unauthenticated("authorization is not a bearer token"))?;
        let user_id = state.jwt.verify(token.trim())?;
        Ok(Identity { user_id })
    }
}

/// A verified caller who is a member of the workspace named in the path.
#[derive(Clone, Copy, Debug)]
pub struct WorkspaceMember {
    /// The caller.
    pub user_id: UserId,
    /// The workspace from the path.
    pub workspace_id: WorkspaceId,
    /// The workspace's tenant.
    pub tenant_id: TenantId,
    /// The caller's role in it.
    pub role: Role,
}

impl WorkspaceMember {
    /// Refuses callers whose role may not administer the workspace.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role.can_administer() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this operation needs the owner or admin role"))
        }
    }
}

/// Looks up the caller's membership; `None` when they are not a member (or the workspace does not
/// exist — the two are deliberately indistinguishable).
pub async fn membership(
    pool: &sqlx::PgPool,
    workspace_id: WorkspaceId,
    user_id: UserId,
) -> Result<Option<(TenantId, Role)>, ApiError> {
    let row: Option<(TenantId, String)> =
        sqlx::query_as("SELECT tenant_id, role FROM memberships WHERE workspace_id = $1 AND user_id = $2")
            .bind(workspace_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    match row {
        None => Ok(None),
        Some((tenant, role)) => Ok(Some((tenant, Role::parse(&role)?))),
    }
}

/// Reads a named path segment without axum's plain-text rejections.
async fn path_segment(parts: &mut Parts, state: &AppState, name: &'static str) -> Result<String, ApiError> {
    let Path(params): Path<HashMap<String, String>> = Path::from_request_parts(parts, state)
        .await
        .map_err(|_| ParseError::new(name, "malformed path"))?;
    params.get(name).cloned().ok_or_else(|| ParseError::new(name, "missing from the path").into())
}

impl FromRequestParts<AppState> for WorkspaceMember {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Authentication first: an anonymous caller learns nothing, not even that an id is malformed.
        let identity = Identity::from_request_parts(parts, state).await?;
        let workspace_id = WorkspaceId::parse(&path_segment(parts, state, "workspace_id").await?)?;
        if crate::flaws::active(crate::flaws::Flaw::NoMembershipCheck) {
            // Seeded flaw: the v1 "fail-open" posture of the audit's finding 7.2. Row-level
            // security still scopes the request to the caller's own tenant.
            let tenant: Option<TenantId> = sqlx::query_scalar("SELECT tenant_id FROM users WHERE id = $1")
                .bind(identity.user_id)
                .fetch_optional(&state.db)
                .await?;
            let tenant_id = tenant.ok_or(ApiError::NotFound)?;
            return Ok(WorkspaceMember { user_id: identity.user_id, workspace_id, tenant_id, role: Role::Owner });
        }
        let (tenant_id, role) = membership(&state.db, workspace_id, identity.user_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        // `tenant_id` scopes row-level security for the request. It is the caller's own tenant
        // (the membership's foreign key makes the two equal), never something taken from the URL.
        Ok(WorkspaceMember { user_id: identity.user_id, workspace_id, tenant_id, role })
    }
}

/// The `{provider}` path segment, parsed.
#[derive(Clone, Copy, Debug)]
pub struct ProviderPath(pub Provider);

impl FromRequestParts<AppState> for ProviderPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ProviderPath(Provider::parse(&path_segment(parts, state, "provider").await?)?))
    }
}
