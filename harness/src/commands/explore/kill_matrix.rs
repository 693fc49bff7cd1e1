//! `--kill-matrix`: exploration run on the correct build and then once per seeded flaw, each flaw
//! to be found, its saved schedule to reproduce it and not to fail at its end (its assertions) on
//! the correct build; and the check
//! that schedules explored side by side (`--lanes`) still find a flaw.

use super::*;

/// The kill matrix's check of `--lanes`: schedules explored side by side must still find a flaw.
#[derive(serde::Serialize)]
struct SideBySide {
    flaw: String,
    caught: bool,
    sets: usize,
    sets_expected: usize,
    sets_found: usize,
    schedules: usize,
}

/// Explores every set that may run beside others, every schedule of each, `options.lanes`
/// schedules at once, on the build that keeps OAuth states in one replica's memory: a callback on the other
/// replica finds no state in any schedule, so every such set with a callback must show it. A run
/// side by side that hid it in any set fails. `None` when no set that may share the service has
/// a callback on a second replica (nothing to check).
async fn side_by_side(
    target: &crate::commands::ChosenTarget<'_>,
    options: &Options,
) -> Result<Option<SideBySide>, String> {
    let flaw = Flaw::MemoryStateStore;
    let flaws =
        Flaws::enable([flaw]).map_err(|e| format!("{e}; rebuild with `--features flaws`"))?;
    let sets: Vec<Vec<Operation>> = options
        .sets
        .iter()
        .filter(|s| !explore::runs_alone(s))
        .cloned()
        .collect();
    let expected: std::collections::BTreeSet<Vec<Operation>> = sets
        .iter()
        .filter(|s| s.contains(&Operation::Callback))
        .cloned()
        .collect();
    if expected.is_empty() || options.replicas < 2 {
        return Ok(None);
    }
    let one = Options {
        sets,
        flaws,
        save_dir: None,
        stop_at_first: false,
        ..options.clone()
    };
    let report =
        explore::explore(target.launcher(one.flaws.clone()).as_ref(), &one, |_, _| {}).await?;
    let found: std::collections::BTreeSet<Vec<Operation>> = report
        .violations
        .iter()
        .filter(|v| v.anomaly == Anomaly::NotSerializable)
        .map(|v| v.operations.clone())
        .collect();
    Ok(Some(SideBySide {
        flaw: flaw.name().into(),
        caught: found == expected,
        sets: one.sets.len(),
        sets_expected: expected.len(),
        sets_found: found.len(),
        schedules: report.schedules_explored,
    }))
}

/// One row of the exploration's kill matrix.
#[derive(serde::Serialize)]
struct KillRow {
    flaw: String,
    caught: bool,
    anomalies: Vec<String>,
    schedules: usize,
    found_after: Option<usize>,
    set: Option<Vec<Operation>>,
    saved_file: Option<String>,
    reproduces: Option<bool>,
    passes_on_correct_build: Option<bool>,
    /// Whether it fails at its end (or cannot run) on the correct build too.
    flags_correct_build: Option<bool>,
}

