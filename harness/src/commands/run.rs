//! `harbor-certify run` (the default command): the catalogue, or a selection of it, against the
//! correct service (or a seeded flaw), and the certification report.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Instant;

use super::{
    environment_of, load, parse_flaws, progress_bar, provision_or_explain, specs, CatalogueArgs,
    LOGS,
};
use crate::report::{self, Report};
use crate::scenario;
use crate::scenario::format::Severity;
use crate::scenario::run::ScenarioRunner;

/// What to run.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Scenario ids or file names (default: every scenario).
    pub scenarios: Vec<String>,
    /// Only scenarios whose id or title contains this (case-insensitive).
    #[arg(long)]
    pub filter: Option<String>,
    /// Run each scenario this many times; differing traces make it FLAKY.
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub repeat: usize,
    /// Failures at or above this severity make the run NOT CERTIFIED (exit 1); lower ones are
    /// reported as warnings.
    #[arg(long, value_enum, default_value = "low")]
    pub fail_on: Severity,
    /// Scenarios run at once (each has its own database, Redis prefix, replicas and proxies; a
    /// deployed target's run one at a time, sharing its one service).
    #[arg(long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub jobs: usize,
    /// Run against the service with this seeded flaw on (repeatable; needs `--features flaws`).
    /// The report is marked as a flawed run everywhere.
    #[arg(long = "flaw")]
    pub flaws: Vec<String>,
    /// An exploration's explore.json (`harbor-certify explore`): the report then states, area by
    /// area, which schedules its verdict rests on.
    #[arg(long)]
    pub exploration: Option<std::path::PathBuf>,
    /// Print each isolation spec's output, in the isolation tester's format (it is written
    /// beside the report, under `isolation/`, either way).
    #[arg(long)]
    pub isolation_output: bool,
    /// The expected output of the specs run: a file (for one spec) or a folder of `NAME.out`
    /// files (default: the `expected/` folder beside each spec). A spec passes when its output
    /// is the expected one byte for byte; the difference is shown otherwise.
    #[arg(long)]
    pub expected: Option<std::path::PathBuf>,
    /// The PostgreSQL server (an admin URL, allowed to create databases) on which scratch and
    /// `template NAME` specs get their fresh database — a black-box target's server, whose schema
    /// database the spec names (default: the run's own server).
    #[arg(long, env = "HARBOR_SPEC_SERVER")]
    pub spec_server: Option<String>,
    /// Which target: the in-process reference, or a profile's.
    #[command(flatten)]
    pub target: super::TargetArgs,
    /// Run as if the target lacked these capabilities (`harbor-certify target check --offers`
    /// predicts the outcome): scenarios that need them are SKIPPED, with the reason.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub without: Vec<crate::target::Capability>,
    /// Audit areas this run may leave uncovered (every scenario of theirs SKIPPED) and still
    /// certify; without it such a run is NOT CERTIFIED. Said in the run's summary.
    #[arg(long, value_delimiter = ',')]
    pub allow_skipped: Vec<String>,
    /// Compare each scenario's verdict with this file's (`targets/flask-seed/expected/`): exit 0
    /// when every verdict is the expected one, 1 when one changed (each difference printed) —
    /// for a target whose findings are known.
    #[arg(long)]
    pub expect_verdicts: Option<std::path::PathBuf>,
    /// Write each scenario's verdict to this file (the form `--expect-verdicts` reads).
    #[arg(long)]
    pub write_verdicts: Option<std::path::PathBuf>,
    /// Where the catalogue comes from and where results go.
    #[command(flatten)]
    pub catalogue: CatalogueArgs,
}

