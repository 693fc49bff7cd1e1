//! [`FakeProvider`]: the one fake in Harbor — a real HTTP server that behaves like the OAuth
//! providers (QuickBooks Online, Gmail, Slack, Box), one path prefix per provider.
//!
//! - `GET /{p}/authorize` issues a single-use code bound to the client id, the redirect URI and the
//!   PKCE S256 challenge, and redirects to the redirect URI with `code`, `state` and `iss`.
//! - `POST /{p}/token` exchanges a code (checking client, redirect URI and verifier) or a refresh
//!   token; refresh tokens rotate, and a reused or revoked one gets `invalid_grant`.
//! - `POST /{p}/revoke` revokes an access or refresh token (RFC 7009).
//! - `GET /{p}/resource` lists documents for a valid, unexpired, unrevoked bearer token.
//!
//! Per provider, [`Switches`] inject errors and delays, and [`Counters`] count every call so tests
//! can assert "exactly one token exchange". Every code and token it issues starts with
//! [`CANARY_PREFIX`] and is remembered, so leak searches know exactly what to look for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use harbor_service::domain::Provider;
use harbor_service::providers::{ProviderConfig, ProvidersConfig};
use rand::RngCore;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use url::Url;

/// Every code and token the fake issues starts with this, so leak searches can find them.
pub const CANARY_PREFIX: &str = "hbcanary";

/// The redirect URI the harness registers for `provider` (the browser stand-in reads the code from
/// the redirect instead of following it, so it need not resolve).
pub fn redirect_uri(provider: Provider) -> String {
    format!("https://harbor.test/v1/oauth/{provider}/callback")
}

/// An error the token endpoint can be told to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// `400 {"error": "invalid_grant"}`.
    InvalidGrant,
    /// `500`.
    ServerError,
}

/// What the token endpoint sends as `expires_in` (a hostile or sloppy provider).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiresIn {
    /// The access token's real lifetime, in seconds (`access_token_ttl`).
    #[default]
    Honest,
    /// `i64::MAX` seconds: more than any calendar holds.
    Huge,
    /// `-3600`.
    Negative,
    /// `0`.
    Zero,
    /// `"soon"`: not a number at all.
    NonNumeric,
    /// No `expires_in` field.
    Missing,
}

/// Behaviour switches of one provider.
#[derive(Clone, Debug)]
pub struct Switches {
    /// Answer every token request (exchange and refresh) with this error.
    pub token_fault: Option<Fault>,
    /// Answer revocation requests with 500.
    pub revoke_fails: bool,
    /// Delay every token response by this much (a slow provider).
    pub token_delay: Duration,
    /// Issue a new refresh token on refresh (rotation); when off, the response has none.
    pub rotate_refresh_tokens: bool,
    /// Lifetime of issued access tokens, in seconds.
    pub access_token_ttl: i64,
    /// A refresh invalidates the access tokens issued earlier to the same grant (as providers
    /// that rotate do), so a client that keeps using an old one is caught.
    pub revoke_access_on_refresh: bool,
    /// What the token endpoint says in `expires_in`.
    pub expires_in: ExpiresIn,
    /// The resource lists its documents in reverse order (providers promise no order).
    pub reverse_documents: bool,
}

impl Default for Switches {
    fn default() -> Self {
        Self {
            token_fault: None,
            revoke_fails: false,
            token_delay: Duration::ZERO,
            rotate_refresh_tokens: true,
            access_token_ttl: 3600,
            revoke_access_on_refresh: true,
            expires_in: ExpiresIn::Honest,
            reverse_documents: false,
        }
    }
}

/// Calls one provider received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// `/authorize` requests.
    pub authorize: u64,
    /// Token requests with `grant_type=authorization_code`.
    pub code_exchanges: u64,
    /// Code exchanges that issued tokens.
    pub code_exchanges_ok: u64,
    /// Token requests with `grant_type=refresh_token`.
    pub refreshes: u64,
    /// Refreshes that issued tokens.
    pub refreshes_ok: u64,
    /// Refreshes refused with `invalid_grant`.
    pub refreshes_invalid_grant: u64,
    /// `/revoke` requests.
    pub revocations: u64,
    /// `/resource` requests.
    pub resource_reads: u64,
    /// `/resource` requests refused for a bad token.
    pub resource_unauthorized: u64,
}

