//! `cargo xtask`: makes the machine able to serve, then runs the job.
//!
//! - `cargo xtask test [ARGS…]`: the loom model check of `harbor-syncpoint`, then the whole test
//!   suite (`cargo nextest run --workspace ARGS…`) with one PostgreSQL and one Redis for the run,
//!   held by `harbor-certify infra`, then the certification gate (`harbor-certify run`), the
//!   mutation run (`harbor-certify mutants`, built with `--features flaws`), the exploration of
//!   every pair of operations with its kill matrix (`harbor-certify explore --kill-matrix`), the
//!   state machine, a load smoke and the contract run, on them.
//! - `cargo xtask load [GOOSE ARGS…]`: the goose load test (`loadtests/`, release build).
//! - `cargo xtask certify [ARGS…]`: `harbor-certify ARGS…` (default `run`, the whole catalogue)
//!   after the same set-up.
//! - `cargo xtask serve [ARGS…]`: `harbor-certify serve ARGS…` after the same set-up (the
//!   reference service with demo tenants, for people and tools).
//! - `cargo xtask loom`: every loom model (`LOOM_MAX_PREEMPTIONS`, default 3), also the first
//!   phase of `test`.
//! - `cargo xtask proptest`: the state machine against the real service, and its kill matrix
//!   (`PROPTEST_CASES`, default 16), also a phase of `test`.
//! - `cargo xtask fuzz [SECONDS]`: every cargo-fuzz target (`fuzz/`, nightly) for SECONDS each
//!   (default 60) from its committed corpus; executions, coverage and crashes per target go to
//!   `reports/fuzz/<timestamp>/fuzz.json`. A crash fails the task and leaves its input in
//!   `fuzz/artifacts/`.
//! - `cargo xtask contract`: Schemathesis against `harbor-certify serve` (also the last phase of
//!   `test`): the owner's token, no token, and another tenant's token.
//!
//! Set-up, each phase timed: a Docker engine answers (starting `dockerd` if it is installed but not
//! running); the images exist or can be pulled, else `scripts/offline-images.sh` builds them; the
//! local backend's binaries are there; node-oidc-provider (the interop test's authorization
//! server) is installed at its locked version (`interop.rs`). As root on Debian, missing packages
//! (`docker.io`, `redis-server`, `debootstrap`, `nodejs`, `npm`) are installed; otherwise the exact
//! command is printed and the task exits 2.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod bench;
mod interop;

const CANNOT_RUN: u8 = 2;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let result = match task.as_str() {
        "test" => test(&rest),
        "certify" => certify(&rest),
        "load" => load(&rest),
        "contract" => contract(),
        "proptest" => proptest(),
        "bench" => bench::bench(&rest),
        "fuzz" => fuzz(&rest),
        "loom" => {
            phase("loom models (sync points, lock protocol)", loom).map(|()| ExitCode::SUCCESS)
        }
        "serve" => {
            let mut args = vec!["serve".to_owned()];
            args.extend(rest.iter().cloned());
            certify(&args)
        }
        _ => {
            eprintln!("usage: cargo xtask test [NEXTEST ARGS…] | cargo xtask certify [HARBOR-CERTIFY ARGS…] | cargo xtask load [GOOSE ARGS…] | cargo xtask contract | cargo xtask serve [SERVE ARGS…] | cargo xtask loom | cargo xtask proptest | cargo xtask bench [--quick] | cargo xtask fuzz [SECONDS]");
            return ExitCode::from(CANNOT_RUN);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::from(CANNOT_RUN)
        }
    }
}

