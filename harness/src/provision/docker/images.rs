//! Which PostgreSQL and Redis images a Docker run uses: the ones named in the environment, else
//! the pinned official tags when present locally, else the offline images
//! `scripts/offline-images.sh` builds, else the official tags pulled.

use super::engine::{image_present, pull};

const OFFICIAL_POSTGRES: &str = "postgres:16-alpine";
const OFFICIAL_REDIS: &str = "redis:7-alpine";
const OFFLINE_POSTGRES: &str = "harbor-offline/postgres:15-bookworm";
const OFFLINE_REDIS: &str = "harbor-offline/redis:7-bookworm";

/// The two images a Docker run uses.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DockerImages {
    /// The PostgreSQL image reference.
    pub postgres: String,
    /// The Redis image reference.
    pub redis: String,
}

impl DockerImages {
    /// Chooses the images as described in the module documentation. With `allow_pull` false (the
    /// `auto` backend's detection) only images already present count, so detection is quick.
    pub async fn resolve(allow_pull: bool) -> Result<Self, String> {
        let postgres = resolve_one(
            "HARBOR_POSTGRES_IMAGE",
            OFFICIAL_POSTGRES,
            OFFLINE_POSTGRES,
            allow_pull,
        )
        .await?;
        let redis = resolve_one(
            "HARBOR_REDIS_IMAGE",
            OFFICIAL_REDIS,
            OFFLINE_REDIS,
            allow_pull,
        )
        .await?;
        Ok(Self { postgres, redis })
    }
}

async fn resolve_one(
    var: &str,
    official: &str,
    offline: &str,
    allow_pull: bool,
) -> Result<String, String> {
    if let Ok(explicit) = std::env::var(var) {
        if !explicit.is_empty() {
            if allow_pull || image_present(&explicit).await {
                return Ok(explicit);
            }
            return Err(format!("{var}={explicit} is not present locally"));
        }
    }
    for candidate in [official, offline] {
        if image_present(candidate).await {
            return Ok(candidate.to_owned());
        }
    }
    if allow_pull && pull(official).await {
        return Ok(official.to_owned());
    }
    Err(format!(
        "neither {official} nor {offline} is present and {official} cannot be pulled; \
         run scripts/offline-images.sh or set {var}"
    ))
}
