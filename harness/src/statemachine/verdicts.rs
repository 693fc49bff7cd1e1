//! What a state-machine run says: its one-paragraph account, a failure saved as an ordinary
//! scenario file (and the command that replays it), and the kill matrix over the flaws it can see.
//!
//! Just past 500 lines on purpose: the account, the saved reproduction and the kill matrix read
//! the same run and are judged together; split, each would carry the others' types.

use std::path::PathBuf;
use std::time::Instant;

use harbor_service::flaws::{Flaw, Flaws};

use super::*;
use crate::provision::Infra;
use crate::target::started::InProcessLauncher;

/// The seeded flaws the state machine can see (each must make it fail).
pub const FLAWS_IT_SEES: &[Flaw] = &[
    Flaw::NoCallbackTenantCheck,
    Flaw::NoCallbackUserCheck,
    Flaw::StateKeptOnFailure,
    Flaw::MemoryStateStore,
    Flaw::NoUniqueActivation,
    Flaw::TokenExposure,
    Flaw::NoMembershipCheck,
    Flaw::DocumentsOutliveGrant,
];

/// The seed of the kill matrix's flaw runs (the correct build's runs draw a new one each time).
pub const KILL_MATRIX_SEED: u64 = 1;

/// Where failing seeds of the correct build are kept (committed; replayed first by every run).
pub const REGRESSIONS: &str = "proptest-regressions/state-machine.txt";

/// A run's one-paragraph account: cases, time, rate, seed, and the minimal failing sequence.
pub fn describe(label: &str, outcome: &Outcome) -> String {
    let rate = f64::from(outcome.cases) / outcome.duration.as_secs_f64().max(1e-9);
    let mut out = format!(
        "{label}: {} case(s) in {:.1} s ({rate:.1} cases/s), seed {}: {}",
        outcome.cases,
        outcome.duration.as_secs_f64(),
        outcome.seed,
        if outcome.failure.is_some() {
            "FAILED"
        } else {
            "passed"
        }
    );
    if let Some((ops, reason)) = &outcome.failure {
        out.push_str(&format!(
            "\n  minimal failing sequence ({} op(s)):",
            ops.len()
        ));
        for (i, op) in ops.iter().enumerate() {
            out.push_str(&format!("\n    {i}: {op:?}"));
        }
        out.push_str(&format!("\n  because: {reason}"));
    }
    out
}

/// The command that replays a saved sequence.
pub fn replay_command(path: &std::path::Path, run_options: &str) -> String {
    let dir = path
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let options = if run_options.is_empty() {
        String::new()
    } else {
        format!(" {run_options}")
    };
    format!("harbor-certify run --scenarios-dir {dir} {id}{options}")
}

/// Saves a failing run's minimal sequence as `DIR/PROPTEST-<label>-<seed>.toml` (see
/// [`to_scenario`]): `None` when the run did not fail, else the path or why it could not be
/// written (the sequence printed beside it is then the only record, and says so).
pub fn save_failure(
    dir: &std::path::Path,
    label: &str,
    outcome: &Outcome,
) -> Option<Result<PathBuf, String>> {
    let (ops, reason) = outcome.failure.as_ref()?;
    Some(write_failure(dir, label, outcome.seed, ops, reason))
}

/// How a saved (or unsaved) counterexample reads in a report, with the command that replays it:
/// `run_options` are what the run was given that the replay needs too (`--flaw F`, `--target P`).
pub fn saved_line(saved: &Result<PathBuf, String>, run_options: &str) -> String {
    match saved {
        Ok(path) => format!(
            "  saved as {} ({})",
            path.display(),
            replay_command(path, run_options)
        ),
        Err(e) => format!("  NOT SAVED: {e} (the seed and sequence above are its record)"),
    }
}

