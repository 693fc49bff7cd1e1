//! The operations exploration interleaves, in one table ([`Operation::entry`]): the service's
//! state-changing flows on one workspace (each a [`WorkspaceOp`] of Harbor's one vocabulary, a
//! sequence of its sync points), a raw-SQL writer that skips the advisory lock (the audit's
//! "future code path"), the probes (the workspace lock, or the connection row's, held from the
//! harness's own session), and faults (each the same [`FaultKind`] a scenario's `fault` step
//! does). Adding an operation is adding its variant and its row of the table; the engine, the
//! oracles and the saved scenario read what it does from the row.
//!
//! Longer than most files on purpose: the table and every predicate read from it stay together,
//! so what one operation means is read in one place.

use std::fmt;

use harbor_service::domain::Provider;
use harbor_service::lifecycle::ConnectionStatus;
use harbor_service::syncpoints as sp;

use crate::faults::FaultKind;
use crate::model::{Expected, Model, Who};
use crate::operation::WorkspaceOp;
use crate::target::Capability;

/// One operation on the explored workspace (always as its owner, on the QuickBooks connection).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Operation {
    /// `POST …/activation`.
    Activate,
    /// `POST …/connections/qbo/authorize` (a new flow).
    Authorize,
    /// The callback of the flow the starting state left pending.
    Callback,
    /// `POST …/connections/qbo/disconnect`.
    Disconnect,
    /// `POST …/connections/qbo/revoke`.
    Revoke,
    /// `POST …/connections/qbo/sync` (refreshing first when the start made the token stale).
    Sync,
    /// The same sync sent down the service's read of its token without the locks (`sync.read`
    /// armed and let go at once): on a fresh token it parks before its fetch, so what commits
    /// between that read and the store is explored (`sync` parks at `sync.locked`, which keeps
    /// every sync off the path). A read that finds the token stale or the row not connected sends
    /// it on to the locked path, where it parks at `sync.locked` as `sync` does. On a target that
    /// offers no `sync.read` it is `sync`.
    SyncFresh,
    /// `BEGIN; UPDATE connections SET status = 'DISCONNECTED' …` then `COMMIT`, in a raw session
    /// that takes no advisory lock.
    RawDisconnect,
    /// The lock probe: `BEGIN; SELECT pg_advisory_xact_lock(<the workspace lock>)` in a session
    /// of the harness's own, held until a later decision commits it. A request that takes the
    /// lock waits behind it (the lock tables say so), so the order requests enter the lock is
    /// the harness's to choose on a target with no code of Harbor's in it.
    LockProbe,
    /// The row probe: `BEGIN;` and the target's `lock_qbo_row` state query (the workspace's
    /// QuickBooks connection row locked `FOR UPDATE`) in a session of the harness's own, held
    /// until a later decision commits it: the audit's row lock, proven as the lock probe proves
    /// the workspace lock.
    RowProbe,
    /// A fault, not a request: every replica's database links cut at once
    /// (`postgres_drop_connections`; it returns once their backends are gone).
    DbCut,
    /// A fault: the operations' replica crashes (`replica_crash`: every request on it lost with
    /// its task, socket and pooled connection) and is started again on its address
    /// (`replica_restart`), between two decisions.
    ReplicaCrash,
    /// A fault: the next `COMMIT` the operations' replica sends reaches PostgreSQL, and its
    /// answer is lost (`postgres_lose_commit_reply`: armed now, it strikes at that commit; if
    /// none comes, `postgres_resume` disarms it when the schedule ends).
    LostCommitReply,
    /// A fault: the operations' replica begins a graceful stop (`replica_stop`, SIGTERM in a
    /// rolling deploy: it refuses new connections and finishes the requests and tasks it has),
    /// between two decisions; what is parked on it is released into the stop by later decisions,
    /// and it is started again when the schedule ends (`replica_restart`, once the stop is over).
    ReplicaStop,
    /// A fault: nothing listens at the provider's back channel any more (`provider_down`: open
    /// connections cut, new ones refused), between two decisions; it listens again when the
    /// schedule ends (`provider_up`), before the outbox is drained.
    ProviderDown,
    /// A fault: Redis restarts without persistence (`redis_restart`: down, every key of the
    /// service lost — the OAuth states among them — and up again), between two decisions.
    RedisRestart,
}

