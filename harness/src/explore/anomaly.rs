//! The oracles every explored schedule is checked against — invariants and a reference model, not
//! hand-written expectations. A violation names its anomaly.
//!
//! - *Serializable*: every operation's answer and the end state (connection status, activation)
//!   equal those of **some** serial order of the same operations on the reference model
//!   ([`crate::model::Model`]), and the provider was called no more than the most any serial order
//!   calls it whose interrupted requests this run interrupted too. A sync is two transactions (decide and refresh the token; fetch and store), so its
//!   `refreshed` flag and the refresh count are compared only against those bounds.
//! - *Mutual exclusion*: never two requests parked under the same workspace lock (the lock probe
//!   holding it counts as one), and no request that takes the lock answers 2xx while the lock
//!   probe holds it (`lock_bypassed`: it took none, or another).
//! - *Activation only of a connected workspace*: when an activation commits a new row, the
//!   committed connection status at that moment is CONNECTED.
//! - At most one activation row; no lock left held; tokens bound to their rows; no 5xx; no hang.
//! - *Documents under live grants*: after a schedule with a sync, no document of the workspace
//!   is held under a connection that is not CONNECTED, or as a grant it does not hold (what a
//!   sync fetched, stored after the grant ended). The answers alone cannot show it: a sync that
//!   stored after a disconnect answered as the serial order "sync, then disconnect" does.
//! - *Under a fault* (an operation whose row does one, such as `db_cut`): an operation may instead
//!   be interrupted, each fault excusing only what it can cause — a documented 503
//!   ([`UNAVAILABLE_CODES`]) when the database is cut, no answer when its replica goes down, a documented 502 `PROVIDER_ERROR` when the provider does, 503 `UNAVAILABLE` (or, for a
//!   callback whose state consumption it may have run, `AUTHORIZATION_INTERRUPTED`) when Redis
//!   does — with the end state of the
//!   serial orders without it; no grant exchanged during the schedule may be left neither stored
//!   nor revoked, and every CONNECTED row must hold a grant the provider honours.
//!
//! Past 500 lines on purpose: the oracles share the enumeration of serial orders and the
//! allowances a fault makes; apart, each would reach into the others. Its tests are in
//! `anomaly/tests.rs`.

use serde::Serialize;

use super::engine::{ScheduleRun, Stop};
use super::ops::{Does, Operation};
use super::start::Start;
use crate::model::Model;

/// What went wrong, by name.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Anomaly {
    /// Two requests inside the same workspace's critical section at once.
    MutualExclusionBroken,
    /// An activation committed while the connection was not CONNECTED.
    ActivationOfNonConnectedWorkspace,
    /// More than one activation row, or a second "new" activation.
    DoubleActivation,
    /// One authorization code exchanged twice (a state consumed twice).
    DoubleConsume,
    /// More token refreshes than any serial order needs.
    DuplicateRefresh,
    /// Answers or end state equal to no serial order (a lost update, a lost state, …).
    NotSerializable,
    /// A 5xx answer.
    ServerError,
    /// A workspace lock still held or awaited after every operation finished.
    LockLeftHeld,
    /// A stored token that does not decrypt for its own row.
    TokenNotBound,
    /// Nothing could advance but something was unfinished, or the system did not settle.
    Hang,
    /// A grant exchanged during the schedule, neither stored nor revoked at the provider.
    GrantOrphaned,
    /// A CONNECTED connection holding a grant the provider no longer honours (its store committed
    /// and the grant was given back anyway).
    StoredGrantDead,
    /// A request that takes the workspace lock (and the connection row's under it) answered 2xx
    /// while a probe held that lock: it took no lock, or another one.
    LockBypassed,
    /// A document held under a connection that is not CONNECTED, or as a grant the connection
    /// does not hold: stored after the grant it was fetched under ended, or kept past it.
    DocumentsOrphaned,
}

/// What an operation a database cut interrupted may answer (both 503, both documented).
pub const UNAVAILABLE_CODES: &[&str] = &["DATABASE_UNAVAILABLE", "AUTHORIZATION_INTERRUPTED"];

