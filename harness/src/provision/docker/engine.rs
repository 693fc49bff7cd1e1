//! What the Docker backend asks the engine outside of starting containers — its version and
//! facts, whether an image is present, a pull, the orphans' listing and removal — through the
//! client testcontainers starts the containers with (`docker_client_instance`).
//!
//! Why not the `docker` command: testcontainers finds its engine by its own rules (`DOCKER_HOST`,
//! else the default socket, else a rootless or Docker Desktop socket in the user's directories)
//! and ignores `docker context`, so with a context of the client's own the command could have
//! checked images on, reaped from, and judged the network of another engine than the one the
//! containers run on. One client, one engine. (The `docker` commands outside the harness —
//! `xtask`'s engine check, `scripts/offline-images.sh`, the provisioning tests — name the
//! `default` context, which is `DOCKER_HOST` or the default socket: the same engine wherever
//! the rootless and Desktop fallbacks are not what testcontainers found.)

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use testcontainers::bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use testcontainers::bollard::Docker;
use testcontainers::core::client::docker_client_instance;
use testcontainers::runners::AsyncRunner;
use testcontainers::GenericImage;

use super::{DOCKER_LABEL, OWNER_LABEL};

/// How long a question to the engine may take before it counts as unanswered.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The engine testcontainers uses, or why there is none. testcontainers panics on some
/// configurations (TLS asked for with no certificates); that is an engine that cannot be used,
/// not a crash of the run.
async fn engine() -> Result<Docker, String> {
    match AssertUnwindSafe(docker_client_instance())
        .catch_unwind()
        .await
    {
        Ok(Ok(engine)) => Ok(engine),
        Ok(Err(e)) => Err(format!("no Docker client: {}", causes(&e))),
        Err(_) => Err(
            "the Docker client could not be configured from the environment \
                       (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH)"
                .to_owned(),
        ),
    }
}

/// An error with every cause behind it: the client's own text names only its outer layer
/// ("client error (Connect)"), the reason — a socket not found, permission denied — is below.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Asks the engine `question`, bounded by [`ANSWER_WITHIN`]: its answer, or why there is none
/// (no client, an error with its causes, no answer in time).
async fn ask<T, F, A>(question: F) -> Result<T, String>
where
    F: FnOnce(Docker) -> A,
    A: std::future::Future<Output = Result<T, testcontainers::bollard::errors::Error>>,
{
    let asked = async { question(engine().await?).await.map_err(|e| causes(&e)) };
    tokio::time::timeout(ANSWER_WITHIN, asked)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {ANSWER_WITHIN:?}")))
}

/// The engine's version, or why it does not answer within [`ANSWER_WITHIN`].
pub(in crate::provision) async fn version() -> Result<String, String> {
    match ask(|engine| async move { engine.version().await }).await {
        Ok(v) => match v.version {
            Some(version) if !version.is_empty() => Ok(version),
            _ => Err("the Docker engine did not report a version".into()),
        },
        Err(e) => Err(format!(
            "no Docker engine answers ({e}; the engine is found at DOCKER_HOST, else the \
             default socket — not through `docker context`)"
        )),
    }
}

/// What the engine says of itself that decides where the containers go.
#[derive(Debug, Default)]
pub(super) struct EngineFacts {
    /// The cgroup driver (`cgroupfs`, `systemd`).
    pub cgroup_driver: String,
    /// The engine's OS type (`linux`, `windows`).
    pub os_type: String,
    /// The operating system it runs on (`Docker Desktop` for Docker Desktop's VM).
    pub operating_system: String,
    /// Its security options (`name=rootless` for a rootless engine).
    pub security_options: Vec<String>,
    /// The name of the host it runs on.
    pub host_name: String,
    /// The release of the kernel it runs on.
    pub kernel_version: String,
}

/// The engine's facts; empty ones (so that nothing special is chosen) when it does not say,
/// with a warning saying why.
pub(super) async fn facts() -> EngineFacts {
    let info = match ask(|engine| async move { engine.info().await }).await {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(error = %e, "the engine's facts are unknown: its ports published, its CPU group kept");
            return EngineFacts::default();
        }
    };
    EngineFacts {
        kernel_version: info.kernel_version.unwrap_or_default(),
        cgroup_driver: info
            .cgroup_driver
            .map(|d| d.to_string())
            .unwrap_or_default(),
        os_type: info.os_type.unwrap_or_default(),
        operating_system: info.operating_system.unwrap_or_default(),
        security_options: info.security_options.unwrap_or_default(),
        host_name: info.name.unwrap_or_default(),
    }
}

/// Whether `image` is present in the engine (as far as it says within [`ANSWER_WITHIN`]).
pub(super) async fn image_present(image: &str) -> bool {
    ask(|engine| async move { engine.inspect_image(image).await })
        .await
        .is_ok()
}

/// Pulls `image` as testcontainers pulls (the registry login and platform the environment
/// names); whether it is present after at most 60 seconds.
pub(super) async fn pull(image: &str) -> bool {
    let (name, tag) = super::split_image(image);
    let pulled = GenericImage::new(name, tag).pull_image();
    matches!(
        tokio::time::timeout(Duration::from_secs(60), pulled).await,
        Ok(Ok(_))
    ) && image_present(image).await
}

/// Removes containers left by Harbor runs whose process is gone (a killed run); how many.
pub(super) async fn reap_orphans() -> usize {
    let listed = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![format!("{DOCKER_LABEL}=true")],
        )])),
        ..Default::default()
    };
    let listing = ask(|engine| async move { engine.list_containers(Some(listed)).await })
        .await
        .unwrap_or_default();
    if listing.is_empty() {
        return 0;
    }
    let Ok(engine) = engine().await else {
        return 0;
    };
    let mut removed = 0;
    for container in listing {
        let Some(id) = container.id else { continue };
        let alive = container
            .labels
            .as_ref()
            .and_then(|labels| labels.get(OWNER_LABEL))
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        let remove = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        if !alive && engine.remove_container(&id, Some(remove)).await.is_ok() {
            removed += 1;
        }
    }
    removed
}