/// Sync points at which a request holds its workspace's lock (the service's contract): a request
/// parked at one of them excludes every other request on the workspace.
pub const UNDER_WORKSPACE_LOCK: &[&str] = &[
    harbor_service::syncpoints::ACTIVATION_LOCKED,
    harbor_service::syncpoints::ACTIVATION_STATUS_READ,
    harbor_service::syncpoints::ACTIVATION_BEFORE_COMMIT,
    harbor_service::syncpoints::ACTIVATION_FAILING,
    harbor_service::syncpoints::LIFECYCLE_LOCKED,
    harbor_service::syncpoints::LIFECYCLE_BEFORE_COMMIT,
    harbor_service::syncpoints::OAUTH_AUTHORIZE_LOCKED,
    harbor_service::syncpoints::OAUTH_CALLBACK_LOCKED,
    harbor_service::syncpoints::OAUTH_CALLBACK_BEFORE_COMMIT,
    harbor_service::syncpoints::SYNC_LOCKED,
    harbor_service::syncpoints::SYNC_REFRESHED,
];

/// The raw writer's first stop: its `UPDATE` has run (its transaction is open).
pub const RAW_UPDATED: &str = "raw.updated";

/// The lock probe's stop: it holds the workspace lock (its transaction is open).
pub const PROBE_HOLDING: &str = "probe.holding";

/// The row probe's stop: it holds the connection row's lock (its transaction is open).
pub const ROW_PROBE_HOLDING: &str = "row_probe.holding";

/// What a raw session's statement is written from: the workspace, and the target's names for
/// the locks the probes take (each an id or key as SQL, or a scenario placeholder).
pub struct RawNames<'a> {
    /// The workspace's id.
    pub workspace: &'a str,
    /// The workspace lock's key arguments ([`crate::evidence::AdvisoryKey::sql_arguments`]).
    pub workspace_lock: &'a str,
    /// The statement that locks the connection row (the `lock_qbo_row` state query), if the
    /// target has one.
    pub lock_row: Option<&'a str>,
}

/// The raw writer's statement on the workspace `workspace` (an id, or a scenario placeholder):
/// what a future code path that forgets the workspace lock would write.
pub fn raw_disconnect_sql(workspace: &str) -> String {
    format!(
        "BEGIN; UPDATE connections SET status = 'DISCONNECTED', access_token = NULL, refresh_token = NULL, token_key_id = NULL \
         WHERE workspace_id = '{workspace}' AND provider = 'qbo'"
    )
}

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Does {
    /// A request of Harbor's vocabulary, as the workspace's owner, on its QuickBooks connection.
    Request(WorkspaceOp),
    /// A statement in a session of its own, parked with its transaction open until a later
    /// decision sends `COMMIT`.
    RawSql(RawSession),
    /// Faults, applied in place in order, each once it has taken effect.
    Faults(&'static [FaultStep]),
}

/// What a raw session does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawSession {
    /// [`raw_disconnect_sql`]: the reference's row written without the workspace lock.
    Disconnect,
    /// `SELECT pg_advisory_xact_lock(…)`: the workspace lock taken and held.
    LockProbe,
    /// The `lock_qbo_row` state query: the connection row locked and held.
    RowProbe,
}

/// One fault of a fault operation: what a scenario's `fault` step does, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultStep {
    /// The fault.
    pub kind: FaultKind,
    /// Done to the replica the operations run on only (else to every replica's link).
    pub on_operations_replica: bool,
}

impl FaultStep {
    /// `kind`, done to every replica's link.
    const fn everywhere(kind: FaultKind) -> Self {
        Self {
            kind,
            on_operations_replica: false,
        }
    }

    /// `kind`, done to the replica the operations run on.
    const fn on_operations_replica(kind: FaultKind) -> Self {
        Self {
            kind,
            on_operations_replica: true,
        }
    }
}

/// `db_cut`'s faults.
const DB_CUT: &[FaultStep] = &[FaultStep::everywhere(FaultKind::PostgresDropConnections)];

/// `replica_crash`'s faults.
const REPLICA_CRASH: &[FaultStep] = &[
    FaultStep::on_operations_replica(FaultKind::ReplicaCrash),
    FaultStep::on_operations_replica(FaultKind::ReplicaRestart),
];

