//! Certification reports: one folder per run under the output directory (`<UTC timestamp>/`, with a
//! `latest` link), holding `report.json` (versioned schema, documented in `reports/README.md`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::scenario::{ScenarioResult, Verdict};

/// The version of `report.json`'s schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Counts over the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Scenarios selected.
    pub total: usize,
    /// Passed (every repetition, same trace).
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Flaky (repetitions disagreed).
    pub flaky: usize,
    /// Could not run (environment).
    pub errors: usize,
    /// Skipped (never: the harness does not skip; kept for schema stability).
    pub skipped: usize,
    /// Repetitions of each scenario.
    pub repeat: usize,
    /// Wall time of the whole run, provisioning included, in milliseconds.
    pub duration_ms: f64,
    /// Time to provision PostgreSQL and Redis, in milliseconds.
    pub provision_ms: f64,
    /// The five slowest scenarios: id and mean run time in milliseconds.
    pub slowest: Vec<(String, f64)>,
}

/// Where and against what the run happened.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Environment {
    /// `docker`, `local` or `external`.
    pub backend: String,
    /// `SHOW server_version`.
    pub postgres_version: String,
    /// Redis's `redis_version`.
    pub redis_version: String,
    /// Image names (docker backend).
    pub images: Option<Vec<String>>,
    /// The service's crate version.
    pub service_version: String,
    /// `git rev-parse HEAD` of the working tree, if it is a git checkout.
    pub git_commit: Option<String>,
    /// Seeded flaws enabled in the service under test (empty for a certification run).
    pub flaws: Vec<String>,
    /// Host name.
    pub host: String,
    /// Operating system and architecture.
    pub platform: String,
}

/// A whole certification run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `PASS` when every scenario passed, else `FAIL`.
    pub verdict: &'static str,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// Counts and timings.
    pub summary: Summary,
    /// The environment.
    pub environment: Environment,
    /// Every scenario's result, in run order.
    pub scenarios: Vec<ScenarioResult>,
}

impl Report {
    /// Builds the report from the results.
    pub fn new(started_at: chrono::DateTime<chrono::Utc>, environment: Environment, scenarios: Vec<ScenarioResult>, repeat: usize, duration_ms: f64, provision_ms: f64) -> Self {
        let count = |v: Verdict| scenarios.iter().filter(|s| s.verdict == v).count();
        let mut slowest: Vec<(String, f64)> = scenarios.iter().map(|s| (s.id.clone(), s.duration_ms)).collect();
        slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
        slowest.truncate(5);
        let summary = Summary {
            total: scenarios.len(),
            passed: count(Verdict::Passed),
            failed: count(Verdict::Failed),
            flaky: count(Verdict::Flaky),
            errors: count(Verdict::Error),
            skipped: 0,
            repeat,
            duration_ms,
            provision_ms,
            slowest,
        };
        let verdict = if summary.passed == summary.total && summary.total > 0 { "PASS" } else { "FAIL" };
        Self { schema_version: SCHEMA_VERSION, verdict, started_at: started_at.to_rfc3339(), summary, environment, scenarios }
    }
}

/// The environment facts that do not depend on the servers.
pub fn host_environment() -> Environment {
    let git_commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    Environment {
        service_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit,
        host: std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "unknown".into()),
        platform: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
        ..Environment::default()
    }
}

/// Creates `out/<UTC timestamp>/`, writes `report.json` into it and points `out/latest` at it.
/// Returns the run's folder.
pub fn write_run(out: &Path, report: &Report) -> std::io::Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let dir = out.join(&stamp);
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json)?;
    let latest = out.join("latest");
    let _ = std::fs::remove_file(&latest);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&stamp, &latest)?;
    Ok(dir)
}
