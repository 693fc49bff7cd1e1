//! Interop with a real authorization server it was never written against: node-oidc-provider
//! (OpenID certified, `scripts/oidc-provider/`, pinned), configured strictly — HTTP Basic client
//! authentication only, PKCE S256 required, refresh tokens rotated on every use, RFC 7009
//! revocation, RFC 9207 `iss`. The service talks to it in the standard dialect, from nothing but
//! a providers-file entry (endpoints, client id, the secret's variable): every other setting is
//! the dialect's default. The full flow and the hostile callbacks run through the service.
//!
//! Needs Node.js and `npm ci` in `scripts/oidc-provider` (`cargo xtask test` does it); without
//! them the test fails and says how to install them.

use std::process::Stdio;
use std::time::Duration;

use harbor_harness::fake_provider::{redirect_uri, Consent};
use harbor_harness::fixtures::TenantWorkspace;
use harbor_harness::operation::paths;
use harbor_harness::target::started::{ProviderOverride, ServiceOptions};
use harbor_service::domain::Provider;
use harbor_service::lifecycle::ConnectionStatus;
use harbor_service::providers::{ClientAuth, DialectName, ProvidersConfig};
use reqwest::{header, Method, StatusCode};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{spawn_app_with, within, Reply, TestApp};

/// The provider slot the real authorization server is configured in.
const SLOT: Provider = Provider::Gmail;

/// The running authorization server; killed on drop.
struct RealServer {
    _child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
}

