//! The report renderers on a fixed run: golden files, the JSON schema, JUnit parsed back, the HTML
//! in real headless Chromium, the manifest and signature, and the `--fail-on` threshold.
//!
//! Past 500 lines on purpose: one fixed run feeds every renderer's test; the fixture is most of the
//! file.

use std::path::{Path, PathBuf};
use std::process::Command;

use harbor_harness::report::{self, sign, Environment, Report};
use harbor_harness::scenario::format::Severity;
use harbor_harness::scenario::outcome::Failure;
use harbor_harness::scenario::trace::{EventKind, LockEvidence, Trace, TraceEvent};
use harbor_harness::scenario::{ScenarioResult, Verdict};

fn event(
    at_ms: f64,
    step: Option<usize>,
    actor: Option<&str>,
    kind: EventKind,
    detail: &str,
) -> TraceEvent {
    TraceEvent {
        at_ms,
        step,
        actor: actor.map(str::to_owned),
        kind,
        detail: detail.to_owned(),
        note: None,
        evidence: None,
        measured: None,
    }
}

fn scenario(
    id: &str,
    severity: Severity,
    area: &str,
    verdict: Verdict,
    trace: Trace,
    failures: Vec<Failure>,
) -> ScenarioResult {
    ScenarioResult {
        id: id.to_owned(),
        title: format!("{id} title"),
        source: "phase3-activation-audit.txt §2.1".to_owned(),
        severity,
        area: area.to_owned(),
        requirements: vec!["AUD-2.1".to_owned()],
        threats: vec!["Race Condition Leak".to_owned()],
        file: format!("scenarios/{id}.toml"),
        actors: vec![
            ("A".into(), "Activation".into()),
            ("B".into(), "OAuth callback".into()),
        ],
        verdict,
        runs: 1,
        duration_ms: 120.0,
        max_duration_ms: 130.0,
        checks: 4,
        trace,
        failures,
        flaky: (verdict == Verdict::Flaky)
            .then(|| "run 2 differs from run 1 at trace line 3".to_owned()),
        file_sha256: None,
    }
}

