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
    // than reading the connections' metadata, in one transaction when nothing holds a lock it
    // needs (the store made in the write-ahead's own transaction).
    assert_eq!(of("callback").transactions, 1.0, "{rows:?}");
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
    // A sync whose token is fresh reads it with the membership in one statement, not in a
    // transaction of four (`BEGIN`, the entry and its lock, the row locked, `COMMIT`); then it
    // stores the documents with the membership in one statement too, not in a transaction of
    // four (`BEGIN`, the entry, the documents, `COMMIT`): two in all, five when the token is
    // decided under the locks.
    assert_eq!(of("sync").statements, 2.0, "{rows:?}");
    // A disconnect: its transaction (`BEGIN`, the entry with the lock and the row locked after
    // it, the intent, the transition with its audit row, `COMMIT`), then the settlement with the
    // provider's answer audited, one statement run alone (with a transaction around it, three
    // more). Authorize's entry takes the lock and the row in one statement likewise.
    assert_eq!(of("disconnect").statements, 6.0, "{rows:?}");
    assert_eq!(of("authorize").statements, 4.0, "{rows:?}");
    // An activation: `BEGIN`, the entry with the lock, the two reads and the QuickBooks row
    // locked after them, the row with its audit row, `COMMIT`.
    assert_eq!(of("activate").statements, 4.0, "{rows:?}");
    // Redis: an authorize charges its address and tenant in one script call and stores its state
    // (2); a callback charges address, failed-state reservation and tenant in one call, consumes
    // its state and gives the reservation back (3). A workspace request sends none.
    assert_eq!(of("authorize").redis_commands, Some(2.0), "{rows:?}");
    assert_eq!(of("callback").redis_commands, Some(3.0), "{rows:?}");
    assert_eq!(of("activate").redis_commands, Some(0.0), "{rows:?}");
}

