//! Scenarios: files an auditor can read, copy and change (`scenarios/*.toml`), checked before
//! anything runs, replayed against the service with lock-table evidence, and repeated to catch
//! flakiness.
//!
//! The pipeline, each stage its own module:
//!
//! ```text
//! file + format (TOML) ──load──► typed (Scenario, steps in step/) ──► programs + Scheduler
//!     ──► run ──► executor ──► Target ──► outcome/expect/assertion (+ oracles) ──► Verdict
//! ```
//!
//! The modules form no import circle (the `scenario_modules_form_no_circle` test), bottom first:
//! - [`trace`], [`logs`], [`outcome`], [`format`](mod@format) (the pieces of a file as written), [`expect`],
//!   [`actor`] (who acts), [`check`] (what a step's checks consult while a file loads — a leaf the
//!   step files use, like mini-redis's `Parse`);
//! - [`executor`]: one run's state, reached through its methods, and the operations every step
//!   kind shares; [`assertion`]: facts about the state, checked through the executor;
//! - [`step`]: one file per step kind (fields as written, checks, execution);
//! - [`typed`]: the checked, typed scenario; [`file`](mod@file): a whole file, read and written (the one
//!   writer); [`load`]: parsing and every check, once; [`programs`]: each actor's steps in file
//!   order, among whose heads a [`crate::schedule::Scheduler`] picks;
//! - [`run`]: [`run::ScenarioRunner`], one run on a fresh target.
//! - This module: selection, verdicts over repeated runs.

pub mod actor;
pub mod assertion;
pub mod check;
pub mod executor;
pub mod expect;
pub mod file;
pub mod format;
pub mod load;
pub mod logs;
pub mod outcome;
pub mod programs;
pub mod run;
pub mod step;
pub mod trace;
pub mod typed;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use format::Severity;
use load::LoadedScenario;
use outcome::{Failure, ScenarioRun};
use run::ScenarioRunner;
use trace::Trace;

/// A scenario's verdict over all its runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Every run passed with the same trace.
    Passed,
    /// Every run failed.
    Failed,
    /// Runs disagreed: different step order or outcomes, or some passed and some failed.
    Flaky,
    /// The environment failed; nothing was learnt about the service.
    Error,
    /// The target cannot serve it (the finding says which capability is missing). Never a pass.
    Skipped,
}

impl Verdict {
    /// The upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "PASSED",
            Verdict::Failed => "FAILED",
            Verdict::Flaky => "FLAKY",
            Verdict::Error => "ERROR",
            Verdict::Skipped => "SKIPPED",
        }
    }
}

/// A scenario's result over `runs` repetitions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// The scenario's id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// The seed section or threat it covers.
    pub source: String,
    /// Its severity.
    pub severity: Severity,
    /// Its audit area.
    pub area: String,
    /// Requirement references.
    pub requirements: Vec<String>,
    /// Threat-matrix rows covered.
    pub threats: Vec<String>,
    /// The file it came from.
    pub file: String,
    /// The actors and their roles, for trace tables.
    pub actors: Vec<(String, String)>,
    /// The verdict.
    pub verdict: Verdict,
    /// How many times it ran.
    pub runs: usize,
    /// Mean wall time of a run, in milliseconds.
    pub duration_ms: f64,
    /// Slowest run, in milliseconds.
    pub max_duration_ms: f64,
    /// Checks that held in the first run.
    pub checks: usize,
    /// The trace of the first failing run, or of the first run.
    pub trace: Trace,
    /// The findings: failures of the first failing run, with their diagnostics.
    #[serde(rename = "findings")]
    pub failures: Vec<Failure>,
    /// Why it is flaky: the first run whose trace differs, and the first differing line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flaky: Option<String>,
    /// The SHA-256 of the scenario file's text as it was loaded (none for an isolation spec):
    /// its recorded runs name it. Not in report.json.
    #[serde(skip)]
    pub file_sha256: Option<String>,
}

/// Runs `loaded` `repeat` times and judges the runs together.
pub async fn run_repeated(
    runner: &ScenarioRunner<'_>,
    loaded: &LoadedScenario,
    repeat: usize,
) -> ScenarioResult {
    let mut runs: Vec<ScenarioRun> = Vec::with_capacity(repeat.max(1));
    for _ in 0..repeat.max(1) {
        runs.push(runner.run(loaded).await);
    }
    judge(loaded, runs)
}

