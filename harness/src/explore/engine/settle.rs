//! Settling: after every decision, waiting until each launched operation is parked at a sync
//! point, finished, or waiting for a lock whose holder is itself parked or waiting — read from the
//! sync-point controller and, through [`crate::evidence`], from the lock tables.

use super::*;

impl Engine<'_> {
    /// Waits until every launched operation is parked, done, or blocked on a stable holder. It
    /// wakes on a park or a finished request at once; the lock tables are read only when nothing
    /// has happened for a tick (a request that stays still is waiting for something), in one query
    /// for every operation on its way ([`evidence::activities_of`], the same reading and the same
    /// judgement, [`evidence::BackendActivity::blocked_by`], as the scenario's lock-wait probe),
    /// and a verdict that anything is blocked always rests on a fresh read of them.
    pub(super) async fn settle(
        &self,
        actors: &mut [Running],
        run: &mut ScheduleRun,
        decision: usize,
    ) -> Result<(), String> {
        let started = Instant::now();
        let mut read_locks = false;
        let mut tick = SETTLE_TICK;
        // A parked request whose slot went with its stopped or crashed replica is on its way to
        // the failure its client is about to see, not parked — releasing it would find no one (a
        // `hang` that stood in for the flaw's `not_serializable` in about half the runs of
        // `authorize + replica_stop`). Both are read once: nothing is launched while settling.
        let replica_downed = replica_downed(actors);
        // Who was parked before a round's reading holds still (only a decision releases a parked
        // request), and so do the locks it holds — unless a fault is among the operations: a
        // crashed or stopping replica, a cut link, takes a parked request's session and its locks
        // away with no decision (its backend goes when PostgreSQL notices its client gone), so no
        // one counts as holding still.
        let faulted = actors.iter().any(|a| a.op.fault().is_some());
        loop {
            let observed = run.observed.len();
            let mut settled = true;
            let mut moving: Vec<usize> = Vec::new();
            for (i, a) in actors.iter_mut().enumerate() {
                // A parked request can only move by finishing (its sync point timed out): look.
                let mut parked_and_still = matches!(a.stop, Some(Stop::Parked(_))) && !a.finished();
                if parked_and_still && replica_downed && !a.op.is_raw_sql() {
                    if let Some(Stop::Parked(point)) = a.stop {
                        if !self.slot_parked(a, point).await {
                            a.stop = None;
                            parked_and_still = false;
                        }
                    }
                }
                if !a.launched || a.stop == Some(Stop::Done) || parked_and_still {
                    continue;
                }
                match self.poll_one(a, run, i).await? {
                    Some(stop) => note(&mut a.stop, stop, i, decision, run),
                    None => moving.push(i),
                }
            }
            let mut blocked_by: Vec<(usize, Vec<String>)> = Vec::new();
            let parked_before: std::collections::BTreeSet<String> = if faulted {
                Default::default()
            } else {
                actors
                    .iter()
                    .filter(|a| matches!(a.stop, Some(Stop::Parked(_))))
                    .map(|a| a.tag.clone())
                    .collect()
            };
            if read_locks && reading_can_settle(actors, &moving, started.elapsed()) {
                let waits = self.lock_waits(actors, &moving, run).await?;
                for (i, by) in waits {
                    match by {
                        Some(by) => {
                            let stop = Stop::Blocked(by.clone());
                            note(&mut actors[i].stop, stop, i, decision, run);
                            blocked_by.push((i, by));
                        }
                        None => {
                            actors[i].stop = None;
                            settled = false;
                        }
                    }
                }
            } else if !moving.is_empty() {
                // Not parked or finished, and the lock tables not read this round (or no reading
                // could settle it): as it was, but not settled.
                settled = false;
            }
            // A wait counts as settled only if every holder is itself parked or waiting: a holder
            // that is still running may be about to let go.
            let tags: BTreeMap<&str, &Running> =
                actors.iter().map(|a| (a.tag.as_str(), a)).collect();
            for (_, by) in &blocked_by {
                let stable = by.iter().all(|h| {
                    tags.get(h.as_str()).is_some_and(|a| {
                        matches!(a.stop, Some(Stop::Parked(_)) | Some(Stop::Blocked(_)))
                    })
                });
                settled &= stable;
            }
            // The waits were read before some holders' states: a holder may have let go and
            // parked in between. With every holder now known to be parked or waiting, a second
            // read of the waiters confirms they still wait (a parked holder cannot let go) —
            // unless every holder was parked before the first read began: then no holder could
            // let go between the two, and the second read would show the same waits.
            let holders_held_still = blocked_by
                .iter()
                .all(|(_, by)| by.iter().all(|h| parked_before.contains(h)));
            if settled && !blocked_by.is_empty() && !holders_held_still {
                let waiters: Vec<usize> = blocked_by.iter().map(|(i, _)| *i).collect();
                let again = self.lock_waits(actors, &waiters, run).await?;
                for ((i, by), (_, now)) in blocked_by.iter().zip(again) {
                    if now.as_ref() != Some(by) {
                        settled = false;
                        let stop = now.map(Stop::Blocked);
                        if let Some(stop) = &stop {
                            run.observed.push(Observed {
                                decision,
                                op: *i,
                                stop: stop.clone(),
                            });
                        }
                        actors[*i].stop = stop;
                    }
                }
            }
            if settled {
                return Ok(());
            }
            if started.elapsed() > self.settle_timeout {
                let locks = evidence::lock_snapshot(self.db()?)
                    .await
                    .unwrap_or_default();
                let states: Vec<String> = actors
                    .iter()
                    .map(|a| format!("{}={:?}", a.tag, a.stop))
                    .collect();
                return Err(format!(
                    "did not settle within {:?} ({}); locks: {locks:?}",
                    self.settle_timeout,
                    states.join(", ")
                ));
            }
            let parks: Vec<_> = actors
                .iter()
                .filter(|a| {
                    a.launched
                        && !a.op.is_raw_sql()
                        && !matches!(a.stop, Some(Stop::Parked(_)) | Some(Stop::Done))
                })
                .flat_map(|a| {
                    a.op.armed().filter(|p| self.has_point(p)).map(|p| {
                        self.target
                            .parked(a.replica, SlotKey::new(a.tag.clone(), *p))
                    })
                })
                .collect();
            let any_park = async {
                if parks.is_empty() {
                    std::future::pending::<()>().await
                } else {
                    futures::future::select_all(parks).await;
                }
            };
            read_locks = tokio::select! {
                _ = self.finished.notified() => false,
                _ = any_park => false,
                _ = tokio::time::sleep(tick) => true,
            };
            // A request still on its way after a reading is slow at something else (a provider
            // call, a pool reconnecting after a fault): each quiet tick doubles the next, up to
            // SETTLE_TICK_MAX, so it is not read for every 2 ms of it. A park, an answer or a
            // changed wait (woken on, or seen this round) starts again from SETTLE_TICK. It
            // paces the readings only: what settles is still what they show.
            let quiet = run.observed.len() == observed;
            tick = if read_locks && quiet {
                (tick * 2).min(SETTLE_TICK_MAX)
            } else {
                SETTLE_TICK
            };
        }
    }

    /// For each of `which` (operation indices), who blocks it now (`None`: it does not wait for a
    /// lock): one read of the lock tables for all of them.
    async fn lock_waits(
        &self,
        actors: &[Running],
        which: &[usize],
        run: &mut ScheduleRun,
    ) -> Result<Vec<(usize, Option<Vec<String>>)>, String> {
        if which.is_empty() {
            return Ok(Vec::new());
        }
        let reading = Instant::now();
        let tags: Vec<&str> = which.iter().map(|&i| actors[i].tag.as_str()).collect();
        // A failed read is no evidence of a wait: the operations count as on their way (and a
        // settle that never ends reports the lock table).
        let seen = evidence::activities_of(self.db()?, &tags)
            .await
            .unwrap_or_default();
        run.spent.lock_reads += reading.elapsed();
        run.spent.lock_read_count += 1;
        Ok(which
            .iter()
            .map(|&i| {
                let by = seen
                    .iter()
                    .find(|s| s.actor() == Some(actors[i].tag.as_str()))
                    .and_then(|s| s.blocked_by());
                (i, by)
            })
            .collect())
    }

    /// Whether one running operation has finished or parked (`None`: on its way, or waiting for
    /// a lock — [`Engine::lock_waits`] tells which).
    async fn poll_one(
        &self,
        a: &mut Running,
        run: &mut ScheduleRun,
        index: usize,
    ) -> Result<Option<Stop>, String> {
        match &mut a.work {
            Some(Work::Http(h)) if h.is_finished() => {
                let Some(Work::Http(h)) = a.work.take() else {
                    unreachable!("matched above")
                };
                let answer = h
                    .await
                    .map_err(|e| format!("{}'s request panicked: {e}", a.tag))?;
                let finished = match answer {
                    Ok(ans) => {
                        let code = ans.error_code().map(str::to_owned);
                        let summary = summary_of(&ans);
                        Finished {
                            status: ans.status.as_u16(),
                            code,
                            summary,
                            answer: Some(ans),
                        }
                    }
                    Err(e) => Finished {
                        status: 0,
                        code: None,
                        summary: format!("request failed: {e}"),
                        answer: None,
                    },
                };
                run.finished[index] = Some(finished);
                run.completion_order.push(index);
                return Ok(Some(Stop::Done));
            }
            Some(Work::Sql(h)) if h.is_finished() => {
                let Some(Work::Sql(h)) = a.work.take() else {
                    unreachable!("matched above")
                };
                let (outcome, conn) = h
                    .await
                    .map_err(|e| format!("{}'s statement panicked: {e}", a.tag))?;
                if !outcome.ok {
                    if let Some(conn) = conn {
                        let _ = conn.close().await;
                    }
                    run.finished[index] = Some(Finished {
                        status: 0,
                        code: None,
                        summary: format!("error: {}", outcome.error.unwrap_or_default()),
                        answer: None,
                    });
                    run.completion_order.push(index);
                    return Ok(Some(Stop::Done));
                }
                if a.sql_step == 0 {
                    a.session = conn;
                    return Ok(Some(Stop::Parked(a.op.points()[0])));
                }
                if let Some(conn) = conn {
                    self.keep_raw_session(conn).await;
                }
                run.finished[index] = Some(Finished {
                    status: 0,
                    code: None,
                    summary: "ok".into(),
                    answer: None,
                });
                run.completion_order.push(index);
                return Ok(Some(Stop::Done));
            }
            _ => {}
        }
        if !a.op.is_raw_sql() {
            // Let go at once: a pass chose the path, and is no stop.
            for point in a.op.passes().iter().filter(|p| self.has_point(p)) {
                if self.slot_parked(a, point).await {
                    // A refusal means the arrival is gone with its request (a stop, a crash):
                    // either way the operation is on its way, and its answer tells the rest.
                    let _ = self
                        .target
                        .release(a.replica, &SlotKey::new(a.tag.clone(), *point))
                        .await;
                    return Ok(None);
                }
            }
            for point in a.op.points().iter().filter(|p| self.has_point(p)) {
                if self.slot_parked(a, point).await {
                    return Ok(Some(Stop::Parked(point)));
                }
            }
        }
        Ok(None)
    }
}

