//! One set of operations explored: its schedules run one after another, each on a fresh
//! workspace (the next one made while one runs) and checked against the model. [`super::explore`]
//! runs the sets one at a time, or several at once (`--lanes`): each set on an engine of its own,
//! with its own actor tags and the provider's counters of its own grant, and a set that acts on
//! the whole target (a fault, the clock) with nothing beside it on its service. With several
//! services (`--services`), each takes the next set it can serve when it is free for one (not
//! every service runs the fault proxies a set on a dependency's fault needs).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::anomaly::{self, Anomaly, Finding};
use super::engine::{Engine, ScheduleRun, Spent};
use super::ops::Operation;
use super::start::Start;
use super::{outcome_key, Mode, Options, SetReport, Violation};
use crate::target::Target;

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

/// Explores the sets `target` can serve until neither queue holds one: first, one at a time,
/// those that only some services can serve (if it is one of them); then those that may share it,
/// `lanes` at once, each on an engine of its own; then, one at a time, the rest of those that act
/// on the whole service. Returns each explored set with its index.
pub(super) async fn explore_on_service(
    target: &dyn Target,
    queues: &Queues<'_>,
    lanes: usize,
    lock_probes: bool,
    options: &Options,
    started: Instant,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<(usize, Explored)>, String> {
    let abandoned = || queues.is_abandoned();
    let offered = target.capabilities();
    let serves = |q: &Queued<'_>| super::cannot_serve(&offered, q.ops).is_none();
    let engine = Engine::new(target).with_sync_points(!lock_probes);
    let mut explored = Vec::new();
    // A service that can serve what others cannot does that first: left to the end, those sets
    // would run on it alone while the other services had nothing to do.
    while let Some(q) = queues.next(&queues.alone, |q| q.scarce && serves(q)) {
        let set = explore_set(
            &engine, q.index, q.ops, options, started, progress, &abandoned,
        );
        explored.push((q.index, queues.noting(set.await)?));
    }
    let lane = || async {
        let mut done = Vec::new();
        while let Some(q) = queues.next(&queues.beside, serves) {
            let engine = Engine::new(target)
                .with_sync_points(!lock_probes)
                .in_lane(q.index);
            let set = explore_set(
                &engine, q.index, q.ops, options, started, progress, &abandoned,
            );
            done.push((q.index, queues.noting(set.await)?));
        }
        Ok::<_, String>(done)
    };
    // Every lane ends on its own (none is dropped in the middle of a schedule), and only then do
    // the sets that must be alone on the service begin.
    for lane in futures::future::join_all((0..lanes).map(|_| lane())).await {
        explored.extend(lane?);
    }
    while let Some(q) = queues.next(&queues.alone, serves) {
        let set = explore_set(
            &engine, q.index, q.ops, options, started, progress, &abandoned,
        );
        explored.push((q.index, queues.noting(set.await)?));
    }
    Ok(explored)
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

/// Explores the set `ops` (index `set_index` of the run) on `engine`: every schedule in
/// systematic mode (up to the budget), PCT-random ones otherwise. `progress` hears of each
/// schedule (set index, schedules of the set so far).
pub(super) async fn explore_set(
    engine: &Engine<'_>,
    set_index: usize,
    ops: &[Operation],
    options: &Options,
    started: Instant,
    progress: &dyn Fn(usize, usize),
    abandoned: &dyn Fn() -> bool,
) -> Result<Explored, String> {
    let began = Instant::now();
    let deadline = options.seconds.map(Duration::from_secs_f64);
    let start = Start::for_operations(ops);
    let serial = anomaly::serial_outcomes(ops, start);
    let mut set = SetReport {
        operations: ops.to_vec(),
        start,
        explored: 0,
        pruned: 0,
        duration_ms: 0.0,
        complete: false,
        divergence: None,
        mirrored_races: 0,
        outcomes: BTreeMap::new(),
        anomalies: Vec::new(),
    };
    let mut violations = Vec::new();
    let mut tally = Tally::default();
    let mut seen: BTreeSet<Anomaly> = BTreeSet::new();
    let mut dfs = crate::schedule::Dfs::new(ops);
    let mirrors = crate::schedule::dfs::mirrors(ops);
    let mut length = 8;
    // The next schedule's workspace is made while this one runs (it touches only its own).
    let mut next = Some(engine.prepare(start).await?);
    loop {
        if set.explored >= options.budget
            || deadline.is_some_and(|d| started.elapsed() >= d)
            || abandoned()
        {
            break;
        }
        let prepared = match next.take() {
            Some(p) => p,
            None => engine.prepare(start).await?,
        };
        let mut pct = match options.mode {
            Mode::Random { seed, depth } => Some((
                seed + set.explored as u64,
                crate::schedule::Pct::new(seed + set.explored as u64, ops.len(), length, depth),
            )),
            Mode::Systematic => None,
        };
        let mut dfs_run = dfs.schedule();
        let scheduler: &mut dyn crate::schedule::Scheduler = match pct.as_mut() {
            Some((_, p)) => p,
            None => &mut dfs_run,
        };
        // Not beside a schedule that takes Redis away: the next workspace's authorization
        // would meet it gone.
        let alongside = !ops.iter().any(|o| o.cuts_redis());
        let (run, following) = tokio::join!(engine.run_prepared(ops, prepared, scheduler), async {
            if alongside {
                engine.prepare(start).await
            } else {
                Err(String::new())
            }
        });
        let (run, seed) = (run?, pct.map(|(s, _)| s));
        if let Some(why) = &run.refused {
            return Err(format!("exploring {ops:?}: {why}"));
        }
        next = following.ok();
        length = length.max(run.decisions.len());
        tally.add(&run);
        set.explored += 1;
        if options.mode == Mode::Systematic {
            set.pruned += mirrors - 1;
        }
        *set.outcomes.entry(outcome_key(ops, &run)).or_default() += 1;
        progress(set_index, set.explored);
        let findings: Vec<Finding> = anomaly::check(ops, start, &run, &serial);
        let mut new = false;
        for f in findings {
            if seen.insert(f.anomaly) {
                new = true;
                set.anomalies.push(f.anomaly);
                violations.push(Violation {
                    anomaly: f.anomaly,
                    detail: f.detail,
                    operations: ops.to_vec(),
                    start,
                    schedule: run.decisions.iter().map(|d| d.chosen).collect(),
                    seed,
                    found_after: set.explored,
                    saved_file: None,
                    reproduces: None,
                    passes_on_correct_build: None,
                    run: Some(run.clone()),
                });
            }
        }
        if new && options.stop_at_first {
            break;
        }
        if options.mode == Mode::Systematic && !dfs.advance() {
            // Every schedule ran — unless a replayed prefix diverged, when some branch may
            // never have been taken.
            set.complete = dfs.divergence.is_none();
            set.divergence = dfs.divergence.clone();
            break;
        }
    }
    set.mirrored_races = dfs.mirrored;
    set.duration_ms = began.elapsed().as_secs_f64() * 1000.0;
    Ok(Explored {
        set,
        violations,
        tally,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::{multisets, needs_fault_proxies, services_with_fault_proxies};

    #[test]
    fn half_the_services_run_fault_proxies_when_some_sets_need_them() {
        let triples = multisets(&Operation::by_default(), 3);
        let proxied = triples.iter().filter(|s| needs_fault_proxies(s)).count();
        assert_eq!((triples.len(), proxied), (430, 282));
        assert_eq!(services_with_fault_proxies(&triples, 4), 2);
        assert_eq!(services_with_fault_proxies(&triples, 3), 2);
        assert_eq!(services_with_fault_proxies(&triples, 1), 1);
        // None needs them: no service runs them; every one does: all do.
        let requests = multisets(&[Operation::Activate, Operation::Callback], 3);
        assert_eq!(services_with_fault_proxies(&requests, 4), 0);
        let faults = vec![
            vec![Operation::DbCut],
            vec![Operation::Callback, Operation::RedisRestart],
        ];
        assert_eq!(services_with_fault_proxies(&faults, 4), 4);
    }

    #[test]
    fn a_service_takes_only_what_it_accepts_and_in_order() {
        const A: &[Operation] = &[Operation::Activate];
        const B: &[Operation] = &[Operation::DbCut];
        const C: &[Operation] = &[Operation::ReplicaCrash];
        let (a, b, c) = (A, B, C);
        let queued = |index, ops: &'static [Operation], scarce| Queued { index, ops, scarce };
        let queues = Queues::new(
            Vec::new(),
            vec![queued(0, a, false), queued(1, b, true), queued(2, c, false)],
        );
        // A service without the proxies passes over the set that needs them.
        let bare = |q: &Queued<'_>| !q.ops.contains(&Operation::DbCut);
        assert_eq!(queues.next(&queues.alone, bare).map(|q| q.index), Some(0));
        // One with them takes the scarce set first, wherever it waits.
        assert_eq!(
            queues.next(&queues.alone, |q| q.scarce).map(|q| q.index),
            Some(1)
        );
        assert!(queues.next(&queues.alone, |q| q.scarce).is_none());
        assert_eq!(queues.next(&queues.alone, bare).map(|q| q.index), Some(2));
        assert!(queues.next(&queues.alone, |_| true).is_none());
        // An abandoned run hands out nothing more.
        let queues = Queues::new(vec![queued(0, a, false)], Vec::new());
        let _ = queues.noting::<()>(Err("failed".into()));
        assert!(queues.next(&queues.beside, |_| true).is_none());
    }
}
