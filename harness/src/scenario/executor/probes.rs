//! Interleaving probes: a launched request is parked (its sync point says so) or blocked (the lock
//! tables say so, through the one poller [`evidence::until_blocked`]). A request that completes
//! instead, or does neither within the step timeout, is a failure with the lock tables attached.

use harbor_syncpoint::SlotKey;
use serde_json::json;
use tokio::task::JoinHandle;

use super::jobs::JobResult;
use super::{Executor, ExpectBlocked};
use crate::evidence::{self, NotBlocked};
use crate::scenario::outcome::Failure;
use crate::scenario::trace::{EventKind, LockEvidence};

impl Executor<'_> {
    /// Waits until `actor`'s request is parked at `point` on `replica`.
    pub async fn until_parked(
        &mut self,
        step: usize,
        actor: &str,
        replica: usize,
        point: &str,
        handle: &mut JoinHandle<JobResult>,
    ) -> Result<(), Failure> {
        let key = SlotKey::new(actor.to_owned(), point.to_owned());
        let parked = self.target.parked(replica, key);
        let deadline = tokio::time::sleep(self.step_timeout);
        let message = tokio::select! {
            _ = parked => None,
            _ = &mut *handle => Some(format!("{actor}: expected to park at {point}, but the request completed first")),
            _ = deadline => Some(format!("{actor}: never reached sync point {point} within {:?}", self.step_timeout)),
        };
        match message {
            None => {
                self.event(
                    Some(step),
                    Some(actor),
                    EventKind::Parked,
                    point.to_owned(),
                    None,
                );
                self.checks += 1;
                Ok(())
            }
            Some(m) => Err(self.failure_with_diagnostics(step, m).await),
        }
    }

    /// Proves from the lock tables that `actor`'s running request waits for a lock `blocked.on`
    /// holds — of an accepted type, and (with `object`) that tenant's workspace lock — and records
    /// the evidence in the trace.
    pub async fn prove_blocked(
        &mut self,
        step: usize,
        actor: &str,
        blocked: &ExpectBlocked,
        handle: &mut JoinHandle<JobResult>,
    ) -> Result<(), Failure> {
        let db = self
            .target
            .database()
            .ok_or_else(|| Failure::at(Some(step), "the target has no lock tables to read"))?;
        let found = evidence::until_blocked(
            db,
            actor,
            Some(&blocked.on),
            blocked.how,
            self.step_timeout,
            || handle.is_finished(),
        )
        .await;
        let seen = match found {
            Ok(seen) => seen,
            Err(NotBlocked::Finished) => {
                let summary = match handle.await {
                    Ok(r) => self.absorb(actor, r).summary(),
                    Err(e) => format!("panicked: {e}"),
                };
                let message = format!(
                    "{actor}: expected to block on {}, but it completed: {summary}",
                    blocked.on
                );
                return Err(self.failure_with_diagnostics(step, message).await);
            }
            Err(NotBlocked::TimedOut(t)) => {
                let message = format!(
                    "{actor}: expected to be {} {} within {:?}\n  last seen {:?}",
                    blocked.how.relation(),
                    blocked.on,
                    self.step_timeout,
                    t.last_seen
                );
                return Err(self.failure_with_diagnostics(step, message).await);
            }
        };
        let w = &seen.awaited;
        let ev = LockEvidence {
            pid: seen.waiter.pid,
            blocking_pids: seen.waiter.blocking_pids.clone(),
            blocking_actors: seen.waiter.blocking_actors(),
            lock_type: w.locktype.clone(),
            mode: w.mode.clone(),
            classid: w.classid,
            objid: w.objid,
            relation: w.relation.clone(),
        };
        if !blocked.lock.is_empty() && !blocked.lock.iter().any(|l| l.as_str() == ev.lock_type) {
            let wanted: Vec<&str> = blocked.lock.iter().map(|l| l.as_str()).collect();
            let message = format!(
                "{actor}: blocked on {} but on a {} lock, expected {}",
                blocked.on,
                ev.lock_type,
                wanted.join(" or ")
            );
            return Err(Failure::at(Some(step), message)
                .with_diagnostics(json!({ "evidence": ev, "locks": seen.locks })));
        }
        if let Some(t) = &blocked.object {
            let workspace = self.workspace(t);
            let key = self.target.workspace_lock(workspace).ok_or_else(|| {
                Failure::at(Some(step), "the target does not name its workspace lock")
            })?;
            if !w.is_advisory(key) {
                let message = format!(
                    "{actor}: waits for another lock than {t}'s workspace lock, which {} must hold\n  awaited ({:?}, {:?}), the workspace lock ({:#x}, {})",
                    blocked.on, ev.classid, ev.objid, key.classid, key.objid
                );
                return Err(Failure::at(Some(step), message)
                    .with_diagnostics(json!({ "evidence": ev, "locks": seen.locks })));
            }
        }
        self.event(
            Some(step),
            Some(actor),
            EventKind::Blocked,
            format!("{} {}", blocked.how.relation(), blocked.on),
            Some(ev),
        );
        self.checks += 1;
        Ok(())
    }
}
