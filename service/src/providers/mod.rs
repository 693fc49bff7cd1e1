//! The OAuth providers (QuickBooks Online, Gmail, Slack, Box, or any standard OAuth 2.0
//! authorization server): their configuration and the one HTTP client that talks to them — code
//! exchange with PKCE, refresh, revocation and the resource listing a connector sync stands on.
//! Every call has a bounded timeout and a bounded answer; errors never carry tokens.
//!
//! What differs between providers — client authentication, error shapes, how a revocation is
//! asked for, the resource API and its paging, the callback's extra parameters — is a
//! [`Dialect`], one file each: [`standard`] (RFC 6749/7009/9207 as written), [`quickbooks`],
//! [`gmail`], [`slack`], [`box_com`]. `docs/PROVIDER-DIALECTS.md` is the table of facts, with
//! sources, that they implement.
//!
//! Production endpoints are configuration (a JSON file, see README.md); the harness points every
//! provider at its fake provider, which speaks the same dialects and refuses the wrong one.
//!
//! The `id_token` an `openid` scope brings never identifies a Harbor user: Harbor uses OAuth for
//! API access only and identifies its users by its own JWTs. A dialect may read from it the
//! provider account a grant is for (Google's `sub`, `Dialect::account_of_answer`); the token
//! itself is never stored.
//!
//! Longer than 500 lines on purpose: configuration, errors, the token set and the one client are
//! one contract with the dialects; what differs per provider is split out into their files.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::domain::Provider;

pub mod box_com;
mod dialect;
pub(crate) use dialect::error_code as provider_error_code;
pub mod gmail;
pub mod quickbooks;
pub mod slack;
pub mod standard;

pub use dialect::{ClientAuth, Dialect, DialectName, Page};

/// One provider's OAuth client registration and endpoints.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// Which provider's conventions the endpoints below speak.
    pub dialect: DialectName,
    /// The provider's issuer identifier; a callback's `iss` parameter must equal it (RFC 9207).
    pub issuer: String,
    /// The authorization endpoint the user's browser is sent to.
    pub authorize_url: Url,
    /// The token endpoint (code exchange and refresh).
    pub token_url: Url,
    /// The revocation endpoint.
    pub revoke_url: Url,
    /// The base URL of the resource API a connector sync lists documents from; the dialect adds
    /// its own path (the standard dialect uses it as it is).
    pub resource_url: Url,
    /// Harbor's client id at the provider.
    pub client_id: String,
    /// Harbor's client secret at the provider.
    pub client_secret: SecretString,
    /// How Harbor authenticates itself at the token (and revocation) endpoint.
    pub client_auth: ClientAuth,
    /// The scopes requested.
    pub scopes: Vec<String>,
    /// The scopes a grant must carry to be stored, spelled as the provider's token answer spells
    /// them (default: every scope requested but OpenID Connect's [`UNCHECKED_BY_DEFAULT`]). A
    /// user may untick some at the consent screen (Google's granular consent); a grant without
    /// one of these is given back, not stored.
    pub required_scopes: Vec<String>,
    /// The exact redirect URI registered with the provider.
    pub redirect_uri: Url,
    /// The provider sends `iss` with every authorization response (RFC 9207); a callback
    /// without it is then refused. An `iss` that is present is always checked.
    pub requires_iss: bool,
}

impl ProviderConfig {
    /// The dialect the provider speaks.
    pub fn dialect(&self) -> &'static dyn Dialect {
        self.dialect.get()
    }

    /// The required scopes `tokens` was not granted, in their configured order. A token answer
    /// without `scope` grants what was asked for (RFC 6749 §5.1).
    pub fn scopes_not_granted(&self, tokens: &TokenSet) -> Vec<String> {
        let Some(granted) = tokens.scope.as_deref() else {
            return Vec::new();
        };
        let granted: Vec<&str> = granted.split_whitespace().collect();
        self.required_scopes
            .iter()
            .filter(|s| !granted.contains(&s.as_str()))
            .cloned()
            .collect()
    }
}

