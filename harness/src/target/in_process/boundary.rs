//! [`Target`] for [`InProcess`]: every capability, faults when the replicas have proxies.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::BoxFuture;
use harbor_service::domain::{Provider, UserId, WorkspaceId};
use harbor_service::lifecycle::ConnectionStatus;
use harbor_syncpoint::{SlotKey, SlotState};
use sqlx::PgPool;

use super::InProcess;
use crate::client::ApiClient;
use crate::evidence::AdvisoryKey;
use crate::fake_provider::FakeProvider;
use crate::faults::{Fault, FaultDone};
use crate::fixtures::TenantWorkspace;
use crate::identity::TokenKind;
use crate::target::{Capability, Contract, RedisAccess, Target, TenantSpec, TokenInspector};

impl Target for InProcess {
    fn capabilities(&self) -> BTreeSet<Capability> {
        let mut all: BTreeSet<Capability> = Capability::ALL.into();
        if !self.has_fault_proxies() {
            all.remove(&Capability::Faults);
        }
        all
    }

    fn replicas(&self) -> usize {
        self.replicas.len()
    }

    fn client(&self) -> &ApiClient {
        &self.client
    }

    fn contract(&self) -> Option<&Contract> {
        Some(&self.contract)
    }

    fn create_tenant<'a>(
        &'a self,
        spec: &'a TenantSpec,
    ) -> BoxFuture<'a, Result<TenantWorkspace, String>> {
        Box::pin(async move {
            TenantWorkspace::create(&self.db, &spec.name, spec.entitled, spec.qbo)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn set_connection_status(
        &self,
        workspace: WorkspaceId,
        provider: Provider,
        status: ConnectionStatus,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            crate::fixtures::connection_status(&self.db, workspace, provider, status)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn workspace_lock(&self, workspace: WorkspaceId) -> Option<AdvisoryKey> {
        let key = harbor_service::locks::lock_key_for_workspace(workspace);
        Some(AdvisoryKey {
            classid: key.classid as u32,
            objid: key.objid as u32,
        })
    }

    fn bearer(&self, user: UserId, kind: TokenKind) -> String {
        self.tokens.token(user.0, kind)
    }

    fn arm(&self, replica: usize, key: SlotKey) -> BoxFuture<'_, Result<(), String>> {
        if self.sync_over_http {
            let http = self.sync_http(replica);
            return Box::pin(async move { http.arm(&key.actor, &key.point).await });
        }
        let armed = self.replicas[replica]
            .sync
            .arm(key)
            .map_err(|e| e.to_string());
        Box::pin(std::future::ready(armed))
    }

    fn parked(&self, replica: usize, key: SlotKey) -> BoxFuture<'_, ()> {
        if self.sync_over_http {
            let http = self.sync_http(replica);
            return Box::pin(async move {
                // Long polls of a few seconds; the caller bounds the whole wait.
                loop {
                    match http
                        .state(&key.actor, &key.point, Some(Duration::from_secs(5)))
                        .await
                    {
                        Ok(Some(SlotState::Parked)) => return,
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            });
        }
        let until = self.replicas[replica].sync.until(key, SlotState::Parked);
        Box::pin(async move {
            until.await;
        })
    }

    fn release<'a>(
        &'a self,
        replica: usize,
        key: &'a SlotKey,
    ) -> BoxFuture<'a, Result<(), String>> {
        if self.sync_over_http {
            let http = self.sync_http(replica);
            return Box::pin(async move { http.release(&key.actor, &key.point).await });
        }
        let released = self.replicas[replica]
            .sync
            .release(key)
            .map_err(|e| e.to_string());
        Box::pin(std::future::ready(released))
    }

    fn slot_state<'a>(
        &'a self,
        replica: usize,
        key: &'a SlotKey,
    ) -> BoxFuture<'a, Option<SlotState>> {
        if self.sync_over_http {
            let http = self.sync_http(replica);
            return Box::pin(async move {
                http.state(&key.actor, &key.point, None)
                    .await
                    .ok()
                    .flatten()
            });
        }
        Box::pin(std::future::ready(self.replicas[replica].sync.state(key)))
    }

    fn release_all(&self) -> BoxFuture<'_, ()> {
        if self.sync_over_http {
            return Box::pin(async move {
                for replica in 0..self.replicas.len() {
                    let _ = self.sync_http(replica).release_all().await;
                }
            });
        }
        for r in &self.replicas {
            r.sync.release_all();
        }
        Box::pin(std::future::ready(()))
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

    fn apply_fault<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<FaultDone, String>> {
        Box::pin(InProcess::apply_fault(self, fault))
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

    fn tokens(&self) -> Option<&dyn TokenInspector> {
        Some(&self.ring)
    }
}

