//! Depth-first enumeration of every schedule. Stateless, as PostgreSQL's isolationtester and
//! loom are: each schedule runs from a fresh start, following a prefix of choices (a [`Branch`]),
//! then the lowest enabled operation at every later decision. A run hands back the alternatives it
//! passed over at those later decisions, each a branch of its own. Every schedule has a place in
//! the depth-first order ([`DfsKey`]: the position of each choice among those enabled), and the
//! branches wait in that order, so that one schedule at a time runs them in the classic order (the
//! deepest decision's next alternative first) and several schedules at once (the explorer's
//! lanes) always take the first branch left. Each schedule is reached by exactly one branch,
//! whatever the order: the set explored is the same, and the keys put any result back in the
//! one-at-a-time order.
//!
//! Symmetry reduction: operations that are identical (same kind, same replica) are interchangeable,
//! so among them only schedules that *launch* them in index order are explored; each skipped
//! schedule is the mirror image (tags swapped) of an explored one, with the same outcome. That is
//! the only pruning, and it is exact: `pruned` counts the mirrors.
//!
//! The same symmetry answers the one race the engine cannot steer. When a commit releases a row
//! two identical operations wait for, PostgreSQL gives the new row version to whichever of the
//! two backends runs first: the waiter queue of the old version does not carry over. A replayed
//! prefix may then find its recorded twin still waiting and the other twin holding the row — the
//! mirror image of the recorded state. The run follows the mirror instead of diverging: the
//! scheduler keeps a relabelling of identical operations (`DfsRun::actual`), the tree and every
//! recorded decision stay in the prefix's own labels, and only what the engine is told to advance
//! is translated. Twins are swapped only when both are launched, each has advanced as often as
//! the other, and the swap makes the ready set exactly the one the recorded run had at that
//! decision; any other mismatch is still a divergence. The DFS numbers the operations so that
//! twins are neighbours (`Dfs::grouped`): a decision's alternatives are taken by position, and a
//! twin then stands at the position of the one it mirrors whichever of the two is ready.
//!
//! Past 500 lines with its unit tests, which build the trees by hand beside the code they check.

use super::{Decision, Ready, Scheduler};

/// A schedule's place in the depth-first order: at each decision, the position of the choice among
/// the enabled operations (0: the lowest). Keys compare in the order one schedule at a time runs
/// them, so "the first schedule that showed it" means the same however many ran at once.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct DfsKey(pub Vec<usize>);

/// A part of the tree still to run: the choices to follow, then the lowest enabled operation.
#[derive(Clone, Debug, Default)]
pub struct Branch {
    /// The prefix's place: every schedule of the branch has a key that begins with it, and the
    /// branches left are disjoint, so these keys order them as their schedules are ordered.
    key: DfsKey,
    /// The choices to follow (the last one an alternative not taken before).
    prefix: Vec<usize>,
    /// What was enabled at each of the prefix's decisions when it was recorded.
    recorded: Vec<Vec<usize>>,
}

impl Branch {
    /// Whether some schedule of the branch may come before the schedule `bound` in the DFS
    /// order. A branch whose prefix's key is past `bound` holds only later schedules.
    pub fn may_precede(&self, bound: &DfsKey) -> bool {
        self.key < *bound
    }
}

impl PartialEq for Branch {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Branch {}

impl PartialOrd for Branch {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Branch {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// The DFS state between schedules: the branches still to run.
#[derive(Clone, Debug)]
pub struct Dfs<Op> {
    /// The operations in the DFS's own numbering, twins neighbours.
    ops: Vec<Op>,
    /// For each operation in that numbering, its index in the set as given.
    grouped: Vec<usize>,
    /// The branches not run yet, the first in the DFS order on top.
    frontier: std::collections::BinaryHeap<std::cmp::Reverse<Branch>>,
    /// A replayed prefix met a decision where its recorded choice was not enabled: the system
    /// did not behave the same way twice, so "every schedule" cannot be claimed. The first such
    /// decision in the DFS order, as a sentence (which decision, the choice the prefix recorded,
    /// what was ready).
    divergence: Option<(DfsKey, String)>,
    /// Decisions at which the recorded twin lost a race the other one won, followed as their
    /// mirror image (see the module's comment).
    pub mirrored: usize,
}

impl<Op: Clone + PartialEq> Dfs<Op> {
    /// Enumerates the schedules of `ops` (operations that compare equal are interchangeable).
    pub fn new(ops: &[Op]) -> Self {
        // Each operation after the first of its kind, in order of first appearance.
        let first = |i: usize| (0..=i).find(|&j| ops[j] == ops[i]).unwrap_or(i);
        let mut grouped: Vec<usize> = (0..ops.len()).collect();
        grouped.sort_by_key(|&i| (first(i), i));
        Self {
            ops: grouped.iter().map(|&i| ops[i].clone()).collect(),
            grouped,
            frontier: [std::cmp::Reverse(Branch::default())].into(),
            divergence: None,
            mirrored: 0,
        }
    }

