//! `do = "wait"`: collects the actor's background step (bounded by the step timeout) and checks
//! the outcome its launching step expected.

use serde::{Deserialize, Serialize};

use crate::scenario::check::{Checker, Problem};
use crate::scenario::executor::Executor;
use crate::scenario::outcome::Failure;

/// A wait step as written.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWait {
    /// Whose step.
    pub actor: String,
    /// A note for the trace.
    pub note: Option<String>,
}

/// A checked wait step.
#[derive(Clone, Debug)]
pub struct Wait {
    /// Whose step.
    pub actor: String,
}

impl Wait {
    /// Checks a written wait: the actor must have a step running in the background here.
    pub fn parse(r: RawWait, cx: &mut Checker, place: &str) -> Result<Self, Problem> {
        cx.actor(&format!("{place}.actor"), &r.actor)?;
        cx.end_background(place, &r.actor)?;
        Ok(Wait { actor: r.actor })
    }

    /// Collects the step.
    pub async fn apply(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        note: Option<&str>,
    ) -> Result<(), Failure> {
        let checked = ex.collect(i, &self.actor).await;
        ex.annotate(note);
        checked
    }
}
