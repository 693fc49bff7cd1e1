//! PCT (probabilistic concurrency testing): each operation gets a random priority; the highest
//! enabled one advances; at `depth - 1` random decisions the running operation drops to the lowest
//! priority. A bug of depth `d` is found with probability at least 1/(n·k^(d-1)) per schedule. Every
//! schedule comes from one seed, printed, so `--seed N` replays it exactly.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::explore::engine::Chooser;

/// One PCT schedule.
#[derive(Clone, Debug)]
pub struct Pct {
    priorities: Vec<usize>,
    change_points: Vec<usize>,
    lowest: usize,
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
        }
    }
}

impl Chooser for Pct {
    fn choose(&mut self, enabled: &[usize], step: usize) -> usize {
        let chosen = *enabled
            .iter()
            .max_by_key(|&&i| self.priorities[i])
            .unwrap_or(&enabled[0]);
        if self.change_points.contains(&step) {
            self.lowest = self.lowest.saturating_sub(1);
            self.priorities[chosen] = self.lowest;
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_one_schedule() {
        let run = |seed| {
            let mut p = Pct::new(seed, 3, 10, 3);
            (0..10).map(|s| p.choose(&[0, 1, 2], s)).collect::<Vec<_>>()
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
