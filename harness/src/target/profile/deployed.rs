//! A deployed target (`[deployed]`): already running somewhere, reached at its URLs, its
//! database through a DSN and its identity through the one key it trusts — and offering only
//! what a running service can.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{DeployedSection, Profile};
use crate::target::Capability;

/// A target already running somewhere: the harness starts nothing, and reaches it as it is.
#[derive(Clone)]
pub struct Deployed {
    /// One base URL per replica.
    pub urls: Vec<String>,
    /// A role on its PostgreSQL that may write fixtures and read the lock tables (`None`: HTTP
    /// only).
    pub database_url: Option<secrecy::SecretString>,
    /// The Ed25519 key (PKCS#8, base64, as `harbor-certify keygen` writes it) whose bearer
    /// tokens the target trusts.
    pub signing_key: PathBuf,
}

impl std::fmt::Debug for Deployed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The database URL may carry a password: never printed.
        f.debug_struct("Deployed")
            .field("urls", &self.urls)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "[redacted]"),
            )
            .field("signing_key", &self.signing_key)
            .finish()
    }
}

impl Profile {
    /// What a deployed target offers by being reached: its database, nothing the harness would
    /// have to have started it with (the protocols and the lock: `Profile::capabilities`).
    pub(super) fn deployed_capabilities(
        &self,
        d: &Deployed,
    ) -> BTreeMap<Capability, Result<String, String>> {
        let not_started = |what: &str| Err(format!("deployed: {what}"));
        let database: Result<String, String> = match &d.database_url {
            Some(_) => Ok(
                "its own database, deployed.database_url (fixtures are written there)".to_owned(),
            ),
            None => Err("deployed: no deployed.database_url".to_owned()),
        };
        let mut out = BTreeMap::new();
        out.insert(Capability::Database, database.clone());
        out.insert(
            Capability::Faults,
            not_started("its links do not go through the harness's fault proxies"),
        );
        out.insert(
            Capability::Crash,
            not_started("the harness did not start it, and does not kill it"),
        );
        out.insert(Capability::ProviderControl, not_started("its OAuth providers are the ones it was deployed with, not the harness's fake ones"));
        out.insert(
            Capability::Redis,
            not_started("its Redis is not the harness's"),
        );
        out.insert(
            Capability::TokenKeys,
            not_started("the harness holds none of its token keys"),
        );
        out.insert(Capability::ReferenceSchema, not_started("its database is its own; the catalogue's SQL written against the reference's schema is not run on it"));
        out.insert(
            Capability::IsolatedDatabase,
            not_started("its database may hold anyone's rows, so nothing reads the whole of it"),
        );
        out
    }
}

/// `{env:NAME}` in `raw` replaced by the variable's value (an unset one is an error naming
/// `place`): how a deployed target's addresses and credentials stay out of the profile.
fn with_env(place: &str, raw: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(at) = rest.find("{env:") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "{env:".len()..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{place}: an {{env:…}} is not closed"))?;
        let name = &after[..end];
        let value = std::env::var(name)
            .map_err(|_| format!("{place}: {{env:{name}}} is not set in the environment"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub(super) fn deployed(d: &DeployedSection, cwd: &Path) -> Result<Deployed, String> {
    if d.urls.is_empty() {
        return Err("deployed.urls: empty (one base URL per replica)".into());
    }
    let mut urls = Vec::new();
    for (i, raw) in d.urls.iter().enumerate() {
        let place = format!("deployed.urls[{i}]");
        let url = with_env(&place, raw)?;
        // Neither error repeats the value: an `{env:…}` may hold a secret (a DSN set by mistake).
        let parsed = reqwest::Url::parse(&url).map_err(|e| format!("{place}: not a URL ({e})"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "{place}: not an http(s) URL (its scheme is {:?})",
                parsed.scheme()
            ));
        }
        // The URL is printed in reports and summaries: credentials have no place in it.
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!(
                "{place}: the URL carries credentials (reports print it): leave them out"
            ));
        }
        urls.push(url.trim_end_matches('/').to_owned());
    }
    let database_url = match &d.database_url {
        Some(raw) => {
            let url = with_env("deployed.database_url", raw)?;
            url.parse::<sqlx::postgres::PgConnectOptions>()
                .map_err(|_| "deployed.database_url: not a PostgreSQL URL".to_owned())?;
            Some(secrecy::SecretString::from(url))
        }
        None => None,
    };
    let key = with_env("deployed.signing_key", &d.signing_key)?;
    let signing_key = cwd.join(key);
    // A variable meant to name the key's file may hold the key itself (a CI secret store hands
    // over values): an error then never repeats what it holds.
    let from_env = d.signing_key.contains("{env:");
    crate::identity::TokenMint::from_key_file(&signing_key).map_err(|e| {
        if from_env {
            let why = match std::fs::metadata(&signing_key) {
                Err(e) => format!("no readable file at the path it names ({})", e.kind()),
                Ok(_) => "the file it names holds no base64 PKCS#8 Ed25519 key".to_owned(),
            };
            format!(
                "deployed.signing_key: {why}; the variable must hold the path of the key's file, not the key (its value is not repeated here)"
            )
        } else {
            format!("deployed.signing_key: {e}")
        }
    })?;
    Ok(Deployed {
        urls,
        database_url,
        signing_key,
    })
}