impl Counters {
    /// The counters' names (`code_exchanges`, …), from the struct itself: scenario files can name
    /// exactly these.
    pub fn names() -> Vec<String> {
        match serde_json::to_value(Counters::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The counter named `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        serde_json::to_value(self).ok()?.get(name)?.as_u64()
    }
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
    used: bool,
}

struct AccessGrant {
    provider: Provider,
    expires: Instant,
    revoked: bool,
    /// The grant (authorization) it belongs to.
    family: u64,
}

#[derive(Default)]
struct ProviderState {
    switches: Switches,
    counters: Counters,
}

#[derive(Default)]
struct Inner {
    providers: HashMap<Provider, ProviderState>,
    codes: HashMap<String, (Provider, CodeGrant)>,
    access: HashMap<String, AccessGrant>,
    /// Refresh token → (provider, still usable, grant).
    refresh: HashMap<String, (Provider, bool, u64)>,
    families: u64,
    issued: Vec<String>,
    base_url: String,
}

type Shared = Arc<Mutex<Inner>>;

/// The running fake provider.
pub struct FakeProvider {
    base_url: String,
    inner: Shared,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FakeProvider {
    /// Starts the fake on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let inner: Shared = Arc::new(Mutex::new(Inner { base_url: base_url.clone(), ..Inner::default() }));
        let app = Router::new()
            .route("/{provider}/authorize", get(authorize))
            .route("/{provider}/token", post(token))
            .route("/{provider}/revoke", post(revoke))
            .route("/{provider}/resource", get(resource))
            .with_state(inner.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self { base_url, inner, shutdown: Some(tx) })
    }

    /// The base URL, such as `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The issuer identifier of `provider`.
    pub fn issuer(&self, provider: Provider) -> String {
        format!("{}/{provider}", self.base_url)
    }

    /// The client id the service is registered with at `provider`.
    pub fn client_id(provider: Provider) -> String {
        format!("harbor-{provider}")
    }

    fn client_secret(provider: Provider) -> String {
        format!("fake-secret-{provider}")
    }

    /// A providers configuration that points all four providers at this fake.
    pub fn providers_config(&self, timeout: Duration) -> ProvidersConfig {
        let providers = Provider::ALL
            .into_iter()
            .map(|p| {
                let url = |leaf: &str| Url::parse(&format!("{}/{p}/{leaf}", self.base_url)).expect("a valid URL");
                let config = ProviderConfig {
                    issuer: self.issuer(p),
                    authorize_url: url("authorize"),
                    token_url: url("token"),
                    revoke_url: url("revoke"),
                    resource_url: url("resource"),
                    client_id: Self::client_id(p),
                    client_secret: SecretString::from(Self::client_secret(p)),
                    scopes: vec![format!("{p}.read"), "offline_access".to_owned()],
                    redirect_uri: Url::parse(&redirect_uri(p)).expect("a valid URL"),
                    requires_iss: true,
                };
                (p, config)
            })
            .collect();
        ProvidersConfig { providers, timeout }
    }

    /// Changes `provider`'s switches.
    pub fn configure(&self, provider: Provider, change: impl FnOnce(&mut Switches)) {
        let mut inner = self.inner.lock().expect("fake provider state");
        change(&mut inner.providers.entry(provider).or_default().switches);
    }

    /// The calls `provider` has received so far.
    pub fn counters(&self, provider: Provider) -> Counters {
        let inner = self.inner.lock().expect("fake provider state");
        inner.providers.get(&provider).map(|p| p.counters).unwrap_or_default()
    }

    /// Every code and token issued so far (the canaries a leak search looks for).
    pub fn issued(&self) -> Vec<String> {
        self.inner.lock().expect("fake provider state").issued.clone()
    }

    /// Whether `token` is a live access token or usable refresh token.
    pub fn is_live(&self, token: &str) -> bool {
        let inner = self.inner.lock().expect("fake provider state");
        inner.access.get(token).is_some_and(|a| !a.revoked && a.expires > Instant::now())
            || inner.refresh.get(token).is_some_and(|r| r.1)
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Plays the user's browser: opens `authorization_url` and returns the redirect it answers
/// with (the code, state and issuer the provider sends back), without following it.
pub async fn consent(http: &reqwest::Client, authorization_url: &str) -> Result<Consent, String> {
    let response = http.get(authorization_url).send().await.map_err(|e| format!("authorize: {e}"))?;
    if response.status() != StatusCode::FOUND {
        return Err(format!("authorize answered {} instead of a redirect", response.status()));
    }
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("authorize redirect has no Location")?;
    let url = Url::parse(location).map_err(|e| format!("redirect: {e}"))?;
    let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    if let Some(error) = param("error") {
        return Err(format!("the provider refused the authorization: {error}"));
    }
    Ok(Consent {
        redirect: url.clone(),
        code: param("code").ok_or("redirect has no code")?,
        state: param("state").ok_or("redirect has no state")?,
        iss: param("iss"),
    })
}

/// What the provider sent back through the user's browser.
#[derive(Clone, Debug)]
pub struct Consent {
    /// The full redirect URL.
    pub redirect: Url,
    /// The authorization code.
    pub code: String,
    /// The state, echoed.
    pub state: String,
    /// The issuer (RFC 9207).
    pub iss: Option<String>,
}

impl Consent {
    /// The query string of the provider's answer when the user declines (`state`,
    /// `error=access_denied`, `iss`).
    pub fn denied_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("state", &self.state).append_pair("error", "access_denied");
        if let Some(iss) = &self.iss {
            q.append_pair("iss", iss);
        }
        q.finish()
    }

    /// The query string for the service's callback (`state`, `code`, `iss`).
    pub fn callback_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("state", &self.state).append_pair("code", &self.code);
        if let Some(iss) = &self.iss {
            q.append_pair("iss", iss);
        }
        q.finish()
    }
}

fn mint(inner: &mut Inner, provider: Provider, kind: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let value = format!("{CANARY_PREFIX}-{provider}-{kind}-{}", hex::encode(bytes));
    inner.issued.push(value.clone());
    value
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

// The error is the handler's finished response; boxing it would only add noise.
#[allow(clippy::result_large_err)]
fn parse_provider(raw: &str) -> Result<Provider, Response> {
    Provider::parse(raw).map_err(|_| StatusCode::NOT_FOUND.into_response())
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

async fn authorize(State(inner): State<Shared>, Path(p): Path<String>, Query(q): Query<AuthorizeQuery>) -> Response {
    let provider = match parse_provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut guard = inner.lock().expect("fake provider state");
    guard.providers.entry(provider).or_default().counters.authorize += 1;
    // Errors about the client or redirect URI are shown to the user, never redirected (RFC 6749 §4.1.2.1).
    if q.client_id.as_deref() != Some(FakeProvider::client_id(provider).as_str()) {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    let Some(redirect) = q.redirect_uri.filter(|r| *r == redirect_uri(provider)) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not registered").into_response();
    };
    let location = Url::parse(&redirect).expect("registered redirect URIs are valid");
    let refuse = |mut location: Url, error: &str, state: Option<&str>| {
        location.query_pairs_mut().append_pair("error", error);
        if let Some(s) = state {
            location.query_pairs_mut().append_pair("state", s);
        }
        (StatusCode::FOUND, [(header::LOCATION, location.to_string())]).into_response()
    };
    if q.response_type.as_deref() != Some("code") {
        return refuse(location, "unsupported_response_type", q.state.as_deref());
    }
    // PKCE is required, S256 only (RFC 9700 §2.1.1).
    let (Some(challenge), Some("S256")) = (q.code_challenge.clone(), q.code_challenge_method.as_deref()) else {
        return refuse(location, "invalid_request", q.state.as_deref());
    };
    let code = mint(&mut guard, provider, "code");
    guard.codes.insert(
        code.clone(),
        (
            provider,
            CodeGrant {
                client_id: FakeProvider::client_id(provider),
                redirect_uri: redirect,
                challenge,
                scope: q.scope.unwrap_or_default(),
                used: false,
            },
        ),
    );
    let issuer = format!("{}/{provider}", guard.base_url);
    drop(guard);
    let mut location = location;
    {
        let mut qp = location.query_pairs_mut();
        qp.append_pair("code", &code);
        if let Some(s) = &q.state {
            qp.append_pair("state", s);
        }
        qp.append_pair("iss", &issuer);
    }
    (StatusCode::FOUND, [(header::LOCATION, location.to_string())]).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

async fn token(State(inner): State<Shared>, Path(p): Path<String>, Form(form): Form<TokenForm>) -> Response {
    let provider = match parse_provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (delay, fault) = {
        let mut guard = inner.lock().expect("fake provider state");
        let state = guard.providers.entry(provider).or_default();
        match form.grant_type.as_str() {
            "authorization_code" => state.counters.code_exchanges += 1,
            "refresh_token" => state.counters.refreshes += 1,
            _ => {}
        }
        (state.switches.token_delay, state.switches.token_fault)
    };
    if !delay.is_zero() {
        // Simulated provider latency; never used to order steps.
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(Fault::ServerError) => return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        Some(Fault::InvalidGrant) => {
            let mut guard = inner.lock().expect("fake provider state");
            if form.grant_type == "refresh_token" {
                guard.providers.entry(provider).or_default().counters.refreshes_invalid_grant += 1;
            }
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
        }
        None => {}
    }
    if form.client_id.as_deref() != Some(FakeProvider::client_id(provider).as_str())
        || form.client_secret.as_deref() != Some(FakeProvider::client_secret(provider).as_str())
    {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let mut guard = inner.lock().expect("fake provider state");
    let ttl = guard.providers.entry(provider).or_default().switches.access_token_ttl;
    let rotate = guard.providers.entry(provider).or_default().switches.rotate_refresh_tokens;
    let revoke_old = guard.providers.entry(provider).or_default().switches.revoke_access_on_refresh;
    let expires_in = guard.providers.entry(provider).or_default().switches.expires_in;
    let (scope, issue_refresh, family) = match form.grant_type.as_str() {
        "authorization_code" => {
            let Some(code) = form.code else { return oauth_error(StatusCode::BAD_REQUEST, "invalid_request") };
            let Some((owner, grant)) = guard.codes.get_mut(&code) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            let verifier_ok = form.code_verifier.as_deref().is_some_and(|v| {
                URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())) == grant.challenge
            });
            if *owner != provider
                || grant.used
                || grant.client_id != FakeProvider::client_id(provider)
                || form.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str())
                || !verifier_ok
            {
                grant.used = true;
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            grant.used = true;
            guard.providers.entry(provider).or_default().counters.code_exchanges_ok += 1;
            let scope = guard.codes[&code].1.scope.clone();
            guard.families += 1;
            (scope, true, guard.families)
        }
        "refresh_token" => {
            let Some(rt) = form.refresh_token else { return oauth_error(StatusCode::BAD_REQUEST, "invalid_request") };
            let family = match guard.refresh.get_mut(&rt) {
                Some((owner, usable, family)) if *owner == provider && *usable => {
                    if rotate {
                        *usable = false;
                    }
                    *family
                }
                _ => {
                    guard.providers.entry(provider).or_default().counters.refreshes_invalid_grant += 1;
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
                }
            };
            guard.providers.entry(provider).or_default().counters.refreshes_ok += 1;
            if revoke_old {
                for a in guard.access.values_mut().filter(|a| a.family == family) {
                    a.revoked = true;
                }
            }
            (String::new(), rotate, family)
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    let access = mint(&mut guard, provider, "at");
    guard.access.insert(
        access.clone(),
        AccessGrant { provider, expires: Instant::now() + Duration::from_secs(ttl.max(0) as u64), revoked: false, family },
    );
    let mut body = json!({ "access_token": access, "token_type": "Bearer" });
    match expires_in {
        ExpiresIn::Honest => body["expires_in"] = json!(ttl),
        ExpiresIn::Huge => body["expires_in"] = json!(i64::MAX),
        ExpiresIn::Negative => body["expires_in"] = json!(-3600),
        ExpiresIn::Zero => body["expires_in"] = json!(0),
        ExpiresIn::NonNumeric => body["expires_in"] = json!("soon"),
        ExpiresIn::Missing => {}
    }
    if !scope.is_empty() {
        body["scope"] = json!(scope);
    }
    if issue_refresh {
        let refresh = mint(&mut guard, provider, "rt");
        guard.refresh.insert(refresh.clone(), (provider, true, family));
        body["refresh_token"] = json!(refresh);
    }
    Json(body).into_response()
}

#[derive(Deserialize)]
struct RevokeForm {
    token: String,
}

async fn revoke(State(inner): State<Shared>, Path(p): Path<String>, Form(form): Form<RevokeForm>) -> Response {
    let provider = match parse_provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut guard = inner.lock().expect("fake provider state");
    let state = guard.providers.entry(provider).or_default();
    state.counters.revocations += 1;
    if state.switches.revoke_fails {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    }
    if let Some(a) = guard.access.get_mut(&form.token) {
        a.revoked = true;
    }
    // Revoking a refresh token ends the whole grant (RFC 7009 §2.1).
    let family = guard.refresh.get(&form.token).map(|r| r.2);
    if let Some(family) = family {
        for r in guard.refresh.values_mut().filter(|r| r.2 == family) {
            r.1 = false;
        }
        for a in guard.access.values_mut().filter(|a| a.family == family) {
            a.revoked = true;
        }
    }
    StatusCode::OK.into_response()
}

async fn resource(State(inner): State<Shared>, Path(p): Path<String>, headers: HeaderMap) -> Response {
    let provider = match parse_provider(&p) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let mut guard = inner.lock().expect("fake provider state");
    let valid = token.as_ref().and_then(|t| guard.access.get(t)).is_some_and(|a| {
        a.provider == provider && !a.revoked && a.expires > Instant::now()
    });
    let state = guard.providers.entry(provider).or_default();
    state.counters.resource_reads += 1;
    if !valid {
        state.counters.resource_unauthorized += 1;
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_token");
    }
    let mut documents = vec![
        json!({ "id": format!("{provider}-doc-1"), "title": format!("{provider} quarterly report") }),
        json!({ "id": format!("{provider}-doc-2"), "title": format!("{provider} onboarding notes") }),
    ];
    if state.switches.reverse_documents {
        documents.reverse();
    }
    Json(json!({ "documents": documents })).into_response()
}
