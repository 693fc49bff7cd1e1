//! [`Restricted`]: a target with some capabilities hidden.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::BoxFuture;
use harbor_service::domain::{Provider, UserId, WorkspaceId};
use harbor_service::lifecycle::ConnectionStatus;
use harbor_syncpoint::{SlotKey, SlotState};
use sqlx::PgPool;

use super::{Capability, Contract, RedisAccess, Target, TenantSpec, TokenInspector};
use crate::client::ApiClient;
use crate::evidence::AdvisoryKey;
use crate::fake_provider::FakeProvider;
use crate::faults::{Fault, FaultDone};
use crate::fixtures::TenantWorkspace;
use crate::identity::TokenKind;

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
    fn replicas(&self) -> usize {
        self.inner.replicas()
    }
    fn client(&self) -> &ApiClient {
        self.inner.client()
    }
    fn contract(&self) -> Option<&Contract> {
        self.inner.contract()
    }
    fn state_query(&self, name: &str, workspace: WorkspaceId) -> Option<String> {
        self.inner.state_query(name, workspace)
    }
    fn create_tenant<'a>(
        &'a self,
        spec: &'a TenantSpec,
    ) -> BoxFuture<'a, Result<TenantWorkspace, String>> {
        self.inner.create_tenant(spec)
    }
    fn set_connection_status(
        &self,
        workspace: WorkspaceId,
        provider: Provider,
        status: ConnectionStatus,
    ) -> BoxFuture<'_, Result<(), String>> {
        self.inner
            .set_connection_status(workspace, provider, status)
    }
    fn workspace_lock(&self, workspace: WorkspaceId) -> Option<AdvisoryKey> {
        self.inner.workspace_lock(workspace)
    }
    fn bearer(&self, user: UserId, kind: TokenKind) -> String {
        self.inner.bearer(user, kind)
    }
    fn arm(&self, replica: usize, key: SlotKey) -> BoxFuture<'_, Result<(), String>> {
        self.inner.arm(replica, key)
    }
    fn parked(&self, replica: usize, key: SlotKey) -> BoxFuture<'_, ()> {
        self.inner.parked(replica, key)
    }
    fn release<'a>(
        &'a self,
        replica: usize,
        key: &'a SlotKey,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.inner.release(replica, key)
    }
    fn slot_state<'a>(
        &'a self,
        replica: usize,
        key: &'a SlotKey,
    ) -> BoxFuture<'a, Option<SlotState>> {
        self.inner.slot_state(replica, key)
    }
    fn release_all(&self) -> BoxFuture<'_, ()> {
        self.inner.release_all()
    }
    fn clear_slot<'a>(&'a self, replica: usize, key: &'a SlotKey) -> BoxFuture<'a, ()> {
        self.inner.clear_slot(replica, key)
    }
    fn advance_clock(&self, by: Duration) -> BoxFuture<'_, Result<(), String>> {
        self.inner.advance_clock(by)
    }
    fn rewind_clock(&self, by: Duration) -> BoxFuture<'_, Result<(), String>> {
        self.inner.rewind_clock(by)
    }
    fn provider(&self) -> Option<&FakeProvider> {
        self.inner.provider()
    }
    fn own_logs(&self) -> Result<Option<String>, String> {
        self.inner.own_logs()
    }
    fn held_by_pause(&self, dependency: crate::faults::Dependency) -> Option<u64> {
        self.inner.held_by_pause(dependency)
    }
    fn faults_struck(&self, dependency: crate::faults::Dependency) -> Option<u64> {
        self.inner.faults_struck(dependency)
    }
    fn apply_fault<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<FaultDone, String>> {
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
    fn tokens(&self) -> Option<&dyn TokenInspector> {
        self.inner.tokens()
    }
}
