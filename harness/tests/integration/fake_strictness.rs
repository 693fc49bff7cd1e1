//! The fake provider's refusals, each beside the request it accepts. The fake stands for four
//! real authorization servers; a check it drops would let a defect of Harbor's through
//! unnoticed, so every refusal its module documents (`harbor_harness::fake_provider`) fails a
//! test here when it is removed. The service always asks correctly, so these tests speak to the
//! fake directly: through the service's own client with one thing wrong, or by hand where that
//! client cannot be made to ask wrongly.
//!
//! Past 500 lines on purpose: every test of the fake on its own shares the one `Direct`
//! client, and split they would each carry a copy of it.

use harbor_harness::fake_provider::{self, Consent, FakeProvider};
use harbor_service::domain::Provider;
use harbor_service::providers::{ProviderClient, ProviderConfig, ProviderError, TokenSet};
use secrecy::{ExposeSecret, SecretString};

/// A fake provider, a client of it and the PKCE pair every authorization here sends.
struct Direct {
    fake: FakeProvider,
    client: ProviderClient,
    http: reqwest::Client,
    verifier: SecretString,
    challenge: String,
}

impl Direct {
    async fn start() -> Self {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        use sha2::{Digest, Sha256};
        let fake = FakeProvider::start().await.unwrap();
        let client = ProviderClient::new(fake.providers_config(std::time::Duration::from_secs(5)));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let verifier =
            SecretString::from("a-verifier-of-forty-three-characters-or-more-0123".to_owned());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose_secret().as_bytes()));
        Self {
            fake,
            client,
            http,
            verifier,
            challenge,
        }
    }

    fn config(&self, p: Provider) -> &ProviderConfig {
        self.client.config(p).unwrap()
    }

    /// The authorization URL Harbor sends a user to (offline, with the PKCE challenge), then
    /// `change` applied to its query: a pair named there is replaced, or dropped when its value
    /// is `None`; a new name is added.
    fn authorize_url(&self, p: Provider, change: &[(&str, Option<&str>)]) -> String {
        let c = self.config(p);
        let mut pairs: Vec<(String, String)> = [
            ("response_type", "code"),
            ("client_id", c.client_id.as_str()),
            ("redirect_uri", c.redirect_uri.as_str()),
            ("state", "s"),
            ("access_type", "offline"),
            ("code_challenge", self.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (name, value) in change {
            pairs.retain(|(k, _)| k != name);
            if let Some(v) = value {
                pairs.push(((*name).to_owned(), (*v).to_owned()));
            }
        }
        let mut url = c.authorize_url.clone();
        url.query_pairs_mut().extend_pairs(pairs);
        url.to_string()
    }

    /// A user's consent to the authorization URL with `change`.
    async fn consent(
        &self,
        p: Provider,
        change: &[(&str, Option<&str>)],
    ) -> Result<Consent, String> {
        fake_provider::consent(&self.http, &self.authorize_url(p, change)).await
    }

    /// Where the authorization endpoint sends the user for the authorization URL with `change`
    /// (the redirect's `Location`, error or code).
    async fn redirect(&self, p: Provider, change: &[(&str, Option<&str>)]) -> url::Url {
        let answer = self
            .http
            .get(self.authorize_url(p, change))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 302, "{p}: {change:?}");
        let location = answer.headers()[reqwest::header::LOCATION]
            .to_str()
            .unwrap();
        url::Url::parse(location).unwrap()
    }

    /// A code from a consent to Harbor's own authorization URL.
    async fn code(&self, p: Provider) -> SecretString {
        let consent = self
            .consent(p, &[])
            .await
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        SecretString::from(consent.code)
    }

    /// The code exchanged as Harbor exchanges it.
    async fn exchange(&self, p: Provider, code: &SecretString) -> Result<TokenSet, ProviderError> {
        let redirect = self.config(p).redirect_uri.to_string();
        self.client
            .exchange_code(p, code, &self.verifier, &redirect)
            .await
    }

    /// A client of the same fake with one thing of `p`'s configuration changed.
    fn client_with(&self, p: Provider, change: impl FnOnce(&mut ProviderConfig)) -> ProviderClient {
        let mut config = self
            .fake
            .providers_config(std::time::Duration::from_secs(5));
        change(config.providers.get_mut(&p).unwrap());
        ProviderClient::new(config)
    }

    /// A code exchange sent by hand, with `verifier` as the PKCE verifier or none, the client
    /// authenticated as its provider takes it (HTTP Basic at QuickBooks, the body elsewhere) or,
    /// with `both_ways`, in Basic and the body at once: the requests Harbor's client cannot be
    /// made to send.
    async fn exchange_by_hand(
        &self,
        p: Provider,
        code: &SecretString,
        verifier: Option<&str>,
        both_ways: bool,
    ) -> serde_json::Value {
        let c = self.config(p);
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.expose_secret().to_owned()),
            ("redirect_uri", c.redirect_uri.to_string()),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v.to_owned()));
        }
        let mut request = self.http.post(c.token_url.clone());
        if p == Provider::Qbo || both_ways {
            request = basic(request, c);
        }
        if p != Provider::Qbo || both_ways {
            form.push(("client_id", c.client_id.clone()));
            form.push(("client_secret", c.client_secret.expose_secret().to_owned()));
        }
        let response = request.form(&form).send().await.unwrap();
        response.json().await.unwrap()
    }
}

