//! [`Application`]: builds the shared state and the router, binds (port 0 works), and serves until
//! told to stop. The harness runs it in-process, one instance per replica. The top of the module
//! graph: it imports every handler, and nothing imports it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};
use harbor_syncpoint::SyncPoints;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::context::RequestContext;
use crate::db::RowSecurityError;
use crate::domain::Actor;
use crate::error::ApiError;
use crate::jwt::{JwtVerifier, KeyError};
use crate::oauth_state::OAuthStateStore;
use crate::providers::ProviderClient;
use crate::ratelimit::{ClientAddress, RateLimiter};
use crate::state::{AppState, Shared};
use crate::syncpoints::SyncHooks;
use crate::vault::{KeyRing, VaultError};
use crate::{activation, connections, context, db, documents, health, oauth, openapi};

/// How long a graceful shutdown waits for the tasks requests handed work to: longer than a
/// provider call and a commit take.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Test hooks the harness passes when it runs the service in-process.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    /// A sync-point controller to share with the harness (used only when the configuration
    /// enables sync points; otherwise the service makes none).
    pub sync_points: Option<SyncPoints>,
    /// A clock to share with the harness, which moves it forward; the system clock otherwise.
    pub clock: Option<Clock>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration is refused.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// No usable token encryption key.
    #[error("token keys: {0}")]
    Vault(#[from] VaultError),
    /// A verification key is unusable.
    #[error("jwt keys: {0}")]
    Keys(#[from] KeyError),
    /// PostgreSQL could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Requests would run without row-level security.
    #[error("database role: {0}")]
    RowSecurity(String),
    /// Redis could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The listener could not be bound.
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
}

impl From<RowSecurityError> for StartupError {
    fn from(e: RowSecurityError) -> Self {
        match e {
            RowSecurityError::Database(e) => StartupError::Database(e),
            RowSecurityError::Bypassed(why) => StartupError::RowSecurity(why),
        }
    }
}

/// A built, bound, not yet serving service.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    header_read_timeout: std::time::Duration,
    outbox: crate::outbox::Worker,
}

