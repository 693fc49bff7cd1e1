//! The sets of operations explored on a service: each schedule on a fresh workspace (made ahead
//! while another schedule runs, and taken by whichever lane needs its start) and checked against
//! the model. A service runs one schedule at a time,
//! or several at once (`--lanes`): each lane on an engine of its own, with its own actor tags, and
//! each schedule with the provider's counters of its own grant. A lane takes the next schedule of
//! a set under way — several lanes run branches of one set's tree at once — or begins the next
//! set; a set that acts on the whole target (a fault, the clock) runs one schedule at a time with
//! nothing beside it on its service. With several services (`--services`), each takes the next
//! set it can serve when it is free for one (not every service runs the fault proxies a set on a
//! dependency's fault needs). `account.rs` keeps one set's tree and account while it is under way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod account;

use super::engine::{Engine, Prepared, ScheduleRun, Spent};
use super::ops::Operation;
use super::start::Start;
use super::{Options, SetReport, Violation};
use crate::target::Target;
use account::{Gate, Running, SetRun};

/// A set waiting in a queue.
#[derive(Clone, Copy)]
pub(super) struct Queued<'o> {
    /// Its index in the run.
    pub index: usize,
    /// Its operations.
    pub ops: &'o [Operation],
    /// Whether some service cannot serve it (it needs the fault proxies not every service runs):
    /// the services that can take it first, so that it is not left to the end with them alone.
    pub scarce: bool,
}

/// The sets still to explore, shared by the services: those that may share a service with
/// other sets, and those that must have theirs to themselves. Once one set fails, the run is
/// abandoned: the others end at their next schedule's boundary (a fault in the middle of a
/// schedule is not cut short) and no more are taken.
pub(super) struct Queues<'o> {
    beside: Mutex<VecDeque<Queued<'o>>>,
    alone: Mutex<VecDeque<Queued<'o>>>,
    abandoned: AtomicBool,
}

impl<'o> Queues<'o> {
    /// Both queues, each in the sets' order.
    pub fn new(beside: Vec<Queued<'o>>, alone: Vec<Queued<'o>>) -> Self {
        Self {
            beside: Mutex::new(beside.into()),
            alone: Mutex::new(alone.into()),
            abandoned: AtomicBool::new(false),
        }
    }

    /// The first set of `queue` that `take` accepts, taken out of it.
    fn next(
        &self,
        queue: &Mutex<VecDeque<Queued<'o>>>,
        take: impl Fn(&Queued<'o>) -> bool,
    ) -> Option<Queued<'o>> {
        if self.is_abandoned() {
            return None;
        }
        // Taking never panics while the lock is held: a poisoned queue is still a queue.
        let mut queue = queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = queue.iter().position(take)?;
        queue.remove(at)
    }

    /// Whether a set has failed: every other stops at its next schedule.
    fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// `result`, having abandoned the run if it is an error.
    fn noting<T>(&self, result: Result<T, String>) -> Result<T, String> {
        if result.is_err() {
            self.abandoned.store(true, Ordering::SeqCst);
        }
        result
    }
}

/// Explores the sets `target` can serve until neither queue holds one: first, one schedule at a
/// time, those that only some services can serve (if it is one of them); then those that may share
/// it, `lanes` schedules at once, each lane on an engine of its own; then, one schedule at a time,
/// the rest of those that act on the whole service. Returns each explored set with its index.
pub(super) async fn explore_on_service<'o>(
    target: &dyn Target,
    queues: &Queues<'o>,
    lanes: usize,
    lock_probes: bool,
    options: &Options,
    started: Instant,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<(usize, Explored)>, String> {
    let offered = target.capabilities();
    let serves = |q: &Queued<'_>| super::cannot_serve(&offered, q.ops).is_none();
    let alone = [Engine::new(target).with_sync_points(!lock_probes)];
    let beside: Vec<Engine<'_>> = (0..lanes)
        .map(|lane| {
            Engine::new(target)
                .with_sync_points(!lock_probes)
                .in_lane(lane)
        })
        .collect();
    let scarce = || queues.next(&queues.alone, |q| q.scarce && serves(q));
    let shared = || queues.next(&queues.beside, serves);
    let rest = || queues.next(&queues.alone, serves);
    // A service that can serve what others cannot does that first: left to the end, those sets
    // would run on it alone while the other services had nothing to do.
    let mut explored = run_lanes(&alone, &scarce, queues, options, started, progress).await?;
    // Every lane ends on its own (none is dropped in the middle of a schedule), and only then do
    // the sets that must be alone on the service begin.
    explored.extend(run_lanes(&beside, &shared, queues, options, started, progress).await?);
    explored.extend(run_lanes(&alone, &rest, queues, options, started, progress).await?);
    Ok(explored)
}