    /// Whether a branch is left that may hold a schedule before `bound` in the DFS order (any
    /// branch left, without a bound).
    pub fn has_branch(&self, bound: Option<&DfsKey>) -> bool {
        self.frontier
            .peek()
            .is_some_and(|first| bound.is_none_or(|b| first.0.may_precede(b)))
    }

    /// The first branch left in the DFS order, if it may hold a schedule before `bound` (the
    /// ones after it hold only later schedules than it does).
    pub fn next_branch(&mut self, bound: Option<&DfsKey>) -> Option<Branch> {
        if self.has_branch(bound) {
            self.frontier.pop().map(|std::cmp::Reverse(b)| b)
        } else {
            None
        }
    }

    /// The first divergence in the DFS order, if a replayed prefix met one.
    pub fn divergence(&self) -> Option<&str> {
        self.divergence.as_ref().map(|(_, why)| why.as_str())
    }

    /// The scheduler of one schedule along `branch`.
    pub fn schedule(&self, branch: Branch) -> DfsRun<Op> {
        let n = self.ops.len();
        DfsRun {
            ops: self.ops.clone(),
            branch,
            current: Vec::new(),
            launched: vec![false; n],
            advanced: vec![0; n],
            actual: self.grouped.clone(),
            step: 0,
            divergence: None,
            mirrored: 0,
        }
    }

    /// Takes a schedule's run back: the alternatives it passed over after its prefix become
    /// branches. Returns the schedule's key: its branch's, then the positions it chose (a run
    /// whose prefix diverged keeps the place it was sent to).
    pub fn finish(&mut self, run: DfsRun<Op>) -> DfsKey {
        let decisions = run.current;
        let followed = run.branch.prefix.len().min(decisions.len());
        let mut key = run.branch.key.clone();
        key.0.truncate(followed);
        key.0.extend(
            decisions[followed..]
                .iter()
                .map(|d| d.enabled.iter().position(|e| *e == d.chosen).unwrap_or(0)),
        );
        self.mirrored += run.mirrored;
        if let Some(why) = run.divergence {
            if self.divergence.as_ref().is_none_or(|(k, _)| key < *k) {
                self.divergence = Some((key.clone(), why));
            }
        }
        // A prefix's own decisions were branched by the run that recorded them.
        for k in followed..decisions.len() {
            let d = &decisions[k];
            let at = key.0[k];
            for (j, alternative) in d.enabled.iter().enumerate().skip(at + 1) {
                let mut prefix: Vec<usize> = decisions[..k].iter().map(|d| d.chosen).collect();
                prefix.push(*alternative);
                let mut place = key.0[..k].to_vec();
                place.push(j);
                self.frontier.push(std::cmp::Reverse(Branch {
                    key: DfsKey(place),
                    prefix,
                    recorded: decisions[..=k].iter().map(|d| d.enabled.clone()).collect(),
                }));
            }
        }
        key
    }
}

/// The operations a decision may choose among: an identical operation launched before its
/// lower-indexed twin would only mirror an explored schedule.
fn reduce<Op: PartialEq>(ops: &[Op], enabled: &[usize], launched: &[bool]) -> Vec<usize> {
    enabled
        .iter()
        .copied()
        .filter(|&j| launched[j] || !(0..j).any(|i| !launched[i] && ops[i] == ops[j]))
        .collect()
}

/// The scheduler of one schedule of a [`Dfs`], along one branch. It decides in the prefix's
/// labels; `actual` maps each to the operation the engine runs under it (the identity until twins
/// are swapped). It owns what it needs, so that several run at once; [`Dfs::finish`] takes it back.
pub struct DfsRun<Op> {
    ops: Vec<Op>,
    branch: Branch,
    /// Decisions of this schedule (enabled sets after symmetry reduction).
    current: Vec<Decision>,
    launched: Vec<bool>,
    /// How many times each (prefix-labelled) operation has been chosen.
    advanced: Vec<usize>,
    actual: Vec<usize>,
    step: usize,
    divergence: Option<String>,
    mirrored: usize,
}

// Unlike a replay, a DFS that meets a prefix choice that is not ready does not refuse: the
// exploration goes on along the lowest ready branch and reports the set as incomplete
// (`divergence`), since a branch may never have been taken.
impl<Op: Clone + PartialEq + Send> Scheduler for DfsRun<Op> {
    fn name(&self) -> &'static str {
        "dfs"
    }