/// `request` with the client's credentials in HTTP Basic, each half form-encoded first (RFC 6749
/// §2.3.1; the fake's secrets hold characters that need it).
fn basic(request: reqwest::RequestBuilder, c: &ProviderConfig) -> reqwest::RequestBuilder {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    request.basic_auth(
        encode(&c.client_id),
        Some(encode(c.client_secret.expose_secret())),
    )
}

/// The token endpoint takes only Harbor's own client id and secret, and (Gmail and Slack, which
/// take either way) never both at once.
#[tokio::test]
async fn the_token_endpoint_refuses_a_client_that_is_not_harbors() {
    let d = Direct::start().await;
    for p in Provider::ALL {
        let wrong_secret = d.client_with(p, |c| {
            c.client_secret = SecretString::from("not-the-secret".to_owned());
        });
        let wrong_id = d.client_with(p, |c| c.client_id = "someone-else".to_owned());
        let redirect = d.config(p).redirect_uri.to_string();
        for (what, client) in [("secret", &wrong_secret), ("client id", &wrong_id)] {
            let code = d.code(p).await;
            let refused = client.exchange_code(p, &code, &d.verifier, &redirect).await;
            assert!(refused.is_err(), "{p}: a wrong {what} is refused");
            // The refusal was the client's, before the code was looked at: it is still good.
            d.exchange(p, &code)
                .await
                .unwrap_or_else(|e| panic!("{p}: the code after a wrong {what}: {e}"));
        }
        assert_eq!(d.fake.counters(p).client_auth_refused, 2, "{p}");
    }
    for p in [Provider::Gmail, Provider::Slack] {
        let code = d.code(p).await;
        let body = d
            .exchange_by_hand(p, &code, Some(d.verifier.expose_secret()), true)
            .await;
        assert!(body.get("access_token").is_none(), "{p}: both ways: {body}");
        assert_eq!(d.fake.counters(p).client_auth_refused, 3, "{p}");
        d.exchange(p, &code)
            .await
            .unwrap_or_else(|e| panic!("{p}: the code after credentials sent both ways: {e}"));
    }
}

