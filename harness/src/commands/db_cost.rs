//! `harbor-certify db-cost`: what each kind of request costs the database, counted on the wire
//! (`crate::db_cost`): printed as a table, written as `db-cost.json` and `db-cost.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{provision_or_explain, CANNOT_RUN};
use crate::provision::BackendChoice;

/// How to measure.
#[derive(clap::Args, Clone, Debug)]
pub struct DbCostArgs {
    /// Requests of each kind (each on a workspace made ready for it).
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
    /// Where `db-cost.json` and `db-cost.md` are written.
    #[arg(long, default_value = "reports/db-cost")]
    pub out: PathBuf,
    /// Which backend to provision with.
    #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
    pub backend: BackendChoice,
}

/// Measures and writes the table.
pub async fn db_cost(args: DbCostArgs) -> ExitCode {
    let mut infra = match provision_or_explain(args.backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    let measured = crate::db_cost::measure(&infra, args.requests).await;
    infra.shutdown().await;
    let rows = match measured {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("harbor-certify: db-cost could not measure: {e}");
            return ExitCode::from(CANNOT_RUN);
        }
    };
    let table = crate::db_cost::markdown(&rows);
    print!("{table}");
    let written = std::fs::create_dir_all(&args.out)
        .and_then(|()| {
            let json = serde_json::to_string_pretty(&rows).map_err(std::io::Error::other)?;
            std::fs::write(args.out.join("db-cost.json"), json)
        })
        .and_then(|()| std::fs::write(args.out.join("db-cost.md"), &table));
    if let Err(e) = written {
        eprintln!("harbor-certify: {}: {e}", args.out.display());
        return ExitCode::from(CANNOT_RUN);
    }
    ExitCode::SUCCESS
}
