//! SQL-level interleavings in PostgreSQL's isolation-spec format: sessions and steps declared
//! once, permutations (or every interleaving) separate, blocking judged from the server's lock
//! tables, and the run printed in the isolation tester's expected-output format so that a `diff`
//! against an expected file — PostgreSQL's own, or one of this repository — is the check.
//!
//! - [`lex`]: the spec language's tokens.
//! - [`spec`]: the spec language, parsed into [`spec::Spec`] with errors naming file, line and
//!   column.
//! - [`permutations`]: the permutations a spec runs (its own, or every interleaving).
//! - [`tester`]: the permutations run the tester's way; every wait it detects is kept with a
//!   [`tester::WaitProof`] from the lock tables (a `(*)` or blocker-marker wait is the spec's own
//!   statement and carries none).
//! - [`session`]: one session's connection (results in text, notices as they arrive).
//! - [`print`]: result tables in libpq's `PQprint` format.
//!
//! A spec runs in a fresh database of its own: an empty one; or — when its header says
//! `# harbor-database: reference` — a copy of the reference service's migrated schema; or — with
//! `# harbor-database: template NAME` — a copy of the database `NAME` (a black-box target's
//! schema), on the run's server or the one `--spec-server` names.

pub mod lex;
pub mod permutations;
pub mod print;
pub mod session;
pub mod spec;
pub mod tester;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use spec::{Spec, SpecError};
pub use tester::{Options, Tested};

use crate::provision::{FreshDatabase, Infra};

/// The header comment that says which database a spec needs.
const DATABASE_DIRECTIVE: &str = "# harbor-database:";

/// Which database a spec runs in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecDatabase {
    /// A new, empty database (plain-PostgreSQL specs).
    Scratch,
    /// A copy of the reference service's migrated template.
    Reference,
    /// A copy of the named database (a target's schema, kept idle as a template).
    Template(String),
}

/// A spec file, loaded.
#[derive(Clone, Debug)]
pub struct SpecFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its file stem (the expected output's name).
    pub name: String,
    /// Its first comment line, as a title.
    pub title: String,
    /// The database it needs.
    pub database: SpecDatabase,
    /// The parsed spec.
    pub spec: Spec,
}

/// Reads and parses a spec file.
pub fn load(path: &Path) -> Result<SpecFile, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read it: {e}"),
    })?;
    let spec = spec::parse(&text, path)?;
    let mut database = SpecDatabase::Scratch;
    let mut directive_at: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let refuse = |message: String| SpecError {
            file: path.to_path_buf(),
            line: n + 1,
            column: 1,
            message,
        };
        let Some(asked) = line.trim().strip_prefix(DATABASE_DIRECTIVE) else {
            // A misspelt directive would silently leave the spec on a scratch database.
            let comment = line.trim().trim_start_matches('#').trim_start();
            if line.trim().starts_with('#') && comment.starts_with("harbor-database") {
                return Err(refuse(format!(
                    "a database directive is written `{DATABASE_DIRECTIVE} scratch|reference|template NAME`"
                )));
            }
            continue;
        };
        if let Some(first) = directive_at.replace(n + 1) {
            return Err(refuse(format!(
                "a second {DATABASE_DIRECTIVE} (the first is on line {first})"
            )));
        }
        let words: Vec<&str> = asked.split_whitespace().collect();
        database = match words.as_slice() {
            ["scratch"] => SpecDatabase::Scratch,
            ["reference"] => SpecDatabase::Reference,
            ["template", name] => SpecDatabase::Template((*name).to_owned()),
            _ => {
                return Err(SpecError {
                    file: path.to_path_buf(),
                    line: n + 1,
                    column: 1,
                    message: format!(
                        "{DATABASE_DIRECTIVE} takes `scratch`, `reference` or `template NAME`, not {:?}",
                        asked.trim()
                    ),
                })
            }
        };
    }
    let title = text
        .lines()
        .filter(|l| !l.trim().starts_with(DATABASE_DIRECTIVE))
        .find_map(|l| l.trim().strip_prefix('#').map(str::trim))
        .filter(|t| !t.is_empty())
        .unwrap_or("an isolation spec")
        .to_owned();
    Ok(SpecFile {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_path_buf(),
        title,
        database,
        spec,
    })
}

/// The `*.spec` files directly in `dir`, sorted (none when it does not exist).
pub fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    crate::scenario::load::files_with_extension(dir, "spec")
}

