//! PCT (probabilistic concurrency testing): each operation gets a random priority; the highest
//! enabled one advances; at `depth - 1` random decisions the running operation drops to the lowest
//! priority. A bug of depth `d` is found with probability at least 1/(n·k^(d-1)) per schedule. Every
//! schedule comes from one seed, printed, so `--seed N` replays it exactly.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::{Ready, Scheduler};

/// One PCT schedule.
#[derive(Clone, Debug)]
pub struct Pct {
    priorities: Vec<usize>,
    change_points: Vec<usize>,
    lowest: usize,
    step: usize,
}

impl Pct {
    /// The schedule of `seed` for `ops` operations, expecting about `length` decisions, with
    /// `depth - 1` priority changes.
    pub fn new(seed: u64, ops: usize, length: usize, depth: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut priorities: Vec<usize> = (depth..depth + ops).collect();
        priorities.shuffle(&mut rng);
        let change_points = (1..depth)
            .map(|_| rng.gen_range(0..length.max(1)))
            .collect();
        Self {
            priorities,
            change_points,
            lowest: depth,
            step: 0,
        }
    }
}

impl Scheduler for Pct {
    fn name(&self) -> &'static str {
        "pct"
    }

    fn next(&mut self, ready: &[Ready]) -> Result<Option<usize>, String> {
        let Some(chosen) = ready
            .iter()
            .map(|r| r.step)
            .max_by_key(|&i| self.priorities[i])
        else {
            return Ok(None);
        };
        if self.change_points.contains(&self.step) {
            self.lowest = self.lowest.saturating_sub(1);
            self.priorities[chosen] = self.lowest;
        }
        self.step += 1;
        Ok(Some(chosen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_one_schedule() {
        let run = |seed| {
            let mut p = Pct::new(seed, 3, 10, 3);
            let all = crate::schedule::replay::tests::ready(&[0, 1, 2]);
            (0..10)
                .map(|_| p.next(&all).unwrap().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert!(
            (0..20)
                .map(run)
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 1,
            "seeds differ"
        );
    }
}