/// A code is good only at the provider that issued it, with the redirect URI it was issued for,
/// and — where the provider documents PKCE (Google, Slack) — with the verifier of its challenge
/// and only then; a refused code is spent.
#[tokio::test]
async fn a_code_is_bound_to_its_provider_redirect_uri_and_verifier() {
    let d = Direct::start().await;
    for p in Provider::ALL {
        let pkce = matches!(p, Provider::Gmail | Provider::Slack);
        let elsewhere = "https://harbor.test/v1/oauth/elsewhere/callback";
        let code = d.code(p).await;
        let refused = d
            .client
            .exchange_code(p, &code, &d.verifier, elsewhere)
            .await;
        assert!(
            matches!(refused, Err(ProviderError::InvalidGrant)),
            "{p}: another redirect URI: {refused:?}"
        );
        let again = d.exchange(p, &code).await;
        assert!(
            matches!(again, Err(ProviderError::InvalidGrant)),
            "{p}: a refused code is spent: {again:?}"
        );

        // Another provider's code, presented with everything else of its own.
        let other = Provider::ALL[(Provider::ALL.iter().position(|q| *q == p).unwrap() + 1) % 4];
        let foreign = d.code(other).await;
        let redirect = d.config(other).redirect_uri.to_string();
        let refused = d
            .client
            .exchange_code(p, &foreign, &d.verifier, &redirect)
            .await;
        assert!(
            matches!(refused, Err(ProviderError::InvalidGrant)),
            "{p}: {other}'s code: {refused:?}"
        );

        // By hand, as Harbor's client sends it: the control of the two requests below.
        let answer = d
            .exchange_by_hand(p, &d.code(p).await, Some(d.verifier.expose_secret()), false)
            .await;
        assert!(answer.get("access_token").is_some(), "{p}: {answer}");
        // A code issued for a challenge, presented without its verifier.
        let code = d.code(p).await;
        let answer = d.exchange_by_hand(p, &code, None, false).await;
        assert_eq!(
            answer.get("access_token").is_none(),
            pkce,
            "{p}: a challenged code without a verifier: {answer}"
        );
        // A verifier for a code that was issued without a challenge.
        let unchallenged = d
            .consent(
                p,
                &[("code_challenge", None), ("code_challenge_method", None)],
            )
            .await
            .unwrap();
        let answer = d
            .exchange_by_hand(
                p,
                &SecretString::from(unchallenged.code),
                Some(d.verifier.expose_secret()),
                false,
            )
            .await;
        assert_eq!(
            answer.get("access_token").is_none(),
            pkce,
            "{p}: a verifier no challenge asked for: {answer}"
        );
        // Only S256: a `plain` challenge is refused at the authorization.
        let plain = d
            .consent(p, &[("code_challenge_method", Some("plain"))])
            .await;
        assert_eq!(
            plain
                .as_ref()
                .err()
                .is_some_and(|e| e.contains("invalid_request")),
            pkce,
            "{p}: a plain challenge: {plain:?}"
        );

        // The request every refusal above changed one thing of.
        let code = d.code(p).await;
        d.exchange(p, &code)
            .await
            .unwrap_or_else(|e| panic!("{p}: the code as Harbor exchanges it: {e}"));
    }
}

/// The authorization endpoint shows a wrong client id or redirect URI to the user instead of
/// redirecting (RFC 6749 §4.1.2.1), and refuses, through the redirect, a response type other
/// than `code`.
#[tokio::test]
async fn the_authorization_endpoint_refuses_an_unknown_client_or_redirect_uri() {
    let d = Direct::start().await;
    for p in Provider::ALL {
        let cases = [
            ("client_id", "someone-else", "authorize answered 400"),
            (
                "redirect_uri",
                "https://attacker.test/callback",
                "authorize answered 400",
            ),
            ("response_type", "token", "unsupported_response_type"),
        ];
        for (name, value, refusal) in cases {
            let answer = d.consent(p, &[(name, Some(value))]).await;
            assert!(
                answer.as_ref().err().is_some_and(|e| e.contains(refusal)),
                "{p}: {name}={value}: {answer:?}"
            );
        }
        d.consent(p, &[])
            .await
            .unwrap_or_else(|e| panic!("{p}: {e}"));
    }
}

