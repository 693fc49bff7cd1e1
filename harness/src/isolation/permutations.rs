//! The permutations a spec runs, as schedules of its steps: its `permutation` lines, or every
//! interleaving of its sessions' steps in the isolation tester's order (session by session, the
//! lowest first) — enumerated by the depth-first scheduler exploration uses, so "every
//! permutation" means the same thing in both.

use super::spec::{Blocker, Spec};
use crate::schedule::{Dfs, Ready, Schedule, Scheduler};

/// A step as a permutation runs it.
#[derive(Clone, Debug)]
pub struct PStep {
    /// The step's name.
    pub name: String,
    /// Its session's index.
    pub session: usize,
    /// Its SQL.
    pub sql: String,
    /// Its markers.
    pub blockers: Vec<Blocker>,
}

/// The permutations a spec runs, as schedules of its steps (numbered sessions first, in file
/// order): its `permutation` lines, or every interleaving of its sessions' steps in the tester's
/// order — enumerated by the same depth-first scheduler exploration uses.
pub fn permutations(spec: &Spec) -> Vec<Vec<PStep>> {
    let all = spec.all_steps();
    if !spec.permutations.is_empty() {
        return spec
            .permutations
            .iter()
            .map(|p| {
                p.steps
                    .iter()
                    .map(|ps| {
                        let (session, def) = spec.find(&ps.name).expect("checked at parse time");
                        PStep {
                            name: ps.name.clone(),
                            session,
                            sql: def.sql.clone(),
                            blockers: ps.blockers.clone(),
                        }
                    })
                    .collect()
            })
            .collect();
    }
    let offsets: Vec<usize> = spec
        .sessions
        .iter()
        .scan(0, |at, s| {
            let here = *at;
            *at += s.steps.len();
            Some(here)
        })
        .collect();
    let ids: Vec<usize> = (0..all.len()).collect();
    let mut dfs = Dfs::new(&ids);
    let mut out = Vec::new();
    while let Some(branch) = dfs.next_branch(None) {
        let mut next = vec![0usize; spec.sessions.len()];
        let mut order = Schedule::default();
        {
            let mut run = dfs.schedule(branch);
            loop {
                let ready: Vec<Ready> = spec
                    .sessions
                    .iter()
                    .enumerate()
                    .filter(|(s, session)| next[*s] < session.steps.len())
                    .map(|(s, session)| Ready {
                        step: offsets[s] + next[s],
                        actor: Some(session.name.clone()),
                    })
                    .collect();
                match run.next(&ready) {
                    Ok(Some(i)) => {
                        next[all[i].0] += 1;
                        order.0.push(i);
                    }
                    _ => break,
                }
            }
            dfs.finish(run);
        }
        out.push(
            order
                .0
                .iter()
                .map(|&i| PStep {
                    name: all[i].1.name.clone(),
                    session: all[i].0,
                    sql: all[i].1.sql.clone(),
                    blockers: Vec::new(),
                })
                .collect(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn every_interleaving_in_the_testers_order() {
        let spec = crate::isolation::spec::parse(
            "session a\nstep a1 {x}\nstep a2 {x}\nsession b\nstep b1 {x}\n",
            Path::new("t.spec"),
        )
        .unwrap();
        let names: Vec<String> = permutations(&spec)
            .iter()
            .map(|p| {
                p.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(names, ["a1 a2 b1", "a1 b1 a2", "b1 a1 a2"]);
    }
}
