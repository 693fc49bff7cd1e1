//! `do = "release"`: lets the actor's request parked at a sync point go on — and, with
//! `expect_blocked`, proves it then blocks on a lock (it runs on in the background it was parked
//! in).

use std::collections::BTreeSet;

use harbor_syncpoint::SlotKey;
use serde::Deserialize;

use super::request::RawExpectBlocked;
use crate::scenario::load::{Checker, Problem};
use crate::scenario::outcome::Failure;
use crate::scenario::run::executor::ExpectBlocked;
use crate::scenario::run::Executor;
use crate::scenario::trace::EventKind;
use crate::target::Capability;

/// A release step as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelease {
    /// Whose request.
    pub actor: String,
    /// A note for the trace.
    pub note: Option<String>,
    /// The sync point it is parked at.
    pub point: String,
    /// The replica, when the park step's is not known (it always is when the step parked it).
    #[serde(default)]
    pub replica: usize,
    /// The released request must then block on a lock held by another actor.
    pub expect_blocked: Option<RawExpectBlocked>,
}

/// A checked release step.
#[derive(Clone, Debug)]
pub struct Release {
    /// Whose request.
    pub actor: String,
    /// The sync point.
    pub point: &'static str,
    /// The fallback replica.
    pub replica: usize,
    /// Must block next.
    pub expect_blocked: Option<ExpectBlocked>,
}

impl Release {
    /// Checks a written release step.
    pub fn parse(r: RawRelease, cx: &mut Checker, place: &str) -> Result<Self, Problem> {
        cx.actor(&format!("{place}.actor"), &r.actor)?;
        let point = cx.sync_point(&format!("{place}.point"), &r.point)?;
        let replica = cx.replica(&format!("{place}.replica"), r.replica)?;
        let expect_blocked = r.expect_blocked.as_ref().map(|b| super::request::expect_blocked(b, cx, place, &r.actor)).transpose()?;
        Ok(Release { actor: r.actor, point, replica, expect_blocked })
    }

    /// What it needs of a target.
    pub fn requires(&self, needs: &mut BTreeSet<Capability>) {
        needs.insert(Capability::SyncPoints);
        if self.expect_blocked.is_some() {
            needs.insert(Capability::Database);
        }
    }

    /// Releases the request (and proves it blocks next, when expected).
    pub async fn apply(&self, ex: &mut Executor<'_>, i: usize, note: Option<&str>) -> Result<(), Failure> {
        let actor = self.actor.as_str();
        let key = SlotKey::new(actor.to_owned(), self.point.to_owned());
        let replica = ex.parked_on.get(&key).copied().unwrap_or(self.replica);
        ex.target.release(replica, &key).map_err(|e| Failure::at(Some(i), format!("releasing {key}: {e} (was it parked?)")))?;
        ex.event(Some(i), Some(actor), EventKind::Released, key.point.clone(), None);
        ex.annotate(note);
        if let Some(blocked) = &self.expect_blocked {
            let mut bg = ex.background.remove(actor).ok_or_else(|| Failure::at(Some(i), format!("{actor} has no request running to block")))?;
            let proven = ex.prove_blocked(i, actor, blocked, &mut bg.handle).await;
            ex.background.insert(actor.to_owned(), bg);
            proven?;
        }
        Ok(())
    }
}
