//! Driving a schedule: asking the scheduler for each decision among the operations that can run,
//! carrying it out, and settling after it; and the faults a decision applies in place.

use super::*;

impl Engine<'_> {
    /// Does `steps` in order, each once it has taken effect; `replica` is the operations' one.
    pub(super) async fn do_faults(
        &self,
        steps: &[crate::explore::ops::FaultStep],
        replica: usize,
    ) -> Result<(), String> {
        for step in steps {
            let fault = crate::faults::Fault {
                kind: step.kind,
                replica: step.on_operations_replica.then_some(replica),
                actor: None,
                down_for: Duration::ZERO,
            };
            if let Err(e) = self.target.apply_fault(&fault).await {
                return Err(format!("the fault {} failed: {e}", step.kind.as_str()));
            }
        }
        Ok(())
    }

    /// Advances the operations until all are done; a [`Halt`] says why it stopped short.
    pub(super) async fn drive(
        &self,
        t: &TenantWorkspace,
        consent: Option<&Consent>,
        actors: &mut [Running],
        run: &mut ScheduleRun,
        scheduler: &mut dyn Scheduler,
    ) -> Result<(), Halt> {
        loop {
            let decision = run.decisions.len();
            let settling = Instant::now();
            let settled = self.settle(actors, run, decision).await;
            run.spent.settle += settling.elapsed();
            settled.map_err(Halt::Stuck)?;
            self.check_exclusion(actors, run);
            let enabled: Vec<usize> = actors
                .iter()
                .enumerate()
                .filter(|(_, a)| !a.launched || matches!(a.stop, Some(Stop::Parked(_))))
                .map(|(i, _)| i)
                .collect();
            if enabled.is_empty() {
                if actors.iter().all(|a| a.stop == Some(Stop::Done)) {
                    return Ok(());
                }
                let waiting: Vec<String> = actors
                    .iter()
                    .filter(|a| a.stop != Some(Stop::Done))
                    .map(|a| format!("{} {:?}", a.tag, a.stop))
                    .collect();
                return Err(Halt::Stuck(format!(
                    "nothing can advance but {} is unfinished (a deadlock)",
                    waiting.join(", ")
                )));
            }
            let ready: Vec<Ready> = enabled
                .iter()
                .map(|&i| Ready {
                    step: i,
                    actor: Some(actors[i].tag.clone()),
                })
                .collect();
            let chosen = match scheduler.next(&ready) {
                Ok(Some(chosen)) if enabled.contains(&chosen) => chosen,
                Ok(Some(chosen)) => {
                    return Err(Halt::Refused(format!(
                        "{} chose {chosen}, which cannot run (only {enabled:?} can)",
                        scheduler.name()
                    )))
                }
                Ok(None) => {
                    return Err(Halt::Refused(format!(
                        "{} stopped with {enabled:?} still able to run",
                        scheduler.name()
                    )))
                }
                Err(e) => return Err(Halt::Refused(format!("{}: {e}", scheduler.name()))),
            };
            self.watch_probe(actors, chosen, run);
            self.note_severed(actors, chosen);
            run.decisions.push(Decision { enabled, chosen });
            let replica_downed = replica_downed(actors);
            let parked_at = match actors[chosen].stop {
                Some(Stop::Parked(point)) if !actors[chosen].op.is_raw_sql() => Some(point),
                _ => None,
            };
            let advancing = Instant::now();
            let advanced = self
                .advance(t, consent, &mut actors[chosen], chosen, run)
                .await;
            run.spent.advance += advancing.elapsed();
            // A request released after its replica was stopped or crashed may have been taken
            // with it after the settle saw it parked (a stop that does not wait drops its tasks as
            // it goes): its slot is gone, and it is on its way to the failure its client is about
            // to see — what the next settle waits for — not stuck.
            let advanced = match (advanced, parked_at) {
                (Err(e), Some(point)) if replica_downed => {
                    if self.slot_parked(&actors[chosen], point).await {
                        Err(e)
                    } else {
                        Ok(())
                    }
                }
                (advanced, _) => advanced,
            };
            advanced.map_err(Halt::Stuck)?;
        }
    }
}
