//! The typed scenario: what [`super::load`] makes of a file once it has checked it. Every name is
//! resolved to a typed value here — providers, sync points, flaws, quotas, token kinds, users — so
//! the executor never parses anything again.

use std::collections::BTreeSet;
use std::time::Duration;

use harbor_service::domain::Provider;
use harbor_service::flaws::Flaw;
use harbor_service::lifecycle::ConnectionStatus;
use harbor_service::ratelimit::Quota;

use super::actor::ActorSpec;
use super::format::{Severity, TenantSet};
use super::step::Step;
use crate::target::Capability;

pub use super::assertion::Assertion;

/// A checked scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Stable id such as `AUD-Q2-ACTIVATION-FIRST`.
    pub id: String,
    /// One line saying what is proved.
    pub title: String,
    /// The seed section or threat it covers.
    pub source: String,
    /// How bad a failure is.
    pub severity: Severity,
    /// The audit area (a key of [`crate::catalogue::AREAS`]).
    pub area: String,
    /// Requirement references.
    pub requirements: Vec<String>,
    /// Threat-matrix rows covered.
    pub threats: Vec<String>,
    /// Seeded flaws it exists to catch.
    pub catches: Vec<Flaw>,
    /// Longer explanation for the report.
    pub description: String,
    /// How the service is started.
    pub service: ServiceSettings,
    /// Named tenants.
    pub tenants: Vec<Tenant>,
    /// Numbered tenants.
    pub tenant_sets: Vec<TenantSet>,
    /// Who acts.
    pub actors: Vec<ActorSpec>,
    /// What happens; the file's order is one schedule of them.
    pub steps: Vec<Step>,
    /// What must hold at the end.
    pub assertions: Vec<Assertion>,
}

/// How the service under test runs.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    /// Replicas sharing the database and Redis.
    pub replicas: usize,
    /// Per-tenant rate limit of the OAuth routes.
    pub rate_limit_tenant: Option<Quota>,
    /// Failed state look-ups per address.
    pub rate_limit_failed_states: Option<Quota>,
    /// Bound on each step and probe.
    pub step_timeout: Duration,
    /// Most pooled PostgreSQL connections per replica.
    pub database_max_connections: Option<u32>,
    /// How long a request waits for a pooled connection.
    pub database_acquire_timeout: Option<Duration>,
    /// How long the service waits for the provider's back channel.
    pub provider_timeout: Option<Duration>,
}

/// A tenant with one workspace, an owner and a member.
#[derive(Clone, Debug)]
pub struct Tenant {
    /// The name steps refer to.
    pub name: String,
    /// Whether the workspace is entitled.
    pub entitled: bool,
    /// Connection statuses forced as fixtures (no tokens).
    pub connections: Vec<(Provider, ConnectionStatus)>,
    /// Providers connected through the real OAuth flow by the owner.
    pub oauth: Vec<Provider>,
}

impl Tenant {
    /// The QuickBooks status the workspace is created with.
    pub fn qbo_status(&self) -> ConnectionStatus {
        self.connections
            .iter()
            .find(|(p, _)| *p == Provider::Qbo)
            .map_or(ConnectionStatus::NotConnected, |(_, s)| *s)
    }
}

impl Scenario {
    /// The actor named `name` (steps only name declared actors).
    pub fn actor(&self, name: &str) -> Option<&ActorSpec> {
        self.actors.iter().find(|a| a.name == name)
    }

    /// What its target must be started with: its `[service]` section. Always with the fault
    /// proxies: FLT-REPLICA-CRASH-AND-STOP-1000-FLOWS answered one 503 UNAVAILABLE (a Redis
    /// error, not among its documented answers) in one of six runs without them, unexplained.
    pub fn setup(&self) -> crate::target::Setup {
        crate::target::Setup {
            replicas: self.service.replicas,
            sync_points: true,
            sync_point_timeout: Some(self.service.step_timeout * 4),
            database_max_connections: self.service.database_max_connections,
            database_acquire_timeout: self.service.database_acquire_timeout,
            provider_timeout: self.service.provider_timeout,
            rate_limit_tenant: self.service.rate_limit_tenant,
            rate_limit_address: None,
            rate_limit_failed_states: self.service.rate_limit_failed_states,
            without_dependency_faults: false,
        }
    }

    /// The sync points its steps park at or release: a target that offers sync points must
    /// implement each of these (it may list fewer than the reference).
    pub fn sync_points(&self) -> BTreeSet<&'static str> {
        let mut points = BTreeSet::new();
        for s in &self.steps {
            s.sync_points(&mut points);
        }
        points
    }

    /// The capabilities it needs of its target: tenants are fixtures in the database, and each
    /// step and assertion adds its own.
    pub fn requires(&self) -> BTreeSet<Capability> {
        let mut needs = BTreeSet::from([Capability::Database]);
        if self.tenants.iter().any(|t| !t.oauth.is_empty()) {
            needs.insert(Capability::ProviderControl);
        }
        for s in &self.steps {
            s.requires(&mut needs);
        }
        for a in &self.assertions {
            a.requires(&mut needs);
        }
        needs
    }
}