/// Requested scopes a grant is not held to unless `required_scopes` names them: OpenID
/// Connect's, which providers answer under other names (Google answers `email` as
/// `https://www.googleapis.com/auth/userinfo.email`) or not at all (`offline_access`).
pub const UNCHECKED_BY_DEFAULT: [&str; 4] = ["openid", "email", "profile", "offline_access"];

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
    /// Default: the provider's own dialect (`standard` for a plain OAuth 2.0 server).
    #[serde(default)]
    dialect: Option<DialectName>,
    issuer: String,
    authorize_url: Url,
    token_url: Url,
    revoke_url: Url,
    resource_url: Url,
    client_id: String,
    /// The name of the environment variable holding the client secret (never the secret itself).
    client_secret_env: String,
    /// Default: the dialect's documented method (`client_secret_basic` for `standard`).
    #[serde(default)]
    token_endpoint_auth_method: Option<ClientAuth>,
    scopes: Vec<String>,
    /// Default: `scopes` but [`UNCHECKED_BY_DEFAULT`].
    #[serde(default)]
    required_scopes: Option<Vec<String>>,
    redirect_uri: Url,
    /// Default: whether the dialect's provider sends `iss` (`true` for `standard`).
    #[serde(default)]
    requires_iss: Option<bool>,
}

impl ProvidersConfig {
    /// Parses the providers file: `{"gmail": {...}, ...}`, client secrets read from the variables
    /// the file names. What an entry leaves out comes from its dialect.
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
            let dialect = e.dialect.unwrap_or(DialectName::of(provider));
            providers.insert(
                provider,
                ProviderConfig {
                    dialect,
                    issuer: e.issuer,
                    authorize_url: e.authorize_url,
                    token_url: e.token_url,
                    revoke_url: e.revoke_url,
                    resource_url: e.resource_url,
                    client_id: e.client_id,
                    client_secret: SecretString::from(secret),
                    client_auth: e
                        .token_endpoint_auth_method
                        .unwrap_or(dialect.get().client_auth()),
                    required_scopes: e.required_scopes.unwrap_or_else(|| {
                        e.scopes
                            .iter()
                            .filter(|s| !UNCHECKED_BY_DEFAULT.contains(&s.as_str()))
                            .cloned()
                            .collect()
                    }),
                    scopes: e.scopes,
                    redirect_uri: e.redirect_uri,
                    requires_iss: e.requires_iss.unwrap_or(dialect.get().sends_iss()),
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
    /// The resource refused the access token (401, or the dialect's way of saying it): expired
    /// early, or revoked at the provider by someone else.
    #[error("the provider refused the access token")]
    TokenRefused,
    /// The provider answered with another error.
    #[error("the provider answered {status} {error}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The OAuth `error` code, when the body had one.
        error: String,
    },
    /// The provider answered, but not in the shape its dialect documents: a protocol error
    /// (or a provider that changed its API), not an outage.
    #[error("the provider's answer broke its protocol: {0}")]
    Protocol(String),
    /// The provider could not be reached in time, or answered with a server error.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The resource refused this grant access to what Harbor reads (403, or Slack's
    /// `missing_scope`): the grant is good, but not for this — a scope taken back, a company's
    /// access lost. A retry will not help; a reconnect granting the access will.
    #[error("the provider refused the grant access to the documents")]
    AccessDenied,
    /// The provider limited Harbor's calls (429, or Slack's `ratelimited`): an outage with an
    /// end, which it names when it sends `Retry-After` in seconds.
    #[error("the provider limited Harbor's calls")]
    RateLimited {
        /// How long the provider asked Harbor to wait, when it said.
        retry_after: Option<std::time::Duration>,
    },
}

/// The wait for a provider's limit that named no delay (seconds).
pub const LIMIT_DEFAULT_SECONDS: u64 = 60;
/// The longest provider delay taken at its word (seconds): a longer one is a provider's mistake,
/// or a limit the operator must look at.
pub const LIMIT_MAX_SECONDS: u64 = 3600;

impl ProviderError {
    /// For a rate limit, how long to leave the provider alone: its own delay within an hour, else
    /// the wait a limit of the common per-minute kind ends within. What a client is told
    /// (`Retry-After`) and what holds the outbox back. `None` for any other error.
    pub fn limit_ends_in(&self) -> Option<std::time::Duration> {
        let ProviderError::RateLimited { retry_after } = self else {
            return None;
        };
        let seconds = retry_after
            .map(|d| d.as_secs().clamp(1, LIMIT_MAX_SECONDS))
            .unwrap_or(LIMIT_DEFAULT_SECONDS);
        Some(std::time::Duration::from_secs(seconds))
    }
}

/// Which of a grant's tokens a value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// An access token.
    Access,
    /// A refresh token.
    Refresh,
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
    /// Lifetime of the refresh token, in seconds, read like `expires_in`: Intuit sends it as
    /// `x_refresh_token_expires_in` with every token answer; a dialect whose provider documents a
    /// fixed lifetime and sends none (Box: 60 days) fills it in (`token_request`).
    #[serde(
        default,
        rename = "x_refresh_token_expires_in",
        deserialize_with = "lenient_seconds"
    )]
    pub refresh_expires_in: Option<i64>,
    /// The same in the spelling other providers use (`refresh_token_expires_in`: Google's for a
    /// time-limited grant), read when Intuit's is absent. A field of its own, not an alias: an
    /// answer carrying both would otherwise fail to parse, and a grant just issued be lost.
    #[serde(
        default,
        rename = "refresh_token_expires_in",
        deserialize_with = "lenient_seconds"
    )]
    refresh_token_expires_in: Option<i64>,
    /// The granted scopes, space-separated.
    #[serde(default)]
    pub scope: Option<String>,
    /// The provider account the grant is for, when the provider names one: QuickBooks's
    /// `realmId` beside the code, Google's `sub` in the ID token (`Dialect::account_of_answer`).
    /// Set by the callback, never read from the token answer as such.
    #[serde(skip)]
    pub account: Option<String>,
    /// The OpenID Connect ID token an `openid` scope brings (Google's): read only for the account
    /// it names, then dropped with the answer. Anything but a string is no ID token (the grant
    /// is not lost over a field Harbor barely reads).
    #[serde(default, deserialize_with = "lenient_secret")]
    pub(crate) id_token: Option<SecretString>,
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

    /// The refresh token's lifetime the answer gives, in either spelling.
    fn refresh_lifetime(&self) -> Option<i64> {
        self.refresh_expires_in.or(self.refresh_token_expires_in)
    }

    /// When the grant this answer carries ends unless it is refreshed before. With a refresh
    /// token: that token's expiry, its lifetime clamped to at most ten years — and unknown
    /// (`None`) when the answer gives none, or one of zero or less, which no provider means (the
    /// grant then lasts until the provider refuses a refresh; a wrong expiry would end a live
    /// one). Without one: the access token's own expiry, since nothing can renew it (`None`
    /// when that does not expire: Slack without token rotation).
    pub fn grant_ends_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.refresh_token.is_none() {
            return self.expires_at(now);
        }
        let seconds = self
            .refresh_lifetime()
            .filter(|s| *s > 0)?
            .min(MAX_REFRESH_TOKEN_LIFETIME_SECONDS);
        now.checked_add_signed(chrono::Duration::try_seconds(seconds)?)
    }
}

