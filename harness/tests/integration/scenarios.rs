//! The scenario machinery: the catalogue loads, bad files are refused before anything runs, and the
//! runner's checks can fail.

use std::path::{Path, PathBuf};

use harbor_harness::scenario::load::{self, LoadedScenario};
use harbor_harness::scenario::run::ScenarioRunner;
use harbor_harness::scenario::trace::EventKind;
use harbor_harness::scenario::{self, Verdict};
use harbor_harness::target::started::InProcessLauncher;

use crate::helpers::test_infra;

fn catalogue_dir() -> PathBuf {
    harbor_layering::crate_dir(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

const CATALOGUE: &[&str] = &[
    "AUD-Q2-ACTIVATION-FIRST",
    "AUD-Q2-CALLBACK-FIRST",
    "AUD-LOCK-NAMESPACE",
    "AUD-ROW-LOCK-DEFENSE",
    "AUD-LOCK-RELEASE",
    "AUD-IDEMPOTENT-ACTIVATION",
    "AUD-TENANT-LOCK-ISOLATION",
    "AUD-DISCONNECT-VS-ACTIVATION",
    "AUD-REVOKE-VS-ACTIVATION",
    "AUD-AUTH-GUARD",
    "AUD-AUTH-GUARD-CONNECTORS",
    "AUD-NOT-ENTITLED",
    "TM-S1-CROSS-TENANT-STATE",
    "TM-S1-SAME-TENANT-OTHER-USER",
    "TM-S2-NO-PLAINTEXT-TOKENS",
    "TM-S2-CIPHERTEXT-BINDING",
    "TM-S3-CONCURRENT-CALLBACK",
    "TM-S4-STATE-REPLAY",
    "TM-S4-STATE-REPLAY-API",
    "TM-CONSENT-DENIED",
    "PROBE-WORKSPACE-LOCK-REFRESH",
    "TM-STATE-EXPIRY",
    "TM-PROVIDER-MIXUP",
    "TM-PARALLEL-USERS",
    "TM-100-CONCURRENT-OAUTH",
    "TM-CROSS-REPLICA-CALLBACK",
    "TM-REFRESH-SINGLE-FLIGHT",
    "TM-CALLBACK-RATE-LIMIT",
    "TM-NO-TOKEN-EXPOSURE",
    "TM-DOCUMENT-ISOLATION",
    "TM-DOCUMENTS-END-WITH-THEIR-GRANT",
];

fn catalogue() -> Vec<LoadedScenario> {
    let files = load::scenario_files(&catalogue_dir()).unwrap();
    load::load_all(&files)
        .unwrap_or_else(|errors| panic!("the catalogue has bad files: {errors:?}"))
}

#[test]
fn the_catalogue_loads_and_has_every_seed_scenario() {
    let all = catalogue();
    for s in &all {
        let stem = s.file.file_stem().unwrap().to_str().unwrap();
        assert_eq!(stem, s.scenario.id, "each file is named after its id");
    }
    let ids: Vec<&str> = all.iter().map(|s| s.scenario.id.as_str()).collect();
    for id in CATALOGUE {
        assert!(ids.contains(id), "{id} is missing from scenarios/");
    }
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

const HEAD: &str = r#"
id = "X-1"
title = "t"
source = "s"
severity = "low"
area = "concurrency"

[[tenants]]
name = "acme"

[[actors]]
name = "A"
user = "acme.owner"
"#;

#[test]
fn bad_files_are_refused_with_the_file_the_place_and_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("unknown-field.toml", format!("{HEAD}\n[[steps]]\nactor = \"A\"\ndo = \"activate\"\nexpect_blokced = {{ on = \"A\" }}\n"), "line 18", "unknown field `expect_blokced`"),
        ("unknown-actor.toml", format!("{HEAD}\n[[steps]]\nactor = \"Z\"\ndo = \"activate\"\n"), "step 1 (do = \"activate\").actor", "unknown actor \"Z\" (declared: A)"),
        ("unknown-point.toml", format!("{HEAD}\n[[steps]]\nactor = \"A\"\ndo = \"activate\"\npark_at = \"activation.nowhere\"\n"), "step 1 (do = \"activate\").park_at", "unknown sync point \"activation.nowhere\""),
        ("bad-ref.toml", format!("{HEAD}\n[[steps]]\nactor = \"A\"\ndo = \"sql\"\nsql = \"SELECT '{{workspace:ghost}}'\"\n"), "step 1 (do = \"sql\").sql", "unknown tenant \"ghost\""),
        ("bad-provider.toml", format!("{HEAD}\n[[steps]]\nactor = \"A\"\ndo = \"sync\"\nprovider = \"dropbox\"\n"), "step 1 (do = \"sync\").provider", "expected qbo, gmail, slack or box"),
        ("nothing-to-wait.toml", format!("{HEAD}\n[[steps]]\nactor = \"A\"\ndo = \"wait\"\n"), "step 1 (do = \"wait\")", "no step running in the background"),
        ("bad-assert.toml", format!("{HEAD}\n[[steps]]\nactor = \"A\"\ndo = \"activate\"\n\n[[assert]]\nprovider_counter = \"qbo.exchanges\"\nequals = 1\n"), "assertion 1.provider_counter", "unknown counter \"exchanges\""),
        ("empty-expect.toml", format!("{HEAD}\n[[steps]]\nactor = \"A\"\ndo = \"activate\"\nexpect = {{}}\n"), "step 1 (do = \"activate\")", "an empty expectation holds of every outcome"),
        ("stray-lost.toml", format!("{HEAD}\n[[steps]]\nactor = \"A\"\ndo = \"activate\"\nexpect = {{ status = 409 }}\n\n[[assert]]\nsql = \"SELECT 1\"\nequals = 1\nlost_at_most = 3\n"), "assertion 1.lost_at_most", "lost_at_most goes with grants_accounted"),
    ];
    for (name, body, place, message) in cases {
        let file = write(dir.path(), name, &body);
        let err = load::load_file(&file).expect_err(name);
        assert_eq!(err.file, file);
        assert!(
            err.place.contains(place),
            "{name}: place {:?}, wanted {place:?}",
            err.place
        );
        assert!(
            err.message.contains(message),
            "{name}: message {:?}, wanted {message:?}",
            err.message
        );
    }
    // Two files with one id: both load, the set is refused.
    let a = write(
        dir.path(),
        "a.toml",
        &format!("{HEAD}\n[[steps]]\nactor = \"A\"\ndo = \"activate\"\n"),
    );
    let b = write(
        dir.path(),
        "b.toml",
        &format!("{HEAD}\n[[steps]]\nactor = \"A\"\ndo = \"activate\"\n"),
    );
    let errors = load::load_all(&[a, b]).expect_err("duplicate ids");
    assert!(errors[0].message.contains("already used"), "{errors:?}");
}

#[tokio::test]
async fn the_q2_trace_carries_lock_table_evidence_and_repeats_identically() {
    let mut infra = test_infra().await;
    let q2 = scenario::select(catalogue(), &["AUD-Q2-ACTIVATION-FIRST".into()], None)
        .unwrap()
        .remove(0);
    let launcher = InProcessLauncher::new(&infra);
    let runner = ScenarioRunner::new(&launcher, None);
    let result = scenario::run_repeated(&runner, &q2, 3).await;
    assert_eq!(result.verdict, Verdict::Passed, "{:?}", result.failures);
    assert_eq!(result.runs, 3);
    let blocked = result
        .trace
        .events
        .iter()
        .find(|e| e.kind == EventKind::Blocked)
        .expect("a blocked event");
    let ev = blocked.evidence.as_ref().unwrap();
    assert_eq!(
        (blocked.actor.as_deref(), ev.lock_type.as_str()),
        (Some("B"), "advisory")
    );
    assert_eq!(ev.blocking_actors, ["A"]);
    let table = result.trace.to_markdown(&result.actors);
    assert!(
        table.contains("| A (Activation) | B (OAuth callback) |"),
        "{table}"
    );
    assert!(table.contains("**BLOCKS**"), "{table}");
    infra.shutdown().await;
}

#[tokio::test]
async fn a_step_expected_to_block_that_does_not_is_a_failure_with_diagnostics() {
    let mut infra = test_infra().await;
    let dir = tempfile::tempdir().unwrap();
    // B expects to block on A, but A holds nothing: the scenario itself is wrong, and must say so.
    let body = format!(
        "{HEAD}\n[[actors]]\nname = \"B\"\nuser = \"acme.owner\"\n\n[[steps]]\nactor = \"B\"\ndo = \"activate\"\nexpect_blocked = {{ on = \"A\" }}\n"
    );
    let loaded = load::load_file(&write(dir.path(), "never-blocks.toml", &body)).unwrap();
    let launcher = InProcessLauncher::new(&infra);
    let runner = ScenarioRunner::new(&launcher, None);
    let result = scenario::run_repeated(&runner, &loaded, 1).await;
    assert_eq!(result.verdict, Verdict::Failed);
    let f = &result.failures[0];
    assert!(
        f.message
            .contains("expected to block on A, but it completed"),
        "{}",
        f.message
    );
    assert!(f.diagnostics.as_ref().unwrap().get("locks").is_some());

    // An expectation that cannot hold fails too, and a leak search without captured logs refuses
    // to pass unchecked.
    let body = format!(
        "{HEAD}\n[[steps]]\nactor = \"A\"\ndo = \"activate\"\nexpect = {{ status = 200 }}\n\n[[assert]]\nno_canary_leaks = true\n"
    );
    let loaded = load::load_file(&write(dir.path(), "wrong.toml", &body)).unwrap();
    let result = scenario::run_repeated(&runner, &loaded, 1).await;
    assert_eq!(result.verdict, Verdict::Failed);
    assert!(
        result.failures[0]
            .message
            .contains("expected status 200, got 409 ACTIVATION_NOT_READY"),
        "{:?}",
        result.failures
    );
    infra.shutdown().await;
}

#[tokio::test]
async fn a_recorded_schedule_replays_to_the_same_trace_and_a_diverging_one_is_refused() {
    use harbor_harness::schedule::{Replay, Schedule};
    let mut infra = test_infra().await;
    let q2 = scenario::select(catalogue(), &["AUD-Q2-CALLBACK-FIRST".into()], None)
        .unwrap()
        .remove(0);
    let launcher = InProcessLauncher::new(&infra);
    let runner = ScenarioRunner::new(&launcher, None);
    let first = runner.run(&q2).await;
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    assert_eq!(
        first.trace.schedule.0,
        (0..q2.scenario.steps.len()).collect::<Vec<_>>(),
        "the file's order is the schedule followed"
    );
    let again = runner
        .run_scheduled(&q2, &mut Replay::exact(&first.trace.schedule))
        .await;
    assert!(again.failures.is_empty(), "{:?}", again.failures);
    assert_eq!(
        again.trace.signature(),
        first.trace.signature(),
        "a replay gives the same trace"
    );
    // A schedule that runs an actor's second step before its first cannot be followed.
    let steps = &q2.scenario.steps;
    let second = (1..steps.len())
        .find(|&j| {
            steps[j].actor().is_some() && (0..j).any(|i| steps[i].actor() == steps[j].actor())
        })
        .unwrap();
    let diverged = runner
        .run_scheduled(&q2, &mut Replay::exact(&Schedule(vec![second])))
        .await;
    assert!(
        diverged
            .failures
            .iter()
            .any(|f| f.message.contains("schedule (replay)") && f.message.contains("can run")),
        "{:?}",
        diverged.failures
    );
    infra.shutdown().await;
}

/// A run that checked nothing could not have failed: a scenario whose steps expect nothing and
/// that asserts nothing fails, where the same file with one expectation passes.
#[tokio::test]
async fn a_scenario_that_checks_nothing_fails() {
    let mut infra = test_infra().await;
    let dir = tempfile::tempdir().unwrap();
    let launcher = InProcessLauncher::new(&infra);
    let runner = ScenarioRunner::new(&launcher, None);
    let run = |expect: &str| {
        let file = write(
            dir.path(),
            "X-1.toml",
            &format!("{HEAD}\n[[steps]]\nactor = \"A\"\ndo = \"list_connections\"\n{expect}"),
        );
        load::load_file(&file).unwrap()
    };
    let nothing = scenario::run_repeated(&runner, &run(""), 1).await;
    assert_eq!(nothing.verdict, Verdict::Failed, "{:?}", nothing.failures);
    assert!(
        nothing.failures[0].message.contains("checked nothing"),
        "{:?}",
        nothing.failures
    );
    let checked = scenario::run_repeated(&runner, &run("expect = { status = 200 }\n"), 1).await;
    assert_eq!(checked.verdict, Verdict::Passed, "{:?}", checked.failures);
    infra.shutdown().await;
}

#[tokio::test]
async fn a_scenario_the_target_cannot_serve_is_skipped_with_the_reason_never_passed() {
    use harbor_harness::target::Capability;
    let mut infra = test_infra().await;
    let q2 = scenario::select(catalogue(), &["AUD-Q2-ACTIVATION-FIRST".into()], None)
        .unwrap()
        .remove(0);
    assert!(q2.scenario.requires().contains(&Capability::SyncPoints));
    let launcher = InProcessLauncher::new(&infra);
    let runner = ScenarioRunner::new(&launcher, None).without([Capability::SyncPoints]);
    let result = scenario::run_repeated(&runner, &q2, 1).await;
    assert_eq!(result.verdict, Verdict::Skipped, "{:?}", result.failures);
    assert!(
        result.failures[0].message.contains("sync points"),
        "{:?}",
        result.failures
    );
    assert_eq!(
        harbor_harness::report::result_of(&result, harbor_harness::scenario::format::Severity::Low)
            .as_str(),
        "SKIPPED"
    );
    infra.shutdown().await;
}

/// The lock-probe scenarios park requests at the target's own locks, held from the harness's own
/// session: they must need nothing a black-box target with database evidence lacks — no sync
/// point, no clock, no fault, no keys, not the reference's schema (their state is read through
/// state queries) — only its database, its workspace lock's name and the fake provider.
#[test]
fn probe_scenarios_need_only_the_database_and_the_provider() {
    use harbor_harness::target::Capability;
    let probes: Vec<_> = catalogue()
        .into_iter()
        .filter(|s| s.scenario.id.starts_with("PROBE-"))
        .collect();
    assert!(
        probes.len() >= 2,
        "the PROBE-* scenarios are in the catalogue"
    );
    for p in probes {
        let needs = p.scenario.requires();
        let allowed = [
            Capability::Database,
            Capability::WorkspaceLock,
            Capability::ProviderControl,
        ];
        assert!(
            needs.iter().all(|c| allowed.contains(c)),
            "{} needs {needs:?}",
            p.scenario.id
        );
        assert!(
            !p.scenario.catches.is_empty(),
            "{} catches a flaw",
            p.scenario.id
        );
    }
}

/// The sync-point scenarios hold when the harness drives the points through the service's HTTP
/// protocol instead of the shared controller — as it would for a service started elsewhere.
#[tokio::test]
async fn the_q2_traces_pass_with_sync_points_over_http() {
    let mut infra = test_infra().await;
    let q2 = scenario::select(
        catalogue(),
        &[
            "AUD-Q2-ACTIVATION-FIRST".into(),
            "AUD-Q2-CALLBACK-FIRST".into(),
            "AUD-LOCK-NAMESPACE".into(),
        ],
        None,
    )
    .unwrap();
    let launcher = InProcessLauncher::new(&infra).with_sync_points_over_http(true);
    let runner = ScenarioRunner::new(&launcher, None);
    for s in &q2 {
        let result = scenario::run_repeated(&runner, s, 1).await;
        assert_eq!(
            result.verdict,
            Verdict::Passed,
            "{}: {:?}",
            result.id,
            result.failures
        );
    }
    infra.shutdown().await;
}

#[tokio::test]
async fn target_check_proves_the_workspace_lock_from_pg_locks_and_refuses_a_wrong_key() {
    use harbor_harness::commands::target_start::activation_waits_for;
    use harbor_harness::target::{Launcher as _, Setup, TenantSpec};
    use harbor_service::lifecycle::ConnectionStatus;
    let mut infra = test_infra().await;
    let launcher = InProcessLauncher::new(&infra);
    // The reference honours the actor's tag only where sync points may be used.
    let setup = Setup {
        sync_points: true,
        ..Setup::default()
    };
    let launched = launcher.launch(&setup).await.unwrap();
    let t = launched.target();
    let ready = |name: &str| TenantSpec {
        name: name.into(),
        entitled: true,
        qbo: ConnectionStatus::Connected,
    };
    let right = t.create_tenant(&ready("right")).await.unwrap();
    let key = t.workspace_lock(right.workspace).unwrap();
    let held = activation_waits_for(t, &right, key).await;
    assert!(
        held.as_ref().is_ok_and(|s| s.contains("waited for")),
        "{held:?}"
    );
    // A profile naming another key (the other half of the workspace's, say): activation takes
    // its own lock and answers while the harness holds the named one.
    let wrong = t.create_tenant(&ready("wrong")).await.unwrap();
    let mut other = t.workspace_lock(wrong.workspace).unwrap();
    other.objid ^= 1;
    let refused = activation_waits_for(t, &wrong, other).await.unwrap_err();
    assert!(refused.contains("without waiting for it"), "{refused}");
    launched.stop().await.unwrap();
    infra.shutdown().await;
}