impl Application {
    /// Builds the service from its configuration.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        Self::build_with(config, Hooks::default()).await
    }

    /// Builds the service with test hooks (the harness's entry point).
    pub async fn build_with(config: Config, hooks: Hooks) -> Result<Self, StartupError> {
        config.validate()?;
        let jwt = Arc::new(JwtVerifier::new(&config.jwt)?);
        let mut ring = KeyRing::from_config(&config.token_keys)?;
        if config.flaws.has(crate::flaws::Flaw::NoAadBinding) {
            ring.drop_binding_for_flaw();
        }
        let vault = Arc::new(ring);
        if !config.flaws.is_empty() {
            tracing::error!(
                flaws = %config.flaws.names().join(","),
                "SEEDED FLAWS ENABLED: this service is deliberately broken for the harness's mutation run; never deploy it"
            );
        }
        // Migrations run as the schema owner, when this process is given its credential;
        // requests run as their own login role.
        if let Some(owner) = db::connect_owner(&config, 1).await? {
            db::MIGRATOR.run(&owner).await?;
            if config.flaws.has(crate::flaws::Flaw::NoUniqueActivation) {
                // Seeded flaw: the v1 schema, where nothing in the database made activation unique.
                sqlx::query("ALTER TABLE workspace_activations DROP CONSTRAINT IF EXISTS workspace_activations_workspace_id_key")
                    .execute(&owner)
                    .await?;
            }
            if config.flaws.has(crate::flaws::Flaw::DocumentsOutliveGrant) {
                // Seeded flaw: the schema before migration 0024, where nothing ended a grant's
                // documents with it.
                sqlx::query(
                    "ALTER TABLE connections DISABLE TRIGGER connections_documents_end_with_grant",
                )
                .execute(&owner)
                .await?;
            }
            owner.close().await;
        }
        let db = db::connect(&config).await?;
        db::check_row_security(&db).await?;
        let write_ahead_db = db::connect_write_ahead(&config).await?;
        let redis_client = redis::Client::open(config.redis_url.expose_secret())?;
        // Bounded: a stalled Redis fails a request (503 UNAVAILABLE) instead of holding it.
        let redis_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(config.redis_timeout)
            .set_response_timeout(config.redis_timeout)
            .set_number_of_retries(2);
        let redis =
            redis::aio::ConnectionManager::new_with_config(redis_client, redis_config).await?;
        let sync_points = config.sync_points.then(|| {
            SyncHooks::new(
                hooks.sync_points.unwrap_or_default(),
                config.sync_point_timeout,
            )
        });
        if sync_points.is_some() {
            tracing::warn!(
                "sync points are ENABLED: requests tagged by the harness can be parked (test mode)"
            );
        }
        let prefix: Arc<str> = Arc::from(config.redis_key_prefix.as_str());
        let clock = hooks.clock.unwrap_or_default();
        let state = AppState::new(Shared {
            states: OAuthStateStore::new(
                redis.clone(),
                prefix.clone(),
                config.flaws.has(crate::flaws::Flaw::MemoryStateStore),
            ),
            limiter: RateLimiter::new(
                redis.clone(),
                prefix.clone(),
                clock.clone(),
                config.rate_limits,
            ),
            providers: ProviderClient::new(config.providers.clone()),
            db,
            write_ahead_db,
            redis,
            jwt,
            user_tenants: Arc::default(),
            sync_points,
            redis_key_prefix: prefix,
            clock,
            vault,
            refresh_margin: config.refresh_margin,
            flaws: config.flaws.clone(),
            request_timeout: config.request_timeout,
            server_timing: config.server_timing,
            trusted_proxies: config.trusted_proxies.clone(),
            readiness: Arc::default(),
            tasks: tokio_util::task::TaskTracker::new(),
        });
        tracing::info!(
            keys_on = %config.trusted_proxies.describe(),
            "the per-address rate limit keys on"
        );
        let router = router(state.clone());
        let listener = TcpListener::bind(config.listen_addr).await?;
        Ok(Self {
            listener,
            router,
            outbox: crate::outbox::Worker {
                db: state.db.clone(),
                vault: state.vault.clone(),
                providers: state.providers.clone(),
                clock: state.clock.clone(),
                interval: config.outbox_interval,
                limited: Default::default(),
            },
            state,
            header_read_timeout: config.header_read_timeout,
        })
    }

    /// The address the service listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The shared state (the harness reads the pool and sync points from it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight.
    ///
    /// HTTP/1.1 through hyper directly rather than `axum::serve`, which gives hyper no timer and
    /// so no header-read timeout: a client that sends its headers a byte at a time would hold a
    /// connection and a task for as long as it likes. Each request carries its peer address
    /// (`ConnectInfo`), as `axum::serve` would give it.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioIo, TokioTimer};
        use tower::ServiceExt;
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        // The replica's outbox worker lives as long as it serves (and dies with it in a crash: an
        // intent it held is leased, then taken up by another replica).
        let stop_outbox = tokio_util::sync::CancellationToken::new();
        let (worker, flaws, stop) = (self.outbox, self.state.flaws.clone(), stop_outbox.clone());
        let mut outbox =
            tokio::spawn(async move { crate::flaws::scope(&flaws, worker.run(stop)).await });
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, or a connection reset before it was accepted:
                        // not the listener's end. Pause briefly rather than spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let router = self.router.clone();
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    router.clone().oneshot(request.map(axum::body::Body::new))
                },
            );
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        if self
            .state
            .flaws
            .has(crate::flaws::Flaw::ShutdownWithoutWaiting)
        {
            // Seeded flaw: the process ends at the signal, cutting its connections and tasks.
            outbox.abort();
            return Ok(());
        }
        // Bounded: a client that never reads its answer must not hold the stop forever.
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::error!("graceful shutdown gave up waiting for open connections");
        }
        // The connections are done, but not necessarily the work their requests handed to tasks
        // of their own (a client that hung up left its callback's store running): wait for it,
        // within a bound. What is left after it is left to the outbox (a revocation), or is the
        // documented window of a grant in flight.
        let tasks = &self.state.tasks;
        tasks.close();
        stop_outbox.cancel();
        let waited = async {
            tasks.wait().await;
            // The worker finishes the intent it is delivering and claims no other.
            let _ = (&mut outbox).await;
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, waited).await.is_err() {
            tracing::error!(
                unfinished = tasks.len(),
                "graceful shutdown gave up waiting for request tasks and the outbox worker"
            );
        }
        outbox.abort();
        Ok(())
    }
}

/// The service's routes and middleware.
pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi::serve))
        .route(
            "/v1/workspaces/{workspace_id}/activation",
            post(activation::activate),
        )
        .route(
            "/v1/workspaces/{workspace_id}/connections",
            get(connections::list),
        )
        .route(
            "/v1/workspaces/{workspace_id}/connections/{provider}/disconnect",
            post(connections::disconnect),
        )
        .route(
            "/v1/workspaces/{workspace_id}/connections/{provider}/revoke",
            post(connections::revoke),
        )
        .route(
            "/v1/workspaces/{workspace_id}/connections/{provider}/authorize",
            post(oauth::authorize),
        )
        .route(
            "/v1/workspaces/{workspace_id}/connections/{provider}/sync",
            post(documents::sync),
        )
        .route(
            "/v1/workspaces/{workspace_id}/documents",
            get(documents::list),
        )
        .route("/v1/oauth/{provider}/callback", get(oauth::callback));
    // Test mode only: the configuration refuses sync points under the production profile.
    let router = if state.sync_points.is_some() {
        router
            .merge(crate::syncpoint_protocol::routes())
            .merge(crate::clock_protocol::routes())
    } else {
        router
    };
    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}

