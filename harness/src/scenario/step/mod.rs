//! Steps, one type per kind in the mini-redis `Command` style: each file declares the kind's fields
//! as written ([`RawStep`]'s variant), its typed form, how it is checked (`parse`), what it needs
//! of a target (`requires`) and how it runs (`apply`). Adding a kind is a new file plus one
//! variant in each enum below; nothing else in the harness changes.
//!
//! - [`request`]: every HTTP action (`http`, `activate`, `authorize`, `callback`, `connect`,
//!   `disconnect`, `revoke`, `sync`, `list_connections`, `list_documents`).
//! - [`sql`]: raw SQL in the actor's own session. [`redis`]: a Redis command.
//! - [`release`], [`wait`], [`hang_up`]: let a parked request go on; collect a background step;
//!   close its connection without waiting for it.
//! - [`clock`], [`rewind_clock`], [`provider`], [`fault`], [`assert`]: harness actions with no
//!   actor.

pub mod assert;
pub mod clock;
pub mod fault;
pub mod hang_up;
pub mod provider;
pub mod redis;
pub mod release;
pub mod request;
pub mod rewind_clock;
pub mod sql;
pub mod until;
pub mod wait;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::check::{Checker, Problem};
use super::executor::Executor;
use super::outcome::Failure;
use crate::target::Capability;

/// A step as written: `do = "…"` picks the kind, and each kind refuses fields it does not have.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum RawStep {
    /// Any HTTP call.
    Http(request::RawRequest),
    /// `POST …/activation`.
    Activate(request::RawRequest),
    /// Authorize and consent at the provider; the consent is kept for `callback`.
    Authorize(request::RawRequest),
    /// Deliver a consent to the callback.
    Callback(request::RawRequest),
    /// Authorize then callback.
    Connect(request::RawRequest),
    /// `POST …/disconnect`.
    Disconnect(request::RawRequest),
    /// `POST …/revoke`.
    Revoke(request::RawRequest),
    /// `POST …/sync`.
    Sync(request::RawRequest),
    /// `GET …/connections`.
    ListConnections(request::RawRequest),
    /// `GET …/documents`.
    ListDocuments(request::RawRequest),
    /// Raw SQL in the actor's session.
    Sql(sql::RawSql),
    /// A Redis command.
    Redis(redis::RawRedis),
    /// Move the service's clock forward.
    AdvanceClock(clock::RawAdvanceClock),
    /// Move the service's clock back.
    RewindClock(rewind_clock::RawRewindClock),
    /// Release a parked request.
    Release(release::RawRelease),
    /// Collect a background step.
    Wait(wait::RawWait),
    /// Close a background request's connection without waiting for its answer.
    HangUp(hang_up::RawHangUp),
    /// Switch the fake provider's behaviour.
    Provider(provider::RawProvider),
    /// Check an assertion now.
    Assert(assert::RawAssert),
    /// Do something to a dependency.
    Fault(fault::RawFault),
    /// Wait for a provider counter.
    Until(until::RawUntil),
}

impl RawStep {
    /// The kind's name as the file writes it (`do = "activate"`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            RawStep::Http(_) => "http",
            RawStep::Activate(_) => "activate",
            RawStep::Authorize(_) => "authorize",
            RawStep::Callback(_) => "callback",
            RawStep::Connect(_) => "connect",
            RawStep::Disconnect(_) => "disconnect",
            RawStep::Revoke(_) => "revoke",
            RawStep::Sync(_) => "sync",
            RawStep::ListConnections(_) => "list_connections",
            RawStep::ListDocuments(_) => "list_documents",
            RawStep::Sql(_) => "sql",
            RawStep::Redis(_) => "redis",
            RawStep::AdvanceClock(_) => "advance_clock",
            RawStep::RewindClock(_) => "rewind_clock",
            RawStep::Release(_) => "release",
            RawStep::Wait(_) => "wait",
            RawStep::HangUp(_) => "hang_up",
            RawStep::Provider(_) => "provider",
            RawStep::Assert(_) => "assert",
            RawStep::Fault(_) => "fault",
            RawStep::Until(_) => "until",
        }
    }
}

/// A checked step.
#[derive(Clone, Debug)]
pub struct Step {
    /// A note for the trace.
    pub note: Option<String>,
    /// What it does.
    pub kind: StepKind,
}

