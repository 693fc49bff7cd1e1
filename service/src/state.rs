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

/// What every handler shares, behind one reference count. A request clones the state once for
/// each extractor and middleware that takes it; cloning the fields one by one (pools, Redis
/// handles, the provider client, each an `Arc` or several) was about 1.7 % of the service's CPU
/// in a profile under load, an atomic increment and decrement per field on counters every worker
/// thread shares (end to end the difference is within the bench's noise: benches/README.md).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Shares `shared` among the handlers.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler shares (through [`AppState`]).
pub struct Shared {
    /// The PostgreSQL pool.
    pub db: PgPool,
    /// A small pool of its own for the write-ahead of fresh grants (`outbox::write_ahead`).
    pub write_ahead_db: PgPool,
    /// The Redis connection (multiplexed, reconnecting).
    pub redis: redis::aio::ConnectionManager,
    /// Bearer-token verification.
    pub jwt: Arc<JwtVerifier>,
    /// The tenants of the users this replica has seen (a user's row keeps its tenant).
    pub user_tenants: Arc<crate::user_tenants::UserTenants>,
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
    /// Whether an activation's answer says how long it held the workspace lock (`Server-Timing`).
    pub server_timing: bool,
    /// The most a request may take before it is answered 503 `REQUEST_TIMEOUT`.
    pub request_timeout: std::time::Duration,
    /// Proxies whose `X-Forwarded-For` the per-address rate limit believes.
    pub trusted_proxies: crate::ratelimit::TrustedProxies,
    /// The last readiness check, shared by the probes that come within its lifetime.
    pub readiness: Arc<ReadinessCache>,
    /// The work requests hand to tasks of their own (a callback's exchange and store, a sync's
    /// refresh, a revocation): a graceful shutdown waits for them, so a rolling deploy cuts none
    /// of them between the provider's answer and the commit.
    pub tasks: tokio_util::task::TaskTracker,
}

/// The last readiness check (PostgreSQL, Redis). Probes that arrive while one is running wait for
/// it — one check in flight at a time — and later ones within its lifetime reuse it; a request
/// that meets an unavailable dependency forgets it, so a probe never reports "ready" after the
/// service has seen otherwise.
#[derive(Debug, Default)]
pub struct ReadinessCache {
    last: tokio::sync::Mutex<Option<(std::time::Instant, bool, bool)>>,
}

impl ReadinessCache {
    /// The last check if younger than `ttl`, else a new one made by `check`.
    pub async fn get_or_check<F: std::future::Future<Output = (bool, bool)>>(
        &self,
        ttl: std::time::Duration,
        check: impl FnOnce() -> F,
    ) -> (bool, bool) {
        let mut last = self.last.lock().await;
        match *last {
            Some((at, pg, redis)) if at.elapsed() < ttl => (pg, redis),
            _ => {
                let (pg, redis) = check().await;
                *last = Some((std::time::Instant::now(), pg, redis));
                (pg, redis)
            }
        }
    }

    /// Forgets the last check (a request just met an unavailable dependency). A check in flight
    /// is left alone: it is reading the dependencies now.
    pub fn forget(&self) {
        if let Ok(mut last) = self.last.try_lock() {
            *last = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReadinessCache;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// A flood of probes costs one check per lifetime: concurrent ones wait for the check in
    /// flight, later ones reuse it, and a forgotten result is asked for again.
    #[tokio::test]
    async fn probes_share_one_check_until_it_expires_or_is_forgotten() {
        let cache = ReadinessCache::default();
        let checks = AtomicU32::new(0);
        let check = || async {
            checks.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            (true, true)
        };
        let ttl = Duration::from_secs(60);
        let answers =
            futures::future::join_all((0..20).map(|_| cache.get_or_check(ttl, check))).await;
        assert!(answers.iter().all(|a| *a == (true, true)));
        assert_eq!(checks.load(Ordering::SeqCst), 1, "twenty probes, one check");
        cache.forget();
        cache.get_or_check(ttl, check).await;
        assert_eq!(
            checks.load(Ordering::SeqCst),
            2,
            "a forgotten result is asked for again"
        );
        cache.get_or_check(Duration::ZERO, check).await;
        assert_eq!(checks.load(Ordering::SeqCst), 3, "an expired one too");
    }
}
