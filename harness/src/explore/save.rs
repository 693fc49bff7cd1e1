//! A violation, minimised and written out as an ordinary scenario file (the format of
//! `scenarios/`): the starting state as fixtures, each decision as a launch or a `release` with the
//! `park_at` / `expect_blocked` the engine observed, a `wait` per operation carrying what the
//! reference model says, and the violated invariant as an assertion. `harbor-certify run
//! --scenarios-dir DIR ID --flaw F` reproduces it.
//!
//! Minimising: operations are dropped one at a time while the same anomaly still shows, then the
//! shortest prefix of the choices that still shows it is kept (after the prefix the lowest enabled
//! operation goes first).

use std::path::{Path, PathBuf};

use super::anomaly::{self, Anomaly};
use super::engine::{Engine, ScheduleRun, Stop};
use super::ops::{Does, Operation, PROBE_HOLDING, RAW_UPDATED, ROW_PROBE_HOLDING};
use super::start::Start;
use super::Violation;
use crate::operation::WorkspaceOp;
use crate::scenario::file::{self, ScenarioFile};
use crate::scenario::format::{ActorDef, Assertion, Expect, Severity, TenantFixture};
use crate::scenario::step::clock::RawAdvanceClock;
use crate::scenario::step::fault::RawFault;
use crate::scenario::step::release::RawRelease;
use crate::scenario::step::request::{RawExpectBlocked, RawRequest};
use crate::scenario::step::sql::RawSql;
use crate::scenario::step::until::RawUntil;
use crate::scenario::step::wait::RawWait;
use crate::scenario::step::RawStep;
use crate::schedule::{Replay, Schedule};

/// Whether `choices` on `ops` from `start` still shows `anomaly`; the run when it does.
async fn reproduces(
    engine: &Engine<'_>,
    ops: &[Operation],
    start: Start,
    choices: &[usize],
    anomaly: Anomaly,
) -> Result<Option<ScheduleRun>, String> {
    let run = engine
        .run(ops, start, &mut Replay::prefix(&Schedule(choices.to_vec())))
        .await?;
    // Dropping an operation renumbers the rest: a recorded choice that cannot run now is a
    // different schedule, not this one.
    if run.refused.is_some() {
        return Ok(None);
    }
    let serial = anomaly::serial_outcomes(ops, start);
    let shown = anomaly::check(ops, start, &run, &serial)
        .iter()
        .any(|f| f.anomaly == anomaly);
    Ok(shown.then_some(run))
}

/// Minimises `v` and writes it under `dir`; returns the file and the minimal run.
pub async fn save(
    engine: &Engine<'_>,
    dir: &Path,
    v: &Violation,
) -> Result<(PathBuf, ScheduleRun), String> {
    let mut ops = v.operations.clone();
    let mut choices = v.schedule.clone();
    let mut best = v.run.clone().ok_or("the violation has no run")?;
    // Drop operations.
    let mut j = 0;
    while ops.len() > 1 && j < ops.len() {
        let fewer: Vec<Operation> = ops
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != j)
            .map(|(_, o)| *o)
            .collect();
        let mapped: Vec<usize> = choices
            .iter()
            .filter(|&&c| c != j)
            .map(|&c| if c > j { c - 1 } else { c })
            .collect();
        match reproduces(engine, &fewer, v.start, &mapped, v.anomaly).await? {
            Some(run) => {
                ops = fewer;
                choices = run.decisions.iter().map(|d| d.chosen).collect();
                best = run;
            }
            None => j += 1,
        }
    }
    // The shortest prefix of choices that still shows it.
    for len in 0..choices.len() {
        if let Some(run) = reproduces(engine, &ops, v.start, &choices[..len], v.anomaly).await? {
            best = run;
            break;
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let base = format!(
        "EXPLORE-{}-{}",
        v.anomaly.as_str().to_uppercase().replace('_', "-"),
        ops.iter()
            .map(|o| o.as_str().to_uppercase().replace('_', "-"))
            .collect::<Vec<_>>()
            .join("-")
    );
    // Two violations may minimise to the same operations: the second file does not overwrite
    // the first.
    let (id, path) = (1..)
        .map(|n| match n {
            1 => base.clone(),
            n => format!("{base}-{n}"),
        })
        .map(|id| {
            let path = dir.join(format!("{id}.toml"));
            (id, path)
        })
        .find(|(_, p)| !p.exists())
        .expect("some file name is free");
    std::fs::write(
        &path,
        scenario(
            &id,
            &ops,
            v.start,
            &best,
            v.anomaly,
            &v.detail,
            engine.target.replicas(),
        )?,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, best))
}