impl Anomaly {
    /// The name used in reports and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::MutualExclusionBroken => "mutual_exclusion_broken",
            Anomaly::ActivationOfNonConnectedWorkspace => "activation_of_non_connected_workspace",
            Anomaly::DoubleActivation => "double_activation",
            Anomaly::DoubleConsume => "double_consume",
            Anomaly::DuplicateRefresh => "duplicate_refresh",
            Anomaly::NotSerializable => "not_serializable",
            Anomaly::ServerError => "server_error",
            Anomaly::LockLeftHeld => "lock_left_held",
            Anomaly::TokenNotBound => "token_not_bound",
            Anomaly::Hang => "hang",
            Anomaly::GrantOrphaned => "grant_orphaned",
            Anomaly::StoredGrantDead => "stored_grant_dead",
            Anomaly::LockBypassed => "lock_bypassed",
            Anomaly::DocumentsOrphaned => "documents_orphaned",
        }
    }
}

/// One broken invariant of one schedule.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// Which.
    pub anomaly: Anomaly,
    /// What was seen.
    pub detail: String,
}

/// What a serial order of the operations gives on the model.
#[derive(Clone, Debug)]
pub struct SerialOutcome {
    /// The order.
    pub order: Vec<usize>,
    /// Each operation's expected answer (`None`: the raw writer, a database cut, or an
    /// interrupted operation).
    pub answers: Vec<Option<crate::model::Expected>>,
    /// Operations a fault interrupted in this outcome: each may answer as [`is_interrupted`]
    /// allows, and changed only what its fate in this outcome says.
    pub interrupted: Vec<bool>,
    /// The connection status at the end.
    pub status: harbor_service::lifecycle::ConnectionStatus,
    /// Whether the workspace is activated.
    pub activated: bool,
    /// Code exchanges and refreshes the provider counts.
    pub exchanges: u64,
    /// Refreshes.
    pub refreshes: u64,
}

/// How an operation ends in one serial outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// It answers as the model says.
    Answers,
    /// A fault interrupted it before it did anything (left out of the model).
    InterruptedBefore,
    /// A fault interrupted it after its effects outside the database and before its commit: a
    /// callback's state is spent, a sync's refresh counted (`Model::keep_outside_effects`).
    InterruptedOutside,
    /// A fault interrupted it after its commit (in the model; its answer lost).
    InterruptedAfterCommit,
}

/// Every serial order of `ops` from `start`, on the model. With a fault among them, also every
/// order in which any of the other operations are interrupted before their effect (left out of
/// the model), or between their effects outside the database and their commit; with a crash,
/// also every order in which any are interrupted after their commit (in the model, their answers
/// lost with the replica).
pub fn serial_outcomes(ops: &[Operation], start: Start) -> Vec<SerialOutcome> {
    let mut out = Vec::new();
    // A fault reaches every request in flight, so any number of them may be interrupted together
    // (a set of three operations has two requests for one fault to cut).
    let mut interruptions: Vec<Vec<Fate>> = vec![vec![Fate::Answers; ops.len()]];
    if ops.iter().any(|o| o.fault().is_some()) {
        let after_commit = ops.iter().any(|o| o.may_interrupt_after_commit());
        // Only a fault that can end a request between its provider call and its commit leaves
        // effects outside the database behind it (a provider gone fails the call itself; a
        // graceful stop finishes what it has; a Redis restart is the model's own business).
        let outside = ops
            .iter()
            .any(|o| o.ends_transactions() || o.may_interrupt_after_commit());
        for i in (0..ops.len()).filter(|&i| ops[i].fault().is_none()) {
            let mut fates = vec![Fate::Answers, Fate::InterruptedBefore];
            if outside && ops[i].acts_outside_the_database() {
                fates.push(Fate::InterruptedOutside);
            }
            if after_commit {
                fates.push(Fate::InterruptedAfterCommit);
            }
            interruptions = interruptions
                .into_iter()
                .flat_map(|so_far| {
                    fates.iter().map(move |fate| {
                        let mut next = so_far.clone();
                        next[i] = *fate;
                        next
                    })
                })
                .collect();
        }
    }
    for interruption in &interruptions {
        let mut order: Vec<usize> = (0..ops.len()).collect();
        permutations(&mut order, 0, &mut |order| {
            out.push(serial_outcome(ops, start, order, interruption));
        });
    }
    out
}

