//! Rate limits shared by every replica (threat model: "callback rate limiting"; RFC 6749 §10.12
//! state guessing): GCRA in one Redis Lua script, so the decision and the update are atomic.
//!
//! Authorize and callback are limited per tenant and per client address; a callback whose state
//! is unknown is also charged to a stricter per-user bucket of failed look-ups, reserved before
//! every state look-up (and given back when the state was valid) and before the tenant's bucket
//! is charged, so that one user's guesses cannot spend the budget of the tenant's admins. Time is the Redis server's
//! `TIME`, so replicas on hosts with drifting clocks agree; the harness's offset of the service's
//! [`crate::clock::Clock`] is added, so recovery is testable by moving the clock instead of
//! sleeping. Without Redis nothing is let through: the limits fail closed (503 `UNAVAILABLE`).

use std::time::Duration;

use redis::Script;

use crate::clock::Clock;

mod address;
pub use address::{ClientAddress, TrustedProxies};

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

/// GCRA over the buckets one request is charged to, in one atomic step. Bucket `i` (from 1) has
/// KEYS[2i-1], its theoretical arrival time (µs), and KEYS[2i], the "now" of the last write to it;
/// ARGV[4i-2..4i+1] are its emission interval (µs), burst, cost (1 = charge; -1 = give one back)
/// and whether it is a reservation (`1`: given back when a later bucket refuses). "Now" is the
/// Redis server's `TIME` (one clock for every replica, however their hosts' clocks drift) plus
/// ARGV[1], the offset only the in-process harness can move. The buckets are charged in order;
/// the first that refuses stops the rest. Returns {0, 0} when every bucket took its charge, else
/// {the refusing bucket's number, retry_after_us}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
local function apply(i, cost)
  local tat_key, last_key = KEYS[2 * i - 1], KEYS[2 * i]
  local interval = tonumber(ARGV[4 * i - 2])
  local burst = tonumber(ARGV[4 * i - 1])
  local tat = tonumber(redis.call('GET', tat_key) or '0')
  local last = tonumber(redis.call('GET', last_key) or '0')
  local function store(value)
    local px = math.max(1, math.ceil((value - now) / 1000))
    redis.call('SET', tat_key, string.format('%.0f', value), 'PX', px)
    redis.call('SET', last_key, string.format('%.0f', now), 'PX', px)
  end
  -- A clock that went back (an NTP step, a restored snapshot: now is before the last write)
  -- makes the stored arrival time look far in the future. Only then is it brought down to what
  -- one quota allows — the bucket counts as just emptied, so the wait is one interval, not the
  -- length of the jump (FLT-CLOCK-JUMPS-BACK). An arrival time beyond this replica's own bound
  -- with the clock going forward is another replica's larger burst (a rolling deploy that
  -- changes a quota): it is respected, never lowered, or replicas with different quotas would
  -- reset each other. Before anything else, a give-back included: whatever writes first after
  -- the jump records the new `now`, and the jump would go unseen.
  if now < last then
    local ceiling = now + interval * burst
    if tat > ceiling then
      tat = ceiling
      store(tat)
    end
  end
  if cost < 0 then
    local back = tat - interval
    if back <= now then
      redis.call('DEL', tat_key, last_key)
    else
      store(back)
    end
    return 0
  end
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - interval * burst
  if allow_at > now then
    return allow_at - now
  end
  store(new_tat)
  return 0
end
for i = 1, #KEYS / 2 do
  local wait = apply(i, tonumber(ARGV[4 * i]))
  if wait > 0 then
    for j = 1, i - 1 do
      if ARGV[4 * j + 1] == '1' and ARGV[4 * j] == '1' then apply(j, -1) end
    end
    return {i, wait}
  end
end
return {0, 0}
";

/// One bucket of a [`RateLimiter`] charge.
struct Charge {
    /// The bucket's key, under the deployment's prefix.
    bucket: String,
    /// Its rate.
    quota: Quota,
    /// 1 to charge, -1 to give one back.
    cost: i8,
    /// Given back when a later bucket of the same charge refuses: paid for work not done.
    reservation: bool,
    /// What a refusal names (`address`, `tenant`, `failed-states`).
    scope: &'static str,
}

/// The limiter of one deployment.
#[derive(Clone)]
pub struct RateLimiter {
    redis: redis::aio::ConnectionManager,
    prefix: std::sync::Arc<str>,
    clock: Clock,
    limits: RateLimits,
    script: std::sync::Arc<Script>,
}

/// Why a charge of the [`RateLimiter`] refused a request.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// A bucket is empty.
    #[error("too many requests ({scope} limit)")]
    Limited {
        /// Which bucket refused (`address`, `failed-states`, `tenant`).
        scope: &'static str,
        /// When to retry.
        retry_after: Duration,
    },
    /// Redis failed or did not answer: nothing is let through (fail closed).
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// A request over its limit: the bucket that refused it, and when to retry.
#[derive(Clone, Copy, Debug)]
pub struct Limited {
    /// Which bucket refused (`address`, `failed-states`, `tenant`).
    pub scope: &'static str,
    /// When to retry.
    pub retry_after: Duration,
}

