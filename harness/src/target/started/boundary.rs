//! [`Target`] for [`Started`]: in-process, every capability (faults when the replicas have
//! proxies); from a profile, what the profile offers, its fixtures, lock and claims.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::BoxFuture;
use harbor_service::domain::{Provider, UserId, WorkspaceId};
use harbor_service::lifecycle::ConnectionStatus;
use harbor_syncpoint::{SlotKey, SlotState};
use sqlx::PgPool;

use super::Started;
use crate::client::ApiClient;
use crate::evidence::AdvisoryKey;
use crate::fake_provider::FakeProvider;
use crate::faults::{Fault, FaultDone};
use crate::fixtures::TenantWorkspace;
use crate::identity::TokenKind;
use crate::target::{
    profile, Capability, Contract, RedisAccess, Target, TenantSpec, TokenInspector,
};

impl Target for Started {
    fn capabilities(&self) -> BTreeSet<Capability> {
        self.offered.clone()
    }

    fn replicas(&self) -> usize {
        self.replicas.len()
    }

    fn client(&self) -> &ApiClient {
        &self.client
    }

    fn contract(&self) -> Option<&Contract> {
        self.contract.as_deref()
    }

    fn create_tenant<'a>(
        &'a self,
        spec: &'a TenantSpec,
    ) -> BoxFuture<'a, Result<TenantWorkspace, String>> {
        Box::pin(async move {
            let Some(profile) = &self.profile else {
                return TenantWorkspace::create(&self.db, &spec.name, spec.entitled, spec.qbo)
                    .await
                    .map_err(|e| e.to_string());
            };
            let (made, lock) = profile::boundary::create_tenant(profile, &self.db, spec).await?;
            if let Some(lock) = lock {
                self.profile_locks
                    .lock()
                    .map_err(|_| "the lock table is poisoned")?
                    .insert(made.workspace, lock);
            }
            Ok(made)
        })
    }

    fn set_connection_status(
        &self,
        workspace: WorkspaceId,
        provider: Provider,
        status: ConnectionStatus,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match &self.profile {
                Some(profile) => {
                    profile::boundary::set_connection_status(
                        profile, &self.db, workspace, provider, status,
                    )
                    .await
                }
                None => crate::fixtures::connection_status(&self.db, workspace, provider, status)
                    .await
                    .map_err(|e| e.to_string()),
            }
        })
    }

    fn workspace_lock(&self, workspace: WorkspaceId) -> Option<AdvisoryKey> {
        if self.profile.is_some() {
            return self.profile_locks.lock().ok()?.get(&workspace).copied();
        }
        let key = harbor_service::locks::lock_key_for_workspace(workspace);
        Some(AdvisoryKey {
            classid: key.classid as u32,
            objid: key.objid as u32,
            bigint: false,
        })
    }

    fn state_query(&self, name: &str, workspace: WorkspaceId) -> Option<String> {
        match &self.profile {
            Some(p) => profile::boundary::state_query(p, name, workspace),
            None => crate::target::state_queries::reference(name, workspace),
        }
    }

    fn bearer(&self, user: UserId, kind: TokenKind) -> String {
        match &self.profile {
            Some(profile) => profile::boundary::bearer(profile, &self.tokens, user, kind),
            None => self.tokens.token(user.0, kind),
        }
    }

    fn has_point(&self, point: &str) -> bool {
        self.points.as_ref().is_none_or(|p| p.contains(point))
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

    fn clear_slot<'a>(&'a self, replica: usize, key: &'a SlotKey) -> BoxFuture<'a, ()> {
        if self.sync_over_http {
            // The protocol's DELETE of a slot releases its parked request or disarms it.
            let http = self.sync_http(replica);
            return Box::pin(async move {
                let _ = http.release(&key.actor, &key.point).await;
            });
        }
        self.replicas[replica].sync.clear(key);
        Box::pin(std::future::ready(()))
    }

    fn advance_clock(&self, by: Duration) -> BoxFuture<'_, Result<(), String>> {
        // In-process replicas share this clock; process replicas are told its offset. Time
        // passes at the provider too, once the replicas have taken the move (and only where
        // they take one): its codes and tokens age as the service sees them age.
        self.clock.advance(by);
        Box::pin(async move {
            self.push_clock().await?;
            if self.moves_service_clock() {
                self.provider.advance_clock(by);
            }
            Ok(())
        })
    }

    fn rewind_clock(&self, by: Duration) -> BoxFuture<'_, Result<(), String>> {
        // The service's clock gone wrong, not time going back: the provider's stays.
        self.clock.rewind(by);
        Box::pin(self.push_clock())
    }

    fn provider(&self) -> Option<&FakeProvider> {
        self.offers(Capability::ProviderControl)
            .then_some(&self.provider)
    }
    fn own_logs(&self) -> Result<Option<String>, String> {
        let mut all: Option<String> = None;
        for (i, r) in self.replicas.iter().enumerate() {
            if let Some(text) = r.own_logs()? {
                let all = all.get_or_insert_with(String::new);
                all.push_str(&format!("--- replica {i}\n"));
                all.push_str(&text);
            }
        }
        Ok(all)
    }

    fn held_by_pause(&self, dependency: crate::faults::Dependency) -> Option<u64> {
        self.proxies_sum(dependency, crate::faults::FaultProxy::held)
    }

    fn faults_struck(&self, dependency: crate::faults::Dependency) -> Option<u64> {
        self.proxies_sum(dependency, crate::faults::FaultProxy::struck)
    }

    fn apply_fault<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<FaultDone, String>> {
        Box::pin(Started::apply_fault(self, fault))
    }

    fn database(&self) -> Option<&PgPool> {
        self.offers(Capability::Database).then_some(&self.db)
    }

    fn database_url(&self) -> Option<&str> {
        self.offers(Capability::Database)
            .then_some(self.database_url.as_str())
    }

    fn redis(&self) -> Option<RedisAccess<'_>> {
        self.offers(Capability::Redis).then_some(RedisAccess {
            url: &self.env.redis_url,
            prefix: &self.env.redis_key_prefix,
        })
    }

    fn tokens(&self) -> Option<&dyn TokenInspector> {
        self.offers(Capability::TokenKeys)
            .then_some(&self.ring as &dyn TokenInspector)
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

impl Started {
    /// Whether its profile offers `c` (the in-process reference offers everything).
    fn offers(&self, c: Capability) -> bool {
        self.offered.contains(&c)
    }

    /// Whether moving the harness's clock moves the service's: always in-process, where the
    /// replicas share it; a process or deployed target's only when its profile offers `clock`.
    fn moves_service_clock(&self) -> bool {
        self.profile.is_none() || self.offers(Capability::Clock)
    }

    /// Tells process replicas the clock's offset (in-process replicas share the clock itself).
    pub(super) async fn push_clock(&self) -> Result<(), String> {
        if self.profile.is_none() || !self.offers(Capability::Clock) {
            return Ok(());
        }
        let offset = self.clock.offset().num_milliseconds();
        for (n, r) in self.replicas.iter().enumerate() {
            // A deployed replica runs where it was deployed: it is told too.
            if r.is_running() || r.is_deployed() {
                crate::target::sync_protocol::set_clock_offset(&self.client, n, offset).await?;
            }
        }
        Ok(())
    }

    fn sync_http(&self, replica: usize) -> crate::target::sync_protocol::SyncPointsOverHttp {
        crate::target::sync_protocol::SyncPointsOverHttp::new(self.client.clone(), replica)
    }
}

impl crate::target::Launched for Started {
    fn target(&self) -> &dyn Target {
        self
    }

    fn stop(self: Box<Self>) -> futures::future::LocalBoxFuture<'static, Result<(), String>> {
        Box::pin(async move { Started::stop(*self).await.map_err(|e| e.to_string()) })
    }
}

impl Started {
    /// `read` of every replica's proxy to `dependency`, summed (`None`: no fault proxies).
    fn proxies_sum(
        &self,
        dependency: crate::faults::Dependency,
        read: fn(&crate::faults::FaultProxy) -> u64,
    ) -> Option<u64> {
        use crate::faults::Dependency;
        if !self.offers(Capability::Faults) || !self.has_fault_proxies() {
            return None;
        }
        let counts = self.links(None).map(|links| match dependency {
            Dependency::Redis => Some(read(&links.redis)),
            Dependency::Postgres => Some(read(&links.postgres)),
            Dependency::Provider => Some(read(&links.provider)),
            Dependency::Replica => None,
        });
        counts.sum()
    }
}