/// One serial order on the model; `interruption[i]` is how operation `i` ends.
fn serial_outcome(
    ops: &[Operation],
    start: Start,
    order: &[usize],
    interruption: &[Fate],
) -> SerialOutcome {
    {
        let mut model: Model = start.model();
        let base = model
            .counters
            .get(&harbor_service::domain::Provider::Qbo)
            .copied()
            .unwrap_or_default();
        let mut answers = vec![None; ops.len()];
        let mut interrupted = vec![false; ops.len()];
        for &i in order {
            interrupted[i] = interruption[i] != Fate::Answers;
            match interruption[i] {
                Fate::Answers => answers[i] = ops[i].apply(&mut model),
                Fate::InterruptedBefore => {}
                Fate::InterruptedOutside => {
                    let mut ran = model.clone();
                    ops[i].apply(&mut ran);
                    model.keep_outside_effects(ran);
                }
                Fate::InterruptedAfterCommit => {
                    ops[i].apply(&mut model);
                }
            }
        }
        let c = model
            .counters
            .get(&harbor_service::domain::Provider::Qbo)
            .copied()
            .unwrap_or_default();
        SerialOutcome {
            order: order.to_vec(),
            answers,
            interrupted,
            status: model.connections[&harbor_service::domain::Provider::Qbo].status,
            activated: model.activated,
            exchanges: c.exchanges - base.exchanges,
            refreshes: c.refreshes - base.refreshes,
        }
    }
}

fn permutations(items: &mut Vec<usize>, k: usize, visit: &mut dyn FnMut(&[usize])) {
    if k == items.len() {
        visit(items);
        return;
    }
    for i in k..items.len() {
        items.swap(k, i);
        permutations(items, k + 1, visit);
        items.swap(k, i);
    }
}