/// Google issues a refresh token only to an authorization request that asks for offline access
/// (`online` is its default) and refuses an `access_type` it does not know; the others issue one
/// whatever the request says.
#[tokio::test]
async fn gmail_issues_a_refresh_token_only_to_an_offline_request() {
    let d = Direct::start().await;
    for p in Provider::ALL {
        for access_type in [None, Some("online"), Some("offline")] {
            let consent = d.consent(p, &[("access_type", access_type)]).await.unwrap();
            let tokens = d
                .exchange(p, &SecretString::from(consent.code))
                .await
                .unwrap_or_else(|e| panic!("{p}: {e}"));
            let expected = p != Provider::Gmail || access_type == Some("offline");
            assert_eq!(
                tokens.refresh_token.is_some(),
                expected,
                "{p}: access_type {access_type:?}"
            );
        }
    }
    let unknown = d
        .consent(Provider::Gmail, &[("access_type", Some("forever"))])
        .await;
    assert!(
        unknown
            .as_ref()
            .err()
            .is_some_and(|e| e.contains("invalid_request")),
        "{unknown:?}"
    );
}

/// An access token opens only its own provider's resource and only until it expires; a refresh
/// token past its provider's lifetime (Intuit 101 days, Box 60) is `invalid_grant`.
#[tokio::test]
async fn a_token_past_its_lifetime_or_at_another_provider_is_refused() {
    let d = Direct::start().await;
    let mut grants = Vec::new();
    for p in Provider::ALL {
        let consent = d.consent(p, &[]).await.unwrap();
        let tokens = d
            .exchange(p, &SecretString::from(consent.code))
            .await
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        d.client
            .fetch_documents(p, &tokens.access_token, consent.realm_id.as_deref())
            .await
            .unwrap_or_else(|e| panic!("{p}: a fresh token reads: {e}"));
        grants.push((p, consent.realm_id, tokens));
    }
    for (i, (p, realm, tokens)) in grants.iter().enumerate() {
        let (q, q_realm, _) = &grants[(i + 1) % grants.len()];
        let refused = d
            .client
            .fetch_documents(
                *q,
                &tokens.access_token,
                q_realm.as_deref().or(realm.as_deref()),
            )
            .await;
        assert!(
            matches!(refused, Err(ProviderError::TokenRefused)),
            "{p}'s access token at {q}: {refused:?}"
        );
    }
    // Slack's access tokens last 12 hours, the others' one.
    d.fake
        .advance_clock(std::time::Duration::from_secs(13 * 3600));
    for (p, realm, tokens) in &grants {
        let refused = d
            .client
            .fetch_documents(*p, &tokens.access_token, realm.as_deref())
            .await;
        assert!(
            matches!(refused, Err(ProviderError::TokenRefused)),
            "{p}: an expired access token: {refused:?}"
        );
    }
    // Refresh tokens: Box's last 60 days, Intuit's 101, Google's and Slack's have no lifetime.
    // A second QuickBooks grant is refreshed past Box's end, the first past Intuit's.
    let spare = d
        .exchange(Provider::Qbo, &d.code(Provider::Qbo).await)
        .await
        .unwrap();
    let client = &d.client;
    let refresh = |p: Provider, token: &TokenSet| {
        let token = token.refresh_token.clone().expect("an offline grant");
        async move { client.refresh(p, &token).await }
    };
    d.fake
        .advance_clock(std::time::Duration::from_secs(61 * 24 * 3600));
    let answer = refresh(Provider::Box, &grants[3].2).await;
    assert!(
        matches!(answer, Err(ProviderError::InvalidGrant)),
        "box: a refresh token 61 days old: {answer:?}"
    );
    refresh(Provider::Qbo, &spare)
        .await
        .unwrap_or_else(|e| panic!("qbo: a refresh token 61 days old: {e}"));
    d.fake
        .advance_clock(std::time::Duration::from_secs(41 * 24 * 3600));
    for (p, _, tokens) in &grants[..3] {
        let answer = refresh(*p, tokens).await;
        match p {
            Provider::Qbo => assert!(
                matches!(answer, Err(ProviderError::InvalidGrant)),
                "qbo: a refresh token 102 days old: {answer:?}"
            ),
            _ => {
                answer.unwrap_or_else(|e| panic!("{p}: a refresh token 102 days old: {e}"));
            }
        }
    }
}

