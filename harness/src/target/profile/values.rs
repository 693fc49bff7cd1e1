//! What the placeholders of a replica's environment and files stand for: the values the harness
//! computed for it — its port, its database and Redis through its fault proxies, the identity
//! keys it must trust, the fake provider's endpoints, the knobs a scenario's `[service]` section
//! set. They are read off the configuration the in-process reference would have been given, so
//! a process replica and an in-process one are started with the same facts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use harbor_service::config::Config;
use harbor_service::domain::Provider;
use harbor_service::ratelimit::Quota;
use secrecy::ExposeSecret;

/// The placeholders without arguments.
const SCALARS: &[&str] = &[
    "port",
    "replica",
    "database_url",
    "owner_database_url",
    "redis_url",
    "redis_prefix",
    "jwks",
    "jwt_issuer",
    "jwt_audience",
    "token_keys",
    "sync_points",
    "sync_point_timeout_ms",
    "lock_timeout_ms",
    "request_timeout_ms",
    "database_max_connections",
    "database_acquire_timeout_ms",
    "provider_timeout_ms",
    "rate_limit_tenant",
    "rate_limit_address",
    "rate_limit_failed_states",
    "flaws",
    "mode",
];

/// The fields of `{provider:P:FIELD}`.
const PROVIDER_FIELDS: &[&str] = &[
    "issuer",
    "authorize_url",
    "token_url",
    "revoke_url",
    "resource_url",
    "client_id",
    "client_secret",
    "redirect_uri",
    "scopes",
];

/// The placeholders a lifecycle template may use, for an error message.
pub const KNOWN_HELP: &str = "port, replica, database_url, owner_database_url, redis_url, \
    redis_prefix, jwks, jwt_issuer, jwt_audience, token_keys, sync_points, sync_point_timeout_ms, \
    lock_timeout_ms, request_timeout_ms, database_max_connections, database_acquire_timeout_ms, \
    provider_timeout_ms, rate_limit_tenant, rate_limit_address, rate_limit_failed_states, flaws, \
    mode (one of target.modes), \
    provider:P:FIELD (P: qbo, gmail, slack, box; FIELD: issuer, authorize_url, token_url, \
    revoke_url, resource_url, client_id, client_secret, redirect_uri, scopes), file:NAME (a \
    declared lifecycle.files entry)";

/// Whether `name` is a lifecycle placeholder, given the declared files.
pub fn known(name: &str, files: &BTreeSet<&str>) -> bool {
    if SCALARS.contains(&name) {
        return true;
    }
    if let Some(file) = name.strip_prefix("file:") {
        return files.contains(file);
    }
    if let Some(rest) = name.strip_prefix("provider:") {
        if let Some((p, field)) = rest.split_once(':') {
            return Provider::parse(p).is_ok() && PROVIDER_FIELDS.contains(&field);
        }
    }
    false
}

/// The values of replica `replica`, listening on `port`, configured as `config` (its URLs already
/// through its fault proxies), with the owner's URL for schema changes and the files written for
/// it.
pub fn of_replica(
    replica: usize,
    port: u16,
    config: &Config,
    owner_database_url: &str,
    mode: Option<&str>,
    files: &BTreeMap<String, PathBuf>,
) -> BTreeMap<String, String> {
    let ms = |d: std::time::Duration| harbor_service::config::millis(d).to_string();
    let quota = |q: Quota| format!("{}/{}", q.per_minute, q.burst);
    let mut v: BTreeMap<String, String> = [
        ("port", port.to_string()),
        ("replica", replica.to_string()),
        (
            "database_url",
            config.database_url.expose_secret().to_owned(),
        ),
        ("owner_database_url", owner_database_url.to_owned()),
        ("redis_url", config.redis_url.expose_secret().to_owned()),
        ("redis_prefix", config.redis_key_prefix.clone()),
        (
            "jwks",
            serde_json::to_string(&config.jwt.jwks).unwrap_or_default(),
        ),
        ("jwt_issuer", config.jwt.issuer.clone()),
        ("jwt_audience", config.jwt.audience.clone()),
        (
            "token_keys",
            config.token_keys.keys.expose_secret().to_owned(),
        ),
        ("sync_points", config.sync_points.to_string()),
        ("sync_point_timeout_ms", ms(config.sync_point_timeout)),
        ("lock_timeout_ms", ms(config.lock_timeout)),
        ("request_timeout_ms", ms(config.request_timeout)),
        (
            "database_max_connections",
            config.database_max_connections.to_string(),
        ),
        (
            "database_acquire_timeout_ms",
            ms(config.database_acquire_timeout),
        ),
        ("provider_timeout_ms", ms(config.providers.timeout)),
        ("rate_limit_tenant", quota(config.rate_limits.per_tenant)),
        ("rate_limit_address", quota(config.rate_limits.per_address)),
        (
            "rate_limit_failed_states",
            quota(config.rate_limits.failed_states_per_user),
        ),
        ("flaws", config.flaws.names().join(",")),
        ("mode", mode.unwrap_or_default().to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (p, c) in &config.providers.providers {
        let fields = [
            ("issuer", c.issuer.clone()),
            ("authorize_url", c.authorize_url.to_string()),
            ("token_url", c.token_url.to_string()),
            ("revoke_url", c.revoke_url.to_string()),
            ("resource_url", c.resource_url.to_string()),
            ("client_id", c.client_id.clone()),
            ("client_secret", c.client_secret.expose_secret().to_owned()),
            ("redirect_uri", c.redirect_uri.to_string()),
            ("scopes", c.scopes.join(" ")),
        ];
        for (field, value) in fields {
            v.insert(format!("provider:{p}:{field}"), value);
        }
    }
    for (name, path) in files {
        v.insert(format!("file:{name}"), path.display().to_string());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_is_known_and_nothing_else() {
        let files = BTreeSet::from(["providers"]);
        for n in SCALARS {
            assert!(known(n, &files), "{n}");
            assert!(KNOWN_HELP.contains(n), "{n} is missing from the help");
        }
        assert!(known("provider:qbo:token_url", &files));
        assert!(known("file:providers", &files));
        assert!(!known("file:other", &files));
        assert!(!known("provider:dropbox:token_url", &files));
        assert!(!known("provider:qbo:password", &files));
        assert!(!known("databse_url", &files));
    }
}
