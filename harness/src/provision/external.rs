//! The external backend: servers the user runs, named by `HARBOR_DATABASE_URL` and
//! `HARBOR_REDIS_URL`. The PostgreSQL role must be allowed to create databases.

use super::ProvisionError;

/// Both URLs, or an error naming what is missing.
pub(super) fn urls() -> Result<(String, String), ProvisionError> {
    let pg = std::env::var("HARBOR_DATABASE_URL");
    let redis = std::env::var("HARBOR_REDIS_URL");
    match (pg, redis) {
        (Ok(pg), Ok(redis)) if !pg.is_empty() && !redis.is_empty() => Ok((pg, redis)),
        _ => Err(ProvisionError::External(
            "HARBOR_DATABASE_URL and HARBOR_REDIS_URL must both be set".into(),
        )),
    }
}
