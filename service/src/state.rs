//! [`AppState`]: what every handler shares. Its own module, below the handlers and the extractors
//! that take it, so that none of them has to import the application that builds it.

use std::sync::Arc;

use sqlx::PgPool;

use crate::clock::Clock;
use crate::flaws::Flaws;
use crate::jwt::JwtVerifier;
use crate::oauth_state::OAuthStateStore;
use crate::providers::ProviderClient;
use crate::ratelimit::RateLimiter;
use crate::syncpoints::SyncHooks;
use crate::vault::KeyRing;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The PostgreSQL pool.
    pub db: PgPool,
    /// The Redis connection (multiplexed, reconnecting).
    pub redis: redis::aio::ConnectionManager,
    /// Bearer-token verification.
    pub jwt: Arc<JwtVerifier>,
    /// The harness's sync points; `None` unless enabled by configuration.
    pub sync_points: Option<SyncHooks>,
    /// Prefix of every Redis key.
    pub redis_key_prefix: Arc<str>,
    /// The service's clock.
    pub clock: Clock,
    /// Token encryption keys.
    pub vault: Arc<KeyRing>,
    /// The OAuth providers.
    pub providers: ProviderClient,
    /// OAuth states in Redis.
    pub states: OAuthStateStore,
    /// Rate limits of the OAuth routes.
    pub limiter: RateLimiter,
    /// How close to expiry an access token is refreshed before a sync.
    pub refresh_margin: std::time::Duration,
    /// Seeded flaws (empty unless this is a flawed build under test).
    pub flaws: Flaws,
}
