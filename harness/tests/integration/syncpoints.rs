//! Sync points and lock-table evidence: a parked request holds the workspace lock, a second
//! request is *seen* waiting on it in `pg_locks`, a raw writer that skips the advisory lock blocks
//! on the row lock, another workspace is never blocked, and a parked request that is never released
//! fails loudly and releases its lock.

use std::time::Duration;

use harbor_harness::evidence;
use harbor_harness::target::started::ServiceOptions;
use harbor_service::lifecycle::ConnectionStatus;
use harbor_syncpoint::{SlotKey, SlotState};
use reqwest::StatusCode;

use crate::helpers::{spawn_app, spawn_app_with, within, TestApp, PROBE_LIMIT};

#[tokio::test]
async fn a_parked_activation_blocks_a_second_one_on_the_advisory_lock() {
    let app = spawn_app().await;
    let t = app
        .tenant("parked", true, ConnectionStatus::Connected)
        .await;
    let sync = app.sut.replicas[0].sync.clone();
    let a_slot = SlotKey::new("A", "activation.locked");
    sync.arm(a_slot.clone()).unwrap();

    let a = app.activate(&t, Some("A"));
    let observe_and_b = async {
        within("A to park", sync.until(a_slot.clone(), SlotState::Parked)).await;
        let held = evidence::advisory_locks_of(app.db(), "A").await.unwrap();
        assert!(
            held.iter()
                .any(|l| l.granted && l.is_advisory(workspace_lock(&app, &t))),
            "A holds the workspace lock while parked: {held:?}"
        );
        // B starts only once A is parked: the order is the harness's, not the scheduler's.
        let b = app.activate(&t, Some("B"));
        let probe = async {
            let blocked = evidence::until_blocked(
                app.db(),
                "B",
                Some("A"),
                evidence::BlockedBy::Holder,
                PROBE_LIMIT,
                || false,
            )
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
            let waiting = blocked.waiter;
            assert!(
                blocked.awaited.is_advisory(workspace_lock(&app, &t)),
                "B awaits the workspace lock: {:?}",
                blocked.awaited
            );
            assert_eq!(waiting.wait_event.as_deref(), Some("advisory"));
            assert_eq!(waiting.blocking_actors(), vec!["A".to_owned()]);
            sync.release(&a_slot).unwrap();
        };
        let (rb, ()) = tokio::join!(b, probe);
        rb
    };
    let (ra, rb) = tokio::join!(a, observe_and_b);
    assert_eq!(ra.status, StatusCode::OK);
    assert_eq!(ra.body["already_completed"], false, "A went first");
    assert_eq!(rb.body["already_completed"], true, "B waited for A");
    assert_eq!(sync.history(), vec![a_slot]);
    app.stop().await;
}

#[tokio::test]
async fn a_writer_that_skips_the_advisory_lock_blocks_on_the_row_lock() {
    let app = spawn_app().await;
    let t = app
        .tenant("rowlock", true, ConnectionStatus::Connected)
        .await;
    let sync = app.sut.replicas[0].sync.clone();
    let slot = SlotKey::new("A", "activation.status_read");
    sync.arm(slot.clone()).unwrap();
    let a = app.activate(&t, Some("A"));
    let raw = async {
        within("A to park", sync.until(slot.clone(), SlotState::Parked)).await;
        let pool = app.db().clone();
        let w = t.workspace;
        let writer = tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SELECT set_config('application_name', 'harbor:RAW', true)")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("UPDATE connections SET status = 'DISCONNECTED' WHERE workspace_id = $1 AND provider = 'qbo'")
                .bind(w)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        });
        let waiting = evidence::until_blocked(
            app.db(),
            "RAW",
            Some("A"),
            evidence::BlockedBy::Holder,
            PROBE_LIMIT,
            || false,
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .waiter;
        assert_eq!(
            waiting.blocking_actors(),
            vec!["A".to_owned()],
            "the raw writer waits for A's row lock"
        );
        assert!(
            matches!(
                waiting.wait_event.as_deref(),
                Some("transactionid" | "tuple")
            ),
            "a row-lock wait, got {:?}",
            waiting.wait_event
        );
        sync.release(&slot).unwrap();
        within("the raw writer", writer).await.unwrap();
    };
    let (ra, ()) = tokio::join!(a, raw);
    assert_eq!(
        ra.status,
        StatusCode::OK,
        "A read CONNECTED under its row lock and activated: {}",
        ra.body
    );
    app.stop().await;
}