/// Where the first run whose trace differs from the first run's does, if one does.
fn first_difference(runs: &[ScenarioRun]) -> Option<String> {
    let first = runs.first()?.trace.signature();
    runs.iter().enumerate().skip(1).find_map(|(n, r)| {
        let sig = r.trace.signature();
        trace::divergence(&first, &sig).map(|at| {
            format!(
                "run {} differs from run 1 at trace line {}: {:?} vs {:?}",
                n + 1,
                at + 1,
                first.get(at),
                sig.get(at)
            )
        })
    })
}

fn judge(loaded: &LoadedScenario, runs: Vec<ScenarioRun>) -> ScenarioResult {
    let sc = &loaded.scenario;
    let failed: Vec<&ScenarioRun> = runs.iter().filter(|r| !r.failures.is_empty()).collect();
    let environment = runs
        .iter()
        .any(|r| r.failures.iter().any(|f| f.environment));
    // SKIPPED only when every run was refused and nothing else went wrong: a clean-up that failed
    // after a refusal, or a repetition that ran, must not hide behind the refusal.
    let skipped = runs
        .iter()
        .all(|r| !r.failures.is_empty() && r.failures.iter().all(|f| f.skipped));
    let mut flaky = None;
    let verdict = if environment {
        Verdict::Error
    } else if skipped {
        Verdict::Skipped
    } else if failed.len() == runs.len() {
        // Failed every time, but the note says when not the same way: a failure that is not
        // reproduced exactly is one a replay will not confirm.
        flaky = first_difference(&runs).map(|d| format!("the runs failed differently: {d}"));
        Verdict::Failed
    } else if !failed.is_empty() {
        flaky = Some(format!("{} of {} runs failed", failed.len(), runs.len()));
        Verdict::Flaky
    } else {
        flaky = first_difference(&runs);
        if flaky.is_some() {
            Verdict::Flaky
        } else {
            Verdict::Passed
        }
    };
    let shown = failed.first().copied().unwrap_or(&runs[0]);
    let total: Duration = runs.iter().map(|r| r.duration).sum();
    ScenarioResult {
        id: sc.id.clone(),
        title: sc.title.clone(),
        source: sc.source.clone(),
        severity: sc.severity,
        area: sc.area.clone(),
        requirements: sc.requirements.clone(),
        threats: sc.threats.clone(),
        file: loaded.file.display().to_string(),
        actors: sc
            .actors
            .iter()
            .map(|a| (a.name.clone(), a.role.clone()))
            .collect(),
        verdict,
        runs: runs.len(),
        duration_ms: (total / runs.len() as u32).as_secs_f64() * 1000.0,
        max_duration_ms: runs
            .iter()
            .map(|r| r.duration)
            .max()
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0,
        checks: shown.checks,
        trace: shown.trace.clone(),
        failures: shown.failures.clone(),
        flaky,
        file_sha256: Some(loaded.sha256.clone()),
    }
}

/// Runs every scenario (`repeat` times each), `jobs` scenarios at a time, and returns the results
/// in the given order. Scenarios are independent — each has its own database, Redis prefix,
/// replicas and fake provider — so running several at once changes timings, never evidence.
pub async fn run_all(
    runner: &ScenarioRunner<'_>,
    scenarios: &[LoadedScenario],
    repeat: usize,
    jobs: usize,
    mut done: impl FnMut(&ScenarioResult),
) -> Vec<ScenarioResult> {
    use futures::StreamExt;
    let mut results = Vec::with_capacity(scenarios.len());
    let mut stream =
        futures::stream::iter(scenarios.iter().map(|s| run_repeated(runner, s, repeat)))
            .buffered(jobs.max(1));
    while let Some(r) = stream.next().await {
        done(&r);
        results.push(r);
    }
    results
}

