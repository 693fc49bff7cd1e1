//! `harbor-certify target check`: what a target offering some capabilities would get of the
//! catalogue — which scenarios and specs would run, which would be SKIPPED and why, and which
//! audit areas would then rest on nothing. The capabilities are named on the command line today
//! (`--offers`); a target profile will name them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::catalogue::AREAS;
use crate::target::{lacks, Capability};

/// The target subcommands.
#[derive(clap::Subcommand)]
pub enum TargetCommand {
    /// Print the capability table and what of the catalogue a target offering them would run.
    Check(CheckArgs),
}

/// What the target offers, and where the catalogue is.
#[derive(clap::Args, Clone, Debug)]
pub struct CheckArgs {
    /// The capabilities the target offers, besides answering HTTP (default: every one, as the
    /// in-process reference service does).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub offers: Option<Vec<Capability>>,
    /// Where the scenario files are.
    #[arg(long, default_value = "scenarios", env = "HARBOR_SCENARIOS")]
    pub scenarios_dir: PathBuf,
}

/// Runs a target subcommand.
pub fn target(command: TargetCommand) -> ExitCode {
    match command {
        TargetCommand::Check(args) => check(args),
    }
}

fn name(c: Capability) -> String {
    use clap::ValueEnum;
    c.to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

fn check(args: CheckArgs) -> ExitCode {
    let offered: BTreeSet<Capability> = args
        .offers
        .map_or_else(|| Capability::ALL.into(), |o| o.into_iter().collect());
    let (all, specs) = match super::specs::whole_catalogue(&args.scenarios_dir) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!(
        "{:<18} {:<8} what it lets the harness do",
        "capability", "offered"
    );
    for c in Capability::ALL {
        let yes = if offered.contains(&c) { "yes" } else { "no" };
        println!("{:<18} {:<8} {}", name(c), yes, c.describe());
    }
    // (area → (run, skipped)), and each SKIPPED item with its first missing capability.
    let mut areas: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut run = 0;
    let mut items: Vec<(String, String, BTreeSet<Capability>)> = all
        .iter()
        .map(|s| {
            let sc = &s.scenario;
            (sc.id.clone(), sc.area.clone(), sc.requires())
        })
        .collect();
    for s in &specs {
        items.push((
            super::specs::id_of(&s.name),
            super::specs::SPEC_AREA.to_owned(),
            BTreeSet::from([Capability::Database]),
        ));
    }
    for (id, area, needs) in &items {
        let entry = areas.entry(area.clone()).or_default();
        match needs.iter().find(|c| !offered.contains(c)) {
            None => {
                run += 1;
                entry.0 += 1;
            }
            Some(missing) => {
                entry.1 += 1;
                skipped.push(format!("  SKIPPED  {id:<44} {}", lacks(*missing)));
            }
        }
    }
    println!(
        "\nthe catalogue: {} scenario(s) and {} spec(s); {run} would run, {} would be SKIPPED",
        all.len(),
        specs.len(),
        skipped.len()
    );
    for line in &skipped {
        println!("{line}");
    }
    println!("\n{:<24} {:>4} {:>8}", "area", "run", "skipped");
    for area in AREAS {
        let (r, s) = areas.get(area.key).copied().unwrap_or_default();
        let note = if r == 0 { "  ← not covered" } else { "" };
        println!("{:<24} {r:>4} {s:>8}{note}", area.key);
    }
    ExitCode::SUCCESS
}
