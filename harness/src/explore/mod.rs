//! `harbor-certify explore`: every interleaving of a workspace's operations (or PCT-random ones),
//! run on the real service, real PostgreSQL and real Redis, and checked against invariants and a
//! reference model instead of hand-written expectations.
//!
//! - [`ops`]: the operations; [`start`]: the starting states.
//! - [`engine`]: one schedule executed, settling after every decision on sync points and lock
//!   tables. `set`: a service's lanes, each running one schedule at a time of a set under way
//!   or the next set (`set/account.rs`: a set's tree and account while it is under way).
//! - [`record`]: what an executed schedule records. [`anomaly`]: the anomalies a schedule can show.
//! - [`save`]: a violation written out as an ordinary scenario file, minimised.
//! - [`shard`]: which sets a `--shard` job explores, balanced by an earlier run's times.
//!
//! Every schedule runs on a fresh workspace of one running service (its own tenant, its own rows,
//! its own Redis state): operations touch only their workspace, so a new workspace is as good as a
//! new database for them, at the cost of a few inserts instead of a template clone.
//!
//! Past 500 lines on purpose: the options, the report's types and the loop that hands sets to
//! services are the command's contract, read together; the parts with a life of their own are
//! the submodules above.

pub mod anomaly;
pub mod engine;
pub mod ops;
pub mod record;
pub mod save;
mod set;
pub mod shard;
pub mod start;

pub use set::runs_alone;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harbor_service::flaws::Flaws;
use harbor_service::ratelimit::Quota;
use serde::Serialize;

use crate::target::{Capability, Launcher, Setup, Target};
use anomaly::Anomaly;
use engine::{Engine, ScheduleRun};
use ops::Operation;
use start::Start;

/// Version of `explore.json`.
pub const SCHEMA_VERSION: u32 = 1;

/// How schedules are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every schedule (depth first, up to the budget).
    Systematic,
    /// PCT schedules, seeds `seed`, `seed + 1`, ….
    Random {
        /// The first seed.
        seed: u64,
        /// PCT's bug depth.
        depth: usize,
    },
}

/// What to explore.
#[derive(Clone, Debug)]
pub struct Options {
    /// The sets of operations, each explored on its own.
    pub sets: Vec<Vec<Operation>>,
    /// The part of a split these sets are (`--shard K/N`), recorded in the report.
    pub shard: Option<shard::ShardOf>,
    /// Systematic or random.
    pub mode: Mode,
    /// Most schedules per set (systematic: then the set is reported incomplete).
    pub budget: usize,
    /// Stop after this long in all.
    pub seconds: Option<f64>,
    /// Replicas (two: operations on the replica the starting state was not made on).
    pub replicas: usize,
    /// Seeded flaws of the service.
    pub flaws: Flaws,
    /// Stop a set at its first violation.
    pub stop_at_first: bool,
    /// Where violations are saved as scenario files.
    pub save_dir: Option<PathBuf>,
    /// Explore at lock probes instead of sync points: no sync point is armed, and every set gets
    /// the lock probe (a target that offers no sync points is explored so whatever this says).
    pub lock_probes: bool,
    /// Schedules explored at once on one service, of one set or several (1: one after another).
    /// Sets with a fault or a stale start run one schedule at a time, alone on theirs, in any case.
    pub lanes: usize,
    /// Services started, each with its own database, Redis prefix, replicas, proxies and
    /// provider: the sets are shared among them as each becomes free, so a set that must run
    /// alone on its service still runs beside the other services' sets.
    pub services: usize,
}

