//! Replays recorded choices exactly; after them (a minimised schedule drops its tail), the lowest
//! enabled operation goes first.

use crate::explore::engine::Chooser;

/// Recorded choices, in order.
#[derive(Clone, Debug)]
pub struct Replay {
    choices: Vec<usize>,
    /// Decisions where the recorded choice was not enabled (the run did not go as recorded).
    pub diverged: Vec<usize>,
}

impl Replay {
    /// Replays `choices`.
    pub fn new(choices: Vec<usize>) -> Self {
        Self {
            choices,
            diverged: Vec::new(),
        }
    }
}

impl Chooser for Replay {
    fn choose(&mut self, enabled: &[usize], step: usize) -> usize {
        match self.choices.get(step) {
            Some(c) if enabled.contains(c) => *c,
            Some(_) => {
                self.diverged.push(step);
                enabled[0]
            }
            None => enabled[0],
        }
    }
}
