//! The OAuth providers (QuickBooks Online, Gmail, Slack, Box): their configuration and the one
//! HTTP client that talks to them — code exchange with PKCE, refresh, revocation and the resource
//! fetch a connector sync stands on. Every call has a bounded timeout; errors never carry tokens.
//!
//! Production endpoints are configuration (a JSON file, see README.md); the harness points every
//! provider at its fake provider.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::domain::Provider;

/// One provider's OAuth client registration and endpoints.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// The provider's issuer identifier; a callback's `iss` parameter must equal it (RFC 9207).
    pub issuer: String,
    /// The authorization endpoint the user's browser is sent to.
    pub authorize_url: Url,
    /// The token endpoint (code exchange and refresh).
    pub token_url: Url,
    /// The revocation endpoint (RFC 7009).
    pub revoke_url: Url,
    /// The resource a connector sync reads documents from.
    pub resource_url: Url,
    /// Harbor's client id at the provider.
    pub client_id: String,
    /// Harbor's client secret at the provider.
    pub client_secret: SecretString,
    /// The scopes requested.
    pub scopes: Vec<String>,
    /// The exact redirect URI registered with the provider.
    pub redirect_uri: Url,
    /// The provider sends `iss` with every authorization response (RFC 9207); a callback
    /// without it is then refused.
    pub requires_iss: bool,
}

/// Every configured provider and the timeout of calls to them.
#[derive(Clone, Debug, Default)]
pub struct ProvidersConfig {
    /// Configured providers; a provider missing here cannot be connected.
    pub providers: BTreeMap<Provider, ProviderConfig>,
    /// Bound on every call to a provider.
    pub timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFileEntry {
    issuer: String,
    authorize_url: Url,
    token_url: Url,
    revoke_url: Url,
    resource_url: Url,
    client_id: String,
    /// The name of the environment variable holding the client secret (never the secret itself).
    client_secret_env: String,
    scopes: Vec<String>,
    redirect_uri: Url,
    #[serde(default)]
    requires_iss: bool,
}

impl ProvidersConfig {
    /// Parses the providers file: `{"gmail": {...}, ...}`, client secrets read from the variables
    /// the file names.
    pub fn from_json(raw: &str, timeout: Duration) -> Result<Self, String> {
        let entries: BTreeMap<Provider, ProviderFileEntry> =
            serde_json::from_str(raw).map_err(|e| e.to_string())?;
        let mut providers = BTreeMap::new();
        for (provider, e) in entries {
            let secret = std::env::var(&e.client_secret_env).map_err(|_| {
                format!(
                    "{provider}: {} (its client secret) is not set",
                    e.client_secret_env
                )
            })?;
            providers.insert(
                provider,
                ProviderConfig {
                    issuer: e.issuer,
                    authorize_url: e.authorize_url,
                    token_url: e.token_url,
                    revoke_url: e.revoke_url,
                    resource_url: e.resource_url,
                    client_id: e.client_id,
                    client_secret: SecretString::from(secret),
                    scopes: e.scopes,
                    redirect_uri: e.redirect_uri,
                    requires_iss: e.requires_iss,
                },
            );
        }
        Ok(Self { providers, timeout })
    }
}

/// Why a provider call failed. Carries the provider's error code, never a token.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider is not configured.
    #[error("provider {0} is not configured")]
    NotConfigured(Provider),
    /// The grant (code or refresh token) is invalid, expired, used or revoked.
    #[error("the provider refused the grant (invalid_grant)")]
    InvalidGrant,
    /// The provider answered with another error.
    #[error("the provider answered {status} {error}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The OAuth `error` code, when the body had one.
        error: String,
    },
    /// The provider could not be reached in time.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
}

/// Tokens a provider issued. `Debug` shows no token (the `secrecy` types redact themselves).
#[derive(Debug, Deserialize)]
pub struct TokenSet {
    /// The access token.
    pub access_token: SecretString,
    /// The refresh token; absent when the provider does not rotate it.
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    /// Lifetime of the access token, in seconds, as the provider sent it: a number or a numeric
    /// string; anything else (or nothing) is `None`, an unknown lifetime.
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub expires_in: Option<i64>,
    /// The granted scopes, space-separated.
    #[serde(default)]
    pub scope: Option<String>,
}

