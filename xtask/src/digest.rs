//! What a failed phase said, repeated at the end of the log. A CI log is often read from its end
//! (or only an excerpt of it is kept): the phase list there names what failed, and the digest says
//! why — the failed or flaky scenarios with their diagnostics, the verdicts that changed, or the
//! last lines of a command that gave no such structure.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;

/// The digests of the commands that failed so far, by phase, in the order they failed.
static DIGESTS: Mutex<Vec<(String, Vec<String>)>> = Mutex::new(Vec::new());

/// At most this many lines of one block (a scenario's diagnostics), and of one command.
const BLOCK_LINES: usize = 16;
const COMMAND_LINES: usize = 80;

/// Runs `cmd`, passing its standard output through line by line (standard error is untouched),
/// and keeps a digest of what it printed if it fails, under `what`.
pub(crate) fn status(cmd: &mut Command, what: &str) -> std::io::Result<ExitStatus> {
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let mut lines = Vec::new();
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout();
        let mut reader = BufReader::new(out);
        let mut raw = Vec::new();
        // Read to the end whatever it prints (bytes that are not UTF-8 included), so the child
        // is always waited for.
        while let Ok(n) = reader.read_until(b'\n', &mut raw) {
            if n == 0 {
                break;
            }
            let line = String::from_utf8_lossy(&raw)
                .trim_end_matches(['\n', '\r'])
                .to_owned();
            let _ = writeln!(stdout, "{line}");
            lines.push(line);
            raw.clear();
        }
    }
    let status = child.wait()?;
    if !status.success() {
        DIGESTS
            .lock()
            .expect("the digests' lock is never poisoned")
            .push((what.to_owned(), digest(&lines)));
    }
    Ok(status)
}

/// Prints every digest kept (nothing when every command succeeded).
pub(crate) fn print_all() {
    let digests = DIGESTS.lock().expect("the digests' lock is never poisoned");
    for (what, lines) in digests.iter() {
        eprintln!("xtask: what {what} printed about its failure:");
        for line in lines {
            eprintln!("  | {line}");
        }
    }
}

/// The lines that say why a run failed: the verdicts that changed from an expectation; else each
/// FAILED, FLAKY or ERROR scenario with the indented lines under it; else the output's last lines.
fn digest(lines: &[String]) -> Vec<String> {
    if let Some(start) = lines
        .iter()
        .position(|l| l.contains("verdict(s) changed from"))
    {
        return block(&lines[start..]);
    }
    let mut kept = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let word = line.split_whitespace().next().unwrap_or_default();
        if matches!(word, "FAILED" | "FLAKY" | "ERROR") && !line.starts_with(' ') {
            kept.extend(block(&lines[i..]));
        }
    }
    if kept.is_empty() {
        kept = lines[lines.len().saturating_sub(20)..].to_vec();
    }
    kept.truncate(COMMAND_LINES);
    kept
}

/// A heading line and the indented lines under it.
fn block(lines: &[String]) -> Vec<String> {
    let mut out = vec![lines[0].clone()];
    out.extend(
        lines[1..]
            .iter()
            .take_while(|l| l.starts_with(' ') || l.starts_with('\t'))
            .take(BLOCK_LINES - 1)
            .cloned(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn keeps_failed_and_flaky_scenarios_with_their_diagnostics() {
        let out = lines(
            "PASSED  A  10 ms  a\nFLAKY   B  20 ms  b\n        pass 2: step 3: got 503\n        log: pool timed out\nPASSED  C  5 ms  c\nFAILED  D  7 ms  d\n        step 1: expected 401\nCERTIFIED: no",
        );
        assert_eq!(
            digest(&out),
            lines("FLAKY   B  20 ms  b\n        pass 2: step 3: got 503\n        log: pool timed out\nFAILED  D  7 ms  d\n        step 1: expected 401")
        );
    }

    #[test]
    fn keeps_only_the_changed_verdicts_when_held_to_an_expectation() {
        let out = lines(
            "FAILED  A  10 ms  a\n        step 1: expected\n2 verdict(s) changed from x.toml:\n  A: was\n  B: was\nreport: r",
        );
        assert_eq!(
            digest(&out),
            lines("2 verdict(s) changed from x.toml:\n  A: was\n  B: was")
        );
    }

    #[test]
    fn keeps_the_last_lines_of_anything_else() {
        let out: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
        assert_eq!(digest(&out), out[10..].to_vec());
    }
}
