//! The oracles every explored schedule is checked against — invariants and a reference model, not
//! hand-written expectations. A violation names its anomaly.
//!
//! - *Serializable*: every operation's answer and the end state (connection status, activation)
//!   equal those of **some** serial order of the same operations on the reference model
//!   ([`crate::model::Model`]), and the provider was called no more than the most any serial order
//!   calls it. A sync is two transactions (decide and refresh the token; fetch and store), so its
//!   `refreshed` flag and the refresh count are compared only against those bounds.
//! - *Mutual exclusion*: never two requests parked under the same workspace lock.
//! - *Activation only of a connected workspace*: when an activation commits a new row, the
//!   committed connection status at that moment is CONNECTED.
//! - At most one activation row; no lock left held; tokens bound to their rows; no 5xx; no hang.
//! - *Under a fault* (an operation whose row does one, such as `db_cut`): an operation may instead
//!   be interrupted — a documented 503 ([`UNAVAILABLE_CODES`]), no answer when its replica goes
//!   down, a documented 502 `PROVIDER_ERROR` when the provider does, 503 `UNAVAILABLE` when Redis
//!   does — with the end state of the
//!   serial orders without it; no grant exchanged during the schedule may be left neither stored
//!   nor revoked, and every CONNECTED row must hold a grant the provider honours.

use serde::Serialize;

use super::engine::{ScheduleRun, Stop};
use super::ops::{Does, Operation, Start};
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
    /// Operations a database cut interrupted in this outcome: each answers one of
    /// [`UNAVAILABLE_CODES`] and changes nothing.
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

/// Every serial order of `ops` from `start`, on the model. With a fault among them, also every
/// order in which one other operation is interrupted before its effect (left out of the model);
/// with a crash, also every order in which one is interrupted after its commit (in the model, its
/// answer lost with the replica).
pub fn serial_outcomes(ops: &[Operation], start: Start) -> Vec<SerialOutcome> {
    let mut out = Vec::new();
    let mut interruptions: Vec<Option<(usize, bool)>> = vec![None];
    if ops.iter().any(|o| o.fault().is_some()) {
        let after_commit = ops.iter().any(|o| o.may_interrupt_after_commit());
        for i in (0..ops.len()).filter(|&i| ops[i].fault().is_none()) {
            interruptions.push(Some((i, false)));
            if after_commit {
                interruptions.push(Some((i, true)));
            }
        }
    }
    for interruption in interruptions {
        let mut order: Vec<usize> = (0..ops.len()).collect();
        permutations(&mut order, 0, &mut |order| {
            out.push(serial_outcome(ops, start, order, interruption));
        });
    }
    out
}

