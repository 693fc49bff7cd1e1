//! The external backend: servers the user runs, named by `HARBOR_DATABASE_URL` and
//! `HARBOR_REDIS_URL`. The PostgreSQL role must be allowed to create databases.

use super::ProvisionError;

/// Both URLs, or an error naming what is missing.
pub(super) fn urls() -> Result<(String, String), ProvisionError> {
    let pg = std::env::var("HARBOR_DATABASE_URL");
    let redis = std::env::var("HARBOR_REDIS_URL");
    let set = |v: Result<String, std::env::VarError>| v.ok().filter(|v| !v.is_empty());
    match (set(pg), set(redis)) {
        (Some(pg), Some(redis)) => Ok((pg, redis)),
        (Some(_), None) => Err(ProvisionError::External(
            "HARBOR_DATABASE_URL is set but HARBOR_REDIS_URL is not: set both (redis://host:port)".into(),
        )),
        (None, Some(_)) => Err(ProvisionError::External(
            "HARBOR_REDIS_URL is set but HARBOR_DATABASE_URL is not: set both (postgres://user@host:port/db)".into(),
        )),
        (None, None) => Err(ProvisionError::External(
            "HARBOR_DATABASE_URL and HARBOR_REDIS_URL must both be set".into(),
        )),
    }
}
