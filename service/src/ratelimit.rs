//! Rate limits shared by every replica (threat model: "callback rate limiting"; RFC 6749 §10.12
//! state guessing): GCRA in one Redis Lua script, so the decision and the update are atomic.
//!
//! Authorize and callback are limited per tenant and per client address; a callback whose state
//! is unknown is also charged to a stricter per-user bucket of failed look-ups, reserved before
//! every state look-up (and given back when the state was valid). Time is the Redis server's
//! `TIME`, so replicas on hosts with drifting clocks agree; the harness's offset of the service's
//! [`crate::clock::Clock`] is added, so recovery is testable by moving the clock instead of
//! sleeping. Without Redis nothing is let through: the limits fail closed (503 `UNAVAILABLE`).

use std::time::Duration;

use redis::Script;

use crate::clock::Clock;

/// A rate: `burst` requests at once, refilled at `per_minute`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

impl Quota {
    /// The highest rate with a non-zero emission interval in microseconds.
    pub const MAX_PER_MINUTE: u32 = 60_000_000;

    /// Microseconds between two requests at the sustained rate. Microseconds, not milliseconds:
    /// above 60,000 per minute a millisecond interval rounds to zero, which would be no limit.
    fn emission_interval_us(self) -> u64 {
        (60_000_000 / u64::from(self.per_minute.clamp(1, Self::MAX_PER_MINUTE))).max(1)
    }
}

/// The limits of the OAuth routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Authorize and callback requests of one tenant.
    pub per_tenant: Quota,
    /// Authorize and callback requests from one client address.
    pub per_address: Quota,
    /// Callbacks of one user whose state was unknown, expired or used (state guessing). Keyed by
    /// the verified user, not the address, so callers behind one proxy do not share it.
    pub failed_states_per_user: Quota,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_tenant: Quota {
                per_minute: 60,
                burst: 20,
            },
            per_address: Quota {
                per_minute: 120,
                burst: 60,
            },
            failed_states_per_user: Quota {
                per_minute: 10,
                burst: 10,
            },
        }
    }
}

/// GCRA: KEYS[1] holds the theoretical arrival time (µs). "Now" is the Redis server's `TIME`
/// (one clock for every replica, however their hosts' clocks drift) plus ARGV[1], the offset only
/// the in-process harness can move. ARGV: offset, emission interval, burst (all µs but burst),
/// cost (1 = charge; -1 = give one back). Returns {allowed, retry_after_us}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if cost < 0 then
  local back = tat - interval
  if back <= now then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], string.format('%.0f', back), 'PX', math.ceil((back - now) / 1000))
  end
  return {1, 0}
end
if tat < now then tat = now end
-- No request can leave an arrival time beyond now + interval * burst: one that lies beyond it was
-- stored before the clock went back (an NTP step, a restored snapshot). It is brought down to that
-- bound and kept there — the bucket counts as just emptied, so the wait is one interval, not the
-- length of the jump (found by FLT-CLOCK-JUMPS-BACK) — and never raised to a full bucket, which
-- replicas with different quotas (a rolling deploy) could otherwise take turns resetting.
local ceiling = now + interval * burst
if tat > ceiling then
  tat = ceiling
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return {1, 0}
";

/// The limiter of one deployment.
#[derive(Clone)]
pub struct RateLimiter {
    redis: redis::aio::ConnectionManager,
    prefix: std::sync::Arc<str>,
    clock: Clock,
    limits: RateLimits,
    script: std::sync::Arc<Script>,
}

/// Why [`RateLimiter::charge`] refused a request.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// A bucket is empty.
    #[error("too many requests ({scope} limit)")]
    Limited {
        /// Which bucket refused (`address`, `tenant`).
        scope: &'static str,
        /// When to retry.
        retry_after: Duration,
    },
    /// Redis failed or did not answer: nothing is let through (fail closed).
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// A request over its limit; retry after this long.
#[derive(Clone, Copy, Debug)]
pub struct Limited {
    /// When to retry.
    pub retry_after: Duration,
}

