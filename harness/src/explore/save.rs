//! A violation, minimised and written out as an ordinary scenario file (the format of
//! `scenarios/`): the starting state as fixtures, each decision as a launch or a `release` with the
//! `park_at` / `expect_blocked` the engine observed, a `wait` per operation carrying what the
//! reference model says, and the violated invariant as an assertion. `harbor-certify run
//! --scenarios-dir DIR ID --flaw F` reproduces it.
//!
//! Minimising: operations are dropped one at a time while the same anomaly still shows, then the
//! shortest prefix of the choices that still shows it is kept (after the prefix the lowest enabled
//! operation goes first).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::engine::{Engine, ScheduleRun, Stop};
use super::ops::{Operation, Start, RAW_UPDATED};
use super::oracle::{self, Anomaly};
use super::strategy::Replay;
use super::Violation;

/// Whether `choices` on `ops` from `start` still shows `anomaly`; the run when it does.
async fn reproduces(
    engine: &Engine<'_>,
    ops: &[Operation],
    start: Start,
    choices: &[usize],
    anomaly: Anomaly,
) -> Result<Option<ScheduleRun>, String> {
    let run = engine
        .run(ops, start, &mut Replay::new(choices.to_vec()))
        .await?;
    let serial = oracle::serial_outcomes(ops, start);
    let shown = oracle::check(ops, start, &run, &serial)
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
    let id = format!(
        "EXPLORE-{}-{}",
        v.anomaly.as_str().to_uppercase().replace('_', "-"),
        ops.iter()
            .map(|o| o.as_str().to_uppercase().replace('_', "-"))
            .collect::<Vec<_>>()
            .join("-")
    );
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(
        &path,
        scenario(&id, &ops, v.start, &best, v.anomaly, &v.detail),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, best))
}

