//! Launching a step's job and collecting it: to completion, parked at a sync point, blocked on a
//! lock (proven from the lock tables), in the background, or as many copies at once; and what
//! the background holds until `wait` or the end of the run collects it.

use super::*;

/// A step running in the background (parked, blocked, or just not awaited yet).
pub struct Background {
    /// Its index.
    pub step: usize,
    /// The running work and what it must come to.
    pub work: BackgroundWork,
}

impl Background {
    /// The one job's handle (copies are never parked or blocked).
    pub fn job(&mut self) -> Result<&mut JoinHandle<JobResult>, Failure> {
        match &mut self.work {
            BackgroundWork::One(handle, _) => Ok(handle),
            BackgroundWork::Copies(..) => Err(Failure::at(
                Some(self.step),
                "copies of a request cannot be parked or released",
            )),
        }
    }

    /// Whether it has finished (its outcome waits to be collected).
    pub fn is_finished(&self) -> bool {
        match &self.work {
            BackgroundWork::One(handle, _) => handle.is_finished(),
            BackgroundWork::Copies(handle, _) => handle.is_finished(),
        }
    }

    /// Stops it.
    pub fn abort(&self) {
        match &self.work {
            BackgroundWork::One(handle, _) => handle.abort(),
            BackgroundWork::Copies(handle, _) => handle.abort(),
        }
    }
}

/// What runs in the background.
pub enum BackgroundWork {
    /// One job, and what its outcome must be when collected.
    One(JoinHandle<JobResult>, Option<Expect>),
    /// Copies of a request, and what they must be.
    Copies(JoinHandle<Vec<Outcome>>, CopiesExpect),
}

/// What the copies of a concurrent step must be.
#[derive(Clone, Debug, Default)]
pub struct CopiesExpect {
    /// Every copy matches this.
    pub all: Option<Expect>,
    /// This many copies match each of these.
    pub counts: Vec<CountExpect>,
    /// Every copy matches one of these.
    pub any: Vec<Expect>,
}

/// Blocking as the lock tables must show it (`expect_blocked`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExpectBlocked {
    /// The actor that must hold the awaited lock (or, `queued`, wait for it ahead).
    pub on: String,
    /// Whether `on` holds the awaited lock or waits for it too, ahead in its queue.
    pub how: crate::evidence::BlockedBy,
    /// Acceptable lock types (empty: any).
    pub lock: Vec<LockType>,
    /// For advisory locks: the tenant whose workspace lock must be the one awaited.
    pub object: Option<String>,
}

/// How a job is launched.
pub struct Launch<'e> {
    /// Park it at this sync point, on this replica (with `expect_blocked`: armed, and reached once
    /// the request is unblocked).
    pub park: Option<(usize, &'static str)>,
    /// It must block on a lock held by another actor.
    pub expect_blocked: Option<&'e ExpectBlocked>,
    /// Leave it running (collected by `wait` or at the end).
    pub background: bool,
    /// What its outcome must be.
    pub expect: Option<&'e Expect>,
}

