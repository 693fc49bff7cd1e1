//! `harbor-certify mutants`: proves the certification can fail. The catalogue runs once against
//! the correct service, then once against each seeded flaw on its own; a flaw is *killed* when a
//! scenario that declares it in `catches` fails, and the run is good only when the correct build
//! passes and every flaw is killed by a scenario whose id says why.

use std::time::Instant;

use harbor_service::flaws::{Flaw, Flaws};
use serde::Serialize;

use crate::provision::Infra;
use crate::scenario::load::LoadedScenario;
use crate::scenario::run::ScenarioRunner;
use crate::scenario::{self, ScenarioResult, Verdict};
use crate::target::started::InProcessLauncher;

/// How one flaw fared.
#[derive(Clone, Debug, Serialize)]
pub struct FlawOutcome {
    /// The flaw's switch name.
    pub flaw: String,
    /// Scenarios that failed (or were flaky) with the flaw on.
    pub caught_by: Vec<String>,
    /// Scenarios that declare `catches = [flaw]`.
    pub expected: Vec<String>,
    /// Whether a scenario naming it caught it.
    pub status: KillStatus,
    /// Why each catching scenario failed: its first finding.
    pub evidence: std::collections::BTreeMap<String, String>,
    /// Wall time of the flawed catalogue run, in milliseconds.
    pub duration_ms: f64,
}

/// How a flaw fared against the scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillStatus {
    /// A scenario that names it in `catches` failed at one of its steps or assertions.
    Killed,
    /// Only other scenarios failed, or only at set-up.
    KilledElsewhere,
    /// Nothing failed.
    Survived,
}

impl KillStatus {
    /// The upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            KillStatus::Killed => "KILLED",
            KillStatus::KilledElsewhere => "KILLED_ELSEWHERE",
            KillStatus::Survived => "SURVIVED",
        }
    }
}

/// The kill matrix.
#[derive(Clone, Debug, Serialize)]
pub struct KillMatrix {
    /// `PASS` when the correct build passed every scenario.
    pub correct_build: crate::report::RunVerdict,
    /// One row per flaw.
    pub flaws: Vec<FlawOutcome>,
    /// Flaws not killed by an expected scenario.
    pub survivors: Vec<String>,
    /// Wall time of the whole mutation run, in milliseconds.
    pub duration_ms: f64,
}

impl KillMatrix {
    /// Whether the run proves what it should: the correct build passes, every flaw is killed by
    /// a scenario that names it.
    pub fn is_good(&self) -> bool {
        self.correct_build == crate::report::RunVerdict::Pass && self.survivors.is_empty()
    }
}

/// Scenarios that caught the flaw: failed or flaky — not those whose environment failed, which
/// proves nothing about the service.
fn caught(results: &[ScenarioResult]) -> Vec<&ScenarioResult> {
    results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Failed | Verdict::Flaky))
        .collect()
}

/// Whether a scenario failed on its own checks, not while making its fixtures.
fn failed_at_a_check(r: &ScenarioResult) -> bool {
    r.verdict == Verdict::Flaky
        || r.failures
            .iter()
            .any(|f| !f.message.starts_with("fixtures:"))
}

/// Runs the catalogue against the correct build and then each flaw — the whole catalogue, or with
/// `catching_only` just the scenarios that name the flaw in `catches` (the ones the verdict rests
/// on; the matrix then shows no incidental kills). Returns the correct build's results and the
/// matrix; `progress` is told about every finished catalogue run.
pub async fn run(
    infra: &Infra,
    runner: ScenarioRunner<'_>,
    scenarios: &[LoadedScenario],
    flaws: &[Flaw],
    jobs: usize,
    catching_only: bool,
    mut progress: impl FnMut(&str, &[ScenarioResult]),
) -> (Vec<ScenarioResult>, KillMatrix) {
    let started = Instant::now();
    let baseline = scenario::run_all(&runner, scenarios, 1, jobs, |_| {}).await;
    progress("correct build", &baseline);
    let correct_build = if baseline.iter().all(|r| r.verdict == Verdict::Passed) {
        crate::report::RunVerdict::Pass
    } else {
        crate::report::RunVerdict::Fail
    };
    let mut rows = Vec::new();
    for flaw in flaws {
        let flaw_started = Instant::now();
        let launcher = InProcessLauncher::new(infra)
            .with_flaws(Flaws::enable([*flaw]).expect("mutants needs the flaws feature"));
        let runner = runner.with_launcher(&launcher);
        let naming: Vec<LoadedScenario> = if catching_only {
            scenarios
                .iter()
                .filter(|s| s.scenario.catches.contains(flaw))
                .cloned()
                .collect()
        } else {
            scenarios.to_vec()
        };
        let results = scenario::run_all(&runner, &naming, 1, jobs, |_| {}).await;
        progress(flaw.name(), &results);
        let catching = caught(&results);
        let caught_by: Vec<String> = catching.iter().map(|r| r.id.clone()).collect();
        let evidence = catching
            .iter()
            .map(|r| {
                let why = r
                    .failures
                    .first()
                    .map(|f| f.message.clone())
                    .or_else(|| r.flaky.clone())
                    .unwrap_or_default();
                (r.id.clone(), why)
            })
            .collect();
        let expected: Vec<String> = scenarios
            .iter()
            .filter(|s| s.scenario.catches.contains(flaw))
            .map(|s| s.scenario.id.clone())
            .collect();
        let status = if catching
            .iter()
            .any(|r| expected.contains(&r.id) && failed_at_a_check(r))
        {
            KillStatus::Killed
        } else if !caught_by.is_empty() {
            KillStatus::KilledElsewhere
        } else {
            KillStatus::Survived
        };
        rows.push(FlawOutcome {
            flaw: flaw.name().to_owned(),
            caught_by,
            expected,
            status,
            evidence,
            duration_ms: flaw_started.elapsed().as_secs_f64() * 1000.0,
        });
    }
    let survivors = rows
        .iter()
        .filter(|r| r.status != KillStatus::Killed)
        .map(|r| r.flaw.clone())
        .collect();
    let matrix = KillMatrix {
        correct_build,
        flaws: rows,
        survivors,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    (baseline, matrix)
}