/// Picks scenarios by id (any case) or file name from the catalogue, and scenario files named by a
/// path anywhere (copy a file, change it, run it); all when `wanted` is empty. `filter` keeps those
/// whose id or title contains it (any case). An unknown id is an error that names the nearest ids.
pub fn select(
    all: Vec<LoadedScenario>,
    wanted: &[String],
    filter: Option<&str>,
) -> Result<Vec<LoadedScenario>, String> {
    let names =
        |s: &LoadedScenario, w: &str| s.scenario.id.eq_ignore_ascii_case(w) || s.file.ends_with(w);
    // A name that is a file outside the catalogue is that file, even where a catalogue file ends
    // the same way: `run AUD-X.toml` in a folder holding an edited copy runs the copy.
    // Each path resolved once, the catalogue's only when some name is a file.
    let files: Vec<(&String, std::path::PathBuf)> = wanted
        .iter()
        .filter_map(|w| Some((w, std::fs::canonicalize(w).ok().filter(|p| p.is_file())?)))
        .collect();
    let catalogue: std::collections::BTreeSet<std::path::PathBuf> = if files.is_empty() {
        std::collections::BTreeSet::new()
    } else {
        all.iter()
            .filter_map(|s| std::fs::canonicalize(&s.file).ok())
            .collect()
    };
    let outside: std::collections::BTreeSet<&String> = files
        .iter()
        .filter(|(_, p)| !catalogue.contains(p))
        .map(|(w, _)| *w)
        .collect();
    let wanted_by_name: Vec<&String> = wanted.iter().filter(|w| !outside.contains(w)).collect();
    let mut extra = Vec::new();
    let mut problems = Vec::new();
    for w in wanted {
        let path = std::path::Path::new(w);
        if !outside.contains(w) && all.iter().any(|s| names(s, w)) {
            continue;
        }
        if path.is_file() {
            match load::load_file(path) {
                Ok(s) => extra.push(s),
                Err(e) => problems.push(e.to_string()),
            }
        } else if w.ends_with(".toml") || w.contains('/') {
            problems.push(format!("{w}: no such scenario file"));
        } else {
            problems.push(unknown_id(&all, w));
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let mut chosen: Vec<LoadedScenario> = all
        .into_iter()
        .filter(|s| wanted.is_empty() || wanted_by_name.iter().any(|w| names(s, w)))
        .collect();
    for s in extra {
        if let Some(twin) = chosen.iter().find(|c| c.scenario.id == s.scenario.id) {
            return Err(format!(
                "{} and {} are both scenario {}: rename one of the files (a scenario's id is its file name)",
                s.file.display(),
                twin.file.display(),
                s.scenario.id
            ));
        }
        chosen.push(s);
    }
    Ok(chosen
        .into_iter()
        .filter(|s| {
            filter.is_none_or(|f| {
                let f = f.to_lowercase();
                s.scenario.id.to_lowercase().contains(&f)
                    || s.scenario.title.to_lowercase().contains(&f)
            })
        })
        .collect())
}

/// "no scenario X; did you mean …?" with the nearest ids of the catalogue.
fn unknown_id(all: &[LoadedScenario], wanted: &str) -> String {
    let w = wanted.to_uppercase();
    let mut near: Vec<(f64, &str)> = all
        .iter()
        .map(|s| {
            let id = s.scenario.id.as_str();
            let score = if id.contains(w.as_str()) {
                1.0
            } else {
                strsim::jaro_winkler(&w, id)
            };
            (score, id)
        })
        .filter(|(score, _)| *score > 0.75)
        .collect();
    near.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    let near: Vec<String> = near
        .iter()
        .take(3)
        .map(|(_, id)| format!("`{id}`"))
        .collect();
    let hint = if near.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", near.join(", "))
    };
    format!(
        "no scenario `{wanted}` in the catalogue, and no file by that name{hint} (`harbor-certify list` shows every id; a path to a scenario file runs that file)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Capability;

    const BODY: &str = "title = \"t\"\nsource = \"s\"\nseverity = \"low\"\narea = \"concurrency\"\n\n[[tenants]]\nname = \"acme\"\n\n[[actors]]\nname = \"A\"\nuser = \"acme.owner\"\n\n[[steps]]\nactor = \"A\"\ndo = \"activate\"\n";

    /// What a scenario of [`BODY`] followed by `steps` needs of a target.
    fn requirements(dir: &std::path::Path, steps: &str) -> std::collections::BTreeSet<Capability> {
        let file = dir.join("R.toml");
        let text = format!("id = \"R\"\n{BODY}{steps}");
        load::load_str(&file, &text).unwrap().scenario.requires()
    }

    fn scenario(dir: &std::path::Path, id: &str) -> LoadedScenario {
        let file = dir.join(format!("{id}.toml"));
        let text = format!("id = \"{id}\"\n{BODY}");
        std::fs::write(&file, &text).unwrap();
        load::load_str(&file, &text).unwrap()
    }

    /// Ids in any case, a scenario file anywhere (copy, change, run), and an unknown id answered
    /// with the nearest ids and where to find them all.
    #[test]
    fn selection_takes_ids_in_any_case_files_anywhere_and_suggests_near_ids() {
        let catalogue = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let all = || {
            vec![
                scenario(catalogue.path(), "AUD-Q2-ACTIVATION-FIRST"),
                scenario(catalogue.path(), "AUD-Q2-CALLBACK-FIRST"),
                scenario(catalogue.path(), "TM-STATE-EXPIRY"),
            ]
        };
        let picked = select(all(), &["aud-q2-activation-first".into()], None).unwrap();
        assert_eq!(picked.len(), 1);
        let mine = scenario(elsewhere.path(), "MY-SCENARIO").file;
        let picked = select(all(), &[mine.display().to_string()], None).unwrap();
        assert_eq!(picked[0].scenario.id, "MY-SCENARIO");
        let err = select(all(), &["AUD-Q2-ACTIVATON-FIRST".into()], None).unwrap_err();
        assert!(
            err.contains("did you mean `AUD-Q2-ACTIVATION-FIRST`")
                && err.contains("harbor-certify list"),
            "{err}"
        );
        assert!(!err.contains("[\""), "no Rust debug formatting: {err}");
        let err = select(all(), &["/no/such/file.toml".into()], None).unwrap_err();
        assert!(err.contains("no such scenario file"), "{err}");
        let twin = scenario(elsewhere.path(), "TM-STATE-EXPIRY").file;
        let err = select(
            all(),
            &["TM-STATE-EXPIRY".into(), twin.display().to_string()],
            None,
        )
        .unwrap_err();
        assert!(err.contains("are both scenario TM-STATE-EXPIRY"), "{err}");
    }

    /// A fault needs the link it is done to, not only the proxies: a target taking
    /// `{database_url}` but reaching its own Redis is offered `faults`, and a Redis fault there
    /// would reach nobody and leave the scenario unable to fail.
    #[test]
    fn a_fault_needs_the_link_it_is_done_to() {
        let dir = tempfile::tempdir().unwrap();
        let needs = |steps: &str| requirements(dir.path(), steps);
        // What the fault adds to what the scenario needs without it (its tenants need the
        // database already).
        let base = needs("");
        let added = |step: &str| -> Vec<Capability> {
            needs(&format!("\n[[steps]]\n{step}\n"))
                .difference(&base)
                .copied()
                .collect()
        };
        use Capability::*;
        assert_eq!(
            added("do = \"fault\"\nfault = \"redis_down\""),
            [Faults, Redis]
        );
        assert_eq!(
            added("do = \"until\"\nheld_by_pause = \"redis\""),
            [Faults, Redis]
        );
        assert_eq!(
            added("do = \"fault\"\nfault = \"provider_down\""),
            [ProviderControl, Faults]
        );
        assert_eq!(
            added("do = \"fault\"\nfault = \"postgres_pause\""),
            [Faults],
            "the database is needed already"
        );
        assert!(
            !base.contains(&Faults) && base.contains(&Database),
            "{base:?}"
        );
        assert_eq!(
            added("do = \"fault\"\nfault = \"replica_stop\"\nreplica = 0"),
            [Crash]
        );
    }

    /// An authorize the scenario expects to be refused consents nowhere, so it needs no provider of
    /// the harness's; one that may succeed, a connect, or many at once do.
    #[test]
    fn only_an_authorize_that_may_consent_needs_the_provider() {
        let dir = tempfile::tempdir().unwrap();
        let needs = |step: &str| {
            requirements(dir.path(), &format!("\n[[steps]]\nactor = \"A\"\n{step}\n"))
                .contains(&Capability::ProviderControl)
        };
        let refused = "expect = { status = 401, code = \"UNAUTHENTICATED\" }";
        assert!(!needs(&format!(
            "do = \"authorize\"\nprovider = \"qbo\"\n{refused}"
        )));
        assert!(needs(
            "do = \"authorize\"\nprovider = \"qbo\"\nexpect = { status = 200 }"
        ));
        assert!(needs("do = \"authorize\"\nprovider = \"qbo\""));
        assert!(needs(&format!(
            "do = \"connect\"\nprovider = \"qbo\"\n{refused}"
        )));
        assert!(needs(
            "do = \"authorize\"\nprovider = \"qbo\"\nconcurrency = 2\nexpect_all = { status = 401 }"
        ));
    }

    #[test]
    fn a_refusal_does_not_hide_a_failed_clean_up_or_a_run_that_ran() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = scenario(dir.path(), "X");
        let refused = Failure::skipped("the target lacks faults");
        let run = |failures: Vec<Failure>| ScenarioRun {
            trace: trace::Trace::default(),
            failures,
            checks: 0,
            duration: std::time::Duration::ZERO,
        };
        let verdict = |runs| judge(&loaded, runs).verdict;
        assert_eq!(verdict(vec![run(vec![refused.clone()])]), Verdict::Skipped);
        assert_eq!(
            verdict(vec![run(vec![
                refused.clone(),
                Failure::environment("clean-up failed: a replica did not stop".to_owned()),
            ])]),
            Verdict::Error
        );
        assert_eq!(
            verdict(vec![run(vec![refused]), run(vec![])]),
            Verdict::Flaky,
            "one of two runs refused: the target changed between them"
        );
    }
}