/// The fake checks a PKCE verifier only where the provider documents PKCE (Google, Slack): at
/// QuickBooks and Box it ignores challenge and verifier, so no check credits Harbor with a
/// defence those providers may not give. And a code presented twice ends the grant its first
/// exchange gave (RFC 6749 §4.1.2).
#[tokio::test]
async fn the_fake_holds_pkce_where_documented_and_a_reused_code_ends_its_grant() {
    let d = Direct::start().await;
    let wrong =
        SecretString::from("a-verifier-whose-challenge-was-never-sent-0123456789".to_owned());
    for (p, documented) in [
        (Provider::Gmail, true),
        (Provider::Slack, true),
        (Provider::Qbo, false),
        (Provider::Box, false),
    ] {
        let code = d.code(p).await;
        let redirect = d.config(p).redirect_uri.to_string();
        let first = d.client.exchange_code(p, &code, &wrong, &redirect).await;
        if documented {
            assert!(
                matches!(first, Err(ProviderError::InvalidGrant)),
                "{p}: a verifier that is not the challenge's is refused"
            );
            continue;
        }
        let tokens = first.unwrap_or_else(|e| panic!("{p}: PKCE is not this provider's: {e}"));
        assert!(d.fake.is_live(tokens.access_token.expose_secret()), "{p}");
        let again = d.client.exchange_code(p, &code, &wrong, &redirect).await;
        assert!(
            matches!(again, Err(ProviderError::InvalidGrant)),
            "{p}: a code is good once"
        );
        assert!(
            !d.fake.is_live(tokens.access_token.expose_secret()),
            "{p}: the reused code ended what it was first exchanged for"
        );
        assert_eq!(d.fake.counters(p).code_reused, 1, "{p}");
    }
}

/// A refresh at a provider that rotates its refresh tokens (QuickBooks, Slack, Box) ends the
/// access tokens the grant held before it, so a client that keeps using an old one is caught;
/// Google keeps its refresh token and lets earlier access tokens live to their expiry.
#[tokio::test]
async fn a_refresh_ends_the_earlier_access_tokens_where_the_provider_rotates() {
    let d = Direct::start().await;
    for (p, rotates) in [
        (Provider::Gmail, false),
        (Provider::Slack, true),
        (Provider::Qbo, true),
        (Provider::Box, true),
    ] {
        let first = d
            .exchange(p, &d.code(p).await)
            .await
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        let refresh = first
            .refresh_token
            .clone()
            .unwrap_or_else(|| panic!("{p}: an offline grant has a refresh token"));
        let second = d
            .client
            .refresh(p, &refresh)
            .await
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(d.fake.is_live(second.access_token.expose_secret()), "{p}");
        assert_eq!(
            d.fake.is_live(first.access_token.expose_secret()),
            !rotates,
            "{p}: the access token from before the refresh {}",
            if rotates {
                "ended with it"
            } else {
                "lives on to its expiry"
            }
        );
    }
}