    fn next(&mut self, ready: &[Ready]) -> Result<Option<usize>, String> {
        if ready.is_empty() {
            return Ok(None);
        }
        let mut reduced = self.reduced(ready);
        let step = self.step;
        self.step += 1;
        if let Some(&c) = self.branch.prefix.get(step) {
            if !reduced.contains(&c) {
                if let Some(mirrored) = self.mirror(c, step, ready) {
                    reduced = mirrored;
                    self.mirrored += 1;
                }
            }
        }
        let chosen = match self.branch.prefix.get(step) {
            Some(c) if reduced.contains(c) => *c,
            Some(c) => {
                if self.divergence.is_none() {
                    // In the engine's labels (the operations as the set lists them).
                    let actual = &self.actual;
                    self.divergence = Some(format!(
                        "decision {step} after the prefix {:?}: the recorded choice E{} was not ready (ready: {})",
                        self.current.iter().map(|d| actual[d.chosen]).collect::<Vec<_>>(),
                        actual[*c],
                        reduced.iter().map(|r| format!("E{}", actual[*r])).collect::<Vec<_>>().join(", ")
                    ));
                }
                reduced[0]
            }
            None => reduced[0],
        };
        self.launched[chosen] = true;
        self.advanced[chosen] += 1;
        self.current.push(Decision {
            enabled: reduced,
            chosen,
        });
        Ok(Some(self.actual[chosen]))
    }
}

impl<Op: Clone + PartialEq> DfsRun<Op> {
    /// The ready operations in the prefix's labels, in index order, after symmetry reduction.
    fn reduced(&self, ready: &[Ready]) -> Vec<usize> {
        let mut enabled: Vec<usize> = super::steps(ready)
            .into_iter()
            .filter_map(|a| self.actual.iter().position(|&x| x == a))
            .collect();
        enabled.sort_unstable();
        reduce(&self.ops, &enabled, &self.launched)
    }

