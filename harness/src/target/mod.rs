//! [`Target`]: the one boundary between the scenario executor and the service it certifies. The
//! executor sends HTTP as an actor, arms / awaits / releases sync points, moves the clock,
//! switches the fake provider, does faults to dependencies, and reads the lock tables and the
//! database — only through this trait. Each target declares its [`Capability`]s; each scenario's
//! requirements are derived from its typed steps ([`crate::scenario::typed::Scenario::requires`]),
//! and a scenario a target cannot serve is refused with the reason (SKIPPED, never PASS).
//!
//! It speaks in terms a remote service could answer — HTTP as an actor, fixtures returned as
//! handles, a lock named by its key in `pg_locks`, sync points by name, the contract the target
//! publishes — never in the reference crate's types. The in-process reference service
//! ([`started::Started`]) is one implementation; a black-box target (a deployed service
//! reached over HTTP, with an evidence pool) is another.
//!
//! - [`started`]: targets the harness starts: the reference service's replicas in-process, or a
//!   profile's replicas as child processes.
//! - [`contract`]: [`contract::Contract`], the error answers each operation documents, read from
//!   the target's OpenAPI document.
//! - [`flow`]: the OAuth flow as fixtures (authorize, consent, callback) through any target.
//! - [`sync_protocol`]: a target's sync points over HTTP (`docs/SYNC-POINTS-PROTOCOL.md`), for a
//!   target not started in-process.
//! - [`state_queries`]: the state a scenario reads through `{query:…}`, on any schema.
//! - [`profile`]: a target profile (`docs/TARGET-PROFILE.md`): how to start, address and set up a
//!   service Harbor did not compile in.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::{BoxFuture, LocalBoxFuture};
use harbor_service::domain::{ConnectionId, Provider, TenantId, UserId, WorkspaceId};
use harbor_service::lifecycle::ConnectionStatus;
use harbor_syncpoint::{SlotKey, SlotState};
use secrecy::SecretString;
use serde::Serialize;
use sqlx::PgPool;

use crate::client::ApiClient;
use crate::evidence::AdvisoryKey;
use crate::fake_provider::FakeProvider;
use crate::faults::Fault;
use crate::fixtures::TenantWorkspace;
use crate::identity::TokenKind;

pub mod contract;
pub mod flow;
pub mod profile;
mod restricted;
pub mod started;
pub mod state_queries;
pub mod sync_protocol;

pub use contract::Contract;
pub use flow::{complete_flow, connect, start_flow, start_flow_on};
pub use restricted::Restricted;

/// Something a target can do beyond answering HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Capability {
    /// Park a tagged request at a named sync point and release it.
    SyncPoints,
    /// Move the service's clock.
    Clock,
    /// Switch the OAuth provider's behaviour, read its counters and what it issued.
    ProviderControl,
    /// Stall, cut or refuse the service's connections to PostgreSQL, Redis and the provider's
    /// back channel; end its backends; flush its Redis keys.
    Faults,
    /// Crash a replica (everything in its process lost) and start it again.
    Crash,
    /// Read the database: fixtures, SQL steps and assertions, lock-table evidence, `pg_dump`.
    Database,
    /// Read and write the service's Redis keys.
    Redis,
    /// Decrypt stored tokens with the service's keys (the token-binding oracle).
    TokenKeys,
    /// The workspace's advisory lock is named (its key, as `pg_locks` shows it): lock probes
    /// take it, and "waits on the workspace lock" and "no lock left held" are judged against it.
    WorkspaceLock,
    /// The database has the reference service's schema, and Redis its key layout: the
    /// catalogue's SQL steps and assertions, its `until` conditions on stored rows, its Redis key
    /// patterns and the stored-token oracles are written against them.
    ReferenceSchema,
    /// The database holds only what the harness made for this run: a query over the whole of it
    /// (a state query without a workspace, a dump searched for canaries) reads nobody else's
    /// rows. A deployed target's database may hold anyone's.
    IsolatedDatabase,
}

