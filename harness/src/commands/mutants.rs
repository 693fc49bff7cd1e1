//! `harbor-certify mutants`: the catalogue against the correct build and each seeded flaw; the
//! kill matrix.

use std::process::ExitCode;
use std::time::Instant;

use super::{environment_of, load, provision_or_explain, CatalogueArgs, LOGS};
use crate::report::{self, Report};
use crate::scenario;
use crate::scenario::format::Severity;
use crate::scenario::run::ScenarioRunner;
use crate::target::started::InProcessLauncher;

/// What `mutants` runs.
#[derive(clap::Args, Clone, Debug)]
pub struct MutantsArgs {
    /// Only these flaws (default: every seeded flaw).
    #[arg(long = "flaw")]
    pub flaws: Vec<String>,
    /// Scenarios run at once.
    #[arg(long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub jobs: usize,
    /// Run each flaw only against the scenarios that name it in `catches` — the ones the verdict
    /// rests on (much faster; the matrix then lists no incidental kills).
    #[arg(long)]
    pub catching_only: bool,
    /// Where the catalogue comes from and where results go.
    #[command(flatten)]
    pub catalogue: CatalogueArgs,
}

/// Runs the kill matrix and writes the report with it.
pub async fn mutants(args: MutantsArgs) -> ExitCode {
    use harbor_service::flaws::{self, Flaw};
    if !flaws::COMPILED_IN {
        eprintln!(
            "harbor-certify: this build has no seeded flaws; run `cargo run -p harbor-harness --features flaws --bin harbor-certify -- mutants`"
        );
        return ExitCode::from(super::CANNOT_RUN);
    }
    let mut chosen = Vec::new();
    for name in &args.flaws {
        match Flaw::parse(name) {
            Some(f) => chosen.push(f),
            None => {
                let all: Vec<&str> = Flaw::ALL.iter().map(|f| f.name()).collect();
                eprintln!(
                    "harbor-certify: unknown flaw {name:?}; the flaws are {}",
                    all.join(", ")
                );
                return ExitCode::from(super::CANNOT_RUN);
            }
        }
    }
    if chosen.is_empty() {
        chosen = Flaw::ALL.to_vec();
    }
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let all = match load(&args.catalogue.scenarios_dir) {
        Ok(all) => all,
        Err(code) => return code,
    };
    let signing_key = match args.catalogue.signing_key() {
        Ok(k) => k,
        Err(code) => return code,
    };
    let mut infra = match provision_or_explain(args.catalogue.backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    let provision_ms = started.elapsed().as_secs_f64() * 1000.0;
    eprintln!(
        "harbor-certify: mutants: {} scenarios against the correct build and {} seeded flaw(s), {} at a time, on {}",
        all.len(),
        chosen.len(),
        args.jobs,
        infra.kind
    );
    let launcher = InProcessLauncher::new(&infra);
    let runner = ScenarioRunner::new(&launcher, LOGS.get().cloned());
    let (baseline, matrix) = crate::mutants::run(
        &infra,
        runner,
        &all,
        &chosen,
        args.jobs,
        args.catching_only,
        |label, results| {
            let failed: Vec<&str> = results
                .iter()
                .filter(|r| r.verdict != scenario::Verdict::Passed)
                .map(|r| r.id.as_str())
                .collect();
            println!(
                "{label:<26} {} of {} scenarios failed{}",
                failed.len(),
                results.len(),
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(": {}", failed.join(", "))
                }
            );
        },
    )
    .await;
    let environment = environment_of(&infra, &[]);
    infra.shutdown().await;
    println!("\nkill matrix ({:.0} s):", matrix.duration_ms / 1000.0);
    println!("{:<26} {:<17} caught by (expected: …)", "flaw", "status");
    for row in &matrix.flaws {
        println!(
            "{:<26} {:<17} {} (expected: {})",
            row.flaw,
            row.status.as_str(),
            row.caught_by.join(", "),
            row.expected.join(", ")
        );
        for id in row.expected.iter().filter(|id| row.caught_by.contains(id)) {
            println!(
                "{:<44} {id}: {}",
                "",
                row.evidence.get(id).map(String::as_str).unwrap_or("")
            );
        }
    }
    println!("correct build: {}", matrix.correct_build);
    // What failed on the correct build, and why: the run is void without it, and a CI log may
    // be all there is to read.
    for r in baseline
        .iter()
        .filter(|r| r.verdict != scenario::Verdict::Passed)
    {
        println!("  {} {}", r.verdict.as_str(), r.id);
        for f in r.failures.iter().take(3) {
            for line in f.message.lines().take(6) {
                println!("      {line}");
            }
        }
        if let Some(why) = &r.flaky {
            println!("      {why}");
        }
    }
    for s in &matrix.survivors {
        let row = matrix
            .flaws
            .iter()
            .find(|r| &r.flaw == s)
            .expect("a survivor has a row");
        println!(
            "SURVIVOR: {s} — should have been caught by {}",
            if row.expected.is_empty() {
                "a scenario naming it in `catches` (none does)".to_owned()
            } else {
                row.expected.join(", ")
            }
        );
    }
    let mut report = Report::new(
        started_at,
        environment,
        baseline,
        1,
        Severity::Low,
        started.elapsed().as_secs_f64() * 1000.0,
        provision_ms,
    );
    report.mutants = serde_json::to_value(&matrix).ok();
    // The correct build's run is the matrix's baseline, not a certificate: it runs no isolation
    // spec, and a survivor leaves the matrix unproven whatever the baseline did.
    report.selection =
        Some("the kill matrix's correct-build run, without the isolation specs".into());
    if !matrix.is_good() {
        report.not_certified(format!(
            "the kill matrix is not proven: {} survivor(s), correct build {}",
            matrix.survivors.len(),
            matrix.correct_build
        ));
    }
    let mutants_json = serde_json::to_string_pretty(&matrix).unwrap_or_default();
    match report::write_run(
        &args.catalogue.out,
        &report,
        &[("mutants.json", mutants_json)],
        signing_key.as_ref(),
    ) {
        Ok(dir) => println!(
            "report: {} (mutants.json and a kill-matrix section in report.md/html)",
            dir.display()
        ),
        Err(e) => {
            eprintln!(
                "harbor-certify: cannot write the report under {}: {e}",
                args.catalogue.out.display()
            );
            return ExitCode::from(super::CANNOT_RUN);
        }
    }
    if matrix.is_good() {
        println!("MUTANTS: every seeded flaw was caught by the scenario that names it");
        ExitCode::SUCCESS
    } else {
        println!(
            "MUTANTS: NOT PROVEN ({} survivor(s), correct build {})",
            matrix.survivors.len(),
            matrix.correct_build
        );
        ExitCode::from(super::NOT_CERTIFIED)
    }
}
