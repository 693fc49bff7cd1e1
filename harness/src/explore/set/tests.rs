//! The service's lanes and sets checked without a service: queues, and a set's tree shared by
//! simulated lanes whose schedules end in any order.

use super::*;
use crate::explore::anomaly;
use crate::explore::{multisets, needs_fault_proxies, services_with_fault_proxies};

#[test]
fn half_the_services_run_fault_proxies_when_some_sets_need_them() {
    let triples = multisets(&Operation::by_default(), 3);
    let proxied = triples.iter().filter(|s| needs_fault_proxies(s)).count();
    assert_eq!((triples.len(), proxied), (533, 332));
    assert_eq!(services_with_fault_proxies(&triples, 4), 2);
    assert_eq!(services_with_fault_proxies(&triples, 3), 2);
    assert_eq!(services_with_fault_proxies(&triples, 1), 1);
    // None needs them: no service runs them; every one does: all do.
    let requests = multisets(&[Operation::Activate, Operation::Callback], 3);
    assert_eq!(services_with_fault_proxies(&requests, 4), 0);
    let faults = vec![
        vec![Operation::DbCut],
        vec![Operation::Callback, Operation::RedisRestart],
    ];
    assert_eq!(services_with_fault_proxies(&faults, 4), 4);
}

#[test]
fn a_service_takes_only_what_it_accepts_and_in_order() {
    const A: &[Operation] = &[Operation::Activate];
    const B: &[Operation] = &[Operation::DbCut];
    const C: &[Operation] = &[Operation::ReplicaCrash];
    let (a, b, c) = (A, B, C);
    let queued = |index, ops: &'static [Operation], scarce| Queued { index, ops, scarce };
    let queues = Queues::new(
        Vec::new(),
        vec![queued(0, a, false), queued(1, b, true), queued(2, c, false)],
    );
    // A service without the proxies passes over the set that needs them.
    let bare = |q: &Queued<'_>| !q.ops.contains(&Operation::DbCut);
    assert_eq!(queues.next(&queues.alone, bare).map(|q| q.index), Some(0));
    // One with them takes the scarce set first, wherever it waits.
    assert_eq!(
        queues.next(&queues.alone, |q| q.scarce).map(|q| q.index),
        Some(1)
    );
    assert!(queues.next(&queues.alone, |q| q.scarce).is_none());
    assert_eq!(queues.next(&queues.alone, bare).map(|q| q.index), Some(2));
    assert!(queues.next(&queues.alone, |_| true).is_none());
    // An abandoned run hands out nothing more.
    let queues = Queues::new(vec![queued(0, a, false)], Vec::new());
    let _ = queues.noting::<()>(Err("failed".into()));
    assert!(queues.next(&queues.beside, |_| true).is_none());
}

/// One schedule of independent operations of two steps each, as `scheduler` orders them.
fn simulated_run(scheduler: &mut dyn crate::schedule::Scheduler, n: usize) -> ScheduleRun {
    use crate::schedule::{Decision, Ready};
    let mut left = vec![2; n];
    let mut decisions = Vec::new();
    loop {
        let enabled: Vec<usize> = (0..n).filter(|&i| left[i] > 0).collect();
        let ready: Vec<Ready> = enabled
            .iter()
            .map(|&step| Ready { step, actor: None })
            .collect();
        let Some(chosen) = scheduler.next(&ready).expect("a DFS never refuses") else {
            break;
        };
        left[chosen] -= 1;
        decisions.push(Decision { enabled, chosen });
    }
    ScheduleRun {
        decisions,
        finished: vec![None; n],
        ..ScheduleRun::default()
    }
}

/// The findings of a simulated schedule: a lock left held after every one that launches E1
/// twice first, a hang after every one that begins E2, E0.
fn simulated_findings(choices: &[usize]) -> Vec<anomaly::Finding> {
    let mut findings = Vec::new();
    if choices.starts_with(&[1, 1]) {
        findings.push(anomaly::Finding {
            anomaly: anomaly::Anomaly::LockLeftHeld,
            detail: format!("{choices:?}"),
        });
    }
    if choices.starts_with(&[2, 0]) {
        findings.push(anomaly::Finding {
            anomaly: anomaly::Anomaly::Hang,
            detail: format!("{choices:?}"),
        });
    }
    findings
}

