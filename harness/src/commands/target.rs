//! `harbor-certify target check [PROFILE]`: what a target would get of the catalogue — its
//! capability table (from its profile, with the reason for each, or from `--offers`), which
//! scenarios and specs would run, which would be SKIPPED and why, and which audit areas would then
//! rest on nothing. With `--start`, it also starts the profile's target once and tries what the
//! profile says: readiness, fixtures, the workspace lock, tokens, the sync-point protocol.

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
    /// A target profile (`docs/TARGET-PROFILE.md`): the capabilities are the ones it offers.
    pub profile: Option<PathBuf>,
    /// Start the profile's target once and try what the profile says (needs PostgreSQL and
    /// Redis, provisioned like a run's).
    #[arg(long, requires = "profile")]
    pub start: bool,
    /// The mode to start the profile's target in (one of its `target.modes`).
    #[arg(long, requires = "profile")]
    pub target_mode: Option<String>,
    /// Which backend to provision with (for `--start`).
    #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
    pub backend: crate::provision::BackendChoice,
    /// The capabilities the target offers, besides answering HTTP (default: every one, as the
    /// in-process reference service does).
    #[arg(long, value_enum, value_delimiter = ',', conflicts_with = "profile")]
    pub offers: Option<Vec<Capability>>,
    /// Where the scenario files are.
    #[arg(long, default_value = "scenarios", env = "HARBOR_SCENARIOS")]
    pub scenarios_dir: PathBuf,
}

/// Runs a target subcommand.
pub async fn target(command: TargetCommand) -> ExitCode {
    match command {
        TargetCommand::Check(args) => check(args).await,
    }
}

async fn check(args: CheckArgs) -> ExitCode {
    let profile = match super::load_profile(
        args.profile.as_deref(),
        args.target_mode.as_deref(),
        &Default::default(),
        super::Oracles::Any,
    ) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (all, specs) = match super::specs::whole_catalogue(&args.scenarios_dir) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let offered: BTreeSet<Capability> = match (&profile, &args.offers) {
        (Some(p), _) => p.offered(),
        (None, Some(o)) => o.iter().copied().collect(),
        (None, None) => Capability::ALL.into(),
    };
    if let Some(p) = &profile {
        let reached = match &p.deployed {
            Some(d) => format!("deployed at: {}", d.urls.join(", ")),
            None => format!("started by: {}", p.lifecycle.command.join(" ")),
        };
        println!(
            "target {} — {} (sha256 {})
  {reached}
",
            p.name,
            p.path.display(),
            p.digest,
        );
        println!("{:<18} {:<8} why", "capability", "offered");
        for (c, why) in p.capabilities() {
            match why {
                Ok(how) => println!("{:<18} {:<8} {how}", c.name(), "yes"),
                Err(why) => println!("{:<18} {:<8} {why}", c.name(), "no"),
            }
        }
    } else {
        println!(
            "{:<18} {:<8} what it lets the harness do",
            "capability", "offered"
        );
        for c in Capability::ALL {
            let yes = if offered.contains(&c) { "yes" } else { "no" };
            println!("{:<18} {:<8} {}", c.name(), yes, c.describe());
        }
    }
    // (area → (run, skipped)), and each SKIPPED item with its first missing capability.
    let mut areas: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut run = 0;
    // (id, area, why it would be SKIPPED)
    let mut items: Vec<(String, String, Option<String>)> = all
        .iter()
        .map(|s| {
            let sc = &s.scenario;
            let why = match sc.requires().iter().find(|c| !offered.contains(c)) {
                Some(missing) => Some(lacks(*missing)),
                None => profile.as_ref().and_then(|p| p.cannot_set(&sc.setup())),
            };
            (sc.id.clone(), sc.area.clone(), why)
        })
        .collect();
    for s in &specs {
        let why = super::specs::missing(&offered, &[]).map(lacks);
        items.push((
            super::specs::id_of(&s.name),
            super::specs::SPEC_AREA.to_owned(),
            why,
        ));
    }
    for (id, area, why) in &items {
        let entry = areas.entry(area.clone()).or_default();
        match why {
            None => {
                run += 1;
                entry.0 += 1;
            }
            Some(why) => {
                entry.1 += 1;
                skipped.push(format!("  SKIPPED  {id:<44} {why}"));
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
    println!("\n{:<18} {:<5} how, or why not", "technique", "runs");
    for (technique, verdict) in techniques(&offered, profile.as_deref()) {
        match verdict {
            Ok(how) => println!("{technique:<18} {:<5} {how}", "yes"),
            Err(why) => println!("{technique:<18} {:<5} {why}", "no"),
        }
    }
    match (&profile, args.start) {
        (Some(p), true) => super::target_start::try_profile(p, args.backend).await,
        _ => ExitCode::SUCCESS,
    }
}

/// What each technique other than the catalogue would do on a target offering `offered`: how it
/// runs, or what it lacks.
fn techniques(
    offered: &BTreeSet<Capability>,
    profile: Option<&crate::target::profile::Profile>,
) -> Vec<(&'static str, Result<String, String>)> {
    let lacking = |needed: &[Capability]| -> Option<String> {
        let missing: Vec<&str> = needed
            .iter()
            .filter(|c| !offered.contains(c))
            .map(|c| c.name())
            .collect();
        (!missing.is_empty()).then(|| format!("needs {}", missing.join(", ")))
    };
    let reference = offered.contains(&Capability::ReferenceSchema);
    let explore = match lacking(&crate::explore::NEEDED) {
        Some(why) => Err(why),
        None if offered.contains(&Capability::SyncPoints) => {
            Ok("at its sync points (or at lock probes alone with --lock-probes)".to_owned())
        }
        None => Ok("at lock probes (it lists no sync points)".to_owned()),
    };
    let proptest = match lacking(&crate::statemachine::NEEDED) {
        Some(why) => Err(why),
        None if reference => Ok("every invariant, on the reference's schema".to_owned()),
        None => Ok("through the state queries (the reference-only invariants left out)".to_owned()),
    };
    let load = match lacking(&[Capability::Database, Capability::ProviderControl]) {
        Some(why) => Err(why),
        None => Ok("HARBOR_LOAD_TARGET=PROFILE cargo xtask load".to_owned()),
    };
    let contract = match profile {
        Some(p) => match &p.openapi {
            Some(path) => Ok(format!(
                "harbor-certify serve --target + Schemathesis, against its {path}"
            )),
            None => Err("the profile names no target.openapi".to_owned()),
        },
        None => Ok("harbor-certify serve + Schemathesis, against /openapi.json".to_owned()),
    };
    vec![
        ("explore", explore),
        ("proptest", proptest),
        ("load (goose)", load),
        ("contract", contract),
    ]
}
