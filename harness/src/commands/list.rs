//! `harbor-certify list`: every scenario's and isolation spec's id and title, after checking the
//! files (a spec that does not parse fails the listing, naming its line and column).

use std::path::PathBuf;
use std::process::ExitCode;

/// Where the catalogue is.
#[derive(clap::Args, Clone, Debug)]
pub struct ListArgs {
    /// Where the scenario files are.
    #[arg(long, default_value = "scenarios", env = "HARBOR_SCENARIOS")]
    pub scenarios_dir: PathBuf,
}

/// Prints the catalogue.
pub fn list(args: ListArgs) -> ExitCode {
    let (all, specs) = match super::specs::whole_catalogue(&args.scenarios_dir) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for s in all {
        println!("{}\t{}", s.scenario.id, s.scenario.title);
    }
    for s in specs {
        println!("{}\t{}", super::specs::id_of(&s.name), s.title);
    }
    ExitCode::SUCCESS
}
