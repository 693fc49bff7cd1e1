//! The real authorization server of the interop test: node-oidc-provider, pinned in
//! `scripts/oidc-provider/package-lock.json` and installed with `npm ci` (registry only) when the
//! installed copy is missing or another version. Node.js comes from the distribution when absent.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{have, install, root};

/// Makes `scripts/oidc-provider/node_modules` hold exactly the locked versions.
pub fn ensure_oidc_provider() -> Result<()> {
    if !(have("node") && have("npm")) {
        install(&["nodejs", "npm"])?;
    }
    let dir = root().join("scripts/oidc-provider");
    let locked = version_in(&dir.join("package-lock.json"), "node_modules/oidc-provider")?;
    let installed = std::fs::read_to_string(dir.join("node_modules/oidc-provider/package.json"))
        .ok()
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(&raw).ok())
        .and_then(|p| p["version"].as_str().map(str::to_owned));
    if installed.as_deref() == Some(locked.as_str()) {
        return Ok(());
    }
    eprintln!("xtask:   installing oidc-provider {locked} (npm ci)");
    let ok = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&dir)
        .status()
        .context("running npm ci")?
        .success();
    if !ok {
        bail!("`npm ci` in scripts/oidc-provider failed");
    }
    Ok(())
}

/// The version the lock file pins for `package`.
fn version_in(lock: &std::path::Path, package: &str) -> Result<String> {
    let raw =
        std::fs::read_to_string(lock).with_context(|| format!("reading {}", lock.display()))?;
    let parsed: serde_json::Value =
        serde_json::from_str(&raw).context("parsing package-lock.json")?;
    parsed["packages"][package]["version"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{package} is not in {}", lock.display()))
}
