//! `report.html`: one self-contained page (no scripts, fonts or styles from elsewhere), readable in
//! any browser: failures first and expanded, every interleaving drawn as a sequence diagram (inline
//! SVG) with the parked and blocked intervals visible, the threat matrix, and the environment.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::markdown::is_interleaving;
use super::{result_of, Report, SuiteResult};
use crate::catalogue::{AREAS, THREATS};
use crate::scenario::trace::{evidence_text, EventKind};
use crate::scenario::ScenarioResult;

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:24px;color:#1b1f24}
h1{margin:0 0 4px}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}
.verdict{display:inline-block;padding:4px 12px;border-radius:4px;font-weight:700;color:#fff}
.PASS,.PASSED{background:#1a7f37}.FAIL,.FAILED{background:#cf222e}.WARNING{background:#9a6700}.SKIPPED{background:#57606a}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.flaws{background:#fff8c5;border:2px solid #9a6700;padding:8px 12px;margin:12px 0;font-weight:600}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}details{border:1px solid #d0d7de;border-radius:6px;margin:10px 0;padding:6px 12px}
details.bad{border-color:#cf222e}summary{cursor:pointer;font-weight:600}
.finding{background:#ffebe9;border-left:4px solid #cf222e;padding:6px 10px;margin:6px 0;white-space:pre-wrap}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f6f8fa;padding:1px 4px;border-radius:3px}
.muted{color:#57606a}svg{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:8px 0}
.legend span{display:inline-block;width:14px;height:10px;margin:0 4px 0 12px;vertical-align:middle}
"#;

fn badge(result: &str) -> Markup {
    html! { span class={"badge " (result)} { (result) } }
}

/// Renders the report as one HTML page.
pub fn render(report: &Report) -> String {
    let env = &report.environment;
    let s = &report.summary;
    let mut ordered: Vec<&ScenarioResult> = report.scenarios.iter().collect();
    // Failures first, then by severity, then by id.
    ordered.sort_by_key(|sc| {
        (
            result_of(sc, report.fail_on) == SuiteResult::Passed,
            std::cmp::Reverse(sc.severity),
            sc.id.clone(),
        )
    });
    let interleavings: Vec<&ScenarioResult> = ordered
        .iter()
        .copied()
        .filter(|sc| is_interleaving(sc))
        .collect();
    let faulted: Vec<&ScenarioResult> = ordered
        .iter()
        .copied()
        .filter(|s| !s.trace.faults().is_empty())
        .collect();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Harbor certification — " (report.verdict) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "Harbor certification report" }
                p class="muted" { (report.started_at) " · service " (env.service_version)
                    @if let Some(c) = &env.git_commit { " · commit " code { (&c[..c.len().min(12)]) } }
                    " · " (env.backend) " backend · PostgreSQL " (env.postgres_version) " · Redis " (env.redis_version) }
                @if !env.flaws.is_empty() {
                    div class="flaws" { "⚠ Seeded flaws enabled: " (env.flaws.join(", ")) " — this run does not certify a correct build." }
                }
                p { span class={"verdict " (report.verdict)} { "Verdict: " (report.verdict) } " " (report.verdict_statement().replace("**", "")) }
                @if !report.not_certified_because.is_empty() {
                    ul { @for why in &report.not_certified_because { li { (why) } } }
                }
                p { (s.total) " scenarios × " (s.repeat) " run(s) in " (format!("{:.1}", s.duration_ms / 1000.0)) " s: "
                    b { (s.passed) " passed" } ", " b { (s.failed) " failed" } ", " (s.warnings) " warning(s), " (s.flaky) " flaky, " (s.errors) " could not run, " (s.skipped) " skipped. Failures at or above "
                    code { (report.fail_on.as_str()) } " block certification." }

                nav {
                    b { "Contents: " }
                    a href="#basis" { "What it rests on" } " · "
                    a href="#scenarios" { "Scenarios" } " · "
                    @if !interleavings.is_empty() { a href="#interleavings" { "Interleavings" } " · " }
                    a href="#threats" { "Threat matrix" } " · "
                    @if !faulted.is_empty() { a href="#faults" { "Faults × outcomes" } " · " }
                    @if report.mutants.is_some() { a href="#flaws" { "Seeded flaws" } " · " }
                    a href="#environment" { "Environment" }
                }

                h2 id="basis" { "By area: what held, and what it rests on" }
                table {
                    tr { th { "Area" } th { "Claim" } th { "Basis" } th { "Scenarios" } }
                    @for area in AREAS {
                        @let members: Vec<&ScenarioResult> = report.scenarios.iter().filter(|sc| sc.area == area.key).collect();
                        @if !members.is_empty() {
                            tr { td { b { (area.title) } } td { (prose(area.claim)) } td { (prose(&super::basis_of(report, area.key, members.len()))) }
                                 td { @for m in &members { a href={"#" (m.id)} { code { (m.id) } } " " (badge(result_of(m, report.fail_on).as_str())) br; } } }
                        }
                    }
                }

                h2 id="scenarios" { "Scenarios" }
                @for sc in &ordered {
                    @let result = result_of(sc, report.fail_on).as_str();
                    @let bad = result != "PASSED";
                    details class=(if bad { "bad" } else { "" }) open[bad] id=(sc.id) {
                        summary { (badge(result)) " " code { (sc.id) } " — " (prose(&sc.title)) }
                        p class="muted" { "Severity " b { (sc.severity.as_str()) } " · area " (sc.area) " · " (sc.source)
                            " · " (sc.runs) " run(s), mean " (format!("{:.0}", sc.duration_ms)) " ms · " (sc.checks) " checks held"
                            @if !sc.requirements.is_empty() { " · " (sc.requirements.join(", ")) } }
                        @for f in &sc.failures {
                            div class="finding" { (f.place()) ": " (f.message)
                                @if let Some(d) = &f.diagnostics { "\n\nDiagnostics: " (serde_json::to_string_pretty(d).unwrap_or_default()) } }
                        }
                        @if let Some(why) = &sc.flaky { div class="finding" { "Flaky: " (why) } }
                        @if is_interleaving(sc) { p { a href={"#diagram-" (sc.id)} { "Sequence diagram" } } }
                        (trace_table(sc))
                    }
                }

                @if !interleavings.is_empty() {
                    h2 id="interleavings" { "Interleavings" }
                    p class="muted" { "Each interleaving as it happened: one lifeline per actor, events in the order observed. "
                        "Red intervals are waits for a lock, read from pg_locks and pg_blocking_pids; amber intervals are requests parked at a sync point." }
                    @for sc in &interleavings {
                        h3 id={"diagram-" (sc.id)} { (badge(result_of(sc, report.fail_on).as_str())) " " code { (sc.id) } }
                        p { (prose(&sc.title)) }
                        (sequence_diagram(sc))
                    }
                }

                h2 id="threats" { "Threat matrix" }
                table {
                    tr { th { "Threat" } th { "Impact" } th { "Likelihood" } th { "Detectability" } th { "Priority" } th { "Covered by" } }
                    @for t in THREATS {
                        @let covering: Vec<&&ScenarioResult> = ordered.iter().filter(|sc| sc.threats.iter().any(|x| x == t.name)).collect();
                        tr { td { (t.name) } @for r in t.ratings { td { (r) } }
                             td { @if covering.is_empty() { span class="muted" { "not covered by this run" } }
                                  @for sc in &covering {
                                 a href={"#" (sc.id)} { code { (sc.id) } } " " (badge(result_of(sc, report.fail_on).as_str())) br; } } }
                    }
                }

                @if !faulted.is_empty() {
                    h2 id="faults" { "Faults × outcomes" }
                    table {
                        tr { th { "Scenario" } th { "Faults (effect observed)" } th { "Required" } th { "Answers" } th { "Checks" } }
                        @for sc in &faulted {
                            tr { td { a href={"#" (sc.id)} { code { (sc.id) } } " " (badge(result_of(sc, report.fail_on).as_str())) }
                                 td { @for f in sc.trace.faults() { (f) br; } }
                                 td { (prose(&sc.title)) } td { (sc.trace.answers_line()) } td { (sc.checks) } }
                        }
                    }
                }

                @if let Some(m) = &report.mutants {
                    h2 id="flaws" { "Seeded flaws (kill matrix)" }
                    table {
                        tr { th { "Flaw" } th { "Caught by" } th { "Expected" } th { "Status" } }
                        @for row in m["flaws"].as_array().into_iter().flatten() {
                            tr { td { code { (row["flaw"].as_str().unwrap_or("")) } }
                                 td { (join(&row["caught_by"])) } td { (join(&row["expected"])) } td { (row["status"].as_str().unwrap_or("")) } }
                        }
                    }
                }

                h2 id="environment" { "Environment" }
                @if let Some(t) = &report.target {
                    p { strong { "Target: " } (prose(&t.describe())) }
                    table {
                        tr { th { "Area" } th { "Run" } th { "Passed" } th { "Not passed" } th { "SKIPPED" } }
                        @for a in &t.areas {
                            tr { td { (a.area) } td { (a.run) } td { (a.passed) } td { (a.failed) } td { (a.skipped) } }
                        }
                    }
                }
                table {
                    tr { th { "Backend" } td { (env.backend) } }
                    tr { th { "PostgreSQL" } td { (env.postgres_version) } }
                    tr { th { "Redis" } td { (env.redis_version) } }
                    @if let Some(images) = &env.images { tr { th { "Images" } td { (images.join(", ")) } } }
                    tr { th { "Host" } td { (env.host) " (" (env.platform) ")" } }
                    tr { th { "Provisioning" } td { (format!("{:.0}", s.provision_ms)) " ms" } }
                    tr { th { "Slowest" } td { @for (id, ms) in &s.slowest { code { (id) } " " (format!("{ms:.0}")) " ms" br; } } }
                }
            }
        }
    };
    page.into_string()
}

/// Text written for Markdown (`code` in backticks) as HTML: the backticked parts as `<code>`, the
/// rest escaped.
fn prose(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

fn join(v: &serde_json::Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn trace_table(sc: &ScenarioResult) -> Markup {
    html! {
        table {
            tr { th { "#" } th { "t (ms)" } th { "Actor" } th { "Event" } th { "Detail" } th { "Evidence" } }
            @for (i, e) in sc.trace.events.iter().enumerate() {
                tr {
                    td { (i + 1) } td { (format!("{:.1}", e.at_ms)) } td { (e.actor.as_deref().unwrap_or("")) }
                    td { (format!("{:?}", e.kind).to_lowercase()) }
                    td { (e.detail) @if let Some(m) = &e.measured { " " span class="muted" { "(" (m) ")" } }
                         @if let Some(n) = &e.note { br; span class="muted" { (prose(n)) } } }
                    td { @if let Some(ev) = &e.evidence { code { (evidence_text(ev)) } } }
                }
            }
        }
    }
}

/// The interleaving as a sequence diagram: one lifeline per actor, events top to bottom in the
/// order observed, parked intervals amber, blocked intervals red.
fn sequence_diagram(sc: &ScenarioResult) -> Markup {
    let actors: Vec<&str> = sc.actors.iter().map(|(n, _)| n.as_str()).collect();
    let col = |actor: &str| {
        actors
            .iter()
            .position(|a| *a == actor)
            .map(|i| 150.0 + 190.0 * i as f64)
    };
    let row = |i: usize| 70.0 + 28.0 * i as f64;
    let width = 150.0 + 190.0 * actors.len() as f64 + 40.0;
    let height = row(sc.trace.events.len()) + 20.0;
    // Intervals: (actor, from row, to row, kind).
    let mut intervals = Vec::new();
    for (i, e) in sc.trace.events.iter().enumerate() {
        let Some(actor) = e.actor.as_deref() else {
            continue;
        };
        let end_kind = match e.kind {
            EventKind::Parked => EventKind::Released,
            EventKind::Blocked => EventKind::Completed,
            _ => continue,
        };
        let end = sc
            .trace
            .events
            .iter()
            .enumerate()
            .skip(i + 1)
            .find(|(_, x)| x.actor.as_deref() == Some(actor) && x.kind == end_kind)
            .map(|(j, _)| j);
        intervals.push((actor, i, end.unwrap_or(sc.trace.events.len()), e.kind));
    }
    let windows = fault_windows(&sc.trace.events);
    html! {
        div class="legend muted" { "Sequence diagram:" span style="background:#fff1c2;border:1px solid #9a6700" {} "parked at a sync point"
            span style="background:#ffd8d3;border:1px solid #cf222e" {} "blocked on a lock (from pg_locks)"
            @if !windows.is_empty() { span style="background:#eadcff;border:1px solid #8250df" {} "fault window (a dependency or replica down)" } }
        svg xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox={"0 0 " (width) " " (height)} role="img" {
            title { "Sequence diagram of " (sc.id) }
            @for (name, role) in &sc.actors {
                @let x = col(name).unwrap_or(0.0);
                rect x=(x - 80.0) y="10" width="160" height="36" rx="4" fill="#f6f8fa" stroke="#57606a" {}
                text x=(x) y="26" text-anchor="middle" font-size="13" font-weight="600" { (name) }
                text x=(x) y="40" text-anchor="middle" font-size="10" fill="#57606a" { (role) }
                line x1=(x) y1="46" x2=(x) y2=(height - 10.0) stroke="#8c959f" stroke-dasharray="4 3" {}
            }
            @for (from, to, what) in &windows {
                rect x="4" y=(row(*from) - 10.0) width=(width - 8.0) height=((row(*to) - row(*from)).max(0.0) + 20.0) fill="#eadcff" fill-opacity="0.45" stroke="#8250df" stroke-dasharray="3 3" {}
                text x=(width - 10.0) y=(row(*from) + 4.0) text-anchor="end" font-size="10" fill="#8250df" { (what) }
            }
            @for (actor, from, to, kind) in &intervals {
                @let x = col(actor).unwrap_or(0.0);
                @let (fill, stroke) = if *kind == EventKind::Blocked { ("#ffd8d3", "#cf222e") } else { ("#fff1c2", "#9a6700") };
                rect x=(x - 7.0) y=(row(*from)) width="14" height=((row(*to) - row(*from)).max(6.0)) fill=(fill) stroke=(stroke) {}
            }
            @for (i, e) in sc.trace.events.iter().enumerate() {
                @let y = row(i);
                text x="8" y=(y + 4.0) font-size="10" fill="#57606a" { (format!("{:>7.1} ms", e.at_ms)) }
                @match e.actor.as_deref().and_then(col) {
                    Some(x) => {
                        circle cx=(x) cy=(y) r="4" fill=(colour(e.kind)) {}
                        text x=(x + 12.0) y=(y + 4.0) font-size="11" fill=(colour(e.kind)) { (label(e.kind, &e.detail)) }
                    }
                    None => {
                        text x="90" y=(y + 4.0) font-size="11" fill="#57606a" font-style="italic" { (label(e.kind, &e.detail)) }
                    }
                }
            }
        }
    }
}

/// The fault windows of a trace: from a fault that takes something down (pause, down, crash) to
/// the one that brings the same dependency back (or the end), with the opening fault's name.
fn fault_windows(events: &[crate::scenario::trace::TraceEvent]) -> Vec<(usize, usize, String)> {
    use crate::faults::FaultKind;
    let kind_of = |detail: &str| {
        let name = detail.strip_prefix("fault: ")?.split([':', ' ']).next()?;
        FaultKind::ALL.into_iter().find(|k| k.as_str() == name)
    };
    let mut windows = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let Some(open) = (e.kind == EventKind::Fault)
            .then(|| kind_of(&e.detail))
            .flatten()
            .filter(|k| k.window() == Some(true))
        else {
            continue;
        };
        let end = events
            .iter()
            .enumerate()
            .skip(i + 1)
            .find(|(_, x)| {
                x.kind == EventKind::Fault
                    && kind_of(&x.detail).is_some_and(|k| {
                        k.window() == Some(false) && k.dependency() == open.dependency()
                    })
            })
            .map_or(events.len().saturating_sub(1), |(j, _)| j);
        windows.push((i, end, open.as_str().to_owned()));
    }
    windows
}

fn colour(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Fault => "#8250df",
        EventKind::Blocked | EventKind::Failed => "#cf222e",
        EventKind::Parked | EventKind::Released => "#9a6700",
        EventKind::Completed | EventKind::Checked => "#1a7f37",
        _ => "#1b1f24",
    }
}

fn label(kind: EventKind, detail: &str) -> String {
    let short: String = detail.chars().take(42).collect();
    let ellipsis = if detail.chars().count() > 42 {
        "…"
    } else {
        ""
    };
    match kind {
        EventKind::Launched => format!("→ {short}{ellipsis}"),
        EventKind::Parked => format!("parked: {short}"),
        EventKind::Blocked => format!("BLOCKED ({short})"),
        EventKind::Released => "released".to_owned(),
        EventKind::Completed => format!("← {short}{ellipsis}"),
        EventKind::Checked => format!("✓ {short}{ellipsis}"),
        EventKind::Failed => format!("✗ {short}{ellipsis}"),
        EventKind::Note => format!("{short}{ellipsis}"),
        EventKind::Fault => format!("⚡ {short}{ellipsis}"),
    }
}
