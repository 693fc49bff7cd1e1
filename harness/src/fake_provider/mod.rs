//! [`FakeProvider`]: the one fake in Harbor — a real HTTP server that behaves like the OAuth
//! providers (QuickBooks Online, Gmail, Slack, Box), one path prefix per provider, each speaking
//! its provider's dialect strictly (`docs/PROVIDER-DIALECTS.md`; [`wire`] has the shapes).
//!
//! - `GET /{p}/authorize` issues a single-use code bound to the client id, the redirect URI and
//!   — at Gmail and Slack, the providers that document PKCE — the challenge when one is sent
//!   (S256 only; QuickBooks and Box ignore it, as a server ignores what it does not know), and
//!   redirects to the redirect URI with
//!   `code`, `state` (QuickBooks adds `realmId`, the company the grant is for: the account that
//!   consented; `iss` only when [`Switches::send_iss`]).
//!   Gmail's code carries a refresh token only when `access_type=offline` was asked for, and
//!   for an account with an earlier grant to the client only with `prompt=consent`; Slack's
//!   scopes are comma-separated (a space inside one is `invalid_scope`). A code lives as long as
//!   its provider lets it ([`Switches::code_lifetime`]: Box 30 seconds, the others ten minutes).
//! - `POST /{p}/token` authenticates the client the provider's way (QuickBooks: HTTP Basic only;
//!   Box: body only; Gmail and Slack: either, never both), then exchanges a code (checking client,
//!   redirect URI and verifier) or a refresh token; a code presented twice is refused and ends
//!   the grant its first exchange gave (RFC 6749 §4.1.2). The answer's `scope` is the provider's:
//!   Slack's comma-separated, Gmail's space-separated, none from QuickBooks or Box (their
//!   token answers carry no `scope`). Gmail's code exchange that asked for `openid` also carries
//!   an ID token naming the account that consented ([`Switches::signed_in_account`]). Whether refresh tokens rotate follows the
//!   provider; a reused or revoked one is refused in the provider's error shape (Slack: HTTP 200
//!   with `ok: false`).
//! - `POST /{p}/revoke` revokes a token as the provider takes it (QuickBooks: JSON + Basic;
//!   Gmail: `token=`; Slack: the token as bearer, `auth.revoke`; Box: form with credentials),
//!   ending its whole grant — at Google, every grant of the same account (one consent).
//! - The resource API, per provider: QuickBooks's query API, Gmail's threads, Slack's
//!   `conversations.list`, Box's folder items — each with its own paging and its own way of
//!   refusing a bad token. QuickBooks's token opens only its own company: a query under another
//!   grant's `realmId` is refused (403, `ApplicationAuthorizationFailed`).
//!
//! - Its clock is the world's: it starts at the host's and moves forward when the harness moves
//!   the service's ([`FakeProvider::advance_clock`]), so a code, an access token or a refresh
//!   token outlives its provider's lifetime at the provider too — Intuit's refresh tokens end
//!   101 days after they are issued, Box's 60 days ([`wire::refresh_token_lifetime`]), and a
//!   refresh past that is `invalid_grant`. A rewind moves only the service's clock (a clock gone
//!   wrong, not time going back), and the fake's stays.
//!
//! Per provider, [`Switches`] inject errors and delays, and [`Counters`] count every call so tests
//! can assert "exactly one token exchange". Every code and token it issues starts with
//! [`CANARY_PREFIX`] and is remembered, so leak searches know exactly what to look for.
//!
//! Longer than 500 lines on purpose: the switches, the counters and the control methods tests call
//! are one surface; the endpoints and the providers' wire shapes are split out.

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
use harbor_service::providers::{DialectName, ProviderConfig, ProvidersConfig};
use rand::RngCore;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use url::Url;

mod endpoints;
mod wire;
use endpoints::{authorize, revoke, token};

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

/// The `Retry-After` a rate-limited fake provider sends, in seconds.
pub const RATE_LIMIT_RETRY_AFTER: u64 = 7;

