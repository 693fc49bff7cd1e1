//! What an executed schedule records: its decisions, every stop observed after each, each
//! operation's answer, and the end state — the data the oracles judge, the report shows and a
//! saved scenario file is written from.

use std::time::Duration;

use harbor_service::lifecycle::ConnectionStatus;

use crate::client::Answer;

pub use crate::schedule::Decision;

/// Where an operation stands once the system has settled.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// Parked at this sync point.
    Parked(&'static str),
    /// Waiting for a lock held by these operations' backends (actor tags).
    Blocked(Vec<String>),
    /// Finished; its outcome is recorded.
    Done,
}

/// What the engine saw after a decision: each operation whose stop changed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Observed {
    /// The decision's index.
    pub decision: usize,
    /// The operation.
    pub op: usize,
    /// Its new stop.
    pub stop: Stop,
}

/// A finished operation's answer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Finished {
    /// HTTP status (0 for the raw writer, or a request that failed).
    pub status: u16,
    /// The error code, if any.
    pub code: Option<String>,
    /// A short summary (`200 CONNECTED`, `409 ACTIVATION_NOT_READY`, `ok`).
    pub summary: String,
    /// The whole answer, for comparison with the model (HTTP operations).
    #[serde(skip)]
    pub answer: Option<Answer>,
}

/// What the oracles read after the last operation finished.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EndState {
    /// The QuickBooks connection's status.
    pub status: Option<ConnectionStatus>,
    /// Activation rows of the workspace.
    pub activations: i64,
    /// Code exchanges that issued tokens during the schedule.
    pub exchanges: u64,
    /// Refreshes that issued tokens during the schedule.
    pub refreshes: u64,
    /// Grants revoked at the provider during the schedule.
    pub revocations: u64,
}

impl EndState {
    /// The connection's status as the database stores it (`CONNECTED`), or `no row`.
    pub fn status_name(&self) -> &'static str {
        self.status.map_or("no row", |s| s.as_str())
    }
}

/// One executed schedule. Its default is a run nothing has happened in yet (no decision, no
/// answer, no finding).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ScheduleRun {
    /// The decisions, in order (the schedule, as data).
    pub decisions: Vec<Decision>,
    /// Every stop observed, in order.
    pub observed: Vec<Observed>,
    /// Each operation's answer (`None`: it never finished).
    pub finished: Vec<Option<Finished>>,
    /// Operations in the order they finished.
    pub completion_order: Vec<usize>,
    /// Two operations parked under the workspace lock at once (the first time it happened).
    pub exclusion_broken: Option<(usize, &'static str, usize, &'static str)>,
    /// For each activation released from `activation.before_commit`: the committed connection
    /// status at that moment.
    pub status_at_activation_commit: Vec<(usize, Option<ConnectionStatus>)>,
    /// What the run could not do (a hang, a deadlock, a request that failed), if anything.
    pub stuck: Option<String>,
    /// The scheduler refused to go on (a replay whose recorded choice could not run): the run is
    /// not the schedule asked for, and no verdict rests on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The state at the end.
    pub end: EndState,
    /// Whether any workspace lock was still held or awaited at the end.
    pub lock_left: Option<String>,
    /// The token-binding oracle's complaint, if any.
    pub tokens_unbound: Option<String>,
    /// A CONNECTED connection of the workspace whose grant the provider no longer honours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_grant_dead: Option<String>,
    /// Documents of the workspace held under a connection that is not CONNECTED, or as a grant
    /// it does not hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documents_orphaned: Option<String>,
    /// A request launched while the lock probe held the workspace lock that answered 2xx before
    /// the probe let go — it did not take the lock (the request's index, the probe's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_bypassed: Option<(usize, usize)>,
    /// Wall time.
    #[serde(skip)]
    pub duration: Duration,
    /// Of which making the starting state (fixtures and the OAuth flow).
    #[serde(skip)]
    pub setup: Duration,
    /// Of which the end checks (end state, lock tables, token binding, documents).
    #[serde(skip)]
    pub checks: Duration,
    /// Where the rest went, phase by phase.
    #[serde(skip)]
    pub spent: Spent,
}

/// Where a schedule's time went between its setup and its checks: what to cut to explore faster.
#[derive(Clone, Debug, Default)]
pub struct Spent {
    /// Bringing the prepared workspace to its starting state (a connected start's code exchange,
    /// a stale start's clock): on the schedule's path, unlike making the workspace.
    pub start: Duration,
    /// Carrying out the decisions: sending requests, opening the raw writer's sessions,
    /// releasing sync points, applying faults.
    pub advance: Duration,
    /// Settling after each decision: waiting until nothing can move.
    pub settle: Duration,
    /// Of which reading the lock tables (each read is one query for every moving operation).
    pub lock_reads: Duration,
    /// How many times the lock tables were read.
    pub lock_read_count: u32,
    /// Releasing, joining and undoing what the operations left, before the checks.
    pub cleanup: Duration,
}

/// `200 CONNECTED`, `409 ACTIVATION_NOT_READY`, `200 already_completed=false`.
pub fn summary_of(a: &Answer) -> String {
    if let Some(code) = a.error_code() {
        return format!("{} {code}", a.status.as_u16());
    }
    for field in ["status", "already_completed", "refreshed"] {
        if let Some(v) = a.body.get(field) {
            return match v.as_str() {
                Some(s) => format!("{} {s}", a.status.as_u16()),
                None => format!("{} {field}={v}", a.status.as_u16()),
            };
        }
    }
    a.status.as_u16().to_string()
}

impl ScheduleRun {
    /// Each operation's answer in a word (`-` when it never finished), in operation order: the
    /// one listing outcome keys and findings are written from.
    pub fn answers<'r>(
        &'r self,
        ops: &'r [super::ops::Operation],
    ) -> impl Iterator<Item = (usize, super::ops::Operation, &'r str)> + 'r {
        self.finished
            .iter()
            .enumerate()
            .map(|(i, f)| (i, ops[i], f.as_ref().map_or("-", |f| f.summary.as_str())))
    }
}