/// What a lane does next.
enum Job<'o> {
    /// Runs a schedule of set `index`.
    Run {
        index: usize,
        ops: &'o [Operation],
        start: Start,
        scheduler: Box<Running>,
    },
    /// Waits for a running schedule to end: it may leave branches to run.
    Wait,
    /// Nothing is left for it.
    Done,
}

/// The sets a service's lanes have begun: those under way, and those over.
#[derive(Default)]
struct Board<'o> {
    under_way: Vec<SetRun<'o>>,
    over: Vec<(usize, Explored)>,
}

impl<'o> Board<'o> {
    /// A schedule of a set under way if one may begin (the set begun first first, so a lane
    /// helps finish a set before it begins another), else of a new set `take` gives.
    fn next_job(
        &mut self,
        take: &dyn Fn() -> Option<Queued<'o>>,
        options: &Options,
        gate: Gate,
    ) -> Job<'o> {
        if gate.abandoned {
            return Job::Done;
        }
        loop {
            self.sweep(options, gate);
            for set in &mut self.under_way {
                if let Some(scheduler) = set.begin(options, gate) {
                    return Job::Run {
                        index: set.index,
                        ops: set.ops,
                        start: set.start,
                        scheduler: Box::new(scheduler),
                    };
                }
            }
            // A lane waits only for a schedule that is running: its end notifies.
            match take() {
                Some(q) => self.under_way.push(SetRun::new(q.index, q.ops)),
                None if self.under_way.iter().any(SetRun::is_running) => return Job::Wait,
                None => return Job::Done,
            }
        }
    }

    /// `then` on set `index`, under way.
    fn with_set<T>(
        &mut self,
        index: usize,
        then: impl FnOnce(&mut SetRun<'o>) -> Result<T, String>,
    ) -> Result<T, String> {
        let set = self
            .under_way
            .iter_mut()
            .find(|s| s.index == index)
            .ok_or(format!("set {index} ended while a schedule of it ran"))?;
        then(set)
    }

    /// Moves the sets that are over to `over`.
    fn sweep(&mut self, options: &Options, gate: Gate) {
        let mut i = 0;
        while i < self.under_way.len() {
            if self.under_way[i].is_over(options, gate) {
                let set = self.under_way.remove(i);
                self.over.push((set.index, set.finish(options)));
            } else {
                i += 1;
            }
        }
    }
}