/// The expected outputs a spec's output may equal: `NAME.out` and its alternatives `NAME_1.out`,
/// `NAME_2.out`, … in `expected` (a file or a folder), or by default in the `expected/` folder
/// beside the spec — PostgreSQL's own layout.
pub fn expected_files(file: &SpecFile, expected: Option<&Path>) -> Vec<PathBuf> {
    let dir = match expected {
        Some(p) if !p.is_dir() => return vec![p.to_path_buf()],
        Some(p) => p.to_path_buf(),
        None => file
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .join("expected"),
    };
    let mut files = vec![dir.join(format!("{}.out", file.name))];
    for k in 1..10 {
        let alt = dir.join(format!("{}_{k}.out", file.name));
        if alt.is_file() {
            files.push(alt);
        }
    }
    files
}

/// A spec's run judged against its expected output.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SpecOutcome {
    /// The spec's file name.
    pub name: String,
    /// Its title.
    pub title: String,
    /// Its path.
    pub path: PathBuf,
    /// The database it ran in.
    pub database: SpecDatabase,
    /// The run.
    pub tested: Tested,
    /// The expected file it matched, or was compared with.
    pub expected: PathBuf,
    /// Whether some expected file was found.
    pub had_expected: bool,
    /// The unified diff from the expected output, when it differs.
    pub diff: Option<String>,
    /// Wall time, in milliseconds.
    pub duration_ms: f64,
}

impl SpecOutcome {
    /// Whether it ran to its end and printed exactly what was expected.
    pub fn passed(&self) -> bool {
        self.tested.fatal.is_none() && self.had_expected && self.diff.is_none()
    }
}

/// Runs `file` in a fresh database — on `infra`'s server, or on `server` (an admin URL) for a
/// scratch or template database — and compares its output with the expected file.
pub async fn run(
    infra: &Infra,
    server: Option<&str>,
    file: &SpecFile,
    opts: &Options,
    expected: Option<&Path>,
) -> Result<SpecOutcome, String> {
    let started = Instant::now();
    let made = match &file.database {
        SpecDatabase::Reference => match infra.template_database().await {
            Ok(t) => FreshDatabase::create(&infra.admin_url, &t).await,
            Err(e) => Err(e),
        },
        SpecDatabase::Scratch => {
            FreshDatabase::create(server.unwrap_or(&infra.admin_url), "template0").await
        }
        SpecDatabase::Template(name) => {
            FreshDatabase::create(server.unwrap_or(&infra.admin_url), name).await
        }
    };
    let env =
        made.map_err(|e| format!("{}: cannot make its database: {e}", file.path.display()))?;
    // On a task of its own, so that whatever happens in it the database is dropped below.
    let (spec, name, url, o) = (
        file.spec.clone(),
        file.name.clone(),
        env.url.clone(),
        opts.clone(),
    );
    let tested = tokio::spawn(async move { tester::run(&spec, &name, &url, &o).await })
        .await
        .unwrap_or_else(|e| Tested {
            fatal: Some(tester::Fatal {
                message: format!("the tester stopped: {e}"),
                locks: Vec::new(),
            }),
            ..Tested::default()
        });
    if let Err(e) = env.drop().await {
        eprintln!("harbor-certify: dropping {}'s database: {e}", file.name);
    }
    let candidates = expected_files(file, expected);
    let mut had_expected = false;
    let mut diff = None;
    let mut matched = candidates[0].clone();
    for path in &candidates {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        had_expected = true;
        match compare(&text, &tested.output) {
            None => {
                diff = None;
                matched = path.clone();
                break;
            }
            Some(d) => {
                if diff.is_none() {
                    diff = Some(d);
                    matched = path.clone();
                }
            }
        }
    }
    Ok(SpecOutcome {
        name: file.name.clone(),
        title: file.title.clone(),
        path: file.path.clone(),
        database: file.database.clone(),
        tested,
        expected: matched,
        had_expected,
        diff,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// `None` when `actual` is `expected` byte for byte; otherwise their unified diff.
pub fn compare(expected: &str, actual: &str) -> Option<String> {
    (expected != actual).then(|| {
        similar::TextDiff::from_lines(expected, actual)
            .unified_diff()
            .context_radius(3)
            .header("expected", "actual")
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<SpecFile, SpecError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.spec");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn the_database_directive_is_read_once_and_never_misspelt() {
        let body = "session s1\nstep s1_a { SELECT 1; }\n";
        let read = load_text(&format!("# harbor-database: reference\n{body}")).unwrap();
        assert!(matches!(read.database, SpecDatabase::Reference));
        let twice = format!("# harbor-database: reference\n# harbor-database: scratch\n{body}");
        let e = load_text(&twice).unwrap_err();
        assert_eq!(e.line, 2, "{}", e.message);
        assert!(e.message.contains("second"), "{}", e.message);
        for misspelt in ["# harbor-database reference", "#harbor-database: reference"] {
            let e = load_text(&format!("{misspelt}\n{body}")).unwrap_err();
            assert_eq!(e.line, 1, "{misspelt}: {}", e.message);
        }
    }
}