fn root() -> PathBuf {
    // `cargo run` sets the variable at run time too: prefer it, because a binary reused from a
    // shared target directory may have been built in another checkout.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// A `cargo` command without the variables the outer `cargo run -p xtask` set for xtask itself.
///
/// `CARGO_MANIFEST_DIR`, `CARGO_PKG_*` and their kin describe xtask, not the crates the inner
/// build compiles; build scripts that watch them (ring's does) would be marked dirty, so every
/// switch between `cargo xtask …` and a plain `cargo build` rebuilt ring, rustls, reqwest and
/// the harbor crates (40–90 s). What the user set (`CARGO_HOME`, `CARGO_TARGET_DIR`,
/// `CARGO_TERM_*`, `CARGO_BUILD_*`, `CARGO_PROFILE_*` …) is kept.
fn cargo() -> Command {
    let program = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if is_set_by_cargo_for_xtask(name) {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// The variables cargo sets for the crate it runs (cargo's reference, "Environment variables
/// Cargo sets for crates"), which must not leak into a nested build.
fn is_set_by_cargo_for_xtask(name: &str) -> bool {
    matches!(
        name,
        "CARGO"
            | "CARGO_MANIFEST_DIR"
            | "CARGO_MANIFEST_PATH"
            | "CARGO_MANIFEST_LINKS"
            | "CARGO_CRATE_NAME"
            | "CARGO_BIN_NAME"
            | "CARGO_PRIMARY_PACKAGE"
            | "CARGO_TARGET_TMPDIR"
            | "CARGO_RUSTC_CURRENT_DIR"
            | "OUT_DIR"
    ) || name.starts_with("CARGO_PKG_")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Times one phase and prints it: ✔ when it ran and (for a command's exit status) succeeded, ✘
/// with the reason otherwise, so a log read from its end names the phase that failed.
fn phase<T: 'static>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    eprintln!("xtask: ▶ {name}");
    let out = f();
    let took = started.elapsed().as_secs_f64();
    match &out {
        Ok(value) => match (value as &dyn std::any::Any).downcast_ref::<std::process::ExitStatus>()
        {
            Some(status) if !status.success() => {
                eprintln!("xtask: ✘ {name} ({took:.1} s): {status}")
            }
            _ => eprintln!("xtask: ✔ {name} ({took:.1} s)"),
        },
        Err(e) => eprintln!("xtask: ✘ {name} ({took:.1} s): {e:#}"),
    }
    out
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn have(binary: &str) -> bool {
    quiet(Command::new("sh").args(["-c", &format!("command -v {binary}")]))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Installs Debian packages when we may; otherwise says exactly what to run.
fn install(packages: &[&str]) -> Result<()> {
    let command = format!(
        "apt-get update && apt-get install -y {}",
        packages.join(" ")
    );
    if !(is_root() && have("apt-get")) {
        bail!("missing {}; run as root: {command}", packages.join(", "));
    }
    eprintln!("xtask:   installing {}", packages.join(" "));
    let ok = Command::new("sh")
        .args(["-c", &format!("apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q {} >/dev/null", packages.join(" "))])
        .status()
        .context("running apt-get")?
        .success();
    if !ok {
        bail!("`{command}` failed");
    }
    Ok(())
}

fn docker_answers() -> bool {
    quiet(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]))
}

fn ensure_docker() -> Result<()> {
    if docker_answers() {
        return Ok(());
    }
    if !have("dockerd") {
        install(&["docker.io"])?;
    }
    eprintln!("xtask:   starting dockerd (log: /var/log/harbor-dockerd.log)");
    let log = std::fs::File::create("/var/log/harbor-dockerd.log")
        .or_else(|_| std::fs::File::create(std::env::temp_dir().join("harbor-dockerd.log")))
        .context("creating the dockerd log")?;
    Command::new("dockerd")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting dockerd")?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if docker_answers() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("dockerd did not answer within 60 s; see /var/log/harbor-dockerd.log")
}

fn ensure_images() -> Result<()> {
    let run = || -> Result<bool> {
        Ok(Command::new("bash")
            .arg(root().join("scripts/offline-images.sh"))
            .status()
            .context("running offline-images.sh")?
            .success())
    };
    if run()? {
        return Ok(());
    }
    // The script exits 2 when it has to build and debootstrap is missing: install it, once.
    if !have("debootstrap") {
        install(&["debootstrap"])?;
        if run()? {
            return Ok(());
        }
    }
    bail!("scripts/offline-images.sh failed")
}

fn ensure_local_binaries() -> Result<()> {
    let postgres = have("initdb") || Path::new("/usr/lib/postgresql").exists();
    let mut missing = Vec::new();
    if !postgres {
        missing.push("postgresql");
    }
    if !have("redis-server") {
        missing.push("redis-server");
    }
    // The report tests open report.html in a real headless browser.
    if !have("chromium") {
        missing.push("chromium");
    }
    if missing.is_empty() {
        return Ok(());
    }
    install(&missing)
}

/// Makes the machine able to serve both backends the suite exercises.
fn ensure_environment() -> Result<()> {
    phase("docker engine", ensure_docker)?;
    phase("container images", ensure_images)?;
    phase("local backend binaries and chromium", ensure_local_binaries)?;
    phase(
        "node-oidc-provider for the interop test (npm, pinned)",
        interop::ensure_oidc_provider,
    )?;
    Ok(())
}

fn build_certify() -> Result<PathBuf> {
    let ok = cargo()
        .current_dir(root())
        .args([
            "build",
            "--quiet",
            "-p",
            "harbor-harness",
            "--bin",
            "harbor-certify",
        ])
        .status()
        .context("running cargo build")?
        .success();
    if !ok {
        bail!("building harbor-certify failed");
    }
    Ok(target_dir().join("debug/harbor-certify"))
}

/// The servers held for the run by `harbor-certify infra`; stopped on drop.
struct HeldInfra {
    child: Child,
    /// Held open for the run: if xtask dies, the pipe closes and `infra` stops by itself.
    stdin: Option<std::process::ChildStdin>,
    env: Vec<(String, String)>,
}

impl Drop for HeldInfra {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn hold_infra(certify: &Path) -> Result<HeldInfra> {
    hold(certify, &["infra"], &[])
}

/// Starts `harbor-certify ARGS --env-file F` (`infra` or `serve`), holding its standard input, and
/// waits for the env file it writes once ready.
fn hold(certify: &Path, args: &[&str], env: &[(String, String)]) -> Result<HeldInfra> {
    let env_file = target_dir().join(format!("harbor-{}-{}.env", args[0], std::process::id()));
    let _ = std::fs::remove_file(&env_file);
    let mut child = Command::new(certify)
        .current_dir(root())
        .args(args)
        .arg("--env-file")
        .arg(&env_file)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting harbor-certify {}", args[0]))?;
    let stdin = child.stdin.take();
    let mut held = HeldInfra {
        child,
        stdin,
        env: Vec::new(),
    };
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&env_file) {
            held.env = text
                .lines()
                .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                .collect();
            return Ok(held);
        }
        if let Some(status) = held.child.try_wait()? {
            bail!(
                "harbor-certify {} exited with {status} before it was ready",
                args[0]
            );
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!("the servers were not ready within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every loom model: the sync-point controller (`harbor-syncpoint`) and the lock protocol
/// (`harbor-protocol-model`: the hardened protocol must hold on every interleaving, each v1
/// variant's counterexample must be found and is printed). Built with `--cfg harbor_loom` in a
/// target directory of its own, so the normal build is not invalidated. `LOOM_MAX_PREEMPTIONS`
/// bounds the search (default 3).
fn loom() -> Result<()> {
    let started = Instant::now();
    let output = cargo()
        .current_dir(root())
        .env("RUSTFLAGS", "--cfg harbor_loom")
        .env("RUST_BACKTRACE", "0")
        .env(
            "LOOM_MAX_PREEMPTIONS",
            std::env::var("LOOM_MAX_PREEMPTIONS").unwrap_or_else(|_| "3".into()),
        )
        .args([
            "test",
            "--quiet",
            "--release",
            "-p",
            "harbor-syncpoint",
            "-p",
            "harbor-protocol-model",
            "--lib",
            "--target-dir",
        ])
        .arg(target_dir().join("loom"))
        .args(["--", "--nocapture"])
        .stderr(Stdio::piped())
        .output()
        .context("running cargo test for loom")?;
    let log = String::from_utf8_lossy(&output.stderr);
    // The counterexamples are expected (one per variant): show them, then the summary. On success
    // the panic lines loom caught are left out: a CI log's only `panicked at` lines must be real
    // failures, since log excerpts are taken from the last one.
    for line in log.lines().filter(|l| {
        !l.starts_with("note:")
            && !l.trim().is_empty()
            && (!output.status.success() || !l.contains("panicked at"))
    }) {
        eprintln!("  {line}");
    }
    let holds = log
        .lines()
        .filter(|l| l.trim_start().starts_with("HOLDS"))
        .count();
    let caught = log
        .lines()
        .filter(|l| l.trim_start().starts_with("CAUGHT"))
        .count();
    eprintln!(
        "xtask: loom: {holds} hardened checks hold, {caught} protocol variants caught, sync-point controller checked, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if !output.status.success() {
        bail!("a loom model check failed");
    }
    Ok(())
}

fn test(args: &[String]) -> Result<ExitCode> {
    let started = Instant::now();
    ensure_environment()?;
    phase("loom models (sync points, lock protocol)", loom)?;
    let certify = phase("build harbor-certify", build_certify)?;
    let held = phase("provision PostgreSQL and Redis for the run", || {
        hold_infra(&certify)
    })?;
    let status = phase("cargo nextest run --workspace", || {
        let mut cmd = cargo();
        cmd.current_dir(root())
            .args(["nextest", "run", "--workspace"])
            .args(args);
        for (k, v) in &held.env {
            cmd.env(k, v);
        }
        cmd.status()
            .context("running cargo nextest (is cargo-nextest installed?)")
    })?;
    // nextest writes its JUnit file under the target directory, which CI keeps outside the clone
    // (`$HOME/.cache/harbor-target`): copy it to the one artefact folder in the clone.
    let junit = target_dir().join("nextest").join("ci").join("junit.xml");
    if junit.exists() {
        let artefacts = root().join("target").join("test-artifacts");
        std::fs::create_dir_all(&artefacts)?;
        std::fs::copy(&junit, artefacts.join("nextest-junit.xml"))?;
    }
    // Schedules nobody wrote down: every interleaving of every pair of operations on the correct
    // build (silent), then each ordering flaw (each must be found).
    let explored = phase(
        "harbor-certify explore --kill-matrix (every pair of operations, every schedule)",
        || {
            let mut cmd = flaws_certify();
            cmd.args([
                "explore",
                "--backend",
                "external",
                "--kill-matrix",
                "--out",
                "reports/explore",
            ]);
            for (k, v) in &held.env {
                cmd.env(k, v);
            }
            cmd.env("RUST_LOG", "off");
            cmd.status().context("running harbor-certify explore")
        },
    )?;
    // The certification gate: the scenario catalogue on the same servers, reports under reports/.
    // Twice each: every scenario kind, faults included, must give the same trace signature on a
    // second run (else FLAKY), so a measurement that leaks into a signature fails here.
    let certified = phase(
        "harbor-certify run --repeat 2 (the scenario catalogue)",
        || {
            let mut cmd = Command::new(&certify);
            cmd.current_dir(root()).args([
                "run",
                "--backend",
                "external",
                "--repeat",
                "2",
                "--out",
                "reports",
            ]);
            // The report states what exploration established (the phase before this one).
            let explored = root().join("reports/explore/latest/explore.json");
            if explored.exists() {
                cmd.arg("--exploration").arg(explored);
            }
            for (k, v) in &held.env {
                cmd.env(k, v);
            }
            cmd.status().context("running harbor-certify run")
        },
    )?;
    // Proof that the certification can fail: the catalogue against every seeded flaw.
    let mutants = phase("harbor-certify mutants (the kill matrix)", || {
        let mut cmd = flaws_certify();
        cmd.args([
            "mutants",
            "--backend",
            "external",
            "--catching-only",
            "--out",
            "reports/mutants",
        ]);
        for (k, v) in &held.env {
            cmd.env(k, v);
        }
        cmd.status().context("running harbor-certify mutants")
    })?;
    // Model-based testing: the state machine against the correct build and each flaw it can see.
    let proptest = phase(
        "harbor-certify proptest --kill-matrix (state machine vs reference model)",
        || proptest_run(&held.env),
    )?;
    // The goose load test, briefly: the load path works and its invariants hold.
    let load = phase("harbor-load smoke (goose, 20 users, 5 s)", || {
        let mut cmd = cargo();
        cmd.current_dir(root())
            .args([
                "run",
                "--quiet",
                "-p",
                "harbor-loadtests",
                "--bin",
                "harbor-load",
                "--",
            ])
            .args(["-u", "20", "-r", "20", "-t", "5", "--quiet"]);
        for (k, v) in &held.env {
            cmd.env(k, v);
        }
        cmd.env("HARBOR_LOAD_TENANTS", "20");
        cmd.status().context("running harbor-load")
    })?;
    // The API contract: Schemathesis against `harbor-certify serve` on the same servers.
    let contract = phase(
        "schemathesis (the API contract: owner, anonymous, another tenant)",
        || schemathesis(&certify, &held.env),
    )?;
    drop(held);
    eprintln!("xtask: total {:.1} s", started.elapsed().as_secs_f64());
    for (what, s) in [
        ("the test suite", &status),
        ("the certification", &certified),
        ("the mutation run", &mutants),
        ("the exploration", &explored),
        ("the state machine", &proptest),
        ("the load smoke", &load),
        ("the contract run", &contract),
    ] {
        if !s.success() {
            eprintln!("xtask: {what} failed ({s})");
        }
    }
    let worst = [
        status, certified, mutants, explored, proptest, load, contract,
    ]
    .iter()
    .find(|s| !s.success())
    .map(|s| s.code().unwrap_or(1).clamp(1, 255) as u8);
    Ok(worst.map_or(ExitCode::SUCCESS, ExitCode::from))
}

/// The Schemathesis version the contract run uses (PyPI).
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// A virtualenv with Schemathesis, under the target directory (kept between runs).
fn ensure_schemathesis() -> Result<PathBuf> {
    let venv = target_dir().join("schemathesis-venv");
    let bin = venv.join("bin").join("schemathesis");
    let pinned = SCHEMATHESIS
        .split_once("==")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let installed = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success());
    if installed.is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(pinned)) {
        return Ok(bin);
    }
    if !venv.join("bin").join("pip").exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("python3 -m venv")?
            .success();
        if !ok {
            bail!("python3 -m venv failed; install python3 and python3-venv");
        }
    }
    eprintln!("xtask:   installing {SCHEMATHESIS} (PyPI)");
    let ok = Command::new(venv.join("bin").join("pip"))
        .args(["install", "-q", SCHEMATHESIS])
        .status()
        .context("pip install")?
        .success();
    if !ok {
        bail!("pip install {SCHEMATHESIS} failed");
    }
    Ok(bin)
}

/// Three Schemathesis passes over `harbor-certify serve`: the owner's token, no token, and
/// another tenant's token (which must learn nothing of the demo workspace). JUnit files go to
/// `reports/schemathesis/`.
fn schemathesis(
    certify: &Path,
    infra_env: &[(String, String)],
) -> Result<std::process::ExitStatus> {
    let bin = ensure_schemathesis()?;
    let served = hold(
        certify,
        &["serve", "--backend", "external", "--replicas", "1"],
        infra_env,
    )?;
    let var = |name: &str| {
        served
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let dir = root().join("scripts").join("schemathesis");
    let reports = root().join("reports").join("schemathesis");
    std::fs::create_dir_all(&reports)?;
    let mut worst = None;
    for (name, token, foreign) in [
        ("owner", var("HARBOR_OWNER_TOKEN"), false),
        ("anonymous", String::new(), false),
        ("foreign", var("HARBOR_OTHER_TENANT_TOKEN"), true),
    ] {
        let mut cmd = Command::new(&bin);
        cmd.current_dir(&dir)
            .env("PYTHONPATH", &dir)
            .env("SCHEMATHESIS_HOOKS", "harbor_checks")
            .env("HARBOR_WORKSPACE_ID", var("HARBOR_WORKSPACE_ID"))
            .args(["--config-file", "schemathesis.toml", "run"])
            .arg(var("HARBOR_OPENAPI_URL"))
            .args([
                "--checks",
                "all",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                "150",
                "--seed",
                "1",
            ])
            .args(["--report", "junit", "--report-junit-path"])
            .arg(reports.join(format!("{name}.junit.xml")));
        if !token.is_empty() {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if foreign {
            cmd.env("HARBOR_FOREIGN_WORKSPACE", var("HARBOR_WORKSPACE_ID"));
        }
        eprintln!("xtask:   schemathesis as {name}");
        let status = cmd.status().context("running schemathesis")?;
        if !status.success() && worst.is_none() {
            worst = Some(status);
        }
    }
    drop(served);
    Ok(worst.unwrap_or_default())
}

/// `harbor-certify` of the flaws build, through cargo (built on first use), run from the root;
/// the phases that need seeded flaws (explore, mutants, proptest) add their arguments.
fn flaws_certify() -> Command {
    let mut cmd = cargo();
    cmd.current_dir(root()).args([
        "run",
        "--quiet",
        "-p",
        "harbor-harness",
        "--features",
        "flaws",
        "--bin",
        "harbor-certify",
        "--",
    ]);
    cmd
}

/// The state machine's kill matrix on the held servers (flaws build). `PROPTEST_CASES` sizes it
/// (default 16 here).
fn proptest_run(env: &[(String, String)]) -> Result<std::process::ExitStatus> {
    let mut cmd = flaws_certify();
    cmd.args(["proptest", "--backend", "external", "--kill-matrix"])
        .env(
            "PROPTEST_CASES",
            std::env::var("PROPTEST_CASES").unwrap_or_else(|_| "16".into()),
        )
        .env("RUST_LOG", "off")
        .envs(env.iter().map(|(k, v)| (k, v)));
    cmd.status().context("running harbor-certify proptest")
}

/// The criterion benchmarks (`benches/`), each beside its raw ceiling, on a held Redis; the ratios
/// go to `reports/bench/<timestamp>/` (`bench.json`, `bench.md`) and `reports/bench/latest`.
fn chrono_like_stamp() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y%m%dT%H%M%SZ"])
        .output()
        .ok();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "run".into())
}

/// Only the state machine (`cargo xtask proptest`).
fn proptest() -> Result<ExitCode> {
    ensure_environment()?;
    let certify = phase("build harbor-certify", build_certify)?;
    let held = phase("provision PostgreSQL and Redis", || hold_infra(&certify))?;
    let status = phase("harbor-certify proptest --kill-matrix", || {
        proptest_run(&held.env)
    })?;
    drop(held);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8)
    })
}

/// Only the contract run: Schemathesis against `harbor-certify serve`.
fn contract() -> Result<ExitCode> {
    ensure_environment()?;
    let certify = phase("build harbor-certify", build_certify)?;
    let held = phase("provision PostgreSQL and Redis", || hold_infra(&certify))?;
    let status = phase(
        "schemathesis (the API contract: owner, anonymous, another tenant)",
        || schemathesis(&certify, &held.env),
    )?;
    drop(held);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8)
    })
}

