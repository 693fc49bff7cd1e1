//! `report.md`: the run written the way the seed audit is — executive summary, one section per
//! area saying what was verified and by which scenarios, findings by severity, the trace table of
//! every interleaving, the threat matrix with the scenarios covering each threat, the verdict.
//!
//! What the target wrote — failure messages, its answers, its version, a profile's title — goes
//! through [`crate::untrusted`]: a hostile target cannot write a line of this report.

use std::fmt::Write;

use super::{result_of, Report, SuiteResult};
use crate::catalogue::{AREAS, THREATS};
use crate::scenario::format::Severity;
use crate::scenario::trace::EventKind;
use crate::scenario::ScenarioResult;
use crate::untrusted::markdown as text;

/// Whether a scenario is an interleaving (it parks or proves blocking), whose trace is shown.
pub fn is_interleaving(s: &ScenarioResult) -> bool {
    s.trace
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::Parked | EventKind::Blocked))
}

fn status_list(report: &Report, ids: &[&ScenarioResult]) -> String {
    ids.iter()
        .map(|s| format!("`{}` {}", s.id, result_of(s, report.fail_on).as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders the report as Markdown.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.summary;
    let env = &report.environment;
    let _ = writeln!(out, "# Harbor certification report\n");
    let _ = writeln!(out, "**Date:** {}  ", report.started_at);
    let commit = env
        .git_commit
        .as_deref()
        .map(|c| format!(" (commit `{}`)", &c[..c.len().min(12)]))
        .unwrap_or_default();
    match report.target.as_ref().filter(|t| t.profile.is_some()) {
        Some(t) => {
            let _ = writeln!(
                out,
                "**Subject:** {}, certified by Harbor {}{commit}  ",
                text(&t.name),
                env.service_version
            );
        }
        None => {
            let _ = writeln!(
                out,
                "**Subject:** Harbor reference service {}{commit}  ",
                env.service_version
            );
        }
    }
    let _ = writeln!(
        out,
        "**Environment:** {} backend, PostgreSQL {}, Redis {}, host {} ({})  ",
        env.backend, env.postgres_version, env.redis_version, env.host, env.platform
    );
    if !env.flaws.is_empty() {
        let _ = writeln!(
            out,
            "**⚠ SEEDED FLAWS ENABLED:** {} — this is not a certification of a correct build.  ",
            env.flaws.join(", ")
        );
    }
    if let Some(t) = &report.target {
        let _ = writeln!(out, "**Target:** {}  ", t.describe_markdown());
    }
    let _ = writeln!(out, "**Verdict:** {}\n", report.verdict);
    let _ = writeln!(
        out,
        "Contents: 1. Executive summary · 2. By area: what it rests on · 3. Findings · 4. Interleaving traces · 5. Threat matrix and what follows\n"
    );
    let _ = writeln!(out, "---\n\n## 1. Executive summary\n");
    let _ = writeln!(
        out,
        "{} scenario(s) ran {} time(s) each in {:.1} s: **{} passed, {} failed, {} warning(s), {} flaky, {} could not run, {} skipped**. \
Failures at or above severity `{}` block certification. Every \"blocks\" below was read from `pg_locks` and \
`pg_blocking_pids()` while it happened, never inferred from time.\n",
        s.total,
        s.repeat,
        s.duration_ms / 1000.0,
        s.passed,
        s.failed,
        s.warnings,
        s.flaky,
        s.errors,
        s.skipped,
        report.fail_on.as_str()
    );
    if let Some(t) = &report.target {
        let _ = writeln!(
            out,
            "| area | run | passed | not passed | SKIPPED |\n|---|---:|---:|---:|---:|"
        );
        for a in &t.areas {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                a.area, a.run, a.passed, a.failed, a.skipped
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "---\n\n## 2. By area: what held, and what it rests on\n"
    );
    for (n, area) in AREAS.iter().enumerate() {
        let members: Vec<&ScenarioResult> = report
            .scenarios
            .iter()
            .filter(|s| s.area == area.key)
            .collect();
        if members.is_empty() {
            continue;
        }
        let all_pass = members
            .iter()
            .all(|s| result_of(s, report.fail_on) == SuiteResult::Passed);
        let _ = writeln!(out, "### 2.{} {}\n", n + 1, area.title);
        let _ = writeln!(
            out,
            "{} Claim: {}\n",
            if all_pass {
                "**Held on its basis.**"
            } else {
                "**Did not hold.**"
            },
            area.claim
        );
        let _ = writeln!(
            out,
            "Basis: {}.\n",
            super::basis_of(report, area.key, members.len())
        );
        let _ = writeln!(out, "Scenarios: {}\n", status_list(report, &members));
    }
    let _ = writeln!(out, "---\n\n## 3. Findings by severity\n");
    let mut any = false;
    for sev in [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
    ] {
        let failing: Vec<&ScenarioResult> = report
            .scenarios
            .iter()
            .filter(|s| s.severity == sev && result_of(s, report.fail_on) != SuiteResult::Passed)
            .collect();
        let _ = writeln!(out, "### {} findings\n", capitalise(sev.as_str()));
        if failing.is_empty() {
            let _ = writeln!(out, "**NONE.**\n");
            continue;
        }
        any = true;
        for f in failing {
            let _ = writeln!(
                out,
                "- **{}** ({}) — {} — {}",
                f.id,
                result_of(f, report.fail_on).as_str(),
                f.title,
                f.source
            );
            for finding in &f.failures {
                let _ = writeln!(out, "  - {}: {}", finding.place(), text(&finding.message));
            }
            if let Some(why) = &f.flaky {
                let _ = writeln!(out, "  - flaky: {}", text(why));
            }
        }
        let _ = writeln!(out);
    }
    if !any {
        let _ = writeln!(out, "No finding at any severity.\n");
    }
    let _ = writeln!(out, "---\n\n## 4. Interleaving traces\n");
    if !report.scenarios.iter().any(is_interleaving) {
        let _ = writeln!(out, "No interleaving scenario ran in this run.\n");
    }
    for sc in report.scenarios.iter().filter(|s| is_interleaving(s)) {
        let _ = writeln!(
            out,
            "### {} — {}\n",
            sc.id,
            result_of(sc, report.fail_on).as_str()
        );
        let _ = writeln!(out, "*{}* ({})\n", sc.title, sc.source);
        let _ = writeln!(out, "{}", sc.trace.to_markdown(&sc.actors));
    }
    let _ = writeln!(out, "---\n\n## 5. Threat matrix\n");
    let _ = writeln!(
        out,
        "| Threat | Impact | Likelihood | Detectability | Priority | Covered by | Status |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for t in THREATS {
        let covering: Vec<&ScenarioResult> = report
            .scenarios
            .iter()
            .filter(|s| s.threats.iter().any(|x| x == t.name))
            .collect();
        let status = if covering.is_empty() {
            "NOT COVERED"
        } else if covering
            .iter()
            .all(|s| result_of(s, report.fail_on) == SuiteResult::Passed)
        {
            "MITIGATED"
        } else {
            "OPEN"
        };
        let ids = covering
            .iter()
            .map(|s| format!("`{}`", s.id))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            t.name,
            t.ratings[0],
            t.ratings[1],
            t.ratings[2],
            t.ratings[3],
            if ids.is_empty() { "—".into() } else { ids },
            status
        );
    }
    let faulted: Vec<&ScenarioResult> = report
        .scenarios
        .iter()
        .filter(|s| !s.trace.faults().is_empty())
        .collect();
    if !faulted.is_empty() {
        let _ = writeln!(out, "\n---\n\n## Faults × outcomes\n");
        let _ = writeln!(out, "Each fault as the run did it and observed its effect, what the scenario requires, the answers the service gave (tallied), and the checks that held.\n");
        let _ = writeln!(out, "| Scenario | Faults (effect observed) | Required | Answers | Checks | Verdict |\n|---|---|---|---|---|---|");
        for sc in faulted {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} |",
                sc.id,
                text(&sc.trace.faults().join("; ")),
                sc.title.replace('|', "\\|"),
                text(&sc.trace.answers_line()),
                sc.checks,
                result_of(sc, report.fail_on).as_str()
            );
        }
    }
    if let Some(m) = &report.mutants {
        let _ = writeln!(out, "\n---\n\n## 6. Seeded flaws (kill matrix)\n");
        let _ = writeln!(out, "| Flaw | Caught by | Expected catchers | Status | Why (expected catcher's finding) |\n|---|---|---|---|---|");
        for row in m["flaws"].as_array().into_iter().flatten() {
            let list = |k: &str| {
                row[k]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str())
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            let why = row["expected"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|id| id.as_str())
                .filter_map(|id| {
                    row["evidence"][id]
                        .as_str()
                        .map(|m| format!("`{id}`: {}", text(m)))
                })
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                row["flaw"].as_str().unwrap_or(""),
                list("caught_by"),
                list("expected"),
                row["status"].as_str().unwrap_or(""),
                why
            );
        }
    }
    let _ = writeln!(out, "\n---\n\n## Scenario index\n");
    let _ = writeln!(
        out,
        "| Scenario | Severity | Area | Result | Runs | Mean (ms) | Checks | Requirements |"
    );
    let _ = writeln!(out, "|---|---|---|---|---:|---:|---:|---|");
    for sc in &report.scenarios {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {:.0} | {} | {} |",
            sc.id,
            sc.severity.as_str(),
            sc.area,
            result_of(sc, report.fail_on).as_str(),
            sc.runs,
            sc.duration_ms,
            sc.checks,
            sc.requirements.join(", ")
        );
    }
    let _ = writeln!(out, "\n## Certification verdict: {}\n", report.verdict);
    let _ = writeln!(out, "{}", report.verdict_statement());
    for why in &report.not_certified_because {
        let _ = writeln!(out, "\n- {}", text(why));
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}
