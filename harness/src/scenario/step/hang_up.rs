//! `do = "hang_up"`: the actor's client closes its connection without waiting for the answer to
//! its background request, as a browser or a load balancer gives up. The request's handler is
//! dropped with the connection; work it handed to a task of its own goes on (a request parked at
//! a sync point stays parked there and can still be released).

use serde::{Deserialize, Serialize};

use crate::scenario::check::{Checker, Problem};
use crate::scenario::executor::Executor;
use crate::scenario::outcome::Failure;
use crate::scenario::trace::EventKind;

/// A hang-up step as written.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHangUp {
    /// Whose request.
    pub actor: String,
    /// A note for the trace.
    pub note: Option<String>,
}

/// A checked hang-up step.
#[derive(Clone, Debug)]
pub struct HangUp {
    /// Whose request.
    pub actor: String,
}

impl HangUp {
    /// Checks a written hang-up: the actor must have a step running in the background here, and
    /// nothing waits for it afterwards.
    pub fn parse(r: RawHangUp, cx: &mut Checker, place: &str) -> Result<Self, Problem> {
        cx.actor(&format!("{place}.actor"), &r.actor)?;
        cx.end_background(place, &r.actor)?;
        Ok(HangUp { actor: r.actor })
    }

    /// Drops the actor's request, closing its connection; its outcome is never checked.
    pub async fn apply(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        note: Option<&str>,
    ) -> Result<(), Failure> {
        let bg = ex.take_background(&self.actor).ok_or_else(|| {
            Failure::at(Some(i), format!("{} has no request running", self.actor))
        })?;
        bg.abort();
        ex.event(
            Some(i),
            Some(&self.actor),
            EventKind::Note,
            "hung up: its connection closed without waiting for the answer".into(),
            None,
        );
        ex.annotate(note);
        Ok(())
    }
}