impl RealServer {
    async fn start(secret: &str) -> Self {
        let dir =
            harbor_layering::crate_dir(env!("CARGO_MANIFEST_DIR")).join("../scripts/oidc-provider");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "node-oidc-provider is not installed: run `npm ci --prefix scripts/oidc-provider` \
             (cargo xtask test does it; it needs Node.js 20 or later)"
        );
        let mut child = tokio::process::Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .env("HARBOR_INTEROP_CLIENT_SECRET", secret)
            .env("HARBOR_INTEROP_REDIRECT_URI", redirect_uri(SLOT))
            .stdout(Stdio::piped())
            // Its warnings and errors land in the test's captured output.
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts (is Node.js installed?)");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let base = within("node-oidc-provider to listen", async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .expect("its output")
                    .expect("it printed `listening`");
                if let Some(base) = line.strip_prefix("listening ") {
                    break base.to_owned();
                }
            }
        })
        .await;
        // Its output is read to the end: a closed pipe would kill it at its next line.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            _child: child,
            base,
            http,
        }
    }

    /// The providers-file entry a deployment would write for it: endpoints and credentials only.
    fn providers_file(&self, secret_env: &str) -> String {
        let b = &self.base;
        serde_json::json!({
            SLOT.as_str(): {
                "dialect": "standard",
                "issuer": b,
                "authorize_url": format!("{b}/auth"),
                "token_url": format!("{b}/token"),
                "revoke_url": format!("{b}/token/revocation"),
                "resource_url": format!("{b}/resource"),
                "client_id": "harbor",
                "client_secret_env": secret_env,
                "scopes": ["openid", "documents.read"],
                "redirect_uri": redirect_uri(SLOT),
            }
        })
        .to_string()
    }

    /// Plays the user's browser from the authorization URL to the redirect back to Harbor:
    /// follows the provider's redirects with its cookies, logs in and consents (or declines).
    async fn consent(&self, authorization_url: &str, decline: bool) -> Consent {
        let mut cookies: Vec<(String, String)> = Vec::new();
        let mut url = reqwest::Url::parse(authorization_url).unwrap();
        for _ in 0..12 {
            if decline && url.path().starts_with("/interaction/") {
                url.query_pairs_mut().append_pair("deny", "1");
            }
            let cookie = cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let mut request = self.http.get(url.clone());
            if !cookie.is_empty() {
                request = request.header(header::COOKIE, cookie);
            }
            let response = request.send().await.unwrap();
            for set in response.headers().get_all(header::SET_COOKIE) {
                let pair = set.to_str().unwrap().split(';').next().unwrap_or_default();
                if let Some((k, v)) = pair.split_once('=') {
                    cookies.retain(|(name, _)| name != k);
                    if !v.is_empty() {
                        cookies.push((k.to_owned(), v.to_owned()));
                    }
                }
            }
            assert!(
                response.status().is_redirection(),
                "{url}: {}",
                response.status()
            );
            let location = response.headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .to_owned();
            let next = url.join(&location).unwrap();
            if next.as_str().starts_with(&redirect_uri(SLOT)) {
                let param = |name: &str| {
                    next.query_pairs()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.into_owned())
                };
                return Consent {
                    redirect: next.clone(),
                    code: param("code").unwrap_or_default(),
                    state: param("state").expect("the state comes back"),
                    iss: param("iss"),
                    realm_id: None,
                };
            }
            url = next;
        }
        panic!("no redirect back to Harbor after 12 hops");
    }

    async fn live_refresh_tokens(&self) -> u64 {
        let body: serde_json::Value = self
            .http
            .get(format!("{}/admin/live", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["refresh_tokens"].as_u64().unwrap()
    }

    async fn refuse_next_read(&self) {
        self.http
            .post(format!("{}/admin/refuse-next", self.base))
            .send()
            .await
            .unwrap();
    }
}

async fn authorize(app: &TestApp, t: &TenantWorkspace) -> String {
    let r = app
        .call(
            Method::POST,
            format!(
                "/v1/workspaces/{}/connections/{SLOT}/authorize",
                t.workspace
            ),
        )
        .as_user(t.owner.0)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["authorization_url"].as_str().unwrap().to_owned()
}

async fn callback(app: &TestApp, t: &TenantWorkspace, query: &str) -> Reply {
    app.call(Method::GET, paths::callback(SLOT, query))
        .as_user(t.owner.0)
        .send()
        .await
}

async fn sync(app: &TestApp, t: &TenantWorkspace) -> Reply {
    app.call(
        Method::POST,
        format!("/v1/workspaces/{}/connections/{SLOT}/sync", t.workspace),
    )
    .as_user(t.member.0)
    .send()
    .await
}

#[tokio::test]
async fn the_service_speaks_standard_oauth_to_a_real_authorization_server() {
    let secret = format!("interop-{}", uuid::Uuid::new_v4());
    let server = RealServer::start(&secret).await;
    // The secret reaches the service the way production's does: a variable the file names.
    std::env::set_var("HARBOR_INTEROP_SECRET", &secret);
    let file = ProvidersConfig::from_json(
        &server.providers_file("HARBOR_INTEROP_SECRET"),
        Duration::from_secs(5),
    )
    .unwrap();
    let config = file.providers[&SLOT].clone();
    assert_eq!(
        (config.dialect, config.client_auth, config.requires_iss),
        (DialectName::Standard, ClientAuth::ClientSecretBasic, true),
        "the standard dialect's defaults: Basic, and iss required"
    );
    let app = spawn_app_with(ServiceOptions {
        provider_overrides: vec![(SLOT, ProviderOverride::Config(Box::new(config)))],
        ..ServiceOptions::default()
    })
    .await;
    let t = app
        .tenant("interop", true, ConnectionStatus::NotConnected)
        .await;

    // The user declines at the provider: not a provider failure, and nothing waits.
    let declined = server.consent(&authorize(&app, &t).await, true).await;
    callback(&app, &t, &declined.denied_query())
        .await
        .assert_error(StatusCode::FORBIDDEN, "CONSENT_DENIED");

    // Authorize, log in and consent, callback: PKCE, Basic client authentication, iss.
    let consent = server.consent(&authorize(&app, &t).await, false).await;
    assert_eq!(
        consent.iss.as_deref(),
        Some(server.base.as_str()),
        "RFC 9207 iss is sent"
    );
    let r = callback(&app, &t, &consent.callback_query()).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("CONNECTED")),
        "{}",
        r.body
    );
    // The same callback again: the state is spent.
    callback(&app, &t, &consent.callback_query())
        .await
        .assert_error(StatusCode::BAD_REQUEST, "OAUTH_STATE_INVALID");

    // Sync with the access token, then 58 minutes later with a refresh (rotated at the server).
    let r = sync(&app, &t).await;
    assert_eq!(
        (
            r.status,
            r.body["documents_synced"].as_u64(),
            r.body["refreshed"].as_bool()
        ),
        (StatusCode::OK, Some(2), Some(false)),
        "{}",
        r.body
    );
    app.advance_clock(Duration::from_secs(58 * 60)).await;
    let r = sync(&app, &t).await;
    assert_eq!(
        (r.status, r.body["refreshed"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{}",
        r.body
    );
    // The server revokes the access token on its own: one refresh, one more read.
    server.refuse_next_read().await;
    let r = sync(&app, &t).await;
    assert_eq!(
        (r.status, r.body["refreshed"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{}",
        r.body
    );
    assert_eq!(
        server.live_refresh_tokens().await,
        1,
        "rotation left exactly one refresh token live"
    );

    // Hostile callbacks on a new flow: an iss naming another server, then none at all.
    let disconnect = app
        .call(
            Method::POST,
            format!(
                "/v1/workspaces/{}/connections/{SLOT}/disconnect",
                t.workspace
            ),
        )
        .as_user(t.owner.0)
        .send()
        .await;
    assert_eq!(
        (
            disconnect.status,
            disconnect.body["provider_revocation"].as_str()
        ),
        (StatusCode::OK, Some("confirmed")),
        "{}",
        disconnect.body
    );
    assert_eq!(
        server.live_refresh_tokens().await,
        0,
        "RFC 7009 revocation ended the grant at the server"
    );
    for iss in [Some("https://attacker.example".to_owned()), None] {
        let consent = server.consent(&authorize(&app, &t).await, false).await;
        let forged = Consent { iss, ..consent };
        callback(&app, &t, &forged.callback_query())
            .await
            .assert_error(StatusCode::FORBIDDEN, "OAUTH_ISSUER_MISMATCH");
    }
    let status: String = sqlx::query_scalar(
        "SELECT status FROM connections WHERE workspace_id = $1 AND provider = $2",
    )
    .bind(t.workspace)
    .bind(SLOT.as_str())
    .fetch_one(app.db())
    .await
    .unwrap();
    assert_eq!(status, "DISCONNECTED", "the refused flows settled back");
    app.stop().await;
}