/// Runs the selection and writes the report.
pub async fn run(args: RunArgs) -> ExitCode {
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    // Spec files named on the command line run alone; the whole catalogue takes its `sql/` specs.
    let (spec_names, scenario_names): (Vec<String>, Vec<String>) = args
        .scenarios
        .iter()
        .cloned()
        .partition(|n| specs::is_spec(n));
    let (spec_files, catalogue_specs) = match specs::select(
        &args.catalogue.scenarios_dir,
        &spec_names,
        !scenario_names.is_empty(),
        args.filter.as_deref(),
        args.expected.as_deref(),
    ) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let only_specs = !spec_names.is_empty() && scenario_names.is_empty();
    let all = if only_specs {
        Vec::new()
    } else {
        match load(&args.catalogue.scenarios_dir) {
            Ok(all) => all,
            Err(code) => return code,
        }
    };
    let scenario_files = if only_specs {
        scenario::load::scenario_files(&args.catalogue.scenarios_dir).map_or(0, |f| f.len())
    } else {
        all.len()
    };
    let catalogue_size = scenario_files + catalogue_specs;
    let selected = match scenario::select(all, &scenario_names, args.filter.as_deref()) {
        Ok(s) if only_specs || !s.is_empty() || !spec_files.is_empty() => s,
        Ok(_) => {
            eprintln!("harbor-certify: the selection matches no scenario");
            return ExitCode::from(super::CANNOT_RUN);
        }
        Err(e) => {
            eprintln!("harbor-certify: {e}");
            return ExitCode::from(super::CANNOT_RUN);
        }
    };
    if let Some(unknown) = args.allow_skipped.iter().find(|a| {
        !crate::catalogue::AREAS
            .iter()
            .any(|area| area.key == a.as_str())
    }) {
        let areas: Vec<&str> = crate::catalogue::AREAS.iter().map(|a| a.key).collect();
        eprintln!(
            "harbor-certify: --allow-skipped {unknown}: no such area (the areas are {})",
            areas.join(", ")
        );
        return ExitCode::from(super::CANNOT_RUN);
    }
    let flaws = match parse_flaws(&args.flaws) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let profile = match args.target.load(&flaws, super::Oracles::Any) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // What the run's end reads is read now: a mistyped path stops the run before it starts, not
    // after the whole catalogue ran.
    let exploration = match read_given(
        "--exploration:",
        args.exploration.as_deref(),
        report::ExplorationBasis::from_explore_json,
    ) {
        Ok(basis) => basis,
        Err(code) => return code,
    };
    let certified = super::target_identity(profile.as_deref());
    if let Some(other) = exploration.as_ref().filter(|b| b.target != certified) {
        eprintln!(
            "harbor-certify: --exploration {}: it explored {}, not {certified}: an exploration backs only a run of the target it explored",
            other.source, other.target
        );
        return ExitCode::from(super::CANNOT_RUN);
    }
    let signing_key = match args.catalogue.signing_key() {
        Ok(k) => k,
        Err(code) => return code,
    };
    let expected = match read_given(
        "--expect-verdicts",
        args.expect_verdicts.as_deref(),
        super::verdicts::load,
    ) {
        Ok(e) => e,
        Err(code) => return code,
    };
    report::forget_latest(&args.catalogue.out);
    let mut infra = match provision_or_explain(args.catalogue.backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    let provision_ms = started.elapsed().as_secs_f64() * 1000.0;
    if !flaws.is_empty() {
        eprintln!("harbor-certify: ⚠ SEEDED FLAWS ENABLED: {} — this run does not certify a correct build", flaws.names().join(", "));
    }
    eprintln!(
        "harbor-certify: {} backend ready in {} ms (PostgreSQL {}, Redis {}); {} scenario(s) × {}, {} isolation spec(s)",
        infra.kind,
        infra.ready_in.as_millis(),
        infra.postgres_version,
        infra.redis_version,
        selected.len(),
        args.repeat,
        spec_files.len()
    );
    let launcher = args
        .target
        .launcher(&infra, profile.as_ref(), flaws.clone());
    if let Some(p) = &profile {
        eprintln!(
            "harbor-certify: target {} from {} (profile sha256 {}), offering: {}",
            p.name,
            p.path.display(),
            &p.digest[..16],
            p.offered()
                .iter()
                .map(|c| crate::target::Capability::name(*c))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let runner =
        ScenarioRunner::new(launcher.as_ref(), LOGS.get().cloned()).without(args.without.clone());
    let bar = progress_bar(selected.len() as u64);
    // A deployed target is one service for every scenario — one database, one set of sync-point
    // slots, one clock —, so its scenarios run one at a time: side by side, one's actor tags and
    // its clean-up (which releases every slot) would reach into the other.
    let jobs = if profile.as_ref().is_some_and(|p| p.deployed.is_some()) {
        if args.jobs > 1 {
            eprintln!(
                "harbor-certify: a deployed target is shared by every scenario: they run one at a time (--jobs {} not used)",
                args.jobs
            );
        }
        1
    } else {
        args.jobs
    };
    let mut results = scenario::run_all(&runner, &selected, args.repeat, jobs, |result| {
        let line = format!(
            "{:<7} {:<28} {:>7.0} ms  {}",
            result.verdict.as_str(),
            result.id,
            result.duration_ms,
            result.title
        );
        bar.suspend(|| {
            println!("{line}");
            // What the target wrote cannot start a line of the CI log (a workflow command).
            let shown = |text: &str| crate::untrusted::console(text, "          ");
            for f in &result.failures {
                println!("        {}: {}", f.place(), shown(&f.message));
            }
            if let Some(why) = &result.flaky {
                println!("        flaky: {}", shown(why));
            }
        });
        bar.inc(1);
    })
    .await;
    bar.finish_and_clear();
    let mut spec_outcomes = Vec::new();
    // The specs speak for the reference schema and PostgreSQL, not for another target: they
    // are SKIPPED, naming what is missing, where the target lacks either or `--without` takes
    // it away (as `target check` predicts).
    let offered: BTreeSet<crate::target::Capability> = match &profile {
        Some(p) => p.offered(),
        None => crate::target::Capability::ALL.iter().copied().collect(),
    };
    let spec_files = match specs::missing(&offered, &args.without) {
        Some(missing) => {
            results.extend(specs::skipped_results(&spec_files, missing));
            Vec::new()
        }
        None => spec_files,
    };
    for (result, outcome) in specs::run_all(
        &infra,
        &spec_files,
        args.expected.as_deref(),
        args.isolation_output,
        args.repeat,
        args.spec_server.as_deref(),
    )
    .await
    {
        results.push(result);
        spec_outcomes.extend(outcome);
    }
    let environment = environment_of(&infra, &flaws.names());
    let target_version = launcher.target_version();
    drop(runner);
    drop(launcher);
    infra.shutdown().await;
    let mut report = Report::new(
        started_at,
        environment,
        results,
        args.repeat,
        args.fail_on,
        started.elapsed().as_secs_f64() * 1000.0,
        provision_ms,
    );
    report.target = Some(target_basis(
        profile.as_deref(),
        target_version,
        &args,
        &report.scenarios,
    ));
    judge_skips(&mut report, &selected, &offered, profile.as_deref(), &args);
    let exploration_fails = exploration
        .as_ref()
        .is_some_and(|basis| basis.violations > 0 || basis.shortfall().is_some());
    if let Some(basis) = exploration {
        // Violations found by the exploration block the certificate like failed scenarios.
        if basis.violations > 0 {
            eprintln!(
                "harbor-certify: the exploration found {} violation(s): NOT CERTIFIED",
                basis.violations
            );
            report.not_certified(format!(
                "the exploration found {} violation(s)",
                basis.violations
            ));
        }
        // An exploration cut short proves less than its sets name.
        if let Some(short) = basis.shortfall() {
            eprintln!(
                "harbor-certify: the exploration did not cover what it names ({short}): NOT CERTIFIED"
            );
            report.not_certified(format!(
                "the exploration did not cover what it names ({short})"
            ));
        }
        report.exploration = Some(basis);
    }
    let whole_catalogue = args.scenarios.is_empty()
        && args.filter.is_none()
        && report.summary.total == catalogue_size;
    if !whole_catalogue {
        report.selection = Some(format!(
            "{} of the catalogue's {catalogue_size} scenarios",
            report.summary.total
        ));
    } else {
        // A catalogue (`--scenarios-dir`) without a scenario of some area certifies nothing
        // about it: the area is as uncovered as one whose every scenario was skipped.
        let uncovered: Vec<&str> = crate::catalogue::AREAS
            .iter()
            .map(|a| a.key)
            .filter(|area| !report.scenarios.iter().any(|r| r.area == *area))
            .filter(|area| !args.allow_skipped.iter().any(|a| a == area))
            .collect();
        if !uncovered.is_empty() {
            eprintln!(
                "harbor-certify: the catalogue holds no scenario of {}: NOT CERTIFIED",
                uncovered.join(", ")
            );
            report.not_certified(format!(
                "the catalogue holds no scenario of {} (--allow-skipped AREA certifies without it)",
                uncovered.join(", ")
            ));
        }
    }
    let s = &report.summary;
    println!(
        "\n{}: {} scenario(s), {} passed, {} failed, {} warning(s), {} flaky, {} could not run, {} skipped, in {:.1} s (provisioning {:.1} s)",
        report.verdict_headline(),
        s.total,
        s.passed,
        s.failed,
        s.warnings,
        s.flaky,
        s.errors,
        s.skipped,
        s.duration_ms / 1000.0,
        s.provision_ms / 1000.0
    );
    for skipped in report
        .scenarios
        .iter()
        .filter(|r| r.verdict == scenario::Verdict::Skipped)
    {
        println!(
            "skipped: {} — {}",
            skipped.id,
            crate::untrusted::console(
                skipped
                    .failures
                    .first()
                    .map(|f| f.message.as_str())
                    .unwrap_or(""),
                "    "
            )
        );
    }
    let slowest: Vec<String> = s
        .slowest
        .iter()
        .map(|(id, ms)| format!("{id} {ms:.0} ms"))
        .collect();
    println!("slowest: {}", slowest.join(", "));
    let spec_files_out = specs::run_files(&spec_outcomes);
    let extra: Vec<(&str, String)> = spec_files_out
        .iter()
        .map(|(name, text)| (name.as_str(), text.clone()))
        .collect();
    match report::write_run(&args.catalogue.out, &report, &extra, signing_key.as_ref()) {
        Ok(dir) => println!(
            "report: {} (report.md, report.html, junit.xml, SHA256SUMS{})",
            dir.display(),
            if signing_key.is_some() {
                ", SHA256SUMS.sig"
            } else {
                ""
            }
        ),
        Err(e) => {
            eprintln!(
                "harbor-certify: cannot write the report under {}: {e}",
                args.catalogue.out.display()
            );
            return ExitCode::from(super::CANNOT_RUN);
        }
    }
    if let Some(path) = &args.write_verdicts {
        let title = match &profile {
            Some(p) => format!("Harbor's verdicts on {}", p.title()),
            None => "Harbor's verdicts on the in-process reference service".to_owned(),
        };
        if let Err(e) = super::verdicts::write(path, &title, &report.scenarios) {
            eprintln!("harbor-certify: --write-verdicts {}: {e}", path.display());
            return ExitCode::from(super::CANNOT_RUN);
        }
        println!("verdicts written to {}", path.display());
    }
    if let (Some(expected), Some(path)) = (&expected, &args.expect_verdicts) {
        let differences = super::verdicts::compare(expected, &report.scenarios);
        return match differences {
            // The verdicts speak for the scenarios only: an exploration given to the run that
            // found violations, or fell short, still fails it.
            _ if exploration_fails => {
                eprintln!(
                    "harbor-certify: the exploration given with --exploration does not pass (above): the verdicts alone cannot pass this run"
                );
                ExitCode::from(super::NOT_CERTIFIED)
            }
            differences if differences.is_empty() => {
                println!(
                    "verdicts as expected: all {} match {}",
                    report.scenarios.len(),
                    path.display()
                );
                ExitCode::SUCCESS
            }
            differences => {
                println!(
                    "{} verdict(s) changed from {}:",
                    differences.len(),
                    path.display()
                );
                for d in &differences {
                    println!("  {d}");
                }
                ExitCode::from(super::NOT_CERTIFIED)
            }
        };
    }
    if s.errors > 0 {
        ExitCode::from(super::CANNOT_RUN)
    } else if report.verdict == report::RunVerdict::Pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::NOT_CERTIFIED)
    }
}

/// The file a flag names, read with `read` (`None` when the flag was not given); an error is
/// printed after `flag` and stops the run before it starts.
fn read_given<T>(
    flag: &str,
    path: Option<&std::path::Path>,
    read: impl FnOnce(&std::path::Path) -> Result<T, String>,
) -> Result<Option<T>, ExitCode> {
    path.map(read).transpose().map_err(|e| {
        eprintln!("harbor-certify: {flag} {e}");
        ExitCode::from(super::CANNOT_RUN)
    })
}

/// The skips a certificate cannot rest on, area by area, each refused unless `--allow-skipped
/// AREA` accepts it: an area whose every scenario was SKIPPED rests on nothing, whatever the
/// reason; in an area that ran, a scenario SKIPPED for what the target cannot offer or be given —
/// not for what the run was told to do without (`--without`) or the profile declines — is a gap
/// nobody asked for.
fn judge_skips(
    report: &mut Report,
    selected: &[crate::scenario::load::LoadedScenario],
    offered: &BTreeSet<crate::target::Capability>,
    profile: Option<&crate::target::profile::Profile>,
    args: &RunArgs,
) {
    let declined = profile.map(|p| p.decline.clone()).unwrap_or_default();
    let spec_needs: BTreeSet<_> = specs::SPEC_NEEDS.into_iter().collect();
    for area in crate::catalogue::AREAS.iter().map(|a| a.key) {
        let of_area: Vec<&scenario::ScenarioResult> =
            report.scenarios.iter().filter(|r| r.area == area).collect();
        let skipped: Vec<&scenario::ScenarioResult> = of_area
            .iter()
            .copied()
            .filter(|r| r.verdict == scenario::Verdict::Skipped)
            .collect();
        if skipped.is_empty() {
            continue;
        }
        let what = if skipped.len() == of_area.len() {
            format!(
                "area {area}: not covered — its {} scenario(s) SKIPPED",
                skipped.len()
            )
        } else {
            let mut untold = 0;
            let mut reasons = BTreeSet::new();
            for r in &skipped {
                let requires = match selected.iter().find(|l| l.scenario.id == r.id) {
                    Some(l) => l.scenario.requires(),
                    None => spec_needs.clone(),
                };
                let why = skip_reasons(&requires, offered, &args.without, &declined);
                if !why.is_empty() {
                    untold += 1;
                    reasons.extend(why);
                }
            }
            if untold == 0 {
                continue;
            }
            format!(
                "area {area}: {untold} scenario(s) SKIPPED for what the target does not offer ({})",
                reasons.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        if args.allow_skipped.iter().any(|a| a == area) {
            println!("{what}, allowed by --allow-skipped");
        } else {
            println!("{what}: NOT CERTIFIED (--allow-skipped {area} accepts it)");
            report.not_certified(format!("{what} (--allow-skipped {area} accepts it)"));
        }
    }
}

/// Why a scenario needing `requires` was SKIPPED that nobody asked for (empty: it was asked
/// for). What the target offers less what `--without` took is what the run had; a need outside
/// it was asked to be done without when `--without` names it or the profile declines it; a
/// scenario skipped with every need met was skipped for a `[service]` setting no lifecycle
/// template takes.
fn skip_reasons(
    requires: &BTreeSet<crate::target::Capability>,
    offered: &BTreeSet<crate::target::Capability>,
    without: &[crate::target::Capability],
    declined: &BTreeSet<crate::target::Capability>,
) -> Vec<&'static str> {
    let had = |c: &crate::target::Capability| offered.contains(c) && !without.contains(c);
    let missing: Vec<_> = requires.iter().filter(|c| !had(c)).collect();
    if missing.is_empty() {
        return vec!["a [service] setting no lifecycle template takes, or a sync point the target does not implement"];
    }
    missing
        .into_iter()
        .filter(|c| !without.contains(c) && !declined.contains(c))
        .map(|c| c.name())
        .collect()
}

/// What the run's certificate rests on: the target, its capabilities, and what ran of each area.
fn target_basis(
    profile: Option<&crate::target::profile::Profile>,
    version: Option<String>,
    args: &RunArgs,
    scenarios: &[crate::scenario::ScenarioResult],
) -> report::TargetBasis {
    use crate::target::Capability;
    let mut lacking: Vec<(String, String)> = match profile {
        Some(p) => p
            .capabilities()
            .into_iter()
            .filter_map(|(c, r)| r.err().map(|why| (c.name().to_owned(), why)))
            .collect(),
        None => Vec::new(),
    };
    let offered: Vec<Capability> = match profile {
        Some(p) => p.offered().into_iter().collect(),
        None => Capability::ALL.to_vec(),
    };
    for c in &args.without {
        if offered.contains(c) {
            lacking.push((c.name().to_owned(), "--without".to_owned()));
        }
    }
    let mut basis = report::TargetBasis {
        name: profile.map_or_else(
            || "the Harbor reference service, in-process".to_owned(),
            |p| p.title(),
        ),
        profile: profile.map(|p| p.path.display().to_string()),
        profile_sha256: profile.map(|p| p.digest.clone()),
        deployed_at: profile
            .and_then(|p| p.deployed.as_ref())
            .map(|d| d.urls.clone())
            .unwrap_or_default(),
        version,
        capabilities: offered
            .iter()
            .filter(|c| !args.without.contains(c))
            .map(|c| c.name().to_owned())
            .collect(),
        lacking,
        allowed_uncovered: args.allow_skipped.clone(),
        areas: Vec::new(),
    };
    basis.count_areas(scenarios);
    basis
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::target::Capability::{self, *};

    fn set(caps: &[Capability]) -> BTreeSet<Capability> {
        caps.iter().copied().collect()
    }

    /// A skip is asked for when `--without` took the need away or the profile declines it; one
    /// for a need the target lacks is not, nor one for a `[service]` setting it cannot take.
    #[test]
    fn a_skip_is_asked_for_only_by_without_or_decline() {
        let needs = set(&[Database, Clock]);
        let all = set(&Capability::ALL);
        let reasons = |offered: &BTreeSet<Capability>, without: &[Capability], declined| {
            super::skip_reasons(&needs, offered, without, &set(declined))
        };
        assert!(reasons(&all, &[Clock], &[]).is_empty(), "--without");
        let no_clock = set(&[Database]);
        assert!(reasons(&no_clock, &[], &[Clock]).is_empty(), "declined");
        assert_eq!(reasons(&no_clock, &[], &[]), ["clock"], "lacking");
        assert_eq!(
            reasons(&all, &[], &[]),
            ["a [service] setting no lifecycle template takes, or a sync point the target does not implement"]
        );
        assert_eq!(
            reasons(&no_clock, &[Database], &[]),
            ["clock"],
            "one told, one not"
        );
        assert!(
            reasons(&no_clock, &[Clock], &[]).is_empty(),
            "--without names what the target lacks anyway"
        );
    }
}