fn load(args: &[String]) -> Result<ExitCode> {
    ensure_environment()?;
    let status = phase(&format!("harbor-load {}", args.join(" ")), || {
        cargo()
            .current_dir(root())
            .args([
                "run",
                "--quiet",
                "--release",
                "-p",
                "harbor-loadtests",
                "--bin",
                "harbor-load",
                "--",
            ])
            .args(args)
            .status()
            .context("running harbor-load")
    })?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8)
    })
}

fn certify(args: &[String]) -> Result<ExitCode> {
    ensure_environment()?;
    let certify = phase("build harbor-certify", build_certify)?;
    let args: Vec<String> = if args.is_empty() {
        vec!["run".into()]
    } else {
        args.to_vec()
    };
    let status = phase(&format!("harbor-certify {}", args.join(" ")), || {
        Command::new(&certify)
            .current_dir(root())
            .args(&args)
            .status()
            .context("running harbor-certify")
    })?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8)
    })
}

/// The cargo-fuzz targets, in `fuzz/fuzz_targets/`.
const FUZZ_TARGETS: &[&str] = &[
    "callback_query",
    "jwt",
    "sealed_token",
    "state_record",
    "providers_file",
    "scenario_toml",
];

/// Every fuzz target for `SECONDS` each; the figures libFuzzer prints at the end go to
/// `reports/fuzz/<timestamp>/fuzz.json`.
fn fuzz(args: &[String]) -> Result<ExitCode> {
    let seconds: u64 = args
        .first()
        .map(|s| s.parse())
        .transpose()
        .context("SECONDS is a number")?
        .unwrap_or(60);
    // `cargo +nightly` needs rustup's proxy; `cargo xtask` runs under the toolchain's own cargo.
    let nightly_cargo = || {
        let mut cmd = Command::new("rustup");
        cmd.args(["run", "nightly", "cargo"]);
        cmd
    };
    let have = nightly_cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        phase("install cargo-fuzz", || {
            let status = cargo()
                .args(["install", "cargo-fuzz", "--locked"])
                .status()?;
            if !status.success() {
                bail!("cargo install cargo-fuzz failed (it needs the nightly toolchain: rustup toolchain install nightly)");
            }
            Ok(())
        })?;
    }
    let dir = root().join("fuzz");
    phase("build the fuzz targets (nightly, instrumented)", || {
        let status = nightly_cargo()
            .current_dir(&dir)
            .args(["fuzz", "build", "-O"])
            .status()?;
        if !status.success() {
            bail!("cargo fuzz build failed");
        }
        Ok(())
    })?;
    let mut rows = Vec::new();
    let mut crashed = Vec::new();
    for target in FUZZ_TARGETS {
        let row = phase(&format!("fuzz {target} for {seconds} s"), || {
            std::fs::create_dir_all(dir.join("run-corpus").join(target))?;
            let out = nightly_cargo()
                .current_dir(&dir)
                // New inputs go to the first folder (kept locally, ignored by git); the committed
                // seeds are only read.
                .args([
                    "fuzz",
                    "run",
                    target,
                    &format!("run-corpus/{target}"),
                    &format!("corpus/{target}"),
                    "-O",
                    "--",
                ])
                .args([
                    format!("-max_total_time={seconds}"),
                    "-print_final_stats=1".into(),
                    "-rss_limit_mb=4096".into(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()?;
            let text = String::from_utf8_lossy(&out.stderr);
            let stat = |name: &str| {
                text.lines().find_map(|l| {
                    l.strip_prefix(&format!("stat::{name}:"))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
            };
            let coverage = text
                .lines()
                .rev()
                .find_map(|l| l.split(" cov: ").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|c| c.parse::<u64>().ok());
            let row = serde_json::json!({
                "target": target,
                "seconds": seconds,
                "executions": stat("number_of_executed_units"),
                "executions_per_s": stat("average_exec_per_sec"),
                "coverage_edges": coverage,
                "seed_inputs": std::fs::read_dir(dir.join("corpus").join(target)).map(|d| d.count()).unwrap_or(0),
                "corpus_inputs": std::fs::read_dir(dir.join("run-corpus").join(target)).map(|d| d.count()).unwrap_or(0),
                "crashed": !out.status.success(),
            });
            if !out.status.success() {
                eprintln!(
                    "{}",
                    text.lines()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            eprintln!(
                "xtask:   {target}: {} executions, coverage {} edges{}",
                row["executions"],
                row["coverage_edges"],
                if out.status.success() {
                    ""
                } else {
                    ", CRASHED (input in fuzz/artifacts/)"
                }
            );
            Ok(row)
        })?;
        if row["crashed"] == true {
            crashed.push(target.to_string());
        }
        rows.push(row);
    }
    let stamp = chrono_like_stamp();
    let out = root().join("reports").join("fuzz").join(&stamp);
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("fuzz.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "targets": rows, "crashes": crashed }))?,
    )?;
    eprintln!("xtask: fuzz report in {}", out.display());
    Ok(if crashed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