fn write_failure(
    dir: &std::path::Path,
    label: &str,
    seed: u64,
    ops: &[Op],
    reason: &str,
) -> Result<PathBuf, String> {
    let id = format!("PROPTEST-{}-{}", label.to_uppercase(), seed);
    let title = format!(
        "State-machine counterexample ({label}, seed {}): {}",
        seed,
        reason
            .replace('"', "'")
            .chars()
            .take(160)
            .collect::<String>()
    );
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{id}.toml"));
    let text = to_scenario(&id, &title, ops)
        .map_err(|e| format!("the sequence has no scenario form: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The correct build must pass; every flaw of [`FLAWS_IT_SEES`] must make the state machine fail.
/// Returns the report and whether both held. Needs the `flaws` feature for the flaw runs.
pub fn kill_matrix(infra: &Infra, options: &Options) -> (String, bool) {
    let started = Instant::now();
    let mut report = Vec::new();
    let mut total_cases = 0;
    let mut killed = 0;
    let saved = PathBuf::from("reports/proptest");
    let correct = run(&InProcessLauncher::new(infra), options);
    total_cases += correct.cases;
    let mut ok = correct.failure.is_none();
    report.push(describe("correct build", &correct));
    if let Some(saved) = save_failure(&saved, "correct", &correct) {
        report.push(saved_line(&saved, ""));
    }
    for flaw in FLAWS_IT_SEES {
        let name = flaw.name();
        let flaws = match Flaws::enable([*flaw]) {
            Ok(f) => f,
            Err(e) => {
                report.push(format!(
                    "{name}: cannot be enabled ({e}); rebuild with --features flaws"
                ));
                ok = false;
                continue;
            }
        };
        // A fixed seed unless one is given: whether a flaw is caught must not depend on the draw.
        let seed = options.seed.or(Some(KILL_MATRIX_SEED));
        // Enough shrinking to make the counterexample readable; the correct build's failures get
        // the full budget.
        let flawed = run(
            &InProcessLauncher::new(infra).with_flaws(flaws.clone()),
            &Options {
                flaws,
                persistence: None,
                seed,
                max_shrink_iters: options.max_shrink_iters.min(24),
                ..options.clone()
            },
        );
        let caught = flawed.failure.is_some();
        ok &= caught;
        total_cases += flawed.cases;
        killed += usize::from(caught);
        report.push(format!(
            "{} {}",
            if caught { "KILLED  " } else { "SURVIVED" },
            describe(name, &flawed)
        ));
        if let Some(saved) = save_failure(&saved, name, &flawed) {
            report.push(saved_line(&saved, &format!("--flaw {name}")));
        }
    }
    report.push(format!(
        "state machine: correct build {} ({} cases), {killed}/{} flaws killed, {total_cases} cases in {:.1} s",
        if correct.failure.is_none() { "passed" } else { "FAILED" },
        correct.cases,
        FLAWS_IT_SEES.len(),
        started.elapsed().as_secs_f64()
    ));
    (report.join("\n"), ok)
}

/// Writes a sequence as an ordinary scenario file (the format of `scenarios/`, through the one
/// writer): one actor per authorization (so a later callback can name its consent), the model's
/// expectation on every step, and the model's end state as assertions. `harbor-certify run FILE`
/// (with the same `--flaw`) replays it.
pub fn to_scenario(id: &str, title: &str, ops: &[Op]) -> Result<String, String> {
    use crate::scenario::file::ScenarioFile;
    use crate::scenario::format::{self, ActorDef, Assertion, Expect, Severity};
    use crate::scenario::step::{request::RawRequest, RawStep};
    let user = |who: Who| match who {
        Who::Owner => "a.owner",
        Who::Member => "a.member",
        Who::Outsider => "b.owner",
    };
    let actor = |who: Who| match who {
        Who::Owner => "O",
        Who::Member => "M",
        Who::Outsider => "X",
    };
    let expect = |e: &Expected| Expect {
        status: Some(e.status),
        code: e.code.map(str::to_owned),
        body: e
            .field
            .iter()
            .filter_map(|(field, value)| {
                Some((field.to_string(), toml::Value::try_from(value).ok()?))
            })
            .collect(),
        body_excludes: vec!["hbcanary".to_owned()],
        ..Expect::default()
    };
    let mut file = ScenarioFile::new(
        id,
        title,
        "harbor-certify proptest (state machine vs reference model)",
        Severity::High,
        "concurrency",
    );
    file.service.replicas = 2;
    file.service.rate_limit_tenant = Some("60000/10000".into());
    file.service.rate_limit_failed_states = Some("60000/10000".into());
    file.tenants = vec![
        format::TenantFixture::named("a"),
        format::TenantFixture::named("b"),
    ];
    file.actors = vec![
        ActorDef::new("O", Some("a.owner"), "Owner of A"),
        ActorDef::new("M", Some("a.member"), "Member of A"),
        ActorDef::new("X", Some("b.owner"), "Owner of another tenant"),
        ActorDef {
            token: format::TokenChoice::Kind(TokenKind::Expired),
            ..ActorDef::new("E", Some("a.owner"), "Owner of A, expired token")
        },
    ];
    let mut model = Model::new(&PROVIDERS);
    let mut flows: Vec<String> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let note = Some(format!("op {i}: {op:?}"));
        // A request of Harbor's vocabulary: the step, with the model's answer expected.
        let request =
            |model: &mut Model, who: Who, kind: WorkspaceOp, provider: Provider, state, denied| {
                let e = kind.apply(model, who, provider, state, denied);
                RawRequest {
                    actor: actor(who).to_owned(),
                    note: note.clone(),
                    provider: (kind != WorkspaceOp::Activate
                        && kind != WorkspaceOp::ListConnections)
                        .then(|| provider.to_string()),
                    expect: Some(expect(&e)),
                    ..RawRequest::default()
                }
            };
        let step = match op {
            Op::Authorize {
                who,
                provider,
                replica,
            } => {
                let mut r = request(
                    &mut model,
                    *who,
                    WorkspaceOp::Authorize,
                    *provider,
                    0,
                    false,
                );
                let name = format!("F{i}");
                file.actors.push(ActorDef::new(
                    &name,
                    Some(user(*who)),
                    &format!("Flow {i} ({who:?})"),
                ));
                if r.expect.as_ref().and_then(|e| e.status) == Some(200) {
                    flows.push(name.clone());
                }
                r.actor = name;
                r.workspace = Some("a".into());
                r.replica = *replica;
                RawStep::Authorize(r)
            }
            Op::Callback {
                state,
                presenter,
                path,
                denied,
                replica,
            } => {
                // No state issued yet: nothing to present.
                if flows.is_empty() {
                    continue;
                }
                let index = state % flows.len();
                let at = path.unwrap_or(model.states[index].provider);
                let mut r = request(
                    &mut model,
                    *presenter,
                    WorkspaceOp::Callback,
                    at,
                    index,
                    *denied,
                );
                r.consent_of = Some(flows[index].clone());
                r.denied = *denied;
                r.replica = *replica;
                RawStep::Callback(r)
            }
            Op::Activate { who, replica } => {
                let mut r = request(
                    &mut model,
                    *who,
                    WorkspaceOp::Activate,
                    Provider::Qbo,
                    0,
                    false,
                );
                r.workspace = Some("a".into());
                r.replica = *replica;
                RawStep::Activate(r)
            }
            Op::Disconnect { who, provider } => {
                let mut r = request(
                    &mut model,
                    *who,
                    WorkspaceOp::Disconnect,
                    *provider,
                    0,
                    false,
                );
                r.workspace = Some("a".into());
                RawStep::Disconnect(r)
            }
            Op::Revoke { who, provider } => {
                let mut r = request(&mut model, *who, WorkspaceOp::Revoke, *provider, 0, false);
                r.workspace = Some("a".into());
                r.replica = 1;
                RawStep::Revoke(r)
            }
            Op::Sync { provider, replica } => {
                let mut r = request(
                    &mut model,
                    Who::Member,
                    WorkspaceOp::Sync,
                    *provider,
                    0,
                    false,
                );
                r.replica = *replica;
                RawStep::Sync(r)
            }
            Op::ListConnections => RawStep::ListConnections(request(
                &mut model,
                Who::Member,
                WorkspaceOp::ListConnections,
                Provider::Qbo,
                0,
                false,
            )),
            Op::AdvanceClock { seconds } => {
                model.clock += seconds;
                RawStep::AdvanceClock(crate::scenario::step::clock::RawAdvanceClock {
                    note,
                    seconds: *seconds as u64,
                })
            }
            Op::TokenFault { on } => {
                model.token_fault = *on;
                for p in PROVIDERS {
                    use crate::scenario::step::provider::{RawProvider, TokenFault};
                    file.steps.push(RawStep::Provider(RawProvider {
                        note: note.clone(),
                        provider: p.to_string(),
                        token_fault: Some(if *on {
                            TokenFault::Fault(Fault::ServerError)
                        } else {
                            TokenFault::None
                        }),
                        ..RawProvider::default()
                    }));
                }
                continue;
            }
            Op::ExpiredToken => RawStep::ListConnections(RawRequest {
                actor: "E".into(),
                note,
                expect: Some(Expect {
                    status: Some(401),
                    code: Some("UNAUTHENTICATED".into()),
                    ..Expect::default()
                }),
                ..RawRequest::default()
            }),
        };
        file.steps.push(step);
    }
    let rows = PROVIDERS
        .iter()
        .map(|p| {
            let mut row = toml::Table::new();
            row.insert("provider".into(), p.to_string().into());
            row.insert(
                "status".into(),
                model.connections[p].status.as_str().to_owned().into(),
            );
            row
        })
        .collect();
    let mut assertions = vec![
        Assertion {
            sql: Some("SELECT provider, status FROM connections WHERE workspace_id = '{workspace:a}' AND provider IN ('qbo', 'gmail') ORDER BY provider DESC".into()),
            rows: Some(rows),
            ..Assertion::default()
        },
        Assertion {
            sql: Some("SELECT count(*) FROM workspace_activations".into()),
            equals: Some(i64::from(model.activated).into()),
            ..Assertion::default()
        },
        Assertion {
            note: Some("no document outlives the grant it was fetched under".into()),
            sql: Some(crate::oracles::ORPHANED_DOCUMENTS.into()),
            equals: Some(0.into()),
            ..Assertion::default()
        },
        Assertion {
            tokens_bound: Some(true),
            ..Assertion::default()
        },
        Assertion {
            no_lock_held: Some("a".into()),
            ..Assertion::default()
        },
    ];
    for p in PROVIDERS {
        let c = model.counters[&p];
        for (name, value) in [
            ("code_exchanges_ok", c.exchanges),
            ("revocations", c.revocations),
            ("refreshes_ok", c.refreshes),
        ] {
            assertions.push(Assertion {
                provider_counter: Some(format!("{p}.{name}")),
                equals: Some((value as i64).into()),
                ..Assertion::default()
            });
        }
    }
    assertions.push(Assertion {
        note: Some("states issued and not consumed are still in Redis".into()),
        redis_keys: Some("oauth:state:*".into()),
        equals: Some((model.unconsumed_states() as i64).into()),
        ..Assertion::default()
    });
    file.assertions = assertions;
    crate::scenario::file::write(
        &file,
        "# Written by `harbor-certify proptest`: a sequence of the state machine as a scenario. The\n# expectations are the reference model's (harness/src/model.rs).\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequence with every kind of op is written as a scenario the loader accepts, and the
    /// writer's text reads back as what was written.
    #[test]
    fn a_sequence_is_written_as_a_scenario_that_loads() {
        let ops = vec![
            Op::Authorize {
                who: Who::Owner,
                provider: Provider::Qbo,
                replica: 0,
            },
            Op::Callback {
                state: 0,
                presenter: Who::Owner,
                path: None,
                denied: false,
                replica: 1,
            },
            Op::Activate {
                who: Who::Member,
                replica: 1,
            },
            Op::Sync {
                provider: Provider::Qbo,
                replica: 0,
            },
            Op::AdvanceClock { seconds: 700 },
            Op::TokenFault { on: true },
            Op::Disconnect {
                who: Who::Owner,
                provider: Provider::Qbo,
            },
            Op::Revoke {
                who: Who::Outsider,
                provider: Provider::Gmail,
            },
            Op::ListConnections,
            Op::ExpiredToken,
        ];
        let text = to_scenario("PROPTEST-T", "every op", &ops).unwrap();
        let loaded = crate::scenario::load::load_str(std::path::Path::new("t.toml"), &text)
            .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        // Two provider steps for the token fault (one per provider).
        assert_eq!(loaded.scenario.steps.len(), ops.len() + 1);
        let file = crate::scenario::file::read(&text).unwrap();
        assert_eq!(
            crate::scenario::file::read(&crate::scenario::file::write(&file, "").unwrap()).unwrap(),
            file
        );
    }
}