/// The scenario file of `run`.
pub fn scenario(
    id: &str,
    ops: &[Operation],
    start: Start,
    run: &ScheduleRun,
    anomaly: Anomaly,
    detail: &str,
) -> String {
    let mut out = String::new();
    let names: Vec<&str> = ops.iter().map(|o| o.as_str()).collect();
    let choices: Vec<String> = run.decisions.iter().map(|d| d.chosen.to_string()).collect();
    let _ = writeln!(out, "id = \"{id}\"");
    let _ = writeln!(
        out,
        "title = \"Exploration found {}: {} from {}\"",
        anomaly.as_str(),
        names.join(" + "),
        start.as_str()
    );
    let _ = writeln!(
        out,
        "source = \"harbor-certify explore\"\nseverity = \"high\"\narea = \"concurrency\""
    );
    let _ = writeln!(
        out,
        "description = \"\"\"\n{}\nSchedule (operation per decision): [{}].\n\"\"\"\n",
        detail.replace('"', "'"),
        choices.join(" ")
    );
    let _ = writeln!(out, "[service]\nreplicas = 2\nstep_timeout_ms = 2000\n");
    let _ = writeln!(out, "[[tenants]]\nname = \"w\"");
    if start != Start::Pending {
        let _ = writeln!(out, "oauth = [\"qbo\"]");
    }
    let _ = writeln!(
        out,
        "\n[[actors]]\nname = \"S\"\nuser = \"w.owner\"\nrole = \"Set-up\""
    );
    for (i, op) in ops.iter().enumerate() {
        if *op == Operation::DbCut {
            // A fault step has no actor.
            continue;
        }
        let user = if *op == Operation::RawDisconnect {
            String::new()
        } else {
            "user = \"w.owner\"\n".into()
        };
        let _ = writeln!(out, "\n[[actors]]\nname = \"E{i}\"\n{user}role = \"{op}\"");
    }
    match start {
        Start::Pending => {
            let _ = writeln!(out, "\n[[steps]]\nactor = \"S\"\ndo = \"authorize\"\nprovider = \"qbo\"\nnote = \"the flow the callback completes\"");
        }
        Start::Stale => {
            let _ = writeln!(out, "\n[[steps]]\ndo = \"advance_clock\"\nseconds = {}\nnote = \"the access token is stale\"", crate::model::TOKEN_TTL);
        }
        Start::Connected => {}
    }
    // The model's answers, in the serial order the operations finished in (or the first order):
    // what each launch step expects when the anomaly is about answers.
    let serial = oracle::serial_outcomes(ops, start);
    let chosen = serial
        .iter()
        .find(|s| s.order == run.completion_order)
        .or_else(|| serial.first());
    let about_answers = matches!(
        anomaly,
        Anomaly::NotSerializable | Anomaly::ActivationOfNonConnectedWorkspace
    );
    let expect_of = |i: usize| -> Option<String> {
        // An operation the cut interrupted: its documented answer, or a 5xx fails the step.
        if let Some(f) = run.finished[i]
            .as_ref()
            .filter(|f| ops.contains(&Operation::DbCut) && oracle::is_unavailable(f))
        {
            return Some(format!(
                "expect = {{ status = {}, code = \"{}\" }}",
                f.status,
                f.code.as_deref().unwrap_or_default()
            ));
        }
        let e = chosen?.answers[i].as_ref()?;
        about_answers.then(|| match e.code {
            Some(code) => format!("expect = {{ status = {}, code = \"{code}\" }}", e.status),
            None => format!("expect = {{ status = {} }}", e.status),
        })
    };
    let intruder = intruder(run);
    let mut raw_in_background = false;
    for (d, decision) in run.decisions.iter().enumerate() {
        let i = decision.chosen;
        let op = ops[i];
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
            Stop::Parked(p) if *p != RAW_UPDATED => Some(*p),
            _ => None,
        });
        let mut blocked_on = match first {
            Some(Stop::Blocked(by)) => by.first().cloned(),
            _ => None,
        };
        if intruder.is_some_and(|(step, _)| step == d) {
            blocked_on = intruder.map(|(_, holder)| format!("E{holder}"));
        }
        let launched_before = run.decisions[..d].iter().any(|x| x.chosen == i);
        if op == Operation::DbCut {
            let _ = writeln!(
                out,
                "\n[[steps]]\ndo = \"fault\"\nfault = \"postgres_drop_connections\"\nnote = \"E{i}: every replica's database links cut\""
            );
            continue;
        }
        let _ = writeln!(out, "\n[[steps]]\nactor = \"E{i}\"");
        if op == Operation::RawDisconnect {
            if launched_before {
                if raw_in_background {
                    let _ = writeln!(out, "do = \"wait\"\n\n[[steps]]\nactor = \"E{i}\"");
                }
                let _ = writeln!(out, "do = \"sql\"\nsql = \"COMMIT\"");
            } else {
                let _ = writeln!(
                    out,
                    "do = \"sql\"\nsql = \"{}\"",
                    super::ops::raw_disconnect_sql("{workspace:w}")
                );
                if let Some(holder) = &blocked_on {
                    raw_in_background = true;
                    let _ = writeln!(out, "expect_blocked = {{ on = \"{holder}\" }}");
                }
            }
            continue;
        }
        if launched_before {
            let mut from = run
                .observed
                .iter()
                .filter(|o| o.op == i && o.decision <= d)
                .filter_map(|o| match o.stop {
                    Stop::Parked(p) => Some(p),
                    _ => None,
                });
            let point = from.next_back().unwrap_or("");
            let _ = writeln!(out, "do = \"release\"\npoint = \"{point}\"\nreplica = 1");
        } else {
            let _ = writeln!(out, "do = \"{}\"\nreplica = 1", op.scenario_action());
            if op != Operation::Activate {
                let _ = writeln!(out, "provider = \"qbo\"");
            }
            if op == Operation::Callback {
                let _ = writeln!(out, "consent_of = \"S\"");
            }
            if next_park.is_none() && blocked_on.is_none() {
                let _ = writeln!(out, "background = true");
            }
            if let Some(e) = expect_of(i) {
                let _ = writeln!(out, "{e}");
            }
        }
        if let Some(p) = next_park {
            let _ = writeln!(out, "park_at = \"{p}\"");
        }
        if let Some(holder) = blocked_on {
            let _ = writeln!(out, "expect_blocked = {{ on = \"{holder}\" }}");
        }
    }
    for &i in &run.completion_order {
        if !matches!(ops[i], Operation::RawDisconnect | Operation::DbCut) {
            let _ = writeln!(out, "\n[[steps]]\nactor = \"E{i}\"\ndo = \"wait\"");
        }
    }
    let most = |f: fn(&oracle::SerialOutcome) -> u64| serial.iter().map(f).max().unwrap_or(0);
    let setup_exchanges = u64::from(start != Start::Pending);
    let assertion = match anomaly {
        Anomaly::DoubleActivation => Some("sql = \"SELECT count(*) <= 1 AS ok FROM workspace_activations WHERE workspace_id = '{workspace:w}'\"\nequals = true".to_owned()),
        Anomaly::DoubleConsume => Some(format!("provider_counter = \"qbo.code_exchanges_ok\"\nequals = {}", setup_exchanges + most(|s| s.exchanges))),
        Anomaly::DuplicateRefresh => Some(format!("provider_counter = \"qbo.refreshes_ok\"\nequals = {}", most(|s| s.refreshes))),
        Anomaly::LockLeftHeld => Some("no_lock_held = \"w\"".to_owned()),
        Anomaly::TokenNotBound => Some("tokens_bound = true".to_owned()),
        // Every grant — the start's and each one exchanged — stored or revoked, once the
        // revocation outbox has drained (the `until` step written below).
        Anomaly::GrantOrphaned => Some("grants_accounted = true".to_owned()),
        _ => None,
    };
    if anomaly == Anomaly::GrantOrphaned {
        let _ = writeln!(out, "\n[[steps]]\ndo = \"until\"\noutbox_empty = true");
    }
    if let Some(a) = assertion {
        let _ = writeln!(
            out,
            "\n[[assert]]\nnote = \"the invariant exploration found broken ({})\"\n{a}",
            anomaly.as_str()
        );
    }
    let _ = writeln!(out, "\n[[assert]]\nno_lock_held = \"w\"");
    out
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
