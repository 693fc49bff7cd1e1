//! `harbor-certify replay`: runs a recorded schedule again, exactly, and checks that the trace's
//! signature is the one recorded (a recorded failure replayed is a success: it reproduces). A
//! scenario file replays its own order: every run must then pass with the first run's signature. The record is a run folder's `traces/<ID>.json` (written for every
//! scenario by `run` and `mutants`); a scenario file replays its own order.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{parse_flaws, provision_or_explain, CANNOT_RUN, LOGS, NOT_CERTIFIED};
use crate::provision::BackendChoice;
use crate::scenario::load::{self, LoadedScenario};
use crate::scenario::run::{RecordedRun, ScenarioRunner};
use crate::schedule::{FileOrder, Replay, Scheduler};
use crate::target::started::InProcessLauncher;

/// What to replay.
#[derive(clap::Args, Clone, Debug)]
pub struct ReplayArgs {
    /// A recorded run (`traces/<ID>.json`) or a scenario file (`.toml`).
    pub record: PathBuf,
    /// Where to find the scenario by id when the recorded file has moved.
    #[arg(long, default_value = "scenarios", env = "HARBOR_SCENARIOS")]
    pub scenarios_dir: PathBuf,
    /// Replay this many times; every run must give the recorded signature.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Which backend to provision with.
    #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
    pub backend: BackendChoice,
    /// Replay against the service with this seeded flaw on (repeatable; needs `--features flaws`).
    #[arg(long = "flaw")]
    pub flaws: Vec<String>,
}

/// The scenario and the record to hold the replay to (none for a scenario file).
fn resolve(args: &ReplayArgs) -> Result<(LoadedScenario, Option<RecordedRun>), String> {
    let is_toml = args.record.extension().is_some_and(|e| e == "toml");
    if is_toml {
        return Ok((
            load::load_file(&args.record).map_err(|e| e.to_string())?,
            None,
        ));
    }
    let text = std::fs::read_to_string(&args.record)
        .map_err(|e| format!("{}: {e}", args.record.display()))?;
    let recorded: RecordedRun = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a recorded run: {e}", args.record.display()))?;
    let by_file = load::load_file(std::path::Path::new(&recorded.file));
    let loaded = match by_file {
        Ok(l) if l.scenario.id == recorded.scenario => l,
        _ => {
            let files = load::scenario_files(&args.scenarios_dir)
                .map_err(|e| format!("{}: {e}", args.scenarios_dir.display()))?;
            let all = load::load_all(&files).map_err(|errors| {
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            all.into_iter()
                .find(|s| s.scenario.id == recorded.scenario)
                .ok_or_else(|| {
                    format!(
                        "no scenario {} at {} or in {}",
                        recorded.scenario,
                        recorded.file,
                        args.scenarios_dir.display()
                    )
                })?
        }
    };
    Ok((loaded, Some(recorded)))
}

/// Replays and compares.
pub async fn replay(args: ReplayArgs) -> ExitCode {
    let (loaded, recorded) = match resolve(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("harbor-certify: {e}");
            return ExitCode::from(CANNOT_RUN);
        }
    };
    let flaws = match parse_flaws(&args.flaws) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let mut infra = match provision_or_explain(args.backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    let launcher = InProcessLauncher::new(&infra).with_flaws(flaws);
    let runner = ScenarioRunner::new(&launcher, LOGS.get().cloned());
    let mut expected = recorded.as_ref().map(|r| r.signature.clone());
    let mut ok = true;
    // A scenario file has no recorded signature to hold the run to: then its failures count.
    let judged_on_failures = recorded.is_none();
    for n in 1..=args.repeat.max(1) {
        let mut scheduler: Box<dyn Scheduler> = match &recorded {
            Some(r) => Box::new(Replay::exact(&r.schedule)),
            None => Box::new(FileOrder),
        };
        let run = runner.run_scheduled(&loaded, scheduler.as_mut()).await;
        let signature = run.trace.signature();
        let verdict = if run.failures.is_empty() {
            "passed"
        } else {
            "failed"
        };
        ok &= !judged_on_failures || run.failures.is_empty();
        println!(
            "replay {n}: {} {verdict}, schedule {} ({} trace lines)",
            loaded.scenario.id,
            run.trace.schedule,
            signature.len()
        );
        for f in &run.failures {
            println!("        {}: {}", f.place(), f.message);
        }
        match &expected {
            Some(want) if *want != signature => {
                let at = want
                    .iter()
                    .zip(&signature)
                    .position(|(a, b)| a != b)
                    .unwrap_or(want.len().min(signature.len()));
                println!(
                    "        DIFFERENT TRACE at line {}: recorded {:?}, replayed {:?}",
                    at + 1,
                    want.get(at),
                    signature.get(at)
                );
                ok = false;
            }
            Some(_) => println!("        same trace signature as recorded"),
            None => expected = Some(signature),
        }
    }
    infra.shutdown().await;
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_CERTIFIED)
    }
}