/// Every finding of `run`.
pub fn check(
    ops: &[Operation],
    start: Start,
    run: &ScheduleRun,
    serial: &[SerialOutcome],
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut add = |anomaly, detail: String| findings.push(Finding { anomaly, detail });
    if let Some(stuck) = &run.stuck {
        add(Anomaly::Hang, stuck.clone());
        return findings;
    }
    if let Some((a, pa, b, pb)) = run.exclusion_broken {
        add(
            Anomaly::MutualExclusionBroken,
            format!(
                "E{a} ({}) parked at {pa} while E{b} ({}) parked at {pb}",
                ops[a], ops[b]
            ),
        );
    }
    if let Some((i, probe)) = run.lock_bypassed {
        let answer = run.finished[i].as_ref().map_or("-", |f| f.summary.as_str());
        add(
            Anomaly::LockBypassed,
            format!(
                "E{i} ({}) answered {answer} while E{probe} ({}) held {}",
                ops[i],
                ops[probe],
                if ops[probe] == Operation::RowProbe {
                    "the connection row's lock"
                } else {
                    "the workspace lock"
                }
            ),
        );
    }
    for (i, committed) in &run.status_at_activation_commit {
        let new_row = run.finished[*i]
            .as_ref()
            .and_then(|f| f.answer.as_ref())
            .is_some_and(|a| a.status.is_success() && a.body["already_completed"] == false);
        if new_row && *committed != Some(harbor_service::lifecycle::ConnectionStatus::Connected) {
            add(
                Anomaly::ActivationOfNonConnectedWorkspace,
                format!("E{i} activated while the committed QuickBooks status was {committed:?}"),
            );
        }
    }
    let new_activations = run
        .finished
        .iter()
        .flatten()
        .filter_map(|f| f.answer.as_ref())
        .filter(|a| a.status.is_success() && a.body["already_completed"] == false)
        .count();
    if run.end.activations > 1 || new_activations > 1 {
        add(
            Anomaly::DoubleActivation,
            format!(
                "{} activation row(s), {new_activations} answer(s) saying a new activation",
                run.end.activations
            ),
        );
    }
    // The provider's counts are bounded by every serial outcome whose interrupted requests were
    // interrupted in this run too: a fault excuses a second refresh only for a sync it did
    // interrupt. (Not only by the outcomes the run matches: a sync is two transactions, and one
    // that refreshed and then found the connection ended answers as if it came second.)
    let before = faults_before(ops, run);
    let bounding: Vec<&SerialOutcome> = serial
        .iter()
        .filter(|s| {
            (0..ops.len()).all(|i| {
                !s.interrupted[i]
                    || run.finished[i]
                        .as_ref()
                        .is_some_and(|f| is_interrupted(&before[i], f))
            })
        })
        .collect();
    let most_exchanges = bounding.iter().map(|s| s.exchanges).max().unwrap_or(0);
    if run.end.exchanges > most_exchanges {
        add(
            Anomaly::DoubleConsume,
            format!(
                "{} code exchange(s); no serial order makes more than {most_exchanges}",
                run.end.exchanges
            ),
        );
    }
    let most_refreshes = bounding.iter().map(|s| s.refreshes).max().unwrap_or(0);
    if run.end.refreshes > most_refreshes {
        add(
            Anomaly::DuplicateRefresh,
            format!(
                "{} refresh(es); no serial order makes more than {most_refreshes}",
                run.end.refreshes
            ),
        );
    }
    for (i, f) in run.finished.iter().enumerate() {
        if let Some(f) = f {
            if f.status >= 500 && !is_interrupted(&before[i], f) {
                add(
                    Anomaly::ServerError,
                    format!("E{i} ({}) answered {}", ops[i], f.summary),
                );
            }
        }
    }
    if !serial.iter().any(|s| matches_serial(ops, run, s)) {
        let answers: Vec<String> = run
            .answers(ops)
            .map(|(i, op, answer)| format!("E{i} {op}: {answer}"))
            .collect();
        add(
            Anomaly::NotSerializable,
            format!(
                "{}; end status {}, {} activation row(s): equal to no serial order",
                answers.join(", "),
                run.end.status_name(),
                run.end.activations
            ),
        );
    }
    // Every grant accounted for: the one the start state holds (connected through the real flow)
    // and every one exchanged during the schedule is, at the end, stored or revoked — a cut may
    // interrupt a callback after its exchange, and revoke and disconnect give theirs back. (Not
    // with the raw writer, which ends a stored grant's row behind the service's back.)
    let silently_ends_grants = ops.contains(&Operation::RawDisconnect);
    if !silently_ends_grants {
        let held_before = u64::from(matches!(start, Start::Connected | Start::Stale));
        let stored = u64::from(
            run.end.status == Some(harbor_service::lifecycle::ConnectionStatus::Connected),
        );
        let accounted = run.end.revocations + stored;
        if held_before + run.end.exchanges > accounted {
            add(
                Anomaly::GrantOrphaned,
                format!(
                    "{held_before} grant(s) held at the start, {} code exchange(s), {} revocation(s), end status {}: {} grant(s) live at the provider and stored nowhere",
                    run.end.exchanges,
                    run.end.revocations,
                    run.end.status_name(),
                    held_before + run.end.exchanges - accounted
                ),
            );
        }
    }
    if let Some(l) = &run.lock_left {
        add(Anomaly::LockLeftHeld, l.clone());
    }
    if let Some(t) = &run.tokens_unbound {
        add(Anomaly::TokenNotBound, t.clone());
    }
    if let Some(d) = &run.stored_grant_dead {
        add(Anomaly::StoredGrantDead, d.clone());
    }
    if let Some(d) = &run.documents_orphaned {
        add(Anomaly::DocumentsOrphaned, d.clone());
    }
    findings
}