/// A violation found.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// The anomaly.
    pub anomaly: Anomaly,
    /// What was seen.
    pub detail: String,
    /// The operations.
    pub operations: Vec<Operation>,
    /// Where they started.
    pub start: Start,
    /// The choices (operation index per decision) that produced it.
    pub schedule: Vec<usize>,
    /// The PCT seed, for random schedules: where the schedule came from, not a way to replay it
    /// alone (PCT's length bound grew with the set's earlier schedules); `schedule` replays it.
    pub seed: Option<u64>,
    /// Its schedule's rank among those of its set explored, in the DFS order (random mode: the
    /// schedules of its set run until it was found).
    pub found_after: usize,
    /// The scenario file it was saved as (minimised), if saved.
    pub saved_file: Option<String>,
    /// Why it could not be saved (minimising or writing failed): the violation stands in the
    /// report all the same, with its schedule and seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_error: Option<String>,
    /// Whether running the saved file on the explored build fails (it reproduces the violation).
    pub reproduces: Option<bool>,
    /// Whether the saved file passes on the correct build (it could join the catalogue); often
    /// not, because the flawed schedule is infeasible when the locks work.
    pub passes_on_correct_build: Option<bool>,
    /// Whether the saved file, run on the correct build, fails at its end — its assertions, the
    /// invariant among them — or where and as it fails on the flawed build, or could not be run
    /// there at all: such a file cannot tell the flawed build from the correct one. (Failing at
    /// another step, or otherwise, is the correct build declining the flawed schedule: it
    /// blocked, answered or returned where the flawed build did not.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags_correct_build: Option<bool>,
    /// The run of the (minimised) schedule, for the report's diagram.
    #[serde(skip)]
    pub run: Option<ScheduleRun>,
}