/// Explores the sets `take` gives with one lane per engine: each lane runs one schedule at a time
/// and takes the next from a set under way (every lane may run branches of the same set) or
/// begins the next set. Returns each explored set with its index.
async fn run_lanes<'o>(
    engines: &[Engine<'_>],
    take: &dyn Fn() -> Option<Queued<'o>>,
    queues: &Queues<'o>,
    options: &Options,
    started: Instant,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<(usize, Explored)>, String> {
    let board = Mutex::new(Board::default());
    let board_now = || {
        board
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let ended = tokio::sync::Notify::new();
    let made = Made::new(engines.len());
    let (board_now, ended, made) = (&board_now, &ended, &made);
    let lane = |engine| async move {
        loop {
            // Made before the board is read: an end between the read and the wait still wakes it.
            let heard = ended.notified();
            let gate = Gate::now(options, started, queues.is_abandoned());
            let job = board_now().next_job(take, options, gate);
            let (index, ops, start, mut scheduler) = match job {
                Job::Run {
                    index,
                    ops,
                    start,
                    scheduler,
                } => (index, ops, start, scheduler),
                Job::Wait => {
                    heard.await;
                    continue;
                }
                Job::Done => return Ok(()),
            };
            let began = Instant::now();
            let run = run_one(engine, ops, start, &mut scheduler, made).await;
            let recorded = run.and_then(|run| {
                board_now().with_set(index, |set| {
                    let findings = set.check(&run);
                    set.record(*scheduler, run, findings, began.elapsed(), options)
                })
            });
            ended.notify_waiters();
            progress(index, queues.noting(recorded)?);
        }
    };
    let mut failed = None;
    for lane in futures::future::join_all(engines.iter().map(lane)).await {
        if let Err(e) = lane {
            failed.get_or_insert(e);
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let mut board = board
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Abandoned: what the sets under way ran is still accounted for.
    board.sweep(
        options,
        Gate {
            abandoned: true,
            past_deadline: true,
        },
    );
    Ok(board.over)
}

/// Workspaces made ahead of their schedules, shared by a service's lanes: a lane takes one with
/// its schedule's start, whichever lane made it. Kept per lane, a workspace made for one start
/// was thrown away whenever its lane's next schedule began from another: with four lanes on
/// every pair of activate, callback and disconnect, 97 workspaces were made for 78 schedules
/// (86 shared).
struct Made<P = Prepared> {
    ready: Mutex<Vec<P>>,
    /// The most kept for one start: one a lane.
    most: usize,
}

/// What [`Made`] keeps: a workspace made for a start, at some moment.
trait Ahead {
    fn start(&self) -> Start;
    fn made_at(&self) -> Instant;
}

impl Ahead for Prepared {
    fn start(&self) -> Start {
        self.start
    }
    fn made_at(&self) -> Instant {
        self.made_at
    }
}

/// How long a workspace made ahead is kept: its flow's OAuth state lives 10 minutes in Redis
/// (real time), and a start nobody needed for a minute may not be needed for far longer.
const KEPT_AT_MOST: Duration = Duration::from_secs(60);

impl<P: Ahead> Made<P> {
    fn new(lanes: usize) -> Self {
        Self {
            ready: Mutex::new(Vec::new()),
            most: lanes.max(1),
        }
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, Vec<P>> {
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A workspace made for `start`, taken out (the one made first), among those made less than
    /// [`KEPT_AT_MOST`] ago (the older are dropped). With `only`, those made for another start
    /// are dropped too.
    fn take(&self, start: Start, only: bool, now: Instant) -> Option<P> {
        let mut ready = self.ready();
        ready.retain(|p| {
            now.saturating_duration_since(p.made_at()) < KEPT_AT_MOST
                && (!only || p.start() == start)
        });
        let at = ready.iter().position(|p| p.start() == start)?;
        Some(ready.remove(at))
    }

    /// Whether as many are kept for `start` as there are lanes to take them.
    fn is_full(&self, start: Start) -> bool {
        self.ready().iter().filter(|p| p.start() == start).count() >= self.most
    }

    fn put(&self, prepared: P) {
        self.ready().push(prepared);
    }
}

/// One schedule of `ops` from `start` on `engine`, on a workspace made ahead with that start if
/// one is ready (or a new one); another is made while this one runs, unless enough are ready.
async fn run_one(
    engine: &Engine<'_>,
    ops: &[Operation],
    start: Start,
    scheduler: &mut Running,
    made: &Made,
) -> Result<ScheduleRun, String> {
    // A set that runs alone moves the service's clock or cuts a dependency: a workspace made for
    // another start before it may no longer be in that start after it, so those are dropped.
    let prepared = match made.take(start, runs_alone(ops), Instant::now()) {
        Some(p) => p,
        None => engine.prepare(start).await?,
    };
    // Not beside a schedule that takes Redis away: the next workspace's authorization would meet
    // it gone.
    let alongside = !ops.iter().any(|o| o.cuts_redis()) && !made.is_full(start);
    let (run, following) = tokio::join!(
        engine.run_prepared(ops, prepared, scheduler.scheduler()),
        async {
            if alongside {
                engine.prepare(start).await.ok()
            } else {
                None
            }
        }
    );
    if let Some(p) = following {
        made.put(p);
    }
    run
}

/// The schedules' time, summed: what `explore.json`'s `mean_ms` divides by their number.
#[derive(Default)]
pub(super) struct Tally {
    /// Whole schedules (setup included).
    pub schedule: Duration,
    /// Making and starting their workspaces.
    pub setup: Duration,
    /// The end checks.
    pub checks: Duration,
    /// The decisions' time, split.
    pub spent: Spent,
}

impl Tally {
    fn add(&mut self, run: &ScheduleRun) {
        self.schedule += run.duration;
        self.setup += run.setup;
        self.checks += run.checks;
        self.add_spent(&run.spent);
    }

    fn add_spent(&mut self, s: &Spent) {
        self.spent.start += s.start;
        self.spent.advance += s.advance;
        self.spent.settle += s.settle;
        self.spent.lock_reads += s.lock_reads;
        self.spent.lock_read_count += s.lock_read_count;
        self.spent.cleanup += s.cleanup;
    }

    /// Adds another set's tally to this one.
    pub fn merge(&mut self, other: &Tally) {
        self.schedule += other.schedule;
        self.setup += other.setup;
        self.checks += other.checks;
        self.add_spent(&other.spent);
    }
}

/// What exploring one set gave.
pub(super) struct Explored {
    /// Its account.
    pub set: SetReport,
    /// Its violations, in the order found.
    pub violations: Vec<Violation>,
    /// Where its schedules' time went.
    pub tally: Tally,
}

/// Whether a set must be explored with no other set beside it: a fault acts on the whole target
/// (every replica's database links, a replica, Redis, the provider) and its outbox drain moves
/// the service's clock, as a stale start does — which every other workspace's tokens would feel.
pub fn runs_alone(ops: &[Operation]) -> bool {
    ops.iter().any(|o| o.fault().is_some()) || Start::for_operations(ops) == Start::Stale
}

#[cfg(test)]
mod tests;
