//! [`FaultProxy`]: a TCP proxy between the service's replicas and one of their dependencies, that
//! the harness can stall or cut — the smallest nemesis that makes "Redis stops answering" or "the
//! database connection is gone" a step of a scenario without touching the shared servers other
//! scenarios run on.
//!
//! The replicas of a [`crate::target::started::Started`] reach Redis, and PostgreSQL for their
//! requests, through one proxy each; the harness's own clients (assertions, lock-table evidence,
//! `sql` and `redis` steps, leak search) go to the servers directly, so a stalled proxy never
//! blinds the evidence.

mod proxy;
pub mod tally;
pub use proxy::FaultProxy;

/// What a scenario can do to a dependency or a replica (`do = "fault"`, `fault = "…"`).
///
/// The `*_pause`, `*_down` and `*_drop_connections` faults act on the proxies between the
/// replicas and the servers; `redis_client_kill`, `redis_flush` and `postgres_terminate_*` are
/// done by the servers themselves; `replica_*` act on the service's own processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Redis stops answering: bytes in both directions are held (connections stay open), and new
    /// connections are accepted but get no answer — like a server frozen by SIGSTOP.
    RedisPause,
    /// Redis answers again; held bytes flow.
    RedisResume,
    /// Every open connection to Redis is closed at once by the network (the proxy).
    RedisDropConnections,
    /// The Redis server is gone: open connections are cut and new ones refused (nothing listens).
    RedisDown,
    /// The Redis server is back (the data it held is as the scenario left it; see `redis_flush`).
    RedisUp,
    /// A restart of a Redis that does not persist: down, every key of the service lost, and up
    /// again after `for_ms`.
    RedisRestart,
    /// Every key under the service's prefix is deleted (what a restart without persistence loses).
    RedisFlush,
    /// The replicas' PostgreSQL connections stop answering (bytes held both ways).
    PostgresPause,
    /// They answer again; a lost reply still armed (no `COMMIT` or lone statement came) is
    /// disarmed.
    PostgresResume,
    /// Every open PostgreSQL connection of the replicas is cut: each backend ends (and with it
    /// its transaction and its locks) as it would when a replica's host loses the network.
    PostgresDropConnections,
    /// The next `COMMIT` a replica sends reaches the server and is carried out, and then its
    /// reply is lost: the connection is cut after the server has answered, before the answer
    /// reaches the replica (which cannot tell a lost reply from a failed commit).
    PostgresLoseCommitReply,
    /// The next `COMMIT` a replica sends never reaches the server: its connection is cut instead,
    /// and the server rolls the transaction back (the replica, again, cannot tell this from a
    /// lost reply).
    PostgresLoseCommit,
    /// The next statement a replica runs on its own — outside any transaction block, so that it
    /// commits by itself (a settlement, a read) — is carried out, and then its reply is lost as
    /// `postgres_lose_commit_reply`'s is: the replica cannot tell whether it wrote anything.
    /// Spotted as an extended-protocol `Execute` sent while the server is idle (how sqlx runs
    /// every statement; a lone simple query is not spotted), on a link in clear text.
    /// With an actor, the next such statement of that actor's (one that binds its tag, as every
    /// statement that tags itself does), not another client's meanwhile.
    PostgresLoseStatementReply,
    /// The server is gone: open connections are cut, new ones refused.
    PostgresDown,
    /// The server is back (committed data intact, as after a restart).
    PostgresUp,
    /// Down, and up again after `for_ms`: a server restart.
    PostgresRestart,
    /// The server ends the backend of one actor's request (`pg_terminate_backend`, found by the
    /// actor's tag in `application_name`): its transaction and locks go with it.
    PostgresTerminateActor,
    /// The server ends every backend of the service on the scenario's database.
    PostgresTerminateAll,
    /// The provider's token, revocation and resource endpoints stop answering (the service's
    /// calls run into its provider timeout).
    ProviderPause,
    /// They answer again.
    ProviderResume,
    /// Nothing listens at the provider's back channel: connections are refused.
    ProviderDown,
    /// The provider listens again.
    ProviderUp,
    /// A replica's process dies: its runtime is dropped with every request, pooled connection and
    /// task in it, the way a killed process loses them (the kernel closes its sockets).
    ReplicaCrash,
    /// A crashed replica starts again on the same address.
    ReplicaRestart,
    /// A replica stops gracefully, as on SIGTERM in a rolling deploy: it stops accepting, finishes
    /// its connections and the work its requests handed to tasks (within the service's shutdown
    /// bound), then its process ends. `replica_restart` starts it again.
    ReplicaStop,
}