/// One serial order on the model; `interrupted` (if any) is an operation that answered nothing
/// documented, and whether it had committed first.
fn serial_outcome(
    ops: &[Operation],
    start: Start,
    order: &[usize],
    interruption: Option<(usize, bool)>,
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
            match interruption {
                Some((j, committed)) if j == i => {
                    interrupted[i] = true;
                    if committed {
                        ops[i].apply(&mut model);
                    }
                }
                _ => answers[i] = ops[i].apply(&mut model),
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
    let most_exchanges = serial.iter().map(|s| s.exchanges).max().unwrap_or(0);
    if run.end.exchanges > most_exchanges {
        add(
            Anomaly::DoubleConsume,
            format!(
                "{} code exchange(s); no serial order makes more than {most_exchanges}",
                run.end.exchanges
            ),
        );
    }
    let most_refreshes = serial.iter().map(|s| s.refreshes).max().unwrap_or(0);
    if run.end.refreshes > most_refreshes {
        add(
            Anomaly::DuplicateRefresh,
            format!(
                "{} refresh(es); no serial order makes more than {most_refreshes}",
                run.end.refreshes
            ),
        );
    }
    let before = faults_before(ops, run);
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
    let silently_ends_grants = ops.iter().any(|o| o.is_raw_sql());
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
            (Some(expected), Some(f)) if *op == Operation::Sync => {
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
pub fn faults_before(ops: &[Operation], run: &ScheduleRun) -> Vec<Vec<Operation>> {
    let mut before = vec![Vec::new(); ops.len()];
    let mut done: Vec<Operation> = Vec::new();
    for &i in &run.completion_order {
        if ops[i].fault().is_some() {
            done.push(ops[i]);
        } else {
            before[i] = done.clone();
        }
    }
    before
}

/// Whether `f` is how an operation may end when one of `faults` (done before it finished)
/// interrupted it: a documented 503; no answer at all when a replica is killed; when a replica
/// stops gracefully, a connection refused (sent after the stop began — what it already had must
/// be finished and answered); a documented 502 when the provider is gone, or 503 `UNAVAILABLE`
/// when Redis is.
pub fn is_interrupted(faults: &[Operation], f: &super::record::Finished) -> bool {
    (!faults.is_empty() && is_unavailable(f))
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
            && f.code.as_deref() == Some("UNAVAILABLE"))
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
mod tests {
    use super::*;

    #[test]
    fn serial_orders_of_activation_and_callback_from_pending() {
        let ops = [Operation::Activate, Operation::Callback];
        let outcomes = serial_outcomes(&ops, Start::Pending);
        assert_eq!(outcomes.len(), 2);
        // Callback first: connected, then activated. Activation first: not ready, then connected.
        let activated: Vec<bool> = outcomes.iter().map(|o| o.activated).collect();
        assert!(activated.contains(&true) && activated.contains(&false));
        assert!(outcomes.iter().all(|o| o.exchanges == 1));
    }

    #[test]
    fn two_syncs_of_a_stale_token_refresh_once_in_every_order() {
        let outcomes = serial_outcomes(&[Operation::Sync, Operation::Sync], Start::Stale);
        assert!(outcomes.iter().all(|o| o.refreshes == 1), "{outcomes:?}");
    }

    #[test]
    fn a_database_cut_may_interrupt_the_callback_and_changes_nothing_itself() {
        let outcomes = serial_outcomes(&[Operation::Callback, Operation::DbCut], Start::Pending);
        // Two orders of the two, and two more with the callback interrupted.
        assert_eq!(outcomes.len(), 4);
        let whole: Vec<_> = outcomes.iter().filter(|o| !o.interrupted[0]).collect();
        assert!(whole
            .iter()
            .all(|o| o.exchanges == 1 && o.answers[1].is_none()));
        let cut = outcomes.iter().find(|o| o.interrupted[0]).unwrap();
        assert_eq!(
            cut.status,
            harbor_service::lifecycle::ConnectionStatus::Pending
        );
        assert_eq!(cut.exchanges, 0);
        assert!(
            !outcomes.iter().any(|o| o.interrupted[1]),
            "the cut itself is never interrupted"
        );
    }

    #[test]
    fn the_raw_writer_disconnects_whatever_the_state() {
        let outcomes = serial_outcomes(
            &[Operation::RawDisconnect, Operation::Activate],
            Start::Connected,
        );
        let raw_first = outcomes.iter().find(|o| o.order == [0, 1]).unwrap();
        assert!(!raw_first.activated);
        assert_eq!(
            raw_first.answers[1].as_ref().unwrap().code,
            Some("ACTIVATION_NOT_READY")
        );
    }

    #[test]
    fn a_crash_may_interrupt_the_callback_before_or_after_its_commit() {
        let ops = [Operation::Callback, Operation::ReplicaCrash];
        let outcomes = serial_outcomes(&ops, Start::Pending);
        // Two orders whole, two with the callback interrupted before its commit, two after it.
        assert_eq!(outcomes.len(), 6);
        let interrupted: Vec<_> = outcomes.iter().filter(|o| o.interrupted[0]).collect();
        let statuses: Vec<_> = interrupted.iter().map(|o| o.status).collect();
        use harbor_service::lifecycle::ConnectionStatus::{Connected, Pending};
        assert!(statuses.contains(&Pending) && statuses.contains(&Connected));
        assert!(interrupted.iter().all(|o| o.answers[0].is_none()));
        // No answer at all counts as interrupted only where a replica crashes.
        let lost = super::super::record::Finished {
            status: 0,
            code: None,
            summary: "request failed: connection lost before the answer".into(),
            answer: None,
        };
        assert!(is_interrupted(&[Operation::ReplicaCrash], &lost));
        assert!(!is_interrupted(&[Operation::DbCut], &lost));
        assert!(
            !is_interrupted(&[], &lost),
            "no fault done before it: nothing excuses it"
        );
        // A graceful stop must answer what it had: only a request refused at the connection
        // (sent after the stop began) went unanswered for a good reason.
        let stop = [Operation::ReplicaStop];
        assert!(!is_interrupted(&stop, &lost));
        let refused = super::super::record::Finished {
            summary: "request failed: no connection (refused or unreachable)".into(),
            ..lost.clone()
        };
        assert!(is_interrupted(&stop, &refused));
    }
}
