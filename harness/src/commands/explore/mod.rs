//! `harbor-certify explore`: schedules nobody wrote down — every interleaving of a workspace's
//! operations (or PCT-random ones) on the real service — checked against invariants and the model.
//! Exit 0 no violation, 1 a violation (or, with `--kill-matrix`, a flaw exploration missed),
//! 2 could not run.

mod kill_matrix;
mod summary;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use super::{parse_flaws, progress_bar, provision_or_explain, CANNOT_RUN, NOT_CERTIFIED};
use crate::explore::anomaly::Anomaly;
use crate::explore::ops::Operation;
use crate::explore::{self, ExploreReport, Mode, Options};
use crate::provision::BackendChoice;
use harbor_service::flaws::{Flaw, Flaws};
use kill_matrix::kill_matrix;
use summary::{print_summary, yes_no};

/// The seeded flaws that concern ordering, what a fault interrupts (`db_cut`, `replica_crash`,
/// `lost_commit_reply`), a grant left live that no row holds (`grant_orphaned`), or a stored grant
/// given back or a rotated one not adopted (`stored_grant_dead`), a graceful stop that cuts
/// what it had (`not_serializable` on `replica_stop`), or documents stored after their grant
/// ended (`documents_orphaned`): exploration alone must catch each.
pub const ORDERING_FLAWS: &[Flaw] = &[
    Flaw::SplitLockNamespace,
    Flaw::NoRowLock,
    Flaw::EarlyLockRelease,
    Flaw::NoUniqueActivation,
    Flaw::NonAtomicStateConsume,
    Flaw::NoRefreshSingleFlight,
    Flaw::MemoryStateStore,
    Flaw::KeepUnstoredGrant,
    Flaw::DisconnectWithoutRevocation,
    Flaw::RevokeOnAnyCommitError,
    Flaw::RevokeUnstoredRotation,
    Flaw::ShutdownWithoutWaiting,
    Flaw::DocumentsStoredUnchecked,
];

/// The seeded flaws a lock probe alone must catch (`explore --lock-probes --kill-matrix`): a lock
/// the target skips is one a probe holds in vain.
pub const PROBE_FLAWS: &[Flaw] = &[Flaw::SplitLockNamespace, Flaw::NoRowLock];

