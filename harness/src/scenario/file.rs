//! A scenario file as a whole: its top-level table ([`ScenarioFile`], whose steps are each step
//! kind's written form under [`super::step`]), read and written. The one writer of scenario files:
//! exploration and the state machine build a `ScenarioFile` and write it here, and every file
//! loads back equal after being written.

use serde::{Deserialize, Serialize};

use super::format::{ActorDef, Assertion, ServiceSection, Severity, TenantFixture, TenantSet};

/// One scenario file, as written.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Stable id such as `AUD-Q2-ACTIVATION-FIRST`.
    pub id: String,
    /// One line saying what is proved.
    pub title: String,
    /// The seed section or threat it covers.
    pub source: String,
    /// How bad a failure is.
    pub severity: Severity,
    /// The audit area, such as `concurrency` or `oauth-state` (groups the report).
    pub area: String,
    /// Requirement references (RFC sections, ASVS items, audit sections).
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub requirements: Vec<String>,
    /// Threat-matrix rows this scenario covers (names as in the threat model).
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub threats: Vec<String>,
    /// Seeded flaws this scenario exists to catch (`harbor-certify mutants` checks that it does).
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub catches: Vec<String>,
    /// Longer explanation for the report.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub description: String,
    /// How the service is started.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub service: ServiceSection,
    /// Tenants, each with one workspace, an owner and a plain member.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub tenants: Vec<TenantFixture>,
    /// Numbered tenants for load-shaped scenarios.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub tenant_sets: Vec<TenantSet>,
    /// Who acts.
    pub actors: Vec<ActorDef>,
    /// What happens, in order (`do = "…"` names the kind).
    pub steps: Vec<super::step::RawStep>,
    /// What must hold at the end.
    #[serde(default, rename = "assert", skip_serializing_if = "Vec::is_empty")]
    pub assertions: Vec<Assertion>,
}

/// Writes `file` in the scenario format, after `header` (comment lines, each starting `# `): the
/// one writer of scenario files (exploration's and the state machine's reproductions). What it
/// writes loads back equal (`load(write(s)) == s`).
pub fn write(file: &ScenarioFile, header: &str) -> Result<String, String> {
    let body = toml::to_string(file).map_err(|e| format!("writing {}: {e}", file.id))?;
    Ok(format!("{header}{body}"))
}

impl ScenarioFile {
    /// A file with its header fields and nothing else (a generator fills in the rest).
    pub fn new(id: &str, title: &str, source: &str, severity: Severity, area: &str) -> Self {
        Self {
            id: id.to_owned(),
            title: title.to_owned(),
            source: source.to_owned(),
            severity,
            area: area.to_owned(),
            requirements: Vec::new(),
            threats: Vec::new(),
            catches: Vec::new(),
            description: String::new(),
            service: ServiceSection::default(),
            tenants: Vec::new(),
            tenant_sets: Vec::new(),
            actors: Vec::new(),
            steps: Vec::new(),
            assertions: Vec::new(),
        }
    }
}

/// Reads a scenario file's text.
pub fn read(text: &str) -> Result<ScenarioFile, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every catalogue file and every saved reproduction loads back equal after being written.
    #[test]
    fn every_scenario_file_round_trips_through_the_writer() {
        let root = harbor_layering::crate_dir(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut files = Vec::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "toml") {
                    files.push(path);
                }
            }
        }
        assert!(
            files.len() > 50,
            "found only {} scenario files",
            files.len()
        );
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let file = read(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let written = write(&file, "# header\n").unwrap();
            let again = read(&written).unwrap_or_else(|e| {
                panic!(
                    "{} as written does not load: {e}\n{written}",
                    path.display()
                )
            });
            assert_eq!(again, file, "{} changed through the writer", path.display());
        }
    }
}
