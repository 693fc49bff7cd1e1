//! Depth-first enumeration of every schedule. Stateless, as PostgreSQL's isolationtester and
//! loom are: each schedule runs from a fresh start, following the previous schedule's choices up
//! to the deepest decision that still has an unexplored alternative, taking that alternative, and
//! the lowest enabled operation after it.
//!
//! Symmetry reduction: operations that are identical (same kind, same replica) are interchangeable,
//! so among them only schedules that *launch* them in index order are explored; each skipped
//! schedule is the mirror image (tags swapped) of an explored one, with the same outcome. That is
//! the only pruning, and it is exact: `pruned` counts the mirrors.

use super::{Decision, Ready, Scheduler};

/// The DFS state between schedules.
#[derive(Clone, Debug)]
pub struct Dfs<Op> {
    ops: Vec<Op>,
    /// The choices to follow in the next schedule (a prefix; then the lowest enabled).
    prefix: Vec<usize>,
    done: bool,
    /// Decisions of the schedule being run (enabled sets after symmetry reduction).
    current: Vec<Decision>,
    /// A replayed prefix met a decision where its recorded choice was not enabled: the system
    /// did not behave the same way twice, so "every schedule" cannot be claimed. The first such
    /// decision, as a sentence (which decision, the choice the prefix recorded, what was ready).
    pub divergence: Option<String>,
}

impl<Op: Clone + PartialEq> Dfs<Op> {
    /// Enumerates the schedules of `ops` (operations that compare equal are interchangeable).
    pub fn new(ops: &[Op]) -> Self {
        Self {
            ops: ops.to_vec(),
            prefix: Vec::new(),
            done: false,
            current: Vec::new(),
            divergence: None,
        }
    }

    /// Whether every schedule has been run.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Moves to the next schedule after one has run; false when there is none.
    pub fn advance(&mut self) -> bool {
        let decisions = std::mem::take(&mut self.current);
        for k in (0..decisions.len()).rev() {
            let d = &decisions[k];
            let at = d.enabled.iter().position(|e| *e == d.chosen).unwrap_or(0);
            if at + 1 < d.enabled.len() {
                self.prefix = decisions[..k].iter().map(|d| d.chosen).collect();
                self.prefix.push(d.enabled[at + 1]);
                return true;
            }
        }
        self.done = true;
        false
    }

    /// The operations a decision may choose among: an identical operation launched before its
    /// lower-indexed twin would only mirror an explored schedule.
    fn reduce(&self, enabled: &[usize], launched: &[bool]) -> Vec<usize> {
        enabled
            .iter()
            .copied()
            .filter(|&j| launched[j] || !(0..j).any(|i| !launched[i] && self.ops[i] == self.ops[j]))
            .collect()
    }
}

/// The scheduler of one schedule of a [`Dfs`].
pub struct DfsRun<'d, Op> {
    dfs: &'d mut Dfs<Op>,
    launched: Vec<bool>,
    step: usize,
}

impl<Op: Clone + PartialEq> Dfs<Op> {
    /// The scheduler for the next schedule.
    pub fn schedule(&mut self) -> DfsRun<'_, Op> {
        let n = self.ops.len();
        self.current.clear();
        DfsRun {
            dfs: self,
            launched: vec![false; n],
            step: 0,
        }
    }
}

// Unlike a replay, a DFS that meets a prefix choice that is not ready does not refuse: the
// exploration goes on along the lowest ready branch and reports the set as incomplete
// (`divergence`), since a branch may never have been taken.
impl<Op: Clone + PartialEq + Send> Scheduler for DfsRun<'_, Op> {
    fn name(&self) -> &'static str {
        "dfs"
    }

    fn next(&mut self, ready: &[Ready]) -> Result<Option<usize>, String> {
        let enabled = super::steps(ready);
        if enabled.is_empty() {
            return Ok(None);
        }
        let reduced = self.dfs.reduce(&enabled, &self.launched);
        let step = self.step;
        self.step += 1;
        let chosen = match self.dfs.prefix.get(step) {
            Some(c) if reduced.contains(c) => *c,
            Some(c) => {
                self.dfs.divergence.get_or_insert_with(|| {
                    format!(
                        "decision {step} after the prefix {:?}: the recorded choice E{c} was not ready (ready: {})",
                        self.dfs.current.iter().map(|d| d.chosen).collect::<Vec<_>>(),
                        reduced.iter().map(|r| format!("E{r}")).collect::<Vec<_>>().join(", ")
                    )
                });
                reduced[0]
            }
            None => reduced[0],
        };
        self.launched[chosen] = true;
        self.dfs.current.push(Decision {
            enabled: reduced,
            chosen,
        });
        Ok(Some(chosen))
    }
}

/// How many schedules each explored one stands for under the symmetry reduction: the product of
/// `k!` over each group of `k` identical operations (1 when there are none).
pub fn mirrors<Op: Ord + Clone>(ops: &[Op]) -> usize {
    let mut counts: std::collections::BTreeMap<Op, usize> = Default::default();
    for op in ops {
        *counts.entry(op.clone()).or_default() += 1;
    }
    counts
        .values()
        .map(|&k| (1..=k).product::<usize>())
        .product()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::replay::tests::ready;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Operation {
        Activate,
        Disconnect,
        Sync,
    }

    /// Two operations of `n` steps each, independent: the engine's decisions simulated.
    fn count(ops: &[Operation], steps: usize) -> usize {
        let mut dfs = Dfs::new(ops);
        let mut schedules = 0;
        loop {
            let mut left = vec![steps; ops.len()];
            let mut run = dfs.schedule();
            loop {
                let enabled: Vec<usize> = (0..ops.len()).filter(|&i| left[i] > 0).collect();
                if enabled.is_empty() {
                    break;
                }
                let c = run.next(&ready(&enabled)).unwrap().unwrap();
                left[c] -= 1;
            }
            schedules += 1;
            if !dfs.advance() {
                return schedules;
            }
        }
    }

    #[test]
    fn every_interleaving_once() {
        // C(4, 2) interleavings of two 2-step operations.
        assert_eq!(count(&[Operation::Activate, Operation::Disconnect], 2), 6);
        assert_eq!(count(&[Operation::Activate, Operation::Disconnect], 3), 20);
    }

    #[test]
    fn twins_are_explored_up_to_symmetry() {
        // Half of the 20 interleavings: those launching E0 first.
        assert_eq!(count(&[Operation::Activate, Operation::Activate], 3), 10);
        assert_eq!(mirrors(&[Operation::Sync, Operation::Sync]), 2);
        assert_eq!(
            mirrors(&[Operation::Sync, Operation::Sync, Operation::Sync]),
            6
        );
        assert_eq!(
            mirrors(&[
                Operation::Sync,
                Operation::Sync,
                Operation::Activate,
                Operation::Activate
            ]),
            4
        );
        assert_eq!(mirrors(&[Operation::Sync, Operation::Activate]), 1);
    }
}
