//! One set's exploration under way ([`SetRun`]): the schedules still to run (its DFS tree's
//! branches, or its PCT seeds), how many are running, and its account — what the ones that ended
//! showed, kept in the depth-first order whatever order they ended in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::super::anomaly::{self, Anomaly, SerialOutcome};
use super::super::engine::ScheduleRun;
use super::super::ops::Operation;
use super::super::start::Start;
use super::super::{outcome_key, Mode, Options, SetReport, Violation};
use super::{Explored, Tally};
use crate::schedule::dfs::{Branch, DfsKey, DfsRun};
use crate::schedule::Dfs;

/// A schedule a lane may run: a branch of the set's tree, or the seed of a PCT schedule.
pub(in crate::explore) enum Ticket {
    /// Systematic mode.
    Branch(Branch),
    /// Random mode: the seed, PCT's bound on the schedule's length and its bug depth.
    Seed(u64, usize, usize),
}

/// A ticket's scheduler while its schedule runs.
pub(in crate::explore) enum Running {
    /// A DFS run, handed back to the tree when it ends.
    Dfs(DfsRun<Operation>),
    /// A PCT schedule from its seed.
    Pct(u64, crate::schedule::Pct),
}

impl Running {
    /// The scheduler the engine asks.
    pub fn scheduler(&mut self) -> &mut dyn crate::schedule::Scheduler {
        match self {
            Running::Dfs(run) => run,
            Running::Pct(_, pct) => pct,
        }
    }
}

/// One set being explored.
pub(in crate::explore) struct SetRun<'o> {
    /// Its index in the run.
    pub index: usize,
    /// Its operations.
    pub ops: &'o [Operation],
    /// Where each schedule starts.
    pub start: Start,
    serial: Vec<SerialOutcome>,
    report: SetReport,
    dfs: Dfs<Operation>,
    /// How many schedules each explored one stands for.
    mirrors: usize,
    /// PCT's bound on a schedule's length: the longest run so far. Random mode runs one schedule
    /// of a set at a time, so each seed's schedule is the one a lone run would give.
    length: usize,
    /// Its schedules running now.
    running: usize,
    /// A finding ended it (`--stop-at-first`).
    stopped: bool,
    /// Each explored schedule's place in the DFS order: a violation's `found_after` is its rank
    /// among them, the count a one-at-a-time run would have reported.
    keys: Vec<DfsKey>,
    /// The first schedule that showed each anomaly, by its place in the DFS order (random mode:
    /// by its seed's), and the finding's place among that schedule's.
    first: BTreeMap<Anomaly, ((DfsKey, usize), Violation)>,
    tally: Tally,
    /// Lanes' time spent on its schedules.
    busy: Duration,
}

impl<'o> SetRun<'o> {
    /// The set `ops`, index `index` of the run, with nothing run yet.
    pub fn new(index: usize, ops: &'o [Operation]) -> Self {
        let start = Start::for_operations(ops);
        Self {
            index,
            ops,
            start,
            serial: anomaly::serial_outcomes(ops, start),
            report: SetReport {
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
            },
            dfs: Dfs::new(ops),
            mirrors: crate::schedule::dfs::mirrors(ops),
            length: 8,
            running: 0,
            stopped: false,
            keys: Vec::new(),
            first: BTreeMap::new(),
            tally: Tally::default(),
            busy: Duration::ZERO,
        }
    }

    /// Whether a schedule may begin now: within the budget and the time, not stopped, with a
    /// branch left (systematic) or none running (random mode, and `--stop-at-first`, which
    /// must stop at the first schedule that shows something).
    fn may_begin(&self, options: &Options, started: Instant, abandoned: bool) -> bool {
        let deadline = options.seconds.map(Duration::from_secs_f64);
        let one_at_a_time = options.stop_at_first || matches!(options.mode, Mode::Random { .. });
        !(self.stopped
            || abandoned
            || self.report.explored + self.running >= options.budget
            || deadline.is_some_and(|d| started.elapsed() >= d)
            || (one_at_a_time && self.running > 0)
            || (options.mode == Mode::Systematic && self.dfs.is_done()))
    }