/// Behaviour switches of one provider.
#[derive(Clone, Debug)]
pub struct Switches {
    /// Answer every token request (exchange and refresh) with this error.
    pub token_fault: Option<Fault>,
    /// Answer revocation requests with 500.
    pub revoke_fails: bool,
    /// Delay every token response by this much (a slow provider).
    pub token_delay: Duration,
    /// Issue a new refresh token on refresh (rotation); when off, the response has none — and
    /// Slack, whose rotation is opt-in, then issues no refresh token at all: its access token
    /// never expires and its answer has no `expires_in`.
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
    /// The token endpoint does its work — the code is used, the refresh token rotated, the tokens
    /// issued and counted — and then the reply is lost: the client gets a 500.
    pub lose_token_reply: bool,
    /// The token endpoint pads its answer to over a mebibyte (a hostile or broken provider): the
    /// tokens are issued and counted, and a client must refuse the answer rather than read it all.
    pub oversized_token_reply: bool,
    /// The authorization response carries `iss` (RFC 9207): on for Google, whose discovery
    /// document publishes it; off for the three that do not document it.
    pub send_iss: bool,
    /// The most documents one resource page holds, whatever page size the client asks for.
    pub max_page_size: usize,
    /// The resource answers 200 with a body that is not in the provider's documented shape.
    pub malformed_resource: bool,
    /// Every token, revocation and resource request is answered 429 with `Retry-After`
    /// ([`RATE_LIMIT_RETRY_AFTER`]), as a provider that limits a client's calls does (Slack's Web
    /// API, Google's, Intuit's and Box's all say it so).
    pub rate_limited: bool,
    /// Documents listed after the usual two (`{p}-extra-001` …), so that a listing needs more
    /// than one page of the service's page size.
    pub extra_documents: usize,
    /// Box only: the folder holds this many items the caller cannot see, counted in its
    /// `total_count` but never listed, placed from the end of the first page at the largest size
    /// on: so a page holds fewer entries than its limit, or none, before the listing ends — as
    /// Box's offset paging warns (a client that moves on by the entries it got, or stops at an
    /// empty page, misses what follows).
    pub hidden_positions: usize,
    /// A code's token answer grants every scope asked for but the first: a user who unticked
    /// one at the consent screen (Google's granular consent). Only Gmail and Slack name the
    /// granted scopes in their answers.
    pub untick_first_scope: bool,
    /// A code's token answer carries an expiring access token and no refresh token, whatever was
    /// asked for: Google's answer to an account that consented to the client before, when the
    /// request did not say `prompt=consent` (an operator's authorization URL that dropped it).
    pub withhold_refresh_token: bool,
    /// How long an authorization code can be exchanged after it is issued: Box documents 30
    /// seconds and Slack ten minutes; Google and Intuit document none, and RFC 6749 §4.1.2's
    /// recommended maximum of ten minutes stands for them. An older code is `invalid_grant`.
    pub code_lifetime: Duration,
    /// The account the user's browser is signed in to at the provider (Google's `sub`, digits):
    /// every consent from now on is that account's. `None`: each consent is by an account of its
    /// own. At Google, an account's grants to one client are one consent — revoking any token of
    /// any of them ends them all ([`FakeProvider::same_consent`]); the other providers end only
    /// the grant the token belongs to. At QuickBooks the account is the company (`realmId`,
    /// digits): set, every consent is for that company, as a reconnect to the same one is.
    pub signed_in_account: Option<String>,
}

