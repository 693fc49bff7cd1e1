//! Isolation specs against a real server: a waiting step is backed by lock-table proof, a step
//! that cannot finish fails the spec with the lock table (never a pass), and the v1 designs the
//! audit remediated print a different output from the reference design's.

use std::path::Path;
use std::time::Duration;

use harbor_harness::isolation::{self, spec, tester, Options};

use crate::helpers::test_infra;

fn repository_spec(name: &str) -> isolation::SpecFile {
    let path = harbor_layering::crate_dir(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/sql")
        .join(format!("{name}.spec"));
    isolation::load(&path).unwrap()
}

#[tokio::test]
async fn a_waiting_step_is_proven_from_the_lock_tables() {
    let mut infra = test_infra().await;
    let file = repository_spec("audit-q2-activation-vs-callback");
    let outcome = isolation::run(&infra, None, &file, &Options::default(), None)
        .await
        .unwrap();
    assert!(
        outcome.passed(),
        "{:?} {:?}",
        outcome.diff,
        outcome.tested.fatal
    );
    assert_eq!(outcome.tested.waits.len(), 2, "{:?}", outcome.tested.waits);
    for w in &outcome.tested.waits {
        let wait = w.wait.as_ref().expect("a lock-table proof");
        assert_eq!(wait.lock.len(), 1, "{w:?}");
        let awaited = wait
            .awaited
            .as_ref()
            .expect("the awaited lock, read in the same statement");
        assert_eq!(
            (awaited.locktype.as_str(), awaited.granted),
            ("advisory", false)
        );
    }
    infra.shutdown().await;
}

#[tokio::test]
async fn a_step_that_never_finishes_fails_the_spec_with_the_lock_table() {
    let mut infra = test_infra().await;
    // s2_next cannot start until s2_wait ends, and s2_wait waits for s1, whose COMMIT comes
    // after s2_next: the permutation can never finish.
    let text = "setup { CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1); }\n\
                teardown { DROP TABLE t; }\n\
                session s1\nstep s1_lock { BEGIN; SELECT id FROM t FOR UPDATE; }\nstep s1_end { COMMIT; }\n\
                session s2\nstep s2_wait { SELECT id FROM t FOR UPDATE; }\nstep s2_next { SELECT 1; }\n\
                permutation s1_lock s2_wait s2_next s1_end\n";
    let spec = spec::parse(text, Path::new("hang.spec")).unwrap();
    let env = harbor_harness::provision::FreshDatabase::create(&infra.admin_url, "template0")
        .await
        .unwrap();
    let opts = Options {
        step_timeout: Duration::from_secs(2),
    };
    let tested = tester::run(&spec, "hang", &env.url, &opts).await;
    let fatal = tested.fatal.expect("the spec must fail");
    assert!(fatal.message.contains("s2_wait"), "{}", fatal.message);
    assert!(
        fatal
            .locks
            .iter()
            .any(|l| !l.granted && l.locktype == "transactionid"),
        "the lock table shows the wait: {:?}",
        fatal.locks
    );
    assert!(tested
        .output
        .contains("step s2_wait: SELECT id FROM t FOR UPDATE; <waiting ...>"));
    env.drop().await.unwrap();
    infra.shutdown().await;
}

#[tokio::test]
async fn the_v1_designs_print_what_the_reference_design_does_not() {
    let mut infra = test_infra().await;
    let reference = repository_spec("audit-q2-activation-vs-callback");
    let v1 = repository_spec("audit-q2-v1-split-namespace");
    let expected_reference = isolation::expected_files(&reference, None).remove(0);
    // The v1 steps judged against the reference design's expected output: the lost waits show.
    let outcome = isolation::run(
        &infra,
        None,
        &v1,
        &Options::default(),
        Some(&expected_reference),
    )
    .await
    .unwrap();
    let diff = outcome
        .diff
        .expect("the v1 design must not pass as the reference design");
    assert!(
        diff.contains("-step b_lock: SELECT workspace_lock"),
        "{diff}"
    );
    assert!(diff.contains("<waiting ...>"), "{diff}");
    assert!(outcome.tested.waits.is_empty());
    infra.shutdown().await;
}

#[tokio::test]
async fn a_spec_runs_on_a_copy_of_a_targets_schema_database() {
    let mut infra = test_infra().await;
    // Stands for a black-box target's schema database: a database of its own, idle, with a table.
    let schema = harbor_harness::provision::FreshDatabase::create(&infra.admin_url, "template0")
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&schema.url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE accounts (id int PRIMARY KEY, owner text); INSERT INTO accounts VALUES (1, 'acme')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("on-the-target.spec");
    std::fs::write(
        &path,
        format!(
            "# Reads the target's own table, in a copy of its schema database.\n\
             # harbor-database: template {}\n\
             session s1\nstep s1_read {{ SELECT id, owner FROM accounts; }}\nstep s1_write {{ UPDATE accounts SET owner = 'changed'; }}\n",
            schema.name
        ),
    )
    .unwrap();
    let file = isolation::load(&path).unwrap();
    assert_eq!(
        file.database,
        isolation::SpecDatabase::Template(schema.name.clone())
    );
    let outcome = isolation::run(
        &infra,
        Some(&infra.admin_url),
        &file,
        &Options::default(),
        None,
    )
    .await
    .unwrap();
    assert!(outcome.tested.fatal.is_none(), "{:?}", outcome.tested.fatal);
    assert!(
        outcome.tested.output.contains(" 1|acme "),
        "{}",
        outcome.tested.output
    );
    assert!(
        !outcome.had_expected,
        "no expected output was written for it"
    );
    // The copy took the writes; the target's database did not.
    let pool = sqlx::PgPool::connect(&schema.url).await.unwrap();
    let owner: String = sqlx::query_scalar("SELECT owner FROM accounts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(owner, "acme");
    pool.close().await;
    schema.drop().await.unwrap();
    infra.shutdown().await;
}

/// A teardown that fails, and a step no permutation uses, are in the output the expected file is
/// compared with, where PostgreSQL's tester puts them: an expected file without them fails.
#[tokio::test]
async fn a_failed_teardown_and_an_unused_step_are_in_the_output() {
    let mut infra = test_infra().await;
    let text = "setup { CREATE TABLE t (id int); }\n\
                teardown { SELECT 1/0; }\n\
                session s1\nstep s1_read { SELECT count(*) FROM t; }\nstep s1_spare { SELECT 2; }\n\
                teardown { SELECT 1/0; }\n\
                permutation s1_read\n";
    let spec = spec::parse(text, Path::new("teardown.spec")).unwrap();
    let env = harbor_harness::provision::FreshDatabase::create(&infra.admin_url, "template0")
        .await
        .unwrap();
    let tested = tester::run(&spec, "teardown", &env.url, &Options::default()).await;
    assert!(tested.fatal.is_none(), "{:?}", tested.fatal);
    let lines: Vec<&str> = tested.output.lines().collect();
    assert_eq!(lines[0], "unused step name: s1_spare", "{}", tested.output);
    assert_eq!(lines[1], "Parsed test spec with 1 sessions");
    let failed: Vec<&&str> = lines.iter().filter(|l| l.contains("failed")).collect();
    assert_eq!(failed.len(), 2, "{}", tested.output);
    assert!(
        failed[0].starts_with("teardown of session s1 failed: ")
            && failed[0].contains("division by zero")
    );
    assert!(failed[1].starts_with("teardown failed: ") && failed[1].contains("division by zero"));
    env.drop().await.unwrap();
    infra.shutdown().await;
}
