//! A scenario's trace: every step's launch, parking, blocking (with the blocker's backend and the
//! lock awaited, from `pg_locks`), release and completion, with timestamps. Rendered like the seed
//! audit's "Trace: Activation vs. OAuth Callback (Q2)" table, one column per actor.

use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The step was sent (its request or statement is under way).
    Launched,
    /// The request reached its sync point and waits there.
    Parked,
    /// The backend waits for a lock held by another actor (evidence attached).
    Blocked,
    /// The harness released a parked request.
    Released,
    /// The step finished; `detail` is its outcome.
    Completed,
    /// A harness action: clock moved, provider switched, fixture made.
    Note,
    /// A fault was done to a dependency or a replica (`detail` says what, and its effect).
    Fault,
    /// An assertion held.
    Checked,
    /// An expectation or assertion failed.
    Failed,
}

/// Lock-table evidence of a blocked step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockEvidence {
    /// The waiting backend.
    pub pid: i32,
    /// `pg_blocking_pids()` of it.
    pub blocking_pids: Vec<i32>,
    /// The actors of those backends.
    pub blocking_actors: Vec<String>,
    /// `pg_locks.locktype` of the awaited lock.
    pub lock_type: String,
    /// `pg_locks.mode` of the awaited lock.
    pub mode: String,
    /// For advisory locks: `classid`.
    pub classid: Option<i64>,
    /// For advisory locks: `objid`.
    pub objid: Option<i64>,
    /// For row and relation locks: the relation.
    pub relation: Option<String>,
}

/// One trace line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Milliseconds since the scenario's first step.
    pub at_ms: f64,
    /// The step's index in the file (`None` for final assertions).
    pub step: Option<usize>,
    /// The actor, if any.
    pub actor: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// What, in words: the action, the outcome (`409 ACTIVATION_NOT_READY`), the note.
    pub detail: String,
    /// The step's note from the scenario file (what the audit's table would say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Lock evidence, for `blocked` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<LockEvidence>,
    /// What was measured while the event happened (a fault's `2 backend(s) ended within 9 ms`, a
    /// recovery time): shown with the event, left out of the flake signature because it varies
    /// between correct runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<String>,
}

/// The whole trace of one run of a scenario.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Trace {
    /// Events in the order they were observed.
    pub events: Vec<TraceEvent>,
    /// The schedule the run followed: the steps in the order they ran (`harbor-certify replay`
    /// runs it again exactly).
    #[serde(default, skip_serializing_if = "Schedule::is_empty")]
    pub schedule: Schedule,
    /// Every HTTP answer of the run tallied by what it said (`200 CONNECTED`, `503 UNAVAILABLE`,
    /// `error: connection closed`): the counts a fault scenario is judged by.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub answers: std::collections::BTreeMap<String, usize>,
}