/// The typed step kinds.
#[derive(Clone, Debug)]
pub enum StepKind {
    /// An HTTP action.
    Request(request::RequestStep),
    /// Raw SQL.
    Sql(sql::SqlStep),
    /// A Redis command.
    Redis(redis::RedisStep),
    /// Move the clock.
    AdvanceClock(clock::AdvanceClock),
    /// Move the clock back.
    RewindClock(rewind_clock::RewindClock),
    /// Release a parked request.
    Release(release::Release),
    /// Collect a background step.
    Wait(wait::Wait),
    /// Close a background request's connection.
    HangUp(hang_up::HangUp),
    /// Switch the provider.
    Provider(provider::ProviderSwitch),
    /// Check an assertion now.
    Assert(assert::AssertStep),
    /// Do a fault.
    Fault(fault::FaultStep),
    /// Wait for a provider counter.
    Until(until::Until),
}

impl Step {
    /// Checks a raw step at `place` and types it.
    pub fn parse(raw: RawStep, cx: &mut Checker, place: &str) -> Result<Self, Problem> {
        use crate::operation::WorkspaceOp;
        use request::CallKind as C;
        let (note, kind) = match raw {
            RawStep::Http(r) => (
                r.note.clone(),
                StepKind::Request(request::RequestStep::parse(C::Http, r, cx, place)?),
            ),
            RawStep::Activate(r) => (
                r.note.clone(),
                StepKind::Request(request::RequestStep::parse(
                    C::Op(WorkspaceOp::Activate),
                    r,
                    cx,
                    place,
                )?),
            ),
            RawStep::Authorize(r) => (
                r.note.clone(),
                StepKind::Request(request::RequestStep::parse(
                    C::Op(WorkspaceOp::Authorize),
                    r,
                    cx,
                    place,
                )?),
            ),
            RawStep::Callback(r) => (
                r.note.clone(),
                StepKind::Request(request::RequestStep::parse(
                    C::Op(WorkspaceOp::Callback),
                    r,
                    cx,
                    place,
                )?),
            ),
            RawStep::Connect(r) => (
                r.note.clone(),
                StepKind::Request(request::RequestStep::parse(C::Connect, r, cx, place)?),
            ),
            RawStep::Disconnect(r) => (
                r.note.clone(),
                StepKind::Request(request::RequestStep::parse(
                    C::Op(WorkspaceOp::Disconnect),
                    r,
                    cx,
                    place,
                )?),
            ),
            RawStep::Revoke(r) => (
                r.note.clone(),
                StepKind::Request(request::RequestStep::parse(
                    C::Op(WorkspaceOp::Revoke),
                    r,
                    cx,
                    place,
                )?),
            ),
            RawStep::Sync(r) => (
                r.note.clone(),
                StepKind::Request(request::RequestStep::parse(
                    C::Op(WorkspaceOp::Sync),
                    r,
                    cx,
                    place,
                )?),
            ),
            RawStep::ListConnections(r) => (
                r.note.clone(),
                StepKind::Request(request::RequestStep::parse(
                    C::Op(WorkspaceOp::ListConnections),
                    r,
                    cx,
                    place,
                )?),
            ),
            RawStep::ListDocuments(r) => (
                r.note.clone(),
                StepKind::Request(request::RequestStep::parse(
                    C::Op(WorkspaceOp::ListDocuments),
                    r,
                    cx,
                    place,
                )?),
            ),
            RawStep::Sql(r) => (
                r.note.clone(),
                StepKind::Sql(sql::SqlStep::parse(r, cx, place)?),
            ),
            RawStep::Redis(r) => (
                r.note.clone(),
                StepKind::Redis(redis::RedisStep::parse(r, cx, place)?),
            ),
            RawStep::AdvanceClock(r) => (
                r.note.clone(),
                StepKind::AdvanceClock(clock::AdvanceClock::parse(r, cx, place)?),
            ),
            RawStep::RewindClock(r) => (
                r.note.clone(),
                StepKind::RewindClock(rewind_clock::RewindClock::parse(r, cx, place)?),
            ),
            RawStep::Release(r) => (
                r.note.clone(),
                StepKind::Release(release::Release::parse(r, cx, place)?),
            ),
            RawStep::Wait(r) => (
                r.note.clone(),
                StepKind::Wait(wait::Wait::parse(r, cx, place)?),
            ),
            RawStep::HangUp(r) => (
                r.note.clone(),
                StepKind::HangUp(hang_up::HangUp::parse(r, cx, place)?),
            ),
            RawStep::Provider(r) => (
                r.note.clone(),
                StepKind::Provider(provider::ProviderSwitch::parse(r, cx, place)?),
            ),
            RawStep::Assert(r) => (
                r.note.clone(),
                StepKind::Assert(assert::AssertStep::parse(r, cx, place)?),
            ),
            RawStep::Fault(r) => (
                r.note.clone(),
                StepKind::Fault(fault::FaultStep::parse(r, cx, place)?),
            ),
            RawStep::Until(r) => (
                r.note.clone(),
                StepKind::Until(until::Until::parse(r, cx, place)?),
            ),
        };
        Ok(Step {
            note: note.map(|n| n.trim().to_owned()),
            kind,
        })
    }

