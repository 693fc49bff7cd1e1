//! [`Target`]: the one boundary between the scenario executor and the service it certifies. The
//! executor sends HTTP as an actor, arms / awaits / releases sync points, moves the clock,
//! switches the fake provider, does faults to dependencies, and reads the lock tables and the
//! database — only through this trait. Each target declares its [`Capability`]s; each scenario's
//! requirements are derived from its typed steps ([`crate::scenario::model::Scenario::requires`]),
//! and a scenario a target cannot serve is refused with the reason (SKIPPED, never PASS).
//!
//! The in-process reference service ([`ServiceUnderTest`]) is the implementation today; a
//! black-box target (a deployed service reached over HTTP, with only an evidence pool) is the next.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::BoxFuture;
use harbor_service::domain::{Provider, UserId, WorkspaceId};
use harbor_service::vault::KeyRing;
use harbor_syncpoint::{SlotKey, SlotState};
use serde::Serialize;
use sqlx::PgPool;

use crate::client::ApiClient;
use crate::fake_provider::FakeProvider;
use crate::faults::Fault;
use crate::service::ServiceUnderTest;
use crate::tokens::TokenKind;

/// Something a target can do beyond answering HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
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
}

impl Capability {
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

/// What the executor may do to the service under certification. Methods behind a capability the
/// target lacks answer `None` or an error; the runner never calls them, because it refuses the
/// scenario first.
pub trait Target: Send + Sync {
    /// What it can do.
    fn capabilities(&self) -> BTreeSet<Capability>;

    /// The client of the service's API (one base URL per replica).
    fn client(&self) -> &ApiClient;

    /// A bearer token of `kind` for `user`.
    fn bearer(&self, user: UserId, kind: TokenKind) -> String;

    /// Arm sync point `key` on `replica`: the tagged request that reaches it will park there.
    fn arm(&self, replica: usize, key: SlotKey) -> Result<(), String>;

    /// Resolves once the request armed at `key` on `replica` is parked.
    fn parked(&self, replica: usize, key: SlotKey) -> BoxFuture<'_, ()>;

    /// Let the request parked at `key` on `replica` go on.
    fn release(&self, replica: usize, key: &SlotKey) -> Result<(), String>;

    /// Where the slot `key` on `replica` stands (`None`: not armed, or gone after its release).
    fn slot_state(&self, replica: usize, key: &SlotKey) -> Option<SlotState>;

    /// Let every parked request go on and drop every armed slot (clean-up).
    fn release_all(&self);

    /// Move the service's clock forward.
    fn advance_clock(&self, by: Duration);

    /// Move the service's clock back.
    fn rewind_clock(&self, by: Duration);

    /// The OAuth provider, when the target is wired to the harness's fake one.
    fn provider(&self) -> Option<&FakeProvider>;

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

    /// The service's token keys.
    fn key_ring(&self) -> Option<KeyRing>;
}

impl Target for ServiceUnderTest {
    fn capabilities(&self) -> BTreeSet<Capability> {
        use Capability::*;
        let mut all: BTreeSet<Capability> = [
            SyncPoints,
            Clock,
            ProviderControl,
            Faults,
            Crash,
            Database,
            Redis,
            TokenKeys,
        ]
        .into();
        if !self.has_fault_proxies() {
            all.remove(&Faults);
        }
        all
    }

    fn client(&self) -> &ApiClient {
        &self.client
    }

    fn bearer(&self, user: UserId, kind: TokenKind) -> String {
        self.tokens.token(user.0, kind)
    }

    fn arm(&self, replica: usize, key: SlotKey) -> Result<(), String> {
        self.replicas[replica]
            .sync
            .arm(key)
            .map_err(|e| e.to_string())
    }

    fn parked(&self, replica: usize, key: SlotKey) -> BoxFuture<'_, ()> {
        let until = self.replicas[replica].sync.until(key, SlotState::Parked);
        Box::pin(async move {
            until.await;
        })
    }

    fn release(&self, replica: usize, key: &SlotKey) -> Result<(), String> {
        self.replicas[replica]
            .sync
            .release(key)
            .map_err(|e| e.to_string())
    }

    fn slot_state(&self, replica: usize, key: &SlotKey) -> Option<SlotState> {
        self.replicas[replica].sync.state(key)
    }

    fn release_all(&self) {
        for r in &self.replicas {
            r.sync.release_all();
        }
    }

    fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    fn rewind_clock(&self, by: Duration) {
        self.clock.rewind(by);
    }

    fn provider(&self) -> Option<&FakeProvider> {
        Some(&self.provider)
    }