/// The longest access-token lifetime taken at its word: one year. Longer lifetimes are clamped to
/// it (not trusted — and not added to `now` unchecked, which panicked for `i64::MAX`).
pub const MAX_TOKEN_LIFETIME_SECONDS: i64 = 366 * 24 * 3600;

impl TokenSet {
    /// When the access token expires: the provider's lifetime clamped to 0 s … one year (a
    /// negative one expires now, so the next sync refreshes). `None` when the provider sent no
    /// usable number: the expiry is unknown and a sync uses the token until the provider refuses it.
    pub fn expires_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let seconds = self.expires_in?.clamp(0, MAX_TOKEN_LIFETIME_SECONDS);
        now.checked_add_signed(chrono::Duration::try_seconds(seconds)?)
    }
}

/// `expires_in` as providers really send it: a JSON integer, a float, or a numeric string. A
/// value that is none of these is an unknown lifetime, not a failed token exchange (which would
/// leave the grant just issued live at the provider and unusable here).
fn lenient_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match value {
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(saturating_seconds)),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(saturating_seconds),
        _ => None,
    })
}

/// A number of seconds as an `i64`, saturating (`as` saturates float-to-int casts).
fn saturating_seconds(seconds: f64) -> i64 {
    seconds as i64
}

/// A document as the provider's resource endpoint lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct RemoteDocument {
    /// The provider's id for it.
    pub id: String,
    /// Its title.
    pub title: String,
}

#[derive(Deserialize)]
struct DocumentPage {
    documents: Vec<RemoteDocument>,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
}

/// The HTTP client for every provider.
#[derive(Clone, Debug)]
pub struct ProviderClient {
    http: reqwest::Client,
    config: std::sync::Arc<ProvidersConfig>,
}

impl ProviderClient {
    /// A client for the configured providers; redirects are never followed.
    pub fn new(config: ProvidersConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a TLS backend is compiled in");
        Self {
            http,
            config: std::sync::Arc::new(config),
        }
    }

    /// The configuration of `provider`.
    pub fn config(&self, provider: Provider) -> Result<&ProviderConfig, ProviderError> {
        self.config
            .providers
            .get(&provider)
            .ok_or(ProviderError::NotConfigured(provider))
    }

    /// Exchanges an authorization code, proving possession of the PKCE verifier.
    pub async fn exchange_code(
        &self,
        provider: Provider,
        code: &SecretString,
        verifier: &SecretString,
        redirect_uri: &str,
    ) -> Result<TokenSet, ProviderError> {
        let c = self.config(provider)?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.expose_secret()),
            ("redirect_uri", redirect_uri),
            ("client_id", &c.client_id),
            ("client_secret", c.client_secret.expose_secret()),
        ];
        if !crate::flaws::active(crate::flaws::Flaw::NoPkce) {
            form.push(("code_verifier", verifier.expose_secret()));
        }
        self.token_request(c, &form).await
    }

    /// Exchanges a refresh token for new tokens.
    pub async fn refresh(
        &self,
        provider: Provider,
        refresh_token: &SecretString,
    ) -> Result<TokenSet, ProviderError> {
        let c = self.config(provider)?;
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
            ("client_id", &c.client_id),
            ("client_secret", c.client_secret.expose_secret()),
        ];
        self.token_request(c, &form).await
    }

    async fn token_request(
        &self,
        c: &ProviderConfig,
        form: &[(&str, &str)],
    ) -> Result<TokenSet, ProviderError> {
        let response = self
            .http
            .post(c.token_url.clone())
            .form(form)
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(describe(&e)))?;
        let status = response.status();
        let body = read_capped(response, MAX_TOKEN_RESPONSE_BYTES).await?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|_| ProviderError::Unavailable("unreadable response".into()));
        }
        // The provider's error code is echoed into logs and audit rows: keep only what a code
        // can look like.
        let error: String = serde_json::from_slice::<OAuthErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        if error == "invalid_grant" {
            return Err(ProviderError::InvalidGrant);
        }
        if status.is_server_error() {
            return Err(ProviderError::Unavailable(format!(
                "status {}",
                status.as_u16()
            )));
        }
        Err(ProviderError::Rejected {
            status: status.as_u16(),
            error,
        })
    }

    /// Revokes a token at the provider (RFC 7009).
    pub async fn revoke(
        &self,
        provider: Provider,
        token: &SecretString,
    ) -> Result<(), ProviderError> {
        let c = self.config(provider)?;
        let form = [
            ("token", token.expose_secret()),
            ("client_id", c.client_id.as_str()),
            ("client_secret", c.client_secret.expose_secret()),
        ];
        let response = self
            .http
            .post(c.revoke_url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(describe(&e)))?;
        match response.status() {
            s if s.is_success() => Ok(()),
            s => Err(ProviderError::Rejected {
                status: s.as_u16(),
                error: String::new(),
            }),
        }
    }

    /// Lists the documents the access token can read.
    pub async fn fetch_documents(
        &self,
        provider: Provider,
        access_token: &SecretString,
    ) -> Result<Vec<RemoteDocument>, ProviderError> {
        let c = self.config(provider)?;
        let response = self
            .http
            .get(c.resource_url.clone())
            .bearer_auth(access_token.expose_secret())
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(ProviderError::Rejected {
                status: status.as_u16(),
                error: String::new(),
            });
        }
        let body = read_capped(response, MAX_RESOURCE_RESPONSE_BYTES).await?;
        let page: DocumentPage = serde_json::from_slice(&body)
            .map_err(|_| ProviderError::Unavailable("unreadable response".into()))?;
        Ok(page.documents)
    }
}