/// A fault as a scenario step or an exploration asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// The replica it is done to (`None`: every replica's link to the dependency).
    pub replica: Option<usize>,
    /// For `postgres_terminate_actor`: the actor whose backend is ended.
    pub actor: Option<String>,
    /// For restarts: how long the server stays down.
    pub down_for: std::time::Duration,
}

/// What a fault did, once its effect was visible.
///
/// `effect` is the same on every correct run and goes into the trace's flake signature;
/// `measured` holds what varies between runs (how long the server took to notice, how many
/// backends or keys there were, a rebound port): kept in the trace, left out of the comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultDone {
    /// What was done and its observed effect (`replica 0 crashed; its backends ended`).
    pub effect: String,
    /// What was measured on the way (`2 backend(s) within 9 ms`), if anything.
    pub measured: Option<String>,
}

impl FaultDone {
    /// An effect with nothing measured.
    pub fn effect(effect: impl Into<String>) -> Self {
        FaultDone {
            effect: effect.into(),
            measured: None,
        }
    }

    /// An effect with what was measured on the way.
    pub fn measured(effect: impl Into<String>, measured: impl Into<String>) -> Self {
        FaultDone {
            effect: effect.into(),
            measured: Some(measured.into()),
        }
    }
}

/// What a fault is done to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependency {
    /// Redis.
    Redis,
    /// PostgreSQL (the replicas' request connections).
    Postgres,
    /// The OAuth provider's back channel (token, revocation and resource endpoints).
    Provider,
    /// A replica of the service itself.
    Replica,
}

/// What a proxy does to its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyAction {
    /// Hold bytes both ways.
    Pause,
    /// Let them flow (and disarm a lost commit reply that no `COMMIT` took).
    Resume,
    /// Close every open connection.
    Drop,
    /// Close every open connection and stop listening.
    Down,
    /// Let the next PostgreSQL `COMMIT` through, then cut its connection once the server has
    /// answered, so the answer is lost.
    LoseNextCommitReply,
    /// Cut the connection that sends the next PostgreSQL `COMMIT`, before the server reads it.
    LoseNextCommit,
    /// Let the next PostgreSQL statement run on its own through, then cut its connection once
    /// the server has answered.
    LoseNextStatementReply,
    /// Listen again.
    Up,
}

impl FaultKind {
    /// Every fault, in the order of the documentation.
    pub const ALL: [FaultKind; 25] = [
        FaultKind::RedisPause,
        FaultKind::RedisResume,
        FaultKind::RedisDropConnections,
        FaultKind::RedisDown,
        FaultKind::RedisUp,
        FaultKind::RedisRestart,
        FaultKind::RedisFlush,
        FaultKind::PostgresPause,
        FaultKind::PostgresResume,
        FaultKind::PostgresDropConnections,
        FaultKind::PostgresLoseCommitReply,
        FaultKind::PostgresLoseCommit,
        FaultKind::PostgresLoseStatementReply,
        FaultKind::PostgresDown,
        FaultKind::PostgresUp,
        FaultKind::PostgresRestart,
        FaultKind::PostgresTerminateActor,
        FaultKind::PostgresTerminateAll,
        FaultKind::ProviderPause,
        FaultKind::ProviderResume,
        FaultKind::ProviderDown,
        FaultKind::ProviderUp,
        FaultKind::ReplicaCrash,
        FaultKind::ReplicaRestart,
        FaultKind::ReplicaStop,
    ];

