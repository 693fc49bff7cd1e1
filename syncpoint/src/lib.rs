//! A runtime-free controller for *sync points*: named places in the service's code where a
//! request can be parked by the certification harness, observed while parked, and released.
//!
//! The whole protocol is one small state machine per `(actor, point)` slot, guarded by one mutex:
//!
//! ```text
//!   arm ──► Armed ──arrive──► Parked ──release──► Released ──(arrival resumes)──► gone
//!             │                  │
//!             └──disarm──► gone  └──arrival dropped (request cancelled)──► gone
//! ```
//!
//! * An arrival at a point that was not armed for its actor passes straight through: a sync point
//!   costs one mutex lock when the controller exists, and nothing when it does not.
//! * Arrivals and observers are plain [`Future`]s that register wakers, so the crate needs no async
//!   runtime. That keeps it small enough to model-check with loom (`--cfg harbor_loom`).
//! * Time is the caller's business: the service wraps an arrival in a timeout that fails loudly,
//!   and the harness wraps its observation the same way. Nothing here sleeps.
//!
//! Past 500 lines with its tests: the unit tests and the loom model (`#[cfg(all(test,
//! harbor_loom))]`) sit beside the protocol they check.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

#[cfg(harbor_loom)]
use loom::sync::Mutex;
#[cfg(not(harbor_loom))]
use std::sync::Mutex;

/// Identifies one slot: which actor's request, at which named point.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SlotKey {
    /// The actor tag the request carried (for example `A`).
    pub actor: String,
    /// The sync point's name (for example `activation.locked`).
    pub point: String,
}

impl SlotKey {
    /// Builds a key from an actor tag and a point name.
    pub fn new(actor: impl Into<String>, point: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            point: point.into(),
        }
    }
}

impl fmt::Display for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.actor, self.point)
    }
}

/// Where one slot stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Armed: the actor's next arrival at the point will park.
    Armed,
    /// A request is parked at the point, waiting for a release.
    Parked,
    /// Released: the parked request may go on and will remove the slot when it does.
    Released,
}

/// Why a controller operation was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SyncError {
    /// The slot is already armed or occupied; arming it twice would lose a release.
    AlreadyArmed(SlotKey),
    /// Release asked for a slot where no request is parked.
    NotParked(SlotKey, Option<SlotState>),
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::AlreadyArmed(k) => write!(f, "sync point {k} is already armed"),
            SyncError::NotParked(k, s) => write!(f, "no request is parked at {k} (slot: {s:?})"),
        }
    }
}

impl std::error::Error for SyncError {}

struct Slot {
    state: SlotState,
    /// The parked arrival's waker, woken by `release`.
    arrival: Option<Waker>,
}

impl Slot {
    /// Lets the request parked here (if any) go on.
    fn release(&mut self) {
        self.state = SlotState::Released;
        if let Some(w) = self.arrival.take() {
            w.wake();
        }
    }
}

#[derive(Default)]
struct Inner {
    slots: HashMap<SlotKey, Slot>,
    /// Observers waiting for some slot to change; woken on every change, they re-check.
    observers: Vec<Waker>,
    /// Every slot that has ever been parked, in order: the harness reads it for its trace.
    history: Vec<SlotKey>,
}

impl Inner {
    fn wake_observers(&mut self) {
        for w in self.observers.drain(..) {
            w.wake();
        }
    }
}

/// The controller shared by the service (which arrives at points) and the harness (which arms,
/// observes and releases). Cloning is cheap and shares the same state.
#[derive(Clone, Default)]
pub struct SyncPoints {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for SyncPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncPoints").finish_non_exhaustive()
    }
}

