//! The scenario file format (TOML), as auditors write it. `scenarios/README.md` documents it with a
//! worked example; every table refuses unknown fields, so a typo is an error, not a silent no-op.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How bad it is when the scenario fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Low,
    /// Should be fixed.
    Medium,
    /// Must be fixed before release.
    High,
    /// A tenant's data or money is at stake.
    Critical,
}

impl Severity {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Stable id such as `AUD-Q2-ACTIVATION-FIRST`.
    pub id: String,
    /// One line saying what is proved.
    pub title: String,
    /// The seed section or threat it covers.
    pub source: String,
    /// How bad a failure is.
    pub severity: Severity,
    /// The audit area, such as `concurrency` or `oauth-state` (groups the report).
    pub area: String,
    /// Requirement references (RFC sections, ASVS items, audit sections).
    #[serde(default)]
    pub requirements: Vec<String>,
    /// Threat-matrix rows this scenario covers (names as in the threat model).
    #[serde(default)]
    pub threats: Vec<String>,
    /// Seeded flaws this scenario exists to catch (`harbor-certify mutants` checks that it does).
    #[serde(default)]
    pub catches: Vec<String>,
    /// Longer explanation for the report.
    #[serde(default)]
    pub description: String,
    /// How the service is started.
    #[serde(default)]
    pub service: ServiceSection,
    /// Tenants, each with one workspace, an owner and a plain member.
    #[serde(default)]
    pub tenants: Vec<TenantFixture>,
    /// Numbered tenants for load-shaped scenarios.
    #[serde(default)]
    pub tenant_sets: Vec<TenantSet>,
    /// Who acts.
    pub actors: Vec<ActorDef>,
    /// What happens, in order.
    pub steps: Vec<Step>,
    /// What must hold at the end.
    #[serde(default, rename = "assert")]
    pub assertions: Vec<Assertion>,
}

/// How the service under test runs for this scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Replicas sharing the database and Redis.
    #[serde(default = "one")]
    pub replicas: usize,
    /// Per-tenant rate limit of the OAuth routes, `per_minute/burst`.
    pub rate_limit_tenant: Option<String>,
    /// Failed state look-ups per address, `per_minute/burst`.
    pub rate_limit_failed_states: Option<String>,
    /// Bound on each step (and each probe), in milliseconds.
    #[serde(default = "default_step_timeout")]
    pub step_timeout_ms: u64,
    /// Most pooled PostgreSQL connections per replica (default 20).
    pub database_max_connections: Option<u32>,
    /// How long a request waits for a pooled connection, in milliseconds (default 10,000).
    pub database_acquire_timeout_ms: Option<u64>,
}

fn one() -> usize {
    1
}

fn default_step_timeout() -> u64 {
    5_000
}

impl Default for ServiceSection {
    fn default() -> Self {
        Self {
            replicas: 1,
            rate_limit_tenant: None,
            rate_limit_failed_states: None,
            step_timeout_ms: default_step_timeout(),
            database_max_connections: None,
            database_acquire_timeout_ms: None,
        }
    }
}

/// A tenant with one workspace; its users are `<name>.owner` and `<name>.member`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantFixture {
    /// The name steps refer to (`{workspace:<name>}`, `<name>.owner`).
    pub name: String,
    /// Whether the workspace has an active entitlement.
    #[serde(default = "yes")]
    pub entitled: bool,
    /// Connection statuses forced as fixtures (no tokens), by provider.
    #[serde(default)]
    pub connections: BTreeMap<String, String>,
    /// Providers connected through the real OAuth flow (with tokens) by the owner.
    #[serde(default)]
    pub oauth: Vec<String>,
}

fn yes() -> bool {
    true
}

/// `count` tenants named `<prefix>0 … <prefix>{count-1}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSet {
    /// Name prefix; `each_of = "<prefix>"` runs a step once per tenant.
    pub prefix: String,
    /// How many.
    pub count: usize,
    /// Whether their workspaces are entitled.
    #[serde(default = "yes")]
    pub entitled: bool,
}

/// Which bearer token an actor presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenChoice {
    /// A valid token for the actor's user.
    Valid,
    /// Expired.
    Expired,
    /// Not valid yet.
    NotYetValid,
    /// Signed with a key the service does not trust.
    WrongKey,
    /// For another audience.
    WrongAudience,
    /// From another issuer.
    WrongIssuer,
    /// No `Authorization` header at all.
    None,
}

