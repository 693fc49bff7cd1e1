//! Certification reports. One folder per run under the output directory (`<UTC timestamp>/`, and a
//! `latest` link to it, as Jepsen's store does), holding:
//!
//! - `report.json` — [`Report`], versioned by [`SCHEMA_VERSION`], documented in `reports/README.md`
//!   and described by `reports/report.schema.json`;
//! - `report.md` ([`markdown`]) — shaped like the seed audit;
//! - `report.html` ([`html`]) — one self-contained page with a sequence diagram per interleaving;
//! - `junit.xml` ([`junit`]) — one test case per scenario and one for the run's verdict, for CI;
//! - `SHA256SUMS` and, with a signing key, `SHA256SUMS.sig` ([`sign`]).
//!
//! Past 500 lines on purpose: the report's types are its versioned schema, documented field by
//! field and kept in one place; the renderers are in their own files.

pub mod html;
pub mod junit;
pub mod markdown;
pub mod sign;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::scenario::format::Severity;
use crate::scenario::{ScenarioResult, Verdict};

/// The version of `report.json`'s schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Counts over the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Scenarios selected.
    pub total: usize,
    /// Passed (every repetition, same trace).
    pub passed: usize,
    /// Failed at or above the `--fail-on` severity.
    pub failed: usize,
    /// Failed below the `--fail-on` severity: reported, not blocking.
    pub warnings: usize,
    /// Flaky (repetitions disagreed). Always blocking.
    pub flaky: usize,
    /// Could not run (environment).
    pub errors: usize,
    /// Skipped: the target lacks a capability the scenario needs (each says which). Not blocking,
    /// never counted as passed, and listed by the run's summary line.
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
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Environment {
    /// `docker`, `local` or `external`.
    pub backend: String,
    /// `SHOW server_version`.
    pub postgres_version: String,
    /// Redis's `redis_version`.
    pub redis_version: String,
    /// Image names and ids (docker backend).
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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `PASS` when nothing blocking failed and something passed, else `FAIL`.
    pub verdict: RunVerdict,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// Failures at or above this severity make the verdict `FAIL`.
    pub fail_on: Severity,
    /// Counts and timings.
    pub summary: Summary,
    /// The environment.
    pub environment: Environment,
    /// Every scenario's result, in run order.
    pub scenarios: Vec<ScenarioResult>,
    /// The kill matrix of a `harbor-certify mutants` run, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutants: Option<serde_json::Value>,
    /// What exploration (`harbor-certify explore`) established, when the run was given its report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exploration: Option<ExplorationBasis>,
    /// What was certified and with which capabilities: what the certificate rests on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetBasis>,
    /// Why the run is not certified beyond its scenarios' own results: an area left uncovered,
    /// an exploration's violations or shortfall. Each also makes the verdict `FAIL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_certified_because: Vec<String>,
    /// Set when the run was a selection of the catalogue (`run ID …`, `--filter`): it passes or
    /// fails, but only the whole catalogue certifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<String>,
}

/// The target a run certified, what the harness could do to it, and what ran of each area.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetBasis {
    /// Its name (a profile's, with its mode), or the in-process reference.
    pub name: String,
    /// The profile it was started from, if any.
    pub profile: Option<String>,
    /// The profile file's SHA-256.
    pub profile_sha256: Option<String>,
    /// Where a deployed target answered (empty: the harness started it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployed_at: Vec<String>,
    /// The version the target says it is.
    pub version: Option<String>,
    /// The capabilities the run used.
    pub capabilities: Vec<String>,
    /// The capabilities it did not have, each with why.
    pub lacking: Vec<(String, String)>,
    /// Areas the run was told it may leave uncovered (`--allow-skipped`).
    pub allowed_uncovered: Vec<String>,
    /// Per audit area: scenarios run, passed, failed (or flaky / could not run), SKIPPED.
    pub areas: Vec<AreaCount>,
}

