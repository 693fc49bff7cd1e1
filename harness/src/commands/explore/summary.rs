//! The run's summary as printed: sets, schedules, what was skipped, each set's outcomes, and each
//! violation with its saved schedule and replay.

use super::*;

pub(super) fn print_summary(label: &str, report: &ExploreReport) {
    println!(
        "{label}: {} set(s), {} schedules explored, {} pruned (of {}), {} violation(s), {:.1} s, {:.1} schedules/s",
        report.sets.len(),
        report.schedules_explored,
        report.schedules_pruned,
        report.schedules_total,
        report.violations.len(),
        report.duration_ms / 1000.0,
        report.schedules_per_s
    );
    if report.lanes > 1 {
        println!(
            "  {} lanes: that many schedules explored at once on each service (of one set or several), each on its own workspace, actor tags (L<lane>E<i>) and grant; sets with a fault or a stale start ran one schedule at a time, alone on theirs",
            report.lanes
        );
    }
    if report.services > 1 {
        println!(
            "  {} services ({} with fault proxies): each with its own database, Redis prefix, replicas and provider, taking the next set it can serve when free; a set that ran alone had its service to itself",
            report.services, report.services_with_fault_proxies
        );
    }
    let mean: Vec<String> = report
        .mean_ms
        .iter()
        .map(|(k, v)| format!("{k} {v:.1} ms"))
        .collect();
    println!(
        "  mean time per schedule, by phase: {}; {:.1} lock-table reads (setup: making the schedule's workspace, mostly while the previous schedule runs, of which start: bringing it to its starting state, on the schedule's path; decisions: launching or releasing the operations (advance), then waiting until nothing can move (settle, of which lock_reads) and cleaning up (cleanup); checks: the oracles)",
        mean.join(", "),
        report.lock_reads_per_schedule
    );
    println!(
        "  each set: its operations run concurrently from a start state (connected: QuickBooks connected; stale: connected with an expired token, so a sync refreshes; pending: an authorization waiting for its callback); (all) = every schedule explored; its wall time; then each distinct outcome: every operation's answer → the connection's end status and activation rows, × how many schedules ended so"
    );
    if report.lock_probes {
        println!("  at lock probes: no sync point armed; requests wait only behind lock_probe (the workspace lock) and row_probe (the connection row), held from the harness's own sessions");
    }
    for o in &report.oracles_off {
        println!("  oracle not run: {o}");
    }
    for s in &report.skipped {
        let ops: Vec<&str> = s.operations.iter().map(|o| o.as_str()).collect();
        println!("  {:<28} SKIPPED: {}", ops.join(" + "), s.why);
    }
    for s in &report.sets {
        let ops: Vec<&str> = s.operations.iter().map(|o| o.as_str()).collect();
        println!(
            "  {:<28} from {:<9} {:>4} schedules{} in {:>6.1} s {:>2} outcome(s){}",
            ops.join(" + "),
            s.start.as_str(),
            s.explored,
            if s.complete { " (all)" } else { "      " },
            s.duration_ms / 1000.0,
            s.outcomes.len(),
            if s.anomalies.is_empty() {
                String::new()
            } else {
                format!(
                    "  VIOLATION: {}",
                    s.anomalies
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        for (outcome, n) in &s.outcomes {
            println!(
                "      {}  × {n}",
                crate::untrusted::console(outcome, "        ")
            );
        }
    }
    for v in &report.violations {
        println!(
            "  {} after {} schedule(s): {}",
            v.anomaly.as_str(),
            v.found_after,
            crate::untrusted::console(&v.detail, "    ")
        );
        println!(
            "    schedule {:?}{}",
            v.schedule,
            v.seed.map(|s| format!(", seed {s}")).unwrap_or_default()
        );
        if let Some(f) = &v.saved_file {
            println!(
                "    saved as {f} (reproduces: {}, passes on the correct build: {})",
                yes_no(v.reproduces),
                yes_no(v.passes_on_correct_build)
            );
        }
        if let Some(e) = &v.save_error {
            println!(
                "    NOT SAVED: {e} (the schedule above, the operation chosen at each decision, is its record: the seed alone does not replay a random schedule, whose length bound grew with the schedules before it)"
            );
        }
    }
}

/// `yes`, `no`, or `-` when it was not checked.
pub(super) fn yes_no(b: Option<bool>) -> &'static str {
    b.map_or("-", |b| if b { "yes" } else { "no" })
}
