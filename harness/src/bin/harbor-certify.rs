//! `harbor-certify`: the certification harness's command line. Thin: parsing and exit codes here,
//! the work in the `harbor_harness` library.

use std::process::ExitCode;
use std::time::Instant;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use harbor_harness::provision::{BackendChoice, Infra};
use harbor_harness::report::{self, Report};
use harbor_harness::scenario::load::{self, LoadedScenario};
use harbor_harness::scenario::logs::LogCapture;
use harbor_harness::scenario::runner::ScenarioRunner;
use harbor_harness::scenario;
use harbor_harness::scenario::model::Severity;

/// Exit code when a scenario failed or was flaky.
const NOT_CERTIFIED: u8 = 1;
/// Exit code when the harness could not run at all (no backend, bad arguments, bad scenario files).
const CANNOT_RUN: u8 = 2;

#[derive(Parser)]
#[command(name = "harbor-certify", version, about = "Certify a concurrent, multi-tenant service against real PostgreSQL and Redis")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, `harbor-certify` is `harbor-certify run`.
    #[command(flatten)]
    run: RunArgs,
}

/// Where the catalogue comes from, what it runs on, and where the results go.
#[derive(clap::Args, Clone, Debug)]
struct CatalogueArgs {
    /// Which backend to provision with.
    #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
    backend: BackendChoice,
    /// Where run folders are written (`<DIR>/<timestamp>/`, `<DIR>/latest`).
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// Where the scenario files are.
    #[arg(long, default_value = "scenarios", env = "HARBOR_SCENARIOS")]
    scenarios_dir: PathBuf,
    /// An Ed25519 PKCS#8 key (`harbor-certify keygen`) to sign the report's manifest with.
    #[arg(long, env = "HARBOR_REPORT_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
}

/// What to run.
#[derive(clap::Args, Clone, Debug)]
struct RunArgs {
    /// Scenario ids or file names (default: every scenario).
    scenarios: Vec<String>,
    /// Only scenarios whose id or title contains this (case-insensitive).
    #[arg(long)]
    filter: Option<String>,
    /// Run each scenario this many times; differing traces make it FLAKY.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Failures at or above this severity make the run NOT CERTIFIED (exit 1); lower ones are
    /// reported as warnings.
    #[arg(long, value_enum, default_value = "low")]
    fail_on: Severity,
    /// Scenarios run at once (each has its own database, Redis prefix and replicas).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Run against the service with this seeded flaw on (repeatable; needs `--features flaws`).
    /// The report is marked as a flawed run everywhere.
    #[arg(long = "flaw")]
    flaws: Vec<String>,
    #[command(flatten)]
    catalogue: CatalogueArgs,
}

/// What `mutants` runs.
#[derive(clap::Args, Clone, Debug)]
struct MutantsArgs {
    /// Only these flaws (default: every seeded flaw).
    #[arg(long = "flaw")]
    flaws: Vec<String>,
    /// Scenarios run at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Run each flaw only against the scenarios that name it in `catches` — the ones the verdict
    /// rests on (much faster; the matrix then lists no incidental kills).
    #[arg(long)]
    catching_only: bool,
    #[command(flatten)]
    catalogue: CatalogueArgs,
}

/// How the state machine runs.
#[derive(clap::Args, Clone, Debug)]
struct ProptestArgs {
    /// Which backend to provision with.
    #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
    backend: BackendChoice,
    /// Cases (sequences) per run.
    #[arg(long, env = "PROPTEST_CASES", default_value_t = 32)]
    cases: u32,
    /// Longest sequence.
    #[arg(long, default_value_t = 24)]
    max_ops: usize,
    /// Replay this seed exactly (printed by every run).
    #[arg(long)]
    seed: Option<u64>,
    /// Run against the service with this seeded flaw on (repeatable; needs `--features flaws`).
    #[arg(long = "flaw")]
    flaws: Vec<String>,
    /// Also run each flaw the state machine can see; each must make it fail.
    #[arg(long)]
    kill_matrix: bool,
}

