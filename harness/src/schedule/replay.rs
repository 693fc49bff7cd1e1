//! Replays a recorded schedule exactly. A recorded choice that is not ready is refused, naming the
//! ready set: a run that does not go as recorded is not the recorded run, and going on with some
//! other choice would report on a schedule nobody asked for. After the record, a replay either
//! stops (a scenario's saved schedule covers the whole run) or goes on in file order (a minimised
//! exploration schedule keeps only the prefix that matters).

use std::collections::VecDeque;

use super::{FileOrder, Ready, Schedule, Scheduler};

/// A recorded schedule, followed choice by choice.
#[derive(Clone, Debug)]
pub struct Replay {
    order: VecDeque<usize>,
    then_file_order: bool,
}

impl Replay {
    /// Replays `schedule`, then stops.
    pub fn exact(schedule: &Schedule) -> Self {
        Self {
            order: schedule.0.iter().copied().collect(),
            then_file_order: false,
        }
    }

    /// Replays `schedule`, then takes the lowest ready index until the run ends.
    pub fn prefix(schedule: &Schedule) -> Self {
        Self {
            then_file_order: true,
            ..Self::exact(schedule)
        }
    }
}

impl Scheduler for Replay {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn next(&mut self, ready: &[Ready]) -> Result<Option<usize>, String> {
        let Some(step) = self.order.pop_front() else {
            return if self.then_file_order {
                FileOrder.next(ready)
            } else {
                Ok(None)
            };
        };
        if ready.iter().any(|r| r.step == step) {
            Ok(Some(step))
        } else {
            Err(format!(
                "the recorded schedule runs {step} next, but only {:?} can run",
                super::steps(ready)
            ))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ready(steps: &[usize]) -> Vec<Ready> {
        steps
            .iter()
            .map(|&step| Ready { step, actor: None })
            .collect()
    }

    #[test]
    fn a_replay_follows_the_record_and_refuses_to_diverge() {
        let mut replay = Replay::exact(&Schedule(vec![2, 0]));
        assert_eq!(replay.next(&ready(&[0, 2])).unwrap(), Some(2));
        assert!(replay
            .next(&ready(&[1]))
            .unwrap_err()
            .contains("runs 0 next, but only [1] can run"));
        assert_eq!(
            replay.next(&ready(&[1])).unwrap(),
            None,
            "the record is exhausted"
        );
    }

    #[test]
    fn a_prefix_replay_goes_on_in_file_order() {
        let mut replay = Replay::prefix(&Schedule(vec![1]));
        assert_eq!(replay.next(&ready(&[0, 1])).unwrap(), Some(1));
        assert_eq!(replay.next(&ready(&[2, 0])).unwrap(), Some(0));
        assert!(Replay::prefix(&Schedule(vec![3]))
            .next(&ready(&[0]))
            .is_err());
    }
}