impl Switches {
    /// The provider as it behaves by default: its own refresh-token rotation and access-token
    /// lifetime (Google keeps the refresh token and lets earlier access tokens live to their
    /// expiry; Slack's rotating access tokens last 12 hours; the others rotate on every refresh
    /// and end the earlier access tokens).
    pub fn of(provider: Provider) -> Self {
        let (rotate, ttl) = match provider {
            Provider::Gmail => (false, 3599),
            Provider::Slack => (true, 43_200),
            Provider::Qbo | Provider::Box => (true, 3600),
        };
        Self {
            token_fault: None,
            revoke_fails: false,
            token_delay: Duration::ZERO,
            rotate_refresh_tokens: rotate,
            access_token_ttl: ttl,
            revoke_access_on_refresh: rotate,
            expires_in: ExpiresIn::Honest,
            reverse_documents: false,
            lose_token_reply: false,
            oversized_token_reply: false,
            // Google's discovery document publishes RFC 9207 support; the others do not.
            send_iss: provider == Provider::Gmail,
            // The most each API returns in one page (QuickBooks MAXRESULTS, Gmail maxResults,
            // Slack limit, Box limit).
            max_page_size: if provider == Provider::Gmail {
                500
            } else {
                1000
            },
            malformed_resource: false,
            rate_limited: false,
            extra_documents: 0,
            hidden_positions: 0,
            untick_first_scope: false,
            withhold_refresh_token: false,
            code_lifetime: if provider == Provider::Box {
                Duration::from_secs(30)
            } else {
                Duration::from_secs(600)
            },
            signed_in_account: None,
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
    /// Code exchanges refused because the code had been presented before (a code is good once,
    /// RFC 6749 §4.1.2): a client exchanging one code twice.
    pub code_reused: u64,
    /// Code exchanges refused because the code had outlived [`Switches::code_lifetime`].
    pub code_expired: u64,
    /// Token requests with `grant_type=refresh_token`.
    pub refreshes: u64,
    /// Refreshes that issued tokens.
    pub refreshes_ok: u64,
    /// Refreshes refused with `invalid_grant`.
    pub refreshes_invalid_grant: u64,
    /// `/revoke` requests.
    pub revocations: u64,
    /// Resource requests (one per page).
    pub resource_reads: u64,
    /// Resource requests refused for a bad token.
    pub resource_unauthorized: u64,
    /// Token and revocation requests refused because the client authenticated itself in a way
    /// the provider does not take (or not at all, or twice).
    pub client_auth_refused: u64,
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
    /// The PKCE S256 challenge, when the authorization request sent one.
    challenge: Option<String>,
    scope: String,
    /// Whether the exchange issues a refresh token (Gmail: only for `access_type=offline`).
    offline: bool,
    used: bool,
    /// When it can no longer be exchanged (its provider's lifetime when it was issued).
    expires: Instant,
    /// The account that consented (Google's `sub`).
    account: String,
}

struct AccessGrant {
    provider: Provider,
    expires: Instant,
    revoked: bool,
    /// The grant (authorization) it belongs to.
    family: u64,
}

struct RefreshGrant {
    provider: Provider,
    /// Not yet spent by a rotation nor ended by a revocation.
    usable: bool,
    /// The grant (authorization) it belongs to.
    family: u64,
    /// When the provider stops taking it, on the fake's clock and as a date on the fake's
    /// calendar (`None`: it lasts until it is spent or revoked).
    expires: Option<(Instant, chrono::DateTime<chrono::Utc>)>,
}

impl RefreshGrant {
    /// Where it stands at `now` (the fake's clock).
    fn standing(&self, now: Instant) -> GrantStanding {
        match self.expires {
            _ if !self.usable => GrantStanding::Ended,
            Some((end, on)) if end <= now => GrantStanding::Expired { on },
            _ => GrantStanding::Live,
        }
    }
}

/// Where a refresh token stands at the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantStanding {
    /// The provider takes it: a refresh would be granted.
    Live,
    /// It outlived its provider's lifetime: the grant ended by itself on that date, and nothing
    /// has revoked it since.
    Expired {
        /// When the provider stopped taking it.
        on: chrono::DateTime<chrono::Utc>,
    },
    /// Spent by a rotation, or ended by a revocation (or an attempt at one, once expired).
    Ended,
}

struct ProviderState {
    switches: Switches,
    counters: Counters,
}

#[derive(Default)]
struct Inner {
    providers: HashMap<Provider, ProviderState>,
    codes: HashMap<String, (Provider, CodeGrant)>,
    access: HashMap<String, AccessGrant>,
    refresh: HashMap<String, RefreshGrant>,
    /// How far the fake's clock is ahead of the host's: the sum of [`FakeProvider::advance_clock`].
    ahead: Duration,
    families: u64,
    /// The code each grant (family) began with: what [`FakeProvider::grant_counters`] is keyed by.
    family_code: HashMap<u64, String>,
    /// The calls each grant received, by the code that began it.
    by_grant: HashMap<String, Counters>,
    /// The account each grant (family) was consented by.
    family_account: HashMap<u64, (Provider, String)>,
    /// The grants each account consented to, in order (at Google one consent holds them all).
    account_families: HashMap<(Provider, String), Vec<u64>>,
    /// Every access and refresh token issued in each grant: ending a grant touches its own
    /// tokens. (A scan of every token ever issued made each revocation cost as much as the whole
    /// run before it, under the lock every endpoint takes: 2 % of the host's CPU after 12,000
    /// flows of the macro bench, and growing.)
    family_tokens: HashMap<u64, Vec<String>>,
    /// Accounts minted for consents no switch named.
    accounts: u64,
    issued: Vec<String>,
    base_url: String,
}

impl Inner {
    /// The fake's clock: the host's, moved forward as the harness moved the service's.
    fn now(&self) -> Instant {
        Instant::now() + self.ahead
    }