#[tokio::test]
async fn one_workspace_lock_never_blocks_another_workspace() {
    let app = spawn_app().await;
    let w1 = app.tenant("w-one", true, ConnectionStatus::Connected).await;
    let w2 = app.tenant("w-two", true, ConnectionStatus::Connected).await;
    let sync = app.sut.replicas[0].sync.clone();
    let slot = SlotKey::new("A", "activation.locked");
    sync.arm(slot.clone()).unwrap();
    let a = app.activate(&w1, Some("A"));
    let other = async {
        within("A to park", sync.until(slot.clone(), SlotState::Parked)).await;
        let reply = within(
            "W2's activation while W1 is locked",
            app.activate(&w2, Some("B")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(
            sync.state(&slot),
            Some(SlotState::Parked),
            "A was still holding W1's lock"
        );
        sync.release(&slot).unwrap();
    };
    let (ra, ()) = tokio::join!(a, other);
    assert_eq!(ra.status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_request_never_released_fails_loudly_and_frees_the_lock() {
    let options = ServiceOptions {
        sync_point_timeout: Duration::from_millis(300),
        ..ServiceOptions::default()
    };
    let app = spawn_app_with(options).await;
    let t = app.tenant("stuck", true, ConnectionStatus::Connected).await;
    let sync = app.sut.replicas[0].sync.clone();
    sync.arm(SlotKey::new("A", "activation.locked")).unwrap();
    let reply = app.activate(&t, Some("A")).await;
    reply.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "SYNC_POINT_TIMEOUT");
    assert!(evidence::advisory_locks_of(app.db(), "A")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        sync.state(&SlotKey::new("A", "activation.locked")),
        None,
        "the slot is freed"
    );
    // The workspace is usable again at once.
    let again = app.activate(&t, None).await;
    assert_eq!(again.status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn without_sync_points_the_actor_header_is_ignored() {
    let options = ServiceOptions {
        sync_points: false,
        ..ServiceOptions::default()
    };
    let app = spawn_app_with(options).await;
    let t = app
        .tenant("prod-like", true, ConnectionStatus::Connected)
        .await;
    // With sync points on, this tag is refused with 400 (see api.rs); off, it is never read.
    let reply = within(
        "an activation with a malformed tag",
        app.activate(&t, Some("not a valid tag!")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let ready = app.call(reqwest::Method::GET, "/readyz").send().await;
    assert_eq!(
        ready.body.get("sync_points"),
        None,
        "a production-like instance tells nobody about its test hooks: {}",
        ready.body
    );
    app.stop().await;
}

#[tokio::test]
async fn a_request_waiting_past_lock_timeout_gets_503_and_retry_after() {
    let options = ServiceOptions {
        lock_timeout: Some(Duration::from_millis(300)),
        ..ServiceOptions::default()
    };
    let app = spawn_app_with(options).await;
    let t = app.tenant("busy", true, ConnectionStatus::Connected).await;
    let sync = app.sut.replicas[0].sync.clone();
    let a_slot = SlotKey::new("A", "activation.locked");
    sync.arm(a_slot.clone()).unwrap();
    let a = app.activate(&t, Some("A"));
    let b_after_a_parks = async {
        within("A to park", sync.until(a_slot.clone(), SlotState::Parked)).await;
        // A holds the workspace lock; B waits for it longer than lock_timeout allows.
        let rb = app.activate(&t, Some("B")).await;
        sync.release(&a_slot).unwrap();
        rb
    };
    let (ra, rb) = tokio::join!(a, b_after_a_parks);
    rb.assert_error(StatusCode::SERVICE_UNAVAILABLE, "LOCK_TIMEOUT");
    assert_eq!(rb.retry_after.as_deref(), Some("1"));
    assert_eq!(ra.status, StatusCode::OK, "the holder is unaffected");
    assert_eq!(app.activations_of(t.workspace).await, 1);
    app.stop().await;
}

/// The workspace lock's key, as the target names it.
fn workspace_lock(
    app: &TestApp,
    t: &harbor_harness::fixtures::TenantWorkspace,
) -> harbor_harness::evidence::AdvisoryKey {
    harbor_harness::target::Target::workspace_lock(&app.sut, t.workspace).expect("named")
}

/// The same points over HTTP (`docs/SYNC-POINTS-PROTOCOL.md`): a harness outside the process arms
/// a point, sees the tagged request park there while it holds the workspace lock, and releases it.
#[tokio::test]
async fn the_sync_point_protocol_parks_and_releases_a_request_over_http() {
    use harbor_harness::target::sync_protocol::SyncPointsOverHttp;
    let app = spawn_app().await;
    let t = app
        .tenant("overhttp", true, ConnectionStatus::Connected)
        .await;
    let http = SyncPointsOverHttp::new(app.sut.client.clone(), 0);
    let points = http.points().await.unwrap();
    assert!(
        points.iter().any(|p| p == "activation.locked"),
        "{points:?}"
    );
    http.arm("A", "activation.locked").await.unwrap();
    let again = http.arm("A", "activation.locked").await.unwrap_err();
    assert!(again.contains("ALREADY_ARMED"), "{again}");
    let unknown = http.arm("A", "activation.nowhere").await.unwrap_err();
    assert!(unknown.contains("UNKNOWN_POINT"), "{unknown}");

    let a = app.activate(&t, Some("A"));
    let drive = async {
        let state = http
            .state("A", "activation.locked", Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(state, Some(SlotState::Parked));
        let held = evidence::advisory_locks_of(app.db(), "A").await.unwrap();
        assert!(
            held.iter()
                .any(|l| l.granted && l.is_advisory(workspace_lock(&app, &t))),
            "A holds the workspace lock while parked: {held:?}"
        );
        http.release("A", "activation.locked").await.unwrap();
    };
    let (answer, ()) = tokio::join!(a, drive);
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        http.state("A", "activation.locked", None).await.unwrap(),
        None,
        "the slot is gone once its request went on"
    );
    // Disarming a slot nobody reached, and releasing everything, are both accepted.
    http.arm("B", "activation.locked").await.unwrap();
    http.release("B", "activation.locked").await.unwrap();
    http.arm("C", "activation.locked").await.unwrap();
    http.release_all().await.unwrap();
    assert_eq!(
        http.state("C", "activation.locked", None).await.unwrap(),
        None
    );
    app.stop().await;
}

/// Without sync points the protocol is not there: a 404 like any unknown path.
#[tokio::test]
async fn without_sync_points_the_protocol_answers_not_found() {
    use harbor_harness::target::sync_protocol::SyncPointsOverHttp;
    let app = spawn_app_with(ServiceOptions {
        sync_points: false,
        ..ServiceOptions::default()
    })
    .await;
    let http = SyncPointsOverHttp::new(app.sut.client.clone(), 0);
    let refused = http.points().await.unwrap_err();
    assert!(refused.contains("404"), "{refused}");
    let refused = http.arm("A", "activation.locked").await.unwrap_err();
    assert!(refused.contains("404"), "{refused}");
    let refused = harbor_harness::target::sync_protocol::set_clock_offset(&app.sut.client, 0, 1000)
        .await
        .unwrap_err();
    assert!(refused.contains("404"), "{refused}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_protocol_sets_the_offset_absolutely() {
    let app = spawn_app_with(ServiceOptions::default()).await;
    let client = &app.sut.client;
    for offset in [700_000, 700_000, -5_000] {
        harbor_harness::target::sync_protocol::set_clock_offset(client, 0, offset)
            .await
            .unwrap();
        assert_eq!(app.sut.clock.offset().num_milliseconds(), offset);
    }
    // Beyond ten years either way, or a body that is not the object: 400 in the protocol's
    // error shape, the clock unmoved (an offset near i64::MAX ms made every later reading panic).
    for (body, code) in [
        (
            serde_json::json!({ "offset_ms": i64::MAX }),
            "OFFSET_OUT_OF_RANGE",
        ),
        (
            serde_json::json!({ "offset_ms": i64::MIN }),
            "OFFSET_OUT_OF_RANGE",
        ),
        (serde_json::json!("later"), "BAD_REQUEST"),
        (
            serde_json::json!({ "offset_ms": 1, "by": "mistake" }),
            "BAD_REQUEST",
        ),
    ] {
        let refused = client
            .request(
                reqwest::Method::PUT,
                harbor_harness::target::sync_protocol::CLOCK,
            )
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.raw);
        assert_eq!(refused.body["error"]["code"], code, "{}", refused.raw);
        assert_eq!(app.sut.clock.offset().num_milliseconds(), -5_000);
    }
    let bound = harbor_service::clock_protocol::MAX_OFFSET_MS;
    harbor_harness::target::sync_protocol::set_clock_offset(client, 0, -bound)
        .await
        .unwrap();
    // At the bound the service still reads its clock: an authorize stamps its state with it.
    let t = app
        .tenant("far-past", true, ConnectionStatus::NotConnected)
        .await;
    let answered = app
        .call(
            reqwest::Method::POST,
            format!("/v1/workspaces/{}/connections/gmail/authorize", t.workspace),
        )
        .as_user(t.owner.0)
        .send()
        .await;
    assert!(answered.status.is_success(), "{}", answered.raw);
    app.stop().await;
}
