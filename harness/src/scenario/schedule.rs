//! Schedules as data, in the shape of shuttle's: *what each actor does* is its program (its steps,
//! in file order), and *the order in which actors advance* is a [`Schedule`] — the sequence of
//! step indices actually run. A [`Scheduler`] chooses, at each decision, which ready step runs
//! next. The file's own order is one scheduler ([`FileOrder`]); a recorded schedule replays exactly
//! ([`Replay`]); exploration adds strategies that choose differently, one file each.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::model::Scenario;

/// The order in which steps ran: indices into the scenario's steps.
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

/// Chooses the next step among the ready ones.
pub trait Scheduler: Send {
    /// The strategy's name, for the trace.
    fn name(&self) -> &'static str;

    /// The step to run next (one of `ready`), `Ok(None)` to stop, or `Err` when the strategy
    /// cannot go on (a replay that diverged).
    fn next(&mut self, ready: &[Ready]) -> Result<Option<usize>, String>;
}

/// The file's order: always the lowest ready index, which is the next step of the file (each
/// program is in file order, so the global next step always heads its program).
#[derive(Clone, Copy, Debug, Default)]
pub struct FileOrder;

impl Scheduler for FileOrder {
    fn name(&self) -> &'static str {
        "file-order"
    }

    fn next(&mut self, ready: &[Ready]) -> Result<Option<usize>, String> {
        Ok(ready.iter().map(|r| r.step).min())
    }
}

/// Follows a recorded schedule exactly; refuses a step that is not ready.
#[derive(Clone, Debug)]
pub struct Replay {
    order: VecDeque<usize>,
}

impl Replay {
    /// Replays `schedule`.
    pub fn new(schedule: &Schedule) -> Self {
        Self {
            order: schedule.0.iter().copied().collect(),
        }
    }
}

impl Scheduler for Replay {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn next(&mut self, ready: &[Ready]) -> Result<Option<usize>, String> {
        let Some(step) = self.order.pop_front() else {
            return Ok(None);
        };
        if ready.iter().any(|r| r.step == step) {
            Ok(Some(step))
        } else {
            let ready: Vec<usize> = ready.iter().map(|r| r.step).collect();
            Err(format!(
                "the recorded schedule runs step {step} next, but only steps {ready:?} are ready"
            ))
        }
    }
}

/// Each actor's remaining program, and the harness's.
#[derive(Clone, Debug)]
pub struct Programs {
    queues: Vec<(Option<String>, VecDeque<usize>)>,
}

impl Programs {
    /// The programs of `scenario`'s actors (and the harness), each in file order.
    pub fn of(scenario: &Scenario) -> Self {
        let mut queues: Vec<(Option<String>, VecDeque<usize>)> = Vec::new();
        for (i, step) in scenario.steps.iter().enumerate() {
            let actor = step.actor().map(str::to_owned);
            match queues.iter_mut().find(|(a, _)| *a == actor) {
                Some((_, q)) => q.push_back(i),
                None => queues.push((actor, VecDeque::from([i]))),
            }
        }
        Self { queues }
    }

    /// The head of every program that has steps left.
    pub fn ready(&self) -> Vec<Ready> {
        self.queues
            .iter()
            .filter_map(|(a, q)| {
                q.front().map(|&step| Ready {
                    step,
                    actor: a.clone(),
                })
            })
            .collect()
    }

    /// Marks `step` as run; it must be the head of its program.
    pub fn advance(&mut self, step: usize) -> Result<(), String> {
        for (_, q) in &mut self.queues {
            if q.front() == Some(&step) {
                q.pop_front();
                return Ok(());
            }
        }
        Err(format!("step {step} is not ready"))
    }

    /// Steps not run yet.
    pub fn remaining(&self) -> usize {
        self.queues.iter().map(|(_, q)| q.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(steps: &[usize]) -> Vec<Ready> {
        steps
            .iter()
            .map(|&step| Ready { step, actor: None })
            .collect()
    }

    #[test]
    fn file_order_takes_the_lowest_ready_step() {
        assert_eq!(FileOrder.next(&ready(&[4, 1, 7])).unwrap(), Some(1));
        assert_eq!(FileOrder.next(&[]).unwrap(), None);
    }

    #[test]
    fn a_replay_follows_the_record_and_refuses_to_diverge() {
        let mut replay = Replay::new(&Schedule(vec![2, 0]));
        assert_eq!(replay.next(&ready(&[0, 2])).unwrap(), Some(2));
        assert!(replay
            .next(&ready(&[1]))
            .unwrap_err()
            .contains("runs step 0 next"));
        assert_eq!(
            replay.next(&ready(&[1])).unwrap(),
            None,
            "the record is exhausted"
        );
    }
}
