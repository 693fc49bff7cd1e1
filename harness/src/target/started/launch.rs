//! The launchers of [`Started`] targets: [`InProcessLauncher`] starts the reference service in
//! this process; [`ProfileLauncher`] starts any service's replicas as child processes from a
//! target profile. Both start each target on a fresh isolated environment, as [`Setup`] asks.

use std::sync::{Arc, OnceLock};

use futures::future::LocalBoxFuture;
use harbor_service::flaws::Flaws;

use super::{How, ServiceOptions, Started};
use crate::provision::Infra;
use crate::target::profile::Profile;
use crate::target::{Contract, Launched, Launcher, Setup};

/// Starts [`Started`] services on one set of servers, with the seeded flaws asked for.
pub struct InProcessLauncher<'a> {
    infra: &'a Infra,
    flaws: Flaws,
    sync_over_http: bool,
    /// The contract the first launch read; later launches of the same build reuse it.
    contract: OnceLock<Arc<Contract>>,
}

impl<'a> InProcessLauncher<'a> {
    /// A launcher on `infra`, starting the correct build.
    pub fn new(infra: &'a Infra) -> Self {
        Self {
            infra,
            flaws: Flaws::none(),
            sync_over_http: false,
            contract: OnceLock::new(),
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
    pub fn with_flaws(mut self, flaws: Flaws) -> Self {
        self.flaws = flaws;
        self
    }

    /// The service options `setup` asks for.
    pub fn options(&self, setup: &Setup) -> ServiceOptions {
        options_for(setup, self.flaws.clone())
    }
}

/// The service options `setup` asks for, with `flaws` seeded.
fn options_for(setup: &Setup, flaws: Flaws) -> ServiceOptions {
    let mut options = ServiceOptions {
        replicas: setup.replicas,
        sync_points: setup.sync_points,
        flaws,
        ..ServiceOptions::default()
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
    options.fault_proxies &= !setup.without_dependency_faults;
    options
}

/// Starts a target `how` says, reading its contract only on the first start (`contract` keeps
/// what that one read: later starts of the same build publish the same).
async fn start_once_read(
    infra: &Infra,
    options: ServiceOptions,
    contract: &OnceLock<Arc<Contract>>,
    how: How<'_>,
) -> Result<Started, super::ServiceError> {
    let started = Started::start_as(infra, options, contract.get().cloned(), how).await?;
    if let Some(read) = &started.contract {
        let _ = contract.set(read.clone());
    }
    Ok(started)
}

impl Launcher for InProcessLauncher<'_> {
    fn launch<'a>(
        &'a self,
        setup: &'a Setup,
    ) -> LocalBoxFuture<'a, Result<Box<dyn Launched>, String>> {
        Box::pin(async move {
            let mut started = start_once_read(
                self.infra,
                self.options(setup),
                &self.contract,
                How::InProcess,
            )
            .await
            .map_err(|e| e.to_string())?;
            started.sync_over_http = self.sync_over_http;
            Ok(Box::new(started) as Box<dyn Launched>)
        })
    }
}

/// Starts a profile's target: its replicas as child processes of the lifecycle command, on a
/// fresh isolated environment each time.
pub struct ProfileLauncher<'a> {
    infra: &'a Infra,
    profile: Arc<Profile>,
    flaws: Flaws,
    /// The contract the first launch read; later launches of the same target reuse it.
    contract: OnceLock<Arc<Contract>>,
    /// The version the first launched target said it is.
    version: OnceLock<Option<String>>,
}

impl<'a> ProfileLauncher<'a> {
    /// A launcher of `profile`'s target on `infra`. Must be called within a tokio runtime: it
    /// makes sure an interrupted run kills the replicas it started.
    pub fn new(infra: &'a Infra, profile: Arc<Profile>) -> Self {
        super::process::kill_replicas_on_interrupt();
        Self {
            infra,
            profile,
            flaws: Flaws::none(),
            contract: OnceLock::new(),
            version: OnceLock::new(),
        }
    }

    /// Whether `profile`'s target can be started with `flaws` seeded: they are given to it as
    /// `{flaws}`, which its profile must use (a target that cannot be told cannot be a flawed
    /// build).
    pub fn can_seed(profile: &Profile, flaws: &Flaws) -> Result<(), String> {
        if !flaws.is_empty() && !profile.lifecycle.uses("flaws") {
            return Err(format!(
                "{}: no lifecycle template uses {{flaws}}, so the target cannot be started with seeded flaws",
                profile.path.display()
            ));
        }
        Ok(())
    }

    /// Starts the target with these seeded flaws (checked by [`ProfileLauncher::can_seed`]).
    pub fn with_flaws(mut self, flaws: Flaws) -> Self {
        self.flaws = flaws;
        self
    }

    /// The profile.
    pub fn profile(&self) -> &Arc<Profile> {
        &self.profile
    }
}

impl Launcher for ProfileLauncher<'_> {
    fn cannot_set(&self, setup: &Setup) -> Option<String> {
        self.profile.cannot_set(setup)
    }

    fn target_version(&self) -> Option<String> {
        self.version.get().cloned().flatten()
    }

    fn offers(&self) -> Option<std::collections::BTreeSet<crate::target::Capability>> {
        Some(self.profile.offered())
    }

    fn launch<'a>(
        &'a self,
        setup: &'a Setup,
    ) -> LocalBoxFuture<'a, Result<Box<dyn Launched>, String>> {
        Box::pin(async move {
            let options = options_for(setup, self.flaws.clone());
            let how = if self.profile.deployed.is_some() {
                How::Deployed(&self.profile)
            } else {
                How::Process(&self.profile)
            };
            let started = start_once_read(self.infra, options, &self.contract, how)
                .await
                .map_err(|e| format!("target {}: {e}", self.profile.name))?;
            let _ = self.version.set(started.version.clone());
            Ok(Box::new(started) as Box<dyn Launched>)
        })
    }
}