    /// The actor whose program the step belongs to (`None`: the harness's own steps). Schedulers
    /// advance actors; each actor's steps keep their order.
    pub fn actor(&self) -> Option<&str> {
        match &self.kind {
            StepKind::Request(s) => Some(&s.actor),
            StepKind::Sql(s) => Some(&s.actor),
            StepKind::Redis(s) => Some(&s.actor),
            StepKind::Release(s) => Some(&s.actor),
            StepKind::Wait(s) => Some(&s.actor),
            StepKind::HangUp(s) => Some(&s.actor),
            StepKind::AdvanceClock(_)
            | StepKind::RewindClock(_)
            | StepKind::Provider(_)
            | StepKind::Assert(_)
            | StepKind::Fault(_)
            | StepKind::Until(_) => None,
        }
    }

    /// Adds the sync points the step parks at or releases.
    pub fn sync_points(&self, out: &mut BTreeSet<&'static str>) {
        match &self.kind {
            StepKind::Request(r) => {
                if let request::Mode::Once {
                    park: Some((_, point)),
                    ..
                } = &r.mode
                {
                    out.insert(point);
                }
            }
            StepKind::Release(r) => {
                out.insert(r.point);
                out.extend(r.park_at);
            }
            _ => {}
        }
    }

    /// What it needs of a target.
    pub fn requires(&self, needs: &mut BTreeSet<Capability>) {
        match &self.kind {
            StepKind::Request(s) => s.requires(needs),
            StepKind::Sql(s) => {
                needs.insert(Capability::Database);
                if s.sql.contains("{workspace_lock:")
                    || s.expect_blocked
                        .as_ref()
                        .is_some_and(|b| b.object.is_some())
                {
                    needs.insert(Capability::WorkspaceLock);
                }
                if !crate::target::state_queries::sql_is_portable(&s.sql)
                    || s.role.is_some()
                    || s.tenant.is_some()
                {
                    needs.insert(Capability::ReferenceSchema);
                }
                if crate::target::state_queries::reads_whole_database(&s.sql) {
                    needs.insert(Capability::IsolatedDatabase);
                }
            }
            StepKind::Redis(_) => {
                // Keys are named in the reference's layout.
                needs.extend([Capability::Redis, Capability::ReferenceSchema]);
            }
            StepKind::AdvanceClock(_) => {
                needs.insert(Capability::Clock);
            }
            StepKind::RewindClock(s) => s.requires(needs),
            StepKind::Release(s) => s.requires(needs),
            StepKind::Wait(_) | StepKind::HangUp(_) => {}
            StepKind::Provider(_) => {
                needs.insert(Capability::ProviderControl);
            }
            StepKind::Until(s) => {
                if s.needs_provider() {
                    needs.insert(Capability::ProviderControl);
                }
                if s.needs_database() {
                    needs.extend([Capability::Database, Capability::ReferenceSchema]);
                }
                if let Some(dependency) = s.paused_dependency() {
                    needs.extend(Capability::to_fault(dependency));
                }
            }
            StepKind::Assert(s) => s.assertion.requires(needs),
            StepKind::Fault(s) => {
                s.requires(needs);
            }
        }
    }

    /// Runs step `index` on the executor.
    pub async fn apply(&self, ex: &mut Executor<'_>, index: usize) -> Result<(), Failure> {
        let note = self.note.as_deref();
        match &self.kind {
            StepKind::Request(s) => s.apply(ex, index, note).await,
            StepKind::Sql(s) => s.apply(ex, index, note).await,
            StepKind::Redis(s) => s.apply(ex, index, note).await,
            StepKind::AdvanceClock(s) => s.apply(ex, index, note).await,
            StepKind::RewindClock(s) => s.apply(ex, index, note).await,
            StepKind::Release(s) => s.apply(ex, index, note).await,
            StepKind::Wait(s) => s.apply(ex, index, note).await,
            StepKind::HangUp(s) => s.apply(ex, index, note).await,
            StepKind::Provider(s) => s.apply(ex, index, note).await,
            StepKind::Assert(s) => s.apply(ex, index, note).await,
            StepKind::Fault(s) => s.apply(ex, index, note).await,
            StepKind::Until(s) => s.apply(ex, index, note).await,
        }
    }
}
