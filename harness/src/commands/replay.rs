//! `harbor-certify replay`: runs a recorded schedule again, exactly, and checks that the trace's
//! signature is the one recorded (a recorded failure replayed is a success: it reproduces). A
//! scenario file replays its own order: every run must then pass with the first run's signature. The record is a run folder's `traces/<ID>.json` (written for every
//! scenario by `run`, and by `mutants` for its correct-build run — a flaw's kill is recorded in
//! `mutants.json` by the failure that caught it, and replayed by rerunning the scenario with that
//! `--flaw`); a scenario file replays its own order.

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
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
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
    if recorded.signature_version != crate::scenario::run::SIGNATURE_VERSION {
        return Err(format!(
            "{} was recorded with trace signature version {}, and this harbor-certify writes version {}: the two cannot be compared (run the scenario again to record it)",
            recorded.scenario,
            recorded.signature_version,
            crate::scenario::run::SIGNATURE_VERSION
        ));
    }
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
    // The steps replayed must be the steps recorded.
    if let Some(recorded_digest) = &recorded.file_sha256 {
        if *recorded_digest != loaded.sha256 {
            return Err(format!(
                "{} ({}) has changed since it was recorded (sha256 {} then, {} now): its steps are not the ones the schedule was recorded on",
                recorded.scenario,
                loaded.file.display(),
                &recorded_digest[..recorded_digest.len().min(16)],
                &loaded.sha256[..16]
            ));
        }
    }
    Ok((loaded, Some(recorded)))
}

/// Whether a replay with `flaws` on the in-process reference runs the build the record was made
/// on: a trace from another build differs for reasons that are not the schedule.
fn same_build(recorded: &RecordedRun, flaws: &[&str]) -> Result<(), String> {
    if let Some(target) = &recorded.target {
        return Err(format!(
            "{} was recorded on the target {target}; replay runs the reference in-process (rerun the scenario with `harbor-certify run --target …`)",
            recorded.scenario
        ));
    }
    let mut wanted: Vec<&str> = recorded.flaws.iter().map(String::as_str).collect();
    let mut given = flaws.to_vec();
    wanted.sort_unstable();
    given.sort_unstable();
    if wanted != given {
        let named = |f: &[&str]| {
            if f.is_empty() {
                "none (the correct build)".to_owned()
            } else {
                f.join(", ")
            }
        };
        return Err(format!(
            "{} was recorded with the flaws {}; this replay has {} (give the same --flaw)",
            recorded.scenario,
            named(&wanted),
            named(&given)
        ));
    }
    Ok(())
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
    if let Some(recorded) = &recorded {
        if let Err(e) = same_build(recorded, &flaws.names()) {
            eprintln!("harbor-certify: {e}");
            return ExitCode::from(CANNOT_RUN);
        }
    }
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
            println!(
                "        {}: {}",
                f.place(),
                crate::untrusted::console(&f.message, "          ")
            );
        }
        let differs = expected
            .as_ref()
            .and_then(|want| crate::scenario::trace::divergence(want, &signature));
        match (&expected, differs) {
            (Some(want), Some(at)) => {
                println!(
                    "        DIFFERENT TRACE at line {}: recorded {:?}, replayed {:?}",
                    at + 1,
                    want.get(at),
                    signature.get(at)
                );
                ok = false;
            }
            (Some(_), None) => println!("        same trace signature as recorded"),
            (None, _) => expected = Some(signature),
        }
    }
    infra.shutdown().await;
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_CERTIFIED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(flaws: &[&str], target: Option<&str>) -> RecordedRun {
        RecordedRun {
            scenario: "S".into(),
            file: "s.toml".into(),
            schedule: crate::schedule::Schedule(vec![0]),
            signature: vec![],
            flaws: flaws.iter().map(|f| (*f).to_owned()).collect(),
            target: target.map(str::to_owned),
            file_sha256: None,
            signature_version: crate::scenario::run::SIGNATURE_VERSION,
        }
    }

    /// A record of a scenario file edited since it ran is refused: its steps are not the ones the
    /// schedule was recorded on. The unedited file replays.
    #[test]
    fn a_record_of_a_file_edited_since_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("S.toml");
        let text = "id = \"S\"\ntitle = \"t\"\nsource = \"s\"\nseverity = \"low\"\narea = \"concurrency\"\n\n[[tenants]]\nname = \"acme\"\n\n[[actors]]\nname = \"A\"\nuser = \"acme.owner\"\n\n[[steps]]\nactor = \"A\"\ndo = \"activate\"\n";
        std::fs::write(&file, text).unwrap();
        let record = RecordedRun {
            file: file.display().to_string(),
            file_sha256: Some(crate::scenario::load::load_file(&file).unwrap().sha256),
            ..recorded(&[], None)
        };
        let path = dir.path().join("S.json");
        std::fs::write(&path, serde_json::to_string(&record).unwrap()).unwrap();
        let args = ReplayArgs {
            record: path,
            scenarios_dir: dir.path().to_owned(),
            repeat: 1,
            backend: BackendChoice::Auto,
            flaws: Vec::new(),
        };
        assert!(resolve(&args).is_ok());
        // A record whose signature was written another way cannot be compared.
        let older = RecordedRun {
            signature_version: 1,
            ..record.clone()
        };
        std::fs::write(&args.record, serde_json::to_string(&older).unwrap()).unwrap();
        let refused = resolve(&args).expect_err("an older signature is refused");
        assert!(refused.contains("signature version 1"), "{refused}");
        std::fs::write(&args.record, serde_json::to_string(&record).unwrap()).unwrap();
        std::fs::write(&file, text.replace("activate", "list_connections")).unwrap();
        let refused = resolve(&args).expect_err("an edited file is refused");
        assert!(
            refused.contains("has changed since it was recorded"),
            "{refused}"
        );
    }

    /// A record replays only on the build it was made on: the same flaws (in any order), the
    /// reference in-process.
    #[test]
    fn a_record_replays_only_on_its_own_build() {
        assert!(same_build(&recorded(&[], None), &[]).is_ok());
        assert!(same_build(&recorded(&["a", "b"], None), &["b", "a"]).is_ok());
        let other = same_build(&recorded(&["no-row-lock"], None), &[]).unwrap_err();
        assert!(
            other.contains("no-row-lock") && other.contains("none (the correct build)"),
            "{other}"
        );
        assert!(same_build(&recorded(&[], None), &["no-row-lock"]).is_err());
        let elsewhere = same_build(&recorded(&[], Some("flask-seed")), &[]).unwrap_err();
        assert!(elsewhere.contains("flask-seed"), "{elsewhere}");
        // A record written before the build was recorded reads as the correct build's.
        let old: RecordedRun = serde_json::from_str(
            r#"{"scenario":"S","file":"s.toml","schedule":[0],"signature":[]}"#,
        )
        .unwrap();
        assert!(same_build(&old, &[]).is_ok());
    }
}
