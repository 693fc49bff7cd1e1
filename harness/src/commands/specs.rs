//! Isolation specs inside `harbor-certify run`: which `.spec` files a run takes (named on the
//! command line, or the catalogue's `sql/` folder), running each in a fresh database, and each
//! outcome as a result of the report beside the scenarios'.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::isolation::{self, SpecFile, SpecOutcome};
use crate::provision::Infra;
use crate::scenario::format::Severity;
use crate::scenario::outcome::Failure;
use crate::scenario::trace::Trace;
use crate::scenario::{ScenarioResult, Verdict};

/// Where the catalogue keeps its specs, under the scenarios folder.
pub const SPEC_FOLDER: &str = "sql";

/// Whether a command-line name is a spec file rather than a scenario.
pub fn is_spec(name: &str) -> bool {
    name.ends_with(".spec")
}

/// The specs a run takes — those named, or else (when no scenario is named either) the
/// catalogue's `sql/` folder — kept by `filter` (id or title, any case) like scenarios; and how
/// many specs the catalogue has. Refuses two specs of one name (their outputs would share a file)
/// and one expected file for several specs.
pub fn select(
    scenarios_dir: &Path,
    named: &[String],
    scenarios_named: bool,
    filter: Option<&str>,
    expected: Option<&Path>,
) -> Result<(Vec<SpecFile>, usize), ExitCode> {
    let dir = scenarios_dir.join(SPEC_FOLDER);
    let catalogue = if named.is_empty() && !scenarios_named {
        isolation::files_in(&dir).map_err(|e| {
            eprintln!("harbor-certify: cannot read {}: {e}", dir.display());
            ExitCode::from(super::CANNOT_RUN)
        })?
    } else {
        isolation::files_in(&dir).unwrap_or_default()
    };
    let paths: Vec<PathBuf> = if !named.is_empty() {
        named.iter().map(PathBuf::from).collect()
    } else if scenarios_named {
        Vec::new()
    } else {
        catalogue.clone()
    };
    let mut files = Vec::new();
    let mut bad = 0;
    for p in &paths {
        match isolation::load(p) {
            Ok(f) => files.push(f),
            Err(e) => {
                eprintln!("harbor-certify: {e}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        eprintln!("harbor-certify: {bad} spec file(s) rejected; nothing was run");
        return Err(ExitCode::from(super::CANNOT_RUN));
    }
    if let Some(f) = filter.map(str::to_lowercase) {
        files.retain(|s| {
            id_of(&s.name).to_lowercase().contains(&f) || s.title.to_lowercase().contains(&f)
        });
    }
    let mut names = std::collections::BTreeSet::new();
    for f in &files {
        if !names.insert(f.name.clone()) {
            eprintln!(
                "harbor-certify: two specs are named {} (their outputs would share a file)",
                f.name
            );
            return Err(ExitCode::from(super::CANNOT_RUN));
        }
    }
    if let Some(e) = expected.filter(|e| !e.is_dir()) {
        if files.len() > 1 {
            eprintln!(
                "harbor-certify: --expected {} is one file, for {} specs (give a folder of NAME.out files)",
                e.display(),
                files.len()
            );
            return Err(ExitCode::from(super::CANNOT_RUN));
        }
    }
    Ok((files, catalogue.len()))
}

/// The whole catalogue, checked: its scenarios and its specs.
pub fn whole_catalogue(
    scenarios_dir: &Path,
) -> Result<(Vec<crate::scenario::load::LoadedScenario>, Vec<SpecFile>), ExitCode> {
    let scenarios = super::load(scenarios_dir)?;
    let (specs, _) = select(scenarios_dir, &[], false, None, None)?;
    Ok((scenarios, specs))
}

/// Runs every spec `repeat` times (one spec at a time: each waits on locks, and a spec's timing
/// is part of its check), printing a line each, its output when asked and its diff when it
/// differs. Runs that print different outputs make the spec FLAKY.
pub async fn run_all(
    infra: &Infra,
    files: &[SpecFile],
    expected: Option<&Path>,
    print_output: bool,
    repeat: usize,
    server: Option<&str>,
) -> Vec<(ScenarioResult, Option<SpecOutcome>)> {
    let opts = isolation::Options::default();
    let mut results = Vec::new();
    for file in files {
        let mut runs = Vec::new();
        for _ in 0..repeat.max(1) {
            match isolation::run(infra, server, file, &opts, expected).await {
                Ok(o) => runs.push(o),
                Err(e) => {
                    println!("ERROR   {:<28} {e}", id_of(&file.name));
                    runs.clear();
                    results.push((error_result(file, &e), None));
                    break;
                }
            }
        }
        if runs.is_empty() {
            continue;
        }
        let first = runs.remove(0);
        let result = judge(as_result(&first), &first, &runs);
        println!(
            "{:<7} {:<28} {:>7.0} ms  {}",
            result.verdict.as_str(),
            result.id,
            result.duration_ms,
            result.title
        );
        if print_output {
            // Line for line as the expected file has it (asked for, never in CI), but with no
            // control character or workflow command a target's data could put there.
            for line in first.tested.output.lines() {
                println!("{}", crate::untrusted::console(line, ""));
            }
        }
        for f in &result.failures {
            println!(
                "        {}",
                crate::untrusted::console(&f.message, "        ")
            );
        }
        if let Some(why) = &result.flaky {
            println!(
                "        flaky: {}",
                crate::untrusted::console(why, "        ")
            );
        }
        results.push((result, Some(first)));
    }
    results
}

/// The files a run folder gets for each spec: its output and the proof of each wait.
pub fn run_files(outcomes: &[SpecOutcome]) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for o in outcomes {
        files.push((format!("isolation/{}.out", o.name), o.tested.output.clone()));
        files.push((
            format!("isolation/{}.json", o.name),
            serde_json::to_string_pretty(o).unwrap_or_default(),
        ));
    }
    files
}

/// Folds repeated runs into the first run's result: the mean and slowest times, and FLAKY when
/// an output differs from the first (naming the first differing line).
fn judge(mut result: ScenarioResult, first: &SpecOutcome, rest: &[SpecOutcome]) -> ScenarioResult {
    let runs: Vec<&SpecOutcome> = std::iter::once(first).chain(rest).collect();
    result.runs = runs.len();
    let times: Vec<f64> = runs.iter().map(|r| r.duration_ms).collect();
    result.duration_ms = times.iter().sum::<f64>() / times.len() as f64;
    result.max_duration_ms = times.iter().copied().fold(0.0, f64::max);
    let first = &runs[0].tested.output;
    if let Some((k, other)) = runs
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, r)| &r.tested.output != first)
    {
        let line = first
            .lines()
            .zip(other.tested.output.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| {
                first
                    .lines()
                    .count()
                    .min(other.tested.output.lines().count())
            });
        result.verdict = Verdict::Flaky;
        result.flaky = Some(format!(
            "run {} printed a different output from run 1, from line {}",
            k + 1,
            line + 1
        ));
    } else if runs.iter().any(|r| !r.passed()) && result.verdict == Verdict::Passed {
        result.verdict = Verdict::Failed;
    }
    result
}

