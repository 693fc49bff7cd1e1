//! `do = "release"`: lets the actor's request parked at a sync point go on — and, with
//! `expect_blocked`, proves it then blocks on a lock (it runs on in the background it was parked
//! in).

use std::collections::BTreeSet;

use harbor_syncpoint::SlotKey;
use serde::{Deserialize, Serialize};

use super::request::RawExpectBlocked;
use crate::scenario::check::{problem, Checker, Problem};
use crate::scenario::executor::Executor;
use crate::scenario::executor::ExpectBlocked;
use crate::scenario::outcome::Failure;
use crate::scenario::trace::EventKind;
use crate::target::Capability;

/// A release step as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelease {
    /// Whose request.
    pub actor: String,
    /// A note for the trace.
    pub note: Option<String>,
    /// The sync point it is parked at.
    pub point: String,
    /// The replica, when the park step's is not known (it always is when the step parked it).
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub replica: usize,
    /// Park the released request again at this later point (armed before the release). Without
    /// `expect_blocked` the step waits until it is parked there.
    pub park_at: Option<String>,
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
    /// Where it parks next.
    pub park_at: Option<&'static str>,
    /// Must block next.
    pub expect_blocked: Option<ExpectBlocked>,
}

impl Release {
    /// Checks a written release step.
    pub fn parse(r: RawRelease, cx: &mut Checker, place: &str) -> Result<Self, Problem> {
        cx.actor(&format!("{place}.actor"), &r.actor)?;
        let point = cx.sync_point(&format!("{place}.point"), &r.point)?;
        let replica = cx.replica(&format!("{place}.replica"), r.replica)?;
        let park_at = r
            .park_at
            .as_deref()
            .map(|p| cx.sync_point(&format!("{place}.park_at"), p))
            .transpose()?;
        if park_at == Some(point) {
            return Err(problem(
                format!("{place}.park_at"),
                "a request parks at a point once; name a later one",
            ));
        }
        let expect_blocked = r
            .expect_blocked
            .as_ref()
            .map(|b| super::request::expect_blocked(b, cx, place, &r.actor))
            .transpose()?;
        Ok(Release {
            actor: r.actor,
            point,
            replica,
            park_at,
            expect_blocked,
        })
    }

    /// What it needs of a target.
    pub fn requires(&self, needs: &mut BTreeSet<Capability>) {
        needs.insert(Capability::SyncPoints);
        if self.expect_blocked.is_some() {
            needs.insert(Capability::Database);
        }
    }

    /// Releases the request once it is parked (it may still be on its way after being unblocked),
    /// then proves it blocks or parks next, when told.
    pub async fn apply(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        note: Option<&str>,
    ) -> Result<(), Failure> {
        let actor = self.actor.as_str();
        let key = SlotKey::new(actor.to_owned(), self.point.to_owned());
        let replica = ex.armed_on(&key).unwrap_or(self.replica);
        let mut bg = ex.take_background(actor);
        let arrived = match bg.as_mut() {
            Some(bg)
                if ex.target().slot_state(replica, &key).await
                    != Some(harbor_syncpoint::SlotState::Parked) =>
            {
                match bg.job() {
                    Ok(handle) => ex.until_parked(i, actor, replica, self.point, handle).await,
                    Err(e) => Err(e),
                }
            }
            _ => Ok(()),
        };
        if let Some(bg) = bg {
            ex.put_background(actor, bg);
        }
        arrived?;
        if let Some(next) = self.park_at {
            let next_key = SlotKey::new(actor.to_owned(), next.to_owned());
            ex.target()
                .arm(replica, next_key.clone())
                .await
                .map_err(|e| Failure::at(Some(i), format!("arming {next_key}: {e}")))?;
            ex.note_armed(next_key, replica);
        }
        ex.target()
            .release(replica, &key)
            .await
            .map_err(|e| Failure::at(Some(i), format!("releasing {key}: {e} (was it parked?)")))?;
        ex.event(
            Some(i),
            Some(actor),
            EventKind::Released,
            key.point.clone(),
            None,
        );
        ex.annotate(note);
        let mut bg = ex
            .take_background(actor)
            .ok_or_else(|| Failure::at(Some(i), format!("{actor} has no request running")));
        let proven = match (&mut bg, &self.expect_blocked, self.park_at) {
            (Ok(bg), Some(blocked), _) => match bg.job() {
                Ok(handle) => ex.prove_blocked(i, actor, blocked, handle).await,
                Err(e) => Err(e),
            },
            (Ok(bg), None, Some(next)) => match bg.job() {
                Ok(handle) => ex.until_parked(i, actor, replica, next, handle).await,
                Err(e) => Err(e),
            },
            (Ok(_), None, None) => Ok(()),
            (Err(e), Some(_), _) | (Err(e), None, Some(_)) => Err(e.clone()),
            (Err(_), None, None) => Ok(()),
        };
        if let Ok(bg) = bg {
            ex.put_background(actor, bg);
        }
        proven
    }
}
