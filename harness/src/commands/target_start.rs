//! `harbor-certify target check PROFILE --start`: the profile's target started once, and each
//! thing its profile says tried — readiness, the published contract, the fixtures, the workspace
//! lock (an activation proven from `pg_locks` to wait for it, held from the harness's own
//! session), the harness's tokens (accepted when valid, refused when expired), the sync-point
//! protocol. Each check prints what it found; a failed one says which part of the profile to look
//! at, with the target's raw answer.

use std::process::ExitCode;
use std::sync::Arc;

use harbor_service::domain::Provider;
use harbor_service::lifecycle::ConnectionStatus;

use super::provision_or_explain;
use crate::identity::TokenKind;
use crate::operation::WorkspaceOp;
use crate::provision::BackendChoice;
use crate::target::profile::Profile;
use crate::target::started::ProfileLauncher;
use crate::target::sync_protocol::SyncPointsOverHttp;
use crate::target::{Launcher, Setup, Target, TenantSpec};

/// Starts `profile`'s target once and tries it; exit 0 when every check held.
pub async fn try_profile(profile: &Arc<Profile>, backend: BackendChoice) -> ExitCode {
    println!(
        "\n{} {} once to try what its profile says:",
        if profile.deployed.is_some() {
            "reaching"
        } else {
            "starting"
        },
        profile.name
    );
    let mut infra = match provision_or_explain(backend).await {
        Ok(i) => i,
        Err(code) => return code,
    };
    let checks = {
        let launcher = ProfileLauncher::new(&infra, profile.clone());
        let setup = Setup {
            replicas: 1,
            sync_points: profile.sync_points,
            ..Setup::default()
        };
        match launcher.launch(&setup).await {
            Err(e) => vec![("start-up".to_owned(), Err(e))],
            Ok(launched) => {
                let checks = try_target(profile, launched.target()).await;
                let stopped = launched.stop().await;
                let mut checks = checks;
                let how = if profile.deployed.is_some() {
                    "left running (deployed: not the harness's to stop)"
                } else {
                    "stopped with SIGTERM"
                };
                checks.push(("stop".into(), stopped.map(|()| how.into())));
                checks
            }
        }
    };
    infra.shutdown().await;
    let mut failed = 0;
    for (what, result) in &checks {
        match result {
            Ok(found) => println!("  ✓ {what:<22} {found}"),
            Err(why) => {
                failed += 1;
                println!(
                    "  ✗ {what:<22} {}",
                    crate::untrusted::console(why, "      ")
                );
            }
        }
    }
    if failed == 0 {
        println!("\nthe profile holds: {} check(s) passed", checks.len());
        ExitCode::SUCCESS
    } else {
        println!("\n{failed} of {} check(s) failed", checks.len());
        ExitCode::FAILURE
    }
}

type Check = (String, Result<String, String>);

async fn try_target(profile: &Profile, t: &dyn Target) -> Vec<Check> {
    let mut out: Vec<Check> = vec![(
        "start-up".into(),
        Ok(format!(
            "a replica answered {} at {}",
            profile.readiness,
            t.client().url(0, "")
        )),
    )];
    if profile.openapi.is_some() {
        out.push((
            "contract".into(),
            match t.contract() {
                Some(_) => Ok("its OpenAPI document was read".into()),
                None => Err("target.openapi is set, but no contract was read".into()),
            },
        ));
    }
    let spec = TenantSpec {
        name: "target-check".into(),
        entitled: true,
        qbo: ConnectionStatus::NotConnected,
    };
    let tenant = match t.create_tenant(&spec).await {
        Ok(made) => {
            out.push((
                "fixtures.create_tenant".into(),
                Ok(format!("made workspace {}", made.workspace)),
            ));
            made
        }
        Err(e) => {
            out.push(("fixtures.create_tenant".into(), Err(e)));
            return out;
        }
    };
    out.push((
        "database.workspace_lock".into(),
        match (t.workspace_lock(tenant.workspace), &profile.workspace_lock) {
            (Some(k), _) => Ok(format!(
                "advisory lock ({}, {}) in pg_locks terms — the key is read; that activation takes it, below",
                k.classid, k.objid
            )),
            (None, None) => Ok("not named: scenarios that need it are SKIPPED".into()),
            (None, Some(_)) => Err("named, but gave no key".into()),
        },
    ));
    let list = |kind: TokenKind| {
        t.client()
            .operation(
                WorkspaceOp::ListConnections,
                tenant.workspace,
                Provider::Qbo,
                "",
            )
            .bearer(Some(t.bearer(tenant.owner, kind)))
            .send()
    };
    out.push((
        "identity (valid)".into(),
        match list(TokenKind::Valid).await {
            Ok(a) if a.status.is_success() => Ok(format!(
                "the owner's token was accepted ({} on list_connections)",
                a.status
            )),
            Ok(a) => Err(format!(
                "the owner's valid token got {}: the target rejects the harness's tokens — check \
                 the JWKS it is given ({{jwks}}), {{jwt_issuer}}, {{jwt_audience}} and \
                 identity.claims\n  raw answer: {}",
                a.status,
                a.raw.chars().take(300).collect::<String>()
            )),
            Err(e) => Err(e.to_string()),
        },
    ));
    out.push((
        "identity (expired)".into(),
        match list(TokenKind::Expired).await {
            Ok(a) if a.status.as_u16() == 401 => Ok("an expired token was refused (401)".into()),
            Ok(a) => Err(format!(
                "an expired token got {}, not 401\n  raw answer: {}",
                a.status,
                a.raw.chars().take(300).collect::<String>()
            )),
            Err(e) => Err(e.to_string()),
        },
    ));
    out.push((
        "fixtures.set_connection_status".into(),
        t.set_connection_status(tenant.workspace, Provider::Qbo, ConnectionStatus::Connected)
            .await
            .map(|()| "QuickBooks set CONNECTED".into()),
    ));
    if profile.workspace_lock.is_some() {
        out.push((
            "activation waits for it".into(),
            activation_on_a_fresh_workspace(t).await,
        ));
    }
    if profile.sync_points {
        out.push((
            "sync_points".into(),
            SyncPointsOverHttp::new(t.client().clone(), 0)
                .points()
                .await
                .map(|points| format!("protocol 1 answers; {} point(s) named", points.len())),
        ));
        if let Some(key) = t.workspace_lock(tenant.workspace) {
            out.push((
                "the lock activation takes".into(),
                lock_activation_takes(t, &tenant, key).await,
            ));
        }
    }
    out
}

