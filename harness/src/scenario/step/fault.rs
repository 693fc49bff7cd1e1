//! `do = "fault"`: does something to a dependency of the replicas — stalls or cuts their Redis or
//! PostgreSQL connections through the fault proxies ([`crate::faults`]).

use serde::Deserialize;

use crate::faults::FaultKind;
use crate::scenario::load::{Checker, Problem};
use crate::scenario::outcome::Failure;
use crate::scenario::run::Executor;
use crate::scenario::trace::EventKind;

/// A fault step as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    /// A note for the trace.
    pub note: Option<String>,
    /// What happens to the dependency.
    pub fault: FaultKind,
}

/// A checked fault step.
#[derive(Clone, Debug)]
pub struct FaultStep {
    /// What happens.
    pub fault: FaultKind,
}

impl FaultStep {
    /// Checks a written fault step.
    pub fn parse(r: RawFault, _cx: &mut Checker, _place: &str) -> Result<Self, Problem> {
        Ok(FaultStep { fault: r.fault })
    }

    /// Does the fault.
    pub async fn apply(&self, ex: &mut Executor<'_>, i: usize, note: Option<&str>) -> Result<(), Failure> {
        ex.target.apply_fault(self.fault);
        ex.event(Some(i), None, EventKind::Note, format!("fault: {}", self.fault.as_str()), None);
        ex.annotate(note);
        Ok(())
    }
}
