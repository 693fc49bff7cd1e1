//! [`ScenarioRunner`]: one run of one scenario on a fresh target — fixtures, the steps in the order
//! a [`Scheduler`] chooses (the file's, by default), the final assertions, the clean-up — recorded
//! as a trace with the schedule it followed. Blocking is read from the server's lock tables only;
//! a step that should block and completes, or should complete and blocks past its timeout, fails
//! with a lock-table snapshot.
//! The run's state and the operations the steps share are [`super::executor`]'s.

use std::collections::BTreeSet;
use std::time::Instant;

use super::executor::Executor;
use super::load::LoadedScenario;
use super::logs::LogCapture;
use super::outcome::{Failure, ScenarioRun};
use super::programs::Programs;
use super::trace::{EventKind, Trace};
use super::typed::Scenario;
use crate::schedule::{FileOrder, Schedule, Scheduler};
use crate::target::TenantSpec;
use crate::target::{Capability, Launcher, Restricted, Target};

/// Runs scenarios, each on a fresh target its launcher starts.
pub struct ScenarioRunner<'a> {
    launcher: &'a dyn Launcher,
    logs: Option<LogCapture>,
    without: BTreeSet<Capability>,
}

impl<'a> ScenarioRunner<'a> {
    /// A runner starting its targets with `launcher`; `logs` is the capture of the service's logs,
    /// searched by `no_canary_leaks` (without it that assertion fails rather than pass unchecked).
    pub fn new(launcher: &'a dyn Launcher, logs: Option<LogCapture>) -> Self {
        Self {
            launcher,
            logs,
            without: BTreeSet::new(),
        }
    }

    /// The same runner starting its targets with `launcher` instead.
    pub fn with_launcher<'b>(&self, launcher: &'b dyn Launcher) -> ScenarioRunner<'b> {
        ScenarioRunner {
            launcher,
            logs: self.logs.clone(),
            without: self.without.clone(),
        }
    }

    /// Runs as if the target lacked these capabilities: scenarios needing them are SKIPPED with
    /// the reason.
    pub fn without(mut self, capabilities: impl IntoIterator<Item = Capability>) -> Self {
        self.without.extend(capabilities);
        self
    }

    /// Runs the scenario once, in the file's order.
    pub async fn run(&self, loaded: &LoadedScenario) -> ScenarioRun {
        self.run_scheduled(loaded, &mut FileOrder).await
    }

    /// Runs the scenario once, in the order `scheduler` chooses.
    pub async fn run_scheduled(
        &self,
        loaded: &LoadedScenario,
        scheduler: &mut dyn Scheduler,
    ) -> ScenarioRun {
        let started = Instant::now();
        let sc = &loaded.scenario;
        let setup = sc.setup();
        // Refused before anything starts, when the launcher knows what its targets offer.
        if let Some(offered) = self.launcher.offers() {
            let offered: BTreeSet<Capability> =
                offered.difference(&self.without).copied().collect();
            if let Some(refusal) = refusal(sc, &offered) {
                return run_of(Trace::default(), vec![refusal], 0, started);
            }
        }
        if let Some(why) = self.launcher.cannot_set(&setup) {
            return run_of(Trace::default(), vec![Failure::skipped(why)], 0, started);
        }
        let launched = match self.launcher.launch(&setup).await {
            Ok(launched) => launched,
            Err(e) => {
                return run_of(
                    Trace::default(),
                    vec![Failure::environment(format!(
                        "the service under test did not start: {e}"
                    ))],
                    0,
                    started,
                )
            }
        };
        // A target lists the sync points it implements only once it runs: a scenario parking at
        // one it does not list is one it cannot serve, SKIPPED with the points named.
        let unlisted: Vec<&str> = sc
            .sync_points()
            .into_iter()
            .filter(|p| !launched.target().has_point(p))
            .collect();
        if !unlisted.is_empty() {
            let mut failures = vec![Failure::skipped(format!(
                "the target cannot serve this scenario; it implements no sync point {}",
                unlisted.join(", ")
            ))];
            if let Err(e) = launched.stop().await {
                failures.push(Failure::environment(format!("clean-up failed: {e}")));
            }
            return run_of(Trace::default(), failures, 0, started);
        }
        let restricted = Restricted {
            inner: launched.target(),
            without: self.without.clone(),
        };
        let (trace, mut failures, checks) =
            execute(loaded, &restricted, self.logs.as_ref(), scheduler).await;
        // A run that passed having checked nothing could not have failed: a file whose steps
        // expect nothing and that asserts nothing certifies nothing.
        if failures.is_empty() && checks == 0 {
            failures.push(Failure::at(
                None,
                "the scenario checked nothing: no expectation, blocking, parking or assertion \
                 held, so the run could not have failed (give a step an `expect` or add an \
                 `[[assert]]`)",
            ));
        }
        if let Err(e) = launched.stop().await {
            failures.push(Failure::environment(format!("clean-up failed: {e}")));
        }
        run_of(trace, failures, checks, started)
    }
}

