//! `harbor-certify proptest`: the state machine against the real service, and its kill matrix.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{parse_flaws, provision_or_explain};
use crate::provision::BackendChoice;

/// How the state machine runs.
#[derive(clap::Args, Clone, Debug)]
pub struct ProptestArgs {
    /// Which backend to provision with.
    #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
    pub backend: BackendChoice,
    /// Cases (sequences) per run (at least one: a run of none would pass having checked nothing).
    #[arg(long, env = "PROPTEST_CASES", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub cases: u32,
    /// Longest sequence.
    #[arg(long, default_value_t = 24)]
    pub max_ops: usize,
    /// Replay this seed exactly (printed by every run).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run against the service with this seeded flaw on (repeatable; needs `--features flaws`).
    #[arg(long = "flaw")]
    pub flaws: Vec<String>,
    /// Also run each flaw the state machine can see; each must make it fail (the in-process
    /// reference only).
    #[arg(long, conflicts_with = "profile")]
    pub kill_matrix: bool,
    /// Which target: the in-process reference, or a profile's.
    #[command(flatten)]
    pub target: super::TargetArgs,
}

/// Runs the state machine (and its kill matrix).
pub async fn proptest(args: ProptestArgs) -> ExitCode {
    use crate::statemachine::{self, Options};
    let flaws = match parse_flaws(&args.flaws) {
        Ok(f) => f,
        Err(code) => return code,
    };
    // A target with its own schema is held to the model through its state queries (the QuickBooks
    // status, the activations), the lock tables and the provider's counters; the oracles that
    // read the reference's tables, Redis keys and token format are left out, and said so.
    let profile = match args.target.load(&flaws, super::Oracles::Any) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Some(p) = &profile {
        use crate::target::Capability;
        let offered = p.capabilities();
        for needed in statemachine::NEEDED {
            if let Err(why) = &offered[&needed] {
                eprintln!(
                    "harbor-certify: {}: the state machine needs {} ({why})",
                    p.path.display(),
                    needed.describe()
                );
                return ExitCode::from(super::CANNOT_RUN);
            }
        }
        if offered[&Capability::ReferenceSchema].is_err() {
            for off in statemachine::OFF_WITHOUT_REFERENCE_SCHEMA {
                eprintln!("harbor-certify: oracle not run on {}: {off}", p.title());
            }
        }
    }
    let mut infra = match provision_or_explain(args.backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    // Failing seeds of the reference are kept (and replayed first); another target's would be
    // replayed against the reference's next run, so they are printed, not kept.
    let persistence =
        (flaws.is_empty() && profile.is_none()).then(|| PathBuf::from(statemachine::REGRESSIONS));
    let options = Options {
        cases: args.cases,
        max_ops: args.max_ops,
        flaws,
        seed: args.seed,
        persistence,
        max_shrink_iters: 256,
    };
    let (report, ok) = if args.kill_matrix {
        statemachine::kill_matrix(&infra, &options)
    } else {
        let launcher = args
            .target
            .launcher(&infra, profile.as_ref(), options.flaws.clone());
        let outcome = statemachine::run(launcher.as_ref(), &options);
        let mut report = statemachine::describe("state machine", &outcome);
        // A failure is saved as a scenario written against the reference's schema (and replayed
        // on the reference): on a target with its own, the sequence printed above is the record.
        let reference_schema = profile.as_ref().is_none_or(|p| {
            p.offered()
                .contains(&crate::target::Capability::ReferenceSchema)
        });
        let saved = reference_schema
            .then(|| {
                statemachine::save_failure(
                    std::path::Path::new("reports/proptest"),
                    "run",
                    &outcome,
                )
            })
            .flatten();
        if let Some(saved) = saved {
            report.push('\n');
            // The replay runs what this run ran: the same flaws, on the same target.
            let mut again: Vec<String> = args.flaws.iter().map(|f| format!("--flaw {f}")).collect();
            if let Some(p) = &args.target.profile {
                again.push(format!("--target {}", p.display()));
                if let Some(mode) = &args.target.target_mode {
                    again.push(format!("--target-mode {mode}"));
                }
            }
            report.push_str(&statemachine::saved_line(&saved, &again.join(" ")));
        }
        (report, outcome.failure.is_none())
    };
    infra.shutdown().await;
    println!("{report}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::NOT_CERTIFIED)
    }
}
