//! The one lock namespace for a workspace's connection and activation state (audit §2.1).
//!
//! Every path that reads-to-decide or changes a workspace's connection or activation state —
//! activation, disconnect, revoke, OAuth authorize, callback and token refresh — takes the
//! workspace lock first, inside its transaction, and only then row-locks what it reads. A
//! member's request that locks its workspace first thing takes it in the statement that enters
//! the workspace (`WorkspaceRequest::begin_locked`, the key from [`LockFor::key`]); activation
//! takes it in the call that also makes its two reads, made in the statement that enters the
//! workspace (`WorkspaceRequest::begin_for_activation`); the
//! callback's store takes it in the statement that holds the caller's membership
//! (`auth::admin_membership_then_lock`); the outbox's workers and the rest take it on a statement
//! of its own.
//!
//! ## Derivation
//! The key is PostgreSQL's two-`int4` advisory lock form: `classid` is the fixed namespace
//! [`WORKSPACE_LOCK_NAMESPACE`] and `objid` is the first four bytes of SHA-256 of the workspace
//! id's sixteen bytes. In `pg_locks` it shows as `locktype = 'advisory'`, `classid`, `objid`,
//! `objsubid = 2`. SHA-256 rather than a `Hasher` because the key must be identical across
//! replicas, restarts and releases.
//!
//! ## Why a collision is harmless
//! Two workspaces whose hashes collide share one lock. The lock only ever *adds* mutual exclusion,
//! so a collision can only make one workspace's request wait for the other's — never let two
//! requests for the same workspace run together. No transaction takes two workspace locks, so a
//! collision cannot create a deadlock either.

use sha2::{Digest, Sha256};

use crate::db::Tx;
use crate::domain::WorkspaceId;
#[cfg(feature = "flaws")]
use crate::flaws::{self, Flaw};

/// The advisory-lock `classid` of workspace-state locks ("HBRW").
pub const WORKSPACE_LOCK_NAMESPACE: i32 = 0x4842_5257;

/// A workspace's advisory-lock key, as it appears in `pg_locks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkspaceLockKey {
    /// `pg_locks.classid`: always [`WORKSPACE_LOCK_NAMESPACE`].
    pub classid: i32,
    /// `pg_locks.objid`: derived from the workspace id.
    pub objid: i32,
}

/// Proof that the workspace lock is held by the current transaction. Functions that change a
/// workspace's state take it as an argument, so they cannot be called without the lock.
#[derive(Debug)]
#[non_exhaustive]
pub struct WorkspaceLock {
    /// The workspace whose lock is held.
    pub workspace_id: WorkspaceId,
    /// When the statement that took it returned: the start of the critical section every other
    /// request of the workspace waits behind (`Server-Timing`'s `lock`, from here to the commit).
    pub taken_at: std::time::Instant,
}

/// Derives the advisory-lock key for a workspace. The only place workspace keys are derived.
pub fn lock_key_for_workspace(workspace_id: WorkspaceId) -> WorkspaceLockKey {
    let digest = Sha256::digest(workspace_id.0.as_bytes());
    let objid = i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    WorkspaceLockKey {
        classid: WORKSPACE_LOCK_NAMESPACE,
        objid,
    }
}

/// Takes the workspace's transaction-scoped advisory lock, waiting for any holder to finish.
pub async fn lock_workspace(
    tx: &mut Tx,
    workspace_id: WorkspaceId,
) -> Result<WorkspaceLock, sqlx::Error> {
    LockFor::Workspace.take(tx, workspace_id).await
}

/// The workspace lock for the OAuth paths (authorize, callback, refresh): exactly
/// [`lock_workspace`], except under the seeded flaw `split-lock-namespace`, where the key is
/// derived in another namespace — the v1 defect of the audit's §2.1.
pub async fn lock_for_oauth(
    tx: &mut Tx,
    workspace_id: WorkspaceId,
) -> Result<WorkspaceLock, sqlx::Error> {
    LockFor::OAuth.take(tx, workspace_id).await
}

/// Which of the workspace's locks a path takes: the lock a member's request can take in the
/// statement that enters the workspace (`WorkspaceRequest::begin_locked`), or on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockFor {
    /// [`lock_workspace`]'s: disconnect and revoke (activation takes the same key, with its reads,
    /// in `harbor_lock_for_activation`).
    Workspace,
    /// [`lock_for_oauth`]'s: authorize, callback and refresh.
    OAuth,
}

