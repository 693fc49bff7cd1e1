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
//! `schemathesis.rs`, `fuzz.rs`, `bench.rs`, `interop.rs`, `gate.rs` (the phases of `test`); this
//! file the commands.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod bench;
mod digest;
mod environment;
mod fuzz;
mod gate;
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
        "test" => gate::test(&rest),
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