/// What ran of one audit area.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AreaCount {
    /// The area's key.
    pub area: String,
    /// Scenarios that ran.
    pub run: usize,
    /// Of those, passed.
    pub passed: usize,
    /// Of those, not passed.
    pub failed: usize,
    /// Scenarios SKIPPED.
    pub skipped: usize,
}

impl TargetBasis {
    /// Counts `scenarios` per area into `self.areas`.
    pub fn count_areas(&mut self, scenarios: &[ScenarioResult]) {
        self.areas = crate::catalogue::AREAS
            .iter()
            .map(|a| {
                let of: Vec<&ScenarioResult> =
                    scenarios.iter().filter(|s| s.area == a.key).collect();
                let skipped = of.iter().filter(|s| s.verdict == Verdict::Skipped).count();
                let passed = of.iter().filter(|s| s.verdict == Verdict::Passed).count();
                AreaCount {
                    area: a.key.to_owned(),
                    run: of.len() - skipped,
                    passed,
                    failed: of.len() - skipped - passed,
                    skipped,
                }
            })
            .collect();
    }

    /// One paragraph for the HTML report, whose renderer shows `backticked` parts as code and
    /// escapes everything (a backtick inside a value only splits it differently).
    pub fn describe(&self) -> String {
        self.describe_with(str::to_owned, |c| format!("`{}`", c.replace('`', "'")))
    }

    /// The same paragraph for Markdown: the profile's title and the reasons as escaped text,
    /// the path, digest and version (the target's own answer) as code spans.
    pub fn describe_markdown(&self) -> String {
        self.describe_with(crate::untrusted::markdown, crate::untrusted::code_span)
    }

    /// The paragraph, with `text` applied to free text and `code` to values shown as code.
    fn describe_with(
        &self,
        text: impl Fn(&str) -> String,
        code: impl Fn(&str) -> String,
    ) -> String {
        let mut out = text(&self.name);
        if let Some(p) = &self.profile {
            let how = if self.deployed_at.is_empty() {
                "started from".to_owned()
            } else {
                format!(
                    "deployed at {}, reached through",
                    text(&self.deployed_at.join(", "))
                )
            };
            out.push_str(&format!(
                ", {how} {} (sha256 {})",
                code(p),
                code(
                    self.profile_sha256
                        .as_deref()
                        .map_or("", |d| &d[..d.len().min(16)])
                )
            ));
        }
        if let Some(v) = &self.version {
            out.push_str(&format!(", version {}", code(v)));
        }
        out.push_str(&format!(
            ". Capabilities used: {}.",
            if self.capabilities.is_empty() {
                "none beyond HTTP".to_owned()
            } else {
                self.capabilities.join(", ")
            }
        ));
        if !self.lacking.is_empty() {
            let lacking: Vec<String> = self
                .lacking
                .iter()
                .map(|(c, why)| format!("{c} ({})", text(why)))
                .collect();
            out.push_str(&format!(" Not available: {}.", lacking.join("; ")));
        }
        if !self.allowed_uncovered.is_empty() {
            out.push_str(&format!(
                " Allowed to leave uncovered: {}.",
                text(&self.allowed_uncovered.join(", "))
            ));
        }
        out
    }
}

