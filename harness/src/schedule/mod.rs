//! Schedules as data, in the shape of shuttle's: *what each actor does* is its program, and *the
//! order in which actors advance* is a [`Schedule`] — the sequence of choices actually made. A
//! [`Scheduler`] chooses, at each decision, which ready step (a scenario's step, an explored
//! operation) runs next. Every technique uses this one trait; the strategies, one file each:
//!
//! - [`FileOrder`]: the lowest ready index (a scenario file's own order);
//! - [`Replay`]: a recorded schedule, exactly — it refuses a choice that is not ready, naming
//!   the ready set, and either stops at the record's end or goes on in file order;
//! - [`Dfs`]: every schedule, depth first, up to the symmetry of identical operations;
//! - [`Pct`]: randomized priority schedules from a printed seed.

pub mod dfs;
pub mod file_order;
pub mod pct;
pub mod replay;

pub use dfs::Dfs;
pub use file_order::FileOrder;
pub use pct::Pct;
pub use replay::Replay;

use serde::{Deserialize, Serialize};

/// The order in which steps ran: the chosen indices (a scenario's steps, an exploration's
/// operations).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Schedule(pub Vec<usize>);

impl Schedule {
    /// Whether no step ran.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let steps: Vec<String> = self.0.iter().map(usize::to_string).collect();
        write!(f, "[{}]", steps.join(" "))
    }
}

/// A step a scheduler may choose now: the next step of one program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The step's index.
    pub step: usize,
    /// Its actor (`None`: the harness's own program — clock, provider, faults, assertions).
    pub actor: Option<String>,
}

/// One decision of a run: what could advance, and what did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The indices that could advance.
    pub enabled: Vec<usize>,
    /// The one that did.
    pub chosen: usize,
}

/// The indices of `ready`, in its order.
pub fn steps(ready: &[Ready]) -> Vec<usize> {
    ready.iter().map(|r| r.step).collect()
}

/// Chooses the next step among the ready ones.
pub trait Scheduler: Send {
    /// The strategy's name, for the trace.
    fn name(&self) -> &'static str;

    /// The step to run next (one of `ready`), `Ok(None)` to stop, or `Err` when the strategy
    /// cannot go on (a replay that diverged). Called once per decision, in order: a strategy
    /// counts decisions itself.
    fn next(&mut self, ready: &[Ready]) -> Result<Option<usize>, String>;
}
