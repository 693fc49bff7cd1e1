//! `do = "advance_clock"`: moves the service's clock forward (state TTLs, token expiry, rate-limit
//! recovery become testable without waiting).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scenario::check::{Checker, Problem};
use crate::scenario::executor::Executor;
use crate::scenario::outcome::Failure;
use crate::scenario::trace::EventKind;

/// A clock step as written.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdvanceClock {
    /// A note for the trace.
    pub note: Option<String>,
    /// How far, in seconds.
    pub seconds: u64,
}

/// A checked clock step.
#[derive(Clone, Debug)]
pub struct AdvanceClock {
    /// How far.
    pub by: Duration,
}

impl AdvanceClock {
    /// Checks a written clock step.
    pub fn parse(r: RawAdvanceClock, _cx: &mut Checker, _place: &str) -> Result<Self, Problem> {
        Ok(AdvanceClock {
            by: Duration::from_secs(r.seconds),
        })
    }

    /// Moves the clock.
    pub async fn apply(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        note: Option<&str>,
    ) -> Result<(), Failure> {
        ex.target()
            .advance_clock(self.by)
            .await
            .map_err(|e| Failure::environment(format!("moving the clock: {e}")))?;
        ex.event(
            Some(i),
            None,
            EventKind::Note,
            format!("clock +{} s", self.by.as_secs()),
            None,
        );
        ex.annotate(note);
        Ok(())
    }
}
