//! Each actor's program: a scenario's steps grouped by who runs them, each in file order. A
//! [`crate::schedule::Scheduler`] chooses among the programs' heads.

use std::collections::VecDeque;

use super::typed::Scenario;
use crate::schedule::Ready;

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

    #[test]
    fn a_program_advances_only_from_its_head() {
        let mut p = Programs {
            queues: vec![
                (Some("A".into()), VecDeque::from([0, 2])),
                (None, VecDeque::from([1])),
            ],
        };
        assert_eq!(crate::schedule::steps(&p.ready()), vec![0, 1]);
        assert!(p.advance(2).is_err());
        p.advance(0).unwrap();
        assert_eq!(crate::schedule::steps(&p.ready()), vec![2, 1]);
        assert_eq!(p.remaining(), 2);
    }
}