    /// The fake's calendar: the host's date, moved forward with the fake's clock (what a signed
    /// token's `iat` says, and the date a refresh token ends on).
    fn today(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + self.ahead
    }

    /// `provider`'s switches and counters, created with the provider's defaults.
    fn of(&mut self, provider: Provider) -> &mut ProviderState {
        self.providers
            .entry(provider)
            .or_insert_with(|| ProviderState {
                switches: Switches::of(provider),
                counters: Counters::default(),
            })
    }

    /// Counts a call `provider` received, and the same call for its grant when one is known
    /// (`grant`: the code that began it).
    fn count(&mut self, provider: Provider, grant: Option<&str>, bump: impl Fn(&mut Counters)) {
        bump(&mut self.of(provider).counters);
        if let Some(code) = grant {
            bump(self.by_grant.entry(code.to_owned()).or_default());
        }
    }

    /// The code that began the grant `token` (an access or refresh token of `provider`) belongs
    /// to.
    fn grant_of_token(&self, provider: Provider, token: &str) -> Option<String> {
        let family = match self.access.get(token) {
            Some(a) if a.provider == provider => Some(a.family),
            _ => self
                .refresh
                .get(token)
                .filter(|r| r.provider == provider)
                .map(|r| r.family),
        }?;
        self.family_code.get(&family).cloned()
    }

    /// The grants a revocation of a token of `family` ends: at Google, every grant of the same
    /// account (one consent per account and client); elsewhere the grant itself.
    fn consent_of(&self, family: u64) -> Vec<u64> {
        match self.family_account.get(&family) {
            Some(key @ (Provider::Gmail, _)) => self.account_families[key].clone(),
            _ => vec![family],
        }
    }

    /// Records a grant (family) `account` consented to at `provider`.
    fn begin_family(&mut self, family: u64, provider: Provider, account: String) {
        self.account_families
            .entry((provider, account.clone()))
            .or_default()
            .push(family);
        self.family_account.insert(family, (provider, account));
    }

    /// Remembers an access token issued in its grant.
    fn issue_access(&mut self, token: String, grant: AccessGrant) {
        self.add_to_family(grant.family, &token);
        self.access.insert(token, grant);
    }

    /// Remembers a refresh token issued in its grant.
    fn issue_refresh(&mut self, token: String, grant: RefreshGrant) {
        self.add_to_family(grant.family, &token);
        self.refresh.insert(token, grant);
    }

    fn add_to_family(&mut self, family: u64, token: &str) {
        self.family_tokens
            .entry(family)
            .or_default()
            .push(token.to_owned());
    }

    /// The tokens issued in `family`.
    fn tokens_of(&self, family: u64) -> &[String] {
        self.family_tokens.get(&family).map_or(&[], Vec::as_slice)
    }

    /// Whether Google's `account` has consented to the client and not revoked it since: a grant
    /// of the account with a token nothing has ended.
    fn consented(&self, account: &str) -> bool {
        let Some(families) = self
            .account_families
            .get(&(Provider::Gmail, account.to_owned()))
        else {
            return false;
        };
        families.iter().flat_map(|f| self.tokens_of(*f)).any(|t| {
            self.refresh.get(t).is_some_and(|r| r.usable)
                || self.access.get(t).is_some_and(|a| !a.revoked)
        })
    }

    /// Ends the grants `families`: every access and refresh token issued in them.
    fn end_families(&mut self, families: &[u64]) {
        for &family in families {
            self.revoke_access_in(family);
            let Self {
                family_tokens,
                refresh,
                ..
            } = self;
            for token in family_tokens.get(&family).into_iter().flatten() {
                if let Some(r) = refresh.get_mut(token) {
                    r.usable = false;
                }
            }
        }
    }