    fn apply_fault<'a>(
        &'a self,
        fault: &'a Fault,
    ) -> BoxFuture<'a, Result<crate::faults::FaultDone, String>> {
        Box::pin(ServiceUnderTest::apply_fault(self, fault))
    }

    fn database(&self) -> Option<&PgPool> {
        Some(&self.db)
    }

    fn database_url(&self) -> Option<&str> {
        Some(&self.env.database_url)
    }

    fn redis(&self) -> Option<RedisAccess<'_>> {
        Some(RedisAccess {
            url: &self.env.redis_url,
            prefix: &self.env.redis_key_prefix,
        })
    }

    fn key_ring(&self) -> Option<KeyRing> {
        Some(ServiceUnderTest::key_ring(self))
    }
}

/// A target seen with some capabilities taken away: how a run shows what a scenario needs, and
/// how the refusal path is tested without a second kind of target.
pub struct Restricted<'a> {
    /// The real target.
    pub inner: &'a dyn Target,
    /// The capabilities hidden.
    pub without: BTreeSet<Capability>,
}

impl Target for Restricted<'_> {
    fn capabilities(&self) -> BTreeSet<Capability> {
        self.inner
            .capabilities()
            .difference(&self.without)
            .copied()
            .collect()
    }
    fn client(&self) -> &ApiClient {
        self.inner.client()
    }
    fn bearer(&self, user: UserId, kind: TokenKind) -> String {
        self.inner.bearer(user, kind)
    }
    fn arm(&self, replica: usize, key: SlotKey) -> Result<(), String> {
        self.inner.arm(replica, key)
    }
    fn parked(&self, replica: usize, key: SlotKey) -> BoxFuture<'_, ()> {
        self.inner.parked(replica, key)
    }
    fn release(&self, replica: usize, key: &SlotKey) -> Result<(), String> {
        self.inner.release(replica, key)
    }
    fn slot_state(&self, replica: usize, key: &SlotKey) -> Option<SlotState> {
        self.inner.slot_state(replica, key)
    }
    fn release_all(&self) {
        self.inner.release_all()
    }
    fn advance_clock(&self, by: Duration) {
        self.inner.advance_clock(by)
    }
    fn rewind_clock(&self, by: Duration) {
        self.inner.rewind_clock(by)
    }
    fn provider(&self) -> Option<&FakeProvider> {
        self.inner.provider()
    }
    fn apply_fault<'a>(
        &'a self,
        fault: &'a Fault,
    ) -> BoxFuture<'a, Result<crate::faults::FaultDone, String>> {
        self.inner.apply_fault(fault)
    }
    fn database(&self) -> Option<&PgPool> {
        self.inner.database()
    }
    fn database_url(&self) -> Option<&str> {
        self.inner.database_url()
    }
    fn redis(&self) -> Option<RedisAccess<'_>> {
        self.inner.redis()
    }
    fn key_ring(&self) -> Option<KeyRing> {
        self.inner.key_ring()
    }
}

/// `user` connects `provider` to `workspace` through the real OAuth flow on replica 0 — authorize,
/// consent at the provider, callback — and it must answer 200 (a fixture, not a check).
pub async fn connect(
    target: &dyn Target,
    user: UserId,
    workspace: WorkspaceId,
    provider: Provider,
) -> Result<(), String> {
    let consent = start_flow(target, user, workspace, provider).await?;
    complete_flow(target, user, provider, &consent).await
}

/// The first half of [`connect`]: authorize on replica 0 and consent at the provider; the
/// connection is then PENDING and the consent ready for its callback.
pub async fn start_flow(
    target: &dyn Target,
    user: UserId,
    workspace: WorkspaceId,
    provider: Provider,
) -> Result<crate::fake_provider::Consent, String> {
    let bearer = target.bearer(user, TokenKind::Valid);
    let (answer, consent) = target
        .client()
        .authorize_and_consent(0, Some(&bearer), None, workspace, provider)
        .await
        .map_err(|e| e.to_string())?;
    consent.ok_or_else(|| format!("authorize answered {}: {}", answer.status, answer.body))?
}

/// The second half of [`connect`]: deliver `consent` to the callback on replica 0; it must
/// answer 200.
pub async fn complete_flow(
    target: &dyn Target,
    user: UserId,
    provider: Provider,
    consent: &crate::fake_provider::Consent,
) -> Result<(), String> {
    let bearer = target.bearer(user, TokenKind::Valid);
    let callback = target
        .client()
        .request(
            reqwest::Method::GET,
            crate::client::paths::callback(provider, &consent.callback_query()),
        )
        .bearer(Some(&bearer))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if callback.status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "callback answered {}: {}",
            callback.status, callback.body
        ))
    }
}
