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