    /// Swaps `recorded` with a twin that stands where the recorded run had it — identical,
    /// launched, advanced as often — if the swap gives exactly the ready set recorded at `step`;
    /// returns that set. Otherwise changes nothing.
    fn mirror(&mut self, recorded: usize, step: usize, ready: &[Ready]) -> Option<Vec<usize>> {
        let expected = self.branch.recorded.get(step)?.clone();
        let n = self.ops.len();
        for twin in 0..n {
            let alike = twin != recorded
                && self.ops.get(recorded) == Some(&self.ops[twin])
                && self.launched[recorded]
                && self.launched[twin]
                && self.advanced[recorded] == self.advanced[twin];
            if !alike {
                continue;
            }
            self.actual.swap(recorded, twin);
            let reduced = self.reduced(ready);
            if reduced == expected {
                return Some(reduced);
            }
            self.actual.swap(recorded, twin);
        }
        None
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

    /// Operations of `steps` steps each, independent: the engine's decisions simulated, one
    /// schedule at a time. Returns each schedule's key and choices, in the order run.
    fn keys(ops: &[Operation], steps: usize) -> Vec<(DfsKey, Vec<usize>)> {
        let mut dfs = Dfs::new(ops);
        let mut out = Vec::new();
        while let Some(branch) = dfs.next_branch(None) {
            let run = independent(&dfs, branch, ops.len(), steps);
            let choices = run.current.iter().map(|d| d.chosen).collect();
            out.push((dfs.finish(run), choices));
        }
        out
    }

    /// One schedule of `n` independent operations of `steps` steps along `branch`.
    fn independent(
        dfs: &Dfs<Operation>,
        branch: Branch,
        n: usize,
        steps: usize,
    ) -> DfsRun<Operation> {
        let mut left = vec![steps; n];
        let mut run = dfs.schedule(branch);
        loop {
            let enabled: Vec<usize> = (0..n).filter(|&i| left[i] > 0).collect();
            if enabled.is_empty() {
                return run;
            }
            let c = run.next(&ready(&enabled)).unwrap().unwrap();
            left[c] -= 1;
        }
    }

    fn count(ops: &[Operation], steps: usize) -> usize {
        keys(ops, steps).len()
    }

    #[test]
    fn one_at_a_time_the_branches_run_in_depth_first_order() {
        use Operation::*;
        let run = keys(&[Activate, Disconnect, Sync], 2);
        assert_eq!(run.len(), 90, "6! / (2! 2! 2!) interleavings");
        assert!(
            run.windows(2).all(|w| w[0].0 < w[1].0),
            "each key after the one before: the classic order"
        );
        assert_eq!(run[0].1, vec![0, 0, 1, 1, 2, 2], "the lowest enabled first");
    }

    #[test]
    fn branches_taken_in_any_order_reach_each_schedule_once() {
        use Operation::*;
        let ops = [Activate, Disconnect, Activate];
        let one_at_a_time: Vec<Vec<usize>> = keys(&ops, 2).into_iter().map(|(_, c)| c).collect();
        // Several schedules at once: any branch left taken, not only the first, and runs
        // finished out of order.
        for mut seed in 1..=10_u64 {
            let mut dfs = Dfs::new(&ops);
            let mut running: Vec<DfsRun<Operation>> = Vec::new();
            let mut seen: Vec<Vec<usize>> = Vec::new();
            loop {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let pick = (seed >> 33) as usize;
                let start = !dfs.frontier.is_empty() && (running.is_empty() || pick % 2 == 0);
                if start {
                    let mut left = std::mem::take(&mut dfs.frontier).into_vec();
                    let branch = left.remove(pick % left.len()).0;
                    dfs.frontier = left.into();
                    running.push(independent(&dfs, branch, ops.len(), 2));
                } else if let Some(run) =
                    (!running.is_empty()).then(|| running.remove(pick % running.len()))
                {
                    seen.push(run.current.iter().map(|d| d.chosen).collect());
                    dfs.finish(run);
                } else {
                    break;
                }
            }
            seen.sort();
            let mut expected = one_at_a_time.clone();
            expected.sort();
            assert_eq!(seen, expected, "seed {seed}");
        }
    }

    #[test]
    fn bounded_lanes_run_every_schedule_before_the_bound() {
        use Operation::*;
        let ops = [Activate, Disconnect, Sync];
        let one_at_a_time = keys(&ops, 2);
        // A finding at the 40th schedule: lanes take no branch that holds only later ones.
        let bound = one_at_a_time[39].0.clone();
        for lanes in [1, 2, 3, 4] {
            let mut dfs = Dfs::new(&ops);
            let mut running: std::collections::VecDeque<DfsRun<Operation>> = Default::default();
            let mut seen: Vec<DfsKey> = Vec::new();
            loop {
                while running.len() < lanes {
                    match dfs.next_branch(Some(&bound)) {
                        Some(branch) => running.push_back(independent(&dfs, branch, ops.len(), 2)),
                        None => break,
                    }
                }
                // The oldest run ends first; its branches join the ones left.
                match running.pop_front() {
                    Some(run) => seen.push(dfs.finish(run)),
                    None => break,
                }
            }
            // A branch that may precede the bound begins with a schedule at or before it.
            seen.sort();
            let expected: Vec<DfsKey> =
                one_at_a_time[..40].iter().map(|(k, _)| k.clone()).collect();
            assert_eq!(seen, expected, "{lanes} lane(s)");
        }
    }

    #[test]
    fn every_interleaving_once() {
        // C(4, 2) interleavings of two 2-step operations.
        assert_eq!(count(&[Operation::Activate, Operation::Disconnect], 2), 6);
        assert_eq!(count(&[Operation::Activate, Operation::Disconnect], 3), 20);
    }

    /// A lock holder (`Sync`: take, release, then one more step outside the lock, as a sync
    /// fetches after its commit), writers of the row it holds (`Disconnect`: take, release) and
    /// an operation that touches no row (`Activate`, one step). A taker of a row already taken
    /// waits; when the row is released to several waiting writers, `race` says which gets it
    /// (PostgreSQL's behaviour after an update: the waiters race for the new row version);
    /// otherwise the first waiter does.
    /// Returns the schedules run and the DFS.
    fn lock_race(
        ops: &[Operation],
        mut race: impl FnMut(&[usize]) -> usize,
    ) -> (usize, Dfs<Operation>) {
        let steps: Vec<usize> = ops
            .iter()
            .map(|o| match o {
                Operation::Sync => 3,
                Operation::Disconnect => 2,
                Operation::Activate => 1,
            })
            .collect();
        let mut dfs = Dfs::new(ops);
        let mut schedules = 0;
        while let Some(branch) = dfs.next_branch(None) {
            let mut done = vec![0usize; ops.len()];
            let mut holder: Option<usize> = None;
            let mut waiting: Vec<usize> = Vec::new();
            let mut run = dfs.schedule(branch);
            loop {
                let enabled: Vec<usize> = (0..ops.len())
                    .filter(|&i| done[i] < steps[i] && !waiting.contains(&i))
                    .collect();
                if enabled.is_empty() {
                    break;
                }
                let c = run.next(&ready(&enabled)).unwrap().unwrap();
                assert!(enabled.contains(&c), "E{c} was not ready: {enabled:?}");
                done[c] += 1;
                if ops[c] == Operation::Activate {
                    continue;
                }
                if done[c] == 1 {
                    if holder.is_none() {
                        holder = Some(c);
                    } else {
                        waiting.push(c);
                    }
                } else if done[c] == 2 {
                    holder = None;
                    if !waiting.is_empty() {
                        // Only twins race here: a race between unlike operations is a real
                        // divergence, which no relabelling can follow.
                        let twins = waiting.iter().all(|&w| ops[w] == Operation::Disconnect);
                        let winner = if waiting.len() > 1 && twins {
                            race(&waiting)
                        } else {
                            waiting[0]
                        };
                        waiting.retain(|&w| w != winner);
                        holder = Some(winner);
                    }
                }
            }
            schedules += 1;
            dfs.finish(run);
        }
        (schedules, dfs)
    }

    #[test]
    fn a_race_between_twins_is_followed_as_its_mirror_not_a_divergence() {
        use Operation::*;
        // Twins side by side, and apart (another operation's index between them).
        for ops in [
            &[Sync, Disconnect, Disconnect][..],
            &[Sync, Disconnect, Activate, Disconnect][..],
            &[Disconnect, Sync, Disconnect, Activate][..],
        ] {
            let (steady, dfs) = lock_race(ops, |waiting| waiting[0]);
            assert_eq!((dfs.divergence(), dfs.mirrored), (None, 0));
            // Any winner of the race, run after run: the same tree, every branch, no divergence.
            let mut mirrored = 0;
            for mut seed in 1..=20_u64 {
                let (raced, dfs) = lock_race(ops, |waiting| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    waiting[(seed >> 33) as usize % waiting.len()]
                });
                assert_eq!(dfs.divergence(), None, "{ops:?}");
                assert_eq!(raced, steady, "{ops:?}");
                mirrored += dfs.mirrored;
            }
            assert!(
                mirrored > 0,
                "{ops:?}: the race went the other way at least once"
            );
        }
    }

    #[test]
    fn a_mismatch_that_is_no_mirror_is_still_a_divergence() {
        // E0 and E1 differ: a prefix that recorded E1 where only E0 is ready diverges.
        let ops = [Operation::Sync, Operation::Activate];
        let mut dfs = Dfs::new(&ops);
        let mut run = dfs.schedule(Branch {
            prefix: vec![1],
            ..Branch::default()
        });
        assert_eq!(run.next(&ready(&[0])).unwrap(), Some(0));
        dfs.finish(run);
        assert!(dfs
            .divergence()
            .unwrap()
            .contains("the recorded choice E1 was not ready"));
        assert_eq!(dfs.mirrored, 0);
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