impl LockFor {
    /// The key this lock is taken on.
    pub fn key(self, workspace_id: WorkspaceId) -> WorkspaceLockKey {
        let key = lock_key_for_workspace(workspace_id);
        #[cfg(feature = "flaws")]
        if self == LockFor::OAuth && flaws::active(Flaw::SplitLockNamespace) {
            return WorkspaceLockKey {
                classid: WORKSPACE_LOCK_NAMESPACE ^ 0x0100,
                ..key
            };
        }
        key
    }

    /// Takes it on a statement of its own.
    pub async fn take(
        self,
        tx: &mut Tx,
        workspace_id: WorkspaceId,
    ) -> Result<WorkspaceLock, sqlx::Error> {
        take(tx, workspace_id, self.key(workspace_id)).await
    }

    /// The proof that a statement which did other work as well (a member's entry into the
    /// workspace, the callback store's membership hold) took this lock on [`LockFor::key`]: its
    /// caller vouches that the statement returned only once the lock was granted.
    pub(crate) fn taken_by_statement(self, workspace_id: WorkspaceId) -> WorkspaceLock {
        held(workspace_id)
    }
}

/// Seeded flaw `no-refresh-single-flight` only: a lock token for a path that takes no lock. In a
/// build without the feature this is unreachable ([`crate::flaws::active`] is always false).
pub fn unlocked(workspace_id: WorkspaceId) -> WorkspaceLock {
    #[cfg(feature = "flaws")]
    {
        unlocked_for_flaw(workspace_id)
    }
    #[cfg(not(feature = "flaws"))]
    {
        let _ = workspace_id;
        unreachable!("seeded flaws are not compiled in")
    }
}

/// Seeded flaw `no-refresh-single-flight` only: a lock token for a path that took no lock.
#[cfg(feature = "flaws")]
pub fn unlocked_for_flaw(workspace_id: WorkspaceId) -> WorkspaceLock {
    held(workspace_id)
}

/// The proof for a lock the statement that just returned took (or, for a seeded flaw, skipped).
fn held(workspace_id: WorkspaceId) -> WorkspaceLock {
    WorkspaceLock {
        workspace_id,
        taken_at: std::time::Instant::now(),
    }
}

async fn take(
    tx: &mut Tx,
    workspace_id: WorkspaceId,
    key: WorkspaceLockKey,
) -> Result<WorkspaceLock, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(key.classid)
        .bind(key.objid)
        .execute(&mut **tx)
        .await?;
    Ok(held(workspace_id))
}

/// What an activation reads under the workspace lock.
#[derive(Clone, Copy, Debug)]
pub struct ActivationReads {
    /// When the workspace was activated, if it was.
    pub activated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The workspace's entitlement (`None`: it has no entitlement row).
    pub entitled: Option<bool>,
}

/// [`lock_workspace`] and the activation's two reads in one round trip
/// (`harbor_lock_for_activation`, migration 0012): the reads run after the lock is granted, each
/// with a snapshot of its own, so they see what the lock's previous holder committed. On a
/// statement of its own only for the seeded flaw `no-membership-check`, whose entry reads no
/// membership; a member's activation calls it in its entry
/// (`request_tx::ENTER_AND_LOCK_FOR_ACTIVATION`).
pub async fn lock_workspace_for_activation(
    tx: &mut Tx,
    workspace_id: WorkspaceId,
) -> Result<(WorkspaceLock, ActivationReads), sqlx::Error> {
    let key = lock_key_for_workspace(workspace_id);
    let (activated_at, entitled) =
        sqlx::query_as("SELECT * FROM harbor_lock_for_activation($1, $2, $3)")
            .bind(key.classid)
            .bind(key.objid)
            .bind(workspace_id)
            .fetch_one(&mut **tx)
            .await?;
    Ok((
        held(workspace_id),
        ActivationReads {
            activated_at,
            entitled,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_namespaced() {
        let w = WorkspaceId::parse("6f1c2a9e-0b1d-4c3e-9a57-2f0d1e8b4c11").unwrap();
        let k = lock_key_for_workspace(w);
        assert_eq!(k, lock_key_for_workspace(w));
        assert_eq!(k.classid, WORKSPACE_LOCK_NAMESPACE);
        let other = WorkspaceId::parse("0d4e7c1a-9b2f-4e61-8a3d-5c6b7a8f9e01").unwrap();
        assert_ne!(k.objid, lock_key_for_workspace(other).objid);
    }
}