impl SyncPoints {
    /// A controller with no armed slots.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> impl std::ops::DerefMut<Target = Inner> + '_ {
        // A poisoned lock only means a panic elsewhere; the state itself stays consistent
        // because every mutation is a single assignment.
        #[cfg(not(harbor_loom))]
        {
            self.inner.lock().unwrap_or_else(|e| e.into_inner())
        }
        #[cfg(harbor_loom)]
        {
            self.inner.lock().unwrap()
        }
    }

    /// Arms a slot: the actor's next arrival at the point parks until released.
    pub fn arm(&self, key: SlotKey) -> Result<(), SyncError> {
        let mut inner = self.lock();
        if inner.slots.contains_key(&key) {
            return Err(SyncError::AlreadyArmed(key));
        }
        inner.slots.insert(
            key,
            Slot {
                state: SlotState::Armed,
                arrival: None,
            },
        );
        inner.wake_observers();
        Ok(())
    }

    /// Removes an armed slot that nobody has arrived at yet. Returns whether one was removed.
    pub fn disarm(&self, key: &SlotKey) -> bool {
        let mut inner = self.lock();
        let removable = matches!(inner.slots.get(key), Some(s) if s.state == SlotState::Armed);
        if removable {
            inner.slots.remove(key);
            inner.wake_observers();
        }
        removable
    }

    /// Where a slot stands now, or `None` when it is not armed.
    pub fn state(&self, key: &SlotKey) -> Option<SlotState> {
        self.lock().slots.get(key).map(|s| s.state)
    }

    /// Every slot that has been parked so far, in the order they parked.
    pub fn history(&self) -> Vec<SlotKey> {
        self.lock().history.clone()
    }

    /// Releases the request parked at the slot. Refused unless a request is parked there.
    pub fn release(&self, key: &SlotKey) -> Result<(), SyncError> {
        let mut inner = self.lock();
        let slot = match inner.slots.get_mut(key) {
            Some(slot) if slot.state == SlotState::Parked => slot,
            other => {
                let state = other.map(|s| s.state);
                return Err(SyncError::NotParked(key.clone(), state));
            }
        };
        slot.release();
        inner.wake_observers();
        Ok(())
    }

    /// Clears one slot in one step: releases the request parked there, or drops the slot if
    /// nobody has reached it. Returns what the slot was (`None`: not armed, or gone already). A
    /// request arriving meanwhile is either released or finds no slot; a read of the state
    /// followed by a release or a disarm could leave it parked in between.
    pub fn clear(&self, key: &SlotKey) -> Option<SlotState> {
        let mut inner = self.lock();
        let was = inner.slots.get(key).map(|s| s.state);
        match was {
            Some(SlotState::Armed) => {
                inner.slots.remove(key);
            }
            Some(SlotState::Parked) => {
                if let Some(slot) = inner.slots.get_mut(key) {
                    slot.release();
                }
            }
            Some(SlotState::Released) | None => return was,
        }
        inner.wake_observers();
        was
    }

    /// Releases every parked request and drops every armed slot (used when a scenario ends or
    /// fails, so that no request stays parked behind it).
    pub fn release_all(&self) {
        let mut inner = self.lock();
        inner.slots.retain(|_, slot| match slot.state {
            SlotState::Armed => false,
            SlotState::Parked | SlotState::Released => {
                slot.release();
                true
            }
        });
        inner.wake_observers();
    }

    /// The service's side: arrive at a point. Resolves at once unless the slot is armed, in which
    /// case the request parks until the harness releases it.
    pub fn arrive(&self, key: SlotKey) -> Arrival {
        Arrival {
            controller: self.clone(),
            key,
            registered: false,
            done: false,
        }
    }

    /// The harness's side: resolves once the slot is in `wanted` state (or, for
    /// `SlotState::Released`, once the slot is gone as well).
    pub fn until(&self, key: SlotKey, wanted: SlotState) -> Until {
        Until {
            controller: self.clone(),
            key,
            wanted,
        }
    }
}

/// A request's arrival at a sync point; see [`SyncPoints::arrive`].
#[must_use = "an arrival does nothing unless awaited"]
pub struct Arrival {
    controller: SyncPoints,
    key: SlotKey,
    registered: bool,
    done: bool,
}

