//! [`Clock`]: the service's notion of "now". Production reads the system clock; the harness, which
//! runs the service in-process, shares a clock it can move forward, so that OAuth state expiry,
//! token refresh margins and rate-limit recovery are tested without waiting for them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

/// The system clock plus an offset that only the harness can move (it is never configurable from
/// the environment, so a deployed service always runs on the system clock).
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
    /// How far this host's system clock is off (zero in every real deployment: the system clock
    /// *is* the host's). Tests set it to play a replica on a badly set host; anything that must
    /// agree across replicas (rate limits) uses the Redis server's time instead, plus [`Clock::offset`].
    skew: Duration,
}

impl Clock {
    /// A clock that reads the system time.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock on a host whose system time is off by `skew` (tests of cross-replica drift).
    pub fn with_skew(skew: Duration) -> Self {
        Self {
            skew,
            ..Self::default()
        }
    }

    /// The current time as the service sees it.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.skew + Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }

    /// Moves the clock forward by `by` (every clone sees it: replicas share one clock).
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Moves the clock back by `by`, as an NTP step or a restored VM snapshot does (every clone
    /// sees it).
    pub fn rewind(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_sub(ms, Ordering::SeqCst);
    }

    /// Sets the offset from the system clock (the clock protocol's `PUT`: idempotent, so a
    /// harness that re-sends it after a restart or a lost answer moves nothing twice).
    pub fn set_offset(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::SeqCst);
    }

    /// How far the harness has moved the clock (the host's skew is not part of it).
    pub fn offset(&self) -> Duration {
        Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_offset() {
        let a = Clock::system();
        let b = a.clone();
        a.advance(std::time::Duration::from_secs(601));
        assert_eq!(b.offset(), Duration::seconds(601));
        assert!(b.now() > Utc::now() + Duration::seconds(600));
    }
}