/// Whether a reading of the lock tables could let `moving` settle. A wait settles only on holders
/// that are themselves parked or waiting, so one operation on its way while no other one is
/// parked or waiting — launched alone, or the last one left — can settle by a reading only if it
/// waits on itself: a target whose request waits on a second connection of its own, a deadlock
/// PostgreSQL cannot see. Such an operation is read once it has been on its way for
/// [`ALONE_UNREAD`]; before that a reading is a query for nothing (20–40 % of a schedule's
/// readings: `benches/README.md`).
fn reading_can_settle(actors: &[Running], moving: &[usize], settling: Duration) -> bool {
    match moving {
        [] => false,
        [alone] => {
            settling >= ALONE_UNREAD
                || actors.iter().enumerate().any(|(j, a)| {
                    j != *alone && matches!(a.stop, Some(Stop::Parked(_)) | Some(Stop::Blocked(_)))
                })
        }
        _ => true,
    }
}

/// Sets an operation's stop, recording it when it changed.
fn note(slot: &mut Option<Stop>, stop: Stop, op: usize, decision: usize, run: &mut ScheduleRun) {
    if slot.as_ref() != Some(&stop) {
        run.observed.push(Observed {
            decision,
            op,
            stop: stop.clone(),
        });
    }
    *slot = Some(stop);
}