impl Future for Arrival {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(());
        }
        let controller = this.controller.clone();
        let mut inner = controller.lock();
        let Some(slot) = inner.slots.get_mut(&this.key) else {
            this.done = true;
            return Poll::Ready(());
        };
        match (slot.state, this.registered) {
            (SlotState::Armed, false) => {
                slot.state = SlotState::Parked;
                slot.arrival = Some(cx.waker().clone());
                this.registered = true;
                inner.history.push(this.key.clone());
                inner.wake_observers();
                Poll::Pending
            }
            (SlotState::Parked, true) => {
                slot.arrival = Some(cx.waker().clone());
                Poll::Pending
            }
            (SlotState::Released, true) => {
                inner.slots.remove(&this.key);
                inner.wake_observers();
                this.done = true;
                Poll::Ready(())
            }
            // The slot belongs to another arrival (one arm parks one request), or it was armed
            // again after our own release (that arm is for the actor's next arrival): pass.
            (SlotState::Parked | SlotState::Released, false) | (SlotState::Armed, true) => {
                let owned = this.registered;
                this.registered = false;
                this.done = true;
                debug_assert!(!owned || slot.state == SlotState::Armed);
                Poll::Ready(())
            }
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        // A parked request that is cancelled (timeout, client gone) must not leave its slot
        // looking parked: the harness would release a request that no longer exists.
        if self.registered && !self.done {
            let mut inner = self.controller.lock();
            if matches!(
                inner.slots.get(&self.key).map(|s| s.state),
                Some(SlotState::Parked | SlotState::Released)
            ) {
                inner.slots.remove(&self.key);
                inner.wake_observers();
            }
        }
    }
}

/// An observation of a slot; see [`SyncPoints::until`].
#[must_use = "an observation does nothing unless awaited"]
pub struct Until {
    controller: SyncPoints,
    key: SlotKey,
    wanted: SlotState,
}

impl Future for Until {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut inner = this.controller.lock();
        let state = inner.slots.get(&this.key).map(|s| s.state);
        let reached = match (this.wanted, state) {
            (SlotState::Released, None) => true,
            (wanted, Some(s)) => s == wanted,
            (_, None) => false,
        };
        if reached {
            Poll::Ready(())
        } else {
            inner.observers.push(cx.waker().clone());
            Poll::Pending
        }
    }
}

#[cfg(all(test, not(harbor_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn poll_once<F: Future + Unpin>(f: &mut F, flag: &Arc<Flag>) -> Poll<F::Output> {
        let waker = Waker::from(flag.clone());
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn unarmed_arrival_passes_through() {
        let sp = SyncPoints::new();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let mut a = sp.arrive(SlotKey::new("A", "p"));
        assert!(poll_once(&mut a, &flag).is_ready());
    }

    #[test]
    fn armed_arrival_parks_until_released() {
        let sp = SyncPoints::new();
        let key = SlotKey::new("A", "activation.locked");
        sp.arm(key.clone()).unwrap();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let mut a = sp.arrive(key.clone());
        assert!(poll_once(&mut a, &flag).is_pending());
        assert_eq!(sp.state(&key), Some(SlotState::Parked));
        let mut seen = sp.until(key.clone(), SlotState::Parked);
        assert!(poll_once(&mut seen, &flag).is_ready());
        sp.release(&key).unwrap();
        assert!(
            flag.0.load(Ordering::SeqCst),
            "release wakes the parked request"
        );
        assert!(poll_once(&mut a, &flag).is_ready());
        assert_eq!(sp.state(&key), None);
        assert_eq!(sp.history(), vec![key]);
    }

    #[test]
    fn a_second_arrival_passes_and_steals_nothing() {
        let sp = SyncPoints::new();
        let key = SlotKey::new("A", "p");
        sp.arm(key.clone()).unwrap();
        let first_flag = Arc::new(Flag(AtomicBool::new(false)));
        let second_flag = Arc::new(Flag(AtomicBool::new(false)));
        let mut first = sp.arrive(key.clone());
        assert!(poll_once(&mut first, &first_flag).is_pending());
        let mut second = sp.arrive(key.clone());
        assert!(
            poll_once(&mut second, &second_flag).is_ready(),
            "one arm parks one request"
        );
        drop(second);
        assert_eq!(
            sp.state(&key),
            Some(SlotState::Parked),
            "the first stays parked"
        );
        sp.release(&key).unwrap();
        assert!(
            first_flag.0.load(Ordering::SeqCst),
            "the release wakes the parked request"
        );
        assert!(poll_once(&mut first, &first_flag).is_ready());
        assert!(
            poll_once(&mut first, &first_flag).is_ready(),
            "a finished arrival stays finished"
        );
        assert_eq!(sp.state(&key), None);
    }

    #[test]
    fn release_without_parked_request_is_refused() {
        let sp = SyncPoints::new();
        let key = SlotKey::new("A", "p");
        assert!(matches!(
            sp.release(&key),
            Err(SyncError::NotParked(_, None))
        ));
        sp.arm(key.clone()).unwrap();
        assert!(matches!(
            sp.release(&key),
            Err(SyncError::NotParked(_, Some(SlotState::Armed)))
        ));
        assert!(matches!(
            sp.arm(key.clone()),
            Err(SyncError::AlreadyArmed(_))
        ));
    }

    #[test]
    fn cancelled_arrival_frees_its_slot() {
        let sp = SyncPoints::new();
        let key = SlotKey::new("A", "p");
        sp.arm(key.clone()).unwrap();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let mut a = sp.arrive(key.clone());
        assert!(poll_once(&mut a, &flag).is_pending());
        drop(a);
        assert_eq!(sp.state(&key), None);
    }

    /// A controller with one request parked at `A@p` (its arrival, still pending) and `B@q`
    /// armed but unreached.
    fn parked_and_armed() -> (SyncPoints, SlotKey, SlotKey, Arc<Flag>, Arrival) {
        let sp = SyncPoints::new();
        let parked = SlotKey::new("A", "p");
        let armed = SlotKey::new("B", "q");
        sp.arm(parked.clone()).unwrap();
        sp.arm(armed.clone()).unwrap();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let mut a = sp.arrive(parked.clone());
        assert!(poll_once(&mut a, &flag).is_pending());
        (sp, parked, armed, flag, a)
    }

    #[test]
    fn clear_releases_parked_and_drops_armed_in_one_step() {
        let (sp, parked, armed, flag, mut a) = parked_and_armed();
        assert_eq!(sp.clear(&armed), Some(SlotState::Armed));
        assert_eq!(sp.state(&armed), None, "an unreached slot is gone");
        assert_eq!(sp.clear(&parked), Some(SlotState::Parked));
        assert!(
            poll_once(&mut a, &flag).is_ready(),
            "the parked request goes on"
        );
        assert_eq!(sp.state(&parked), None);
        assert_eq!(sp.clear(&parked), None, "nothing left to clear");
        // Arriving at a cleared slot does not park.
        let mut b = sp.arrive(armed.clone());
        assert!(poll_once(&mut b, &flag).is_ready());
    }

    #[test]
    fn release_all_frees_parked_and_drops_armed() {
        let (sp, parked, armed, flag, mut a) = parked_and_armed();
        sp.release_all();
        assert_eq!(sp.state(&armed), None);
        assert!(poll_once(&mut a, &flag).is_ready());
        assert_eq!(sp.state(&parked), None);
    }
}

