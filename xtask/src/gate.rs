//! `cargo xtask test`: the phases of the gate CI runs, one after another on one PostgreSQL and one
//! Redis held for the run — the test suite, the certification and mutation runs, exploration with its
//! kill matrix, the target profiles, the state machine, a load smoke and the contract — each timed.
//! A phase that cannot run stops the gate; a phase that runs and fails does not: every later phase
//! still runs, each failure is named at the end, and the exit code is the first failure's.

use super::*;

pub(crate) fn test(args: &[String]) -> Result<ExitCode> {
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
    // (the split namespace, the missing row lock). Unarmed, authorize, disconnect, revoke and
    // activation take the workspace lock and their row's lock in one statement: these sets are
    // where exploration meets that statement (the others park between the two locks).
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
                    "row_probe,activate,callback,disconnect,authorize,revoke",
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
    // Then the same profile with the callback logging its token: the leak must be found in the
    // started process's own log files, which the harness's log capture never sees.
    let reference_target = phase(
        "harbor-certify run --target targets/reference/target.toml (the reference as a process)",
        || {
            let status = target_run(&certify, &held.env, "targets/reference/target.toml", &[])?;
            if !status.success() {
                return Ok(status);
            }
            // The process runs the reference's debug binary; a copy built with the seeded flaws
            // compiled in serves this run (`HARBOR_REFERENCE_BUILD`), and the binary the other
            // runs start is built back without them.
            let build = |features: &[&str]| -> Result<()> {
                let status = cargo()
                    .current_dir(root())
                    .args([
                        "build",
                        "--quiet",
                        "-p",
                        "harbor-service",
                        "--bin",
                        "harbor-service",
                    ])
                    .args(features)
                    .status()
                    .context("building harbor-service")?;
                if !status.success() {
                    bail!("building harbor-service {features:?} failed");
                }
                Ok(())
            };
            build(&["--features", "flaws"])?;
            let flawed_dir = target_dir().join("flawed-debug");
            std::fs::create_dir_all(&flawed_dir)?;
            std::fs::copy(
                target_dir().join("debug/harbor-service"),
                flawed_dir.join("harbor-service"),
            )
            .context("copying the flawed harbor-service")?;
            build(&[])?;
            let mut flawed = flaws_certify();
            flawed.env("HARBOR_REFERENCE_BUILD", "flawed-debug");
            flawed.args([
                "run",
                "--backend",
                "external",
                "--target",
                "targets/reference/target.toml",
                "--flaw",
                "token-in-logs",
                "--out",
                "reports/targets/reference-token-in-logs",
                "TM-NO-TOKEN-EXPOSURE",
            ]);
            for (k, v) in &held.env {
                flawed.env(k, v);
            }
            // Expected to fail, so its output is not digested as a failure; what decides is the
            // report: the scenario FAILED at its leak search, on the replicas' logs — not at an
            // earlier step, not SKIPPED, not for another reason.
            let found = flawed
                .stdout(std::process::Stdio::null())
                .status()
                .context("running harbor-certify run --flaw token-in-logs")?;
            match leak_found_in_logs("reports/targets/reference-token-in-logs/latest/report.json") {
                Ok(()) if found.code() == Some(1) => Ok(status),
                Ok(()) => {
                    eprintln!("xtask: the token-in-logs run exited {found}, not 1");
                    Ok(failed())
                }
                Err(why) => {
                    eprintln!(
                        "xtask: TM-NO-TOKEN-EXPOSURE on the reference as a process with token-in-logs: {why}"
                    );
                    Ok(failed())
                }
            }
        },
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

/// Whether the report at `path` shows TM-NO-TOKEN-EXPOSURE FAILED by its leak search finding an
/// issued token in the service's logs (`Err`: what it shows instead). The search's message may
/// follow the step's note and list other places first.
fn leak_found_in_logs(path: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(root().join(path)).map_err(|e| format!("{path}: {e}"))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let scenario = report["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["id"] == "TM-NO-TOKEN-EXPOSURE")
        .ok_or("the report has no TM-NO-TOKEN-EXPOSURE")?;
    let by_leak = scenario["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|f| {
            f["message"]
                .as_str()
                .is_some_and(|m| m.contains("logs contains an issued token"))
        });
    if scenario["verdict"] == "FAILED" && by_leak {
        Ok(())
    } else {
        Err(format!(
            "{} ({}), not FAILED by a token found in its logs: a token in the replicas' own logs went unseen",
            scenario["verdict"],
            scenario["findings"][0]["message"]
        ))
    }
}

/// A failed phase's status (exit 1).
fn failed() -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    std::process::ExitStatus::from_raw(1 << 8)
}
