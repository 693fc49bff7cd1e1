//! Configuration from the environment (12-factor). Secrets are held in `secrecy` types so that
//! they cannot be formatted by accident.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;

use crate::flaws::{Flaw, Flaws};
use crate::providers::ProvidersConfig;
use crate::ratelimit::{Quota, RateLimits};
use crate::vault::TokenKeysConfig;

/// The deployment profile. Production refuses every test-only hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// A real deployment: sync points and clock control are refused at start-up.
    Production,
    /// A developer's machine.
    Development,
    /// Driven by the certification harness or the test suite.
    Test,
}

impl Profile {
    fn parse(raw: &str) -> Result<Self, ConfigError> {
        match raw {
            "production" => Ok(Profile::Production),
            "development" => Ok(Profile::Development),
            "test" => Ok(Profile::Test),
            other => Err(ConfigError::Invalid {
                var: "HARBOR_PROFILE",
                message: format!("expected production, development or test, got {other:?}"),
            }),
        }
    }
}

/// Everything the service needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Which kind of deployment this is.
    pub profile: Profile,
    /// Where to listen; port 0 picks a free port (the harness does this).
    pub listen_addr: SocketAddr,
    /// PostgreSQL URL of the role requests run as (may carry a password): a LOGIN role that owns
    /// nothing and is not a member of the owner, so row-level security applies to every request
    /// session and `RESET ROLE` cannot widen it (checked at start-up).
    pub database_url: SecretString,
    /// PostgreSQL URL of the schema owner, for migrations (run at start-up when set) and
    /// `rotate-keys`. Production can leave it out of the serving process and run
    /// `harbor-service migrate` instead.
    pub migration_database_url: Option<SecretString>,
    /// Most connections the pool opens.
    pub database_max_connections: u32,
    /// How long a request waits for a pooled connection before 503 `DATABASE_UNAVAILABLE`.
    pub database_acquire_timeout: Duration,
    /// How long a request waits for a lock before it gives up with 503 `LOCK_TIMEOUT`, so a slow
    /// provider call under one workspace's lock cannot pile up every pooled connection.
    pub lock_timeout: Duration,
    /// Redis connection URL (may carry a password).
    pub redis_url: SecretString,
    /// Prefix of every Redis key the service writes, so several deployments can share a server.
    pub redis_key_prefix: String,
    /// Bound on connecting to Redis and on each Redis command; past it the request fails closed
    /// with 503 `UNAVAILABLE`.
    pub redis_timeout: Duration,
    /// How bearer tokens are verified.
    pub jwt: JwtConfig,
    /// The token encryption keys; the service refuses to start without one.
    pub token_keys: TokenKeysConfig,
    /// The OAuth providers that can be connected.
    pub providers: ProvidersConfig,
    /// Rate limits of the OAuth routes.
    pub rate_limits: RateLimits,
    /// A sync refreshes the access token first when it expires within this margin.
    pub refresh_margin: Duration,
    /// Whether the harness's sync points and actor tags are honoured. Never in production.
    pub sync_points: bool,
    /// How long a request may stay parked at a sync point before it fails loudly.
    pub sync_point_timeout: Duration,
    /// Seeded flaws (only a build with the `flaws` feature can have any; never in production).
    pub flaws: Flaws,
    /// Whether JSON logs are written (the binary's choice; in-process use leaves logging alone).
    pub json_logs: bool,
    /// The most a request may take, from its headers to its answer; past it the client gets 503
    /// `REQUEST_TIMEOUT` (work the request handed to its own task — a callback's store, a
    /// revocation — goes on).
    pub request_timeout: Duration,
    /// How long a client may take to send a request's headers before the connection is closed.
    pub header_read_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` is believed for the per-address rate limit (none by
    /// default: the limit keys on the socket's address).
    pub trusted_proxies: crate::ratelimit::TrustedProxies,
    /// How often each replica's outbox worker looks for revocations to deliver.
    pub outbox_interval: Duration,
    /// Whether an activation's answer carries `Server-Timing: lock;dur=<ms>`, how long it held
    /// the workspace lock (benchmarks). Off by default: timings are for operators, not clients.
    pub server_timing: bool,
}

/// The most a request body may declare (`Content-Length`): no route takes a body this large, and
/// a request that says it brings more is refused before anything reads it (413
/// `PAYLOAD_TOO_LARGE`).
pub const MAX_REQUEST_BODY_BYTES: usize = 64 * 1024;

/// How the gateway's bearer tokens are verified.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// The public keys, as a JWK set (`{"keys": [...]}`); the token's `kid` picks one.
    pub jwks: jsonwebtoken::jwk::JwkSet,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry.
    pub audience: String,
}

/// A configuration value that is missing or malformed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("{var}: {message}")]
    Invalid {
        /// The variable's name.
        var: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// A duration in whole milliseconds, as the `*_MS` variables take it, rounded up: a sub-millisecond
/// timeout must not become 0, which PostgreSQL and this service read as "no timeout at all".
pub fn millis(duration: std::time::Duration) -> u128 {
    duration.as_micros().div_ceil(1000)
}

fn var(name: &'static str) -> Result<String, ConfigError> {
    std::env::var(name).map_err(|_| ConfigError::Missing(name))
}

fn var_or(name: &'static str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn parse_var<T: std::str::FromStr>(name: &'static str, default: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    var_or(name, default)
        .parse()
        .map_err(|e: T::Err| ConfigError::Invalid {
            var: name,
            message: e.to_string(),
        })
}

impl std::str::FromStr for Quota {
    type Err = String;
    /// `per_minute/burst`, such as `60/20`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let (rate, burst) = raw
            .split_once('/')
            .ok_or("expected per_minute/burst, such as 60/20")?;
        let per_minute: u32 = rate
            .trim()
            .parse()
            .map_err(|_| "per_minute is not a number")?;
        let burst: u32 = burst.trim().parse().map_err(|_| "burst is not a number")?;
        if per_minute == 0 || burst == 0 {
            return Err("per_minute and burst must be positive".into());
        }
        if per_minute > Quota::MAX_PER_MINUTE {
            return Err(format!(
                "per_minute is at most {} (one request per microsecond)",
                Quota::MAX_PER_MINUTE
            ));
        }
        Ok(Quota { per_minute, burst })
    }
}

impl Config {
    /// Reads the configuration from `HARBOR_*` environment variables (see README.md).
    pub fn from_env() -> Result<Self, ConfigError> {
        let jwks_raw = match std::env::var("HARBOR_JWT_JWKS_FILE") {
            Ok(path) => std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
                var: "HARBOR_JWT_JWKS_FILE",
                message: format!("{path}: {e}"),
            })?,
            Err(_) => var("HARBOR_JWT_JWKS")?,
        };
        let jwks = serde_json::from_str(&jwks_raw).map_err(|e| ConfigError::Invalid {
            var: "HARBOR_JWT_JWKS",
            message: format!("not a JWK set: {e}"),
        })?;
        let provider_timeout =
            Duration::from_millis(parse_var("HARBOR_PROVIDER_TIMEOUT_MS", "10000")?);
        let providers = match std::env::var("HARBOR_PROVIDERS_FILE") {
            Err(_) => ProvidersConfig {
                providers: Default::default(),
                timeout: provider_timeout,
            },
            Ok(path) => {
                let raw = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
                    var: "HARBOR_PROVIDERS_FILE",
                    message: format!("{path}: {e}"),
                })?;
                ProvidersConfig::from_json(&raw, provider_timeout).map_err(|message| {
                    ConfigError::Invalid {
                        var: "HARBOR_PROVIDERS_FILE",
                        message,
                    }
                })?
            }
        };
        let defaults = RateLimits::default();
        let quota = |name: &'static str, default: Quota| -> Result<Quota, ConfigError> {
            match std::env::var(name) {
                Err(_) => Ok(default),
                Ok(raw) => raw
                    .parse()
                    .map_err(|message| ConfigError::Invalid { var: name, message }),
            }
        };
        let mut wanted = Vec::new();
        for name in var_or("HARBOR_FLAWS", "")
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            wanted.push(Flaw::parse(name).ok_or_else(|| ConfigError::Invalid {
                var: "HARBOR_FLAWS",
                message: format!("unknown flaw {name:?}"),
            })?);
        }
        let flaws = Flaws::enable(wanted).map_err(|e| ConfigError::Invalid {
            var: "HARBOR_FLAWS",
            message: e.to_string(),
        })?;
        let config = Config {
            profile: Profile::parse(&var_or("HARBOR_PROFILE", "production"))?,
            listen_addr: parse_var("HARBOR_LISTEN_ADDR", "127.0.0.1:8080")?,
            database_url: SecretString::from(var("HARBOR_DATABASE_URL")?),
            migration_database_url: std::env::var("HARBOR_MIGRATION_DATABASE_URL")
                .ok()
                .map(SecretString::from),
            database_max_connections: parse_var("HARBOR_DATABASE_MAX_CONNECTIONS", "20")?,
            database_acquire_timeout: Duration::from_millis(parse_var(
                "HARBOR_DATABASE_ACQUIRE_TIMEOUT_MS",
                "10000",
            )?),
            lock_timeout: Duration::from_millis(parse_var("HARBOR_LOCK_TIMEOUT_MS", "5000")?),
            redis_url: SecretString::from(var("HARBOR_REDIS_URL")?),
            redis_key_prefix: var_or("HARBOR_REDIS_PREFIX", "harbor:"),
            redis_timeout: Duration::from_millis(parse_var("HARBOR_REDIS_TIMEOUT_MS", "2000")?),
            jwt: JwtConfig {
                jwks,
                issuer: var("HARBOR_JWT_ISSUER")?,
                audience: var("HARBOR_JWT_AUDIENCE")?,
            },
            token_keys: TokenKeysConfig {
                keys: SecretString::from(var("HARBOR_TOKEN_KEYS")?),
                primary: std::env::var("HARBOR_TOKEN_PRIMARY_KEY").ok(),
            },
            providers,
            rate_limits: RateLimits {
                per_tenant: quota("HARBOR_RATE_LIMIT_TENANT", defaults.per_tenant)?,
                per_address: quota("HARBOR_RATE_LIMIT_ADDRESS", defaults.per_address)?,
                failed_states_per_user: quota(
                    "HARBOR_RATE_LIMIT_FAILED_STATES",
                    defaults.failed_states_per_user,
                )?,
            },
            refresh_margin: Duration::from_secs(parse_var("HARBOR_REFRESH_MARGIN_SECONDS", "300")?),
            sync_points: parse_var("HARBOR_SYNC_POINTS", "false")?,
            sync_point_timeout: Duration::from_millis(parse_var(
                "HARBOR_SYNC_POINT_TIMEOUT_MS",
                "10000",
            )?),
            json_logs: parse_var("HARBOR_JSON_LOGS", "true")?,
            request_timeout: Duration::from_millis(parse_var(
                "HARBOR_REQUEST_TIMEOUT_MS",
                "30000",
            )?),
            header_read_timeout: Duration::from_millis(parse_var(
                "HARBOR_HEADER_READ_TIMEOUT_MS",
                "10000",
            )?),
            outbox_interval: Duration::from_millis(parse_var("HARBOR_OUTBOX_INTERVAL_MS", "1000")?),
            server_timing: parse_var("HARBOR_SERVER_TIMING", "false")?,
            trusted_proxies: crate::ratelimit::TrustedProxies::parse(&var_or(
                "HARBOR_TRUSTED_PROXIES",
                "",
            ))
            .map_err(|message| ConfigError::Invalid {
                var: "HARBOR_TRUSTED_PROXIES",
                message,
            })?,
            flaws,
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses combinations that must never run, whatever built the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.profile == Profile::Production && self.sync_points {
            return Err(ConfigError::Invalid {
                var: "HARBOR_SYNC_POINTS",
                message:
                    "sync points are a test hook and are refused with HARBOR_PROFILE=production"
                        .into(),
            });
        }
        if self.profile == Profile::Production && !self.flaws.is_empty() {
            return Err(ConfigError::Invalid {
                var: "HARBOR_FLAWS",
                message: "seeded flaws are refused with HARBOR_PROFILE=production".into(),
            });
        }
        if self.profile == Profile::Production {
            // Tokens, codes and client secrets travel to these endpoints.
            for (provider, c) in &self.providers.providers {
                for (what, url) in [
                    ("authorize_url", &c.authorize_url),
                    ("token_url", &c.token_url),
                    ("revoke_url", &c.revoke_url),
                    ("resource_url", &c.resource_url),
                ] {
                    if url.scheme() != "https" {
                        return Err(ConfigError::Invalid {
                            var: "HARBOR_PROVIDERS_FILE",
                            message: format!("{provider}.{what} must be https with HARBOR_PROFILE=production, not {}", url.scheme()),
                        });
                    }
                }
                // The code travels to the redirect URI: https, or http only to this machine.
                let loopback = matches!(
                    c.redirect_uri.host_str(),
                    Some("localhost" | "127.0.0.1" | "[::1]")
                );
                if c.redirect_uri.scheme() != "https" && !loopback {
                    return Err(ConfigError::Invalid {
                        var: "HARBOR_PROVIDERS_FILE",
                        message: format!("{provider}.redirect_uri must be https (or loopback http) with HARBOR_PROFILE=production"),
                    });
                }
            }
        }
        if self.outbox_interval.is_zero() {
            return Err(ConfigError::Invalid {
                var: "HARBOR_OUTBOX_INTERVAL_MS",
                message: "must be positive (0 would poll the database without pause)".into(),
            });
        }
        if self.request_timeout.is_zero() || self.header_read_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                var: "HARBOR_REQUEST_TIMEOUT_MS",
                message: "the request and header-read timeouts must be positive".into(),
            });
        }
        if self.sync_points && self.request_timeout <= self.sync_point_timeout {
            return Err(ConfigError::Invalid {
                var: "HARBOR_REQUEST_TIMEOUT_MS",
                message: "must be longer than HARBOR_SYNC_POINT_TIMEOUT_MS, or a parked request would be cut before its sync point gives up".into(),
            });
        }
        if self.redis_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                var: "HARBOR_REDIS_TIMEOUT_MS",
                message: "must be positive".into(),
            });
        }
        if self.jwt.jwks.keys.is_empty() {
            return Err(ConfigError::Invalid {
                var: "HARBOR_JWT_JWKS",
                message: "the key set is empty".into(),
            });
        }
        Ok(())
    }
}
