//! The database cost of each kind of request, counted on the wire: every kind is measured, and
//! the counts are those of real work (a framer that lost its place would count nothing).

use crate::helpers::test_infra;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_request_is_counted_in_transactions_and_round_trips() {
    let infra = test_infra().await;
    let rows = harbor_harness::db_cost::measure(&infra, 2)
        .await
        .expect("measured");
    assert_eq!(rows.len(), harbor_harness::db_cost::Kind::ALL.len());
    for r in &rows {
        assert!(r.transactions >= 1.0, "{r:?}");
        assert!(r.round_trips >= r.transactions, "{r:?}");
        assert!(r.statements >= r.transactions, "{r:?}");
    }
    let of = |kind: &str| rows.iter().find(|r| r.kind == kind).expect(kind);
    // A callback consumes its state, exchanges the code and stores the tokens: more database work
    // than reading the connections' metadata.
    assert!(of("callback").transactions > of("list_connections").transactions);
    assert!(of("callback").statements > of("list_connections").statements);
    // A replica remembers a user's tenant once any request told it (here the caller's authorize
    // on the same replica): the callback reads it only where the caller is new.
    assert_eq!(
        of("callback (caller new to the replica)").transactions - of("callback").transactions,
        1.0,
        "{rows:?}"
    );
    // Authorize, likewise: one transaction (membership, lock, row, audit) where the replica has
    // read the caller as the workspace's owner before, and the membership read from the pool
    // before Redis only where it has not.
    assert_eq!(of("authorize").transactions, 1.0, "{rows:?}");
    assert_eq!(
        of("authorize (caller new to the replica)").transactions,
        2.0,
        "{rows:?}"
    );
}

/// The statements every member's request enters its workspace with keep a generic plan, as a
/// prepared statement should: planned again at every call, the locking one cost PostgreSQL about
/// 26 µs of CPU a request under load (migration 0018 says why it did). Counted the way PostgreSQL
/// counts it for the session, in `pg_prepared_statements`, after more calls than the five custom
/// plans it always makes first.
#[tokio::test]
async fn the_entry_statements_keep_a_generic_plan() {
    use harbor_service::request_tx::{ENTER, ENTER_AND_LOCK};
    let app = crate::helpers::spawn_app().await;
    let t = app
        .tenant(
            "plans",
            true,
            harbor_service::lifecycle::ConnectionStatus::Connected,
        )
        .await;
    let mut conn = app.db().acquire().await.unwrap();
    for _ in 0..8 {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        let entered: (uuid::Uuid, String) = sqlx::query_as(ENTER)
            .bind(t.workspace)
            .bind(t.owner)
            .bind("harbor:plans")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(entered.1, "owner");
        let locked: (uuid::Uuid, String, bool) = sqlx::query_as(ENTER_AND_LOCK)
            .bind(t.workspace)
            .bind(t.owner)
            .bind("harbor:plans")
            .bind(1_i32)
            .bind(2_i32)
            .bind(vec!["owner", "admin"])
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert!(locked.2, "the owner's entry takes the lock");
        tx.rollback().await.unwrap();
    }
    for statement in [ENTER, ENTER_AND_LOCK] {
        let (generic, custom): (i64, i64) = sqlx::query_as(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
        )
        .bind(statement)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert!(
            generic > 0,
            "{statement}: {custom} custom plans and no generic one in 8 calls"
        );
    }
    conn.close().await.unwrap();
    app.stop().await;
}

/// A SECURITY DEFINER function that writes audit rows runs with the sessions' search path
/// (migration 0019): a session keeps one plan of each foreign key's check and plans it again
/// whenever the path it runs under changes, so under `pg_catalog, pg_temp` every disconnect's
/// settlement cost the audit row's check two plans. Every such function is found from its body,
/// so one added later is held to it too.
#[tokio::test]
async fn definer_functions_writing_audit_rows_share_the_sessions_search_path() {
    let app = crate::helpers::spawn_app().await;
    let session_path: String = sqlx::query_scalar("SELECT current_setting('search_path')")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(
        session_path, "\"$user\", public",
        "the sessions' default path"
    );
    let writers: Vec<(String, Option<Vec<String>>)> = sqlx::query_as(
        "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p \
          WHERE p.prosecdef AND p.prosrc ~* 'INSERT INTO public\\.audit_events' ORDER BY 1",
    )
    .fetch_all(app.db())
    .await
    .unwrap();
    let names: Vec<&str> = writers.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.iter().any(|n| n.starts_with("harbor_outbox_done(")),
        "the settlement writes an audit row: {names:?}"
    );
    for (name, config) in &writers {
        assert!(
            config
                .iter()
                .flatten()
                .any(|setting| setting == "search_path=public, pg_temp"),
            "{name} runs under {config:?}: its audit row's foreign-key check is planned again at each call"
        );
    }
    app.stop().await;
}
