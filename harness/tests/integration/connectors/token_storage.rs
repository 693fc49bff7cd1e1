//! Token storage: ciphertext bound to its row and tenant, key rotation in resumable batches.

use super::*;

#[tokio::test]
async fn ciphertext_swapped_between_rows_or_tenants_does_not_decrypt() {
    let app = spawn_app().await;
    let a = app
        .tenant("swap-a", true, ConnectionStatus::NotConnected)
        .await;
    let b = app
        .tenant("swap-b", true, ConnectionStatus::NotConnected)
        .await;
    app.connect(a.owner, a.workspace, Provider::Gmail)
        .await
        .unwrap();
    app.connect(a.owner, a.workspace, Provider::Slack)
        .await
        .unwrap();
    app.connect(b.owner, b.workspace, Provider::Gmail)
        .await
        .unwrap();
    // An attacker with write access copies A's Gmail ciphertext into B's Gmail row and into A's
    // Slack row.
    for (workspace, provider) in [(b.workspace, "gmail"), (a.workspace, "slack")] {
        sqlx::query(
            "UPDATE connections SET access_token = src.access_token, refresh_token = src.refresh_token \
             FROM (SELECT access_token, refresh_token FROM connections WHERE workspace_id = $1 AND provider = 'gmail') src \
             WHERE workspace_id = $2 AND provider = $3",
        )
        .bind(a.workspace)
        .bind(workspace)
        .bind(provider)
        .execute(app.db())
        .await
        .unwrap();
    }
    sync(&app, &b, Provider::Gmail, 0)
        .await
        .assert_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL");
    sync(&app, &a, Provider::Slack, 0)
        .await
        .assert_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL");
    // A's own row still works; the provider saw no read with a stolen token.
    let ok = sync(&app, &a, Provider::Gmail, 0).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(app.sut.provider.counters(Provider::Gmail).resource_reads, 1);
    app.stop().await;
}

#[tokio::test]
async fn key_rotation_re_encrypts_in_batches_and_resumes() {
    let app = spawn_app().await;
    let tenants = app.connected_tenants("rot", 3, Provider::Gmail).await;
    let old = app.sut.key_ring();
    let ring = app.key_ring_rotated_to("k2");
    // A row locked by a "request" is skipped and reported, not waited for.
    let mut held = app.db().begin().await.unwrap();
    sqlx::query(
        "SELECT 1 FROM connections WHERE workspace_id = $1 AND provider = 'gmail' FOR UPDATE",
    )
    .bind(tenants[0].workspace)
    .execute(&mut *held)
    .await
    .unwrap();
    let first = vault::rotate_keys(app.db(), &ring, 1).await.unwrap();
    assert_eq!((first.rotated, first.batches, first.remaining), (2, 2, 1));
    held.rollback().await.unwrap();
    let second = vault::rotate_keys(app.db(), &ring, 1).await.unwrap();
    assert_eq!(
        (second.rotated, second.remaining),
        (1, 0),
        "the run resumes where it stopped"
    );
    for t in &tenants {
        let r = row(&app, t.workspace, Provider::Gmail).await;
        assert_eq!(r.key_id.as_deref(), Some("k2"));
        assert!(decrypt(
            &ring,
            &r,
            Provider::Gmail,
            TokenField::Access,
            r.access.as_ref().unwrap()
        )
        .is_ok());
        assert!(
            decrypt(
                old,
                &r,
                Provider::Gmail,
                TokenField::Access,
                r.access.as_ref().unwrap()
            )
            .is_err(),
            "the old key alone cannot read it"
        );
    }
    app.stop().await;
}