impl Capability {
    /// What a fault on `dependency` needs of a target: the proxies, and the link itself taken
    /// from the harness — a target that reaches its own Redis (no `{redis_url}`) while taking
    /// `{database_url}` has the proxies, but a Redis fault would reach nobody, change nothing,
    /// and leave a scenario expecting the service to survive it unable to fail.
    pub fn to_fault(dependency: crate::faults::Dependency) -> &'static [Capability] {
        use crate::faults::Dependency;
        match dependency {
            Dependency::Replica => &[Capability::Crash],
            Dependency::Redis => &[Capability::Faults, Capability::Redis],
            Dependency::Postgres => &[Capability::Faults, Capability::Database],
            Dependency::Provider => &[Capability::Faults, Capability::ProviderControl],
        }
    }

    /// Every capability, in the order tables list them.
    pub const ALL: [Capability; 11] = [
        Capability::SyncPoints,
        Capability::Clock,
        Capability::ProviderControl,
        Capability::Faults,
        Capability::Crash,
        Capability::Database,
        Capability::Redis,
        Capability::TokenKeys,
        Capability::WorkspaceLock,
        Capability::ReferenceSchema,
        Capability::IsolatedDatabase,
    ];

    /// Its name on command lines and in profiles (`sync_points`).
    pub fn name(self) -> &'static str {
        match self {
            Capability::SyncPoints => "sync_points",
            Capability::Clock => "clock",
            Capability::ProviderControl => "provider_control",
            Capability::Faults => "faults",
            Capability::Crash => "crash",
            Capability::Database => "database",
            Capability::Redis => "redis",
            Capability::TokenKeys => "token_keys",
            Capability::WorkspaceLock => "workspace_lock",
            Capability::ReferenceSchema => "reference_schema",
            Capability::IsolatedDatabase => "isolated_database",
        }
    }

    /// What it means, for a SKIPPED reason.
    pub fn describe(self) -> &'static str {
        match self {
            Capability::SyncPoints => "sync points (parking and releasing requests)",
            Capability::Clock => "moving the service's clock",
            Capability::ProviderControl => "control of the OAuth provider",
            Capability::Faults => {
                "fault injection into the service's PostgreSQL, Redis and provider connections"
            }
            Capability::Crash => "crashing and restarting replicas",
            Capability::Database => "access to the database (fixtures, SQL, lock tables)",
            Capability::Redis => "access to the service's Redis keys",
            Capability::TokenKeys => "the service's token encryption keys",
            Capability::WorkspaceLock => "the workspace lock's key (database.workspace_lock)",
            Capability::ReferenceSchema => {
                "the reference service's schema and Redis key layout (the scenario's SQL or key patterns are written against them)"
            }
            Capability::IsolatedDatabase => {
                "a database of the run's own (the scenario reads the whole database)"
            }
        }
    }
}

/// Redis as the target's service sees it.
#[derive(Clone, Copy, Debug)]
pub struct RedisAccess<'a> {
    /// The server's URL (direct, not through a fault proxy).
    pub url: &'a str,
    /// The prefix of every key the service writes.
    pub prefix: &'a str,
}

/// A tenant to make: one workspace with an owner, an admin and a plain member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantSpec {
    /// Its name (unique within the run).
    pub name: String,
    /// Whether the workspace is entitled to activation.
    pub entitled: bool,
    /// The QuickBooks connection's starting status.
    pub qbo: ConnectionStatus,
}

/// Where a stored token sits: the row and field it is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredToken {
    /// The connection's tenant.
    pub tenant: TenantId,
    /// The connection.
    pub connection: ConnectionId,
    /// Its provider.
    pub provider: Provider,
    /// The refresh token (`true`) or the access token.
    pub refresh: bool,
    /// The grant the token belongs to, when the row records one.
    pub grant: Option<uuid::Uuid>,
}

/// Opens stored tokens with the target's keys: what the token-binding and grant oracles read.
pub trait TokenInspector: Send + Sync {
    /// The plaintext of `sealed`, which must open only for the row and field `at`.
    fn open(&self, sealed: &[u8], at: &StoredToken) -> Result<SecretString, String>;
}