fn matches_serial(ops: &[Operation], run: &ScheduleRun, s: &SerialOutcome) -> bool {
    if run.end.status != Some(s.status) || (run.end.activations > 0) != s.activated {
        return false;
    }
    let before = faults_before(ops, run);
    ops.iter()
        .enumerate()
        .all(|(i, op)| match (&s.answers[i], run.finished[i].as_ref()) {
            (_, Some(f)) if s.interrupted[i] => is_interrupted(&before[i], f),
            // A sync is two transactions — decide and refresh the token, then fetch and store — so
            // whether *it* refreshed is not a property of one serial position: only its status and
            // code are compared (too many refreshes in all is the counter's business).
            (Some(expected), Some(f)) if op.is_sync() => {
                let expected = crate::model::Expected {
                    field: None,
                    ..expected.clone()
                };
                f.answer
                    .as_ref()
                    .is_some_and(|a| crate::statemachine::compare(a, &expected).is_ok())
            }
            (Some(expected), Some(f)) => f
                .answer
                .as_ref()
                .is_some_and(|a| crate::statemachine::compare(a, expected).is_ok()),
            (None, Some(f)) => !matches!(op.does(), Does::Request(_)) && f.summary == "ok",
            _ => false,
        })
}

/// For each operation, the faults done before it finished: only those can have interrupted it
/// (an operation that finished before any fault answered with every dependency in place, and is
/// held to the model; one that finished after a database cut but before a provider went away is
/// excused only for the cut). Faults are done in place between two decisions, and answers are
/// recorded after them, so completion order is the order of events.
pub fn faults_before(ops: &[Operation], run: &ScheduleRun) -> Vec<Interrupters> {
    let mut before: Vec<Interrupters> = (0..ops.len()).map(|_| Interrupters::default()).collect();
    let mut done: Vec<Operation> = Vec::new();
    for &i in &run.completion_order {
        if ops[i].fault().is_some() {
            done.push(ops[i]);
        } else {
            before[i].faults = done.clone();
        }
    }
    before
}

/// What may have interrupted one operation ([`faults_before`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Interrupters {
    /// The faults done before it finished.
    pub faults: Vec<Operation>,
}

/// Whether `f` is how an operation may end when one of `by.faults` (done before it finished)
/// interrupted it, each fault excusing only the endings it can cause: a documented 503 when the
/// database is cut; no answer at all when a replica is killed; when a replica
/// stops gracefully, a connection refused (a request sent after the stop began goes out on a new
/// connection, never on one kept alive from before, which the stopping replica may be closing:
/// `ApiClient::stop_reusing_connections`), while what the replica already had must be finished
/// and answered; a documented 502 when the provider is gone, or 503
/// `UNAVAILABLE` when Redis is.
pub fn is_interrupted(by: &Interrupters, f: &super::record::Finished) -> bool {
    let faults = &by.faults;
    (faults.iter().any(|o| o.cuts_database()) && is_unavailable(f))
        || (faults.iter().any(|o| o.kills_replica())
            && f.status == 0
            && f.summary.starts_with("request failed"))
        || (faults.iter().any(|o| o.stops_replica())
            && f.status == 0
            && f.summary.starts_with(REFUSED))
        || (faults.iter().any(|o| o.cuts_provider())
            && f.status == 502
            && f.code.as_deref() == Some("PROVIDER_ERROR"))
        || (faults.iter().any(|o| o.cuts_redis())
            && f.status == 503
            // A callback whose state consumption the cut may have run: start again.
            && matches!(
                f.code.as_deref(),
                Some("UNAVAILABLE" | "AUTHORIZATION_INTERRUPTED")
            ))
}

/// How a request refused at the connection reads (`client::failure_class`).
const REFUSED: &str = "request failed: no connection";

/// Whether `f` is a documented answer of an operation a database cut interrupted.
pub fn is_unavailable(f: &super::record::Finished) -> bool {
    f.status == 503
        && f.code
            .as_deref()
            .is_some_and(|c| UNAVAILABLE_CODES.contains(&c))
}

/// How a run's stops read in a report: `E0 parked at activation.locked`.
pub fn describe_stop(op: usize, stop: &Stop) -> String {
    match stop {
        Stop::Parked(p) => format!("E{op} parked at {p}"),
        Stop::Blocked(by) => format!("E{op} blocked on {}", by.join(", ")),
        Stop::Done => format!("E{op} done"),
    }
}

#[cfg(test)]
mod tests;