impl Trace {
    /// The faults done in the run, as their events say (what, and its observed effect).
    pub fn faults(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Fault)
            .map(|e| e.detail.trim_start_matches("fault: "))
            .collect()
    }

    /// The answers tally in one line (`971 × 200 CONNECTED, 29 × 503 UNAVAILABLE`).
    pub fn answers_line(&self) -> String {
        self.answers
            .iter()
            .map(|(s, n)| format!("{n} × {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What must be identical between repeated runs: the order of events, who, what kind, and the
    /// outcome — not times, process ids, generated ids or sizes (so notes and passed checks count
    /// by kind only), and never an event's `measured` part. A failure counts by its first line,
    /// generated ids masked ([`failure_line`]): the lines after it are diagnostics (what the
    /// service logged under its request id, the lock tables), different at every run.
    pub fn signature(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| {
                if matches!(e.kind, EventKind::Note | EventKind::Checked) {
                    return format!(
                        "{}|{:?}",
                        e.step.map_or("-".into(), |s| s.to_string()),
                        e.kind
                    );
                }
                if e.kind == EventKind::Failed {
                    return format!(
                        "{}|{}|{:?}|{}",
                        e.step.map_or("-".into(), |s| s.to_string()),
                        e.actor.as_deref().unwrap_or("-"),
                        e.kind,
                        failure_line(&e.detail)
                    );
                }
                let blockers = e.evidence.as_ref().map(|ev| {
                    // `pg_blocking_pids` promises no order.
                    let mut actors = ev.blocking_actors.clone();
                    actors.sort();
                    format!(" on {} ({})", actors.join("+"), ev.lock_type)
                });
                format!(
                    "{}|{}|{:?}|{}{}",
                    e.step.map_or("-".into(), |s| s.to_string()),
                    e.actor.as_deref().unwrap_or("-"),
                    e.kind,
                    e.detail,
                    blockers.unwrap_or_default()
                )
            })
            .collect()
    }

    /// A Markdown table, one column per actor, shaped like the seed audit's trace tables.
    pub fn to_markdown(&self, actors: &[(String, String)]) -> String {
        let mut out = String::from("| # | t (ms) |");
        for (name, role) in actors {
            if role.is_empty() {
                out.push_str(&format!(" {name} |"));
            } else {
                out.push_str(&format!(" {name} ({role}) |"));
            }
        }
        out.push_str(" Evidence |\n|---:|---:|");
        for _ in actors {
            out.push_str("---|");
        }
        out.push_str("---|\n");
        for (i, e) in self.events.iter().enumerate() {
            out.push_str(&format!("| {} | {:.1} |", i + 1, e.at_ms));
            let cell = describe(e);
            let mut placed = false;
            for (name, _) in actors {
                if e.actor.as_deref() == Some(name.as_str()) {
                    out.push_str(&format!(" {cell} |"));
                    placed = true;
                } else {
                    out.push_str(" |");
                }
            }
            let evidence = match (&e.evidence, placed) {
                (Some(ev), _) => crate::untrusted::markdown(&evidence_text(ev)),
                (None, false) => cell,
                (None, true) => String::new(),
            };
            out.push_str(&format!(" {evidence} |\n"));
        }
        out
    }
}

/// An event as a Markdown table cell. Its detail, note and measurement can hold what the target
/// answered, so each goes through [`untrusted`]; a code span's pipes are escaped as a table
/// needs (the escape is the table's, not the span's).
fn describe(e: &TraceEvent) -> String {
    use crate::untrusted::{code_span, markdown};
    let code = |s: &str| code_span(s).replace('|', "\\|");
    let detail = || markdown(&e.detail);
    let with_note = |text: String| match &e.note {
        Some(n) => format!("{text} — {}", markdown(n)),
        None => text,
    };
    let text = match e.kind {
        EventKind::Launched => with_note(code(&e.detail)),
        EventKind::Parked => format!("parked at {}", code(&e.detail)),
        EventKind::Blocked => "**BLOCKS**".to_owned(),
        EventKind::Released => format!("released from {}", code(&e.detail)),
        EventKind::Completed => with_note(format!("→ {}", detail())),
        EventKind::Note => detail(),
        EventKind::Fault => format!("**FAULT** {}", detail()),
        EventKind::Checked => with_note(format!("✓ {}", detail())),
        EventKind::Failed => format!("✗ {}", detail()),
    };
    match &e.measured {
        Some(m) => format!("{text} ({})", markdown(m)),
        None => text,
    }
}

/// The evidence of a blocked event in words: who blocks, on what lock.
pub fn evidence_text(ev: &LockEvidence) -> String {
    let object = match (ev.classid, ev.objid, &ev.relation) {
        (Some(c), Some(o), _) if ev.lock_type == "advisory" => format!(" ({c:#x}, {o})"),
        (_, _, Some(r)) => format!(" on {r}"),
        _ => String::new(),
    };
    format!(
        "pid {} waits for {} {}{}; pg_blocking_pids = {:?} ({})",
        ev.pid,
        ev.lock_type,
        ev.mode,
        object,
        ev.blocking_pids,
        ev.blocking_actors.join(", ")
    )
}

/// Where two signatures first differ (a line index; one ending before the other differs where it
/// ends), or `None` when they are the same.
pub fn divergence(a: &[String], b: &[String]) -> Option<usize> {
    (a != b).then(|| {
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()))
    })
}