/// The statements every member's request enters its workspace with keep a generic plan, as a
/// prepared statement should: planned again at every call, the locking one cost PostgreSQL about
/// 26 µs of CPU a request under load (migration 0018 says why it did). Counted the way PostgreSQL
/// counts it for the session, in `pg_prepared_statements`, after more calls than the five custom
/// plans it always makes first.
#[tokio::test]
async fn the_entry_statements_keep_a_generic_plan() {
    use harbor_service::auth::{admin_entry, MEMBERSHIP_AND_LOCK_TRIED, MEMBERSHIP_HELD_AND_LOCK};
    use harbor_service::documents::STORE;
    use harbor_service::domain::Role;
    use harbor_service::locks::LockFor;
    use harbor_service::request_tx::{
        ENTER, ENTER_AND_LOCK, ENTER_AND_LOCK_FOR_ACTIVATION,
        ENTER_AND_LOCK_FOR_ACTIVATION_WITH_ROW, ENTER_AND_READ_CONNECTION, ENTER_LOCK_AND_ROW,
    };
    let app = crate::helpers::spawn_app().await;
    let t = app
        .tenant(
            "plans",
            true,
            harbor_service::lifecycle::ConnectionStatus::Connected,
        )
        .await;
    let mut conn = as_the_services_role(&app).await;
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM connections")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        visible, 0,
        "row-level security hides every row while no tenant is set"
    );
    for call in 0..8 {
        let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
        let entered: (uuid::Uuid, String) = sqlx::query_as(ENTER)
            .bind(t.workspace)
            .bind(t.owner)
            .bind("harbor:plans")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(entered.1, "owner");
        let admins = Role::names_let_through(true);
        let locked: (uuid::Uuid, String, bool) = sqlx::query_as(ENTER_AND_LOCK)
            .bind(t.workspace)
            .bind(t.owner)
            .bind("harbor:plans")
            .bind(1_i32)
            .bind(2_i32)
            .bind(admins)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert!(locked.2, "the owner's entry takes the lock");
        // An activation's entry: the lock and the two reads under it, in the tenant's scope.
        type Reads = (Option<chrono::DateTime<chrono::Utc>>, Option<bool>);
        let activation: (uuid::Uuid, String, Reads) = sqlx::query_as(ENTER_AND_LOCK_FOR_ACTIVATION)
            .bind(t.workspace)
            .bind(t.owner)
            .bind("harbor:plans")
            .bind(3_i32)
            .bind(4_i32)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(
            activation.2 .1,
            Some(true),
            "the entitlement read in the tenant's scope"
        );
        // An activation's entry that locks the QuickBooks row after the lock and the reads.
        let activation_row: sqlx::postgres::PgRow =
            sqlx::query(&ENTER_AND_LOCK_FOR_ACTIVATION_WITH_ROW)
                .bind(t.workspace)
                .bind(t.owner)
                .bind("harbor:plans")
                .bind(7_i32)
                .bind(8_i32)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        let qbo_status: Option<String> = sqlx::Row::get(&activation_row, 6);
        assert_eq!(qbo_status.as_deref(), Some("CONNECTED"));
        // An entry that locks its connection's row after the lock: the row read in the scope.
        let with_row: sqlx::postgres::PgRow = sqlx::query(&ENTER_LOCK_AND_ROW)
            .bind(t.workspace)
            .bind(t.owner)
            .bind("harbor:plans")
            .bind(5_i32)
            .bind(6_i32)
            .bind(admins)
            .bind("qbo")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let row_status: Option<String> = sqlx::Row::get(&with_row, 5);
        assert_eq!(row_status.as_deref(), Some("CONNECTED"));
        // The callback store's statement, in the tenant's scope the entry set: the membership
        // held again, and the lock taken with it.
        let held: (Option<String>, bool) = admin_entry(
            MEMBERSHIP_HELD_AND_LOCK,
            t.workspace,
            t.owner,
            LockFor::OAuth,
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(held, (Some("owner".to_owned()), true));
        // The store made at once: the same, tried (both already this transaction's).
        let tried: (bool, i64) = admin_entry(
            MEMBERSHIP_AND_LOCK_TRIED,
            t.workspace,
            t.owner,
            LockFor::OAuth,
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert!(tried.0 && tried.1 > 0, "{tried:?}");
        tx.rollback().await.unwrap();
        // A sync's look at its token: the entry and the connection in one statement, run alone
        // (no tenant set before it): the row is found only when the function has set the tenant
        // before row-level security looks at it.
        let read: Option<sqlx::postgres::PgRow> = sqlx::query(&ENTER_AND_READ_CONNECTION)
            .bind(t.workspace)
            .bind(t.owner)
            .bind("harbor:plans")
            .bind("qbo")
            .fetch_optional(&mut conn)
            .await
            .unwrap();
        let role: String =
            sqlx::Row::get(&read.expect("the connection read in the tenant's scope"), 1);
        assert_eq!(role, "owner");
        // A sync's store, run alone likewise: the row read and the documents written in the
        // tenant's scope (row-level security would refuse the insert, or hide the row, were
        // either looked at before the entry set the tenant).
        let stored: sqlx::postgres::PgRow = sqlx::query(&STORE)
            .bind(t.workspace)
            .bind(t.owner)
            .bind("harbor:plans")
            .bind("qbo")
            .bind(None::<uuid::Uuid>)
            .bind(vec![
                format!("plans-doc-{call}-1"),
                format!("plans-doc-{call}-2"),
            ])
            .bind(vec!["one", "two"])
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let status: Option<String> = sqlx::Row::get(&stored, 2);
        assert_eq!(
            status.as_deref(),
            Some("CONNECTED"),
            "the row read in the tenant's scope"
        );
        // A caller who is not a member enters nothing, reads nothing and writes nothing.
        let outsider: Option<sqlx::postgres::PgRow> = sqlx::query(&STORE)
            .bind(t.workspace)
            .bind(uuid::Uuid::new_v4())
            .bind("harbor:plans")
            .bind("qbo")
            .bind(None::<uuid::Uuid>)
            .bind(vec!["plans-outsider"])
            .bind(vec!["nothing"])
            .fetch_optional(&mut conn)
            .await
            .unwrap();
        assert!(outsider.is_none(), "an outsider's store answers no row");
    }
    let documents: i64 =
        sqlx::query_scalar("SELECT count(*) FROM documents WHERE external_id LIKE 'plans-doc-%'")
            .fetch_one(app.db())
            .await
            .unwrap();
    assert_eq!(documents, 16, "every store wrote, in the tenant's scope");
    let outsiders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM documents WHERE external_id = 'plans-outsider'")
            .fetch_one(app.db())
            .await
            .unwrap();
    assert_eq!(outsiders, 0, "an outsider's store wrote nothing");
    for statement in [
        ENTER,
        ENTER_AND_LOCK,
        ENTER_AND_LOCK_FOR_ACTIVATION,
        MEMBERSHIP_HELD_AND_LOCK,
        MEMBERSHIP_AND_LOCK_TRIED,
        ENTER_AND_READ_CONNECTION.as_str(),
        ENTER_LOCK_AND_ROW.as_str(),
        ENTER_AND_LOCK_FOR_ACTIVATION_WITH_ROW.as_str(),
        STORE.as_str(),
    ] {
        let (generic, custom): (i64, i64) = sqlx::query_as(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
        )
        .bind(statement)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        // Five custom plans, by rule, then the generic one for the rest.
        assert!(
            custom <= 5 && generic >= 3,
            "{statement}: {custom} custom plans and {generic} generic in 8 calls"
        );
    }
    // What keeps it so: each membership function says it returns one row. (A `CREATE OR REPLACE`
    // without `ROWS 1` would put the default 1000 back.)
    let estimates: Vec<(String, f32)> = sqlx::query_as(
        "SELECT p.oid::regprocedure::text, p.prorows FROM pg_proc p \
          WHERE p.proname IN ('harbor_enter_workspace', 'harbor_membership') ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(estimates.len(), 3, "{estimates:?}");
    for (function, rows) in &estimates {
        assert_eq!(*rows, 1.0, "{function} is estimated at {rows} rows");
    }
    sqlx::Connection::close(conn).await.unwrap();
    app.stop().await;
}

/// A function that runs under a search path of its own and writes rows whose foreign keys are
/// checked runs under the sessions' path (migration 0019): a session keeps one plan of each
/// foreign key's check and plans it again whenever the path it runs under changes, so under
/// `pg_catalog, pg_temp` every disconnect's settlement cost the audit row's check two plans.
/// Every function with a path of its own that inserts or updates is found from its body, so one
/// added later is held to it too, unless it is named below with the reason it may differ.
#[tokio::test]
async fn definer_functions_writing_audit_rows_share_the_sessions_search_path() {
    /// Functions with a path of their own that write, but never a foreign key's column in a
    /// request: each with why.
    const EXEMPT: &[(&str, &str)] = &[
        ("harbor_outbox_claim", "updates the lease only"),
        (
            "harbor_outbox_retry_found",
            "updates the lease and the error only",
        ),
        (
            "harbor_outbox_adopt",
            "not called by this release's replicas",
        ),
        (
            "harbor_consent_give_up",
            "lets parked intents go: their lease and parked account only",
        ),
    ];
    let app = crate::helpers::spawn_app().await;
    // Every session's path is the server's default: no role or database sets its own.
    let session_path: String = sqlx::query_scalar("SELECT current_setting('search_path')")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(session_path, "\"$user\", public");
    let overrides: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_db_role_setting s, unnest(s.setconfig) c \
          WHERE c LIKE 'search\\_path=%'",
    )
    .fetch_one(app.db())
    .await
    .unwrap();
    assert_eq!(overrides, 0, "a role or database sets its own search path");
    let writers: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT p.proname::text, p.oid::regprocedure::text, p.proconfig FROM pg_proc p \
          WHERE p.pronamespace = 'public'::regnamespace \
            AND EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search\\_path=%') \
            AND p.prosrc ~* '\\m(insert\\s+into|update)\\M' ORDER BY 2",
    )
    .fetch_all(app.db())
    .await
    .unwrap();
    let names: Vec<&str> = writers.iter().map(|(name, _, _)| name.as_str()).collect();
    assert!(
        names.contains(&"harbor_outbox_done_found"),
        "the settlement writes an audit row: {names:?}"
    );
    for (name, signature, config) in &writers {
        if EXEMPT.iter().any(|(exempt, _)| exempt == name) {
            continue;
        }
        assert!(
            config
                .iter()
                .any(|setting| setting == "search_path=public, pg_temp"),
            "{signature} writes under {config:?}: the foreign-key checks of its rows are planned \
             again each time a session moves between its path and the sessions'"
        );
    }
    app.stop().await;
}