/// The scenario file of `run`, through the one writer of scenario files: on as many replicas as
/// the exploration ran, its operations on the replica the explorer sent them to (the second of
/// several, else the only one).
pub fn scenario(
    id: &str,
    ops: &[Operation],
    start: Start,
    run: &ScheduleRun,
    anomaly: Anomaly,
    detail: &str,
    replicas: usize,
) -> Result<String, String> {
    let op_replica = usize::from(replicas > 1);
    let names: Vec<&str> = ops.iter().map(|o| o.as_str()).collect();
    let choices: Vec<String> = run.decisions.iter().map(|d| d.chosen.to_string()).collect();
    let mut file = ScenarioFile::new(
        id,
        &format!(
            "Exploration found {}: {} from {}",
            anomaly.as_str(),
            names.join(" + "),
            start.as_str()
        ),
        "harbor-certify explore",
        Severity::High,
        "concurrency",
    );
    file.description = format!(
        "{detail}\nSchedule (operation per decision): [{}].\n",
        choices.join(" ")
    );
    file.service.replicas = replicas;
    file.service.step_timeout_ms = 2000;
    let mut tenant = TenantFixture::named("w");
    if start != Start::Pending {
        tenant.oauth = vec!["qbo".into()];
    }
    file.tenants = vec![tenant];
    file.actors = vec![ActorDef::new("S", Some("w.owner"), "Set-up")];
    for (i, op) in ops.iter().enumerate() {
        // A fault step has no actor; the raw writer has no user.
        if op.fault().is_some() {
            continue;
        }
        let user = (!op.is_raw_sql()).then_some("w.owner");
        file.actors
            .push(ActorDef::new(&format!("E{i}"), user, op.as_str()));
    }
    match start {
        Start::Pending => file.steps.push(RawStep::Authorize(RawRequest {
            actor: "S".into(),
            note: Some("the flow the callback completes".into()),
            provider: Some("qbo".into()),
            ..RawRequest::default()
        })),
        Start::Stale => file.steps.push(RawStep::AdvanceClock(RawAdvanceClock {
            note: Some("the access token is stale".into()),
            seconds: crate::model::TOKEN_TTL as u64,
        })),
        Start::Connected => {}
    }
    // The model's answers, in the serial order the operations finished in (or the first order):
    // what each launch step expects when the anomaly is about answers.
    let serial = anomaly::serial_outcomes(ops, start);
    let chosen = serial
        .iter()
        .find(|s| s.order == run.completion_order)
        .or_else(|| serial.first());
    let about_answers = matches!(
        anomaly,
        Anomaly::NotSerializable | Anomaly::ActivationOfNonConnectedWorkspace
    );
    let with_fault = ops.iter().any(|o| o.fault().is_some());
    let faults_before = anomaly::faults_before(ops, run);
    let expect_of = |i: usize| -> Option<Expect> {
        // An operation a fault interrupted: its documented answer, or a 5xx fails the step; a
        // crash leaves it no answer at all.
        if let Some(f) = run.finished[i]
            .as_ref()
            .filter(|f| with_fault && anomaly::is_interrupted(&faults_before[i], f))
        {
            return Some(if f.status == 0 {
                Expect {
                    ok: Some(false),
                    error_contains: Some("request failed".into()),
                    ..Expect::default()
                }
            } else {
                Expect {
                    status: Some(f.status),
                    code: Some(f.code.clone().unwrap_or_default()),
                    ..Expect::default()
                }
            });
        }
        let e = chosen?.answers[i].as_ref()?;
        about_answers.then(|| Expect {
            status: Some(e.status),
            code: e.code.map(str::to_owned),
            ..Expect::default()
        })
    };
    let blocked = |on: String| RawExpectBlocked {
        on,
        ..RawExpectBlocked::default()
    };
    let intruder = intruder(run);
    let mut raw_in_background = false;
    for (d, decision) in run.decisions.iter().enumerate() {
        let i = decision.chosen;
        let op = ops[i];
        let actor = format!("E{i}");
        let after: Vec<&Stop> = run
            .observed
            .iter()
            .filter(|o| o.op == i && o.decision > d)
            .map(|o| &o.stop)
            .collect();
        let first = run
            .observed
            .iter()
            .find(|o| o.op == i && o.decision == d + 1)
            .map(|o| &o.stop);
        let next_park = after.iter().find_map(|s| match s {
            Stop::Parked(p) if ![RAW_UPDATED, PROBE_HOLDING, ROW_PROBE_HOLDING].contains(p) => {
                Some(*p)
            }
            _ => None,
        });
        let mut blocked_on = match first {
            // The holder's tag as the file names its actors: a run made beside other
            // schedules tagged it with its lane (`L<lane>E<i>`).
            Some(Stop::Blocked(by)) => by.first().map(|tag| file_actor(tag)),
            _ => None,
        };
        if intruder.is_some_and(|(step, _)| step == d) {
            blocked_on = intruder.map(|(_, holder)| format!("E{holder}"));
        }
        let launched_before = run.decisions[..d].iter().any(|x| x.chosen == i);
        // A request that went through the lock probe's lock must, on a build that takes it, wait
        // for the probe: the step says so, and fails where it does not.
        if let Some((bypassed, probe)) = run.lock_bypassed {
            if bypassed == i && !launched_before {
                blocked_on = Some(format!("E{probe}"));
            }
        }
        let step = match op.does() {
            Does::Faults(kinds) => {
                let (last, first) = kinds.split_last().expect("a fault operation does a fault");
                let fault = |step: &super::ops::FaultStep| {
                    RawStep::Fault(RawFault {
                        note: Some(format!("{actor}: {op}")),
                        fault: step.kind,
                        replica: step.on_operations_replica.then_some(op_replica),
                        actor: None,
                        for_ms: None,
                    })
                };
                file.steps.extend(first.iter().map(fault));
                fault(last)
            }
            Does::RawSql(_) if launched_before => {
                if raw_in_background {
                    file.steps.push(RawStep::Wait(RawWait {
                        actor: actor.clone(),
                        note: None,
                    }));
                }
                RawStep::Sql(RawSql {
                    actor,
                    sql: "COMMIT".into(),
                    ..RawSql::default()
                })
            }
            Does::RawSql(_) => {
                raw_in_background = blocked_on.is_some();
                RawStep::Sql(RawSql {
                    actor,
                    sql: op
                        .raw_sql(&super::ops::RawNames {
                            workspace: "{workspace:w}",
                            workspace_lock: "{workspace_lock:w}",
                            lock_row: Some("{query:lock_qbo_row:w}"),
                        })
                        .expect("a raw session has its statement"),
                    expect_blocked: blocked_on.map(blocked),
                    ..RawSql::default()
                })
            }
            Does::Request(_) if launched_before => {
                let point = run
                    .observed
                    .iter()
                    .filter(|o| o.op == i && o.decision <= d)
                    .filter_map(|o| match o.stop {
                        Stop::Parked(p) => Some(p),
                        _ => None,
                    })
                    .next_back()
                    .unwrap_or("");
                RawStep::Release(RawRelease {
                    actor,
                    point: point.into(),
                    replica: op_replica,
                    park_at: next_park.map(str::to_owned),
                    expect_blocked: blocked_on.map(blocked),
                    ..RawRelease::default()
                })
            }
            Does::Request(kind) => {
                let r = RawRequest {
                    actor,
                    replica: op_replica,
                    provider: (kind != WorkspaceOp::Activate).then(|| "qbo".to_owned()),
                    consent_of: (kind == WorkspaceOp::Callback).then(|| "S".to_owned()),
                    background: next_park.is_none() && blocked_on.is_none(),
                    expect: expect_of(i),
                    park_at: next_park.map(str::to_owned),
                    expect_blocked: blocked_on.map(blocked),
                    ..RawRequest::default()
                };
                request_step(kind, r)
            }
        };
        file.steps.push(step);
    }
    for &i in &run.completion_order {
        if matches!(ops[i].does(), Does::Request(_)) {
            file.steps.push(RawStep::Wait(RawWait {
                actor: format!("E{i}"),
                note: None,
            }));
        }
    }
    let most = |f: fn(&anomaly::SerialOutcome) -> u64| serial.iter().map(f).max().unwrap_or(0);
    let setup_exchanges = u64::from(start != Start::Pending);
    let counter = |name: &str, value: u64| Assertion {
        provider_counter: Some(format!("qbo.{name}")),
        equals: Some((value as i64).into()),
        ..Assertion::default()
    };
    let found = match anomaly {
        Anomaly::DoubleActivation => Some(Assertion {
            sql: Some("SELECT count(*) <= 1 AS ok FROM workspace_activations WHERE workspace_id = '{workspace:w}'".into()),
            equals: Some(true.into()),
            ..Assertion::default()
        }),
        Anomaly::DoubleConsume => Some(counter("code_exchanges_ok", setup_exchanges + most(|s| s.exchanges))),
        Anomaly::DuplicateRefresh => Some(counter("refreshes_ok", most(|s| s.refreshes))),
        Anomaly::LockLeftHeld => Some(Assertion {
            no_lock_held: Some("w".into()),
            ..Assertion::default()
        }),
        Anomaly::TokenNotBound => Some(Assertion {
            tokens_bound: Some(true),
            ..Assertion::default()
        }),
        // Every grant — the start's and each one exchanged — stored or revoked, once the
        // revocation outbox has drained (the `until` step below).
        // `grants_accounted` also asks every CONNECTED connection to hold a live grant.
        Anomaly::GrantOrphaned | Anomaly::StoredGrantDead => Some(Assertion {
            grants_accounted: Some(true),
            ..Assertion::default()
        }),
        Anomaly::DocumentsOrphaned => Some(Assertion {
            sql: Some(format!(
                "{} AND d.workspace_id = '{{workspace:w}}'",
                crate::oracles::ORPHANED_DOCUMENTS
            )),
            equals: Some(0.into()),
            ..Assertion::default()
        }),
        _ => None,
    };
    // After a fault, as the engine does (`Engine::drain_outbox`): the clock past the lease an
    // interrupted request held on the intent it wrote ahead, then the outbox drained — a rotation
    // a cut interrupted is adopted only then, and without it the file's end would flag the correct
    // build too.
    if with_fault {
        file.steps.push(RawStep::AdvanceClock(RawAdvanceClock {
            note: Some(
                "past the lease an interrupted request held on its revocation intent".into(),
            ),
            seconds: harbor_service::outbox::LEASE.as_secs() + 1,
        }));
    }
    if anomaly == Anomaly::GrantOrphaned || with_fault {
        file.steps.push(RawStep::Until(RawUntil {
            held_by_pause: None,
            faults_struck: None,
            note: None,
            provider_counter: None,
            at_least: None,
            replicas_ready: false,
            outbox_empty: true,
        }));
    }
    if let Some(a) = found {
        file.assertions.push(Assertion {
            note: Some(format!(
                "the invariant exploration found broken ({})",
                anomaly.as_str()
            )),
            ..a
        });
    }
    file.assertions.push(Assertion {
        no_lock_held: Some("w".into()),
        ..Assertion::default()
    });
    file::write(&file, "")
}