impl From<Limited> for RateLimitError {
    fn from(refused: Limited) -> Self {
        RateLimitError::Limited {
            scope: refused.scope,
            retry_after: refused.retry_after,
        }
    }
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

    /// Charges `charges` in order, in one round trip to Redis and one atomic step there: the
    /// first bucket that refuses stops the rest and gives back the reservations before it.
    async fn apply(&self, charges: &[Charge]) -> Result<Result<(), Limited>, redis::RedisError> {
        if crate::flaws::active(crate::flaws::Flaw::NoRateLimit) {
            return Ok(Ok(()));
        }
        let mut redis = self.redis.clone();
        let offset_us = self.clock.offset().num_microseconds().unwrap_or(i64::MAX);
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(offset_us);
        for charge in charges {
            invocation
                .key(format!("{}ratelimit:{}", self.prefix, charge.bucket))
                .key(format!("{}ratelimit:{}:t", self.prefix, charge.bucket))
                .arg(charge.quota.emission_interval_us())
                .arg(charge.quota.burst)
                .arg(charge.cost)
                .arg(u8::from(charge.reservation));
        }
        let (refused, retry_us): (usize, i64) = invocation.invoke_async(&mut redis).await?;
        if refused == 0 {
            return Ok(Ok(()));
        }
        // A number that names no bucket is still a refusal: the limits fail closed.
        let scope = charges.get(refused - 1).map_or("unknown", |c| c.scope);
        Ok(Err(Limited {
            scope,
            retry_after: Duration::from_micros(retry_us.max(0) as u64),
        }))
    }

    fn address(&self, route: &str, address: &ClientAddress) -> Charge {
        Charge {
            bucket: format!("{route}:addr:{}", address.0),
            quota: self.limits.per_address,
            cost: 1,
            reservation: false,
            scope: "address",
        }
    }

    fn tenant(&self, route: &str, tenant: &str) -> Charge {
        Charge {
            bucket: format!("{route}:tenant:{tenant}"),
            quota: self.limits.per_tenant,
            cost: 1,
            reservation: false,
            scope: "tenant",
        }
    }

    fn failed_state(&self, user: &str, cost: i8) -> Charge {
        Charge {
            bucket: format!("failed-state:user:{user}"),
            quota: self.limits.failed_states_per_user,
            cost,
            reservation: true,
            scope: "failed-states",
        }
    }

    /// Charges an OAuth route request to the address and then to the tenant; the first bucket
    /// that is empty refuses it (the address keeps its charge: a refused request was still one).
    pub async fn charge(
        &self,
        route: &str,
        address: &ClientAddress,
        tenant: &str,
    ) -> Result<(), RateLimitError> {
        let charges = [self.address(route, address), self.tenant(route, tenant)];
        Ok(self.apply(&charges).await??)
    }

    /// Charges an OAuth route request to the client address's bucket alone, refusing it when
    /// empty: a request refused before it could name its tenant.
    pub async fn admit_address(
        &self,
        route: &str,
        address: &ClientAddress,
    ) -> Result<(), RateLimitError> {
        Ok(self.apply(&[self.address(route, address)]).await??)
    }

    /// Charges a callback to the address, then reserves one failed state look-up of the user's
    /// budget *before* the look-up (of concurrent guesses, only as many as the budget holds get
    /// through), then charges the tenant. The tenant's budget comes after the caller's own: any
    /// user of the tenant may call this route, and one who sends state after unknown state is
    /// refused by their own budget before they spend the tenant's, which the tenant's admins need
    /// for their callbacks. A request the tenant's budget refuses looks nothing up, so its
    /// reservation is given back in the same step. A look-up that finds a valid state gives its
    /// reservation back with [`Self::refund_failed_state`].
    pub async fn admit_callback(
        &self,
        address: &ClientAddress,
        user: &str,
        tenant: &str,
    ) -> Result<(), RateLimitError> {
        let charges = [
            self.address("callback", address),
            self.failed_state(user, 1),
            self.tenant("callback", tenant),
        ];
        Ok(self.apply(&charges).await??)
    }

    /// Charges one request of `route` to the tenant's bucket alone.
    pub async fn charge_tenant(
        &self,
        route: &str,
        tenant: &str,
    ) -> Result<Result<(), Limited>, redis::RedisError> {
        self.apply(&[self.tenant(route, tenant)]).await
    }

    /// Gives back a reservation whose look-up found a valid state, or that made no look-up. A
    /// refund Redis does not take is logged, not failed: the request goes on, and the user's
    /// budget is one look-up short until it refills.
    pub async fn refund_failed_state(&self, user: &str) {
        if let Err(e) = self.apply(&[self.failed_state(user, -1)]).await {
            tracing::warn!(error = %e, "could not give back a failed-state reservation");
        }
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