/// The longest refresh-token lifetime taken at its word: ten years (Intuit's longest is five).
pub const MAX_REFRESH_TOKEN_LIFETIME_SECONDS: i64 = 10 * 366 * 24 * 3600;

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

/// An optional secret string; any other JSON value is `None`.
fn lenient_secret<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SecretString>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(SecretString::from(s)),
        _ => None,
    })
}

/// A number of seconds as an `i64`, saturating (`as` saturates float-to-int casts).
fn saturating_seconds(seconds: f64) -> i64 {
    seconds as i64
}

/// A document as the provider's resource API lists it, whatever its dialect calls it (an
/// attachable, a thread, a channel, a file).
#[derive(Clone, Debug, Deserialize)]
pub struct RemoteDocument {
    /// The provider's id for it.
    pub id: String,
    /// Its title.
    pub title: String,
}

/// The most pages one sync reads; what lies beyond is not read (the sync answers
/// `complete: false`), and a provider that keeps answering "there is more" is not followed for
/// ever.
pub const MAX_PAGES: usize = 50;
/// The most bytes of answers one sync reads across its pages (each page is also capped).
pub const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;

/// What a listing read.
#[derive(Debug, Default)]
pub struct Listing {
    /// The documents, in the provider's order.
    pub documents: Vec<RemoteDocument>,
    /// Whether every page was read (false when the page or byte budget ran out first).
    pub complete: bool,
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
        ];
        if !crate::flaws::active(crate::flaws::Flaw::NoPkce) {
            form.push(("code_verifier", verifier.expose_secret()));
        }
        self.token_request(c, form).await
    }

    /// Exchanges a refresh token for new tokens.
    pub async fn refresh(
        &self,
        provider: Provider,
        refresh_token: &SecretString,
    ) -> Result<TokenSet, ProviderError> {
        let c = self.config(provider)?;
        let form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
        ];
        self.token_request(c, form).await
    }

    async fn token_request(
        &self,
        c: &ProviderConfig,
        mut form: Vec<(&str, &str)>,
    ) -> Result<TokenSet, ProviderError> {
        let request = dialect::authenticate(self.http.post(c.token_url.clone()), c, &mut form);
        let (status, body) = send(request.form(&form), MAX_TOKEN_RESPONSE_BYTES).await?;
        let mut tokens = c.dialect().token_answer(status, &body)?;
        if tokens.refresh_token.is_some() && tokens.refresh_lifetime().is_none() {
            tokens.refresh_expires_in = c
                .dialect()
                .refresh_token_lifetime()
                .map(|d| d.as_secs() as i64);
        }
        Ok(tokens)
    }

    /// Revokes a token at the provider, the way its dialect asks for it. A refresh token is
    /// preferred (revoking it ends the whole grant); where revocation takes only access tokens
    /// (Slack), it is first exchanged for a fresh one — a refresh the provider refuses means the
    /// grant is already over.
    pub async fn revoke(
        &self,
        provider: Provider,
        token: &SecretString,
        kind: TokenKind,
    ) -> Result<(), ProviderError> {
        let c = self.config(provider)?;
        if kind == TokenKind::Refresh && c.dialect().revocation_needs_access_token() {
            let fresh = match self.refresh(provider, token).await {
                Ok(fresh) => fresh,
                Err(ProviderError::InvalidGrant) => return Ok(()),
                Err(other) => return Err(other),
            };
            // The refresh spent the stored token (rotation): from here the fresh access token is
            // the only key to the grant.
            return self.revoke_fresh(provider, c, &fresh.access_token).await;
        }
        let answered = self.revocation(c, token).await;
        match answered {
            // A dead refresh token and an unreadable request get the same bare 400 from such a
            // provider: a refresh with the token tells them apart. Refused, the grant is already
            // over — counting that as not done would keep the intent retried for ever. Granted,
            // the token was alive and the refresh spent it: the fresh grant is revoked instead.
            Err(ProviderError::Rejected { status: 400, .. })
                if kind == TokenKind::Refresh && c.dialect().revocation_refusal_is_ambiguous() =>
            {
                let fresh = match self.refresh(provider, token).await {
                    Ok(fresh) => fresh,
                    Err(ProviderError::InvalidGrant) => return Ok(()),
                    Err(_) => return answered,
                };
                let key = fresh.refresh_token.as_ref().unwrap_or(&fresh.access_token);
                self.revoke_fresh(provider, c, key).await
            }
            other => other,
        }
    }

    /// Revokes the fresh grant a revocation had to make first (Slack's `auth.revoke`, QuickBooks's
    /// ambiguous 400): the refresh spent the stored token, so `key` is the grant's only one and is
    /// tried three times at once — once only when the provider limits the calls, since the next
    /// two would be refused too. If it stays live, the intent's next attempt will find the stored
    /// token spent and count the revocation as done — the known limit, said as an error so that a
    /// grant left live at the provider is never silent.
    async fn revoke_fresh(
        &self,
        provider: Provider,
        c: &ProviderConfig,
        key: &SecretString,
    ) -> Result<(), ProviderError> {
        let mut last = Ok(());
        for _ in 0..3 {
            last = self.revocation(c, key).await;
            if matches!(last, Ok(()) | Err(ProviderError::RateLimited { .. })) {
                break;
            }
        }
        last.inspect_err(|error| {
            tracing::error!(
                provider = provider.as_str(),
                %error,
                "a revocation spent the stored refresh token and could not revoke the fresh grant: it may stay live at the provider, and the next attempt will count the revocation as done"
            )
        })
    }

    /// One revocation request, the dialect's way, and its answer.
    async fn revocation(
        &self,
        c: &ProviderConfig,
        token: &SecretString,
    ) -> Result<(), ProviderError> {
        let request = c.dialect().revocation(&self.http, c, token);
        let (status, body) = send(request, MAX_TOKEN_RESPONSE_BYTES).await?;
        c.dialect().revocation_answer(status, &body)
    }

    /// Lists the documents the access token can read, page after page. `account` is the
    /// provider account the connection was authorized for, when its dialect names one (a
    /// QuickBooks company's `realmId`).
    pub async fn fetch_documents(
        &self,
        provider: Provider,
        access_token: &SecretString,
        account: Option<&str>,
    ) -> Result<Listing, ProviderError> {
        let c = self.config(provider)?;
        let dialect = c.dialect();
        let mut documents = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        let mut bytes = 0;
        for _ in 0..MAX_PAGES {
            if bytes >= MAX_LISTING_BYTES {
                break;
            }
            let request = dialect.documents_request(
                &self.http,
                c,
                access_token,
                account,
                cursor.as_deref(),
            )?;
            let (status, body) = send(request, MAX_RESOURCE_RESPONSE_BYTES).await?;
            bytes += body.len();
            if status == reqwest::StatusCode::UNAUTHORIZED {
                return Err(ProviderError::TokenRefused);
            }
            if status == reqwest::StatusCode::FORBIDDEN {
                return Err(dialect.forbidden(&body));
            }
            // (A 429 never gets here: `send` answers it as a rate limit.)
            if status.is_server_error() {
                return Err(ProviderError::Unavailable(format!(
                    "status {}",
                    status.as_u16()
                )));
            }
            if !status.is_success() {
                return Err(ProviderError::Rejected {
                    status: status.as_u16(),
                    error: String::new(),
                });
            }
            let page = dialect.documents_answer(cursor.as_deref(), &body)?;
            documents.extend(page.documents);
            match page.next {
                None => {
                    return Ok(Listing {
                        documents,
                        complete: true,
                    })
                }
                Some(next) if !seen.insert(next.clone()) => {
                    return Err(ProviderError::Protocol(
                        "a page cursor came back a second time".into(),
                    ))
                }
                Some(next) => cursor = Some(next),
            }
        }
        Ok(Listing {
            documents,
            complete: false,
        })
    }
}