/// The part of a certificate that rests on exploration: which schedules were run, not a claim
/// about all of them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExplorationBasis {
    /// The explore.json it comes from.
    pub source: String,
    /// The target explored ([`crate::commands::target_identity`]).
    pub target: String,
    /// The operation sets explored (`activate + callback`).
    pub sets: Vec<String>,
    /// Sets whose every schedule ran.
    pub complete_sets: usize,
    /// Schedules run.
    pub schedules_explored: u64,
    /// Schedules run plus those pruned as equivalent.
    pub schedules_total: u64,
    /// Schedules pruned.
    pub schedules_pruned: u64,
    /// `systematic`, or `random` with its first seed.
    pub mode: String,
    /// Violations found (on the build the exploration ran against).
    pub violations: usize,
    /// Sets the target could not serve (none on the reference).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_sets: usize,
    /// The oracles the target gave no way to run, with why (none on the reference).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oracles_off: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ExplorationBasis {
    /// Why this exploration cannot back a certificate, if it cannot: a set the target could not
    /// serve, or — systematic — a set whose schedules did not all run (a budget spent, a
    /// divergence). The violations are judged apart.
    pub fn shortfall(&self) -> Option<String> {
        let mut short = Vec::new();
        if self.skipped_sets > 0 {
            short.push(format!("{} set(s) skipped", self.skipped_sets));
        }
        if self.sets.is_empty() || self.schedules_explored == 0 {
            short.push("no schedule ran".to_owned());
        }
        if self.mode == "systematic" && self.complete_sets < self.sets.len() {
            short.push(format!(
                "{} of {} set(s) not complete",
                self.sets.len() - self.complete_sets,
                self.sets.len()
            ));
        }
        (!short.is_empty()).then(|| short.join(", "))
    }

    /// Reads an `explore.json` (a plain run's, or a kill matrix's correct-build part).
    pub fn from_explore_json(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let all: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let v = if all.get("correct_build").is_some() {
            &all["correct_build"]
        } else {
            &all
        };
        let sets = v["sets"]
            .as_array()
            .ok_or_else(|| format!("{}: not an explore.json", path.display()))?;
        // Every figure the certificate states is read, never defaulted: a file without one is
        // not an exploration's account.
        let count = |field: &str| {
            v[field]
                .as_u64()
                .ok_or_else(|| format!("{}: no {field}", path.display()))
        };
        // A certificate rests only on an exploration of the build it certifies (one that says
        // which build it explored).
        let Some(flaws) = v["flaws"].as_array() else {
            return Err(format!(
                "{}: does not say which build it explored (no flaws list)",
                path.display()
            ));
        };
        if !flaws.is_empty() {
            return Err(format!(
                "{}: an exploration of a build with seeded flaws ({}) cannot back a certificate",
                path.display(),
                v["flaws"]
            ));
        }
        let name = |s: &serde_json::Value| {
            s["operations"]
                .as_array()
                .map(|o| {
                    o.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(" + ")
                })
                .unwrap_or_default()
        };
        let mode = match &v["mode"] {
            serde_json::Value::String(m) => m.clone(),
            other => format!("random from seed {}", other["random"]["seed"]),
        };
        // One shard's file names only its part of the split: the sets of the others were not
        // explored as far as it can tell.
        if let Some(shard) = v.get("shard").filter(|s| !s.is_null()) {
            return Err(format!(
                "{}: one shard of a split exploration ({shard}); `harbor-certify merge` the shards and give the merged file",
                path.display()
            ));
        }
        let target = v["target"]
            .as_str()
            .ok_or_else(|| {
                format!(
                    "{}: does not say which target it explored (no target)",
                    path.display()
                )
            })?
            .to_owned();
        Ok(Self {
            source: path.display().to_string(),
            target,
            sets: sets.iter().map(name).collect(),
            complete_sets: sets.iter().filter(|s| s["complete"] == true).count(),
            schedules_explored: count("schedules_explored")?,
            schedules_total: count("schedules_total")?,
            schedules_pruned: count("schedules_pruned")?,
            mode,
            violations: v["violations"]
                .as_array()
                .ok_or_else(|| format!("{}: no list of violations", path.display()))?
                .len(),
            skipped_sets: v["skipped"]
                .as_array()
                .ok_or_else(|| format!("{}: no list of skipped sets", path.display()))?
                .len(),
            oracles_off: v["oracles_off"]
                .as_array()
                .ok_or_else(|| format!("{}: no list of the oracles off", path.display()))?
                .iter()
                .filter_map(|o| o.as_str().map(str::to_owned))
                .collect(),
        })
    }

    /// One sentence for an area's basis.
    pub fn describe(&self) -> String {
        let mut said = format!(
            "exploration ({}): {} schedules run of {} ({} pruned as mirror images), {} of {} operation sets complete, {} violation(s) — sets: {}",
            self.mode,
            self.schedules_explored,
            self.schedules_total,
            self.schedules_pruned,
            self.complete_sets,
            self.sets.len(),
            self.violations,
            self.sets.join("; ")
        );
        if self.skipped_sets > 0 {
            said.push_str(&format!(
                "; {} set(s) the target could not serve",
                self.skipped_sets
            ));
        }
        if !self.oracles_off.is_empty() {
            said.push_str(&format!("; oracles off: {}", self.oracles_off.join("; ")));
        }
        said
    }
}