/// `replica_stop`'s fault.
const REPLICA_STOP: &[FaultStep] = &[FaultStep::on_operations_replica(FaultKind::ReplicaStop)];

/// What starts a stopped replica again when the schedule ends.
const RESTART_REPLICA: &[FaultStep] =
    &[FaultStep::on_operations_replica(FaultKind::ReplicaRestart)];

/// `provider_down`'s fault.
const PROVIDER_DOWN: &[FaultStep] = &[FaultStep::everywhere(FaultKind::ProviderDown)];

/// What brings the provider back when the schedule ends.
const PROVIDER_UP: &[FaultStep] = &[FaultStep::everywhere(FaultKind::ProviderUp)];

/// `redis_restart`'s fault.
const REDIS_RESTART: &[FaultStep] = &[FaultStep::everywhere(FaultKind::RedisRestart)];

/// `lost_commit_reply`'s fault.
const LOST_COMMIT_REPLY: &[FaultStep] = &[FaultStep::on_operations_replica(
    FaultKind::PostgresLoseCommitReply,
)];

/// What undoes `lost_commit_reply` when no `COMMIT` took it.
const DISARM_COMMIT_REPLY: &[FaultStep] =
    &[FaultStep::on_operations_replica(FaultKind::PostgresResume)];

/// One row of the operation table.
pub struct Entry {
    /// The name used in files, reports and `--ops`.
    pub name: &'static str,
    /// What it does.
    pub does: Does,
    /// The sync points it can stop at, in path order (all are armed at launch; it parks at each
    /// one it reaches).
    pub points: &'static [&'static str],
    /// Faults done when the schedule ends, so that nothing it armed outlives it.
    pub cleanup: &'static [FaultStep],
    /// Sync points armed only for the path they send the request down, and let go as soon as it
    /// reaches them: never a decision, since nothing the schedule could order happens between
    /// the request's launch and them (parking there would double its schedules for nothing).
    pub passes: &'static [&'static str],
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 16] = [
        Operation::Activate,
        Operation::Authorize,
        Operation::Callback,
        Operation::Disconnect,
        Operation::Revoke,
        Operation::Sync,
        Operation::SyncFresh,
        Operation::RawDisconnect,
        Operation::LockProbe,
        Operation::RowProbe,
        Operation::DbCut,
        Operation::ReplicaCrash,
        Operation::LostCommitReply,
        Operation::ReplicaStop,
        Operation::ProviderDown,
        Operation::RedisRestart,
    ];

    /// Its row of the operation table.
    pub fn entry(self) -> Entry {
        let request = |op: WorkspaceOp, points| Entry {
            name: op.as_str(),
            does: Does::Request(op),
            points,
            cleanup: &[],
            passes: &[],
        };
        match self {
            Operation::Activate => request(
                WorkspaceOp::Activate,
                &[
                    sp::ACTIVATION_LOCKED,
                    sp::ACTIVATION_STATUS_READ,
                    sp::ACTIVATION_BEFORE_COMMIT,
                    sp::ACTIVATION_FAILING,
                ],
            ),
            Operation::Authorize => request(WorkspaceOp::Authorize, &[sp::OAUTH_AUTHORIZE_LOCKED]),
            Operation::Callback => request(
                WorkspaceOp::Callback,
                &[
                    sp::OAUTH_CALLBACK_STATE_CONSUMED,
                    sp::OAUTH_CALLBACK_EXCHANGED,
                    sp::OAUTH_CALLBACK_LOCKED,
                    sp::OAUTH_CALLBACK_BEFORE_COMMIT,
                ],
            ),
            Operation::Disconnect => request(
                WorkspaceOp::Disconnect,
                &[sp::LIFECYCLE_LOCKED, sp::LIFECYCLE_BEFORE_COMMIT],
            ),
            Operation::Revoke => request(
                WorkspaceOp::Revoke,
                &[sp::LIFECYCLE_LOCKED, sp::LIFECYCLE_BEFORE_COMMIT],
            ),
            Operation::Sync => request(
                WorkspaceOp::Sync,
                &[sp::SYNC_LOCKED, sp::SYNC_REFRESHED, sp::SYNC_BEFORE_FETCH],
            ),
            // `sync.read` sends it down the unlocked read. Not `sync.refreshed`: `sync` explores
            // the refresh; on the locked path this one parks where its lock is taken, so the
            // schedule still decides who goes first.
            Operation::SyncFresh => Entry {
                name: "sync_fresh",
                does: Does::Request(WorkspaceOp::Sync),
                points: &[sp::SYNC_LOCKED, sp::SYNC_BEFORE_FETCH],
                cleanup: &[],
                passes: &[sp::SYNC_READ],
            },
            Operation::RawDisconnect => Entry {
                name: "raw_disconnect",
                does: Does::RawSql(RawSession::Disconnect),
                points: &[RAW_UPDATED],
                cleanup: &[],
                passes: &[],
            },
            // What it holds, no request may also hold: a request that answers 2xx while it holds
            // the lock did not take it (`lock_bypassed`), and one parked under the lock beside it
            // breaks mutual exclusion.
            Operation::LockProbe => Entry {
                name: "lock_probe",
                does: Does::RawSql(RawSession::LockProbe),
                points: &[PROBE_HOLDING],
                cleanup: &[],
                passes: &[],
            },
            // The same, one lock further in: a request that answers 2xx while it holds the row
            // read or wrote the row without locking it.
            Operation::RowProbe => Entry {
                name: "row_probe",
                does: Does::RawSql(RawSession::RowProbe),
                points: &[ROW_PROBE_HOLDING],
                cleanup: &[],
                passes: &[],
            },
            // Whatever the cut interrupts must fail cleanly — a documented 503, nothing
            // half-written, no grant lost.
            Operation::DbCut => Entry {
                name: "db_cut",
                does: Does::Faults(DB_CUT),
                points: &[],
                cleanup: &[],
                passes: &[],
            },
            // What the crash interrupts answers nothing (its connection is reset): it may have
            // committed or not, and every grant it exchanged must be stored or, once the outbox
            // has drained, revoked.
            Operation::ReplicaCrash => Entry {
                name: "replica_crash",
                does: Does::Faults(REPLICA_CRASH),
                points: &[],
                cleanup: &[],
                passes: &[],
            },
            // What it interrupts may have committed: the service must learn whether its commit
            // happened before it answers or gives a grant back.
            Operation::LostCommitReply => Entry {
                name: "lost_commit_reply",
                does: Does::Faults(LOST_COMMIT_REPLY),
                points: &[],
                cleanup: DISARM_COMMIT_REPLY,
                passes: &[],
            },
            // What it finds parked or running finishes, answered; what is sent after it is
            // refused (no answer, no effect); a grant in flight is stored before the process ends.
            Operation::ReplicaStop => Entry {
                name: "replica_stop",
                does: Does::Faults(REPLICA_STOP),
                points: &[],
                cleanup: RESTART_REPLICA,
                passes: &[],
            },
            // What calls the provider after it fails cleanly and documented (502 PROVIDER_ERROR,
            // nothing half-stored); a revocation it could not deliver waits in the outbox and is
            // delivered once the provider is back. Refused, not stalled: a stalled provider that
            // carries a request out after the service gave up on it issues a grant nobody
            // received (the documented window; `provider_pause` in scenarios).
            Operation::ProviderDown => Entry {
                name: "provider_down",
                does: Does::Faults(PROVIDER_DOWN),
                points: &[],
                cleanup: PROVIDER_UP,
                passes: &[],
            },
            // A state issued before it is gone (its callback answers OAUTH_STATE_INVALID and
            // changes nothing); what reaches a replica still reconnecting answers 503 UNAVAILABLE
            // (fail closed) and changes nothing either.
            Operation::RedisRestart => Entry {
                name: "redis_restart",
                does: Does::Faults(REDIS_RESTART),
                points: &[],
                cleanup: &[],
                passes: &[],
            },
        }
    }

    /// What `explore` pairs without `--ops`: every operation but the probes (`--lock-probes`
    /// adds the lock probe to every set instead).
    pub fn by_default() -> Vec<Operation> {
        Operation::ALL
            .into_iter()
            .filter(|o| !o.is_probe())
            .collect()
    }

    /// Whether it is a sync (`sync` or `sync_fresh`): two transactions, so whether it refreshed
    /// is not a property of one serial position, and one that refreshed nothing may have taken no
    /// workspace lock.
    pub fn is_sync(self) -> bool {
        matches!(self, Operation::Sync | Operation::SyncFresh)
    }

    /// Whether it is a probe: a lock held from the harness's own session that a request taking
    /// the same lock must wait for.
    pub fn is_probe(self) -> bool {
        matches!(
            self.does(),
            Does::RawSql(RawSession::LockProbe | RawSession::RowProbe)
        )
    }

    /// The name used in files and reports.
    pub fn as_str(self) -> &'static str {
        self.entry().name
    }

    /// What it does.
    pub fn does(self) -> Does {
        self.entry().does
    }

    /// The faults it is, if it is faults.
    pub fn fault(self) -> Option<&'static [FaultStep]> {
        match self.does() {
            Does::Faults(kinds) => Some(kinds),
            _ => None,
        }
    }

    /// Whether it takes a replica down: what it interrupts gets no answer at all.
    pub fn crashes(self) -> bool {
        self.has_fault(|k| k.dependency() == crate::faults::Dependency::Replica)
    }

    /// Whether it kills a replica (what runs on it gets no answer at all).
    pub fn kills_replica(self) -> bool {
        self.has_fault(|k| k == FaultKind::ReplicaCrash)
    }

    /// Whether it stops a replica gracefully (what it had is finished and answered; what is sent
    /// after is refused).
    pub fn stops_replica(self) -> bool {
        self.has_fault(|k| k == FaultKind::ReplicaStop)
    }

    /// Whether it ends the service's open transactions where they stand (every backend dropped, or
    /// the replica holding them killed): a request parked inside one still sits at its sync point,
    /// but its transaction — and the locks it held — are gone.
    pub fn ends_transactions(self) -> bool {
        self.has_fault(|k| {
            matches!(
                k,
                FaultKind::PostgresDropConnections | FaultKind::ReplicaCrash
            )
        })
    }

    /// Whether what it interrupts may have committed first (its answer lost with a crashed
    /// replica or a cut link), not only failed before its effect.
    pub fn may_interrupt_after_commit(self) -> bool {
        self.has_fault(|k| {
            matches!(
                k,
                FaultKind::ReplicaCrash | FaultKind::PostgresLoseCommitReply
            )
        })
    }

    /// Whether it has effects outside the database that a fault striking before its commit
    /// cannot undo: a callback consumes its state in Redis and exchanges its code, a sync
    /// refreshes (and so rotates) its token at the provider.
    pub fn acts_outside_the_database(self) -> bool {
        matches!(
            self.does(),
            Does::Request(WorkspaceOp::Callback | WorkspaceOp::Sync)
        )
    }

    /// Whether it cuts the service off from the provider: what calls it may fail (502
    /// `PROVIDER_ERROR`) instead of answering as the model says.
    pub fn cuts_provider(self) -> bool {
        self.has_fault(|k| k.dependency() == crate::faults::Dependency::Provider)
    }

    /// Whether it cuts the service off from PostgreSQL (its links cut, a commit's reply lost): what
    /// needs the database may answer a documented 503 ([`crate::explore::anomaly::UNAVAILABLE_CODES`]).
    pub fn cuts_database(self) -> bool {
        self.has_fault(|k| k.dependency() == crate::faults::Dependency::Postgres)
    }

    /// Whether it takes Redis away: what needs it may answer 503 `UNAVAILABLE` (fail closed).
    pub fn cuts_redis(self) -> bool {
        self.has_fault(|k| k.dependency() == crate::faults::Dependency::Redis)
    }

    /// Whether it is faults, one of which is `kind`-like.
    fn has_fault(self, like: impl Fn(FaultKind) -> bool) -> bool {
        self.fault()
            .is_some_and(|steps| steps.iter().any(|s| like(s.kind)))
    }

    /// What a target must offer, beyond what every exploration needs
    /// ([`crate::explore::NEEDED`]), for this operation to be explored on it: the raw writer
    /// writes the reference's schema; a fault needs the harness's proxies, a replica fault its
    /// lifecycle.
    pub fn needs(self) -> Vec<Capability> {
        match self.does() {
            Does::Request(_) => Vec::new(),
            Does::RawSql(RawSession::Disconnect) => vec![Capability::ReferenceSchema],
            // The database and the lock's name: what every exploration needs (the row probe's
            // state query is checked with the others, `explore::cannot_serve`).
            Does::RawSql(RawSession::LockProbe | RawSession::RowProbe) => Vec::new(),
            // A fault on a dependency the target does not reach through the harness's servers
            // would change nothing, and the set would read clean.
            Does::Faults(steps) => steps
                .iter()
                .flat_map(|s| Capability::to_fault(s.kind.dependency()).iter().copied())
                .collect(),
        }
    }

    /// Whether it runs in a raw session (the raw writer or the lock probe).
    pub fn is_raw_sql(self) -> bool {
        matches!(self.does(), Does::RawSql(_))
    }

    /// Its raw session's first statement, written from `names` (`None`: not a raw session, or
    /// the row probe on a target with no `lock_qbo_row`).
    pub fn raw_sql(self, names: &RawNames<'_>) -> Option<String> {
        match self.does() {
            Does::RawSql(RawSession::Disconnect) => Some(raw_disconnect_sql(names.workspace)),
            Does::RawSql(RawSession::LockProbe) => Some(format!(
                "BEGIN; SELECT pg_advisory_xact_lock({})",
                names.workspace_lock
            )),
            Does::RawSql(RawSession::RowProbe) => Some(format!("BEGIN; {}", names.lock_row?)),
            _ => None,
        }
    }

    /// Whether its request takes the workspace lock and then reads or writes the connection row
    /// under it (the service's contract: one of its sync points is under the lock), so that it
    /// cannot answer 2xx while a probe holds either.
    pub fn takes_workspace_lock(self) -> bool {
        matches!(self.does(), Does::Request(_))
            && self
                .points()
                .iter()
                .any(|p| UNDER_WORKSPACE_LOCK.contains(p))
    }

    /// The sync points it can stop at, in path order.
    pub fn points(self) -> &'static [&'static str] {
        self.entry().points
    }

    /// The sync points armed only to choose its path, let go at once ([`Entry::passes`]).
    pub fn passes(self) -> &'static [&'static str] {
        self.entry().passes
    }

    /// Every sync point armed for it: its stops, then its passes.
    pub fn armed(self) -> impl Iterator<Item = &'static &'static str> {
        self.points().iter().chain(self.passes())
    }

    /// The scenario file's `do` for it.
    pub fn scenario_action(self) -> &'static str {
        match self.does() {
            Does::Request(op) => op.as_str(),
            Does::RawSql(_) => "sql",
            Does::Faults(_) => "fault",
        }
    }

    /// What the reference model says it answers, applied to `model` (state index 0 is the flow the
    /// starting state left pending).
    pub fn apply(self, model: &mut Model) -> Option<Expected> {
        match self.does() {
            Does::Request(op) => Some(op.apply(model, Who::Owner, Provider::Qbo, 0, false)),
            // A probe only makes others wait: the model has no lock.
            Does::RawSql(RawSession::LockProbe | RawSession::RowProbe) => None,
            Does::RawSql(RawSession::Disconnect) => {
                // No lifecycle rules: the raw writer sets the status, whatever it was.
                if let Some(c) = model.connections.get_mut(&Provider::Qbo) {
                    c.status = ConnectionStatus::Disconnected;
                    c.settled = ConnectionStatus::Disconnected;
                    c.pending_flow = None;
                    c.expires_at = None;
                }
                None
            }
            // A provider that refuses every call is the model's failing token endpoint: a
            // callback after it fails its exchange, a stale sync its refresh.
            Does::Faults(_) if self.cuts_provider() => {
                model.token_fault = true;
                None
            }
            // Redis without persistence forgets every OAuth state it held: each is as good as
            // consumed.
            Does::Faults(_) if self.cuts_redis() => {
                for state in &mut model.states {
                    state.consumed = true;
                }
                None
            }
            // The model has no database or cache to lose: any other fault changes nothing it
            // tracks. What the fault does to another operation is the oracle's business (an
            // interrupted operation).
            Does::Faults(_) => None,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Operation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Operation::ALL
            .iter()
            .copied()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Operation::ALL.iter().map(|o| o.as_str()).collect();
                format!("unknown operation {s:?}: expected {}", names.join(", "))
            })
    }
}