#[cfg(all(test, harbor_loom))]
mod loom_tests {
    use super::*;

    /// Whatever the interleaving of arrival, observation and release, the parked request resumes
    /// exactly once and the slot ends empty.
    #[test]
    fn park_observe_release_is_race_free() {
        loom::model(|| {
            let sp = SyncPoints::new();
            let key = SlotKey::new("A", "p");
            sp.arm(key.clone()).unwrap();
            let service = {
                let sp = sp.clone();
                let key = key.clone();
                loom::thread::spawn(move || loom::future::block_on(sp.arrive(key)))
            };
            loom::future::block_on(sp.until(key.clone(), SlotState::Parked));
            sp.release(&key).unwrap();
            service.join().unwrap();
            assert_eq!(sp.state(&key), None);
        });
    }

    /// Two requests of the same actor race to one armed point: exactly one parks, the other passes,
    /// and the release reaches the parked one.
    #[test]
    fn one_arm_parks_exactly_one_of_two_arrivals() {
        loom::model(|| {
            let sp = SyncPoints::new();
            let key = SlotKey::new("A", "p");
            sp.arm(key.clone()).unwrap();
            let spawn = |sp: &SyncPoints| {
                let sp = sp.clone();
                let key = key.clone();
                loom::thread::spawn(move || loom::future::block_on(sp.arrive(key)))
            };
            let (one, two) = (spawn(&sp), spawn(&sp));
            loom::future::block_on(sp.until(key.clone(), SlotState::Parked));
            sp.release(&key).unwrap();
            one.join().unwrap();
            two.join().unwrap();
            assert_eq!(sp.state(&key), None);
            assert_eq!(sp.history().len(), 1);
        });
    }
}
