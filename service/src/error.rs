//! The service's one error type, [`ApiError`], and the one place where every error is mapped to
//! an HTTP status and a stable code. Error bodies are `{"error": {"code", "message", "request_id"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::context;
use crate::domain::ParseError;
use crate::lifecycle::TransitionError;
use crate::oauth_state::StateStoreError;
use crate::providers::ProviderError;
use crate::vault::VaultError;

/// Everything a request can fail with. Area errors convert into it with `From`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No bearer token, or one that does not verify.
    #[error("authentication required: {0}")]
    Unauthenticated(&'static str),
    /// The resource does not exist *for this caller*; also used for workspaces the caller is not a
    /// member of, so that their existence is not revealed.
    #[error("not found")]
    NotFound,
    /// The caller is a member but their role does not allow the operation.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// Malformed input: the field is named.
    #[error(transparent)]
    BadRequest(#[from] ParseError),
    /// The workspace has no active entitlement.
    #[error("the workspace is not entitled to activation")]
    ActivationNotEntitled,
    /// The workspace's QuickBooks Online connection is not `CONNECTED`.
    #[error("the QuickBooks Online connection is {0}, not CONNECTED")]
    ActivationNotReady(&'static str),
    /// A connection lifecycle transition that the state machine forbids.
    #[error(transparent)]
    InvalidTransition(#[from] TransitionError),
    /// The user declined the authorization at the provider (`error=access_denied`): nothing is
    /// broken, the connection is back where it was.
    #[error("the authorization was declined at the provider")]
    ConsentDenied,
    /// The route exists but not with this method.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// The OAuth state is unknown, expired or already used.
    #[error("the OAuth state is unknown, expired or already used")]
    OAuthStateInvalid,
    /// The OAuth state was issued to another tenant, user or provider (possible CSRF).
    #[error("the OAuth state was not issued for this caller and provider")]
    OAuthStateMismatch,
    /// The provider failed or refused; the message names the provider's error code only.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A newer authorization replaced the one this request belongs to.
    #[error("a newer authorization of this connection was started; this one no longer applies")]
    AuthorizationSuperseded,
    /// The callback could not finish (the workspace stayed busy); its state is spent and its
    /// grant given back, so only a new authorization helps — not a retry.
    #[error("the authorization could not be completed; start it again")]
    AuthorizationInterrupted,
    /// Too many requests from one scope (`tenant`, `address` or `failed-states`); retry after
    /// the given time.
    #[error("too many requests ({scope} limit); retry after {} s", .retry_after.as_secs().max(1))]
    RateLimited {
        /// Which bucket refused.
        scope: &'static str,
        /// When to retry.
        retry_after: std::time::Duration,
    },
    /// The provider refused the refresh token: the connection needs a new authorization.
    #[error("the provider refused the stored grant; reconnect the provider")]
    ReconnectRequired,
    /// The operation needs a `CONNECTED` connection.
    #[error("the connection is {0}, not CONNECTED")]
    NotConnected(&'static str),
    /// A stored token could not be decrypted or encrypted; details are logged, never returned.
    #[error("token storage error")]
    Vault(#[from] VaultError),
    /// The OAuth state store failed; details are logged, never returned.
    #[error("state store error")]
    StateStore(#[from] StateStoreError),
    /// A request parked at a sync point was not released in time (test mode only).
    #[error("sync point {0} was not released in time")]
    SyncPointTimeout(String),
    /// A lock was not granted within the configured `lock_timeout`; retry.
    #[error("the workspace is busy; retry shortly")]
    LockTimeout,
    /// No pooled database connection could be had in time (every one busy, or PostgreSQL out of
    /// reach), or the request's connection broke under it: the transaction is gone, nothing of it
    /// was committed. A problem of the whole replica, not of one workspace, so clients are told to
    /// come back later (a longer, jittered `Retry-After`), not in a second.
    #[error("the database is unavailable; retry later")]
    DatabaseUnavailable,
    /// PostgreSQL failed; details are logged, never returned.
    #[error("database error")]
    Database(sqlx::Error),
    /// Redis failed or did not answer in time; details are logged, never returned. Nothing that
    /// needs Redis proceeds without it (fail closed).
    #[error("a dependency is unavailable; retry later")]
    Redis(#[from] redis::RedisError),
}

#[derive(Serialize, utoipa::ToSchema)]
/// The body of every error response.
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
/// One error: a stable code to branch on, a message for people, and the request id to quote.
pub struct ErrorDetail {
    /// Stable, machine-readable code such as `ACTIVATION_NOT_READY`.
    pub code: &'static str,
    /// Human-readable explanation; never contains secrets.
    pub message: String,
    /// The request's id, also in the `x-request-id` header and the logs.
    pub request_id: String,
}

impl ApiError {
    /// The HTTP status and stable code for this error: the only mapping in the service.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            ApiError::ActivationNotEntitled => (StatusCode::CONFLICT, "ACTIVATION_NOT_ENTITLED"),
            ApiError::ActivationNotReady(_) => (StatusCode::CONFLICT, "ACTIVATION_NOT_READY"),
            ApiError::InvalidTransition(_) => (StatusCode::CONFLICT, "INVALID_TRANSITION"),
            ApiError::OAuthStateInvalid => (StatusCode::BAD_REQUEST, "OAUTH_STATE_INVALID"),
            ApiError::ConsentDenied => (StatusCode::FORBIDDEN, "CONSENT_DENIED"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            ApiError::OAuthStateMismatch => (StatusCode::FORBIDDEN, "OAUTH_STATE_MISMATCH"),
            ApiError::Provider(ProviderError::NotConfigured(_)) => (StatusCode::CONFLICT, "PROVIDER_NOT_CONFIGURED"),
            ApiError::Provider(_) => (StatusCode::BAD_GATEWAY, "PROVIDER_ERROR"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            ApiError::LockTimeout => (StatusCode::SERVICE_UNAVAILABLE, "LOCK_TIMEOUT"),
            ApiError::AuthorizationSuperseded => (StatusCode::CONFLICT, "AUTHORIZATION_SUPERSEDED"),
            ApiError::AuthorizationInterrupted => (StatusCode::SERVICE_UNAVAILABLE, "AUTHORIZATION_INTERRUPTED"),
            ApiError::ReconnectRequired => (StatusCode::CONFLICT, "RECONNECT_REQUIRED"),
            ApiError::NotConnected(_) => (StatusCode::CONFLICT, "CONNECTION_NOT_CONNECTED"),
            ApiError::SyncPointTimeout(_) => (StatusCode::INTERNAL_SERVER_ERROR, "SYNC_POINT_TIMEOUT"),
            ApiError::DatabaseUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE"),
            ApiError::Redis(_) | ApiError::StateStore(StateStoreError::Redis(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            ApiError::Database(_) | ApiError::Vault(_) | ApiError::StateStore(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL")
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // 55P03 lock_not_available: `lock_timeout` expired while waiting for a lock — this
        // workspace is busy. A pool with no connection to give is not that: it is the whole
        // replica (or the database) that is short, and it gets its own code.
        // A connection that broke mid-request (the network, a restart, a terminated backend:
        // 57P01–57P03) is the same: the database could not serve this request; retry later.
        let lost = matches!(e, sqlx::Error::Io(_))
            || e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c.starts_with("57P0"));
        if matches!(e, sqlx::Error::PoolTimedOut) || lost {
            ApiError::DatabaseUnavailable
        } else if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("55P03") {
            ApiError::LockTimeout
        } else {
            ApiError::Database(e)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let request_id = context::current_request_id();
        match &self {
            ApiError::Database(e) => tracing::error!(%request_id, error = %e, "database error"),
            ApiError::Redis(e) => tracing::error!(%request_id, error = %e, "redis error"),
            ApiError::DatabaseUnavailable => tracing::error!(%request_id, "no pooled database connection in time"),
            ApiError::Vault(e) => tracing::error!(%request_id, error = %e, "token vault error"),
            ApiError::StateStore(e) => tracing::error!(%request_id, error = %e, "oauth state store error"),
            ApiError::Provider(e) => tracing::warn!(%request_id, code, error = %e, "provider call failed"),
            ApiError::SyncPointTimeout(p) => {
                tracing::error!(%request_id, point = %p, "request parked at a sync point was never released")
            }
            other => tracing::info!(%request_id, code, reason = %other, "request refused"),
        }
        let body = ErrorBody { error: ErrorDetail { code, message: self.to_string(), request_id } };
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            ApiError::LockTimeout => {
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, 1u64.into());
            }
            ApiError::DatabaseUnavailable | ApiError::Redis(_) | ApiError::StateStore(StateStoreError::Redis(_)) => {
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, unavailable_retry_after().into());
            }
            _ => {}
        }
        if let ApiError::RateLimited { retry_after, .. } = self {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.max(1).into());
        }
        response
    }
}

/// Seconds a client should wait after a replica-wide unavailability: 5 to 15, at random, so that
/// the clients refused together do not all come back together.
pub fn unavailable_retry_after() -> u64 {
    use rand::Rng;
    rand::thread_rng().gen_range(5..=15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_exhaustion_is_not_a_busy_workspace() {
        let e = ApiError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(e.status_and_code(), (StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE"));
        let seconds: Vec<u64> = (0..200).map(|_| unavailable_retry_after()).collect();
        assert!(seconds.iter().all(|s| (5..=15).contains(s)));
        assert!(seconds.iter().any(|s| *s != seconds[0]), "jittered");
    }
}