    /// The next schedule to run, counted as running, if one may begin now.
    pub fn begin(
        &mut self,
        options: &Options,
        started: Instant,
        abandoned: bool,
    ) -> Option<Ticket> {
        if !self.may_begin(options, started, abandoned) {
            return None;
        }
        let ticket = match options.mode {
            Mode::Systematic => Ticket::Branch(self.dfs.next_branch()?),
            Mode::Random { seed, depth } => {
                Ticket::Seed(seed + self.report.explored as u64, self.length, depth)
            }
        };
        self.running += 1;
        Some(ticket)
    }

    /// Whether it is over: nothing running and nothing that may begin.
    pub fn is_over(&self, options: &Options, started: Instant, abandoned: bool) -> bool {
        self.running == 0 && !self.may_begin(options, started, abandoned)
    }

    /// The scheduler for `ticket`.
    pub fn scheduler(&self, ticket: Ticket) -> Running {
        match ticket {
            Ticket::Branch(branch) => Running::Dfs(self.dfs.schedule(branch)),
            Ticket::Seed(seed, length, depth) => Running::Pct(
                seed,
                crate::schedule::Pct::new(seed, self.ops.len(), length, depth),
            ),
        }
    }

    /// Takes an ended schedule into the account: its branches into the tree, its outcome, and
    /// each anomaly it shows that no schedule earlier in the DFS order showed. `lane_time` is
    /// what it took of its lane. Returns the schedules explored so far.
    pub fn record(
        &mut self,
        scheduler: Running,
        run: ScheduleRun,
        lane_time: Duration,
        options: &Options,
    ) -> Result<usize, String> {
        self.running -= 1;
        let (key, seed) = match scheduler {
            Running::Dfs(dfs_run) => (self.dfs.finish(dfs_run), None),
            // One at a time: the seed's place is the count before it.
            Running::Pct(seed, _) => (DfsKey(vec![self.report.explored]), Some(seed)),
        };
        if let Some(why) = &run.refused {
            return Err(format!("exploring {:?}: {why}", self.ops));
        }
        self.length = self.length.max(run.decisions.len());
        self.tally.add(&run);
        self.busy += lane_time;
        self.report.explored += 1;
        if options.mode == Mode::Systematic {
            self.report.pruned += self.mirrors - 1;
        }
        *self
            .report
            .outcomes
            .entry(outcome_key(self.ops, &run))
            .or_default() += 1;
        let findings = anomaly::check(self.ops, self.start, &run, &self.serial);
        let mut new = false;
        for (n, f) in findings.into_iter().enumerate() {
            let place = (key.clone(), n);
            let known = self.first.get(&f.anomaly);
            new |= known.is_none();
            if known.is_some_and(|(earlier, _)| *earlier <= place) {
                continue;
            }
            let violation = Violation {
                anomaly: f.anomaly,
                detail: f.detail,
                operations: self.ops.to_vec(),
                start: self.start,
                schedule: run.decisions.iter().map(|d| d.chosen).collect(),
                seed,
                found_after: self.report.explored,
                saved_file: None,
                reproduces: None,
                passes_on_correct_build: None,
                run: Some(run.clone()),
            };
            self.first.insert(f.anomaly, (place, violation));
        }
        if options.mode == Mode::Systematic {
            self.keys.push(key);
        }
        if new && options.stop_at_first {
            self.stopped = true;
        }
        Ok(self.report.explored)
    }

    /// Its account, once it is over: the anomalies and violations in the DFS order, each
    /// violation's `found_after` its schedule's rank in that order among those explored.
    pub fn finish(mut self, options: &Options) -> Explored {
        let mut found: Vec<((DfsKey, usize), Violation)> = self.first.into_values().collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut violations = Vec::with_capacity(found.len());
        for ((key, _), mut v) in found {
            if options.mode == Mode::Systematic {
                v.found_after = 1 + self.keys.iter().filter(|k| **k < key).count();
            }
            self.report.anomalies.push(v.anomaly);
            violations.push(v);
        }
        self.report.divergence = self.dfs.divergence().map(str::to_owned);
        self.report.complete = options.mode == Mode::Systematic
            && !self.stopped
            && self.dfs.is_done()
            && self.report.divergence.is_none();
        self.report.mirrored_races = self.dfs.mirrored;
        self.report.duration_ms = self.busy.as_secs_f64() * 1000.0;
        Explored {
            set: self.report,
            violations,
            tally: self.tally,
        }
    }
}