/// Middleware: assigns the request id, reads the actor tag, and runs the rest of the stack inside
/// a tracing span and the task-local scope (see [`crate::context`]).
pub async fn request_context(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let id_for_scope = request_id.clone();
    let declared_body = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_body.is_some_and(|n| n > crate::config::MAX_REQUEST_BODY_BYTES as u64) {
        let refused = ApiError::PayloadTooLarge {
            limit: crate::config::MAX_REQUEST_BODY_BYTES,
        };
        return context::scope(id_for_scope, async move {
            with_request_id(refused.into_response(), &request_id)
        })
        .await;
    }
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let address = ClientAddress::of(&state.trusted_proxies, peer, request.headers());
    request.extensions_mut().insert(address);
    let request_timeout = state.request_timeout;
    context::scope(id_for_scope, async move {
        let actor = if state.sync_points.is_some() {
            match request
                .headers()
                .get(Actor::HEADER)
                .map(|v| v.to_str().map(Actor::parse))
            {
                None => None,
                Some(Ok(Ok(actor))) => Some(actor),
                Some(Ok(Err(e))) => {
                    return with_request_id(ApiError::from(e).into_response(), &request_id)
                }
                Some(Err(_)) => {
                    let e = crate::domain::ParseError::new(Actor::HEADER, "not visible ASCII");
                    return with_request_id(ApiError::from(e).into_response(), &request_id);
                }
            }
        } else {
            None
        };
        let span = tracing::info_span!(
            "request",
            request_id = %request_id,
            method = %request.method(),
            path = %request.uri().path(),
            actor = actor.as_ref().map(Actor::as_str),
        );
        request.extensions_mut().insert(RequestContext {
            request_id: request_id.clone(),
            actor,
        });
        // A callback past the timeout has spent its state (a retry can only be refused) and its
        // grant goes on in its own task: the answer says to start again, not to retry.
        let late = if request.uri().path().starts_with("/v1/oauth/") {
            ApiError::AuthorizationInterrupted
        } else {
            ApiError::RequestTimeout
        };
        // The handler's future is dropped at the timeout: its transaction is rolled back as its
        // connection goes back to the pool (just after this answer, the one exception to "rolled
        // back before the error is written"); work it spawned — a callback's store, a revocation
        // — goes on.
        let handled = tokio::time::timeout(
            request_timeout,
            answer_even_if_it_panics(crate::flaws::scope(&state.flaws, next.run(request))),
        )
        .instrument(span.clone())
        .await;
        let response = match handled {
            // A dependency this request found unavailable: the next readiness probe asks again.
            Ok(response) if response.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE => {
                state.readiness.forget();
                response
            }
            Ok(response) => response,
            Err(_) => {
                span.in_scope(|| {
                    tracing::warn!(
                        timeout_ms = request_timeout.as_millis() as u64,
                        "request timed out"
                    )
                });
                late.into_response()
            }
        };
        span.in_scope(|| tracing::info!(status = response.status().as_u16(), "request finished"));
        with_request_id(response, &request_id)
    })
    .await
}

/// The handler's answer, or 500 `INTERNAL` (logged with the request id) if it panicked: without
/// this, a panic ends the connection's task and the client gets no answer at all, and the log no
/// line saying which request it was. The panic's own message goes where the process's panic hook
/// sends it; it is not copied into the answer.
async fn answer_even_if_it_panics(
    handler: impl std::future::Future<Output = Response>,
) -> Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(handler).catch_unwind().await {
        Ok(response) => response,
        Err(_) => ApiError::HandlerPanicked.into_response(),
    }
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::response::Response;

    async fn a_bug() -> Response {
        panic!("a bug in a handler")
    }

    /// A handler that panics is answered 500 `INTERNAL` in the error shape, not with a dropped
    /// connection.
    #[tokio::test]
    async fn a_panicking_handler_is_answered_internal() {
        let answer = super::answer_even_if_it_panics(a_bug()).await;
        assert_eq!(answer.status(), 500);
        let body = axum::body::to_bytes(answer.into_body(), 64 * 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "INTERNAL", "{body}");
    }
}