/// Someone (or something) acting in the scenario. Their requests and SQL sessions are tagged with
/// the name, so the lock tables can say who blocks whom.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorDef {
    /// The actor's tag (letters, digits, `-`, `_`).
    pub name: String,
    /// The user they act as: `<tenant>.owner` or `<tenant>.member`. Optional for SQL-only actors.
    pub user: Option<String>,
    /// The token they present.
    #[serde(default = "valid")]
    pub token: TokenChoice,
    /// What the actor stands for, for the trace.
    #[serde(default)]
    pub role: String,
}

fn valid() -> TokenChoice {
    TokenChoice::Valid
}

/// What a step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Any HTTP call (`method`, `path`, `headers`, `body`).
    Http,
    /// `POST /v1/workspaces/{w}/activation`.
    Activate,
    /// Start an OAuth authorization and consent at the provider; the consent is kept for `callback`.
    Authorize,
    /// Deliver a consent (the actor's own, or `consent_of`'s) to the callback.
    Callback,
    /// Authorize then callback.
    Connect,
    /// `POST …/connections/{p}/disconnect`.
    Disconnect,
    /// `POST …/connections/{p}/revoke`.
    Revoke,
    /// `POST …/connections/{p}/sync`.
    Sync,
    /// `GET …/connections`.
    ListConnections,
    /// `GET …/documents`.
    ListDocuments,
    /// Raw SQL in the actor's own session (kept across steps, so `BEGIN` here and `COMMIT` later work).
    Sql,
    /// A Redis command.
    Redis,
    /// Move the service's clock forward by `seconds`.
    AdvanceClock,
    /// Release the actor's request parked at `point`.
    Release,
    /// Wait for the actor's background step to finish and check its expectations.
    Wait,
    /// Change the fake provider's behaviour.
    Provider,
    /// Check an assertion now (`check`).
    Assert,
    /// Do something to a dependency of the replicas (`fault`).
    Fault,
}

/// One step.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Who acts (not needed for `advance_clock`, `provider`, `assert`).
    pub actor: Option<String>,
    /// What they do.
    #[serde(rename = "do")]
    pub action: Action,
    /// A note for the trace (what the audit's table would say).
    pub note: Option<String>,
    /// The tenant whose workspace is addressed (default: the actor's user's tenant).
    pub workspace: Option<String>,
    /// The provider (`qbo`, `gmail`, `slack`, `box`).
    pub provider: Option<String>,
    /// HTTP method for `http`.
    pub method: Option<String>,
    /// Path for `http`, with placeholders.
    pub path: Option<String>,
    /// Extra request headers (placeholders allowed).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON body for `http`.
    pub body: Option<toml::Value>,
    /// For `callback`: deliver this actor's consent instead of one's own.
    pub consent_of: Option<String>,
    /// For `callback`: deliver the provider's answer for a user who declined
    /// (`error=access_denied`) instead of the code.
    #[serde(default)]
    pub denied: bool,
    /// Replica the request goes to.
    #[serde(default)]
    pub replica: usize,
    /// For `connect`: replica of the callback.
    pub callback_replica: Option<usize>,
    /// Run this many copies at once.
    pub concurrency: Option<usize>,
    /// With `concurrency`/`each_of`: spread the copies over every replica, round-robin.
    #[serde(default)]
    pub all_replicas: bool,
    /// Run once per tenant of this set, each as that tenant's owner, all at once.
    pub each_of: Option<String>,
    /// For `sql`: the statement(s).
    pub sql: Option<String>,
    /// For `sql`: run as this role (`harbor_app` to play the service's session).
    pub role: Option<String>,
    /// For `sql`: the tenant set for row-level security (`harbor.tenant_id`).
    pub tenant: Option<String>,
    /// For `redis`: the command and its arguments (`{prefix}` is the scenario's key prefix).
    pub redis: Option<Vec<String>>,
    /// For `advance_clock`.
    pub seconds: Option<u64>,
    /// For `release`: the sync point.
    pub point: Option<String>,
    /// For `provider`: `server_error`, `invalid_grant` or `none`.
    pub token_fault: Option<String>,
    /// For `provider`: make revocation fail.
    pub revoke_fails: Option<bool>,
    /// For `provider`: rotate refresh tokens.
    pub rotate_refresh_tokens: Option<bool>,
    /// For `provider`: what the token endpoint sends as `expires_in`.
    pub expires_in: Option<crate::fake_provider::ExpiresIn>,
    /// For `provider`: list documents in reverse order.
    pub reverse_documents: Option<bool>,
    /// For `fault`: what happens to the dependency.
    pub fault: Option<crate::faults::FaultKind>,
    /// Park the request at this sync point (the step runs in the background until released).
    pub park_at: Option<String>,
    /// Run in the background without parking (finish it with `wait`).
    #[serde(default)]
    pub background: bool,
    /// The step must block on a lock, held by another actor (it runs in the background).
    pub expect_blocked: Option<ExpectBlocked>,
    /// What the step's outcome must be.
    pub expect: Option<Expect>,
    /// For `concurrency`/`each_of`: what every copy's outcome must be.
    pub expect_all: Option<Expect>,
    /// For `concurrency`/`each_of`: how many copies match each expectation.
    #[serde(default)]
    pub expect_counts: Vec<CountExpect>,
    /// For `assert`: the assertion.
    pub check: Option<Assertion>,
}

