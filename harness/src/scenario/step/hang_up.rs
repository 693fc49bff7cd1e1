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
    /// Checks a written hang-up: the actor must have a step running in the background here, one
    /// that says nothing of its outcome (nothing will read it), and nothing waits for it
    /// afterwards.
    pub fn parse(r: RawHangUp, cx: &mut Checker, place: &str) -> Result<Self, Problem> {
        cx.actor(&format!("{place}.actor"), &r.actor)?;
        cx.drop_background(place, &r.actor)?;
        Ok(HangUp { actor: r.actor })
    }

    /// Drops the actor's request, closing its connection; its outcome is never checked. A request
    /// that has already answered is a failure: the hang-up would cut nothing off, and what the
    /// scenario goes on to prove rests on a request still in flight. Its answer is collected
    /// first, so the run's checks of every answer (no 5xx, the contract, no leaked value) see it.
    pub async fn apply(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        note: Option<&str>,
    ) -> Result<(), Failure> {
        let bg = ex.take_background(&self.actor).ok_or_else(|| {
            Failure::at(Some(i), format!("{} has no request running", self.actor))
        })?;
        if bg.is_finished() {
            let step = bg.step;
            ex.put_background(&self.actor, bg);
            let collected = match ex.collect(i, &self.actor).await {
                Ok(()) => "its answer collected".to_owned(),
                Err(f) => f.message,
            };
            return Err(Failure::at(
                Some(i),
                format!(
                    "{}'s request (step {step}) answered before the hang-up, which cut nothing off ({collected})",
                    self.actor
                ),
            ));
        }
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
