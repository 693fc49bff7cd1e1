//! The service's one error type, [`ApiError`], and the one place where every error is mapped to
//! an HTTP status and a stable code. Error bodies are `{"error": {"code", "message", "request_id"}}`.
//!
//! The modules below this one (database, locks, lifecycle, vault, providers, OAuth states, rate
//! limits, sync points, token verification) each have their own error type and know nothing of
//! HTTP; the `From` conversions here are where their errors become answers.
//!
//! Past 500 lines with its tests: each answer's status, code and headers is pinned by a test
//! beside the mapping it checks.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::context;
use crate::db::DbError;
use crate::domain::ParseError;
use crate::jwt::TokenRejected;
use crate::lifecycle::{LifecycleError, TransitionError};
use crate::oauth_state::StateStoreError;
use crate::providers::ProviderError;
use crate::ratelimit::RateLimitError;
use crate::syncpoints::SyncPointTimeout;
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
    /// The workspace's QuickBooks Online connection is not `CONNECTED`, or its grant is over (its
    /// refresh token past the expiry Intuit gave it). The text says which.
    #[error("the QuickBooks Online connection is {0}; activation needs it CONNECTED, with a grant that has not expired")]
    ActivationNotReady(&'static str),
    /// A connection lifecycle transition that the state machine forbids.
    #[error(transparent)]
    InvalidTransition(#[from] TransitionError),
    /// The user declined the authorization at the provider (`error=access_denied`): nothing is
    /// broken, the connection is back where it was.
    #[error("the authorization was declined at the provider")]
    ConsentDenied,
    /// The user consented to fewer scopes than the connection needs (unticked at the consent
    /// screen): the grant was given back, the connection is back where it was.
    #[error("the grant lacks scopes the connection needs")]
    ScopeNotGranted,
    /// The route exists but not with this method.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// The OAuth state is unknown, expired or already used.
    #[error("the OAuth state is unknown, expired or already used")]
    OAuthStateInvalid,
    /// The OAuth state was issued to another tenant, user or provider (possible CSRF).
    #[error("the OAuth state was not issued for this caller and provider")]
    OAuthStateMismatch,
    /// The callback's `iss` names another authorization server than the one the flow was
    /// started with, or is missing where the provider always sends it (RFC 9207): a mix-up
    /// attack or a misconfiguration. The code is never sent anywhere.
    #[error("the authorization response's issuer is not the provider's")]
    IssuerMismatch,
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
    /// The request declared a body larger than the service accepts (no route takes one this big).
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The most a request body may hold.
        limit: usize,
    },
    /// The request took longer than the service's request timeout; whatever it had not committed
    /// is rolled back, work it handed to its own task (a callback's store, a revocation) goes on.
    #[error("the request took too long; retry")]
    RequestTimeout,
    /// The replica stopped while the request's own task ran (the process is shutting down): what
    /// that task had committed stays, what it had not is rolled back or left to the outbox.
    #[error("the service is stopping; retry")]
    Stopping,
    /// The request's handler panicked: a bug, answered as INTERNAL (with the request id, and
    /// logged) rather than a connection dropped without an answer.
    #[error("internal error")]
    HandlerPanicked,
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
            ApiError::ScopeNotGranted => (StatusCode::FORBIDDEN, "OAUTH_SCOPE_NOT_GRANTED"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            ApiError::OAuthStateMismatch => (StatusCode::FORBIDDEN, "OAUTH_STATE_MISMATCH"),
            ApiError::IssuerMismatch => (StatusCode::FORBIDDEN, "OAUTH_ISSUER_MISMATCH"),
            ApiError::Provider(ProviderError::Protocol(_)) => {
                (StatusCode::BAD_GATEWAY, "PROVIDER_PROTOCOL_ERROR")
            }
            ApiError::Provider(ProviderError::NotConfigured(_)) => {
                (StatusCode::CONFLICT, "PROVIDER_NOT_CONFIGURED")
            }
            ApiError::Provider(ProviderError::RateLimited { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "PROVIDER_RATE_LIMITED")
            }
            ApiError::Provider(ProviderError::AccessDenied) => {
                (StatusCode::CONFLICT, "PROVIDER_ACCESS_DENIED")
            }
            ApiError::Provider(_) => (StatusCode::BAD_GATEWAY, "PROVIDER_ERROR"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            ApiError::LockTimeout => (StatusCode::SERVICE_UNAVAILABLE, "LOCK_TIMEOUT"),
            ApiError::AuthorizationSuperseded => (StatusCode::CONFLICT, "AUTHORIZATION_SUPERSEDED"),
            ApiError::AuthorizationInterrupted => {
                (StatusCode::SERVICE_UNAVAILABLE, "AUTHORIZATION_INTERRUPTED")
            }
            ApiError::ReconnectRequired => (StatusCode::CONFLICT, "RECONNECT_REQUIRED"),
            ApiError::NotConnected(_) => (StatusCode::CONFLICT, "CONNECTION_NOT_CONNECTED"),
            ApiError::SyncPointTimeout(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "SYNC_POINT_TIMEOUT")
            }
            ApiError::DatabaseUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE")
            }
            ApiError::Redis(_) | ApiError::StateStore(StateStoreError::Redis(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            ApiError::Database(_) | ApiError::Vault(_) | ApiError::StateStore(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL")
            }
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
            }
            ApiError::RequestTimeout => (StatusCode::SERVICE_UNAVAILABLE, "REQUEST_TIMEOUT"),
            ApiError::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_STOPPING"),
            ApiError::HandlerPanicked => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        // A lock not granted in time is a busy workspace. A pool with no connection to give is
        // not that: it is the whole replica (or the database) that is short, and it gets its own
        // code; so does a connection that broke mid-request. Either way, retry later.
        // The answer's code says which kind; the log keeps what PostgreSQL or the pool said.
        use crate::context::current_request_id as request_id;
        match e {
            DbError::Unavailable(e) => {
                tracing::warn!(request_id = %request_id(), error = %e, "the database was unavailable");
                ApiError::DatabaseUnavailable
            }
            DbError::LockTimeout(e) => {
                tracing::info!(request_id = %request_id(), error = %e, "a lock was not granted in time");
                ApiError::LockTimeout
            }
            DbError::Failed(e) => ApiError::Database(e),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        DbError::from(e).into()
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::NotFound => ApiError::NotFound,
            LifecycleError::Transition(e) => ApiError::InvalidTransition(e),
            LifecycleError::Inconsistent(why) => ApiError::Database(sqlx::Error::Protocol(why)),
            LifecycleError::Database(e) => e.into(),
        }
    }
}