/// The fake's Box takes the markers its own pages named, and `0` or none for the first page; a
/// marker it never issued is a 400, as Box refuses a marker it cannot read.
#[tokio::test]
async fn the_fake_s_box_takes_only_the_markers_it_issued() {
    use reqwest::StatusCode;
    let d = Direct::start().await;
    d.fake
        .configure(Provider::Box, |s| s.extra_documents = 1500);
    let tokens = d
        .exchange(Provider::Box, &d.code(Provider::Box).await)
        .await
        .unwrap();
    let (c, http) = (d.config(Provider::Box), &d.http);
    let items = format!(
        "{}/2.0/folders/0/items",
        c.resource_url.as_str().trim_end_matches('/')
    );
    let page = |marker: Option<String>| {
        let mut request = http
            .get(items.clone())
            .query(&[("usemarker", "true"), ("limit", "1000")])
            .bearer_auth(tokens.access_token.expose_secret());
        if let Some(m) = marker {
            request = request.query(&[("marker", m)]);
        }
        async move {
            let r = request.send().await.unwrap();
            let status = r.status();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, first) = page(None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["entries"].as_array().unwrap().len(), 1000);
    assert_eq!(
        page(Some("0".into())).await.1,
        first,
        "marker 0 is the first page"
    );
    let next = first["next_marker"].as_str().unwrap().to_owned();
    let (status, second) = page(Some(next)).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["entries"].as_array().unwrap().len(), 502);
    assert!(second["next_marker"].is_null(), "{second}");
    for foreign in ["not-a-marker", "eyJ0YWlsIjoiOTk5OTkifQ"] {
        let (status, body) = page(Some(foreign.into())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{foreign}: {body}");
    }
}

/// The revocation endpoint takes the client as its provider authenticates it there — QuickBooks:
/// HTTP Basic and a JSON body; Box: the credentials in the form — and Slack's `auth.revoke` takes
/// only a live access token as its bearer. A refused revocation leaves the grant live.
#[tokio::test]
async fn a_revocation_is_taken_only_from_harbors_client_in_the_provider_s_form() {
    use harbor_service::providers::TokenKind;
    let d = Direct::start().await;
    for p in [Provider::Qbo, Provider::Box] {
        let tokens = d.exchange(p, &d.code(p).await).await.unwrap();
        let refresh = tokens.refresh_token.clone().unwrap();
        let wrong = d.client_with(p, |c| {
            c.client_secret = SecretString::from("not-the-secret".to_owned());
        });
        let refused = wrong.revoke(p, &refresh, TokenKind::Refresh).await;
        assert!(refused.is_err(), "{p}: another client's revocation");
        assert!(d.fake.counters(p).client_auth_refused > 0, "{p}");
        assert!(d.fake.is_live(refresh.expose_secret()), "{p}: still live");
        if p == Provider::Qbo {
            // Intuit's revocation takes JSON: the same request as a form is refused.
            let c = d.config(p);
            let form = basic(d.http.post(c.revoke_url.clone()), c)
                .form(&[("token", refresh.expose_secret())])
                .send()
                .await
                .unwrap();
            assert_ne!(form.status(), reqwest::StatusCode::OK, "qbo: a form");
            assert!(d.fake.is_live(refresh.expose_secret()), "qbo: still live");
        }
        d.client
            .revoke(p, &refresh, TokenKind::Refresh)
            .await
            .unwrap_or_else(|e| panic!("{p}: Harbor's revocation: {e}"));
        assert!(!d.fake.is_live(refresh.expose_secret()), "{p}: ended");
    }
    let p = Provider::Slack;
    let tokens = d.exchange(p, &d.code(p).await).await.unwrap();
    let refresh = tokens.refresh_token.clone().unwrap();
    let c = d.config(p);
    let answer: serde_json::Value = d
        .http
        .post(c.revoke_url.clone())
        .bearer_auth(refresh.expose_secret())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["ok"], false,
        "slack: a refresh token as bearer: {answer}"
    );
    assert!(
        d.fake.is_live(tokens.access_token.expose_secret()),
        "slack: still live"
    );
    d.client
        .revoke(p, &tokens.access_token, TokenKind::Access)
        .await
        .unwrap();
    assert!(
        !d.fake.is_live(refresh.expose_secret()),
        "slack: the grant ended"
    );
}