/// A failure as a replay compares it: its first line, with every UUID (workspace, tenant, user and
/// request ids, which a run generates afresh) written `<id1>`, `<id2>`, … in the order each first
/// appears (in any case) — so "saw its own workspace" and "saw another's" still differ. A UUID is
/// one only standing alone: not inside a longer run of hex digits and dashes.
pub fn failure_line(detail: &str) -> String {
    let line = detail.lines().next().unwrap_or_default();
    let bytes = line.as_bytes();
    let part = |b: &u8| b.is_ascii_hexdigit() || *b == b'-';
    let is_uuid = |at: usize| {
        bytes.len() >= at + 36
            && bytes[at..at + 36].iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            })
            && (at == 0 || !part(&bytes[at - 1]))
            && bytes.get(at + 36).is_none_or(|b| !part(b))
    };
    let mut out = String::with_capacity(line.len());
    let mut seen: Vec<String> = Vec::new();
    let mut at = 0;
    while at < line.len() {
        if is_uuid(at) {
            let id = line[at..at + 36].to_ascii_lowercase();
            let n = match seen.iter().position(|s| *s == id) {
                Some(n) => n + 1,
                None => {
                    seen.push(id);
                    seen.len()
                }
            };
            out.push_str(&format!("<id{n}>"));
            at += 36;
        } else {
            let c = line[at..].chars().next().expect("inside the line");
            out.push(c);
            at += c.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(detail: &str, measured: Option<&str>) -> TraceEvent {
        TraceEvent {
            at_ms: 1.0,
            step: Some(3),
            actor: None,
            kind: EventKind::Fault,
            detail: detail.to_owned(),
            note: None,
            evidence: None,
            measured: measured.map(str::to_owned),
        }
    }

    /// Two runs failing the same way differ in their generated ids and in the diagnostics after
    /// the first line (the service's log lines under its request id), never in the signature; a
    /// different answer does change it.
    #[test]
    fn a_failure_signs_its_first_line_with_generated_ids_masked() {
        let failed = |detail: &str| Trace {
            events: vec![TraceEvent {
                kind: EventKind::Failed,
                actor: Some("A".into()),
                ..fault(detail, None)
            }],
            ..Trace::default()
        };
        let one = failed("A: expected status 200, got 503 for /v1/workspaces/6f1c2a9e-0b1d-4c3e-9a57-2f0d1e8b4c11\n  the service logged under request 7d0c2f4e-5a3b-4c1d-9e8f-0a1b2c3d4e5f:\n    pid 4711");
        let two = failed("A: expected status 200, got 503 for /v1/workspaces/0a1b2c3d-4e5f-4c1d-9e8f-7d0c2f4e5a3b\n  the service logged under request 11111111-2222-4333-8444-555555555555:\n    pid 815");
        assert_eq!(one.signature(), two.signature());
        let other = failed("A: expected status 200, got 409 for /v1/workspaces/0a1b2c3d-4e5f-4c1d-9e8f-7d0c2f4e5a3b");
        assert_ne!(one.signature(), other.signature());
        assert_eq!(
            failure_line("é 6f1c2a9e-0b1d-4c3e-9a57-2f0d1e8b4c11 ü"),
            "é <id1> ü"
        );
        // The same id twice and two ids are not the same failure.
        let a = "6f1c2a9e-0b1d-4c3e-9a57-2f0d1e8b4c11";
        let b = "0a1b2c3d-4e5f-4c1d-9e8f-7d0c2f4e5a3b";
        assert_eq!(failure_line(&format!("{a} sees {a}")), "<id1> sees <id1>");
        assert_eq!(failure_line(&format!("{a} sees {b}")), "<id1> sees <id2>");
        let upper = a.to_ascii_uppercase();
        assert_eq!(failure_line(&format!("{a} is {upper}")), "<id1> is <id1>");
        // Inside a longer hex token it is not an id of its own.
        assert_eq!(failure_line(&format!("{a}ab")), format!("{a}ab"));
    }

    /// Two correct runs of a fault scenario differ in what they measured (how long the server
    /// took to end the backends), never in the signature; a different effect does change it.
    #[test]
    fn what_was_measured_is_kept_out_of_the_signature() {
        let effect = "fault: replica_crash (replica 0): replica 0 crashed; its backends ended";
        let one = Trace {
            events: vec![fault(effect, Some("2 backend(s) ended within 9 ms"))],
            ..Trace::default()
        };
        let two = Trace {
            events: vec![fault(effect, Some("1 backend(s) ended within 34 ms"))],
            ..Trace::default()
        };
        assert_eq!(one.signature(), two.signature());
        assert!(
            one.to_markdown(&[]).contains("within 9 ms"),
            "the trace still shows it"
        );
        let other = Trace {
            events: vec![fault("fault: replica_crash (replica 0): no replica", None)],
            ..Trace::default()
        };
        assert_ne!(one.signature(), other.signature());
    }
}