/// The request step of `kind` (the scenario format names each kind's step).
fn request_step(kind: WorkspaceOp, r: RawRequest) -> RawStep {
    match kind {
        WorkspaceOp::Activate => RawStep::Activate(r),
        WorkspaceOp::Authorize => RawStep::Authorize(r),
        WorkspaceOp::Callback => RawStep::Callback(r),
        WorkspaceOp::Disconnect => RawStep::Disconnect(r),
        WorkspaceOp::Revoke => RawStep::Revoke(r),
        WorkspaceOp::Sync => RawStep::Sync(r),
        WorkspaceOp::ListConnections => RawStep::ListConnections(r),
        WorkspaceOp::ListDocuments => RawStep::ListDocuments(r),
    }
}

/// For a broken mutual exclusion: the decision after which the second request parked under the
/// lock, and the operation already inside.
fn intruder(run: &ScheduleRun) -> Option<(usize, usize)> {
    let (a, pa, b, pb) = run.exclusion_broken?;
    let at = |op: usize, point: &'static str| {
        run.observed
            .iter()
            .position(|o| o.op == op && o.stop == Stop::Parked(point))
    };
    let (ia, ib) = (at(a, pa)?, at(b, pb)?);
    let (late, early, pos) = if ia > ib { (a, b, ia) } else { (b, a, ib) };
    let decision = run.observed[pos].decision.checked_sub(1)?;
    // Only when the intruder's own launch or release took it there: then the file can say that
    // this step must block instead.
    (run.decisions.get(decision)?.chosen == late).then_some((decision, early))
}

/// An engine's actor tag as a saved file names the actor: `E<i>`, whatever lane prefix a run made
/// beside other schedules gave it (`L<lane>E<i>`).
fn file_actor(tag: &str) -> String {
    match tag.strip_prefix('L').and_then(|rest| rest.split_once('E')) {
        Some((lane, op)) if lane.bytes().all(|b| b.is_ascii_digit()) && !lane.is_empty() => {
            format!("E{op}")
        }
        _ => tag.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::file_actor;

    #[test]
    fn a_lane_tag_is_saved_as_the_operation_it_names() {
        assert_eq!(file_actor("L3E0"), "E0");
        assert_eq!(file_actor("E1"), "E1");
        assert_eq!(file_actor("LE1"), "LE1", "no lane number: not a lane's tag");
    }
}
