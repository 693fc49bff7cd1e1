//! Mutual exclusion, watched decision by decision: two operations parked under the workspace
//! lock at once, and a request that answers while a probe holds the lock it should have taken.

use super::*;

impl Engine<'_> {
    /// Before `chosen` is advanced: a request launched while probes hold their locks (the
    /// workspace's, the connection row's) is noted with each of them; when one of those probes is
    /// about to let go, a noted request that takes its lock and has already answered 2xx with an
    /// effect went through without it (every settle since its launch saw the probe holding, so it
    /// cannot have run its locked part before).
    pub(super) fn watch_probe(&self, actors: &mut [Running], chosen: usize, run: &mut ScheduleRun) {
        let holding: Vec<usize> = actors
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                a.op.is_probe()
                    && matches!(a.stop, Some(Stop::Parked(p)) if a.op.points().contains(&p))
            })
            .map(|(i, _)| i)
            .collect();
        if holding.contains(&chosen) {
            if run.lock_bypassed.is_some() {
                return;
            }
            let probe = chosen;
            run.lock_bypassed = actors
                .iter()
                .enumerate()
                .find(|(_, a)| {
                    a.under_probes.contains(&probe)
                        && a.op.takes_workspace_lock()
                        && a.stop == Some(Stop::Done)
                })
                .and_then(|(i, _)| {
                    let answered = run.finished[i].as_ref()?;
                    let success = (200..300).contains(&answered.status);
                    let body = answered.answer.as_ref().map(|a| &a.body);
                    // An idempotent replay (a repeated activation) answers from the row it
                    // already wrote, under the workspace lock but without the connection's row.
                    let replay = body.is_some_and(|b| b["already_completed"] == true);
                    let row_only = actors[probe].op == Operation::RowProbe;
                    // A sync whose token needed no refresh reads it without the workspace lock
                    // (the service's fresh-token read); its store waits for the row alone.
                    let unrefreshed_sync =
                        actors[i].op.is_sync() && body.is_some_and(|b| b["refreshed"] == false);
                    let lock_only = actors[probe].op == Operation::LockProbe;
                    (success && !(replay && row_only) && !(unrefreshed_sync && lock_only))
                        .then_some((i, probe))
                });
        } else if !actors[chosen].launched && matches!(actors[chosen].op.does(), Does::Request(_)) {
            actors[chosen].under_probes = holding;
        }
    }

    /// Before `chosen` is advanced: if it is a fault that ends the open transactions, every
    /// request inside one — parked under the workspace lock, or waiting for a lock — is severed
    /// from it. Where it parks next it holds nothing (its transaction is dead, the lock went with
    /// the backend), so it no longer counts as under the lock. (Found by `explore --depth 3`: a
    /// cut that ended both activations' transactions left one parked at `before_commit` while the
    /// other failed at `failing`, each holding nothing.)
    pub(super) fn note_severed(&self, actors: &mut [Running], chosen: usize) {
        if actors[chosen].launched || !actors[chosen].op.ends_transactions() {
            return;
        }
        for a in actors.iter_mut() {
            let inside = match &a.stop {
                Some(Stop::Parked(p)) => UNDER_WORKSPACE_LOCK.contains(p),
                Some(Stop::Blocked(_)) => true,
                _ => false,
            };
            a.severed |= inside && !a.op.is_raw_sql();
        }
    }

    /// Two operations parked under the workspace lock at once break mutual exclusion (the lock
    /// probe holding it counts as under it; a request whose transaction a fault ended does not).
    pub(super) fn check_exclusion(&self, actors: &[Running], run: &mut ScheduleRun) {
        if run.exclusion_broken.is_some() {
            return;
        }
        let inside: Vec<(usize, &'static str)> = actors
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.severed)
            .filter_map(|(i, a)| match a.stop {
                Some(Stop::Parked(p))
                    if UNDER_WORKSPACE_LOCK.contains(&p) || p == PROBE_HOLDING =>
                {
                    Some((i, p))
                }
                _ => None,
            })
            .collect();
        if let [(a, pa), (b, pb), ..] = inside[..] {
            run.exclusion_broken = Some((a, pa, b, pb));
        }
    }
}