/// A set of three operations explored by `lanes` simulated lanes through the board, the
/// running schedules ending in an order `seed` picks.
fn simulated(lanes: usize, stop_at_first: bool, mut seed: u64) -> Explored {
    const OPS: &[Operation] = &[
        Operation::Activate,
        Operation::Callback,
        Operation::Disconnect,
    ];
    let options = Options {
        sets: vec![OPS.to_vec()],
        shard: None,
        mode: super::super::Mode::Systematic,
        budget: usize::MAX,
        seconds: None,
        replicas: 2,
        flaws: Default::default(),
        stop_at_first,
        save_dir: None,
        lock_probes: false,
        lanes,
        services: 1,
    };
    let queued = Queued {
        index: 0,
        ops: OPS,
        scarce: false,
    };
    let queues = Queues::new(vec![queued], Vec::new());
    let take = || queues.next(&queues.beside, |_| true);
    let gate = Gate {
        abandoned: false,
        past_deadline: false,
    };
    let mut board = Board::default();
    let mut running: Vec<(usize, Box<Running>)> = Vec::new();
    loop {
        while running.len() < lanes {
            match board.next_job(&take, &options, gate) {
                Job::Run {
                    index, scheduler, ..
                } => running.push((index, scheduler)),
                Job::Wait => break,
                Job::Done => {
                    assert!(running.is_empty(), "done while a schedule runs");
                    break;
                }
            }
        }
        if running.is_empty() {
            break;
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let (index, mut scheduler) = running.remove((seed >> 33) as usize % running.len());
        let run = simulated_run(scheduler.scheduler(), OPS.len());
        let choices: Vec<usize> = run.decisions.iter().map(|d| d.chosen).collect();
        board
            .with_set(index, |set| {
                set.record(
                    *scheduler,
                    run,
                    simulated_findings(&choices),
                    Duration::ZERO,
                    &options,
                )
            })
            .expect("recorded");
    }
    assert!(matches!(board.next_job(&take, &options, gate), Job::Done));
    assert!(board.under_way.is_empty(), "every set swept");
    board.over.pop().expect("the set is over").1
}

fn found(e: &Explored) -> Vec<(anomaly::Anomaly, Vec<usize>, usize)> {
    e.violations
        .iter()
        .map(|v| (v.anomaly, v.schedule.clone(), v.found_after))
        .collect()
}

#[test]
fn lanes_sharing_a_set_report_what_one_lane_does() {
    let one = simulated(1, false, 0);
    assert_eq!((one.set.explored, one.set.complete), (90, true));
    // Both anomalies, each at the first schedule showing it in the DFS order.
    assert_eq!(
        found(&one),
        vec![
            (anomaly::Anomaly::LockLeftHeld, vec![1, 1, 0, 0, 2, 2], 43),
            (anomaly::Anomaly::Hang, vec![2, 0, 0, 1, 1, 2], 61),
        ]
    );
    for lanes in 2..=4 {
        for seed in 1..=8 {
            let many = simulated(lanes, false, seed);
            assert_eq!((many.set.explored, many.set.complete), (90, true));
            assert_eq!(found(&many), found(&one), "{lanes} lanes, seed {seed}");
            assert_eq!(many.set.anomalies, one.set.anomalies);
        }
    }
}

#[test]
fn lanes_stopping_at_the_first_finding_report_the_first_in_dfs_order() {
    let one = simulated(1, true, 0);
    assert_eq!((one.set.explored, one.set.complete), (43, false));
    assert_eq!(
        found(&one),
        vec![(anomaly::Anomaly::LockLeftHeld, vec![1, 1, 0, 0, 2, 2], 43)]
    );
    for lanes in 2..=4 {
        for seed in 1..=8 {
            let many = simulated(lanes, true, seed);
            // Whatever ran beside it, and whichever found something first.
            assert_eq!(found(&many), found(&one), "{lanes} lanes, seed {seed}");
            assert!(!many.set.complete);
            assert!(many.set.explored >= 43);
        }
    }
}

/// A workspace made ahead, as [`Made`] sees one: its start, when it was made, and a name.
#[derive(Debug, PartialEq)]
struct Ahead1(Start, Instant, &'static str);

impl Ahead for Ahead1 {
    fn start(&self) -> Start {
        self.0
    }
    fn made_at(&self) -> Instant {
        self.1
    }
}

#[test]
fn a_workspace_made_ahead_goes_to_any_lane_with_its_start_while_it_is_fresh() {
    let t0 = Instant::now();
    let made: Made<Ahead1> = Made::new(2);
    made.put(Ahead1(Start::Pending, t0, "p1"));
    made.put(Ahead1(Start::Connected, t0, "c1"));
    made.put(Ahead1(Start::Pending, t0, "p2"));
    // Two lanes: two kept for a start are enough.
    assert!(made.is_full(Start::Pending));
    assert!(!made.is_full(Start::Connected));
    // Whichever lane made it, the first made for the start is taken; another start's waits.
    assert_eq!(
        made.take(Start::Pending, false, t0).map(|p| p.2),
        Some("p1")
    );
    assert_eq!(
        made.take(Start::Connected, false, t0).map(|p| p.2),
        Some("c1")
    );
    assert_eq!(made.take(Start::Connected, false, t0), None);
    // A set that runs alone drops those made for other starts.
    made.put(Ahead1(Start::Connected, t0, "c2"));
    assert_eq!(made.take(Start::Stale, true, t0), None);
    assert_eq!(made.take(Start::Connected, false, t0), None);
    assert_eq!(
        made.take(Start::Pending, false, t0),
        None,
        "dropped by the set that ran alone"
    );
    // One kept too long is not taken: its OAuth state may be near its expiry.
    made.put(Ahead1(Start::Pending, t0, "old"));
    made.put(Ahead1(Start::Pending, t0 + KEPT_AT_MOST, "new"));
    let later = t0 + KEPT_AT_MOST + Duration::from_secs(1);
    assert_eq!(
        made.take(Start::Pending, false, later).map(|p| p.2),
        Some("new")
    );
    assert_eq!(made.take(Start::Pending, false, later), None);
}
