//! `harbor-certify list`: every scenario's id and title, after checking the files.

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
    match super::load(&args.scenarios_dir) {
        Ok(all) => {
            for s in all {
                println!("{}\t{}", s.scenario.id, s.scenario.title);
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
