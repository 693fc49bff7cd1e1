//! `cargo xtask fuzz`: every cargo-fuzz target for a while, its figures to `fuzz.json`.

use super::*;

/// The cargo-fuzz targets, in `fuzz/fuzz_targets/`.
pub(crate) const FUZZ_TARGETS: &[&str] = &[
    "callback_query",
    "jwt",
    "sealed_token",
    "state_record",
    "providers_file",
    "scenario_toml",
];

/// Every fuzz target for `SECONDS` each; the figures libFuzzer prints at the end go to
/// `reports/fuzz/<timestamp>/fuzz.json`.
pub(crate) fn fuzz(args: &[String]) -> Result<ExitCode> {
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