/// The areas exploration speaks for: it interleaves a workspace's state-changing operations.
pub const EXPLORED_AREAS: &[&str] = &["concurrency", "transaction-discipline"];

/// What an area's verdict rests on, in words.
pub fn basis_of(report: &Report, area: &str, scripted: usize) -> String {
    let mut basis = format!("{scripted} scripted scenario(s)");
    match (&report.exploration, EXPLORED_AREAS.contains(&area)) {
        (Some(e), true) => basis.push_str(&format!("; {}", e.describe())),
        (Some(_), false) => basis.push_str("; exploration does not cover this area"),
        (None, _) => basis.push_str("; no exploration was given to this run (`harbor-certify run --exploration reports/explore/latest/explore.json`)"),
    }
    basis
}

/// The verdict of a whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunVerdict {
    /// Certified: nothing blocking failed.
    Pass,
    /// Not certified.
    Fail,
}

impl RunVerdict {
    /// `PASS` or `FAIL`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunVerdict::Pass => "PASS",
            RunVerdict::Fail => "FAIL",
        }
    }
}

impl std::fmt::Display for RunVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scenario's result in the conformance suite's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuiteResult {
    /// It passed.
    Passed,
    /// It failed below the `--fail-on` threshold.
    Warning,
    /// It failed, was flaky, or could not run.
    Failed,
    /// The target could not serve it.
    Skipped,
}

impl SuiteResult {
    /// The upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SuiteResult::Passed => "PASSED",
            SuiteResult::Warning => "WARNING",
            SuiteResult::Failed => "FAILED",
            SuiteResult::Skipped => "SKIPPED",
        }
    }
}

/// A scenario's result in the conformance suite's vocabulary, given the `--fail-on` threshold.
pub fn result_of(s: &ScenarioResult, fail_on: Severity) -> SuiteResult {
    match s.verdict {
        Verdict::Passed => SuiteResult::Passed,
        Verdict::Skipped => SuiteResult::Skipped,
        Verdict::Failed if s.severity < fail_on => SuiteResult::Warning,
        Verdict::Failed | Verdict::Flaky | Verdict::Error => SuiteResult::Failed,
    }
}

impl Report {
    /// Builds the report from the results.
    pub fn new(
        started_at: chrono::DateTime<chrono::Utc>,
        environment: Environment,
        scenarios: Vec<ScenarioResult>,
        repeat: usize,
        fail_on: Severity,
        duration_ms: f64,
        provision_ms: f64,
    ) -> Self {
        let count = |f: &dyn Fn(&ScenarioResult) -> bool| scenarios.iter().filter(|s| f(s)).count();
        let mut slowest: Vec<(String, f64)> = scenarios
            .iter()
            .map(|s| (s.id.clone(), s.duration_ms))
            .collect();
        slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
        slowest.truncate(5);
        let summary = Summary {
            total: scenarios.len(),
            passed: count(&|s| s.verdict == Verdict::Passed),
            failed: count(&|s| s.verdict == Verdict::Failed && s.severity >= fail_on),
            warnings: count(&|s| s.verdict == Verdict::Failed && s.severity < fail_on),
            flaky: count(&|s| s.verdict == Verdict::Flaky),
            errors: count(&|s| s.verdict == Verdict::Error),
            skipped: count(&|s| s.verdict == Verdict::Skipped),
            repeat,
            duration_ms,
            provision_ms,
            slowest,
        };
        let blocking = summary.failed + summary.flaky + summary.errors;
        let verdict = if blocking == 0 && summary.passed > 0 {
            RunVerdict::Pass
        } else {
            RunVerdict::Fail
        };
        Self {
            schema_version: SCHEMA_VERSION,
            verdict,
            started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            fail_on,
            summary,
            environment,
            scenarios,
            mutants: None,
            exploration: None,
            target: None,
            not_certified_because: Vec::new(),
            selection: None,
        }
    }

