//! Schemathesis, pinned and installed in its own virtualenv, run against `harbor-certify serve`
//! with the owner's token, no token and another tenant's token.

use super::*;

/// The Schemathesis version the contract run uses (PyPI).
pub(crate) const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// A virtualenv with Schemathesis, under the target directory (kept between runs).
pub(crate) fn ensure_schemathesis() -> Result<PathBuf> {
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

/// Three Schemathesis passes over `harbor-certify serve` (with `serve_extra`: `--target PROFILE`
/// serves a profile's target): the owner's token, no token, and another tenant's token (which
/// must learn nothing of the demo workspace). JUnit files go to `reports/schemathesis/<label>/`.
pub(crate) fn schemathesis(
    certify: &Path,
    infra_env: &[(String, String)],
    serve_extra: &[&str],
    label: &str,
) -> Result<std::process::ExitStatus> {
    let bin = ensure_schemathesis()?;
    let mut serve = vec!["serve", "--backend", "external", "--replicas", "1"];
    serve.extend_from_slice(serve_extra);
    let served = hold(certify, &serve, infra_env)?;
    let var = |name: &str| {
        served
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let dir = root().join("scripts").join("schemathesis");
    let reports = root().join("reports").join("schemathesis").join(label);
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