impl From<RateLimitError> for ApiError {
    fn from(e: RateLimitError) -> Self {
        match e {
            RateLimitError::Limited { scope, retry_after } => {
                ApiError::RateLimited { scope, retry_after }
            }
            RateLimitError::Redis(e) => ApiError::Redis(e),
        }
    }
}

impl From<SyncPointTimeout> for ApiError {
    fn from(e: SyncPointTimeout) -> Self {
        ApiError::SyncPointTimeout(e.0)
    }
}

impl From<TokenRejected> for ApiError {
    fn from(e: TokenRejected) -> Self {
        ApiError::Unauthenticated(e.0)
    }
}

impl ApiError {
    /// A request's own task (`what`) that did not finish: cancelled because the runtime is
    /// shutting down — [`ApiError::Stopping`] — or panicked, a bug answered as INTERNAL.
    pub fn task_failed(what: &str, e: tokio::task::JoinError) -> Self {
        if e.is_cancelled() {
            ApiError::Stopping
        } else {
            ApiError::Database(sqlx::Error::Protocol(format!("{what} task failed: {e}")))
        }
    }

    /// A value read back from the database that does not parse (a role or provider this release
    /// does not know): the stored data is at fault, not the request — INTERNAL, never 400.
    pub fn stored(e: ParseError) -> Self {
        ApiError::Database(sqlx::Error::Decode(Box::new(e)))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let request_id = context::current_request_id();
        match &self {
            ApiError::Database(e) => tracing::error!(%request_id, error = %e, "database error"),
            ApiError::Redis(e) => tracing::error!(%request_id, error = %e, "redis error"),
            ApiError::DatabaseUnavailable => {
                tracing::error!(%request_id, "no pooled database connection in time")
            }
            ApiError::Vault(e) => tracing::error!(%request_id, error = %e, "token vault error"),
            ApiError::StateStore(e) => {
                tracing::error!(%request_id, error = %e, "oauth state store error")
            }
            ApiError::Provider(e) => {
                tracing::warn!(%request_id, code, error = %e, "provider call failed")
            }
            ApiError::SyncPointTimeout(p) => {
                tracing::error!(%request_id, point = %p, "request parked at a sync point was never released")
            }
            ApiError::HandlerPanicked => {
                tracing::error!(%request_id, "the request's handler panicked")
            }
            other => tracing::info!(%request_id, code, reason = %other, "request refused"),
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
                request_id,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            ApiError::LockTimeout | ApiError::RequestTimeout | ApiError::Stopping => {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, 1u64.into());
            }
            ApiError::DatabaseUnavailable
            | ApiError::Redis(_)
            | ApiError::StateStore(StateStoreError::Redis(_)) => {
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    unavailable_retry_after().into(),
                );
            }
            // RFC 6750 §3: a refusal for want of a valid bearer token names the scheme.
            ApiError::Unauthenticated(_) => {
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                );
            }
            _ => {}
        }
        if let ApiError::RateLimited { retry_after, .. } = self {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.max(1).into());
        }
        if let ApiError::Provider(e @ ProviderError::RateLimited { .. }) = self {
            let seconds = e.limit_ends_in().map_or(0, |d| d.as_secs());
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
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

    /// A refusal for want of a token names the bearer scheme (RFC 6750 §3); a role or provider
    /// the database holds that this release does not know is the data's fault, not the request's.
    #[test]
    fn a_missing_token_names_its_scheme_and_a_bad_stored_value_is_internal() {
        let refused = ApiError::Unauthenticated("no token").into_response();
        assert_eq!(refused.headers()["www-authenticate"], "Bearer");
        let stored = ApiError::stored(ParseError::new("role", "expected owner, admin or member"));
        assert_eq!(
            stored.status_and_code(),
            (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL")
        );
        assert_eq!(
            ApiError::HandlerPanicked.status_and_code(),
            (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL")
        );
    }

    #[test]
    fn pool_exhaustion_is_not_a_busy_workspace() {
        let e = ApiError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(
            e.status_and_code(),
            (StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE")
        );
        let seconds: Vec<u64> = (0..200).map(|_| unavailable_retry_after()).collect();
        assert!(seconds.iter().all(|s| (5..=15).contains(s)));
        assert!(seconds.iter().any(|s| *s != seconds[0]), "jittered");
    }

    /// A PostgreSQL error with only a SQLSTATE, as sqlx reports one.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn code_of(e: impl Into<ApiError>) -> (StatusCode, &'static str) {
        e.into().status_and_code()
    }

    #[test]
    fn database_failures_keep_their_codes() {
        let sqlstate = |code| sqlx::Error::Database(Box::new(Sqlstate(code)));
        let unavailable = (StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE");
        assert_eq!(
            code_of(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())),
            unavailable
        );
        assert_eq!(code_of(sqlstate("57P01")), unavailable);
        assert_eq!(
            code_of(sqlstate("55P03")),
            (StatusCode::SERVICE_UNAVAILABLE, "LOCK_TIMEOUT")
        );
        assert_eq!(
            code_of(sqlstate("23505")),
            (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL")
        );
        assert_eq!(
            code_of(DbError::from(sqlx::Error::PoolTimedOut)),
            unavailable
        );
        assert_eq!(
            code_of(LifecycleError::Database(sqlstate("55P03"))),
            (StatusCode::SERVICE_UNAVAILABLE, "LOCK_TIMEOUT")
        );
        assert_eq!(
            code_of(LifecycleError::NotFound),
            (StatusCode::NOT_FOUND, "NOT_FOUND")
        );
        let inconsistent = ApiError::from(LifecycleError::Inconsistent(
            "changed under its row lock".into(),
        ));
        assert!(
            matches!(&inconsistent, ApiError::Database(sqlx::Error::Protocol(m)) if m == "changed under its row lock")
        );
    }

    #[test]
    fn area_errors_keep_their_codes_messages_and_headers() {
        let limited = RateLimitError::Limited {
            scope: "tenant",
            retry_after: std::time::Duration::from_millis(1500),
        };
        let response = ApiError::from(limited).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "2");
        let redis = redis::RedisError::from((redis::ErrorKind::IoError, "timeout"));
        assert_eq!(
            code_of(RateLimitError::Redis(redis)),
            (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
        );
        let parked = ApiError::from(SyncPointTimeout("a@activation.locked".into()));
        assert_eq!(
            parked.status_and_code(),
            (StatusCode::INTERNAL_SERVER_ERROR, "SYNC_POINT_TIMEOUT")
        );
        assert_eq!(
            parked.to_string(),
            "sync point a@activation.locked was not released in time"
        );
        let rejected = ApiError::from(TokenRejected("token expired"));
        assert_eq!(
            rejected.status_and_code(),
            (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED")
        );
        assert_eq!(
            rejected.to_string(),
            "authentication required: token expired"
        );
    }

    #[tokio::test]
    async fn a_task_ended_by_shutdown_is_stopping_and_a_panicked_one_is_internal() {
        let cancelled = tokio::spawn(std::future::pending::<()>());
        cancelled.abort();
        let e = ApiError::task_failed("callback", cancelled.await.unwrap_err());
        assert_eq!(
            e.status_and_code(),
            (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_STOPPING")
        );
        let panicked = tokio::spawn(async { panic!("a bug") });
        let e = ApiError::task_failed("callback", panicked.await.unwrap_err());
        assert_eq!(
            e.status_and_code(),
            (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL")
        );
    }
}