/// The most a token endpoint's answer may hold (real ones are well under 8 KiB).
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// The most a resource answer may hold.
pub const MAX_RESOURCE_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The body of `response`, refused once it passes `cap` bytes — whatever `Content-Length`
/// claims, chunk by chunk — so a hostile or broken provider cannot fill a replica's memory within
/// the call's timeout.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, ProviderError> {
    let too_large = || ProviderError::Unavailable(format!("response larger than {cap} bytes"));
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ProviderError::Unavailable(describe(&e)))?
    {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error without its URL's query (which could carry a code in a redirect).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() {
        "unreadable response"
    } else {
        "transport error"
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> TokenSet {
        serde_json::from_str(body).expect("a token response")
    }

    #[test]
    fn hostile_expires_in_never_panics_and_is_clamped() {
        let now = Utc::now();
        let at = |body: &str| parse(body).expires_at(now);
        assert_eq!(
            at(r#"{"access_token":"a","expires_in":3600}"#),
            Some(now + chrono::Duration::seconds(3600))
        );
        assert_eq!(
            at(r#"{"access_token":"a","expires_in":"3600"}"#),
            Some(now + chrono::Duration::seconds(3600))
        );
        assert_eq!(at(r#"{"access_token":"a","expires_in":0}"#), Some(now));
        assert_eq!(
            at(r#"{"access_token":"a","expires_in":"3600.0"}"#),
            Some(now + chrono::Duration::seconds(3600))
        );
        assert_eq!(
            at(r#"{"access_token":"a","expires_in":-3600}"#),
            Some(now),
            "a negative lifetime expires now"
        );
        let year = Some(now + chrono::Duration::seconds(MAX_TOKEN_LIFETIME_SECONDS));
        for huge in [
            r#"{"access_token":"a","expires_in":9223372036854775807}"#,
            r#"{"access_token":"a","expires_in":18446744073709551615}"#,
            r#"{"access_token":"a","expires_in":1e300}"#,
        ] {
            assert_eq!(at(huge), year, "{huge} is clamped to a year");
        }
        for hostile in [
            r#"{"access_token":"a","expires_in":"soon"}"#,
            r#"{"access_token":"a","expires_in":null}"#,
            r#"{"access_token":"a","expires_in":[1]}"#,
            r#"{"access_token":"a"}"#,
        ] {
            assert_eq!(at(hostile), None, "{hostile}");
        }
    }
}