/// What to explore.
#[derive(clap::Args, Clone, Debug)]
pub struct ExploreArgs {
    /// Which target: the in-process reference, or a profile's (its sync points over HTTP).
    #[command(flatten)]
    pub target: super::TargetArgs,
    /// The operations of one set (default: every pair of every operation).
    #[arg(long, value_delimiter = ',')]
    pub ops: Vec<Operation>,
    /// Explore every pair (and self-pair) of `--ops` (of every operation without `--ops`): the
    /// same as `--depth 2`.
    #[arg(long)]
    pub pairs: bool,
    /// Explore every set of this many operations (every multiset: repeats included) drawn from
    /// `--ops` (from every operation without `--ops`): 2 is every pair, 3 every triple.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub depth: Option<u8>,
    /// PCT-random schedules instead of all of them.
    #[arg(long)]
    pub random: bool,
    /// The first PCT seed (printed by every random run; replays exactly).
    #[arg(long)]
    pub seed: Option<u64>,
    /// PCT's bug depth (with `--random`).
    #[arg(long, default_value_t = 3)]
    pub pct_depth: usize,
    /// Most schedules per set. The default covers every set of `--depth 3` over the default
    /// operations (the largest, activate + callback + disconnect, has 947 schedules).
    #[arg(long, default_value_t = 1_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub budget: usize,
    /// Stop after this many seconds in all.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Exit 0 only when exactly these anomalies are found, each at least once (comma-separated
    /// names, such as `mutual_exclusion_broken`): a target's known findings held as a gate, as
    /// `run --expect-verdicts` holds scenario verdicts. Every schedule is then explored (as with
    /// `--keep-going`). Without it, any violation fails.
    #[arg(long, value_delimiter = ',', value_parser = parse_anomaly)]
    pub expect_anomalies: Vec<Anomaly>,
    /// Only the sets `K` of every `N` (`--shard 1/4` … `4/4`), for a CI matrix; `harbor-certify
    /// merge` joins the shards' explore.json files. Balanced by `--weights`, or else by the
    /// weights bundled with the harness (every triple of the default operations) when they know
    /// every set; dealt round robin otherwise.
    #[arg(long)]
    pub shard: Option<String>,
    /// An earlier run's `explore.json` (`merge`'s, for a sharded run): the sets are explored
    /// longest first by the times it measured, and `--shard`s are balanced by them, so a CI
    /// matrix's jobs end together. A set it does not list weighs the median of those it does.
    #[arg(long, value_name = "EXPLORE_JSON")]
    pub weights: Option<PathBuf>,
    /// Explore the service with this seeded flaw on (repeatable; needs `--features flaws`).
    #[arg(long = "flaw")]
    pub flaws: Vec<String>,
    /// The correct build must show no violation and every ordering flaw must show one (with
    /// `--lock-probes`, every flaw a lock probe must catch).
    #[arg(long)]
    pub kill_matrix: bool,
    /// Keep exploring a set after its first violation.
    #[arg(long)]
    pub keep_going: bool,
    /// Exit 0 even when a systematic set was cut short by `--budget` or `--seconds` (without it,
    /// an incomplete exploration is not a clean one: exit 1). Not with `--kill-matrix`, whose
    /// correct build must be explored whole to be called silent.
    #[arg(long, conflicts_with = "kill_matrix")]
    pub allow_incomplete: bool,
    /// Exit 0 even when the target could not serve some of the sets (each is named in the
    /// summary with why); without it, an exploration that skipped a set did not explore what it
    /// was asked to: exit 1. Not with `--kill-matrix`.
    #[arg(long, conflicts_with = "kill_matrix")]
    pub allow_skipped: bool,
    /// Explore at lock probes instead of sync points: no sync point is armed, and every set gets
    /// the lock probe (`lock_probe`: the workspace lock held from the
    /// harness's own session), so requests queue behind it in the order the schedule launches
    /// them. Implied on a target that offers no sync points.
    #[arg(long)]
    pub lock_probes: bool,
    /// Replicas (operations go to the one the starting state was not made on).
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Schedules explored at once on one service, each on its own workspace, tags and grant (1:
    /// one after another): a free lane takes the next schedule of a set under way (several
    /// lanes run one set's schedules side by side) or begins the next set. A set with a fault or
    /// a stale start acts on the whole service, and runs one schedule at a time with nothing
    /// beside it on its service. At most 4: a parked request keeps its pooled connection, and
    /// four schedules of up to four operations stay within a replica's pool of 20 (a request
    /// waiting for a connection would look like a hang).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4))]
    pub lanes: u16,
    /// Services started for the exploration, each with its own database, Redis prefix, replicas
    /// and provider; each takes the next set it can serve when it is free, so a set that must run
    /// alone on its service (a fault, a stale start) runs beside the other services' sets. Half
    /// of them (rounded up) run the fault proxies and take the sets that fault a dependency
    /// first; the others save the proxies' hop on every round trip. What
    /// one process does with `--shard`s run side by side, without the merge. Not for a deployed
    /// target, which is one service whatever is asked. Each service may open about 50
    /// PostgreSQL connections (two replicas' pools and the harness's): the local and docker
    /// backends allow 500; a server on PostgreSQL's default of 100 fits two.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub services: u16,
    /// Where the run folder is written (`<DIR>/<timestamp>/explore.json`, `<DIR>/latest`).
    #[arg(long, default_value = "reports/explore")]
    pub out: PathBuf,
    /// Which backend to provision with.
    #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
    pub backend: BackendChoice,
}

/// The sets to explore, and which part of a split they are when `--shard` chose them.
fn sets_of(
    args: &ExploreArgs,
) -> Result<(Vec<Vec<Operation>>, Option<explore::shard::ShardOf>), String> {
    let ops: Vec<Operation> = if args.ops.is_empty() {
        Operation::by_default()
    } else {
        args.ops.clone()
    };
    let mut sets = match (args.depth, args.pairs) {
        (Some(_), true) => return Err("--pairs is --depth 2: give one of them".into()),
        (Some(depth), false) => explore::multisets(&ops, usize::from(depth)),
        (None, true) => explore::pairs(&ops),
        (None, false) if args.ops.is_empty() => explore::pairs(&ops),
        (None, false) => vec![ops],
    };
    // A set of probes alone has no request to hold to the locks.
    sets.retain(|s| s.iter().any(|o| !o.is_probe()));
    let shard = match &args.shard {
        Some(shard) => Some(
            shard
                .split_once('/')
                .and_then(|(k, n)| Some((k.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
                .filter(|(k, n)| *k >= 1 && k <= n)
                .ok_or_else(|| format!("--shard {shard}: expected K/N with 1 ≤ K ≤ N"))?,
        ),
        None => None,
    };
    let weights = match (&args.weights, shard) {
        (Some(path), _) => Some(explore::shard::Weights::read(path)?),
        // A CI matrix's jobs start from a fresh clone, with no earlier report to weigh by.
        (None, Some((_, n))) => {
            let bundled = explore::shard::Weights::bundled()?;
            if bundled.covers(&sets) {
                eprintln!("harbor-certify: --shard: the {} sets split {n} ways by the bundled weights (a full run's times; --weights FILE for others)", sets.len());
                Some(bundled)
            } else {
                eprintln!("harbor-certify: --shard: the bundled weights do not know every set of this selection; dealt round robin (--weights FILE balances it)");
                None
            }
        }
        (None, None) => None,
    };
    if let (Some(w), Some(_)) = (&weights, &args.weights) {
        if w.is_empty() {
            return Err("--weights: the report lists no set".into());
        }
        let known = sets.iter().filter(|s| w.knows(s)).count();
        if known < sets.len() {
            eprintln!(
                "harbor-certify: --weights: {known} of the {} sets were measured there; the others weigh the median",
                sets.len()
            );
        }
    }
    let shard_of = shard.map(|(index, of)| explore::shard::ShardOf {
        index,
        of,
        sets_in_split: sets.len(),
    });
    let sets = explore::shard::select(sets, shard, weights.as_ref());
    if sets.iter().any(|s| {
        s.contains(&Operation::ReplicaStop) && s.iter().filter(|o| o.crashes()).count() > 1
    }) {
        return Err(
            "replica_stop cannot share a set with another fault that takes the replica down (it would find nothing running)"
                .into(),
        );
    }
    if sets.iter().any(|s| s.len() > 4) {
        return Err("at most four operations per set (a set's schedules grow factorially)".into());
    }
    Ok((sets, shard_of))
}

fn parse_anomaly(raw: &str) -> Result<Anomaly, String> {
    serde_json::from_value(serde_json::Value::String(raw.to_owned()))
        .map_err(|_| format!("{raw}: not an anomaly's name (see explore.json's `anomaly` values)"))
}

/// Runs the exploration (or its kill matrix) and writes the report.
pub async fn explore(args: ExploreArgs) -> ExitCode {
    let (sets, shard) = match sets_of(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("harbor-certify: {e}");
            return ExitCode::from(CANNOT_RUN);
        }
    };
    let flaws = match parse_flaws(&args.flaws) {
        Ok(f) => f,
        Err(code) => return code,
    };
    // A target with its own schema is explored on what it offers: the sets it cannot serve are
    // skipped with the reason, the stored-token oracles left out (explore::cannot_serve).
    let profile = match args.target.load(&flaws, super::Oracles::Any) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if args.services > 1 && profile.as_ref().is_some_and(|p| p.deployed.is_some()) {
        eprintln!("harbor-certify: --services {}: a deployed target is one service, which a set with a fault or a stale start must have to itself; explore it with one", args.services);
        return ExitCode::from(CANNOT_RUN);
    }
    let seed = args
        .seed
        .unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let mode = if args.random {
        Mode::Random {
            seed,
            depth: args.pct_depth.max(1),
        }
    } else {
        Mode::Systematic
    };
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let dir = args.out.join(&stamp);
    let options = Options {
        sets,
        shard,
        mode,
        budget: args.budget,
        seconds: args.seconds,
        replicas: args.replicas.clamp(1, 2),
        flaws,
        // A gate on exactly which anomalies are found must see every schedule, not stop at the
        // first that finds one.
        stop_at_first: !args.keep_going && args.expect_anomalies.is_empty(),
        save_dir: Some(dir.join("found")),
        lock_probes: args.lock_probes,
        lanes: usize::from(args.lanes),
        services: usize::from(args.services),
    };
    let mut infra = match provision_or_explain(args.backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    if let Mode::Random { seed, depth } = mode {
        eprintln!("harbor-certify: explore: PCT schedules from seed {seed} (depth {depth}); --seed {seed} replays them");
    }
    if options.sets.is_empty() {
        eprintln!(
            "harbor-certify: the selection (--ops/--pairs/--shard) has no operation set to explore"
        );
        infra.shutdown().await;
        return ExitCode::from(CANNOT_RUN);
    }
    let chosen = super::ChosenTarget::new(&infra, args.target.clone(), profile);
    let code = if args.kill_matrix {
        kill_matrix(&chosen, options, &dir).await
    } else {
        let expected = (!args.expect_anomalies.is_empty()).then_some(&args.expect_anomalies[..]);
        let allowed = Allowed {
            incomplete: args.allow_incomplete,
            skipped: args.allow_skipped,
        };
        once(&chosen, &options, &dir, allowed, expected).await
    };
    drop(chosen);
    infra.shutdown().await;
    let latest = args.out.join("latest");
    let _ = std::fs::remove_file(&latest);
    #[cfg(unix)]
    let _ = std::os::unix::fs::symlink(&stamp, &latest);
    code
}

async fn run_reported(
    target: &super::ChosenTarget<'_>,
    options: &Options,
    label: &str,
) -> Result<ExploreReport, String> {
    let bar = progress_bar(options.sets.len() as u64);
    let started = Instant::now();
    let mut begun = std::collections::BTreeSet::new();
    let mut total = 0usize;
    let report = explore::explore(
        target.launcher(options.flaws.clone()).as_ref(),
        options,
        |set, _| {
            total += 1;
            // The bar counts the sets begun (with lanes, several are under way at once).
            if begun.insert(set) {
                bar.set_position((begun.len() - 1) as u64);
            }
            bar.set_message(format!(
                "{label}: {total} schedules, {:.1}/s",
                total as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
        },
    )
    .await;
    bar.finish_and_clear();
    report.map(|mut r| {
        r.target = Some(target.identity());
        r
    })
}

fn write(dir: &std::path::Path, name: &str, value: &impl serde::Serialize) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(name), json).map_err(|e| format!("{}: {e}", dir.join(name).display()))
}

/// What an exploration may leave undone and still exit 0.
#[derive(Clone, Copy, Debug)]
struct Allowed {
    /// Systematic sets cut short (`--allow-incomplete`).
    incomplete: bool,
    /// Sets the target could not serve (`--allow-skipped`).
    skipped: bool,
}

/// The sets of `report` that were not explored cleanly, by name: a systematic set cut short
/// (budget, time) or whose replays diverged, and a set of either mode that ran no schedule at all
/// (the clock ran out first). A set with a finding is judged by its finding.
pub(super) fn incomplete_sets(report: &ExploreReport, mode: Mode) -> Vec<String> {
    report
        .sets
        .iter()
        .filter(|s| {
            let short = (mode == Mode::Systematic && !s.complete) || s.explored == 0;
            short && s.anomalies.is_empty()
        })
        .map(|s| {
            let names = s
                .operations
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(" + ");
            match &s.divergence {
                Some(why) => format!("{names} (replays diverged: {why})"),
                None => names,
            }
        })
        .collect()
}

async fn once(
    target: &super::ChosenTarget<'_>,
    options: &Options,
    dir: &std::path::Path,
    allowed: Allowed,
    expected: Option<&[Anomaly]>,
) -> ExitCode {
    let label = if options.flaws.is_empty() {
        "explore".to_owned()
    } else {
        format!("explore ({})", options.flaws.names().join(", "))
    };
    let mut report = match run_reported(target, options, &label).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("harbor-certify: explore could not run: {e}");
            return ExitCode::from(CANNOT_RUN);
        }
    };
    let explored = target.launcher(options.flaws.clone());
    let correct = target.launcher(Default::default());
    let correct = (!options.flaws.is_empty()).then_some(correct.as_ref());
    explore::check_saved(explored.as_ref(), correct, &mut report).await;
    print_summary(&label, &report);
    if let Err(e) = write(dir, "explore.json", &report) {
        eprintln!("harbor-certify: {e}");
        return ExitCode::from(CANNOT_RUN);
    }
    println!("report: {}/explore.json", dir.display());
    // Each set's time, for a later run's `--weights` (and the bundled weights' refresh).
    let measured = format!(
        "{label}: {} set(s), {} schedules, {:.1} s",
        report.sets.len(),
        report.schedules_explored,
        report.duration_ms / 1e3
    );
    let weights = explore::shard::Weights::file_of(
        report
            .sets
            .iter()
            .map(|s| (&s.operations[..], s.duration_ms)),
        &measured,
    );
    let path = dir.join("weights.json");
    if let Err(e) = std::fs::write(&path, weights) {
        eprintln!("harbor-certify: {}: {e}", path.display());
    }
    let incomplete = incomplete_sets(&report, options.mode);
    if !incomplete.is_empty() {
        println!(
            "INCOMPLETE: not every schedule of {} ran{}",
            incomplete.join("; "),
            if allowed.incomplete {
                " (allowed by --allow-incomplete)"
            } else {
                ""
            }
        );
    }
    if report.sets.is_empty() {
        println!("NOTHING EXPLORED: the target could serve none of the sets");
        return ExitCode::from(CANNOT_RUN);
    }
    let found: std::collections::BTreeSet<Anomaly> =
        report.violations.iter().map(|v| v.anomaly).collect();
    let as_expected = match expected {
        // A known finding of a target under audit, held as a gate: exactly these anomalies, each
        // found; anything else — a new one, or one no longer found — fails.
        Some(expected) => {
            let expected: std::collections::BTreeSet<Anomaly> = expected.iter().copied().collect();
            if found != expected {
                let names = |s: &std::collections::BTreeSet<Anomaly>| {
                    s.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
                };
                println!(
                    "NOT AS EXPECTED: found {{{}}}, expected {{{}}} (--expect-anomalies)",
                    names(&found),
                    names(&expected)
                );
            }
            found == expected
        }
        None => found.is_empty(),
    };
    if !report.skipped.is_empty() {
        println!(
            "SKIPPED: the target could not serve {} set(s){}",
            report.skipped.len(),
            if allowed.skipped {
                " (allowed by --allow-skipped)"
            } else {
                " (--allow-skipped accepts it)"
            }
        );
    }
    if !as_expected
        || (!incomplete.is_empty() && !allowed.incomplete)
        || (!report.skipped.is_empty() && !allowed.skipped)
    {
        ExitCode::from(NOT_CERTIFIED)
    } else {
        ExitCode::SUCCESS
    }
}