    /// Revokes every access token issued in `family`; its refresh tokens stay good.
    fn revoke_access_in(&mut self, family: u64) {
        let Self {
            family_tokens,
            access,
            ..
        } = self;
        for token in family_tokens.get(&family).into_iter().flatten() {
            if let Some(a) = access.get_mut(token) {
                a.revoked = true;
            }
        }
    }
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
        let inner: Shared = Arc::new(Mutex::new(Inner {
            base_url: base_url.clone(),
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/{provider}/authorize", get(authorize))
            .route("/{provider}/token", post(token))
            .route("/{provider}/revoke", post(revoke))
            .route("/qbo/v3/company/{realm}/query", get(wire::qbo_query))
            .route("/gmail/gmail/v1/users/me/threads", get(wire::gmail_threads))
            .route("/slack/conversations.list", get(wire::slack_conversations))
            .route("/box/2.0/folders/0/items", get(wire::box_items))
            .with_state(inner.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            base_url,
            inner,
            shutdown: Some(tx),
        })
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

    /// Holds characters that form-encoding changes (`:`, `+`, `/`, `%`, space), so a client that
    /// skips RFC 6749 §2.3.1's encoding before HTTP Basic is refused.
    pub fn client_secret(provider: Provider) -> String {
        format!("fake-secret-{provider}:+/ %")
    }

    /// A providers configuration that points all four providers at this fake.
    pub fn providers_config(&self, timeout: Duration) -> ProvidersConfig {
        self.providers_config_with(timeout, &self.base_url)
    }

    /// The same, with the back channel (token, revocation and resource endpoints — the calls the
    /// service makes itself) going through `proxy`; the browser still goes direct.
    pub fn providers_config_via(
        &self,
        timeout: Duration,
        proxy: std::net::SocketAddr,
    ) -> ProvidersConfig {
        self.providers_config_with(timeout, &format!("http://{proxy}"))
    }

    fn providers_config_with(&self, timeout: Duration, back_channel: &str) -> ProvidersConfig {
        let providers = Provider::ALL
            .into_iter()
            .map(|p| {
                let at = |base: &str, leaf: &str| {
                    Url::parse(&format!("{base}/{p}/{leaf}")).expect("a valid URL")
                };
                let url = |leaf: &str| at(back_channel, leaf);
                // Everything the dialect decides is left to it, as a providers file that names
                // only endpoints and credentials would.
                let dialect = DialectName::of(p);
                let config = ProviderConfig {
                    dialect,
                    issuer: self.issuer(p),
                    authorize_url: at(&self.base_url, "authorize"),
                    token_url: url("token"),
                    revoke_url: url("revoke"),
                    resource_url: Url::parse(&format!("{back_channel}/{p}")).expect("a valid URL"),
                    client_id: Self::client_id(p),
                    client_secret: SecretString::from(Self::client_secret(p)),
                    client_auth: dialect.get().client_auth(),
                    // Gmail's asks for `openid` too, as Google's should: the ID token names the
                    // account a grant is for, which Google's one consent per account needs.
                    scopes: match p {
                        Provider::Gmail => {
                            vec![
                                format!("{p}.read"),
                                "offline_access".to_owned(),
                                "openid".to_owned(),
                            ]
                        }
                        _ => vec![format!("{p}.read"), "offline_access".to_owned()],
                    },
                    required_scopes: vec![format!("{p}.read"), "offline_access".to_owned()],
                    redirect_uri: Url::parse(&redirect_uri(p)).expect("a valid URL"),
                    requires_iss: dialect.get().sends_iss(),
                };
                (p, config)
            })
            .collect();
        ProvidersConfig { providers, timeout }
    }

    /// Changes `provider`'s switches.
    pub fn configure(&self, provider: Provider, change: impl FnOnce(&mut Switches)) {
        let mut inner = self.inner.lock().expect("fake provider state");
        change(&mut inner.of(provider).switches);
    }

    /// The calls the grant that the authorization code `code` began has received so far: the
    /// code's exchanges, and the refreshes, revocations and resource reads made with the grant's
    /// tokens. Schedules explored at once, each on a grant of its own, read only their own.
    pub fn grant_counters(&self, code: &str) -> Counters {
        let inner = self.inner.lock().expect("fake provider state");
        inner.by_grant.get(code).copied().unwrap_or_default()
    }

    /// The calls `provider` has received so far.
    pub fn counters(&self, provider: Provider) -> Counters {
        let inner = self.inner.lock().expect("fake provider state");
        inner
            .providers
            .get(&provider)
            .map(|p| p.counters)
            .unwrap_or_default()
    }

    /// Ends every access token `provider` has issued before its expiry, as a provider that
    /// rotates its keys or shortens lifetimes does; the refresh tokens stay good.
    pub fn expire_access_tokens(&self, provider: Provider) {
        let mut inner = self.inner.lock().expect("fake provider state");
        for a in inner.access.values_mut().filter(|a| a.provider == provider) {
            a.revoked = true;
        }
    }

    /// Revokes every grant of `provider` at the provider, as a user who removes the app in the
    /// provider's own settings does: access and refresh tokens alike.
    pub fn revoke_grants(&self, provider: Provider) {
        let mut inner = self.inner.lock().expect("fake provider state");
        for a in inner.access.values_mut().filter(|a| a.provider == provider) {
            a.revoked = true;
        }
        for r in inner
            .refresh
            .values_mut()
            .filter(|r| r.provider == provider)
        {
            r.usable = false;
        }
    }

    /// Every code and token issued so far (the canaries a leak search looks for).
    pub fn issued(&self) -> Vec<String> {
        self.inner
            .lock()
            .expect("fake provider state")
            .issued
            .clone()
    }

    /// Moves the fake's clock forward: time passes at the provider as it did for the service.
    /// It moves at most a century ahead of the host's, where every lifetime here has long run out
    /// (so no sum of moves overflows the clock).
    pub fn advance_clock(&self, by: Duration) {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let mut inner = self.inner.lock().expect("fake provider state");
        inner.ahead = inner.ahead.saturating_add(by).min(CENTURY);
    }

    /// Every grant (provider, family) that still has a live refresh token.
    pub fn live_grants(&self) -> std::collections::BTreeSet<(Provider, u64)> {
        self.grants_where(|s| s == GrantStanding::Live)
    }

    /// Every grant (provider, family) that nothing has ended: a refresh token live, or expired
    /// and never revoked since. These are the grants someone must account for: held by a row, or
    /// given back.
    pub fn unended_grants(&self) -> std::collections::BTreeSet<(Provider, u64)> {
        self.grants_where(|s| s != GrantStanding::Ended)
    }

    fn grants_where(
        &self,
        keep: impl Fn(GrantStanding) -> bool,
    ) -> std::collections::BTreeSet<(Provider, u64)> {
        let inner = self.inner.lock().expect("fake provider state");
        let now = inner.now();
        inner
            .refresh
            .values()
            .filter(|r| keep(r.standing(now)))
            .map(|r| (r.provider, r.family))
            .collect()
    }

    /// The grants a revocation of any token of `family` ends with it (`family` included): at
    /// Google every grant of the same account, one consent; elsewhere `family` alone.
    pub fn same_consent(&self, family: u64) -> Vec<u64> {
        self.inner
            .lock()
            .expect("fake provider state")
            .consent_of(family)
    }

    /// The grant a refresh token the fake issued belongs to, and where it stands now.
    pub fn grant_of(&self, refresh_token: &str) -> Option<(u64, GrantStanding)> {
        let inner = self.inner.lock().expect("fake provider state");
        let now = inner.now();
        inner
            .refresh
            .get(refresh_token)
            .map(|r| (r.family, r.standing(now)))
    }

    /// Whether `token` is a live access token or usable refresh token.
    pub fn is_live(&self, token: &str) -> bool {
        let inner = self.inner.lock().expect("fake provider state");
        inner
            .access
            .get(token)
            .is_some_and(|a| !a.revoked && a.expires > inner.now())
            || inner
                .refresh
                .get(token)
                .is_some_and(|r| r.standing(inner.now()) == GrantStanding::Live)
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
    let response = http
        .get(authorization_url)
        .send()
        .await
        .map_err(|e| format!("authorize: {e}"))?;
    if response.status() != StatusCode::FOUND {
        return Err(format!(
            "authorize answered {} instead of a redirect",
            response.status()
        ));
    }
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("authorize redirect has no Location")?;
    let url = Url::parse(location).map_err(|e| format!("redirect: {e}"))?;
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = param("error") {
        return Err(format!("the provider refused the authorization: {error}"));
    }
    Ok(Consent {
        redirect: url.clone(),
        code: param("code").ok_or("redirect has no code")?,
        state: param("state").ok_or("redirect has no state")?,
        iss: param("iss"),
        realm_id: param("realmId"),
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
    /// The QuickBooks company the grant is for.
    pub realm_id: Option<String>,
}

impl Consent {
    /// The query string of the provider's answer when the user declines (`state`,
    /// `error=access_denied`, `iss`).
    pub fn denied_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("state", &self.state)
            .append_pair("error", "access_denied");
        if let Some(iss) = &self.iss {
            q.append_pair("iss", iss);
        }
        q.finish()
    }

    /// The query string for the service's callback (`state`, `code`, `iss`).
    pub fn callback_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("state", &self.state)
            .append_pair("code", &self.code);
        if let Some(realm) = &self.realm_id {
            q.append_pair("realmId", realm);
        }
        if let Some(iss) = &self.iss {
            q.append_pair("iss", iss);
        }
        q.finish()
    }
}