/// A spec's id in the report and the listing: `SQL-` and its file name in capitals.
pub fn id_of(name: &str) -> String {
    format!("SQL-{}", name.to_uppercase())
}

fn as_result(o: &SpecOutcome) -> ScenarioResult {
    let mut failures = Vec::new();
    if let Some(fatal) = &o.tested.fatal {
        failures.push(Failure {
            diagnostics: serde_json::to_value(&fatal.locks).ok(),
            ..Failure::at(None, fatal.message.clone())
        });
    }
    if !o.had_expected {
        failures.push(Failure::at(
            None,
            format!(
                "no expected output at {} (check the output, then save it there)",
                o.expected.display()
            ),
        ));
    } else if let Some(diff) = &o.diff {
        failures.push(Failure::at(
            None,
            format!("the output differs from {}:\n{diff}", o.expected.display()),
        ));
    }
    let verdict = if failures.is_empty() {
        Verdict::Passed
    } else {
        Verdict::Failed
    };
    let checks = o.tested.waits.len() + 1;
    result_of(
        &o.name,
        &o.title,
        &o.path,
        verdict,
        failures,
        o.duration_ms,
        checks,
    )
}

/// What a spec needs of the target: the catalogue's specs run on scratch databases and on the
/// reference schema, so they speak for a target only when it is the reference.
pub const SPEC_NEEDS: [crate::target::Capability; 2] = [
    crate::target::Capability::Database,
    crate::target::Capability::ReferenceSchema,
];

/// The first capability the specs need that a run lacks: its target does not offer it, or
/// `--without` takes it away.
pub fn missing(
    offered: &std::collections::BTreeSet<crate::target::Capability>,
    without: &[crate::target::Capability],
) -> Option<crate::target::Capability> {
    SPEC_NEEDS
        .iter()
        .find(|c| !offered.contains(c) || without.contains(c))
        .copied()
}

/// `files` as SKIPPED results, for a target the specs do not speak for: it lacks `missing`.
pub fn skipped_results(
    files: &[SpecFile],
    missing: crate::target::Capability,
) -> Vec<ScenarioResult> {
    files
        .iter()
        .map(|file| {
            let failure = Failure::skipped(crate::target::lacks(missing));
            result_of(
                &file.name,
                &file.title,
                &file.path,
                Verdict::Skipped,
                vec![failure],
                0.0,
                0,
            )
        })
        .collect()
}

fn error_result(file: &SpecFile, message: &str) -> ScenarioResult {
    let failure = Failure {
        environment: true,
        ..Failure::at(None, message)
    };
    result_of(
        &file.name,
        &file.title,
        &file.path,
        Verdict::Error,
        vec![failure],
        0.0,
        0,
    )
}

/// The audit area a spec's result is filed under.
pub const SPEC_AREA: &str = "concurrency";

/// A spec's run as a result of the report, beside the scenarios'.
fn result_of(
    name: &str,
    title: &str,
    path: &Path,
    verdict: Verdict,
    failures: Vec<Failure>,
    duration_ms: f64,
    checks: usize,
) -> ScenarioResult {
    ScenarioResult {
        id: id_of(name),
        title: title.to_owned(),
        source: "isolation spec".into(),
        severity: Severity::High,
        area: SPEC_AREA.into(),
        requirements: Vec::new(),
        threats: Vec::new(),
        file: path.display().to_string(),
        actors: Vec::new(),
        verdict,
        runs: 1,
        duration_ms,
        max_duration_ms: duration_ms,
        checks,
        trace: Trace::default(),
        failures,
        flaky: None,
        file_sha256: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Capability;
    use std::collections::BTreeSet;

    #[test]
    fn the_specs_are_skipped_for_what_is_missing_or_taken_away() {
        let all: BTreeSet<Capability> = Capability::ALL.iter().copied().collect();
        assert_eq!(missing(&all, &[]), None);
        assert_eq!(missing(&all, &[Capability::Faults]), None);
        assert_eq!(
            missing(&all, &[Capability::ReferenceSchema]),
            Some(Capability::ReferenceSchema),
            "--without takes it away"
        );
        let no_database: BTreeSet<Capability> = all
            .iter()
            .copied()
            .filter(|c| *c != Capability::Database)
            .collect();
        assert_eq!(
            missing(&no_database, &[]),
            Some(Capability::Database),
            "the reason names what the target lacks"
        );
    }
}