pub(super) async fn kill_matrix(
    target: &crate::commands::ChosenTarget<'_>,
    options: Options,
    dir: &std::path::Path,
) -> ExitCode {
    let started = Instant::now();
    let correct = match run_reported(target, &options, "correct build").await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("harbor-certify: explore could not run: {e}");
            return ExitCode::from(CANNOT_RUN);
        }
    };
    print_summary("correct build", &correct);
    let mut ok = correct.violations.is_empty();
    // A correct build called silent must have been explored whole: a set cut short or one the
    // target could not serve is silence nobody listened for.
    let short = super::incomplete_sets(&correct, options.mode);
    if !short.is_empty() || !correct.skipped.is_empty() {
        println!(
            "correct build NOT EXPLORED WHOLE: {} set(s) cut short{}, {} skipped",
            short.len(),
            if short.is_empty() {
                String::new()
            } else {
                format!(" ({})", short.join("; "))
            },
            correct.skipped.len()
        );
        ok = false;
    }
    let mut rows = Vec::new();
    let flaws_to_kill = if options.lock_probes {
        PROBE_FLAWS
    } else {
        ORDERING_FLAWS
    };
    for flaw in flaws_to_kill {
        let flaws = match Flaws::enable([*flaw]) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("harbor-certify: {e}; rebuild with `--features flaws`");
                return ExitCode::from(CANNOT_RUN);
            }
        };
        // Sets in turn until the first violation: how many schedules it takes is the figure.
        let mut row = KillRow {
            flaw: flaw.name().into(),
            caught: false,
            anomalies: Vec::new(),
            schedules: 0,
            found_after: None,
            set: None,
            saved_file: None,
            reproduces: None,
            passes_on_correct_build: None,
            flags_correct_build: None,
        };
        for set in &options.sets {
            let one = Options {
                sets: vec![set.clone()],
                flaws: flaws.clone(),
                save_dir: Some(dir.join("found").join(flaw.name())),
                ..options.clone()
            };
            let mut report = match explore::explore(
                target.launcher(one.flaws.clone()).as_ref(),
                &one,
                |_, _| {},
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!(
                        "harbor-certify: explore ({}) could not run: {e}",
                        flaw.name()
                    );
                    return ExitCode::from(CANNOT_RUN);
                }
            };
            // Only an anomaly about the service's behaviour counts: a hang (a settle that timed out
            // on a loaded machine) or a 5xx alone may be the harness's own trouble.
            let semantic = |a: &crate::explore::anomaly::Anomaly| {
                !matches!(
                    a,
                    crate::explore::anomaly::Anomaly::Hang
                        | crate::explore::anomaly::Anomaly::ServerError
                )
            };
            let explored = target.launcher(one.flaws.clone());
            let correct = target.launcher(Default::default());
            let correct = (!one.flaws.is_empty()).then_some(correct.as_ref());
            explore::check_saved(explored.as_ref(), correct, &mut report).await;
            if let Some(v) = report.violations.iter().find(|v| semantic(&v.anomaly)) {
                row.caught = true;
                row.found_after = Some(row.schedules + v.found_after);
                row.anomalies = report
                    .violations
                    .iter()
                    .map(|v| v.anomaly.as_str().to_owned())
                    .collect();
                row.set = Some(set.clone());
                row.saved_file = v.saved_file.clone();
                row.reproduces = v.reproduces;
                row.passes_on_correct_build = v.passes_on_correct_build;
                row.flags_correct_build = v.flags_correct_build;
                row.schedules += report.schedules_explored;
                break;
            }
            row.schedules += report.schedules_explored;
        }
        // A flaw counts as killed when the violation is found and its saved file, run again, fails
        // on the flawed build, and on the correct one fails neither at its end nor where and as it
        // failed on the flawed build: a find that does not replay is no evidence a reader can
        // rerun, and one that fails the same on the correct build says nothing about the flaw. (The correct build may refuse the
        // flawed schedule at a step — block, answer or return where the flawed one did not —
        // and the exploration of the correct build above is the evidence it never shows the
        // anomaly on any schedule.)
        let replays = row.reproduces == Some(true);
        let discriminates = row.flags_correct_build == Some(false);
        ok &= row.caught && replays && discriminates;
        println!(
            "{:<26} {:<9} after {:>4} schedule(s){}",
            row.flaw,
            match (row.caught, replays, discriminates) {
                (true, true, true) => "KILLED",
                (true, false, _) => "NOT REPLAYED",
                (true, true, false) => "FAILS ON THE CORRECT BUILD TOO",
                (false, _, _) => "SURVIVED",
            },
            row.found_after.unwrap_or(row.schedules),
            row.set
                .as_ref()
                .map(|s| format!(
                    " on {}: {}",
                    s.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(" + "),
                    row.anomalies.join(", ")
                ))
                .unwrap_or_default()
        );
        if row.saved_file.is_some() {
            println!(
                "{:<26} saved file reproduces: {}, passes on the correct build: {}, its end fails there: {}",
                "",
                yes_no(row.reproduces),
                yes_no(row.passes_on_correct_build),
                yes_no(row.flags_correct_build)
            );
        }
        rows.push(row);
    }
    let side_by_side = if options.lanes > 1 && !options.lock_probes {
        match side_by_side(target, &options).await {
            Ok(row) => row,
            Err(e) => {
                eprintln!("harbor-certify: explore (side by side) could not run: {e}");
                return ExitCode::from(CANNOT_RUN);
            }
        }
    } else {
        None
    };
    if let Some(row) = &side_by_side {
        ok &= row.caught;
        println!(
            "{:<26} {:<9} with {} schedules at once on each of {} service(s): found on {} of the {} sets with a callback (each must show it), of {} sets side by side, {} schedules",
            row.flaw,
            if row.caught { "KILLED" } else { "SURVIVED" },
            options.lanes,
            options.services,
            row.sets_found,
            row.sets_expected,
            row.sets,
            row.schedules
        );
    }
    let killed = rows.iter().filter(|r| r.caught).count();
    println!(
        "explore kill matrix: correct build {} ({} schedules), {killed}/{} {} flaws killed, {:.1} s",
        if correct.violations.is_empty() { "silent" } else { "NOT SILENT" },
        correct.schedules_explored,
        rows.len(),
        if options.lock_probes { "lock-probe" } else { "ordering" },
        started.elapsed().as_secs_f64()
    );
    let matrix = serde_json::json!({ "correct_build": correct, "flaws": rows, "side_by_side": side_by_side, "duration_ms": started.elapsed().as_secs_f64() * 1000.0 });
    if let Err(e) = write(dir, "explore.json", &matrix) {
        eprintln!("harbor-certify: {e}");
        return ExitCode::from(CANNOT_RUN);
    }
    println!("report: {}/explore.json", dir.display());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_CERTIFIED)
    }
}