/// The entries that also read the request's connection with its row lock (`ENTER_LOCK_AND_ROW`,
/// `ENTER_AND_LOCK_FOR_ACTIVATION_WITH_ROW`: one round trip for two) take the workspace lock
/// first, as every path does: seen in the lock tables waiting for the row another session holds,
/// each already holds the workspace lock. Taken the other way round, it would wait for the row
/// holding nothing, and a request holding the workspace lock while it waits for the row could
/// deadlock with it.
#[tokio::test]
async fn the_entries_with_the_row_take_the_workspace_lock_before_the_row() {
    use harbor_service::request_tx::{ENTER_AND_LOCK_FOR_ACTIVATION_WITH_ROW, ENTER_LOCK_AND_ROW};
    let app = crate::helpers::spawn_app().await;
    let t = app
        .tenant(
            "order",
            true,
            harbor_service::lifecycle::ConnectionStatus::Connected,
        )
        .await;
    // The lock's flag, then the row's columns (its id, tenant, status).
    let status = waits_for_the_row_holding_the_lock(&app, &t, &ENTER_LOCK_AND_ROW, true, 5).await;
    assert_eq!(
        status.as_deref(),
        Some("CONNECTED"),
        "the row read in the tenant's scope"
    );
    // The two reads, then the row's columns: read because the workspace is entitled and not
    // activated yet.
    let status = waits_for_the_row_holding_the_lock(
        &app,
        &t,
        &ENTER_AND_LOCK_FOR_ACTIVATION_WITH_ROW,
        false,
        6,
    )
    .await;
    assert_eq!(
        status.as_deref(),
        Some("CONNECTED"),
        "the row read in the tenant's scope"
    );
    // A plain member, refused the admin's lock, neither waits for the row R holds nor takes the
    // workspace lock: answered at once, the lock not taken and no row read.
    let holder = holding_the_qbo_row(&app, &t).await;
    let mut member = as_the_services_role(&app).await;
    let mut tx = sqlx::Connection::begin(&mut member).await.unwrap();
    let key = harbor_service::locks::LockFor::Workspace.key(t.workspace);
    let refused = crate::helpers::within(
        "a refused member's entry, which must not wait",
        sqlx::query(&ENTER_LOCK_AND_ROW)
            .bind(t.workspace)
            .bind(t.member)
            .bind("harbor:M")
            .bind(key.classid)
            .bind(key.objid)
            .bind(harbor_service::domain::Role::names_let_through(true))
            .bind("qbo")
            .fetch_one(&mut *tx),
    )
    .await
    .unwrap();
    let locked: bool = sqlx::Row::get(&refused, 2);
    let row_id: Option<uuid::Uuid> = sqlx::Row::get(&refused, 3);
    assert!(
        !locked && row_id.is_none(),
        "a refused member locked {locked}, read {row_id:?}"
    );
    let advisory: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory' \
          AND mode = 'ExclusiveLock'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(advisory, 0, "a refused member holds no workspace lock");
    tx.rollback().await.unwrap();
    holder.commit().await.unwrap();
    app.stop().await;
}