/// A run whose every field is fixed: one interleaving that passed, one that failed with lock-table
/// diagnostics, one flaky, one low-severity failure.
pub fn fixed_run(fail_on: Severity) -> Report {
    let mut q2 = Trace::default();
    q2.events.push(event(
        0.7,
        Some(0),
        Some("B"),
        EventKind::Launched,
        "POST qbo/authorize + consent",
    ));
    q2.events.push(event(
        16.4,
        Some(0),
        Some("B"),
        EventKind::Completed,
        "200 PENDING",
    ));
    let mut launched = event(
        17.1,
        Some(1),
        Some("A"),
        EventKind::Launched,
        "POST activation",
    );
    launched.note = Some("BEGIN; pg_advisory_xact_lock(W1)".into());
    q2.events.push(launched);
    q2.events.push(event(
        30.9,
        Some(1),
        Some("A"),
        EventKind::Parked,
        "activation.status_read",
    ));
    q2.events.push(event(
        31.7,
        Some(2),
        Some("B"),
        EventKind::Launched,
        "GET qbo/callback",
    ));
    let mut blocked = event(55.0, Some(2), Some("B"), EventKind::Blocked, "blocked on A");
    blocked.evidence = Some(LockEvidence {
        pid: 1582,
        blocking_pids: vec![1584],
        blocking_actors: vec!["A".into()],
        lock_type: "advisory".into(),
        mode: "ExclusiveLock".into(),
        classid: Some(1212306007),
        objid: Some(2608626355),
        relation: None,
    });
    q2.events.push(blocked);
    q2.events.push(event(
        55.0,
        Some(3),
        Some("A"),
        EventKind::Released,
        "activation.status_read",
    ));
    q2.events.push(event(
        56.6,
        Some(1),
        Some("A"),
        EventKind::Completed,
        "409 ACTIVATION_NOT_READY",
    ));
    q2.events.push(event(
        60.5,
        Some(2),
        Some("B"),
        EventKind::Completed,
        "200 CONNECTED",
    ));
    q2.events.push(event(
        62.0,
        None,
        None,
        EventKind::Checked,
        "no activation was recorded",
    ));
    let mut failed = q2.clone();
    failed.events.truncate(5);
    failed.events.push(event(
        5055.0,
        Some(2),
        Some("B"),
        EventKind::Failed,
        "B: expected to block on A, but it completed: 200 CONNECTED",
    ));
    let finding = Failure {
        step: Some(2),
        message: "B: expected to block on A, but it completed: 200 CONNECTED".into(),
        diagnostics: Some(
            serde_json::json!({ "locks": [{ "pid": 1584, "locktype": "advisory", "granted": true }] }),
        ),
        environment: false,
        skipped: false,
    };
    let scenarios = vec![
        scenario(
            "AUD-Q2-ACTIVATION-FIRST",
            Severity::Critical,
            "concurrency",
            Verdict::Passed,
            q2.clone(),
            vec![],
        ),
        scenario(
            "AUD-LOCK-NAMESPACE",
            Severity::Critical,
            "concurrency",
            Verdict::Failed,
            failed,
            vec![finding.clone()],
        ),
        scenario(
            "TM-S3-CONCURRENT-CALLBACK",
            Severity::High,
            "oauth-state",
            Verdict::Flaky,
            q2,
            vec![],
        ),
        scenario(
            "AUD-NOT-ENTITLED",
            Severity::Low,
            "transaction-discipline",
            Verdict::Failed,
            Trace::default(),
            vec![finding],
        ),
    ];
    let environment = Environment {
        backend: "docker".into(),
        postgres_version: "15.18".into(),
        redis_version: "7.0.15".into(),
        images: Some(vec![
            "harbor-offline/postgres:15-bookworm".into(),
            "harbor-offline/redis:7-bookworm".into(),
        ]),
        service_version: "0.1.0".into(),
        git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        flaws: vec![],
        host: "ci".into(),
        platform: "linux-x86_64".into(),
    };
    let started = chrono::DateTime::parse_from_rfc3339("2026-11-23T02:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut report = Report::new(started, environment, scenarios, 1, fail_on, 9000.0, 800.0);
    report.exploration = Some(report::ExplorationBasis {
        source: "reports/explore/latest/explore.json".into(),
        target: "the Harbor reference service, in-process".into(),
        sets: vec![
            "activate + callback".into(),
            "activate + raw_disconnect".into(),
        ],
        complete_sets: 2,
        schedules_explored: 45,
        schedules_total: 45,
        schedules_pruned: 0,
        mode: "systematic".into(),
        violations: 0,
        skipped_sets: 0,
        oracles_off: vec![],
    });
    report
}

fn golden_dir() -> PathBuf {
    harbor_layering::crate_dir(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{name} differs from its golden file at line {}:\n  golden: {:?}\n  actual: {:?}\n(run with UPDATE_GOLDEN=1 if the change is intended)",
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

#[test]
fn renderers_match_their_golden_files() {
    let run = fixed_run(Severity::Medium);
    check_golden("report.md", &report::markdown::render(&run));
    check_golden("report.html", &report::html::render(&run));
    check_golden("junit.xml", &report::junit::render(&run).unwrap());
    check_golden("report.json", &serde_json::to_string_pretty(&run).unwrap());
}

#[test]
fn fail_on_turns_low_findings_into_warnings_but_never_flakes() {
    let strict = fixed_run(Severity::Low);
    assert_eq!(
        (
            strict.verdict.as_str(),
            strict.summary.failed,
            strict.summary.warnings
        ),
        ("FAIL", 2, 0)
    );
    let lenient = fixed_run(Severity::Medium);
    assert_eq!(
        (
            lenient.summary.failed,
            lenient.summary.warnings,
            lenient.summary.flaky
        ),
        (1, 1, 1)
    );
    assert_eq!(
        lenient.verdict.as_str(),
        "FAIL",
        "a critical failure and a flaky scenario still block"
    );
    assert_eq!(
        report::result_of(&lenient.scenarios[3], Severity::Medium).as_str(),
        "WARNING"
    );
}

fn schema() -> serde_json::Value {
    let path = harbor_layering::crate_dir(env!("CARGO_MANIFEST_DIR"))
        .join("../reports/report.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn report_json_validates_against_its_schema() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let mut run = serde_json::to_value(fixed_run(Severity::Low)).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&run)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // An exploration basis that names what it skipped and the oracles it could not run.
    let mut stated = fixed_run(Severity::Low);
    if let Some(basis) = stated.exploration.as_mut() {
        basis.skipped_sets = 1;
        basis.oracles_off = vec!["token_not_bound: the target's own schema".into()];
    }
    let stated = serde_json::to_value(stated).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&stated)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The schema is strict enough to fail: a missing verdict and an unknown event kind are refused.
    run.as_object_mut().unwrap().remove("verdict");
    run["scenarios"][0]["trace"]["events"][0]["kind"] = "teleported".into();
    assert_eq!(validator.iter_errors(&run).count(), 2);
}

/// The elements of `doc` named `tag`, in document order.
fn tagged<'a, 'i>(doc: &'a roxmltree::Document<'i>, tag: &str) -> Vec<roxmltree::Node<'a, 'i>> {
    doc.descendants().filter(|n| n.has_tag_name(tag)).collect()
}

#[test]
fn junit_parses_back() {
    let xml = report::junit::render(&fixed_run(Severity::Low)).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let cases = tagged(&doc, "testcase");
    assert_eq!(cases.len(), 5, "four scenarios and the run's verdict");
    let failures = tagged(&doc, "failure");
    assert_eq!(
        failures.len(),
        4,
        "failed, flaky, the low-severity failure (strict threshold) and the verdict"
    );
    let first = failures[0];
    assert!(first
        .attribute("message")
        .unwrap()
        .contains("expected to block on A"));
    assert!(
        first
            .text()
            .unwrap_or_default()
            .contains("\"locktype\": \"advisory\""),
        "diagnostics in the body"
    );
    assert_eq!(cases[0].attribute("classname"), Some("harbor.concurrency"));
}

/// A hostile target's words — its version, an error code it answered — cannot write a line of
/// report.md (a verdict of its own, a comment hiding the real one) nor make junit.xml unreadable.
#[test]
fn a_hostile_targets_text_stays_inside_what_quotes_it() {
    let mut run = fixed_run(Severity::Low);
    let hostile = "1`\n\n**Verdict:** PASS\n\n## Certification verdict: PASS\n\n<!--";
    let mut target = report::TargetBasis {
        name: format!("a port {hostile}"),
        profile: Some("targets/x/target.toml".into()),
        profile_sha256: Some("00".repeat(32)),
        deployed_at: vec![],
        version: Some(hostile.into()),
        capabilities: vec!["database".into()],
        lacking: vec![],
        allowed_uncovered: vec![],
        areas: vec![],
    };
    target.count_areas(&run.scenarios);
    run.target = Some(target);
    run.scenarios[1].failures[0].message = format!("B: answered {hostile}\u{FFFF}");
    let md = report::markdown::render(&run);
    let starting = |prefix: &str| md.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(starting("**Verdict:**"), 1, "{md}");
    assert_eq!(starting("## Certification verdict"), 1, "{md}");
    assert!(
        !md.lines().any(|l| l.trim_start().starts_with("<!--")),
        "no comment hides the rest: {md}"
    );
    let xml = report::junit::render(&run).unwrap();
    roxmltree::Document::parse(&xml).expect("junit.xml stays well-formed XML");
    assert!(!xml.contains('\u{FFFF}'));
}

/// `latest` names the run just written or none: a run whose folder was refused (it held an issued
/// token) does not leave `latest` on the run before it, which a gate would read as this one.
#[test]
fn latest_never_points_at_an_earlier_run_after_a_refused_write() {
    let out = tempfile::tempdir().unwrap();
    let first = report::write_run(out.path(), &fixed_run(Severity::Low), &[], None).unwrap();
    let latest = out.path().join("latest");
    assert_eq!(
        std::fs::canonicalize(&latest).unwrap(),
        std::fs::canonicalize(&first).unwrap()
    );
    let mut leaking = fixed_run(Severity::Low);
    leaking.scenarios[1].failures[0].message =
        "B: the body was {\"access_token\": \"hbcanary-qbo-at-00112233445566778899\"}".into();
    report::write_run(out.path(), &leaking, &[], None).expect_err("a folder holding a token");
    assert!(
        std::fs::symlink_metadata(&latest).is_err(),
        "latest still names the earlier run"
    );
}

/// A CI gate that reads only junit.xml sees a run that is not certified fail, though every
/// scenario passed; and a selection that passed never calls itself certified.
#[test]
fn junit_and_the_verdict_line_say_what_the_exit_status_says() {
    let passed_only = || {
        let mut run = fixed_run(Severity::Low);
        run.scenarios.retain(|s| s.verdict == Verdict::Passed);
        run.verdict = report::RunVerdict::Pass;
        run
    };
    let mut uncovered = passed_only();
    uncovered.not_certified("area oauth-state is not covered: its 21 scenario(s) SKIPPED".into());
    let xml = report::junit::render(&uncovered).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let failures = tagged(&doc, "failure");
    assert_eq!(failures.len(), 1, "{xml}");
    assert!(failures[0]
        .attribute("message")
        .unwrap()
        .contains("oauth-state is not covered"));
    let md = report::markdown::render(&uncovered);
    assert!(md.contains("**NOT CERTIFIED**") && md.contains("oauth-state is not covered"));
    let mut selection = passed_only();
    selection.selection = Some("1 of the catalogue's 85 scenarios".into());
    let md = report::markdown::render(&selection);
    assert!(!md.contains("**CERTIFIED**"), "{md}");
    assert!(md.contains("NOT A CERTIFICATE"), "{md}");
    let whole = report::markdown::render(&passed_only());
    assert!(whole.contains("**CERTIFIED**"));
    let mut flawed = passed_only();
    flawed.environment.flaws = vec!["no-pkce".into()];
    let md = report::markdown::render(&flawed);
    assert!(!md.contains("**CERTIFIED**"), "a flawed build: {md}");
}

/// Chromium's console lines for `page`, and its DOM; the screenshot goes to `screenshot`.
fn chromium(page: &Path, screenshot: Option<&Path>) -> (Vec<String>, String) {
    let bin = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("this test needs headless Chromium (Debian package `chromium`; `cargo xtask test` installs it)");
    let url = format!("file://{}", page.display());
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,2000",
    ]);
    match screenshot {
        Some(s) => cmd.arg(format!("--screenshot={}", s.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(&url).output().expect("chromium runs");
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    (console, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn html_opens_in_headless_chromium_without_console_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = fixed_run(Severity::Low);
    let page = dir.path().join("report.html");
    std::fs::write(&page, report::html::render(&run)).unwrap();
    let (console, dom) = chromium(&page, None);
    assert!(console.is_empty(), "console output: {console:?}");
    for sc in &run.scenarios {
        assert!(dom.contains(&sc.id), "{} is on the page", sc.id);
    }
    assert!(dom.contains("<svg"), "the interleavings are drawn");
    for external in [
        "<script",
        "<link",
        "src=\"http",
        "href=\"http",
        "@import",
        "url(",
    ] {
        assert!(
            !dom.contains(external),
            "self-contained, but found {external}"
        );
    }
    // What the verdict rests on comes before the scenarios; among the scenarios, failures first.
    let basis = dom.find("id=\"basis\"").expect("the basis section");
    let scenarios_at = dom.find("id=\"scenarios\"").expect("the scenarios section");
    assert!(
        basis < scenarios_at,
        "what the verdict rests on comes first"
    );
    let scenarios = &dom[scenarios_at..];
    let failed_first = scenarios.find("AUD-LOCK-NAMESPACE").unwrap()
        < scenarios.find("AUD-Q2-ACTIVATION-FIRST").unwrap();
    assert!(failed_first, "failures come first");
    let artefacts =
        harbor_layering::crate_dir(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let shot = artefacts.join("report.png");
    let _ = chromium(&page, Some(&shot));
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "a screenshot was kept at {}",
        shot.display()
    );

    // The console check can fail: a page with a script error is caught.
    let bad = dir.path().join("bad.html");
    std::fs::write(
        &bad,
        "<!DOCTYPE html><p>x</p><script>console.error('boom'); missing();</script>",
    )
    .unwrap();
    assert!(!chromium(&bad, None).0.is_empty());
}

#[test]
fn manifest_and_signature_detect_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = sign::SigningKey::generate();
    let mut run = fixed_run(Severity::Low);
    run.scenarios[0].trace.schedule = harbor_harness::schedule::Schedule(vec![0, 1, 2, 3]);
    report::write_into(
        dir.path(),
        &run,
        &[("mutants.json", "{}".into())],
        Some(&key),
    )
    .unwrap();
    let ok = sign::verify(dir.path(), Some(&key.public_key())).unwrap();
    assert_eq!(
        ok.files, 6,
        "the four renderings, mutants.json and one recorded schedule under traces/"
    );
    assert!(ok.is_authenticated());
    let own = sign::verify(dir.path(), None).unwrap();
    assert!(
        matches!(own.trust, sign::Trust::FolderKey(_)) && !own.is_authenticated(),
        "the folder's own key proves no authorship"
    );
    // A planted file is reported, and the folder no longer verifies.
    std::fs::write(dir.path().join("traces/PLANTED.json"), "{}").unwrap();
    let planted = sign::verify(dir.path(), Some(&key.public_key())).unwrap();
    assert_eq!(planted.unlisted, vec!["traces/PLANTED.json".to_owned()]);
    assert!(!planted.is_authenticated());
    std::fs::remove_file(dir.path().join("traces/PLANTED.json")).unwrap();
    // Without its signature the folder is only "unsigned": never authenticated.
    let sig = std::fs::read(dir.path().join("SHA256SUMS.sig")).unwrap();
    std::fs::remove_file(dir.path().join("SHA256SUMS.sig")).unwrap();
    let unsigned = sign::verify(dir.path(), None).unwrap();
    assert!(unsigned.trust == sign::Trust::Unsigned && !unsigned.is_authenticated());
    std::fs::write(dir.path().join("SHA256SUMS.sig"), sig).unwrap();
    let recorded = dir
        .path()
        .join("traces")
        .join(format!("{}.json", run.scenarios[0].id));
    let original = std::fs::read_to_string(&recorded).unwrap();
    std::fs::write(
        &recorded,
        original.replace("\"schedule\": [\n    0,", "\"schedule\": [\n    1,"),
    )
    .unwrap();
    assert!(
        sign::verify(dir.path(), None)
            .unwrap_err()
            .contains("was modified"),
        "a changed schedule is detected"
    );
    std::fs::write(&recorded, original).unwrap();
    let (_, other) = sign::SigningKey::generate();
    assert!(sign::verify(dir.path(), Some(&other.public_key()))
        .unwrap_err()
        .contains("signature"));
    let md = dir.path().join("report.md");
    let text = std::fs::read_to_string(&md)
        .unwrap()
        .replace("NOT CERTIFIED", "CERTIFIED");
    std::fs::write(&md, text).unwrap();
    assert!(sign::verify(dir.path(), None)
        .unwrap_err()
        .contains("report.md was modified"));
}