/// Sends a request and reads its answer within the cap.
async fn send(
    request: reqwest::RequestBuilder,
    cap: usize,
) -> Result<(reqwest::StatusCode, Vec<u8>), ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|e| ProviderError::Unavailable(describe(&e)))?;
    let status = response.status();
    // A 429 is the same answer whichever endpoint gives it, and only its header says when to
    // come back (RFC 6585 §4; the delay in seconds — a date is not read).
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        return Err(ProviderError::RateLimited { retry_after });
    }
    let body = read_capped(response, cap).await?;
    Ok((status, body))
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
    fn a_rate_limited_token_or_revocation_endpoint_is_an_outage_not_a_refusal() {
        use reqwest::StatusCode;
        let limited = dialect::oauth_error(StatusCode::TOO_MANY_REQUESTS, "");
        assert!(matches!(limited, Err(ProviderError::Unavailable(_))));
        let refused = dialect::oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(matches!(
            refused,
            Err(ProviderError::Rejected { status: 400, .. })
        ));
        let revocation = dialect::status_only(StatusCode::TOO_MANY_REQUESTS);
        assert!(matches!(revocation, Err(ProviderError::Unavailable(_))));
        // Slack says it in a 200.
        let slack = DialectName::Slack.get();
        let limited = br#"{"ok":false,"error":"ratelimited"}"#;
        assert!(matches!(
            slack.token_answer(StatusCode::OK, limited),
            Err(ProviderError::RateLimited { retry_after: None })
        ));
        assert!(matches!(
            slack.revocation_answer(StatusCode::OK, limited),
            Err(ProviderError::RateLimited { retry_after: None })
        ));
    }

    /// Box's marker paging: an empty page with a marker is not the end, a null or empty marker
    /// (or none) is, and a marker past any Box sends is refused rather than sent back.
    #[test]
    fn box_pages_follow_their_marker_to_its_end() {
        let dialect = DialectName::Box.get();
        let page = |entries: &str, marker: &str| {
            dialect
                .documents_answer(
                    None,
                    format!(r#"{{"entries":[{entries}],"limit":1000{marker}}}"#).as_bytes(),
                )
                .map(|p| (p.documents.len(), p.next))
        };
        let one = r#"{"type":"file","id":"1","name":"a"}"#;
        let m = "eyJ0eXBlIjoiaWQiLCJ0YWlsIjoiMiJ9";
        let next = format!(r#","next_marker":"{m}""#);
        assert_eq!(page("", &next).unwrap(), (0, Some(m.to_owned())));
        assert_eq!(page(one, &next).unwrap(), (1, Some(m.to_owned())));
        assert_eq!(page(one, r#","next_marker":null"#).unwrap(), (1, None));
        assert_eq!(page(one, r#","next_marker":"""#).unwrap(), (1, None));
        assert_eq!(page(one, "").unwrap(), (1, None));
        let long = format!(r#","next_marker":"{}""#, "m".repeat(8 * 1024 + 1));
        assert!(matches!(page(one, &long), Err(ProviderError::Protocol(_))));
    }

    #[test]
    fn a_grant_is_held_to_the_scopes_asked_for_but_openid_connects() {
        // Any variable that is set will do for the secret here; its value is not read.
        let entry = |extra: &str| {
            format!(
                r#"{{"gmail": {{"issuer": "https://accounts.google.com",
                  "authorize_url": "https://a.test/auth", "token_url": "https://a.test/token",
                  "revoke_url": "https://a.test/revoke", "resource_url": "https://a.test",
                  "client_id": "c", "client_secret_env": "PATH",
                  "scopes": ["openid", "email", "https://www.googleapis.com/auth/gmail.readonly"],
                  "redirect_uri": "https://h.test/cb"{extra}}}}}"#
            )
        };
        let config = ProvidersConfig::from_json(&entry(""), Duration::from_secs(1)).unwrap();
        let gmail = &config.providers[&Provider::Gmail];
        let gmail_read = "https://www.googleapis.com/auth/gmail.readonly";
        assert_eq!(gmail.required_scopes, [gmail_read]);
        let answer = |scope: &str| parse(&format!(r#"{{"access_token":"a","scope":"{scope}"}}"#));
        // Google answers `email` under its URL, and adds what the account granted before.
        let granted = answer(&format!(
            "openid https://www.googleapis.com/auth/userinfo.email {gmail_read} https://www.googleapis.com/auth/drive.file"
        ));
        assert!(gmail.scopes_not_granted(&granted).is_empty());
        let unticked = answer("openid https://www.googleapis.com/auth/userinfo.email");
        assert_eq!(gmail.scopes_not_granted(&unticked), [gmail_read]);
        assert!(
            gmail
                .scopes_not_granted(&parse(r#"{"access_token":"a"}"#))
                .is_empty(),
            "no scope in the answer: what was asked for"
        );
        let strict = ProvidersConfig::from_json(
            &entry(r#", "required_scopes": ["openid"]"#),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            strict.providers[&Provider::Gmail].scopes_not_granted(&answer(gmail_read)),
            ["openid"]
        );
    }

    #[test]
    fn a_grants_end_is_read_as_providers_send_it_and_clamped() {
        let now = Utc::now();
        let at = |body: &str| parse(body).grant_ends_at(now);
        let after = |s: i64| Some(now + chrono::Duration::seconds(s));
        let rt = |extra: &str| format!(r#"{{"access_token":"a","refresh_token":"r"{extra}}}"#);
        assert_eq!(
            at(&rt(r#","x_refresh_token_expires_in":8726400"#)),
            after(8_726_400)
        );
        assert_eq!(at(&rt(r#","refresh_token_expires_in":"60""#)), after(60));
        // Both spellings in one answer: Intuit's is read, and the answer still parses.
        assert_eq!(
            at(&rt(
                r#","x_refresh_token_expires_in":120,"refresh_token_expires_in":60"#
            )),
            after(120)
        );
        // No lifetime, one that is no number, or one of zero or less: unknown, never "over now".
        assert_eq!(at(&rt("")), None);
        assert_eq!(at(&rt(r#","x_refresh_token_expires_in":"soon""#)), None);
        assert_eq!(at(&rt(r#","x_refresh_token_expires_in":0"#)), None);
        assert_eq!(at(&rt(r#","x_refresh_token_expires_in":-5"#)), None);
        assert_eq!(
            at(&rt(r#","x_refresh_token_expires_in":9223372036854775807"#)),
            after(MAX_REFRESH_TOKEN_LIFETIME_SECONDS)
        );
        // Without a refresh token the grant ends with its access token, or never.
        assert_eq!(
            at(r#"{"access_token":"a","expires_in":3600,"x_refresh_token_expires_in":60}"#),
            after(3600)
        );
        assert_eq!(at(r#"{"access_token":"a"}"#), None);
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
