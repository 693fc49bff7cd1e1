//! [`Clock`]: the service's notion of "now". Production reads the system clock; the harness, which
//! runs the service in-process, shares a clock it can move forward, so that OAuth state expiry,
//! token refresh margins and rate-limit recovery are tested without waiting for them. What waits
//! for time to pass (the outbox worker) also hears when the clock is moved, so that a test does not
//! wait out a polling interval after it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

/// The system clock plus an offset that only the harness can move (it is never configurable from
/// the environment, so a deployed service always runs on the system clock).
#[derive(Clone, Debug)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
    /// Counts the clock's moves: a [`Clock::moves`] receiver sees every one, even one made while
    /// its holder was busy (a `Notify` would have lost it).
    moved: Arc<tokio::sync::watch::Sender<u64>>,
    /// How far this host's system clock is off (zero in every real deployment: the system clock
    /// *is* the host's). Tests set it to play a replica on a badly set host; anything that must
    /// agree across replicas (rate limits) uses the Redis server's time instead, plus [`Clock::offset`].
    skew: Duration,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            offset_ms: Arc::default(),
            moved: Arc::new(tokio::sync::watch::Sender::new(0)),
            skew: Duration::zero(),
        }
    }
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
        self.note_move();
    }

    /// Moves the clock back by `by`, as an NTP step or a restored VM snapshot does (every clone
    /// sees it).
    pub fn rewind(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_sub(ms, Ordering::SeqCst);
        self.note_move();
    }

    /// Sets the offset from the system clock (the clock protocol's `PUT`: idempotent, so a
    /// harness that re-sends it after a restart or a lost answer moves nothing twice).
    pub fn set_offset(&self, offset_ms: i64) {
        if self.offset_ms.swap(offset_ms, Ordering::SeqCst) != offset_ms {
            self.note_move();
        }
    }

    /// A receiver that changes whenever the clock is moved (never, on a deployed service): a
    /// worker that sleeps until something falls due selects on it beside its interval.
    pub fn moves(&self) -> tokio::sync::watch::Receiver<u64> {
        self.moved.subscribe()
    }

    fn note_move(&self) {
        self.moved.send_modify(|n| *n = n.wrapping_add(1));
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

    #[tokio::test]
    async fn a_move_is_heard_even_when_made_before_the_wait() {
        let clock = Clock::system();
        let mut moves = clock.clone().moves();
        clock.advance(std::time::Duration::from_secs(1));
        // Made before anyone waited: still seen, at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), moves.changed())
            .await
            .expect("the move is seen")
            .expect("the clock is alive");
        // Re-sending the offset it already has moves nothing.
        clock.set_offset(1000);
        assert!(!moves.has_changed().unwrap());
        clock.set_offset(2000);
        assert!(moves.has_changed().unwrap());
    }
}
