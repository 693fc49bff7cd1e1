//! `do = "assert"`: checks an assertion at this point of the run (the same kinds as `[[assert]]`).

use serde::{Deserialize, Serialize};

use crate::scenario::assertion::Assertion;
use crate::scenario::check::{Checker, Problem};
use crate::scenario::executor::Executor;
use crate::scenario::format;
use crate::scenario::outcome::Failure;

/// An assert step as written.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssert {
    /// A note for the trace.
    pub note: Option<String>,
    /// The assertion.
    pub check: format::Assertion,
}

/// A checked assert step.
#[derive(Clone, Debug)]
pub struct AssertStep {
    /// The assertion.
    pub assertion: Assertion,
}

impl AssertStep {
    /// Checks a written assert step.
    pub fn parse(r: RawAssert, cx: &mut Checker, place: &str) -> Result<Self, Problem> {
        Ok(AssertStep {
            assertion: Assertion::parse(&r.check, cx, &format!("{place}.check"))?,
        })
    }

    /// Checks it now.
    pub async fn apply(
        &self,
        ex: &mut Executor<'_>,
        i: usize,
        _note: Option<&str>,
    ) -> Result<(), Failure> {
        self.assertion.check(ex, Some(i)).await
    }
}