/// The replicas' key ring, opening tokens for the oracles.
pub(super) struct RingInspector(pub(super) harbor_service::vault::KeyRing);

impl TokenInspector for RingInspector {
    fn open(
        &self,
        sealed: &[u8],
        at: &crate::target::StoredToken,
    ) -> Result<secrecy::SecretString, String> {
        use harbor_service::vault::{TokenBinding, TokenField};
        let binding = TokenBinding {
            tenant_id: at.tenant,
            connection_id: at.connection,
            provider: at.provider,
            field: if at.refresh {
                TokenField::Refresh
            } else {
                TokenField::Access
            },
            grant_id: at.grant,
        };
        self.0.decrypt(sealed, &binding).map_err(|e| e.to_string())
    }
}

impl InProcess {
    fn sync_http(&self, replica: usize) -> crate::target::sync_protocol::SyncPointsOverHttp {
        crate::target::sync_protocol::SyncPointsOverHttp::new(self.client.clone(), replica)
    }
}

/// Starts [`InProcess`] services on one set of servers, with the seeded flaws asked for.
pub struct InProcessLauncher<'a> {
    infra: &'a crate::provision::Infra,
    flaws: harbor_service::flaws::Flaws,
    sync_over_http: bool,
    /// The contract the first launch read; later launches of the same build reuse it.
    contract: std::sync::OnceLock<std::sync::Arc<Contract>>,
}

impl<'a> InProcessLauncher<'a> {
    /// A launcher on `infra`, starting the correct build.
    pub fn new(infra: &'a crate::provision::Infra) -> Self {
        Self {
            infra,
            flaws: harbor_service::flaws::Flaws::none(),
            sync_over_http: false,
            contract: std::sync::OnceLock::new(),
        }
    }

    /// Drives the services' sync points through their HTTP protocol
    /// (`docs/SYNC-POINTS-PROTOCOL.md`) instead of the shared controller: what a target started
    /// elsewhere offers, checked against the whole catalogue.
    pub fn with_sync_points_over_http(mut self, on: bool) -> Self {
        self.sync_over_http = on;
        self
    }

    /// Starts the service with these seeded flaws (`harbor-certify mutants`, kill matrices).
    pub fn with_flaws(mut self, flaws: harbor_service::flaws::Flaws) -> Self {
        self.flaws = flaws;
        self
    }

    /// The service options `setup` asks for.
    pub fn options(&self, setup: &crate::target::Setup) -> super::ServiceOptions {
        let mut options = super::ServiceOptions {
            replicas: setup.replicas,
            sync_points: setup.sync_points,
            flaws: self.flaws.clone(),
            ..super::ServiceOptions::default()
        };
        if let Some(t) = setup.sync_point_timeout {
            options.sync_point_timeout = t;
        }
        if let Some(n) = setup.database_max_connections {
            options.database_max_connections = n;
        }
        if let Some(t) = setup.provider_timeout {
            options.provider_timeout = t;
        }
        if let Some(t) = setup.database_acquire_timeout {
            options.database_acquire_timeout = t;
        }
        if let Some(q) = setup.rate_limit_tenant {
            options.rate_limits.per_tenant = q;
        }
        if let Some(q) = setup.rate_limit_address {
            options.rate_limits.per_address = q;
        }
        if let Some(q) = setup.rate_limit_failed_states {
            options.rate_limits.failed_states_per_user = q;
        }
        options
    }
}

impl crate::target::Launcher for InProcessLauncher<'_> {
    fn launch<'a>(
        &'a self,
        setup: &'a crate::target::Setup,
    ) -> futures::future::LocalBoxFuture<'a, Result<Box<dyn crate::target::Launched>, String>> {
        Box::pin(async move {
            let known = self.contract.get().cloned();
            let mut started = InProcess::start_knowing(self.infra, self.options(setup), known)
                .await
                .map_err(|e| e.to_string())?;
            started.sync_over_http = self.sync_over_http;
            let _ = self.contract.set(started.contract.clone());
            Ok(Box::new(started) as Box<dyn crate::target::Launched>)
        })
    }
}

impl crate::target::Launched for InProcess {
    fn target(&self) -> &dyn Target {
        self
    }

    fn stop(self: Box<Self>) -> futures::future::LocalBoxFuture<'static, Result<(), String>> {
        Box::pin(async move { InProcess::stop(*self).await.map_err(|e| e.to_string()) })
    }
}