    /// The name used in scenario files and traces.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::RedisPause => "redis_pause",
            FaultKind::RedisResume => "redis_resume",
            FaultKind::RedisDropConnections => "redis_drop_connections",
            FaultKind::RedisDown => "redis_down",
            FaultKind::RedisUp => "redis_up",
            FaultKind::RedisRestart => "redis_restart",
            FaultKind::RedisFlush => "redis_flush",
            FaultKind::PostgresPause => "postgres_pause",
            FaultKind::PostgresResume => "postgres_resume",
            FaultKind::PostgresDropConnections => "postgres_drop_connections",
            FaultKind::PostgresLoseCommitReply => "postgres_lose_commit_reply",
            FaultKind::PostgresLoseCommit => "postgres_lose_commit",
            FaultKind::PostgresLoseStatementReply => "postgres_lose_statement_reply",
            FaultKind::PostgresDown => "postgres_down",
            FaultKind::PostgresUp => "postgres_up",
            FaultKind::PostgresRestart => "postgres_restart",
            FaultKind::PostgresTerminateActor => "postgres_terminate_actor",
            FaultKind::PostgresTerminateAll => "postgres_terminate_all",
            FaultKind::ProviderPause => "provider_pause",
            FaultKind::ProviderResume => "provider_resume",
            FaultKind::ProviderDown => "provider_down",
            FaultKind::ProviderUp => "provider_up",
            FaultKind::ReplicaCrash => "replica_crash",
            FaultKind::ReplicaRestart => "replica_restart",
            FaultKind::ReplicaStop => "replica_stop",
        }
    }

    /// What it is done to.
    pub fn dependency(self) -> Dependency {
        use FaultKind::*;
        match self {
            RedisPause | RedisResume | RedisDropConnections | RedisDown | RedisUp
            | RedisRestart | RedisFlush => Dependency::Redis,
            PostgresPause
            | PostgresResume
            | PostgresDropConnections
            | PostgresLoseCommitReply
            | PostgresLoseCommit
            | PostgresLoseStatementReply
            | PostgresDown
            | PostgresUp
            | PostgresRestart
            | PostgresTerminateActor
            | PostgresTerminateAll => Dependency::Postgres,
            ProviderPause | ProviderResume | ProviderDown | ProviderUp => Dependency::Provider,
            ReplicaCrash | ReplicaRestart | ReplicaStop => Dependency::Replica,
        }
    }

    /// The proxy action it is, when it is one.
    pub fn proxy_action(self) -> Option<ProxyAction> {
        use FaultKind::*;
        Some(match self {
            RedisPause | PostgresPause | ProviderPause => ProxyAction::Pause,
            RedisResume | PostgresResume | ProviderResume => ProxyAction::Resume,
            RedisDropConnections | PostgresDropConnections => ProxyAction::Drop,
            RedisDown | PostgresDown | ProviderDown => ProxyAction::Down,
            RedisUp | PostgresUp | ProviderUp => ProxyAction::Up,
            PostgresLoseCommitReply => ProxyAction::LoseNextCommitReply,
            PostgresLoseCommit => ProxyAction::LoseNextCommit,
            PostgresLoseStatementReply => ProxyAction::LoseNextStatementReply,
            _ => return None,
        })
    }

    /// Whether it opens a window a later fault closes (pause, down, crash), closes one, or
    /// neither: the report shades the window in the sequence diagram.
    pub fn window(self) -> Option<bool> {
        use FaultKind::*;
        match self {
            RedisPause | RedisDown | PostgresPause | PostgresDown | ProviderPause
            | ProviderDown | ReplicaCrash | ReplicaStop => Some(true),
            RedisResume | RedisUp | PostgresResume | PostgresUp | ProviderResume | ProviderUp
            | ReplicaRestart => Some(false),
            _ => None,
        }
    }

    /// Whether the step must name an actor (whose backend is ended).
    pub fn needs_actor(self) -> bool {
        self == FaultKind::PostgresTerminateActor
    }

    /// Whether the step may name an actor (the one it is aimed at).
    pub fn takes_actor(self) -> bool {
        self.needs_actor() || self == FaultKind::PostgresLoseStatementReply
    }

    /// Whether the step names a replica.
    pub fn needs_replica(self) -> bool {
        matches!(
            self,
            FaultKind::ReplicaCrash | FaultKind::ReplicaRestart | FaultKind::ReplicaStop
        )
    }

    /// Whether `for_ms` applies (the length of a restart's outage).
    pub fn takes_duration(self) -> bool {
        matches!(self, FaultKind::RedisRestart | FaultKind::PostgresRestart)
    }
}
