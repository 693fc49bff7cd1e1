//! `cargo xtask`: makes the machine able to serve, then runs the job.
//!
//! - `cargo xtask test [ARGS…]`: the loom model check of `harbor-syncpoint`, then the whole test
//!   suite (`cargo nextest run --workspace ARGS…`) with one PostgreSQL and one Redis for the run,
//!   held by `harbor-certify infra`, then the certification gate (`harbor-certify run`), the
//!   mutation run (`harbor-certify mutants`, built with `--features flaws`), the exploration of
//!   every pair of operations with its kill matrix (`harbor-certify explore --kill-matrix`), the
//!   two target profiles (`run` and `explore --target`), the state machine, a load smoke and the
//!   contract run, on them.
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
//!
//! Files: `environment.rs` (that set-up), `held.rs` (`harbor-certify` built and the servers it
//! holds for a run), `digest.rs` (a failed command's reasons, repeated at the log's end),
//! `schemathesis.rs`, `fuzz.rs`, `bench.rs`, `interop.rs`; this file the
//! commands and the phases of `test`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod bench;
mod digest;
mod environment;
mod fuzz;
mod held;
mod interop;
mod schemathesis;

use environment::*;
use fuzz::*;
use held::*;
use schemathesis::*;

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
    // build (silent; two schedules at a time on each of two services, so that running schedules
    // side by side, and sharing sets among services, are held to silence too), then each ordering flaw
    // (each must be found). Then the lock probes' own kill
    // matrix: with no sync point armed, the probes alone must catch the lock a flawed build skips
    // (the split namespace, the missing row lock).
    let explored = phase(
        "harbor-certify explore --kill-matrix (every pair of operations, every schedule)",
        || {
            let matrices: [&[&str]; 2] = [
                &[
                    "--lanes",
                    "2",
                    "--services",
                    "2",
                    "--out",
                    "reports/explore",
                ],
                &[
                    "--lock-probes",
                    "--ops",
                    "row_probe,activate,callback",
                    "--pairs",
                    "--out",
                    "reports/explore-lock-probes",
                ],
            ];
            let mut last = None;
            for args in matrices {
                let mut cmd = flaws_certify();
                cmd.args(["explore", "--backend", "external", "--kill-matrix"])
                    .args(args)
                    .envs(held.env.iter().map(|(k, v)| (k, v)))
                    .env("RUST_LOG", "off");
                let status = digest::status(&mut cmd, "the exploration")
                    .context("running harbor-certify explore")?;
                if !status.success() {
                    return Ok(status);
                }
                last = Some(status);
            }
            Ok(last.expect("two kill matrices ran"))
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
            digest::status(&mut cmd, "the certification").context("running harbor-certify run")
        },
    )?;
    // Black-box certification: the reference service as a separate process, started and reached
    // only through its target profile — every scenario it can serve must pass, as in-process.
    let reference_target = phase(
        "harbor-certify run --target targets/reference/target.toml (the reference as a process)",
        || target_run(&certify, &held.env, "targets/reference/target.toml", &[]),
    )?;
    // The seeds' own systems: the Flask port in both modes, each scenario's verdict held to the
    // checked-in expectation (a verdict that changes, either way, fails).
    let flask_target = phase(
        "harbor-certify run --target targets/flask-seed (v2, v1, and deployed; expected verdicts)",
        || {
            let setup = Command::new(root().join("targets/flask-seed/setup.sh"))
                .status()
                .context("running targets/flask-seed/setup.sh (python3 -m venv, pip)")?;
            if !setup.success() {
                return Ok(setup);
            }
            let mut last = None;
            for mode in ["v2", "v1"] {
                let expected = format!("targets/flask-seed/expected/{mode}.toml");
                let status = target_run(
                    &certify,
                    &held.env,
                    "targets/flask-seed/target.toml",
                    &["--target-mode", mode, "--expect-verdicts", &expected],
                )?;
                if !status.success() {
                    return Ok(status);
                }
                last = Some(status);
            }
            // The same port already deployed (its own database, keys and process, by
            // deployed/deploy.py): reached, not started, and given only what a deployed service
            // offers.
            let deployed_env = root().join("target/flask-deployed.env");
            let mut deploy = Command::new(root().join("targets/flask-seed/.venv/bin/python"));
            deploy
                .current_dir(root())
                .args(["targets/flask-seed/deployed/deploy.py", "up"])
                .arg(&deployed_env)
                .env("HARBOR_CERTIFY", &certify);
            for (k, v) in &held.env {
                deploy.env(k, v);
            }
            let deployed = deploy
                .status()
                .context("running targets/flask-seed/deployed/deploy.py")?;
            if !deployed.success() {
                return Ok(deployed);
            }
            let run_deployed = || {
                let mut env = held.env.clone();
                for line in std::fs::read_to_string(&deployed_env)?.lines() {
                    if let Some((k, v)) = line.split_once('=') {
                        env.push((k.to_owned(), v.to_owned()));
                    }
                }
                target_run(
                    &certify,
                    &env,
                    "targets/flask-seed/deployed/target.toml",
                    &[
                        "--expect-verdicts",
                        "targets/flask-seed/expected/deployed.toml",
                    ],
                )
            };
            let status = run_deployed();
            // Taken down whatever the run said: the replica stopped, its database dropped.
            let mut down = Command::new(root().join("targets/flask-seed/.venv/bin/python"));
            down.current_dir(root())
                .args(["targets/flask-seed/deployed/deploy.py", "down"])
                .arg(&deployed_env);
            for (k, v) in &held.env {
                down.env(k, v);
            }
            let _ = down.status();
            let status = status?;
            if !status.success() {
                return Ok(status);
            }
            Ok(last.expect("two modes ran"))
        },
    )?;
    // Exploration through target profiles: silent on the reference as a process; on the Flask
    // port, v2's activation against its callbacks is silent (the audit's Phase 3 lock holds), the
    // threat model's callback consumes one state twice, and v1's split lock namespace is found
    // (the audit's Q2 race) — each held as the exact set of anomalies it must show.
    let explored_targets = phase(
        "harbor-certify explore --target (the reference as a process; the Flask port's findings)",
        || {
            let runs: [(&str, &[&str]); 7] = [
                (
                    "reference",
                    &[
                        "--target",
                        "targets/reference/target.toml",
                        "--ops",
                        "activate,callback,disconnect",
                        "--pairs",
                    ],
                ),
                (
                    "flask-seed-v2-activation",
                    &[
                        "--target",
                        "targets/flask-seed/target.toml",
                        "--target-mode",
                        "v2",
                        "--ops",
                        "activate,callback",
                    ],
                ),
                (
                    "flask-seed-v2-callbacks",
                    &[
                        "--target",
                        "targets/flask-seed/target.toml",
                        "--target-mode",
                        "v2",
                        "--ops",
                        "callback,callback",
                        "--expect-anomalies",
                        "server_error,not_serializable",
                    ],
                ),
                (
                    "flask-seed-v1",
                    &[
                        "--target",
                        "targets/flask-seed/target.toml",
                        "--target-mode",
                        "v1",
                        "--replicas",
                        "1",
                        "--ops",
                        "activate,callback",
                        "--expect-anomalies",
                        "mutual_exclusion_broken",
                    ],
                ),
                // The same targets at lock probes alone (no sync point armed): what an
                // unmodified service offers. Silent on the reference; on the Flask port, v2's
                // locks hold (only the callbacks' known finding), and v1's skipped locks are
                // each a request answering while a probe holds the lock it should have taken.
                (
                    "reference-lock-probes",
                    &[
                        "--target",
                        "targets/reference/target.toml",
                        "--lock-probes",
                        "--ops",
                        "row_probe,activate,callback,disconnect",
                        "--pairs",
                    ],
                ),
                (
                    "flask-seed-v2-lock-probes",
                    &[
                        "--target",
                        "targets/flask-seed/target.toml",
                        "--target-mode",
                        "v2",
                        "--lock-probes",
                        "--ops",
                        "row_probe,activate,callback",
                        "--pairs",
                        "--expect-anomalies",
                        "server_error,not_serializable",
                    ],
                ),
                (
                    "flask-seed-v1-lock-probes",
                    &[
                        "--target",
                        "targets/flask-seed/target.toml",
                        "--target-mode",
                        "v1",
                        "--replicas",
                        "1",
                        "--lock-probes",
                        "--ops",
                        "row_probe,activate,callback",
                        "--pairs",
                        "--expect-anomalies",
                        "lock_bypassed",
                    ],
                ),
            ];
            let mut last = None;
            for (name, args) in runs {
                let mut cmd = Command::new(&certify);
                cmd.current_dir(root())
                    .args(["explore", "--backend", "external", "--out"])
                    .arg(format!("reports/explore-targets/{name}"))
                    .args(args);
                for (k, v) in &held.env {
                    cmd.env(k, v);
                }
                let status = digest::status(&mut cmd, &format!("explore {name}"))
                    .context("running harbor-certify explore --target")?;
                if !status.success() {
                    return Ok(status);
                }
                last = Some(status);
            }
            Ok(last.expect("seven explorations ran"))
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
        digest::status(&mut cmd, "the mutation run").context("running harbor-certify mutants")
    })?;
    // Model-based testing: the state machine against the correct build and each flaw it can see.
    let proptest = phase(
        "harbor-certify proptest --kill-matrix (state machine vs reference model)",
        || proptest_run(&held.env),
    )?;
    // The goose load test, briefly: the load path works and its invariants hold — on the
    // reference in this process, then on the reference as a process through its profile.
    let load = phase(
        "harbor-load smoke (goose, 20 users, 5 s; in-process, then through targets/reference)",
        || {
            let mut last = None;
            for target in [None, Some("targets/reference/target.toml")] {
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
                if let Some(profile) = target {
                    cmd.env("HARBOR_LOAD_TARGET", profile);
                }
                let status = cmd.status().context("running harbor-load")?;
                if !status.success() {
                    return Ok(status);
                }
                last = Some(status);
            }
            Ok(last.expect("two load runs"))
        },
    )?;
    // The API contract: Schemathesis against `harbor-certify serve` on the same servers — the
    // in-process reference, then the reference as a process through its target profile.
    let contract = phase(
        "schemathesis (the API contract: owner, anonymous, another tenant)",
        || schemathesis(&certify, &held.env, &[], "in-process"),
    )?;
    let contract_target = phase(
        "schemathesis against serve --target targets/reference/target.toml",
        || {
            schemathesis(
                &certify,
                &held.env,
                &["--target", "targets/reference/target.toml"],
                "reference-target",
            )
        },
    )?;
    drop(held);
    eprintln!("xtask: total {:.1} s", started.elapsed().as_secs_f64());
    digest::print_all();
    for (what, s) in [
        ("the test suite", &status),
        ("the certification", &certified),
        ("the reference as a process", &reference_target),
        ("the flask-seed verdicts", &flask_target),
        ("the exploration through target profiles", &explored_targets),
        ("the mutation run", &mutants),
        ("the exploration", &explored),
        ("the state machine", &proptest),
        ("the load smoke", &load),
        ("the contract run", &contract),
        (
            "the contract run on the reference as a process",
            &contract_target,
        ),
    ] {
        if !s.success() {
            eprintln!("xtask: {what} failed ({s})");
        }
    }
    let worst = [
        status,
        certified,
        reference_target,
        flask_target,
        explored_targets,
        mutants,
        explored,
        proptest,
        load,
        contract,
        contract_target,
    ]
    .iter()
    .find(|s| !s.success())
    .map(|s| s.code().unwrap_or(1).clamp(1, 255) as u8);
    Ok(worst.map_or(ExitCode::SUCCESS, ExitCode::from))
}

