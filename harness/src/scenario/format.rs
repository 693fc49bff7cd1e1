//! The scenario file format (TOML), as auditors write it: the input of [`super::load`], which turns
//! it into the typed [`super::typed`]. `scenarios/README.md` documents it with a worked example;
//! every table refuses unknown fields, so a typo is an error, not a silent no-op. Each step kind's
//! own fields are declared in its file under [`super::step`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::TokenKind;

/// How bad it is when the scenario fails.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    Serialize,
    clap::ValueEnum,
)]
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

/// How the service under test runs for this scenario.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Replicas sharing the database and Redis.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub replicas: usize,
    /// Per-tenant rate limit of the OAuth routes, `per_minute/burst`.
    pub rate_limit_tenant: Option<String>,
    /// Failed state look-ups per address, `per_minute/burst`.
    pub rate_limit_failed_states: Option<String>,
    /// Bound on each step (and each probe), in milliseconds.
    #[serde(
        default = "default_step_timeout",
        skip_serializing_if = "is_default_step_timeout"
    )]
    pub step_timeout_ms: u64,
    /// Most pooled PostgreSQL connections per replica (default 20).
    pub database_max_connections: Option<u32>,
    /// How long a request waits for a pooled connection, in milliseconds (default 10,000).
    pub database_acquire_timeout_ms: Option<u64>,
    /// How long the service waits for the provider's back channel, in milliseconds (default 5,000).
    pub provider_timeout_ms: Option<u64>,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_default_step_timeout(ms: &u64) -> bool {
    *ms == default_step_timeout()
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_valid(t: &TokenChoice) -> bool {
    *t == valid()
}

/// Whether a field holds its default (it is then left out of a written file).
pub fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
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
            provider_timeout_ms: None,
        }
    }
}

/// A tenant with one workspace; its users are `<name>.owner` and `<name>.member`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantFixture {
    /// The name steps refer to (`{workspace:<name>}`, `<name>.owner`).
    pub name: String,
    /// Whether the workspace has an active entitlement.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub entitled: bool,
    /// Connection statuses forced as fixtures (no tokens), by provider.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub connections: BTreeMap<String, String>,
    /// Providers connected through the real OAuth flow (with tokens) by the owner.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub oauth: Vec<String>,
}

fn yes() -> bool {
    true
}

/// `count` tenants named `<prefix>0 … <prefix>{count-1}`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSet {
    /// Name prefix; `each_of = "<prefix>"` runs a step once per tenant.
    pub prefix: String,
    /// How many.
    pub count: usize,
    /// Whether their workspaces are entitled.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub entitled: bool,
}

/// Which bearer token an actor presents: no `Authorization` header at all, or a token of one of
/// the [`TokenKind`]s the harness's identity gateway signs (`valid`, `expired`, `wrong_key`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenChoice {
    /// No `Authorization` header.
    None,
    /// A token of this kind for the actor's user.
    #[serde(untagged)]
    Kind(TokenKind),
}

/// Someone (or something) acting in the scenario. Their requests and SQL sessions are tagged with
/// the name, so the lock tables can say who blocks whom.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActorDef {
    /// The actor's tag (letters, digits, `-`, `_`).
    pub name: String,
    /// The user they act as: `<tenant>.owner` or `<tenant>.member`. Optional for SQL-only actors.
    pub user: Option<String>,
    /// The token they present.
    #[serde(default = "valid", skip_serializing_if = "is_valid")]
    pub token: TokenChoice,
    /// What the actor stands for, for the trace.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub role: String,
}

fn valid() -> TokenChoice {
    TokenChoice::Kind(TokenKind::Valid)
}

impl TenantFixture {
    /// An entitled tenant with no connection.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            entitled: true,
            connections: BTreeMap::new(),
            oauth: Vec::new(),
        }
    }
}

impl ActorDef {
    /// An actor acting as `user` (none: a SQL-only actor) with a valid token.
    pub fn new(name: &str, user: Option<&str>, role: &str) -> Self {
        Self {
            name: name.to_owned(),
            user: user.map(str::to_owned),
            token: valid(),
            role: role.to_owned(),
        }
    }
}

/// An outcome expectation.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// HTTP status.
    pub status: Option<u16>,
    /// Stable error code (`error.code`).
    pub code: Option<String>,
    /// Body fields by dotted path, such as `"already_completed" = false`.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub body: BTreeMap<String, toml::Value>,
    /// Strings the raw body must not contain.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub body_excludes: Vec<String>,
    /// Strings the raw body must contain.
    #[serde(default, skip_serializing_if = "crate::scenario::format::is_default")]
    pub body_contains: Vec<String>,
    /// For `sql`/`redis`: whether it succeeded.
    pub ok: Option<bool>,
    /// For `sql`/`redis`: a substring of the error.
    pub error_contains: Option<String>,
    /// For `sql`: the rows a `SELECT` returns, as tables.
    pub rows: Option<Vec<toml::Table>>,
}

/// How many copies of a concurrent step must match `expect`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CountExpect {
    /// The expectation.
    #[serde(flatten)]
    pub expect: Expect,
    /// How many copies match it.
    pub count: usize,
}

/// A fact about the end state (or, in an `assert` step, the state now). Exactly one kind per table.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
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
    /// Every grant the provider holds live is stored by exactly one CONNECTED connection, and
    /// every CONNECTED connection holds a live grant: nothing lost silently, nothing doubled.
    pub grants_accounted: Option<bool>,
    /// With `grants_accounted`: how many live grants may be stored nowhere — only for a replica
    /// that dies mid-load, whose token answers in flight no client can keep (the scenario's
    /// description must say why). Default 0.
    pub lost_at_most: Option<usize>,
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
        if self.grants_accounted.is_some() {
            k.push("grants_accounted");
        }
        k
    }
}