/// The SKIPPED failure of `sc` on a target offering `offered`, if it lacks something `sc` needs.
fn refusal(
    sc: &crate::scenario::typed::Scenario,
    offered: &BTreeSet<Capability>,
) -> Option<Failure> {
    let missing: Vec<Capability> = sc.requires().difference(offered).copied().collect();
    if missing.is_empty() {
        return None;
    }
    let what: Vec<&str> = missing.iter().map(|c| c.describe()).collect();
    Some(Failure::skipped(format!(
        "the target cannot serve this scenario; it lacks {}",
        what.join(", ")
    )))
}

fn run_of(trace: Trace, failures: Vec<Failure>, checks: usize, started: Instant) -> ScenarioRun {
    ScenarioRun {
        trace,
        failures,
        checks,
        duration: started.elapsed(),
    }
}

/// Runs `loaded` on `target`: refuses it when the target lacks a capability it needs, else makes
/// the fixtures, runs the steps in the scheduler's order, collects background steps, holds every
/// answer to the contract, checks the final assertions, and frees whatever is left.
pub async fn execute(
    loaded: &LoadedScenario,
    target: &dyn Target,
    logs: Option<&LogCapture>,
    scheduler: &mut dyn Scheduler,
) -> (Trace, Vec<Failure>, usize) {
    let sc = &loaded.scenario;
    if let Some(refusal) = refusal(sc, &target.capabilities()) {
        return (Trace::default(), vec![refusal], 0);
    }
    let mut ex = Executor::new(&sc.actors, sc.service.step_timeout, target, logs);
    let mut failures = Vec::new();
    if let Err(f) = fixtures(sc, &mut ex).await {
        failures.push(f);
    } else {
        ex.start_clock();
        let mut described: Vec<String> = sc.tenants.iter().map(|t| t.name.clone()).collect();
        described.extend(
            sc.tenant_sets
                .iter()
                .map(|s| format!("{}×{}", s.count, s.prefix)),
        );
        ex.event(
            None,
            None,
            EventKind::Note,
            format!("fixtures: tenants {}", described.join(", ")),
            None,
        );
        // Every failure is in the trace, at its step and actor: a replay held to a recorded
        // signature sees a step — a background one collected at the end included — that failed,
        // or no longer fails.
        let traced = |ex: &mut Executor<'_>, f: Failure| {
            let actor = f
                .step
                .and_then(|i| sc.steps.get(i))
                .and_then(|s| s.actor())
                .map(str::to_owned);
            ex.event(
                f.step,
                actor.as_deref(),
                EventKind::Failed,
                f.message.clone(),
                None,
            );
            f
        };
        if let Err(f) = run_steps(sc, &mut ex, scheduler).await {
            failures.push(traced(&mut ex, f));
        }
        if failures.is_empty() {
            for f in ex.finish_background().await {
                failures.push(traced(&mut ex, f));
            }
        }
        // An answer outside the contract fails the run even if the step expected it.
        let mut seen = BTreeSet::new();
        for answer in ex.take_off_contract() {
            if seen.insert(answer.clone()) {
                ex.event(None, None, EventKind::Failed, answer.clone(), None);
                failures.push(Failure::at(None, answer));
            }
        }
        if failures.is_empty() {
            for a in &sc.assertions {
                if let Err(f) = a.check(&mut ex, None).await {
                    ex.event(None, None, EventKind::Failed, f.message.clone(), None);
                    failures.push(f);
                }
            }
        }
    }
    // Clean-up: free every parked request, end every background step and session.
    target.release_all().await;
    let (trace, checks) = ex.finish().await;
    (trace, failures, checks)
}