/// An error redirect carries `iss` where the provider sends it on success (Google, RFC 9207 §2)
/// and nowhere else; Slack's scopes are comma-separated, so a space inside the list is a scope
/// Slack does not know (`invalid_scope`).
#[tokio::test]
async fn an_error_redirect_names_its_issuer_where_the_provider_does_and_slack_reads_commas() {
    let d = Direct::start().await;
    for p in Provider::ALL {
        let location = d.redirect(p, &[("response_type", Some("token"))]).await;
        let pairs: std::collections::HashMap<String, String> =
            location.query_pairs().into_owned().collect();
        assert_eq!(
            pairs.get("error").map(String::as_str),
            Some("unsupported_response_type"),
            "{p}: {location}"
        );
        assert_eq!(pairs.get("state").map(String::as_str), Some("s"), "{p}");
        let expected = (p == Provider::Gmail).then(|| d.config(p).issuer.clone());
        assert_eq!(pairs.get("iss"), expected.as_ref(), "{p}: {location}");
    }
    let refused = d
        .redirect(
            Provider::Slack,
            &[("scope", Some("channels:read groups:read"))],
        )
        .await;
    assert!(
        refused
            .query_pairs()
            .any(|(k, v)| k == "error" && v == "invalid_scope"),
        "slack, scopes separated by a space: {refused}"
    );
    let given = d
        .redirect(
            Provider::Slack,
            &[("scope", Some("channels:read,groups:read"))],
        )
        .await;
    assert!(
        given.query_pairs().any(|(k, _)| k == "code"),
        "slack, scopes separated by a comma: {given}"
    );
}

/// Each listing's paging refuses a page the provider did not issue, in its own words: Google's
/// `pageToken` (400 `INVALID_ARGUMENT`), Slack's `cursor` (200 `invalid_cursor`), and Box's
/// offset past 9,999 (400 `bad_request`) — beside the first page, which each serves.
#[tokio::test]
async fn a_listing_refuses_a_page_it_did_not_issue() {
    let d = Direct::start().await;
    let cases = [
        (
            Provider::Gmail,
            "gmail/v1/users/me/threads",
            "pageToken",
            "bm90LWEtcGFnZQ",
        ),
        (
            Provider::Slack,
            "conversations.list",
            "cursor",
            "not-a-cursor",
        ),
        (Provider::Box, "2.0/folders/0/items", "offset", "10000"),
    ];
    for (p, path, name, bad) in cases {
        let tokens = d.exchange(p, &d.code(p).await).await.unwrap();
        let url = format!("{}/{path}", d.config(p).resource_url);
        let read = |query: Vec<(&'static str, &'static str)>| {
            let request = d
                .http
                .get(&url)
                .bearer_auth(tokens.access_token.expose_secret())
                .query(&query);
            async move {
                let answer = request.send().await.unwrap();
                let status = answer.status().as_u16();
                (status, answer.json::<serde_json::Value>().await.unwrap())
            }
        };
        let (status, first) = read(vec![]).await;
        assert_eq!(status, 200, "{p}: the first page: {first}");
        assert_ne!(first["ok"], false, "{p}: the first page: {first}");
        let (status, refused) = read(vec![(name, bad)]).await;
        let refused_as_documented = match p {
            Provider::Gmail => status == 400 && refused["error"]["status"] == "INVALID_ARGUMENT",
            Provider::Slack => status == 200 && refused["error"] == "invalid_cursor",
            _ => status == 400 && refused["code"] == "bad_request",
        };
        assert!(
            refused_as_documented,
            "{p}: {name}={bad}: {status} {refused}"
        );
        if p == Provider::Box {
            let (status, last) = read(vec![("offset", "9999")]).await;
            assert_eq!(
                status, 200,
                "box: the largest offset is still taken: {last}"
            );
        }
    }
}