impl RateLimiter {
    /// A limiter with `limits`, keys under `prefix`.
    pub fn new(
        redis: redis::aio::ConnectionManager,
        prefix: std::sync::Arc<str>,
        clock: Clock,
        limits: RateLimits,
    ) -> Self {
        Self {
            redis,
            prefix,
            clock,
            limits,
            script: std::sync::Arc::new(Script::new(GCRA)),
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    async fn gcra(
        &self,
        bucket: &str,
        quota: Quota,
        cost: i8,
    ) -> Result<Result<(), Limited>, redis::RedisError> {
        if crate::flaws::active(crate::flaws::Flaw::NoRateLimit) {
            return Ok(Ok(()));
        }
        let mut redis = self.redis.clone();
        let offset_us = self.clock.offset().num_microseconds().unwrap_or(i64::MAX);
        let (allowed, retry_us): (i64, i64) = self
            .script
            .key(format!("{}ratelimit:{bucket}", self.prefix))
            .arg(offset_us)
            .arg(quota.emission_interval_us())
            .arg(quota.burst)
            .arg(cost)
            .invoke_async(&mut redis)
            .await?;
        if allowed == 1 {
            Ok(Ok(()))
        } else {
            Ok(Err(Limited {
                retry_after: Duration::from_micros(retry_us.max(0) as u64),
            }))
        }
    }

    /// Charges one request of `route` to the client address's bucket.
    pub async fn charge_address(
        &self,
        route: &str,
        address: &str,
    ) -> Result<Result<(), Limited>, redis::RedisError> {
        self.gcra(
            &format!("{route}:addr:{address}"),
            self.limits.per_address,
            1,
        )
        .await
    }

    /// Charges one request of `route` to the tenant's bucket.
    pub async fn charge_tenant(
        &self,
        route: &str,
        tenant: &str,
    ) -> Result<Result<(), Limited>, redis::RedisError> {
        self.gcra(
            &format!("{route}:tenant:{tenant}"),
            self.limits.per_tenant,
            1,
        )
        .await
    }

    /// Reserves one failed state look-up of the user's budget *before* the look-up, in the same
    /// atomic step as the check: of concurrent guesses, only as many as the budget holds get
    /// through. A look-up that finds a valid state gives it back with [`Self::refund_failed_state`].
    pub async fn reserve_failed_state(
        &self,
        user: &str,
    ) -> Result<Result<(), Limited>, redis::RedisError> {
        self.gcra(
            &format!("failed-state:user:{user}"),
            self.limits.failed_states_per_user,
            1,
        )
        .await
    }

    /// Gives back a reservation whose look-up found a valid state.
    pub async fn refund_failed_state(&self, user: &str) -> Result<(), redis::RedisError> {
        self.gcra(
            &format!("failed-state:user:{user}"),
            self.limits.failed_states_per_user,
            -1,
        )
        .await
        .map(|_| ())
    }
}

/// The client's address as the socket saw it. Forwarding headers are not trusted: a deployment
/// behind a proxy must have the proxy enforce its own per-address limit.
#[derive(Clone, Debug)]
pub struct ClientAddress(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".to_owned());
        Ok(ClientAddress(addr))
    }
}

impl RateLimiter {
    /// Charges an OAuth route request to the address and then to the tenant; the first bucket
    /// that is empty refuses it.
    pub async fn charge(
        &self,
        route: &str,
        address: &ClientAddress,
        tenant: &str,
    ) -> Result<(), RateLimitError> {
        self.charge_address(route, &address.0)
            .await?
            .map_err(|l| RateLimitError::Limited {
                scope: "address",
                retry_after: l.retry_after,
            })?;
        self.charge_tenant(route, tenant)
            .await?
            .map_err(|l| RateLimitError::Limited {
                scope: "tenant",
                retry_after: l.retry_after,
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_above_sixty_thousand_a_minute_still_limit() {
        // In milliseconds these intervals were 0: no limit at all.
        assert_eq!(
            Quota {
                per_minute: 120_000,
                burst: 1
            }
            .emission_interval_us(),
            500
        );
        assert_eq!(
            Quota {
                per_minute: 60_001,
                burst: 1
            }
            .emission_interval_us(),
            999
        );
        assert_eq!(
            Quota {
                per_minute: Quota::MAX_PER_MINUTE,
                burst: 1
            }
            .emission_interval_us(),
            1
        );
        assert!(
            "60000001/1".parse::<Quota>().is_err(),
            "a rate with no representable interval is refused"
        );
        assert!("60000000/1".parse::<Quota>().is_ok());
    }
}