/// One set's account.
#[derive(Clone, Debug, Serialize)]
pub struct SetReport {
    /// The operations.
    pub operations: Vec<Operation>,
    /// Where they started.
    pub start: Start,
    /// Schedules run.
    pub explored: usize,
    /// Schedules skipped as mirror images of explored ones.
    pub pruned: usize,
    /// Its lanes' time, milliseconds: the sum over its schedules of the time each took of its
    /// lane, from taking it (with the workspace made then, if the lane had none ready) to its
    /// checks' end (what a shard plan or a nightly budget adds up; one lane: about its wall
    /// time).
    #[serde(default)]
    pub duration_ms: f64,
    /// Whether every schedule was run (systematic mode within the budget).
    pub complete: bool,
    /// Why a systematic set that ran out its schedules is not complete: the first decision at
    /// which a replayed prefix found its recorded choice not ready (the system did not behave
    /// the same way twice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<String>,
    /// Decisions at which a replayed prefix found two identical operations the other way round
    /// from the recorded run (two writers raced for a row their holder released, and the other
    /// one won): followed as the recorded state's mirror image (`schedule::dfs`), not counted as
    /// a divergence.
    #[serde(skip_serializing_if = "is_zero")]
    pub mirrored_races: usize,
    /// Distinct outcomes (each operation's answer and the end status).
    pub outcomes: BTreeMap<String, usize>,
    /// Anomalies found.
    pub anomalies: Vec<Anomaly>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A set the target cannot serve, and why: it is not explored, and the report says so.
#[derive(Clone, Debug, Serialize)]
pub struct SkippedSet {
    /// The operations.
    pub operations: Vec<Operation>,
    /// What the target lacks for them.
    pub why: String,
}

/// What every exploration needs of a target: the lock tables and the workspace lock's name (to
/// hold it with the lock probe and to judge waits), and the harness's provider (consents,
/// counters). Sync points are not needed: without them requests stop only where they wait for a
/// lock, and the lock probe makes every lock the target takes a place to stop.
pub const NEEDED: [Capability; 3] = [
    Capability::Database,
    Capability::WorkspaceLock,
    Capability::ProviderControl,
];

/// Whether `target` is explored at lock probes: asked for, or the target parks nothing.
pub fn at_lock_probes(target: &dyn Target, asked: bool) -> bool {
    asked || !target.capabilities().contains(&Capability::SyncPoints)
}

/// `ops` with the lock probe first (unchanged if it has one).
pub fn with_lock_probe(ops: &[Operation]) -> Vec<Operation> {
    if ops.contains(&Operation::LockProbe) {
        return ops.to_vec();
    }
    std::iter::once(Operation::LockProbe)
        .chain(ops.iter().copied())
        .collect()
}

/// The oracles `target` gives no way to run, each with why: said in the report, so that a
/// silent exploration is read for what it checked.
pub fn oracles_off(target: &dyn Target, lock_probes: bool) -> Vec<String> {
    let mut off = Vec::new();
    if lock_probes {
        off.push("mutual_exclusion_broken between two requests: requests park only behind the lock probe, never inside the lock (lock_bypassed judges the lock instead)".to_owned());
    }
    let reference = target.capabilities().contains(&Capability::ReferenceSchema);
    if !reference || target.tokens().is_none() {
        off.push("token_not_bound, stored_grant_dead: the target's stored tokens are not in the reference's schema and format".to_owned());
    }
    if !reference {
        off.push(
            "documents_orphaned: the target's documents are not in the reference's schema"
                .to_owned(),
        );
        off.push("the outbox drain after a fault: the target keeps no revocation outbox Harbor can read (a grant is judged by the provider's counters alone)".to_owned());
    }
    if lock_probes {
        off.push(format!(
            "activation_of_non_connected_workspace: no sync point is armed, and `{}` is where it is judged",
            harbor_service::syncpoints::ACTIVATION_BEFORE_COMMIT
        ));
    } else if !target.has_point(harbor_service::syncpoints::ACTIVATION_BEFORE_COMMIT) {
        off.push(format!(
            "activation_of_non_connected_workspace: the target lists no `{}` point",
            harbor_service::syncpoints::ACTIVATION_BEFORE_COMMIT
        ));
    }
    off
}

/// Why a target offering `offered` (every one of [`NEEDED`], checked once before any set)
/// cannot serve the set `ops` from its start (`None`: it can).
pub fn cannot_serve(offered: &BTreeSet<Capability>, ops: &[Operation]) -> Option<String> {
    let lacking: BTreeSet<Capability> = needs(ops)
        .into_iter()
        .filter(|c| !offered.contains(c))
        .collect();
    (!lacking.is_empty()).then(|| {
        let what: Vec<&str> = lacking.iter().map(|c| c.describe()).collect();
        format!("the target lacks {}", what.join(", "))
    })
}

/// `explore.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ExploreReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Systematic or random.
    pub mode: Mode,
    /// Seeded flaws of the service explored (empty: the correct build).
    pub flaws: Vec<String>,
    /// The operation sets.
    pub operations: Vec<Vec<Operation>>,
    /// Schedules explored plus pruned.
    pub schedules_total: usize,
    /// Schedules run.
    pub schedules_explored: usize,
    /// Schedules skipped as equivalent (mirror images under symmetric operations).
    pub schedules_pruned: usize,
    /// Every violation.
    pub violations: Vec<Violation>,
    /// The first PCT seed (random mode).
    pub seed: Option<u64>,
    /// Wall time, milliseconds.
    pub duration_ms: f64,
    /// Schedules per second.
    pub schedules_per_s: f64,
    /// Where a schedule's time goes, in milliseconds on average: making the starting state
    /// (`setup`, mostly while the previous schedule runs; `start` is its part on the schedule's
    /// path), the decisions (split into `advance`, `settle` — of which `lock_reads` — and
    /// `cleanup`), the end checks.
    pub mean_ms: BTreeMap<String, f64>,
    /// How many times a schedule read the lock tables, on average.
    #[serde(default)]
    pub lock_reads_per_schedule: f64,
    /// Per set.
    pub sets: Vec<SetReport>,
    /// The sets the target could not serve, with why (none on the reference).
    pub skipped: Vec<SkippedSet>,
    /// The oracles the target gave no way to run, with why (none on the reference).
    pub oracles_off: Vec<String>,
    /// Whether requests parked only behind the lock probe (no sync points used).
    pub lock_probes: bool,
    /// Schedules explored at once on one service (those of sets with a fault or a stale start ran
    /// alone).
    pub lanes: usize,
    /// Services the sets were shared among (each its own database, Redis, replicas and provider).
    pub services: usize,
    /// Of them, those that ran the fault proxies (the others served only the sets that inject
    /// no fault on a dependency).
    pub services_with_fault_proxies: usize,
    /// The part of a split this run explored (`--shard K/N`); absent for a whole run, and in
    /// reports written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<shard::ShardOf>,
    /// The target explored, as a certification run names its own
    /// ([`crate::commands::target_identity`]): an exploration backs only a run of the same target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Every multiset of `size` operations drawn from `ops` (repeats included, order ignored), but
/// those in which a replica that is stopping would also be stopped or crashed (the second fault
/// would find nothing running).
pub fn multisets(ops: &[Operation], size: usize) -> Vec<Vec<Operation>> {
    fn grow(
        ops: &[Operation],
        from: usize,
        set: &mut Vec<Operation>,
        size: usize,
        out: &mut Vec<Vec<Operation>>,
    ) {
        if set.len() == size {
            let stopping = set.contains(&Operation::ReplicaStop);
            if !(stopping && set.iter().filter(|o| o.crashes()).count() > 1) {
                out.push(set.clone());
            }
            return;
        }
        for i in from..ops.len() {
            set.push(ops[i]);
            grow(ops, i, set, size, out);
            set.pop();
        }
    }
    let mut out = Vec::new();
    grow(ops, 0, &mut Vec::with_capacity(size), size, &mut out);
    out
}

/// Every pair (and self-pair) of `ops`: [`multisets`] of two.
pub fn pairs(ops: &[Operation]) -> Vec<Vec<Operation>> {
    multisets(ops, 2)
}

/// The service options exploration runs with: sync points on (the reference honours actor tags
/// only with them; explored at lock probes, none is armed), rate limits out of the way.
pub fn setup(replicas: usize) -> Setup {
    let generous = Some(Quota {
        per_minute: 600_000,
        burst: 100_000,
    });
    Setup {
        replicas,
        sync_points: true,
        rate_limit_tenant: generous,
        rate_limit_address: generous,
        rate_limit_failed_states: generous,
        ..Setup::default()
    }
}

/// What a schedule's outcome looks like, to count the distinct ones.
fn outcome_key(ops: &[Operation], run: &ScheduleRun) -> String {
    let answers: Vec<String> = run
        .answers(ops)
        .map(|(_, op, answer)| format!("{op}:{answer}"))
        .collect();
    format!(
        "{} → {}, {} activation(s)",
        answers.join(" "),
        run.end.status_name(),
        run.end.activations
    )
}

/// Explores every set on `options.services` services started by `launcher`; `progress` hears
/// about every schedule (set index, schedules of that set so far; with lanes or several
/// services, the sets' schedules interleave).
pub async fn explore(
    launcher: &dyn Launcher,
    options: &Options,
    mut progress: impl FnMut(usize, usize),
) -> Result<ExploreReport, String> {
    let started = Instant::now();
    // No more services than sets: one with nothing to explore would only be started and stopped.
    let services = options.services.clamp(1, options.sets.len().max(1));
    let setup = setup(options.replicas);
    // Only the first services run the fault proxies (the first also minimises what is found,
    // and may need them to replay a fault); the others save the proxies' hop on every round trip.
    let proxied = services_with_fault_proxies(&options.sets, services);
    let bare = Setup {
        without_dependency_faults: true,
        ..setup.clone()
    };
    let launches = futures::future::join_all(
        (0..services).map(|i| launcher.launch(if i < proxied { &setup } else { &bare })),
    )
    .await;
    let mut launched = Vec::new();
    let mut failed = None;
    for l in launches {
        match l {
            Ok(l) => launched.push(l),
            Err(e) => failed = failed.or(Some(format!("the service did not start: {e}"))),
        }
    }
    let result = match failed {
        Some(e) => Err(e),
        None => {
            let targets: Vec<&dyn Target> = launched.iter().map(|l| l.target()).collect();
            explore_on(&targets, options, &mut progress, started).await
        }
    };
    let mut stopped = Ok(());
    for l in launched {
        let s = l.stop().await;
        stopped = stopped.and(s);
    }
    let mut report = result?;
    stopped.map_err(|e| format!("clean-up: {e}"))?;
    report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(report)
}

/// How many of `services` run the fault proxies for `sets`: none if no set injects a fault on
/// a dependency, all if every set does, else half of them (rounded up). Those sets run alone,
/// first, on the services that can serve them, and the others take what is left: every triple
/// (`--depth 3`) has 332 such sets of 533 (282 of 430 before `sync_fresh`, holding 38 % of the
/// schedules and a third of the sets' time), so half the services end them before the other half
/// run out of work.
pub fn services_with_fault_proxies(sets: &[Vec<Operation>], services: usize) -> usize {
    let proxied = sets.iter().filter(|ops| needs_fault_proxies(ops)).count();
    match proxied {
        0 => 0,
        p if p == sets.len() => services,
        _ => services.div_ceil(2),
    }
}

/// Whether `ops` inject a fault on a dependency (PostgreSQL, Redis, the provider): what only a
/// target offering [`Capability::Faults`] — the harness's proxies — can serve.
fn needs_fault_proxies(ops: &[Operation]) -> bool {
    needs(ops).contains(&Capability::Faults)
}

/// What a target must offer to explore the set `ops`: its operations' needs and its start's.
fn needs(ops: &[Operation]) -> BTreeSet<Capability> {
    ops.iter()
        .flat_map(|o| o.needs())
        .chain(Start::for_operations(ops).needs())
        .collect()
}

/// Explores the sets on `targets` (started alike but for the fault proxies, which only the first
/// ones run: the first also minimises what is found).
async fn explore_on(
    targets: &[&dyn Target],
    options: &Options,
    progress: &mut dyn FnMut(usize, usize),
    started: Instant,
) -> Result<ExploreReport, String> {
    let exploring = Instant::now();
    let target = *targets.first().ok_or("no service to explore")?;
    let lock_probes = at_lock_probes(target, options.lock_probes);
    let engine = Engine::new(target).with_sync_points(!lock_probes);
    let sets: Vec<Vec<Operation>> = if lock_probes {
        options.sets.iter().map(|s| with_lock_probe(s)).collect()
    } else {
        options.sets.clone()
    };
    let mut report = ExploreReport {
        schema_version: SCHEMA_VERSION,
        mode: options.mode,
        flaws: options
            .flaws
            .names()
            .iter()
            .map(|s| s.to_string())
            .collect(),
        operations: sets.clone(),
        schedules_total: 0,
        schedules_explored: 0,
        schedules_pruned: 0,
        violations: Vec::new(),
        seed: match options.mode {
            Mode::Random { seed, .. } => Some(seed),
            Mode::Systematic => None,
        },
        duration_ms: 0.0,
        schedules_per_s: 0.0,
        mean_ms: BTreeMap::new(),
        lock_reads_per_schedule: 0.0,
        sets: Vec::new(),
        skipped: Vec::new(),
        oracles_off: oracles_off(target, lock_probes),
        lock_probes,
        lanes: options.lanes.max(1),
        services: targets.len(),
        services_with_fault_proxies: 0,
        shard: options.shard,
        target: None,
    };
    let offered = target.capabilities();
    let each_offers: Vec<BTreeSet<Capability>> = targets.iter().map(|t| t.capabilities()).collect();
    report.services_with_fault_proxies = each_offers
        .iter()
        .filter(|o| o.contains(&Capability::Faults))
        .count();
    for offers in &each_offers {
        if let Some(missing) = NEEDED.iter().find(|c| !offers.contains(c)) {
            return Err(format!(
                "exploration needs {}, which the target does not offer",
                missing.describe()
            ));
        }
    }
    let any_workspace = harbor_service::domain::WorkspaceId::parse(&uuid::Uuid::nil().to_string())
        .map_err(|e| e.to_string())?;
    let locks_row = target.state_query("lock_qbo_row", any_workspace).is_some();
    let mut served: Vec<(usize, &[Operation])> = Vec::new();
    for (set_index, ops) in sets.iter().enumerate() {
        let why = cannot_serve(&offered, ops).or_else(|| {
            (ops.contains(&Operation::RowProbe) && !locks_row).then(|| {
                "the target answers no `lock_qbo_row` state query (the row probe's lock)".to_owned()
            })
        });
        match why {
            Some(why) => report.skipped.push(SkippedSet {
                operations: ops.clone(),
                why,
            }),
            None => served.push((set_index, ops)),
        }
    }
    // On each service, the sets that may share it run first, `lanes` schedules at once, each lane
    // on an engine of its own; then, one schedule at a time, those that act on the whole service.
    // Each service takes the next set of either queue when it is free for one.
    let lanes = options.lanes.max(1);
    let (beside, alone): (Vec<_>, Vec<_>) = served
        .into_iter()
        .map(|(index, ops)| set::Queued {
            index,
            ops,
            scarce: each_offers.iter().any(|o| cannot_serve(o, ops).is_some()),
        })
        .partition(|q| lanes > 1 && !set::runs_alone(q.ops));
    let served_count = beside.len() + alone.len();
    let queues = set::Queues::new(beside, alone);
    let progress = std::cell::RefCell::new(progress);
    let heard = |set_index: usize, explored: usize| (progress.borrow_mut())(set_index, explored);
    // Every service ends on its own: one whose set failed abandons the run, and the others stop
    // at their next schedule rather than being dropped in the middle of one (a fault applied).
    let per_service = futures::future::join_all(targets.iter().map(|t| {
        set::explore_on_service(*t, &queues, lanes, lock_probes, options, started, &heard)
    }))
    .await;
    let mut explored: Vec<(usize, set::Explored)> = Vec::new();
    for service in per_service {
        explored.extend(service?);
    }
    explored.sort_by_key(|(i, _)| *i);
    // Each set explored once, by one service: a report that counted a set twice or lost one
    // would claim schedules it did not run.
    let indices: BTreeSet<usize> = explored.iter().map(|(i, _)| *i).collect();
    if indices.len() != explored.len() || explored.len() != served_count {
        return Err(format!(
            "the services explored {} set(s), {} distinct, of {served_count}",
            explored.len(),
            indices.len()
        ));
    }
    let mut tally = set::Tally::default();
    for (_, e) in explored {
        report.schedules_explored += e.set.explored;
        report.schedules_pruned += e.set.pruned;
        report.sets.push(e.set);
        report.violations.extend(e.violations);
        tally.merge(&e.tally);
    }
    report.schedules_total = report.schedules_explored + report.schedules_pruned;
    // Wall time of the exploration (the next schedule's workspace is made while one runs, so the
    // schedules' own times overlap).
    report.schedules_per_s =
        report.schedules_explored as f64 / exploring.elapsed().as_secs_f64().max(1e-9);
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / report.schedules_explored.max(1) as f64;
    let spent = &tally.spent;
    report.mean_ms.insert("setup".into(), per(tally.setup));
    report.mean_ms.insert(
        "decisions".into(),
        per(tally.schedule.saturating_sub(tally.setup + tally.checks)),
    );
    report.mean_ms.insert("checks".into(), per(tally.checks));
    // The decisions' time, split: what a faster exploration has to cut.
    report.mean_ms.insert("start".into(), per(spent.start));
    report.mean_ms.insert("advance".into(), per(spent.advance));
    report.mean_ms.insert("settle".into(), per(spent.settle));
    report
        .mean_ms
        .insert("lock_reads".into(), per(spent.lock_reads));
    report.mean_ms.insert("cleanup".into(), per(spent.cleanup));
    report.lock_reads_per_schedule =
        f64::from(spent.lock_read_count) / report.schedules_explored.max(1) as f64;
    if let Some(dir) = &options.save_dir {
        // One violation that cannot be saved loses nothing else: each keeps its schedule and
        // seed in the report, and says why its file is missing.
        for v in &mut report.violations {
            match save::save(&engine, dir, v).await {
                Ok((file, minimal)) => {
                    v.saved_file = Some(file.display().to_string());
                    v.run = Some(minimal);
                }
                Err(e) => v.save_error = Some(e),
            }
        }
    }
    Ok(report)
}

/// Runs every saved file on the explored build (`explored`: it must fail, the violation
/// reproduces) and, when the explored build was a flawed one, on the correct build (`correct`) —
/// and records both answers in the violations.
pub async fn check_saved(
    explored: &dyn Launcher,
    correct: Option<&dyn Launcher>,
    report: &mut ExploreReport,
) {
    use crate::scenario::run::ScenarioRunner;
    for v in &mut report.violations {
        if v.save_error.is_some() {
            v.reproduces = Some(false);
            continue;
        }
        let Some(file) = &v.saved_file else { continue };
        let Ok(loaded) = crate::scenario::load::load_file(std::path::Path::new(file)) else {
            v.reproduces = Some(false);
            continue;
        };
        let flawed = ScenarioRunner::new(explored, None).run(&loaded).await;
        // A failure of the scenario itself, not of its set-up (the environment, the fixtures), and
        // not a skip: a saved file the target cannot run (skipped) reproduces nothing.
        v.reproduces = Some(
            flawed
                .failures
                .iter()
                .any(|f| !f.environment && !f.skipped && !f.message.starts_with("fixtures:")),
        );
        if let Some(correct) = correct {
            let correct = ScenarioRunner::new(correct, None).run(&loaded).await;
            v.passes_on_correct_build = Some(correct.failures.is_empty());
            // The first failure as a replay compares it: where, and its first line.
            let first = |failures: &[crate::scenario::outcome::Failure]| {
                failures
                    .first()
                    .map(|f| (f.step, crate::scenario::trace::failure_line(&f.message)))
            };
            let on_flawed = first(&flawed.failures);
            let same_failure = on_flawed.is_some() && on_flawed == first(&correct.failures);
            v.flags_correct_build = Some(
                same_failure
                    || correct
                        .failures
                        .iter()
                        .any(|f| f.step.is_none() || f.environment || f.skipped),
            );
        }
    }
}