/// The owner's activation of `tenant`'s workspace, tagged as `actor`, sent on a task of its own.
fn spawn_activation(
    t: &dyn Target,
    tenant: &crate::fixtures::TenantWorkspace,
    actor: &str,
) -> tokio::task::JoinHandle<Result<crate::client::Answer, crate::client::ClientError>> {
    let call = t
        .client()
        .operation(WorkspaceOp::Activate, tenant.workspace, Provider::Qbo, "")
        .bearer(Some(t.bearer(tenant.owner, TokenKind::Valid)))
        .actor(Some(actor));
    tokio::spawn(call.send())
}

/// Whether activation really holds the lock the profile names: an activation parked at
/// `activation.locked` must hold, by the server's own `pg_locks`, an advisory lock with that key
/// (a profile naming another key would make every lock probe prove nothing).
async fn lock_activation_takes(
    t: &dyn Target,
    tenant: &crate::fixtures::TenantWorkspace,
    key: crate::evidence::AdvisoryKey,
) -> Result<String, String> {
    const ACTOR: &str = "targetcheck";
    let slot = harbor_syncpoint::SlotKey::new(ACTOR, "activation.locked");
    t.arm(0, slot.clone()).await?;
    let request = spawn_activation(t, tenant, ACTOR);
    let parked = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        t.parked(0, slot.clone()),
    )
    .await;
    let held: Result<Vec<crate::evidence::LockRow>, String> = match (parked, t.database()) {
        (Err(_), _) => Err("activation did not reach activation.locked within 10 s".into()),
        (Ok(()), None) => Err("no database to read pg_locks from".into()),
        (Ok(()), Some(db)) => crate::evidence::lock_snapshot(db)
            .await
            .map_err(|e| format!("reading pg_locks: {e}")),
    };
    let _ = t.release(0, &slot).await;
    let _ = request.await;
    let tag = crate::evidence::application_name(ACTOR);
    let held: Vec<crate::evidence::LockRow> = held?
        .into_iter()
        .filter(|l| l.application_name == tag && l.granted && l.locktype == "advisory")
        .collect();
    if held
        .iter()
        .any(|l| l.is_advisory(key) && l.mode == "ExclusiveLock")
    {
        Ok(format!(
            "a parked activation holds ({}, {}) in pg_locks, as database.workspace_lock says",
            key.classid, key.objid
        ))
    } else {
        Err(format!(
            "database.workspace_lock names ({}, {}), but a parked activation holds {}: the lock \
             probes would hold a lock the target never takes",
            key.classid,
            key.objid,
            if held.is_empty() {
                "no advisory lock (is its transaction tagged harbor:<actor>?)".to_owned()
            } else {
                held.iter()
                    .map(|l| {
                        format!(
                            "({}, {}, objsubid {}, {})",
                            l.classid.unwrap_or_default(),
                            l.objid.unwrap_or_default(),
                            l.objsubid.unwrap_or_default(),
                            l.mode
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))
    }
}

/// The lock probe, on a workspace of its own (entitled, QuickBooks connected, never activated:
/// an activation that already happened may answer without taking the lock).
async fn activation_on_a_fresh_workspace(t: &dyn Target) -> Result<String, String> {
    let spec = TenantSpec {
        name: "target-check-lock".into(),
        entitled: true,
        qbo: ConnectionStatus::Connected,
    };
    let tenant = t
        .create_tenant(&spec)
        .await
        .map_err(|e| format!("making its workspace: {e}"))?;
    let key = t
        .workspace_lock(tenant.workspace)
        .ok_or("database.workspace_lock gave no key")?;
    activation_waits_for(t, &tenant, key).await
}

/// Whether the lock the profile names is one activation takes, exclusively, with no code of
/// Harbor's in the target: the harness takes `key` in a session of its own, sends the owner's
/// activation, and requires it — proven from `pg_locks`, by the one lock-wait poller — to wait
/// for that session's advisory lock with that key, in exclusive mode (a shared one would not
/// serialise two activations); then lets the lock go and requires the activation to succeed. An
/// activation that succeeds while the lock is held takes no lock, or another one: every lock
/// probe of a run would prove nothing. What it proves is that activation acquires the lock; that
/// it keeps it for its work is what sync points (`lock_activation_takes`) and a run's scenarios
/// show. `tenant` must be ready to activate and never activated.
pub async fn activation_waits_for(
    t: &dyn Target,
    tenant: &crate::fixtures::TenantWorkspace,
    key: crate::evidence::AdvisoryKey,
) -> Result<String, String> {
    use sqlx::{Connection as _, Executor as _};
    const PROBE: &str = "targetcheck-probe";
    const ACTOR: &str = "targetcheck-activation";
    let (Some(url), Some(db)) = (t.database_url(), t.database()) else {
        return Err("no database to hold the lock from".into());
    };
    let mut probe = crate::evidence::tagged_session(url, PROBE)
        .await
        .map_err(|e| format!("opening the probe's session: {e}"))?;
    probe
        .execute(
            format!(
                "BEGIN; SELECT pg_advisory_xact_lock({})",
                key.sql_arguments()
            )
            .as_str(),
        )
        .await
        .map_err(|e| format!("taking the lock in the probe's session: {e}"))?;
    let request = spawn_activation(t, tenant, ACTOR);
    let waited = crate::evidence::until_blocked(
        db,
        ACTOR,
        Some(PROBE),
        crate::evidence::BlockedBy::Holder,
        std::time::Duration::from_secs(10),
        || request.is_finished(),
    )
    .await;
    // Let the lock go whatever was seen, so the activation can finish and be read.
    let released = probe.execute("COMMIT").await;
    let _ = probe.close().await;
    let answer = request
        .await
        .map_err(|e| format!("the activation's task: {e}"))?;
    let answered = match &answer {
        Ok(a) => format!(
            "{} {}",
            a.status,
            a.raw.chars().take(200).collect::<String>()
        ),
        Err(e) => e.to_string(),
    };
    let (classid, objid) = (key.classid, key.objid);
    let succeeded = matches!(&answer, Ok(a) if a.status.is_success());
    match waited {
        Err(crate::evidence::NotBlocked::Finished) if succeeded => Err(format!(
            "the harness held ({classid}, {objid}), as database.workspace_lock names it, and \
             activation succeeded without waiting for it ({answered}): it takes no lock, or \
             another one — the lock probes would hold a lock the target never takes"
        )),
        Err(crate::evidence::NotBlocked::Finished) => Err(format!(
            "activation answered without waiting for ({classid}, {objid}) ({answered}), so the \
             check proves nothing either way: the workspace was made ready to activate by the \
             fixtures (entitled, QuickBooks CONNECTED) and the owner's token is the harness's"
        )),
        Err(crate::evidence::NotBlocked::TimedOut(why)) => Err(format!(
            "activation neither waited for ({classid}, {objid}) nor answered (is its \
             transaction tagged harbor:<actor>, from the x-harbor-actor header?): {why}"
        )),
        Ok(blocked) if !blocked.awaited.is_advisory(key) => Err(format!(
            "activation waited for the probe's session, but on {} {:?}/{:?}, not the advisory \
             lock ({classid}, {objid})",
            blocked.awaited.locktype, blocked.awaited.classid, blocked.awaited.objid
        )),
        Ok(blocked) if blocked.awaited.mode != "ExclusiveLock" => Err(format!(
            "activation waited for ({classid}, {objid}), but in {}: a shared advisory lock \
             does not serialise two activations (pg_advisory_xact_lock, not _shared)",
            blocked.awaited.mode
        )),
        Ok(_) => {
            released.map_err(|e| format!("letting the lock go: {e}"))?;
            match answer {
                Ok(a) if a.status.is_success() => Ok(format!(
                    "an activation waited for ({classid}, {objid}) held by the harness \
                     (pg_locks), and answered {} once it was let go",
                    a.status
                )),
                _ => Err(format!(
                    "activation waited for the lock, as it should, but then answered {answered}, \
                     not 2xx (the workspace was entitled and its QuickBooks connection \
                     CONNECTED by the fixtures)"
                )),
            }
        }
    }
}