/// `harbor-certify target check PROFILE --start`, then `harbor-certify run --target PROFILE`, on
/// the held servers; reports under `reports/targets/<profile's folder>[-mode]`.
fn target_run(
    certify: &std::path::Path,
    env: &[(String, String)],
    profile: &str,
    extra: &[&str],
) -> Result<std::process::ExitStatus> {
    let folder = std::path::Path::new(profile)
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "target".into());
    let mode = extra
        .iter()
        .position(|a| *a == "--target-mode")
        .and_then(|i| extra.get(i + 1))
        .map(|m| format!("-{m}"))
        .unwrap_or_default();
    // First the profile itself, tried on one replica: its fixtures, tokens, lock claim.
    let mut check = Command::new(certify);
    check.current_dir(root()).args([
        "target",
        "check",
        profile,
        "--start",
        "--backend",
        "external",
    ]);
    if let Some(i) = extra.iter().position(|a| *a == "--target-mode") {
        check.args(&extra[i..i + 2]);
    }
    for (k, v) in env {
        check.env(k, v);
    }
    let checked = check
        .output()
        .context("running harbor-certify target check --start")?;
    if !checked.status.success() {
        eprintln!(
            "xtask: target check {profile} --start failed:\n{}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        return Ok(checked.status);
    }
    let mut cmd = Command::new(certify);
    cmd.current_dir(root())
        .args(["run", "--backend", "external", "--target", profile])
        .args(["--out", &format!("reports/targets/{folder}{mode}")])
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    digest::status(&mut cmd, &format!("run --target {profile}{mode}"))
        .context("running harbor-certify run --target")
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
    digest::status(&mut cmd, "the state machine").context("running harbor-certify proptest")
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
        || schemathesis(&certify, &held.env, &[], "in-process"),
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
