//! What a state-machine run says: its one-paragraph account, a failure saved as an ordinary
//! scenario file (and the command that replays it), and the kill matrix over the flaws it can see.

use std::path::PathBuf;
use std::time::Instant;

use harbor_service::flaws::{Flaw, Flaws};

use super::*;
use crate::provision::Infra;
use crate::target::in_process::InProcessLauncher;

/// The seeded flaws the state machine can see (each must make it fail).
pub const FLAWS_IT_SEES: &[Flaw] = &[
    Flaw::NoCallbackTenantCheck,
    Flaw::StateKeptOnFailure,
    Flaw::MemoryStateStore,
    Flaw::NoUniqueActivation,
    Flaw::TokenExposure,
    Flaw::NoMembershipCheck,
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
pub fn replay_command(path: &std::path::Path, flaw: Option<&str>) -> String {
    let dir = path
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let flaw = flaw.map(|f| format!(" --flaw {f}")).unwrap_or_default();
    format!("harbor-certify run --scenarios-dir {dir} {id}{flaw}")
}

/// Saves a failing run's minimal sequence as `DIR/PROPTEST-<label>-<seed>.toml` (see
/// [`to_scenario`]) and returns the path.
pub fn save_failure(dir: &std::path::Path, label: &str, outcome: &Outcome) -> Option<PathBuf> {
    let (ops, reason) = outcome.failure.as_ref()?;
    let id = format!("PROPTEST-{}-{}", label.to_uppercase(), outcome.seed);
    let title = format!(
        "State-machine counterexample ({label}, seed {}): {}",
        outcome.seed,
        reason
            .replace('"', "'")
            .chars()
            .take(160)
            .collect::<String>()
    );
    std::fs::create_dir_all(dir).ok()?;
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, to_scenario(&id, &title, ops)).ok()?;
    Some(path)
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
    if let Some(path) = save_failure(&saved, "correct", &correct) {
        report.push(format!(
            "  saved as {} ({})",
            path.display(),
            replay_command(&path, None)
        ));
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
        if let Some(path) = save_failure(&saved, name, &flawed) {
            report.push(format!(
                "  saved as {} ({})",
                path.display(),
                replay_command(&path, Some(name))
            ));
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

/// Writes a sequence as an ordinary scenario file (the format of `scenarios/`): one actor per
/// authorization (so a later callback can name its consent), the model's expectation on every step,
/// and the model's end state as assertions. `harbor-certify run FILE` (with the same `--flaw`)
/// replays it.
pub fn to_scenario(id: &str, title: &str, ops: &[Op]) -> String {
    use std::fmt::Write as _;
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
    let expect = |e: &Expected| {
        let mut parts = vec![format!("status = {}", e.status)];
        if let Some(code) = e.code {
            parts.push(format!("code = \"{code}\""));
        }
        if let Some((field, value)) = &e.field {
            parts.push(format!("body = {{ {field} = {value} }}"));
        }
        parts.push("body_excludes = [\"hbcanary\"]".to_owned());
        format!("{{ {} }}", parts.join(", "))
    };
    let mut model = Model::new(&PROVIDERS);
    let mut flows: Vec<String> = Vec::new();
    let mut actors = vec![
        ("O", "a.owner", "valid", "Owner of A"),
        ("M", "a.member", "valid", "Member of A"),
        ("X", "b.owner", "valid", "Owner of another tenant"),
        ("E", "a.owner", "expired", "Owner of A, expired token"),
    ]
    .into_iter()
    .map(|(n, u, t, r)| {
        format!("[[actors]]\nname = \"{n}\"\nuser = \"{u}\"\ntoken = \"{t}\"\nrole = \"{r}\"\n")
    })
    .collect::<Vec<_>>();
    let mut steps = String::new();
    for (i, op) in ops.iter().enumerate() {
        let _ = writeln!(steps, "\n# op {i}: {op:?}");
        match op {
            Op::Authorize {
                who,
                provider,
                replica,
            } => {
                let e = model.authorize(*who, *provider);
                let name = format!("F{i}");
                actors.push(format!(
                    "[[actors]]\nname = \"{name}\"\nuser = \"{}\"\nrole = \"Flow {i} ({who:?})\"\n",
                    user(*who)
                ));
                if e.status == 200 {
                    flows.push(name.clone());
                }
                let _ = writeln!(steps, "[[steps]]\nactor = \"{name}\"\ndo = \"authorize\"\nworkspace = \"a\"\nprovider = \"{provider}\"\nreplica = {replica}\nexpect = {}", expect(&e));
            }
            Op::Callback {
                state,
                presenter,
                path,
                denied,
                replica,
            } => {
                if flows.is_empty() {
                    let _ = writeln!(steps, "# (no state issued yet: skipped)");
                    continue;
                }
                let index = state % flows.len();
                let at = path.unwrap_or(model.states[index].provider);
                let e = model.callback(index, *presenter, at, *denied);
                let _ = writeln!(
                    steps,
                    "[[steps]]\nactor = \"{}\"\ndo = \"callback\"\nprovider = \"{at}\"\nconsent_of = \"{}\"\ndenied = {denied}\nreplica = {replica}\nexpect = {}",
                    actor(*presenter),
                    flows[index],
                    expect(&e)
                );
            }
            Op::Activate { who, replica } => {
                let e = model.activate(*who);
                let _ = writeln!(steps, "[[steps]]\nactor = \"{}\"\ndo = \"activate\"\nworkspace = \"a\"\nreplica = {replica}\nexpect = {}", actor(*who), expect(&e));
            }
            Op::Disconnect { who, provider } | Op::Revoke { who, provider } => {
                let (action, t, replica) = match op {
                    Op::Disconnect { .. } => ("disconnect", Transition::Disconnect, 0),
                    _ => ("revoke", Transition::Revoke, 1),
                };
                let e = model.end(*who, *provider, t);
                let _ = writeln!(steps, "[[steps]]\nactor = \"{}\"\ndo = \"{action}\"\nworkspace = \"a\"\nprovider = \"{provider}\"\nreplica = {replica}\nexpect = {}", actor(*who), expect(&e));
            }
            Op::Sync { provider, replica } => {
                let e = model.sync(*provider);
                let _ = writeln!(steps, "[[steps]]\nactor = \"M\"\ndo = \"sync\"\nprovider = \"{provider}\"\nreplica = {replica}\nexpect = {}", expect(&e));
            }
            Op::ListConnections => {
                let _ = writeln!(steps, "[[steps]]\nactor = \"M\"\ndo = \"list_connections\"\nexpect = {{ status = 200, body_excludes = [\"hbcanary\"] }}");
            }
            Op::AdvanceClock { seconds } => {
                model.clock += seconds;
                let _ = writeln!(
                    steps,
                    "[[steps]]\ndo = \"advance_clock\"\nseconds = {seconds}"
                );
            }
            Op::TokenFault { on } => {
                model.token_fault = *on;
                for p in PROVIDERS {
                    let _ = writeln!(
                        steps,
                        "[[steps]]\ndo = \"provider\"\nprovider = \"{p}\"\ntoken_fault = \"{}\"\n",
                        if *on { "server_error" } else { "none" }
                    );
                }
            }
            Op::ExpiredToken => {
                let _ = writeln!(steps, "[[steps]]\nactor = \"E\"\ndo = \"list_connections\"\nexpect = {{ status = 401, code = \"UNAUTHENTICATED\" }}");
            }
        }
    }
    let rows = PROVIDERS
        .iter()
        .map(|p| {
            format!(
                "  {{ provider = \"{p}\", status = \"{}\" }}",
                model.connections[p].status.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(",\n");
    let mut counters = String::new();
    for p in PROVIDERS {
        let c = model.counters[&p];
        for (name, value) in [
            ("code_exchanges_ok", c.exchanges),
            ("revocations", c.revocations),
            ("refreshes_ok", c.refreshes),
        ] {
            let _ = write!(
                counters,
                "\n[[assert]]\nprovider_counter = \"{p}.{name}\"\nequals = {value}\n"
            );
        }
    }
    let _ = write!(counters, "\n[[assert]]\nnote = \"states issued and not consumed are still in Redis\"\nredis_keys = \"oauth:state:*\"\nequals = {}\n", model.unconsumed_states());
    format!(
        "# Written by `harbor-certify proptest`: a sequence of the state machine as a scenario. The\n# expectations are the reference model's (harness/src/model.rs).\nid = \"{id}\"\ntitle = \"{title}\"\nsource = \"harbor-certify proptest (state machine vs reference model)\"\nseverity = \"high\"\narea = \"concurrency\"\n\n[service]\nreplicas = 2\nrate_limit_tenant = \"60000/10000\"\nrate_limit_failed_states = \"60000/10000\"\n\n[[tenants]]\nname = \"a\"\n\n[[tenants]]\nname = \"b\"\n\n{}\n{steps}\n[[assert]]\nsql = \"SELECT provider, status FROM connections WHERE workspace_id = '{{workspace:a}}' AND provider IN ('qbo', 'gmail') ORDER BY provider DESC\"\nrows = [\n{rows}\n]\n\n[[assert]]\nsql = \"SELECT count(*) FROM workspace_activations\"\nequals = {}\n\n[[assert]]\ntokens_bound = true\n\n[[assert]]\nno_lock_held = \"a\"\n{counters}",
        actors.join("\n"),
        u8::from(model.activated)
    )
}
