//! One set's exploration under way ([`SetRun`]): the schedules still to run (its DFS tree's
//! branches, or its PCT seeds), how many are running, and its account — what the ones that ended
//! showed, kept in the depth-first order whatever order they ended in.
//!
//! A systematic set explored to its end, or stopped at its first finding, reports what one lane
//! would have: under `--stop-at-first` the lanes go on with every branch that may hold an earlier
//! schedule than the first one that showed something, so the schedule reported is the first in
//! the DFS order and `found_after` counts the schedules before it. (The schedules already running
//! when it was found are explored and counted too.) Under `--budget` or `--seconds` with several
//! lanes, which schedules ran depends on which ended first. PCT runs one schedule of a set at a
//! time: each seed's bound on a schedule's length depends on the runs before it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::super::anomaly::{self, Anomaly, Finding, SerialOutcome};
use super::super::engine::ScheduleRun;
use super::super::ops::Operation;
use super::super::start::Start;
use super::super::{outcome_key, Mode, Options, SetReport, Violation};
use super::{Explored, Tally};
use crate::schedule::dfs::{DfsKey, DfsRun};
use crate::schedule::Dfs;

/// The scheduler of a schedule a lane runs: one along a branch of the set's tree, or a PCT
/// schedule from its seed.
pub(in crate::explore) enum Running {
    /// A DFS run, handed back to the tree when it ends.
    Dfs(DfsRun<Operation>),
    /// A PCT schedule and its seed.
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

/// What every set is checked against when a lane looks for work: read once, so that the sets
/// swept and those asked for a schedule see the same answers.
#[derive(Clone, Copy)]
pub(in crate::explore) struct Gate {
    /// The run is abandoned (a set failed).
    pub abandoned: bool,
    /// `--seconds` is over.
    pub past_deadline: bool,
}

impl Gate {
    /// The gate now.
    pub fn now(options: &Options, started: Instant, abandoned: bool) -> Self {
        let deadline = options.seconds.map(Duration::from_secs_f64);
        Self {
            abandoned,
            past_deadline: deadline.is_some_and(|d| started.elapsed() >= d),
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
    /// Under `--stop-at-first`, the first schedule in the DFS order (random mode: the first)
    /// that showed something: only branches that may hold an earlier one run after it.
    first_finding: Option<DfsKey>,
    /// Each explored schedule's place in the DFS order: a violation's `found_after` is its rank
    /// among them (one lane's count, when every earlier schedule ran).
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
            first_finding: None,
            keys: Vec::new(),
            first: BTreeMap::new(),
            tally: Tally::default(),
            busy: Duration::ZERO,
        }
    }

    /// Whether a schedule may begin now: within the budget and the time, with a branch left
    /// that may hold a schedule before its first finding (systematic), or with none running and
    /// no finding to stop at (random mode).
    fn may_begin(&self, options: &Options, gate: Gate) -> bool {
        let open = !(gate.abandoned
            || gate.past_deadline
            || self.report.explored + self.running >= options.budget);
        open && match options.mode {
            Mode::Systematic => self.dfs.has_branch(self.first_finding.as_ref()),
            Mode::Random { .. } => self.running == 0 && self.first_finding.is_none(),
        }
    }

    /// Whether a schedule of it is running.
    pub fn is_running(&self) -> bool {
        self.running > 0
    }

    /// The scheduler of the next schedule to run, counted as running, if one may begin now.
    pub fn begin(&mut self, options: &Options, gate: Gate) -> Option<Running> {
        if !self.may_begin(options, gate) {
            return None;
        }
        let scheduler = match options.mode {
            Mode::Systematic => {
                let branch = self.dfs.next_branch(self.first_finding.as_ref())?;
                Running::Dfs(self.dfs.schedule(branch))
            }
            Mode::Random { seed, depth } => {
                let seed = seed + self.report.explored as u64;
                let pct = crate::schedule::Pct::new(seed, self.ops.len(), self.length, depth);
                Running::Pct(seed, pct)
            }
        };
        self.running += 1;
        Some(scheduler)
    }

    /// Whether it is over: nothing running and nothing that may begin.
    pub fn is_over(&self, options: &Options, gate: Gate) -> bool {
        self.running == 0 && !self.may_begin(options, gate)
    }

    /// What the model finds wrong with an ended schedule of the set.
    pub fn check(&self, run: &ScheduleRun) -> Vec<Finding> {
        anomaly::check(self.ops, self.start, run, &self.serial)
    }

    /// Takes an ended schedule into the account: its branches into the tree, its outcome, and
    /// each of its `findings` ([`SetRun::check`]) whose anomaly no schedule earlier in the DFS
    /// order showed. `lane_time` is what it took of its lane. Returns the schedules explored so
    /// far.
    pub fn record(
        &mut self,
        scheduler: Running,
        run: ScheduleRun,
        findings: Vec<Finding>,
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
        if options.stop_at_first
            && !findings.is_empty()
            && self.first_finding.as_ref().is_none_or(|k| key < *k)
        {
            self.first_finding = Some(key.clone());
        }
        for (n, f) in findings.into_iter().enumerate() {
            let place = (key.clone(), n);
            let known = self.first.get(&f.anomaly);
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
                save_error: None,
                reproduces: None,
                passes_on_correct_build: None,
                flags_correct_build: None,
                run: Some(run.clone()),
            };
            self.first.insert(f.anomaly, (place, violation));
        }
        if options.mode == Mode::Systematic {
            self.keys.push(key);
        }
        Ok(self.report.explored)
    }

    /// Its account, once it is over: the anomalies and violations in the DFS order, each
    /// violation's `found_after` its schedule's rank in that order among those explored. Under
    /// `--stop-at-first`, only what the first schedule that showed something showed.
    pub fn finish(mut self, options: &Options) -> Explored {
        let mut found: Vec<((DfsKey, usize), Violation)> = self.first.into_values().collect();
        if let Some(first) = &self.first_finding {
            found.retain(|((key, _), _)| key == first);
        }
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
            && self.first_finding.is_none()
            && !self.dfs.has_branch(None)
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