/// What a technique asks of the target it starts: the replicas and the service-side knobs a
/// scenario's `[service]` section sets (`None`: the target's own default).
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// How many replicas, sharing one database and one Redis.
    pub replicas: usize,
    /// Whether requests may be parked at sync points.
    pub sync_points: bool,
    /// How long a parked request waits to be released before it fails.
    pub sync_point_timeout: Option<Duration>,
    /// The request pool's size.
    pub database_max_connections: Option<u32>,
    /// How long a request waits for a pooled connection.
    pub database_acquire_timeout: Option<Duration>,
    /// The bound on each call to the provider.
    pub provider_timeout: Option<Duration>,
    /// Requests per tenant.
    pub rate_limit_tenant: Option<harbor_service::ratelimit::Quota>,
    /// Requests per client address.
    pub rate_limit_address: Option<harbor_service::ratelimit::Quota>,
    /// Failed OAuth states per user.
    pub rate_limit_failed_states: Option<harbor_service::ratelimit::Quota>,
    /// Promises that no fault will be injected on a dependency (PostgreSQL, Redis, the provider),
    /// so a launcher may leave out what such faults cost: a target the harness starts then runs
    /// without its fault proxies — one hop less on every round trip — and does not offer
    /// [`Capability::Faults`]. Replica faults do not need the proxies.
    pub without_dependency_faults: bool,
}

/// Starts a fresh target for one scenario, one exploration or one sequence. Its futures are not
/// `Send`: a target is started and stopped on the task that uses it.
pub trait Launcher: Send + Sync {
    /// Starts a target as `setup` asks.
    fn launch<'a>(
        &'a self,
        setup: &'a Setup,
    ) -> LocalBoxFuture<'a, Result<Box<dyn Launched>, String>>;

    /// Why the targets it starts cannot be given what `setup` sets (`None`: they can). A
    /// scenario whose `[service]` section sets a knob its target takes no value for is SKIPPED
    /// with this reason: its expectations assume the knob.
    fn cannot_set(&self, _setup: &Setup) -> Option<String> {
        None
    }

    /// What the targets it starts will offer, when it knows before starting one (a profile's
    /// launcher does): a scenario they cannot serve is then SKIPPED without starting anything.
    fn offers(&self) -> Option<BTreeSet<Capability>> {
        None
    }

    /// The version the targets it started say they are (once one has started).
    fn target_version(&self) -> Option<String> {
        None
    }
}

/// A target a [`Launcher`] started, to be stopped when the technique is done with it.
pub trait Launched: Target {
    /// The target, as the techniques see it.
    fn target(&self) -> &dyn Target;

    /// Stops it and removes what it made.
    fn stop(self: Box<Self>) -> LocalBoxFuture<'static, Result<(), String>>;
}

/// What the executor may do to the service under certification. Methods behind a capability the
/// target lacks answer `None` or an error; the runner never calls them, because it refuses the
/// scenario first.
pub trait Target: Send + Sync {
    /// What it can do.
    fn capabilities(&self) -> BTreeSet<Capability>;

    /// How many replicas answer (requests name one by index).
    fn replicas(&self) -> usize;

    /// The client of the service's API (one base URL per replica).
    fn client(&self) -> &ApiClient;

    /// The error answers each operation documents, as the target publishes them (`None`: it
    /// publishes none, and answers are not held to a contract).
    fn contract(&self) -> Option<&Contract>;