/// Blocking, as the lock tables must show it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectBlocked {
    /// The actor whose backend must be among `pg_blocking_pids()`.
    pub on: String,
    /// Acceptable lock types of the awaited lock (`advisory`, `tuple`, `transactionid`, `relation`).
    #[serde(default)]
    pub lock: Vec<String>,
    /// For advisory locks: the workspace whose lock key (`classid`, `objid`) must be the one awaited.
    pub object: Option<String>,
}

/// An outcome expectation.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// HTTP status.
    pub status: Option<u16>,
    /// Stable error code (`error.code`).
    pub code: Option<String>,
    /// Body fields by dotted path, such as `"already_completed" = false`.
    #[serde(default)]
    pub body: BTreeMap<String, toml::Value>,
    /// Strings the raw body must not contain.
    #[serde(default)]
    pub body_excludes: Vec<String>,
    /// Strings the raw body must contain.
    #[serde(default)]
    pub body_contains: Vec<String>,
    /// For `sql`/`redis`: whether it succeeded.
    pub ok: Option<bool>,
    /// For `sql`/`redis`: a substring of the error.
    pub error_contains: Option<String>,
    /// For `sql`: the rows a `SELECT` returns, as tables.
    pub rows: Option<Vec<toml::Table>>,
}

/// How many copies of a concurrent step must match `expect`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CountExpect {
    /// The expectation.
    #[serde(flatten)]
    pub expect: Expect,
    /// How many copies match it.
    pub count: usize,
}

/// A fact about the end state (or, in an `assert` step, the state now). Exactly one kind per table.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    /// What it checks, for the report.
    pub note: Option<String>,
    /// A `SELECT` (placeholders allowed) whose rows must equal `rows`, or whose single value must
    /// equal `equals`.
    pub sql: Option<String>,
    /// Expected rows of `sql`.
    pub rows: Option<Vec<toml::Table>>,
    /// Expected single value of `sql`, or of `provider_counter`, or key count of `redis_keys`.
    pub equals: Option<toml::Value>,
    /// Redis keys matching this pattern (after the scenario prefix) must number `equals`.
    pub redis_keys: Option<String>,
    /// And each must have a TTL within this range (seconds, inclusive).
    pub ttl_between: Option<[i64; 2]>,
    /// A fake-provider counter, `<provider>.<counter>` (`qbo.code_exchanges`).
    pub provider_counter: Option<String>,
    /// No backend holds or awaits the advisory lock of this tenant's workspace.
    pub no_lock_held: Option<String>,
    /// Search a full `pg_dump`, every Redis key and value, every response and the logs for every
    /// code and token the fake provider issued.
    pub no_canary_leaks: Option<bool>,
    /// Every stored token decrypts for its own row, and no two connections share a token.
    pub tokens_bound: Option<bool>,
}

impl Assertion {
    /// The kinds set in this table.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        if self.sql.is_some() {
            k.push("sql");
        }
        if self.redis_keys.is_some() {
            k.push("redis_keys");
        }
        if self.provider_counter.is_some() {
            k.push("provider_counter");
        }
        if self.no_lock_held.is_some() {
            k.push("no_lock_held");
        }
        if self.no_canary_leaks.is_some() {
            k.push("no_canary_leaks");
        }
        if self.tokens_bound.is_some() {
            k.push("tokens_bound");
        }
        k
    }
}
