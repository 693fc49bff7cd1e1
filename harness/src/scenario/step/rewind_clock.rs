//! `do = "rewind_clock"`: moves the service's clock back, as an NTP step or a restored VM snapshot
//! does — states then look issued in the future and tokens expire later than they will.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scenario::check::{Checker, Problem};
use crate::scenario::executor::Executor;
use crate::scenario::outcome::Failure;
use crate::scenario::trace::EventKind;
use crate::target::Capability;

/// A rewind step as written.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewindClock {
    /// A note for the trace.
    pub note: Option<String>,
    /// How far back, in seconds.
    pub seconds: u64,
}

/// A checked rewind step.
#[derive(Clone, Debug)]
pub struct RewindClock {
    /// How far back.
    pub by: Duration,
}

impl RewindClock {
    /// Checks a written rewind step.
    pub fn parse(r: RawRewindClock, _cx: &mut Checker, _place: &str) -> Result<Self, Problem> {
        Ok(RewindClock {
            by: Duration::from_secs(r.seconds),
        })
    }

    /// What it needs of a target.
    pub fn requires(&self, needs: &mut BTreeSet<Capability>) {
        needs.insert(Capability::Clock);
    }

    /// Moves the clock back.
    pub async fn apply(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        note: Option<&str>,
    ) -> Result<(), Failure> {
        ex.target()
            .rewind_clock(self.by)
            .await
            .map_err(|e| Failure::environment(format!("moving the clock: {e}")))?;
        ex.event(
            Some(i),
            None,
            EventKind::Note,
            format!("clock -{} s", self.by.as_secs()),
            None,
        );
        ex.annotate(note);
        Ok(())
    }
}