    /// Makes `spec`'s tenant, workspace and members; returns their handles.
    fn create_tenant<'a>(
        &'a self,
        spec: &'a TenantSpec,
    ) -> BoxFuture<'a, Result<TenantWorkspace, String>>;

    /// Puts `workspace`'s connection to `provider` in `status` (a fixture, not a transition).
    fn set_connection_status(
        &self,
        workspace: WorkspaceId,
        provider: Provider,
        status: ConnectionStatus,
    ) -> BoxFuture<'_, Result<(), String>>;

    /// The advisory lock that serialises `workspace`'s operations, as `pg_locks` shows it.
    fn workspace_lock(&self, workspace: WorkspaceId) -> Option<AdvisoryKey>;

    /// A bearer token of `kind` for `user`.
    fn bearer(&self, user: UserId, kind: TokenKind) -> String;

    /// The SQL of state query `name` ([`STATE_QUERIES`]) on `workspace`, in the target's schema
    /// (`None`: the target defines none by that name).
    fn state_query(&self, name: &str, workspace: WorkspaceId) -> Option<String>;

    /// Arm sync point `key` on `replica`: the tagged request that reaches it will park there.
    /// Asynchronous, like every sync-point method: a target reached over HTTP
    /// ([`sync_protocol::SyncPointsOverHttp`]) answers them with requests.
    fn arm(&self, replica: usize, key: SlotKey) -> BoxFuture<'_, Result<(), String>>;

    /// Whether the target implements the sync point `point` (a target of another language may
    /// implement fewer than the reference: exploration parks its requests only where it can).
    fn has_point(&self, _point: &str) -> bool {
        true
    }

    /// Resolves once the request armed at `key` on `replica` is parked.
    fn parked(&self, replica: usize, key: SlotKey) -> BoxFuture<'_, ()>;

    /// Let the request parked at `key` on `replica` go on.
    fn release<'a>(&'a self, replica: usize, key: &'a SlotKey)
        -> BoxFuture<'a, Result<(), String>>;

    /// Where the slot `key` on `replica` stands (`None`: not armed, or gone after its release).
    fn slot_state<'a>(
        &'a self,
        replica: usize,
        key: &'a SlotKey,
    ) -> BoxFuture<'a, Option<SlotState>>;

    /// Let every parked request go on and drop every armed slot (clean-up).
    fn release_all(&self) -> BoxFuture<'_, ()>;

    /// Let the request parked at `key` on `replica` go on, or drop the slot if nobody reached
    /// it: the clean-up of one schedule among several running at once, which must leave the
    /// others' slots alone.
    fn clear_slot<'a>(&'a self, replica: usize, key: &'a SlotKey) -> BoxFuture<'a, ()>;

    /// Let time pass: the service's clock forward (every replica's) and the harness's fake
    /// provider's with it; resolves once they all have.
    fn advance_clock(&self, by: Duration) -> BoxFuture<'_, Result<(), String>>;

    /// Move the service's clock back (every replica's); the provider's stays, for this is a
    /// clock gone wrong, not time going back.
    fn rewind_clock(&self, by: Duration) -> BoxFuture<'_, Result<(), String>>;

    /// The OAuth provider, when the target is wired to the harness's fake one.
    fn provider(&self) -> Option<&FakeProvider>;

    /// What the replicas wrote that the harness's own log capture does not hold — a started
    /// process's output, every replica's (`None`: the capture holds it all, as for in-process
    /// replicas; `Err`: the logs cannot be read, as a deployed target's). A leak search reads it.
    fn own_logs(&self) -> Result<Option<String>, String> {
        Ok(None)
    }

    /// How many connections to `dependency` have a request held by its last pause, summed over
    /// the replicas' links (`None`: no fault proxies on that link). Evidence that a request is
    /// waiting on a stalled dependency, not merely on its way to it.
    fn held_by_pause(&self, dependency: crate::faults::Dependency) -> Option<u64>;

    /// How many connections to `dependency` the lost-commit and lost-reply faults have cut, summed
    /// over the replicas' links (`None`: no fault proxies on that link). Evidence that an armed
    /// one struck.
    fn faults_struck(&self, dependency: crate::faults::Dependency) -> Option<u64>;

    /// Do `fault`; resolves with what was done (for the trace) once its effect is visible.
    fn apply_fault<'a>(
        &'a self,
        fault: &'a Fault,
    ) -> BoxFuture<'a, Result<crate::faults::FaultDone, String>>;

    /// A pool on the service's database: fixtures, assertions and lock-table evidence.
    fn database(&self) -> Option<&PgPool>;

    /// The database's URL, for actors' own SQL sessions and `pg_dump`.
    fn database_url(&self) -> Option<&str>;

    /// The service's Redis.
    fn redis(&self) -> Option<RedisAccess<'_>>;

    /// Opens stored tokens with the service's keys.
    fn tokens(&self) -> Option<&dyn TokenInspector>;

    /// [`Target::database`], or the error a technique that needs it gives.
    fn need_database(&self) -> Result<&PgPool, String> {
        self.database().ok_or_else(|| lacks(Capability::Database))
    }

    /// [`Target::provider`], or the error a technique that needs it gives.
    fn need_provider(&self) -> Result<&FakeProvider, String> {
        self.provider()
            .ok_or_else(|| lacks(Capability::ProviderControl))
    }

    /// [`Target::redis`], or the error a technique that needs it gives.
    fn need_redis(&self) -> Result<RedisAccess<'_>, String> {
        self.redis().ok_or_else(|| lacks(Capability::Redis))
    }

    /// [`Target::tokens`], or the error a technique that needs it gives.
    fn need_tokens(&self) -> Result<&dyn TokenInspector, String> {
        self.tokens().ok_or_else(|| lacks(Capability::TokenKeys))
    }
}

/// What a technique says when the target lacks `capability`.
pub fn lacks(capability: Capability) -> String {
    format!("the target does not offer {}", capability.describe())
}