/// The schedule loop: the scheduler picks among the heads of the actors' programs until none is
/// left; the trace records the order followed.
async fn run_steps(
    sc: &Scenario,
    ex: &mut Executor<'_>,
    scheduler: &mut dyn Scheduler,
) -> Result<(), Failure> {
    let mut programs = Programs::of(sc);
    loop {
        let ready = programs.ready();
        if ready.is_empty() {
            return Ok(());
        }
        let next = scheduler
            .next(&ready)
            .map_err(|e| Failure::at(None, format!("schedule ({}): {e}", scheduler.name())))?;
        let Some(i) = next else {
            return Err(Failure::at(
                None,
                format!(
                    "schedule ({}) ended with {} step(s) not run",
                    scheduler.name(),
                    programs.remaining()
                ),
            ));
        };
        programs
            .advance(i)
            .map_err(|e| Failure::at(Some(i), format!("schedule ({}): {e}", scheduler.name())))?;
        ex.record_scheduled(i);
        sc.steps[i].apply(ex, i).await?;
    }
}

async fn fixtures(sc: &Scenario, ex: &mut Executor<'_>) -> Result<(), Failure> {
    let fail = |e: String| Failure::at(None, format!("fixtures: {e}"));
    let target = ex.target();
    for t in &sc.tenants {
        let spec = TenantSpec {
            name: t.name.clone(),
            entitled: t.entitled,
            qbo: t.qbo_status(),
        };
        let tw = target.create_tenant(&spec).await.map_err(fail)?;
        for (provider, status) in &t.connections {
            target
                .set_connection_status(tw.workspace, *provider, *status)
                .await
                .map_err(fail)?;
        }
        for provider in &t.oauth {
            crate::target::connect(target, tw.owner, tw.workspace, *provider)
                .await
                .map_err(|e| fail(format!("connecting {} to {provider}: {e}", t.name)))?;
        }
        ex.add_tenant(&t.name, tw);
    }
    for set in &sc.tenant_sets {
        let mut members = Vec::with_capacity(set.count);
        for i in 0..set.count {
            let spec = TenantSpec {
                name: format!("{}{i}", set.prefix),
                entitled: set.entitled,
                qbo: harbor_service::lifecycle::ConnectionStatus::NotConnected,
            };
            let tw = target.create_tenant(&spec).await.map_err(fail)?;
            members.push(tw);
        }
        ex.add_tenant_set(&set.prefix, members);
    }
    Ok(())
}

/// A recorded run: what `harbor-certify replay` reads back (`traces/<ID>.json` of a run folder).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RecordedRun {
    /// The scenario's id.
    pub scenario: String,
    /// Its file when it ran.
    pub file: String,
    /// The schedule followed.
    pub schedule: Schedule,
    /// The trace's signature (what repeated runs must agree on).
    pub signature: Vec<String>,
    /// The seeded flaws the service ran with (empty: the correct build). A replay runs with the
    /// same, or refuses: another build gives another trace for reasons that are not the schedule.
    #[serde(default)]
    pub flaws: Vec<String>,
    /// The target it ran on when not the reference in-process (a profile's name): `replay`
    /// runs the reference in-process, so it refuses such a record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The SHA-256 of the scenario file's text when it ran: a replay of a file edited since would
    /// run other steps against the recorded schedule, so it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sha256: Option<String>,
    /// How its signature was written ([`SIGNATURE_VERSION`]; records without one are version 1):
    /// a signature of another version cannot be compared, so its replay is refused.
    #[serde(default = "first_signature_version")]
    pub signature_version: u32,
}

/// The version of [`crate::scenario::trace::Trace::signature`] this harness writes: 2 signs a
/// failure by its first line with its generated ids numbered. 1 is any record without a version
/// (signed by the whole message, or by the first line with every id one `<id>`).
pub const SIGNATURE_VERSION: u32 = 2;

fn first_signature_version() -> u32 {
    1
}
