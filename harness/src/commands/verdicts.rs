//! Expected verdicts: a file listing each scenario's verdict on a target whose findings are known
//! (`targets/flask-seed/expected/`), so CI certifies that Harbor still tells the same truth about
//! it — a verdict that changes, in either direction, fails the run, and so does a failure that
//! moves to another step (`"FAILED at step 3"`: the same verdict for another reason). `run --write-verdicts FILE`
//! writes one (each line with the first finding or SKIPPED reason as a comment);
//! `run --expect-verdicts FILE` compares.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::scenario::ScenarioResult;

/// Writes `results`' verdicts to `path`, with `title` as the file's first comment.
pub fn write(path: &Path, title: &str, results: &[ScenarioResult]) -> std::io::Result<()> {
    let mut out = String::new();
    let _ = writeln!(out, "# {title}");
    let _ = writeln!(
        out,
        "# Written by `harbor-certify run --write-verdicts`; `--expect-verdicts` fails when one changes.\n\n[verdicts]"
    );
    for r in results {
        let why = r
            .failures
            .first()
            .map(|f| f.message.lines().next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        // The finding is the target's text: a control character in it would end the comment
        // and put the rest of the line into the file as TOML.
        let why: String = why.chars().filter(|c| !c.is_control()).take(150).collect();
        let comment = if why.is_empty() {
            String::new()
        } else {
            format!("  # {why}")
        };
        let line = format!(
            "{:<44} = {:<22}{comment}",
            key(&r.id),
            format!("\"{}\"", verdict_of(r))
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    std::fs::write(path, out)
}

/// `id` as a TOML key: bare where TOML allows it, quoted otherwise (a spec's id can hold a dot,
/// which a bare key would read as a dotted table).
fn key(id: &str) -> String {
    let bare = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        id.to_owned()
    } else {
        toml::Value::String(id.to_owned()).to_string()
    }
}

/// A result's verdict as the file holds it: a failure with the place of its first finding.
fn verdict_of(r: &ScenarioResult) -> String {
    match (r.verdict, r.failures.first()) {
        (crate::scenario::Verdict::Failed, Some(f)) => match f.place() {
            at if at.starts_with("at ") => format!("{} {at}", r.verdict.as_str()),
            step => format!("{} at {step}", r.verdict.as_str()),
        },
        _ => r.verdict.as_str().to_owned(),
    }
}

/// The verdicts a file expects, by scenario id: read before the run, so a file that cannot be read
/// stops the run before it starts rather than after it.
pub struct Expected {
    verdicts: BTreeMap<String, String>,
}

/// Reads the verdicts expected in `path`.
pub fn load(path: &Path) -> Result<Expected, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        verdicts: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: File = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Expected {
        verdicts: file.verdicts,
    })
}

/// The differences between `results` and the `expected` verdicts (empty: none).
pub fn compare(expected: &Expected, results: &[ScenarioResult]) -> Vec<String> {
    let file = expected;
    let mut out = Vec::new();
    for r in results {
        let got = verdict_of(r);
        match file.verdicts.get(&r.id) {
            Some(want) if *want == got => {}
            Some(want) => out.push(format!(
                "{}: expected {want}, got {got}{}",
                r.id,
                r.failures
                    .first()
                    .map(|f| format!(" — {}", f.message.lines().next().unwrap_or_default()))
                    .unwrap_or_default()
            )),
            None => out.push(format!(
                "{}: not in the expected verdicts (got {got})",
                r.id
            )),
        }
    }
    for id in file.verdicts.keys() {
        if !results.iter().any(|r| &r.id == id) {
            out.push(format!("{id}: expected, but it did not run"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn an_id_toml_cannot_hold_bare_is_quoted() {
        assert_eq!(key("AUD-AUTH-GUARD"), "AUD-AUTH-GUARD");
        let dotted = key("SQL-AUDIT.V2");
        assert_eq!(dotted, "\"SQL-AUDIT.V2\"");
        let table: toml::Table = toml::from_str(&format!("{dotted} = \"PASSED\"")).unwrap();
        assert_eq!(table["SQL-AUDIT.V2"].as_str(), Some("PASSED"));
    }
}
