//! The process replica's lifecycle against real processes: a shell and Python's HTTP server.

use super::*;

fn command(dir: &std::path::Path, script: &str) -> ProcessCommand {
    let port = free_port().unwrap();
    ProcessCommand {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("PORT".into(), port.to_string())],
        inherit: Vec::new(),
        cwd: dir.to_path_buf(),
        log: dir.join("output.log"),
        base_url: format!("http://127.0.0.1:{port}"),
        ready_path: "/".into(),
        ready_timeout: Duration::from_secs(20),
        lease: None,
    }
}

async fn answers(base_url: &str) -> bool {
    reqwest::get(base_url).await.is_ok()
}

#[tokio::test]
async fn a_replica_starts_is_killed_with_its_group_and_restarts_on_its_port() {
    let dir = tempfile::tempdir().unwrap();
    // A shell that does not exec: the server is its child, in the replica's process group.
    let cmd = command(
        dir.path(),
        "python3 -m http.server \"$PORT\" --bind 127.0.0.1; echo never",
    );
    let child = cmd.start().await.expect("the server answers /");
    assert!(answers(&cmd.base_url).await);
    kill(child).await.unwrap();
    // The grandchild died with the group: nothing answers on the port any more.
    assert!(
        stops_answering(&cmd.base_url, Duration::from_secs(5)).await,
        "the server behind the shell was killed with its group"
    );
    let again = cmd.start().await.expect("restarted on the same port");
    terminate(again, Duration::from_secs(5), &cmd)
        .await
        .unwrap();
}

/// Polls until nothing answers at `base_url`; false if something still does after `bound`.
async fn stops_answering(base_url: &str, bound: Duration) -> bool {
    let gone = async {
        while answers(base_url).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(bound, gone).await.is_ok()
}

#[tokio::test]
async fn a_replica_never_ready_is_killed_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    // The server behind the shell answers, but never 200 on the readiness path.
    let mut cmd = command(
        dir.path(),
        "python3 -m http.server \"$PORT\" --bind 127.0.0.1; echo never",
    );
    cmd.ready_path = "/no-such-path".into();
    cmd.ready_timeout = Duration::from_secs(3);
    let e = cmd.start().await.unwrap_err();
    assert!(e.contains("404"), "the last answer is said: {e}");
    assert!(
        stops_answering(&cmd.base_url, Duration::from_secs(5)).await,
        "the server behind the shell outlived the failed start"
    );
}

#[tokio::test]
async fn a_replica_that_exited_by_itself_fails_its_stop_with_its_status_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = command(
        dir.path(),
        "timeout 5 python3 -m http.server \"$PORT\" --bind 127.0.0.1; echo 'worker lost'; exit 3",
    );
    let mut child = cmd.start().await.expect("the server answers /");
    assert!(
        stops_answering(&cmd.base_url, Duration::from_secs(10)).await,
        "the server ends after its 5 s"
    );
    let exited = async {
        while child.try_wait().ok().flatten().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exited)
        .await
        .expect("the shell exits after the server");
    let e = terminate(child, Duration::from_secs(5), &cmd)
        .await
        .unwrap_err();
    assert!(e.contains("exited by itself"), "{e}");
    assert!(e.contains("exit status: 3"), "{e}");
    assert!(e.contains("worker lost"), "the log's tail: {e}");
}

#[tokio::test]
async fn a_replica_that_exits_during_start_up_is_an_error_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = command(dir.path(), "echo 'bad configuration: HARBOR_X'; exit 3");
    let e = cmd.start().await.unwrap_err();
    assert!(e.contains("exited during start-up"), "{e}");
    assert!(
        e.contains("bad configuration: HARBOR_X"),
        "the log's tail: {e}"
    );
    let missing = ProcessCommand {
        argv: vec!["./no-such-start.sh".into()],
        ..cmd
    };
    let e = missing.start().await.unwrap_err();
    assert!(e.contains("is it built / installed?"), "{e}");
}

#[tokio::test]
async fn a_start_script_that_exits_takes_what_it_started_with_it() {
    let dir = tempfile::tempdir().unwrap();
    // The script leaves a server running in its group and exits before the readiness path
    // (which never answers 200 here) says it is ready.
    let mut cmd = command(
        dir.path(),
        "python3 -m http.server \"$PORT\" --bind 127.0.0.1 & sleep 1; exit 3",
    );
    cmd.ready_path = "/no-such-path".into();
    let e = cmd.start().await.unwrap_err();
    assert!(e.contains("exited during start-up"), "{e}");
    assert!(
        stops_answering(&cmd.base_url, Duration::from_secs(5)).await,
        "the server the script left behind outlived the failed start"
    );
}

#[test]
fn debug_names_variables_not_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path(), "true");
    cmd.env
        .push(("DATABASE_URL".into(), "postgres://u:hunter2@h/db".into()));
    let shown = format!("{cmd:?}");
    assert!(
        shown.contains("DATABASE_URL") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[test]
fn a_leased_port_is_free_again_once_the_lease_is_dropped() {
    let lease = PortLease::take().unwrap();
    let port = lease.port();
    assert!((20_000..32_000).contains(&port));
    assert!(GIVEN.lock().unwrap().contains(&port));
    drop(lease);
    assert!(!GIVEN.lock().unwrap().contains(&port));
}

#[test]
fn ports_are_handed_out_once() {
    let ports: std::collections::BTreeSet<u16> = (0..50).map(|_| free_port().unwrap()).collect();
    assert_eq!(ports.len(), 50);
    assert!(ports.iter().all(|p| (20_000..32_000).contains(p)));
}
