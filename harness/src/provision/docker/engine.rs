//! What the Docker backend asks the engine outside of starting containers — its version and
//! facts, whether an image is present, a pull, the orphans' listing and removal — through the
//! client testcontainers starts the containers with (`docker_client_instance`).
//!
//! Why not the `docker` command: testcontainers finds its engine by its own rules (`DOCKER_HOST`,
//! `~/.testcontainers.properties`, the default socket) and ignores `docker context`, so with a
//! context of the client's own the command could have checked images on, reaped from, and judged
//! the network of another engine than the one the containers run on. One client, one engine.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use testcontainers::bollard::query_parameters::{
    CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
};
use testcontainers::bollard::Docker;
use testcontainers::core::client::docker_client_instance;

use super::{DOCKER_LABEL, OWNER_LABEL};

/// The engine testcontainers uses, or why there is none.
async fn engine() -> Result<Docker, String> {
    docker_client_instance()
        .await
        .map_err(|e| format!("no Docker client: {e}"))
}

/// The engine's version, or why it does not answer within 10 seconds.
pub(in crate::provision) async fn version() -> Result<String, String> {
    let probe = async { engine().await?.version().await.map_err(|e| e.to_string()) };
    match tokio::time::timeout(Duration::from_secs(10), probe).await {
        Ok(Ok(v)) => match v.version {
            Some(version) if !version.is_empty() => Ok(version),
            _ => Err("the Docker engine did not report a version".into()),
        },
        Ok(Err(e)) => Err(format!("no Docker engine answers ({e})")),
        Err(_) => Err("the Docker engine did not answer within 10 s".into()),
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
}

/// The engine's facts; empty ones (so that nothing special is chosen) when it does not say.
pub(super) async fn facts() -> EngineFacts {
    let info = match engine().await {
        Ok(engine) => engine.info().await.ok(),
        Err(_) => None,
    };
    let Some(info) = info else {
        return EngineFacts::default();
    };
    EngineFacts {
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

/// Whether `image` is present in the engine.
pub(super) async fn image_present(image: &str) -> bool {
    match engine().await {
        Ok(engine) => engine.inspect_image(image).await.is_ok(),
        Err(_) => false,
    }
}

/// Pulls `image`; whether it is present after at most 60 seconds.
pub(super) async fn pull(image: &str) -> bool {
    let (name, tag) = super::split_image(image);
    let pulled = async {
        let engine = engine().await?;
        let options = CreateImageOptions {
            from_image: Some(name.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let mut progress = engine.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            step.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(60), pulled).await,
        Ok(Ok(()))
    ) && image_present(image).await
}

/// Removes containers left by Harbor runs whose process is gone (a killed run); how many.
pub(super) async fn reap_orphans() -> usize {
    let Ok(engine) = engine().await else {
        return 0;
    };
    let listing = engine
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("{DOCKER_LABEL}=true")],
            )])),
            ..Default::default()
        }))
        .await
        .unwrap_or_default();
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