    /// Records a reason the run is not certified beyond its scenarios, and fails its verdict.
    pub fn not_certified(&mut self, why: String) {
        self.verdict = RunVerdict::Fail;
        self.not_certified_because.push(why);
    }

    /// What the run stands for: only a whole, passing run of a correct build certifies.
    fn standing(&self) -> Standing<'_> {
        match (self.verdict, &self.selection) {
            (RunVerdict::Fail, _) => Standing::NotCertified,
            (RunVerdict::Pass, _) if !self.environment.flaws.is_empty() => Standing::Flawed,
            (RunVerdict::Pass, Some(selection)) => Standing::Selection(selection),
            (RunVerdict::Pass, None) => Standing::Certified,
        }
    }

    /// The verdict in words, for the reports' last line.
    pub fn verdict_statement(&self) -> String {
        match self.standing() {
            Standing::Certified => {
                "The service under test is **CERTIFIED** against this catalogue.".to_owned()
            }
            Standing::Flawed => "**PASSED WITH SEEDED FLAWS ENABLED, NOT A CERTIFICATE**: a flawed build is never certified.".to_owned(),
            Standing::Selection(selection) => format!(
                "**PASSED, NOT A CERTIFICATE**: this run was a selection ({selection}); only the whole catalogue certifies."
            ),
            Standing::NotCertified => {
                "The service under test is **NOT CERTIFIED**: see the findings above.".to_owned()
            }
        }
    }

    /// The verdict in a few words, for the run's summary line on the console.
    pub fn verdict_headline(&self) -> String {
        match self.standing() {
            Standing::Certified => "CERTIFIED".to_owned(),
            Standing::Flawed => {
                "PASSED WITH SEEDED FLAWS ENABLED (a flawed build is never certified)".to_owned()
            }
            Standing::Selection(selection) => {
                format!("PASSED (a selection of {selection}: only the whole catalogue certifies)")
            }
            Standing::NotCertified => "NOT CERTIFIED".to_owned(),
        }
    }
}

/// What a run stands for ([`Report::standing`]).
enum Standing<'a> {
    /// A whole, passing run of a correct build.
    Certified,
    /// A passing run of a build with seeded flaws.
    Flawed,
    /// A passing selection of the catalogue (what it was).
    Selection(&'a str),
    /// A run that did not pass.
    NotCertified,
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
        host: std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into()),
        platform: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
        ..Environment::default()
    }
}

/// The files of a run folder, in manifest order.
pub const RUN_FILES: &[&str] = &["report.json", "report.md", "report.html", "junit.xml"];

/// Writes every rendering of `report` into `dir` (created if needed), then the manifest and, with
/// `signing_key`, its signature. Extra files (such as `mutants.json`) are listed in the manifest too.
pub fn write_into(
    dir: &Path,
    report: &Report,
    extra: &[(&str, String)],
    signing_key: Option<&sign::SigningKey>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json)?;
    std::fs::write(dir.join("report.md"), markdown::render(report))?;
    std::fs::write(dir.join("report.html"), html::render(report))?;
    std::fs::write(
        dir.join("junit.xml"),
        junit::render(report).map_err(std::io::Error::other)?,
    )?;
    let mut names: Vec<String> = RUN_FILES.iter().map(|n| n.to_string()).collect();
    for (name, content) in extra {
        if let Some(parent) = dir.join(name).parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(dir.join(name), content)?;
        names.push(name.to_string());
    }
    // Each scenario's schedule and trace signature, for `harbor-certify replay`.
    let traces: Vec<&ScenarioResult> = report
        .scenarios
        .iter()
        .filter(|s| !s.trace.schedule.is_empty())
        .collect();
    if !traces.is_empty() {
        std::fs::create_dir_all(dir.join("traces"))?;
    }
    for sc in traces {
        let recorded = crate::scenario::run::RecordedRun {
            scenario: sc.id.clone(),
            file: sc.file.clone(),
            schedule: sc.trace.schedule.clone(),
            signature: sc.trace.signature(),
            flaws: report.environment.flaws.clone(),
            target: report
                .target
                .as_ref()
                .filter(|t| t.profile.is_some())
                .map(|t| t.name.clone()),
            file_sha256: sc.file_sha256.clone(),
            signature_version: crate::scenario::run::SIGNATURE_VERSION,
        };
        let name = format!("traces/{}.json", sc.id);
        std::fs::write(
            dir.join(&name),
            serde_json::to_string_pretty(&recorded).map_err(std::io::Error::other)?,
        )?;
        names.push(name);
    }
    if let Err(leak) = crate::oracles::report_folder_free_of_issued_values(dir) {
        // Nothing that holds a secret is left behind for an artefact upload to pick up.
        let _ = std::fs::remove_dir_all(dir);
        return Err(std::io::Error::other(format!(
            "{leak} (the folder was removed)"
        )));
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    sign::write_manifest(dir, &names, signing_key)
}