impl Executor<'_> {
    /// Launches `job` for step `step` of `actor` as `how` says: arms its sync point, runs it to
    /// completion, or leaves it running parked, blocked (proven from the lock tables) or in the
    /// background.
    pub async fn launch(
        &mut self,
        step: usize,
        actor: &str,
        job: Job,
        describe: String,
        note: Option<&str>,
        how: Launch<'_>,
    ) -> Result<(), Failure> {
        if let Some((replica, point)) = how.park {
            let key = SlotKey::new(actor.to_owned(), point.to_owned());
            self.target
                .arm(replica, key.clone())
                .await
                .map_err(|e| Failure::at(Some(step), format!("arming {key}: {e}")))?;
            self.parked_on.insert(key, replica);
        }
        self.event(Some(step), Some(actor), EventKind::Launched, describe, None);
        self.annotate(note);
        let background = how.park.is_some() || how.expect_blocked.is_some() || how.background;
        if !background {
            let limit = self.step_timeout;
            return match tokio::time::timeout(limit, run_job(job)).await {
                Ok(result) => {
                    let outcome = self.absorb(actor, result);
                    self.expect_outcome(step, actor, &outcome, how.expect)
                }
                Err(_) => Err(self
                    .failure_with_diagnostics(
                        step,
                        format!("{actor}: did not complete within {limit:?} (blocked?)"),
                    )
                    .await),
            };
        }
        let mut handle = tokio::spawn(run_job(job));
        // With both, the request must block first; it parks at the armed point once the holder
        // lets it go (a later `release` of that point waits for it).
        match (how.expect_blocked, how.park) {
            (Some(blocked), _) => {
                self.prove_blocked(step, actor, blocked, &mut handle)
                    .await?
            }
            (None, Some((replica, point))) => {
                self.until_parked(step, actor, replica, point, &mut handle)
                    .await?
            }
            (None, None) => {}
        }
        self.background.insert(
            actor.to_owned(),
            Background {
                step,
                work: BackgroundWork::One(handle, how.expect.cloned()),
            },
        );
        Ok(())
    }

    /// Leaves copies of a request running in the background (collected by `wait`).
    pub fn background_copies(
        &mut self,
        step: usize,
        actor: &str,
        all: BoxFuture<'static, Vec<Outcome>>,
        expect: CopiesExpect,
    ) {
        let handle = tokio::spawn(all);
        self.background.insert(
            actor.to_owned(),
            Background {
                step,
                work: BackgroundWork::Copies(handle, expect),
            },
        );
    }

    /// Records what the copies of step `step` came to — a tally by outcome in the trace — and
    /// checks them: against `expect_all`, `expect_counts` and `expect_any`, or, with none, that no
    /// copy failed or answered 5xx.
    pub fn settle_copies(
        &mut self,
        step: usize,
        actor: &str,
        outcomes: &[Outcome],
        expect: &CopiesExpect,
    ) -> Result<(), Failure> {
        let mut by_summary: BTreeMap<String, usize> = BTreeMap::new();
        for o in outcomes {
            *by_summary.entry(o.summary()).or_default() += 1;
            self.record_response(o);
        }
        let tally = by_summary
            .iter()
            .map(|(s, c)| format!("{c} × {s}"))
            .collect::<Vec<_>>()
            .join(", ");
        if expect.any.is_empty() {
            self.event(Some(step), Some(actor), EventKind::Completed, tally, None);
        } else {
            // Under `expect_any` (the outcomes a fault may cause) how many copies a fault hit
            // varies between correct runs: the tally is measured, not part of the signature.
            self.event(
                Some(step),
                Some(actor),
                EventKind::Completed,
                format!("{} copies, each an outcome of expect_any", outcomes.len()),
                None,
            );
            self.measured(Some(tally));
        }
        if expect.all.is_none() && expect.any.is_empty() {
            if let Some((k, o)) = outcomes
                .iter()
                .enumerate()
                .find(|(_, o)| o.status >= 500 || o.error.is_some())
            {
                return Err(Failure::at(
                    Some(step),
                    format!(
                        "{actor} copy {k}: {} (a server error, and the step expected nothing)",
                        o.summary()
                    ),
                ));
            }
        }
        if let Some(e) = &expect.all {
            for (k, o) in outcomes.iter().enumerate() {
                self.check(o, e)
                    .map_err(|m| Failure::at(Some(step), format!("{actor} copy {k}: {m}")))?;
            }
            self.checks += 1;
        }
        if !expect.any.is_empty() {
            for (k, o) in outcomes.iter().enumerate() {
                if !expect.any.iter().any(|e| self.check(o, e).is_ok()) {
                    return Err(Failure::at(
                        Some(step),
                        format!(
                            "{actor} copy {k}: {} matches none of expect_any",
                            o.summary()
                        ),
                    ));
                }
            }
            self.checks += 1;
        }
        for c in &expect.counts {
            let matched = outcomes
                .iter()
                .filter(|o| self.check(o, &c.expect).is_ok())
                .count();
            if matched != c.count {
                let wanted = serde_json::to_string(&c.expect).unwrap_or_default();
                return Err(Failure::at(
                    Some(step),
                    format!(
                        "{actor}: expected {} copies matching {wanted}, got {matched}",
                        c.count
                    ),
                ));
            }
            self.checks += 1;
        }
        Ok(())
    }

    /// Collects `actor`'s background step (bounded by the step timeout) and checks its outcome.
    pub async fn collect(&mut self, at: usize, actor: &str) -> Result<(), Failure> {
        let bg = self.background.remove(actor).ok_or_else(|| {
            Failure::at(
                Some(at),
                format!("{actor} has no step running in the background"),
            )
        })?;
        let limit = self.step_timeout;
        let late = |e: &dyn std::fmt::Display| {
            format!(
                "{actor}'s step {} did not finish within {limit:?} ({e})",
                bg.step
            )
        };
        match bg.work {
            BackgroundWork::One(handle, expect) => {
                let result = match tokio::time::timeout(limit, handle).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        return Err(Failure::at(
                            Some(at),
                            format!("{actor}'s step panicked: {e}"),
                        ))
                    }
                    Err(e) => return Err(self.failure_with_diagnostics(at, late(&e)).await),
                };
                let outcome = self.absorb(actor, result);
                self.expect_outcome(bg.step, actor, &outcome, expect.as_ref())
            }
            BackgroundWork::Copies(handle, expect) => {
                let outcomes = match tokio::time::timeout(limit, handle).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        return Err(Failure::at(
                            Some(at),
                            format!("{actor}'s copies panicked: {e}"),
                        ))
                    }
                    Err(e) => return Err(self.failure_with_diagnostics(at, late(&e)).await),
                };
                self.settle_copies(bg.step, actor, &outcomes, &expect)
            }
        }
    }

    /// Collects every step still running at the end, in step order.
    pub async fn finish_background(&mut self) -> Vec<Failure> {
        let mut pending: Vec<(String, usize)> = self
            .background
            .iter()
            .map(|(a, b)| (a.clone(), b.step))
            .collect();
        pending.sort_by_key(|(_, step)| *step);
        let mut failures = Vec::new();
        for (actor, step) in pending {
            if let Err(mut f) = self.collect(step, &actor).await {
                if f.message.contains("did not finish") {
                    f.message = format!("{actor}'s background step never finished (still parked or blocked at the end)");
                }
                failures.push(f);
            }
        }
        failures
    }
}