/// A connection of the harness's, taken out of its pool (closed when dropped, never given back
/// with the role on it) and set to the service's role: under row-level security, which the
/// harness's own role is not.
async fn as_the_services_role(app: &crate::helpers::TestApp) -> sqlx::PgConnection {
    let mut conn = app.db().acquire().await.unwrap().detach();
    sqlx::query("SET ROLE harbor_app")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// A transaction of the harness's own, tagged R, holding the workspace's QuickBooks row lock.
async fn holding_the_qbo_row(
    app: &crate::helpers::TestApp,
    t: &harbor_harness::fixtures::TenantWorkspace,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = app.db().begin().await.unwrap();
    sqlx::query("SELECT set_config('application_name', 'harbor:R', true)")
        .execute(&mut *holder)
        .await
        .unwrap();
    sqlx::query(
        "SELECT 1 FROM connections WHERE workspace_id = $1 AND provider = 'qbo' FOR UPDATE",
    )
    .bind(t.workspace)
    .execute(&mut *holder)
    .await
    .unwrap();
    holder
}

/// Runs `statement` (an entry with the workspace lock's key as `$4`, `$5`, and with `admin_entry`
/// the roles let through and the provider as `$6`, `$7`) as the service's role while a session
/// holds the workspace's QuickBooks row, checks from the lock tables that it waits for the row
/// holding the workspace lock, lets the row go, and answers the status column `status_at`.
async fn waits_for_the_row_holding_the_lock(
    app: &crate::helpers::TestApp,
    t: &harbor_harness::fixtures::TenantWorkspace,
    statement: &'static str,
    admin_entry: bool,
    status_at: usize,
) -> Option<String> {
    use crate::helpers::{within, PROBE_LIMIT};
    use harbor_harness::evidence::{self, BlockedBy};
    use harbor_service::domain::Role;
    use harbor_service::locks::LockFor;
    let holder = holding_the_qbo_row(app, t).await;
    let key = LockFor::Workspace.key(t.workspace);
    let (workspace, owner) = (t.workspace, t.owner);
    let mut entering = as_the_services_role(app).await;
    let entry = tokio::spawn(async move {
        let mut tx = sqlx::Connection::begin(&mut entering).await.unwrap();
        let mut query = sqlx::query(statement)
            .bind(workspace)
            .bind(owner)
            .bind("harbor:E")
            .bind(key.classid)
            .bind(key.objid);
        if admin_entry {
            query = query.bind(Role::names_let_through(true)).bind("qbo");
        }
        let row = query.fetch_one(&mut *tx).await.unwrap();
        let status: Option<String> = sqlx::Row::get(&row, status_at);
        tx.rollback().await.unwrap();
        status
    });
    let seen = evidence::until_blocked(
        app.db(),
        "E",
        Some("R"),
        BlockedBy::Holder,
        PROBE_LIMIT,
        || entry.is_finished(),
    )
    .await
    .unwrap_or_else(|e| panic!("the entry must wait for the row R holds: {e:?}"));
    assert_ne!(seen.awaited.locktype, "advisory", "{:?}", seen.awaited);
    let holds_the_workspace_lock = seen.locks.iter().any(|l| {
        l.pid == seen.waiter.pid
            && l.granted
            && l.locktype == "advisory"
            // `pg_locks` shows the two keys as unsigned object ids.
            && l.classid == Some(i64::from(key.classid as u32))
            && l.objid == Some(i64::from(key.objid as u32))
    });
    assert!(
        holds_the_workspace_lock,
        "{statement}: waiting for the row without the workspace lock: {:?}",
        seen.locks
    );
    holder.commit().await.unwrap();
    within("the entry", entry).await.unwrap()
}

/// The benches' raw ceiling of an activation (`ceiling::raw_activation`), which only the benches
/// run otherwise, runs: it activates the workspace once, and a second call finds it done.
#[tokio::test]
async fn the_raw_activation_ceiling_activates_once() {
    use harbor_harness::target::started::ceiling::raw_activation;
    let app = crate::helpers::spawn_app().await;
    let t = app
        .tenant(
            "ceiling",
            true,
            harbor_service::lifecycle::ConnectionStatus::Connected,
        )
        .await;
    for _ in 0..2 {
        raw_activation(app.db(), &t)
            .await
            .expect("the raw activation");
    }
    assert_eq!(app.activations_of(t.workspace).await, 1);
    app.stop().await;
}