/// What `serve` starts.
#[derive(clap::Args, Clone, Debug)]
struct ServeArgs {
    /// Which backend to provision with.
    #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
    backend: BackendChoice,
    /// Replicas sharing the database and Redis.
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// Once the service is ready, write HARBOR_BASE_URL, HARBOR_WORKSPACE_ID, HARBOR_OWNER_TOKEN,
    /// HARBOR_MEMBER_TOKEN, HARBOR_OTHER_TENANT_TOKEN (and more) to this file.
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Honour the harness's sync points and actor tags (off: requests are never parked).
    #[arg(long)]
    sync_points: bool,
    /// Start the service with this seeded flaw on (repeatable; needs `--features flaws`).
    #[arg(long = "flaw")]
    flaws: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scenario catalogue (the default command).
    Run(RunArgs),
    /// Run the catalogue against the correct service and against each seeded flaw, and print the
    /// kill matrix (needs a build with `--features flaws`). Exit 0 only if the correct build passes
    /// and every flaw is caught by a scenario that names it in `catches`.
    Mutants(MutantsArgs),
    /// Check a report folder: every file against SHA256SUMS, and the signature if there is one.
    Verify {
        /// The run folder (such as reports/latest).
        dir: PathBuf,
        /// The base64 Ed25519 public key you trust (default: the folder's own signing-key.pub,
        /// which proves integrity but not authorship).
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Write a new Ed25519 report-signing key (PKCS#8, base64) and print its public key; or, with
    /// `--service DIR`, the keys a hand-started harbor-service needs (a stand-in gateway's key and
    /// JWK set, a token encryption key, and `DIR/service.env` naming them).
    Keygen {
        /// Where to write the report-signing key.
        #[arg(long, required_unless_present = "service")]
        out: Option<PathBuf>,
        /// Write the service's keys into this directory instead.
        #[arg(long, conflicts_with = "out")]
        service: Option<PathBuf>,
    },
    /// Print a bearer token (valid 24 h) for user `--sub`, signed with a gateway key from
    /// `keygen --service`.
    Token {
        /// The gateway key (`DIR/gateway.key`).
        #[arg(long)]
        key: PathBuf,
        /// The user's id (the token's `sub`).
        #[arg(long)]
        sub: uuid::Uuid,
    },
    /// Print the id and title of every scenario, after checking the files.
    List {
        /// Where the scenario files are.
        #[arg(long, default_value = "scenarios", env = "HARBOR_SCENARIOS")]
        scenarios_dir: PathBuf,
    },
    /// Provision PostgreSQL and Redis, print their versions and how long they took, clean up.
    Doctor {
        /// Which backend to provision with.
        #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
        backend: BackendChoice,
    },
    /// Run the reference service for people and tools: provision PostgreSQL and Redis, start the
    /// replicas with the fake OAuth provider, seed a demo tenant (owner, member) and another
    /// tenant, print URLs, tokens and curl lines, and hold until Ctrl-C or the end of standard input.
    Serve(ServeArgs),
    /// Model-based testing: proptest sequences of operations against the real service (fresh
    /// replicas per case), compared with the reference model after every step. Exit 0 when every
    /// case passed (with --kill-matrix: and every flaw the state machine can see made it fail).
    Proptest(ProptestArgs),
    /// Provision once and hold the servers for other processes (the test suite) until SIGINT,
    /// SIGTERM or the end of standard input; writes `HARBOR_DATABASE_URL=…` and
    /// `HARBOR_REDIS_URL=…` lines to the env file.
    Infra {
        /// Which backend to provision with.
        #[arg(long, value_enum, default_value = "auto", env = "HARBOR_BACKEND")]
        backend: BackendChoice,
        /// Where to write the environment lines.
        #[arg(long)]
        env_file: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run(cli.run));
    if matches!(command, Command::Run(_) | Command::Mutants(_)) {
        // The run searches the service's logs for leaked secrets: capture them.
        if let Some(capture) = LogCapture::install() {
            LOGS.set(capture).ok();
        }
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .with_writer(std::io::stderr)
            .init();
    }
    match command {
        Command::Run(args) => run(args).await,
        Command::Mutants(args) => mutants(args).await,
        Command::List { scenarios_dir } => list(&scenarios_dir),
        Command::Verify { dir, public_key } => match report::sign::verify(&dir, public_key.as_deref()) {
            Ok(v) => {
                println!("{}: {} file(s) match SHA256SUMS", dir.display(), v.files);
                match v.signed_by {
                    Some(k) => println!("signature valid, key {k}{}", if public_key.is_none() { " (the folder's own key: pass --public-key to check who signed)" } else { "" }),
                    None => println!("not signed"),
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("harbor-certify: {}: NOT VERIFIED: {e}", dir.display());
                ExitCode::from(NOT_CERTIFIED)
            }
        },
        Command::Keygen { service: Some(dir), .. } => match harbor_harness::tokens::write_service_keys(&dir) {
            Ok(env) => {
                println!("{}", env.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("harbor-certify: {}: {e}", dir.display());
                ExitCode::from(CANNOT_RUN)
            }
        },
        Command::Token { key, sub } => match harbor_harness::tokens::TokenMint::from_key_file(&key) {
            Ok(mint) => {
                println!("{}", mint.token(sub, harbor_harness::tokens::TokenKind::LongLived));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("harbor-certify: {e}");
                ExitCode::from(CANNOT_RUN)
            }
        },
        Command::Keygen { out, .. } => {
            let out = out.expect("clap requires --out without --service");
            let (pkcs8, key) = report::sign::SigningKey::generate();
            if let Err(e) = std::fs::write(&out, format!("{pkcs8}\n")) {
                eprintln!("harbor-certify: {}: {e}", out.display());
                return ExitCode::from(CANNOT_RUN);
            }
            println!("{}", key.public_key());
            ExitCode::SUCCESS
        }
        Command::Doctor { backend } => doctor(backend).await,
        Command::Infra { backend, env_file } => infra(backend, env_file).await,
        Command::Serve(args) => serve(args).await,
        Command::Proptest(args) => proptest(args).await,
    }
}

static LOGS: std::sync::OnceLock<LogCapture> = std::sync::OnceLock::new();

fn load(dir: &std::path::Path) -> Result<Vec<LoadedScenario>, ExitCode> {
    let files = load::scenario_files(dir).map_err(|e| {
        eprintln!("harbor-certify: cannot read the scenario directory {}: {e}", dir.display());
        ExitCode::from(CANNOT_RUN)
    })?;
    if files.is_empty() {
        eprintln!("harbor-certify: no *.toml scenario in {}", dir.display());
        return Err(ExitCode::from(CANNOT_RUN));
    }
    load::load_all(&files).map_err(|errors| {
        for e in &errors {
            eprintln!("harbor-certify: {e}");
        }
        eprintln!("harbor-certify: {} scenario file(s) rejected; nothing was run", errors.len());
        ExitCode::from(CANNOT_RUN)
    })
}

fn list(dir: &std::path::Path) -> ExitCode {
    match load(dir) {
        Ok(all) => {
            for s in all {
                println!("{}\t{}", s.scenario.id, s.scenario.title);
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let all = match load(&args.catalogue.scenarios_dir) {
        Ok(all) => all,
        Err(code) => return code,
    };
    let selected = match scenario::select(all, &args.scenarios, args.filter.as_deref()) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            eprintln!("harbor-certify: the selection matches no scenario");
            return ExitCode::from(CANNOT_RUN);
        }
        Err(e) => {
            eprintln!("harbor-certify: {e}");
            return ExitCode::from(CANNOT_RUN);
        }
    };
    let flaws = match parse_flaws(&args.flaws) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let mut infra = match provision_or_explain(args.catalogue.backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    let provision_ms = started.elapsed().as_secs_f64() * 1000.0;
    if !flaws.is_empty() {
        eprintln!("harbor-certify: ⚠ SEEDED FLAWS ENABLED: {} — this run does not certify a correct build", flaws.names().join(", "));
    }
    eprintln!(
        "harbor-certify: {} backend ready in {} ms (PostgreSQL {}, Redis {}); {} scenario(s) × {}",
        infra.kind,
        infra.ready_in.as_millis(),
        infra.postgres_version,
        infra.redis_version,
        selected.len(),
        args.repeat
    );
    let runner = ScenarioRunner::new(&infra, LOGS.get().cloned()).with_flaws(flaws.clone());
    let bar = progress_bar(selected.len() as u64);
    let results = scenario::run_all(&runner, &selected, args.repeat, args.jobs, |result| {
        let line = format!("{:<7} {:<28} {:>7.0} ms  {}", result.verdict.as_str(), result.id, result.duration_ms, result.title);
        bar.suspend(|| {
            println!("{line}");
            for f in &result.failures {
                println!("        step {}: {}", f.step.map_or("-".into(), |s| s.to_string()), f.message);
            }
            if let Some(why) = &result.flaky {
                println!("        flaky: {why}");
            }
        });
        bar.inc(1);
    })
    .await;
    bar.finish_and_clear();
    let environment = environment_of(&infra, &flaws.names());
    infra.shutdown().await;
    let report = Report::new(started_at, environment, results, args.repeat, args.fail_on, started.elapsed().as_secs_f64() * 1000.0, provision_ms);
    let s = &report.summary;
    println!(
        "\n{}: {} scenario(s), {} passed, {} failed, {} warning(s), {} flaky, {} could not run, in {:.1} s (provisioning {:.1} s)",
        if report.verdict == "PASS" { "CERTIFIED" } else { "NOT CERTIFIED" },
        s.total,
        s.passed,
        s.failed,
        s.warnings,
        s.flaky,
        s.errors,
        s.duration_ms / 1000.0,
        s.provision_ms / 1000.0
    );
    let slowest: Vec<String> = s.slowest.iter().map(|(id, ms)| format!("{id} {ms:.0} ms")).collect();
    println!("slowest: {}", slowest.join(", "));
    let signing_key = match args.catalogue.signing_key.as_deref().map(report::sign::SigningKey::from_pkcs8_file).transpose() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("harbor-certify: signing key: {e}");
            return ExitCode::from(CANNOT_RUN);
        }
    };
    match report::write_run(&args.catalogue.out, &report, &[], signing_key.as_ref()) {
        Ok(dir) => println!("report: {} (report.md, report.html, junit.xml, SHA256SUMS{})", dir.display(), if signing_key.is_some() { ", SHA256SUMS.sig" } else { "" }),
        Err(e) => {
            eprintln!("harbor-certify: cannot write the report under {}: {e}", args.catalogue.out.display());
            return ExitCode::from(CANNOT_RUN);
        }
    }
    if s.errors > 0 {
        ExitCode::from(CANNOT_RUN)
    } else if report.verdict == "PASS" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_CERTIFIED)
    }
}

fn parse_flaws(names: &[String]) -> Result<harbor_service::flaws::Flaws, ExitCode> {
    use harbor_service::flaws::{Flaw, Flaws};
    let mut wanted = Vec::new();
    for name in names {
        let Some(f) = Flaw::parse(name) else {
            let all: Vec<&str> = Flaw::ALL.iter().map(|f| f.name()).collect();
            eprintln!("harbor-certify: unknown flaw {name:?}; the flaws are {}", all.join(", "));
            return Err(ExitCode::from(CANNOT_RUN));
        };
        wanted.push(f);
    }
    Flaws::enable(wanted).map_err(|e| {
        eprintln!("harbor-certify: {e}; rebuild with `--features flaws`");
        ExitCode::from(CANNOT_RUN)
    })
}

fn environment_of(infra: &Infra, flaws: &[&str]) -> report::Environment {
    let mut environment = report::host_environment();
    environment.backend = infra.kind.to_string();
    environment.postgres_version = infra.postgres_version.clone();
    environment.redis_version = infra.redis_version.clone();
    environment.images = infra.images.as_ref().map(|i| vec![i.postgres.to_string(), i.redis.to_string()]);
    environment.flaws = flaws.iter().map(|f| f.to_string()).collect();
    environment
}

async fn mutants(args: MutantsArgs) -> ExitCode {
    use harbor_service::flaws::{self, Flaw};
    if !flaws::COMPILED_IN {
        eprintln!(
            "harbor-certify: this build has no seeded flaws; run `cargo run -p harbor-harness --features flaws --bin harbor-certify -- mutants`"
        );
        return ExitCode::from(CANNOT_RUN);
    }
    let mut chosen = Vec::new();
    for name in &args.flaws {
        match Flaw::parse(name) {
            Some(f) => chosen.push(f),
            None => {
                let all: Vec<&str> = Flaw::ALL.iter().map(|f| f.name()).collect();
                eprintln!("harbor-certify: unknown flaw {name:?}; the flaws are {}", all.join(", "));
                return ExitCode::from(CANNOT_RUN);
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
    let signing_key = match args.catalogue.signing_key.as_deref().map(report::sign::SigningKey::from_pkcs8_file).transpose() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("harbor-certify: signing key: {e}");
            return ExitCode::from(CANNOT_RUN);
        }
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
    let runner = ScenarioRunner::new(&infra, LOGS.get().cloned());
    let (baseline, matrix) = harbor_harness::mutants::run(runner, &all, &chosen, args.jobs, args.catching_only, |label, results| {
        let failed: Vec<&str> = results.iter().filter(|r| r.verdict != scenario::Verdict::Passed).map(|r| r.id.as_str()).collect();
        println!("{label:<26} {} of {} scenarios failed{}", failed.len(), results.len(), if failed.is_empty() { String::new() } else { format!(": {}", failed.join(", ")) });
    })
    .await;
    let environment = environment_of(&infra, &[]);
    infra.shutdown().await;
    println!("\nkill matrix ({:.0} s):", matrix.duration_ms / 1000.0);
    println!("{:<26} {:<17} caught by (expected: …)", "flaw", "status");
    for row in &matrix.flaws {
        println!("{:<26} {:<17} {} (expected: {})", row.flaw, row.status, row.caught_by.join(", "), row.expected.join(", "));
        for id in row.expected.iter().filter(|id| row.caught_by.contains(id)) {
            println!("{:<44} {id}: {}", "", row.evidence.get(id).map(String::as_str).unwrap_or(""));
        }
    }
    println!("correct build: {}", matrix.correct_build);
    for s in &matrix.survivors {
        let row = matrix.flaws.iter().find(|r| &r.flaw == s).expect("a survivor has a row");
        println!("SURVIVOR: {s} — should have been caught by {}", if row.expected.is_empty() { "a scenario naming it in `catches` (none does)".to_owned() } else { row.expected.join(", ") });
    }
    let mut report = Report::new(started_at, environment, baseline, 1, Severity::Low, started.elapsed().as_secs_f64() * 1000.0, provision_ms);
    report.mutants = serde_json::to_value(&matrix).ok();
    let mutants_json = serde_json::to_string_pretty(&matrix).unwrap_or_default();
    match report::write_run(&args.catalogue.out, &report, &[("mutants.json", mutants_json)], signing_key.as_ref()) {
        Ok(dir) => println!("report: {} (mutants.json and a kill-matrix section in report.md/html)", dir.display()),
        Err(e) => {
            eprintln!("harbor-certify: cannot write the report under {}: {e}", args.catalogue.out.display());
            return ExitCode::from(CANNOT_RUN);
        }
    }
    if matrix.is_good() {
        println!("MUTANTS: every seeded flaw was caught by the scenario that names it");
        ExitCode::SUCCESS
    } else {
        println!("MUTANTS: NOT PROVEN ({} survivor(s), correct build {})", matrix.survivors.len(), matrix.correct_build);
        ExitCode::from(NOT_CERTIFIED)
    }
}

/// A progress bar on a terminal; hidden otherwise (the per-scenario lines are printed either way).
fn progress_bar(len: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}").expect("a valid template"),
    );
    bar
}

async fn provision_or_explain(backend: BackendChoice) -> Result<Infra, ExitCode> {
    Infra::provision(backend).await.map_err(|e| {
        eprintln!("harbor-certify: cannot provision ({backend:?}): {e}");
        ExitCode::from(CANNOT_RUN)
    })
}

async fn doctor(backend: BackendChoice) -> ExitCode {
    let started = Instant::now();
    let mut infra = match provision_or_explain(backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    println!("backend:    {}", infra.kind);
    if let Some(images) = &infra.images {
        println!("images:     {} {}", images.postgres, images.redis);
    }
    println!("postgres:   {}", infra.postgres_version);
    println!("redis:      {}", infra.redis_version);
    println!("ready in:   {} ms", infra.ready_in.as_millis());
    let checked = scenario_database_round_trips(&infra).await;
    infra.shutdown().await;
    println!("total:      {} ms (cleaned up)", started.elapsed().as_millis());
    match checked {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harbor-certify: the servers answered but a scenario database could not be made: {e}");
            ExitCode::from(CANNOT_RUN)
        }
    }
}

/// Creates and drops scenario databases: the first also migrates the template, the rest show the
/// per-scenario cost the catalogue pays.
async fn scenario_database_round_trips(infra: &Infra) -> Result<(), String> {
    let mut timings = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        let env = infra.isolated_env().await.map_err(|e| e.to_string())?;
        let created = started.elapsed();
        let dropping = Instant::now();
        env.cleanup().await.map_err(|e| e.to_string())?;
        timings.push((created.as_millis(), dropping.elapsed().as_millis()));
    }
    let (first, rest) = timings.split_first().expect("four rounds");
    println!("template:   first scenario database {} ms (includes migrating the template)", first.0);
    let creates: Vec<String> = rest.iter().map(|t| t.0.to_string()).collect();
    let drops: Vec<String> = rest.iter().map(|t| t.1.to_string()).collect();
    println!("scenario db: create {} ms, drop {} ms", creates.join("/"), drops.join("/"));
    Ok(())
}

async fn infra(backend: BackendChoice, env_file: std::path::PathBuf) -> ExitCode {
    let mut infra = match provision_or_explain(backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    let lines = format!(
        "HARBOR_DATABASE_URL={}\nHARBOR_REDIS_URL={}\nHARBOR_INFRA_BACKEND={}\nHARBOR_INFRA_READY_MS={}\n",
        infra.admin_url,
        infra.redis_url,
        infra.kind,
        infra.ready_in.as_millis()
    );
    // Written to a temporary name and renamed, so a reader never sees half a file.
    let tmp = env_file.with_extension("partial");
    if let Err(e) = std::fs::write(&tmp, lines).and_then(|()| std::fs::rename(&tmp, &env_file)) {
        eprintln!("harbor-certify: cannot write {}: {e}", env_file.display());
        infra.shutdown().await;
        return ExitCode::from(CANNOT_RUN);
    }
    eprintln!(
        "harbor-certify: {} servers ready in {} ms; holding until SIGINT/SIGTERM or end of standard input",
        infra.kind,
        infra.ready_in.as_millis()
    );
    harbor_harness::serve::hold_until_stopped().await;
    infra.shutdown().await;
    let _ = std::fs::remove_file(&env_file);
    ExitCode::SUCCESS
}

async fn proptest(args: ProptestArgs) -> ExitCode {
    use harbor_harness::statemachine::{self, Options};
    let flaws = match parse_flaws(&args.flaws) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let mut infra = match provision_or_explain(args.backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    let persistence = flaws.is_empty().then(|| PathBuf::from(statemachine::REGRESSIONS));
    let options = Options { cases: args.cases, max_ops: args.max_ops, flaws, seed: args.seed, persistence, max_shrink_iters: 256 };
    let (report, ok) = if args.kill_matrix {
        statemachine::kill_matrix(&infra, &options)
    } else {
        let outcome = statemachine::run(&infra, &options);
        let mut report = statemachine::describe("state machine", &outcome);
        if let Some(path) = statemachine::save_failure(std::path::Path::new("reports/proptest"), "run", &outcome) {
            report.push_str(&format!("\n  saved as {} ({})", path.display(), statemachine::replay_command(&path, None)));
        }
        (report, outcome.failure.is_none())
    };
    infra.shutdown().await;
    println!("{report}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_CERTIFIED)
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    use harbor_harness::serve::Demo;
    use harbor_harness::service::{ServiceOptions, ServiceUnderTest};
    let flaws = match parse_flaws(&args.flaws) {
        Ok(f) => f,
        Err(code) => return code,
    };
    if args.replicas == 0 || args.replicas > 8 {
        eprintln!("harbor-certify: --replicas is 1 to 8");
        return ExitCode::from(CANNOT_RUN);
    }
    let started = Instant::now();
    let mut infra = match provision_or_explain(args.backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    let options = ServiceOptions { replicas: args.replicas, sync_points: args.sync_points, flaws, ..ServiceOptions::default() };
    let sut = match ServiceUnderTest::start(&infra, options).await {
        Ok(sut) => sut,
        Err(e) => {
            eprintln!("harbor-certify: the service did not start: {e}");
            infra.shutdown().await;
            return ExitCode::from(CANNOT_RUN);
        }
    };
    let demo = match Demo::seed(&sut).await {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("harbor-certify: seeding the demo tenants failed: {e}");
            let _ = sut.stop().await;
            infra.shutdown().await;
            return ExitCode::from(CANNOT_RUN);
        }
    };
    if let Some(path) = &args.env_file {
        if let Err(e) = demo.write_env_file(path) {
            eprintln!("harbor-certify: cannot write {}: {e}", path.display());
            let _ = sut.stop().await;
            infra.shutdown().await;
            return ExitCode::from(CANNOT_RUN);
        }
    }
    println!("{}", demo.instructions(args.env_file.as_deref()));
    eprintln!("harbor-certify: ready in {} ms on {}", started.elapsed().as_millis(), infra.kind);
    harbor_harness::serve::hold_until_stopped().await;
    let stopped = sut.stop().await;
    infra.shutdown().await;
    if let Some(path) = &args.env_file {
        let _ = std::fs::remove_file(path);
    }
    match stopped {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harbor-certify: clean-up failed: {e}");
            ExitCode::FAILURE
        }
    }
}