/// Removes `out/latest` when a run starts: until the run writes its own, a gate reading it (a
/// CI step that publishes reports whatever the exit status) finds nothing rather than an earlier
/// run's report, also when this run stops early or panics.
pub fn forget_latest(out: &Path) {
    let _ = std::fs::remove_file(out.join("latest"));
}

/// Creates `out/<UTC timestamp>/`, writes the run into it and points `out/latest` at it. Returns the
/// run's folder.
pub fn write_run(
    out: &Path,
    report: &Report,
    extra: &[(&str, String)],
    signing_key: Option<&sign::SigningKey>,
) -> std::io::Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let dir = out.join(&stamp);
    // `latest` names this run or none: a write that fails (a leak found, a full disk) must not
    // leave it on an earlier run a gate would then read as this one.
    forget_latest(out);
    write_into(&dir, report, extra, signing_key)?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(&stamp, out.join("latest"))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::ExplorationBasis;

    fn basis(json: serde_json::Value) -> Result<ExplorationBasis, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("explore.json");
        std::fs::write(&path, json.to_string()).unwrap();
        ExplorationBasis::from_explore_json(&path)
    }

    fn explored(complete: bool) -> serde_json::Value {
        serde_json::json!({
            "mode": "systematic", "flaws": [], "violations": [], "skipped": [], "oracles_off": [],
            "target": "the Harbor reference service, in-process",
            "schedules_explored": 4, "schedules_total": 8, "schedules_pruned": 4,
            "sets": [{ "operations": ["activate", "callback"], "complete": complete }]
        })
    }

    /// Every figure a certificate states is read from the file, never defaulted; a set cut
    /// short or skipped is a shortfall.
    #[test]
    fn an_exploration_backs_a_certificate_only_with_every_figure_and_set() {
        let whole = basis(explored(true)).unwrap();
        assert_eq!((whole.violations, whole.shortfall()), (0, None));
        for missing in [
            "violations",
            "flaws",
            "schedules_explored",
            "schedules_total",
            "skipped",
            "oracles_off",
            "target",
        ] {
            let mut v = explored(true);
            v.as_object_mut().unwrap().remove(missing);
            let refused = basis(v).expect_err("refused");
            assert!(refused.contains("no "), "{missing}: {refused}");
        }
        let short = basis(explored(false)).unwrap().shortfall();
        assert_eq!(short.as_deref(), Some("1 of 1 set(s) not complete"));
        let mut v = explored(true);
        v["skipped"] = serde_json::json!([{ "operations": ["revoke"], "why": "no route" }]);
        assert_eq!(
            basis(v).unwrap().shortfall().as_deref(),
            Some("1 set(s) skipped")
        );
        // One shard of a split names only its part.
        let mut v = explored(true);
        v["shard"] = serde_json::json!({ "index": 1, "of": 4 });
        let refused = basis(v).expect_err("a shard is refused");
        assert!(refused.contains("merge"), "{refused}");
    }
}
